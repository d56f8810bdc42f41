//! Engine scenarios against the in-memory store.

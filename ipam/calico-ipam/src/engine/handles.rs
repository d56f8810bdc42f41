//! Handle bookkeeping: how many addresses each handle holds in each block, so a release by
//! handle knows which blocks to visit. Counts may over-estimate (an increment whose block
//! write then failed elsewhere), never under-estimate: the increment happens before the
//! block write and is undone only when that write fails.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;

use super::memo::Memo;
use super::{Ipam, IpamError, MAX_RETRIES};
use crate::model::IpamHandle;
use crate::store::{StoreError, Versioned};

fn retryable(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict(_) | StoreError::AlreadyExists(_) | StoreError::NotFound(_)
    )
}

impl Ipam<'_> {
    /// Adds `n` addresses in `block` to `handle`, creating the handle if needed. A new
    /// container's handle does not exist yet, so the first attempt is a create (one round
    /// trip, where reading first would cost two); a handle this operation already wrote is
    /// updated against the revision it got back.
    pub(super) fn increment_handle(
        &self,
        memo: &Memo,
        handle: &str,
        block: &IpNetwork,
        n: u64,
    ) -> Result<(), IpamError> {
        let mut known = memo.take_handle(handle);
        for _ in 0..MAX_RETRIES {
            let result = match known.take() {
                Some(mut stored) => {
                    *stored.value.block.entry(block.to_string()).or_insert(0) += n;
                    self.store
                        .update_handle(&stored.value, &stored.revision)
                        .map(|revision| Versioned {
                            value: stored.value,
                            revision,
                        })
                }
                None => {
                    let new = IpamHandle {
                        handle_id: handle.to_string(),
                        block: BTreeMap::from([(block.to_string(), n)]),
                        deleted: false,
                        extra: Default::default(),
                    };
                    self.store.create_handle(&new).map(|revision| Versioned {
                        value: new,
                        revision,
                    })
                }
            };
            match result {
                Ok(written) => {
                    memo.set_handle(Some(written));
                    return Ok(());
                }
                Err(e) if retryable(&e) => {
                    // It exists after all, or changed under us: read what is there (absent
                    // again means create).
                    known = self.store.get_handle(handle)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::MaxRetries)
    }

    /// Takes `n` addresses in `block` off `handle` (`None`: all of them), deleting the handle
    /// when it holds nothing any more. A count that would go negative, or a missing handle,
    /// means the record was already short: it is clamped, not an error, because the block
    /// is the truth and the release it follows has already happened. A handle this
    /// operation already read (a release by handle starts by reading it) is written against
    /// that revision without reading it again.
    pub(super) fn decrement_handle(
        &self,
        memo: &Memo,
        handle: &str,
        block: &IpNetwork,
        n: Option<u64>,
    ) -> Result<(), IpamError> {
        let key = block.to_string();
        let mut known = memo.take_handle(handle);
        for _ in 0..MAX_RETRIES {
            let stored = match known.take() {
                Some(stored) => Some(stored),
                None => self.store.get_handle(handle)?,
            };
            let Some(mut stored) = stored else {
                return Ok(());
            };
            let Some(count) = stored.value.block.get(&key).copied() else {
                memo.set_handle(Some(stored));
                return Ok(());
            };
            let n = n.unwrap_or(count);
            if n > count {
                log::warn!(
                    "handle {handle} recorded {count} addresses in {key}, {n} were released"
                );
            }
            if count > n {
                stored.value.block.insert(key.clone(), count - n);
            } else {
                stored.value.block.remove(&key);
            }
            let result = if stored.value.block.is_empty() {
                self.store
                    .delete_handle(handle, &stored.revision)
                    .map(|()| None)
            } else {
                self.store
                    .update_handle(&stored.value, &stored.revision)
                    .map(|revision| {
                        Some(Versioned {
                            value: stored.value,
                            revision,
                        })
                    })
            };
            match result {
                Ok(written) => {
                    memo.set_handle(written);
                    return Ok(());
                }
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::MaxRetries)
    }
}

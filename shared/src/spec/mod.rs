//! The CNI protocol, defined once: environment, CNI_ARGS, network configuration, results of
//! every supported version with conversion between them, and the error object.

pub mod args;
pub mod config;
pub mod env;
pub mod error;
pub mod quantity;
pub mod result;
pub mod version;

#[cfg(test)]
mod respelled;

pub use config::NetConf;
pub use env::{Command, Environment};
pub use error::{CniError, ErrorCode};
pub use result::CniResult;
pub use version::Version;

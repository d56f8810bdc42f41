//! The loopback plugin: brings `lo` up in the container's network namespace.
//!
//! Runtimes call it for every pod besides the main network, so its ADD is on the hot path;
//! it opens one netlink socket in the namespace and sends one request.

use std::path::Path;

use shared::netlink::{Handle, Link};
use shared::netns::NetNs;
use shared::skel::{NoConfig, Plugin, Released, Request};
use shared::spec::error::{CniError, ErrorCode};
use shared::spec::result::{CniResult, Interface, IpConfig};

/// Its name in the namespace, whatever CNI_IFNAME says (as the reference plugin does).
const LOOPBACK: &str = "lo";

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error(transparent)]
    Shared(#[from] shared::Error),
    #[error("loopback interface found with non-loopback address {0:?}")]
    NonLoopbackAddress(String),
    #[error("loopback interface is down")]
    Down,
    #[error("the network namespace has no loopback interface")]
    Missing,
}

impl From<LoopbackError> for CniError {
    fn from(e: LoopbackError) -> CniError {
        let msg = e.to_string();
        match e {
            LoopbackError::Shared(inner) => inner.into(),
            LoopbackError::NonLoopbackAddress(_) => CniError::new(ErrorCode::CheckFailed, msg)
                .with_details(
                    "only 127.0.0.0/8 and ::1 belong on lo; something else configured it",
                ),
            LoopbackError::Down => CniError::new(ErrorCode::CheckFailed, msg)
                .with_details("ADD brings lo up; something set it down since"),
            LoopbackError::Missing => CniError::new(ErrorCode::CheckFailed, msg),
        }
    }
}

pub struct Loopback;

/// A netlink handle bound to the container's namespace, and its `lo`.
fn open_loopback(netns: &Path) -> Result<(Handle, Link), LoopbackError> {
    let ns = NetNs::open(netns)?;
    let mut handle = Handle::in_netns(&ns)?;
    let lo = handle
        .link_by_name(LOOPBACK)?
        .ok_or(LoopbackError::Missing)?;
    Ok((handle, lo))
}

impl Plugin for Loopback {
    type Config = NoConfig;
    type Error = LoopbackError;

    fn name(&self) -> &'static str {
        "loopback"
    }

    fn add(&self, req: &Request<NoConfig>) -> Result<CniResult, LoopbackError> {
        let netns_path = req.env.netns.clone().unwrap_or_default();
        let (mut handle, lo) = open_loopback(&netns_path)?;
        handle.set_up(lo.index)?;
        let addrs = handle.addresses(Some(lo.index))?;
        if let Some(bad) = addrs.iter().find(|a| !a.net.ip().is_loopback()) {
            return Err(LoopbackError::NonLoopbackAddress(bad.net.to_string()));
        }
        // A chained loopback passes the previous result through unchanged.
        if let Some(prev) = &req.prev_result {
            return Ok(prev.clone());
        }
        let first_v4 = addrs.iter().find(|a| a.net.is_ipv4());
        let first_v6 = addrs.iter().find(|a| a.net.is_ipv6());
        Ok(CniResult {
            interfaces: vec![Interface {
                name: LOOPBACK.to_string(),
                mac: "00:00:00:00:00:00".to_string(),
                sandbox: netns_path.display().to_string(),
                ..Interface::default()
            }],
            ips: first_v4
                .into_iter()
                .chain(first_v6)
                .map(|a| IpConfig {
                    address: a.net,
                    gateway: None,
                    interface: Some(0),
                })
                .collect(),
            ..CniResult::default()
        })
    }

    fn del(&self, req: &Request<NoConfig>) -> Result<Released, LoopbackError> {
        // Gone with its container, the loopback needs nothing more.
        let Some(ns) = NetNs::open_if_exists(req.env.netns.as_deref())? else {
            return Ok(Released::nothing());
        };
        let mut handle = Handle::in_netns(&ns)?;
        if let Some(lo) = handle.link_by_name(LOOPBACK)? {
            handle.set_down(lo.index)?;
            return Ok(Released::of(format!("{LOOPBACK} (set down)")));
        }
        Ok(Released::nothing())
    }

    fn check(&self, req: &Request<NoConfig>) -> Result<(), LoopbackError> {
        let netns_path = req.env.netns.clone().unwrap_or_default();
        let (_, lo) = open_loopback(&netns_path)?;
        if !lo.up {
            return Err(LoopbackError::Down);
        }
        Ok(())
    }
}

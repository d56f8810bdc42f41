//! host-local IPAM: addresses from configured ranges, reservations kept as files on the
//! node, byte-compatible with the reference plugin so either binary can take over from the
//! other with pods running. Adds what the reference lacks: GC of reservations whose
//! container is gone (the leaks after reboots), STATUS, and an ADD that either succeeds or
//! leaves the store exactly as it found it.

pub mod allocator;
pub mod config;
pub mod dns;
pub mod range;
pub mod store;

use std::collections::HashSet;
use std::net::IpAddr;

use shared::skel::{Attachment, Plugin, Released, Request};
use shared::spec::error::{CniError, ErrorCode};
use shared::spec::result::{CniResult, IpConfig};

use allocator::{AllocError, Allocation};
use config::{HostLocalConf, IpamConfig};
use range::RangeError;
use store::{Owner, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum HostLocalError {
    #[error(transparent)]
    Shared(#[from] shared::Error),
    #[error("{0}")]
    Config(String),
    #[error("invalid range set {index}: {source}")]
    RangeSet { index: usize, source: RangeError },
    #[error("range set {0} overlaps with {1}")]
    SetsOverlap(usize, usize),
    #[error("open {path}: {source}")]
    ResolvConf {
        path: String,
        source: std::io::Error,
    },
    #[error("failed to allocate for range {index}: {source}")]
    Allocate { index: usize, source: AllocError },
    #[error("failed to allocate all requested IPs: {}", join(.0))]
    RequestedNotInAnyRange(Vec<IpAddr>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("GC could not release every stale reservation: {}", join_errors(.0))]
    Gc(Vec<StoreError>),
    #[error("host-local: Failed to find address added by container {0}")]
    NotFound(String),
    #[error("range set {index} has no free address: {set}")]
    Full { index: usize, set: String },
}

fn join_errors(errors: &[StoreError]) -> String {
    errors
        .iter()
        .map(StoreError::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

impl From<HostLocalError> for CniError {
    fn from(e: HostLocalError) -> CniError {
        use ErrorCode as C;
        let e = match e {
            HostLocalError::Shared(inner) => return inner.into(),
            other => other,
        };
        let msg = e.to_string();
        let (code, details) = match &e {
            HostLocalError::Shared(_) => (C::Internal, String::new()),
            HostLocalError::Config(_)
            | HostLocalError::RangeSet { .. }
            | HostLocalError::SetsOverlap(..) => (
                C::InvalidNetworkConfig,
                "fix the \"ipam\" section of the network configuration".to_string(),
            ),
            HostLocalError::ResolvConf { .. } => (
                C::InvalidNetworkConfig,
                "\"resolvConf\" must name a readable resolv.conf-style file".to_string(),
            ),
            HostLocalError::Allocate { source, .. } => match source {
                AllocError::Exhausted(_) => (
                    C::AddressExhausted,
                    "every address of the range set is reserved: release stale reservations \
                     (CNI GC with the list of live containers, or DEL of containers that are \
                     gone) or widen the range"
                        .to_string(),
                ),
                AllocError::Store(_) => (C::State, String::new()),
                AllocError::Duplicate { .. } => (
                    C::AddressConflict,
                    "the container already holds an address on this interface: DEL it before \
                     adding it again"
                        .to_string(),
                ),
                AllocError::RequestedGateway(_) | AllocError::RequestedTaken { .. } => (
                    C::AddressConflict,
                    "request another address, or release the one requested".to_string(),
                ),
            },
            HostLocalError::RequestedNotInAnyRange(_) => (
                C::AddressConflict,
                "each requested address must lie in a different range set of the \
                 configuration"
                    .to_string(),
            ),
            HostLocalError::Store(_) | HostLocalError::Gc(_) => (C::State, String::new()),
            HostLocalError::NotFound(_) => (
                C::CheckFailed,
                "no reservation of this container and interface is in the data directory"
                    .to_string(),
            ),
            HostLocalError::Full { .. } => (
                C::NotAvailable,
                "ADD would fail: release stale reservations or widen the range".to_string(),
            ),
        };
        CniError::new(code, msg).with_details(details)
    }
}

pub struct HostLocal;

type Req<'a> = Request<'a, HostLocalConf>;

impl HostLocal {
    fn config(req: &Req) -> Result<IpamConfig, HostLocalError> {
        config::load(req.config, &req.conf.name, &req.env.args)
    }
}

impl Plugin for HostLocal {
    type Config = HostLocalConf;
    type Error = HostLocalError;

    fn name(&self) -> &'static str {
        "host-local"
    }

    fn add(&self, req: &Req) -> Result<CniResult, HostLocalError> {
        let cfg = Self::config(req)?;
        let dns = match &cfg.resolv_conf {
            Some(path) => {
                dns::read_resolv_conf(path).map_err(|source| HostLocalError::ResolvConf {
                    path: path.display().to_string(),
                    source,
                })?
            }
            None => Default::default(),
        };
        let (id, ifname) = (req.env.container_id.as_str(), req.env.ifname.as_str());
        let store = Store::open(&cfg.data_dir, &cfg.name)?;
        let allocations = allocate_all(&store, &cfg, id, ifname)?;
        Ok(CniResult {
            ips: allocations
                .into_iter()
                .map(|a| IpConfig {
                    address: a.address,
                    gateway: Some(a.gateway),
                    interface: None,
                })
                .collect(),
            routes: cfg.routes,
            dns,
            ..CniResult::default()
        })
    }

    fn del(&self, req: &Req) -> Result<Released, HostLocalError> {
        // The store is all DEL needs: ranges ADD would refuse must not strand the pod.
        let store = Store::open(&config::data_dir(req.config), &req.conf.name)?;
        let released = store.release_owner(&req.env.container_id, &req.env.ifname)?;
        if released.is_empty() {
            return Ok(Released::nothing());
        }
        Ok(Released::of(Released::addresses(&released)))
    }

    fn check(&self, req: &Req) -> Result<(), HostLocalError> {
        let cfg = Self::config(req)?;
        let store = Store::open(&cfg.data_dir, &cfg.name)?;
        if store
            .held_by(&req.env.container_id, &req.env.ifname)?
            .is_empty()
        {
            return Err(HostLocalError::NotFound(req.env.container_id.clone()));
        }
        Ok(())
    }

    /// Removes every reservation whose attachment the runtime no longer has. A legacy file
    /// (container id only) stays when any valid attachment has its id.
    fn gc(&self, req: &Req, valid: &[Attachment]) -> Result<(), HostLocalError> {
        let cfg = Self::config(req)?;
        let dir = cfg.data_dir.join(&cfg.name);
        if !dir.is_dir() {
            return Ok(());
        }
        let store = Store::open(&cfg.data_dir, &cfg.name)?;
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.trim(), a.ifname.as_str()))
            .collect();
        let ids: HashSet<&str> = valid.iter().map(|a| a.container_id.trim()).collect();
        let mut failures = Vec::new();
        for r in store.reservations()? {
            let live = match &r.owner {
                Owner::Attachment { id, ifname } => keep.contains(&(id.as_str(), ifname.as_str())),
                Owner::Legacy { id } => ids.contains(id.as_str()),
            };
            if !live {
                log::info!("gc: releasing {} held by {:?}", r.ip, r.owner);
                if let Err(e) = store.release(r.ip) {
                    failures.push(e);
                }
            }
        }
        // We hold the lock, so no reservation is under way: any temporary is a crash's.
        for path in store.temporaries()? {
            if let Err(e) = std::fs::remove_file(&path) {
                log::warn!("gc: cannot remove {}: {e}", path.display());
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(HostLocalError::Gc(failures))
        }
    }

    /// Ready when every range set has an address left: otherwise ADD would fail.
    fn status(&self, req: &Req) -> Result<(), HostLocalError> {
        let cfg = Self::config(req)?;
        if !cfg.data_dir.join(&cfg.name).is_dir() {
            return Ok(());
        }
        let store = Store::open(&cfg.data_dir, &cfg.name)?;
        let held = store.reservations()?;
        for (index, set) in cfg.range_sets.iter().enumerate() {
            let used = held
                .iter()
                .filter(|r| {
                    set.range_for(r.ip)
                        .is_some_and(|range| range.gateway != r.ip)
                })
                .count() as u128;
            if used >= set.capacity() {
                return Err(HostLocalError::Full {
                    index,
                    set: set.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// One address per range set, all or nothing: on any failure the reservations made so far
/// are released and no `last_reserved_ip` file changes.
fn allocate_all(
    store: &Store,
    cfg: &IpamConfig,
    id: &str,
    ifname: &str,
) -> Result<Vec<Allocation>, HostLocalError> {
    let existing = store.reservations()?;
    let mut pending = cfg.requested.clone();
    let mut done: Vec<Allocation> = Vec::new();
    let undo = |done: &[Allocation]| {
        for a in done {
            if let Err(e) = store.release(a.address.ip()) {
                log::error!("cannot undo reservation of {}: {e}", a.address.ip());
            }
        }
    };
    for (index, set) in cfg.range_sets.iter().enumerate() {
        let requested = pending
            .iter()
            .position(|ip| set.contains(*ip))
            .map(|i| pending.remove(i));
        match allocator::allocate(store, set, index, &existing, id, ifname, requested) {
            Ok(a) => done.push(a),
            Err(source) => {
                undo(&done);
                return Err(HostLocalError::Allocate { index, source });
            }
        }
    }
    if !pending.is_empty() {
        undo(&done);
        return Err(HostLocalError::RequestedNotInAnyRange(pending));
    }
    for (index, a) in done.iter().enumerate() {
        if let Err(e) = store.set_last_reserved(index, a.address.ip()) {
            undo(&done);
            return Err(e.into());
        }
    }
    Ok(done)
}

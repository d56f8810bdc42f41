//! What one operation (an ADD, a DEL, an operator's release) has already read from the
//! store. On etcd every read is a network round trip, and a CNI ADD sits on a pod's start
//! path: pools, the IPAM config and node labels do not change in the milliseconds an
//! operation takes (and when they do, the operation is no less right than one that read
//! them a moment earlier), so each is read at most once per operation, and only if needed.
//! IPReservations too: once per ADD for both families, where libcalico-go lists them once
//! per family.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;

use super::reserved::Reservations;
use super::{Ipam, IpamError};
use crate::model::{IpPool, IpamConfig, IpamHandle};
use crate::store::Versioned;

pub(super) type Labels = BTreeMap<String, String>;

#[derive(Default)]
pub(super) struct Memo {
    /// Every IPPool, as `list_pools` returns them.
    pools: OnceCell<Vec<IpPool>>,
    config: OnceCell<IpamConfig>,
    reservations: OnceCell<Reservations>,
    /// Node labels by node name (a release may look at another node's block).
    labels: RefCell<BTreeMap<String, Labels>>,
    /// The handle as this operation last read or wrote it: the next write of it can
    /// compare-and-swap against that instead of reading it again. `None`: unknown, and for
    /// an increment presumed absent (a new container's handle does not exist yet). A stale
    /// value only costs a lost compare-and-swap, which re-reads.
    handle: RefCell<Option<Versioned<IpamHandle>>>,
}

impl Memo {
    /// A memo that starts from pools the caller already listed for this operation.
    pub fn with_pools(pools: Vec<IpPool>) -> Memo {
        Memo {
            pools: OnceCell::from(pools),
            ..Memo::default()
        }
    }

    /// The last known state of `handle_id`, if this operation knows it.
    pub fn take_handle(&self, handle_id: &str) -> Option<Versioned<IpamHandle>> {
        let mut slot = self.handle.borrow_mut();
        match slot.take() {
            Some(h) if h.value.handle_id == handle_id => Some(h),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Records the state of a handle just read or written (`None`: unknown again).
    pub fn set_handle(&self, handle: Option<Versioned<IpamHandle>>) {
        *self.handle.borrow_mut() = handle;
    }
}

impl Ipam<'_> {
    /// Every IPPool, listed once per operation.
    pub(super) fn memo_pools<'m>(&self, memo: &'m Memo) -> Result<&'m [IpPool], IpamError> {
        if let Some(pools) = memo.pools.get() {
            return Ok(pools);
        }
        let listed = self.store.list_pools()?;
        Ok(memo.pools.get_or_init(|| listed))
    }

    /// The IPAM config (created with Calico's defaults if missing), read once per operation.
    pub(super) fn memo_config(&self, memo: &Memo) -> Result<IpamConfig, IpamError> {
        if let Some(config) = memo.config.get() {
            return Ok(config.clone());
        }
        let config = self.ipam_config()?;
        Ok(memo.config.get_or_init(|| config).clone())
    }

    /// This node's Node object must exist where calico/node registers Nodes: Calico
    /// refuses to assign to a node it does not know (libcalico-go's
    /// `prepareAffinityBlocksForHost`). Its labels are kept for the pools' selectors.
    pub(super) fn require_node(&self, memo: &Memo) -> Result<(), IpamError> {
        if !self.store.has_calico_node() || memo.labels.borrow().contains_key(&self.node) {
            return Ok(());
        }
        let node = self
            .store
            .get_node(&self.node)?
            .ok_or_else(|| IpamError::NodeNotFound(self.node.clone()))?;
        memo.labels
            .borrow_mut()
            .insert(self.node.clone(), node.labels);
        Ok(())
    }

    /// Every IPReservation's CIDRs, listed once per operation.
    pub(super) fn memo_reservations<'m>(
        &self,
        memo: &'m Memo,
    ) -> Result<&'m Reservations, IpamError> {
        if let Some(reservations) = memo.reservations.get() {
            return Ok(reservations);
        }
        let listed = Reservations::new(&self.store.list_reservations()?);
        Ok(memo.reservations.get_or_init(|| listed))
    }

    /// `node`'s labels (none when the store has no Node object for it, as the embedded
    /// single-node store keeps none), read once per operation.
    pub(super) fn memo_labels(&self, memo: &Memo, node: &str) -> Result<Labels, IpamError> {
        if let Some(labels) = memo.labels.borrow().get(node) {
            return Ok(labels.clone());
        }
        let labels = self
            .store
            .get_node(node)?
            .map(|n| n.labels)
            .unwrap_or_default();
        memo.labels
            .borrow_mut()
            .insert(node.to_string(), labels.clone());
        Ok(labels)
    }
}

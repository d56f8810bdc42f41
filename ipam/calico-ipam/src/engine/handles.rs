//! Handle bookkeeping: how many addresses each handle holds in each block, so a release by
//! handle knows which blocks to visit. Counts may over-estimate (an increment whose block
//! write then failed elsewhere), never under-estimate: the increment happens before the
//! block write and is undone only when that write fails.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;

use super::{Ipam, IpamError, MAX_RETRIES};
use crate::model::IpamHandle;
use crate::store::StoreError;

fn retryable(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict(_) | StoreError::AlreadyExists(_) | StoreError::NotFound(_)
    )
}

impl Ipam<'_> {
    /// Adds `n` addresses in `block` to `handle`, creating the handle if needed.
    pub(super) fn increment_handle(
        &self,
        handle: &str,
        block: &IpNetwork,
        n: u64,
    ) -> Result<(), IpamError> {
        for _ in 0..MAX_RETRIES {
            let result = match self.store.get_handle(handle)? {
                Some(mut stored) => {
                    *stored.value.block.entry(block.to_string()).or_insert(0) += n;
                    self.store
                        .update_handle(&stored.value, &stored.revision)
                        .map(drop)
                }
                None => {
                    let new = IpamHandle {
                        handle_id: handle.to_string(),
                        block: BTreeMap::from([(block.to_string(), n)]),
                        deleted: false,
                        extra: Default::default(),
                    };
                    self.store.create_handle(&new).map(drop)
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::MaxRetries)
    }

    /// Takes `n` addresses in `block` off `handle` (`None`: all of them), deleting the handle
    /// when it holds nothing any more. A count that would go negative, or a missing handle,
    /// means the record was already short: it is clamped, not an error, because the block
    /// is the truth and the release it follows has already happened.
    pub(super) fn decrement_handle(
        &self,
        handle: &str,
        block: &IpNetwork,
        n: Option<u64>,
    ) -> Result<(), IpamError> {
        let key = block.to_string();
        for _ in 0..MAX_RETRIES {
            let Some(mut stored) = self.store.get_handle(handle)? else {
                return Ok(());
            };
            let Some(count) = stored.value.block.get(&key).copied() else {
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
                self.store.delete_handle(handle, &stored.revision)
            } else {
                self.store
                    .update_handle(&stored.value, &stored.revision)
                    .map(drop)
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::MaxRetries)
    }
}

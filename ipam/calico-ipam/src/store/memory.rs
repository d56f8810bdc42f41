//! An in-memory [`Kv`]: the engine's tests run the real algorithm against it, and it can
//! inject conflicts to exercise the retry paths.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::kv::{Kv, KvStore};
use super::{Result, Revision, StoreError};

#[derive(Default)]
pub struct MemoryKv {
    inner: Mutex<Inner>,
    /// Behaves as a cluster's datastore, where calico/node runs (see
    /// [`Kv::has_calico_node`]); else as the single-node store.
    calico_node: bool,
}

#[derive(Default)]
struct Inner {
    revision: u64,
    data: BTreeMap<String, (Vec<u8>, u64)>,
    /// Keys whose next update or delete fails with a conflict (once per entry).
    conflicts: Vec<String>,
}

impl MemoryKv {
    pub fn new() -> MemoryKv {
        MemoryKv::default()
    }

    /// An empty store that behaves as a cluster's, where calico/node runs.
    pub fn with_calico_node() -> MemoryKv {
        MemoryKv {
            calico_node: true,
            ..MemoryKv::default()
        }
    }

    /// An empty store ready for the engine.
    pub fn store() -> KvStore<MemoryKv> {
        KvStore::new(MemoryKv::new())
    }

    /// Makes the next update or delete of `key` lose its compare-and-swap, as if another
    /// writer had been quicker.
    pub fn inject_conflict(&self, key: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.conflicts.push(key.to_string());
        }
    }

    /// Every key and value, for tests that look at the raw layout.
    pub fn dump(&self) -> BTreeMap<String, Vec<u8>> {
        self.inner
            .lock()
            .map(|i| {
                i.data
                    .iter()
                    .map(|(k, (v, _))| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))
    }
}

fn parse(rev: &Revision) -> u64 {
    rev.parse().unwrap_or(u64::MAX)
}

impl Inner {
    fn check(&mut self, key: &str, revision: &Revision) -> Result<()> {
        if let Some(i) = self.conflicts.iter().position(|k| k == key) {
            self.conflicts.remove(i);
            return Err(StoreError::Conflict(key.to_string()));
        }
        match self.data.get(key) {
            None => Err(StoreError::NotFound(key.to_string())),
            Some((_, rev)) if *rev != parse(revision) => Err(StoreError::Conflict(key.to_string())),
            Some(_) => Ok(()),
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Revision {
        self.revision += 1;
        self.data
            .insert(key.to_string(), (value.to_vec(), self.revision));
        self.revision.to_string()
    }
}

impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Revision)>> {
        Ok(self
            .lock()?
            .data
            .get(key)
            .map(|(v, r)| (v.clone(), r.to_string())))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>, Revision)>> {
        Ok(self
            .lock()?
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, r))| (k.clone(), v.clone(), r.to_string()))
            .collect())
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Revision> {
        let mut inner = self.lock()?;
        if inner.data.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        Ok(inner.put(key, value))
    }

    fn update(&self, key: &str, value: &[u8], revision: &Revision) -> Result<Revision> {
        let mut inner = self.lock()?;
        inner.check(key, revision)?;
        Ok(inner.put(key, value))
    }

    fn delete(&self, key: &str, revision: &Revision) -> Result<()> {
        let mut inner = self.lock()?;
        inner.check(key, revision)?;
        inner.data.remove(key);
        Ok(())
    }

    fn has_calico_node(&self) -> bool {
        self.calico_node
    }

    fn ping(&self) -> Result<()> {
        self.lock().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_semantics() {
        let kv = MemoryKv::new();
        let r1 = kv.create("/a", b"1").expect("create");
        assert!(matches!(
            kv.create("/a", b"2"),
            Err(StoreError::AlreadyExists(_))
        ));
        let r2 = kv.update("/a", b"2", &r1).expect("update");
        assert!(matches!(
            kv.update("/a", b"3", &r1),
            Err(StoreError::Conflict(_))
        ));
        kv.inject_conflict("/a");
        assert!(matches!(
            kv.update("/a", b"3", &r2),
            Err(StoreError::Conflict(_))
        ));
        assert!(kv.update("/a", b"3", &r2).is_ok());
        assert!(matches!(kv.delete("/b", &r2), Err(StoreError::NotFound(_))));
        kv.create("/ab", b"x").expect("create");
        kv.create("/b", b"y").expect("create");
        let listed: Vec<String> = kv
            .list("/a")
            .expect("list")
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        assert_eq!(listed, ["/a", "/ab"]);
    }
}

//! An in-memory [`KvTarget`] for the bench's own tests: mod revisions like etcd's, and
//! failures on command (a writer that gets in between a read and a write, a refusal).

use crate::target::{ErrorKind, KvTarget, PairWrite, TargetError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct State {
    revision: u64,
    /// Key -> mod revision.
    keys: BTreeMap<Vec<u8>, u64>,
    /// Transactions still to be beaten by another writer (a key changes after the read).
    interferences: u32,
    transactions: u64,
}

#[derive(Clone, Debug, Default)]
pub struct MemoryTarget {
    state: Arc<Mutex<State>>,
    /// Every transaction fails with this kind.
    refuse: Option<ErrorKind>,
}

impl MemoryTarget {
    /// A target whose first `count` transactions find a key changed since it was read.
    pub fn interfered(count: u32) -> Self {
        let target = Self::default();
        target.state.lock().unwrap().interferences = count;
        target
    }

    /// A target that refuses every transaction with `kind`.
    pub fn refusing(kind: ErrorKind) -> Self {
        Self {
            refuse: Some(kind),
            ..Self::default()
        }
    }

    pub fn mod_revision(&self, key: &[u8]) -> u64 {
        self.state
            .lock()
            .unwrap()
            .keys
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    pub fn transactions(&self) -> u64 {
        self.state.lock().unwrap().transactions
    }
}

impl KvTarget for MemoryTarget {
    async fn put(&self, key: Vec<u8>, _value: Vec<u8>) -> Result<(), TargetError> {
        let mut state = self.state.lock().unwrap();
        state.revision += 1;
        let revision = state.revision;
        state.keys.insert(key, revision);
        Ok(())
    }

    async fn get(&self, key: Vec<u8>) -> Result<bool, TargetError> {
        Ok(self.state.lock().unwrap().keys.contains_key(&key))
    }

    async fn read_revision(&self, key: Vec<u8>) -> Result<u64, TargetError> {
        Ok(self.mod_revision(&key))
    }

    async fn write_pair_if_unchanged(&self, pair: [PairWrite; 2]) -> Result<bool, TargetError> {
        let mut state = self.state.lock().unwrap();
        state.transactions += 1;
        if let Some(kind) = self.refuse {
            return Err(TargetError {
                system: "memory",
                kind,
                message: format!("refused as {}", kind.name()),
            });
        }
        if state.interferences > 0 {
            state.interferences -= 1;
            state.revision += 1;
            let revision = state.revision;
            state.keys.insert(pair[0].key.clone(), revision);
        }
        let unchanged = pair
            .iter()
            .all(|write| state.keys.get(&write.key).copied().unwrap_or(0) == write.read_revision);
        if !unchanged {
            return Ok(false);
        }
        state.revision += 1;
        let revision = state.revision;
        for write in pair {
            state.keys.insert(write.key, revision);
        }
        Ok(true)
    }
}

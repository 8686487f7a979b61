//! Each replica's bounded memory of its keys' newest versions (revision, create revision,
//! version; no values), so that a plain put or delete of a recently written key reads nothing
//! from RocksDB (issue 19: the seek for the newest version was the largest cost of applying a
//! write). It is learnt from the writes the state machine applies and must always agree with
//! the database: every path that changes a shard's versions other than a one-phase write
//! forgets what it touched (transaction commands) or everything (snapshot install).
//!
//! Two generations bound it: entries go into `current`; when that fills, it becomes
//! `previous` and the old `previous` is dropped, so keys written since the last turn stay and
//! at most `2 * GENERATION_ENTRIES` are kept, without an LRU list to update on every hit.

use cairn_mvcc::{KnownNewest, NewestMeta};
use std::collections::HashMap;

/// Keys per generation. Two generations of 8 192 keys of up to a few dozen bytes are about
/// 2-3 MB per replica at most; a node with 16 replicas spends under 50 MB.
pub const GENERATION_ENTRIES: usize = 8_192;

#[derive(Debug)]
pub struct NewestCache {
    current: HashMap<Vec<u8>, Option<NewestMeta>>,
    previous: HashMap<Vec<u8>, Option<NewestMeta>>,
    generation_entries: usize,
}

impl Default for NewestCache {
    fn default() -> Self {
        Self::new(GENERATION_ENTRIES)
    }
}

impl NewestCache {
    pub fn new(generation_entries: usize) -> Self {
        Self {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation_entries: generation_entries.max(1),
        }
    }

    /// Records `key`'s newest version as the database will hold it once the batch being
    /// built is written (`None`: no version).
    pub fn learn(&mut self, key: Vec<u8>, meta: Option<NewestMeta>) {
        if self.current.len() >= self.generation_entries && !self.current.contains_key(&key) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.previous.remove(&key);
        self.current.insert(key, meta);
    }

    /// Forgets `key`: its versions changed in a way the cache does not follow.
    pub fn forget(&mut self, key: &[u8]) {
        self.current.remove(key);
        self.previous.remove(key);
    }

    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl KnownNewest for NewestCache {
    fn newest_meta(&self, user_key: &[u8]) -> Option<Option<NewestMeta>> {
        self.current
            .get(user_key)
            .or_else(|| self.previous.get(user_key))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_mvcc::LiveMeta;
    use cairn_types::Revision;

    fn meta(revision: u64) -> Option<NewestMeta> {
        Some(NewestMeta {
            revision: Revision(revision),
            live: Some(LiveMeta {
                create_revision: Revision(1),
                version: revision,
            }),
        })
    }

    #[test]
    fn it_answers_what_it_learnt_last_and_forgets_on_request() {
        let mut cache = NewestCache::new(4);
        assert_eq!(cache.newest_meta(b"a"), None, "unknown");
        cache.learn(b"a".to_vec(), meta(1));
        cache.learn(b"b".to_vec(), None);
        cache.learn(b"a".to_vec(), meta(2));
        assert_eq!(cache.newest_meta(b"a"), Some(meta(2)));
        assert_eq!(
            cache.newest_meta(b"b"),
            Some(None),
            "known to have no version"
        );
        cache.forget(b"a");
        assert_eq!(cache.newest_meta(b"a"), None);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn it_holds_at_most_two_generations_and_keeps_the_newest_answer() {
        let mut cache = NewestCache::new(3);
        for i in 0..100u64 {
            cache.learn(i.to_be_bytes().to_vec(), meta(i + 1));
            assert!(cache.len() <= 6);
            // The key just learnt, and the one before it, are always known.
            assert_eq!(cache.newest_meta(&i.to_be_bytes()), Some(meta(i + 1)));
            if i > 0 {
                assert!(cache.newest_meta(&(i - 1).to_be_bytes()).is_some());
            }
        }
        // A key in the previous generation learnt again moves to the current one, once.
        cache.learn(98u64.to_be_bytes().to_vec(), meta(500));
        assert_eq!(cache.newest_meta(&98u64.to_be_bytes()), Some(meta(500)));
        assert!(cache.len() <= 6);
    }
}

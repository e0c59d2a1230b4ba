//! A bounded cache of decoded positions. A payment reads the same position three or four times
//! within seconds (verify, getPayment, perhaps again, then the receipt's append), and decoding a
//! snapshot validates every identifier in it: the cache saves that work.
//!
//! Coherence: writers put the new state under the writer lock, after their batch applied, and
//! bump an epoch. A reader that missed fills the cache only if no write happened while it read
//! from sled, so a stale snapshot can never overwrite a newer one.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;
use mpay_common::ledger::Position;

use super::PositionId;

pub struct PositionCache {
    inner: Option<Mutex<Inner>>,
}

struct Inner {
    lru: LruCache<PositionId, Position>,
    epoch: u64,
}

/// Returned by a miss: hand it back with what was read.
pub struct Miss(u64);

impl PositionCache {
    pub fn new(entries: usize) -> PositionCache {
        PositionCache {
            inner: NonZeroUsize::new(entries).map(|n| {
                Mutex::new(Inner {
                    lru: LruCache::new(n),
                    epoch: 0,
                })
            }),
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Inner>> {
        // Only cached copies live here: after a panic elsewhere they are still valid.
        self.inner
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn get(&self, id: PositionId) -> Result<Position, Miss> {
        let Some(mut inner) = self.lock() else {
            return Err(Miss(u64::MAX));
        };
        match inner.lru.get(&id) {
            Some(p) => Ok(p.clone()),
            None => Err(Miss(inner.epoch)),
        }
    }

    /// Fills after a miss, unless a write happened since.
    pub fn fill(&self, miss: Miss, id: PositionId, position: &Position) {
        if let Some(mut inner) = self.lock()
            && inner.epoch == miss.0
        {
            inner.lru.put(id, position.clone());
        }
    }

    /// Records committed writes (called under the store's writer lock).
    pub fn written(&self, updates: Vec<(PositionId, Position)>) {
        if updates.is_empty() {
            return;
        }
        if let Some(mut inner) = self.lock() {
            inner.epoch += 1;
            for (id, p) in updates {
                inner.lru.put(id, p);
            }
        }
    }
}

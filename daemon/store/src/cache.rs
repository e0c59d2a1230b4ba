//! A bounded cache of decoded positions. A payment reads the same position three or four times
//! within seconds (verify, getPayment, perhaps again, then the receipt's append), and decoding a
//! snapshot validates every identifier in it: the cache saves that work.
//!
//! Coherence: writers put the new state under the writer lock, after their batch applied. A
//! reader that missed fills the cache only if that position was not written while it read from
//! sled, so a stale snapshot can never overwrite a newer one. A write to the position puts it in
//! the cache; if it is still absent and fewer than `capacity` insertions happened since the miss,
//! it cannot have been written and evicted meanwhile.

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
    /// Insertions so far, writes and fills alike.
    inserts: u64,
}

/// Returned by a miss: hand it back with what was read.
pub struct Miss(u64);

impl PositionCache {
    pub fn new(entries: usize) -> PositionCache {
        PositionCache {
            inner: NonZeroUsize::new(entries).map(|n| {
                Mutex::new(Inner {
                    lru: LruCache::new(n),
                    inserts: 0,
                })
            }),
        }
    }

    /// (entries held, entries allowed).
    pub fn usage(&self) -> (usize, usize) {
        self.lock()
            .map_or((0, 0), |inner| (inner.lru.len(), inner.lru.cap().get()))
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
            None => Err(Miss(inner.inserts)),
        }
    }

    /// Fills after a miss, unless the position may have been written since.
    pub fn fill(&self, miss: Miss, id: PositionId, position: &Position) {
        if let Some(mut inner) = self.lock() {
            let since = inner.inserts.saturating_sub(miss.0);
            let capacity = inner.lru.cap().get() as u64;
            if since < capacity && !inner.lru.contains(&id) {
                inner.inserts += 1;
                inner.lru.put(id, position.clone());
            }
        }
    }

    /// Records committed writes (called under the store's writer lock).
    pub fn written(&self, updates: Vec<(PositionId, Position)>) {
        if updates.is_empty() {
            return;
        }
        if let Some(mut inner) = self.lock() {
            for (id, p) in updates {
                inner.inserts += 1;
                inner.lru.put(id, p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpay_common::ledger::{Actor, Change, Event};

    fn position(description: &str) -> Position {
        let [e, ..] = crate::fixture::entities();
        let nav = e.iuv.notice(1).expect("nav");
        let mut data = crate::fixture::Builder::new(&e, 1)
            .position(1, &mut std::iter::once(nav))
            .expect("position");
        data.description = description.into();
        let event = Event::new(jiff::Timestamp::now(), Actor::System, Change::Loaded(data));
        Position::load(e.fiscal_code.clone(), &event).expect("load")
    }

    #[test]
    fn a_read_that_raced_a_write_never_overwrites_it() {
        let cache = PositionCache::new(4);
        let miss = cache.get(7).expect_err("empty");
        // A writer commits a newer state while the reader is reading the old one from sled.
        cache.written(vec![(7, position("new"))]);
        cache.fill(miss, 7, &position("old"));
        assert_eq!(cache.get(7).ok().map(|p| p.description), Some("new".into()));
    }

    #[test]
    fn a_write_then_eviction_during_a_read_blocks_the_fill() {
        let cache = PositionCache::new(2);
        let miss = cache.get(7).expect_err("empty");
        cache.written(vec![(7, position("new"))]);
        cache.written(vec![(8, position("a")), (9, position("b"))]);
        // 7 was written and evicted meanwhile: the reader's copy may be older, keep it out.
        cache.fill(miss, 7, &position("old"));
        assert!(cache.get(7).is_err());
        // A quiet miss fills.
        let miss = cache.get(7).expect_err("absent");
        cache.fill(miss, 7, &position("fresh"));
        assert_eq!(
            cache.get(7).ok().map(|p| p.description),
            Some("fresh".into())
        );
    }
}

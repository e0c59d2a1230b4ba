//! The key-value interface on fjall 3, in `STORE/fjall/`. fjall writes every batch to its
//! journal and makes it durable on `persist(SyncData)`, which syncs the journal file; the
//! journal's folder is synced by fjall when a journal file is created, and tables (SSTs) are
//! written and synced before the journal that covered them is dropped.
//!
//! The store's `data` table is split across keyspaces by the first byte of its keys, which is
//! the store's own table tag (positions, ledger, each index): one LSM tree would mix the
//! positions, written in id order, with the debtor and name indexes, written in random order,
//! so that every flushed table overlapped every other and each compaction rewrote the
//! snapshots with them. Apart, a bulk load's snapshots and ledger entries only append, and
//! their tables move down the levels without being rewritten. A batch stays atomic across the
//! keyspaces (fjall's batches are). A store created before the split keeps its one keyspace.

use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fjall::config::{CompressionPolicy, PartitioningPolicy};
use fjall::{
    CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode,
};

use super::{Batch, Entry, Tuning, Value};
use crate::StoreError;

/// Where fjall's files live inside a store folder: apart from mpay's own files beside them.
pub fn dir(store_dir: &Path) -> PathBuf {
    store_dir.join("fjall")
}

/// Values larger than this go to blob files beside the tables. A position's snapshot stays
/// inline; a flow's record (megabytes for a big flow) must not: a block holds at least one
/// value, a block larger than the cache's share is never cached, and every point read that
/// lands on it would read and checksum it again.
const SEPARATION_THRESHOLD: u32 = 16 << 10;

/// Keyspaces a split table is cut into: keys whose first byte is `b` live in keyspace
/// `min(b, SHARDS - 1)`, so that the keyspaces in order hold the keys in order.
const SHARDS: usize = 16;

/// The tables split by their keys' first byte (see the module's comment).
const SPLIT: &[&str] = &["data"];

/// How long a close waits for the memtables to be written out: well within systemd's stop
/// timeout (60 s in the unit).
const WRITE_OUT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Io(io) => StoreError::Unavailable(io.to_string()),
            fjall::Error::Locked => StoreError::Unavailable("the store is locked".into()),
            other => StoreError::Corrupt(format!("fjall: {other:?}")),
        }
    }
}

#[derive(Clone)]
pub struct FjallKv {
    db: Database,
    /// Every table opened, for the flush at close.
    tables: Arc<Mutex<Vec<Keyspace>>>,
    /// The size at which mpay rotates a keyspace's memtable: a quarter of
    /// `Tuning::write_buffer_bytes` (see `FjallTable::apply`).
    rotate_at: u64,
}

#[derive(Clone)]
pub struct FjallTable {
    db: Database,
    /// One keyspace, or `SHARDS` of them for a split table.
    shards: Arc<[Keyspace]>,
    /// Bytes written to each keyspace's memtable since mpay last rotated it, counted as fjall
    /// counts them.
    written: Arc<[AtomicU64]>,
    /// The size at which mpay rotates a memtable.
    rotate_at: u64,
}

/// What fjall counts for one entry of a memtable beyond its key and value (its
/// `InternalValue`), rounded up so that mpay's count is never below fjall's.
const ENTRY_OVERHEAD: u64 = 80;

impl FjallKv {
    pub fn open(store_dir: &Path, tuning: Tuning) -> Result<FjallKv, StoreError> {
        let path = dir(store_dir);
        crate::fsync::create_dir_all(&path).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
        })?;
        // A store closed a moment ago in this process keeps its lock until fjall's workers let go
        // of it: wait a little before calling it in use.
        let mut attempts = 0;
        let db = loop {
            match Database::builder(&path)
                .cache_size(tuning.cache_bytes)
                // The store persists before every acknowledgement (the group commit).
                .manual_journal_persist(true)
                .open()
            {
                Err(fjall::Error::Locked) if attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(fjall::Error::Locked) => {
                    return Err(StoreError::Unavailable(format!(
                        "{} is in use by another process (is mpayd already running?)",
                        store_dir.display()
                    )));
                }
                other => break other?,
            }
        };
        Ok(FjallKv {
            db,
            tables: Arc::default(),
            rotate_at: (tuning.write_buffer_bytes / 4).max(4 << 20),
        })
    }

    pub fn table(&self, name: &str) -> Result<FjallTable, StoreError> {
        // A table created before the split was one keyspace of the table's name.
        let names: Vec<String> = if SPLIT.contains(&name) && !self.db.keyspace_exists(name) {
            (0..SHARDS).map(|n| format!("{name}.{n:02}")).collect()
        } else {
            vec![name.to_owned()]
        };
        // fjall's own limit, a safety net only: mpay rotates at a quarter of it (see `apply`).
        let shards = names
            .iter()
            .map(|name| self.keyspace(name, self.rotate_at * 4))
            .collect::<Result<Vec<_>, _>>()?;
        // What a start replayed from the journal is written out now, not left in memory
        // until the keyspace is written to again.
        for keyspace in &shards {
            keyspace.rotate_memtable()?;
        }
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(shards.iter().cloned());
        Ok(FjallTable {
            db: self.db.clone(),
            written: shards.iter().map(|_| AtomicU64::new(0)).collect(),
            shards: shards.into(),
            rotate_at: self.rotate_at,
        })
    }

    fn keyspace(&self, name: &str, memtable: u64) -> Result<Keyspace, StoreError> {
        Ok(self.db.keyspace(name, || {
            KeyspaceCreateOptions::default()
                .manual_journal_persist(true)
                .max_memtable_size(memtable)
                // Index and filter blocks in partitions at every level (fjall's default starts
                // at level 3): unpartitioned, a big table's index is one block, read and
                // checksummed whole by every lookup that misses the cache. Loading 10M
                // positions spent 95 % of its time there. (fjall keeps these options from a
                // keyspace's creation: older stores change only through backup and restore.)
                .index_block_partitioning_policy(PartitioningPolicy::all(true))
                // fjall compresses only from level 2 on, and the split keyspaces' snapshots and
                // ledger entries, written in order, reach their level without being rewritten:
                // uncompressed they took twice the disk (1,052 against 493 bytes a position at
                // 1M), for lookups 1–4 µs faster.
                .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
                .filter_block_partitioning_policy(PartitioningPolicy::all(true))
                .with_kv_separation(Some(
                    KvSeparationOptions::default().separation_threshold(SEPARATION_THRESHOLD),
                ))
        })?)
    }

    pub fn flush(&self) -> Result<(), String> {
        self.db
            .persist(PersistMode::SyncData)
            .map_err(|e| format!("cannot sync the store's journal: {e}"))
    }

    /// At close: the memtables are written out as tables, so that the next open has no journal
    /// to replay (a reopen after a crash still replays it). The write-out waits for fjall's
    /// workers, which may be deep in a compaction of a large store: past `WRITE_OUT_WAIT` the
    /// close goes on without it, since everything is already durable in the journal.
    pub fn flush_for_close(&self) -> Result<(), String> {
        // Durable first: writing the memtables out only spares the next open its replay.
        self.flush()?;
        let tables = self
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (done, written) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("mpay-close".into())
            .spawn(move || {
                let result = tables
                    .iter()
                    .try_for_each(Keyspace::rotate_memtable_and_wait);
                let _ = done.send(result);
            })
            .map_err(|e| format!("cannot start writing out the memtables: {e}"))?;
        match written.recv_timeout(WRITE_OUT_WAIT) {
            Ok(result) => result.map_err(|e| format!("cannot write out the memtables: {e}")),
            Err(_) => {
                tracing::warn!(
                    "the memtables were not written out within {} s: the next start replays \
                     the store's journal",
                    WRITE_OUT_WAIT.as_secs()
                );
                Ok(())
            }
        }
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    pub fn memory(&self) -> (u64, u64) {
        (self.db.cache_size(), self.db.write_buffer_size())
    }
}

impl FjallTable {
    /// The index of the keyspace that holds `key`.
    fn shard_index(&self, key: &[u8]) -> usize {
        key.first()
            .map_or(0, |&b| usize::from(b).min(self.shards.len() - 1))
    }

    /// The keyspace that holds `key`.
    fn shard(&self, key: &[u8]) -> &Keyspace {
        &self.shards[self.shard_index(key)]
    }

    /// The index of the keyspace that holds the keys from `bound` on (or up to it).
    fn shard_at(&self, bound: Bound<&[u8]>, unbounded: usize) -> usize {
        match bound {
            Bound::Included(k) | Bound::Excluded(k) => self.shard_index(k),
            Bound::Unbounded => unbounded,
        }
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> fjall::Result<Option<fjall::Slice>> {
        self.shard(key.as_ref()).get(key)
    }

    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> fjall::Result<bool> {
        self.shard(key.as_ref()).contains_key(key)
    }

    /// Applies a batch atomically, then writes out the memtables it filled.
    ///
    /// mpay rotates memtables itself, before fjall's own limit is reached. fjall asks its
    /// workers for a rotation after every write while a memtable is over its limit; under a
    /// steady stream of commits those requests fill the workers' bounded queue, and a worker
    /// that rotates then blocks for good sending the flush on that same full queue (seen with
    /// one worker, the daemon on one CPU: nothing was flushed again and the write buffers grew
    /// by everything written, 1.5 GB within a minute of receipts). A rotation from here sends
    /// its flush from the committing thread, which the workers unblock.
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = self.db.batch();
        let mut sizes = vec![0u64; self.shards.len()];
        for (k, v) in batch.ops {
            let at = self.shard_index(&k);
            let keyspace = &self.shards[at];
            sizes[at] += (k.len() + v.as_ref().map_or(0, Vec::len)) as u64 + ENTRY_OVERHEAD;
            match v {
                Some(v) => b.insert(keyspace, k, v),
                None => b.remove(keyspace, k),
            }
        }
        b.commit()?;
        for (at, size) in sizes.into_iter().enumerate().filter(|(_, n)| *n > 0) {
            let written = self.written[at].fetch_add(size, Ordering::Relaxed) + size;
            if written >= self.rotate_at {
                self.written[at].store(0, Ordering::Relaxed);
                // The batch is applied: a failed rotation is retried at the next write, and
                // must not report the batch as failed.
                if let Err(e) = self.shards[at].rotate_memtable() {
                    self.written[at].store(self.rotate_at, Ordering::Relaxed);
                    tracing::warn!("cannot write out a memtable of the store: {e}");
                }
            }
        }
        Ok(())
    }

    /// Sorted keys straight into new tables, one ingestion per keyspace they fall in (the
    /// keyspaces in order hold the keys in order). fjall writes out the keyspace's memtable
    /// first, and syncs the tables and its version file before `finish` returns.
    pub fn ingest(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut rest = keys;
        while let Some(first) = rest.first() {
            let at = self.shard_index(first);
            let n = rest
                .iter()
                .position(|k| self.shard_index(k) != at)
                .unwrap_or(rest.len());
            // Written out by fjall's worker first: an ingestion writes out the memtable
            // itself, and fjall's count of the write buffers would never come down.
            self.shards[at].rotate_memtable_and_wait()?;
            let mut ingestion = self.shards[at].start_ingestion()?;
            for k in &rest[..n] {
                ingestion.write(k.as_slice(), &[][..])?;
            }
            ingestion.finish()?;
            // The ingestion wrote the memtable out.
            self.written[at].store(0, Ordering::Relaxed);
            rest = &rest[n..];
        }
        Ok(())
    }

    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> ShardIter {
        let owned = |b: Bound<&K>| b.map(|k| k.as_ref().to_vec());
        let (start, end) = (owned(range.start_bound()), owned(range.end_bound()));
        let first = self.shard_at(start.as_ref().map(Vec::as_slice), 0);
        let last = self.shard_at(end.as_ref().map(Vec::as_slice), self.shards.len() - 1);
        ShardIter(
            self.shards
                .get(first..=last)
                .unwrap_or_default()
                .iter()
                .map(|k| k.range((start.clone(), end.clone())))
                .collect(),
        )
    }

    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> ShardIter {
        match prefix.as_ref() {
            [] => self.iter(),
            p => ShardIter(VecDeque::from([self.shard(p).prefix(p)])),
        }
    }

    pub fn iter(&self) -> ShardIter {
        ShardIter(self.shards.iter().map(Keyspace::iter).collect())
    }
}

/// A scan over one or more keyspaces of a table, one after the other, in key order either way.
pub struct ShardIter(VecDeque<fjall::Iter>);

impl Iterator for ShardIter {
    type Item = fjall::Guard;

    fn next(&mut self) -> Option<fjall::Guard> {
        loop {
            match self.0.front_mut()?.next() {
                Some(guard) => return Some(guard),
                None => drop(self.0.pop_front()),
            }
        }
    }
}

impl DoubleEndedIterator for ShardIter {
    fn next_back(&mut self) -> Option<fjall::Guard> {
        loop {
            match self.0.back_mut()?.next_back() {
                Some(guard) => return Some(guard),
                None => drop(self.0.pop_back()),
            }
        }
    }
}

pub fn entry(guard: fjall::Guard) -> Result<Entry, StoreError> {
    let (k, v) = guard.into_inner()?;
    Ok((Value::Fjall(k), Value::Fjall(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> FjallKv {
        let tuning = Tuning {
            cache_bytes: 8 << 20,
            write_buffer_bytes: 8 << 20,
        };
        FjallKv::open(dir, tuning).expect("open")
    }

    fn keys(iter: impl Iterator<Item = fjall::Guard>) -> Vec<Vec<u8>> {
        iter.map(|g| entry(g).expect("entry").0.to_vec()).collect()
    }

    /// Keys with first bytes in several keyspaces, and past the last one.
    fn sample() -> Vec<Vec<u8>> {
        [0u8, 1, 1, 7, 8, 15, 16, 200]
            .iter()
            .enumerate()
            .map(|(n, &b)| vec![b, n as u8])
            .collect()
    }

    #[test]
    fn a_split_table_scans_in_key_order_across_its_keyspaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = open(dir.path());
        let table = kv.table("data").expect("table");
        assert_eq!(table.shards.len(), SHARDS);
        let mut batch = Batch::default();
        for k in sample() {
            batch.insert(k.clone(), k);
        }
        table.apply(batch).expect("apply");

        let all = sample();
        assert_eq!(keys(table.iter()), all);
        assert_eq!(
            keys(table.iter().rev()),
            all.iter().rev().cloned().collect::<Vec<_>>()
        );
        // A range across keyspaces, both ways, and one inside a keyspace.
        let (from, to) = (vec![1u8, 2], vec![16u8, 6]);
        let inside: Vec<_> = all
            .iter()
            .filter(|k| **k >= from && **k <= to)
            .cloned()
            .collect();
        assert_eq!(keys(table.range(from.clone()..=to.clone())), inside);
        assert_eq!(
            keys(table.range(from..=to).rev()),
            inside.iter().rev().cloned().collect::<Vec<_>>()
        );
        assert_eq!(keys(table.range(vec![8u8]..vec![9u8])), vec![vec![8u8, 4]]);
        assert_eq!(
            keys(table.range(vec![9u8]..vec![8u8])),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(keys(table.prefix([1u8])), vec![vec![1u8, 1], vec![1, 2]]);
        assert_eq!(keys(table.prefix([])).len(), all.len());
        // Both ends at once meet in the middle without repeating a key.
        let mut both = table.iter();
        let (mut front, mut back) = (Vec::new(), Vec::new());
        while let Some(g) = both.next() {
            front.push(entry(g).expect("entry").0.to_vec());
            if let Some(g) = both.next_back() {
                back.push(entry(g).expect("entry").0.to_vec());
            }
        }
        back.reverse();
        front.extend(back);
        assert_eq!(front, all);
        assert!(table.get([200u8, 7]).expect("get").is_some());
        assert!(!table.contains_key([3u8]).expect("contains"));
    }

    /// The daemon on one CPU gets one fjall worker; under a steady stream of commits its write
    /// buffers must still be written out, not grow with everything written.
    #[test]
    // Pinning the test's thread to one CPU needs `sched_setaffinity`.
    #[allow(unsafe_code)]
    fn the_write_buffers_stay_bounded_with_one_worker() {
        // fjall sizes its worker pool from the CPUs the opening thread may run on.
        // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only reads it.
        unsafe {
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut one);
            assert_eq!(
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one),
                0
            );
        }
        assert_eq!(
            std::thread::available_parallelism().map(usize::from).ok(),
            Some(1)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = open(dir.path());
        let table = kv.table("data").expect("table");
        let mut rng = fastrand::Rng::with_seed(7);
        let value = vec![7u8; 1_000];
        // 160 MiB in commits of 40 entries over five keyspaces, in random key order.
        for n in 0..4_000u32 {
            let mut batch = Batch::default();
            for _ in 0..40 {
                let mut key = vec![rng.u8(1..6)];
                key.extend_from_slice(&rng.u64(..).to_be_bytes());
                batch.insert(key, value.clone());
            }
            table.apply(batch).expect("apply");
            if n % 8 == 0 {
                kv.flush().expect("flush");
            }
        }
        let (_, write_buffers) = kv.memory();
        assert!(
            write_buffers < 128 << 20,
            "write buffers of {write_buffers} bytes after 160 MiB written"
        );
        // Once the writes stop, the worker writes everything out.
        let mut waited = 0;
        while kv.memory().1 > 16 << 20 && waited < 600 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            waited += 1;
        }
        let (_, write_buffers) = kv.memory();
        assert!(
            write_buffers <= 16 << 20,
            "write buffers of {write_buffers} bytes a minute after the writes"
        );
    }

    #[test]
    fn a_table_made_before_the_split_stays_one_keyspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let kv = open(dir.path());
            let old = kv.keyspace("data", 4 << 20).expect("keyspace");
            old.insert([1u8, 1], [9u8]).expect("insert");
            kv.flush().expect("flush");
        }
        let kv = open(dir.path());
        let table = kv.table("data").expect("table");
        assert_eq!(table.shards.len(), 1);
        assert_eq!(
            table.get([1u8, 1]).expect("get").as_deref(),
            Some(&[9u8][..])
        );
        let mut batch = Batch::default();
        batch.insert(vec![12u8], vec![1u8]);
        table.apply(batch).expect("apply");
        assert_eq!(keys(table.iter()), vec![vec![1u8, 1], vec![12]]);
        assert!(!kv.db.keyspace_exists("data.12"));
    }
}

//! The key-value interface beneath the store: named tables of ordered byte keys, an atomic batch
//! per table, gets, ordered range and prefix scans, and one durable flush for everything
//! written. Two engines implement it: sled 0.34 (the default) and fjall (an LSM tree, whose
//! memory stays within its block cache and write buffers). Everything above this module is
//! written once, for both.
//!
//! Only what the store needs is here. A batch is atomic within its table: everything that must
//! commit together (a position's ledger entry, snapshot and indexes) lives in the `data` table.
//! Writes are not durable until `Kv::flush` returns, which the group commit calls.

mod fjall_engine;
mod sled_engine;

use std::collections::BTreeMap;
use std::ops::{Deref, RangeBounds};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StoreError;

/// The storage engine of a store folder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// sled 0.34: a B-tree over a log. Its memory grows with the part of the store read.
    #[default]
    Sled,
    /// fjall 3: an LSM tree, compressed with LZ4, memory bounded by its cache and buffers.
    Fjall,
}

/// The environment variable naming the engine where a configuration names none.
pub const ENGINE_VAR: &str = "MPAY_STORE_ENGINE";

impl Engine {
    /// `MPAY_STORE_ENGINE` if it names an engine, else the default (a wrong name is refused
    /// by the configuration's check).
    pub fn from_env() -> Engine {
        std::env::var(ENGINE_VAR)
            .ok()
            .and_then(|name| name.parse().ok())
            .unwrap_or_default()
    }

    /// The engine whose files are in `dir`, if any.
    pub fn found_in(dir: &Path) -> Option<Engine> {
        if dir.join("db").is_file() {
            Some(Engine::Sled)
        } else if fjall_engine::dir(dir).join("version").is_file() {
            Some(Engine::Fjall)
        } else {
            None
        }
    }

    /// The file whose lock says that a process has the store open.
    pub fn lock_file(self, dir: &Path) -> std::path::PathBuf {
        match self {
            Engine::Sled => dir.join("db"),
            Engine::Fjall => fjall_engine::dir(dir).join("lock"),
        }
    }

    /// The engine's main file or folder, for messages about damage.
    pub fn data_path(self, dir: &Path) -> std::path::PathBuf {
        match self {
            Engine::Sled => dir.join("db"),
            Engine::Fjall => fjall_engine::dir(dir),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Sled => "sled",
            Engine::Fjall => "fjall",
        })
    }
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Engine, String> {
        match s {
            "sled" => Ok(Engine::Sled),
            "fjall" => Ok(Engine::Fjall),
            other => Err(format!("unknown engine {other:?}: sled or fjall")),
        }
    }
}

/// How much memory the engine may use for its caches.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// sled's page cache, or fjall's block cache.
    pub cache_bytes: u64,
    /// fjall's write buffers (memtables) across all tables; sled has none.
    pub write_buffer_bytes: u64,
}

/// A key or value read from an engine: the engine's own shared buffer, not a copy.
#[derive(Clone)]
pub enum Value {
    Sled(::sled::IVec),
    Fjall(::fjall::Slice),
}

impl Deref for Value {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Value::Sled(v) => v,
            Value::Fjall(v) => v,
        }
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Bytes handed to a batch; taken without a copy when they are an owned vector.
pub struct Bytes(Vec<u8>);

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(v)
    }
}

impl From<&Vec<u8>> for Bytes {
    fn from(v: &Vec<u8>) -> Bytes {
        Bytes(v.clone())
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Bytes {
        Bytes(v.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Bytes {
    fn from(v: &[u8; N]) -> Bytes {
        Bytes(v.to_vec())
    }
}

impl<const N: usize> From<[u8; N]> for Bytes {
    fn from(v: [u8; N]) -> Bytes {
        Bytes(v.to_vec())
    }
}

impl From<Value> for Bytes {
    fn from(v: Value) -> Bytes {
        Bytes(v.to_vec())
    }
}

impl From<&Value> for Bytes {
    fn from(v: &Value) -> Bytes {
        Bytes(v.to_vec())
    }
}

/// Writes to one table that apply all together or not at all. A later write to a key replaces
/// an earlier one of the same batch.
#[derive(Default)]
pub struct Batch {
    ops: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Batch {
    pub fn insert(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.ops.insert(key.into().0, Some(value.into().0));
    }

    pub fn remove(&mut self, key: impl Into<Bytes>) {
        self.ops.insert(key.into().0, None);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// An open store folder.
#[derive(Clone)]
pub enum Kv {
    Sled(sled_engine::SledKv),
    Fjall(fjall_engine::FjallKv),
}

/// One named table of the store.
#[derive(Clone)]
pub enum Table {
    Sled(::sled::Tree),
    Fjall(fjall_engine::FjallTable),
}

/// An ordered scan: forwards, or backwards with `rev`.
pub enum Iter {
    Sled(Box<::sled::Iter>),
    Fjall(fjall_engine::ShardIter),
}

pub type Entry = (Value, Value);

impl Kv {
    /// Opens (or creates) the engine's files in `dir`, with the tables named.
    pub fn open(dir: &Path, engine: Engine, tuning: Tuning) -> Result<Kv, StoreError> {
        match engine {
            Engine::Sled => sled_engine::SledKv::open(dir, tuning).map(Kv::Sled),
            Engine::Fjall => fjall_engine::FjallKv::open(dir, tuning).map(Kv::Fjall),
        }
    }

    pub fn engine(&self) -> Engine {
        match self {
            Kv::Sled(_) => Engine::Sled,
            Kv::Fjall(_) => Engine::Fjall,
        }
    }

    pub fn table(&self, name: &str) -> Result<Table, StoreError> {
        match self {
            Kv::Sled(kv) => kv.table(name).map(Table::Sled),
            Kv::Fjall(kv) => kv.table(name).map(Table::Fjall),
        }
    }

    /// Makes every write applied so far durable: on disk, with the files and folders that hold
    /// it synced, so that a power cut keeps it.
    pub fn flush(&self) -> Result<(), String> {
        match self {
            Kv::Sled(kv) => kv.flush(),
            Kv::Fjall(kv) => kv.flush(),
        }
    }

    /// The last flush, at close: durable as `flush`, and leaving the engine quick to reopen.
    pub fn flush_for_close(&self) -> Result<(), String> {
        match self {
            Kv::Sled(kv) => kv.flush(),
            Kv::Fjall(kv) => kv.flush_for_close(),
        }
    }

    pub fn size_on_disk(&self) -> u64 {
        match self {
            Kv::Sled(kv) => kv.size_on_disk(),
            Kv::Fjall(kv) => kv.size_on_disk(),
        }
    }

    /// What the engine holds in memory now, where it says: (block cache, write buffers).
    /// sled does not tell (its page table is not bounded by its cache anyway).
    pub fn memory(&self) -> Option<(u64, u64)> {
        match self {
            Kv::Sled(_) => None,
            Kv::Fjall(kv) => Some(kv.memory()),
        }
    }
}

impl Table {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>, StoreError> {
        Ok(match self {
            Table::Sled(t) => t.get(key)?.map(Value::Sled),
            Table::Fjall(t) => t.get(key)?.map(Value::Fjall),
        })
    }

    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        Ok(match self {
            Table::Sled(t) => t.contains_key(key)?,
            Table::Fjall(t) => t.contains_key(key)?,
        })
    }

    /// One write on its own (atomic by itself).
    pub fn insert(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.insert(key, value);
        self.apply(batch)
    }

    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self {
            Table::Sled(t) => sled_engine::apply(t, batch),
            Table::Fjall(t) => t.apply(batch),
        }
    }

    /// Whether sorted runs (`ingest`) cost the engine less than the same keys written with
    /// each commit: fjall writes them straight into tables; sled's memory jumps by gigabytes
    /// under a run of a million positions (see `sled_engine::ingest`).
    pub fn takes_runs(&self) -> bool {
        matches!(self, Table::Fjall(_))
    }

    /// Writes keys with empty values, given in ascending order without repeats, the way the
    /// engine takes bulk data best: fjall writes them straight into new tables, synced when
    /// this returns; sled takes them in key order, durable at the next `Kv::flush`. Not
    /// atomic: the caller keeps a durable record of what may be missing until it returns.
    pub fn ingest(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        debug_assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "ingested keys out of order"
        );
        match self {
            Table::Sled(t) => sled_engine::ingest(t, keys),
            Table::Fjall(t) => t.ingest(keys),
        }
    }

    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        match self {
            Table::Sled(t) => Iter::Sled(Box::new(t.range(range))),
            Table::Fjall(t) => Iter::Fjall(t.range(range)),
        }
    }

    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        match self {
            Table::Sled(t) => Iter::Sled(Box::new(t.scan_prefix(prefix))),
            Table::Fjall(t) => Iter::Fjall(t.prefix(prefix)),
        }
    }

    pub fn iter(&self) -> Iter {
        match self {
            Table::Sled(t) => Iter::Sled(Box::new(t.iter())),
            Table::Fjall(t) => Iter::Fjall(t.iter()),
        }
    }

    pub fn last(&self) -> Result<Option<Entry>, StoreError> {
        self.iter().next_back().transpose()
    }
}

impl Iterator for Iter {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(i) => i.next().map(sled_engine::entry),
            Iter::Fjall(i) => i.next().map(fjall_engine::entry),
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(i) => i.next_back().map(sled_engine::entry),
            Iter::Fjall(i) => i.next_back().map(fjall_engine::entry),
        }
    }
}

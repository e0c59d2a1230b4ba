//! The store: the only module that touches a storage engine (DESIGN.md §8.4 keeps everyone else
//! out); `kv` is the interface beneath it, with sled and fjall behind it.
//!
//! It offers domain operations: load positions, append ledger events, look positions up by
//! (entity, iupd), NAV, IUV or debtor. Every write is one atomic batch on the `data` tree (ledger
//! event + cached snapshot + indexes) and returns only once it is on disk, through group commit.
//! Writes are serialised by one writer lock, held only while the batch is built and applied, never
//! during the fsync, so many committers share each flush.
//!
//! The calls block: async callers go through `tokio::task::spawn_blocking`.

mod audit;
mod backup;
mod cache;
mod codec;
mod durability;
#[cfg(test)]
mod fixture;
mod flows;
pub mod fsync;
#[cfg(test)]
mod golden;
mod jobs;
mod journal;
mod keys;
mod kv;
mod legacy;
mod mark;
mod movements;
mod receipts;
mod resolutions;
mod runs;
mod search_runs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mpay_common::ids::{DebtorCode, EntityFiscalCode, Iupd, Iuv, Nav};
use mpay_common::ledger::{Event, LedgerError, Position};
use serde::{Deserialize, Serialize};

pub use backup::{BackupSummary, restore, verify};
use durability::GroupCommit;
pub use flows::{FlowRecord, FlowRecorded};
pub use jobs::{BulkJob, JobStatus};
pub use journal::{BodyRef, Direction, JournalBodies, JournalEntry};
pub use keys::PositionId;
pub use kv::{ENGINE_VAR, Engine};
pub use movements::MovementRecord;
pub use receipts::{Disposition, ReceiptRecord, Recorded};
pub use search_runs::SearchRun;

/// A position snapshot in the store's encoding, and back: what a read costs when the position is
/// not cached (the snapshot benchmark measures it). The key layout stays private.
pub fn encode_snapshot(position: &Position) -> Result<Vec<u8>, StoreError> {
    codec::encode(position)
}

/// See [`encode_snapshot`].
pub fn decode_snapshot(bytes: &[u8]) -> Result<Position, StoreError> {
    codec::decode(bytes, "a position")
}

/// On-disk format of the store as a whole. Raised when keys or trees change meaning; a store
/// written by a newer format is refused rather than misread.
pub const STORE_FORMAT: u32 = 2;

/// Trees kept apart from `data` because they never need to commit atomically with a position.
/// A backup numbers them by position in this list: add new trees at the end.
pub const TREES: [&str; 7] = [
    "journal",
    "flows",
    "treasury",
    "reconciliation",
    "audit",
    "jobs",
    "runs",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the store in {path} was written by format {found}; this mpayd understands format \
         {STORE_FORMAT} at most: run a newer mpayd, or restore a backup"
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error("backup: {0}")]
    Backup(String),
}

/// Why a write was not made. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Rejected(#[from] LedgerError),
    /// The position's iupd is taken: another load of it got there first.
    #[error("position {0} already exists")]
    Exists(Iupd),
    #[error("notice number {nav} (IUV {iuv}) is already used by another position")]
    NavTaken { nav: Nav, iuv: Iuv },
    #[error("{0}")]
    Conflict(String),
    #[error("no such position")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A ledger entry as stored: the event and the global commit that wrote it. Commits are numbered
/// in order, so "everything up to commit N" is a consistent cut (backups rely on it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredEvent {
    pub commit: u64,
    pub event: Event,
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The engine, for a new store; an existing store must be of this engine.
    pub engine: kv::Engine,
    /// sled's page cache or fjall's block cache. It bounds only part of sled's memory (see
    /// ARCHITECTURE.md); fjall's is bounded by it and `write_buffer_bytes`.
    pub cache_bytes: u64,
    /// fjall's memtables: each keyspace gets a quarter of this (see `kv/fjall_engine.rs`).
    pub write_buffer_bytes: u64,
    /// Decoded positions kept in memory (0: none).
    pub position_cache: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            engine: kv::Engine::default(),
            cache_bytes: 64 << 20,
            write_buffer_bytes: 32 << 20,
            position_cache: 10_000,
        }
    }
}

/// A new position ready to commit: see `Store::prepare_load`.
pub struct PreparedLoad {
    position: Position,
    snapshot: Vec<u8>,
    /// The event, encoded without its commit number (known only when it commits).
    event: Vec<u8>,
}

/// Counters for health checks, metrics and the console.
#[derive(Clone, Debug, Serialize)]
pub struct StoreStats {
    pub positions: u64,
    /// The last commit's number: it counts across restarts.
    pub commits: u64,
    /// Commits made since this process opened the store (the pair of `flushes`).
    pub commits_since_start: u64,
    /// fsyncs since this process opened the store.
    pub flushes: u64,
    pub disk_bytes: u64,
    pub engine: kv::Engine,
    /// The engine's cache as configured, and what it holds now (fjall only).
    pub engine_cache_limit_bytes: u64,
    pub engine_cache_bytes: Option<u64>,
    /// fjall's write buffers (memtables) now.
    pub engine_write_buffer_bytes: Option<u64>,
    /// Decoded positions cached, and the most allowed (`[store] position_cache`).
    pub position_cache_entries: u64,
    pub position_cache_limit: u64,
}

struct Writer {
    next_position: PositionId,
    commit: u64,
    positions: u64,
}

pub struct Store {
    db: kv::Kv,
    data: kv::Table,
    writer: Mutex<Writer>,
    group: Arc<GroupCommit>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    commits: Arc<AtomicU64>,
    /// The writer's position count, readable without its lock: health checks must answer while
    /// a writer is stuck.
    positions: AtomicU64,
    /// The last commit when the store was opened.
    commits_at_open: u64,
    journal_seq: AtomicU64,
    /// The journal's summary records.
    journal: kv::Table,
    /// Bulk-load job records (`jobs.rs`).
    jobs: kv::Table,
    jobs_lock: Mutex<()>,
    /// The operators' audit trail (`audit.rs`), and its next number once known.
    audit: kv::Table,
    audit_seq: Mutex<Option<u64>>,
    /// The worklist's fixes (`resolutions.rs`), and the next id once known.
    reconciliation: kv::Table,
    resolution_id: Mutex<Option<u64>>,
    /// The daily runs' records (`runs.rs`), appended one at a time.
    runs: kv::Table,
    runs_lock: Mutex<()>,
    /// The journal's body files, and the lock their writer and pruner share.
    bodies_dir: std::path::PathBuf,
    journal_files: Mutex<journal::Segment>,
    cache: cache::PositionCache,
    /// The engine's cache as configured.
    cache_limit: u64,
    /// Per entity (by its sequence key), the next notice sequence number not handed out.
    sequences: Mutex<std::collections::HashMap<Vec<u8>, u64>>,
}

/// The notice index entries (IUPD, IUV) that change from `before` to `after`; returns the NAVs
/// new to this position (the caller checks that nobody else holds them).
fn index_notices(
    batch: &mut kv::Batch,
    id: PositionId,
    before: Option<&Position>,
    after: &Position,
) -> Vec<Nav> {
    let value = keys::id_value(id);
    let entity = &after.entity;
    let old_navs: BTreeSet<&Nav> = before
        .map(|b| b.instalments().map(|i| &i.terms.nav).collect())
        .unwrap_or_default();
    let new_navs: BTreeSet<&Nav> = after.instalments().map(|i| &i.terms.nav).collect();
    // Indexes are derived data: entries for notices a replacement dropped go away; the
    // ledger keeps the history.
    if let Some(b) = before {
        for inst in b.instalments().filter(|i| !new_navs.contains(&i.terms.nav)) {
            batch.remove(keys::by_iuv(entity, &inst.terms.iuv));
        }
    }
    let mut added = Vec::new();
    for inst in after
        .instalments()
        .filter(|i| !old_navs.contains(&i.terms.nav))
    {
        batch.insert(keys::by_iuv(entity, &inst.terms.iuv), value);
        added.push(inst.terms.nav.clone());
    }
    if before.is_none() {
        batch.insert(keys::by_iupd(entity, &after.iupd), value);
    }
    added
}

/// The search index entries (debtor's code, words of the debtor's name) that change from
/// `before` to `after`.
fn index_search(
    batch: &mut kv::Batch,
    id: PositionId,
    before: Option<&Position>,
    after: &Position,
) {
    let old_name = before.map(|b| b.debtor.name.as_str());
    if old_name != Some(after.debtor.name.as_str()) {
        for key in old_name.map(|n| keys::by_name(n, id)).unwrap_or_default() {
            batch.remove(key);
        }
        for key in keys::by_name(&after.debtor.name, id) {
            batch.insert(key, []);
        }
    }
    let old_debtor = before.map(|b| &b.debtor.code);
    if old_debtor != Some(&after.debtor.code) {
        if let Some(key) = old_debtor.and_then(|c| keys::by_debtor(c, id)) {
            batch.remove(key);
        }
        if let Some(key) = keys::by_debtor(&after.debtor.code, id) {
            batch.insert(key, []);
        }
    }
}

/// A position's search index entries, all of them.
fn search_keys(position: &Position, id: PositionId) -> impl Iterator<Item = Vec<u8>> {
    keys::by_name(&position.debtor.name, id)
        .into_iter()
        .chain(keys::by_debtor(&position.debtor.code, id))
}

fn u64_meta(tree: &kv::Table, key: &[u8]) -> Result<u64, StoreError> {
    match tree.get(key)? {
        None => Ok(0),
        Some(v) => keys::decode_u64(&v)
            .ok_or_else(|| StoreError::Corrupt(format!("meta {key:?} is not a number"))),
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. Only one process may have it open.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        if let Some(found) = kv::Engine::found_in(dir).filter(|e| *e != options.engine) {
            return Err(StoreError::Unavailable(format!(
                "{} holds a {found} store, but the configuration asks for {}: keep \
                 `engine = \"{found}\"`, or move the store with `mpayd backup` and \
                 `mpayd restore --engine {}`",
                dir.display(),
                options.engine,
                options.engine
            )));
        }
        let db = kv::Kv::open(
            dir,
            options.engine,
            kv::Tuning {
                cache_bytes: options.cache_bytes,
                write_buffer_bytes: options.write_buffer_bytes,
            },
        )?;
        let data = db.table("data")?;
        for name in TREES {
            db.table(name)?;
        }
        let mut found_format = STORE_FORMAT;
        match data.get(keys::META_FORMAT)? {
            None => {
                if data.iter().next().is_some() {
                    return Err(StoreError::Corrupt(
                        "data without a format marker".to_string(),
                    ));
                }
                let mut batch = kv::Batch::default();
                batch.insert(keys::META_FORMAT, u64::from(STORE_FORMAT).to_be_bytes());
                batch.insert(keys::META_NAME_INDEX, []);
                data.apply(batch)?;
                db.flush().map_err(StoreError::Unavailable)?;
            }
            Some(v) => {
                let found = keys::decode_u64(&v)
                    .and_then(|f| u32::try_from(f).ok())
                    .ok_or_else(|| StoreError::Corrupt("format marker unreadable".into()))?;
                if found > STORE_FORMAT {
                    return Err(StoreError::TooNew {
                        path: dir.to_path_buf(),
                        found,
                    });
                }
                found_format = found;
            }
        }
        let writer = Writer {
            next_position: u64_meta(&data, keys::META_NEXT_POSITION)?,
            commit: u64_meta(&data, keys::META_COMMIT)?,
            positions: u64_meta(&data, keys::META_POSITIONS)?,
        };
        // The engine may recover less than it had made durable and say nothing: the mark,
        // outside it, says how far it had come.
        let marked = mark::read(dir)
            .map_err(|e| StoreError::Corrupt(format!("the durable mark cannot be read: {e}")))?;
        if let Some(marked) = marked.filter(|m| *m > writer.commit) {
            return Err(StoreError::Corrupt(format!(
                "{} holds commits up to {}, but commit {marked} was on disk before \
                 (commit.mark): the engine lost acknowledged writes. Nothing was changed; move \
                 the folder aside and restore the latest backup",
                options.engine.data_path(dir).display(),
                writer.commit
            )));
        }
        let commits = Arc::new(AtomicU64::new(writer.commit));
        let durable_mark = mark::Mark::open(dir, Arc::clone(&commits)).map_err(|e| {
            StoreError::Unavailable(format!("cannot open {}: {e}", mark::path(dir).display()))
        })?;
        let (group, flusher) = GroupCommit::start(db.clone(), durable_mark);
        let journal_seq = AtomicU64::new(Store::journal_next_seq(&db.table("journal")?)?);
        let journal = db.table("journal")?;
        let jobs = db.table("jobs")?;
        let audit = db.table("audit")?;
        let reconciliation = db.table("reconciliation")?;
        let runs = db.table("runs")?;
        let bodies_dir = journal::bodies_dir(dir);
        fsync::create_dir_all(&bodies_dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", bodies_dir.display()))
        })?;
        let store = Store {
            journal_seq,
            journal,
            jobs,
            jobs_lock: Mutex::new(()),
            audit,
            audit_seq: Mutex::new(None),
            reconciliation,
            resolution_id: Mutex::new(None),
            runs,
            runs_lock: Mutex::new(()),
            bodies_dir,
            journal_files: Mutex::new(journal::Segment::default()),
            cache: cache::PositionCache::new(options.position_cache),
            cache_limit: options.cache_bytes,
            sequences: Mutex::new(Default::default()),
            commits,
            commits_at_open: writer.commit,
            positions: AtomicU64::new(writer.positions),
            db,
            data,
            writer: Mutex::new(writer),
            group,
            flusher: Mutex::new(Some(flusher)),
        };
        store.build_name_index()?;
        if found_format < STORE_FORMAT {
            store.upgrade(found_format)?;
        }
        Ok(store)
    }

    /// Brings a store of an older format up to this one. Format 1 held position snapshots of an
    /// older layout: each is folded again from its ledger (whose old events `codec` reads).
    fn upgrade(&self, from: u32) -> Result<(), StoreError> {
        tracing::info!("upgrading the store from format {from} to {STORE_FORMAT}");
        let end = [keys::POSITION + 1];
        let mut batch = kv::Batch::default();
        let (mut pending, mut done) = (0usize, 0u64);
        for entry in self.data.range([keys::POSITION].as_slice()..end.as_slice()) {
            let (k, v) = entry?;
            let Some((&version, rest)) = v.split_first() else {
                return Err(StoreError::Corrupt("an empty position snapshot".into()));
            };
            if version == <Position as codec::Stored>::VERSION {
                continue;
            }
            let id = keys::decode_id(&k[1..])
                .ok_or_else(|| StoreError::Corrupt("position key".into()))?;
            // Every snapshot layout so far starts with the entity.
            let (entity, _) = postcard::take_from_bytes::<mpay_common::ids::EntityFiscalCode>(rest)
                .map_err(|e| {
                    StoreError::Corrupt(format!("position {id}: unreadable entity: {e}"))
                })?;
            let events = self.ledger(id)?;
            let position =
                Position::fold(entity, events.iter().map(|s| &s.event)).map_err(|e| {
                    StoreError::Corrupt(format!("ledger of position {id} does not fold: {e}"))
                })?;
            batch.insert(k, codec::encode(&position)?);
            pending += 1;
            done += 1;
            if pending == 1000 {
                self.data.apply(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        batch.insert(keys::META_FORMAT, u64::from(STORE_FORMAT).to_be_bytes());
        let applying = self.group.begin();
        self.data.apply(batch)?;
        applying.wait_durable()?;
        tracing::info!("store upgraded: {done} positions folded again");
        Ok(())
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // The writer state is only counters that are written back with each batch; after a panic
        // elsewhere they are still what the last successful batch stored.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a batch built under the writer lock, then waits for it to be durable.
    /// `updated` are the positions this batch changes, for the cache; `counters` updates the
    /// writer's counters once the batch has applied.
    fn commit(
        &self,
        applying: durability::Applying<'_>,
        mut w: MutexGuard<'_, Writer>,
        mut batch: kv::Batch,
        updated: Vec<(PositionId, Position)>,
        counters: impl FnOnce(&mut Writer),
    ) -> Result<(), StoreError> {
        // After a failed flush (or once closing) nothing more may reach sled: a later flush
        // would make durable a write whose caller was told it failed.
        self.group.accepting()?;
        let commit = w.commit + 1;
        batch.insert(keys::META_COMMIT, commit.to_be_bytes());
        self.data.apply(batch)?;
        w.commit = commit;
        counters(&mut w);
        self.positions.store(w.positions, Ordering::Relaxed);
        self.cache.written(updated);
        // Published under the lock, after the batch: a reader that sees this number sees the
        // batch (`record_receipt` relies on it).
        self.commits.store(commit, Ordering::Release);
        drop(w);
        applying.wait_durable()
    }

    /// Hands out `count` consecutive IUV sequence numbers for an entity, in memory: they are
    /// stored by the commit that uses them (`load_prepared`), so no durable write is spent on
    /// them alone. Numbers taken but never committed are lost to a crash, never held by anyone.
    pub fn take_numbers(
        &self,
        entity: &EntityFiscalCode,
        count: u64,
    ) -> Result<Range<u64>, StoreError> {
        let key = keys::meta_sequence(entity);
        let mut sequences = self.sequences.lock().unwrap_or_else(|p| p.into_inner());
        let next = match sequences.get(&key) {
            Some(next) => *next,
            None => u64_meta(&self.data, &key)?,
        };
        let end = next
            .checked_add(count)
            .ok_or_else(|| StoreError::Unavailable("sequence exhausted".into()))?;
        sequences.insert(key, end);
        Ok(next..end)
    }

    /// The entity's next sequence number, not taken.
    pub fn peek_sequence(&self, entity: &EntityFiscalCode) -> Result<u64, StoreError> {
        let key = keys::meta_sequence(entity);
        let sequences = self.sequences.lock().unwrap_or_else(|p| p.into_inner());
        match sequences.get(&key) {
            Some(next) => Ok(*next),
            None => u64_meta(&self.data, &key),
        }
    }

    /// Puts "numbers up to `end` are taken" into a batch, unless the store says so already.
    fn store_numbers(
        &self,
        batch: &mut kv::Batch,
        entity: &EntityFiscalCode,
        end: u64,
    ) -> Result<(), StoreError> {
        let key = keys::meta_sequence(entity);
        if end > u64_meta(&self.data, &key)? {
            batch.insert(key, end.to_be_bytes());
        }
        Ok(())
    }

    /// Hands out `count` consecutive IUV sequence numbers for an entity, durably: they are never
    /// handed out again, even after a crash.
    pub fn reserve_sequence(
        &self,
        entity: &EntityFiscalCode,
        count: u64,
    ) -> Result<Range<u64>, StoreError> {
        let range = self.take_numbers(entity, count)?;
        let applying = self.group.begin();
        let w = self.writer();
        let mut batch = kv::Batch::default();
        self.store_numbers(&mut batch, entity, range.end)?;
        // The caller's positions carry these numbers only if this is durable first.
        self.commit(applying, w, batch, Vec::new(), |_| {})?;
        Ok(range)
    }

    /// Loads new positions in one commit. Each item fails or succeeds on its own; the successful
    /// ones are durable when this returns.
    pub fn load_many(
        &self,
        entity: &EntityFiscalCode,
        events: Vec<Event>,
    ) -> Result<Vec<Result<PositionId, WriteError>>, StoreError> {
        self.load_numbered(entity, 0, |_| events)
    }

    /// Loads new positions whose notice numbers come from the entity's sequence: `build` gets
    /// `count` numbers (`take_numbers`), which are stored by the same commit as the positions.
    pub fn load_numbered(
        &self,
        entity: &EntityFiscalCode,
        count: u64,
        build: impl FnOnce(Range<u64>) -> Vec<Event>,
    ) -> Result<Vec<Result<PositionId, WriteError>>, StoreError> {
        let range = match count {
            0 => 0..0,
            n => self.take_numbers(entity, n)?,
        };
        let end = range.end;
        let loads = build(range)
            .iter()
            .map(|event| Store::prepare_load(entity, event))
            .collect();
        self.commit_loads(entity, end, loads, None)
    }

    /// Folds, checks and encodes a new position, without the writer lock: a bulk load prepares
    /// the next batch while the store commits this one.
    pub fn prepare_load(
        entity: &EntityFiscalCode,
        event: &Event,
    ) -> Result<PreparedLoad, WriteError> {
        let position = Position::load(entity.clone(), event)?;
        Ok(PreparedLoad {
            snapshot: codec::encode(&position)?,
            event: codec::encode_bare(event)?,
            position,
        })
    }

    /// Loads positions of `entity` made by `prepare_load`, in one commit; each fails or succeeds
    /// on its own. `numbers_end`: the end of the numbers they took (`take_numbers`), or 0.
    pub fn load_prepared(
        &self,
        entity: &EntityFiscalCode,
        numbers_end: u64,
        loads: Vec<PreparedLoad>,
    ) -> Result<Vec<Result<PositionId, WriteError>>, StoreError> {
        self.commit_loads(
            entity,
            numbers_end,
            loads.into_iter().map(Ok).collect(),
            None,
        )
    }

    /// Commits new positions; with a `run`, and an engine that takes runs, their search index
    /// entries go to the run instead of this commit (see `search_runs`).
    fn commit_loads(
        &self,
        entity: &EntityFiscalCode,
        numbers_end: u64,
        loads: Vec<Result<PreparedLoad, WriteError>>,
        run: Option<&mut SearchRun>,
    ) -> Result<Vec<Result<PositionId, WriteError>>, StoreError> {
        let mut run = run.filter(|_| self.data.takes_runs());
        let applying = self.group.begin();
        let w = self.writer();
        let mut batch = kv::Batch::default();
        let mut deferred = Vec::new();
        if numbers_end > 0 {
            self.store_numbers(&mut batch, entity, numbers_end)?;
        }
        let mut results = Vec::with_capacity(loads.len());
        // Keys taken by earlier items of this same batch.
        let mut taken: HashSet<Vec<u8>> = HashSet::new();
        let commit = w.commit + 1;
        // Counters move only once the batch has applied (see the end).
        let (mut next_position, mut positions) = (w.next_position, w.positions);
        for load in loads {
            let outcome = load.and_then(|load| {
                let PreparedLoad {
                    position,
                    snapshot,
                    event,
                } = load;
                if &position.entity != entity {
                    return Err(WriteError::Conflict(format!(
                        "position {} belongs to {}",
                        position.iupd, position.entity
                    )));
                }
                let iupd_key = keys::by_iupd(entity, &position.iupd);
                if taken.contains(&iupd_key) || self.data.contains_key(&iupd_key)? {
                    return Err(WriteError::Exists(position.iupd.clone()));
                }
                let iuvs: Vec<Vec<u8>> = position
                    .instalments()
                    .map(|i| keys::by_iuv(entity, &i.terms.iuv))
                    .collect();
                for (key, inst) in iuvs.iter().zip(position.instalments()) {
                    if taken.contains(key) || self.data.contains_key(key)? {
                        return Err(WriteError::NavTaken {
                            nav: inst.terms.nav.clone(),
                            iuv: inst.terms.iuv.clone(),
                        });
                    }
                }
                let id = next_position;
                next_position += 1;
                positions += 1;
                batch.insert(keys::META_NEXT_POSITION, next_position.to_be_bytes());
                batch.insert(keys::META_POSITIONS, positions.to_be_bytes());
                taken.insert(iupd_key);
                taken.extend(iuvs);
                index_notices(&mut batch, id, None, &position);
                match run {
                    Some(_) => deferred.extend(search_keys(&position, id)),
                    None => index_search(&mut batch, id, None, &position),
                }
                batch.insert(keys::position(id), snapshot);
                batch.insert(keys::ledger(id, 0), codec::with_commit(commit, &event)?);
                batch.insert(keys::change(commit, id), 0u32.to_be_bytes());
                Ok(id)
            });
            results.push(outcome);
        }
        // New positions do not go to the cache: a bulk load would only flush it.
        if results.iter().any(Result::is_ok) {
            if let Some(run) = run.as_deref_mut() {
                self.pending_in(&mut batch, run, w.next_position, next_position)?;
            }
            self.commit(applying, w, batch, Vec::new(), |w| {
                w.next_position = next_position;
                w.positions = positions;
            })?;
            if let Some(run) = run {
                run.add(deferred);
            }
        }
        Ok(results)
    }

    /// Loads one new position.
    pub fn load(&self, entity: &EntityFiscalCode, event: Event) -> Result<PositionId, WriteError> {
        self.load_many(entity, vec![event])?
            .pop()
            .unwrap_or(Err(WriteError::NotFound))
    }

    /// Appends one event to a position's ledger, if the position's rules accept it.
    pub fn append(&self, id: PositionId, event: Event) -> Result<Position, WriteError> {
        // Bring the snapshot into the caches before taking the writer lock, so that no disk read
        // or decoding happens while other committers wait.
        self.position(id)?;
        let applying = self.group.begin();
        let w = self.writer();
        let before = self.position(id)?.ok_or(WriteError::NotFound)?;
        let mut after = before.clone();
        after.apply(&event)?;
        let mut batch = kv::Batch::default();
        let added = self.write_position(&mut batch, id, Some(&before), &after)?;
        for nav in added {
            if let Some(owner) = self.data.get(keys::by_iuv(&after.entity, &nav.iuv()))?
                && keys::decode_id(&owner) != Some(id)
            {
                return Err(WriteError::NavTaken {
                    iuv: nav.iuv(),
                    nav,
                });
            }
        }
        let stored = StoredEvent {
            commit: w.commit + 1,
            event,
        };
        batch.insert(keys::ledger(id, before.events), codec::encode(&stored)?);
        batch.insert(keys::change(stored.commit, id), before.events.to_be_bytes());
        self.commit(applying, w, batch, vec![(id, after.clone())], |_| {})?;
        Ok(after)
    }

    /// Writes the snapshot and the index entries that changed; returns the NAVs that are new to
    /// this position (the caller checks that nobody else holds them).
    fn write_position(
        &self,
        batch: &mut kv::Batch,
        id: PositionId,
        before: Option<&Position>,
        after: &Position,
    ) -> Result<Vec<Nav>, StoreError> {
        batch.insert(keys::position(id), codec::encode(after)?);
        Ok(self.index_position(batch, id, before, after))
    }

    /// The index entries that change from `before` to `after`; returns the NAVs new to this
    /// position.
    fn index_position(
        &self,
        batch: &mut kv::Batch,
        id: PositionId,
        before: Option<&Position>,
        after: &Position,
    ) -> Vec<Nav> {
        let added = index_notices(batch, id, before, after);
        index_search(batch, id, before, after);
        added
    }

    pub fn position(&self, id: PositionId) -> Result<Option<Position>, StoreError> {
        let miss = match self.cache.get(id) {
            Ok(p) => return Ok(Some(p)),
            Err(miss) => miss,
        };
        let Some(v) = self.data.get(keys::position(id))? else {
            return Ok(None);
        };
        let position: Position = codec::decode(&v, "a position")?;
        self.cache.fill(miss, id, &position);
        Ok(Some(position))
    }

    fn through_index(&self, key: &[u8]) -> Result<Option<(PositionId, Position)>, StoreError> {
        let Some(v) = self.data.get(key)? else {
            return Ok(None);
        };
        let id = keys::decode_id(&v).ok_or_else(|| StoreError::Corrupt("index value".into()))?;
        let position = self
            .position(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("index points to missing position {id}")))?;
        Ok(Some((id, position)))
    }

    pub fn by_iupd(
        &self,
        entity: &EntityFiscalCode,
        iupd: &Iupd,
    ) -> Result<Option<(PositionId, Position)>, StoreError> {
        self.through_index(&keys::by_iupd(entity, iupd))
    }

    /// The position holding this notice number (its IUV, and the NAV itself: two NAVs with the
    /// same IUV are never both ours).
    pub fn by_nav(
        &self,
        entity: &EntityFiscalCode,
        nav: &Nav,
    ) -> Result<Option<(PositionId, Position)>, StoreError> {
        Ok(self
            .through_index(&keys::by_iuv(entity, &nav.iuv()))?
            .filter(|(_, p)| p.instalment(nav).is_some()))
    }

    pub fn by_iuv(
        &self,
        entity: &EntityFiscalCode,
        iuv: &Iuv,
    ) -> Result<Option<(PositionId, Position)>, StoreError> {
        self.through_index(&keys::by_iuv(entity, iuv))
    }

    /// The debtor's positions, newest first (ids grow with time), at most `limit`, of one
    /// entity or of all.
    pub fn by_debtor(
        &self,
        code: &DebtorCode,
        entity: Option<&EntityFiscalCode>,
        limit: usize,
    ) -> Result<Vec<(PositionId, Position)>, StoreError> {
        let Some(prefix) = keys::by_debtor_prefix(code) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in self.data.scan_prefix(&prefix).rev() {
            if out.len() == limit {
                break;
            }
            let (k, _) = entry?;
            let id = keys::decode_id(&k[prefix.len()..])
                .ok_or_else(|| StoreError::Corrupt("debtor index key".into()))?;
            // An entry a bulk load's search run wrote late may be stale (see `search_runs`).
            if let Some(p) = self.position(id)?
                && &p.debtor.code == code
                && entity.is_none_or(|e| e == &p.entity)
            {
                out.push((id, p));
            }
        }
        Ok(out)
    }

    /// Positions whose debtor's name starts with `prefix` (case and spacing aside), of one
    /// entity or all, in name order, at most `limit`.
    pub fn by_name_prefix(
        &self,
        prefix: &str,
        entity: Option<&EntityFiscalCode>,
        limit: usize,
    ) -> Result<Vec<(PositionId, Position)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.data.scan_prefix(keys::by_name_prefix(prefix)) {
            if out.len() == limit {
                break;
            }
            let (k, _) = entry?;
            let id = k
                .len()
                .checked_sub(8)
                .and_then(|at| keys::decode_id(&k[at..]))
                .ok_or_else(|| StoreError::Corrupt("name index key".into()))?;
            if !out.iter().any(|(seen, _)| *seen == id)
                && let Some(p) = self.position(id)?
                && entity.is_none_or(|e| e == &p.entity)
                && keys::by_name(&p.debtor.name, id)
                    .iter()
                    .any(|key| key[..] == k[..])
            {
                out.push((id, p));
            }
        }
        Ok(out)
    }

    /// Puts every position in the name index, once, for a store written before it existed.
    fn build_name_index(&self) -> Result<(), StoreError> {
        if self.data.contains_key(keys::META_NAME_INDEX)? {
            return Ok(());
        }
        let mut from = 0;
        loop {
            let chunk = self.positions(from, 10_000)?;
            let Some((last, _)) = chunk.last() else { break };
            from = last + 1;
            let mut batch = kv::Batch::default();
            for (id, p) in &chunk {
                for key in keys::by_name(&p.debtor.name, *id) {
                    batch.insert(key, []);
                }
            }
            self.data.apply(batch)?;
        }
        let applying = self.group.begin();
        self.data.insert(keys::META_NAME_INDEX, [])?;
        applying.wait_durable()
    }

    /// The debtor's positions (of every entity) from position `from` on, in id order: at most
    /// `limit` index entries are read, one position each, so a caller can page through them
    /// (fewer only past the last entry). An entry a search run wrote late may be stale: the
    /// caller checks the position's debtor.
    pub fn by_debtor_from(
        &self,
        code: &DebtorCode,
        from: PositionId,
        limit: usize,
    ) -> Result<Vec<(PositionId, Position)>, StoreError> {
        let Some(prefix) = keys::by_debtor_prefix(code) else {
            return Ok(Vec::new());
        };
        let mut start = prefix.clone();
        start.extend_from_slice(&from.to_be_bytes());
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xff; 9]);
        let mut out = Vec::new();
        for entry in self.data.range(start..end).take(limit) {
            let (k, _) = entry?;
            let id = keys::decode_id(&k[prefix.len()..])
                .ok_or_else(|| StoreError::Corrupt("debtor index key".into()))?;
            if let Some(p) = self.position(id)? {
                out.push((id, p));
            }
        }
        Ok(out)
    }

    /// Ledger entries committed after `commit`, in commit order: the changes feed the console
    /// follows and the reports walk. Each with its position's id, entity and iupd. At most
    /// `limit`, except that a page always ends with a whole commit (one commit may touch
    /// thousands of positions: a flow's rows), so that the next page, after the last commit
    /// seen, misses nothing.
    pub fn changes_after(
        &self,
        commit: u64,
        limit: usize,
    ) -> Result<Vec<(PositionId, Position, u32, StoredEvent)>, StoreError> {
        let mut out = Vec::new();
        let mut last = None;
        for (taken, entry) in self.changes_from(commit).enumerate() {
            let (this, id, seq) = entry?;
            if taken >= limit && last != Some(this) {
                break;
            }
            last = Some(this);
            let (Some(p), Some(e)) = (self.position(id)?, self.data.get(keys::ledger(id, seq))?)
            else {
                continue;
            };
            out.push((id, p, seq, codec::decode(&e, "a ledger event")?));
        }
        Ok(out)
    }

    /// The first ledger entry committed after `commit`, if any.
    pub fn first_change_after(&self, commit: u64) -> Result<Option<StoredEvent>, StoreError> {
        let Some((_, id, seq)) = self.changes_from(commit).next().transpose()? else {
            return Ok(None);
        };
        self.data
            .get(keys::ledger(id, seq))?
            .map(|e| codec::decode(&e, "a ledger event"))
            .transpose()
    }

    /// The changes feed's entries after `commit`: (commit, position, first ledger seq).
    fn changes_from(
        &self,
        commit: u64,
    ) -> impl Iterator<Item = Result<(u64, PositionId, u32), StoreError>> + '_ {
        let start = keys::change(commit.saturating_add(1), 0);
        let end = [keys::CHANGE + 1];
        self.data
            .range(start.as_slice()..end.as_slice())
            .map(|entry| {
                let (k, v) = entry?;
                let corrupt = || StoreError::Corrupt("changes feed key".into());
                let commit = keys::decode_u64(&k[1..9]).ok_or_else(corrupt)?;
                let id = keys::decode_id(&k[9..17]).ok_or_else(corrupt)?;
                let seq = v
                    .as_ref()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| corrupt())?;
                Ok((commit, id, seq))
            })
    }

    /// The first commit whose ledger entries are stamped `from` or later (commits follow the
    /// clock), by bisection over the changes feed: `last_commit() + 1` if none.
    pub fn first_commit_from(&self, from: jiff::Timestamp) -> Result<u64, StoreError> {
        let (mut lo, mut hi) = (1u64, self.last_commit() + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.first_change_after(mid - 1)? {
                // The first entry at or after `mid` is late enough: the answer is at or before
                // its commit.
                Some(e) if e.event.at >= from => hi = mid.min(e.commit),
                Some(e) => lo = e.commit + 1,
                None => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Every ledger entry of commits `from..` stamped before `until`, in commit order, each
    /// with its position (as it stands now).
    pub fn entries_between(
        &self,
        from: u64,
        until: jiff::Timestamp,
        mut each: impl FnMut(PositionId, &Position, &StoredEvent) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut after = from.saturating_sub(1);
        loop {
            let page = self.changes_after(after, 1000)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.3.commit;
            for (id, position, seq, first) in page {
                if first.event.at >= until {
                    return Ok(());
                }
                // One commit may append several entries to a position (a flow's rows); the
                // feed names the first.
                each(id, &position, &first)?;
                let mut next = seq + 1;
                while let Some(v) = self.data.get(keys::ledger(id, next))? {
                    let e: StoredEvent = codec::decode(&v, "a ledger event")?;
                    if e.commit != first.commit {
                        break;
                    }
                    each(id, &position, &e)?;
                    next += 1;
                }
            }
        }
    }

    /// The number of the last commit.
    pub fn last_commit(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The whole ledger of a position, in order.
    pub fn ledger(&self, id: PositionId) -> Result<Vec<StoredEvent>, StoreError> {
        self.data
            .scan_prefix(keys::ledger_prefix(id))
            .map(|entry| {
                let (_, v) = entry?;
                codec::decode(&v, "a ledger event")
            })
            .collect()
    }

    /// Refolds a position from its ledger (for audits and tests: it must equal the snapshot).
    pub fn refold(&self, id: PositionId) -> Result<Option<Position>, StoreError> {
        let events = self.ledger(id)?;
        let Some(first) = self.position(id)? else {
            return Ok(None);
        };
        Position::fold(first.entity, events.iter().map(|s| &s.event))
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("ledger of position {id} does not fold: {e}")))
    }

    /// Positions in id order starting at `from`, at most `limit` (for scans and exports).
    pub fn positions(
        &self,
        from: PositionId,
        limit: usize,
    ) -> Result<Vec<(PositionId, Position)>, StoreError> {
        let start = keys::position(from);
        let end = [keys::POSITION + 1];
        self.data
            .range(start.as_slice()..end.as_slice())
            .take(limit)
            .map(|entry| {
                let (k, v) = entry?;
                let id = keys::decode_id(&k[1..])
                    .ok_or_else(|| StoreError::Corrupt("position key".into()))?;
                Ok((id, codec::decode(&v, "a position")?))
            })
            .collect()
    }

    pub fn stats(&self) -> StoreStats {
        let memory = self.db.memory();
        let (cached, cache_limit) = self.cache.usage();
        StoreStats {
            positions: self.positions.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            commits_since_start: self
                .commits
                .load(Ordering::Relaxed)
                .saturating_sub(self.commits_at_open),
            flushes: self.group.flushes(),
            disk_bytes: self.db.size_on_disk(),
            engine: self.db.engine(),
            engine_cache_limit_bytes: self.cache_limit,
            engine_cache_bytes: memory.map(|m| m.0),
            engine_write_buffer_bytes: memory.map(|m| m.1),
            position_cache_entries: cached as u64,
            position_cache_limit: cache_limit as u64,
        }
    }

    /// Healthy while no flush has failed.
    pub fn healthy(&self) -> Result<(), String> {
        self.group.healthy()
    }

    /// How long the flush under way has been running, if one is: a disk that hangs shows here
    /// (the daemon's watchdog stops feeding systemd past a bound).
    pub fn flush_running_for(&self) -> Option<std::time::Duration> {
        self.group.flush_running_for()
    }

    /// Stops the flusher thread, which makes everything durable before it ends. Later writes
    /// fail.
    pub fn close(&self) -> Result<(), StoreError> {
        self.group.stop();
        if let Some(handle) = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = handle.join();
        }
        self.group
            .healthy()
            .map_err(|e| StoreError::Unavailable(format!("flush failed: {e}")))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

//! Bulk loads write the search indexes (debtor's code, words of the debtor's name) apart from
//! the positions. A file's new positions commit without those entries; the entries gather in a
//! `SearchRun`, which is sorted and written in one go when it grows large and when the file
//! ends, and which fjall takes as new tables. Written with each commit, the entries arrived in
//! random order, and every table the LSM tree flushed overlapped every other. sled takes runs
//! badly (`kv::Table::takes_runs`): there the entries still go with each commit.
//!
//! Until its run is written, a job keeps a durable record, `META "index/pending/" job` → (first
//! position id, end position id), committed with the positions it covers: those positions may
//! lack their entries. A crash leaves the record, and `rebuild_pending` makes the entries again
//! from the positions' snapshots, a chunk at a time, noting how far it got.
//!
//! Entries come from a snapshot read some time before they are written, and a change in between
//! leaves one stale: the searches check each entry against its position (`by_debtor`,
//! `by_name_prefix`), so a stale entry is never served.

use super::{PositionId, Store, StoreError, keys, kv, search_keys};

/// Positions read from their snapshots per sorted run when a crash left a run unwritten.
const REBUILD_CHUNK: usize = 50_000;

/// What a key costs in memory beyond its bytes (the vector's header and the allocator's).
const KEY_OVERHEAD: usize = 40;

/// The search index entries of positions that one bulk job committed without them.
pub struct SearchRun {
    job: u64,
    keys: Vec<Vec<u8>>,
    bytes: usize,
}

impl SearchRun {
    pub fn new(job: u64) -> SearchRun {
        SearchRun {
            job,
            keys: Vec::new(),
            bytes: 0,
        }
    }

    /// Memory the run holds, to write it before it grows past a budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn add(&mut self, keys: Vec<Vec<u8>>) {
        self.bytes += keys.iter().map(|k| k.len() + KEY_OVERHEAD).sum::<usize>();
        self.keys.extend(keys);
    }
}

fn pending_key(job: u64) -> Vec<u8> {
    let mut k = PENDING.to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

const PENDING: &[u8] = b"\x00index/pending/";

/// A pending record's value: the first position id it covers and the end of its range.
fn decode_range(v: &[u8]) -> Result<(PositionId, PositionId), StoreError> {
    let bad = || StoreError::Corrupt("pending search index record".into());
    let from = keys::decode_id(v.get(..8).ok_or_else(bad)?).ok_or_else(bad)?;
    let end = keys::decode_id(v.get(8..).ok_or_else(bad)?).ok_or_else(bad)?;
    Ok((from, end))
}

fn encode_range(from: PositionId, end: PositionId) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&from.to_be_bytes());
    v[8..].copy_from_slice(&end.to_be_bytes());
    v
}

impl Store {
    /// Loads positions of `entity` made by `prepare_load`, in one commit, as `load_prepared`
    /// does, but puts their search index entries in `run` (to be written by
    /// `write_search_run`) instead of the commit.
    pub fn load_prepared_deferred(
        &self,
        entity: &mpay_common::ids::EntityFiscalCode,
        numbers_end: u64,
        loads: Vec<super::PreparedLoad>,
        run: &mut SearchRun,
    ) -> Result<Vec<Result<PositionId, super::WriteError>>, StoreError> {
        let loads = loads.into_iter().map(Ok).collect();
        self.commit_loads(entity, numbers_end, loads, Some(run))
    }

    /// Under the writer lock, in the batch of a commit whose new positions take ids
    /// `first..end`: the job's pending record, widened to cover them.
    pub(crate) fn pending_in(
        &self,
        batch: &mut kv::Batch,
        run: &SearchRun,
        first: PositionId,
        end: PositionId,
    ) -> Result<(), StoreError> {
        let key = pending_key(run.job);
        let from = match self.data.get(&key)? {
            Some(v) => decode_range(&v)?.0,
            None => first,
        };
        batch.insert(key, encode_range(from, end));
        Ok(())
    }

    /// Writes the run's entries as one sorted run, then drops the job's pending record; durable
    /// when it returns. Called by the thread that commits the job's positions, so that no
    /// commit widens the record in between.
    pub fn write_search_run(&self, run: &mut SearchRun) -> Result<(), StoreError> {
        run.bytes = 0;
        self.ingest_run(std::mem::take(&mut run.keys))?;
        self.set_pending(run.job, None)
    }

    /// Keys of the search indexes, in any order and with repeats, written as one sorted run.
    fn ingest_run(&self, mut keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        keys.sort_unstable();
        keys.dedup();
        self.data.ingest(&keys)
    }

    /// Durably moves job `job`'s pending record to cover `range` (from, end), or drops it.
    fn set_pending(
        &self,
        job: u64,
        range: Option<(PositionId, PositionId)>,
    ) -> Result<(), StoreError> {
        let applying = self.group.begin();
        self.group.accepting()?;
        let mut batch = kv::Batch::default();
        match range {
            Some((from, end)) => batch.insert(pending_key(job), encode_range(from, end)),
            None => batch.remove(pending_key(job)),
        }
        self.data.apply(batch)?;
        applying.wait_durable()
    }

    /// The jobs whose search index entries a crash left unwritten.
    pub fn pending_search_jobs(&self) -> Result<Vec<u64>, StoreError> {
        self.data
            .scan_prefix(PENDING)
            .map(|entry| {
                let (k, _) = entry?;
                keys::decode_id(&k[PENDING.len()..])
                    .ok_or_else(|| StoreError::Corrupt("pending search index key".into()))
            })
            .collect()
    }

    /// Makes the search index entries that job `job` left unwritten again from the snapshots of
    /// the positions its pending record covers (others in that range only get theirs again),
    /// a sorted run per chunk; after each, the record moves past it, so that a crash in
    /// between carries on from there. Returns the positions read.
    pub fn rebuild_pending(&self, job: u64) -> Result<u64, StoreError> {
        let key = pending_key(job);
        let mut read = 0;
        while let Some(v) = self.data.get(&key)? {
            let (from, end) = decode_range(&v)?;
            let chunk: Vec<_> = self
                .positions(from, REBUILD_CHUNK)?
                .into_iter()
                .filter(|(id, _)| *id < end)
                .collect();
            self.ingest_run(
                chunk
                    .iter()
                    .flat_map(|(id, p)| search_keys(p, *id))
                    .collect(),
            )?;
            read += chunk.len() as u64;
            let next = match chunk.last() {
                Some((last, _)) if chunk.len() == REBUILD_CHUNK => last + 1,
                _ => end,
            };
            self.set_pending(job, (next < end).then_some((next, end)))?;
        }
        Ok(read)
    }
}

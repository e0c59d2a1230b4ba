//! The daily runs' records (`runs` tree): numbered, kept for good, durable before the run is
//! said done.

use mpay_common::console::RunRecord;

use super::codec::{self, Stored};
use super::{Store, StoreError};

impl Stored for RunRecord {}

impl Store {
    /// Appends a run's record (its `seq` is given here) and waits until it is durable.
    pub fn append_run(&self, mut record: RunRecord) -> Result<RunRecord, StoreError> {
        let _one = self.runs_lock.lock().unwrap_or_else(|p| p.into_inner());
        record.seq = match self.runs.last()? {
            Some((k, _)) => super::keys::decode_u64(&k)
                .ok_or_else(|| StoreError::Corrupt("run key".into()))?
                .saturating_add(1),
            None => 1,
        };
        let applying = self.group.begin();
        self.group.accepting()?;
        self.runs
            .insert(record.seq.to_be_bytes(), codec::encode(&record)?)?;
        drop(_one);
        applying.wait_durable()?;
        Ok(record)
    }

    /// The newest runs, newest first, at most `limit`.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.runs
            .iter()
            .rev()
            .take(limit)
            .map(|entry| {
                let (_, v) = entry?;
                codec::decode(&v, "a run record")
            })
            .collect()
    }
}

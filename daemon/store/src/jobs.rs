//! Bulk-load jobs, in the `jobs` tree. A job's record outlives the daemon: its id answers the same
//! after a restart and is never handed out twice, and a load that a crash interrupted carries on
//! under the id its authority was given.
//!
//! Keys: `META_NEXT` → the last id handed out; `JOB id` → the record; `RUNNING entity/file` →
//! the id of the job loading that inbox file, present only while it runs.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, codec, keys};

const META_NEXT: &[u8] = b"\x00next";
const JOB: u8 = b'j';
const RUNNING: u8 = b'r';

/// Where a bulk job stands; `running`, `done`, … in the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    #[default]
    Running,
    Done,
    /// The store stopped under it: the file stays in the inbox and is loaded again at the next
    /// start, under this id.
    Interrupted,
    /// The file left the inbox before its load finished.
    Abandoned,
}

/// A bulk load of one inbox file, as its authority follows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BulkJob {
    pub id: u64,
    pub entity: String,
    pub status: JobStatus,
    /// The file's name in the entity's inbox.
    pub file: String,
    pub rows_total: u64,
    pub rows_done: u64,
    pub created: u64,
    pub replaced: u64,
    pub unchanged: u64,
    pub cancelled: u64,
    pub rejected_rows: u64,
    /// Why the file as a whole was refused (unreadable, not CSV or JSON, a bad header): then
    /// nothing of it was loaded.
    pub file_error: Option<String>,
    /// The file's name in the inbox's `done/` once loaded (its own, or with the job id when an
    /// earlier file of that name is there); its reject report is that name + `.rejects.csv`.
    pub archived: Option<String>,
    /// Rows of the file fully accounted for (loaded, refused, counted, reported): an interrupted
    /// load carries on after them.
    pub resume_after: u64,
    /// Length of the reject report that goes with `resume_after`.
    pub report_bytes: u64,
    /// When this run of the job started (again, after an interruption).
    pub started: Option<jiff::Timestamp>,
    /// When it ended.
    pub finished: Option<jiff::Timestamp>,
}

fn job_key(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = JOB;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn running_key(entity: &str, file: &str) -> Vec<u8> {
    let mut k = vec![RUNNING];
    k.extend_from_slice(entity.as_bytes());
    k.push(b'/');
    k.extend_from_slice(file.as_bytes());
    k
}

impl Store {
    /// The job that loads `file` of `entity`'s inbox: the running one if a load of it was
    /// interrupted, else a new one. Durable before it returns.
    pub fn start_job(&self, entity: &str, file: &str) -> Result<BulkJob, StoreError> {
        let jobs = &self.jobs;
        let running = running_key(entity, file);
        if let Some(id) = jobs.get(&running)? {
            let id =
                keys::decode_id(&id).ok_or_else(|| StoreError::Corrupt("running job id".into()))?;
            if let Some(job) = self.job(id)? {
                // It carries on after the last batch it recorded; with none recorded (or a
                // file read whole), it starts again from the first row.
                let job = match job.resume_after {
                    0 => BulkJob {
                        id,
                        entity: job.entity,
                        file: job.file,
                        ..BulkJob::default()
                    },
                    _ => job,
                };
                let job = BulkJob {
                    status: JobStatus::Running,
                    started: Some(jiff::Timestamp::now()),
                    ..job
                };
                self.save_job(&job, true)?;
                return Ok(job);
            }
        }
        let id = {
            // One number a job: the counter is read and written under the lock. A crash after
            // the write and before the job's record only skips a number.
            let _one = self.jobs_lock.lock().unwrap_or_else(|p| p.into_inner());
            let id = match jobs.get(META_NEXT)? {
                Some(v) => {
                    keys::decode_u64(&v).ok_or_else(|| StoreError::Corrupt("job counter".into()))?
                }
                None => 0,
            } + 1;
            jobs.insert(META_NEXT, id.to_be_bytes())?;
            id
        };
        let job = BulkJob {
            id,
            entity: entity.to_string(),
            status: JobStatus::Running,
            file: file.to_string(),
            started: Some(jiff::Timestamp::now()),
            ..BulkJob::default()
        };
        self.save_job(&job, true)?;
        Ok(job)
    }

    /// Records a job's state. Progress need not be `durable` (it rides on the next flush); a
    /// job's end must be, before its file leaves the inbox.
    pub fn save_job(&self, job: &BulkJob, durable: bool) -> Result<(), StoreError> {
        let jobs = &self.jobs;
        let mut batch = super::kv::Batch::default();
        batch.insert(job_key(job.id), codec::encode(job)?);
        let running = running_key(&job.entity, &job.file);
        if job.status == JobStatus::Running {
            batch.insert(running, job.id.to_be_bytes());
        } else {
            batch.remove(running);
        }
        let applying = self.group.begin();
        self.group.accepting()?;
        jobs.apply(batch)?;
        if durable {
            applying.wait_durable()?;
        }
        Ok(())
    }

    pub fn job(&self, id: u64) -> Result<Option<BulkJob>, StoreError> {
        match self.jobs.get(job_key(id))? {
            Some(v) => Ok(Some(codec::decode(&v, "a bulk job")?)),
            None => Ok(None),
        }
    }

    /// The newest jobs, newest first, at most `limit`.
    pub fn recent_jobs(&self, limit: usize) -> Result<Vec<BulkJob>, StoreError> {
        self.jobs
            .scan_prefix([JOB])
            .rev()
            .take(limit)
            .map(|entry| {
                let (_, v) = entry?;
                codec::decode(&v, "a bulk job")
            })
            .collect()
    }

    /// One entity's jobs, newest first, older than the job `before` if given, at most `limit`.
    pub fn jobs_of(
        &self,
        entity: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<BulkJob>, StoreError> {
        let mut out = Vec::new();
        for entry in self
            .jobs
            .range(job_key(0)..job_key(before.unwrap_or(u64::MAX)))
            .rev()
        {
            if out.len() == limit {
                break;
            }
            let (_, v) = entry?;
            let job: BulkJob = codec::decode(&v, "a bulk job")?;
            if job.entity == entity {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// The jobs that were running when the daemon last stopped, or are running now.
    pub fn running_jobs(&self) -> Result<Vec<BulkJob>, StoreError> {
        let mut out = Vec::new();
        for entry in self.jobs.scan_prefix([RUNNING]) {
            let (_, id) = entry?;
            let id =
                keys::decode_id(&id).ok_or_else(|| StoreError::Corrupt("running job id".into()))?;
            out.extend(self.job(id)?);
        }
        Ok(out)
    }
}

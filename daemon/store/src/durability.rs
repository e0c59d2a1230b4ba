//! Group commit. A writer applies its batch, takes a ticket and waits until a flush that started
//! after its batch has finished. One flusher thread runs the engine's durable flush (`Kv::flush`:
//! for sled, its flush and then the syncs it leaves out, `fsync.rs`) for everybody who is
//! waiting, so N concurrent committers share one fsync instead of queueing for N.
//!
//! Both engines hold writers back while a flush runs (sled's flush holds its concurrency control
//! read lock through the fsync, batches need the write lock; fjall's persist holds its journal
//! writer). So the flusher does not start a flush while writers are about to apply: it waits
//! until none is (or a short bound has passed), which lets every writer that queued during one
//! fsync ride on the next.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::StoreError;
use super::kv::Kv;
use super::mark::Mark;

/// How long the flusher lets writers in the middle of applying finish before flushing anyway.
const MAX_GATHER: Duration = Duration::from_millis(2);

#[derive(Default)]
struct State {
    requested: u64,
    flushed: u64,
    flushes: u64,
    /// Writers between `begin` and their ticket.
    applying: usize,
    failure: Option<String>,
    stop: bool,
    /// When the flush under way started.
    flushing_since: Option<Instant>,
}

pub struct GroupCommit {
    state: Mutex<State>,
    /// Wakes the flusher: a ticket was taken, or a writer finished applying.
    work: Condvar,
    /// Wakes the waiting writers: a flush finished. Kept apart from `work` so that each commit
    /// does not wake every other waiting writer.
    durable: Condvar,
}

/// A writer on its way to a ticket; dropping it without one (an error) releases its place.
pub struct Applying<'a> {
    group: &'a GroupCommit,
    done: bool,
}

impl Drop for Applying<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.group.lock().applying -= 1;
            self.group.work.notify_one();
        }
    }
}

impl Applying<'_> {
    /// The batch is applied: take a ticket and wait until it is on disk.
    pub fn wait_durable(mut self) -> Result<(), StoreError> {
        self.done = true;
        let group = self.group;
        let mut s = group.lock();
        s.applying -= 1;
        if let Some(f) = &s.failure {
            return Err(StoreError::Unavailable(format!(
                "flush failed earlier: {f}"
            )));
        }
        if s.stop {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        s.requested += 1;
        let ticket = s.requested;
        group.work.notify_one();
        while s.flushed < ticket {
            s = group.durable.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        match &s.failure {
            Some(f) => Err(StoreError::Unavailable(format!("flush failed: {f}"))),
            None => Ok(()),
        }
    }
}

impl GroupCommit {
    pub fn start(db: Kv, mut mark: Mark) -> (Arc<GroupCommit>, JoinHandle<()>) {
        let group = Arc::new(GroupCommit {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            durable: Condvar::new(),
        });
        let worker = Arc::clone(&group);
        let handle = std::thread::Builder::new()
            .name("mpay-flusher".into())
            .spawn(move || worker.run(&db, &mut mark))
            .unwrap_or_else(|e| panic!("cannot start the store's flusher thread: {e}"));
        (group, handle)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves only counters behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces a writer before it takes the store's writer lock.
    pub fn begin(&self) -> Applying<'_> {
        self.lock().applying += 1;
        Applying {
            group: self,
            done: false,
        }
    }

    fn run(&self, db: &Kv, mark: &mut Mark) {
        loop {
            let target = {
                let mut s = self.lock();
                while s.requested == s.flushed && !s.stop {
                    s = self.work.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                if s.stop && s.requested == s.flushed {
                    break;
                }
                let started = Instant::now();
                while s.applying > 0 && !s.stop {
                    let left = MAX_GATHER.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    s = self
                        .work
                        .wait_timeout(s, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                s.flushing_since = Some(Instant::now());
                s.requested
            };
            let reached = mark.before_flush();
            let result = db.flush().and_then(|()| {
                mark.after_flush(reached, false)
                    .map_err(|e| format!("cannot write the durable mark: {e}"))
            });
            let mut s = self.lock();
            s.flushing_since = None;
            match result {
                Ok(()) => {
                    s.flushed = target;
                    s.flushes += 1;
                }
                Err(e) => {
                    // Nothing written after a failed fsync can be acknowledged: fail every waiter
                    // from now on; the daemon reports unhealthy and must be restarted.
                    s.failure = Some(e);
                    s.flushed = target;
                }
            }
            self.durable.notify_all();
        }
        // Closing: what the engine holds without a ticket (its own bookkeeping) goes to disk too.
        let reached = mark.before_flush();
        let closing = db.flush_for_close().and_then(|()| {
            mark.after_flush(reached, true)
                .map_err(|e| format!("cannot write the durable mark: {e}"))
        });
        if let Err(e) = closing {
            self.lock().failure.get_or_insert(e);
        }
    }

    /// Whether writes may still be applied: not after a failed flush, not once closing.
    pub fn accepting(&self) -> Result<(), StoreError> {
        let s = self.lock();
        if let Some(f) = &s.failure {
            return Err(StoreError::Unavailable(format!(
                "flush failed earlier: {f}"
            )));
        }
        if s.stop {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        Ok(())
    }

    pub fn flush_running_for(&self) -> Option<Duration> {
        self.lock().flushing_since.map(|t| t.elapsed())
    }

    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    pub fn healthy(&self) -> Result<(), String> {
        match &self.lock().failure {
            Some(f) => Err(f.clone()),
            None => Ok(()),
        }
    }

    /// Asks the flusher to make everything durable and end; see `Store::close`.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.work.notify_one();
    }
}

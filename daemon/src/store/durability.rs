//! Group commit. A writer applies its batch, takes a ticket and waits until a flush that started
//! after its batch has finished. One flusher thread runs `flush` (fsync) for everybody who is
//! waiting, so N concurrent committers share one fsync instead of queueing for N.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::StoreError;

#[derive(Default)]
struct State {
    requested: u64,
    flushed: u64,
    flushes: u64,
    failure: Option<String>,
    stop: bool,
}

pub struct GroupCommit {
    state: Mutex<State>,
    changed: Condvar,
}

impl GroupCommit {
    pub fn start(db: sled::Db) -> (Arc<GroupCommit>, JoinHandle<()>) {
        let group = Arc::new(GroupCommit {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let worker = Arc::clone(&group);
        let handle = std::thread::Builder::new()
            .name("mpay-flusher".into())
            .spawn(move || worker.run(&db))
            .unwrap_or_else(|e| panic!("cannot start the store's flusher thread: {e}"));
        (group, handle)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves only counters behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, db: &sled::Db) {
        loop {
            let target = {
                let mut s = self.lock();
                while s.requested == s.flushed && !s.stop {
                    s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                if s.stop && s.requested == s.flushed {
                    return;
                }
                s.requested
            };
            let result = db.flush();
            let mut s = self.lock();
            match result {
                Ok(_) => {
                    s.flushed = target;
                    s.flushes += 1;
                }
                Err(e) => {
                    // Nothing written after a failed fsync can be acknowledged: fail every waiter
                    // from now on; the daemon reports unhealthy and must be restarted.
                    s.failure = Some(e.to_string());
                    s.flushed = target;
                }
            }
            self.changed.notify_all();
        }
    }

    /// Blocks until everything written before this call is on disk.
    pub fn wait_durable(&self) -> Result<(), StoreError> {
        let mut s = self.lock();
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
        self.changed.notify_all();
        while s.flushed < ticket {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        match &s.failure {
            Some(f) => Err(StoreError::Unavailable(format!("flush failed: {f}"))),
            None => Ok(()),
        }
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

    pub fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

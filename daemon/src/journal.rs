//! Feeds the traffic journal: every exchange with the node becomes a summary record (kept for
//! good) plus its bodies (kept within the configured retention). A background writer batches the
//! records so that answering the node never waits for the journal, and a pruner enforces the
//! retention.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::pagopa::soap::Fault;
use crate::store::{Direction, JournalBodies, JournalEntry, Store};

/// One exchange as the station saw it.
#[derive(Clone, Debug, Default)]
pub struct Exchange {
    pub operation: String,
    pub entity: Option<String>,
    pub station: Option<String>,
    pub nav: Option<String>,
    pub iuv: Option<String>,
    pub fault_code: Option<String>,
    pub latency_us: u64,
    pub remote: Option<String>,
    pub request: String,
    pub response_bytes: usize,
}

impl Exchange {
    pub fn inbound(remote: Option<SocketAddr>) -> Exchange {
        Exchange {
            remote: remote.map(|r| r.ip().to_string()),
            ..Exchange::default()
        }
    }

    pub fn fault(&mut self, fault: &Fault) {
        self.fault_code = Some(fault.code.code().to_string());
    }

    pub fn result<T>(&mut self, result: &Result<T, Fault>) {
        if let Err(f) = result {
            self.fault(f);
        }
    }

    pub fn outcome(&self) -> &'static str {
        if self.fault_code.is_some() {
            "KO"
        } else {
            "OK"
        }
    }

    fn into_record(self, response: String) -> (JournalEntry, JournalBodies) {
        let at = Timestamp::now();
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let entry = JournalEntry {
            seq: 0,
            at,
            direction: Direction::Inbound,
            outcome: self.outcome().to_string(),
            operation: self.operation,
            entity: self.entity,
            station: self.station,
            nav: self.nav,
            iuv: self.iuv,
            fault_code: self.fault_code,
            latency_us: self.latency_us,
            remote: self.remote,
            request_bytes: len(self.request.len()),
            response_bytes: len(self.response_bytes),
            body: None,
        };
        let bodies = JournalBodies {
            at,
            request: self.request,
            response,
        };
        (entry, bodies)
    }
}

/// How long the writer gathers records before writing them in one batch.
const GATHER: Duration = Duration::from_millis(10);

/// Hands exchanges to the background writer.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<(JournalEntry, JournalBodies)>,
}

impl Journal {
    /// Starts the writer and the pruner; they stop when every `Journal` handle is dropped. Await
    /// the returned handle before closing the store: the writer then has written everything.
    pub fn start(
        store: Arc<Store>,
        retention: Duration,
        max_bytes: u64,
    ) -> (Journal, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(JournalEntry, JournalBodies)>(4096);
        let writer = Arc::clone(&store);
        let written = tokio::spawn(async move {
            let mut batch = Vec::new();
            // Bodies written since the last pruning: past an eighth of the budget, the writer
            // prunes at once, so that a flood of large bodies cannot outrun the 10-minute pruner.
            let mut unpruned = 0u64;
            while rx.recv_many(&mut batch, 4096).await > 0 {
                // Gather for up to 10 ms, so that one write and one fsync serve every exchange of
                // that window: a record is durable within about 10 ms plus one flush.
                let deadline = tokio::time::Instant::now() + GATHER;
                while batch.len() < 4096 {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(record)) => batch.push(record),
                        Ok(None) | Err(_) => break,
                    }
                }
                let records = std::mem::take(&mut batch);
                unpruned += records
                    .iter()
                    .map(|(_, b)| (b.request.len() + b.response.len()) as u64)
                    .sum::<u64>();
                let prune = unpruned > (max_bytes / 8).max(1 << 20);
                if prune {
                    unpruned = 0;
                }
                let store = Arc::clone(&writer);
                let appended = tokio::task::spawn_blocking(move || {
                    let written = store.append_journal(records);
                    if prune && let Err(e) = store.prune_journal_bodies(retention, max_bytes) {
                        tracing::error!("journal pruning: {e}");
                    }
                    written
                });
                match appended.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("journal records lost: {e}"),
                    Err(e) => tracing::error!("journal writer: {e}"),
                }
            }
        });
        let weak = tx.downgrade();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                if weak.upgrade().is_none() {
                    return;
                }
                let store = Arc::clone(&store);
                let pruned = tokio::task::spawn_blocking(move || {
                    store.prune_journal_bodies(retention, max_bytes)
                })
                .await;
                match pruned {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(files = n, "journal bodies pruned"),
                    Ok(Err(e)) => tracing::error!("journal pruning: {e}"),
                    Err(e) => tracing::error!("journal pruning: {e}"),
                }
            }
        });
        (Journal { tx }, written)
    }

    /// Records an exchange. Waits only if the writer is far behind (4,096 records).
    pub async fn record(&self, exchange: Exchange, response: String) {
        if self.tx.send(exchange.into_record(response)).await.is_err() {
            tracing::error!("journal writer stopped: exchange not recorded");
        }
    }
}

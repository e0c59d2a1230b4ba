//! The daily run: fetch the new flows and revisions from the node, then write every entity's
//! report of the day (which classifies every transfer as it stands), and keep a record of it
//! (start, end, what the node said, rows and classes) for the dashboard and `mpay runs`. It
//! runs at `[reconciliation] daily_at`, at start for the days missed while the daemon was down,
//! and on demand (`mpayd reconcile`, the console); running a day again rewrites the same
//! reports from the same store.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::civil::Date;
use mpay_common::console::RunRecord;

use super::{ServiceError, report};
use crate::App;
use crate::store::StoreError;

/// Writes every entity's report of `day`: (entities, rows, rows per class).
fn write_reports(app: &App, day: Date) -> Result<(u64, u64, BTreeMap<String, u64>), ServiceError> {
    let mut rows = 0;
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    let entities: Vec<_> = app
        .config
        .entities
        .iter()
        .map(|e| e.fiscal_code.clone())
        .collect();
    // Streamed into the outboxes: a day is never held in memory.
    for w in report::write_day(app, &entities, day)? {
        rows += w.rows;
        for (class, k) in w.classes {
            *classes.entry(class).or_default() += k;
        }
    }
    Ok((entities.len() as u64, rows, classes))
}

/// Runs `days` (oldest first): one fetch from the node, then each day's reports, each day
/// recorded. A failure is recorded with its run, never raised: the next run tries again.
pub async fn run(app: &Arc<App>, days: Vec<Date>, trigger: &str) -> Vec<RunRecord> {
    let started = app.clock.now();
    // The day's flows first, so that the reports see them.
    let fetched = crate::node::fetch_all(app).await;
    let flows_listed = fetched.iter().map(|f| f.listed as u64).sum();
    let flows_new = fetched.iter().map(|f| f.new as u64).sum();
    let node_errors: Vec<String> = fetched.into_iter().flat_map(|f| f.errors).collect();
    let mut records = Vec::new();
    for day in days {
        let work = Arc::clone(app);
        let written = tokio::task::spawn_blocking(move || write_reports(&work, day))
            .await
            .unwrap_or_else(|e| Err(ServiceError::from(StoreError::Unavailable(e.to_string()))));
        let (entities, rows, classes, error) = match written {
            Ok((entities, rows, classes)) => (entities, rows, classes, None),
            Err(e) => (0, 0, BTreeMap::new(), Some(e.message)),
        };
        let record = RunRecord {
            seq: 0,
            day,
            trigger: trigger.to_owned(),
            started,
            finished: app.clock.now(),
            flows_listed,
            flows_new,
            node_errors: node_errors.clone(),
            entities,
            rows,
            classes,
            error,
        };
        match &record.error {
            None => tracing::info!(
                %day, trigger, rows, flows_new, node_errors = record.node_errors.len(),
                "daily run done"
            ),
            Some(e) => tracing::error!(%day, trigger, "daily run failed: {e}"),
        }
        let work = Arc::clone(app);
        let kept = record.clone();
        match tokio::task::spawn_blocking(move || work.store.append_run(kept)).await {
            Ok(Ok(r)) => records.push(r),
            Ok(Err(e)) => {
                tracing::error!(%day, "daily run not recorded: {e}");
                records.push(record);
            }
            Err(e) => {
                tracing::error!(%day, "daily run not recorded: {e}");
                records.push(record);
            }
        }
    }
    records
}

/// The schedule: at start and then every minute, runs the days whose reports are due
/// (`report::due_days`: yesterday once past the daily time, and days missed while down).
pub fn schedule(
    app: Arc<App>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = app.config.reconciliation.daily_time() {
            tracing::error!("reconciliation.daily_at: {e}; no daily runs");
            return;
        }
        let mut first = true;
        loop {
            let work = Arc::clone(&app);
            let due =
                tokio::task::spawn_blocking(move || report::due_days(&work, work.clock.now()))
                    .await
                    .unwrap_or_else(|e| {
                        Err(ServiceError::from(StoreError::Unavailable(e.to_string())))
                    });
            match due {
                Ok(days) if days.is_empty() => {}
                Ok(days) => {
                    let today = app.clock.today().yesterday().ok();
                    // More than yesterday, or at start: days missed while mpayd was down.
                    let trigger = if first || days.len() > 1 || days.first() != today.as_ref() {
                        "catch-up"
                    } else {
                        "schedule"
                    };
                    run(&app, days, trigger).await;
                }
                Err(e) => tracing::error!("daily run: {}", e.message),
            }
            first = false;
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            }
        }
    })
}

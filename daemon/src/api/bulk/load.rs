//! Loading the positions of a bulk file through the API's rules: new positions a batch at a
//! time (validated, numbered, folded and encoded off the store's writer lock, then one commit),
//! everything else one by one through `service::positions::upsert`; each outcome counted in the
//! job.

use std::sync::Mutex;

use mpay_common::ids::Iupd;
use mpay_common::ledger::{Actor, Change, Event};
use mpay_common::requests::PositionIn;

use super::files::{Group, body_of, json_body};
use super::{Job, Reject, lock, with_search_run};
use crate::App;
use crate::config::EntityConfig;
use crate::service::positions::{self, Upserted, prepare_new, upsert};
use crate::service::{ErrorKind, ServiceError};
use crate::store::{JobStatus, PreparedLoad, Store, WriteError};

/// What a row group did.
enum Done {
    Loaded(Upserted),
    Cancelled,
}

/// Why a row group was not loaded: its rows are refused (line, field, code, reason), or the
/// store is unavailable and the job must stop.
enum Refusal {
    Row(u64, String, &'static str, String),
    Interrupted(String),
}

/// A field of a row that does not make a valid body.
impl From<(u64, String, String)> for Refusal {
    fn from((line, field, reason): (u64, String, String)) -> Self {
        Refusal::Row(line, field, "INVALID_FIELD", reason)
    }
}

/// Loads one position.
fn load_group(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    group: &Group,
) -> Result<Done, Refusal> {
    let first_line = group.rows[0].0;
    let action = group.rows[0]
        .1
        .get("action")
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_else(|| "create".into());
    if let Some(iupd) = group.rows[0].1.get("duplicate") {
        return Err(Refusal::Row(
            first_line,
            "iupd".into(),
            "DUPLICATE_IUPD",
            format!("iupd {iupd} appears twice in the file"),
        ));
    }
    let (iupd_text, body) = match &group.json {
        Some(item) => (
            group.rows[0].1.get("iupd").cloned().unwrap_or_default(),
            json_body(item),
        ),
        None => body_of(group)?,
    };
    let iupd: Iupd = iupd_text.parse().map_err(|e: mpay_common::ids::IdError| {
        Refusal::Row(first_line, "iupd".into(), "INVALID_FIELD", e.to_string())
    })?;
    let refused = |e: ServiceError| refusal(first_line, e);
    match action.as_str() {
        "create" | "update" => {
            let body: PositionIn = serde_path_to_error::deserialize(body).map_err(|e| {
                let field = e.path().to_string();
                Refusal::Row(first_line, field, "INVALID_FIELD", e.inner().to_string())
            })?;
            if action == "update"
                && app
                    .store
                    .by_iupd(&entity.fiscal_code, &iupd)
                    .map_err(|e| refused(e.into()))?
                    .is_none()
            {
                let reason = format!("no position {iupd} to update (use create to load it)");
                return Err(Refusal::Row(first_line, "iupd".into(), "NOT_FOUND", reason));
            }
            upsert(app, entity, actor, iupd, body)
                .map(|(done, _)| Done::Loaded(done))
                .map_err(refused)
        }
        "cancel" => {
            let (_, position) = app
                .store
                .by_iupd(&entity.fiscal_code, &iupd)
                .map_err(|e| refused(e.into()))?
                .ok_or_else(|| {
                    let reason = format!("no position {iupd}");
                    Refusal::Row(first_line, "iupd".into(), "NOT_FOUND", reason)
                })?;
            if position.cancelled {
                return Ok(Done::Loaded(Upserted::Unchanged));
            }
            positions::cancel(app, &entity.fiscal_code, actor, &iupd, "bulk file".into())
                .map_err(refused)?;
            Ok(Done::Cancelled)
        }
        other => Err(Refusal::Row(
            first_line,
            "action".into(),
            "UNKNOWN_ACTION",
            format!("{other:?}: create, update or cancel"),
        )),
    }
}

/// Loads each position in turn, counting and reporting; false if the store stopped the job.
pub(super) fn load_groups(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    mut groups: Vec<Group>,
    job: &Mutex<Job>,
) -> bool {
    while !groups.is_empty() {
        let rest = groups.split_off(groups.len().min(BATCH));
        let batch = prepare(app, entity, actor, groups);
        if !commit(app, entity, actor, batch, job) {
            return false;
        }
        groups = rest;
    }
    true
}

/// What is to be done with one position of a batch.
enum Step {
    /// Decided while preparing: a refusal.
    Decided(Result<Done, Refusal>),
    /// A new position, ready to commit with the others of its batch.
    New(Box<PreparedLoad>),
    /// Anything else (a replacement, a cancellation): through `load_group`, when it commits.
    OneByOne,
}

/// A row's refusal; the store's unavailability stops the job instead.
fn refusal(line: u64, e: ServiceError) -> Refusal {
    if e.kind == ErrorKind::Unavailable {
        Refusal::Interrupted(e.message)
    } else {
        Refusal::Row(line, e.field.unwrap_or_default(), e.code, e.message)
    }
}

/// A batch of positions, prepared off the store's writer lock.
pub(super) struct Prepared {
    groups: Vec<Group>,
    steps: Vec<Step>,
    /// The end of the notice numbers the new positions took.
    numbers_end: u64,
    /// Rows the reader refused on their own, counted with this batch.
    pub(super) refused: Vec<Reject>,
    /// With this batch, every row of the file up to this one is accounted for (0: not a CSV
    /// read in order).
    pub(super) upto: u64,
}

/// Prepares a batch: new positions are validated, given notice numbers (one reservation for the
/// batch), folded and encoded, so that committing them is only writing. A CSV load prepares the
/// next batch on one core while the store commits this one on the other.
pub(super) fn prepare(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    groups: Vec<Group>,
) -> Prepared {
    let mut steps: Vec<Step> = Vec::with_capacity(groups.len());
    let mut fresh: Vec<(usize, Iupd, PositionIn)> = Vec::new();
    for (k, group) in groups.iter().enumerate() {
        if let Some((line, code, reason)) = &group.poison {
            steps.push(Step::Decided(Err(Refusal::Row(
                *line,
                String::new(),
                code,
                reason.clone(),
            ))));
            continue;
        }
        if let Some((iupd, body)) = new_position(app, entity, group) {
            fresh.push((k, iupd, body));
        }
        steps.push(Step::OneByOne);
    }
    let (slots, items): (Vec<usize>, Vec<(Iupd, PositionIn)>) =
        fresh.into_iter().map(|(k, i, b)| (k, (i, b))).unzip();
    let (prepared, numbers_end) = prepare_new(app, entity, items);
    for (k, data) in slots.into_iter().zip(prepared) {
        let event = |data| Event::new(app.clock.now(), actor.clone(), Change::Loaded(data));
        steps[k] = match data.and_then(|d| {
            Store::prepare_load(&entity.fiscal_code, &event(d))
                .map_err(|e| ServiceError::write(e, None))
        }) {
            Ok(load) => Step::New(Box::new(load)),
            Err(e) => Step::Decided(Err(refusal(groups[k].rows[0].0, e))),
        };
    }
    Prepared {
        groups,
        steps,
        numbers_end,
        refused: Vec::new(),
        upto: 0,
    }
}

/// Commits a prepared batch (its new positions in one commit, the rest one by one) and counts
/// each outcome; false if the store stopped the job.
pub(super) fn commit(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    batch: Prepared,
    job: &Mutex<Job>,
) -> bool {
    let Prepared {
        groups,
        steps,
        numbers_end,
        refused,
        upto,
    } = batch;
    {
        let mut j = lock(job);
        for reject in refused {
            j.record.rows_done += 1;
            j.record.rejected_rows += 1;
            j.reject(reject);
        }
    }
    let mut outcomes: Vec<Option<Result<Done, Refusal>>> = Vec::with_capacity(groups.len());
    let mut loading = Vec::new();
    let mut loads = Vec::new();
    for (k, step) in steps.into_iter().enumerate() {
        outcomes.push(match step {
            Step::Decided(outcome) => Some(outcome),
            Step::New(load) => {
                loading.push(k);
                loads.push(*load);
                None
            }
            Step::OneByOne => Some(load_group(app, entity, actor, &groups[k])),
        });
    }
    let line = |k: usize| groups[k].rows[0].0;
    if !loads.is_empty() {
        let loaded = with_search_run(job, |run| {
            app.store
                .load_prepared_deferred(&entity.fiscal_code, numbers_end, loads, run)
        });
        match loaded {
            Ok(results) => {
                for (k, r) in loading.into_iter().zip(results) {
                    outcomes[k] = Some(match r {
                        Ok(_) => Ok(Done::Loaded(Upserted::Created)),
                        // Loaded meanwhile through the API or another file: a replacement now.
                        Err(WriteError::Exists(_)) => load_group(app, entity, actor, &groups[k]),
                        Err(e) => Err(refusal(line(k), ServiceError::write(e, None))),
                    });
                }
            }
            Err(e) => {
                let e = ServiceError::from(e);
                for k in loading {
                    outcomes[k] = Some(Err(Refusal::Interrupted(e.message.clone())));
                }
            }
        }
    }
    for (group, outcome) in groups.iter().zip(outcomes) {
        let Some(outcome) = outcome else { continue };
        if !tally(job, group, outcome) {
            return false;
        }
    }
    // Where an interrupted load carries on: recorded durably with the report's length, so
    // that no row is counted or reported twice. (Without a place in the file, progress only.)
    let record = {
        let mut j = lock(job);
        if upto > 0 {
            match j.report.durable_len() {
                Ok(bytes) => {
                    j.record.resume_after = upto;
                    j.record.report_bytes = bytes;
                }
                Err(e) => tracing::error!(job = j.record.id, "cannot write the reject report: {e}"),
            }
        }
        j.record.clone()
    };
    if let Err(e) = app.store.save_job(&record, upto > 0) {
        tracing::warn!(job = record.id, "cannot record the job's progress: {e}");
    }
    // A run is written before it outgrows its budget: sorted runs of a bounded size. Its
    // positions are counted above; if it fails, the job stops and carries on later, making
    // the entries again from the positions first.
    let written = with_search_run(job, |run| match run.bytes() >= SEARCH_RUN_BYTES {
        true => app.store.write_search_run(run),
        false => Ok(()),
    });
    if let Err(e) = written {
        let mut j = lock(job);
        tracing::warn!(job = j.record.id, file = %j.record.file, "bulk job interrupted: {e}");
        j.record.status = JobStatus::Interrupted;
        return false;
    }
    true
}

/// Positions per batch of new positions.
pub(super) const BATCH: usize = 500;

/// Memory a job's search run may hold before it is written (about 100,000 positions).
const SEARCH_RUN_BYTES: usize = 32 << 20;

/// The body of a group that creates a position the entity does not have yet; `None` for
/// everything else (replacements, cancellations, rows in error), which `load_group` handles.
fn new_position(app: &App, entity: &EntityConfig, group: &Group) -> Option<(Iupd, PositionIn)> {
    let row = &group.rows[0].1;
    let action = row.get("action").map(|a| a.to_ascii_lowercase());
    if !matches!(action.as_deref(), None | Some("create")) || row.contains_key("duplicate") {
        return None;
    }
    let (iupd, body) = match &group.json {
        Some(item) => (row.get("iupd").cloned()?, json_body(item)),
        None => body_of(group).ok()?,
    };
    let iupd: Iupd = iupd.parse().ok()?;
    if !matches!(app.store.by_iupd(&entity.fiscal_code, &iupd), Ok(None)) {
        return None;
    }
    let body: PositionIn = serde_path_to_error::deserialize(body).ok()?;
    Some((iupd, body))
}

/// Counts a group's outcome in the job; false if the job must stop.
fn tally(job: &Mutex<Job>, group: &Group, outcome: Result<Done, Refusal>) -> bool {
    let mut j = lock(job);
    let r = &mut j.record;
    r.rows_done += group.rows.len() as u64;
    match outcome {
        Ok(Done::Loaded(Upserted::Created)) => r.created += 1,
        Ok(Done::Loaded(Upserted::Replaced)) => r.replaced += 1,
        Ok(Done::Loaded(Upserted::Unchanged)) => r.unchanged += 1,
        Ok(Done::Cancelled) => r.cancelled += 1,
        Err(Refusal::Interrupted(reason)) => {
            tracing::warn!(job = r.id, file = %r.file, "bulk job interrupted: {reason}");
            r.rows_done -= group.rows.len() as u64;
            r.status = JobStatus::Interrupted;
            return false;
        }
        Err(Refusal::Row(row, field, code, reason)) => {
            r.rejected_rows += group.rows.len() as u64;
            for (line, _, original) in &group.rows {
                j.reject(Reject {
                    row: *line,
                    field: field.clone(),
                    code,
                    reason: if *line == row {
                        reason.clone()
                    } else {
                        format!("position refused at line {row}: {reason}")
                    },
                    original: original.clone(),
                });
            }
        }
    }
    true
}

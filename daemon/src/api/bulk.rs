//! Bulk loads: a CSV file of positions, one row per instalment (or a JSON array of positions,
//! each the PUT's body plus `iupd` and an optional `action`), processed in the background as a
//! job with progress and a reject report. Every position goes through `positions::upsert`, the
//! API's own load path, so loading the same file twice changes nothing the second time and a bad
//! row never stops the others.
//!
//! Layout v1 (header row required, `;` or `,` separated, UTF-8 with or without BOM; column
//! names are case-insensitive, unknown columns are refused):
//! `action` (create|update|cancel, default create; create and update both create-or-replace),
//! `iupd`, `kind`, `debtor_code`, `debtor_name`, `debtor_email`, `debtor_street`,
//! `debtor_postal_code`, `debtor_city`, `debtor_province`, `debtor_country`, `description`,
//! `validity`, `expiry`, `option` (single|plan, default single), `nav` (optional: generated),
//! `due`, `amount`, `instalment_description`, and for k = 1..5 `t{k}_beneficiary`, `t{k}_iban`,
//! `t{k}_amount` (t1 defaults to what the other transfers leave of the instalment's amount),
//! `t{k}_remittance`, `t{k}_category`.
//! The rows of one position are consecutive; its position columns are read from its first row.
//!
//! Uploaded files are first written durably into the entity's inbox folder
//! (`DATA_DIR/inbox/CF/`), where a back office may also drop them; a file leaves the inbox for
//! `done/` (with its reject report) only once loaded, so a file interrupted by a crash is loaded
//! again at the next start, and the rows already loaded are unchanged. Job records live in
//! memory.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mpay_common::ids::Iupd;
use mpay_common::ledger::{Actor, Change, Event};
use mpay_common::money::Cents;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::dto::PositionIn;
use super::positions::{Upserted, prepare_new, upsert};
use super::{Api, ApiError, Authorized};
use crate::App;
use crate::config::EntityConfig;

const POSITION_COLUMNS: [&str; 14] = [
    "action",
    "iupd",
    "kind",
    "debtor_code",
    "debtor_name",
    "debtor_email",
    "debtor_street",
    "debtor_postal_code",
    "debtor_city",
    "debtor_province",
    "debtor_country",
    "description",
    "validity",
    "expiry",
];
const INSTALMENT_COLUMNS: [&str; 5] = ["option", "nav", "due", "amount", "instalment_description"];
const TRANSFER_COLUMNS: [&str; 5] = ["beneficiary", "iban", "amount", "remittance", "category"];
const REQUIRED: [&str; 8] = [
    "iupd",
    "kind",
    "debtor_code",
    "debtor_name",
    "description",
    "due",
    "amount",
    "t1_category",
];

/// One refused row, as the reject report lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Reject {
    /// Line number in the file (the header is line 1; 0 for the file as a whole).
    pub row: u64,
    pub field: String,
    pub reason: String,
    pub original: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Job {
    pub id: u64,
    pub entity: String,
    /// "running", "done", or "interrupted" (the store stopped: the file stays in the inbox and is
    /// loaded again at the next start).
    pub status: &'static str,
    /// The file's name in the entity's inbox.
    pub file: String,
    pub rows_total: u64,
    pub rows_done: u64,
    pub created: u64,
    pub replaced: u64,
    pub unchanged: u64,
    pub cancelled: u64,
    pub rejected_rows: u64,
    #[serde(skip)]
    pub rejects: Vec<Reject>,
}

/// The jobs of this daemon's life, and the inbox files being loaded.
#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<HashMap<u64, Arc<Mutex<Job>>>>,
    files: Mutex<HashSet<PathBuf>>,
}

impl Jobs {
    fn get(&self, entity: &str, id: u64) -> Option<Arc<Mutex<Job>>> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(&id)
            .filter(|j| j.lock().unwrap_or_else(|p| p.into_inner()).entity == entity)
            .cloned()
    }
}

fn lock(job: &Mutex<Job>) -> std::sync::MutexGuard<'_, Job> {
    job.lock().unwrap_or_else(|p| p.into_inner())
}

/// One data row: its line number, its non-empty values by column, and the line as written.
type Row = (u64, HashMap<String, String>, String);

/// A position's rows; for a JSON file, one row and the position's body as the PUT takes it.
struct Group {
    rows: Vec<Row>,
    json: Option<Value>,
}

fn whole(field: &str, reason: String) -> Reject {
    Reject {
        row: 0,
        field: field.into(),
        reason,
        original: String::new(),
    }
}

/// Loads a CSV file as it reads it, a batch of positions at a time, so that memory stays flat
/// whatever the file's size. The header is checked first: a file with unknown or missing
/// columns is refused whole; a line that is not UTF-8 or not CSV is refused alone.
fn run_csv(app: &App, entity: &EntityConfig, actor: &Actor, path: &Path, job: &Mutex<Job>) -> bool {
    let refuse = |reject: Reject| {
        lock(job).rejects.push(reject);
        true
    };
    let open = || File::open(path).map_err(|e| whole("", format!("cannot read the file: {e}")));
    // A first pass counts the lines, for the progress figures.
    let lines = match open() {
        Ok(file) => BufReader::new(file)
            .split(b'\n')
            .filter(|l| l.as_ref().is_ok_and(|l| !l.is_empty()))
            .count() as u64,
        Err(reject) => return refuse(reject),
    };
    lock(job).rows_total = lines.saturating_sub(1);
    let mut input = match open() {
        Ok(file) => BufReader::new(file),
        Err(reject) => return refuse(reject),
    };
    let mut header = Vec::new();
    if let Err(e) = input.read_until(b'\n', &mut header) {
        return refuse(whole("", format!("cannot read the file: {e}")));
    }
    let header = header
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&header)
        .to_vec();
    let Ok(header_text) = std::str::from_utf8(&header) else {
        return refuse(whole(
            "",
            "line 1 is not UTF-8: save the file as UTF-8 (not Latin-1 or Windows-1252)".into(),
        ));
    };
    let delimiter = if header_text.contains(';') {
        b';'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .trim(csv::Trim::All)
        .from_reader(std::io::Cursor::new(header.clone()).chain(input));
    let columns: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_ascii_lowercase).collect(),
        Err(e) => return refuse(whole("", format!("unreadable header: {e}"))),
    };
    let known = |c: &str| {
        POSITION_COLUMNS.contains(&c)
            || INSTALMENT_COLUMNS.contains(&c)
            || (1..=5).any(|k| TRANSFER_COLUMNS.iter().any(|t| c == format!("t{k}_{t}")))
    };
    if let Some(c) = columns.iter().find(|c| !known(c)) {
        return refuse(whole(c, format!("unknown column {c:?} (layout v1)")));
    }
    if let Some(c) = REQUIRED.iter().find(|c| !columns.iter().any(|h| h == *c)) {
        return refuse(whole(c, format!("missing column {c:?}")));
    }
    let separator = char::from(delimiter).to_string();
    // Consecutive rows of one iupd make a position; an iupd seen again later is a duplicate.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut batch: Vec<Group> = Vec::new();
    let mut current: Option<Group> = None;
    let refused_row = |line: u64, field: &str, reason: String, original: String| {
        let mut j = lock(job);
        j.rejects.push(Reject {
            row: line,
            field: field.into(),
            reason,
            original,
        });
        j.rejected_rows += 1;
        j.rows_done += 1;
    };
    for record in reader.byte_records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                refused_row(line, "", format!("not CSV: {e}"), String::new());
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let original = record
            .iter()
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(&separator);
        let Ok(fields) = record
            .iter()
            .map(|f| std::str::from_utf8(f).map(str::to_string))
            .collect::<Result<Vec<String>, _>>()
        else {
            refused_row(
                line,
                "",
                format!(
                    "line {line} is not UTF-8: save the file as UTF-8 (not Latin-1 or Windows-1252)"
                ),
                original,
            );
            continue;
        };
        let values: HashMap<String, String> = columns
            .iter()
            .cloned()
            .zip(fields)
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let iupd = values.get("iupd").cloned().unwrap_or_default();
        if let Some(group) = current.as_mut()
            && group.rows[0].1.get("iupd") == Some(&iupd)
        {
            group.rows.push((line, values, original));
            continue;
        }
        if let Some(first) = seen.get(&iupd) {
            refused_row(
                line,
                "iupd",
                format!(
                    "iupd {iupd} already appeared at line {first}: a position's rows must be consecutive"
                ),
                original,
            );
            continue;
        }
        seen.insert(iupd, line);
        batch.extend(current.replace(Group {
            rows: vec![(line, values, original)],
            json: None,
        }));
        if batch.len() >= BATCH {
            if !load_groups(app, entity, actor, &batch, job) {
                return false;
            }
            batch.clear();
        }
    }
    batch.extend(current);
    load_groups(app, entity, actor, &batch, job)
}

fn is_json(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// A JSON file: an array of positions, each the PUT's body plus `iupd` and an optional
/// `action`. An element's "row" is its number in the array, from 1.
fn read_json(bytes: &[u8]) -> Result<Vec<Group>, Reject> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let items: Vec<Value> = serde_json::from_slice(bytes).map_err(|e| Reject {
        row: 0,
        field: String::new(),
        reason: format!("not a JSON array of positions: {e}"),
        original: String::new(),
    })?;
    let mut seen = HashSet::new();
    let mut groups = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let row = i as u64 + 1;
        let original: String = item.to_string().chars().take(500).collect();
        let mut values = HashMap::new();
        let mut body = item;
        if let Some(object) = body.as_object_mut() {
            for key in ["iupd", "action"] {
                if let Some(Value::String(v)) = object.remove(key) {
                    values.insert(key.to_string(), v);
                }
            }
        }
        let iupd = values.get("iupd").cloned().unwrap_or_default();
        if !iupd.is_empty() && !seen.insert(iupd.clone()) {
            values.insert("duplicate".into(), iupd);
        }
        groups.push(Group {
            rows: vec![(row, values, original)],
            json: Some(body),
        });
    }
    Ok(groups)
}

/// One position's JSON body, as the PUT endpoint takes it, from its rows.
fn body_of(group: &Group) -> Result<(String, Value), (u64, String, String)> {
    let (first_line, first, _) = &group.rows[0];
    let get = |row: &HashMap<String, String>, c: &str| row.get(c).cloned();
    let mut debtor = Map::new();
    for (column, key) in [
        ("debtor_code", "code"),
        ("debtor_name", "name"),
        ("debtor_email", "email"),
        ("debtor_street", "street"),
        ("debtor_postal_code", "postal_code"),
        ("debtor_city", "city"),
        ("debtor_province", "province"),
        ("debtor_country", "country"),
    ] {
        if let Some(v) = get(first, column) {
            debtor.insert(key.into(), Value::String(v));
        }
    }
    let mut single = Vec::new();
    let mut plan = Vec::new();
    for (line, row, _) in &group.rows {
        let amount = get(row, "amount");
        // Transfer 1 takes what the others leave of the instalment's amount.
        let others = (2..=5)
            .filter_map(|k| get(row, &format!("t{k}_amount")))
            .map(|a| Cents::parse_api(&a).ok())
            .collect::<Option<Vec<Cents>>>()
            .and_then(Cents::sum);
        let first_share = match (amount.as_deref().map(Cents::parse_api), others) {
            (Some(Ok(total)), Some(others)) => total
                .checked_sub(others)
                .filter(|c| *c > Cents::ZERO)
                .map(|c| c.to_string())
                .or_else(|| amount.clone()),
            _ => amount.clone(),
        };
        let mut transfers = Vec::new();
        for k in 1..=5 {
            let t = |f: &str| get(row, &format!("t{k}_{f}"));
            if k > 1 && t("amount").is_none() {
                continue;
            }
            let mut transfer = Map::new();
            let amount = t("amount").or_else(|| first_share.clone());
            for (key, value) in [
                ("beneficiary", t("beneficiary")),
                ("amount", amount),
                (
                    "remittance",
                    t("remittance").or_else(|| get(first, "description")),
                ),
                ("category", t("category")),
            ] {
                if let Some(v) = value {
                    transfer.insert(key.into(), Value::String(v));
                }
            }
            if let Some(iban) = t("iban") {
                transfer.insert("target".into(), json!({ "Bank": iban }));
            }
            transfers.push(Value::Object(transfer));
        }
        let mut instalment = Map::new();
        for (key, value) in [
            ("nav", get(row, "nav")),
            ("amount", get(row, "amount")),
            ("due", get(row, "due")),
            (
                "description",
                get(row, "instalment_description").or_else(|| get(first, "description")),
            ),
        ] {
            if let Some(v) = value {
                instalment.insert(key.into(), Value::String(v));
            }
        }
        instalment.insert("transfers".into(), Value::Array(transfers));
        match get(row, "option")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("single") => single.push((*line, Value::Object(instalment))),
            Some("plan") => plan.push((*line, Value::Object(instalment))),
            Some(other) => {
                return Err((*line, "option".into(), format!("{other:?}: single or plan")));
            }
        }
    }
    let mut options = Vec::new();
    for (kind, rows) in [("Single", single), ("Plan", plan)] {
        if !rows.is_empty() {
            let instalments: Vec<Value> = rows.into_iter().map(|(_, v)| v).collect();
            options.push(json!({ "kind": kind, "instalments": instalments }));
        }
    }
    let mut body = Map::new();
    body.insert("kind".into(), json!(get(first, "kind")));
    body.insert("debtor".into(), Value::Object(debtor));
    body.insert("description".into(), json!(get(first, "description")));
    for key in ["validity", "expiry"] {
        if let Some(v) = get(first, key) {
            body.insert(key.into(), Value::String(v));
        }
    }
    body.insert("options".into(), Value::Array(options));
    let iupd = get(first, "iupd").ok_or((*first_line, "iupd".into(), "missing".into()))?;
    Ok((iupd, Value::Object(body)))
}

/// What a row group did.
enum Done {
    Loaded(Upserted),
    Cancelled,
}

/// Why a row group was not loaded: its rows are refused (line, field, reason), or the store is
/// unavailable and the job must stop.
enum Refusal {
    Row(u64, String, String),
    Interrupted(String),
}

impl From<(u64, String, String)> for Refusal {
    fn from((line, field, reason): (u64, String, String)) -> Self {
        Refusal::Row(line, field, reason)
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
            format!("iupd {iupd} appears twice in the file"),
        ));
    }
    let (iupd_text, body) = match &group.json {
        Some(body) => (
            group.rows[0].1.get("iupd").cloned().unwrap_or_default(),
            body.clone(),
        ),
        None => body_of(group)?,
    };
    let iupd: Iupd = iupd_text.parse().map_err(|e: mpay_common::ids::IdError| {
        Refusal::Row(first_line, "iupd".into(), e.to_string())
    })?;
    let api_error = |e: ApiError| {
        if e.status == StatusCode::SERVICE_UNAVAILABLE {
            Refusal::Interrupted(e.error)
        } else {
            Refusal::Row(first_line, e.field.unwrap_or_default(), e.error)
        }
    };
    match action.as_str() {
        "create" | "update" => {
            let body: PositionIn = serde_path_to_error::deserialize(body).map_err(|e| {
                Refusal::Row(first_line, e.path().to_string(), e.inner().to_string())
            })?;
            upsert(app, entity, actor, iupd, body)
                .map(|(done, _)| Done::Loaded(done))
                .map_err(api_error)
        }
        "cancel" => {
            let (id, position) = app
                .store
                .by_iupd(&entity.fiscal_code, &iupd)
                .map_err(|e| api_error(e.into()))?
                .ok_or_else(|| {
                    Refusal::Row(first_line, "iupd".into(), format!("no position {iupd}"))
                })?;
            if position.cancelled {
                return Ok(Done::Loaded(Upserted::Unchanged));
            }
            let event = Event::new(jiff::Timestamp::now(), actor.clone(), Change::Cancelled)
                .with_reason("bulk file");
            app.store
                .append(id, event)
                .map_err(|e| api_error(ApiError::write(e, None)))?;
            Ok(Done::Cancelled)
        }
        other => Err(Refusal::Row(
            first_line,
            "action".into(),
            format!("{other:?}: create, update or cancel"),
        )),
    }
}

/// Loads a file (blocking: called on the blocking pool). False if the store stopped it
/// half-way; the caller marks the job done. JSON files are read whole, CSV files as a stream.
fn run(app: &App, entity: &EntityConfig, actor: &Actor, path: &Path, job: &Mutex<Job>) -> bool {
    let mut start = [0u8; 64];
    let head = File::open(path).and_then(|mut f| f.read(&mut start));
    if head.is_ok_and(|n| is_json(&start[..n])) {
        return match std::fs::read(path)
            .map_err(|e| whole("", format!("cannot read the file: {e}")))
            .and_then(|bytes| read_json(&bytes))
        {
            Ok(groups) => {
                lock(job).rows_total = groups.len() as u64;
                load_groups(app, entity, actor, &groups, job)
            }
            Err(reject) => {
                lock(job).rejects.push(reject);
                true
            }
        };
    }
    run_csv(app, entity, actor, path, job)
}

/// Loads each position in turn, counting and reporting; false if the store stopped the job.
fn load_groups(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    groups: &[Group],
    job: &Mutex<Job>,
) -> bool {
    // New positions are loaded a batch at a time: one reservation of notice numbers and one
    // durable commit for the batch. Everything else goes one by one through `load_group`.
    for chunk in groups.chunks(BATCH) {
        let mut outcomes: Vec<Option<Result<Done, Refusal>>> = Vec::with_capacity(chunk.len());
        let mut fresh: Vec<(usize, Iupd, PositionIn)> = Vec::new();
        for (k, group) in chunk.iter().enumerate() {
            match new_position(app, entity, group) {
                Some((iupd, body)) => {
                    fresh.push((k, iupd, body));
                    outcomes.push(None);
                }
                None => outcomes.push(Some(load_group(app, entity, actor, group))),
            }
        }
        if !fresh.is_empty() {
            let (slots, items): (Vec<usize>, Vec<(Iupd, PositionIn)>) =
                fresh.into_iter().map(|(k, i, b)| (k, (i, b))).unzip();
            let refused = |k: usize, e: ApiError| -> Result<Done, Refusal> {
                let line = chunk[k].rows[0].0;
                if e.status == StatusCode::SERVICE_UNAVAILABLE {
                    Err(Refusal::Interrupted(e.error))
                } else {
                    Err(Refusal::Row(line, e.field.unwrap_or_default(), e.error))
                }
            };
            let mut loading = Vec::new();
            let mut events = Vec::new();
            for (k, data) in slots.into_iter().zip(prepare_new(app, entity, items)) {
                match data {
                    Ok(data) => {
                        loading.push(k);
                        events.push(Event::new(
                            jiff::Timestamp::now(),
                            actor.clone(),
                            Change::Loaded(data),
                        ));
                    }
                    Err(e) => outcomes[k] = Some(refused(k, e)),
                }
            }
            match app.store.load_many(&entity.fiscal_code, events) {
                Ok(results) => {
                    for (k, r) in loading.into_iter().zip(results) {
                        outcomes[k] = Some(match r {
                            Ok(_) => Ok(Done::Loaded(Upserted::Created)),
                            Err(e) => refused(k, ApiError::write(e, None)),
                        });
                    }
                }
                Err(e) => {
                    let e = ApiError::from(e);
                    for k in loading {
                        let copy = ApiError::new(e.status, e.error.clone(), None);
                        outcomes[k] = Some(refused(k, copy));
                    }
                }
            }
        }
        for (group, outcome) in chunk.iter().zip(outcomes) {
            let Some(outcome) = outcome else { continue };
            if !tally(job, group, outcome) {
                return false;
            }
        }
    }
    true
}

/// Positions per batch of new positions.
const BATCH: usize = 500;

/// The body of a group that creates a position the entity does not have yet; `None` for
/// everything else (replacements, cancellations, rows in error), which `load_group` handles.
fn new_position(app: &App, entity: &EntityConfig, group: &Group) -> Option<(Iupd, PositionIn)> {
    let row = &group.rows[0].1;
    let action = row.get("action").map(|a| a.to_ascii_lowercase());
    if !matches!(action.as_deref(), None | Some("create") | Some("update"))
        || row.contains_key("duplicate")
    {
        return None;
    }
    let (iupd, body) = match &group.json {
        Some(body) => (row.get("iupd").cloned()?, body.clone()),
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
    j.rows_done += group.rows.len() as u64;
    match outcome {
        Ok(Done::Loaded(Upserted::Created)) => j.created += 1,
        Ok(Done::Loaded(Upserted::Replaced)) => j.replaced += 1,
        Ok(Done::Loaded(Upserted::Unchanged)) => j.unchanged += 1,
        Ok(Done::Cancelled) => j.cancelled += 1,
        Err(Refusal::Interrupted(reason)) => {
            tracing::warn!(job = j.id, file = %j.file, "bulk job interrupted: {reason}");
            j.rows_done -= group.rows.len() as u64;
            j.status = "interrupted";
            return false;
        }
        Err(Refusal::Row(row, field, reason)) => {
            j.rejected_rows += group.rows.len() as u64;
            for (line, _, original) in &group.rows {
                j.rejects.push(Reject {
                    row: *line,
                    field: field.clone(),
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

fn job_answer(status: StatusCode, job: &Job) -> Response {
    let mut value = serde_json::to_value(job).unwrap_or_default();
    value["rejects"] = json!(format!(
        "/api/v1/entities/{}/bulk/{}/rejects",
        job.entity, job.id
    ));
    (status, axum::Json(value)).into_response()
}

/// An entity's inbox: CSV files dropped (or uploaded) there are loaded, then moved to `done/`
/// with their reject report beside them. A file stays in the inbox until its load has finished,
/// so after a crash it is loaded again at the next start: the rows already loaded are unchanged.
pub fn inbox(app: &App, entity: &EntityConfig) -> PathBuf {
    app.config
        .data_dir
        .join("inbox")
        .join(entity.fiscal_code.as_str())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Moves a loaded file to `done/`, with its reject report if any.
fn archive(path: &Path, job: &Job) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let done = dir.join("done");
    std::fs::create_dir_all(&done)?;
    if !job.rejects.is_empty() {
        let mut report = name.to_os_string();
        report.push(".rejects.csv");
        std::fs::write(
            done.join(report),
            rejects_csv(&job.rejects).map_err(std::io::Error::other)?,
        )?;
    }
    std::fs::rename(path, done.join(name))?;
    sync_dir(&done)?;
    sync_dir(dir)
}

/// Claims a file of an inbox for one job; false if a job has it already.
fn claim(api: &Api, path: &Path) -> bool {
    api.jobs
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_path_buf())
}

/// Starts a job for a file of an entity's inbox that the caller has claimed.
fn start_file(
    api: &Arc<Api>,
    entity: EntityConfig,
    path: PathBuf,
    actor: Actor,
) -> Arc<Mutex<Job>> {
    let id = api.jobs.next.fetch_add(1, Ordering::Relaxed) + 1;
    let job = Arc::new(Mutex::new(Job {
        id,
        entity: entity.fiscal_code.to_string(),
        status: "running",
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..Job::default()
    }));
    api.jobs
        .jobs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, Arc::clone(&job));
    let api = Arc::clone(api);
    let running = Arc::clone(&job);
    tokio::task::spawn_blocking(move || {
        let finished = run(&api.app, &entity, &actor, &path, &running);
        if finished {
            if let Err(e) = archive(&path, &lock(&running)) {
                tracing::error!(file = %path.display(), "cannot move a loaded file to done/: {e}");
            }
            // Done once the file has left the inbox.
            lock(&running).status = "done";
        }
        api.jobs
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&path);
    });
    job
}

/// Loads what the inboxes hold now and every few seconds from now on, with `Actor::System`.
pub fn watch(api: Arc<Api>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            for entity in &api.app.config.entities {
                let dir = inbox(&api.app, entity);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.filter_map(Result::ok) {
                    let path = entry.path();
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if path.is_file()
                        && !name.starts_with('.')
                        && (name.ends_with(".csv") || name.ends_with(".json"))
                        && claim(&api, &path)
                    {
                        start_file(&api, entity.clone(), path, Actor::System);
                    }
                }
            }
        }
    });
}

/// `POST /entities/{cf}/bulk`: the file is written durably into the entity's inbox, then loaded
/// as a job; 202 with its id.
pub async fn upload(State(api): State<Arc<Api>>, auth: Authorized, body: Bytes) -> Response {
    let entity = auth.entity(&api.app).clone();
    let dir = inbox(&api.app, &entity);
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%S%.6fZ")
        .to_string();
    let extension = if is_json(&body) { "json" } else { "csv" };
    let path = dir.join(format!("upload-{stamp}.{extension}"));
    let partial = dir.join(format!(".upload-{stamp}.part"));
    // Claimed before it appears, so that the inbox watcher leaves it to this job.
    if !claim(&api, &path) {
        return ApiError::new(
            StatusCode::CONFLICT,
            "an upload with this name is running",
            None,
        )
        .into_response();
    }
    let written = super::blocking({
        let (path, partial) = (path.clone(), partial.clone());
        move || {
            let io = |e: std::io::Error| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot store the file: {e}"),
                    None,
                )
            };
            std::fs::create_dir_all(&dir).map_err(io)?;
            let mut file = File::create(&partial).map_err(io)?;
            file.write_all(&body).map_err(io)?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&partial, &path).map_err(io)?;
            sync_dir(&dir).map_err(io)
        }
    })
    .await;
    if let Err(e) = written {
        api.jobs
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&path);
        return e.into_response();
    }
    let job = start_file(&api, entity, path, auth.actor.clone());
    job_answer(StatusCode::ACCEPTED, &lock(&job))
}

fn find(api: &Api, auth: &Authorized) -> Result<Arc<Mutex<Job>>, ApiError> {
    let id: u64 = auth
        .param("job")
        .parse()
        .map_err(|_| ApiError::not_found("no such job"))?;
    api.jobs
        .get(auth.entity(&api.app).fiscal_code.as_str(), id)
        .ok_or_else(|| ApiError::not_found(format!("no job {id} for this entity")))
}

/// `GET /entities/{cf}/bulk/{job}`: progress and counters.
pub async fn status(State(api): State<Arc<Api>>, auth: Authorized) -> Response {
    match find(&api, &auth) {
        Ok(job) => job_answer(StatusCode::OK, &lock(&job)),
        Err(e) => e.into_response(),
    }
}

/// The reject report: CSV (`;`), a header, then one line per refused row.
fn rejects_csv(rejects: &[Reject]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::WriterBuilder::new()
        .delimiter(b';')
        .from_writer(Vec::new());
    writer.write_record(["row", "field", "reason", "original"])?;
    for r in rejects {
        writer.write_record([&r.row.to_string(), &r.field, &r.reason, &r.original])?;
    }
    writer.into_inner().map_err(|e| e.into_error().into())
}

/// `GET /entities/{cf}/bulk/{job}/rejects`: the reject report, CSV (`;`), one line per row.
pub async fn rejects(State(api): State<Arc<Api>>, auth: Authorized) -> Response {
    let job = match find(&api, &auth) {
        Ok(job) => job,
        Err(e) => return e.into_response(),
    };
    let rejects = lock(&job).rejects.clone();
    let write = || rejects_csv(&rejects);
    match write() {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response(),
        Err(e) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None).into_response()
        }
    }
}

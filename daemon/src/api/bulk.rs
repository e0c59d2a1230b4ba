//! Bulk loads: a CSV file of positions, one row per instalment (or a JSON array of positions,
//! each the PUT's body plus `iupd` and an optional `action`), processed in the background as a
//! job with progress and a reject report. Every position goes through `positions::upsert`, the
//! API's own load path, so loading the same file twice changes nothing the second time and a bad
//! row never stops the others.
//!
//! Layout v1 (header row required, `;` or `,` separated, UTF-8 with or without BOM; column
//! names are case-insensitive, unknown columns are refused):
//! `action` (create|update|cancel, default create; create loads or replaces, update only
//! replaces a position that exists),
//! `iupd`, `kind`, `debtor_code`, `debtor_name`, `debtor_email`, `debtor_street`,
//! `debtor_postal_code`, `debtor_city`, `debtor_province`, `debtor_country`, `description`,
//! `validity`, `expiry`, `option` (single|plan, default single), `nav` (optional: generated),
//! `due`, `amount`, `instalment_description`, and for k = 1..5 `t{k}_beneficiary`, `t{k}_iban`,
//! `t{k}_amount` (t1 defaults to what the other transfers leave of the instalment's amount),
//! `t{k}_remittance`, `t{k}_category`.
//! The rows of one position are consecutive (an iupd whose rows are not is refused whole); its
//! position columns are read from its first row. A position loads whole or not at all: a row
//! that cannot be read refuses its position's other rows too.
//!
//! Uploaded files are first written durably into the entity's inbox folder
//! (`DATA_DIR/inbox/CF/`), where a back office may also drop them; a file leaves the inbox for
//! `done/` (with its reject report) only once loaded, so a file interrupted by a crash is loaded
//! at the next start under the same job id. A CSV carries on after the last batch the job
//! recorded (`BulkJob::resume_after`, saved durably with each batch together with the length of
//! the reject report, which is cut back to it): no row is counted or reported twice, and the
//! rows of a batch committed but not yet recorded come out unchanged.
//! Job records live in the store (`store::BulkJob`), so a job id answers the same after a
//! restart; the reject report is written as the rows are read (`.NAME.rejects.part` in the
//! inbox), never held in memory, and moves to `done/NAME.rejects.csv` with the file.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
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
use crate::store::{BulkJob, PreparedLoad, Store, WriteError};

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
    /// The API's error code, or one of the file's own (`UNREADABLE_FILE`, `NOT_UTF8`, `NOT_CSV`,
    /// `NOT_JSON`, `UNKNOWN_COLUMN`, `MISSING_COLUMN`, `DUPLICATE_IUPD`, `UNKNOWN_ACTION`).
    pub code: &'static str,
    pub reason: String,
    pub original: String,
}

/// A running job: its record, and its reject report as it is written.
pub struct Job {
    pub record: BulkJob,
    report: RejectReport,
}

impl Job {
    fn reject(&mut self, reject: Reject) {
        if let Err(e) = self.report.push(&reject) {
            tracing::error!(job = self.record.id, "cannot write the reject report: {e}");
        }
    }
}

/// A job's reject report, written to its working file as rows are refused.
struct RejectReport {
    path: PathBuf,
    writer: Option<csv::Writer<File>>,
}

impl RejectReport {
    fn push(&mut self, r: &Reject) -> std::io::Result<()> {
        let writer = match &mut self.writer {
            Some(w) => w,
            None => {
                // Appended to: a resumed job keeps the report of the rows it had done.
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                let empty = file.metadata()?.len() == 0;
                let mut w = report_writer(file);
                if empty {
                    w.write_record(REPORT_HEADER)?;
                }
                self.writer.insert(w)
            }
        };
        writer.write_record([&r.row.to_string(), &r.field, r.code, &r.reason, &r.original])?;
        Ok(())
    }

    /// Its length once durable.
    fn durable_len(&mut self) -> std::io::Result<u64> {
        self.flush(true)?;
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Makes what was written readable by others (and, with `sync`, durable).
    fn flush(&mut self, sync: bool) -> std::io::Result<()> {
        if let Some(w) = &mut self.writer {
            w.flush()?;
            if sync {
                w.get_ref().sync_all()?;
            }
        }
        Ok(())
    }
}

const REPORT_HEADER: [&str; 5] = ["row", "field", "code", "reason", "original"];

fn report_writer<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new().delimiter(b';').from_writer(out)
}

/// The running jobs of this daemon, and the inbox files being loaded.
#[derive(Default)]
pub struct Jobs {
    running: Mutex<HashMap<u64, Arc<Mutex<Job>>>>,
    files: Mutex<HashSet<PathBuf>>,
}

impl Jobs {
    fn running(&self, entity: &str, id: u64) -> Option<Arc<Mutex<Job>>> {
        let jobs = self.running.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(&id)
            .filter(|j| j.lock().unwrap_or_else(|p| p.into_inner()).record.entity == entity)
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
    /// A row that cannot be read (line, code, reason): the whole position is refused.
    poison: Option<(u64, &'static str, String)>,
}

fn whole(field: &str, code: &'static str, reason: String) -> Reject {
    Reject {
        row: 0,
        field: field.into(),
        code,
        reason,
        original: String::new(),
    }
}

/// A CSV file opened past its header: the reader, the columns (lower case) and the separator.
type OpenCsv = (
    csv::Reader<std::io::Chain<std::io::Cursor<Vec<u8>>, BufReader<File>>>,
    Vec<String>,
    u8,
);

/// Opens a CSV file of layout v1 and checks its header: a file with an unreadable header, or
/// unknown or missing columns, is refused whole.
fn open_csv(path: &Path) -> Result<OpenCsv, Reject> {
    let unreadable =
        |e: std::io::Error| whole("", "UNREADABLE_FILE", format!("cannot read the file: {e}"));
    let mut input = BufReader::new(File::open(path).map_err(unreadable)?);
    let mut header = Vec::new();
    input.read_until(b'\n', &mut header).map_err(unreadable)?;
    let header = header
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&header)
        .to_vec();
    let Ok(header_text) = std::str::from_utf8(&header) else {
        return Err(whole(
            "",
            "NOT_UTF8",
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
        // A row with too few or too many fields is refused with its line, not skipped unseen.
        .flexible(true)
        .from_reader(std::io::Cursor::new(header).chain(input));
    let columns: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_ascii_lowercase).collect(),
        Err(e) => return Err(whole("", "NOT_CSV", format!("unreadable header: {e}"))),
    };
    let known = |c: &str| {
        POSITION_COLUMNS.contains(&c)
            || INSTALMENT_COLUMNS.contains(&c)
            || (1..=5).any(|k| TRANSFER_COLUMNS.iter().any(|t| c == format!("t{k}_{t}")))
    };
    if let Some(c) = columns.iter().find(|c| !known(c)) {
        return Err(whole(
            c,
            "UNKNOWN_COLUMN",
            format!("unknown column {c:?} (layout v1)"),
        ));
    }
    if let Some(c) = REQUIRED.iter().find(|c| !columns.iter().any(|h| h == *c)) {
        return Err(whole(c, "MISSING_COLUMN", format!("missing column {c:?}")));
    }
    Ok((reader, columns, delimiter))
}

/// What a first pass over a CSV file finds: its number of rows, and the iupds whose rows are
/// not consecutive (first line, line where it came back), none of whose rows may load.
struct Survey {
    rows: u64,
    split: HashMap<u128, (u64, u64)>,
}

fn survey(path: &Path) -> Result<Survey, Reject> {
    let (mut reader, columns, _) = open_csv(path)?;
    let at = columns.iter().position(|c| c == "iupd").unwrap_or(0);
    // Per iupd: the line of its first row, and the line where it came back after others.
    let mut blocks: HashMap<u128, (u64, Option<u64>)> = HashMap::new();
    let mut previous = None;
    let mut rows = 0;
    for record in reader.byte_records() {
        rows += 1;
        let Ok(record) = record else { continue };
        let line = record.position().map_or(0, |p| p.line());
        let iupd = record.get(at).unwrap_or_default();
        if iupd.is_empty() {
            previous = None;
            continue;
        }
        let key = fingerprint(iupd);
        if previous != Some(key) {
            blocks
                .entry(key)
                .and_modify(|(_, again)| {
                    again.get_or_insert(line);
                })
                .or_insert((line, None));
        }
        previous = Some(key);
    }
    let split = blocks
        .into_iter()
        .filter_map(|(k, (first, again))| Some((k, (first, again?))))
        .collect();
    Ok(Survey { rows, split })
}

/// Loads a CSV file as it reads it, a batch of positions at a time, so that memory stays flat
/// whatever the file's size. A first pass counts the rows and finds iupds whose rows are not
/// consecutive. A row that is not UTF-8 or has the wrong number of fields is refused with its
/// whole position: nothing of a position is loaded unless all its rows are.
fn run_csv(app: &App, entity: &EntityConfig, actor: &Actor, path: &Path, job: &Mutex<Job>) -> bool {
    let survey = match survey(path) {
        Ok(survey) => survey,
        Err(reject) => {
            refuse_file(job, reject);
            return true;
        }
    };
    lock(job).record.rows_total = survey.rows;
    let (mut reader, columns, delimiter) = match open_csv(path) {
        Ok(open) => open,
        Err(reject) => {
            refuse_file(job, reject);
            return true;
        }
    };
    let at = columns.iter().position(|c| c == "iupd").unwrap_or(0);
    let separator = char::from(delimiter).to_string();
    let mut batch: Vec<Group> = Vec::new();
    let mut current: Option<Group> = None;
    // Rows refused on their own, with their number: they are counted by the committer with the
    // first batch that accounts for every row before them.
    let mut pending: Vec<(u64, Reject)> = Vec::new();
    let mut seen = 0u64;
    let resume_after = lock(job).record.resume_after;
    // This thread reads and prepares; a second one commits, one batch behind.
    std::thread::scope(|scope| {
        let (batches, ready) = std::sync::mpsc::sync_channel::<Prepared>(1);
        let committer = scope.spawn(move || {
            ready
                .into_iter()
                .all(|b| commit(app, entity, actor, b, job))
        });
        for record in reader.byte_records() {
            seen += 1;
            if seen <= resume_after {
                continue;
            }
            let mut refused_row = |line: u64, field: &str, code, reason: String, original| {
                let reject = Reject {
                    row: line,
                    field: String::from(field),
                    code,
                    reason,
                    original,
                };
                pending.push((seen, reject));
            };
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    refused_row(line, "", "NOT_CSV", format!("not CSV: {e}"), String::new());
                    continue;
                }
            };
            let line = record.position().map_or(0, |p| p.line());
            let original = record
                .iter()
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(&separator);
            let raw_iupd = record.get(at).unwrap_or_default();
            let iupd = String::from_utf8_lossy(raw_iupd).into_owned();
            if iupd.is_empty() {
                refused_row(
                    line,
                    "iupd",
                    "INVALID_FIELD",
                    "iupd is missing".into(),
                    original,
                );
                continue;
            }
            if let Some((first, again)) = survey.split.get(&fingerprint(raw_iupd)) {
                let reason = format!(
                    "the rows of iupd {iupd} are not consecutive (line {first}, then line \
                     {again} after other positions): none of them is loaded"
                );
                refused_row(line, "iupd", "DUPLICATE_IUPD", reason, original);
                continue;
            }
            let fields = record
                .iter()
                .map(|f| std::str::from_utf8(f).map(str::to_string))
                .collect::<Result<Vec<String>, _>>();
            let (values, poison) = match fields {
                _ if record.len() != columns.len() => (
                    HashMap::from([("iupd".to_string(), iupd.clone())]),
                    Some((
                        line,
                        "NOT_CSV",
                        format!(
                            "line {line} has {} fields, the header has {}",
                            record.len(),
                            columns.len()
                        ),
                    )),
                ),
                Err(_) => (
                    HashMap::from([("iupd".to_string(), iupd.clone())]),
                    Some((
                        line,
                        "NOT_UTF8",
                        format!(
                            "line {line} is not UTF-8: save the file as UTF-8 (not Latin-1 or \
                         Windows-1252)"
                        ),
                    )),
                ),
                Ok(fields) => (
                    columns
                        .iter()
                        .cloned()
                        .zip(fields)
                        .filter(|(_, v)| !v.is_empty())
                        .collect(),
                    None,
                ),
            };
            if let Some(group) = current.as_mut()
                && group.rows[0].1.get("iupd") == Some(&iupd)
            {
                group.rows.push((line, values, original));
                if group.poison.is_none() {
                    group.poison = poison;
                }
                continue;
            }
            batch.extend(current.replace(Group {
                rows: vec![(line, values, original)],
                json: None,
                poison,
            }));
            if batch.len() >= BATCH {
                // Everything before the position still being read is in this batch or earlier.
                let upto = seen - 1;
                let mut prepared = prepare(app, entity, actor, std::mem::take(&mut batch));
                let later = pending.split_off(pending.partition_point(|(n, _)| *n <= upto));
                prepared.refused = std::mem::replace(&mut pending, later)
                    .into_iter()
                    .map(|(_, r)| r)
                    .collect();
                prepared.upto = upto;
                // A closed channel: the committer stopped, the store with it.
                if batches.send(prepared).is_err() {
                    break;
                }
            }
        }
        batch.extend(current);
        let mut last = prepare(app, entity, actor, batch);
        last.refused = pending.into_iter().map(|(_, r)| r).collect();
        last.upto = seen;
        let _ = batches.send(last);
        drop(batches);
        committer.join().unwrap_or(false)
    })
}

/// A file refused as a whole: every row of it is rejected, and the job says why.
fn refuse_file(job: &Mutex<Job>, reject: Reject) {
    let mut j = lock(job);
    j.record.file_error = Some(reject.reason.clone());
    j.record.rejected_rows = j.record.rows_total;
    j.record.rows_done = j.record.rows_total;
    j.reject(reject);
}

/// A 128-bit fingerprint of an iupd: the duplicate check of a million-row file keeps these
/// instead of the strings (a third of the memory); two different iupds share one with a
/// probability of about 10⁻²⁷ in such a file.
fn fingerprint(iupd: &[u8]) -> u128 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        iupd.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
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
        code: "NOT_JSON",
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
            poison: None,
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
                // A transfer given without its amount would leave its money to transfer 1.
                if let Some(f) = TRANSFER_COLUMNS.iter().find(|f| t(f).is_some()) {
                    return Err((
                        *line,
                        format!("t{k}_amount"),
                        format!("transfer {k} has a t{k}_{f} but no t{k}_amount"),
                    ));
                }
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
        Some(body) => (
            group.rows[0].1.get("iupd").cloned().unwrap_or_default(),
            body.clone(),
        ),
        None => body_of(group)?,
    };
    let iupd: Iupd = iupd_text.parse().map_err(|e: mpay_common::ids::IdError| {
        Refusal::Row(first_line, "iupd".into(), "INVALID_FIELD", e.to_string())
    })?;
    let api_error = |e: ApiError| refusal(first_line, e);
    match action.as_str() {
        "create" | "update" => {
            let body: PositionIn = serde_path_to_error::deserialize(body).map_err(|e| {
                let field = e.path().to_string();
                Refusal::Row(first_line, field, "INVALID_FIELD", e.inner().to_string())
            })?;
            let exists = app
                .store
                .by_iupd(&entity.fiscal_code, &iupd)
                .map_err(|e| api_error(e.into()))?
                .is_some();
            if action == "update" && !exists {
                let reason = format!("no position {iupd} to update (use create to load it)");
                return Err(Refusal::Row(first_line, "iupd".into(), "NOT_FOUND", reason));
            }
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
                    let reason = format!("no position {iupd}");
                    Refusal::Row(first_line, "iupd".into(), "NOT_FOUND", reason)
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
            "UNKNOWN_ACTION",
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
            .map_err(|e| whole("", "UNREADABLE_FILE", format!("cannot read the file: {e}")))
            .and_then(|bytes| read_json(&bytes))
        {
            Ok(groups) => {
                lock(job).record.rows_total = groups.len() as u64;
                load_groups(app, entity, actor, groups, job)
            }
            Err(reject) => {
                refuse_file(job, reject);
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
fn refusal(line: u64, e: ApiError) -> Refusal {
    if e.status == StatusCode::SERVICE_UNAVAILABLE {
        Refusal::Interrupted(e.error)
    } else {
        Refusal::Row(line, e.field.unwrap_or_default(), e.code, e.error)
    }
}

/// A batch of positions, prepared off the store's writer lock.
struct Prepared {
    groups: Vec<Group>,
    steps: Vec<Step>,
    /// The end of the notice numbers the new positions took.
    numbers_end: u64,
    /// Rows the reader refused on their own, counted with this batch.
    refused: Vec<Reject>,
    /// With this batch, every row of the file up to this one is accounted for (0: not a CSV
    /// read in order).
    upto: u64,
}

/// Prepares a batch: new positions are validated, given notice numbers (one reservation for the
/// batch), folded and encoded, so that committing them is only writing. A CSV load prepares the
/// next batch on one core while the store commits this one on the other.
fn prepare(app: &App, entity: &EntityConfig, actor: &Actor, groups: Vec<Group>) -> Prepared {
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
        let event = |data| Event::new(jiff::Timestamp::now(), actor.clone(), Change::Loaded(data));
        steps[k] = match data.and_then(|d| {
            Store::prepare_load(&entity.fiscal_code, &event(d))
                .map_err(|e| ApiError::write(e, None))
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
fn commit(
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
        match app
            .store
            .load_prepared(&entity.fiscal_code, numbers_end, loads)
        {
            Ok(results) => {
                for (k, r) in loading.into_iter().zip(results) {
                    outcomes[k] = Some(match r {
                        Ok(_) => Ok(Done::Loaded(Upserted::Created)),
                        // Loaded meanwhile through the API or another file: a replacement now.
                        Err(WriteError::Exists(_)) => load_group(app, entity, actor, &groups[k]),
                        Err(e) => Err(refusal(line(k), ApiError::write(e, None))),
                    });
                }
            }
            Err(e) => {
                let e = ApiError::from(e);
                for k in loading {
                    outcomes[k] = Some(Err(Refusal::Interrupted(e.error.clone())));
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
    true
}

/// Positions per batch of new positions.
const BATCH: usize = 500;

/// The body of a group that creates a position the entity does not have yet; `None` for
/// everything else (replacements, cancellations, rows in error), which `load_group` handles.
fn new_position(app: &App, entity: &EntityConfig, group: &Group) -> Option<(Iupd, PositionIn)> {
    let row = &group.rows[0].1;
    let action = row.get("action").map(|a| a.to_ascii_lowercase());
    if !matches!(action.as_deref(), None | Some("create")) || row.contains_key("duplicate") {
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
            r.status = "interrupted".into();
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

fn job_answer(status: StatusCode, job: &BulkJob) -> Response {
    let mut value = serde_json::to_value(job).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        // Bookkeeping for resuming, not for the authority.
        fields.remove("resume_after");
        fields.remove("report_bytes");
    }
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

fn inbox_of(app: &App, entity: &str) -> PathBuf {
    app.config.data_dir.join("inbox").join(entity)
}

/// Where a job's reject report is: being written in the inbox while the job runs, in `done/`
/// once it has finished.
fn report_path(app: &App, job: &BulkJob) -> PathBuf {
    let dir = inbox_of(app, &job.entity);
    match job.status.as_str() {
        "done" => {
            let name = job.archived.as_deref().unwrap_or(&job.file);
            dir.join("done").join(format!("{name}.rejects.csv"))
        }
        _ => dir.join(format!(".{}.rejects.part", job.file)),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The name a loaded file takes in `done/`: its own, unless an earlier file of that name is
/// there (then with the job's id), so that no file or report is ever overwritten.
fn archived_name(path: &Path, job: &BulkJob) -> String {
    let done = path.with_file_name("done");
    if done.join(&job.file).exists() {
        format!("{}.job{}", job.file, job.id)
    } else {
        job.file.clone()
    }
}

/// Moves a loaded file to `done/` as `name`, with its reject report if any.
fn archive(path: &Path, report: &Path, name: &str) -> std::io::Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let done = dir.join("done");
    std::fs::create_dir_all(&done)?;
    if report.exists() {
        std::fs::rename(report, done.join(format!("{name}.rejects.csv")))?;
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

fn release(api: &Api, path: &Path) {
    api.jobs
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(path);
}

/// Starts the job for a file of an entity's inbox that the caller has claimed: a new job, or the
/// one a crash interrupted. Blocking: its record is made durable first.
fn start_file(
    api: &Arc<Api>,
    entity: EntityConfig,
    path: PathBuf,
    actor: Actor,
) -> Result<BulkJob, ApiError> {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let record = match api.app.store.start_job(entity.fiscal_code.as_str(), &file) {
        Ok(record) => record,
        Err(e) => {
            release(api, &path);
            return Err(e.into());
        }
    };
    let report = report_path(&api.app, &record);
    // A resumed job keeps its report up to where it carries on; anything else starts afresh.
    let kept = record.resume_after > 0
        && (record.report_bytes == 0
            || std::fs::OpenOptions::new()
                .write(true)
                .open(&report)
                .and_then(|f| f.set_len(record.report_bytes))
                .is_ok());
    let record = if kept || record.resume_after == 0 {
        record
    } else {
        tracing::warn!(
            job = record.id,
            "reject report lost: the file is loaded again from its first row"
        );
        BulkJob {
            id: record.id,
            entity: record.entity,
            status: record.status,
            file: record.file,
            started: record.started,
            ..BulkJob::default()
        }
    };
    if !kept || record.report_bytes == 0 {
        let _ = std::fs::remove_file(&report);
    }
    let job = Arc::new(Mutex::new(Job {
        record: record.clone(),
        report: RejectReport {
            path: report.clone(),
            writer: None,
        },
    }));
    api.jobs
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(record.id, Arc::clone(&job));
    let api = Arc::clone(api);
    tokio::task::spawn_blocking(move || {
        let id = record.id;
        if run(&api.app, &entity, &actor, &path, &job) && !finish(&api, &path, &report, &job) {
            // The file could not leave the inbox: it stays claimed, or it would be loaded
            // again every few seconds; the next start loads it again (all unchanged).
            return;
        }
        // An interrupted job stays here to answer with its state until the daemon stops.
        if lock(&job).record.status == "done" {
            api.jobs
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
        release(&api, &path);
    });
    Ok(record)
}

/// A job that has read its whole file: its record says done (durably), then the file and its
/// report leave the inbox. Until the file has left, the job still answers "running". False if
/// the file could not be moved.
fn finish(api: &Api, path: &Path, report: &Path, job: &Mutex<Job>) -> bool {
    let mut record = {
        let mut j = lock(job);
        if let Err(e) = j.report.flush(true) {
            tracing::error!(job = j.record.id, "cannot write the reject report: {e}");
        }
        j.report.writer = None;
        j.record.clone()
    };
    record.status = "done".into();
    record.finished = Some(jiff::Timestamp::now());
    let name = archived_name(path, &record);
    record.archived = Some(name.clone());
    if let Err(e) = api.app.store.save_job(&record, true) {
        // The file stays in the inbox: it is loaded again at the next start.
        tracing::error!(job = record.id, "cannot record the end of a bulk job: {e}");
        lock(job).record.status = "interrupted".into();
        return true;
    }
    let moved = archive(path, report, &name);
    if let Err(e) = &moved {
        tracing::error!(file = %path.display(), "cannot move a loaded file to done/: {e}");
    }
    lock(job).record = record;
    moved.is_ok()
}

/// Jobs recorded as running whose file is no longer in the inbox (removed while the daemon was
/// down) will never finish: they are recorded as abandoned.
fn abandon_orphans(api: &Api) {
    let orphans = match api.app.store.running_jobs() {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::warn!("cannot list the bulk jobs: {e}");
            return;
        }
    };
    for mut job in orphans {
        let live = api
            .jobs
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&job.id);
        if live || inbox_of(&api.app, &job.entity).join(&job.file).exists() {
            continue;
        }
        tracing::warn!(job = job.id, file = %job.file, "bulk job abandoned: its file left the inbox");
        job.status = "abandoned".into();
        job.finished = Some(jiff::Timestamp::now());
        if let Err(e) = api.app.store.save_job(&job, true) {
            tracing::warn!(job = job.id, "cannot record an abandoned bulk job: {e}");
        }
    }
}

/// Loads what the inboxes hold now and every few seconds from now on, with `Actor::System`.
pub fn watch(api: Arc<Api>) {
    tokio::spawn(async move {
        let first = Arc::clone(&api);
        let _ = tokio::task::spawn_blocking(move || abandon_orphans(&first)).await;
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
                        let (api, entity) = (Arc::clone(&api), entity.clone());
                        tokio::task::spawn_blocking(move || {
                            if let Err(e) = start_file(&api, entity, path, Actor::System) {
                                tracing::warn!("cannot start a bulk job: {}", e.error);
                            }
                        });
                    }
                }
            }
        }
    });
}

/// `POST /entities/{cf}/bulk`: the file is written durably into the entity's inbox, then loaded
/// as a job; 202 with its id.
pub async fn upload(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let reason = "file larger than the upload limit (api.max_bulk_bytes): drop it in \
                          the entity's inbox folder instead";
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, reason, None).into_response();
        }
        Err(r) => return ApiError::new(r.status(), r.body_text(), None).into_response(),
    };
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
    let started = super::blocking({
        let api = Arc::clone(&api);
        let actor = auth.actor.clone();
        move || {
            let io = |e: std::io::Error| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot store the file: {e}"),
                    None,
                )
            };
            let written = (|| {
                std::fs::create_dir_all(&dir)?;
                let mut file = File::create(&partial)?;
                file.write_all(&body)?;
                file.sync_all()?;
                std::fs::rename(&partial, &path)?;
                sync_dir(&dir)
            })();
            if let Err(e) = written {
                release(&api, &path);
                return Err(io(e));
            }
            start_file(&api, entity, path, actor)
        }
    })
    .await;
    match started {
        Ok(job) => job_answer(StatusCode::ACCEPTED, &job),
        Err(e) => e.into_response(),
    }
}

/// A job as it stands, and the running job if it runs in this daemon.
type Found = (BulkJob, Option<Arc<Mutex<Job>>>);

/// The job named in the path: from the running jobs, else from the store.
fn find(api: &Api, auth: &Authorized) -> Result<Found, ApiError> {
    let id: u64 = auth
        .param("job")
        .parse()
        .map_err(|_| ApiError::not_found("no such job"))?;
    let entity = auth.entity(&api.app).fiscal_code.as_str();
    let missing = || ApiError::not_found(format!("no job {id} for this entity"));
    if let Some(job) = api.jobs.running(entity, id) {
        let record = lock(&job).record.clone();
        return Ok((record, Some(job)));
    }
    let record = api.app.store.job(id)?.filter(|j| j.entity == entity);
    Ok((record.ok_or_else(missing)?, None))
}

/// `GET /entities/{cf}/bulk/{job}`: progress and counters.
pub async fn status(State(api): State<Arc<Api>>, auth: Authorized) -> Response {
    match super::blocking(move || find(&api, &auth)).await {
        Ok((job, _)) => job_answer(StatusCode::OK, &job),
        Err(e) => e.into_response(),
    }
}

/// `GET /entities/{cf}/bulk/{job}/rejects`: the reject report, CSV (`;`), a header then one line
/// per refused row, as far as the job has got.
pub async fn rejects(State(api): State<Arc<Api>>, auth: Authorized) -> Response {
    let read = super::blocking(move || {
        let (record, running) = find(&api, &auth)?;
        if let Some(job) = running {
            lock(&job).report.flush(false).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)
            })?;
        }
        match std::fs::read(report_path(&api.app, &record)) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut w = report_writer(Vec::new());
                w.write_record(REPORT_HEADER)
                    .and_then(|()| w.flush().map_err(csv::Error::from))
                    .map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)
                    })?;
                Ok(w.into_inner().unwrap_or_default())
            }
            Err(e) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the reject report: {e}"),
                None,
            )),
        }
    })
    .await;
    match read {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response(),
        Err(e) => e.into_response(),
    }
}

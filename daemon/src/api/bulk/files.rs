//! Reading bulk files into positions: the CSV layout v1 (see `bulk`) read as a stream,
//! with a first pass that counts rows and finds positions whose rows are not consecutive, and
//! JSON arrays read whole. Each position becomes the body the API's PUT takes.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Mutex;

use mpay_common::ledger::Actor;
use mpay_common::money::Cents;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::lines::{LineTooLong, Lines};
use super::load::{BATCH, Prepared, commit, load_groups, prepare};
use super::{Job, Reject, lock};
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

/// One data row: its line number, its non-empty values by column, and the line as written.
pub(super) type Row = (u64, HashMap<String, String>, String);

/// A position's rows; for a JSON file, one row and the position's body as the PUT takes it.
pub(super) struct Group {
    pub(super) rows: Vec<Row>,
    /// A JSON file's element as written; parsed when its batch loads, so that a file costs
    /// about twice its size in memory rather than a hundred times.
    pub(super) json: Option<Box<RawValue>>,
    /// A row that cannot be read (line, code, reason): the whole position is refused.
    pub(super) poison: Option<(u64, &'static str, String)>,
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
    csv::Reader<std::io::Chain<std::io::Cursor<Vec<u8>>, BufReader<Lines<BufReader<File>>>>>,
    Vec<String>,
    u8,
);

/// Why the file could not be read: a line past the bound, or the disk's reason.
fn unreadable(e: &std::io::Error) -> Reject {
    match LineTooLong::of(e) {
        Some(long) => whole("", "LINE_TOO_LONG", long.to_string()),
        None => whole("", "UNREADABLE_FILE", format!("cannot read the file: {e}")),
    }
}

/// A CSV error after which nothing more can be read: the file is refused whole.
fn unreadable_csv(e: &csv::Error) -> Option<Reject> {
    match e.kind() {
        csv::ErrorKind::Io(e) => Some(unreadable(e)),
        _ => None,
    }
}

/// Opens a CSV file of layout v1 and checks its header: a file with an unreadable header, or
/// unknown or missing columns, is refused whole.
fn open_csv(path: &Path) -> Result<OpenCsv, Reject> {
    let file = super::open_inbox_file(path).map_err(|e| unreadable(&e))?;
    let mut input = BufReader::new(Lines::new(BufReader::new(file)));
    let mut header = Vec::new();
    input
        .read_until(b'\n', &mut header)
        .map_err(|e| unreadable(&e))?;
    let mut header = header
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&header)
        .to_vec();
    // An optional first line names the layout: `# layout v1`. It is read as an empty line, so
    // that the line numbers of the report stay the file's.
    let mut lead = Vec::new();
    if header.starts_with(b"#") {
        let named = String::from_utf8_lossy(&header).to_ascii_lowercase();
        let version = named
            .trim_start_matches('#')
            .trim()
            .strip_prefix("layout")
            .map(|v| v.trim_start_matches([':', '=', ' ']).trim().to_string());
        if version.as_deref() != Some("v1") {
            return Err(whole(
                "",
                "UNKNOWN_LAYOUT",
                format!(
                    "line 1 names layout {:?}: this mpayd reads layout v1 (`# layout v1`, or no such line)",
                    named.trim()
                ),
            ));
        }
        lead.push(b'\n');
        header.clear();
        input
            .read_until(b'\n', &mut header)
            .map_err(|e| unreadable(&e))?;
    }
    if header.iter().all(u8::is_ascii_whitespace) {
        return Err(whole(
            "",
            "EMPTY_FILE",
            "the file has no header line: it is empty".into(),
        ));
    }
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
        .from_reader(std::io::Cursor::new([lead, header].concat()).chain(input));
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
        let record = match record {
            Ok(record) => record,
            Err(e) => match unreadable_csv(&e) {
                Some(reject) => return Err(reject),
                None => continue,
            },
        };
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
                    // The survey read this file whole: only a failing disk stops here.
                    if unreadable_csv(&e).is_some() {
                        break;
                    }
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

pub(super) fn is_json(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'[' | b'{')
    )
}

/// A JSON file: an array of positions, each the PUT's body plus `iupd` and an optional
/// `action`. An element's "row" is its number in the array, from 1. The elements are handed to
/// `each` one at a time as they are read, kept as text until their batch loads, so that a file
/// costs little more than its size whatever its elements; `each` returns false to stop. A
/// first pass counts the elements and checks the whole file is JSON before anything loads.
fn read_json(
    bytes: &[u8],
    mut each: impl FnMut(Group) -> bool,
    total: impl FnOnce(u64),
) -> Result<(), Reject> {
    use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};

    /// The keys of an element that are not the PUT's body.
    #[derive(serde::Deserialize)]
    struct Keys {
        iupd: Option<Value>,
        action: Option<Value>,
    }
    /// Visits the array's elements: with `each`, as groups; without, only to count them.
    struct Elements<'f>(Option<&'f mut dyn FnMut(u64, Box<RawValue>) -> bool>);
    impl<'de> Visitor<'de> for Elements<'_> {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of positions")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<u64, A::Error> {
            let mut row = 0;
            match self.0.as_mut() {
                None => {
                    while seq.next_element::<IgnoredAny>()?.is_some() {
                        row += 1;
                    }
                }
                Some(each) => {
                    while let Some(item) = seq.next_element::<Box<RawValue>>()? {
                        row += 1;
                        if !each(row, item) {
                            break;
                        }
                    }
                }
            }
            Ok(row)
        }
    }

    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let not_json = |reason: String| Reject {
        row: 0,
        field: String::new(),
        code: "NOT_JSON",
        reason,
        original: String::new(),
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Err(not_json(
            "the file is one JSON object: a JSON bulk file is an array of positions, \
             [{\"iupd\": …}, …]"
                .into(),
        ));
    }
    let walk = |elements: Elements| {
        let mut reader = serde_json::Deserializer::from_slice(bytes);
        let n = reader.deserialize_seq(elements)?;
        reader.end().map(|()| n)
    };
    total(
        walk(Elements(None))
            .map_err(|e| not_json(format!("not a JSON array of positions: {e}")))?,
    );
    let mut seen = HashSet::new();
    let mut group = |row: u64, item: Box<RawValue>| {
        let original: String = item.get().chars().take(500).collect();
        let mut values = HashMap::new();
        if let Ok(keys) = serde_json::from_str::<Keys>(item.get()) {
            for (key, value) in [("iupd", keys.iupd), ("action", keys.action)] {
                if let Some(Value::String(v)) = value {
                    values.insert(key.to_string(), v);
                }
            }
        }
        if let Some(iupd) = values.get("iupd").filter(|i| !i.is_empty())
            && !seen.insert(fingerprint(iupd.as_bytes()))
        {
            values.insert("duplicate".into(), iupd.clone());
        }
        each(Group {
            rows: vec![(row, values, original)],
            json: Some(item),
            poison: None,
        })
    };
    walk(Elements(Some(&mut group)))
        .map(drop)
        .map_err(|e| not_json(format!("not a JSON array of positions: {e}")))
}

/// A JSON element's body as the PUT endpoint takes it: the element without `iupd` and `action`.
pub(super) fn json_body(item: &RawValue) -> Value {
    let mut body: Value = serde_json::from_str(item.get()).unwrap_or(Value::Null);
    if let Some(object) = body.as_object_mut() {
        object.remove("iupd");
        object.remove("action");
    }
    body
}

/// One position's JSON body, as the PUT endpoint takes it, from its rows.
pub(super) fn body_of(group: &Group) -> Result<(String, Value), (u64, String, String)> {
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

/// Loads a file (blocking: called on the blocking pool). False if the store stopped it
/// half-way; the caller marks the job done. A JSON file is read into memory (it is bounded by
/// `api.max_bulk_bytes`) and loaded an element at a time; a CSV file is read as a stream.
pub(super) fn run(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    path: &Path,
    job: &Mutex<Job>,
) -> bool {
    let mut start = [0u8; 64];
    let head = super::open_inbox_file(path).and_then(|mut f| f.read(&mut start));
    if head.is_ok_and(|n| is_json(&start[..n])) {
        let bytes = match super::read_inbox_file(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                refuse_file(job, unreadable(&e));
                return true;
            }
        };
        let mut batch = Vec::with_capacity(BATCH);
        let mut going = true;
        let read = read_json(
            &bytes,
            |group| {
                batch.push(group);
                if batch.len() == BATCH {
                    going = load_groups(app, entity, actor, std::mem::take(&mut batch), job);
                }
                going
            },
            |rows| lock(job).record.rows_total = rows,
        );
        return match read {
            Ok(()) => going && load_groups(app, entity, actor, batch, job),
            Err(reject) => {
                refuse_file(job, reject);
                true
            }
        };
    }
    run_csv(app, entity, actor, path, job)
}

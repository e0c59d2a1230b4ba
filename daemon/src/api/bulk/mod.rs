//! Bulk loads: a CSV file of positions, one row per instalment (or a JSON array of positions,
//! each the PUT's body plus `iupd` and an optional `action`), processed in the background as a
//! job with progress and a reject report. Every position goes through `positions::upsert`, the
//! API's own load path, so loading the same file twice changes nothing the second time and a bad
//! row never stops the others.
//!
//! `files` reads the files (CSV layout v1, JSON) into positions, `load` loads them through the
//! API's rules, and this module runs the jobs: the inbox, the job records, the endpoints.
//!
//! Layout v1 (an optional first line `# layout v1`, then a header row, required; `;` or `,`
//! separated, UTF-8 with or without BOM; column names are case-insensitive, unknown columns are
//! refused; a file naming another layout is refused whole):
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

mod files;
mod lines;
mod load;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mpay_common::ledger::Actor;
use serde::Serialize;
use serde_json::json;

use super::{Api, ApiError, Authorized};
use crate::App;
use crate::config::EntityConfig;
use crate::store::fsync::{self, sync_dir};
use crate::store::{BulkJob, JobStatus, SearchRun};

/// One refused row, as the reject report lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Reject {
    /// Line number in the file (the header is line 1; 0 for the file as a whole).
    pub row: u64,
    pub field: String,
    /// The API's error code, or one of the file's own (`UNREADABLE_FILE`, `EMPTY_FILE`,
    /// `LINE_TOO_LONG`, `NOT_UTF8`, `NOT_CSV`, `NOT_JSON`, `UNKNOWN_LAYOUT`, `UNKNOWN_COLUMN`, `MISSING_COLUMN`, `DUPLICATE_IUPD`,
    /// `UNKNOWN_ACTION`).
    pub code: &'static str,
    pub reason: String,
    pub original: String,
}

/// A running job: its record, its reject report as it is written, and the search index
/// entries of the positions it created, written as sorted runs (`store::SearchRun`).
pub struct Job {
    pub record: BulkJob,
    report: RejectReport,
    search: SearchRun,
}

/// Runs `f` on the job's search run outside the job's lock: the store's writes take a while,
/// and readers of the job's progress must not wait for them.
fn with_search_run<T>(job: &Mutex<Job>, f: impl FnOnce(&mut SearchRun) -> T) -> T {
    let mut run = std::mem::replace(&mut lock(job).search, SearchRun::new(0));
    let out = f(&mut run);
    lock(job).search = run;
    out
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
        writer.write_record([
            &r.row.to_string(),
            cell(&r.field).as_ref(),
            r.code,
            cell(&r.reason).as_ref(),
            cell(&r.original).as_ref(),
        ])?;
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

/// A report cell as a spreadsheet will take it: text from the authority's file that starts like
/// a formula (`=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`, so that an office
/// opening the report sees the text and runs nothing.
pub(crate) fn cell(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

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

fn job_answer(status: StatusCode, job: &BulkJob) -> Response {
    (status, axum::Json(job_value(job))).into_response()
}

/// A job as the API shows it.
fn job_value(job: &BulkJob) -> serde_json::Value {
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
    value
}

/// An entity's inbox: CSV files dropped (or uploaded) there are loaded, then moved to `done/`
/// with their reject report beside them. A file stays in the inbox until its load has finished,
/// so after a crash it is loaded again at the next start: the rows already loaded are unchanged.
pub fn inbox(app: &App, entity: &EntityConfig) -> PathBuf {
    inbox_of(app, entity.fiscal_code.as_str())
}

fn inbox_of(app: &App, entity: &str) -> PathBuf {
    app.config.data_dir.join("inbox").join(entity)
}

/// `stem` then `suffix`, as a file name no longer than the file system allows (255 bytes): a
/// stem too long for its suffix is cut and followed by a digest of the whole, so that two long
/// names never share a derived one and the same name always derives the same.
fn fitted(stem: &str, suffix: &str) -> String {
    const NAME_MAX: usize = 255;
    if stem.len() + suffix.len() <= NAME_MAX {
        return format!("{stem}{suffix}");
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(stem.as_bytes());
    let tag = crate::config::hex(&digest[..8]);
    let mut keep = NAME_MAX - suffix.len() - tag.len() - 1;
    while !stem.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}~{tag}{suffix}", &stem[..keep])
}

/// Where a job's reject report is: being written in the inbox while the job runs, in `done/`
/// once it has finished.
fn report_path(app: &App, job: &BulkJob) -> PathBuf {
    let dir = inbox_of(app, &job.entity);
    match job.status {
        JobStatus::Done => {
            let name = job.archived.as_deref().unwrap_or(&job.file);
            dir.join("done").join(fitted(name, ".rejects.csv"))
        }
        _ => dir.join(fitted(&format!(".{}", job.file), ".rejects.part")),
    }
}

/// The name a loaded file takes in `done/`: its own, unless an earlier file of that name is
/// there (then with the job's id), so that no file or report is ever overwritten.
fn archived_name(path: &Path, job: &BulkJob) -> String {
    let done = path.with_file_name("done");
    if done.join(&job.file).exists() {
        fitted(&job.file, &format!(".job{}", job.id))
    } else {
        job.file.clone()
    }
}

/// Moves a loaded file to `done/` as `name`, with its reject report if any.
fn archive(path: &Path, report: &Path, name: &str) -> std::io::Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let done = done_dir(dir)?;
    if report.exists() {
        std::fs::rename(report, done.join(fitted(name, ".rejects.csv")))?;
    }
    std::fs::rename(path, done.join(name))?;
    sync_dir(&done)?;
    sync_dir(dir)
}

/// A regular file (never a link) of the inbox, not hidden, with this extension (any case).
fn is_inbox_file(path: &Path, name: &str, extension: &str) -> bool {
    !name.starts_with('.')
        && name.to_ascii_lowercase().ends_with(extension)
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// Opens an inbox file without following a link: a link planted in an inbox (to another
/// entity's file, to the configuration) is never read.
pub(crate) fn open_inbox_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The whole of an inbox file, read without following a link.
pub(crate) fn read_inbox_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut open_inbox_file(path)?, &mut bytes)?;
    Ok(bytes)
}

/// The inbox's `done/` folder, created if missing; refused if it is anything but a real
/// directory (a link there would move this entity's files into another's folder).
fn done_dir(inbox: &Path) -> std::io::Result<PathBuf> {
    let done = inbox.join("done");
    match std::fs::symlink_metadata(&done) {
        Ok(m) if m.file_type().is_dir() => Ok(done),
        Ok(_) => Err(std::io::Error::other(format!(
            "{} is not a directory (a link?): files stay in the inbox until it is one",
            done.display()
        ))),
        Err(_) => {
            fsync::create_dir_all(&done)?;
            Ok(done)
        }
    }
}

/// The giornale di cassa's name in an inbox, beside the positions' CSV files.
const TREASURY_CSV: &str = ".cassa.csv";

/// Takes a reconciliation document from an entity's inbox: a reporting flow or a camt.053
/// statement (XML), or a giornale di cassa (`*.cassa.csv`), through the same services as the
/// API. The file then moves to `done/` with `NAME.result.json`, which says what it did (or why
/// it was refused).
fn take_document(api: &Arc<Api>, entity: &EntityConfig, path: &Path) -> std::io::Result<()> {
    let app = &api.app;
    let limit = app.config.api.max_bulk_bytes as u64;
    let size = std::fs::symlink_metadata(path)?.len();
    let result = if size > limit {
        serde_json::json!({ "error": format!("{size} bytes: more than api.max_bulk_bytes") })
    } else {
        let raw = read_inbox_file(path)?;
        let head = String::from_utf8_lossy(&raw[..raw.len().min(4096)]).into_owned();
        if head.contains("FlussoRiversamento") {
            match crate::service::flows::receive(app, entity, &Actor::System, &raw, None) {
                Ok(crate::service::flows::Received::New(v)) => {
                    serde_json::json!({ "flow": v.flow_id, "time": v.time, "new": true,
                                        "anomalies": v.anomalies })
                }
                Ok(crate::service::flows::Received::Held(v)) => {
                    serde_json::json!({ "flow": v.flow_id, "time": v.time, "new": false })
                }
                Err(e) => serde_json::json!({ "error": e.message, "field": e.field }),
            }
        } else if head.contains("camt.053")
            || path
                .to_string_lossy()
                .to_ascii_lowercase()
                .ends_with(TREASURY_CSV)
        {
            match crate::service::treasury::receive(app, entity, &Actor::System, &raw) {
                Ok(v) => serde_json::to_value(&v).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e.message, "field": e.field }),
            }
        } else {
            serde_json::json!({ "error": "neither a reporting flow (FlussoRiversamento) nor a \
                                          camt.053 statement nor a giornale di cassa \
                                          (NAME.cassa.csv)" })
        }
    };
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let done = done_dir(dir)?;
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name = file.clone();
    let mut n = 1;
    while done.join(&name).exists() {
        n += 1;
        name = fitted(&file, &format!(".{n}"));
    }
    let report = done.join(fitted(&name, ".result.json"));
    std::fs::write(
        &report,
        serde_json::to_vec_pretty(&result).unwrap_or_default(),
    )?;
    std::fs::File::open(&report)?.sync_all()?;
    std::fs::rename(path, done.join(&name))?;
    sync_dir(&done)?;
    sync_dir(dir)?;
    tracing::info!(entity = %entity.fiscal_code, file = %name, "inbox XML taken: {result}");
    Ok(())
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
        search: SearchRun::new(record.id),
    }));
    api.jobs
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(record.id, Arc::clone(&job));
    tracing::info!(
        job = record.id,
        entity = %record.entity,
        file = %record.file,
        resumed_after = record.resume_after,
        "bulk job started"
    );
    let api = Arc::clone(api);
    tokio::task::spawn_blocking(move || {
        let id = record.id;
        // What an earlier run of this job created and a crash left out of the search indexes
        // goes in first: the entries of this run go in at its end.
        let loaded = match api.app.store.rebuild_pending(id) {
            Ok(_) => files::run(&api.app, &entity, &actor, &path, &job),
            Err(e) => {
                tracing::warn!(job = id, "bulk job interrupted: {e}");
                lock(&job).record.status = JobStatus::Interrupted;
                false
            }
        };
        log_end(&lock(&job).record, loaded);
        if loaded && !finish(&api, &path, &report, &job) {
            // The file could not leave the inbox: it stays claimed, or it would be loaded
            // again every few seconds; the next start loads it again (all unchanged).
            return;
        }
        // An interrupted job stays here to answer with its state until the daemon stops.
        if lock(&job).record.status == JobStatus::Done {
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
    // The job is done only once its positions can be found by debtor and name.
    if let Err(e) = with_search_run(job, |run| api.app.store.write_search_run(run)) {
        let mut j = lock(job);
        tracing::error!(
            job = j.record.id,
            "cannot write the search index entries: {e}"
        );
        j.record.status = JobStatus::Interrupted;
        return true;
    }
    let mut record = {
        let mut j = lock(job);
        if let Err(e) = j.report.flush(true) {
            tracing::error!(job = j.record.id, "cannot write the reject report: {e}");
        }
        j.report.writer = None;
        j.record.clone()
    };
    record.status = JobStatus::Done;
    record.finished = Some(api.app.clock.now());
    let name = archived_name(path, &record);
    record.archived = Some(name.clone());
    if let Err(e) = api.app.store.save_job(&record, true) {
        // The file stays in the inbox: it is loaded again at the next start.
        tracing::error!(job = record.id, "cannot record the end of a bulk job: {e}");
        lock(job).record.status = JobStatus::Interrupted;
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
/// Bytes of the files in `dir` and below (links not followed).
fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
        .map(|(path, kind)| {
            if kind.is_dir() {
                folder_bytes(&path)
            } else if kind.is_file() {
                std::fs::symlink_metadata(&path).map_or(0, |m| m.len())
            } else {
                0
            }
        })
        .sum()
}

/// Removes what uploads cut short by a crash left in the inboxes (`.upload-*.part`): no job
/// knows them, and nobody else writes that name.
fn remove_cut_uploads(api: &Api) {
    for entity in &api.app.config.entities {
        let dir = inbox(&api.app, entity);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `.upload-STAMP.part`; not `.upload-STAMP.csv.rejects.part`, the report of an
            // upload that a crash interrupted, which its job carries on with.
            let cut = name.starts_with(".upload-")
                && name.ends_with(".part")
                && !name.ends_with(".rejects.part");
            if cut {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => tracing::info!(file = %entry.path().display(), "cut upload removed"),
                    Err(e) => {
                        tracing::warn!(file = %entry.path().display(), "cannot remove a cut upload: {e}")
                    }
                }
            }
        }
    }
}

fn abandon_orphans(api: &Api) {
    remove_cut_uploads(api);
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
        job.status = JobStatus::Abandoned;
        job.finished = Some(api.app.clock.now());
        if let Err(e) = api.app.store.save_job(&job, true) {
            tracing::warn!(job = job.id, "cannot record an abandoned bulk job: {e}");
        }
    }
    rebuild_left_searches(api);
}

/// The search index entries that a crash left unwritten, at start, before any inbox file is
/// loaded (a job that carries on would make its own first; one whose entity left the
/// configuration never would).
fn rebuild_left_searches(api: &Api) {
    let store = &api.app.store;
    let jobs = match store.pending_search_jobs() {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::warn!("cannot list the unwritten search index entries: {e}");
            return;
        }
    };
    for id in jobs {
        // An upload's job started meanwhile makes its own record and writes its own runs.
        let live = api
            .jobs
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id);
        if live {
            continue;
        }
        match store.rebuild_pending(id) {
            Ok(read) => tracing::info!(
                job = id,
                positions = read,
                "search index entries made again"
            ),
            Err(e) => tracing::warn!(job = id, "cannot make the search index entries again: {e}"),
        }
    }
}

/// Loads what the inboxes hold now and every few seconds from now on, with `Actor::System`,
/// until `stop` says true. Jobs already started finish on their own threads.
pub fn watch(
    api: Arc<Api>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let first = Arc::clone(&api);
        let _ = tokio::task::spawn_blocking(move || abandon_orphans(&first)).await;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            for entity in &api.app.config.entities {
                let dir = inbox(&api.app, entity);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.filter_map(Result::ok) {
                    let path = entry.path();
                    let name = entry.file_name().to_string_lossy().into_owned();
                    // Reporting flows and treasury statements.
                    let document = is_inbox_file(&path, &name, ".xml")
                        || is_inbox_file(&path, &name, TREASURY_CSV);
                    if document && claim(&api, &path) {
                        let (api, entity) = (Arc::clone(&api), entity.clone());
                        tokio::task::spawn_blocking(move || {
                            if let Err(e) = take_document(&api, &entity, &path) {
                                tracing::warn!(file = %path.display(), "inbox document: {e}");
                            }
                            release(&api, &path);
                        });
                        continue;
                    }
                    let bulk =
                        is_inbox_file(&path, &name, ".csv") || is_inbox_file(&path, &name, ".json");
                    if bulk && claim(&api, &path) {
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
    })
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
    let limits = &api.app.config.api;
    let running = api
        .jobs
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|j| {
            let j = lock(j);
            j.record.entity == entity.fiscal_code.as_str() && j.record.status != JobStatus::Done
        })
        .count();
    if running >= limits.max_running_jobs {
        let reason = format!(
            "{running} uploads of this entity are loading (api.max_running_jobs): send this \
             one when one of them is done"
        );
        return ApiError::new(StatusCode::TOO_MANY_REQUESTS, reason, None).into_response();
    }
    let quota = limits.inbox_quota_mib << 20;
    let held = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || folder_bytes(&dir))
            .await
            .unwrap_or(0)
    };
    if held + body.len() as u64 > quota {
        let reason = format!(
            "the entity's inbox holds {} MiB and this file {} MiB, over its quota of {} MiB \
             (api.inbox_quota_mib): archive old files from its done/ folder",
            held >> 20,
            (body.len() as u64).div_ceil(1 << 20),
            quota >> 20
        );
        return ApiError::new(StatusCode::INSUFFICIENT_STORAGE, reason, None).into_response();
    }
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%S%.6fZ")
        .to_string();
    let extension = if files::is_json(&body) { "json" } else { "csv" };
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
                fsync::create_dir_all(&dir)?;
                let mut file = File::create(&partial)?;
                file.write_all(&body)?;
                file.sync_all()?;
                std::fs::rename(&partial, &path)?;
                sync_dir(&dir)
            })();
            if let Err(e) = written {
                // A full disk, most likely: what was written of the file goes.
                let _ = std::fs::remove_file(&partial);
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

/// The log line of a job's end: what it did, or why it stopped.
fn log_end(job: &BulkJob, loaded: bool) {
    let (id, entity, file) = (job.id, &job.entity, &job.file);
    if !loaded {
        tracing::warn!(job = id, %entity, %file, rows_done = job.rows_done, "bulk job stopped: the store is unavailable; it carries on at the next start");
    } else if let Some(error) = &job.file_error {
        tracing::warn!(job = id, %entity, %file, "bulk file refused: {error}");
    } else {
        tracing::info!(
            job = id,
            %entity,
            %file,
            rows = job.rows_total,
            created = job.created,
            replaced = job.replaced,
            unchanged = job.unchanged,
            cancelled = job.cancelled,
            rejected_rows = job.rejected_rows,
            "bulk job done"
        );
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

/// `GET /entities/{cf}/bulk?limit=&before=`: the entity's jobs, newest first, a page at a time.
pub async fn list(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    const MAX_LIMIT: usize = 500;
    let (mut limit, mut before) = (50, None);
    for (key, value) in &params {
        match key.as_str() {
            "limit" => match value.parse() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => {
                    let e = format!("an integer from 1 to {MAX_LIMIT}");
                    return ApiError::field("limit", e).into_response();
                }
            },
            "before" => match value.parse() {
                Ok(id) => before = Some(id),
                Err(_) => {
                    let e = "the `next` of the previous page";
                    return ApiError::field("before", e).into_response();
                }
            },
            other => {
                let e = "unknown parameter: use limit or before";
                return ApiError::field(other, e).into_response();
            }
        }
    }
    let page = super::blocking(move || {
        let entity = auth.entity(&api.app).fiscal_code.as_str();
        let mut jobs = api.app.store.jobs_of(entity, before, limit + 1)?;
        let next = (jobs.len() > limit).then(|| jobs[limit - 1].id);
        jobs.truncate(limit);
        let jobs: Vec<_> = jobs
            .into_iter()
            .map(|job| match api.jobs.running(entity, job.id) {
                // A running job's counters move ahead of its stored record.
                Some(running) => job_value(&lock(&running).record),
                None => job_value(&job),
            })
            .collect();
        Ok(json!({ "jobs": jobs, "next": next }))
    })
    .await;
    match page {
        Ok(page) => axum::Json(page).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /entities/{cf}/bulk/{job}`: progress and counters.
pub async fn status(State(api): State<Arc<Api>>, auth: Authorized) -> Response {
    match super::blocking(move || find(&api, &auth)).await {
        Ok((job, _)) => job_answer(StatusCode::OK, &job),
        Err(e) => e.into_response(),
    }
}

/// `GET /entities/{cf}/bulk/{job}/rejects`: the reject report, CSV (`;`), a header then one line
/// per refused row, as far as the job has got. Streamed from its file: a report of millions of
/// rows costs the daemon one buffer.
pub async fn rejects(State(api): State<Arc<Api>>, auth: Authorized) -> Response {
    let internal = |e: &dyn std::fmt::Display| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)
    };
    /// The report's file, or the header alone for a job that has refused nothing yet.
    enum Report {
        File(File),
        HeaderOnly(Vec<u8>),
    }
    let opened = super::blocking(move || {
        let (record, running) = find(&api, &auth)?;
        if let Some(job) = running {
            lock(&job).report.flush(false).map_err(|e| internal(&e))?;
        }
        match open_inbox_file(&report_path(&api.app, &record)) {
            Ok(file) => Ok(Report::File(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut w = report_writer(Vec::new());
                w.write_record(REPORT_HEADER)
                    .and_then(|()| w.flush().map_err(csv::Error::from))
                    .map_err(|e| internal(&e))?;
                Ok(Report::HeaderOnly(w.into_inner().unwrap_or_default()))
            }
            Err(e) => Err(internal(&format!("cannot read the reject report: {e}"))),
        }
    })
    .await;
    let body = match opened {
        Ok(Report::HeaderOnly(header)) => axum::body::Body::from(header),
        Ok(Report::File(file)) => {
            use tokio::io::AsyncReadExt;
            let chunks = futures::stream::try_unfold(
                tokio::fs::File::from_std(file),
                |mut file| async move {
                    let mut chunk = vec![0; 64 << 10];
                    let n = file.read(&mut chunk).await?;
                    chunk.truncate(n);
                    Ok::<_, std::io::Error>((n > 0).then(|| (Bytes::from(chunk), file)))
                },
            );
            axum::body::Body::from_stream(chunks)
        }
        Err(e) => return e.into_response(),
    };
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

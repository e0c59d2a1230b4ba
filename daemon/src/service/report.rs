//! Each entity's daily report (rendicontazione giornaliera): every transaction of one day
//! (Europe/Rome) on its positions — pagoPA receipts and offline payments per transfer,
//! reductions, cancellations, restores, reschedulings, flow rows and credits — with the
//! entity's own keys and, for payments, where reconciliation stands now. As JSON, and as the CSV
//! an Italian accounts office opens in a spreadsheet (UTF-8, `;`, decimal comma), whose last
//! lines carry the totals and say whether they add up.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use jiff::civil::Date;
use mpay_common::ids::EntityFiscalCode;
use mpay_common::ledger::{Change, PaidVia, Position};
use mpay_common::reconcile::{Tolerances, classify_transfer};
use serde::Serialize;

use super::ServiceError;
use crate::App;
use crate::store::{StoreError, StoredEvent, fsync};

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct ReportRow {
    pub at: Timestamp,
    /// `pagopa`, `offline`, `reduction`, `cancellation`, `restore`, `rescheduling`, `flow-row`,
    /// `credit`.
    pub kind: &'static str,
    pub iupd: String,
    pub position_kind: String,
    pub debtor: String,
    pub debtor_name: String,
    pub nav: Option<String>,
    pub iuv: Option<String>,
    pub instalment: Option<String>,
    pub transfer: Option<u8>,
    pub category: Option<String>,
    pub beneficiary: Option<String>,
    /// Cents; a reduction is negative.
    pub amount: i64,
    pub receipt_id: Option<String>,
    pub reference: Option<String>,
    pub psp: Option<String>,
    pub payment_date: Option<Date>,
    pub flow_id: Option<String>,
    pub credit_date: Option<Date>,
    /// For payments: where reconciliation of the transfer stands now.
    pub class: Option<&'static str>,
}

/// Count and sum of the rows of one kind.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Total {
    pub rows: usize,
    pub amount: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DailyReport {
    pub entity: EntityFiscalCode,
    pub entity_name: String,
    pub date: Date,
    pub generated_at: Timestamp,
    pub rows: Vec<ReportRow>,
    /// Per kind, and `all`.
    pub totals: BTreeMap<&'static str, Total>,
    /// The totals were recomputed from the rows and agree.
    pub totals_agree: bool,
}

fn row(at: Timestamp, kind: &'static str, p: &Position) -> ReportRow {
    ReportRow {
        at,
        kind,
        iupd: p.iupd.to_string(),
        position_kind: p.kind.clone(),
        debtor: p.debtor.code.to_string(),
        debtor_name: p.debtor.name.clone(),
        nav: None,
        iuv: None,
        instalment: None,
        transfer: None,
        category: None,
        beneficiary: None,
        amount: 0,
        receipt_id: None,
        reference: None,
        psp: None,
        payment_date: None,
        flow_id: None,
        credit_date: None,
        class: None,
    }
}

/// The report of `entity` for `date`.
pub fn daily(
    app: &App,
    entity: &EntityFiscalCode,
    date: Date,
) -> Result<DailyReport, ServiceError> {
    // Held in memory: the REST API's answer for one entity (the daily run streams,
    // `write_day`).
    let mut rows = Vec::new();
    walk_day(app, std::slice::from_ref(entity), date, |_, row| {
        rows.push(row)
    })?;
    Ok(report(app, entity, date, rows))
}

/// Every report row of `date` (Europe/Rome) for `entities`, in ledger order, each handed to
/// `each` with the index of its entity.
fn walk_day(
    app: &App,
    entities: &[EntityFiscalCode],
    date: Date,
    mut each: impl FnMut(usize, ReportRow),
) -> Result<(), ServiceError> {
    let tz = mpay_common::calendar::rome();
    let start = date
        .to_zoned_datetime(tz.clone())
        .map_err(|e| ServiceError::field("date", e.to_string()))?
        .timestamp();
    let end = date
        .tomorrow()
        .and_then(|d| d.to_zoned_datetime(tz))
        .map_err(|e| ServiceError::field("date", e.to_string()))?
        .timestamp();
    let today = app.clock.today();
    let tolerances = app.config.reconciliation.tolerances();
    let from = app.store.first_commit_from(start)?;
    let mut rows = Vec::new();
    app.store.entries_between(from, end, |_, p, stored| {
        if stored.event.at >= start
            && let Some(i) = entities.iter().position(|e| *e == p.entity)
        {
            rows_of(p, stored, today, tolerances, &mut rows);
            for r in rows.drain(..) {
                each(i, r);
            }
        }
        Ok::<(), StoreError>(())
    })?;
    Ok(())
}

/// A report from its rows: the totals, and whether they add up.
fn report(app: &App, entity: &EntityFiscalCode, date: Date, rows: Vec<ReportRow>) -> DailyReport {
    let mut tally = Tally::default();
    for r in &rows {
        tally.add(r);
    }
    let totals_agree = tally.agree();
    let totals = tally.totals;
    DailyReport {
        entity: entity.clone(),
        entity_name: app
            .config
            .entity(entity)
            .map(|e| e.name.clone())
            .unwrap_or_default(),
        date,
        generated_at: app.clock.now(),
        rows,
        totals,
        totals_agree,
    }
}

/// The report lines one ledger entry makes.
fn rows_of(
    p: &Position,
    stored: &StoredEvent,
    today: Date,
    tolerances: Tolerances,
    out: &mut Vec<ReportRow>,
) {
    let at = stored.event.at;
    let notice = |r: &mut ReportRow, nav: &mpay_common::ids::Nav| {
        r.nav = Some(nav.to_string());
        r.iuv = Some(nav.iuv().to_string());
        r.instalment = p.instalment(nav).map(|i| i.terms.description.clone());
    };
    match &stored.event.change {
        Change::PaidViaPagoPa {
            nav,
            receipt_id,
            psp,
            paid_at,
            ..
        } => {
            let Some((o, k)) = p.locate(nav) else { return };
            let inst = &p.options[o].instalments[k];
            let Some(pay) = inst
                .payments
                .iter()
                .find(|pay| pay.receipt_id() == Some(receipt_id.as_str()))
            else {
                return;
            };
            for (slot, (t, share)) in inst.terms.transfers.iter().zip(&pay.transfers).enumerate() {
                let mut r = row(at, "pagopa", p);
                notice(&mut r, nav);
                r.transfer = Some(t.id);
                r.category = Some(t.category.clone());
                r.beneficiary = Some(t.beneficiary.to_string());
                r.amount = share.get();
                r.receipt_id = Some(receipt_id.clone());
                r.psp = Some(psp.clone());
                r.payment_date = Some(mpay_common::calendar::rome_date(*paid_at));
                r.class = Some(classify_transfer(p, o, inst, slot, today, tolerances).name());
                out.push(r);
            }
        }
        Change::PaidOffline {
            nav,
            channel,
            date,
            reference,
            ..
        } => {
            let Some(inst) = p.instalment(nav) else {
                return;
            };
            let Some(pay) = inst.payments.iter().find(|pay| {
                matches!(&pay.via, PaidVia::Offline { channel: c, reference: r, .. }
                    if c == channel && r == reference)
            }) else {
                return;
            };
            for (t, share) in inst.terms.transfers.iter().zip(&pay.transfers) {
                let mut r = row(at, "offline", p);
                notice(&mut r, nav);
                r.transfer = Some(t.id);
                r.category = Some(t.category.clone());
                r.beneficiary = Some(t.beneficiary.to_string());
                r.amount = share.get();
                r.reference = Some(format!("{channel:?} {reference}"));
                r.payment_date = Some(*date);
                out.push(r);
            }
        }
        Change::Reduced {
            nav,
            old_amount,
            new_amount,
            act,
            ..
        } => {
            let mut r = row(at, "reduction", p);
            notice(&mut r, nav);
            r.amount = new_amount.get() - old_amount.get();
            r.reference = Some(act.clone());
            out.push(r);
        }
        Change::Cancelled => out.push(row(at, "cancellation", p)),
        Change::Restored => out.push(row(at, "restore", p)),
        Change::Rescheduled { replaced, plan } => {
            for i in &plan.instalments {
                let mut r = row(at, "rescheduling", p);
                notice(&mut r, &i.nav);
                r.amount = i.amount.get();
                r.reference = Some(format!(
                    "replaces {}",
                    replaced
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
                out.push(r);
            }
        }
        Change::Reported {
            nav,
            transfer,
            flow_id,
            iur,
            amount,
            outcome,
            date,
            ..
        } => {
            let mut r = row(at, "flow-row", p);
            notice(&mut r, nav);
            r.transfer = Some(*transfer);
            r.amount = if *outcome == 3 {
                -amount.get()
            } else {
                amount.get()
            };
            r.receipt_id = Some(iur.clone());
            r.flow_id = Some(flow_id.clone());
            r.payment_date = Some(*date);
            r.reference = Some(format!("code {outcome}"));
            out.push(r);
        }
        Change::Credited {
            nav,
            transfer,
            flow_id,
            reference,
            amount,
            date,
        } => {
            let mut r = row(at, "credit", p);
            notice(&mut r, nav);
            r.transfer = Some(*transfer);
            r.amount = amount.get();
            r.flow_id = flow_id.clone();
            r.reference = Some(reference.clone());
            r.credit_date = Some(*date);
            out.push(r);
        }
        Change::Loaded(_)
        | Change::Updated(_)
        | Change::DebtorUpdated(_)
        | Change::OperatorAdjustment { .. } => {}
    }
}

/// Cents with a decimal comma, as an Italian spreadsheet reads a number.
fn comma(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{},{:02}", c / 100, c % 100)
}

const CSV_HEADER: [&str; 21] = [
    "data_ora",
    "tipo",
    "iupd",
    "tipo_posizione",
    "codice_fiscale_debitore",
    "debitore",
    "numero_avviso",
    "iuv",
    "rata",
    "trasferimento",
    "categoria",
    "beneficiario",
    "importo",
    "id_ricevuta",
    "riferimento",
    "psp",
    "data_pagamento",
    "id_flusso",
    "data_accredito",
    "stato",
    "note",
];

/// One row as a CSV record.
fn csv_record(r: &ReportRow) -> [String; 21] {
    let cell = crate::api::bulk::cell;
    let opt = |v: &Option<String>| v.as_deref().map(cell).unwrap_or_default().into_owned();
    let at = mpay_common::calendar::rome_datetime(r.at);
    [
        at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        r.kind.to_owned(),
        cell(&r.iupd).into_owned(),
        cell(&r.position_kind).into_owned(),
        r.debtor.clone(),
        cell(&r.debtor_name).into_owned(),
        opt(&r.nav),
        opt(&r.iuv),
        opt(&r.instalment),
        r.transfer.map(|t| t.to_string()).unwrap_or_default(),
        opt(&r.category),
        opt(&r.beneficiary),
        comma(r.amount),
        opt(&r.receipt_id),
        opt(&r.reference),
        opt(&r.psp),
        r.payment_date.map(|d| d.to_string()).unwrap_or_default(),
        opt(&r.flow_id),
        r.credit_date.map(|d| d.to_string()).unwrap_or_default(),
        r.class.unwrap_or_default().to_owned(),
        String::new(),
    ]
}

/// The CSV's last lines: one total per kind, then whether they add up.
fn write_totals<W: std::io::Write>(
    w: &mut csv::Writer<W>,
    totals: &BTreeMap<&'static str, Total>,
    agree: bool,
) -> csv::Result<()> {
    for (kind, t) in totals {
        let mut line = vec![String::new(); 13];
        line[1] = format!("TOTALE {kind}");
        line[2] = format!("{} righe", t.rows);
        line[12] = comma(t.amount);
        w.write_record(&line)?;
    }
    w.write_record([
        String::new(),
        "CONTROLLO".to_owned(),
        if agree {
            "i totali corrispondono alla somma delle righe".to_owned()
        } else {
            "ATTENZIONE: i totali non corrispondono alle righe".to_owned()
        },
    ])
}

fn csv_writer<W: std::io::Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .delimiter(b';')
        .flexible(true)
        .from_writer(out)
}

/// The report as CSV: a header, the rows, then one total line per kind and a check line.
pub fn to_csv(report: &DailyReport) -> Result<Vec<u8>, ServiceError> {
    let io = |e: csv::Error| ServiceError::from(StoreError::Unavailable(e.to_string()));
    let mut w = csv_writer(Vec::new());
    w.write_record(CSV_HEADER).map_err(io)?;
    for r in &report.rows {
        w.write_record(csv_record(r)).map_err(io)?;
    }
    write_totals(&mut w, &report.totals, report.totals_agree).map_err(io)?;
    w.into_inner()
        .map_err(|e| ServiceError::from(StoreError::Unavailable(e.to_string())))
}

/// Running totals: per kind and `all`, and the sum of every row on its own, to check them by.
#[derive(Default)]
struct Tally {
    totals: BTreeMap<&'static str, Total>,
    rows: usize,
    amount: i64,
}

impl Tally {
    fn add(&mut self, r: &ReportRow) {
        for key in [r.kind, "all"] {
            let t = self.totals.entry(key).or_default();
            t.rows += 1;
            t.amount += r.amount;
        }
        self.rows += 1;
        self.amount += r.amount;
    }

    /// Whether the totals add up: `all` is the sum of the rows, and the kinds share them out.
    fn agree(&self) -> bool {
        let all = self.totals.get("all").cloned().unwrap_or_default();
        let kinds = self.totals.iter().filter(|(k, _)| **k != "all");
        all.amount == self.amount
            && all.rows == self.rows
            && kinds.clone().map(|(_, t)| t.rows).sum::<usize>() == self.rows
            && kinds.map(|(_, t)| t.amount).sum::<i64>() == self.amount
    }
}

/// One entity's report being written into its outbox as the day is walked: rows go to the CSV
/// and JSON files as they come (a day of a million receipts is never held in memory), the
/// totals at the end; then both files are synced and renamed into place.
struct OutboxWriter {
    dir: PathBuf,
    date: Date,
    csv: csv::Writer<std::io::BufWriter<std::fs::File>>,
    json: std::io::BufWriter<std::fs::File>,
    tally: Tally,
    classes: BTreeMap<String, u64>,
}

impl OutboxWriter {
    fn open(app: &App, entity: &EntityFiscalCode, date: Date) -> std::io::Result<OutboxWriter> {
        use std::io::Write;
        let dir = app.config.data_dir.join("outbox").join(entity.as_str());
        fsync::create_dir_all(&dir)?;
        let create = |ext: &str| {
            std::fs::File::create(dir.join(format!(".{date}.{ext}.part")))
                .map(std::io::BufWriter::new)
        };
        let mut csv = csv_writer(create("csv")?);
        csv.write_record(CSV_HEADER)?;
        let mut json = create("json")?;
        let head = serde_json::json!({
            "entity": entity,
            "entity_name": app.config.entity(entity).map(|e| e.name.clone()).unwrap_or_default(),
            "date": date,
            "generated_at": app.clock.now(),
        })
        .to_string();
        // The header's fields, then the rows' array, left open.
        write!(json, "{},\"rows\":[", head.trim_end_matches('}'))?;
        Ok(OutboxWriter {
            dir,
            date,
            csv,
            json,
            tally: Tally::default(),
            classes: BTreeMap::new(),
        })
    }

    fn row(&mut self, r: &ReportRow) -> std::io::Result<()> {
        use std::io::Write;
        if self.tally.rows > 0 {
            self.json.write_all(b",")?;
        }
        serde_json::to_writer(&mut self.json, r)?;
        self.csv.write_record(csv_record(r))?;
        self.tally.add(r);
        if let Some(c) = r.class {
            *self.classes.entry(c.to_owned()).or_default() += 1;
        }
        Ok(())
    }

    /// Closes both files and puts them in place.
    fn finish(mut self) -> std::io::Result<Written> {
        use std::io::Write;
        let agree = self.tally.agree();
        write_totals(&mut self.csv, &self.tally.totals, agree)?;
        let tail = serde_json::json!({ "totals": self.tally.totals, "totals_agree": agree });
        write!(self.json, "],{}", tail.to_string().trim_start_matches('{'))?;
        let csv = self.csv.into_inner().map_err(|e| e.into_error())?;
        for (ext, file) in [("csv", csv), ("json", self.json)] {
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            let date = self.date;
            std::fs::rename(
                self.dir.join(format!(".{date}.{ext}.part")),
                self.dir.join(format!("{date}.{ext}")),
            )?;
        }
        fsync::sync_dir(&self.dir)?;
        Ok(Written {
            rows: self.tally.rows as u64,
            classes: self.classes,
        })
    }
}

/// What writing one entity's report found.
#[derive(Debug, Default)]
pub struct Written {
    pub rows: u64,
    /// Rows per reconciliation class (payments only).
    pub classes: BTreeMap<String, u64>,
}

/// Writes the reports of `entities` for `date` into their outboxes
/// (`DATA_DIR/outbox/<entity>/<date>.csv` and `.json`, written aside, synced, renamed, the
/// folder synced) in one walk over the day, streaming.
pub fn write_day(
    app: &App,
    entities: &[EntityFiscalCode],
    date: Date,
) -> Result<Vec<Written>, ServiceError> {
    let io = |e: std::io::Error| {
        ServiceError::from(StoreError::Unavailable(format!(
            "cannot write the reports of {date}: {e}"
        )))
    };
    let mut writers = entities
        .iter()
        .map(|e| OutboxWriter::open(app, e, date))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io)?;
    let mut failed = None;
    walk_day(app, entities, date, |i, row| {
        if failed.is_none()
            && let Err(e) = writers[i].row(&row)
        {
            failed = Some(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(io(e));
    }
    writers
        .into_iter()
        .map(OutboxWriter::finish)
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io)
}

/// The days whose reports are due on `now` and not yet in every entity's outbox: from
/// `catch_up_days` back to yesterday, once past the daily time, never before the store's first
/// entry.
pub fn due_days(app: &App, now: Timestamp) -> Result<Vec<Date>, ServiceError> {
    let cfg = &app.config.reconciliation;
    let Ok(at) = cfg.daily_time() else {
        return Ok(Vec::new());
    };
    let local = mpay_common::calendar::rome_datetime(now);
    let today = local.date();
    // Before today's run time, yesterday's report is not due yet.
    let newest = if local.time() >= at {
        today.yesterday()
    } else {
        today.yesterday().and_then(|d| d.yesterday())
    };
    let Ok(newest) = newest else {
        return Ok(Vec::new());
    };
    let first = match app.store.first_change_after(0)? {
        Some(e) => mpay_common::calendar::rome_date(e.event.at),
        None => return Ok(Vec::new()),
    };
    let mut days = Vec::new();
    let mut day = newest;
    for _ in 0..cfg.catch_up_days.max(1) {
        if day < first {
            break;
        }
        let missing = app.config.entities.iter().any(|e| {
            !app.config
                .data_dir
                .join("outbox")
                .join(e.fiscal_code.as_str())
                .join(format!("{day}.csv"))
                .exists()
        });
        if missing {
            days.push(day);
        }
        match day.yesterday() {
            Ok(d) => day = d,
            Err(_) => break,
        }
    }
    days.reverse();
    Ok(days)
}

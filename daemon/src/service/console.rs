//! What the operators' console asks beyond the position rules: positions by any key, a search
//! by one typed text, the daemon's status, the live feed, the traffic journal, jobs and the
//! audit trail; and manual adjustments and worklist fixes, which go through `positions` and
//! `worklist` like the REST API's and are recorded in the audit trail with their outcome.

use mpay_common::console::{
    Adjustment, AuditRecord, Cursor, EventPage, Exchange, ExchangeDetail, JobRow, LedgerChange,
    LedgerEntry, LiveEvent, PositionKey, PositionRow, PositionView, Search, Status, TrafficFilter,
};
use mpay_common::ids::{DebtorCode, EntityFiscalCode, Iupd, Iuv, Nav};
use mpay_common::ledger::{Actor, Position};
use mpay_common::worklist::{Fix, Resolution};

use super::{ErrorKind, ServiceError, positions};
use crate::App;
use crate::store::{BulkJob, JournalEntry, PositionId};

/// Who acts at the console: the operator and where they are.
#[derive(Clone, Debug)]
pub struct Operator {
    pub name: String,
    /// `uid 1000 pid 4242`, a certificate subject.
    pub origin: String,
}

impl Operator {
    pub fn actor(&self) -> Actor {
        Actor::Operator(self.name.clone())
    }
}

/// The position a key names. A NAV is looked up under every entity served: numbers carry the
/// entity's segregation code, so two hits mean a configuration to fix, and are said.
pub fn find(app: &App, key: &PositionKey) -> Result<(PositionId, Position), ServiceError> {
    let found = match key {
        PositionKey::Nav(nav) => {
            let mut hits = Vec::new();
            for entity in &app.config.entities {
                hits.extend(app.store.by_nav(&entity.fiscal_code, nav)?);
            }
            if hits.len() > 1 {
                return Err(ServiceError::conflict(
                    "AMBIGUOUS_NOTICE",
                    format!("notice {nav} names positions of {} entities", hits.len()),
                ));
            }
            hits.pop()
        }
        PositionKey::Iuv { entity, iuv } => app.store.by_iuv(entity, iuv)?,
        PositionKey::Iupd { entity, iupd } => app.store.by_iupd(entity, iupd)?,
    };
    found.ok_or_else(|| ServiceError::not_found(format!("no position for {}", describe(key))))
}

fn describe(key: &PositionKey) -> String {
    match key {
        PositionKey::Nav(nav) => format!("notice {nav}"),
        PositionKey::Iuv { entity, iuv } => format!("IUV {iuv} of {entity}"),
        PositionKey::Iupd { entity, iupd } => format!("{entity}/{iupd}"),
    }
}

/// A position with its ledger.
pub fn view(app: &App, id: PositionId, position: Position) -> Result<PositionView, ServiceError> {
    let ledger = app
        .store
        .ledger(id)?
        .into_iter()
        .map(|s| LedgerEntry {
            commit: s.commit,
            event: s.event,
        })
        .collect();
    Ok(PositionView {
        id,
        position,
        ledger,
    })
}

pub fn row(app: &App, id: PositionId, p: &Position) -> PositionRow {
    PositionRow::new(id, p, app.clock.today())
}

/// Results of a search at most.
pub const MAX_RESULTS: usize = 500;

/// Tries the text as a NAV, an IUV, an iupd, a debtor's fiscal code, then as the start of a
/// debtor's name.
pub fn search(app: &App, search: &Search) -> Result<Vec<PositionRow>, ServiceError> {
    let text = search.text.trim();
    if text.is_empty() {
        return Err(ServiceError::field("text", "type something to search for"));
    }
    let limit = search.limit.unwrap_or(100).clamp(1, MAX_RESULTS);
    let entities: Vec<_> = app
        .config
        .entities
        .iter()
        .map(|e| &e.fiscal_code)
        .filter(|cf| search.entity.as_ref().is_none_or(|e| e == *cf))
        .collect();
    let mut hits: Vec<(PositionId, Position)> = Vec::new();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if let Ok(nav) = compact.parse::<Nav>() {
        for cf in &entities {
            hits.extend(app.store.by_nav(cf, &nav)?);
        }
    }
    if hits.is_empty()
        && let Ok(iuv) = compact.parse::<Iuv>()
    {
        for cf in &entities {
            hits.extend(app.store.by_iuv(cf, &iuv)?);
        }
    }
    if hits.is_empty()
        && let Ok(iupd) = text.parse::<Iupd>()
    {
        for cf in &entities {
            hits.extend(app.store.by_iupd(cf, &iupd)?);
        }
    }
    if hits.is_empty()
        && let Ok(code) = compact.to_uppercase().parse::<DebtorCode>()
        && code != DebtorCode::Anonymous
    {
        hits = app.store.by_debtor(&code, search.entity.as_ref(), limit)?;
    }
    if hits.is_empty() {
        hits = app
            .store
            .by_name_prefix(text, search.entity.as_ref(), limit)?;
    }
    hits.truncate(limit);
    Ok(hits.iter().map(|(id, p)| row(app, *id, p)).collect())
}

/// Runs a manual adjustment through the position rules, and records it in the audit trail
/// with its outcome (a refusal too) before answering.
pub fn adjust(
    app: &App,
    operator: &Operator,
    key: &PositionKey,
    adjustment: Adjustment,
) -> Result<PositionView, ServiceError> {
    let action = adjustment.action();
    let reason = adjustment.reason().to_string();
    let mut target = describe(key);
    let result = (|| {
        // Operators always say why: the ledger and the audit trail keep it.
        positions::text("reason", &reason, mpay_common::model::MAX_TEXT)?;
        let (_, p) = find(app, key)?;
        target = format!("{}/{}", p.entity, p.iupd);
        let actor = operator.actor();
        let (cf, iupd) = (&p.entity, &p.iupd);
        let after = match adjustment {
            Adjustment::Reduce { nav, reduction } => {
                positions::reduce(app, cf, &actor, iupd, &nav, reduction)
            }
            Adjustment::Cancel { reason } => positions::cancel(app, cf, &actor, iupd, reason),
            Adjustment::Restore { reason } => positions::restore(app, cf, &actor, iupd, reason),
            Adjustment::PayOffline { nav, payment } => {
                positions::pay_offline(app, cf, &actor, iupd, &nav, payment)
            }
            Adjustment::Reschedule(plan) => {
                let entity = app
                    .config
                    .entity(cf)
                    .ok_or_else(|| ServiceError::not_found(format!("entity {cf} not served")))?;
                positions::reschedule(app, entity, &actor, iupd, plan)
            }
            Adjustment::Debtor { debtor, reason } => {
                positions::update_debtor(app, cf, &actor, iupd, debtor, Some(reason))
            }
        }?;
        let (id, _) = find(app, key)?;
        view(app, id, after)
    })();
    audit(app, operator, action, target, &reason, &result)?;
    result
}

/// Makes a worklist fix for an operator (`worklist::resolve`), recorded in the audit trail with
/// its outcome (a refusal too) before answering.
pub fn resolve(
    app: &App,
    operator: &Operator,
    entity: &EntityFiscalCode,
    key: &str,
    fix: Fix,
    reason: &str,
) -> Result<Resolution, ServiceError> {
    let action = fix.name();
    let result = match app.config.entity(entity) {
        None => Err(ServiceError::not_found(format!(
            "entity {entity} not served"
        ))),
        Some(_) => super::worklist::resolve(app, entity, &operator.actor(), key, fix, reason),
    };
    let target = match &result {
        Ok(r) => format!("{entity}/{} (fix {})", r.key, r.id),
        Err(_) => format!("{entity}/{key}"),
    };
    audit(app, operator, action, target, reason, &result)?;
    result
}

/// Appends the audit record of an operator's action and its outcome.
fn audit<T>(
    app: &App,
    operator: &Operator,
    action: &str,
    target: String,
    reason: &str,
    result: &Result<T, ServiceError>,
) -> Result<(), ServiceError> {
    let outcome = match result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("{}: {}", e.code, e.message),
    };
    app.store.append_audit(AuditRecord {
        seq: 0,
        at: app.clock.now(),
        actor: operator.actor(),
        origin: operator.origin.clone(),
        action: action.into(),
        target,
        reason: reason.into(),
        outcome,
    })?;
    Ok(())
}

/// The entities served, with their names.
pub fn entities(app: &App) -> Vec<(EntityFiscalCode, String)> {
    app.config
        .entities
        .iter()
        .map(|e| (e.fiscal_code.clone(), e.name.clone()))
        .collect()
}

pub fn status(app: &App) -> Status {
    let stats = app.store.stats();
    let problem = app.store.healthy().err();
    Status {
        version: mpay_common::VERSION.into(),
        started_at: Some(app.live.started_at()),
        healthy: problem.is_none(),
        problem,
        positions: stats.positions,
        commits: stats.commits,
        flushes: stats.flushes,
        disk_bytes: stats.disk_bytes,
        rss_bytes: crate::metrics::rss_bytes().map_or(0, |b| b.max(0) as u64),
        traffic: app.live.seconds(app.clock.now()),
        receipts_since_start: app.live.receipts(),
        double_payments_since_start: app.live.double_payments(),
        jobs_running: app.store.running_jobs().map_or(0, |j| j.len() as u64),
        last_run: app.store.runs(1).ok().and_then(|r| r.into_iter().next()),
        cursor: Cursor {
            exchange: app.store.next_journal_seq(),
            commit: app.store.last_commit(),
        },
    }
}

fn exchange(e: JournalEntry) -> Exchange {
    Exchange {
        seq: e.seq,
        at: e.at,
        operation: e.operation,
        entity: e.entity,
        station: e.station,
        nav: e.nav,
        outcome: e.outcome,
        fault_code: e.fault_code,
        latency_us: e.latency_us,
        remote: e.remote,
    }
}

/// What happened after `after`: exchanges, then ledger changes, at most `max` in all.
/// `next.exchange` is the sequence number of the next exchange to read. With `tail`, a
/// follower more than `max` behind skips to the newest `max` of each kind.
pub fn events(
    app: &App,
    mut after: Cursor,
    max: usize,
    tail: bool,
) -> Result<EventPage, ServiceError> {
    let mut skipped = 0;
    if tail {
        let newest = app.store.next_journal_seq().saturating_sub(max as u64);
        if newest > after.exchange {
            skipped += newest - after.exchange;
            after.exchange = newest;
        }
        let newest = app.store.last_commit().saturating_sub(max as u64);
        if newest > after.commit {
            skipped += newest - after.commit;
            after.commit = newest;
        }
    }
    let mut next = after;
    let mut events = Vec::new();
    for e in app.store.journal(after.exchange, max)? {
        next.exchange = e.seq + 1;
        events.push(LiveEvent::Exchange(exchange(e)));
    }
    let room = max.saturating_sub(events.len());
    if room > 0 {
        for (id, p, seq, stored) in app.store.changes_after(after.commit, room)? {
            next.commit = stored.commit;
            events.push(LiveEvent::Ledger(Box::new(LedgerChange {
                commit: stored.commit,
                position: id,
                entity: p.entity,
                iupd: p.iupd,
                seq,
                event: stored.event,
            })));
        }
    }
    Ok(EventPage {
        events,
        next,
        skipped,
    })
}

/// The newest exchanges before `before` that match, newest first; at most `max`, reading at
/// most 50,000 records.
pub fn traffic(
    app: &App,
    filter: &TrafficFilter,
    before: Option<u64>,
    max: usize,
) -> Result<Vec<Exchange>, ServiceError> {
    let mut out = Vec::new();
    let mut end = before.unwrap_or_else(|| app.store.next_journal_seq());
    let mut read = 0;
    while out.len() < max && read < 50_000 && end > 0 {
        let start = end.saturating_sub(1000);
        let chunk = app.store.journal(start, (end - start) as usize)?;
        if chunk.is_empty() {
            break;
        }
        read += chunk.len();
        end = start;
        for e in chunk.into_iter().rev().map(exchange) {
            if filter.matches(&e) && out.len() < max {
                out.push(e);
            }
        }
        if start == 0 {
            break;
        }
    }
    Ok(out)
}

pub fn exchange_detail(app: &App, seq: u64) -> Result<ExchangeDetail, ServiceError> {
    let entry = app
        .store
        .journal(seq, 1)?
        .into_iter()
        .find(|e| e.seq == seq)
        .ok_or_else(|| ServiceError::not_found(format!("no exchange {seq}")))?;
    let bodies = app.store.journal_bodies(seq)?;
    Ok(ExchangeDetail {
        exchange: exchange(entry),
        request: bodies.as_ref().map(|b| b.request.clone()),
        response: bodies.map(|b| b.response),
    })
}

pub fn jobs(app: &App, max: usize) -> Result<Vec<JobRow>, ServiceError> {
    Ok(app
        .store
        .recent_jobs(max)?
        .into_iter()
        .map(|j: BulkJob| JobRow {
            id: j.id,
            entity: j.entity,
            file: j.file,
            status: format!("{:?}", j.status).to_lowercase(),
            rows_total: j.rows_total,
            rows_done: j.rows_done,
            created: j.created,
            replaced: j.replaced,
            unchanged: j.unchanged,
            rejected_rows: j.rejected_rows,
            started: j.started,
            finished: j.finished,
            file_error: j.file_error,
        })
        .collect())
}

/// The service error an unknown console user gets.
pub fn not_an_operator(uid: u32) -> ServiceError {
    ServiceError::new(
        ErrorKind::Invalid,
        "NOT_AN_OPERATOR",
        format!(
            "uid {uid} is not an operator of this mpayd: an administrator adds it to \
             [[operators]] in mpayd.toml"
        ),
    )
}

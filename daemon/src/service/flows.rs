//! Reporting flows: received (uploaded, dropped in the inbox, fetched from the node over SOAP or
//! FdR REST), stored raw and parsed with
//! the per-transfer `Reported` facts their rows add to the positions, and read back with every
//! row classified against the positions as they stand at that moment, so a class is never
//! stale: a receipt or a position arriving after its flow changes the answer by itself.

use std::collections::{BTreeMap, HashSet};

use mpay_common::ids::{EntityFiscalCode, Iuv, Nav};
use mpay_common::ledger::{Actor, Change, Event, Position};
use mpay_common::money::Cents;
use mpay_common::reconcile::{self, Flow, FlowRow, FlowView, RowView};

use super::ServiceError;
use crate::App;
use crate::config::EntityConfig;
use crate::pagopa::flow;
use crate::store::{FlowRecord, FlowRecorded, PositionId};

/// What `receive` did.
#[derive(Debug)]
pub enum Received {
    New(FlowView),
    /// The same flow (id and time) was already held.
    Held(FlowView),
}

fn digest(raw: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(raw)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Receives a flow document for `entity`. A document that cannot be read is kept, with its
/// error, and the error is returned (`FLOW_INVALID`); it is kept under `listed` (the id and time
/// the node listed it with) when known, so it is not fetched again. A flow for another entity
/// is refused and not kept.
pub fn receive(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    raw: &[u8],
    listed: Option<(&str, &str)>,
) -> Result<Received, ServiceError> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("not UTF-8 text: {e}"));
    let parsed = text
        .as_ref()
        .map_err(|e| flow::FlowError {
            field: "document".into(),
            reason: e.clone(),
        })
        .and_then(|t| flow::parse(t));
    receive_parsed(app, entity, actor, parsed, raw, listed)
}

/// Receives a flow already read (the FdR REST service gives it as JSON, not XML): `raw` is
/// what came, kept as it came.
pub fn receive_parsed(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    parsed: Result<Flow, flow::FlowError>,
    raw: &[u8],
    listed: Option<(&str, &str)>,
) -> Result<Received, ServiceError> {
    let cf = &entity.fiscal_code;
    let now = app.clock.now();
    let mut record = FlowRecord {
        entity: cf.clone(),
        flow_id: String::new(),
        time: String::new(),
        received_at: now,
        source: actor.to_string(),
        flow: None,
        error: None,
        reported: 0,
        commit: 0,
        raw: String::from_utf8_lossy(raw).into_owned(),
    };
    let (reports, settled, refused) = match parsed {
        Ok(f) => {
            if f.receiver != cf.as_str() {
                return Err(ServiceError::field(
                    "FlussoRiversamento/istitutoRicevente",
                    format!("the flow is for {}, not for {cf}", f.receiver),
                ));
            }
            record.flow_id = f.id.clone();
            record.time = f.time.clone();
            let mut reports = reports(app, cf, actor, &f)?;
            // Credits that came before their flow: timing, not an error. When they add up to
            // the flow's total, the last of them carries the flow's `Credited` facts.
            let mut settled = Vec::new();
            let naming: Vec<_> = app
                .store
                .movements(cf, usize::MAX)?
                .into_iter()
                .filter(|m| reconcile::credited_flow(&m.movement).as_deref() == Some(&f.id))
                .collect();
            let sum: i64 = naming.iter().map(|m| m.movement.amount).sum();
            let done = naming.iter().any(|m| m.credited > 0);
            if let Some(mut last) = naming.into_iter().last() {
                let credit = matches!(
                    reconcile::classify_movement(&last.movement, Some(&f), sum),
                    reconcile::MovementClass::FlowCredit { .. }
                );
                if credit && !done {
                    let facts =
                        super::treasury::credits(app, cf, actor, &f.id, &f, &last.movement)?;
                    last.credited = u32::try_from(facts.len()).unwrap_or(u32::MAX);
                    reports.extend(facts);
                    settled.push(last);
                }
            }
            record.flow = Some(f);
            (reports, settled, None)
        }
        Err(e) => {
            match listed {
                Some((id, time)) => {
                    record.flow_id = id.to_owned();
                    record.time = time.to_owned();
                }
                None => record.flow_id = format!("unreadable-{}", digest(raw)),
            }
            record.error = Some(e.to_string());
            (Vec::new(), Vec::new(), Some(e))
        }
    };
    let outcome = app.store.record_flow(record, reports, settled)?;
    if let Some(e) = refused {
        return Err(
            ServiceError::field(e.field, format!("{}; the document is kept", e.reason))
                .with_code("FLOW_INVALID"),
        );
    }
    let (record, new) = match outcome {
        FlowRecorded::New(r) => (r, true),
        FlowRecorded::Held(r) => (r, false),
    };
    let revisions = app.store.flow_revisions(cf, &record.flow_id)?;
    let superseded = revisions.iter().any(|r| r.time > record.time);
    let view = view(app, cf, record, superseded)?;
    Ok(if new {
        Received::New(view)
    } else {
        Received::Held(view)
    })
}

/// The `Reported` facts of a flow's rows: one per row that names a transfer of one of the
/// entity's notices (a row repeated in the flow counts once). A revision restates the whole flow:
/// the ledger replaces the earlier revision's word on each transfer it names, and a transfer the
/// earlier revision named but this one drops gets a fact of zero.
fn reports(
    app: &App,
    cf: &EntityFiscalCode,
    actor: &Actor,
    f: &Flow,
) -> Result<Vec<(PositionId, Event)>, ServiceError> {
    let previous: Vec<FlowRow> = app
        .store
        .flow_revisions(cf, &f.id)?
        .into_iter()
        .filter(|r| r.time < f.time)
        .filter_map(|r| r.flow)
        .next_back()
        .map(|p| p.rows)
        .unwrap_or_default();
    let named: HashSet<(&str, u8)> = f
        .rows
        .iter()
        .map(|r| (r.iuv.as_str(), r.transfer))
        .collect();
    let dropped = previous
        .iter()
        .filter(|r| !named.contains(&(r.iuv.as_str(), r.transfer)))
        .map(|r| FlowRow {
            amount: Cents::ZERO,
            outcome: reconcile::RowOutcome::Executed,
            ..r.clone()
        });
    let mut seen: HashSet<(String, String, u8)> = HashSet::new();
    let mut out = Vec::new();
    let now = app.clock.now();
    for r in f.rows.iter().cloned().chain(dropped) {
        if !seen.insert((r.iuv.clone(), r.iur.clone(), r.transfer)) {
            continue;
        }
        let Some((id, p, nav)) = row_notice(app, cf, &r.iuv)? else {
            continue;
        };
        let names_transfer = p
            .instalment(&nav)
            .is_some_and(|i| i.terms.transfers.iter().any(|t| t.id == r.transfer));
        if !names_transfer {
            continue;
        }
        let change = Change::Reported {
            nav,
            transfer: r.transfer,
            flow_id: f.id.clone(),
            revision: f.time.clone(),
            iur: r.iur.clone(),
            amount: r.amount,
            outcome: r.outcome.code(),
            date: r.date,
        };
        out.push((
            id,
            Event::new(now, actor.clone(), change).with_reason(format!("flow {}", f.id)),
        ));
    }
    Ok(out)
}

/// The position holding the notice whose IUV a flow row names, and that notice's number.
pub(crate) fn row_notice(
    app: &App,
    cf: &EntityFiscalCode,
    iuv: &str,
) -> Result<Option<(PositionId, Position, Nav)>, ServiceError> {
    let Ok(iuv) = iuv.parse::<Iuv>() else {
        return Ok(None);
    };
    let Some((id, p)) = app.store.by_iuv(cf, &iuv)? else {
        return Ok(None);
    };
    let nav = p
        .instalments()
        .find(|i| i.terms.iuv == iuv)
        .map(|i| i.terms.nav.clone());
    Ok(nav.map(|nav| (id, p, nav)))
}

/// A stored flow with its rows classified against the positions as they stand.
fn view(
    app: &App,
    cf: &EntityFiscalCode,
    record: FlowRecord,
    superseded: bool,
) -> Result<FlowView, ServiceError> {
    let mut rows = Vec::new();
    let mut classes: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen = HashSet::new();
    let (mut declared_rows, mut declared_total, mut totals_agree) = (0, Cents::ZERO, false);
    let (mut psp, mut settlement, mut settlement_date, mut rows_total) =
        (None, None, None, Cents::ZERO);
    let mut bad_rows = Vec::new();
    if let Some(f) = &record.flow {
        declared_rows = f.declared_rows;
        declared_total = f.declared_total;
        totals_agree = f.totals_agree();
        rows_total = Cents(f.rows_total());
        psp = Some(f.sender.clone());
        settlement = Some(f.settlement.clone());
        settlement_date = Some(f.settlement_date);
        bad_rows = f.bad_rows.clone();
        for r in &f.rows {
            let duplicate = !seen.insert((r.iuv.clone(), r.iur.clone(), r.transfer));
            let found = row_notice(app, cf, &r.iuv)?;
            let class = reconcile::classify_row(r, found.as_ref().map(|(_, p, _)| p), duplicate);
            *classes.entry(class.name().to_owned()).or_default() += 1;
            rows.push(RowView {
                row: r.clone(),
                class,
                iupd: found.as_ref().map(|(_, p, _)| p.iupd.clone()),
                nav: found.map(|(_, _, nav)| nav),
            });
        }
    }
    let anomalies = rows.iter().filter(|r| r.class.is_anomaly()).count()
        + bad_rows.len()
        + usize::from(record.flow.is_some() && !totals_agree)
        + usize::from(record.error.is_some());
    Ok(FlowView {
        flow_id: record.flow_id,
        time: record.time,
        received_at: record.received_at,
        source: record.source,
        error: record.error,
        superseded,
        psp,
        settlement,
        settlement_date,
        declared_rows,
        declared_total,
        rows_total,
        totals_agree,
        reported: record.reported,
        classes,
        anomalies,
        rows,
        bad_rows,
    })
}

/// The entity's flows, every revision, each classified now (at most `limit`).
pub fn list(app: &App, cf: &EntityFiscalCode, limit: usize) -> Result<Vec<FlowView>, ServiceError> {
    let mut out = views(app, cf, limit)?;
    // The list carries counts; the rows are in the flow's own answer.
    for v in &mut out {
        v.rows.clear();
    }
    Ok(out)
}

/// The entity's flows, every revision, each classified now with its rows (at most `limit`).
pub(crate) fn views(
    app: &App,
    cf: &EntityFiscalCode,
    limit: usize,
) -> Result<Vec<FlowView>, ServiceError> {
    let records = app.store.flows(cf, limit)?;
    let mut out = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        // Revisions of one flow sort together, oldest first.
        let superseded = records
            .get(i + 1)
            .is_some_and(|next| next.flow_id == record.flow_id);
        out.push(view(app, cf, record.clone(), superseded)?);
    }
    Ok(out)
}

/// Every revision of one flow, oldest first, with its rows.
pub fn get(app: &App, cf: &EntityFiscalCode, flow_id: &str) -> Result<Vec<FlowView>, ServiceError> {
    let records = app.store.flow_revisions(cf, flow_id)?;
    if records.is_empty() {
        return Err(ServiceError::not_found(format!(
            "no flow {flow_id} for entity {cf}"
        )));
    }
    let last = records.len() - 1;
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| view(app, cf, r, i < last))
        .collect()
}

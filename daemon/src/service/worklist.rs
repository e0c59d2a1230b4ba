//! The operators' worklist: what reconciliation says needs a look, classified now, with the
//! fixes in force laid over it by key (`common::worklist`). Flows (unreadable, totals that
//! disagree, anomalous rows of the latest revision) and treasury movements come whole on the
//! first page; transfers of positions come from a bounded scan, a page at a time, like the
//! position search. `resolve` is the one way a fix is made.

use std::collections::BTreeMap;

use jiff::civil::Date;
use mpay_common::calendar::rome_date;
use mpay_common::ids::{EntityFiscalCode, Iupd};
use mpay_common::ledger::{Actor, InstalmentState, PaidVia, Position};
use mpay_common::reconcile::{self, classify_transfer};
use mpay_common::worklist::{
    Fix, Resolution, WorkItem, Worklist, WorklistQuery, in_force, link_target,
};

use super::ServiceError;
use crate::App;
use crate::store::Disposition;

/// Positions examined per call at most.
const SCAN_BUDGET: usize = 20_000;
const SCAN_CHUNK: usize = 512;

/// The entity's worklist, filtered by `query`.
pub fn worklist(
    app: &App,
    entity: &EntityFiscalCode,
    query: &WorklistQuery,
) -> Result<Worklist, ServiceError> {
    let fixes = in_force(&app.store.resolutions(entity)?);
    let mut items = Vec::new();
    if query.after.is_none() {
        record_items(app, entity, &mut items)?;
    }
    let mut from = query.after.map_or(0, |a| a.saturating_add(1));
    let mut scanned = 0;
    let next = loop {
        let chunk = app.store.positions(from, SCAN_CHUNK)?;
        let exhausted = chunk.len() < SCAN_CHUNK;
        for (id, p) in chunk {
            scanned += 1;
            from = id.saturating_add(1);
            if &p.entity == entity && p.has_payments() {
                transfer_items(app, &p, None, &mut items);
            }
        }
        if exhausted {
            break None;
        }
        if scanned >= SCAN_BUDGET {
            break Some(from.saturating_sub(1));
        }
    };
    let today = app.clock.today();
    for item in &mut items {
        item.resolution = resolution_of(&fixes, item);
    }
    items.retain(|i| query.admits(i, today));
    Ok(Worklist { items, next })
}

fn resolution_of(fixes: &BTreeMap<String, Resolution>, item: &WorkItem) -> Option<Resolution> {
    let by_link = match (&item.iupd, &item.nav) {
        (Some(iupd), Some(nav)) if item.subject == "transfer" => fixes.get(&link_target(iupd, nav)),
        _ => None,
    };
    fixes.get(&item.key).or(by_link).cloned()
}

/// The anomalous transfers of `p` (of one notice only, with `only`).
fn transfer_items(app: &App, p: &Position, only: Option<&str>, items: &mut Vec<WorkItem>) {
    let today = app.clock.today();
    let tolerances = app.config.reconciliation.tolerances();
    for (o, inst) in p.notices() {
        let nav = inst.terms.nav.to_string();
        if only.is_some_and(|n| n != nav) {
            continue;
        }
        let account = p.account_of(o, inst);
        for (slot, t) in inst.terms.transfers.iter().enumerate() {
            let c = classify_transfer(p, o, inst, slot, today, tolerances);
            if !c.is_anomaly() {
                continue;
            }
            let amount = match c {
                reconcile::TransferClass::RefundDue => account.refund()[slot].get(),
                _ => account.paid[slot].get(),
            };
            items.push(WorkItem {
                key: format!("transfer:{}:{nav}:{}", p.iupd, t.id),
                subject: "transfer".into(),
                class: c.name().into(),
                amount,
                date: last_paid(inst),
                iupd: Some(p.iupd.to_string()),
                nav: Some(nav.clone()),
                transfer: Some(t.id),
                flow_id: None,
                reference: inst
                    .receipts()
                    .last()
                    .and_then(|r| r.receipt_id())
                    .map(str::to_owned),
                detail: format!("{} to {}", t.category, t.beneficiary),
                resolution: None,
            });
        }
    }
}

/// The day of the instalment's latest payment.
fn last_paid(inst: &InstalmentState) -> Option<Date> {
    inst.payments.last().map(|p| match &p.via {
        PaidVia::PagoPa { paid_at, .. } => rome_date(*paid_at),
        PaidVia::Offline { date, .. } => *date,
    })
}

/// Flows that could not be read or whose totals disagree, the anomalous rows of each flow's
/// latest revision, receipts that pay no notice of ours, and the anomalous treasury movements.
fn record_items(
    app: &App,
    entity: &EntityFiscalCode,
    items: &mut Vec<WorkItem>,
) -> Result<(), ServiceError> {
    for f in super::flows::views(app, entity, 100_000)? {
        if f.superseded {
            continue;
        }
        let item = |class: &str, amount, detail: String| WorkItem {
            key: format!("flow:{}", f.flow_id),
            subject: "flow".into(),
            class: class.into(),
            amount,
            date: f.settlement_date.or(Some(rome_date(f.received_at))),
            iupd: None,
            nav: None,
            transfer: None,
            flow_id: Some(f.flow_id.clone()),
            reference: None,
            detail,
            resolution: None,
        };
        if let Some(e) = &f.error {
            items.push(item("unreadable", 0, e.clone()));
            continue;
        }
        if !f.totals_agree {
            items.push(item(
                "totals-disagree",
                f.declared_total.get() - f.rows_total.get(),
                format!(
                    "declared {} rows for {}, the rows say {} for {}",
                    f.declared_rows,
                    f.declared_total,
                    f.rows.len(),
                    f.rows_total
                ),
            ));
        }
        for r in f.rows.iter().filter(|r| r.class.is_anomaly()) {
            items.push(WorkItem {
                key: format!(
                    "flow-row:{}:{}:{}:{}",
                    f.flow_id, r.row.iur, r.row.iuv, r.row.transfer
                ),
                subject: "flow-row".into(),
                class: r.class.name().into(),
                amount: r.row.amount.get(),
                date: Some(r.row.date),
                iupd: r.iupd.as_ref().map(ToString::to_string),
                nav: r.nav.as_ref().map(ToString::to_string),
                transfer: Some(r.row.transfer),
                flow_id: Some(f.flow_id.clone()),
                reference: Some(r.row.iur.clone()),
                detail: format!("IUV {} paid {}", r.row.iuv, r.row.date),
                resolution: None,
            });
        }
    }
    // Receipts for a notice nobody here issued, or whose receiptId another notice used.
    for r in app.store.receipts_of(entity, 100_000)? {
        let (class, key) = match r.disposition {
            Disposition::Orphan => ("unknown-notice", format!("receipt:{}", r.receipt_id)),
            Disposition::ReceiptIdReused => (
                "receipt-id-reused",
                format!("receipt:{}:{}", r.receipt_id, r.nav),
            ),
            _ => continue,
        };
        items.push(WorkItem {
            key,
            subject: "receipt".into(),
            class: class.into(),
            amount: r.amount.get(),
            date: Some(rome_date(r.received_at)),
            iupd: None,
            nav: Some(r.nav.clone()),
            transfer: None,
            flow_id: None,
            reference: Some(r.receipt_id.clone()),
            detail: format!("PSP {} for notice {} of {}", r.psp, r.nav, r.notice_entity),
            resolution: None,
        });
    }
    for m in super::treasury::list(app, entity, 100_000)? {
        if m.class.is_anomaly() {
            items.push(WorkItem {
                key: format!("movement:{}:{}", m.movement.account, m.movement.reference),
                subject: "movement".into(),
                class: m.class.name().into(),
                amount: m.movement.amount,
                date: Some(m.movement.booked),
                iupd: None,
                nav: None,
                transfer: None,
                flow_id: None,
                reference: Some(m.movement.reference.clone()),
                detail: format!("{} booked {}", m.movement.remittance, m.movement.booked),
                resolution: None,
            });
        }
    }
    Ok(())
}

/// The item named `key`, as it stands now; refused if there is none.
fn item(app: &App, entity: &EntityFiscalCode, key: &str) -> Result<WorkItem, ServiceError> {
    let mut items = Vec::new();
    if let Some(rest) = key.strip_prefix("transfer:") {
        // iupd:nav:transfer — the iupd may itself hold colons, the others never.
        let mut parts = rest.rsplitn(3, ':');
        let (_, nav, iupd) = (parts.next(), parts.next(), parts.next());
        if let (Some(nav), Some(Ok(iupd))) = (nav, iupd.map(str::parse::<Iupd>))
            && let Some((_, p)) = app.store.by_iupd(entity, &iupd)?
        {
            transfer_items(app, &p, Some(nav), &mut items);
        }
    } else {
        record_items(app, entity, &mut items)?;
    }
    items.into_iter().find(|i| i.key == key).ok_or_else(|| {
        ServiceError::field(
            "key",
            format!("{key} is not on the worklist of entity {entity} (any more)"),
        )
        .with_code("NOT_ON_WORKLIST")
    })
}

/// Makes a fix (or reverts one) for `actor`, durably, after checking that it applies.
pub fn resolve(
    app: &App,
    entity: &EntityFiscalCode,
    actor: &Actor,
    key: &str,
    fix: Fix,
    reason: &str,
) -> Result<Resolution, ServiceError> {
    super::positions::text("reason", reason, mpay_common::model::MAX_TEXT)?;
    let all = app.store.resolutions(entity)?;
    let fixes = in_force(&all);
    let key = match &fix {
        Fix::Revert { id } => {
            let target = all.iter().find(|r| r.id == *id).ok_or_else(|| {
                ServiceError::field("fix.id", format!("no resolution {id} for entity {entity}"))
            })?;
            if matches!(target.fix, Fix::Revert { .. }) {
                return Err(ServiceError::field(
                    "fix.id",
                    format!("{id} is a revert: make the fix again instead"),
                ));
            }
            if fixes.get(&target.key).is_none_or(|r| r.id != *id) {
                return Err(ServiceError::conflict(
                    "NOT_IN_FORCE",
                    format!("resolution {id} is not in force: it was reverted already"),
                ));
            }
            target.key.clone()
        }
        _ => {
            let it = item(app, entity, key)?;
            if let Some(r) = resolution_of(&fixes, &it) {
                return Err(ServiceError::conflict(
                    "ALREADY_RESOLVED",
                    format!(
                        "{key} is resolved by {} ({}): revert it first",
                        r.id,
                        r.fix.name()
                    ),
                ));
            }
            check_fix(app, entity, &it, &fix)?;
            key.to_owned()
        }
    };
    Ok(app.store.append_resolution(Resolution {
        id: 0,
        entity: entity.clone(),
        key,
        fix,
        reason: reason.trim().to_owned(),
        actor: actor.clone(),
        at: app.clock.now(),
    })?)
}

/// Whether `fix` makes sense for `item`.
fn check_fix(
    app: &App,
    entity: &EntityFiscalCode,
    item: &WorkItem,
    fix: &Fix,
) -> Result<(), ServiceError> {
    let refuse = |why: String| Err(ServiceError::field("fix", why).with_code("FIX_NOT_APPLICABLE"));
    match fix {
        Fix::Link { iupd, nav } => {
            if item.subject == "flow" {
                return refuse("a whole flow is not linked to one instalment".into());
            }
            let (_, p) = super::positions::find(app, entity, iupd).map_err(|e| e.at("fix.iupd"))?;
            if !p.instalments().any(|i| &i.terms.nav == nav) {
                return Err(ServiceError::field(
                    "fix.nav",
                    format!("position {iupd} has no notice {nav}"),
                ));
            }
            let own = (item.iupd.as_deref(), item.nav.as_deref());
            if own == (Some(iupd.as_str()), Some(nav.as_str())) {
                return refuse("an item is not linked to its own instalment".into());
            }
        }
        Fix::AttachToFlow { flow_id } => {
            if item.subject != "movement" {
                return refuse("only a treasury credit is attached to a flow".into());
            }
            if app.store.flow_revisions(entity, flow_id)?.is_empty() {
                return Err(ServiceError::field(
                    "fix.flow_id",
                    format!("no flow {flow_id} held for entity {entity}"),
                ));
            }
        }
        Fix::RecoveryRequested if item.subject != "transfer" => {
            return refuse("a receipt is asked again for a paid transfer only".into());
        }
        // Reverts are checked by `resolve`, against the resolution they undo.
        Fix::Revert { .. }
        | Fix::RefundDue
        | Fix::AcceptDifference
        | Fix::RecoveryRequested
        | Fix::Dismiss => {}
    }
    Ok(())
}

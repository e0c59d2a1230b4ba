//! The operators' worklist, read side: what reconciliation says needs a look, classified now.
//! Flows (unreadable, totals that disagree, anomalous rows of the latest revision) and treasury
//! movements come whole on the first page; transfers of positions come from a bounded scan, a
//! page at a time, like the position search.

use mpay_common::ids::EntityFiscalCode;
use mpay_common::reconcile::{self, classify_transfer};
use serde::Serialize;

use super::ServiceError;
use crate::App;
use crate::store::PositionId;

/// Positions examined per call at most.
const SCAN_BUDGET: usize = 20_000;
const SCAN_CHUNK: usize = 512;

/// One thing to look at.
#[derive(Clone, Debug, Serialize)]
pub struct WorkItem {
    /// `flow`, `flow-row`, `movement` or `transfer`.
    pub subject: &'static str,
    /// The class that makes it an anomaly (`amount-mismatch`, `not-reported`, …).
    pub class: &'static str,
    /// Cents at stake.
    pub amount: i64,
    pub iupd: Option<String>,
    pub nav: Option<String>,
    pub transfer: Option<u8>,
    pub flow_id: Option<String>,
    /// The receipt (IUR) or the bank's reference.
    pub reference: Option<String>,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Worklist {
    pub items: Vec<WorkItem>,
    /// Pass as `after` for the next page of transfers; null at the end.
    pub next: Option<PositionId>,
}

/// The entity's worklist; `class` keeps only items of that class.
pub fn worklist(
    app: &App,
    entity: &EntityFiscalCode,
    after: Option<PositionId>,
    class: Option<&str>,
) -> Result<Worklist, ServiceError> {
    let mut items = Vec::new();
    if after.is_none() {
        flow_items(app, entity, &mut items)?;
        for m in super::treasury::list(app, entity, 100_000)? {
            if m.class.is_anomaly() {
                items.push(WorkItem {
                    subject: "movement",
                    class: m.class.name(),
                    amount: m.movement.amount,
                    iupd: None,
                    nav: None,
                    transfer: None,
                    flow_id: None,
                    reference: Some(m.movement.reference.clone()),
                    detail: format!("{} booked {}", m.movement.remittance, m.movement.booked),
                });
            }
        }
    }
    let today = app.clock.today();
    let tolerances = app.config.reconciliation.tolerances();
    let mut from = after.map_or(0, |a| a.saturating_add(1));
    let mut scanned = 0;
    let next = loop {
        let chunk = app.store.positions(from, SCAN_CHUNK)?;
        let exhausted = chunk.len() < SCAN_CHUNK;
        for (id, p) in chunk {
            scanned += 1;
            from = id.saturating_add(1);
            if &p.entity != entity || !p.has_payments() {
                continue;
            }
            for (o, inst) in p.notices() {
                let account = p.account_of(o, inst);
                for (slot, t) in inst.terms.transfers.iter().enumerate() {
                    let c = classify_transfer(&p, o, inst, slot, today, tolerances);
                    if !c.is_anomaly() {
                        continue;
                    }
                    let amount = match c {
                        reconcile::TransferClass::RefundDue => account.refund()[slot].get(),
                        _ => account.paid[slot].get(),
                    };
                    items.push(WorkItem {
                        subject: "transfer",
                        class: c.name(),
                        amount,
                        iupd: Some(p.iupd.to_string()),
                        nav: Some(inst.terms.nav.to_string()),
                        transfer: Some(t.id),
                        flow_id: None,
                        reference: inst
                            .receipts()
                            .last()
                            .and_then(|r| r.receipt_id())
                            .map(str::to_owned),
                        detail: format!("{} to {}", t.category, t.beneficiary),
                    });
                }
            }
        }
        if exhausted {
            break None;
        }
        if scanned >= SCAN_BUDGET {
            break Some(from.saturating_sub(1));
        }
    };
    if let Some(class) = class {
        items.retain(|i| i.class == class);
    }
    Ok(Worklist { items, next })
}

/// Flows that could not be read, whose totals disagree, and the anomalous rows of each flow's
/// latest revision.
fn flow_items(
    app: &App,
    entity: &EntityFiscalCode,
    items: &mut Vec<WorkItem>,
) -> Result<(), ServiceError> {
    for f in super::flows::views(app, entity, 100_000)? {
        if f.superseded {
            continue;
        }
        let item = |class, amount, detail: String| WorkItem {
            subject: "flow",
            class,
            amount,
            iupd: None,
            nav: None,
            transfer: None,
            flow_id: Some(f.flow_id.clone()),
            reference: None,
            detail,
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
                subject: "flow-row",
                class: r.class.name(),
                amount: r.row.amount.get(),
                iupd: r.iupd.as_ref().map(ToString::to_string),
                nav: r.nav.as_ref().map(ToString::to_string),
                transfer: Some(r.row.transfer),
                flow_id: Some(f.flow_id.clone()),
                reference: Some(r.row.iur.clone()),
                detail: format!("IUV {} paid {}", r.row.iuv, r.row.date),
            });
        }
    }
    Ok(())
}

//! Treasury statements brought by hand (camt.053 through the REST API for now): each movement
//! stored once, classified on read against the flows held, and, when it is a flow's credit for
//! the flow's total, a `Credited` fact for every transfer the flow reported.

use std::collections::BTreeMap;

use mpay_common::ids::EntityFiscalCode;
use mpay_common::ledger::{Actor, Change, Event};
use mpay_common::reconcile::{
    self, BadRow, Movement, MovementClass, MovementView, Remittance, RowOutcome, classify_movement,
};
use serde::Serialize;

use super::ServiceError;
use crate::App;
use crate::config::EntityConfig;
use crate::store::{MovementRecord, PositionId};
use crate::treasury::{camt, csv};

#[derive(Clone, Debug, Serialize)]
pub struct StatementView {
    pub statement: String,
    /// Movements stored now; the others were already held.
    pub new: usize,
    pub held: usize,
    pub bad_entries: Vec<BadRow>,
    pub classes: BTreeMap<&'static str, usize>,
}

/// The latest revision of flow `id` of the entity, if held and readable.
fn latest_flow(
    app: &App,
    cf: &EntityFiscalCode,
    id: &str,
) -> Result<Option<reconcile::Flow>, ServiceError> {
    Ok(app
        .store
        .flow_revisions(cf, id)?
        .into_iter()
        .filter_map(|r| r.flow)
        .next_back())
}

/// Receives a camt.053 statement for `entity`.
pub fn receive(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    raw: &[u8],
) -> Result<StatementView, ServiceError> {
    let cf = &entity.fiscal_code;
    let text = std::str::from_utf8(raw)
        .map_err(|e| ServiceError::field("document", format!("not UTF-8 text: {e}")))?;
    // XML is a camt.053; anything else is the giornale di cassa, if the entity says how to
    // read it.
    let xml = text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('<');
    let parsed = match (&entity.treasury_csv, xml) {
        (_, true) => camt::parse(text),
        (Some(layout), false) => {
            let account = entity.bank_accounts.first().map(ToString::to_string);
            csv::parse(text, layout, account.as_deref().unwrap_or(""))
        }
        (None, false) => Err(
            "document: not XML, and entities.treasury_csv does not say how \
                              to read a CSV giornale di cassa for this entity"
                .into(),
        ),
    };
    let statement = parsed.map_err(|e| {
        let (field, reason) = e.split_once(": ").unwrap_or(("document", e.as_str()));
        ServiceError::field(field.to_owned(), reason.to_owned()).with_code("STATEMENT_INVALID")
    })?;
    let now = app.clock.now();
    let mut classes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut records = Vec::new();
    for m in &statement.movements {
        let flow = match reconcile::parse_remittance(&m.remittance) {
            Remittance::Flow { id, .. } => latest_flow(app, cf, &id)?,
            _ => None,
        };
        let class = classify_movement(m, flow.as_ref());
        *classes.entry(class.name()).or_default() += 1;
        let credits = match (&class, &flow) {
            (MovementClass::FlowCredit { flow_id }, Some(f)) => {
                credits(app, cf, actor, flow_id, f, m)?
            }
            _ => Vec::new(),
        };
        records.push((
            MovementRecord {
                entity: cf.clone(),
                statement: statement.message_id.clone(),
                movement: m.clone(),
                received_at: now,
                source: actor.to_string(),
                credited: 0,
                commit: 0,
            },
            credits,
        ));
    }
    let total = records.len();
    let new = app.store.record_movements(records)?;
    Ok(StatementView {
        statement: statement.message_id,
        new,
        held: total - new,
        bad_entries: statement.bad_entries,
        classes,
    })
}

/// A `Credited` fact for each transfer a flow's rows report (revocations excluded).
pub(crate) fn credits(
    app: &App,
    cf: &EntityFiscalCode,
    actor: &Actor,
    flow_id: &str,
    f: &reconcile::Flow,
    m: &Movement,
) -> Result<Vec<(PositionId, Event)>, ServiceError> {
    let mut out = Vec::new();
    let now = app.clock.now();
    for r in &f.rows {
        if r.outcome == RowOutcome::Revoked {
            continue;
        }
        let Some((id, _, nav)) = super::flows::row_notice(app, cf, &r.iuv)? else {
            continue;
        };
        let change = Change::Credited {
            nav,
            transfer: r.transfer,
            flow_id: Some(flow_id.to_owned()),
            reference: m.reference.clone(),
            amount: r.amount,
            date: m.booked,
        };
        out.push((
            id,
            Event::new(now, actor.clone(), change).with_reason(format!("credit {}", m.reference)),
        ));
    }
    Ok(out)
}

/// The entity's movements, each classified now.
pub fn list(
    app: &App,
    cf: &EntityFiscalCode,
    limit: usize,
) -> Result<Vec<MovementView>, ServiceError> {
    let mut out = Vec::new();
    for r in app.store.movements(cf, limit)? {
        let flow = match reconcile::parse_remittance(&r.movement.remittance) {
            Remittance::Flow { id, .. } => latest_flow(app, cf, &id)?,
            _ => None,
        };
        let class = classify_movement(&r.movement, flow.as_ref());
        out.push(MovementView {
            movement: r.movement,
            statement: r.statement,
            received_at: r.received_at,
            credited: r.credited,
            class,
        });
    }
    Ok(out)
}

//! Treasury statements (camt.053, or the giornale di cassa as CSV; through the REST API or the
//! inbox): each movement stored once, classified on read against the flows held, and, when it is a flow's credit for
//! the flow's total, a `Credited` fact for every transfer the flow reported.

use std::collections::{BTreeMap, HashMap, HashSet};

use mpay_common::ids::EntityFiscalCode;
use mpay_common::ledger::{Actor, Change, Event};
use mpay_common::reconcile::{
    self, BadRow, Movement, MovementClass, MovementView, RowOutcome, classify_movement,
};
use serde::Serialize;

use super::ServiceError;
use crate::App;
use crate::config::EntityConfig;
use crate::store::{MovementRecord, PositionId};
use crate::treasury::{camt, csv};

/// Ledger facts a statement commits at once at most (beyond one movement's own).
const FACTS_PER_COMMIT: usize = 5_000;

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
    let mut held = Held::of(app, cf)?;
    for m in &statement.movements {
        let known = !held.keys.insert((m.account.clone(), m.reference.clone()));
        let named = reconcile::credited_flow(m);
        let flow = match &named {
            Some(id) => latest_flow(app, cf, id)?,
            None => None,
        };
        let settled = match &named {
            Some(id) if !known => {
                let sum = held.settled.entry(id.clone()).or_default();
                *sum += m.amount;
                *sum
            }
            Some(id) => held.settled.get(id).copied().unwrap_or(m.amount),
            None => m.amount,
        };
        let class = classify_movement(m, flow.as_ref(), settled);
        *classes.entry(class.name()).or_default() += 1;
        // The credit that completes its flow's total carries the flow's `Credited` facts,
        // once.
        let credits = match (&class, &flow) {
            (MovementClass::FlowCredit { flow_id }, Some(f))
                if !known && held.credited.insert(flow_id.clone()) =>
            {
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
    // Each movement commits with its facts; a statement of many flows' credits commits a few
    // thousand facts at a time, so its memory stays bounded.
    let mut new = 0;
    let mut batch = Vec::new();
    let mut facts = 0;
    for (record, credits) in records {
        facts += credits.len();
        batch.push((record, credits));
        if facts >= FACTS_PER_COMMIT {
            new += app.store.record_movements(std::mem::take(&mut batch))?;
            facts = 0;
        }
    }
    new += app.store.record_movements(batch)?;
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

/// What the entity's stored movements say of the flows they credit.
#[derive(Default)]
struct Held {
    /// (account, reference) of every stored movement.
    keys: HashSet<(String, String)>,
    /// Per flow, the sum of the credits naming it.
    settled: HashMap<String, i64>,
    /// Flows whose credits already added their `Credited` facts.
    credited: HashSet<String>,
}

impl Held {
    fn of(app: &App, cf: &EntityFiscalCode) -> Result<Held, ServiceError> {
        let mut held = Held::default();
        for r in app.store.movements(cf, usize::MAX)? {
            held.add(&r);
        }
        Ok(held)
    }

    fn add(&mut self, r: &MovementRecord) {
        let m = &r.movement;
        self.keys.insert((m.account.clone(), m.reference.clone()));
        if let Some(id) = reconcile::credited_flow(m) {
            *self.settled.entry(id.clone()).or_default() += m.amount;
            if r.credited > 0 {
                self.credited.insert(id);
            }
        }
    }
}

/// The entity's movements, each classified now.
pub fn list(
    app: &App,
    cf: &EntityFiscalCode,
    limit: usize,
) -> Result<Vec<MovementView>, ServiceError> {
    let records = app.store.movements(cf, limit)?;
    let mut held = Held::default();
    for r in &records {
        held.add(r);
    }
    let mut out = Vec::new();
    for r in records {
        let named = reconcile::credited_flow(&r.movement);
        let (flow, settled) = match &named {
            Some(id) => (latest_flow(app, cf, id)?, held.settled[id]),
            None => (None, r.movement.amount),
        };
        let class = classify_movement(&r.movement, flow.as_ref(), settled);
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

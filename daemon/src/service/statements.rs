//! The citizen statement (estratto conto): every position of one debtor, read from the ledger,
//! for one entity or across every entity served (the REST API's statements, the console's).
//! Positions are found through the store's debtor index; each one's ledger is
//! folded again here, event by event, so that every payment, reduction, plan change,
//! cancellation and restore is listed with its date and reason, and a payment is known to be a
//! double payment from the state it found. Notices, totals and refunds come from the fold's
//! accounts, and a notice has a QR code exactly when the station would take it. Positions come newest first (by the time
//! they were loaded); notices in the order of their options, history oldest first.

use jiff::civil::Date;
use mpay_common::ids::{DebtorCode, EntityFiscalCode, IdError};
use mpay_common::ledger::{Arrival, Change, PaidVia, Position};

use super::ServiceError;
use crate::App;
use crate::store::{PositionId, StoreError};

pub use mpay_common::statement::*;

/// The debtor a statement is asked for: any fiscal code but the anonymous one.
pub fn debtor_of(text: &str) -> Result<DebtorCode, ServiceError> {
    let code: DebtorCode = text
        .parse()
        .map_err(|e: IdError| ServiceError::field("debtor", e.to_string()))?;
    if code == DebtorCode::Anonymous {
        return Err(ServiceError::field(
            "debtor",
            "there is no statement for anonymous debtors (ANONIMO)",
        ));
    }
    Ok(code)
}

fn entity_ref(app: &App, code: &EntityFiscalCode) -> EntityRef {
    EntityRef {
        fiscal_code: code.clone(),
        name: app
            .config
            .entity(code)
            .map(|e| e.name.clone())
            .unwrap_or_default(),
    }
}

/// The statement of `debtor`, limited to the entity `scope` (None: every entity served).
pub fn statement(
    app: &App,
    scope: Option<&EntityFiscalCode>,
    debtor: &DebtorCode,
) -> Result<Statement, ServiceError> {
    let today = app.clock.today();
    // The limit is per entity: one authority's positions never push another's out of a
    // citizen's statement (and its totals).
    let entities: Vec<&EntityFiscalCode> = match scope {
        Some(cf) => vec![cf],
        None => app.config.entities.iter().map(|e| &e.fiscal_code).collect(),
    };
    let mut found = Vec::new();
    let mut truncated = false;
    for cf in entities {
        let mut of = app.store.by_debtor(debtor, Some(cf), MAX_POSITIONS + 1)?;
        truncated |= of.len() > MAX_POSITIONS;
        of.truncate(MAX_POSITIONS);
        found.extend(of);
    }
    let mut positions: Vec<(PositionId, StatementPosition)> = Vec::new();
    for (id, p) in found {
        positions.push((id, position(app, id, &p.entity, today)?));
    }
    // Newest first: by load time, then by position id (allocated in sequence).
    positions.sort_by(|(a_id, a), (b_id, b)| {
        b.created_at.cmp(&a.created_at).then_with(|| b_id.cmp(a_id))
    });
    let sum = |f: fn(&StatementPosition) -> i64| {
        money(
            positions
                .iter()
                .map(|(_, p)| f(p))
                .fold(0i64, i64::saturating_add),
        )
    };
    let totals = Totals {
        positions: positions.len(),
        open_amount: sum(|p| p.open_amount.cents),
        paid_pagopa: sum(|p| p.paid_pagopa.cents),
        paid_offline: sum(|p| p.paid_offline.cents),
        refunds_due: sum(|p| p.refunds_due.cents),
    };
    Ok(Statement {
        debtor: debtor.to_string(),
        entity: scope.map(|cf| entity_ref(app, cf)),
        date: today,
        generated_at: app.clock.now(),
        totals,
        positions: positions.into_iter().map(|(_, p)| p).collect(),
        truncated,
    })
}

/// One position's statement, from its ledger folded event by event.
fn position(
    app: &App,
    id: PositionId,
    entity: &EntityFiscalCode,
    today: Date,
) -> Result<StatementPosition, ServiceError> {
    let corrupt = |why: String| -> ServiceError {
        StoreError::Corrupt(format!("ledger of position {id}: {why}")).into()
    };
    let ledger = app.store.ledger(id)?;
    let mut events = ledger.iter().map(|s| &s.event);
    let first = events.next().ok_or_else(|| corrupt("empty".into()))?;
    let mut p = Position::load_stored(entity.clone(), first).map_err(|e| corrupt(e.to_string()))?;
    let mut payments = Vec::new();
    let mut variations = Vec::new();
    for event in events {
        p.replay(event).map_err(|e| corrupt(e.to_string()))?;
        let (at, reason) = (event.at, event.reason.clone());
        // The payment this event just recorded, as the fold saw it arrive.
        let recorded = |nav| {
            p.instalment(nav)
                .and_then(|i| i.payments.last())
                .map(|pay| pay.arrival)
                .unwrap_or(Arrival::Due)
        };
        match &event.change {
            Change::PaidViaPagoPa {
                nav,
                receipt_id,
                amount,
                psp,
                paid_at,
                ..
            } => payments.push(PaymentLine::PagoPa {
                nav: nav.clone(),
                paid_at: *paid_at,
                psp: psp.clone(),
                amount: (*amount).into(),
                receipt_id: receipt_id.clone(),
                double_payment: recorded(nav) != Arrival::Due,
            }),
            Change::PaidOffline {
                nav,
                channel,
                date,
                amount,
                reference,
                ..
            } => payments.push(PaymentLine::Offline {
                nav: nav.clone(),
                channel: *channel,
                date: *date,
                amount: (*amount).into(),
                reference: reference.clone(),
                recorded_at: at,
                reason,
                double_payment: recorded(nav) != Arrival::Due,
            }),
            Change::Reduced {
                nav,
                old_amount,
                new_amount,
                act,
                ..
            } => variations.push(Variation::Reduced {
                at,
                reason,
                nav: nav.clone(),
                old_amount: (*old_amount).into(),
                new_amount: (*new_amount).into(),
                act: act.clone(),
            }),
            Change::Rescheduled { replaced, plan } => variations.push(Variation::Rescheduled {
                at,
                reason,
                replaced: replaced.clone(),
                new: plan.instalments.iter().map(|i| i.nav.clone()).collect(),
            }),
            Change::Cancelled => variations.push(Variation::Cancelled { at, reason }),
            Change::Restored => variations.push(Variation::Restored { at, reason }),
            Change::Updated(_) => variations.push(Variation::Updated { at, reason }),
            // Not the debtor's business: who the debtor is, reconciliation, operators' notes.
            Change::Loaded(_)
            | Change::DebtorUpdated(_)
            | Change::Reported { .. }
            | Change::Credited { .. }
            | Change::OperatorAdjustment { .. } => {}
        }
    }
    let mut notices = Vec::new();
    for (o, i) in p.notices() {
        let account = p.account_of(o, i);
        let payable = p.payable(i.nav(), today).and_then(Result::ok);
        notices.push(StatementNotice {
            nav: i.terms.nav.clone(),
            iuv: i.terms.iuv.clone(),
            option: o,
            option_kind: p.options[o].kind,
            description: i.terms.description.clone(),
            amount: i.terms.amount.into(),
            original_amount: i.original_amount.into(),
            due_amount: account.total_open().into(),
            paid_amount: account.total_paid().into(),
            refund_amount: account.total_refund().into(),
            due: i.terms.due,
            status: p.instalment_status(i, today),
            // The payable rule's: a QR code only for what the station will take.
            qr: payable.map(|d| format!("PAGOPA|002|{}|{}|{}", i.terms.nav, p.entity, d.amount.0)),
        });
    }
    let paid = |pagopa: bool| {
        money(
            p.instalments()
                .flat_map(|i| i.payments.iter())
                .filter(|pay| pay.via_pagopa() == pagopa)
                .map(|pay| pay.amount.0)
                .fold(0i64, i64::saturating_add),
        )
    };
    let double_payments: Vec<DoublePaymentLine> = p
        .double_payments()
        .map(|(nav, pay)| DoublePaymentLine {
            nav: nav.clone(),
            receipt_id: pay.receipt_id().map(str::to_string),
            reference: match &pay.via {
                PaidVia::Offline { reference, .. } => Some(reference.clone()),
                PaidVia::PagoPa { .. } => None,
            },
            amount: pay.amount.into(),
            found: pay.arrival,
        })
        .collect();
    let refunds = p
        .refunds()
        .into_iter()
        .map(|r| RefundLine {
            nav: r.nav,
            transfer: r.transfer,
            beneficiary: r.beneficiary,
            amount: r.amount.into(),
        })
        .collect();
    Ok(StatementPosition {
        entity: entity_ref(app, &p.entity),
        iupd: p.iupd.clone(),
        kind: p.kind.clone(),
        description: p.description.clone(),
        status: p.status(today),
        validity: p.validity,
        expiry: p.expiry,
        created_at: p.created_at,
        updated_at: p.updated_at,
        open_amount: p.open_amount().into(),
        paid_pagopa: paid(true),
        paid_offline: paid(false),
        refunds_due: p.refunds_due().into(),
        notices,
        payments,
        variations,
        double_payments,
        refunds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpay_common::money::Cents;

    #[test]
    fn money_is_cents_and_text() {
        assert_eq!(
            Money::from(Cents(123_456)),
            Money {
                cents: 123_456,
                text: "1234.56".into()
            }
        );
        assert_eq!(money(5).text, "0.05");
    }

    #[test]
    fn anonymous_debtors_have_no_statement() {
        let e = debtor_of("ANONIMO").expect_err("refused");
        assert_eq!(e.field.as_deref(), Some("debtor"));
        assert!(debtor_of("not-a-code").is_err());
        assert!(debtor_of("RSSMRA80A01H501U").is_ok());
    }
}

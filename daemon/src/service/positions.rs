//! Debt positions: the one load path (the REST API's PUT and the bulk files), reads, and every
//! variation (cancel, restore, debtor, reduction, offline payment, rescheduling). Each builds a
//! ledger event and lets the store apply it (`Position::apply` holds the rules); a call returns
//! once the commit is durable.

use mpay_common::ids::{EntityFiscalCode, Iupd, Nav};
use mpay_common::ledger::{Actor, Change, Event, PaidVia, Position, split};
use mpay_common::model::{
    Debtor, Instalment, MAX_TEXT, OptionKind, PaymentOption, PositionData, Transfer, TransferTarget,
};
use mpay_common::money::Cents;
use mpay_common::requests::{
    InstalmentIn, OfflinePaymentIn, PositionIn, ReductionIn, RescheduleIn, TransferIn,
};

use super::ServiceError;
use crate::App;
use crate::config::EntityConfig;
use crate::store::{PositionId, StoredEvent};

/// A required free text of at most `max` characters.
/// A required free-text field of a request: the model's one rule for text.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    Ok(mpay_common::model::text(field, value, max, true)?)
}

/// The position `iupd` of `entity`.
pub fn find(
    app: &App,
    entity: &EntityFiscalCode,
    iupd: &Iupd,
) -> Result<(PositionId, Position), ServiceError> {
    app.store
        .by_iupd(entity, iupd)?
        .ok_or_else(|| ServiceError::not_found(format!("no position {iupd} for entity {entity}")))
}

/// The position's ledger, oldest event first.
pub fn ledger(
    app: &App,
    entity: &EntityFiscalCode,
    iupd: &Iupd,
) -> Result<Vec<StoredEvent>, ServiceError> {
    let (id, _) = find(app, entity, iupd)?;
    Ok(app.store.ledger(id)?)
}

/// Appends the event `build` makes from the current state; answers with the new state.
fn vary(
    app: &App,
    entity: &EntityFiscalCode,
    iupd: &Iupd,
    nav_field: Option<&str>,
    build: impl FnOnce(&Position) -> Result<Option<Event>, ServiceError>,
) -> Result<Position, ServiceError> {
    let (id, position) = find(app, entity, iupd)?;
    match build(&position)? {
        // Nothing to record.
        None => Ok(position),
        Some(event) => app
            .store
            .append(id, event)
            .map_err(|e| ServiceError::write(e, nav_field)),
    }
}

fn event(app: &App, actor: &Actor, change: Change, reason: Option<String>) -> Event {
    let e = Event::new(app.clock.now(), actor.clone(), change);
    match reason {
        Some(r) => e.with_reason(r),
        None => e,
    }
}

/// Cancels the position: none of its notices is payable any more.
pub fn cancel(
    app: &App,
    entity: &EntityFiscalCode,
    actor: &Actor,
    iupd: &Iupd,
    reason: String,
) -> Result<Position, ServiceError> {
    with_reason(app, entity, actor, iupd, Change::Cancelled, reason)
}

/// Undoes a cancellation: the same notices are payable again.
pub fn restore(
    app: &App,
    entity: &EntityFiscalCode,
    actor: &Actor,
    iupd: &Iupd,
    reason: String,
) -> Result<Position, ServiceError> {
    with_reason(app, entity, actor, iupd, Change::Restored, reason)
}

/// A change that needs nothing but a reason.
fn with_reason(
    app: &App,
    entity: &EntityFiscalCode,
    actor: &Actor,
    iupd: &Iupd,
    change: Change,
    reason: String,
) -> Result<Position, ServiceError> {
    text("reason", &reason, MAX_TEXT)?;
    let e = event(app, actor, change, Some(reason));
    vary(app, entity, iupd, None, |_| Ok(Some(e)))
}

/// Corrects the debtor's data; the same debtor again records nothing.
pub fn update_debtor(
    app: &App,
    entity: &EntityFiscalCode,
    actor: &Actor,
    iupd: &Iupd,
    debtor: Debtor,
    reason: Option<String>,
) -> Result<Position, ServiceError> {
    vary(app, entity, iupd, None, |p| {
        Ok((p.debtor != debtor).then(|| event(app, actor, Change::DebtorUpdated(debtor), reason)))
    })
}

/// Sgravio: notice `nav` of the position now asks `body.new_amount`.
pub fn reduce(
    app: &App,
    entity: &EntityFiscalCode,
    actor: &Actor,
    iupd: &Iupd,
    nav: &Nav,
    body: ReductionIn,
) -> Result<Position, ServiceError> {
    text("act", &body.act, 35)?;
    text("reason", &body.reason, MAX_TEXT)?;
    if body.new_amount < Cents::ZERO {
        return Err(ServiceError::field("new_amount", "must not be negative"));
    }
    vary(app, entity, iupd, None, |p| {
        let inst = p.instalment(nav).ok_or_else(|| {
            ServiceError::not_found(format!("notice {nav} is not part of position {}", p.iupd))
        })?;
        let current = inst.terms.amount;
        let transfer_amounts = match body.transfer_amounts {
            Some(amounts) => amounts,
            // Not a reduction: the ledger says so with the amounts.
            None if body.new_amount >= current => {
                inst.terms.transfers.iter().map(|t| t.amount).collect()
            }
            None if body.new_amount == Cents::ZERO => vec![Cents::ZERO; inst.terms.transfers.len()],
            None => {
                let cut = Cents(current.0 - body.new_amount.0);
                split::reduction(&inst.amounts(), &inst.stamps(), cut).ok_or_else(|| {
                    ServiceError::field(
                        "new_amount",
                        format!(
                            "{} would leave less than the notice's revenue stamps: reduce to \
                             zero, or give transfer_amounts",
                            body.new_amount
                        ),
                    )
                })?
            }
        };
        let change = Change::Reduced {
            nav: nav.clone(),
            old_amount: current,
            new_amount: body.new_amount,
            transfer_amounts,
            act: body.act,
        };
        Ok(Some(event(app, actor, change, Some(body.reason))))
    })
}

/// Money for notice `nav` collected outside pagoPA.
pub fn pay_offline(
    app: &App,
    entity: &EntityFiscalCode,
    actor: &Actor,
    iupd: &Iupd,
    nav: &Nav,
    body: OfflinePaymentIn,
) -> Result<Position, ServiceError> {
    text("reference", &body.reference, MAX_TEXT)?;
    if let Some(reason) = &body.reason {
        text("reason", reason, MAX_TEXT)?;
    }
    // Money collected today or earlier, within the ten years a debt can be claimed.
    let today = app.clock.today();
    let oldest = today.saturating_sub(jiff::Span::new().years(10));
    if body.date > today || body.date < oldest {
        return Err(ServiceError::field(
            "date",
            format!(
                "{}: a payment is dated between {oldest} and today",
                body.date
            ),
        ));
    }
    vary(app, entity, iupd, None, |p| {
        if p.instalment(nav).is_none() {
            return Err(ServiceError::not_found(format!(
                "notice {nav} is not part of position {}",
                p.iupd
            )));
        }
        // The same payment posted again (same channel and reference, same notice, amount and
        // day) is a retry: nothing to record. The ledger refuses any other reuse.
        let retry = p.instalment(nav).is_some_and(|i| {
            i.payments.iter().any(|pay| {
                pay.amount == body.amount
                    && matches!(&pay.via, PaidVia::Offline { channel, date, reference }
                        if *channel == body.channel && *date == body.date
                            && *reference == body.reference)
            })
        });
        if retry {
            return Ok(None);
        }
        let change = Change::PaidOffline {
            nav: nav.clone(),
            channel: body.channel,
            date: body.date,
            amount: body.amount,
            reference: body.reference,
            transfer_amounts: body.transfer_amounts,
        };
        Ok(Some(event(app, actor, change, body.reason)))
    })
}

/// Rateizzazione: the `replaced` notices stop being payable and a new plan takes their place.
pub fn reschedule(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    iupd: &Iupd,
    body: RescheduleIn,
) -> Result<Position, ServiceError> {
    text("reason", &body.reason, MAX_TEXT)?;
    if body.replaced.is_empty() {
        return Err(ServiceError::field(
            "replaced",
            "at least one notice to replace",
        ));
    }
    if body.instalments.is_empty() {
        return Err(ServiceError::field(
            "instalments",
            "at least one instalment",
        ));
    }
    if let Some(act) = &body.act {
        text("act", act, 35)?;
    }
    let today = app.clock.today();
    for (i, inst) in body.instalments.iter().enumerate() {
        if inst.due < today {
            return Err(ServiceError::field(
                format!("instalments[{i}].due"),
                format!(
                    "{} is in the past: a plan's instalments fall due from today on",
                    inst.due
                ),
            ));
        }
    }
    vary(app, &entity.fiscal_code, iupd, Some("replaced"), |p| {
        // What is open on the replaced notices, per option: the plan takes the place of one
        // option's notices (the others are alternatives it withdraws).
        let mut open: std::collections::BTreeMap<usize, i64> = Default::default();
        for (i, nav) in body.replaced.iter().enumerate() {
            let Some((o, _)) = p.locate(nav) else {
                return Err(ServiceError::field(
                    format!("replaced[{i}]"),
                    format!("notice {nav} is not part of position {}", p.iupd),
                ));
            };
            if let Some(inst) = p.instalment(nav) {
                *open.entry(o).or_default() += p.due(inst).get();
            }
        }
        let total: i64 = body.instalments.iter().map(|i| i.amount.get()).sum();
        let total_differs = body.act.is_none() && !open.values().any(|o| *o == total);
        let plan_total = || {
            ServiceError::field(
                "instalments",
                format!(
                    "the plan totals {}, the replaced notices have {} open: match it, or name \
                     the act that grants the difference (`act`)",
                    Cents(total),
                    open.values()
                        .map(|c| Cents(*c).to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )
            .with_code("PLAN_TOTAL")
        };
        let resolver = Resolver { app, entity };
        let field = |i: usize| format!("instalments[{i}]");
        let wanted: Vec<&InstalmentIn> = body.instalments.iter().collect();
        let omitted = body
            .instalments
            .iter()
            .filter(|i| i.transfers.is_empty())
            .count();
        let shares = match omitted {
            0 => None,
            n if n == body.instalments.len() => {
                let amounts: Vec<Cents> = body.instalments.iter().map(|i| i.amount).collect();
                Some(split::plan(p, &body.replaced, &amounts)?)
            }
            _ => {
                return Err(ServiceError::field(
                    "instalments",
                    "give the transfers of every instalment, or of none (each beneficiary \
                     then keeps its share of what the plan replaces)",
                ));
            }
        };
        let plan = |mut numbers: Numbers<'_>| -> Result<PaymentOption, ServiceError> {
            let navs = resolver.navs(&field, &wanted, &[], &mut numbers)?;
            let mut instalments = body
                .instalments
                .iter()
                .cloned()
                .zip(navs)
                .enumerate()
                .map(|(i, (inst, nav))| resolver.instalment(&field(i), nav, inst))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(shares) = &shares {
                for (inst, transfers) in instalments.iter_mut().zip(shares) {
                    inst.transfers = transfers.clone();
                }
            }
            let plan = PaymentOption {
                kind: OptionKind::Plan,
                instalments,
            };
            // Field paths of the plan as the request names them.
            plan.validate("plan", &p.entity).map_err(|e| {
                ServiceError::field(
                    e.field.replacen("plan.instalments", "instalments", 1),
                    e.reason,
                )
            })?;
            Ok(plan)
        };
        let rescheduled = |plan| Change::Rescheduled {
            replaced: body.replaced.clone(),
            plan,
        };
        // Try the plan with provisional notice numbers first: a refused plan must not take
        // numbers from the entity's sequence.
        let mut trial = p.clone();
        trial
            .apply(&event(
                app,
                actor,
                rescheduled(plan(Numbers::Provisional)?),
                None,
            ))
            .map_err(|e| ServiceError::ledger(e, Some("replaced")))?;
        // The position's own refusals first (a paid notice is not a question of totals).
        if total_differs {
            return Err(plan_total());
        }
        let change = rescheduled(plan(Numbers::Reserve)?);
        Ok(Some(event(app, actor, change, Some(body.reason.clone()))))
    })
}

/// Moves the entity's sequence past numbers whose notices the authority already loaded with its
/// own NAVs, so that the next generated ones are free (an authority that numbers some notices
/// itself takes the next numbers of the same sequence). Each skipped number is taken for good.
pub fn skip_taken_numbers(app: &App, entity: &EntityConfig) -> Result<(), ServiceError> {
    let cf = &entity.fiscal_code;
    for _ in 0..10_000 {
        let next = app.store.peek_sequence(cf)?;
        let Ok(nav) = entity.iuv.notice(next) else {
            return Ok(());
        };
        if app.store.by_iuv(cf, &nav.iuv())?.is_none() {
            return Ok(());
        }
        app.store.reserve_sequence(cf, 1)?;
    }
    Ok(())
}

/// Where an entity's money goes when the request names no account: its first bank account, else
/// its first postal account.
pub fn default_target(entity: &EntityConfig) -> Option<TransferTarget> {
    if let Some(iban) = entity.bank_accounts.first() {
        Some(TransferTarget::Bank(iban.clone()))
    } else {
        entity
            .postal_accounts
            .first()
            .map(|iban| TransferTarget::Postal(iban.clone()))
    }
}

/// Turns the authority's instalments into the model's, filling in what it may omit.
struct Resolver<'a> {
    app: &'a App,
    entity: &'a EntityConfig,
}

impl Resolver<'_> {
    /// Notice numbers for `instalments`, in order: the authority's own (checked to be numbered
    /// under this entity's settings), else `previous[i]` (what the same slot had, so that sending
    /// the same body twice changes nothing), else fresh ones from the entity's sequence.
    fn navs(
        &self,
        field: &dyn Fn(usize) -> String,
        instalments: &[&InstalmentIn],
        previous: &[Option<Nav>],
        numbers: &mut Numbers<'_>,
    ) -> Result<Vec<Nav>, ServiceError> {
        let settings = &self.entity.iuv;
        let mut navs: Vec<Option<Nav>> = Vec::with_capacity(instalments.len());
        for (i, inst) in instalments.iter().enumerate() {
            let nav = match (&inst.nav, &inst.iuv) {
                (Some(nav), Some(iuv)) if &nav.iuv() != iuv => {
                    return Err(ServiceError::field(
                        format!("{}.iuv", field(i)),
                        format!("IUV {iuv} is not the IUV of NAV {nav} ({})", nav.iuv()),
                    ));
                }
                (Some(nav), _) => Some(nav.clone()),
                (None, Some(iuv)) => Some(settings.nav_for_iuv(iuv).map_err(|e| {
                    ServiceError::field(format!("{}.iuv", field(i)), e.to_string())
                })?),
                (None, None) => previous.get(i).cloned().flatten(),
            };
            if let Some(nav) = &nav
                && !settings.owns(nav)
            {
                return Err(ServiceError::field(
                    format!("{}.nav", field(i)),
                    format!(
                        "{nav} is not numbered under this entity's settings (aux digit {}, \
                         segregation code {})",
                        settings.aux,
                        settings
                            .segregation_code
                            .map_or_else(|| "none".into(), |c| format!("{c:02}"))
                    ),
                ));
            }
            navs.push(nav);
        }
        let missing = navs.iter().filter(|n| n.is_none()).count() as u64;
        let mut fresh = match (missing, numbers) {
            (0, _) => 0..0,
            // A draft to validate the body with: numbers from the top of the sequence, which the
            // entity never reaches and which are never stored.
            (n, Numbers::Provisional) => PROVISIONAL - n..PROVISIONAL,
            (n, Numbers::Reserve) => {
                skip_taken_numbers(self.app, self.entity)?;
                self.app
                    .store
                    .reserve_sequence(&self.entity.fiscal_code, n)?
            }
            (n, Numbers::From(range)) => {
                let start = range.start;
                let end = start
                    .checked_add(n)
                    .filter(|end| *end <= range.end)
                    .ok_or_else(|| ServiceError::field("options", "notice numbering failed"))?;
                range.start = end;
                start..end
            }
        };
        navs.into_iter()
            .map(|n| match n {
                Some(n) => Ok(n),
                None => {
                    let seq = fresh.next().unwrap_or_default();
                    settings
                        .notice(seq)
                        .map_err(|e| ServiceError::conflict("NUMBERING", e.to_string()))
                }
            })
            .collect()
    }

    fn transfer(&self, field: &str, index: usize, t: TransferIn) -> Result<Transfer, ServiceError> {
        let beneficiary = t
            .beneficiary
            .unwrap_or_else(|| self.entity.fiscal_code.clone());
        let ours = self.app.config.entity(&beneficiary);
        let target = match (t.target, ours) {
            (Some(target), Some(cfg)) => {
                let (owned, list) = match &target {
                    TransferTarget::Bank(iban) => (
                        cfg.bank_accounts.contains(iban) || cfg.postal_accounts.contains(iban),
                        "bank_accounts",
                    ),
                    TransferTarget::Postal(iban) => {
                        (cfg.postal_accounts.contains(iban), "postal_accounts")
                    }
                    TransferTarget::RevenueStamp(_) => (true, ""),
                };
                if !owned {
                    return Err(ServiceError::field(
                        format!("{field}.target"),
                        format!(
                            "the account is not one of entity {beneficiary}'s {list} registered \
                             with the node"
                        ),
                    ));
                }
                target
            }
            (Some(target), None) => target,
            (None, Some(cfg)) => default_target(cfg).ok_or_else(|| {
                ServiceError::field(
                    format!("{field}.target"),
                    format!("required: entity {beneficiary} has no account configured"),
                )
            })?,
            (None, None) => {
                return Err(ServiceError::field(
                    format!("{field}.target"),
                    format!(
                        "required: {beneficiary} is not an entity served here, so mpay knows no \
                         account of it"
                    ),
                ));
            }
        };
        // Out-of-range positions are left for the model to refuse with its own message.
        let id =
            t.id.unwrap_or_else(|| u8::try_from(index + 1).unwrap_or(u8::MAX));
        Ok(Transfer {
            id,
            beneficiary,
            target,
            amount: t.amount,
            remittance: t.remittance,
            category: t.category,
            metadata: t.metadata,
        })
    }

    fn instalment(
        &self,
        field: &str,
        nav: Nav,
        i: InstalmentIn,
    ) -> Result<Instalment, ServiceError> {
        let transfers = i
            .transfers
            .into_iter()
            .enumerate()
            .map(|(k, t)| self.transfer(&format!("{field}.transfers[{k}]"), k, t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Instalment {
            iuv: nav.iuv(),
            nav,
            amount: i.amount,
            due: i.due,
            description: i.description,
            transfers,
            metadata: i.metadata,
        })
    }

    /// The position's data, validated by the model.
    /// The position described by `body`, validated. New notice numbers are taken from the
    /// entity's sequence only once the whole body has passed validation with provisional ones:
    /// a refused body changes nothing, not even the sequence.
    fn position(
        &self,
        iupd: Iupd,
        body: PositionIn,
        previous: Option<&PositionData>,
    ) -> Result<PositionData, ServiceError> {
        let draft = self.build(
            iupd.clone(),
            body.clone(),
            previous,
            &mut Numbers::Provisional,
        )?;
        if fresh_numbers(&body, previous) == 0 {
            return Ok(draft);
        }
        self.build(iupd, body, previous, &mut Numbers::Reserve)
    }

    fn build(
        &self,
        iupd: Iupd,
        body: PositionIn,
        previous: Option<&PositionData>,
        numbers: &mut Numbers<'_>,
    ) -> Result<PositionData, ServiceError> {
        let slots: Vec<(usize, usize)> = body
            .options
            .iter()
            .enumerate()
            .flat_map(|(o, opt)| (0..opt.instalments.len()).map(move |i| (o, i)))
            .collect();
        let field = |n: usize| {
            let (o, i) = slots.get(n).copied().unwrap_or_default();
            format!("options[{o}].instalments[{i}]")
        };
        let previous_navs: Vec<Option<Nav>> = slots
            .iter()
            .map(|&(o, i)| {
                previous
                    .and_then(|d| d.options.get(o))
                    .and_then(|opt| opt.instalments.get(i))
                    .map(|inst| inst.nav.clone())
            })
            .collect();
        let all: Vec<&InstalmentIn> = body.options.iter().flat_map(|o| &o.instalments).collect();
        let mut navs = self
            .navs(&field, &all, &previous_navs, numbers)?
            .into_iter();
        let mut options = Vec::with_capacity(body.options.len());
        for (o, opt) in body.options.into_iter().enumerate() {
            let mut instalments = Vec::with_capacity(opt.instalments.len());
            for (i, inst) in opt.instalments.into_iter().enumerate() {
                let nav = navs
                    .next()
                    .ok_or_else(|| ServiceError::field("options", "notice numbering failed"))?;
                instalments.push(self.instalment(
                    &format!("options[{o}].instalments[{i}]"),
                    nav,
                    inst,
                )?);
            }
            options.push(PaymentOption {
                kind: opt.kind,
                instalments,
            });
        }
        let data = PositionData {
            iupd,
            kind: body.kind,
            debtor: body.debtor,
            description: body.description,
            validity: body.validity,
            expiry: body.expiry,
            options,
        };
        data.validate(&self.entity.fiscal_code)?;
        self.servable(&data)?;
        Ok(data)
    }

    /// Refuses what the station could not offer the node: a revenue stamp travels only in
    /// paGetPaymentV2, so an entity whose stations all speak version 1 cannot take one.
    fn servable(&self, data: &PositionData) -> Result<(), ServiceError> {
        let config = &self.app.config;
        let v2 = self
            .entity
            .stations
            .iter()
            .filter_map(|s| config.station(s))
            .any(|s| s.primitive_version >= 2);
        if v2 {
            return Ok(());
        }
        for (o, opt) in data.options.iter().enumerate() {
            for (i, inst) in opt.instalments.iter().enumerate() {
                for (t, transfer) in inst.transfers.iter().enumerate() {
                    if matches!(transfer.target, TransferTarget::RevenueStamp(_)) {
                        return Err(ServiceError::field(
                            format!("options[{o}].instalments[{i}].transfers[{t}].target"),
                            format!(
                                "a revenue stamp needs a station speaking pagoPA's primitives \
                                 version 2; the stations of {} speak version 1",
                                self.entity.fiscal_code
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Where new notice numbers come from.
pub enum Numbers<'a> {
    /// Provisional ones, to validate a draft with; never stored.
    Provisional,
    /// Reserved now from the entity's sequence.
    Reserve,
    /// Taken from a range reserved beforehand for a whole batch.
    From(&'a mut std::ops::Range<u64>),
}

/// New positions for a batch: each body validated with provisional notice numbers, then one
/// range of the entity's sequence taken for all the valid ones (`Store::take_numbers`), and their
/// final data built from it. Also gives the end of that range, which the commit that loads them
/// must store (`Store::load_prepared`).
pub fn prepare_new(
    app: &App,
    entity: &EntityConfig,
    items: Vec<(Iupd, PositionIn)>,
) -> (Vec<Result<PositionData, ServiceError>>, u64) {
    let resolver = Resolver { app, entity };
    let drafts: Vec<Result<(Iupd, PositionIn, u64), ServiceError>> = items
        .into_iter()
        .map(|(iupd, body)| {
            resolver.build(iupd.clone(), body.clone(), None, &mut Numbers::Provisional)?;
            let missing = fresh_numbers(&body, None);
            Ok((iupd, body, missing))
        })
        .collect();
    let total: u64 = drafts.iter().flatten().map(|(_, _, n)| n).sum();
    let mut range = match total {
        0 => 0..0,
        n => match skip_taken_numbers(app, entity)
            .and_then(|()| Ok(app.store.take_numbers(&entity.fiscal_code, n)?))
        {
            Ok(range) => range,
            Err(e) => {
                let refused = drafts.into_iter().map(|_| Err(e.clone())).collect();
                return (refused, 0);
            }
        },
    };
    let end = range.end;
    let data = drafts
        .into_iter()
        .map(|d| {
            d.and_then(|(iupd, body, _)| {
                resolver.build(iupd, body, None, &mut Numbers::From(&mut range))
            })
        })
        .collect();
    (data, end)
}

/// Provisional notice numbers come from just below this sequence number.
const PROVISIONAL: u64 = 9_999_999_999_999;

/// How many instalments of `body` need a number from the entity's sequence: those that bring
/// neither a NAV nor an IUV and had none in the same slot of `previous`. (Counted from the
/// request, not from the draft's numbers: an authority's own NAV is never taken for one.)
fn fresh_numbers(body: &PositionIn, previous: Option<&PositionData>) -> u64 {
    let mut n = 0;
    for (o, opt) in body.options.iter().enumerate() {
        for (i, inst) in opt.instalments.iter().enumerate() {
            let kept = previous
                .and_then(|d| d.options.get(o))
                .is_some_and(|p| p.instalments.get(i).is_some());
            if inst.nav.is_none() && inst.iuv.is_none() && !kept {
                n += 1;
            }
        }
    }
    n
}

/// The data of the last load or replacement in the ledger: what a repeated PUT compares with.
fn loaded_data(app: &App, id: PositionId) -> Result<Option<PositionData>, ServiceError> {
    Ok(app
        .store
        .ledger(id)?
        .into_iter()
        .rev()
        .find_map(|s| match s.event.change {
            Change::Loaded(d) | Change::Updated(d) => Some(d),
            _ => None,
        }))
}

/// What `upsert` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Replaced,
    Unchanged,
}

/// Creates or replaces the position `iupd` of `entity` with `body`; the same body again changes
/// nothing. The one path of every load: the API's PUT and the bulk files.
pub fn upsert(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    iupd: Iupd,
    body: PositionIn,
) -> Result<(Upserted, Position), ServiceError> {
    let resolver = Resolver { app, entity };
    let event = |change| Event::new(app.clock.now(), actor.clone(), change);
    match app.store.by_iupd(&entity.fiscal_code, &iupd)? {
        None => {
            // Validated with provisional numbers first, so that a refused body consumes none;
            // the final numbers are reserved in the commit that loads the position.
            let draft =
                resolver.build(iupd.clone(), body.clone(), None, &mut Numbers::Provisional)?;
            let missing = fresh_numbers(&body, None);
            if missing > 0 {
                skip_taken_numbers(app, entity)?;
            }
            let mut refused = None;
            let loaded = app
                .store
                .load_numbered(&entity.fiscal_code, missing, |mut range| {
                    let data = match missing {
                        0 => Ok(draft),
                        _ => resolver.build(
                            iupd.clone(),
                            body.clone(),
                            None,
                            &mut Numbers::From(&mut range),
                        ),
                    };
                    match data {
                        Ok(data) => vec![event(Change::Loaded(data))],
                        Err(e) => {
                            refused = Some(e);
                            Vec::new()
                        }
                    }
                })?;
            if let Some(e) = refused {
                return Err(e);
            }
            let id = match loaded.into_iter().next() {
                Some(Ok(id)) => id,
                // Another load of the same iupd got there first: this one is now a replacement
                // (or changes nothing), as if it had come second.
                Some(Err(crate::store::WriteError::Exists(_))) => {
                    let (id, current) = app
                        .store
                        .by_iupd(&entity.fiscal_code, &iupd)?
                        .ok_or_else(|| ServiceError::not_found("position vanished"))?;
                    return replace(&resolver, actor, iupd, body, id, current);
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ServiceError::not_found("position not loaded")),
            };
            let p = app
                .store
                .position(id)?
                .ok_or_else(|| ServiceError::not_found("position vanished after loading"))?;
            Ok((Upserted::Created, p))
        }
        Some((id, current)) => replace(&resolver, actor, iupd, body, id, current),
    }
}

/// `upsert` of a position that exists: the same body as last loaded changes nothing.
fn replace(
    resolver: &Resolver<'_>,
    actor: &Actor,
    iupd: Iupd,
    body: PositionIn,
    id: PositionId,
    current: Position,
) -> Result<(Upserted, Position), ServiceError> {
    let app = resolver.app;
    let previous = loaded_data(app, id)?;
    let data = resolver.position(iupd, body, previous.as_ref())?;
    // The last body as it stands today: its debtor may have been changed since.
    let standing = previous.clone().map(|mut d| {
        d.debtor = current.debtor.clone();
        d
    });
    if standing.as_ref() == Some(&data) {
        return Ok((Upserted::Unchanged, current));
    }
    // The body loaded before `PUT …/debtor`, sent again: replacing would move the debt back to
    // the first debtor behind the authority's back, and ignoring it would hide that the two
    // disagree.
    if previous.as_ref() == Some(&data) {
        return Err(ServiceError::conflict(
            "DEBTOR_CHANGED",
            format!(
                "the debtor of this position was changed to {} after this body was loaded: send \
                 the body with the current debtor, or change the debtor again",
                current.debtor.code
            ),
        )
        .at("debtor"));
    }
    let event = Event::new(app.clock.now(), actor.clone(), Change::Updated(data));
    let after = app.store.append(id, event)?;
    Ok((Upserted::Replaced, after))
}

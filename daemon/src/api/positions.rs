//! Handlers of `/api/v1/entities/{cf}/positions`: load, read, list and every variation. Each
//! builds a ledger event from the request and lets the store apply it (`Position::apply` holds the
//! rules); the answer is sent once the commit is durable.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use mpay_common::ids::{DebtorCode, Iupd, Nav};
use mpay_common::ledger::{Actor, Change, Event, Position, PositionStatus};
use mpay_common::model::{
    Debtor, Instalment, MAX_TEXT, OptionKind, PaymentOption, PositionData, Transfer, TransferTarget,
};
use mpay_common::money::Cents;

use super::dto::{
    EventOut, InstalmentIn, OfflinePaymentIn, PositionIn, PositionOut, PositionPage,
    PositionSummary, ReasonIn, ReductionIn, RescheduleIn, TransferIn,
};
use super::{Api, ApiError, Authorized, JsonBody, blocking};
use crate::App;
use crate::config::EntityConfig;
use crate::store::PositionId;

type Answer = Result<Response, ApiError>;

fn today() -> jiff::civil::Date {
    crate::station::today()
}

fn position_answer(status: StatusCode, p: &Position) -> Response {
    (status, Json(PositionOut::new(p, today()))).into_response()
}

fn iupd_of(auth: &Authorized) -> Result<Iupd, ApiError> {
    auth.param("iupd")
        .parse()
        .map_err(|e: mpay_common::ids::IdError| ApiError::field("iupd", e.to_string()))
}

fn nav_of(auth: &Authorized) -> Result<Nav, ApiError> {
    auth.param("nav")
        .parse()
        .map_err(|e: mpay_common::ids::IdError| ApiError::field("nav", e.to_string()))
}

/// A required free text of at most `max` characters.
fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    let n = value.chars().count();
    if n > max {
        return Err(ApiError::field(
            field,
            format!("at most {max} characters, found {n}"),
        ));
    }
    Ok(())
}

/// The position, or 404.
fn find(app: &App, auth: &Authorized, iupd: &Iupd) -> Result<(PositionId, Position), ApiError> {
    let entity = &auth.entity(app).fiscal_code;
    app.store
        .by_iupd(entity, iupd)?
        .ok_or_else(|| ApiError::not_found(format!("no position {iupd} for entity {entity}")))
}

/// Appends one event to the position named in the path and answers with the new state.
async fn vary(
    api: Arc<Api>,
    auth: Authorized,
    nav_field: Option<&'static str>,
    build: impl FnOnce(&App, &Position) -> Result<Event, ApiError> + Send + 'static,
) -> Answer {
    let iupd = iupd_of(&auth)?;
    blocking(move || {
        let app = &api.app;
        let (id, position) = find(app, &auth, &iupd)?;
        let event = build(app, &position)?;
        let after = app
            .store
            .append(id, event)
            .map_err(|e| ApiError::write(e, nav_field))?;
        Ok(position_answer(StatusCode::OK, &after))
    })
    .await
}

fn event(auth: &Authorized, change: Change, reason: Option<String>) -> Event {
    let e = Event::new(Timestamp::now(), auth.actor.clone(), change);
    match reason {
        Some(r) => e.with_reason(r),
        None => e,
    }
}

pub async fn get_one(State(api): State<Arc<Api>>, auth: Authorized) -> Answer {
    let iupd = iupd_of(&auth)?;
    blocking(move || {
        let (_, p) = find(&api.app, &auth, &iupd)?;
        Ok(position_answer(StatusCode::OK, &p))
    })
    .await
}

pub async fn ledger(State(api): State<Arc<Api>>, auth: Authorized) -> Answer {
    let iupd = iupd_of(&auth)?;
    blocking(move || {
        let (id, _) = find(&api.app, &auth, &iupd)?;
        let events: Vec<EventOut> = api
            .app
            .store
            .ledger(id)?
            .into_iter()
            .enumerate()
            .map(|(seq, e)| EventOut::new(seq, e))
            .collect();
        Ok(Json(serde_json::json!({ "iupd": iupd, "events": events })).into_response())
    })
    .await
}

/// Positions examined per list request at most, so a narrow filter cannot scan the whole store
/// in one call: the page may then be short, and `next` says where to go on.
const SCAN_BUDGET: usize = 20_000;
const SCAN_CHUNK: usize = 512;

pub async fn list(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let mut status = None;
    let mut debtor = None;
    let mut kind = None;
    let (mut due_from, mut due_to): (Option<jiff::civil::Date>, Option<jiff::civil::Date>) =
        (None, None);
    let mut limit = 100usize;
    let mut after: Option<PositionId> = None;
    for (key, value) in &query {
        match key.as_str() {
            "status" => {
                let s: PositionStatus =
                    serde_json::from_value(value.as_str().into()).map_err(|_| {
                        ApiError::field(
                            "status",
                            "one of Draft, Valid, PartiallyPaid, Paid, Cancelled, Expired",
                        )
                    })?;
                status = Some(s);
            }
            "debtor" => {
                let code: DebtorCode = value.parse().map_err(|e: mpay_common::ids::IdError| {
                    ApiError::field("debtor", e.to_string())
                })?;
                debtor = Some(code);
            }
            "kind" => kind = Some(value.clone()),
            "due_from" | "due_to" => {
                let date: jiff::civil::Date = value
                    .parse()
                    .map_err(|_| ApiError::field(key.as_str(), "a date, YYYY-MM-DD"))?;
                if key == "due_from" {
                    due_from = Some(date);
                } else {
                    due_to = Some(date);
                }
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| ApiError::field("limit", "an integer from 1 to 1000"))?;
            }
            "after" => {
                after =
                    Some(value.parse().map_err(|_| {
                        ApiError::field("after", "the `next` of the previous page")
                    })?);
            }
            other => {
                return Err(ApiError::field(
                    other,
                    "unknown parameter: use status, debtor, kind, due_from, due_to, limit or after",
                ));
            }
        }
    }
    blocking(move || {
        let entity = &auth.entity(&api.app).fiscal_code;
        let today = today();
        let mut from = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        let mut scanned = 0;
        loop {
            let chunk = api.app.store.positions(from, SCAN_CHUNK)?;
            let exhausted = chunk.len() < SCAN_CHUNK;
            for (id, p) in chunk {
                scanned += 1;
                from = id.saturating_add(1);
                let wanted = &p.entity == entity
                    && kind.as_ref().is_none_or(|k| &p.kind == k)
                    && debtor.as_ref().is_none_or(|d| &p.debtor.code == d)
                    && status.is_none_or(|s| p.status(today) == s)
                    // Due dates: some instalment falls due within the range.
                    && (due_from.is_none() && due_to.is_none()
                        || p.instalments().any(|i| {
                            due_from.is_none_or(|f| i.terms.due >= f)
                                && due_to.is_none_or(|t| i.terms.due <= t)
                        }));
                if wanted {
                    out.push(PositionSummary::new(&p, today));
                    if out.len() == limit {
                        return Ok(Json(PositionPage {
                            positions: out,
                            next: Some(id),
                        })
                        .into_response());
                    }
                }
            }
            if exhausted {
                return Ok(Json(PositionPage {
                    positions: out,
                    next: None,
                })
                .into_response());
            }
            if scanned >= SCAN_BUDGET {
                return Ok(Json(PositionPage {
                    positions: out,
                    next: Some(from.saturating_sub(1)),
                })
                .into_response());
            }
        }
    })
    .await
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
    ) -> Result<Vec<Nav>, ApiError> {
        let settings = &self.entity.iuv;
        let mut navs: Vec<Option<Nav>> = Vec::with_capacity(instalments.len());
        for (i, inst) in instalments.iter().enumerate() {
            let nav =
                match (&inst.nav, &inst.iuv) {
                    (Some(nav), Some(iuv)) if &nav.iuv() != iuv => {
                        return Err(ApiError::field(
                            format!("{}.iuv", field(i)),
                            format!("IUV {iuv} is not the IUV of NAV {nav} ({})", nav.iuv()),
                        ));
                    }
                    (Some(nav), _) => Some(nav.clone()),
                    (None, Some(iuv)) => Some(settings.nav_for_iuv(iuv).map_err(|e| {
                        ApiError::field(format!("{}.iuv", field(i)), e.to_string())
                    })?),
                    (None, None) => previous.get(i).cloned().flatten(),
                };
            if let Some(nav) = &nav
                && !settings.owns(nav)
            {
                return Err(ApiError::field(
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
            (n, Numbers::Reserve) => self
                .app
                .store
                .reserve_sequence(&self.entity.fiscal_code, n)?,
            (n, Numbers::From(range)) => {
                let start = range.start;
                let end = start
                    .checked_add(n)
                    .filter(|end| *end <= range.end)
                    .ok_or_else(|| ApiError::field("options", "notice numbering failed"))?;
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
                        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string(), None))
                }
            })
            .collect()
    }

    fn transfer(&self, field: &str, index: usize, t: TransferIn) -> Result<Transfer, ApiError> {
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
                    return Err(ApiError::field(
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
            (None, Some(cfg)) => {
                if let Some(iban) = cfg.bank_accounts.first() {
                    TransferTarget::Bank(iban.clone())
                } else if let Some(iban) = cfg.postal_accounts.first() {
                    TransferTarget::Postal(iban.clone())
                } else {
                    return Err(ApiError::field(
                        format!("{field}.target"),
                        format!("required: entity {beneficiary} has no account configured"),
                    ));
                }
            }
            (None, None) => {
                return Err(ApiError::field(
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

    fn instalment(&self, field: &str, nav: Nav, i: InstalmentIn) -> Result<Instalment, ApiError> {
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
    ) -> Result<PositionData, ApiError> {
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
    ) -> Result<PositionData, ApiError> {
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
                    .ok_or_else(|| ApiError::field("options", "notice numbering failed"))?;
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
        Ok(data)
    }
}

/// Where new notice numbers come from.
pub(crate) enum Numbers<'a> {
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
pub(crate) fn prepare_new(
    app: &App,
    entity: &EntityConfig,
    items: Vec<(Iupd, PositionIn)>,
) -> (Vec<Result<PositionData, ApiError>>, u64) {
    let resolver = Resolver { app, entity };
    let drafts: Vec<Result<(Iupd, PositionIn, u64), ApiError>> = items
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
        n => match app.store.take_numbers(&entity.fiscal_code, n) {
            Ok(range) => range,
            Err(e) => {
                let e = ApiError::from(e);
                let refused = drafts
                    .into_iter()
                    .map(|_| Err(ApiError::new(e.status, e.error.clone(), None)))
                    .collect();
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
fn loaded_data(app: &App, id: PositionId) -> Result<Option<PositionData>, ApiError> {
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
pub(crate) enum Upserted {
    Created,
    Replaced,
    Unchanged,
}

/// Creates or replaces the position `iupd` of `entity` with `body`; the same body again changes
/// nothing. The one path of every load: the API's PUT and the bulk files.
pub(crate) fn upsert(
    app: &App,
    entity: &EntityConfig,
    actor: &Actor,
    iupd: Iupd,
    body: PositionIn,
) -> Result<(Upserted, Position), ApiError> {
    let resolver = Resolver { app, entity };
    let event = |change| Event::new(Timestamp::now(), actor.clone(), change);
    match app.store.by_iupd(&entity.fiscal_code, &iupd)? {
        None => {
            // Validated with provisional numbers first, so that a refused body consumes none;
            // the final numbers are reserved in the commit that loads the position.
            let draft =
                resolver.build(iupd.clone(), body.clone(), None, &mut Numbers::Provisional)?;
            let missing = fresh_numbers(&body, None);
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
                        .ok_or_else(|| ApiError::not_found("position vanished"))?;
                    return replace(&resolver, actor, iupd, body, id, current);
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ApiError::not_found("position not loaded")),
            };
            let p = app
                .store
                .position(id)?
                .ok_or_else(|| ApiError::not_found("position vanished after loading"))?;
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
) -> Result<(Upserted, Position), ApiError> {
    let app = resolver.app;
    let previous = loaded_data(app, id)?;
    let data = resolver.position(iupd, body, previous.as_ref())?;
    if previous.as_ref() == Some(&data) {
        return Ok((Upserted::Unchanged, current));
    }
    let event = Event::new(Timestamp::now(), actor.clone(), Change::Updated(data));
    let after = app.store.append(id, event)?;
    Ok((Upserted::Replaced, after))
}

/// Create (201) or replace (200) a position; the same body again changes nothing (200).
pub async fn put(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<PositionIn>,
) -> Answer {
    let iupd = iupd_of(&auth)?;
    blocking(move || {
        let app = &api.app;
        let (done, p) = upsert(app, auth.entity(app), &auth.actor, iupd, body)?;
        let status = if done == Upserted::Created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(position_answer(status, &p))
    })
    .await
}

pub async fn cancel(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<ReasonIn>,
) -> Answer {
    text("reason", &body.reason, MAX_TEXT)?;
    let e = event(&auth, Change::Cancelled, Some(body.reason));
    vary(api, auth, None, move |_, _| Ok(e)).await
}

pub async fn restore(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<ReasonIn>,
) -> Answer {
    text("reason", &body.reason, MAX_TEXT)?;
    let e = event(&auth, Change::Restored, Some(body.reason));
    vary(api, auth, None, move |_, _| Ok(e)).await
}

pub async fn debtor(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<Debtor>,
) -> Answer {
    let iupd = iupd_of(&auth)?;
    blocking(move || {
        let app = &api.app;
        let (id, position) = find(app, &auth, &iupd)?;
        // Same debtor: nothing to record.
        if position.debtor == body {
            return Ok(position_answer(StatusCode::OK, &position));
        }
        let after = app
            .store
            .append(id, event(&auth, Change::DebtorUpdated(body), None))?;
        Ok(position_answer(StatusCode::OK, &after))
    })
    .await
}

/// The default split of a reduction: the cut comes from the last transfers first, each keeping
/// at least one cent unless the notice goes to zero. `None` if the transfers cannot absorb it.
pub(crate) fn split_reduction(
    transfers: &[Cents],
    current: Cents,
    new: Cents,
) -> Option<Vec<Cents>> {
    let floor = if new == Cents::ZERO { 0 } else { 1 };
    let mut cut = current.0.checked_sub(new.0)?;
    let mut out: Vec<Cents> = transfers.to_vec();
    for amount in out.iter_mut().rev() {
        let take = cut.min(amount.0 - floor).max(0);
        amount.0 -= take;
        cut -= take;
    }
    (cut == 0).then_some(out)
}

pub async fn reduce(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<ReductionIn>,
) -> Answer {
    let nav = nav_of(&auth)?;
    text("act", &body.act, 35)?;
    text("reason", &body.reason, MAX_TEXT)?;
    if body.new_amount < Cents::ZERO {
        return Err(ApiError::field("new_amount", "must not be negative"));
    }
    let actor = auth.actor.clone();
    vary(api, auth, None, move |_, p| {
        let inst = p.instalment(&nav).ok_or_else(|| {
            ApiError::not_found(format!("notice {nav} is not part of position {}", p.iupd))
        })?;
        let current = inst.terms.amount;
        let transfer_amounts = match body.transfer_amounts {
            Some(amounts) => amounts,
            // Not a reduction: the ledger says so with the amounts.
            None if body.new_amount >= current => {
                inst.terms.transfers.iter().map(|t| t.amount).collect()
            }
            None => {
                let amounts: Vec<Cents> = inst.terms.transfers.iter().map(|t| t.amount).collect();
                split_reduction(&amounts, current, body.new_amount).ok_or_else(|| {
                    ApiError::field(
                        "new_amount",
                        format!(
                            "{} cannot be split over {} transfers of at least 0.01; give \
                             transfer_amounts or reduce to zero",
                            body.new_amount,
                            amounts.len()
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
        Ok(Event::new(Timestamp::now(), actor, change).with_reason(body.reason))
    })
    .await
}

pub async fn pay_offline(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<OfflinePaymentIn>,
) -> Answer {
    let nav = nav_of(&auth)?;
    text("reference", &body.reference, MAX_TEXT)?;
    let actor = auth.actor.clone();
    vary(api, auth, None, move |_, p| {
        if p.instalment(&nav).is_none() {
            return Err(ApiError::not_found(format!(
                "notice {nav} is not part of position {}",
                p.iupd
            )));
        }
        let change = Change::PaidOffline {
            nav,
            channel: body.channel,
            date: body.date,
            amount: body.amount,
            reference: body.reference,
        };
        let e = Event::new(Timestamp::now(), actor, change);
        Ok(match body.reason {
            Some(r) => e.with_reason(r),
            None => e,
        })
    })
    .await
}

pub async fn reschedule(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<RescheduleIn>,
) -> Answer {
    text("reason", &body.reason, MAX_TEXT)?;
    if body.replaced.is_empty() {
        return Err(ApiError::field(
            "replaced",
            "at least one notice to replace",
        ));
    }
    if body.instalments.is_empty() {
        return Err(ApiError::field("instalments", "at least one instalment"));
    }
    let actor = auth.actor.clone();
    vary(api, auth, Some("replaced"), move |app, p| {
        for (i, nav) in body.replaced.iter().enumerate() {
            if p.instalment(nav).is_none() {
                return Err(ApiError::field(
                    format!("replaced[{i}]"),
                    format!("notice {nav} is not part of position {}", p.iupd),
                ));
            }
        }
        let entity = app
            .config
            .entity(&p.entity)
            .ok_or_else(|| ApiError::not_found("entity not configured"))?;
        let resolver = Resolver { app, entity };
        let field = |i: usize| format!("instalments[{i}]");
        let wanted: Vec<&InstalmentIn> = body.instalments.iter().collect();
        let plan = |mut numbers: Numbers<'_>| -> Result<PaymentOption, ApiError> {
            let navs = resolver.navs(&field, &wanted, &[], &mut numbers)?;
            let instalments = body
                .instalments
                .iter()
                .cloned()
                .zip(navs)
                .enumerate()
                .map(|(i, (inst, nav))| resolver.instalment(&field(i), nav, inst))
                .collect::<Result<Vec<_>, _>>()?;
            let plan = PaymentOption {
                kind: OptionKind::Plan,
                instalments,
            };
            // Field paths of the plan as the request names them.
            plan.validate("plan", &p.entity).map_err(|e| {
                ApiError::field(
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
            .apply(&Event::new(
                Timestamp::now(),
                actor.clone(),
                rescheduled(plan(Numbers::Provisional)?),
            ))
            .map_err(|e| ApiError::write(e.into(), Some("replaced")))?;
        let change = rescheduled(plan(Numbers::Reserve)?);
        Ok(Event::new(Timestamp::now(), actor, change).with_reason(body.reason))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::split_reduction;
    use mpay_common::money::Cents;

    #[test]
    fn a_reduction_takes_from_the_last_transfers_first() {
        let t = [Cents(9_500), Cents(500)];
        assert_eq!(
            split_reduction(&t, Cents(10_000), Cents(9_000)),
            Some(vec![Cents(8_999), Cents(1)])
        );
        assert_eq!(
            split_reduction(&t, Cents(10_000), Cents(0)),
            Some(vec![Cents(0), Cents(0)])
        );
        assert_eq!(split_reduction(&t, Cents(10_000), Cents(1)), None);
        assert_eq!(
            split_reduction(&t, Cents(10_000), Cents(2)),
            Some(vec![Cents(1), Cents(1)])
        );
    }
}

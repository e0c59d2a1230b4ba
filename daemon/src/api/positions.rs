//! Handlers of `/api/v1/entities/{cf}/positions`: load, read, list and every variation. Each
//! reads the request, calls `service::positions`, and answers once the commit is durable.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mpay_common::ids::{DebtorCode, Iupd, Nav};
use mpay_common::ledger::{Position, PositionStatus};
use mpay_common::model::Debtor;

use super::dto::{
    EventOut, OfflinePaymentIn, PositionIn, PositionOut, PositionPage, PositionSummary, ReasonIn,
    ReductionIn, RescheduleIn,
};
use super::{Api, ApiError, Authorized, JsonBody, blocking};
use crate::App;
use crate::service::ServiceError;
use crate::service::positions::{self, Upserted};
use crate::store::PositionId;

type Answer = Result<Response, ApiError>;

fn position_answer(app: &App, status: StatusCode, p: &Position) -> Response {
    (status, Json(PositionOut::new(p, app.clock.today()))).into_response()
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

pub async fn get_one(State(api): State<Arc<Api>>, auth: Authorized) -> Answer {
    let iupd = iupd_of(&auth)?;
    blocking(move || {
        let app = &api.app;
        let (_, p) = positions::find(app, &auth.entity(app).fiscal_code, &iupd)?;
        Ok(position_answer(app, StatusCode::OK, &p))
    })
    .await
}

pub async fn ledger(State(api): State<Arc<Api>>, auth: Authorized) -> Answer {
    let iupd = iupd_of(&auth)?;
    blocking(move || {
        let app = &api.app;
        let events: Vec<EventOut> = positions::ledger(app, &auth.entity(app).fiscal_code, &iupd)?
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
        let today = api.app.clock.today();
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

/// Create (201) or replace (200) a position; the same body again changes nothing (200).
pub async fn put(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<PositionIn>,
) -> Answer {
    let iupd = iupd_of(&auth)?;
    blocking(move || {
        let app = &api.app;
        let (done, p) = positions::upsert(app, auth.entity(app), &auth.actor, iupd, body)?;
        let status = if done == Upserted::Created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(position_answer(app, status, &p))
    })
    .await
}

/// Runs a variation of the position named in the path; answers with its new state.
async fn vary(
    api: Arc<Api>,
    auth: Authorized,
    change: impl FnOnce(&App, &Authorized, &Iupd) -> Result<Position, ServiceError> + Send + 'static,
) -> Answer {
    let iupd = iupd_of(&auth)?;
    blocking(move || {
        let app = &api.app;
        let after = change(app, &auth, &iupd)?;
        Ok(position_answer(app, StatusCode::OK, &after))
    })
    .await
}

pub async fn cancel(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<ReasonIn>,
) -> Answer {
    vary(api, auth, move |app, auth, iupd| {
        positions::cancel(
            app,
            &auth.entity(app).fiscal_code,
            &auth.actor,
            iupd,
            body.reason,
        )
    })
    .await
}

pub async fn restore(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<ReasonIn>,
) -> Answer {
    vary(api, auth, move |app, auth, iupd| {
        positions::restore(
            app,
            &auth.entity(app).fiscal_code,
            &auth.actor,
            iupd,
            body.reason,
        )
    })
    .await
}

pub async fn debtor(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<Debtor>,
) -> Answer {
    vary(api, auth, move |app, auth, iupd| {
        positions::update_debtor(app, &auth.entity(app).fiscal_code, &auth.actor, iupd, body)
    })
    .await
}

pub async fn reduce(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<ReductionIn>,
) -> Answer {
    let nav = nav_of(&auth)?;
    vary(api, auth, move |app, auth, iupd| {
        let entity = &auth.entity(app).fiscal_code;
        positions::reduce(app, entity, &auth.actor, iupd, &nav, body)
    })
    .await
}

pub async fn pay_offline(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<OfflinePaymentIn>,
) -> Answer {
    let nav = nav_of(&auth)?;
    vary(api, auth, move |app, auth, iupd| {
        let entity = &auth.entity(app).fiscal_code;
        positions::pay_offline(app, entity, &auth.actor, iupd, &nav, body)
    })
    .await
}

pub async fn reschedule(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    JsonBody(body): JsonBody<RescheduleIn>,
) -> Answer {
    vary(api, auth, move |app, auth, iupd| {
        positions::reschedule(app, auth.entity(app), &auth.actor, iupd, body)
    })
    .await
}

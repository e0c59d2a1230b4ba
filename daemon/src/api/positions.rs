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
use mpay_common::requests::PositionQuery;

use super::dto::{
    EventOut, OfflinePaymentIn, PositionIn, PositionOut, PositionPage, PositionSummary, ReasonIn,
    ReductionIn, RescheduleIn,
};
use super::{Api, ApiError, Authorized, JsonBody, blocking};
use crate::App;
use crate::service::ServiceError;
use crate::service::positions::{self, Upserted};
use crate::service::search::{self, MAX_LIMIT};

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

pub async fn list(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let mut query = PositionQuery::default();
    for (key, value) in &params {
        match key.as_str() {
            "status" => {
                let s: PositionStatus =
                    serde_json::from_value(value.as_str().into()).map_err(|_| {
                        ApiError::field(
                            "status",
                            "one of Draft, Valid, PartiallyPaid, Paid, Cancelled, Expired",
                        )
                    })?;
                query.status = Some(s);
            }
            "debtor" => {
                let code: DebtorCode = value.parse().map_err(|e: mpay_common::ids::IdError| {
                    ApiError::field("debtor", e.to_string())
                })?;
                query.debtor = Some(code);
            }
            "kind" => query.kind = Some(value.clone()),
            "due_from" | "due_to" => {
                let date: jiff::civil::Date = value
                    .parse()
                    .map_err(|_| ApiError::field(key.as_str(), "a date, YYYY-MM-DD"))?;
                if key == "due_from" {
                    query.due_from = Some(date);
                } else {
                    query.due_to = Some(date);
                }
            }
            "limit" => {
                query.limit = Some(value.parse().map_err(|_| {
                    ApiError::field("limit", format!("an integer from 1 to {MAX_LIMIT}"))
                })?);
            }
            "after" => {
                query.after =
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
        let app = &api.app;
        let page = search::positions(app, &auth.entity(app).fiscal_code, &query)?;
        let today = app.clock.today();
        Ok(Json(PositionPage {
            positions: page
                .positions
                .iter()
                .map(|(_, p)| PositionSummary::new(p, today))
                .collect(),
            next: page.next,
        })
        .into_response())
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
        positions::update_debtor(
            app,
            &auth.entity(app).fiscal_code,
            &auth.actor,
            iupd,
            body,
            None,
        )
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

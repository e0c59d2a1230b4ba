//! `GET /api/v1/entities/{cf}/worklist?class=&state=&min_amount=&older_than_days=&after=`: what
//! reconciliation says needs a look and the fixes in force, for the authority to read (fixes
//! are the operators', at the console).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use mpay_common::worklist::{ItemState, WorklistQuery};

use super::{Api, ApiError, Authorized, blocking};
use crate::service::worklist;

fn number<T: FromStr>(
    params: &HashMap<String, String>,
    name: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    params
        .get(name)
        .map(|v| v.parse::<T>().map_err(|_| ApiError::field(name, what)))
        .transpose()
}

pub async fn list(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let state = match params.get("state").map(String::as_str) {
        None | Some("open") => ItemState::Open,
        Some("resolved") => ItemState::Resolved,
        Some("all") => ItemState::All,
        Some(_) => return Err(ApiError::field("state", "one of open, resolved, all")),
    };
    let query = WorklistQuery {
        class: params.get("class").cloned(),
        state,
        min_amount: number(&params, "min_amount", "cents, a whole number")?,
        older_than_days: number(&params, "older_than_days", "days, a whole number")?,
        after: number(&params, "after", "the `next` of the previous page")?,
    };
    blocking(move || {
        let app = &api.app;
        let list = worklist::worklist(app, &auth.entity(app).fiscal_code, &query)?;
        Ok(Json(list).into_response())
    })
    .await
}

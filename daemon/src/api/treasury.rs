//! `/api/v1/entities/{cf}/treasury`: the entity's treasury statements (camt.053) uploaded, and
//! its movements read back, each with its class.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError, Authorized, blocking, limit_param};
use crate::service::treasury;

/// `POST …/treasury` with a camt.053 document: 201 if it brought new movements, else 200.
pub async fn upload(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text(), None))?;
    blocking(move || {
        let app = &api.app;
        let view = treasury::receive(app, auth.entity(app), &auth.actor, &body)?;
        let status = if view.new > 0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, Json(view)).into_response())
    })
    .await
}

/// `GET …/treasury?limit=`: the movements, each classified now.
pub async fn list(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = limit_param(&params, 1000, 10_000)?;
    blocking(move || {
        let app = &api.app;
        let movements = treasury::list(app, &auth.entity(app).fiscal_code, limit)?;
        Ok(Json(serde_json::json!({ "movements": movements })).into_response())
    })
    .await
}

//! Handlers of `/api/v1/entities/{cf}/flows`: an authority (or its treasury office) uploads a
//! reporting flow it received, and reads its flows with every row classified.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError, Authorized, blocking, limit_param};
use crate::service::flows::{self, Received};

type Answer = Result<Response, ApiError>;

/// `POST …/flows` with the FlussoRiversamento XML as the body: 201 stored, 200 already held.
pub async fn upload(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Answer {
    let body = body.map_err(|r| {
        let reason = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "flow larger than the upload limit (api.max_bulk_bytes)".to_owned()
        } else {
            r.body_text()
        };
        ApiError::new(r.status(), reason, None)
    })?;
    blocking(move || {
        let app = &api.app;
        let entity = auth.entity(app);
        Ok(
            match flows::receive(app, entity, &auth.actor, &body, None)? {
                Received::New(v) => (StatusCode::CREATED, Json(v)).into_response(),
                Received::Held(v) => (StatusCode::OK, Json(v)).into_response(),
            },
        )
    })
    .await
}

/// `GET …/flows?limit=`: every flow and revision, with counts per class.
pub async fn list(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let limit = limit_param(&params, 100, 1000)?;
    blocking(move || {
        let app = &api.app;
        let flows = flows::list(app, &auth.entity(app).fiscal_code, limit)?;
        Ok(Json(serde_json::json!({ "flows": flows })).into_response())
    })
    .await
}

/// `GET …/flows/{flow}`: every revision of the flow, oldest first, each row with its class.
pub async fn get_one(State(api): State<Arc<Api>>, auth: Authorized) -> Answer {
    let id = auth.param("flow").to_owned();
    blocking(move || {
        let app = &api.app;
        let revisions = flows::get(app, &auth.entity(app).fiscal_code, &id)?;
        Ok(Json(serde_json::json!({ "flow_id": id, "revisions": revisions })).into_response())
    })
    .await
}

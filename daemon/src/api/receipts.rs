//! `GET /api/v1/entities/{cf}/receipts`: the receipts the node sent for the entity that did not
//! simply pay a notice (orphans, double payments, KO, reused receiptIds, copies for a secondary
//! beneficiary), or with `?all=true` every one; newest last, without the raw XML.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError, Authorized, blocking};
use crate::store::Disposition;

pub async fn list(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let all = match params.get("all").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::field("all", format!("{other:?}: true or false"))),
    };
    blocking(move || {
        let app = &api.app;
        let entity = &auth.entity(app).fiscal_code;
        let mut receipts: Vec<serde_json::Value> = app
            .store
            .receipts_of(entity, 100_000)
            .map_err(crate::service::ServiceError::from)?
            .into_iter()
            .filter(|r| all || r.disposition != Disposition::Applied)
            .map(|r| {
                serde_json::json!({
                    "receipt_id": r.receipt_id,
                    "nav": r.nav,
                    "iuv": r.iuv,
                    "notice_entity": r.notice_entity,
                    "amount": r.amount,
                    "psp": r.psp,
                    "station": r.station,
                    "received_at": r.received_at,
                    "disposition": r.disposition,
                    "stand_in": r.stand_in,
                    "commit": r.commit,
                })
            })
            .collect();
        receipts.sort_by_key(|r| r["commit"].as_u64());
        Ok(Json(serde_json::json!({ "receipts": receipts })).into_response())
    })
    .await
}

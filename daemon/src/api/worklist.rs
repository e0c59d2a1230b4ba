//! `GET /api/v1/entities/{cf}/worklist?class=&after=`: what reconciliation says needs a look,
//! for the authority to read (fixes are the operators', at the console).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError, Authorized, blocking};
use crate::service::worklist;

pub async fn list(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let after = match params.get("after") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::field("after", "the `next` of the previous page"))?,
        ),
    };
    let class = params.get("class").cloned();
    blocking(move || {
        let app = &api.app;
        let list = worklist::worklist(app, &auth.entity(app).fiscal_code, after, class.as_deref())?;
        Ok(Json(list).into_response())
    })
    .await
}

//! `GET /api/v1/entities/{cf}/reports/{date}`: the entity's daily report, JSON or (with
//! `?format=csv`) the CSV written to its outbox.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError, Authorized, blocking};
use crate::service::report;

pub async fn daily(
    State(api): State<Arc<Api>>,
    auth: Authorized,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let date: jiff::civil::Date = auth
        .param("date")
        .parse()
        .map_err(|e| ApiError::field("date", format!("a date YYYY-MM-DD: {e}")))?;
    let csv = match params.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::field("format", format!("{other:?}: json or csv")));
        }
    };
    blocking(move || {
        let app = &api.app;
        let r = report::daily(app, &auth.entity(app).fiscal_code, date)?;
        Ok(if csv {
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{}-{date}.csv\"", r.entity),
                    ),
                ],
                report::to_csv(&r)?,
            )
                .into_response()
        } else {
            Json(r).into_response()
        })
    })
    .await
}

//! `GET /api/v1/entities/{cf}/statements/{debtor}` (the entity's key, or the citizen-portal key,
//! limited to that entity) and `GET /api/v1/statements/{debtor}` (the citizen-portal key, every
//! entity served): the citizen statement of `service::statements`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::{Api, StatementReader, blocking};
use crate::service::statements::{debtor_of, statement};

pub async fn for_entity(State(api): State<Arc<Api>>, reader: StatementReader) -> Response {
    answer(api, reader).await
}

pub async fn across_entities(State(api): State<Arc<Api>>, reader: StatementReader) -> Response {
    answer(api, reader).await
}

async fn answer(api: Arc<Api>, reader: StatementReader) -> Response {
    let result = async {
        let debtor = debtor_of(reader.param("debtor"))?;
        blocking(move || {
            let app = &api.app;
            Ok(statement(
                app,
                reader.entity(app).map(|e| &e.fiscal_code),
                &debtor,
            )?)
        })
        .await
    }
    .await;
    match result {
        Ok(s) => Json(s).into_response(),
        Err(e) => e.into_response(),
    }
}

//! The authorities' REST JSON API (`/api/v1/`), on its own listener (`[api] listen`).
//!
//! Every write goes through the one validation path: the request is resolved into the model
//! (`PositionData`, a ledger `Change`), the model and the ledger check it, and the store commits
//! it; the answer leaves only once the commit is durable. This module holds the router, the
//! authentication, the body reader and the error shape; `dto` the JSON types, `positions` the
//! handlers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use mpay_common::ledger::Actor;
use serde::de::DeserializeOwned;

use crate::App;
use crate::config::{EntityConfig, key_digest};
use crate::service::{ErrorKind, ServiceError};
use crate::store::StoreError;

pub mod bulk;
pub mod dto;
mod flows;
mod positions;
mod receipts;
mod reports;
mod statements;
mod treasury;
mod worklist;

/// The OpenAPI 3.1 description the repository keeps and the daemon serves.
pub const OPENAPI: &str = include_str!("../../openapi.json");

const POSITIONS: &str = "/api/v1/entities/{cf}/positions";

/// What the handlers share: the daemon and the configured keys, by digest.
pub struct Api {
    app: Arc<App>,
    keys: Vec<Key>,
    jobs: bulk::Jobs,
}

struct Key {
    scope: Scope,
    name: String,
    digest: [u8; 32],
}

/// What a key opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// One entity's positions and statements (index in `config.entities`).
    Entity(usize),
    /// The intermediary's citizen portal: statements of every entity, no position endpoint.
    Portal,
}

/// Every route: (method, path, handler). The OpenAPI test walks this same list.
fn routes(bulk_limit: usize) -> Vec<(&'static str, String, MethodRouter<Arc<Api>>)> {
    let p = |rest: &str| format!("{POSITIONS}{rest}");
    vec![
        ("get", "/api/v1/openapi.json".into(), get(openapi)),
        ("get", p(""), get(positions::list)),
        ("get", p("/{iupd}"), get(positions::get_one)),
        ("put", p("/{iupd}"), put(positions::put)),
        ("get", p("/{iupd}/ledger"), get(positions::ledger)),
        ("post", p("/{iupd}/cancel"), post(positions::cancel)),
        ("post", p("/{iupd}/restore"), post(positions::restore)),
        ("put", p("/{iupd}/debtor"), put(positions::debtor)),
        (
            "post",
            p("/{iupd}/instalments/{nav}/reduction"),
            post(positions::reduce),
        ),
        (
            "post",
            p("/{iupd}/instalments/{nav}/offline-payments"),
            post(positions::pay_offline),
        ),
        ("post", p("/{iupd}/reschedule"), post(positions::reschedule)),
        (
            "post",
            "/api/v1/entities/{cf}/bulk".into(),
            post(bulk::upload).layer(DefaultBodyLimit::max(bulk_limit)),
        ),
        ("get", "/api/v1/entities/{cf}/bulk".into(), get(bulk::list)),
        (
            "get",
            "/api/v1/entities/{cf}/bulk/{job}".into(),
            get(bulk::status),
        ),
        (
            "post",
            "/api/v1/entities/{cf}/flows".into(),
            post(flows::upload).layer(DefaultBodyLimit::max(bulk_limit)),
        ),
        (
            "get",
            "/api/v1/entities/{cf}/flows".into(),
            get(flows::list),
        ),
        (
            "get",
            "/api/v1/entities/{cf}/flows/{flow}".into(),
            get(flows::get_one),
        ),
        (
            "get",
            "/api/v1/entities/{cf}/reports/{date}".into(),
            get(reports::daily),
        ),
        (
            "get",
            "/api/v1/entities/{cf}/receipts".into(),
            get(receipts::list),
        ),
        (
            "get",
            "/api/v1/entities/{cf}/worklist".into(),
            get(worklist::list),
        ),
        (
            "post",
            "/api/v1/entities/{cf}/treasury".into(),
            post(treasury::upload).layer(DefaultBodyLimit::max(bulk_limit)),
        ),
        (
            "get",
            "/api/v1/entities/{cf}/treasury".into(),
            get(treasury::list),
        ),
        (
            "get",
            "/api/v1/entities/{cf}/bulk/{job}/rejects".into(),
            get(bulk::rejects),
        ),
        (
            "get",
            "/api/v1/entities/{cf}/statements/{debtor}".into(),
            get(statements::for_entity),
        ),
        (
            "get",
            "/api/v1/statements/{debtor}".into(),
            get(statements::across_entities),
        ),
    ]
}

/// The API's routes, and its state (keys, running bulk jobs) for the inbox watcher
/// (`bulk::watch`), which the daemon starts beside it.
pub fn router(app: Arc<App>) -> (Router, Arc<Api>) {
    // `Config::validate` refused malformed digests before we got here.
    let key = |scope: Scope, k: &crate::config::ApiKeyConfig| {
        Some(Key {
            scope,
            name: k.name.clone(),
            digest: k.digest()?,
        })
    };
    let keys = app
        .config
        .entities
        .iter()
        .enumerate()
        .flat_map(|(entity, e)| {
            e.api_keys
                .iter()
                .filter_map(move |k| key(Scope::Entity(entity), k))
        })
        .chain(
            app.config
                .portal_keys
                .iter()
                .filter_map(|k| key(Scope::Portal, k)),
        )
        .collect();
    let limit = app.config.api.max_body_bytes;
    let bulk_limit = app.config.api.max_bulk_bytes;
    let api = Arc::new(Api {
        app,
        keys,
        jobs: bulk::Jobs::default(),
    });
    let mut router = Router::new();
    for (_, path, handler) in routes(bulk_limit) {
        // Routes on the same path merge their methods.
        router = router.route(&path, handler);
    }
    let router = router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint", None) })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Arc::clone(&api));
    (router, api)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// An error answer: `{"error": reason, "field": "path.to.field" | null}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable code that programs can act on (listed in the OpenAPI document's `Error`).
    pub code: &'static str,
    pub error: String,
    pub field: Option<String>,
}

/// The code of an error that has no more precise one.
fn status_code(status: StatusCode, field: bool) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST if field => "INVALID_FIELD",
        StatusCode::BAD_REQUEST => "BAD_REQUEST",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::CONFLICT => "CONFLICT",
        StatusCode::PAYLOAD_TOO_LARGE => "TOO_LARGE",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>, field: Option<&str>) -> ApiError {
        ApiError {
            status,
            code: status_code(status, field.is_some()),
            error: error.into(),
            field: field.map(str::to_owned),
        }
    }

    /// 400 naming the field.
    pub fn field(field: impl Into<String>, error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_FIELD",
            error: error.into(),
            field: Some(field.into()),
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = code;
        self
    }

    pub fn not_found(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error, None)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = match e.kind {
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            code: e.code,
            error: e.message,
            field: e.field,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({ "code": self.code, "error": self.error, "field": self.field });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("request task failed: {e}"),
            None,
        )
    })?
}

/// The `limit` query parameter: `default` when absent, else a number from 1 to `max`.
pub(crate) fn limit_param(
    params: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::field("limit", format!("a number from 1 to {max}"))),
    }
}

/// A caller whose key opens the entity named in the path.
pub struct Authorized {
    entity: usize,
    pub actor: Actor,
    params: HashMap<String, String>,
}

impl Authorized {
    pub fn entity<'a>(&self, app: &'a App) -> &'a EntityConfig {
        &app.config.entities[self.entity]
    }

    /// A path parameter (the router guarantees the ones its paths declare).
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, key) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim());
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

/// Equal digests, without an early exit on the first differing byte.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The configured key the request presents (401 if none or unknown) and the path parameters.
async fn identify<'a>(
    parts: &mut Parts,
    api: &'a Arc<Api>,
) -> Result<(&'a Key, HashMap<String, String>), ApiError> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, api)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text(), None))?;
    let key = presented_key(&parts.headers)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing API key: send \"Authorization: Bearer <key>\" or \"X-Api-Key\"",
                None,
            )
        })?;
    let digest = key_digest(key);
    // Every configured key is compared, so timing does not say how many matched early.
    let mut found = None;
    for k in &api.keys {
        if same_digest(&k.digest, &digest) && found.is_none() {
            found = Some(k);
        }
    }
    let key = found.ok_or_else(|| refused(parts, &params, None))?;
    Ok((key, params))
}

/// A key that does not open this path: 401, the same answer whether the key is unknown or
/// another's, so that a guesser learns nothing; logged, with the key's name when it has one.
fn refused(parts: &Parts, params: &HashMap<String, String>, name: Option<&str>) -> ApiError {
    tracing::warn!(
        path = %parts.uri.path(),
        key = name.unwrap_or("unknown"),
        "API: a key was refused"
    );
    let why = match params.get("cf") {
        Some(cf) => {
            let shown: String = cf.chars().take(16).collect();
            format!("this key does not open entity {shown}")
        }
        None => "this key does not open the cross-entity statements: the citizen-portal key \
                 does"
            .to_owned(),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, why, None)
}

impl FromRequestParts<Arc<Api>> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let (key, params) = identify(parts, api).await?;
        let cf = params.get("cf").map_or("", String::as_str);
        let entity = match key.scope {
            Scope::Entity(e) if api.app.config.entities[e].fiscal_code.as_str() == cf => e,
            // The portal key reads statements only.
            Scope::Entity(_) | Scope::Portal => {
                return Err(refused(parts, &params, Some(&key.name)));
            }
        };
        Ok(Authorized {
            entity,
            actor: Actor::ApiKey(key.name.clone()),
            params,
        })
    }
}

/// A caller allowed to read citizen statements: an entity's key on its own entity's path, or the
/// citizen-portal key on any entity's path and on the cross-entity path.
pub struct StatementReader {
    /// The entity the statement is limited to (index in `config.entities`); `None`: every entity.
    entity: Option<usize>,
    params: HashMap<String, String>,
}

impl StatementReader {
    pub fn entity<'a>(&self, app: &'a App) -> Option<&'a EntityConfig> {
        self.entity.map(|e| &app.config.entities[e])
    }

    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }
}

impl FromRequestParts<Arc<Api>> for StatementReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let (key, params) = identify(parts, api).await?;
        let entities = &api.app.config.entities;
        let entity = match (params.get("cf"), key.scope) {
            (Some(cf), Scope::Entity(e)) if entities[e].fiscal_code.as_str() == cf => Some(e),
            (Some(_), Scope::Entity(_)) => return Err(refused(parts, &params, Some(&key.name))),
            (Some(cf), Scope::Portal) => {
                let found = entities.iter().position(|e| e.fiscal_code.as_str() == cf);
                Some(found.ok_or_else(|| {
                    let shown: String = cf.chars().take(16).collect();
                    ApiError::not_found(format!("no entity {shown} is served here"))
                })?)
            }
            (None, Scope::Portal) => None,
            // An entity's key reads /api/v1/entities/{cf}/statements/{debtor}.
            (None, Scope::Entity(_)) => return Err(refused(parts, &params, Some(&key.name))),
        };
        Ok(StatementReader { entity, params })
    }
}

/// A JSON body, size-limited (413), whose errors name the field (`options[0].instalments[1].amount`).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body larger than the limit (api.max_body_bytes)",
                    None,
                )
            } else {
                ApiError::new(r.status(), r.body_text(), None)
            }
        })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            // Not JSON at all: there is no field to name, only a place in the text.
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the body is not JSON: {} (line {}, column {})",
                        json_reason(inner),
                        inner.line(),
                        inner.column()
                    ),
                    None,
                );
            }
            let path = e.path().to_string();
            let error = json_reason(e.inner());
            // serde's path stops at the object that lacks the field: name the field itself.
            let missing = error
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let field = match (path.as_str(), missing) {
                (".", Some(name)) => Some(name.to_owned()),
                (".", None) => None,
                (_, Some(name)) => Some(format!("{path}.{name}")),
                (_, None) => Some(path),
            };
            ApiError {
                status: StatusCode::BAD_REQUEST,
                code: if field.is_some() {
                    "INVALID_FIELD"
                } else {
                    "BAD_REQUEST"
                },
                error,
                field,
            }
        })?;
        de.end()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, json_reason(&e), None))?;
        Ok(JsonBody(value))
    }
}

/// serde_json's message without the "at line 1 column 80" suffix: the field path says more.
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
        for (method, path, _) in routes(1) {
            assert!(
                doc["paths"][&path][method].is_object(),
                "{method} {path} is not described in daemon/openapi.json"
            );
        }
    }

    #[test]
    fn digests_compare_whole() {
        let a = key_digest("demo-castelverde-key");
        let mut b = a;
        assert!(same_digest(&a, &b));
        b[31] ^= 1;
        assert!(!same_digest(&a, &b));
    }

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", "k1".parse().expect("header"));
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert(header::AUTHORIZATION, "Bearer k2".parse().expect("header"));
        assert_eq!(presented_key(&h), Some("k2"));
        h.insert(header::AUTHORIZATION, "Basic k2".parse().expect("header"));
        assert_eq!(presented_key(&h), None);
    }
}

//! The admin HTTP listener: `/healthz` for supervisors and load balancers, `/metrics` for
//! Prometheus. `/backup` (for `mpayd backup`), `/notices` and `/journal` carry debtors' data and
//! (and `POST /reports/{date}`, which writes the daily reports now) have no authentication: they
//! are served only when the listener is bound to loopback, where
//! only this host's users reach them; operators read the same through the console's roles.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio_stream::wrappers::ReceiverStream;

use crate::App;

pub fn router(app: Arc<App>) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    let listen = app.config.admin.listen;
    let router = if listen.ip().is_loopback() {
        router
            .route("/backup", get(backup))
            .route("/reports/{date}", axum::routing::post(reports))
            .route("/notices", get(notices))
            .route("/journal", get(journal))
            .route("/journal/{seq}", get(journal_bodies))
    } else {
        tracing::warn!(
            %listen,
            "admin listener not on loopback: /backup, /notices and /journal are off (use the console)"
        );
        router
    };
    router.with_state(app)
}

/// The daily run of `date`, now: fetches the new flows from the node, then writes every
/// entity's report into the outboxes (`mpayd reconcile`); answers the run's record.
async fn reports(
    State(app): State<Arc<App>>,
    axum::extract::Path(date): axum::extract::Path<String>,
) -> Response {
    let Ok(day) = date.parse::<jiff::civil::Date>() else {
        return (
            StatusCode::BAD_REQUEST,
            format!("{date:?} is not a date YYYY-MM-DD"),
        )
            .into_response();
    };
    let records = crate::service::runs::run(&app, vec![day], "admin").await;
    match records.into_iter().next() {
        Some(r) if r.error.is_none() => axum::Json(r).into_response(),
        Some(r) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(r)).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "the run was not recorded").into_response(),
    }
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let stats = app.store.stats();
    let body = |status: &str, detail: Option<String>| {
        serde_json::json!({
            "status": status,
            "version": mpay_common::VERSION,
            "detail": detail,
            "store": stats,
        })
        .to_string()
    };
    let (code, text) = match app.store.healthy() {
        Ok(()) => (StatusCode::OK, body("ok", None)),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, body("failing", Some(e))),
    };
    (code, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    match app.metrics.render(&app.store) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Adapts the store's blocking backup writer to an HTTP body stream.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn backup(State(app): State<Arc<App>>) -> Response {
    // A store that cannot write may not be able to read either: say so plainly, before a byte.
    if let Err(why) = app.store.healthy() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store is failing: {why}"),
        )
            .into_response();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let store = Arc::clone(&app.store);
    tokio::task::spawn_blocking(move || {
        let errors = tx.clone();
        match store.backup(ChannelWriter(tx)) {
            Ok(summary) => tracing::info!(
                commit = summary.commit,
                records = summary.records,
                "backup streamed"
            ),
            Err(e) => {
                tracing::error!("backup failed: {e}");
                // Break the stream so the client never mistakes a partial file for a backup.
                let _ = errors.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    // The first chunk tells a backup that could not start (its reason goes back as the answer)
    // from one that did (streamed; a later failure breaks the stream, never a false end).
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the backup failed: {e}"),
            )
                .into_response();
        }
        None => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the backup ended before it began",
            )
                .into_response();
        }
    };
    let rest = ReceiverStream::new(rx);
    let stream = futures::StreamExt::chain(futures::stream::once(async { Ok(first) }), rest);
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct NoticeQuery {
    #[serde(default)]
    from: u64,
    /// Every notice with its status, not only the payable ones.
    #[serde(default)]
    all: bool,
    #[serde(default = "default_notice_limit")]
    limit: usize,
}

fn default_notice_limit() -> usize {
    1000
}

/// Payable notices, in position order from position `from`: what the node simulator pays, and
/// a quick look for sysadmins. `next` is where the following page starts.
async fn notices(
    State(app): State<Arc<App>>,
    axum::extract::Query(q): axum::extract::Query<NoticeQuery>,
) -> Response {
    let store = Arc::clone(&app.store);
    let config = Arc::clone(&app.config);
    let clock = app.clock.clone();
    let limit = q.limit.min(10_000);
    let page = tokio::task::spawn_blocking(move || {
        let today = clock.today();
        let positions = store.positions(q.from, limit)?;
        let next = positions.last().map(|(id, _)| id + 1);
        let mut out = Vec::new();
        for (_, p) in &positions {
            let station = config
                .entity(&p.entity)
                .and_then(|e| e.stations.first())
                .and_then(|s| config.station(s));
            for inst in p.instalments() {
                let status = p.instalment_status(inst, today);
                // Listed as payable exactly when the station would take it.
                let payable = p.payable(inst.nav(), today).and_then(Result::ok);
                if q.all || payable.is_some() {
                    let doubles = inst
                        .payments
                        .iter()
                        .filter(|pay| pay.arrival != mpay_common::ledger::Arrival::Due)
                        .count();
                    let amount = payable.as_ref().map_or_else(|| p.due(inst), |d| d.amount);
                    out.push(serde_json::json!({
                        "entity": p.entity.to_string(),
                        "station": station.map(|s| s.id.as_str()),
                        "version": station.map(|s| s.primitive_version),
                        "iupd": p.iupd.to_string(),
                        "nav": inst.terms.nav.to_string(),
                        "iuv": inst.terms.iuv.to_string(),
                        "amount": amount.to_string(),
                        "status": format!("{status:?}"),
                        "payable": payable.is_some(),
                        "receipt_id": inst.receipts().next().and_then(|r| r.receipt_id()),
                        "double_payments": doubles,
                    }));
                }
            }
        }
        Ok::<_, crate::store::StoreError>(serde_json::json!({ "notices": out, "next": next }))
    })
    .await;
    match page {
        Ok(Ok(body)) => (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct JournalQuery {
    /// First sequence number; without it, the newest records.
    from: Option<u64>,
    #[serde(default = "default_journal_limit")]
    limit: usize,
}

fn default_journal_limit() -> usize {
    100
}

fn json_or_error<T: serde::Serialize>(
    result: Result<Result<T, crate::store::StoreError>, tokio::task::JoinError>,
) -> Response {
    match result {
        Ok(Ok(value)) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&value).unwrap_or_default(),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The traffic journal's summary records: from a sequence number on, or the newest first.
async fn journal(
    State(app): State<Arc<App>>,
    axum::extract::Query(q): axum::extract::Query<JournalQuery>,
) -> Response {
    let store = Arc::clone(&app.store);
    let limit = q.limit.min(10_000);
    json_or_error(
        tokio::task::spawn_blocking(move || match q.from {
            Some(from) => store.journal(from, limit),
            None => store.journal_tail(limit),
        })
        .await,
    )
}

/// One exchange's request and response bodies, while the retention keeps them.
async fn journal_bodies(
    State(app): State<Arc<App>>,
    axum::extract::Path(seq): axum::extract::Path<u64>,
) -> Response {
    let store = Arc::clone(&app.store);
    let found = tokio::task::spawn_blocking(move || store.journal_bodies(seq)).await;
    match found {
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            format!("no bodies for exchange {seq} (pruned by the retention, or never recorded)"),
        )
            .into_response(),
        other => json_or_error(other),
    }
}

//! The admin HTTP listener: `/healthz` for supervisors and load balancers, `/metrics` for
//! Prometheus, `/backup` for `mpayd backup`. Bind it to a private address.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio_stream::wrappers::ReceiverStream;

use crate::App;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/backup", get(backup))
        .with_state(app)
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

/// Resident memory of this process, from /proc (Linux).
fn rss_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let stats = app.store.stats();
    let mut registry = Registry::with_prefix("mpay");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let g: Gauge = Gauge::default();
        g.set(value);
        registry.register(name, help, g);
    };
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    registry.register(
        "build",
        "mpayd build information",
        Info::new(vec![("version", mpay_common::VERSION)]),
    );
    gauge(
        &mut registry,
        "positions",
        "Debt positions in the store",
        as_i64(stats.positions),
    );
    gauge(
        &mut registry,
        "store_commits",
        "Durable commits since start (counter semantics)",
        as_i64(stats.commits),
    );
    gauge(
        &mut registry,
        "store_flushes",
        "fsyncs since start; commits/flushes is the group-commit factor",
        as_i64(stats.flushes),
    );
    gauge(
        &mut registry,
        "store_disk_bytes",
        "Size of the store on disk",
        as_i64(stats.disk_bytes),
    );
    gauge(
        &mut registry,
        "store_healthy",
        "1 while no flush has failed",
        i64::from(app.store.healthy().is_ok()),
    );
    if let Some(rss) = rss_bytes() {
        gauge(
            &mut registry,
            "resident_memory_bytes",
            "Resident memory of mpayd",
            rss,
        );
    }
    let mut text = String::new();
    match encode(&mut text, &registry) {
        Ok(()) => (
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
    let (tx, rx) = tokio::sync::mpsc::channel(16);
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
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

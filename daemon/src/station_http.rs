//! The station's HTTP listener: the endpoint pagoPA's node POSTs SOAP requests to.
//!
//! A hand-built accept loop (rather than `axum::serve`) so that one path serves plain HTTP and
//! TLS alike, drops connections from addresses outside the allow-list before reading a byte, can
//! require the node's client certificate (mutual TLS), and drains in-flight requests on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::App;
use crate::config::{StationListenerConfig, TlsConfig};
use crate::journal::Journal;
use crate::pagopa::soap::{Fault, FaultCode, Operation, fault_response};
use crate::station::Station;

struct Shared {
    station: Station,
    journal: Journal,
    app: Arc<App>,
}

fn router(shared: Arc<Shared>, config: &StationListenerConfig) -> Router {
    Router::new()
        .route(&config.path, post(soap).fallback(not_soap))
        .fallback(not_soap)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(shared)
}

/// A SOAP 1.1 Fault (HTTP 500, as SOAP 1.1 answers a request it cannot process): what the node
/// reads when no operation can be named.
fn soap_fault(reason: &str) -> Response {
    let escaped = reason
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soapenv:Body><soapenv:Fault><faultcode>soapenv:Client</faultcode>\
         <faultstring>{escaped}</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Another path or another method than the station's POST: a SOAP Fault, not an HTML page.
async fn not_soap(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    soap_fault(&format!(
        "mpay's station answers SOAP POSTs on its configured path, not {method} {}",
        uri.path()
    ))
}

async fn soap(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let action = headers.get("soapaction").and_then(|v| v.to_str().ok());
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            // Too large (or unreadable): a KO of the operation the SOAPAction names, else a
            // Fault. The body is never read past the limit.
            let reason = rejection.body_text();
            tracing::warn!(%peer, action = action.unwrap_or(""), "station request refused: {reason}");
            let named = action.and_then(|a| {
                Operation::ALL
                    .into_iter()
                    .find(|op| a.trim_matches('"').eq_ignore_ascii_case(op.name()))
            });
            return match named {
                Some(op) => {
                    let fault = Fault {
                        code: FaultCode::SintassiExtraXsd,
                        id: shared.app.config.broker.id.to_string(),
                        description: Some(format!("the request was refused unread: {reason}")),
                    };
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                        fault_response(op, &fault),
                    )
                        .into_response()
                }
                None => soap_fault(&reason),
            };
        }
    };
    let handled = shared.station.handle(&body, action, Some(peer)).await;
    shared.app.metrics.observe(&handled.exchange);
    shared
        .app
        .live
        .record(shared.app.clock.now(), &handled.exchange);
    let response = handled.response;
    shared
        .journal
        .record(handled.exchange, response.clone())
        .await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        response,
    )
        .into_response()
}

/// Builds the TLS acceptor: the station's certificate, and the node's client certificate
/// required when `client_ca` is set.
/// Whether the client certificate of `stream` is one of `pins` (SHA-256 of its DER, hex); any
/// is when there are none.
fn pinned<S>(pins: &[String], stream: &tokio_rustls::server::TlsStream<S>) -> bool {
    use sha2::Digest;
    if pins.is_empty() {
        return true;
    }
    let Some(cert) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    else {
        return false;
    };
    let digest: String = sha2::Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    pins.contains(&digest)
}

pub fn tls_acceptor(tls: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    tls_acceptor_for("station.tls", tls)
}

/// A TLS acceptor from `tls`, whose keys are named `KEY.cert`, `KEY.key`, `KEY.client_ca` in
/// errors. With `client_ca`, a client certificate signed by it is required (mutual TLS).
pub fn tls_acceptor_for(key_name: &str, tls: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .with_context(|| format!("{key_name}.cert: {}", tls.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{key_name}.cert: {}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("{key_name}.key: {}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &tls.client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("{key_name}.client_ca: {}", path.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("{key_name}.client_ca: {}", path.display()))?)
                    .with_context(|| format!("{key_name}.client_ca: not a CA certificate"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .with_context(|| format!("{key_name}.client_ca"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .with_context(|| format!("{key_name}: certificate and key do not match"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves until `stop` turns true, then lets in-flight requests finish (at most
/// `drain_secs`). At most `max_connections` connections at once; a client that does not send a
/// request's headers within `header_timeout_secs` (or stays idle that long) is cut.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    journal: Journal,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let config = app.config.station.clone();
    let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
    let shared = Arc::new(Shared {
        station: Station::new(Arc::clone(&app)),
        journal,
        app: Arc::clone(&app),
    });
    let router = router(shared, &config);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let header_timeout = Duration::from_secs(config.header_timeout_secs.max(1));
    let pins: Arc<Vec<String>> = Arc::new(
        config
            .node_certificate_sha256
            .iter()
            .map(|p| p.to_ascii_lowercase())
            .collect(),
    );
    let mut refused_logged = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("station accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        if !config.allow.is_empty() && !config.allow.iter().any(|net| net.contains(&peer.ip())) {
            tracing::warn!(%peer, "station: connection refused (not in station.allow)");
            continue;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Full: closed at once; said once a minute at most, not once per connection.
            if refused_logged.elapsed() >= Duration::from_secs(60) {
                tracing::warn!(
                    %peer,
                    max = config.max_connections,
                    "station: connection refused, station.max_connections reached"
                );
                refused_logged = std::time::Instant::now();
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req)
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout);
        match &tls {
            None => {
                let conn = http.serve_connection(TokioIo::new(tcp), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "station connection: {e}");
                    }
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let pins = Arc::clone(&pins);
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = slot;
                    let handshake =
                        tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await;
                    let stream = match handshake {
                        Ok(Ok(s)) if !pinned(&pins, &s) => {
                            tracing::warn!(
                                %peer,
                                "station TLS refused: the client certificate is none of \
                                 station.node_certificate_sha256"
                            );
                            return;
                        }
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, "station TLS handshake refused: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "station TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "station connection: {e}");
                    }
                });
            }
        }
    }
    drop(listener);
    let drain = config.drain_secs;
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("station: in-flight requests finished"),
        _ = tokio::time::sleep(Duration::from_secs(drain)) => {
            tracing::warn!("station: in-flight requests still running after {drain} s; stopping");
        }
    }
    Ok(())
}

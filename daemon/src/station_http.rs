//! The station's HTTP listener: the endpoint pagoPA's node POSTs SOAP requests to.
//!
//! Its router answers SOAP and, where no operation can be named, a SOAP Fault; `listener.rs`
//! takes the connections (allow-list, TLS, the node's client certificate, caps and timeouts).

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
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::App;
use crate::config::{StationListenerConfig, TlsConfig};
use crate::journal::Journal;
use crate::listener::Limits;
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

/// Serves the station until `stop` turns true: the SOAP router behind the hardened listener
/// (`listener.rs`), with the allow-list, TLS and the node's pinned certificates.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    journal: Journal,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let config = app.config.station.clone();
    let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
    let shared = Arc::new(Shared {
        station: Station::new(Arc::clone(&app)),
        journal,
        app: Arc::clone(&app),
    });
    let limits = Limits {
        name: "station",
        allow: config.allow.clone(),
        tls,
        pins: config.node_certificate_sha256.clone(),
        max_connections: config.max_connections,
        header_timeout: Duration::from_secs(config.header_timeout_secs),
        drain: Duration::from_secs(config.drain_secs),
    };
    crate::listener::serve(listener, router(shared, &config), limits, stop).await
}

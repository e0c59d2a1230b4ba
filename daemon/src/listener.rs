//! The daemon's HTTP listeners (station, authority API, admin) take connections here. A
//! hand-built accept loop rather than `axum::serve`, so that each listener drops addresses
//! outside its allow-list before reading a byte, serves plain HTTP or TLS (with the client
//! certificate required, and pinned, where configured), holds at most `max_connections` at
//! once, cuts clients that do not send their headers in time or stay idle, backs off when the
//! process is out of file descriptors, and drains in-flight requests on shutdown, bounded.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How one listener takes connections.
pub struct Limits {
    /// The listener's name in logs and the configuration's keys: `station`, `api`, `admin`.
    pub name: &'static str,
    /// Client networks allowed (empty: any).
    pub allow: Vec<ipnet::IpNet>,
    pub tls: Option<TlsAcceptor>,
    /// SHA-256 fingerprints (hex) of the client certificates accepted under mutual TLS (empty:
    /// any the CA signs).
    pub pins: Vec<String>,
    pub max_connections: usize,
    /// To send a request's headers (and finish the TLS handshake), and to stay idle between
    /// requests.
    pub header_timeout: Duration,
    /// What in-flight requests get on shutdown.
    pub drain: Duration,
}

impl Limits {
    /// A plain-HTTP listener open to its network, with these bounds.
    pub fn plain(name: &'static str, max_connections: usize, header_timeout: Duration) -> Limits {
        Limits {
            name,
            allow: Vec::new(),
            tls: None,
            pins: Vec::new(),
            max_connections,
            header_timeout,
            drain: Duration::from_secs(5),
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true, then lets in-flight requests finish
/// (at most `limits.drain`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let header_timeout = limits.header_timeout.max(Duration::from_secs(1));
    let pins = Arc::new(limits.pins.clone());
    let name = limits.name;
    let mut refused_logged = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("{name} accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        if !limits.allow.is_empty() && !limits.allow.iter().any(|net| net.contains(&peer.ip())) {
            tracing::warn!(%peer, "{name}: connection refused (not in {name}.allow)");
            continue;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Full: closed at once; said once a minute at most, not once per connection.
            if refused_logged.elapsed() >= Duration::from_secs(60) {
                tracing::warn!(
                    %peer,
                    max = limits.max_connections,
                    "{name}: connection refused, {name}.max_connections reached"
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
        match &limits.tls {
            None => {
                let conn = http.serve_connection(TokioIo::new(tcp), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "{name} connection: {e}");
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
                                "{name} TLS refused: the client certificate is none of \
                                 {name}.node_certificate_sha256"
                            );
                            return;
                        }
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, "{name} TLS handshake refused: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "{name} TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "{name} connection: {e}");
                    }
                });
            }
        }
    }
    drop(listener);
    let drain = limits.drain;
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("{name}: in-flight requests finished"),
        _ = tokio::time::sleep(drain) => {
            tracing::warn!("{name}: in-flight requests still running after {drain:?}; stopping");
        }
    }
    Ok(())
}

/// Whether the client certificate of `stream` is one of `pins` (SHA-256 of its DER, hex); any
/// is when there are none.
fn pinned<S>(pins: &[String], stream: &tokio_rustls::server::TlsStream<S>) -> bool {
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
    let fingerprint = crate::config::certificate_sha256(cert.as_ref());
    pins.iter().any(|p| p.eq_ignore_ascii_case(&fingerprint))
}

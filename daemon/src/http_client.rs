//! Small HTTP/1.1 clients over hyper: one-off GETs for the command line's calls to a running
//! daemon (`mpayd backup`), and a keep-alive connection for the load generators (the node
//! simulator, the API bench).

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// GETs `url` and hands the body to `sink` chunk by chunk. Fails on a non-2xx status or a broken
/// body.
pub async fn get_to(
    url: &str,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = url.parse()?;
    let response = client.get(uri).await?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body.collect().await?.to_bytes();
        anyhow::bail!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
    }
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            sink(&data)?;
        }
    }
    Ok(())
}

/// One keep-alive HTTP/1.1 connection to a target, opened on first use and again after it breaks.
pub struct Connection {
    addr: String,
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// A connection to the host and port of `target` (an `http://` URL).
    pub fn new(target: &str) -> anyhow::Result<Connection> {
        let uri: hyper::Uri = target.parse().context("target")?;
        let host = uri.host().context("the target has no host")?.to_string();
        Ok(Connection {
            addr: format!("{host}:{}", uri.port_u16().unwrap_or(80)),
            host,
            sender: None,
        })
    }

    /// Sends one request (its `Host` header is added) and reads the whole answer.
    pub async fn send(
        &mut self,
        request: hyper::http::request::Builder,
        body: Bytes,
    ) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
            let _ = tcp.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().context("no connection")?;
        sender.ready().await?;
        let request = request
            .header(hyper::header::HOST, &self.host)
            .body(Full::new(body))?;
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let status = response.status();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }
}

/// The `q` quantile of sorted latencies in microseconds, in milliseconds.
pub fn percentile_ms(sorted_micros: &[u32], q: f64) -> f64 {
    if sorted_micros.is_empty() {
        return 0.0;
    }
    let i = ((sorted_micros.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted_micros[i]) / 1000.0
}

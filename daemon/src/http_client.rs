//! A small HTTP/1.1 client over hyper for the command line's calls to a running daemon
//! (`mpayd backup`).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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

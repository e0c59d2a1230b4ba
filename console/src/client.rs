//! The connection to mpayd: the Unix socket, the JSON codec, the `hello` handshake, and call
//! deadlines (tarpc's default is 10 s; the live feed's long poll waits less than that).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use mpay_common::console::rpc::ConsoleClient;
use mpay_common::console::{Hello, PROTOCOL, RpcError};
use tarpc::tokio_serde::formats::Json;
use tarpc::tokio_util::codec::LengthDelimitedCodec;

/// Where the console finds the daemon: `--socket`, else `MPAY_SOCKET`, else the data folder's
/// `console.sock` (`--data-dir`, default `/var/lib/mpay`).
pub fn socket_path(socket: Option<PathBuf>, data_dir: Option<PathBuf>) -> PathBuf {
    socket
        .or_else(|| std::env::var_os("MPAY_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| {
            data_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/mpay"))
                .join("console.sock")
        })
}

/// A connected console: the client and who the daemon takes us for.
#[derive(Clone)]
pub struct Connection {
    pub client: ConsoleClient,
    pub hello: Hello,
}

/// A call's context with a deadline of `secs` seconds.
pub fn deadline(secs: u64) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + Duration::from_secs(secs);
    ctx
}

/// Connects and says hello; the daemon's refusal (not an operator, another protocol) comes
/// back as the error's message.
pub async fn connect(path: &Path) -> anyhow::Result<Connection> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .with_context(|| format!("cannot reach mpayd at {}", path.display()))?;
    let framed = LengthDelimitedCodec::builder()
        .max_frame_length(16 << 20)
        .new_framed(stream);
    let transport = tarpc::serde_transport::new(framed, Json::default());
    let client = ConsoleClient::new(tarpc::client::Config::default(), transport).spawn();
    let hello = client
        .hello(
            deadline(5),
            PROTOCOL,
            format!("mpay {}", mpay_common::VERSION),
        )
        .await
        .context("mpayd did not answer")?
        .map_err(refused)?;
    Ok(Connection { client, hello })
}

/// A refusal as an error whose message is the daemon's.
pub fn refused(e: RpcError) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// Flattens a call's two failures (transport, refusal) into one.
pub fn answer<T>(r: Result<Result<T, RpcError>, tarpc::client::RpcError>) -> anyhow::Result<T> {
    r.context("mpayd did not answer")?.map_err(refused)
}

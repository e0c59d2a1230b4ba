//! The connection to mpayd: the local Unix socket, or a remote listener over TCP with mutual
//! TLS; the JSON codec, the `hello` handshake, and call deadlines (tarpc's default is 10 s; the
//! live feed's long poll waits less than that).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mpay_common::console::rpc::ConsoleClient;
use mpay_common::console::{Hello, PROTOCOL, RpcError};
use tarpc::tokio_serde::formats::Json;
use tarpc::tokio_util::codec::LengthDelimitedCodec;

/// Where the daemon is.
#[derive(Clone, Debug)]
pub enum Target {
    /// The local socket: the daemon knows us by our uid.
    Unix(PathBuf),
    /// A remote listener: the daemon knows us by our client certificate.
    Tls(Remote),
}

#[derive(Clone, Debug)]
pub struct Remote {
    /// `host:port`.
    pub address: String,
    /// Our certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed the daemon's certificate (PEM).
    pub ca: PathBuf,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "{}", path.display()),
            Target::Tls(r) => write!(f, "{} (TLS)", r.address),
        }
    }
}

/// Where the console finds the daemon's local socket: `--socket`, else `MPAY_SOCKET`, else the
/// data folder's `console.sock` (`--data-dir`, default `/var/lib/mpay`).
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

fn spawn_client<S>(stream: S) -> ConsoleClient
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let framed = LengthDelimitedCodec::builder()
        .max_frame_length(16 << 20)
        .new_framed(stream);
    let transport = tarpc::serde_transport::new(framed, Json::default());
    ConsoleClient::new(tarpc::client::Config::default(), transport).spawn()
}

/// Connects to the local socket and says hello.
pub async fn connect(path: &Path) -> anyhow::Result<Connection> {
    connect_to(&Target::Unix(path.to_path_buf())).await
}

/// Connects and says hello; the daemon's refusal (not an operator, another protocol) comes
/// back as the error's message.
pub async fn connect_to(target: &Target) -> anyhow::Result<Connection> {
    let client = match target {
        Target::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("cannot reach mpayd at {}", path.display()))?;
            spawn_client(stream)
        }
        Target::Tls(remote) => spawn_client(tls(remote).await?),
    };
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

async fn tls(
    remote: &Remote,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&remote.ca)
        .with_context(|| format!("--ca {}", remote.ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("--ca {}", remote.ca.display()))?)
            .context("--ca: not a CA certificate")?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&remote.cert)
        .with_context(|| format!("--cert {}", remote.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--cert {}", remote.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&remote.key)
        .with_context(|| format!("--key {}", remote.key.display()))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .context("--cert and --key do not match")?;
    let host = remote
        .address
        .rsplit_once(':')
        .map_or(remote.address.as_str(), |(h, _)| h)
        .trim_matches(['[', ']']);
    let name = ServerName::try_from(host.to_string())
        .with_context(|| format!("{host} is not a host name or an address"))?;
    let tcp = tokio::net::TcpStream::connect(&remote.address)
        .await
        .with_context(|| format!("cannot reach mpayd at {}", remote.address))?;
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {}", remote.address))
}

/// A refusal as an error whose message is the daemon's.
pub fn refused(e: RpcError) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// Flattens a call's two failures (transport, refusal) into one.
pub fn answer<T>(r: Result<Result<T, RpcError>, tarpc::client::RpcError>) -> anyhow::Result<T> {
    r.context("mpayd did not answer")?.map_err(refused)
}

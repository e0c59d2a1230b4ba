//! The daemon's TOML configuration. Every key is documented in `daemon/mpayd.example.toml`;
//! unknown keys are rejected by name, and `validate` checks what serde cannot (cross references,
//! identifiers, accounts), naming the offending key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mpay_common::ids::{EntityFiscalCode, Iban, IuvSettings};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Folder of the store and of the entities' inbox/outbox folders.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub store: StoreConfig,
    pub admin: AdminConfig,
    pub station: StationListenerConfig,
    /// The authorities' REST API listener.
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub journal: JournalConfig,
    /// Reconciliation and the daily reports.
    #[serde(default)]
    pub reconciliation: ReconciliationConfig,
    /// pagoPA's node as mpay calls it (reporting flows); none: flows come by hand only.
    #[serde(default)]
    pub node: Option<NodeConfig>,
    pub broker: BrokerConfig,
    pub stations: Vec<StationConfig>,
    pub entities: Vec<EntityConfig>,
    /// Keys of the intermediary's own citizen portal: they read the cross-entity citizen
    /// statement (`/api/v1/statements/{debtor}`) and nothing else.
    #[serde(default)]
    pub portal_keys: Vec<ApiKeyConfig>,
    /// The operators' console listener.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Who may use the console, and with which role.
    #[serde(default)]
    pub operators: Vec<OperatorConfig>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The Unix socket the console connects to (default: `DATA_DIR/console.sock`). It is
    /// created with mode 0660; the daemon knows each caller by its uid (SO_PEERCRED).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The group that owns the socket (the operators' group); default: the daemon's own.
    #[serde(default)]
    pub group: Option<String>,
    /// A TCP listener for remote consoles (off by default). It needs `tls` with `client_ca`:
    /// an operator is known by the SHA-256 of their client certificate.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// An operator: a local user, by uid or user name, and a role.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// The name in the audit trail and in the ledger (`operator:NAME`).
    pub name: String,
    #[serde(default)]
    pub uid: Option<u32>,
    /// A user name of this host (`/etc/passwd`), instead of `uid`.
    #[serde(default)]
    pub user: Option<String>,
    /// For a remote console: the SHA-256 of the operator's client certificate (DER), in hex
    /// (`openssl x509 -in cert.pem -outform der | sha256sum`).
    #[serde(default)]
    pub certificate_sha256: Option<String>,
    pub role: mpay_common::console::Role,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,mpayd::store=debug`; `RUST_LOG` overrides it.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: default_level(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The storage engine of a new store: sled (the default) or fjall. An existing store keeps
    /// its engine; `mpayd restore --engine` moves it. Where the file names none, the
    /// environment's `MPAY_STORE_ENGINE` does, else sled.
    #[serde(default = "crate::store::Engine::from_env")]
    pub engine: crate::store::Engine,
    /// sled's page cache or fjall's block cache, in MiB.
    #[serde(default = "default_cache")]
    pub cache_mib: u64,
    /// fjall's write buffers (memtables), in MiB: each part of the store (positions, ledger,
    /// each index) gets a quarter of this. sled has none.
    #[serde(default = "default_write_buffer")]
    pub write_buffer_mib: u64,
    /// Decoded positions kept in memory for the node's repeated reads (0: none).
    #[serde(default = "default_position_cache")]
    pub position_cache: usize,
}

fn default_position_cache() -> usize {
    10_000
}

fn default_cache() -> u64 {
    64
}

fn default_write_buffer() -> u64 {
    32
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            engine: crate::store::Engine::from_env(),
            cache_mib: default_cache(),
            write_buffer_mib: default_write_buffer(),
            position_cache: default_position_cache(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP listener (/healthz, /metrics, /backup). Keep it private.
    pub listen: SocketAddr,
}

/// The authorities' REST JSON API (`/api/v1/`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Request bodies larger than this are refused with 413.
    #[serde(default = "default_api_body_limit")]
    pub max_body_bytes: usize,
    /// Bulk files (`POST .../bulk`) larger than this are refused with 413.
    #[serde(default = "default_bulk_limit")]
    pub max_bulk_bytes: usize,
    /// What one entity's inbox folder (its files, `done/` and reject reports) may hold, in MiB:
    /// an upload past it is refused with 507, so that one authority cannot fill the disk that
    /// every receipt needs. Old files in `done/` are the operator's to archive.
    #[serde(default = "default_inbox_quota")]
    pub inbox_quota_mib: u64,
    /// Uploads one entity may have loading at once; another is refused with 429.
    #[serde(default = "default_jobs_per_entity")]
    pub max_running_jobs: usize,
    /// Connections held at once; past it a new one is closed at once (logged once a minute).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds to send a request's headers, and to stay idle between requests.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
}

fn default_bulk_limit() -> usize {
    64 << 20
}

fn default_inbox_quota() -> u64 {
    2048
}

fn default_jobs_per_entity() -> usize {
    4
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9483))
}

fn default_api_body_limit() -> usize {
    1 << 20
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
            max_body_bytes: default_api_body_limit(),
            max_bulk_bytes: default_bulk_limit(),
            inbox_quota_mib: default_inbox_quota(),
            max_running_jobs: default_jobs_per_entity(),
            max_connections: default_max_connections(),
            header_timeout_secs: default_header_timeout(),
        }
    }
}

/// The HTTP listener the node calls (the station's endpoint).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationListenerConfig {
    pub listen: SocketAddr,
    /// The one path SOAP requests are POSTed to.
    #[serde(default = "default_station_path")]
    pub path: String,
    /// Requests larger than this are refused before parsing.
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: usize,
    /// Client networks allowed to call (CIDR, e.g. "10.0.0.0/8"); empty: any.
    #[serde(default)]
    pub allow: Vec<ipnet::IpNet>,
    /// TLS, with the node's client certificate required when `client_ca` is set.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Connections held at once at most; past it a new connection is closed at once (and
    /// logged), so idle or slow clients cannot take every file descriptor.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and the TLS handshake), and a kept
    /// alive connection may stay idle, before it is closed.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Seconds in-flight requests get to finish on SIGTERM.
    #[serde(default = "default_drain")]
    pub drain_secs: u64,
    /// A station reachable from other hosts needs `allow` or mutual TLS (`tls.client_ca`):
    /// otherwise anyone who reaches it can mark notices paid and read debtors. Set this only
    /// when something in front (a proxy doing mutual TLS with the node) already keeps others out.
    #[serde(default)]
    pub unprotected: bool,
    /// With mutual TLS: the SHA-256 fingerprints (hex) of the node's client certificates to
    /// accept, when any certificate the CA signs is too many (a CA shared with other services).
    /// Empty: any certificate `client_ca` signs. List the next certificate before the node
    /// rotates it.
    #[serde(default)]
    pub node_certificate_sha256: Vec<String>,
    /// Lookups of unknown notices (verify, getPayment) one address may make a minute; past it
    /// they are refused until the minute is over, and logged (0: no limit). Notice numbers are
    /// sequential: this keeps a peer from reading debtors by walking them.
    #[serde(default = "default_unknown_lookups")]
    pub max_unknown_lookups_per_minute: u32,
}

fn default_unknown_lookups() -> u32 {
    600
}

fn default_max_connections() -> usize {
    1024
}

fn default_header_timeout() -> u64 {
    10
}

fn default_drain() -> u64 {
    5
}

fn default_station_path() -> String {
    "/pagopa/paForNode".into()
}

fn default_body_limit() -> usize {
    256 << 10
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the station.
    pub cert: PathBuf,
    /// PEM private key of the station.
    pub key: PathBuf,
    /// PEM CA certificates that sign the node's client certificate: mutual TLS.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// The most certificates a `client_ca` may hold: the node's or the operators' issuers, not
    /// a bundle of public authorities (which would admit any certificate they ever signed).
    const MAX_CLIENT_CAS: usize = 8;

    /// The files exist; the key is not readable by every user of the host; `client_ca` holds
    /// between one and [`Self::MAX_CLIENT_CAS`] certificates.
    fn check(&self, at: &str) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let files = [("cert", &self.cert), ("key", &self.key)];
        let ca = self.client_ca.iter().map(|p| ("client_ca", p));
        for (name, path) in files.into_iter().chain(ca) {
            let key = format!("{at}.{name}");
            let meta = std::fs::metadata(path)
                .ok()
                .filter(|m| m.is_file())
                .ok_or_else(|| {
                    invalid(&key, format!("{} is not a readable file", path.display()))
                })?;
            let mode = meta.permissions().mode() & 0o777;
            if name == "key" && mode & 0o004 != 0 {
                return Err(invalid(
                    key,
                    format!(
                        "{} is readable by every user of this host (mode {mode:04o}): \
                         chmod 0640 (owner and mpayd's group) or 0600",
                        path.display()
                    ),
                ));
            }
            if name == "client_ca" {
                let pem = std::fs::read(path)
                    .map_err(|e| invalid(&key, format!("{}: {e}", path.display())))?;
                let count = pem
                    .windows(b"-----BEGIN CERTIFICATE-----".len())
                    .filter(|w| w == b"-----BEGIN CERTIFICATE-----")
                    .count();
                if count == 0 {
                    return Err(invalid(
                        key,
                        format!("{} holds no PEM certificate", path.display()),
                    ));
                }
                if count > Self::MAX_CLIENT_CAS {
                    return Err(invalid(
                        key,
                        format!(
                            "{} holds {count} certificates, like a system bundle of public \
                             authorities: any certificate they signed would pass. Name only \
                             the CA that issues the client certificates (at most {})",
                            path.display(),
                            Self::MAX_CLIENT_CAS
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The traffic journal keeps one summary record per exchange forever and the message bodies
/// within this budget (the oldest bodies are pruned first).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    #[serde(default = "default_body_days")]
    pub body_retention_days: u32,
    #[serde(default = "default_body_mib")]
    pub body_retention_mib: u64,
}

fn default_body_days() -> u32 {
    90
}

fn default_body_mib() -> u64 {
    2048
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            body_retention_days: default_body_days(),
            body_retention_mib: default_body_mib(),
        }
    }
}

/// Where and how mpay calls pagoPA's node (`nodeForPa`) for the reporting flows.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Which of the node's interfaces gives the flows: `soap` (nodeForPa) or `fdr` (the FdR
    /// REST service for organisations).
    #[serde(default)]
    pub interface: NodeInterface,
    /// The nodeForPa SOAP endpoint, or the FdR service's base URL
    /// (`…/fdr-org/service/v1`).
    pub url: String,
    /// The station whose credentials the requests carry (default: the first `[[stations]]`).
    #[serde(default)]
    pub station: Option<String>,
    /// The station's password on the node (8 to 15 characters; SOAP only).
    #[serde(default)]
    pub password: String,
    /// The `Ocp-Apim-Subscription-Key` header.
    #[serde(default)]
    pub subscription_key: Option<String>,
    /// Each call's timeout.
    #[serde(default = "default_node_timeout")]
    pub timeout_secs: u64,
}

/// The node's interface for the reporting flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeInterface {
    #[default]
    Soap,
    Fdr,
}

fn default_node_timeout() -> u64 {
    30
}

/// When the daily reports are written, and how long reporting and crediting may take.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationConfig {
    /// Europe/Rome time of the daily run, `HH:MM`: each entity's report of the day before goes
    /// to `DATA_DIR/outbox/<entity>/<date>.csv|json`. A run missed while the daemon was down is
    /// made at start (up to `catch_up_days` back).
    #[serde(default = "default_daily_at")]
    pub daily_at: String,
    #[serde(default = "default_catch_up_days")]
    pub catch_up_days: u32,
    /// Days from a payment to its flow row, and from the flow row to the credit, after which
    /// the transfer is an anomaly.
    #[serde(default = "default_report_days")]
    pub report_days: i32,
    #[serde(default = "default_credit_days")]
    pub credit_days: i32,
}

fn default_daily_at() -> String {
    "06:30".into()
}

fn default_catch_up_days() -> u32 {
    7
}

fn default_report_days() -> i32 {
    4
}

fn default_credit_days() -> i32 {
    3
}

impl Default for ReconciliationConfig {
    fn default() -> Self {
        ReconciliationConfig {
            daily_at: default_daily_at(),
            catch_up_days: default_catch_up_days(),
            report_days: default_report_days(),
            credit_days: default_credit_days(),
        }
    }
}

impl ReconciliationConfig {
    pub fn tolerances(&self) -> mpay_common::reconcile::Tolerances {
        mpay_common::reconcile::Tolerances {
            report_days: self.report_days,
            credit_days: self.credit_days,
        }
    }

    /// `daily_at` as a civil time.
    pub fn daily_time(&self) -> Result<jiff::civil::Time, String> {
        let t = self.daily_at.trim();
        let ok = t.len() == 5 && t.as_bytes()[2] == b':';
        ok.then(|| format!("{t}:00").parse::<jiff::civil::Time>().ok())
            .flatten()
            .ok_or_else(|| format!("{t:?} is not a time of day HH:MM"))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// `idBrokerPA`: the intermediary's fiscal code as registered on the node.
    pub id: EntityFiscalCode,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// `idStation`, e.g. `15376371009_01`.
    pub id: String,
    /// Primitive version the node uses with this station: 1 (paGetPayment, paSendRT) or 2
    /// (paGetPaymentV2, paSendRTV2).
    #[serde(default = "default_version")]
    pub primitive_version: u8,
}

fn default_version() -> u8 {
    2
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    pub fiscal_code: EntityFiscalCode,
    pub name: String,
    /// Office or department shown on receipts (`officeName`).
    #[serde(default)]
    pub office: Option<String>,
    /// Stations (ids from `[[stations]]`) the entity is served through.
    pub stations: Vec<String>,
    /// How mpay generates this entity's notice numbers.
    pub iuv: IuvSettings,
    /// Bank accounts registered on the node for this entity.
    #[serde(default)]
    pub bank_accounts: Vec<Iban>,
    /// Poste Italiane accounts (IBANs with ABI 07601) registered on the node.
    #[serde(default)]
    pub postal_accounts: Vec<Iban>,
    /// Spontaneous-payment services the node may create notices for (paDemandPaymentNotice).
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Keys the entity's systems use on the REST API.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// How to read the treasurer's giornale di cassa as CSV (camt.053 needs no setting).
    #[serde(default)]
    pub treasury_csv: Option<TreasuryCsv>,
}

/// The columns of a giornale di cassa CSV: each a header's name or a number from 1.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreasuryCsv {
    #[serde(default = "semicolon")]
    pub delimiter: String,
    /// The first row names the columns.
    #[serde(default = "yes")]
    pub header: bool,
    /// The booking date.
    pub date: String,
    pub amount: String,
    /// D/C, DARE/AVERE or +/-; without it, the amount carries its sign.
    #[serde(default)]
    pub sign: Option<String>,
    /// The remittance text (causale).
    pub remittance: String,
    /// The bank's reference of the movement; without it, one is made from the row.
    #[serde(default)]
    pub reference: Option<String>,
    /// The account (IBAN); without it, the entity's first bank account.
    #[serde(default)]
    pub account: Option<String>,
    /// A strftime format for the dates (default: YYYY-MM-DD or DD/MM/YYYY).
    #[serde(default)]
    pub date_format: Option<String>,
}

impl TreasuryCsv {
    /// A common treasurer's export: `Data contabile;Importo;Segno;Causale;Riferimento`.
    pub fn usual() -> TreasuryCsv {
        TreasuryCsv {
            delimiter: semicolon(),
            header: true,
            date: "Data contabile".into(),
            amount: "Importo".into(),
            sign: Some("Segno".into()),
            remittance: "Causale".into(),
            reference: Some("Riferimento".into()),
            account: None,
            date_format: None,
        }
    }
}

fn semicolon() -> String {
    ";".into()
}

fn yes() -> bool {
    true
}

/// One API key of an entity. Only its SHA-256 is configured (`mpayd hash-key` computes it);
/// the name is what the ledger records as the actor.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    /// Lower- or upper-case hex of the key's SHA-256 (64 characters).
    pub sha256: String,
}

impl ApiKeyConfig {
    /// The configured digest; `None` unless it is 64 hex characters (`validate` refuses those).
    pub fn digest(&self) -> Option<[u8; 32]> {
        let hex = self.sha256.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(text, 16).ok()?;
        }
        Some(out)
    }
}

/// SHA-256 of an API key, as configured in `sha256`.
pub fn key_digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// Lower-case hex, for `mpayd hash-key`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate's fingerprint as the configuration names it: the SHA-256 of its DER, hex.
pub fn certificate_sha256(der: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(der))
}

/// A service of pagoPA's service catalogue that this entity offers for spontaneous payments.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `idServizio`, 5 characters.
    pub id: String,
    /// `idSoggettoServizio`, 5 characters.
    pub subject_id: String,
    pub description: String,
    /// Fixed amount, e.g. "16.00".
    pub amount: String,
    /// Taxonomy category of the transfer.
    pub category: String,
    /// Days from the request to the notice's due date, when an unpaid notice lapses.
    #[serde(default = "default_due_days")]
    pub due_days: u32,
    /// New positions a day at most (the same request again reuses its position): a flood of
    /// distinct requests cannot fill the store.
    #[serde(default = "default_demands_per_day")]
    pub max_per_day: u32,
}

fn default_demands_per_day() -> u32 {
    1000
}

fn default_due_days() -> u32 {
    30
}

/// A configuration error: which key, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The io error is the source: `{:#}` prints it after this, once.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// The uid of a user name, from `/etc/passwd`.
pub fn user_uid(user: &str) -> Option<u32> {
    id_of("/etc/passwd", user)
}

/// The gid of a group name, from `/etc/group`.
pub fn group_gid(group: &str) -> Option<u32> {
    id_of("/etc/group", group)
}

/// The third field of the `name:…` line of a passwd-style file.
fn id_of(file: &str, name: &str) -> Option<u32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == name).then_some(())?;
            fields.nth(1)?.parse().ok()
        })
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Names (1 to 64 characters, unique in the list) and digests (64 hex characters, unique across
/// every key configured, entities' and portal's alike) of one list of API keys.
fn check_keys(
    parent: &str,
    list: &str,
    keys: &[ApiKeyConfig],
    digests: &mut HashSet<[u8; 32]>,
) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (j, k) in keys.iter().enumerate() {
        let key = if parent.is_empty() {
            format!("{list}[{j}]")
        } else {
            format!("{parent}.{list}[{j}]")
        };
        if k.name.trim().is_empty() || k.name.chars().count() > 64 {
            return Err(invalid(format!("{key}.name"), "1 to 64 characters"));
        }
        if !names.insert(k.name.as_str()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("{:?} appears twice in {list}", k.name),
            ));
        }
        let digest = k.digest().ok_or_else(|| {
            invalid(
                format!("{key}.sha256"),
                "must be the 64 hex characters of the key's SHA-256 (mpayd hash-key)",
            )
        })?;
        if !digests.insert(digest) {
            return Err(invalid(
                format!("{key}.sha256"),
                "the same key is configured twice",
            ));
        }
    }
    Ok(())
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if let Ok(name) = std::env::var(crate::store::ENGINE_VAR) {
            name.parse::<crate::store::Engine>()
                .map_err(|e| invalid(crate::store::ENGINE_VAR, e))?;
        }
        if self.store.cache_mib == 0 {
            return Err(invalid("store.cache_mib", "must be at least 1"));
        }
        self.reconciliation
            .daily_time()
            .map_err(|e| invalid("reconciliation.daily_at", e))?;
        if let Some(node) = &self.node {
            if !(node.url.starts_with("https://") || node.url.starts_with("http://")) {
                return Err(invalid(
                    "node.url",
                    format!("{:?}: an http(s) URL", node.url),
                ));
            }
            if node.interface == NodeInterface::Soap
                && !(8..=15).contains(&node.password.chars().count())
            {
                return Err(invalid("node.password", "8 to 15 characters"));
            }
            if let Some(s) = &node.station
                && self.station(s).is_none()
            {
                return Err(invalid(
                    "node.station",
                    format!("no [[stations]] has id {s:?}"),
                ));
            }
        }
        for (key, days) in [
            (
                "reconciliation.report_days",
                self.reconciliation.report_days,
            ),
            (
                "reconciliation.credit_days",
                self.reconciliation.credit_days,
            ),
        ] {
            if !(0..=60).contains(&days) {
                return Err(invalid(key, format!("{days}: from 0 to 60 days")));
            }
        }
        if self.log.level.trim().is_empty()
            || tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err()
            || !self.log.level.split(',').all(|part| {
                let level = part.rsplit('=').next().unwrap_or("").trim();
                ["trace", "debug", "info", "warn", "error", "off"]
                    .iter()
                    .any(|l| level.eq_ignore_ascii_case(l))
            })
        {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?}: a level (error, warn, info, debug, trace, off), optionally per module \
                     (info,mpayd::store=debug)",
                    self.log.level
                ),
            ));
        }
        if self.broker.name.trim().is_empty() {
            return Err(invalid("broker.name", "must not be empty"));
        }
        if self.stations.is_empty() {
            return Err(invalid("stations", "at least one [[stations]] is needed"));
        }
        let mut stations = HashSet::new();
        for (i, s) in self.stations.iter().enumerate() {
            let key = format!("stations[{i}]");
            if s.id.is_empty()
                || s.id.len() > 35
                || !s
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    format!("{key}.id"),
                    format!("{:?}: 1 to 35 letters, digits, '_' or '-'", s.id),
                ));
            }
            // pagoPA names a broker's stations `<broker fiscal code>_<nn>`.
            let ours =
                s.id.strip_prefix(self.broker.id.as_str())
                    .and_then(|rest| rest.strip_prefix('_'))
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if !ours {
                return Err(invalid(
                    format!("{key}.id"),
                    format!(
                        "{:?} is not a station of broker {}: pagoPA names them {}_NN",
                        s.id, self.broker.id, self.broker.id
                    ),
                ));
            }
            if !stations.insert(s.id.as_str()) {
                return Err(invalid(
                    format!("{key}.id"),
                    format!("{} appears twice", s.id),
                ));
            }
            if !matches!(s.primitive_version, 1 | 2) {
                return Err(invalid(
                    format!("{key}.primitive_version"),
                    format!("must be 1 or 2, found {}", s.primitive_version),
                ));
            }
        }
        if !self.station.path.starts_with('/') {
            return Err(invalid("station.path", "must start with '/'"));
        }
        if self.station.max_body_bytes < 4096 {
            return Err(invalid("station.max_body_bytes", "at least 4096"));
        }
        if self.station.listen == self.admin.listen && self.station.listen.port() != 0 {
            return Err(invalid(
                "station.listen",
                "must differ from admin.listen (the admin listener must stay private)",
            ));
        }
        if self.api.listen.port() != 0
            && (self.api.listen == self.admin.listen || self.api.listen == self.station.listen)
        {
            return Err(invalid(
                "api.listen",
                "must differ from admin.listen and station.listen",
            ));
        }
        if self.api.max_body_bytes < 1024 {
            return Err(invalid("api.max_body_bytes", "at least 1024"));
        }
        if self.api.inbox_quota_mib == 0 {
            return Err(invalid("api.inbox_quota_mib", "at least 1"));
        }
        if self.api.max_running_jobs == 0 {
            return Err(invalid("api.max_running_jobs", "at least 1"));
        }
        if let Some(tls) = &self.station.tls {
            tls.check("station.tls")?;
        }
        if let Some(tls) = &self.console.tls {
            tls.check("console.tls")?;
        }
        let station = &self.station;
        let mutual_tls = station.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        for (i, pin) in station.node_certificate_sha256.iter().enumerate() {
            let key = format!("station.node_certificate_sha256[{i}]");
            if !mutual_tls {
                return Err(invalid(
                    key,
                    "needs station.tls with client_ca (mutual TLS)",
                ));
            }
            if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid(key, "64 hexadecimal digits (sha256sum of the DER)"));
            }
        }
        let allow_list = station.allow.iter().any(|net| net.prefix_len() > 0);
        if !station.listen.ip().is_loopback() && !mutual_tls && !allow_list && !station.unprotected
        {
            return Err(invalid(
                "station.listen",
                format!(
                    "{} is reachable from other hosts with neither station.allow nor \
                     station.tls.client_ca: anyone who reaches it could mark notices paid and \
                     read debtors. Name the node's networks in allow, or require its client \
                     certificate, or set station.unprotected = true if a proxy in front does",
                    station.listen
                ),
            ));
        }
        let mut entities = HashSet::new();
        // A key that opened two entities would make "which entity" ambiguous.
        let mut digests = HashSet::new();
        for (i, e) in self.entities.iter().enumerate() {
            let key = format!("entities[{i}]");
            if !entities.insert(&e.fiscal_code) {
                return Err(invalid(
                    format!("{key}.fiscal_code"),
                    format!("{} appears twice", e.fiscal_code),
                ));
            }
            if e.name.trim().is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if e.stations.is_empty() {
                return Err(invalid(format!("{key}.stations"), "at least one station"));
            }
            for (j, s) in e.stations.iter().enumerate() {
                if !stations.contains(s.as_str()) {
                    return Err(invalid(
                        format!("{key}.stations[{j}]"),
                        format!("no [[stations]] has id {s:?}"),
                    ));
                }
            }
            e.iuv
                .validate()
                .map_err(|err| invalid(format!("{key}.iuv"), err.to_string()))?;
            if e.bank_accounts.is_empty() && e.postal_accounts.is_empty() {
                return Err(invalid(
                    format!("{key}.bank_accounts"),
                    "an entity needs at least one bank or postal account",
                ));
            }
            if let Some(t) = &e.treasury_csv {
                let key = format!("{key}.treasury_csv");
                if t.delimiter.len() != 1 || t.delimiter == "\"" {
                    return Err(invalid(
                        format!("{key}.delimiter"),
                        format!("{:?}: one ASCII character", t.delimiter),
                    ));
                }
                for (field, value) in [
                    ("date", &t.date),
                    ("amount", &t.amount),
                    ("remittance", &t.remittance),
                ] {
                    if value.trim().is_empty() {
                        return Err(invalid(
                            format!("{key}.{field}"),
                            "a column: its header's name or its number from 1",
                        ));
                    }
                }
            }
            for (j, service) in e.services.iter().enumerate() {
                let key = format!("{key}.services[{j}]");
                for (field, value) in [("id", &service.id), ("subject_id", &service.subject_id)] {
                    if value.chars().count() != 5 {
                        return Err(invalid(
                            format!("{key}.{field}"),
                            format!("{value:?}: exactly 5 characters"),
                        ));
                    }
                }
                mpay_common::money::Cents::parse_api(&service.amount)
                    .map_err(|err| invalid(format!("{key}.amount"), err.to_string()))?;
                if service.description.trim().is_empty() || service.category.trim().is_empty() {
                    return Err(invalid(key, "description and category must not be empty"));
                }
            }
            check_keys(&key, "api_keys", &e.api_keys, &mut digests)?;
            for (j, iban) in e.postal_accounts.iter().enumerate() {
                if !iban.is_postal() {
                    return Err(invalid(
                        format!("{key}.postal_accounts[{j}]"),
                        format!("{iban} is not a Poste Italiane account (ABI 07601)"),
                    ));
                }
            }
        }
        check_keys("", "portal_keys", &self.portal_keys, &mut digests)?;
        let mut names = HashSet::new();
        let mut uids = HashSet::new();
        for (i, o) in self.operators.iter().enumerate() {
            let key = format!("operators[{i}]");
            if o.name.trim().is_empty() || o.name.len() > 64 {
                return Err(invalid(format!("{key}.name"), "1 to 64 characters"));
            }
            if !names.insert(o.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{} appears twice", o.name),
                ));
            }
            let uid = match (o.uid, &o.user) {
                (Some(uid), None) => Some(uid),
                (None, Some(user)) => Some(user_uid(user).ok_or_else(|| {
                    invalid(
                        format!("{key}.user"),
                        format!("no user {user:?} on this host"),
                    )
                })?),
                (None, None) if o.certificate_sha256.is_some() => None,
                _ => {
                    return Err(invalid(
                        key,
                        "give uid or user (a local operator), certificate_sha256 (a remote one), \
                         or both",
                    ));
                }
            };
            if let Some(uid) = uid
                && !uids.insert(uid)
            {
                return Err(invalid(key, format!("uid {uid} has two operators")));
            }
            if let Some(f) = &o.certificate_sha256
                && (f.len() != 64 || !f.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(invalid(
                    format!("{key}.certificate_sha256"),
                    "64 hexadecimal digits",
                ));
            }
        }
        if self.console.listen.is_some()
            && self
                .console
                .tls
                .as_ref()
                .is_none_or(|t| t.client_ca.is_none())
        {
            return Err(invalid(
                "console.tls",
                "a remote console listener needs TLS with client_ca: operators are known by \
                 their client certificate",
            ));
        }
        if let Some(group) = &self.console.group
            && group_gid(group).is_none()
        {
            return Err(invalid(
                "console.group",
                format!("no group {group:?} on this host"),
            ));
        }
        Ok(())
    }

    /// The console socket's path.
    pub fn console_socket(&self) -> PathBuf {
        self.console
            .socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("console.sock"))
    }

    /// The operator a client certificate (DER) belongs to, if any.
    pub fn operator_of_certificate(&self, der: &[u8]) -> Option<&OperatorConfig> {
        let fingerprint = certificate_sha256(der);
        self.operators.iter().find(|o| {
            o.certificate_sha256
                .as_deref()
                .is_some_and(|f| f.eq_ignore_ascii_case(&fingerprint))
        })
    }

    /// The operator a local uid is, if any.
    pub fn operator_of(&self, uid: u32) -> Option<&OperatorConfig> {
        self.operators
            .iter()
            .find(|o| o.uid == Some(uid) || o.user.as_deref().and_then(user_uid) == Some(uid))
    }

    pub fn entity(&self, code: &EntityFiscalCode) -> Option<&EntityConfig> {
        self.entities.iter().find(|e| &e.fiscal_code == code)
    }

    pub fn station(&self, id: &str) -> Option<&StationConfig> {
        self.stations.iter().find(|s| s.id == id)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Config {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        crate::demo::config(Path::new("/tmp/mpay-config-test"), any, any)
    }

    fn refused(config: &Config) -> String {
        match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn portal_keys_are_checked_like_entity_keys() {
        let config = demo();
        config.validate().expect("the demo configuration is valid");
        // It survives the TOML round trip the demo writes.
        let again = Config::parse(&config.to_toml()).expect("round trip");
        assert_eq!(again.portal_keys.len(), 1);

        let mut bad = config.clone();
        bad.portal_keys[0].sha256 = "xyz".into();
        assert_eq!(refused(&bad), "portal_keys[0].sha256");

        let mut same_as_entity = config.clone();
        same_as_entity.portal_keys[0].sha256 = config.entities[0].api_keys[0].sha256.clone();
        assert_eq!(refused(&same_as_entity), "portal_keys[0].sha256");

        let mut twice = config.clone();
        let mut other = twice.portal_keys[0].clone();
        other.sha256 = hex(&key_digest("another-portal-key"));
        twice.portal_keys.push(other);
        assert_eq!(refused(&twice), "portal_keys[1].name");

        let mut unnamed = config;
        unnamed.portal_keys[0].name = " ".into();
        assert_eq!(refused(&unnamed), "portal_keys[0].name");
    }
}

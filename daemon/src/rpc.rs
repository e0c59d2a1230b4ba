//! The console's RPC listener: tarpc with the JSON codec over a Unix socket. The daemon knows
//! each caller by the uid the kernel gives for the connection (SO_PEERCRED) and maps it to a
//! configured operator and role; a uid that is no operator gets every call refused with a
//! message saying so. Roles are enforced here: the console only hides what one may not do.
//! Every call runs the services (`service::*`), blocking work in `spawn_blocking`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use mpay_common::console::rpc::{Console, MAX_WAIT_MS};
use mpay_common::console::{
    Adjustment, AuditRecord, Cursor, EventPage, Exchange, ExchangeDetail, Hello, JobRow, PROTOCOL,
    PositionKey, PositionRow, PositionView, Role, RpcError, RpcResult, RunRecord, Search, Status,
    TrafficFilter,
};
use mpay_common::ids::EntityFiscalCode;
use mpay_common::reconcile::{FlowView, MovementView};
use mpay_common::requests::PositionQuery;
use mpay_common::statement::Statement;
use mpay_common::worklist::{Fix, Resolution, Worklist, WorklistQuery};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Json;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tokio::net::UnixListener;

use crate::App;
use crate::service::console::{self as svc, Operator};
use crate::service::{ServiceError, search, statements, worklist};

/// Calls one connection may have in flight.
const MAX_IN_FLIGHT: usize = 64;
/// Largest message either way.
const MAX_FRAME: usize = 16 << 20;

impl From<ServiceError> for RpcError {
    fn from(e: ServiceError) -> Self {
        RpcError {
            code: e.code.into(),
            message: e.message,
            field: e.field,
        }
    }
}

/// Binds the socket: a stale socket file from a daemon that died is replaced, anything else at
/// that path is left alone and refused. Mode 0660, group `group` when configured.
pub fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "console.socket: {} exists and is not a socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("console.socket: cannot replace {}", path.display()))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("console.socket: cannot create {}", dir.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("console.socket: cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("console.socket: cannot set the mode of {}", path.display()))?;
    if let Some(group) = group {
        let gid = crate::config::group_gid(group)
            .with_context(|| format!("console.group: no group {group:?}"))?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("console.group: cannot give {} to {group}", path.display()))?;
    }
    Ok(listener)
}

/// Serves one console connection as `caller`.
fn serve_connection<S>(app: &Arc<App>, stream: S, caller: Caller)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let mut codec = LengthDelimitedCodec::builder();
    codec.max_frame_length(MAX_FRAME);
    let transport = tarpc::serde_transport::new(codec.new_framed(stream), Json::default());
    let server = Server {
        app: Arc::clone(app),
        caller: Arc::new(caller),
    };
    let channel = BaseChannel::with_defaults(transport).max_concurrent_requests(MAX_IN_FLIGHT);
    tokio::spawn(
        channel
            .execute(server.serve())
            .for_each_concurrent(MAX_IN_FLIGHT, |call| call),
    );
}

/// Serves remote consoles over TCP with mutual TLS until `stop` says true. The operator is the
/// one whose `certificate_sha256` is the client certificate's.
pub async fn serve_tls(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("console: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (app, acceptor) = (Arc::clone(&app), acceptor.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, "remote console refused: TLS: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "remote console refused: TLS handshake timed out");
                    return;
                }
            };
            let der = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec())
                .unwrap_or_default();
            let origin = format!("tls {peer}");
            let caller = match app.config.operator_of_certificate(&der) {
                Some(o) => Caller::known(o, origin),
                None => {
                    tracing::warn!(%origin, "remote console refused: certificate of no operator");
                    Caller::Stranger(
                        "this client certificate is no operator's of this mpayd: an \
                         administrator adds its SHA-256 to [[operators]] in mpayd.toml"
                            .into(),
                    )
                }
            };
            serve_connection(&app, tls, caller);
        });
    }
}

/// Serves consoles until `stop` says true.
pub async fn serve(
    app: Arc<App>,
    listener: UnixListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("console: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let caller = match stream.peer_cred() {
            Ok(cred) => {
                let origin = match cred.pid() {
                    Some(pid) => format!("uid {} pid {pid}", cred.uid()),
                    None => format!("uid {}", cred.uid()),
                };
                match app.config.operator_of(cred.uid()) {
                    Some(o) => Caller::known(o, origin),
                    None => {
                        tracing::warn!(%origin, "console refused: not an operator");
                        Caller::Stranger(svc::not_an_operator(cred.uid()).message)
                    }
                }
            }
            Err(e) => {
                tracing::warn!("console refused: no peer credentials: {e}");
                continue;
            }
        };
        serve_connection(&app, stream, caller);
    }
}

enum Caller {
    Known(Operator, Role),
    /// A uid or a certificate of no operator: every call is refused with this message.
    Stranger(String),
}

impl Caller {
    fn known(o: &crate::config::OperatorConfig, origin: String) -> Caller {
        tracing::info!(operator = %o.name, %origin, "console connected");
        Caller::Known(
            Operator {
                name: o.name.clone(),
                origin,
            },
            o.role,
        )
    }
}

#[derive(Clone)]
struct Server {
    app: Arc<App>,
    caller: Arc<Caller>,
}

impl Server {
    /// The operator, if their role is at least `needed`.
    fn may(&self, needed: Role) -> RpcResult<&Operator> {
        match &*self.caller {
            Caller::Stranger(why) => Err(RpcError::new("NOT_AN_OPERATOR", why.clone())),
            Caller::Known(op, role) if *role >= needed => Ok(op),
            Caller::Known(op, role) => Err(RpcError::new(
                "FORBIDDEN",
                format!("{} is a {role}: this needs the {needed} role", op.name),
            )),
        }
    }

    /// A refused attempt is audited too, when we know who tried.
    async fn audit_refusal(&self, action: &str, target: String, reason: &str, e: &RpcError) {
        if let Caller::Known(op, _) = &*self.caller {
            let record = AuditRecord {
                seq: 0,
                at: self.app.clock.now(),
                actor: op.actor(),
                origin: op.origin.clone(),
                action: action.into(),
                target,
                reason: reason.into(),
                outcome: format!("{}: {}", e.code, e.message),
            };
            let app = Arc::clone(&self.app);
            let _ = tokio::task::spawn_blocking(move || app.store.append_audit(record)).await;
        }
    }

    /// Runs `work` off the async threads, for an operator with at least `needed`.
    async fn blocking<T: Send + 'static>(
        &self,
        needed: Role,
        work: impl FnOnce(&App, &Operator) -> Result<T, ServiceError> + Send + 'static,
    ) -> RpcResult<T> {
        let operator = self.may(needed)?.clone();
        let app = Arc::clone(&self.app);
        tokio::task::spawn_blocking(move || work(&app, &operator).map_err(RpcError::from))
            .await
            .map_err(|e| RpcError::new("INTERNAL", format!("call failed: {e}")))?
    }
}

impl Console for Server {
    async fn hello(self, _: Context, protocol: u32, client: String) -> RpcResult<Hello> {
        if protocol != PROTOCOL {
            return Err(RpcError::new(
                "PROTOCOL",
                format!(
                    "this mpayd ({}) speaks console protocol {PROTOCOL} and {client} speaks \
                     {protocol}: use the mpay console of the same release as mpayd",
                    mpay_common::VERSION
                ),
            ));
        }
        match &*self.caller {
            Caller::Stranger(why) => Err(RpcError::new("NOT_AN_OPERATOR", why.clone())),
            Caller::Known(op, role) => Ok(Hello {
                protocol: PROTOCOL,
                version: mpay_common::VERSION.into(),
                operator: op.name.clone(),
                role: *role,
            }),
        }
    }

    async fn status(self, _: Context) -> RpcResult<Status> {
        self.blocking(Role::Viewer, |app, _| Ok(svc::status(app)))
            .await
    }

    async fn events(
        self,
        _: Context,
        after: Cursor,
        max: u32,
        wait_ms: u32,
        tail: bool,
    ) -> RpcResult<EventPage> {
        self.may(Role::Viewer)?;
        let max = max.clamp(1, 5000) as usize;
        let deadline = Instant::now() + Duration::from_millis(u64::from(wait_ms.min(MAX_WAIT_MS)));
        loop {
            let page = self
                .blocking(Role::Viewer, move |app, _| {
                    svc::events(app, after, max, tail)
                })
                .await?;
            if !page.events.is_empty() || Instant::now() >= deadline {
                return Ok(page);
            }
            // Commits and exchanges are counted in memory: poll them cheaply until one moves.
            let (exchange, commit) = (after.exchange, after.commit);
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let store = &self.app.store;
                if store.next_journal_seq() > exchange
                    || store.last_commit() > commit
                    || Instant::now() >= deadline
                {
                    break;
                }
            }
        }
    }

    async fn traffic(
        self,
        _: Context,
        filter: TrafficFilter,
        before: Option<u64>,
        max: u32,
    ) -> RpcResult<Vec<Exchange>> {
        self.blocking(Role::Viewer, move |app, _| {
            svc::traffic(app, &filter, before, max.clamp(1, 5000) as usize)
        })
        .await
    }

    async fn exchange(self, _: Context, seq: u64) -> RpcResult<ExchangeDetail> {
        self.blocking(Role::Viewer, move |app, _| svc::exchange_detail(app, seq))
            .await
    }

    async fn position(self, _: Context, key: PositionKey) -> RpcResult<PositionView> {
        self.blocking(Role::Viewer, move |app, _| {
            let (id, p) = svc::find(app, &key)?;
            svc::view(app, id, p)
        })
        .await
    }

    async fn search(self, _: Context, search: Search) -> RpcResult<Vec<PositionRow>> {
        self.blocking(Role::Viewer, move |app, _| svc::search(app, &search))
            .await
    }

    async fn list(
        self,
        _: Context,
        entity: EntityFiscalCode,
        query: PositionQuery,
    ) -> RpcResult<Vec<PositionRow>> {
        self.blocking(Role::Viewer, move |app, _| {
            let page = search::positions(app, &entity, &query)?;
            Ok(page
                .positions
                .iter()
                .map(|(id, p)| svc::row(app, *id, p))
                .collect())
        })
        .await
    }

    async fn statement(
        self,
        _: Context,
        debtor: String,
        entity: Option<EntityFiscalCode>,
    ) -> RpcResult<Statement> {
        self.blocking(Role::Viewer, move |app, _| {
            let debtor = statements::debtor_of(debtor.trim())?;
            statements::statement(app, entity.as_ref(), &debtor)
        })
        .await
    }

    async fn adjust(
        self,
        _: Context,
        key: PositionKey,
        adjustment: Adjustment,
    ) -> RpcResult<PositionView> {
        if let Err(e) = self.may(Role::Operator) {
            self.audit_refusal(
                adjustment.action(),
                format!("{key:?}"),
                adjustment.reason(),
                &e,
            )
            .await;
            return Err(e);
        }
        self.blocking(Role::Operator, move |app, op| {
            svc::adjust(app, op, &key, adjustment)
        })
        .await
    }

    async fn jobs(self, _: Context, max: u32) -> RpcResult<Vec<JobRow>> {
        self.blocking(Role::Viewer, move |app, _| {
            svc::jobs(app, max.clamp(1, 1000) as usize)
        })
        .await
    }

    async fn audit(
        self,
        _: Context,
        operator: Option<String>,
        before: Option<u64>,
        max: u32,
    ) -> RpcResult<Vec<AuditRecord>> {
        self.blocking(Role::Viewer, move |app, _| {
            Ok(app
                .store
                .audit(operator.as_deref(), before, max.clamp(1, 5000) as usize)?)
        })
        .await
    }

    async fn entities(self, _: Context) -> RpcResult<Vec<(EntityFiscalCode, String)>> {
        self.blocking(Role::Viewer, |app, _| Ok(svc::entities(app)))
            .await
    }

    async fn worklist(
        self,
        _: Context,
        entity: EntityFiscalCode,
        query: WorklistQuery,
    ) -> RpcResult<Worklist> {
        self.blocking(Role::Viewer, move |app, _| {
            worklist::worklist(app, &entity, &query)
        })
        .await
    }

    async fn resolve(
        self,
        _: Context,
        entity: EntityFiscalCode,
        key: String,
        fix: Fix,
        reason: String,
    ) -> RpcResult<Resolution> {
        if let Err(e) = self.may(Role::Operator) {
            self.audit_refusal(fix.name(), format!("{entity}/{key}"), &reason, &e)
                .await;
            return Err(e);
        }
        self.blocking(Role::Operator, move |app, op| {
            svc::resolve(app, op, &entity, &key, fix, &reason)
        })
        .await
    }

    async fn resolutions(self, _: Context, entity: EntityFiscalCode) -> RpcResult<Vec<Resolution>> {
        self.blocking(Role::Viewer, move |app, _| {
            Ok(app.store.resolutions(&entity)?)
        })
        .await
    }

    async fn runs(self, _: Context, max: u32) -> RpcResult<Vec<RunRecord>> {
        self.blocking(Role::Viewer, move |app, _| {
            Ok(app.store.runs(max.clamp(1, 1000) as usize)?)
        })
        .await
    }

    async fn run_day(self, _: Context, day: jiff::civil::Date) -> RpcResult<RunRecord> {
        let operator = self.may(Role::Admin)?;
        let trigger = format!("operator:{}", operator.name);
        let mut records = crate::service::runs::run(&self.app, vec![day], &trigger).await;
        records
            .pop()
            .ok_or_else(|| RpcError::new("INTERNAL", "the run was not recorded"))
    }

    async fn flows(self, _: Context, entity: EntityFiscalCode) -> RpcResult<Vec<FlowView>> {
        self.blocking(Role::Viewer, move |app, _| {
            crate::service::flows::list(app, &entity, 10_000)
        })
        .await
    }

    async fn flow(
        self,
        _: Context,
        entity: EntityFiscalCode,
        flow_id: String,
    ) -> RpcResult<Vec<FlowView>> {
        self.blocking(Role::Viewer, move |app, _| {
            crate::service::flows::get(app, &entity, &flow_id)
        })
        .await
    }

    async fn movements(self, _: Context, entity: EntityFiscalCode) -> RpcResult<Vec<MovementView>> {
        self.blocking(Role::Viewer, move |app, _| {
            crate::service::treasury::list(app, &entity, 10_000)
        })
        .await
    }
}

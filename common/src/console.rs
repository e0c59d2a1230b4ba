//! The console's contract with the daemon: the wire types (here, always compiled, no tokio) and
//! the tarpc service (`rpc`, behind the `rpc` feature, which brings tarpc and tokio in). Both
//! sides are built from one workspace; the first call, `hello`, still checks the protocol so
//! that a console of another build says which one it needs. The codec is JSON: fields added
//! later are optional (`#[serde(default)]`) and ignored by an older reader.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::ids::{DebtorCode, EntityFiscalCode, Iupd, Iuv, Nav};
use crate::ledger::{Actor, Event, Position};
use crate::model::Debtor;
use crate::requests::{OfflinePaymentIn, ReductionIn, RescheduleIn};

/// The protocol this build speaks. Raised when a call changes meaning or loses a field.
pub const PROTOCOL: u32 = 1;

/// What an operator may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also makes manual adjustments to positions (and reconciliation fixes).
    Operator,
    /// Also runs jobs, backups and reloads.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// The answer to `hello`: who the daemon takes the caller for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// The daemon's version.
    pub version: String,
    pub operator: String,
    pub role: Role,
}

/// A refusal or failure, with the same stable codes as the REST API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    pub code: String,
    pub message: String,
    /// The request field at fault, as a path.
    #[serde(default)]
    pub field: Option<String>,
}

impl RpcError {
    pub fn new(code: &str, message: impl Into<String>) -> RpcError {
        RpcError {
            code: code.into(),
            message: message.into(),
            field: None,
        }
    }
}

pub type RpcResult<T> = Result<T, RpcError>;

/// One second of the station's traffic, for the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSecond {
    /// Unix second.
    pub second: i64,
    /// `(operation, outcome, count)`.
    pub counts: Vec<(String, String, u64)>,
    pub faults: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// The daemon at a glance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub started_at: Option<Timestamp>,
    pub healthy: bool,
    /// Why not, when not healthy.
    #[serde(default)]
    pub problem: Option<String>,
    pub positions: u64,
    pub commits: u64,
    pub flushes: u64,
    pub disk_bytes: u64,
    pub rss_bytes: u64,
    /// The last seconds of station traffic, oldest first.
    pub traffic: Vec<TrafficSecond>,
    /// Receipts answered OK since the daemon started.
    pub receipts_since_start: u64,
    /// Of the receipts stored since the daemon started, those that paid a notice already paid
    /// or no longer due: a refund is owed.
    #[serde(default)]
    pub double_payments_since_start: u64,
    pub jobs_running: u64,
    /// The latest daily run.
    #[serde(default)]
    pub last_run: Option<RunRecord>,
    /// Where the live feed stands now: a console starts following from here.
    pub cursor: Cursor,
}

/// Where a console is in the live feed: the last exchange and the last commit it has seen.
/// Both are stored sequence numbers, so a cursor stays valid across daemon restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub exchange: u64,
    pub commit: u64,
}

/// One exchange with the node, as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub seq: u64,
    pub at: Timestamp,
    pub operation: String,
    pub entity: Option<String>,
    pub station: Option<String>,
    pub nav: Option<String>,
    pub outcome: String,
    pub fault_code: Option<String>,
    pub latency_us: u64,
    pub remote: Option<String>,
}

/// An exchange with its messages, when the journal still has them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDetail {
    pub exchange: Exchange,
    pub request: Option<String>,
    pub response: Option<String>,
}

/// A change to a position's ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerChange {
    pub commit: u64,
    pub position: u64,
    pub entity: EntityFiscalCode,
    pub iupd: Iupd,
    /// The event's sequence number in the position's ledger.
    pub seq: u32,
    pub event: Event,
}

/// What happened since a cursor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LiveEvent {
    Exchange(Exchange),
    Ledger(Box<LedgerChange>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    pub events: Vec<LiveEvent>,
    /// Pass it to the next call.
    pub next: Cursor,
    /// Events passed over in `tail` mode.
    #[serde(default)]
    pub skipped: u64,
}

/// How an operator names a position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PositionKey {
    /// A notice number (unique across entities: it carries the entity's segregation code, and a
    /// position of another entity with the same number is reported as ambiguous).
    Nav(Nav),
    Iuv {
        entity: EntityFiscalCode,
        iuv: Iuv,
    },
    Iupd {
        entity: EntityFiscalCode,
        iupd: Iupd,
    },
}

/// A ledger entry as stored: the event and the commit that wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub commit: u64,
    pub event: Event,
}

/// A position with its whole ledger: what the console's detail shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionView {
    pub id: u64,
    pub position: Position,
    pub ledger: Vec<LedgerEntry>,
}

/// What a search looks for: the operator types one text and the daemon tries it as a NAV, an
/// IUV, an iupd, a debtor's fiscal code, then a debtor name's prefix.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Search {
    /// Limit to one entity (None: every entity).
    pub entity: Option<EntityFiscalCode>,
    pub text: String,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A search hit: enough for a results table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionRow {
    pub id: u64,
    pub entity: EntityFiscalCode,
    pub iupd: Iupd,
    pub kind: String,
    pub debtor_code: DebtorCode,
    pub debtor_name: String,
    pub description: String,
    pub status: crate::ledger::PositionStatus,
    pub open_amount: crate::money::Cents,
    /// The notice numbers of the position, in option order.
    pub navs: Vec<Nav>,
}

impl PositionRow {
    /// The row of position `id`, with its status as of `today`.
    pub fn new(id: u64, p: &Position, today: jiff::civil::Date) -> PositionRow {
        PositionRow {
            id,
            entity: p.entity.clone(),
            iupd: p.iupd.clone(),
            kind: p.kind.clone(),
            debtor_code: p.debtor.code.clone(),
            debtor_name: p.debtor.name.clone(),
            description: p.description.clone(),
            status: p.status(today),
            open_amount: p.open_amount(),
            navs: p.instalments().map(|i| i.terms.nav.clone()).collect(),
        }
    }
}

/// A manual adjustment, as the console's forms and the CLI make it. They go through the same
/// services and rules as the REST API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Adjustment {
    /// Sgravio of one notice.
    Reduce {
        nav: Nav,
        reduction: ReductionIn,
    },
    Cancel {
        reason: String,
    },
    Restore {
        reason: String,
    },
    PayOffline {
        nav: Nav,
        payment: OfflinePaymentIn,
    },
    Reschedule(RescheduleIn),
    /// Corrects the debtor's data; `reason` is required from operators.
    Debtor {
        debtor: Debtor,
        reason: String,
    },
}

impl Adjustment {
    /// The action's name in the audit trail.
    pub fn action(&self) -> &'static str {
        match self {
            Adjustment::Reduce { .. } => "reduce",
            Adjustment::Cancel { .. } => "cancel",
            Adjustment::Restore { .. } => "restore",
            Adjustment::PayOffline { .. } => "pay-offline",
            Adjustment::Reschedule(_) => "reschedule",
            Adjustment::Debtor { .. } => "debtor",
        }
    }

    /// The operator's reason.
    pub fn reason(&self) -> &str {
        match self {
            Adjustment::Reduce { reduction, .. } => &reduction.reason,
            Adjustment::Cancel { reason }
            | Adjustment::Restore { reason }
            | Adjustment::Debtor { reason, .. } => reason,
            Adjustment::PayOffline { payment, .. } => payment.reason.as_deref().unwrap_or(""),
            Adjustment::Reschedule(r) => &r.reason,
        }
    }
}

/// One operator action, as the audit trail keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: Timestamp,
    pub actor: Actor,
    /// Where the operator was: `uid 1000 pid 4242` on the local socket, a certificate's subject
    /// over TLS.
    pub origin: String,
    pub action: String,
    /// What the action was on (`00123456782/TARI-2026-1`, a job id, …).
    pub target: String,
    pub reason: String,
    /// `ok`, or the refusal's code and message.
    pub outcome: String,
}

/// One daily run (rendicontazione): a day's flows fetched, reconciled and reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub seq: u64,
    /// The day reported (Europe/Rome).
    pub day: jiff::civil::Date,
    /// `schedule`, `catch-up`, `admin` (`mpayd reconcile`) or `operator:NAME`.
    pub trigger: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    /// Flows the node listed, and those new to the store.
    pub flows_listed: u64,
    pub flows_new: u64,
    /// The node's faults and transport errors, one line each; they never stop the run.
    pub node_errors: Vec<String>,
    pub entities: u64,
    /// Rows of the day's reports, and how many of them stand in each class.
    pub rows: u64,
    pub classes: std::collections::BTreeMap<String, u64>,
    /// Why the reports could not be written, if they could not.
    pub error: Option<String>,
}

/// A bulk load, as the console lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: u64,
    pub entity: String,
    pub file: String,
    pub status: String,
    pub rows_total: u64,
    pub rows_done: u64,
    pub created: u64,
    pub replaced: u64,
    pub unchanged: u64,
    pub rejected_rows: u64,
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    pub file_error: Option<String>,
}

/// A filter on the traffic journal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrafficFilter {
    pub entity: Option<String>,
    pub operation: Option<String>,
    pub outcome: Option<String>,
    pub nav: Option<String>,
}

impl TrafficFilter {
    pub fn matches(&self, e: &Exchange) -> bool {
        let is = |want: &Option<String>, have: Option<&str>| {
            want.as_deref()
                .is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w)))
        };
        is(&self.entity, e.entity.as_deref())
            && is(&self.operation, Some(&e.operation))
            && is(&self.outcome, Some(&e.outcome))
            && is(&self.nav, e.nav.as_deref())
    }
}

#[cfg(feature = "rpc")]
pub mod rpc {
    //! The tarpc service. Deadlines: tarpc's default is 10 s, so `events` waits at most 8 s.
    use super::*;
    use crate::statement::Statement;

    /// The longest wait `events` accepts, under tarpc's default deadline.
    pub const MAX_WAIT_MS: u32 = 8_000;

    #[tarpc::service]
    pub trait Console {
        /// Checks the protocol; answers who the daemon takes the caller for.
        async fn hello(protocol: u32, client: String) -> RpcResult<Hello>;
        async fn status() -> RpcResult<Status>;
        /// What happened after `after`, at most `max`, waiting up to `wait_ms` for something.
        /// With `tail`, a follower that is more than `max` behind skips to the newest `max` (a
        /// screen shows the newest; a script that must see everything leaves it off).
        async fn events(after: Cursor, max: u32, wait_ms: u32, tail: bool) -> RpcResult<EventPage>;
        /// The newest exchanges that match, newest first.
        async fn traffic(
            filter: TrafficFilter,
            before: Option<u64>,
            max: u32,
        ) -> RpcResult<Vec<Exchange>>;
        async fn exchange(seq: u64) -> RpcResult<ExchangeDetail>;
        async fn position(key: PositionKey) -> RpcResult<PositionView>;
        async fn search(search: Search) -> RpcResult<Vec<PositionRow>>;
        /// One entity's positions by filters, as the REST API lists them.
        async fn list(
            entity: EntityFiscalCode,
            query: crate::requests::PositionQuery,
        ) -> RpcResult<Vec<PositionRow>>;
        async fn statement(
            debtor: String,
            entity: Option<EntityFiscalCode>,
        ) -> RpcResult<Statement>;
        async fn adjust(key: PositionKey, adjustment: Adjustment) -> RpcResult<PositionView>;
        async fn jobs(max: u32) -> RpcResult<Vec<JobRow>>;
        /// The newest audit records, newest first, of one operator or all.
        async fn audit(
            operator: Option<String>,
            before: Option<u64>,
            max: u32,
        ) -> RpcResult<Vec<AuditRecord>>;
        /// The newest daily runs, newest first.
        async fn runs(max: u32) -> RpcResult<Vec<RunRecord>>;
        /// Runs the day's reconciliation now (fetch flows, reconcile, write reports); admins.
        async fn run_day(day: jiff::civil::Date) -> RpcResult<RunRecord>;
        /// The entities served: fiscal code and name.
        async fn entities() -> RpcResult<Vec<(EntityFiscalCode, String)>>;
        /// One entity's worklist, classified now, with the fixes in force.
        async fn worklist(
            entity: EntityFiscalCode,
            query: crate::worklist::WorklistQuery,
        ) -> RpcResult<crate::worklist::Worklist>;
        /// Fixes (or, with `Fix::Revert`, undoes a fix of) the worklist item `key`; operators.
        async fn resolve(
            entity: EntityFiscalCode,
            key: String,
            fix: crate::worklist::Fix,
            reason: String,
        ) -> RpcResult<crate::worklist::Resolution>;
        /// The entity's reporting flows, every revision, classified now (without their rows).
        async fn flows(entity: EntityFiscalCode) -> RpcResult<Vec<crate::reconcile::FlowView>>;
        /// One flow's revisions, newest last, each with its rows classified.
        async fn flow(
            entity: EntityFiscalCode,
            flow_id: String,
        ) -> RpcResult<Vec<crate::reconcile::FlowView>>;
        /// The entity's treasury movements, classified now.
        async fn movements(
            entity: EntityFiscalCode,
        ) -> RpcResult<Vec<crate::reconcile::MovementView>>;
        /// Every fix of the entity, reverts included, oldest first.
        async fn resolutions(
            entity: EntityFiscalCode,
        ) -> RpcResult<Vec<crate::worklist::Resolution>>;
    }
}

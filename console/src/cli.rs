//! `mpay COMMAND`: the console without the screen, for scripts and cron. Same calls, same
//! roles, same audit as the screens; `--json` prints the daemon's answer as JSON.
//!
//! Exit codes: 0 done; 1 mpayd could not be reached; 2 bad command line; 3 refused (bad input
//! or the position's state does not allow it); 4 not allowed (not an operator, role too low);
//! 5 not found.

use clap::{Args, Subcommand};
use jiff::civil::Date;
use mpay_common::console::{
    Adjustment, Cursor, LiveEvent, PositionKey, PositionRow, PositionView, RpcError, RunRecord,
    Search, TrafficFilter,
};
use mpay_common::ids::{EntityFiscalCode, Iupd, Iuv, Nav};
use mpay_common::ledger::OfflineChannel;
use mpay_common::money::Cents;
use mpay_common::requests::{OfflinePaymentIn, ReductionIn};
use mpay_common::worklist::{Fix, ItemState, Resolution, WorkItem, WorklistQuery};
use serde::Serialize;

use crate::client::{self, Connection, Target, deadline};
use crate::format;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The daemon at a glance: health, store, traffic of the last minute.
    Status,
    /// A position with its notices and its whole ledger.
    Position {
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Positions by NAV, IUV, iupd, debtor fiscal code or the start of the debtor's name.
    Search {
        text: String,
        #[arg(long)]
        entity: Option<EntityFiscalCode>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// A citizen's statement (estratto conto), across entities or for one.
    Statement {
        debtor: String,
        #[arg(long)]
        entity: Option<EntityFiscalCode>,
    },
    /// The station's exchanges with the node, newest first; `--follow` prints new ones as they
    /// happen.
    Traffic {
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        entity: Option<String>,
        #[arg(long)]
        operation: Option<String>,
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long)]
        nav: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Sgravio: notice `--nav` now asks `--amount`.
    Reduce {
        #[arg(long)]
        nav: Nav,
        #[arg(long, value_parser = parse_cents)]
        amount: Cents,
        /// The administrative act that grants it.
        #[arg(long)]
        act: String,
        #[arg(long)]
        reason: String,
    },
    /// Cancels a position: none of its notices is payable any more.
    Cancel {
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long)]
        reason: String,
    },
    /// Undoes a cancellation.
    Restore {
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long)]
        reason: String,
    },
    /// Records money collected outside pagoPA for a notice.
    PayOffline {
        #[arg(long)]
        nav: Nav,
        #[arg(long, value_parser = parse_cents)]
        amount: Cents,
        /// The day it was paid (default: today).
        #[arg(long)]
        date: Option<Date>,
        #[arg(long, value_parser = parse_channel, default_value = "counter")]
        channel: OfflineChannel,
        /// The slip's or the transfer's reference.
        #[arg(long)]
        reference: String,
        #[arg(long)]
        reason: String,
    },
    /// Bulk loads, newest first.
    Jobs {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// What reconciliation says needs a look, for one entity: flows, rows, credits and
    /// transfers that do not add up, with the fixes in force.
    Worklist {
        #[arg(long)]
        entity: EntityFiscalCode,
        /// Only this class (`unknown-iuv`, `not-reported`, `amount-mismatch`, …).
        #[arg(long)]
        class: Option<String>,
        /// open (the default), resolved or all.
        #[arg(long, value_parser = parse_state, default_value = "open")]
        state: ItemState,
        /// Only items of at least this amount (euros).
        #[arg(long, value_parser = parse_cents)]
        min_amount: Option<Cents>,
        /// Only items this many days old or older.
        #[arg(long)]
        older_than: Option<u32>,
        /// The next page of transfers, after this position (as the previous page says).
        #[arg(long)]
        after: Option<u64>,
    },
    /// Fixes a worklist item (its key, as `worklist` prints it).
    Resolve {
        #[arg(long)]
        entity: EntityFiscalCode,
        /// The item's key.
        item: String,
        /// link, refund-due, accept-difference, attach-to-flow, recovery-requested or dismiss.
        #[arg(long)]
        fix: String,
        /// For `link`: the instalment's position and notice.
        #[arg(long)]
        iupd: Option<Iupd>,
        #[arg(long)]
        nav: Option<Nav>,
        /// For `attach-to-flow`: the flow.
        #[arg(long)]
        flow: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Undoes a fix; the fix and its undoing both stay in the trail.
    Revert {
        #[arg(long)]
        entity: EntityFiscalCode,
        /// The fix's number.
        id: u64,
        #[arg(long)]
        reason: String,
    },
    /// Every fix of an entity's worklist, reverts included, oldest first.
    Fixes {
        #[arg(long)]
        entity: EntityFiscalCode,
    },
    /// The daily runs (flows fetched, reconciled, reports written), newest first.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Runs a day's reconciliation now and writes its reports (admins).
    RunDay {
        /// The day, YYYY-MM-DD (Europe/Rome).
        #[arg(long)]
        date: Date,
    },
    /// Operators' actions, newest first.
    Audit {
        #[arg(long)]
        operator: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// A position by its notice number, or by entity and iupd (or IUV).
#[derive(Args, Debug)]
pub struct KeyArgs {
    #[arg(long, conflicts_with_all = ["iupd", "iuv"])]
    nav: Option<Nav>,
    #[arg(long)]
    entity: Option<EntityFiscalCode>,
    #[arg(long, requires = "entity")]
    iupd: Option<Iupd>,
    #[arg(long, requires = "entity")]
    iuv: Option<Iuv>,
}

impl KeyArgs {
    fn key(&self) -> Result<PositionKey, Failure> {
        match (&self.nav, &self.entity, &self.iupd, &self.iuv) {
            (Some(nav), _, None, None) => Ok(PositionKey::Nav(nav.clone())),
            (None, Some(entity), Some(iupd), None) => Ok(PositionKey::Iupd {
                entity: entity.clone(),
                iupd: iupd.clone(),
            }),
            (None, Some(entity), None, Some(iuv)) => Ok(PositionKey::Iuv {
                entity: entity.clone(),
                iuv: iuv.clone(),
            }),
            _ => Err(Failure::Usage(
                "name the position with --nav, or --entity with --iupd or --iuv".into(),
            )),
        }
    }
}

fn parse_cents(text: &str) -> Result<Cents, String> {
    Cents::parse_api(text).map_err(|e| e.to_string())
}

fn parse_state(text: &str) -> Result<ItemState, String> {
    match text {
        "open" => Ok(ItemState::Open),
        "resolved" => Ok(ItemState::Resolved),
        "all" => Ok(ItemState::All),
        _ => Err("open, resolved or all".to_string()),
    }
}

/// The fix `name` with its arguments.
fn fix_of(
    name: &str,
    iupd: Option<Iupd>,
    nav: Option<Nav>,
    flow: Option<String>,
) -> Result<Fix, Failure> {
    let usage = |m: &str| Failure::Usage(m.to_string());
    Ok(match name {
        "link" => match (iupd, nav) {
            (Some(iupd), Some(nav)) => Fix::Link { iupd, nav },
            _ => return Err(usage("--fix link needs --iupd and --nav of the instalment")),
        },
        "attach-to-flow" => Fix::AttachToFlow {
            flow_id: flow.ok_or_else(|| usage("--fix attach-to-flow needs --flow"))?,
        },
        "refund-due" => Fix::RefundDue,
        "accept-difference" => Fix::AcceptDifference,
        "recovery-requested" => Fix::RecoveryRequested,
        "dismiss" => Fix::Dismiss,
        other => {
            return Err(Failure::Usage(format!(
                "--fix {other}: one of link, refund-due, accept-difference, attach-to-flow, \
                 recovery-requested, dismiss"
            )));
        }
    })
}

fn parse_channel(text: &str) -> Result<OfflineChannel, String> {
    let name = text.replace(['-', '_'], "").to_lowercase();
    Ok(match name.as_str() {
        "counter" => OfflineChannel::Counter,
        "f24" => OfflineChannel::F24,
        "postalslip" => OfflineChannel::PostalSlip,
        "banktransfer" => OfflineChannel::BankTransfer,
        "pos" => OfflineChannel::Pos,
        "other" => OfflineChannel::Other,
        _ => {
            return Err("counter, f24, postal-slip, bank-transfer, pos or other".to_string());
        }
    })
}

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub enum Failure {
    Unreachable(String),
    Usage(String),
    Refused(RpcError),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Unreachable(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Refused(e) => match e.code.as_str() {
                "NOT_AN_OPERATOR" | "FORBIDDEN" | "PROTOCOL" => 4,
                "NOT_FOUND" | "UNKNOWN_NOTICE" => 5,
                _ => 3,
            },
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Unreachable(m) | Failure::Usage(m) => m.clone(),
            Failure::Refused(e) => match &e.field {
                Some(f) => format!("{} ({}, field {f})", e.message, e.code),
                None => format!("{} ({})", e.message, e.code),
            },
        }
    }
}

fn failure(e: anyhow::Error) -> Failure {
    match e.downcast::<RpcError>() {
        Ok(refusal) => Failure::Refused(refusal),
        Err(e) => Failure::Unreachable(format!("{e:#}")),
    }
}

fn call<T>(r: Result<Result<T, RpcError>, tarpc::client::RpcError>) -> Result<T, Failure> {
    client::answer(r).map_err(failure)
}

fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("mpay: cannot print JSON: {e}"),
        }
    } else {
        print!("{}", human(value));
    }
}

/// Runs one command against the daemon at `socket`.
pub async fn run(target: Target, json: bool, command: Command) -> Result<(), Failure> {
    let Connection { client, .. } = client::connect_to(&target).await.map_err(failure)?;
    let c = &client;
    match command {
        Command::Status => {
            let s = call(c.status(deadline(10)).await)?;
            print(json, &s, |s| {
                let last: u64 = s
                    .traffic
                    .iter()
                    .rev()
                    .take(60)
                    .flat_map(|t| t.counts.iter().map(|(_, _, n)| n))
                    .sum();
                format!(
                    "mpayd {}  {}\npositions {}  commits {}  fsyncs {}  disk {}  memory {}\n\
                     exchanges in the last minute {}  receipts since start {} (double payments \
                     {})  jobs running {}\n",
                    s.version,
                    match &s.problem {
                        None => "healthy".to_string(),
                        Some(p) => format!("UNHEALTHY: {p}"),
                    },
                    s.positions,
                    s.commits,
                    s.flushes,
                    format::bytes(s.disk_bytes),
                    format::bytes(s.rss_bytes),
                    last,
                    s.receipts_since_start,
                    s.double_payments_since_start,
                    s.jobs_running
                )
            });
        }
        Command::Position { key } => {
            let v = call(c.position(deadline(10), key.key()?).await)?;
            print(json, &v, position_text);
        }
        Command::Search {
            text,
            entity,
            limit,
        } => {
            let search = Search {
                entity,
                text,
                limit: Some(limit),
            };
            let rows = call(c.search(deadline(10), search).await)?;
            print(json, &rows, |rows| rows_text(rows));
        }
        Command::Statement { debtor, entity } => {
            let s = call(c.statement(deadline(10), debtor, entity).await)?;
            print(json, &s, |s| {
                let mut out = format!(
                    "{}: {} position(s), open {} €, paid via pagoPA {} €, paid offline {} €, \
                     refunds due {} €\n",
                    s.debtor,
                    s.totals.positions,
                    s.totals.open_amount.text,
                    s.totals.paid_pagopa.text,
                    s.totals.paid_offline.text,
                    s.totals.refunds_due.text
                );
                for p in &s.positions {
                    out.push_str(&format!(
                        "{}  {:<20} {:<14} open {:>10} €  {}\n",
                        p.entity.fiscal_code,
                        p.iupd,
                        format!("{:?}", p.status),
                        p.open_amount.text,
                        p.description
                    ));
                }
                out
            });
        }
        Command::Traffic {
            follow,
            entity,
            operation,
            outcome,
            nav,
            limit,
        } => {
            let filter = TrafficFilter {
                entity,
                operation,
                outcome,
                nav,
            };
            if !follow {
                let list = call(c.traffic(deadline(10), filter, None, limit).await)?;
                print(json, &list, |list| {
                    list.iter().map(|e| exchange_line(e) + "\n").collect()
                });
                return Ok(());
            }
            let status = call(c.status(deadline(10)).await)?;
            let mut cursor = Cursor {
                exchange: status.cursor.exchange,
                commit: u64::MAX,
            };
            loop {
                let page = call(c.events(deadline(10), cursor, 1000, 5000, false).await)?;
                cursor.exchange = page.next.exchange;
                for e in page.events {
                    if let LiveEvent::Exchange(x) = e
                        && filter.matches(&x)
                    {
                        if json {
                            println!("{}", serde_json::to_string(&x).unwrap_or_default());
                        } else {
                            println!("{}", exchange_line(&x));
                        }
                    }
                }
            }
        }
        Command::Reduce {
            nav,
            amount,
            act,
            reason,
        } => {
            let adjustment = Adjustment::Reduce {
                nav: nav.clone(),
                reduction: ReductionIn {
                    new_amount: amount,
                    act,
                    reason,
                    transfer_amounts: None,
                },
            };
            adjust(c, json, PositionKey::Nav(nav), adjustment).await?;
        }
        Command::Cancel { key, reason } => {
            adjust(c, json, key.key()?, Adjustment::Cancel { reason }).await?;
        }
        Command::Restore { key, reason } => {
            adjust(c, json, key.key()?, Adjustment::Restore { reason }).await?;
        }
        Command::PayOffline {
            nav,
            amount,
            date,
            channel,
            reference,
            reason,
        } => {
            let date = date.unwrap_or_else(format::today);
            let adjustment = Adjustment::PayOffline {
                nav: nav.clone(),
                payment: OfflinePaymentIn {
                    channel,
                    date,
                    amount,
                    reference,
                    reason: Some(reason),
                    transfer_amounts: None,
                },
            };
            adjust(c, json, PositionKey::Nav(nav), adjustment).await?;
        }
        Command::Jobs { limit } => {
            let jobs = call(c.jobs(deadline(10), limit).await)?;
            print(json, &jobs, |jobs| {
                jobs.iter()
                    .map(|j| {
                        format!(
                            "{:>6}  {}  {:<30} {:<11} {}/{} rows, {} created, {} rejected\n",
                            j.id,
                            j.entity,
                            j.file,
                            j.status,
                            j.rows_done,
                            j.rows_total,
                            j.created,
                            j.rejected_rows
                        )
                    })
                    .collect()
            });
        }
        Command::Worklist {
            entity,
            class,
            state,
            min_amount,
            older_than,
            after,
        } => {
            let query = WorklistQuery {
                class,
                state,
                min_amount: min_amount.map(Cents::get),
                older_than_days: older_than,
                after,
            };
            let list = call(c.worklist(deadline(30), entity, query).await)?;
            print(json, &list, |list| {
                let mut text = worklist_text(&list.items);
                if let Some(next) = list.next {
                    text.push_str(&format!(
                        "more transfers: the same command with --after {next}\n"
                    ));
                }
                text
            });
        }
        Command::Resolve {
            entity,
            item,
            fix,
            iupd,
            nav,
            flow,
            reason,
        } => {
            let fix = fix_of(&fix, iupd, nav, flow)?;
            let r = call(c.resolve(deadline(30), entity, item, fix, reason).await)?;
            print(json, &r, |r| format!("{}\n", resolution_line(r)));
        }
        Command::Revert { entity, id, reason } => {
            let key = String::new();
            let r = call(
                c.resolve(deadline(30), entity, key, Fix::Revert { id }, reason)
                    .await,
            )?;
            print(json, &r, |r| format!("{}\n", resolution_line(r)));
        }
        Command::Fixes { entity } => {
            let all = call(c.resolutions(deadline(10), entity).await)?;
            print(json, &all, |all| {
                all.iter().map(|r| resolution_line(r) + "\n").collect()
            });
        }
        Command::Runs { limit } => {
            let runs = call(c.runs(deadline(10), limit).await)?;
            print(json, &runs, |runs| {
                runs.iter().map(|r| run_line(r) + "\n").collect()
            });
        }
        Command::RunDay { date } => {
            // Fetching from the node may take its retries: a longer deadline than other calls.
            let r = call(c.run_day(deadline(300), date).await)?;
            print(json, &r, |r| run_line(r) + "\n");
        }
        Command::Audit { operator, limit } => {
            let records = call(c.audit(deadline(10), operator, None, limit).await)?;
            print(json, &records, |records| {
                records
                    .iter()
                    .map(|r| {
                        format!(
                            "{}  {:<18} {:<12} {}  {} — {} [{}]\n",
                            format::when(r.at),
                            format::actor(&r.actor),
                            r.action,
                            r.target,
                            r.outcome,
                            r.reason,
                            r.origin
                        )
                    })
                    .collect()
            });
        }
    }
    Ok(())
}

async fn adjust(
    c: &mpay_common::console::rpc::ConsoleClient,
    json: bool,
    key: PositionKey,
    adjustment: Adjustment,
) -> Result<(), Failure> {
    let v = call(c.adjust(deadline(30), key, adjustment).await)?;
    print(json, &v, position_text);
    Ok(())
}

/// The worklist as lines: class, amount, date, key, detail, and the fix in force.
pub fn worklist_text(items: &[WorkItem]) -> String {
    let mut out = String::new();
    for i in items {
        out.push_str(&format!(
            "{:<22} {:>12}  {}  {}  {}{}\n",
            i.class,
            format::euro(Cents(i.amount)),
            i.date
                .map_or_else(|| "----------".to_string(), |d| d.to_string()),
            i.key,
            i.detail,
            match &i.resolution {
                Some(r) => format!(
                    "  [fix {} {} by {}]",
                    r.id,
                    r.fix.name(),
                    format::actor(&r.actor)
                ),
                None => String::new(),
            }
        ));
    }
    if items.is_empty() {
        out.push_str("nothing needs a look\n");
    }
    out
}

/// A daily run on one line: the day, when, who, what the node gave, rows and anomalies.
pub fn run_line(r: &RunRecord) -> String {
    let classes: Vec<String> = r.classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let mut line = format!(
        "run {:>4}  {}  {}  {:<14} flows {} new of {} listed, {} rows: {}",
        r.seq,
        r.day,
        format::when(r.started),
        r.trigger,
        r.flows_new,
        r.flows_listed,
        r.rows,
        if classes.is_empty() {
            "-".to_string()
        } else {
            classes.join(", ")
        }
    );
    if !r.node_errors.is_empty() {
        line.push_str(&format!("  node: {}", r.node_errors.join("; ")));
    }
    if let Some(e) = &r.error {
        line.push_str(&format!("  FAILED: {e}"));
    }
    line
}

pub fn resolution_line(r: &Resolution) -> String {
    let what = match &r.fix {
        Fix::Link { iupd, nav } => format!("link to {iupd} {nav}"),
        Fix::AttachToFlow { flow_id } => format!("attach to flow {flow_id}"),
        Fix::Revert { id } => format!("revert {id}"),
        other => other.name().to_string(),
    };
    format!(
        "fix {:>5}  {}  {:<18} {}  {} — {}",
        r.id,
        format::when(r.at),
        format::actor(&r.actor),
        r.key,
        what,
        r.reason
    )
}

pub fn exchange_line(e: &mpay_common::console::Exchange) -> String {
    format!(
        "{:>8}  {}  {:<24} {:<12} {:<19} {:<3} {:<22} {:>7} µs",
        e.seq,
        format::clock(e.at),
        e.operation,
        e.entity.as_deref().unwrap_or("-"),
        e.nav.as_deref().unwrap_or("-"),
        e.outcome,
        e.fault_code.as_deref().unwrap_or(""),
        e.latency_us
    )
}

pub fn rows_text(rows: &[PositionRow]) -> String {
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!(
            "{}  {:<20} {:<6} {:<16} {:<24} {:<13} {:>10}  {}\n",
            r.entity,
            r.iupd,
            r.kind,
            r.debtor_code,
            r.debtor_name,
            format!("{:?}", r.status),
            r.open_amount,
            r.navs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if rows.is_empty() {
        out.push_str("no position found\n");
    }
    out
}

pub fn position_text(v: &PositionView) -> String {
    let p = &v.position;
    let mut out = format!(
        "{}/{}  {}  {}\ndebtor {} {}\nopen {}\n",
        p.entity,
        p.iupd,
        p.kind,
        p.description,
        p.debtor.code,
        p.debtor.name,
        format::euro(p.open_amount())
    );
    for (o, opt) in p.options.iter().enumerate() {
        out.push_str(&format!("option {} ({:?})\n", o + 1, opt.kind));
        for i in &opt.instalments {
            out.push_str(&format!(
                "  {}  due {}  {:>10}  still due {:>10}{}{}\n",
                i.terms.nav,
                i.terms.due,
                i.terms.amount,
                p.due(i),
                if i.receipts().next().is_some() {
                    "  paid via pagoPA"
                } else {
                    ""
                },
                if i.withdrawn.is_some() {
                    "  withdrawn"
                } else {
                    ""
                }
            ));
        }
    }
    for (nav, d) in p.double_payments() {
        out.push_str(&format!(
            "double payment: {nav} {} ({:?}) {}\n",
            d.receipt_id().unwrap_or("offline"),
            d.arrival,
            d.amount
        ));
    }
    for r in p.refunds() {
        out.push_str(&format!(
            "refund due: {} transfer {} to {} {}\n",
            r.nav, r.transfer, r.beneficiary, r.amount
        ));
    }
    out.push_str("ledger:\n");
    for e in &v.ledger {
        out.push_str(&format!("  {}\n", format::event(&e.event)));
    }
    out
}

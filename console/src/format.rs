//! Words and numbers as the console shows them, shared by the screens and the command line.

use jiff::Timestamp;
use mpay_common::calendar::{rome, rome_date};
use mpay_common::ledger::{Actor, Change, Event};
use mpay_common::money::Cents;

/// `2026-11-30 16:05:06`, Rome time.
pub fn when(at: Timestamp) -> String {
    at.to_zoned_datetime(rome())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Today in Rome.
pub fn today() -> jiff::civil::Date {
    rome_date(Timestamp::now())
}

/// `16:05:06`, Rome time.
pub fn clock(at: Timestamp) -> String {
    at.to_zoned_datetime(rome())
        .strftime("%H:%M:%S")
        .to_string()
}

pub fn euro(c: Cents) -> String {
    format!("{c} €")
}

pub fn actor(a: &Actor) -> String {
    match a {
        Actor::ApiKey(k) => format!("api:{k}"),
        Actor::Operator(o) => format!("operator:{o}"),
        Actor::Node => "node".into(),
        Actor::System => "system".into(),
    }
}

/// One line for a ledger event: what changed, in the domain's words.
pub fn change(c: &Change) -> String {
    match c {
        Change::Loaded(d) => format!("loaded: {}", d.description),
        Change::Updated(d) => format!("replaced: {}", d.description),
        Change::DebtorUpdated(d) => format!("debtor now {} {}", d.code, d.name),
        Change::Reduced {
            nav,
            old_amount,
            new_amount,
            act,
            ..
        } => format!("reduced {nav}: {old_amount} → {new_amount} (act {act})"),
        Change::Rescheduled { replaced, plan } => format!(
            "rescheduled {} notice(s) into {} instalment(s)",
            replaced.len(),
            plan.instalments.len()
        ),
        Change::PaidOffline {
            nav,
            channel,
            date,
            amount,
            reference,
            ..
        } => format!("paid offline {nav}: {amount} on {date} via {channel:?} ({reference})"),
        Change::Cancelled => "cancelled".into(),
        Change::Restored => "restored".into(),
        Change::PaidViaPagoPa {
            nav,
            receipt_id,
            amount,
            psp,
            ..
        } => format!("paid via pagoPA {nav}: {amount} (receipt {receipt_id}, {psp})"),
        Change::Reported {
            nav,
            transfer,
            flow_id,
            amount,
            outcome,
            ..
        } => format!("reported {nav}/{transfer}: {amount} in flow {flow_id} (code {outcome})"),
        Change::Credited {
            nav,
            transfer,
            reference,
            amount,
            ..
        } => format!("credited {nav}/{transfer}: {amount} ({reference})"),
        Change::OperatorAdjustment { note } => format!("note: {note}"),
    }
}

/// A ledger event on one line: when, who, what, why.
pub fn event(e: &Event) -> String {
    let mut line = format!(
        "{}  {:<18} {}",
        when(e.at),
        actor(&e.actor),
        change(&e.change)
    );
    if let Some(r) = &e.reason {
        line.push_str(&format!(" — {r}"));
    }
    line
}

/// Bytes in the largest binary unit that keeps a number of at least 1, one decimal.
pub fn bytes(n: u64) -> String {
    let mut value = n as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 || unit == "GiB" {
            return if unit == "B" {
                format!("{n} B")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{n} B")
}

//! Layouts of stored values written by earlier versions, kept so that a newer mpayd reads an
//! older store or backup (`codec::Stored::decode_old`). Each is frozen: never edit one, add the
//! next.

use jiff::Timestamp;
use jiff::civil::Date;
use mpay_common::ids::Nav;
use mpay_common::ledger::Position;
use mpay_common::ledger::{Actor, Change, Event, OfflineChannel};
use mpay_common::model::{Debtor, PaymentOption, PositionData};
use mpay_common::money::Cents;
use serde::Deserialize;

use super::codec::Stored;
use super::journal::{BodyRef, Direction, JournalEntry};
use super::{ReceiptRecord, StoredEvent};

/// Ledger events of value version 1: offline payments without a split, receipts without their
/// transfers.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
enum ChangeV1 {
    Loaded(PositionData),
    Updated(PositionData),
    DebtorUpdated(Debtor),
    Reduced {
        nav: Nav,
        old_amount: Cents,
        new_amount: Cents,
        transfer_amounts: Vec<Cents>,
        act: String,
    },
    Rescheduled {
        replaced: Vec<Nav>,
        plan: PaymentOption,
    },
    PaidOffline {
        nav: Nav,
        channel: OfflineChannel,
        date: Date,
        amount: Cents,
        reference: String,
    },
    Cancelled,
    Restored,
    PaidViaPagoPa {
        nav: Nav,
        receipt_id: String,
        amount: Cents,
        psp: String,
        paid_at: Timestamp,
    },
    Reported {
        nav: Nav,
        flow_id: String,
        amount: Cents,
    },
    Credited {
        nav: Nav,
        reference: String,
        amount: Cents,
    },
    OperatorAdjustment {
        note: String,
    },
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct EventV1 {
    at: Timestamp,
    actor: Actor,
    reason: Option<String>,
    change: ChangeV1,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct StoredEventV1 {
    commit: u64,
    event: EventV1,
}

impl ChangeV1 {
    /// The change in today's layout; `day` is the event's date, which format 1's reconciliation
    /// facts did not carry.
    fn upgrade(self, day: Date) -> Change {
        match self {
            ChangeV1::Loaded(d) => Change::Loaded(d),
            ChangeV1::Updated(d) => Change::Updated(d),
            ChangeV1::DebtorUpdated(d) => Change::DebtorUpdated(d),
            ChangeV1::Reduced {
                nav,
                old_amount,
                new_amount,
                transfer_amounts,
                act,
            } => Change::Reduced {
                nav,
                old_amount,
                new_amount,
                transfer_amounts,
                act,
            },
            ChangeV1::Rescheduled { replaced, plan } => Change::Rescheduled { replaced, plan },
            ChangeV1::PaidOffline {
                nav,
                channel,
                date,
                amount,
                reference,
            } => Change::PaidOffline {
                nav,
                channel,
                date,
                amount,
                reference,
                transfer_amounts: None,
            },
            ChangeV1::Cancelled => Change::Cancelled,
            ChangeV1::Restored => Change::Restored,
            ChangeV1::PaidViaPagoPa {
                nav,
                receipt_id,
                amount,
                psp,
                paid_at,
            } => Change::PaidViaPagoPa {
                nav,
                receipt_id,
                amount,
                psp,
                paid_at,
                transfers: Vec::new(),
                flags: Vec::new(),
            },
            // Format 1 reported and credited whole notices; nothing wrote them but tests, and
            // a notice's first transfer is the closest reading.
            ChangeV1::Reported {
                nav,
                flow_id,
                amount,
            } => Change::Reported {
                nav,
                transfer: 1,
                flow_id,
                revision: String::new(),
                iur: String::new(),
                amount,
                outcome: 0,
                date: day,
            },
            ChangeV1::Credited {
                nav,
                reference,
                amount,
            } => Change::Credited {
                nav,
                transfer: 1,
                flow_id: None,
                reference,
                amount,
                date: day,
            },
            ChangeV1::OperatorAdjustment { note } => Change::OperatorAdjustment { note },
        }
    }
}

impl Stored for StoredEvent {
    const VERSION: u8 = 2;

    fn decode_old(version: u8, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        (version == 1).then(|| {
            postcard::from_bytes::<StoredEventV1>(bytes).map(|s| StoredEvent {
                commit: s.commit,
                event: Event {
                    at: s.event.at,
                    actor: s.event.actor,
                    reason: s.event.reason,
                    change: s
                        .event
                        .change
                        .upgrade(mpay_common::calendar::rome_date(s.event.at)),
                },
            })
        })
    }
}

/// A position's snapshot is derived: one of version 1 is refolded from its ledger when the store
/// is opened (`Store::upgrade`), never read.
impl Stored for Position {
    const VERSION: u8 = 2;
}

impl Stored for ReceiptRecord {}
/// Journal summaries of value version 1: bodies in the day's one file, without a checksum.
#[derive(Deserialize)]
struct JournalEntryV1 {
    seq: u64,
    at: Timestamp,
    direction: Direction,
    operation: String,
    entity: Option<String>,
    station: Option<String>,
    nav: Option<String>,
    iuv: Option<String>,
    outcome: String,
    fault_code: Option<String>,
    latency_us: u64,
    remote: Option<String>,
    request_bytes: u32,
    response_bytes: u32,
    body: Option<BodyRefV1>,
}

#[derive(Deserialize)]
struct BodyRefV1 {
    day: u32,
    offset: u64,
    request_len: u32,
    response_len: u32,
}

impl Stored for JournalEntry {
    const VERSION: u8 = 2;

    fn decode_old(version: u8, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        (version == 1).then(|| {
            postcard::from_bytes::<JournalEntryV1>(bytes).map(|e| JournalEntry {
                seq: e.seq,
                at: e.at,
                direction: e.direction,
                operation: e.operation,
                entity: e.entity,
                station: e.station,
                nav: e.nav,
                iuv: e.iuv,
                outcome: e.outcome,
                fault_code: e.fault_code,
                latency_us: e.latency_us,
                remote: e.remote,
                request_bytes: e.request_bytes,
                response_bytes: e.response_bytes,
                body: e.body.map(|b| BodyRef {
                    day: b.day,
                    segment: 0,
                    offset: b.offset,
                    request_len: b.request_len,
                    response_len: b.response_len,
                    crc: None,
                }),
            })
        })
    }
}
impl Stored for super::jobs::BulkJob {}
impl Stored for mpay_common::console::AuditRecord {}

/// A ledger entry as a format-1 store held it (for the upgrade tests); `None` for changes that
/// format 1 could not express.
#[cfg(test)]
pub(super) fn encode_v1(stored: &StoredEvent) -> Option<Vec<u8>> {
    let change = match stored.event.change.clone() {
        Change::Loaded(d) => ChangeV1::Loaded(d),
        Change::Cancelled => ChangeV1::Cancelled,
        Change::Restored => ChangeV1::Restored,
        Change::PaidOffline {
            nav,
            channel,
            date,
            amount,
            reference,
            transfer_amounts: None,
        } => ChangeV1::PaidOffline {
            nav,
            channel,
            date,
            amount,
            reference,
        },
        Change::PaidViaPagoPa {
            nav,
            receipt_id,
            amount,
            psp,
            paid_at,
            ..
        } => ChangeV1::PaidViaPagoPa {
            nav,
            receipt_id,
            amount,
            psp,
            paid_at,
        },
        _ => return None,
    };
    let old = StoredEventV1 {
        commit: stored.commit,
        event: EventV1 {
            at: stored.event.at,
            actor: stored.event.actor.clone(),
            reason: stored.event.reason.clone(),
            change,
        },
    };
    let mut out = vec![1];
    out.extend(postcard::to_stdvec(&old).ok()?);
    Some(out)
}

//! Golden bytes of every persisted type: a fixed value of each, encoded as the store writes it,
//! against the bytes this version writes. A failure means a stored layout changed: raise that
//! type's `Stored::VERSION`, teach `legacy.rs` to read the previous layout, then paste the new
//! bytes (the message prints them; `MPAY_GOLDEN_PRINT=1` prints them all).

use jiff::Timestamp;
use jiff::civil::date;
use mpay_common::console::AuditRecord;
use mpay_common::ids::{EntityFiscalCode, Nav};
use mpay_common::ledger::{
    Actor, Change, Event, OfflineChannel, PaidTransfer, PaymentFlag, Position,
};
use mpay_common::model::{
    Debtor, Instalment, OptionKind, PaymentOption, PositionData, RevenueStamp, Transfer,
    TransferTarget,
};
use mpay_common::money::Cents;

use super::codec::{self, Stored};
use super::jobs::{BulkJob, JobStatus};
use super::journal::{BodyRef, Direction, JournalEntry};
use super::{Disposition, ReceiptRecord, StoredEvent};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[track_caller]
fn golden<T: Stored>(name: &str, value: &T, expected: &str) {
    let bytes = codec::encode(value).expect("encodes");
    let got = hex(&bytes);
    if std::env::var_os("MPAY_GOLDEN_PRINT").is_some() {
        println!("GOLDEN {name} = {got}");
        return;
    }
    assert_eq!(
        got, expected,
        "{name}: the stored encoding changed (see golden.rs); it is now:\n{got}"
    );
    // And what was written reads back.
    let back: T = codec::decode(&bytes, name).expect("decodes");
    assert_eq!(hex(&codec::encode(&back).expect("encodes")), expected);
}

fn at() -> Timestamp {
    Timestamp::from_second(1_767_225_600).expect("2026-01-01")
}

fn entity() -> EntityFiscalCode {
    "00123456782".parse().expect("entity")
}

fn nav(n: u8) -> Nav {
    mpay_common::ids::IuvSettings {
        aux: mpay_common::ids::AuxDigit::Three,
        segregation_code: Some(1),
        application_code: None,
    }
    .notice(u64::from(n))
    .expect("nav")
}

fn instalment(n: u8) -> Instalment {
    let nav = nav(n);
    Instalment {
        iuv: nav.iuv(),
        nav,
        amount: Cents(12_00),
        due: date(2026, 12, 31),
        description: "TARI".into(),
        transfers: vec![
            Transfer {
                id: 1,
                beneficiary: entity(),
                target: TransferTarget::Bank("IT92R0306902117100000046111".parse().expect("iban")),
                amount: Cents(10_00),
                remittance: "TARI".into(),
                category: "9/0101101IM/".into(),
                metadata: Vec::new(),
            },
            Transfer {
                id: 2,
                beneficiary: entity(),
                target: TransferTarget::RevenueStamp(RevenueStamp {
                    stamp_type: "01".into(),
                    document_hash: "aGFzaA==".into(),
                    province: "RM".into(),
                }),
                amount: Cents(2_00),
                remittance: "Bollo".into(),
                category: "9/0101101IM/".into(),
                metadata: Vec::new(),
            },
        ],
        metadata: Vec::new(),
    }
}

fn data() -> PositionData {
    PositionData {
        iupd: "TARI-1".parse().expect("iupd"),
        kind: "TARI".into(),
        debtor: Debtor {
            code: "RSSMRA80A01H501U".parse().expect("debtor"),
            name: "Mario Rossi".into(),
            street: None,
            postal_code: None,
            city: Some("Roma".into()),
            province: None,
            country: None,
            email: None,
        },
        description: "Tassa rifiuti".into(),
        validity: None,
        expiry: Some(date(2027, 1, 31)),
        options: vec![PaymentOption {
            kind: OptionKind::Single,
            instalments: vec![instalment(1)],
        }],
    }
}

/// One event of every kind, in an order that folds.
fn changes() -> Vec<Change> {
    vec![
        Change::Loaded(data()),
        Change::Updated(data()),
        Change::DebtorUpdated(data().debtor),
        Change::Reduced {
            nav: nav(1),
            old_amount: Cents(12_00),
            new_amount: Cents(10_00),
            transfer_amounts: vec![Cents(8_00), Cents(2_00)],
            act: "Det. 1".into(),
        },
        Change::PaidOffline {
            nav: nav(1),
            channel: OfflineChannel::PostalSlip,
            date: date(2026, 2, 1),
            amount: Cents(1_00),
            reference: "BOLL-1".into(),
            transfer_amounts: Some(vec![Cents(1_00), Cents::ZERO]),
        },
        Change::Rescheduled {
            replaced: vec![nav(1)],
            plan: PaymentOption {
                kind: OptionKind::Plan,
                instalments: vec![instalment(2)],
            },
        },
        Change::Cancelled,
        Change::Restored,
        Change::PaidViaPagoPa {
            nav: nav(2),
            receipt_id: "r-1".into(),
            amount: Cents(12_00),
            psp: "BCITITMM".into(),
            paid_at: at(),
            transfers: vec![PaidTransfer {
                id: 1,
                amount: Cents(10_00),
                beneficiary: "00123456782".into(),
                account: Some("IT92R0306902117100000046111".into()),
            }],
            flags: vec![PaymentFlag::AccountDiffers { id: 1 }],
        },
        Change::Reported {
            nav: nav(2),
            transfer: 1,
            flow_id: "2026-01-02BCITITMM-1".into(),
            revision: "2026-01-02T10:00:00".into(),
            iur: "r-1".into(),
            amount: Cents(10_00),
            outcome: 0,
            date: date(2026, 1, 2),
        },
        Change::Credited {
            nav: nav(2),
            transfer: 1,
            flow_id: Some("2026-01-02BCITITMM-1".into()),
            reference: "TRN-1".into(),
            amount: Cents(10_00),
            date: date(2026, 1, 3),
        },
        Change::OperatorAdjustment {
            note: "checked".into(),
        },
    ]
}

fn events() -> Vec<Event> {
    changes()
        .into_iter()
        .map(|c| Event::new(at(), Actor::Operator("anna".into()), c).with_reason("why"))
        .collect()
}

#[test]
fn ledger_events() {
    let expected = [
        EVENTS_0, EVENTS_1, EVENTS_2, EVENTS_3, EVENTS_4, EVENTS_5, EVENTS_6, EVENTS_7, EVENTS_8,
        EVENTS_9, EVENTS_10, EVENTS_11,
    ];
    for (n, (event, want)) in events().into_iter().zip(expected).enumerate() {
        let name = format!("event {n} ({})", event.change.name());
        golden(&name, &StoredEvent { commit: 7, event }, want);
    }
}

#[test]
fn position_snapshot() {
    let position = Position::fold(entity(), &events()).expect("folds");
    golden("position", &position, POSITION);
}

#[test]
fn receipt_record() {
    let record = ReceiptRecord {
        entity: entity(),
        receipt_id: "r-1".into(),
        notice_entity: "00123456782".into(),
        nav: nav(2).to_string(),
        iuv: nav(2).iuv().to_string(),
        amount: Cents(12_00),
        psp: "BCITITMM".into(),
        station: "01111111116_01".into(),
        v2: true,
        stand_in: false,
        received_at: at(),
        position: Some(3),
        disposition: Disposition::ReceiptIdReused,
        commit: 9,
        raw: "<receipt/>".into(),
    };
    golden("receipt", &record, RECEIPT);
}

#[test]
fn bulk_job_journal_entry_and_audit_record() {
    let job = BulkJob {
        id: 4,
        entity: "00123456782".into(),
        status: JobStatus::Done,
        file: "tari.csv".into(),
        rows_total: 10,
        rows_done: 10,
        created: 8,
        replaced: 1,
        unchanged: 0,
        cancelled: 0,
        rejected_rows: 1,
        file_error: None,
        archived: Some("tari.csv".into()),
        resume_after: 10,
        report_bytes: 120,
        started: Some(at()),
        finished: Some(at()),
    };
    golden("bulk job", &job, JOB);
    let entry = JournalEntry {
        seq: 5,
        at: at(),
        direction: Direction::Inbound,
        operation: "paSendRTV2".into(),
        entity: Some("00123456782".into()),
        station: Some("01111111116_01".into()),
        nav: Some(nav(2).to_string()),
        iuv: None,
        outcome: "OK".into(),
        fault_code: None,
        latency_us: 812,
        remote: Some("127.0.0.1:5000".into()),
        request_bytes: 2048,
        response_bytes: 300,
        body: Some(BodyRef {
            day: 20_260_101,
            segment: 2,
            offset: 4096,
            request_len: 2048,
            response_len: 300,
            crc: Some(0xDEAD_BEEF),
        }),
    };
    golden("journal entry", &entry, JOURNAL);
    // A summary of version 1 reads as one in the day's first file, without a checksum.
    let bytes: Vec<u8> = (0..JOURNAL_V1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&JOURNAL_V1[i..i + 2], 16).expect("hex"))
        .collect();
    let old: JournalEntry = codec::decode(&bytes, "journal entry v1").expect("decodes");
    let body = old.body.expect("body");
    assert_eq!((body.segment, body.crc, body.offset), (0, None, 4096));
    assert_eq!(
        JournalEntry { body: None, ..old },
        JournalEntry {
            body: None,
            ..entry
        }
    );
    let audit = AuditRecord {
        seq: 2,
        at: at(),
        actor: Actor::Operator("anna".into()),
        origin: "uid 1000 pid 42".into(),
        action: "reduce".into(),
        target: "00123456782/TARI-1".into(),
        reason: "sgravio".into(),
        outcome: "ok".into(),
    };
    golden("audit record", &audit, AUDIT);
}

#[test]
fn flow_movement_and_resolutions() {
    use mpay_common::reconcile::{BadRow, Flow, FlowRow, Movement, RowOutcome};
    use mpay_common::worklist::{Fix, Resolution};
    let flow = Flow {
        id: "2026-01-02BCITITMM-1".into(),
        time: "2026-01-02T10:00:00".into(),
        settlement: "SCT-1".into(),
        settlement_date: date(2026, 1, 2),
        sender_kind: "B".into(),
        sender: "BCITITMM".into(),
        sender_name: Some("Banca".into()),
        bic: None,
        receiver: "00123456782".into(),
        receiver_name: None,
        declared_rows: 2,
        declared_total: Cents(15_000),
        rows: vec![FlowRow {
            iuv: nav(1).iuv().to_string(),
            iur: "rcpt-1".into(),
            transfer: 1,
            amount: Cents(15_000),
            outcome: RowOutcome::NoReceipt,
            date: date(2026, 1, 1),
        }],
        bad_rows: vec![BadRow {
            row: 2,
            field: "singoloImportoPagato".into(),
            reason: "not an amount".into(),
        }],
    };
    let record = super::FlowRecord {
        entity: entity(),
        flow_id: flow.id.clone(),
        time: flow.time.clone(),
        received_at: at(),
        source: "node".into(),
        flow: Some(flow),
        error: None,
        reported: 1,
        commit: 9,
        raw: "<FlussoRiversamento/>".into(),
    };
    golden("flow record", &record, FLOW);
    let movement = super::MovementRecord {
        entity: entity(),
        statement: "STMT-1".into(),
        movement: Movement {
            account: "IT92R0306902117100000046111".into(),
            booked: date(2026, 1, 3),
            value_date: Some(date(2026, 1, 3)),
            amount: 15_000,
            reference: "TRN-1".into(),
            remittance: "/PUR/LGPE-RIVERSAMENTO/URI/2026-01-02BCITITMM-1".into(),
        },
        received_at: at(),
        source: "inbox:stmt.xml".into(),
        credited: 1,
        commit: 10,
    };
    golden("movement record", &movement, MOVEMENT);
    let fixes = [
        Fix::Link {
            iupd: "TARI-1".parse().expect("iupd"),
            nav: nav(1),
        },
        Fix::RefundDue,
        Fix::AcceptDifference,
        Fix::AttachToFlow {
            flow_id: "2026-01-02BCITITMM-1".into(),
        },
        Fix::RecoveryRequested,
        Fix::Dismiss,
        Fix::Revert { id: 1 },
    ];
    for (i, fix) in fixes.into_iter().enumerate() {
        let r = Resolution {
            id: i as u64 + 1,
            entity: entity(),
            key: "movement:IT92R0306902117100000046111:TRN-1".into(),
            fix,
            reason: "why".into(),
            actor: Actor::Operator("anna".into()),
            at: at(),
        };
        golden(&format!("resolution {i}"), &r, RESOLUTIONS[i]);
    }
}

const EVENTS_0: &str = concat!(
    "020714323032362d30312d30315430303a30303a30305a0104616e6e6101037768790006544152492d310454",
    "415249105253534d5241383041303148353031550b4d6172696f20526f73736900000104526f6d610000000d",
    "5461737361207269666975746900010a323032372d30312d3331010001123330313030303030303030303030",
    "30313434113031303030303030303030303030313434e0120a323032362d31322d3331045441524902010b30",
    "30313233343536373832001b495439325230333036393032313137313030303030303436313131d00f045441",
    "52490c392f30313031313031494d2f00020b303031323334353637383202023031086147467a61413d3d0252",
    "4d900305426f6c6c6f0c392f30313031313031494d2f0000",
);
const EVENTS_1: &str = concat!(
    "020714323032362d30312d30315430303a30303a30305a0104616e6e6101037768790106544152492d310454",
    "415249105253534d5241383041303148353031550b4d6172696f20526f73736900000104526f6d610000000d",
    "5461737361207269666975746900010a323032372d30312d3331010001123330313030303030303030303030",
    "30313434113031303030303030303030303030313434e0120a323032362d31322d3331045441524902010b30",
    "30313233343536373832001b495439325230333036393032313137313030303030303436313131d00f045441",
    "52490c392f30313031313031494d2f00020b303031323334353637383202023031086147467a61413d3d0252",
    "4d900305426f6c6c6f0c392f30313031313031494d2f0000",
);
const EVENTS_2: &str = concat!(
    "020714323032362d30312d30315430303a30303a30305a0104616e6e61010377687902105253534d52413830",
    "41303148353031550b4d6172696f20526f73736900000104526f6d61000000",
);
const EVENTS_3: &str = concat!(
    "020714323032362d30312d30315430303a30303a30305a0104616e6e61010377687903123330313030303030",
    "30303030303030313434e012d00f02c00c9003064465742e2031",
);
const EVENTS_4: &str = concat!(
    "020714323032362d30312d30315430303a30303a30305a0104616e6e61010377687905123330313030303030",
    "30303030303030313434020a323032362d30322d3031c80106424f4c4c2d310102c80100",
);
const EVENTS_5: &str = concat!(
    "020714323032362d30312d30315430303a30303a30305a0104616e6e61010377687904011233303130303030",
    "3030303030303030313434010112333031303030303030303030303030323435113031303030303030303030",
    "303030323435e0120a323032362d31322d3331045441524902010b3030313233343536373832001b49543932",
    "5230333036393032313137313030303030303436313131d00f04544152490c392f30313031313031494d2f00",
    "020b303031323334353637383202023031086147467a61413d3d02524d900305426f6c6c6f0c392f30313031",
    "313031494d2f0000",
);
const EVENTS_6: &str = "020714323032362d30312d30315430303a30303a30305a0104616e6e61010377687906";
const EVENTS_7: &str = "020714323032362d30312d30315430303a30303a30305a0104616e6e61010377687907";
const EVENTS_8: &str = concat!(
    "020714323032362d30312d30315430303a30303a30305a0104616e6e61010377687908123330313030303030",
    "3030303030303032343503722d31e012084243495449544d4d14323032362d30312d30315430303a30303a30",
    "305a0101d00f0b3030313233343536373832011b495439325230333036393032313137313030303030303436",
    "313131010301",
);
const EVENTS_9: &str = concat!(
    "020714323032362d30312d30315430303a30303a30305a0104616e6e61010377687909123330313030303030",
    "303030303030303234350114323032362d30312d30324243495449544d4d2d3113323032362d30312d303254",
    "31303a30303a303003722d31d00f000a323032362d30312d3032",
);
const EVENTS_10: &str = concat!(
    "020714323032362d30312d30315430303a30303a30305a0104616e6e6101037768790a123330313030303030",
    "30303030303030323435010114323032362d30312d30324243495449544d4d2d310554524e2d31d00f0a3230",
    "32362d30312d3033",
);
const EVENTS_11: &str =
    "020714323032362d30312d30315430303a30303a30305a0104616e6e6101037768790b07636865636b6564";
const POSITION: &str = concat!(
    "020b303031323334353637383206544152492d310454415249105253534d5241383041303148353031550b4d",
    "6172696f20526f73736900000104526f6d610000000d5461737361207269666975746900010a323032372d30",
    "312d333101010212333031303030303030303030303030313434113031303030303030303030303030313434",
    "d00f0a323032362d31322d3331045441524902010b3030313233343536373832001b49543932523033303639",
    "3032313137313030303030303436313131c00c04544152490c392f30313031313031494d2f00020b30303132",
    "3334353637383202023031086147467a61413d3d02524d900305426f6c6c6f0c392f30313031313031494d2f",
    "0000e012010a323032372d30312d33310101020a323032362d30322d303106424f4c4c2d31c80102c8010000",
    "00010002c8010000000200001233303130303030303030303030303032343511303130303030303030303030",
    "3030323435e0120a323032362d31322d3331045441524902010b3030313233343536373832001b4954393252",
    "30333036393032313137313030303030303436313131d00f04544152490c392f30313031313031494d2f0002",
    "0b303031323334353637383202023031086147467a61413d3d02524d900305426f6c6c6f0c392f3031303131",
    "3031494d2f0000e01200010003722d31084243495449544d4d14323032362d30312d30315430303a30303a30",
    "305ae01202d00f90030001010000010114323032362d30312d30324243495449544d4d2d3113323032362d30",
    "312d30325431303a30303a303003722d31d00f0a323032362d30312d303202d00f000001000c14323032362d",
    "30312d30315430303a30303a30305a14323032362d30312d30315430303a30303a30305a",
);
const RECEIPT: &str = concat!(
    "010b303031323334353637383203722d310b3030313233343536373832123330313030303030303030303030",
    "30323435113031303030303030303030303030323435e012084243495449544d4d0e30313131313131313131",
    "365f3031010014323032362d30312d30315430303a30303a30305a010305090a3c726563656970742f3e",
);
const JOB: &str = concat!(
    "01040b30303132333435363738320108746172692e6373760a0a0801000001000108746172692e6373760a78",
    "0114323032362d30312d30315430303a30303a30305a0114323032362d30312d30315430303a30303a30305a",
);
/// A journal summary as version 1 wrote it (the same exchange), read through `legacy.rs`.
const JOURNAL_V1: &str = concat!(
    "010514323032362d30312d30315430303a30303a30305a000a706153656e6452545632010b30303132333435",
    "36373832010e30313131313131313131365f3031011233303130303030303030303030303032343500024f4b",
    "00ac06010e3132372e302e302e313a353030308010ac020185cad40980208010ac02",
);
const JOURNAL: &str = concat!(
    "020514323032362d30312d30315430303a30303a30305a000a706153656e6452545632010b30303132333435",
    "36373832010e30313131313131313131365f3031011233303130303030303030303030303032343500024f4b",
    "00ac06010e3132372e302e302e313a353030308010ac020185cad4090280208010ac0201effdb6f50d",
);
const AUDIT: &str = concat!(
    "010214323032362d30312d30315430303a30303a30305a0104616e6e610f7569642031303030207069642034",
    "32067265647563651230303132333435363738322f544152492d31077367726176696f026f6b",
);
const FLOW: &str = concat!(
    "010b303031323334353637383214323032362d30312d30324243495449544d4d2d3113323032362d",
    "30312d30325431303a30303a303014323032362d30312d30315430303a30303a30305a046e6f6465",
    "0114323032362d30312d30324243495449544d4d2d3113323032362d30312d30325431303a30303a",
    "3030055343542d310a323032362d30312d30320142084243495449544d4d010542616e6361000b30",
    "303132333435363738320002b0ea010111303130303030303030303030303031343406726370742d",
    "3101b0ea01040a323032362d30312d303101021473696e676f6c6f496d706f72746f50616761746f",
    "0d6e6f7420616e20616d6f756e74000109153c466c7573736f526976657273616d656e746f2f3e",
);
const MOVEMENT: &str = concat!(
    "010b30303132333435363738320653544d542d311b49543932523033303639303231313731303030",
    "30303034363131310a323032362d30312d3033010a323032362d30312d3033b0ea010554524e2d31",
    "2f2f5055522f4c4750452d524956455253414d454e544f2f5552492f323032362d30312d30324243",
    "495449544d4d2d3114323032362d30312d30315430303a30303a30305a0e696e626f783a73746d74",
    "2e786d6c010a",
);
const RESOLUTIONS: [&str; 7] = [
    concat!(
        "01010b30303132333435363738322a6d6f76656d656e743a49543932523033303639303231313731",
        "30303030303034363131313a54524e2d310006544152492d31123330313030303030303030303030",
        "30313434037768790104616e6e6114323032362d30312d30315430303a30303a30305a",
    ),
    concat!(
        "01020b30303132333435363738322a6d6f76656d656e743a49543932523033303639303231313731",
        "30303030303034363131313a54524e2d3101037768790104616e6e6114323032362d30312d303154",
        "30303a30303a30305a",
    ),
    concat!(
        "01030b30303132333435363738322a6d6f76656d656e743a49543932523033303639303231313731",
        "30303030303034363131313a54524e2d3102037768790104616e6e6114323032362d30312d303154",
        "30303a30303a30305a",
    ),
    concat!(
        "01040b30303132333435363738322a6d6f76656d656e743a49543932523033303639303231313731",
        "30303030303034363131313a54524e2d310314323032362d30312d30324243495449544d4d2d3103",
        "7768790104616e6e6114323032362d30312d30315430303a30303a30305a",
    ),
    concat!(
        "01050b30303132333435363738322a6d6f76656d656e743a49543932523033303639303231313731",
        "30303030303034363131313a54524e2d3104037768790104616e6e6114323032362d30312d303154",
        "30303a30303a30305a",
    ),
    concat!(
        "01060b30303132333435363738322a6d6f76656d656e743a49543932523033303639303231313731",
        "30303030303034363131313a54524e2d3105037768790104616e6e6114323032362d30312d303154",
        "30303a30303a30305a",
    ),
    concat!(
        "01070b30303132333435363738322a6d6f76656d656e743a49543932523033303639303231313731",
        "30303030303034363131313a54524e2d310601037768790104616e6e6114323032362d30312d3031",
        "5430303a30303a30305a",
    ),
];

//! Every screen drawn on fixed data at 80×24 and 160×48, compared with the snapshots under
//! `tests/snapshots/` (`cargo insta review` after an intended change). Then the keys that move
//! between them, and the styles the text snapshots cannot show.

use jiff::Timestamp;
use jiff::civil::date;
use mpay_common::console::{
    AuditRecord, Exchange, ExchangeDetail, Hello, JobRow, LedgerEntry, PositionRow, PositionView,
    Role, Status, TrafficSecond,
};
use mpay_common::ids::{AuxDigit, IuvSettings};
use mpay_common::ledger::{Actor, Change, Event, Position};
use mpay_common::model::{
    Debtor, Instalment, OptionKind, PaymentOption, PositionData, Transfer, TransferTarget,
};
use mpay_common::money::Cents;
use mpay_common::reconcile::{
    FlowRow, FlowView, Movement, MovementClass, MovementView, RowClass, RowOutcome, RowView,
};
use mpay_common::statement::{Money, Statement, Totals};
use mpay_common::worklist::{Fix, ItemState, Resolution, WorkItem};
use mpay_console::tui::app::{App, Connection, Reply, Request, Screen};
use mpay_console::tui::view::{self, Theme};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

fn at(s: &str) -> Timestamp {
    s.parse().expect("instant")
}

fn position() -> (Position, Vec<LedgerEntry>) {
    let settings = IuvSettings {
        aux: AuxDigit::Three,
        segregation_code: Some(1),
        application_code: None,
    };
    let nav = settings.notice(16_421).expect("nav");
    let entity = "00123456782".parse().expect("cf");
    let data = PositionData {
        iupd: "TARI-2026-0000087".parse().expect("iupd"),
        kind: "TARI".into(),
        debtor: Debtor {
            code: "RSSMRA80A01H501U".parse().expect("cf"),
            name: "Mario Rossi".into(),
            street: None,
            postal_code: None,
            city: Some("Castelverde".into()),
            province: None,
            country: None,
            email: None,
        },
        description: "Tassa rifiuti 2026".into(),
        validity: None,
        expiry: None,
        options: vec![PaymentOption {
            kind: OptionKind::Single,
            instalments: vec![Instalment {
                iuv: nav.iuv(),
                nav: nav.clone(),
                amount: Cents(10_000),
                due: date(2026, 12, 31),
                description: "TARI 2026".into(),
                transfers: vec![
                    Transfer {
                        id: 1,
                        beneficiary: "00123456782".parse().expect("cf"),
                        target: TransferTarget::Bank(
                            "IT92R0306902117100000046111".parse().expect("iban"),
                        ),
                        amount: Cents(9_500),
                        remittance: "TARI".into(),
                        category: "9/0101101IM/".into(),
                        metadata: Vec::new(),
                    },
                    Transfer {
                        id: 2,
                        beneficiary: "80001234568".parse().expect("cf"),
                        target: TransferTarget::Bank(
                            "IT92R0306902117100000046111".parse().expect("iban"),
                        ),
                        amount: Cents(500),
                        remittance: "TEFA".into(),
                        category: "9/0101102IM/".into(),
                        metadata: Vec::new(),
                    },
                ],
                metadata: Vec::new(),
            }],
        }],
    };
    let events = vec![
        Event::new(
            at("2026-11-02T09:00:00Z"),
            Actor::ApiKey("tributi".into()),
            Change::Loaded(data),
        ),
        Event::new(
            at("2026-11-20T10:30:00Z"),
            Actor::Operator("anna".into()),
            Change::Reduced {
                nav,
                old_amount: Cents(10_000),
                new_amount: Cents(8_000),
                transfer_amounts: vec![Cents(7_600), Cents(400)],
                act: "DET-2026-17".into(),
            },
        )
        .with_reason("ricalcolo superficie"),
    ];
    let p = Position::fold(entity, &events).expect("folds");
    let ledger = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| LedgerEntry {
            commit: i as u64 + 10,
            event,
        })
        .collect();
    (p, ledger)
}

fn exchange(seq: u64, op: &str, outcome: &str, fault: Option<&str>) -> Exchange {
    Exchange {
        seq,
        at: at("2026-11-30T15:00:00Z"),
        operation: op.into(),
        entity: Some("00123456782".into()),
        station: Some("01111111116_01".into()),
        nav: Some("301000000000016421".into()),
        outcome: outcome.into(),
        fault_code: fault.map(Into::into),
        latency_us: 900 + seq,
        remote: Some("127.0.0.1".into()),
    }
}

/// The fixture: a connected console with a little of everything.
fn app() -> App {
    let mut app = App::new(date(2026, 11, 30));
    app.apply(Reply::Connected(Hello {
        protocol: 1,
        version: "0.1.0".into(),
        operator: "anna".into(),
        role: Role::Operator,
    }));
    let traffic = (0..120)
        .map(|i| TrafficSecond {
            second: 1_795_000_000 + i,
            counts: vec![
                (
                    "paVerifyPaymentNotice".into(),
                    "OK".into(),
                    (i % 7) as u64 + 3,
                ),
                ("paSendRTV2".into(), "OK".into(), (i % 5) as u64),
                ("paVerifyPaymentNotice".into(), "KO".into(), (i % 3) as u64),
            ],
            faults: (i % 3) as u64,
            p50_us: 850,
            p99_us: 4_200,
        })
        .collect();
    app.apply(Reply::Status(Box::new(Status {
        version: "0.1.0".into(),
        started_at: Some(at("2026-11-30T07:00:00Z")),
        healthy: true,
        problem: None,
        positions: 1_000_000,
        commits: 1_254_331,
        flushes: 402_117,
        disk_bytes: 3 << 30,
        rss_bytes: 412 << 20,
        traffic,
        receipts_since_start: 18_204,
        double_payments_since_start: 3,
        jobs_running: 1,
        last_run: Some(mpay_common::console::RunRecord {
            seq: 4,
            day: date(2026, 11, 29),
            trigger: "schedule".into(),
            started: at("2026-11-30T05:00:00Z"),
            finished: at("2026-11-30T05:00:04Z"),
            flows_listed: 12,
            flows_new: 3,
            node_errors: vec!["PPT_AUTENTICAZIONE: password".into()],
            entities: 3,
            rows: 1_240,
            classes: [
                ("reconciled".to_string(), 1_200),
                ("not-reported".to_string(), 40),
            ]
            .into_iter()
            .collect(),
            error: None,
        }),
        cursor: Default::default(),
    })));
    app.apply(Reply::Traffic(vec![
        exchange(3, "paSendRTV2", "OK", None),
        exchange(2, "paGetPaymentV2", "OK", None),
        exchange(
            1,
            "paVerifyPaymentNotice",
            "KO",
            Some("PAA_PAGAMENTO_SCONOSCIUTO"),
        ),
    ]));
    let (p, _) = position();
    app.apply(Reply::Rows(vec![PositionRow::new(
        87,
        &p,
        date(2026, 11, 30),
    )]));
    app.search = "rossi".into();
    app.apply(Reply::Jobs(vec![JobRow {
        id: 12,
        entity: "00123456782".into(),
        file: "tari-2026.csv".into(),
        status: "done".into(),
        rows_total: 48_000,
        rows_done: 48_000,
        created: 47_990,
        replaced: 0,
        unchanged: 0,
        rejected_rows: 10,
        started: Some(at("2026-11-30T06:00:00Z")),
        finished: Some(at("2026-11-30T06:00:09Z")),
        file_error: None,
    }]));
    app.apply(Reply::Audit(vec![AuditRecord {
        seq: 1,
        at: at("2026-11-20T10:30:00Z"),
        actor: Actor::Operator("anna".into()),
        origin: "uid 1001 pid 4242".into(),
        action: "reduce".into(),
        target: "00123456782/TARI-2026-0000087".into(),
        reason: "ricalcolo superficie".into(),
        outcome: "ok".into(),
    }]));
    app.apply(Reply::Statement(Box::new(Statement {
        debtor: "RSSMRA80A01H501U".into(),
        entity: None,
        date: date(2026, 11, 30),
        generated_at: at("2026-11-30T15:00:00Z"),
        totals: Totals {
            positions: 0,
            open_amount: Money::from(Cents(8_000)),
            paid_pagopa: Money::from(Cents(0)),
            paid_offline: Money::from(Cents(0)),
            refunds_due: Money::from(Cents(0)),
        },
        positions: Vec::new(),
        truncated: false,
    })));
    app.apply(Reply::Entities(vec![
        (
            "00123456782".parse().expect("cf"),
            "Comune di Castelverde".into(),
        ),
        (
            "80001234568".parse().expect("cf"),
            "Provincia di Valleverde".into(),
        ),
    ]));
    app.apply(Reply::Worklist(work_items()));
    app.apply(Reply::Flows(vec![flow_view(false), flow_view(true)]));
    app.apply(Reply::Movements(vec![
        movement(
            "/PUR/LGPE-RIVERSAMENTO/URI/2026-11-29BCITITMM-0077",
            MovementClass::FlowCreditDiffers {
                flow_id: "2026-11-29BCITITMM-0077".into(),
                flow_total: Cents(2_000),
            },
        ),
        movement("RIMBORSO SPESE", MovementClass::NotPagoPa),
    ]));
    app.message = None;
    app
}

fn flow_view(anomalous: bool) -> FlowView {
    let row = |iuv: &str, class: RowClass| RowView {
        row: FlowRow {
            iuv: iuv.into(),
            iur: "iur-9".into(),
            transfer: 1,
            amount: Cents(2_000),
            outcome: RowOutcome::Executed,
            date: date(2026, 11, 26),
        },
        class,
        iupd: None,
        nav: None,
    };
    let rows = if anomalous {
        vec![
            row("01000000000016421", RowClass::Reconciled),
            row("02999999999999999", RowClass::UnknownIuv),
        ]
    } else {
        vec![row("01000000000016421", RowClass::Reconciled)]
    };
    FlowView {
        flow_id: format!("2026-11-29BCITITMM-00{}", if anomalous { 77 } else { 76 }),
        time: "2026-11-29T10:00:00".into(),
        received_at: at("2026-11-30T06:00:00Z"),
        source: "node".into(),
        error: None,
        superseded: false,
        psp: Some("BCITITMM".into()),
        settlement: Some("SCT-1".into()),
        settlement_date: Some(date(2026, 11, 27)),
        declared_rows: rows.len() as u64,
        declared_total: Cents(2_000 * rows.len() as i64),
        rows_total: Cents(2_000 * rows.len() as i64),
        totals_agree: true,
        reported: 1,
        classes: rows
            .iter()
            .map(|r| (r.class.name().to_string(), 1))
            .collect(),
        anomalies: usize::from(anomalous),
        rows,
        bad_rows: Vec::new(),
    }
}

fn movement(remittance: &str, class: MovementClass) -> MovementView {
    MovementView {
        movement: Movement {
            account: "IT92R0306902117100000046111".into(),
            booked: date(2026, 11, 30),
            value_date: None,
            amount: 2_050,
            reference: "SOP-77".into(),
            remittance: remittance.into(),
        },
        statement: "STMT-1".into(),
        received_at: at("2026-11-30T07:00:00Z"),
        credited: 0,
        class,
    }
}

fn work_items() -> Vec<WorkItem> {
    let item = |key: &str, subject: &str, class: &str, amount: i64| WorkItem {
        key: key.into(),
        subject: subject.into(),
        class: class.into(),
        amount,
        date: Some(date(2026, 11, 26)),
        iupd: None,
        nav: None,
        transfer: None,
        flow_id: None,
        reference: None,
        detail: String::new(),
        resolution: None,
    };
    let mut row = item(
        "flow-row:2026-11-29BCITITMM-0077:iur-9:02999999999999999:1",
        "flow-row",
        "unknown-iuv",
        2_000,
    );
    row.flow_id = Some("2026-11-29BCITITMM-0077".into());
    row.detail = "IUV 02999999999999999 paid 2026-11-26".into();
    let mut credit = item(
        "movement:IT92R0306902117100000046111:TRN-1",
        "movement",
        "not-pagopa",
        1_200,
    );
    credit.reference = Some("TRN-1".into());
    credit.detail = "RIMBORSO SPESE booked 2026-11-30".into();
    credit.resolution = Some(Resolution {
        id: 3,
        entity: "00123456782".parse().expect("cf"),
        key: credit.key.clone(),
        fix: Fix::Dismiss,
        reason: "rimborso economato".into(),
        actor: Actor::Operator("anna".into()),
        at: at("2026-11-30T09:00:00Z"),
    });
    let mut refund = item(
        "transfer:TARI-2026-0000087:301000000000016421:1",
        "transfer",
        "refund-due",
        950,
    );
    refund.nav = Some("301000000000016421".into());
    refund.iupd = Some("TARI-2026-0000087".into());
    refund.detail = "9/0101101IM/ to 00123456782".into();
    vec![row, credit, refund]
}

fn with_position(mut app: App) -> App {
    let (position, ledger) = position();
    app.apply(Reply::Position(Box::new(PositionView {
        id: 87,
        position,
        ledger,
    })));
    app
}

fn draw(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal
        .draw(|f| view::draw(f, app, Theme { color: true }))
        .expect("draw");
    terminal
}

fn key(app: &mut App, code: KeyCode) -> Vec<Request> {
    app.key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn snapshot_both(name: &str, app: &App) {
    for (w, h) in [(80, 24), (160, 48)] {
        let terminal = draw(app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), terminal.backend());
    }
}

#[test]
fn every_screen_at_two_sizes() {
    let mut app = app();
    for screen in Screen::ALL {
        app.screen = screen;
        snapshot_both(&screen.title().to_lowercase(), &app);
    }
    let mut detail = with_position(app);
    detail.screen = Screen::Positions;
    snapshot_both("position", &detail);
    key(&mut detail, KeyCode::Char('r'));
    for c in "70.00".chars() {
        key(&mut detail, KeyCode::Char(c));
    }
    snapshot_both("reduce_form", &detail);
    key(&mut detail, KeyCode::Tab);
    for c in "DET-9".chars() {
        key(&mut detail, KeyCode::Char(c));
    }
    key(&mut detail, KeyCode::Tab);
    for c in "errore di calcolo".chars() {
        key(&mut detail, KeyCode::Char(c));
    }
    key(&mut detail, KeyCode::Enter);
    snapshot_both("reduce_confirm", &detail);
    let mut help = detail;
    help.form = None;
    help.help = true;
    snapshot_both("help", &help);
    let mut exchange = app_with_exchange();
    exchange.screen = Screen::Traffic;
    snapshot_both("exchange", &exchange);
    let mut fixing = self::app();
    fixing.screen = Screen::Worklist;
    key(&mut fixing, KeyCode::Char('l'));
    for c in "TARI-2026-0000087".chars() {
        key(&mut fixing, KeyCode::Char(c));
    }
    snapshot_both("link_form", &fixing);
    let mut open = self::app();
    open.screen = Screen::Flows;
    open.apply(Reply::Flow(vec![flow_view(true)]));
    snapshot_both("flow_rows", &open);
    let mut lost = self::app();
    lost.apply(Reply::Lost(
        "cannot reach mpayd at /run/mpay/console.sock".into(),
    ));
    snapshot_both("reconnecting", &lost);
}

fn app_with_exchange() -> App {
    let mut app = app();
    app.apply(Reply::Exchange(Box::new(ExchangeDetail {
        exchange: exchange(1, "paVerifyPaymentNotice", "KO", Some("PAA_PAGAMENTO_SCONOSCIUTO")),
        request: Some(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body><paf:paVerifyPaymentNoticeReq xmlns:paf=\"http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd\"><idPA>00123456782</idPA><qrCode><fiscalCode>00123456782</fiscalCode><noticeNumber>301000000000016421</noticeNumber></qrCode></paf:paVerifyPaymentNoticeReq></soapenv:Body></soapenv:Envelope>".into(),
        ),
        response: Some("<soapenv:Envelope><soapenv:Body><outcome>KO</outcome></soapenv:Body></soapenv:Envelope>".into()),
    })));
    app
}

#[test]
fn keys_move_between_screens_and_ask_the_daemon() {
    let mut app = app();
    assert_eq!(app.screen, Screen::Dashboard);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.screen, Screen::Traffic);
    assert_eq!(key(&mut app, KeyCode::Char('5')), vec![Request::Jobs]);
    assert_eq!(app.screen, Screen::Jobs);
    assert_eq!(
        key(&mut app, KeyCode::Char('6')),
        vec![Request::Audit(None)]
    );
    key(&mut app, KeyCode::Char('/'));
    for c in "anna".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        vec![Request::Audit(Some("anna".into()))]
    );
    assert_eq!(app.screen, Screen::Audit);
    // `/` from a screen without a line of its own goes to the search; Enter asks.
    key(&mut app, KeyCode::Char('1'));
    key(&mut app, KeyCode::Char('/'));
    assert_eq!(app.screen, Screen::Positions);
    app.search.clear();
    for c in "301000000000016421".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let asked = key(&mut app, KeyCode::Enter);
    assert!(
        matches!(&asked[..], [Request::Search(s)] if s.text == "301000000000016421"),
        "{asked:?}"
    );
    // Enter on a result opens it.
    let asked = key(&mut app, KeyCode::Enter);
    assert!(matches!(&asked[..], [Request::Position(_)]), "{asked:?}");
    // A reduction needs a valid amount, an act and a reason before it can be confirmed.
    let mut app = with_position(app);
    key(&mut app, KeyCode::Char('r'));
    key(&mut app, KeyCode::Enter);
    assert!(!app.form.as_ref().expect("form").confirming);
    for c in "90.00".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let form = app.form.as_ref().expect("form");
    assert_eq!(form.problem(0).as_deref(), Some("must be less than 80.00"));
    for _ in 0..5 {
        key(&mut app, KeyCode::Backspace);
    }
    for c in "60.00".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char('D'));
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char('x'));
    key(&mut app, KeyCode::Enter);
    assert!(app.form.as_ref().expect("form").confirming);
    let asked = key(&mut app, KeyCode::Char('y'));
    assert!(matches!(&asked[..], [Request::Adjust(_, _)]), "{asked:?}");
    // The debtor's data: prefilled, corrected, the change shown before it is applied.
    app.form = None;
    key(&mut app, KeyCode::Char('d'));
    let form = app.form.as_mut().expect("debtor form");
    assert_eq!(form.fields[0].value, "Mario Rossi");
    form.focus = 3;
    form.fields[3].value = "Montalto".into();
    form.fields[4].value = "rm".into();
    assert_eq!(
        form.problem(4).as_deref(),
        Some("two capital letters (RM, MI, …)")
    );
    form.fields[4].value = "RM".into();
    form.fields[6].value = "trasferito".into();
    key(&mut app, KeyCode::Enter);
    let form = app.form.as_ref().expect("debtor form");
    assert!(form.confirming);
    assert_eq!(
        form.summary(),
        [
            "city: \"Castelverde\" → \"Montalto\"",
            "province: \"\" → \"RM\""
        ]
    );
    let asked = key(&mut app, KeyCode::Char('y'));
    assert!(
        matches!(&asked[..], [Request::Adjust(_, mpay_common::console::Adjustment::Debtor { debtor, reason })]
            if debtor.city.as_deref() == Some("Montalto") && reason == "trasferito"),
        "{asked:?}"
    );
    // q goes back, then to the dashboard, then quits.
    app.form = None;
    key(&mut app, KeyCode::Char('q'));
    assert!(app.position.is_none());
    key(&mut app, KeyCode::Char('q'));
    assert_eq!(app.screen, Screen::Dashboard);
    key(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
}

#[test]
fn the_worklist_filters_fixes_and_undoes() {
    let mut app = app();
    // 7 opens the worklist of the first entity; e moves to the next.
    let asked = key(&mut app, KeyCode::Char('7'));
    assert_eq!(app.screen, Screen::Worklist);
    assert!(
        matches!(&asked[..], [Request::Worklist(cf, q)] if cf.as_str() == "00123456782" && q.class.is_none()),
        "{asked:?}"
    );
    let asked = key(&mut app, KeyCode::Char('e'));
    assert!(
        matches!(&asked[..], [Request::Worklist(cf, _)] if cf.as_str() == "80001234568"),
        "{asked:?}"
    );
    key(&mut app, KeyCode::Char('e'));
    // The filter line: class, amount, age and state.
    key(&mut app, KeyCode::Char('/'));
    for c in "unknown-iuv min=10 age=3 state=all".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let asked = key(&mut app, KeyCode::Enter);
    let [Request::Worklist(_, q)] = &asked[..] else {
        panic!("{asked:?}")
    };
    assert_eq!(
        (q.class.as_deref(), q.min_amount, q.older_than_days, q.state),
        (Some("unknown-iuv"), Some(1_000), Some(3), ItemState::All)
    );
    app.worklist.filter.clear();
    app.apply(Reply::Worklist(work_items()));
    // Link the row: the notice is checked before the fix can be confirmed.
    key(&mut app, KeyCode::Char('l'));
    for c in "TARI-2026-0000087".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Tab);
    for c in "3010".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let form = app.worklist.form.as_ref().expect("form");
    assert!(!form.confirming);
    assert!(form.problem(1).is_some());
    for _ in 0..4 {
        key(&mut app, KeyCode::Backspace);
    }
    for c in "301000000000016421".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Tab);
    for c in "IUV sbagliato".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let asked = key(&mut app, KeyCode::Char('y'));
    let [Request::Resolve(_, item, Fix::Link { iupd, .. }, reason)] = &asked[..] else {
        panic!("{asked:?}")
    };
    assert!(item.starts_with("flow-row:"));
    assert_eq!(
        (iupd.as_str(), reason.as_str()),
        ("TARI-2026-0000087", "IUV sbagliato")
    );
    // The answer takes the row off the open list.
    app.apply(Reply::Resolved(Box::new(Resolution {
        id: 4,
        entity: "00123456782".parse().expect("cf"),
        key: item.clone(),
        fix: Fix::Dismiss,
        reason: "x".into(),
        actor: Actor::Operator("anna".into()),
        at: at("2026-11-30T10:00:00Z"),
    })));
    assert!(app.worklist.form.is_none());
    assert!(!app.worklist.items.iter().any(|i| i.key == *item));
    // Undo is offered only on an item with a fix in force, and asks for that fix's revert.
    app.worklist.selected = 0;
    key(&mut app, KeyCode::Char('u'));
    assert!(
        app.worklist.form.is_some(),
        "the dismissed credit has a fix"
    );
    for c in "era un incasso".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let asked = key(&mut app, KeyCode::Char('y'));
    assert!(
        matches!(
            &asked[..],
            [Request::Resolve(_, _, Fix::Revert { id: 3 }, _)]
        ),
        "{asked:?}"
    );
    app.worklist.form = None;
    app.worklist.selected = 1;
    key(&mut app, KeyCode::Char('u'));
    assert!(
        app.worklist.form.is_none(),
        "nothing to undo on an open item"
    );
    // The flows screen of the same entity: Enter asks for the flow's rows, q closes it.
    let asked = key(&mut app, KeyCode::Char('8'));
    assert!(
        matches!(&asked[..], [Request::Flows(cf)] if cf.as_str() == "00123456782"),
        "{asked:?}"
    );
    key(&mut app, KeyCode::Down);
    let asked = key(&mut app, KeyCode::Enter);
    assert!(
        matches!(&asked[..], [Request::Flow(_, id)] if id == "2026-11-29BCITITMM-0077"),
        "{asked:?}"
    );
    app.apply(Reply::Flow(vec![flow_view(true)]));
    key(&mut app, KeyCode::Char('q'));
    assert!(app.records.open.is_none());
    assert_eq!(app.screen, Screen::Flows);
    let asked = key(&mut app, KeyCode::Char('9'));
    assert!(matches!(&asked[..], [Request::Movements(_)]), "{asked:?}");
    let asked = key(&mut app, KeyCode::Char('e'));
    assert!(
        matches!(&asked[..], [Request::Movements(cf)] if cf.as_str() == "80001234568"),
        "{asked:?}"
    );
    // A viewer gets no forms.
    let mut viewer = self::app();
    viewer.apply(Reply::Connected(Hello {
        protocol: 1,
        version: "0.1.0".into(),
        operator: "vera".into(),
        role: Role::Viewer,
    }));
    key(&mut viewer, KeyCode::Char('7'));
    key(&mut viewer, KeyCode::Char('x'));
    assert!(viewer.worklist.form.is_none());
}

#[test]
fn outcomes_are_coloured_unless_no_color() {
    let mut app = app();
    app.screen = Screen::Traffic;
    let red_ko = |theme: Theme| {
        let mut terminal = Terminal::new(TestBackend::new(100, 10)).expect("terminal");
        terminal.draw(|f| view::draw(f, &app, theme)).expect("draw");
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height).any(|y| {
            (0..buffer.area.width.saturating_sub(1)).any(|x| {
                buffer[(x, y)].symbol() == "K"
                    && buffer[(x + 1, y)].symbol() == "O"
                    && buffer[(x, y)].fg == ratatui::style::Color::Red
            })
        })
    };
    assert!(red_ko(Theme { color: true }));
    assert!(!red_ko(Theme { color: false }));
    assert!(matches!(app.connection, Connection::Connected(_)));
}

#[test]
fn messages_are_laid_out_for_reading() {
    let xml = "<a><b>1</b><c><d>x</d></c></a>";
    assert_eq!(
        view::pretty_xml(xml),
        "<a>\n  <b>1</b>\n  <c>\n    <d>x</d>\n  </c>\n</a>\n"
    );
}

#[test]
fn a_plan_spreads_what_is_due_over_months() {
    let (p, _) = position();
    let notice = p.instalments().next().expect("notice");
    // 80.00 still due in three monthly instalments; the daemon splits them per beneficiary.
    let plan = mpay_console::tui::app::plan(p.due(notice), 3, date(2027, 1, 31)).expect("a plan");
    let amounts: Vec<i64> = plan.iter().map(|i| i.amount.0).collect();
    assert_eq!(amounts, [2_667, 2_667, 2_666]);
    let dues: Vec<String> = plan.iter().map(|i| i.due.to_string()).collect();
    assert_eq!(dues, ["2027-01-31", "2027-02-28", "2027-03-31"]);
    assert!(plan.iter().all(|i| i.transfers.is_empty()));
}

//! The money rules end to end: every defect a revenue office would find, each tried through the
//! REST API and the station of a real daemon, and a sample of generated histories replayed
//! through both, checking after every step that the station, the statement's QR codes and
//! `/notices` agree and that the statement's totals are the ledger's.
//!
//! Amounts are written `euros_cents` (`150_00` is 150.00 EUR).
#![allow(clippy::inconsistent_digit_grouping)]

use mpay_tests::Daemon;
use mpayd::simulator::requests::{self, Answer, Caller, ReceiptSpec, ReceiptTransfer, read_answer};
use mpayd::simulator::settlement::{Row, flow_document};
use serde_json::{Value, json};

const ENTITY: &str = "00123456782";
const PROVINCE: &str = "80001234568";
const KEY: &str = "demo-castelverde-key";
const PROVINCE_KEY: &str = "demo-valleverde-key";
const BANK: &str = "IT92R0306902117100000046111";
const PROVINCE_BANK: &str = "IT06F0103002800000061234567";
const DEBTOR: &str = "RSSMRA80A01H501U";

fn start(dir: &tempfile::TempDir) -> Daemon {
    Daemon::demo(&dir.path().join("demo"), 0).ready()
}

fn path(rest: &str) -> String {
    format!("/api/v1/entities/{ENTITY}/positions{rest}")
}

fn api(d: &Daemon, method: &str, rest: &str, body: Option<&Value>) -> (u16, Value) {
    d.api_call(method, &path(rest), Some(KEY), body)
}

fn ok(d: &Daemon, method: &str, rest: &str, body: Value) -> Value {
    let (status, v) = api(d, method, rest, Some(&body));
    assert!(
        status == 200 || status == 201,
        "{method} {rest}: {status} {v}"
    );
    v
}

fn get(d: &Daemon, iupd: &str) -> Value {
    let (status, p) = api(d, "GET", &format!("/{iupd}"), None);
    assert_eq!(status, 200, "{p}");
    p
}

/// A notice of `cents` split between the municipality and the province (TEFA), in that order.
fn notice(cents: i64, tefa: i64, due: &str) -> Value {
    json!({"amount": cents, "due": due, "description": "TARI",
           "transfers": [
               {"amount": cents - tefa, "remittance": "TARI", "category": "9/0101101IM/"},
               {"beneficiary": PROVINCE, "amount": tefa, "remittance": "TEFA",
                "category": "9/0101102IM/"}]})
}

fn position(options: Value) -> Value {
    json!({"kind": "TARI", "debtor": {"code": DEBTOR, "name": "Mario Rossi"},
           "description": "Tassa rifiuti", "options": options})
}

fn single(cents: i64, tefa: i64) -> Value {
    position(json!([{"kind": "Single", "instalments": [notice(cents, tefa, "2030-12-31")]}]))
}

/// Single 300.00 (285 + 15) or three instalments of 100.00 (95 + 5).
fn single_or_three() -> Value {
    position(json!([
        {"kind": "Single", "instalments": [notice(300_00, 15_00, "2030-01-31")]},
        {"kind": "Plan", "instalments": [
            notice(100_00, 5_00, "2030-01-31"),
            notice(100_00, 5_00, "2030-02-28"),
            notice(100_00, 5_00, "2030-03-31")]}]))
}

/// The NAVs of option `o`, in order.
fn navs(p: &Value, o: usize) -> Vec<String> {
    p["options"][o]["instalments"]
        .as_array()
        .expect("instalments")
        .iter()
        .map(|i| i["nav"].as_str().expect("nav").to_owned())
        .collect()
}

fn instalment<'a>(p: &'a Value, nav: &str) -> &'a Value {
    p["options"]
        .as_array()
        .expect("options")
        .iter()
        .flat_map(|o| o["instalments"].as_array().expect("instalments"))
        .find(|i| i["nav"] == nav)
        .unwrap_or_else(|| panic!("no {nav} in {p}"))
}

fn iuv_of(nav: &str) -> String {
    nav[1..].to_owned()
}

fn caller() -> Caller {
    Caller {
        id_pa: ENTITY.into(),
        broker: "01111111116".into(),
        station: "01111111116_01".into(),
    }
}

fn ask(d: &Daemon, action: &str, body: &str) -> Answer {
    read_answer(&d.soap(action, body)).expect("an answer")
}

fn verify(d: &Daemon, nav: &str) -> Answer {
    ask(
        d,
        "paVerifyPaymentNotice",
        &requests::verify(&caller(), ENTITY, nav),
    )
}

fn get_payment(d: &Daemon, nav: &str) -> Answer {
    ask(
        d,
        "paGetPaymentV2",
        &requests::get_payment(&caller(), true, ENTITY, nav, None),
    )
}

fn fault(a: &Answer) -> &str {
    a.fault_code.as_deref().unwrap_or("none")
}

fn split(a: &Answer) -> Vec<String> {
    a.transfers.iter().map(|t| t.amount.clone()).collect()
}

fn euros(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A receipt paying `parts` (transfer id, cents) of `nav`, as the node sends it.
fn receipt_body(id: &str, nav: &str, amount: i64, parts: &[(u8, i64)]) -> String {
    let spec = ReceiptSpec {
        receipt_id: id.into(),
        nav: nav.into(),
        notice_entity: ENTITY.into(),
        iuv: iuv_of(nav),
        amount: euros(amount),
        transfers: parts
            .iter()
            .map(|&(t, cents)| ReceiptTransfer {
                id: t.to_string(),
                amount: euros(cents),
                fiscal_code_pa: if t == 1 { ENTITY } else { PROVINCE }.into(),
                iban: Some(if t == 1 { BANK } else { PROVINCE_BANK }.into()),
                remittance: "TARI".into(),
                category: "9/0101101IM/".into(),
            })
            .collect(),
        psp: "BCITITMM".into(),
        stand_in: false,
    };
    requests::send_rt(&caller(), true, &spec)
}

/// Loads position `rest` (a path under the entity's positions) and pays its first notice
/// through the node with `receipt`: the notice's NAV.
fn paid_position(d: &Daemon, rest: &str, body: Value, receipt: &str) -> String {
    let p = ok(d, "PUT", rest, body);
    let nav = navs(&p, 0)[0].clone();
    pay_pagopa(d, receipt, &nav);
    nav
}

/// Pays `nav` through the node as getPayment asked, and checks the node hears OK.
fn pay_pagopa(d: &Daemon, id: &str, nav: &str) {
    let asked = get_payment(d, nav);
    assert_eq!(asked.outcome, "OK", "{nav}: {asked:?}");
    let parts: Vec<(u8, i64)> = asked
        .transfers
        .iter()
        .map(|t| (t.id.parse().expect("id"), cents(&t.amount)))
        .collect();
    let amount = parts.iter().map(|p| p.1).sum();
    let rt = ask(d, "paSendRTV2", &receipt_body(id, nav, amount, &parts));
    assert_eq!(rt.outcome, "OK", "{rt:?}");
}

fn cents(text: &str) -> i64 {
    let (e, c) = text.split_once('.').expect("a decimal amount");
    e.parse::<i64>().expect("euros") * 100 + c.parse::<i64>().expect("cents")
}

fn offline(d: &Daemon, iupd: &str, nav: &str, cents: i64, reference: &str) -> (u16, Value) {
    api(
        d,
        "POST",
        &format!("/{iupd}/instalments/{nav}/offline-payments"),
        Some(
            &json!({"channel": "PostalSlip", "date": "2026-03-01", "amount": cents,
                     "reference": reference}),
        ),
    )
}

fn statement(d: &Daemon) -> Value {
    let (status, s) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/statements/{DEBTOR}"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 200, "{s}");
    s
}

fn statement_of<'a>(s: &'a Value, iupd: &str) -> &'a Value {
    s["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .find(|p| p["iupd"] == iupd)
        .unwrap_or_else(|| panic!("no {iupd} in the statement"))
}

#[test]
fn each_beneficiary_keeps_its_share_through_reductions_payments_and_plans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);

    // 95.00 + 5.00 reduced to 80.00: 76.00 + 4.00, and after 20.00 at the counter 57.00 + 3.00.
    let p = ok(&d, "PUT", "/SHARE-1", single(100_00, 5_00));
    let nav = &navs(&p, 0)[0];
    ok(
        &d,
        "POST",
        &format!("/SHARE-1/instalments/{nav}/reduction"),
        json!({"new_amount": "80.00", "act": "Det. 1/2026", "reason": "sgravio"}),
    );
    assert_eq!(split(&get_payment(&d, nav)), ["76.00", "4.00"]);
    let (status, _) = offline(&d, "SHARE-1", nav, 20_00, "SLIP-1");
    assert_eq!(status, 200);
    assert_eq!(split(&get_payment(&d, nav)), ["57.00", "3.00"]);

    // A plan for 285 + 15 without transfers: each instalment keeps the 95/5 split.
    let p = ok(&d, "PUT", "/SHARE-2", single(300_00, 15_00));
    let old = navs(&p, 0)[0].clone();
    let planned = ok(
        &d,
        "POST",
        "/SHARE-2/reschedule",
        json!({"replaced": [old], "reason": "rateizzazione", "instalments": [
            {"amount": 15_000, "due": "2030-06-30", "description": "Rata 1 di 2"},
            {"amount": 15_000, "due": "2030-12-31", "description": "Rata 2 di 2"}]}),
    );
    for nav in navs(&planned, 0).iter().skip(1) {
        assert_eq!(split(&get_payment(&d, nav)), ["142.50", "7.50"], "{nav}");
    }

    // A revenue stamp is the stamp's amount or nothing.
    let stamped = position(json!([{"kind": "Single", "instalments": [{
        "amount": 12_00, "due": "2030-12-31", "description": "Certificato",
        "transfers": [
            {"amount": 10_00, "remittance": "Diritti", "category": "9/0601108DS/"},
            {"amount": 2_00, "remittance": "Bollo", "category": "9/0601108DS/",
             "target": {"RevenueStamp": {"stamp_type": "01", "province": "RM",
                        "document_hash": "cXVlc3RvIMOoIHVuIGhhc2ggZGkgdW4gZG9jdW1lbnRvIGRpIHByb3ZhIQ=="}}}]}]}]));
    let p = ok(&d, "PUT", "/STAMP-1", stamped.clone());
    let nav = &navs(&p, 0)[0];
    let reduced = ok(
        &d,
        "POST",
        &format!("/STAMP-1/instalments/{nav}/reduction"),
        json!({"new_amount": "7.00", "act": "Det. 2/2026", "reason": "sgravio"}),
    );
    assert_eq!(instalment(&reduced, nav)["transfers"][1]["amount"], 2_00);
    assert_eq!(split(&get_payment(&d, nav)), ["5.00", "2.00"]);

    // An entity whose stations speak only version 1 cannot take a stamp at all.
    let (status, err) = d.api_call(
        "PUT",
        &format!("/api/v1/entities/{PROVINCE}/positions/STAMP-2"),
        Some(PROVINCE_KEY),
        Some(&{
            let mut s = stamped;
            s["options"][0]["instalments"][0]["transfers"][0]["beneficiary"] = json!(PROVINCE);
            s
        }),
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        err["field"], "options[0].instalments[0].transfers[1].target",
        "{err}"
    );
}

#[test]
fn options_are_alternatives_and_a_plan_replaces_only_what_it_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);

    // A paid plan instalment closes the single payment.
    let p = ok(&d, "PUT", "/OPT-1", single_or_three());
    let (one, three) = (navs(&p, 0)[0].clone(), navs(&p, 1));
    pay_pagopa(&d, "r-opt-1", &three[0]);
    assert_eq!(fault(&verify(&d, &one)), "PAA_PAGAMENTO_DUPLICATO");
    assert_eq!(get(&d, "OPT-1")["open_amount"], 200_00);

    // The single and the first instalment replaced by a 100.00 plan: the other instalments
    // stay due, and paying the plan does not settle the 300.00.
    let p = ok(&d, "PUT", "/OPT-2", single_or_three());
    let (one, three) = (navs(&p, 0)[0].clone(), navs(&p, 1));
    let planned = ok(
        &d,
        "POST",
        "/OPT-2/reschedule",
        json!({"replaced": [one, three[0]], "reason": "rateizzazione", "instalments": [
            {"amount": 5_000, "due": "2030-01-31", "description": "Rata 1a"},
            {"amount": 5_000, "due": "2030-02-15", "description": "Rata 1b"}]}),
    );
    let plan: Vec<String> = navs(&planned, 1).into_iter().skip(3).collect();
    assert_eq!(plan.len(), 2, "{planned}");
    for nav in &plan {
        pay_pagopa(&d, &format!("r-{nav}"), nav);
    }
    for nav in &three[1..] {
        assert_eq!(verify(&d, nav).amount.as_deref(), Some("100.00"), "{nav}");
    }
    let after = get(&d, "OPT-2");
    assert_eq!(
        (&after["status"], &after["open_amount"]),
        (&json!("PartiallyPaid"), &json!(200_00))
    );

    // A plan on what is left after a paid instalment is payable.
    let p = ok(&d, "PUT", "/OPT-3", single_or_three());
    let three = navs(&p, 1);
    pay_pagopa(&d, "r-opt-3", &three[0]);
    let planned = ok(
        &d,
        "POST",
        "/OPT-3/reschedule",
        json!({"replaced": [three[1], three[2]], "reason": "rateizzazione", "instalments": [
            {"amount": 10_000, "due": "2030-04-30", "description": "Rata A"},
            {"amount": 10_000, "due": "2030-05-31", "description": "Rata B"}]}),
    );
    for nav in navs(&planned, 1).iter().skip(3) {
        assert_eq!(verify(&d, nav).outcome, "OK", "{nav}");
        assert_eq!(get_payment(&d, nav).outcome, "OK", "{nav}");
    }

    // Rescheduling a paid notice is refused with a code.
    let (status, err) = api(
        &d,
        "POST",
        "/OPT-3/reschedule",
        Some(
            &json!({"replaced": [three[0]], "reason": "x", "instalments": [
            {"amount": 100, "due": "2030-04-30", "description": "R"}]}),
        ),
    );
    assert_eq!(
        (status, &err["code"]),
        (409, &json!("NOTICE_PAID")),
        "{err}"
    );

    // A plan totals what it replaces, unless an act grants the difference; and it falls due
    // from today on.
    let p = ok(&d, "PUT", "/OPT-4", single(100_00, 5_00));
    let nav = navs(&p, 0)[0].clone();
    let plan = |amount: i64, due: &str, act: Option<&str>| {
        let mut body = json!({"replaced": [nav], "reason": "rate", "instalments": [
            {"amount": amount, "due": due, "description": "Rata unica"}]});
        if let Some(act) = act {
            body["act"] = json!(act);
        }
        api(&d, "POST", "/OPT-4/reschedule", Some(&body))
    };
    let (status, err) = plan(1, "2030-01-31", None);
    assert_eq!((status, &err["code"]), (400, &json!("PLAN_TOTAL")), "{err}");
    let (status, err) = plan(500_000, "2030-01-31", None);
    assert_eq!((status, &err["code"]), (400, &json!("PLAN_TOTAL")), "{err}");
    let (status, err) = plan(100_00, "1999-01-31", None);
    assert_eq!(
        (status, &err["field"]),
        (400, &json!("instalments[0].due")),
        "{err}"
    );
    let (status, granted) = plan(90_00, "2030-01-31", Some("Det. 12/2026"));
    assert_eq!(status, 200, "{granted}");
}

#[test]
fn payments_are_facts_and_what_does_not_fit_is_refunded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);

    // The same slip posted twice counts once; a different slip with the same reference is
    // refused.
    let p = ok(&d, "PUT", "/PAY-1", single(60_00, 3_00));
    let nav = navs(&p, 0)[0].clone();
    assert_eq!(offline(&d, "PAY-1", &nav, 60_00, "BOLL-000123").0, 200);
    let (status, again) = offline(&d, "PAY-1", &nav, 60_00, "BOLL-000123");
    assert_eq!(
        (status, &again["paid_amount"]),
        (200, &json!(60_00)),
        "{again}"
    );
    let (status, err) = offline(&d, "PAY-1", &nav, 50_00, "BOLL-000123");
    assert_eq!(
        (status, &err["code"]),
        (409, &json!("REFERENCE_REUSED")),
        "{err}"
    );

    // A counter payment after a receipt, above the due, on a cancelled position: recorded,
    // and refunded per beneficiary.
    let nav = paid_position(&d, "/PAY-2", single(100_00, 5_00), "r-pay-2");
    let (status, after) = offline(&d, "PAY-2", &nav, 100_00, "CASSA-1");
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["refunds_due"], 100_00);
    let refunds = after["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 2, "{after}");
    assert_eq!(
        (&refunds[1]["beneficiary"], &refunds[1]["amount"]),
        (&json!(PROVINCE), &json!(5_00))
    );

    let p = ok(&d, "PUT", "/PAY-3", single(100_00, 5_00));
    let nav = navs(&p, 0)[0].clone();
    let (status, over) = offline(&d, "PAY-3", &nav, 120_00, "CASSA-2");
    assert_eq!(
        (status, &over["status"], &over["refunds_due"]),
        (200, &json!("Paid"), &json!(20_00))
    );

    let p = ok(&d, "PUT", "/PAY-4", single(100_00, 5_00));
    let nav = navs(&p, 0)[0].clone();
    ok(&d, "POST", "/PAY-4/cancel", json!({"reason": "errore"}));
    let (status, cancelled) = offline(&d, "PAY-4", &nav, 100_00, "CASSA-3");
    assert_eq!(
        (status, &cancelled["refunds_due"]),
        (200, &json!(100_00)),
        "{cancelled}"
    );

    // A KO receipt pays nothing.
    let p = ok(&d, "PUT", "/PAY-5", single(100_00, 5_00));
    let nav = navs(&p, 0)[0].clone();
    let ko = receipt_body("r-ko", &nav, 100_00, &[(1, 95_00), (2, 5_00)])
        .replace("<outcome>OK</outcome>", "<outcome>KO</outcome>");
    assert_eq!(
        ask(&d, "paSendRTV2", &ko).outcome,
        "OK",
        "the node is acknowledged"
    );
    assert_eq!(verify(&d, &nav).amount.as_deref(), Some("100.00"));
    assert_eq!(get(&d, "PAY-5")["paid_amount"], 0);

    // A receipt of the wrong amount or split is stored, flagged, with its transfers kept.
    let wrong = receipt_body("r-wrong", &nav, 90_00, &[(1, 90_00)]);
    assert_eq!(ask(&d, "paSendRTV2", &wrong).outcome, "OK");
    let after = get(&d, "PAY-5");
    let payment = &instalment(&after, &nav)["payments"][0];
    assert_eq!(
        payment["flags"][0]["AmountDiffers"]["due"], 100_00,
        "{payment}"
    );
    assert_eq!(after["open_amount"], 10_00);
    let (_, ledger) = api(&d, "GET", "/PAY-5/ledger", None);
    let event = &ledger["events"][1]["change"]["PaidViaPagoPa"];
    assert_eq!(event["transfers"][0]["amount"], 90_00, "{ledger}");

    // A receiptId already used for another notice is kept and pays its own notice.
    let p = ok(&d, "PUT", "/PAY-6", single(50_00, 2_50));
    let other = navs(&p, 0)[0].clone();
    let reused = receipt_body("r-wrong", &other, 50_00, &[(1, 47_50), (2, 2_50)]);
    assert_eq!(ask(&d, "paSendRTV2", &reused).outcome, "OK");
    assert_eq!(get(&d, "PAY-6")["status"], "Paid");
    assert_eq!(fault(&verify(&d, &other)), "PAA_PAGAMENTO_DUPLICATO");
}

#[test]
fn cancel_restore_and_partial_payments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);

    // Paid while cancelled: once restored the payment is the notice's, and a second receipt
    // is a double payment.
    let p = ok(&d, "PUT", "/CR-1", single(100_00, 5_00));
    let nav = navs(&p, 0)[0].clone();
    ok(&d, "POST", "/CR-1/cancel", json!({"reason": "errore"}));
    let rt = receipt_body("r-cr-1", &nav, 100_00, &[(1, 95_00), (2, 5_00)]);
    assert_eq!(ask(&d, "paSendRTV2", &rt).outcome, "OK");
    ok(
        &d,
        "POST",
        "/CR-1/restore",
        json!({"reason": "annullata per errore"}),
    );
    assert_eq!(fault(&verify(&d, &nav)), "PAA_PAGAMENTO_DUPLICATO");
    let s = statement(&d);
    let cr = statement_of(&s, "CR-1");
    assert_eq!(
        (&cr["open_amount"]["cents"], &cr["refunds_due"]["cents"]),
        (&json!(0), &json!(0)),
        "{cr}"
    );
    assert!(cr["notices"][0]["qr"].is_null());
    let rt = receipt_body("r-cr-2", &nav, 100_00, &[(1, 95_00), (2, 5_00)]);
    assert_eq!(ask(&d, "paSendRTV2", &rt).outcome, "OK");
    assert_eq!(get(&d, "CR-1")["refunds_due"], 100_00);

    // After a partial payment the rest can be reduced, rescheduled or cancelled.
    for (iupd, action) in [
        ("PART-1", "reduce"),
        ("PART-2", "reschedule"),
        ("PART-3", "cancel"),
    ] {
        let p = ok(&d, "PUT", &format!("/{iupd}"), single(100_00, 5_00));
        let nav = navs(&p, 0)[0].clone();
        assert_eq!(offline(&d, iupd, &nav, 20_00, "SLIP").0, 200);
        let after = match action {
            "reduce" => ok(
                &d,
                "POST",
                &format!("/{iupd}/instalments/{nav}/reduction"),
                json!({"new_amount": "50.00", "act": "Det. 3", "reason": "sgravio"}),
            ),
            "reschedule" => ok(
                &d,
                "POST",
                &format!("/{iupd}/reschedule"),
                json!({"replaced": [nav], "reason": "rate", "instalments": [
                    {"amount": 4_000, "due": "2030-06-30", "description": "Rata 1"},
                    {"amount": 4_000, "due": "2030-07-31", "description": "Rata 2"}]}),
            ),
            _ => ok(
                &d,
                "POST",
                &format!("/{iupd}/cancel"),
                json!({"reason": "sgravio"}),
            ),
        };
        let (open, refunds) = (&after["open_amount"], &after["refunds_due"]);
        let expected = match action {
            "reduce" => 30_00,
            "reschedule" => 80_00,
            _ => 0,
        };
        assert_eq!(
            (open, refunds),
            (&json!(expected), &json!(0)),
            "{iupd}: {after}"
        );
    }

    // 99.99 paid on 100.00: the last cent is payable at the station, on its own transfer.
    let p = ok(&d, "PUT", "/CENT-1", single(100_00, 5_00));
    let nav = navs(&p, 0)[0].clone();
    assert_eq!(offline(&d, "CENT-1", &nav, 99_99, "SLIP-99").0, 200);
    assert_eq!(verify(&d, &nav).amount.as_deref(), Some("0.01"));
    let got = get_payment(&d, &nav);
    assert_eq!(
        (got.outcome.as_str(), split(&got)),
        ("OK", vec!["0.01".to_owned()])
    );
}

#[test]
fn dates_loads_and_spontaneous_services() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);

    // A fine past its expiry, rescheduled: the plan has its own dates and is payable.
    let mut fine = single(100_00, 5_00);
    fine["kind"] = json!("MULTA");
    fine["expiry"] = json!("2026-01-31");
    fine["options"][0]["instalments"][0]["due"] = json!("2026-01-15");
    let p = ok(&d, "PUT", "/FINE-1", fine);
    let nav = navs(&p, 0)[0].clone();
    assert_eq!(fault(&verify(&d, &nav)), "PAA_PAGAMENTO_SCADUTO");
    let planned = ok(
        &d,
        "POST",
        "/FINE-1/reschedule",
        json!({"replaced": [nav], "reason": "rateizzazione", "instalments": [
            {"amount": 5_000, "due": "2030-06-30", "description": "Rata 1"},
            {"amount": 5_000, "due": "2030-07-31", "description": "Rata 2"}]}),
    );
    for nav in navs(&planned, 0).iter().skip(1) {
        assert_eq!(verify(&d, nav).outcome, "OK", "{nav}");
        assert_eq!(instalment(&planned, nav)["status"], "Unpaid");
    }

    // An instalment due after its position's expiry, or in year 0, is refused at load.
    let mut late = single(100_00, 5_00);
    late["expiry"] = json!("2030-06-30");
    let (status, err) = api(&d, "PUT", "/LATE-1", Some(&late));
    assert_eq!(
        (status, &err["field"]),
        (400, &json!("options[0].instalments[0].due")),
        "{err}"
    );
    let mut zero = single(100_00, 5_00);
    zero["options"][0]["instalments"][0]["due"] = json!("0000-01-01");
    let (status, err) = api(&d, "PUT", "/ZERO-1", Some(&zero));
    assert_eq!(status, 400, "{err}");

    // Not valid yet: no QR, and the station does not know it.
    let mut later = single(100_00, 5_00);
    later["validity"] = json!("2030-01-01");
    let p = ok(&d, "PUT", "/LATER-1", later);
    let nav = navs(&p, 0)[0].clone();
    assert_eq!(fault(&verify(&d, &nav)), "PAA_PAGAMENTO_SCONOSCIUTO");
    assert!(statement_of(&statement(&d), "LATER-1")["notices"][0]["qr"].is_null());

    // The original body after a change of debtor: refused with a code, not silently ignored.
    let body = single(100_00, 5_00);
    ok(&d, "PUT", "/DEB-1", body.clone());
    ok(
        &d,
        "PUT",
        "/DEB-1/debtor",
        json!({"code": "BNCMRA80A41H501E", "name": "Maria Bianchi"}),
    );
    let (status, err) = api(&d, "PUT", "/DEB-1", Some(&body));
    assert_eq!(
        (status, &err["code"]),
        (409, &json!("DEBTOR_CHANGED")),
        "{err}"
    );
    let mut current = body.clone();
    current["debtor"] = json!({"code": "BNCMRA80A41H501E", "name": "Maria Bianchi"});
    assert_eq!(api(&d, "PUT", "/DEB-1", Some(&current)).0, 200);
    // A new body on a cancelled position is refused with a code.
    ok(&d, "POST", "/DEB-1/cancel", json!({"reason": "errore"}));
    let mut changed = current;
    changed["description"] = json!("Tassa rifiuti (rettifica)");
    let (status, err) = api(&d, "PUT", "/DEB-1", Some(&changed));
    assert_eq!(
        (status, &err["code"]),
        (409, &json!("POSITION_CANCELLED")),
        "{err}"
    );

    // A spontaneous service asked again after its notice was paid: a new payable notice.
    let c = caller();
    let demand = requests::demand(&c, "00001", "00001", "PGRhdGk+Y2VydGlmaWNhdG88L2RhdGk+");
    let first = ask(&d, "paDemandPaymentNotice", &demand);
    let nav = first.notice_number.clone().expect("a notice");
    pay_pagopa(&d, "r-spont-1", &nav);
    let second = ask(&d, "paDemandPaymentNotice", &demand);
    assert_eq!(second.outcome, "OK", "{second:?}");
    let again = second.notice_number.clone().expect("a notice");
    assert_ne!(again, nav);
    assert_eq!(verify(&d, &again).amount.as_deref(), Some("5.16"));
}

/// After every step of a history, the station, the statement's QR codes and `/notices` say
/// the same of every notice, and the statement's totals are the position's.
fn agree(d: &Daemon, iupd: &str) {
    let p = get(d, iupd);
    let s = statement(d);
    let st = statement_of(&s, iupd);
    let listed: Vec<Value> = d.notices(false);
    for (o, option) in p["options"].as_array().expect("options").iter().enumerate() {
        for i in option["instalments"].as_array().expect("instalments") {
            let nav = i["nav"].as_str().expect("nav");
            let answer = verify(d, nav);
            let in_statement = st["notices"]
                .as_array()
                .expect("notices")
                .iter()
                .find(|n| n["nav"] == nav)
                .unwrap_or_else(|| panic!("{nav} not in the statement"));
            let qr = in_statement["qr"].as_str();
            let in_list = listed.iter().find(|n| n["nav"] == nav);
            let due = i["due_amount"].as_i64().expect("due");
            match answer.outcome.as_str() {
                "OK" => {
                    assert_eq!(answer.amount.as_deref(), Some(euros(due).as_str()), "{nav}");
                    assert_eq!(
                        qr,
                        Some(format!("PAGOPA|002|{nav}|{ENTITY}|{due}").as_str())
                    );
                    assert_eq!(
                        in_list.map(|n| n["amount"].clone()),
                        Some(json!(euros(due)))
                    );
                    assert_eq!(get_payment(d, nav).outcome, "OK", "{nav}");
                }
                _ => {
                    assert!(
                        qr.is_none(),
                        "{nav} ({o}) not payable ({answer:?}) but has a QR"
                    );
                    assert!(in_list.is_none(), "{nav} not payable but listed");
                }
            }
        }
    }
    for (mine, theirs) in [
        ("open_amount", "open_amount"),
        ("refunds_due", "refunds_due"),
    ] {
        assert_eq!(p[mine], st[theirs]["cents"], "{iupd} {mine}: {p}\n{st}");
    }
    let paid = st["paid_pagopa"]["cents"].as_i64().expect("paid")
        + st["paid_offline"]["cents"].as_i64().expect("paid");
    assert_eq!(p["paid_amount"], paid, "{iupd}");
}

#[test]
fn generated_histories_agree_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let histories: u64 = std::env::var("MPAY_E2E_HISTORIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for h in 0..histories {
        let mut rng = fastrand::Rng::with_seed(0x9e37 + h);
        let iupd = format!("GEN-{h}");
        let start = if rng.bool() {
            single_or_three()
        } else {
            single(rng.i64(10_00..500_00), rng.i64(1..9_00))
        };
        ok(&d, "PUT", &format!("/{iupd}"), start);
        agree(&d, &iupd);
        let mut reference = 0;
        for step in 0..8 {
            let p = get(&d, &iupd);
            let all: Vec<String> = (0..p["options"].as_array().expect("options").len())
                .flat_map(|o| navs(&p, o))
                .collect();
            let nav = all[rng.usize(..all.len())].clone();
            let due = instalment(&p, &nav)["due_amount"].as_i64().expect("due");
            let amount = instalment(&p, &nav)["amount"].as_i64().expect("amount");
            match rng.u8(..7) {
                0 => {
                    // Whatever the station answers, a receipt may come (PSPs that did not ask).
                    let asked = get_payment(&d, &nav);
                    let parts: Vec<(u8, i64)> = if asked.outcome == "OK" {
                        asked
                            .transfers
                            .iter()
                            .map(|t| (t.id.parse().expect("id"), cents(&t.amount)))
                            .collect()
                    } else {
                        vec![(1, amount.max(1))]
                    };
                    let total = parts.iter().map(|p| p.1).sum();
                    let rt = receipt_body(&format!("g{h}-{step}"), &nav, total, &parts);
                    assert_eq!(ask(&d, "paSendRTV2", &rt).outcome, "OK");
                }
                1 | 2 => {
                    reference += u64::from(rng.u8(..4) != 0);
                    let cents = match rng.u8(..3) {
                        0 => due.max(1),
                        1 => (due / 3).max(1),
                        _ => amount + 5_00,
                    };
                    let (status, v) = offline(&d, &iupd, &nav, cents, &format!("S-{reference}"));
                    assert!(status == 200 || status == 409, "{status} {v}");
                }
                3 => {
                    let new = amount * i64::from(rng.u8(..10)) / 10;
                    let (status, v) = api(
                        &d,
                        "POST",
                        &format!("/{iupd}/instalments/{nav}/reduction"),
                        Some(&json!({"new_amount": new, "act": "Det.", "reason": "sgravio"})),
                    );
                    assert!(matches!(status, 200 | 400 | 409), "{status} {v}");
                }
                4 => {
                    let n = rng.i64(1..4);
                    let total = due.max(n);
                    let instalments: Vec<Value> = (0..n)
                        .map(|k| {
                            json!({"amount": total / n + if k == 0 { total % n } else { 0 },
                                        "due": "2030-09-30", "description": format!("Rata {k}")})
                        })
                        .collect();
                    let (status, v) = api(
                        &d,
                        "POST",
                        &format!("/{iupd}/reschedule"),
                        Some(
                            &json!({"replaced": [nav], "reason": "rate", "instalments": instalments}),
                        ),
                    );
                    assert!(matches!(status, 200 | 400 | 409), "{status} {v}");
                }
                5 => {
                    let (status, v) = api(
                        &d,
                        "POST",
                        &format!("/{iupd}/cancel"),
                        Some(&json!({"reason": "x"})),
                    );
                    assert!(matches!(status, 200 | 409), "{status} {v}");
                }
                _ => {
                    let (status, v) = api(
                        &d,
                        "POST",
                        &format!("/{iupd}/restore"),
                        Some(&json!({"reason": "x"})),
                    );
                    assert!(matches!(status, 200 | 409), "{status} {v}");
                }
            }
            agree(&d, &iupd);
        }
    }
}

/// On the demo's data (variations, payments, plans, every entity): each notice the station
/// takes is exactly one `/notices` lists and the API shows with a QR code, for the same amount.
#[test]
fn one_payable_rule_on_demo_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 300).ready();
    let keys = [
        (ENTITY, KEY),
        ("00987654324", "demo-montalto-key"),
        (PROVINCE, PROVINCE_KEY),
    ];
    let stations = [
        (ENTITY, "01111111116_01"),
        ("00987654324", "01111111116_01"),
        (PROVINCE, "01111111116_02"),
    ];
    let all = d.notices(true);
    assert!(all.len() > 300, "{} notices", all.len());
    let (mut payable, mut not) = (0, 0);
    for n in &all {
        let entity = n["entity"].as_str().expect("entity");
        let nav = n["nav"].as_str().expect("nav");
        let iupd = n["iupd"].as_str().expect("iupd");
        let station = stations.iter().find(|s| s.0 == entity).expect("station").1;
        let c = Caller {
            id_pa: entity.into(),
            broker: "01111111116".into(),
            station: station.into(),
        };
        let answer = ask(
            &d,
            "paVerifyPaymentNotice",
            &requests::verify(&c, entity, nav),
        );
        let key = keys.iter().find(|k| k.0 == entity).expect("key").1;
        let (status, p) = d.api_call(
            "GET",
            &format!("/api/v1/entities/{entity}/positions/{iupd}"),
            Some(key),
            None,
        );
        assert_eq!(status, 200, "{p}");
        let qr = instalment(&p, nav)["qr"].as_str().map(str::to_owned);
        if n["payable"] == true {
            payable += 1;
            assert_eq!(answer.outcome, "OK", "{nav} listed payable: {answer:?}");
            assert_eq!(answer.amount.as_deref(), n["amount"].as_str(), "{nav}");
            let cents = cents(n["amount"].as_str().expect("amount"));
            assert_eq!(
                qr,
                Some(format!("PAGOPA|002|{nav}|{entity}|{cents}")),
                "{nav}"
            );
        } else {
            not += 1;
            assert_ne!(
                answer.outcome, "OK",
                "{nav} not listed payable, yet the station takes it"
            );
            assert_eq!(qr, None, "{nav} not payable, yet a QR code");
        }
    }
    assert!(payable > 0 && not > 0, "{payable} payable, {not} not");
}

// ---------------------------------------------------------------------------------------------
// Reporting flows brought by hand

/// A FlussoRiversamento for the entity: `rows` are (IUV, IUR, transfer, cents, outcome code).
fn flow_xml(
    id: &str,
    time: &str,
    rows: &[(&str, &str, u8, i64, u8)],
    total: Option<i64>,
) -> String {
    let rows: Vec<Row> = rows
        .iter()
        .map(|(iuv, iur, transfer, cents, code)| Row {
            iuv: (*iuv).into(),
            iur: (*iur).into(),
            transfer: *transfer,
            cents: *cents,
            code: *code,
            date: jiff::civil::date(2026, 11, 26),
        })
        .collect();
    let settled = jiff::civil::date(2026, 11, 27);
    flow_document(id, time, settled, "BCITITMM", ENTITY, &rows, total)
}

/// A flow reporting both transfers of the notice `nav`, paid with `receipt`, for `shares`.
fn reporting(flow_id: &str, time: &str, nav: &str, receipt: &str, shares: [i64; 2]) -> String {
    let iuv = iuv_of(nav);
    flow_xml(
        flow_id,
        time,
        &[
            (iuv.as_str(), receipt, 1, shares[0], 0),
            (iuv.as_str(), receipt, 2, shares[1], 0),
        ],
        None,
    )
}

/// POSTs an XML document to one of the entity's endpoints (`flows`, `treasury`).
fn post_xml(d: &Daemon, endpoint: &str, xml: &str) -> (u16, Value) {
    let (status, body) = mpay_tests::http_request(
        d.api.expect("the API listens"),
        "POST",
        &format!("/api/v1/entities/{ENTITY}/{endpoint}"),
        &[
            ("Authorization", &format!("Bearer {KEY}")),
            ("Content-Type", "application/xml"),
        ],
        xml.as_bytes(),
    )
    .expect("upload");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn upload_flow(d: &Daemon, xml: &str) -> (u16, Value) {
    post_xml(d, "flows", xml)
}

#[test]
fn a_flow_brought_by_hand_is_kept_reported_and_classified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let nav_of =
        |iupd: &str| navs(&ok(&d, "PUT", &format!("/{iupd}"), single(100_00, 5_00)), 0)[0].clone();
    let (a, b, c) = (nav_of("FL-A"), nav_of("FL-B"), nav_of("FL-C"));
    pay_pagopa(&d, "rcpt-a", &a);
    pay_pagopa(&d, "rcpt-b", &b);
    let (ia, ib, ic) = (iuv_of(&a), iuv_of(&b), iuv_of(&c));
    let rows = [
        (ia.as_str(), "rcpt-a", 1, 95_00, 0),
        (ia.as_str(), "rcpt-a", 2, 5_00, 0),
        (ib.as_str(), "rcpt-b", 1, 90_00, 0),
        ("01999999999999999", "rcpt-x", 1, 10_00, 0),
        (ic.as_str(), "no-receipt", 1, 95_00, 9),
        (ia.as_str(), "rcpt-a", 1, 95_00, 0),
    ];
    let xml = flow_xml(
        "2026-11-27BCITITMM-0001",
        "2026-11-27T10:00:00",
        &rows,
        Some(1_00),
    );
    mpay_tests::xsd::validate_flow(&xml).expect("the test's flow is valid against the XSD");
    let (status, flow) = upload_flow(&d, &xml);
    assert_eq!(status, 201, "{flow}");
    let classes = &flow["classes"];
    assert_eq!(classes["reconciled"], 2, "{flow}");
    assert_eq!(classes["amount-mismatch"], 1);
    assert_eq!(classes["unknown-iuv"], 1);
    assert_eq!(classes["paid-without-receipt"], 1);
    assert_eq!(classes["duplicate"], 1);
    assert_eq!(flow["totals_agree"], false, "the declared total is wrong");
    assert_eq!(
        flow["reported"], 4,
        "one fact per matched row, duplicates once"
    );
    assert_eq!(flow["rows"][2]["class"]["AmountMismatch"]["paid"], 95_00);
    assert_eq!(flow["rows"][0]["iupd"], "FL-A");

    // The position knows, per transfer.
    let pa = get(&d, "FL-A");
    assert_eq!(pa["progress"], "Reported", "{pa}");
    assert_eq!(instalment(&pa, &a)["reported"], json!([95_00, 5_00]));
    assert_eq!(
        get(&d, "FL-B")["progress"],
        "None",
        "only part of B is reported"
    );

    // The same flow again changes nothing.
    let events = |iupd: &str| {
        let (_, l) = api(&d, "GET", &format!("/{iupd}/ledger"), None);
        l["events"].as_array().map_or(0, Vec::len)
    };
    let before = events("FL-A");
    let (status, again) = upload_flow(&d, &xml);
    assert_eq!(status, 200, "{again}");
    assert_eq!(events("FL-A"), before);

    // A revision restates the flow: B corrected, the unknown row gone; the first is kept,
    // superseded, and B's transfer is reported once, at the new amount.
    let mut fixed: Vec<_> = rows[..3].to_vec();
    fixed[2].3 = 95_00;
    fixed.push((ib.as_str(), "rcpt-b", 2, 5_00, 0));
    let revision = flow_xml(
        "2026-11-27BCITITMM-0001",
        "2026-11-28T09:00:00",
        &fixed,
        None,
    );
    let (status, rev) = upload_flow(&d, &revision);
    assert_eq!(status, 201, "{rev}");
    assert_eq!(
        (rev["totals_agree"].clone(), rev["anomalies"].clone()),
        (json!(true), json!(0)),
        "{rev}"
    );
    let pb = get(&d, "FL-B");
    assert_eq!(
        instalment(&pb, &b)["reported"],
        json!([95_00, 5_00]),
        "{pb}"
    );
    assert_eq!(pb["progress"], "Reported");
    // C's row was dropped by the revision: its report is withdrawn.
    assert_eq!(instalment(&get(&d, "FL-C"), &c)["reported"], json!([0, 0]));
    let (status, both) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/flows/2026-11-27BCITITMM-0001"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 200, "{both}");
    let revisions = both["revisions"].as_array().expect("revisions");
    assert_eq!(revisions.len(), 2, "{both}");
    assert_eq!(
        (&revisions[0]["superseded"], &revisions[1]["superseded"]),
        (&json!(true), &json!(false))
    );

    // Not XML, not a flow, truncated: kept with their error, listed, and nothing else changes.
    let before = events("FL-A");
    for bad in ["not xml at all", "<a/>", &xml[..xml.len() / 2]] {
        let (status, err) = upload_flow(&d, bad);
        assert_eq!(
            (status, &err["code"]),
            (400, &json!("FLOW_INVALID")),
            "{err}"
        );
    }
    let (status, list) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/flows"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 200, "{list}");
    let flows = list["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), 5, "{list}");
    assert_eq!(flows.iter().filter(|f| !f["error"].is_null()).count(), 3);
    assert_eq!(events("FL-A"), before);

    // A flow for another entity is refused and not kept.
    let other = xml.replace(
        &format!("<codiceIdentificativoUnivoco>{ENTITY}"),
        "<codiceIdentificativoUnivoco>00987654324",
    );
    let (status, err) = upload_flow(&d, &other);
    assert_eq!(
        (status, &err["field"]),
        (400, &json!("FlussoRiversamento/istitutoRicevente")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The daily report

#[test]
fn the_daily_report_lists_the_day_with_totals_that_add_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let nav_of =
        |iupd: &str| navs(&ok(&d, "PUT", &format!("/{iupd}"), single(100_00, 5_00)), 0)[0].clone();
    let paid = nav_of("DAY-1");
    pay_pagopa(&d, "rcpt-day-1", &paid);
    let counter = nav_of("DAY-2");
    assert_eq!(offline(&d, "DAY-2", &counter, 40_00, "CASSA-7").0, 200);
    let cut = nav_of("DAY-3");
    ok(
        &d,
        "POST",
        &format!("/DAY-3/instalments/{cut}/reduction"),
        json!({"new_amount": "80.00", "act": "Det. 9/2026", "reason": "sgravio"}),
    );
    nav_of("DAY-4");
    ok(&d, "POST", "/DAY-4/cancel", json!({"reason": "errore"}));
    let xml = reporting(
        "2026-11-30BCITITMM-0007",
        "2026-11-30T09:00:00",
        &paid,
        "rcpt-day-1",
        [95_00, 5_00],
    );
    assert_eq!(upload_flow(&d, &xml).0, 201);

    let today = mpay_common::calendar::rome_date(jiff::Timestamp::now()).to_string();
    let path = format!("/api/v1/entities/{ENTITY}/reports/{today}");
    let (status, report) = d.api_call("GET", &path, Some(KEY), None);
    assert_eq!(status, 200, "{report}");
    let totals = &report["totals"];
    assert_eq!(
        (&totals["pagopa"]["rows"], &totals["pagopa"]["amount"]),
        (&json!(2), &json!(100_00)),
        "{totals}"
    );
    assert_eq!(
        (&totals["offline"]["rows"], &totals["offline"]["amount"]),
        (&json!(2), &json!(40_00))
    );
    assert_eq!(totals["reduction"]["amount"], -20_00);
    assert_eq!(totals["cancellation"]["rows"], 1);
    assert_eq!(
        (&totals["flow-row"]["rows"], &totals["flow-row"]["amount"]),
        (&json!(2), &json!(100_00))
    );
    assert_eq!(report["totals_agree"], true);
    let rows = report["rows"].as_array().expect("rows");
    let sum: i64 = rows
        .iter()
        .map(|r| r["amount"].as_i64().expect("amount"))
        .sum();
    assert_eq!(totals["all"]["amount"], sum);
    let receipt_rows: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "pagopa").collect();
    assert_eq!(receipt_rows[0]["iupd"], "DAY-1");
    assert_eq!(receipt_rows[0]["debtor"], DEBTOR);
    assert_eq!(receipt_rows[1]["beneficiary"], PROVINCE);
    assert_eq!(
        receipt_rows[0]["class"], "waiting-for-credit",
        "reported, not credited yet"
    );
    // Another entity's report holds none of it.
    let (status, theirs) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{PROVINCE}/reports/{today}"),
        Some(PROVINCE_KEY),
        None,
    );
    assert_eq!((status, &theirs["rows"]), (200, &json!([])));

    // The CSV an accounts office opens: `;`, decimal comma, totals and the check at the end.
    let (status, body) = mpay_tests::http_request(
        d.api.expect("api"),
        "GET",
        &format!("{path}?format=csv"),
        &[("Authorization", &format!("Bearer {KEY}"))],
        b"",
    )
    .expect("csv");
    assert_eq!(status, 200);
    let csv = String::from_utf8(body).expect("UTF-8");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("data_ora;tipo;iupd;"), "{csv}");
    assert!(csv.contains(";95,00;"), "{csv}");
    assert!(csv.contains(";-20,00;"), "{csv}");
    assert!(lines.iter().any(|l| l.contains("TOTALE all")), "{csv}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("CONTROLLO") && l.contains("corrispondono")),
        "{csv}"
    );

    // Written to the outbox on demand, through the running daemon.
    let config = d.data_dir.join("mpayd.toml");
    let out = mpay_tests::mpayd(&[
        "reconcile",
        "--config",
        config.to_str().expect("path"),
        "--date",
        &today,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outbox = d.data_dir.join("outbox").join(ENTITY);
    let written =
        std::fs::read_to_string(outbox.join(format!("{today}.csv"))).expect("csv in the outbox");
    assert_eq!(written.lines().count(), lines.len());
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(outbox.join(format!("{today}.json"))).expect("json in the outbox"),
    )
    .expect("json");
    assert_eq!(json["totals"], report["totals"]);
    assert!(
        d.data_dir
            .join("outbox")
            .join(PROVINCE)
            .join(format!("{today}.csv"))
            .exists()
    );
    // The run is recorded, for the dashboard and `mpay runs`; an admin at the console runs a
    // day again and changes nothing.
    let run: Value = serde_json::from_slice(&out.stdout).expect("the run's record");
    assert_eq!(
        (&run["trigger"], &run["day"]),
        (&json!("admin"), &json!(today)),
        "{run}"
    );
    assert!(
        run["rows"].as_u64().is_some_and(|n| n >= rows.len() as u64),
        "every entity's rows, this one's among them: {run}"
    );
    assert_eq!(run["entities"], 3, "{run}");
    let (code, again) = console(&d, &["run-day", "--date", &today]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["trigger"], "operator:demo", "{again}");
    assert_eq!(
        std::fs::read_to_string(outbox.join(format!("{today}.csv"))).expect("csv"),
        written
    );
    let (_, runs) = console(&d, &["runs"]);
    assert_eq!(
        runs[0]["seq"].as_u64(),
        Some(run["seq"].as_u64().unwrap_or(0) + 1),
        "{runs}"
    );
    let (_, status) = console(&d, &["status"]);
    assert_eq!(status["last_run"]["trigger"], "operator:demo", "{status}");
}

// ---------------------------------------------------------------------------------------------
// Treasury statements

fn camt(entries: &[(&str, &str, &str)]) -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.02\"><BkToCstmrStmt>\
         <GrpHdr><MsgId>STMT-2026-11-30</MsgId><CreDtTm>2026-11-30T07:00:00</CreDtTm></GrpHdr>\
         <Stmt><Id>330</Id><Acct><Id><IBAN>IT92R0306902117100000046111</IBAN></Id></Acct>",
    );
    for (i, (amount, sign, remittance)) in entries.iter().enumerate() {
        xml.push_str(&format!(
            "<Ntry><Amt Ccy=\"EUR\">{amount}</Amt><CdtDbtInd>{sign}</CdtDbtInd><Sts>BOOK</Sts>\
             <BookgDt><Dt>2026-11-30</Dt></BookgDt><ValDt><Dt>2026-11-30</Dt></ValDt>\
             <AcctSvcrRef>TRN-{i}</AcctSvcrRef><NtryDtls><TxDtls><RmtInf>\
             <Ustrd>{remittance}</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>"
        ));
    }
    xml.push_str("</Stmt></BkToCstmrStmt></Document>");
    xml
}

fn upload_statement(d: &Daemon, xml: &str) -> (u16, Value) {
    post_xml(d, "treasury", xml)
}

#[test]
fn a_treasury_statement_credits_the_flows_it_settles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let a = paid_position(&d, "/TR-A", single(100_00, 5_00), "rcpt-tr-a");
    let flow_id = "2026-11-29BCITITMM-0042";
    let xml = reporting(
        flow_id,
        "2026-11-29T10:00:00",
        &a,
        "rcpt-tr-a",
        [95_00, 5_00],
    );
    assert_eq!(upload_flow(&d, &xml).0, 201);
    let statement = camt(&[
        // The bank mangled the separators and wrapped the text in its own fields.
        (
            "100.00",
            "CRDT",
            &format!("/ZZ2BANCA/PUR.LGPE-RIVERSAMENTO.URI.{flow_id}/ZZ4/"),
        ),
        (
            "30.00",
            "CRDT",
            "/PUR/LGPE-RIVERSAMENTO/URI/2026-11-29UNKNOWN-0001",
        ),
        ("12.00", "CRDT", "RIMBORSO SPESE"),
        ("5.00", "DBIT", "COMMISSIONI"),
        ("abc", "CRDT", "?"),
    ]);
    let (status, view) = upload_statement(&d, &statement);
    assert_eq!(status, 201, "{view}");
    assert_eq!(
        (&view["new"], &view["held"]),
        (&json!(4), &json!(0)),
        "{view}"
    );
    assert_eq!(view["bad_entries"][0]["field"], "Ntry[5]/Amt");
    let classes = &view["classes"];
    assert_eq!(
        (
            &classes["flow-credit"],
            &classes["unknown-flow"],
            &classes["not-pagopa"],
            &classes["debit"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(1)),
        "{view}"
    );
    let pa = get(&d, "TR-A");
    assert_eq!(pa["progress"], "Credited", "{pa}");
    assert_eq!(instalment(&pa, &a)["credited"], json!([95_00, 5_00]));
    let events = |iupd: &str| {
        let (_, l) = api(&d, "GET", &format!("/{iupd}/ledger"), None);
        l["events"].as_array().map_or(0, Vec::len)
    };
    let before = events("TR-A");

    // The same statement again loads nothing.
    let (status, again) = upload_statement(&d, &statement);
    assert_eq!(
        (status, &again["new"], &again["held"]),
        (200, &json!(0), &json!(4)),
        "{again}"
    );
    assert_eq!(events("TR-A"), before);

    // The movements, classed; the daily report sees the payment reconciled.
    let (status, list) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/treasury"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 200, "{list}");
    let movements = list["movements"].as_array().expect("movements");
    assert_eq!(movements.len(), 4);
    assert!(
        movements
            .iter()
            .any(|m| m["class"]["FlowCredit"]["flow_id"] == flow_id),
        "{list}"
    );
    let today = mpay_common::calendar::rome_date(jiff::Timestamp::now()).to_string();
    let (_, report) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/reports/{today}"),
        Some(KEY),
        None,
    );
    let rows = report["rows"].as_array().expect("rows");
    let payment = rows
        .iter()
        .find(|r| r["kind"] == "pagopa")
        .expect("the payment");
    assert_eq!(payment["class"], "reconciled", "{report}");
    assert_eq!(report["totals"]["credit"]["amount"], 100_00);

    // A credit may come before its flow: once the flow arrives, the credit is the flow's.
    let b = paid_position(&d, "/TR-B", single(50_00, 2_50), "rcpt-tr-b");
    let early = "2026-11-29BCITITMM-0043";
    let (status, view) = upload_statement(
        &d,
        &camt(&[(
            "50.00",
            "CRDT",
            &format!("/PUR/LGPE-RIVERSAMENTO/URI/{early}"),
        )])
        .replace("TRN-0", "TRN-EARLY"),
    );
    assert_eq!(
        (status, &view["classes"]["unknown-flow"]),
        (201, &json!(1)),
        "{view}"
    );
    assert_eq!(get(&d, "TR-B")["progress"], "None");
    let xml = reporting(early, "2026-11-29T11:00:00", &b, "rcpt-tr-b", [47_50, 2_50]);
    assert_eq!(upload_flow(&d, &xml).0, 201);
    let pb = get(&d, "TR-B");
    assert_eq!(pb["progress"], "Credited", "{pb}");
    assert_eq!(instalment(&pb, &b)["credited"], json!([47_50, 2_50]));

    // The worklist: what needs a look, and only that.
    let p = ok(&d, "PUT", "/TR-C", single(50_00, 2_50));
    let c = navs(&p, 0)[0].clone();
    assert_eq!(offline(&d, "TR-C", &c, 60_00, "CASSA-C").0, 200);
    let (status, work) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/worklist"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 200, "{work}");
    let classes: Vec<(&str, &str)> = work["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["subject"].as_str().unwrap_or(""),
                i["class"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(classes.contains(&("movement", "unknown-flow")), "{work}");
    assert!(classes.contains(&("movement", "not-pagopa")), "{work}");
    assert!(classes.contains(&("transfer", "refund-due")), "{work}");
    assert!(
        !classes.iter().any(|(s, _)| *s == "flow-row"),
        "every row reconciled: {work}"
    );
    assert!(work["next"].is_null());
    let (_, refunds) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/worklist?class=refund-due"),
        Some(KEY),
        None,
    );
    let amounts: i64 = refunds["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["amount"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(amounts, 10_00, "{refunds}");

    // Not a statement, or cut short: refused, nothing stored.
    for bad in ["<a/>", &statement[..statement.len() / 2]] {
        let (status, err) = upload_statement(&d, bad);
        assert_eq!(
            (status, &err["code"]),
            (400, &json!("STATEMENT_INVALID")),
            "{err}"
        );
    }
}

#[test]
fn a_flow_settled_by_integrative_credits_is_credited_when_they_add_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let a = paid_position(&d, "/TXT-A", single(100_00, 5_00), "rcpt-txt-a");
    let flow_id = "2026-11-29BCITITMM-0500";
    let xml = reporting(
        flow_id,
        "2026-11-29T10:00:00",
        &a,
        "rcpt-txt-a",
        [95_00, 5_00],
    );
    assert_eq!(upload_flow(&d, &xml).0, 201);
    // The ordinary SCT (TXT/0) fell short; an integrative one (TXT/1) brings the rest.
    let first = camt(&[(
        "60.00",
        "CRDT",
        &format!("/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/{flow_id}"),
    )]);
    let (_, view) = upload_statement(&d, &first);
    assert_eq!(view["classes"]["flow-credit-differs"], 1, "{view}");
    assert_eq!(get(&d, "TXT-A")["progress"], "Reported");
    let second = camt(&[(
        "40.00",
        "CRDT",
        &format!("/PUR/LGPE-RIVERSAMENTO/TXT/1/URI/{flow_id}"),
    )])
    .replace("TRN-0", "TRN-INTEGRATIVE");
    let (_, view) = upload_statement(&d, &second);
    assert_eq!(view["classes"]["flow-credit"], 1, "{view}");
    let pa = get(&d, "TXT-A");
    assert_eq!(pa["progress"], "Credited", "{pa}");
    assert_eq!(instalment(&pa, &a)["credited"], json!([95_00, 5_00]));
    // Read back, both credits are the flow's.
    let (_, list) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/treasury"),
        Some(KEY),
        None,
    );
    let movements = list["movements"].as_array().expect("movements");
    assert_eq!(movements.len(), 2);
    assert!(
        movements
            .iter()
            .all(|m| m["class"]["FlowCredit"]["flow_id"] == flow_id),
        "{list}"
    );
}

#[test]
fn a_fifty_megabyte_flow_is_taken_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let day = jiff::civil::date(2026, 11, 28);
    let rows: Vec<Row> = (0..120_000)
        .map(|i| Row {
            iuv: format!("0199{i:013}"),
            iur: format!("r{i:031}"),
            transfer: 1,
            cents: 10_00,
            code: 0,
            date: day,
        })
        .collect();
    let id = "2026-11-29BCITITMM-BIG";
    let xml = flow_document(
        id,
        "2026-11-29T10:00:00",
        day,
        "BCITITMM",
        ENTITY,
        &rows,
        None,
    );
    assert!(xml.len() > 50_000_000, "{} bytes", xml.len());
    let (status, view) = upload_flow(&d, &xml);
    assert_eq!(status, 201, "{view}");
    assert_eq!(
        view["classes"]["unknown-iuv"], 120_000,
        "every row read and classed"
    );
    assert_eq!(view["totals_agree"], true);
}

/// `mpay --json ARGS` on the daemon's console socket: its exit code and its JSON answer.
fn console(d: &Daemon, args: &[&str]) -> (i32, Value) {
    let socket = d.console.as_deref().expect("console socket");
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = mpay_tests::mpay(socket, &all);
    let code = out.status.code().unwrap_or(-1);
    let text = if code == 0 { &out.stdout } else { &out.stderr };
    (
        code,
        serde_json::from_slice(text)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(text).into())),
    )
}

fn work_keys(list: &Value) -> Vec<(String, String)> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["class"].as_str().unwrap_or("").to_owned(),
                i["key"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn worklist_fixes_are_attributed_audited_kept_and_reverted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    // A refund due (paid 60.00 on 52.50), a row for an IUV nobody issued, a credit naming an
    // unknown flow and one that is no pagoPA remittance.
    let p = ok(&d, "PUT", "/WL-A", single(50_00, 2_50));
    let a = navs(&p, 0)[0].clone();
    assert_eq!(offline(&d, "WL-A", &a, 60_00, "CASSA-WL").0, 200);
    let p = ok(&d, "PUT", "/WL-B", single(19_00, 1_00));
    let b = navs(&p, 0)[0].clone();
    let flow_id = "2026-11-29BCITITMM-0077";
    let xml = flow_xml(
        flow_id,
        "2026-11-29T10:00:00",
        &[("02999999999999999", "iur-typo", 1, 20_00, 0)],
        None,
    );
    assert_eq!(upload_flow(&d, &xml).0, 201);
    let statement = camt(&[
        (
            "30.00",
            "CRDT",
            "/PUR/LGPE-RIVERSAMENTO/URI/2026-11-29NOBODY-1",
        ),
        ("12.00", "CRDT", "RIMBORSO SPESE"),
    ]);
    assert_eq!(upload_statement(&d, &statement).0, 201);
    // And a receipt for a notice nobody here issued.
    let orphan = mpay_common::ids::IuvSettings {
        aux: mpay_common::ids::AuxDigit::Three,
        segregation_code: Some(1),
        application_code: None,
    }
    .notice(9_999_999)
    .expect("nav")
    .to_string();
    let rt = receipt_body("rcpt-wl-orphan", &orphan, 10_00, &[(1, 10_00)]);
    assert_eq!(ask(&d, "paSendRTV2", &rt).outcome, "OK");

    let e = ENTITY;
    let (code, list) = console(&d, &["worklist", "--entity", e]);
    assert_eq!(code, 0, "{list}");
    assert!(
        work_keys(&list).contains(&(
            "unknown-notice".to_owned(),
            "receipt:rcpt-wl-orphan".to_owned()
        )),
        "{list}"
    );
    let keys = work_keys(&list);
    let key_of = |class: &str| {
        keys.iter()
            .find(|(c, _)| c == class)
            .map(|(_, k)| k.clone())
            .unwrap_or_else(|| panic!("no {class} in {list}"))
    };
    let (row, unknown_flow, not_pagopa) = (
        key_of("unknown-iuv"),
        key_of("unknown-flow"),
        key_of("not-pagopa"),
    );
    assert!(
        keys.iter()
            .any(|(c, k)| c == "refund-due" && k.contains("WL-A"))
    );
    // Filters: class, amount, age.
    let (_, big) = console(&d, &["worklist", "--entity", e, "--min-amount", "25"]);
    assert!(
        work_keys(&big).iter().all(|(_, k)| *k == unknown_flow),
        "{big}"
    );
    let (_, old) = console(&d, &["worklist", "--entity", e, "--older-than", "3"]);
    let old = work_keys(&old);
    assert!(old.iter().any(|(_, k)| *k == row), "{old:?}");
    assert!(
        !old.iter()
            .any(|(_, k)| *k == unknown_flow || *k == not_pagopa),
        "credits booked today are not 3 days old: {old:?}"
    );

    // Dismiss the refund of expenses: out of the open list, in the resolved one, audited.
    let (code, fix) = console(
        &d,
        &[
            "resolve",
            "--entity",
            e,
            &not_pagopa,
            "--fix",
            "dismiss",
            "--reason",
            "rimborso spese economato",
        ],
    );
    assert_eq!(code, 0, "{fix}");
    let dismissed = fix["id"].as_u64().expect("id");
    assert_eq!(fix["fix"], "dismiss");
    assert!(fix["actor"]["Operator"].as_str().is_some(), "{fix}");
    let (code, open) = console(&d, &["worklist", "--entity", e]);
    assert_eq!(code, 0, "{open}");
    assert!(
        !work_keys(&open).iter().any(|(_, k)| *k == not_pagopa),
        "{open}"
    );
    let (_, resolved) = console(&d, &["worklist", "--entity", e, "--state", "resolved"]);
    assert_eq!(resolved["items"][0]["key"], json!(not_pagopa), "{resolved}");
    assert_eq!(resolved["items"][0]["resolution"]["id"], json!(dismissed));

    // Link the mistyped row to WL-B's notice: the row and WL-B's own items are resolved.
    let (code, link) = console(
        &d,
        &[
            "resolve",
            "--entity",
            e,
            &row,
            "--fix",
            "link",
            "--iupd",
            "WL-B",
            "--nav",
            &b,
            "--reason",
            "IUV digitato male dal PSP",
        ],
    );
    assert_eq!(code, 0, "{link}");
    // Refusals say why and change nothing: a fix twice, an unknown flow, a foreign fix, no
    // reason, an item that is not there.
    for (args, exit, code_or_field) in [
        (
            vec![
                "resolve", "--entity", e, &row, "--fix", "dismiss", "--reason", "ancora",
            ],
            3,
            "ALREADY_RESOLVED",
        ),
        (
            vec![
                "resolve",
                "--entity",
                e,
                &unknown_flow,
                "--fix",
                "attach-to-flow",
                "--flow",
                "NO-SUCH-FLOW",
                "--reason",
                "x",
            ],
            3,
            "fix.flow_id",
        ),
        (
            vec![
                "resolve",
                "--entity",
                e,
                &unknown_flow,
                "--fix",
                "recovery-requested",
                "--reason",
                "x",
            ],
            3,
            "FIX_NOT_APPLICABLE",
        ),
        (
            vec![
                "resolve",
                "--entity",
                e,
                &unknown_flow,
                "--fix",
                "dismiss",
                "--reason",
                " ",
            ],
            3,
            "reason",
        ),
        (
            vec![
                "resolve",
                "--entity",
                e,
                "movement:nowhere:1",
                "--fix",
                "dismiss",
                "--reason",
                "x",
            ],
            3,
            "NOT_ON_WORKLIST",
        ),
        (
            vec![
                "resolve",
                "--entity",
                e,
                &unknown_flow,
                "--fix",
                "link",
                "--reason",
                "x",
            ],
            2,
            "--iupd",
        ),
    ] {
        let (code, err) = console(&d, &args);
        assert_eq!(code, exit, "{args:?}: {err}");
        assert!(err.to_string().contains(code_or_field), "{args:?}: {err}");
    }
    let (code, attach) = console(
        &d,
        &[
            "resolve",
            "--entity",
            e,
            &unknown_flow,
            "--fix",
            "attach-to-flow",
            "--flow",
            flow_id,
            "--reason",
            "causale persa dalla banca",
        ],
    );
    assert_eq!(code, 0, "{attach}");

    // Revert the dismissal: the movement is back, the trail keeps both; a second revert is
    // refused.
    let id = dismissed.to_string();
    let (code, revert) = console(
        &d,
        &["revert", "--entity", e, &id, "--reason", "era un pagamento"],
    );
    assert_eq!(code, 0, "{revert}");
    assert_eq!(revert["key"], json!(not_pagopa));
    let (code, err) = console(&d, &["revert", "--entity", e, &id, "--reason", "di nuovo"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.to_string().contains("NOT_IN_FORCE"), "{err}");
    let (_, open) = console(&d, &["worklist", "--entity", e]);
    assert!(
        work_keys(&open).iter().any(|(_, k)| *k == not_pagopa),
        "{open}"
    );
    let (_, audit) = console(&d, &["audit", "--limit", "20"]);
    let actions: Vec<&str> = audit
        .as_array()
        .expect("audit")
        .iter()
        .map(|r| r["action"].as_str().unwrap_or(""))
        .collect();
    for action in ["dismiss", "link", "attach-to-flow", "revert"] {
        assert!(actions.contains(&action), "{action}: {audit}");
    }

    // The authority reads the same through the API; the fixes survive a kill -9.
    let d = {
        let data = d.data_dir.clone();
        d.kill9();
        Daemon::run_config(&data.join("mpayd.toml"), &data).ready()
    };
    let (status, resolved) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/worklist?state=resolved"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 200, "{resolved}");
    let fixed: Vec<(String, String)> = work_keys(&resolved);
    assert!(fixed.iter().any(|(_, k)| *k == row), "{resolved}");
    assert!(fixed.iter().any(|(_, k)| *k == unknown_flow), "{resolved}");
    assert!(!fixed.iter().any(|(_, k)| *k == not_pagopa), "{resolved}");
    let (_, fixes) = console(&d, &["fixes", "--entity", e]);
    assert_eq!(fixes.as_array().map(Vec::len), Some(4), "{fixes}");

    // A viewer reads the worklist but may not fix it; the attempt is audited.
    let d = {
        let data = d.data_dir.clone();
        assert!(d.stop().success());
        let config = data.join("mpayd.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        std::fs::write(
            &config,
            text.replace("role = \"admin\"", "role = \"viewer\""),
        )
        .expect("config");
        Daemon::run_config(&config, &data).ready()
    };
    assert_eq!(console(&d, &["worklist", "--entity", e]).0, 0);
    let (code, err) = console(
        &d,
        &[
            "resolve",
            "--entity",
            e,
            &not_pagopa,
            "--fix",
            "dismiss",
            "--reason",
            "prova",
        ],
    );
    assert_eq!(code, 4, "{err}");
    let (_, audit) = console(&d, &["audit", "--limit", "1"]);
    assert!(
        audit[0]["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("FORBIDDEN")),
        "{audit}"
    );
    assert_eq!(
        console(&d, &["fixes", "--entity", e])
            .1
            .as_array()
            .map(Vec::len),
        Some(4)
    );
}

#[test]
fn the_demo_settles_its_payments_with_anomalies_for_the_worklist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo_with(
        &[],
        &dir.path().join("demo"),
        300,
        // The daemon fetches the flows from the demo's simulated node through FdR REST.
        &[
            "--traffic",
            "20",
            "--settle-every",
            "2",
            "--node-interface",
            "fdr",
        ],
    )
    .ready();
    let keys = [
        (ENTITY, KEY),
        (PROVINCE, PROVINCE_KEY),
        ("00987654324", "demo-montalto-key"),
    ];
    let classes = || {
        let mut seen = std::collections::BTreeSet::new();
        for (cf, key) in keys {
            let (_, list) = d.api_call(
                "GET",
                &format!("/api/v1/entities/{cf}/worklist?state=all"),
                Some(key),
                None,
            );
            for i in list["items"].as_array().into_iter().flatten() {
                seen.insert(format!(
                    "{}/{}",
                    i["subject"].as_str().unwrap_or(""),
                    i["class"].as_str().unwrap_or("")
                ));
            }
        }
        seen
    };
    let wanted = [
        "flow-row/unknown-iuv",
        "flow-row/paid-without-receipt",
        "flow/totals-disagree",
        "movement/unknown-flow",
        "movement/not-pagopa",
    ];
    let started = std::time::Instant::now();
    let mut seen = classes();
    while !wanted.iter().all(|w| seen.contains(*w)) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "after a minute the worklist shows {seen:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
        seen = classes();
    }
    // The flows and credits reconcile the payments they report: some transfers are credited.
    let mut revised = false;
    let mut credited = 0;
    for (cf, key) in keys {
        let (_, flows) = d.api_call(
            "GET",
            &format!("/api/v1/entities/{cf}/flows"),
            Some(key),
            None,
        );
        for f in flows["flows"].as_array().into_iter().flatten() {
            revised |= f["superseded"] == true;
            assert_eq!(f["source"], "node", "fetched from the simulated node: {f}");
        }
        let (_, movements) = d.api_call(
            "GET",
            &format!("/api/v1/entities/{cf}/treasury"),
            Some(key),
            None,
        );
        credited += movements["movements"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["credited"].as_u64().is_some_and(|n| n > 0))
            .count();
    }
    assert!(revised, "the flow that missed a row was revised");
    assert!(credited > 0, "credits settled their flows");
}

// ---------------------------------------------------------------------------------------------
// Flows fetched from the node

/// `mpayd reconcile` of today through the running daemon: the run's record.
fn reconcile_today(config: &std::path::Path) -> Value {
    let today = mpay_common::calendar::rome_date(jiff::Timestamp::now()).to_string();
    let out = mpay_tests::mpayd(&[
        "reconcile",
        "--config",
        config.to_str().expect("path"),
        "--date",
        &today,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// A request as the mocks see it.
struct Asked {
    target: String,
    soap_action: String,
    key: String,
    body: String,
}

/// A one-thread HTTP/1.1 server answering each request with `answer` (status, content type,
/// body); counts the requests it answered.
fn serve(
    answer: impl Fn(&Asked) -> (u16, &'static str, String) + Send + 'static,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&calls);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut asked = Asked {
                target: String::new(),
                soap_action: String::new(),
                key: String::new(),
                body: String::new(),
            };
            let mut length = 0usize;
            let mut line = String::new();
            if reader.read_line(&mut line).is_ok() {
                asked.target = line.split(' ').nth(1).unwrap_or("").to_owned();
            }
            line.clear();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("soapaction:") {
                    asked.soap_action = line[11..].trim().trim_matches('"').to_owned();
                }
                if lower.starts_with("ocp-apim-subscription-key:") {
                    asked.key = line[26..].trim().to_owned();
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            asked.body = String::from_utf8_lossy(&body).into_owned();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (status, kind, text) = answer(&asked);
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (addr, calls)
}

/// A mock of the node's nodeForPa: lists `flows` and serves them (base64), checking the
/// station's password and the subscription key; counts the calls it answered.
fn mock_node(
    flows: Vec<(String, String, String)>,
    slow: std::time::Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use base64::Engine;
    serve(move |asked| {
        std::thread::sleep(slow);
        let (action, body) = (&asked.soap_action, &asked.body);
        let inner =
            if asked.key != "sub-key-123" || !body.contains("<password>pwd-node-1</password>") {
                "<fault><faultCode>PPT_AUTENTICAZIONE</faultCode><faultString>auth</faultString>\
             <id>NodoDeiPagamentiSPC</id></fault>"
                    .to_owned()
            } else if action == "nodoChiediElencoFlussiRendicontazione" {
                // The node lists one entity's flows at a time.
                let ours = body.contains(&format!("<identificativoDominio>{ENTITY}<"));
                let ids: String = flows
                    .iter()
                    .filter(|_| ours)
                    .map(|(id, time, _)| {
                        format!(
                            "<idRendicontazione><identificativoFlusso>{id}</identificativoFlusso>\
                             <dataOraFlusso>{time}</dataOraFlusso></idRendicontazione>"
                        )
                    })
                    .collect();
                format!(
                    "<elencoFlussiRendicontazione><totRestituiti>{}</totRestituiti>{ids}\
                     </elencoFlussiRendicontazione>",
                    flows.len()
                )
            } else {
                let doc = flows
                    .iter()
                    .find(|(id, _, _)| body.contains(&format!("<identificativoFlusso>{id}<")))
                    .map(|(_, _, xml)| base64::engine::general_purpose::STANDARD.encode(xml));
                match doc {
                    Some(b64) => format!("<xmlRendicontazione>{b64}</xmlRendicontazione>"),
                    None => "<fault><faultCode>PPT_ID_FLUSSO_SCONOSCIUTO</faultCode>\
                         <faultString>?</faultString><id>NodoDeiPagamentiSPC</id></fault>"
                        .to_owned(),
                }
            };
        let answer = format!(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:ppt=\"http://ws.pagamenti.telematici.gov/\"><soapenv:Body>\
             <ppt:{action}Risposta>{inner}</ppt:{action}Risposta></soapenv:Body></soapenv:Envelope>"
        );
        (200, "text/xml", answer)
    })
}

/// One revision of a flow on the mock FdR service: (fdr, revision, published, rows of (IUV,
/// IUR, transfer, cents, payStatus)).
type FdrFlow = (
    String,
    u64,
    String,
    Vec<(String, String, u8, i64, &'static str)>,
);

/// A mock of the FdR REST service for organisations: lists the flows (one per page, to page),
/// serves each revision and its payments (two per page), checks the subscription key.
fn mock_fdr(
    flows: std::sync::Arc<std::sync::Mutex<Vec<FdrFlow>>>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    serve(move |asked| {
        let error = |status: u16, code: &str| {
            let body = format!(
                "{{\"errorId\":\"e\",\"httpStatusCode\":{status},\"appErrorCode\":\"{code}\",\
                 \"errors\":[]}}"
            );
            (status, "application/json", body)
        };
        if asked.key != "sub-key-123" {
            return error(401, "FDR-0401");
        }
        let (path, query) = asked.target.split_once('?').unwrap_or((&asked.target, ""));
        let page: usize = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("page="))
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let all = flows.lock().expect("flows").clone();
        let parts: Vec<&str> = path.trim_start_matches("/fdr/").split('/').collect();
        let paged = |items: Vec<String>, per: usize| {
            let pages = items.len().div_ceil(per).max(1);
            let data: Vec<String> = items.into_iter().skip((page - 1) * per).take(per).collect();
            format!(
                "{{\"metadata\":{{\"pageSize\":{per},\"pageNumber\":{page},\"totPage\":{pages}}},\
                 \"count\":{},\"data\":[{}]}}",
                data.len(),
                data.join(",")
            )
        };
        let ours = parts.get(1) == Some(&ENTITY);
        match parts.as_slice() {
            ["organizations", _, "fdrs"] => {
                let items = all
                    .iter()
                    .filter(|_| ours)
                    .map(|(fdr, rev, published, _)| {
                        format!(
                            "{{\"fdr\":\"{fdr}\",\"pspId\":\"BCITITMM\",\"revision\":{rev},\
                             \"published\":\"{published}\",\"flowDate\":\"{published}\"}}"
                        )
                    })
                    .collect();
                (200, "application/json", paged(items, 1))
            }
            [
                "organizations",
                _,
                "fdrs",
                fdr,
                "revisions",
                rev,
                "psps",
                _,
                rest @ ..,
            ] => {
                let Some((_, _, published, rows)) = all
                    .iter()
                    .find(|(f, r, _, _)| f == fdr && r.to_string() == *rev)
                else {
                    return error(404, "FDR-0702");
                };
                if rest == ["payments"] {
                    let items = rows
                        .iter()
                        .enumerate()
                        .map(|(i, (iuv, iur, transfer, cents, status))| {
                            format!(
                                "{{\"index\":{},\"iuv\":\"{iuv}\",\"iur\":\"{iur}\",\
                                 \"idTransfer\":{transfer},\"pay\":{},\"payStatus\":\"{status}\",\
                                 \"payDate\":\"2026-11-26T10:00:00Z\"}}",
                                i + 1,
                                euros(*cents)
                            )
                        })
                        .collect();
                    return (200, "application/json", paged(items, 2));
                }
                let sum: i64 = rows.iter().map(|r| r.3).sum();
                let body = format!(
                    "{{\"status\":\"PUBLISHED\",\"revision\":{rev},\"published\":\"{published}\",\
                     \"fdr\":\"{fdr}\",\"fdrDate\":\"{published}\",\"regulation\":\"SCT-{fdr}\",\
                     \"regulationDate\":\"2026-11-27\",\"bicCodePouringBank\":\"BCITITMM\",\
                     \"sender\":{{\"type\":\"BIC_CODE\",\"id\":\"BCITITMM\",\"pspId\":\"BCITITMM\",\
                     \"pspName\":\"Banca di prova\"}},\"receiver\":{{\"id\":\"{ENTITY}\",\
                     \"organizationId\":\"{ENTITY}\",\"organizationName\":\"Castelverde\"}},\
                     \"totPayments\":{},\"sumPayments\":{}}}",
                    rows.len(),
                    euros(sum)
                );
                (200, "application/json", body)
            }
            _ => error(404, "FDR-0000"),
        }
    })
}

#[test]
fn flows_are_fetched_from_the_fdr_service_by_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let a = paid_position(&d, "/FDR-A", single(100_00, 5_00), "rcpt-fdr-a");
    let iuv = iuv_of(&a);
    let row = |transfer: u8, cents: i64, status: &'static str| {
        (
            iuv.clone(),
            "rcpt-fdr-a".to_owned(),
            transfer,
            cents,
            status,
        )
    };
    let flow_id = "2026-11-29BCITITMM-0300".to_owned();
    // The first revision reports the second transfer for the wrong amount, and two rows for
    // IUVs nobody issued (so the payments come on two pages).
    let first = vec![
        row(1, 95_00, "EXECUTED"),
        row(2, 4_00, "EXECUTED"),
        ("02000000000000099".into(), "x-1".into(), 1, 10_00, "NO_RPT"),
    ];
    let flows = std::sync::Arc::new(std::sync::Mutex::new(vec![(
        flow_id.clone(),
        1,
        "2026-11-29T10:00:00Z".to_owned(),
        first,
    )]));
    let (fdr, calls) = mock_fdr(std::sync::Arc::clone(&flows));
    let data = d.data_dir.clone();
    assert!(d.stop().success());
    let config = data.join("mpayd.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!(
            "{text}\n[node]\ninterface = \"fdr\"\nurl = \"http://{fdr}/fdr\"\n\
             subscription_key = \"sub-key-123\"\n"
        ),
    )
    .expect("config");
    let d = Daemon::run_config(&config, &data).ready();
    let reconcile = || reconcile_today(&config);
    let run = reconcile();
    assert_eq!(
        (&run["flows_listed"], &run["flows_new"]),
        (&json!(1), &json!(1)),
        "{run}"
    );
    assert_eq!(run["node_errors"], json!([]), "{run}");
    let (_, revisions) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/flows/{flow_id}"),
        Some(KEY),
        None,
    );
    let latest = &revisions["revisions"][0];
    assert_eq!(latest["source"], "node", "{revisions}");
    assert_eq!(
        latest["rows"].as_array().map(Vec::len),
        Some(3),
        "every page read: {revisions}"
    );
    let classes = &latest["classes"];
    assert_eq!(
        (&classes["amount-mismatch"], &classes["unknown-iuv"]),
        (&json!(1), &json!(1)),
        "{revisions}"
    );
    assert_eq!(
        instalment(&get(&d, "FDR-A"), &a)["reported"],
        json!([95_00, 4_00])
    );

    // Nothing new: nothing fetched again.
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reconcile()["flows_new"], 0);
    let after = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        after - before,
        3,
        "one list call per entity: {before} → {after}"
    );

    // The PSP publishes a second revision that corrects the row: it supersedes the first,
    // which stays.
    flows.lock().expect("flows")[0] = (
        flow_id.clone(),
        2,
        "2026-11-29T15:00:00Z".to_owned(),
        vec![row(1, 95_00, "EXECUTED"), row(2, 5_00, "EXECUTED")],
    );
    assert_eq!(reconcile()["flows_new"], 1);
    let (_, revisions) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/flows/{flow_id}"),
        Some(KEY),
        None,
    );
    assert_eq!(
        revisions["revisions"].as_array().map(Vec::len),
        Some(2),
        "{revisions}"
    );
    assert_eq!(get(&d, "FDR-A")["progress"], "Reported");
    assert_eq!(
        instalment(&get(&d, "FDR-A"), &a)["reported"],
        json!([95_00, 5_00])
    );

    // A wrong key: the service's code is reported, the run goes on.
    assert!(d.stop().success());
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("sub-key-123", "sub-key-000")).expect("config");
    let d = Daemon::run_config(&config, &data).ready();
    let run = reconcile();
    assert!(run["node_errors"].to_string().contains("FDR-0401"), "{run}");
    assert!(d.stop().success());
}

#[test]
fn a_daemon_killed_mid_run_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let mut flows = Vec::new();
    let mut paid = Vec::new();
    for n in 0..20 {
        let iupd = format!("KILL-{n:02}");
        let p = ok(&d, "PUT", &format!("/{iupd}"), single(100_00, 5_00));
        let nav = navs(&p, 0)[0].clone();
        let receipt = format!("rcpt-kill-{n:02}");
        pay_pagopa(&d, &receipt, &nav);
        let id = format!("2026-11-29BCITITMM-{:04}", 700 + n);
        let xml = reporting(&id, "2026-11-29T10:00:00", &nav, &receipt, [95_00, 5_00]);
        flows.push((id, "2026-11-29T10:00:00".to_owned(), xml));
        paid.push((iupd, nav));
    }
    // A slow node: the run is killed with the daemon halfway through the fetches.
    let (node, calls) = mock_node(flows, std::time::Duration::from_millis(150));
    let data = d.data_dir.clone();
    assert!(d.stop().success());
    let config = data.join("mpayd.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[node]\nurl = \"http://{node}/nodo\"\npassword = \"pwd-node-1\"\nsubscription_key = \"sub-key-123\"\n"
    ));
    std::fs::write(&config, text).expect("write config");
    let d = Daemon::run_config(&config, &data).ready();
    let today = mpay_common::calendar::rome_date(jiff::Timestamp::now()).to_string();
    let mut run = std::process::Command::new(mpay_tests::mpayd_bin())
        .args([
            "reconcile",
            "--config",
            config.to_str().expect("path"),
            "--date",
            &today,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mpayd reconcile");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while calls.load(std::sync::atomic::Ordering::SeqCst) < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    d.kill9();
    let _ = run.wait();
    let d = Daemon::run_config(&config, &data).ready();
    let (_, list) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/flows"),
        Some(KEY),
        None,
    );
    let before = list["flows"].as_array().map_or(0, Vec::len);
    assert!(before < 20, "killed before the end: {before} flows held");
    // Run again: the flows not held are fetched, those held are not fetched twice.
    let again = reconcile_today(&config);
    assert_eq!(
        again["flows_new"].as_u64(),
        Some(20 - before as u64),
        "{again}"
    );
    let (_, list) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/flows"),
        Some(KEY),
        None,
    );
    let mut ids: Vec<&str> = list["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter_map(|f| f["flow_id"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "{list}");
    assert_eq!(
        list["flows"].as_array().map(Vec::len),
        Some(20),
        "each once: {list}"
    );
    for (iupd, nav) in &paid {
        let p = get(&d, iupd);
        assert_eq!(
            instalment(&p, nav)["reported"],
            json!([95_00, 5_00]),
            "{iupd}: {p}"
        );
        let (_, ledger) = api(&d, "GET", &format!("/{iupd}/ledger"), None);
        let reported = ledger["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["change"].get("Reported").is_some())
            .count();
        assert_eq!(reported, 2, "one fact per transfer, not doubled: {ledger}");
    }
    assert!(d.stop().success());
}

#[test]
fn flows_are_fetched_from_the_node_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let a = paid_position(&d, "/NODE-A", single(100_00, 5_00), "rcpt-node-a");
    let good = reporting(
        "2026-11-29BCITITMM-0100",
        "2026-11-29T10:00:00",
        &a,
        "rcpt-node-a",
        [95_00, 5_00],
    );
    let flows = vec![
        (
            "2026-11-29BCITITMM-0100".to_owned(),
            "2026-11-29T10:00:00".to_owned(),
            good,
        ),
        (
            "2026-11-29BROKEN-0001".to_owned(),
            "2026-11-29T11:00:00".to_owned(),
            "not a flow".to_owned(),
        ),
    ];
    let (node, calls) = mock_node(flows, std::time::Duration::ZERO);
    // The daemon again, now configured to call the mock node.
    let data = d.data_dir.clone();
    assert!(d.stop().success());
    let config = data.join("mpayd.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[node]\nurl = \"http://{node}/nodo\"\npassword = \"pwd-node-1\"\nsubscription_key = \"sub-key-123\"\n"
    ));
    std::fs::write(&config, text).expect("write config");
    let d = Daemon::run_config(&config, &data).ready();

    let report = || reconcile_today(&config);
    let first = report();
    assert_eq!(
        (&first["flows_listed"], &first["flows_new"]),
        (&json!(2), &json!(1)),
        "{first}"
    );
    assert_eq!(
        first["node_errors"].as_array().map(Vec::len),
        Some(1),
        "the broken flow: {first}"
    );
    let pa = get(&d, "NODE-A");
    assert_eq!(pa["progress"], "Reported", "{pa}");
    let (_, list) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/flows"),
        Some(KEY),
        None,
    );
    let flows = list["flows"].as_array().expect("flows");
    assert!(
        flows
            .iter()
            .any(|f| f["flow_id"] == "2026-11-29BCITITMM-0100" && f["source"] == "node"),
        "{list}"
    );
    assert!(
        flows.iter().any(|f| !f["error"].is_null()),
        "the broken flow is kept with its error: {list}"
    );

    // Asked again, the node lists the same flows: nothing is fetched twice.
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    let second = report();
    assert_eq!(second["flows_new"], 0, "{second}");
    let after = calls.load(std::sync::atomic::Ordering::SeqCst);
    // One list call per entity, and no flow asked for again (the broken one is kept under the
    // id and time the node listed).
    assert_eq!(after - before, 3, "{before} → {after}");
    assert_eq!(get(&d, "NODE-A")["events"], pa["events"]);

    // A wrong password: the node's fault is reported, nothing breaks, the report is written.
    assert!(d.stop().success());
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("pwd-node-1", "pwd-wrong-2")).expect("write config");
    let d = Daemon::run_config(&config, &data).ready();
    let third = report();
    let errors = third["node_errors"].to_string();
    assert!(errors.contains("PPT_AUTENTICAZIONE"), "{third}");
    assert_eq!(third["entities"], 3);
    assert!(d.stop().success());
}

// ---------------------------------------------------------------------------------------------
// The station's own edges

#[test]
fn the_station_keeps_room_for_its_metadata_and_bounds_receipt_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    // Ten metadata entries on the notice and on its first transfer: the station still adds
    // the iupd and, for a payment through Poste, the postal account (ctMetadata holds 15).
    let ten: Vec<Value> = (0..10)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    let mut body = single(100_00, 5_00);
    body["options"][0]["instalments"][0]["metadata"] = json!(ten);
    body["options"][0]["instalments"][0]["transfers"][0]["metadata"] = json!(ten);
    let nav = navs(&ok(&d, "PUT", "/META-1", body), 0)[0].clone();
    let request = requests::get_payment(&caller(), true, ENTITY, &nav, Some("100.00"))
        .replace("</amount>", "</amount><transferType>PAGOPA</transferType>");
    let answer = d.soap("paGetPaymentV2", &request);
    mpay_tests::xsd::validate_body(&answer).expect("valid against the XSD");
    assert!(answer.contains("<key>IBANAPPOGGIO</key>"), "{answer}");
    assert!(answer.contains("<key>iupd</key>"), "{answer}");

    // A receiptId longer than the 35 characters a flow can report is refused, not stored.
    let long = "r".repeat(200);
    let rt = receipt_body(&long, &nav, 100_00, &[(1, 95_00), (2, 5_00)]);
    let answer = ask(&d, "paSendRTV2", &rt);
    assert!(fault(&answer).starts_with("PAA_SINTASSI"), "{answer:?}");
    assert_eq!(get(&d, "META-1")["paid_amount"], 0);

    // Receipts that paid nothing of ours are where operators look, not only in the log.
    pay_pagopa(&d, "rcpt-meta-1", &nav);
    // A notice number of the entity's that no position has.
    let orphan = mpay_common::ids::IuvSettings {
        aux: mpay_common::ids::AuxDigit::Three,
        segregation_code: Some(1),
        application_code: None,
    }
    .notice(99_999_999)
    .expect("nav")
    .to_string();
    let rt = receipt_body("rcpt-orphan", &orphan, 10_00, &[(1, 10_00)]);
    assert_eq!(ask(&d, "paSendRTV2", &rt).outcome, "OK");
    let ko = receipt_body("rcpt-ko", &nav, 100_00, &[(1, 95_00), (2, 5_00)])
        .replace("<outcome>OK</outcome>", "<outcome>KO</outcome>");
    assert_eq!(ask(&d, "paSendRTV2", &ko).outcome, "OK");
    let receipts = |query: &str| {
        let (status, list) = d.api_call(
            "GET",
            &format!("/api/v1/entities/{ENTITY}/receipts{query}"),
            Some(KEY),
            None,
        );
        assert_eq!(status, 200, "{list}");
        list["receipts"].as_array().cloned().expect("receipts")
    };
    let looked_at: Vec<(String, String)> = receipts("")
        .iter()
        .map(|r| {
            (
                r["receipt_id"].as_str().unwrap_or("").to_owned(),
                r["disposition"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        looked_at,
        [
            ("rcpt-orphan".to_owned(), "Orphan".to_owned()),
            ("rcpt-ko".to_owned(), "Ko".to_owned())
        ]
    );
    assert_eq!(receipts("?all=true").len(), 3);
}

#[test]
fn flows_and_statements_dropped_in_the_inbox_are_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let a = paid_position(&d, "/INBOX-A", single(100_00, 5_00), "rcpt-inbox-a");
    let flow_id = "2026-11-29BCITITMM-0200";
    let flow = reporting(
        flow_id,
        "2026-11-29T10:00:00",
        &a,
        "rcpt-inbox-a",
        [95_00, 5_00],
    );
    let statement = camt(&[(
        "100.00",
        "CRDT",
        &format!("/PUR/LGPE-RIVERSAMENTO/URI/{flow_id}"),
    )]);
    let inbox = d.data_dir.join("inbox").join(ENTITY);
    std::fs::create_dir_all(&inbox).expect("inbox");
    // Written aside and renamed, as the README asks.
    for (name, text) in [
        ("flusso.xml", &flow),
        ("estratto.XML", &statement),
        ("other.xml", &"<a/>".to_owned()),
    ] {
        let aside = inbox.join(format!(".{name}"));
        std::fs::write(&aside, text).expect("write");
        std::fs::rename(&aside, inbox.join(name)).expect("rename");
        // One at a time, so the statement finds its flow.
        let done = inbox.join("done").join(format!("{name}.result.json"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done.exists() {
            assert!(std::time::Instant::now() < deadline, "{name} was not taken");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(!inbox.join(name).exists(), "{name} left the inbox");
    }
    let result = |name: &str| -> Value {
        let text = std::fs::read_to_string(inbox.join("done").join(format!("{name}.result.json")))
            .expect("result");
        serde_json::from_str(&text).expect("json")
    };
    assert_eq!(result("flusso.xml")["flow"], flow_id);
    assert_eq!(result("estratto.XML")["new"], 1);
    assert!(
        result("other.xml")["error"]
            .as_str()
            .is_some_and(|e| e.contains("neither"))
    );
    let pa = get(&d, "INBOX-A");
    assert_eq!(pa["progress"], "Credited", "{pa}");

    // The treasurer's giornale di cassa, as CSV through the entity's column mapping: in the
    // inbox as NAME.cassa.csv, or uploaded. A bad row is set aside with its line and column; the
    // same file again loads nothing.
    let b = paid_position(&d, "/INBOX-B", single(40_00, 2_00), "rcpt-inbox-b");
    let flow_b = "2026-11-29BCITITMM-0201";
    let xml = reporting(
        flow_b,
        "2026-11-29T11:00:00",
        &b,
        "rcpt-inbox-b",
        [38_00, 2_00],
    );
    assert_eq!(upload_flow(&d, &xml).0, 201);
    let giornale = format!(
        "Data contabile;Importo;Segno;Causale;Riferimento\n\
         30/11/2026;40,00;A;/PUR/LGPE-RIVERSAMENTO/URI/{flow_b};SOP-77\n\
         30/11/2026;1.250,00;A;TRASFERIMENTO DALLA REGIONE;SOP-78\n\
         31/11/2026;3,00;D;SPESE;SOP-79\n"
    );
    let aside = inbox.join(".giornale.cassa.csv");
    std::fs::write(&aside, &giornale).expect("write");
    std::fs::rename(&aside, inbox.join("giornale.cassa.csv")).expect("rename");
    let done = inbox.join("done").join("giornale.cassa.csv.result.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the giornale was not taken"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let taken = result("giornale.cassa.csv");
    assert_eq!(taken["new"], 2, "{taken}");
    assert_eq!(taken["bad_entries"][0]["row"], 4, "{taken}");
    assert_eq!(
        taken["bad_entries"][0]["field"], "Data contabile",
        "{taken}"
    );
    assert_eq!(taken["classes"]["flow-credit"], 1, "{taken}");
    assert_eq!(taken["classes"]["not-pagopa"], 1, "{taken}");
    assert_eq!(get(&d, "INBOX-B")["progress"], "Credited");
    let (status, again) = mpay_tests::http_request(
        d.api.expect("the API listens"),
        "POST",
        &format!("/api/v1/entities/{ENTITY}/treasury"),
        &[
            ("Authorization", &format!("Bearer {KEY}")),
            ("Content-Type", "text/csv"),
        ],
        giornale.as_bytes(),
    )
    .expect("upload");
    let again: Value = serde_json::from_slice(&again).expect("json");
    assert_eq!(
        (status, &again["new"], &again["held"]),
        (200, &json!(0), &json!(2)),
        "{again}"
    );
}

//! The authorities' REST API as an authority uses it, against a real mpayd on demo data; and its
//! consistency with the station, checked by calling the station as pagoPA's node does.

use mpay_common::ids::{AuxDigit, IuvSettings};
use mpay_tests::xsd::validate_body;
use mpay_tests::{Daemon, http_request};
use mpayd::simulator::requests::{self, Answer, Caller, ReceiptSpec, ReceiptTransfer, read_answer};
use serde_json::{Value, json};

const ENTITY: &str = "00123456782";
const OTHER: &str = "00987654324";
const PROVINCE: &str = "80001234568";
const KEY: &str = "demo-castelverde-key";
const OTHER_KEY: &str = "demo-montalto-key";
const BANK: &str = "IT92R0306902117100000046111";

fn start(dir: &tempfile::TempDir) -> Daemon {
    Daemon::demo(&dir.path().join("demo"), 60).ready()
}

fn positions(rest: &str) -> String {
    format!("/api/v1/entities/{ENTITY}/positions{rest}")
}

/// A TARI position: 95 EUR to the municipality, 5 EUR to the province; NAV generated.
fn tari() -> Value {
    json!({
        "kind": "TARI",
        "debtor": {"code": "RSSMRA80A01H501U", "name": "Mario Rossi", "city": "Castelverde"},
        "description": "Tassa rifiuti 2026",
        "options": [{"kind": "Single", "instalments": [{
            "amount": "100.00",
            "due": "2030-12-31",
            "description": "TARI 2026 unica soluzione",
            "transfers": [
                {"amount": 9500, "remittance": "TARI", "category": "9/0101101IM/"},
                {"beneficiary": PROVINCE, "amount": "5.00", "remittance": "TEFA",
                 "category": "9/0101102IM/"}
            ]
        }]}]
    })
}

fn api(d: &Daemon, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    d.api_call(method, path, Some(KEY), body)
}

fn create(d: &Daemon, iupd: &str, body: &Value) -> Value {
    let (status, p) = api(d, "PUT", &positions(&format!("/{iupd}")), Some(body));
    assert_eq!(status, 201, "{p}");
    p
}

fn first_nav(p: &Value) -> String {
    p["options"][0]["instalments"][0]["nav"]
        .as_str()
        .expect("nav")
        .to_owned()
}

fn ledger_len(d: &Daemon, iupd: &str) -> usize {
    let (status, l) = api(d, "GET", &positions(&format!("/{iupd}/ledger")), None);
    assert_eq!(status, 200, "{l}");
    l["events"].as_array().expect("events").len()
}

fn get(d: &Daemon, iupd: &str) -> Value {
    let (status, p) = api(d, "GET", &positions(&format!("/{iupd}")), None);
    assert_eq!(status, 200, "{p}");
    p
}

/// Expects a refusal with this status naming this field (prefix), and nothing changed.
fn refused(
    d: &Daemon,
    iupd: &str,
    (method, path, body): (&str, String, Value),
    (status, code): (u16, &str),
    field: &str,
) {
    let before = (get(d, iupd), ledger_len(d, iupd));
    let (got, err) = api(d, method, &path, Some(&body));
    assert_eq!(got, status, "{method} {path}: {err}");
    let named = err["field"].as_str().unwrap_or("");
    assert!(
        named.starts_with(field),
        "{method} {path}: expected field {field}, got {err}"
    );
    assert!(!err["error"].as_str().unwrap_or("").is_empty(), "{err}");
    assert_eq!(err["code"], code, "{method} {path}: {err}");
    assert_eq!(
        (get(d, iupd), ledger_len(d, iupd)),
        before,
        "{path} changed something"
    );
}

#[test]
fn keys_reach_only_their_entity_and_bodies_are_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let path = positions("");

    let (status, err) = d.api_call("GET", &path, None, None);
    assert_eq!(status, 401, "{err}");
    assert_eq!(err["code"], "UNAUTHORIZED", "{err}");
    assert!(err["error"].as_str().expect("error").contains("missing"));
    assert!(err["field"].is_null());
    // An unknown key and another entity's get the same answer: a guesser learns nothing.
    let (status, unknown) = d.api_call("GET", &path, Some("not-a-key"), None);
    assert_eq!(status, 401, "{unknown}");
    let (status, err) = d.api_call("GET", &path, Some(OTHER_KEY), None);
    assert_eq!(status, 401, "{err}");
    assert_eq!(err, unknown);
    assert_eq!(err["code"], "UNAUTHORIZED", "{err}");
    assert_eq!(
        err["error"],
        format!("this key does not open entity {ENTITY}")
    );
    let log = d.log_text();
    assert!(log.contains("a key was refused"), "failed keys are logged");
    let (status, page) = d.api_call("GET", &path, Some(KEY), None);
    assert_eq!(status, 200, "{page}");

    // X-Api-Key works as well as a bearer token.
    let addr = d.api.expect("api");
    let (status, _) = http_request(addr, "GET", &path, &[("X-Api-Key", KEY)], b"").expect("answer");
    assert_eq!(status, 200);

    // Over the demo's 1 MiB limit.
    let big = vec![b' '; (1 << 20) + 10];
    let (status, body) = http_request(
        addr,
        "PUT",
        &positions("/BIG-1"),
        &[("Authorization", &format!("Bearer {KEY}"))],
        &big,
    )
    .expect("answer");
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("TOO_LARGE"));

    let (status, doc) = d.api_call("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
}

#[test]
fn a_load_is_idempotent_and_bad_input_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let p = create(&d, "TARI-2026-A", &tari());
    let nav = first_nav(&p);
    assert_eq!(p["status"], "Valid");
    assert_eq!(p["open_amount"], 10_000);
    let inst = &p["options"][0]["instalments"][0];
    assert_eq!(inst["transfers"][0]["target"]["Bank"], BANK);
    assert_eq!(inst["transfers"][1]["beneficiary"], PROVINCE);
    assert_eq!(inst["qr"], format!("PAGOPA|002|{nav}|{ENTITY}|10000"));

    // The same body again: same position, same NAV, no new event.
    let (status, again) = api(&d, "PUT", &positions("/TARI-2026-A"), Some(&tari()));
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, p);
    assert_eq!(ledger_len(&d, "TARI-2026-A"), 1);
    let (_, ledger) = api(&d, "GET", &positions("/TARI-2026-A/ledger"), None);
    assert_eq!(ledger["events"][0]["actor"], "api-key:tributi");
    assert_eq!(ledger["events"][0]["change_type"], "loaded");

    // A different body replaces it while nothing is paid, keeping the slot's NAV.
    let mut changed = tari();
    changed["description"] = json!("Tassa rifiuti 2026 (rettifica)");
    let (status, replaced) = api(&d, "PUT", &positions("/TARI-2026-A"), Some(&changed));
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(first_nav(&replaced), nav);
    assert_eq!(ledger_len(&d, "TARI-2026-A"), 2);

    let put = |body: Value| ("PUT", positions("/TARI-2026-A"), body);
    let mut sum = changed.clone();
    sum["options"][0]["instalments"][0]["amount"] = json!(10_001);
    refused(
        &d,
        "TARI-2026-A",
        put(sum),
        (400, "INVALID_FIELD"),
        "options[0].instalments[0].transfers",
    );

    let mut bad_iban = changed.clone();
    bad_iban["options"][0]["instalments"][0]["transfers"][0]["target"] =
        json!({"Bank": "IT00X0306902117100000046111"});
    refused(
        &d,
        "TARI-2026-A",
        put(bad_iban),
        (400, "INVALID_FIELD"),
        "options[0].instalments[0].transfers[0].target",
    );

    // A valid IBAN, but not one the entity registered.
    let mut not_ours = changed.clone();
    not_ours["options"][0]["instalments"][0]["transfers"][1]["target"] =
        json!({"Bank": "IT64E0200802626000101010101"});
    refused(
        &d,
        "TARI-2026-A",
        put(not_ours),
        (400, "INVALID_FIELD"),
        "options[0].instalments[0].transfers[1].target",
    );

    let montalto = IuvSettings {
        aux: AuxDigit::Three,
        segregation_code: Some(2),
        application_code: None,
    };
    let foreign = montalto.notice(9_000_001).expect("nav").to_string();
    let mut other_nav = changed.clone();
    other_nav["options"][0]["instalments"][0]["nav"] = json!(foreign);
    refused(
        &d,
        "TARI-2026-A",
        put(other_nav),
        (400, "INVALID_FIELD"),
        "options[0].instalments[0].nav",
    );

    let mut no_amount = changed.clone();
    no_amount["options"][0]["instalments"][0]["amount"] = json!("12,345.6.7");
    refused(
        &d,
        "TARI-2026-A",
        put(no_amount),
        (400, "INVALID_FIELD"),
        "options[0].instalments[0].amount",
    );

    // A NAV another position holds.
    let other = create(&d, "TARI-2026-B", &tari());
    let mut taken = changed.clone();
    taken["options"][0]["instalments"][0]["nav"] = json!(first_nav(&other));
    refused(&d, "TARI-2026-A", put(taken), (409, "NAV_TAKEN"), "");

    let reduction = |amount: i64| {
        (
            "POST",
            positions(&format!("/TARI-2026-A/instalments/{nav}/reduction")),
            json!({"new_amount": amount, "act": "Det. 12/2026", "reason": "ricalcolo"}),
        )
    };
    let not_less = (400, "NOT_A_REDUCTION");
    refused(&d, "TARI-2026-A", reduction(10_000), not_less, "new_amount");
    refused(&d, "TARI-2026-A", reduction(20_000), not_less, "new_amount");

    // Paid in full offline: no plan, no replacement, no cancellation any more.
    let (status, paid) = api(
        &d,
        "POST",
        &positions(&format!("/TARI-2026-A/instalments/{nav}/offline-payments")),
        Some(
            &json!({"channel": "Counter", "date": "2026-03-01", "amount": "100.00",
                     "reference": "Q-1"}),
        ),
    );
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["status"], "Paid");
    let plan = json!({"replaced": [nav], "reason": "rateizzazione", "instalments": [
        {"amount": 10_000, "due": "2031-01-31", "description": "Rata 1",
         "transfers": [{"amount": 10_000, "remittance": "TARI", "category": "9/0101101IM/"}]}
    ]});
    refused(
        &d,
        "TARI-2026-A",
        ("POST", positions("/TARI-2026-A/reschedule"), plan),
        (409, "NOTICE_PAID"),
        "replaced",
    );
    refused(&d, "TARI-2026-A", put(tari()), (409, "HAS_PAYMENTS"), "");
    refused(
        &d,
        "TARI-2026-A",
        (
            "POST",
            positions("/TARI-2026-A/cancel"),
            json!({"reason": "errore"}),
        ),
        (409, "POSITION_PAID"),
        "",
    );

    let (status, err) = api(&d, "GET", &positions("/NOPE"), None);
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["code"], "NOT_FOUND", "{err}");

    // The list pages through the entity's positions only.
    let (status, page) = api(&d, "GET", &positions("?kind=TARI&limit=1"), None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["positions"].as_array().map(Vec::len), Some(1));
    let mut seen = Vec::new();
    let mut after = None::<u64>;
    loop {
        let q = match after {
            Some(a) => format!("?debtor=RSSMRA80A01H501U&limit=1&after={a}"),
            None => "?debtor=RSSMRA80A01H501U&limit=1".to_string(),
        };
        let (status, page) = api(&d, "GET", &positions(&q), None);
        assert_eq!(status, 200, "{page}");
        for p in page["positions"].as_array().expect("positions") {
            seen.push(p["iupd"].as_str().expect("iupd").to_owned());
        }
        match page["next"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ["TARI-2026-A", "TARI-2026-B"]);
    // Through the debtor index: one page, with no empty pages before the first match.
    let (status, page) = api(&d, "GET", &positions("?debtor=RSSMRA80A01H501U"), None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["positions"].as_array().map(Vec::len),
        Some(2),
        "{page}"
    );
    assert!(page["next"].is_null(), "{page}");
    let (_, page) = api(&d, "GET", &positions("?debtor=VRDLGU70A01F205R"), None);
    assert_eq!(
        page["positions"].as_array().map(Vec::len),
        Some(0),
        "{page}"
    );
    assert!(page["next"].is_null(), "{page}");
    let (status, err) = api(&d, "GET", &positions("?status=Whatever"), None);
    assert_eq!((status, err["field"].as_str()), (400, Some("status")));

    // By due date and status: every position listed has an instalment in the range.
    let iupds = |query: &str| -> Vec<String> {
        let (status, page) = api(&d, "GET", &positions(query), None);
        assert_eq!(status, 200, "{page}");
        let listed = page["positions"].as_array().expect("positions").clone();
        for p in &listed {
            let (_, whole) = api(
                &d,
                "GET",
                &positions(&format!("/{}", p["iupd"].as_str().expect("iupd"))),
                None,
            );
            let dues: Vec<&str> = whole["options"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|o| o["instalments"].as_array().into_iter().flatten())
                .filter_map(|i| i["due"].as_str())
                .collect();
            assert!(
                dues.iter()
                    .any(|d| ("2030-12-01"..="2030-12-31").contains(d))
                    || !query.contains("due"),
                "{query}: {dues:?}"
            );
        }
        listed
            .iter()
            .map(|p| p["iupd"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let in_december = iupds("?due_from=2030-12-01&due_to=2030-12-31&limit=1000");
    assert!(
        in_december.contains(&"TARI-2026-B".to_string()),
        "{in_december:?}"
    );
    assert!(!iupds("?due_from=2031-01-01&limit=1000").contains(&"TARI-2026-B".to_string()));
    assert!(iupds("?status=Paid&limit=1000").contains(&"TARI-2026-A".to_string()));
    assert!(!iupds("?status=Valid&limit=1000").contains(&"TARI-2026-A".to_string()));
    let (status, err) = api(&d, "GET", &positions("?due_to=31/12/2030"), None);
    assert_eq!((status, err["field"].as_str()), (400, Some("due_to")));
}

#[test]
fn an_authority_may_number_its_own_notices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let castelverde = IuvSettings {
        aux: AuxDigit::Three,
        segregation_code: Some(1),
        application_code: None,
    };
    // Even a number high in the sequence is the authority's own, kept as given.
    let own = castelverde.notice(9_999_999_999_500).expect("nav");
    let mut body = tari();
    body["options"][0]["instalments"][0]["nav"] = json!(own.to_string());
    let p = create(&d, "OWN-1", &body);
    assert_eq!(first_nav(&p), own.to_string());
    assert_eq!(verify(&d, own.as_ref()).outcome, "OK");
    // By IUV alone, and with a NAV whose IUV is not the one given.
    let by_iuv = castelverde.notice(4_242).expect("nav");
    let mut body = tari();
    body["options"][0]["instalments"][0]["iuv"] = json!(by_iuv.iuv().to_string());
    assert_eq!(first_nav(&create(&d, "OWN-2", &body)), by_iuv.to_string());
    let mut body = tari();
    body["options"][0]["instalments"][0]["nav"] =
        json!(castelverde.notice(4_243).expect("nav").to_string());
    body["options"][0]["instalments"][0]["iuv"] = json!(by_iuv.iuv().to_string());
    let (status, err) = api(&d, "PUT", &positions("/OWN-3"), Some(&body));
    assert_eq!(
        (status, err["field"].as_str()),
        (400, Some("options[0].instalments[0].iuv")),
        "{err}"
    );

    // The authority takes the next numbers of the sequence itself: generated ones skip them.
    let s = sequence_of(&first_nav(&create(&d, "GEN-1", &tari())));
    for (k, iupd) in [(1, "OWN-4"), (2, "OWN-5")] {
        let mut body = tari();
        body["options"][0]["instalments"][0]["nav"] =
            json!(castelverde.notice(s + k).expect("nav").to_string());
        create(&d, iupd, &body);
    }
    let next = create(&d, "GEN-2", &tari());
    assert_eq!(sequence_of(&first_nav(&next)), s + 3);
}

#[test]
fn the_same_new_position_sent_at_once_is_loaded_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    for round in 0..5 {
        let iupd = format!("RACE-{round}");
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let calls: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| api(&d, "PUT", &positions(&format!("/{iupd}")), Some(&tari())).0)
                })
                .collect();
            calls.into_iter().map(|c| c.join().expect("call")).collect()
        });
        assert_eq!(
            statuses.iter().filter(|s| **s == 201).count(),
            1,
            "{statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 201 || *s == 200),
            "{statuses:?}"
        );
        assert_eq!(ledger_len(&d, &iupd), 1);
    }
}

fn caller() -> Caller {
    Caller {
        id_pa: ENTITY.into(),
        broker: "01111111116".into(),
        station: "01111111116_01".into(),
    }
}

fn ask(d: &Daemon, action: &str, body: &str) -> Answer {
    let response = d.soap(action, body);
    if let Err(e) = validate_body(&response) {
        panic!("{action}: response not valid against the XSD: {e}\n{response}");
    }
    read_answer(&response).unwrap_or_else(|| panic!("unreadable answer: {response}"))
}

fn verify(d: &Daemon, nav: &str) -> Answer {
    ask(
        d,
        "paVerifyPaymentNotice",
        &requests::verify(&caller(), ENTITY, nav),
    )
}

fn fault(a: &Answer) -> &str {
    a.fault_code.as_deref().unwrap_or("none")
}

/// What paGetPaymentV2 answers for a notice: its fault, or "none".
fn get_payment_fault(d: &Daemon, nav: &str) -> String {
    let got = ask(
        d,
        "paGetPaymentV2",
        &requests::get_payment(&caller(), true, ENTITY, nav, None),
    );
    fault(&got).to_owned()
}

/// A pagoPA receipt of `amount` for `nav`, as the node sends it.
fn receipt(d: &Daemon, id: &str, nav: &str, iuv: &str, amount: &str) -> Answer {
    let spec = ReceiptSpec {
        receipt_id: id.into(),
        nav: nav.into(),
        notice_entity: ENTITY.into(),
        iuv: iuv.into(),
        amount: amount.into(),
        transfers: vec![ReceiptTransfer {
            id: "1".into(),
            amount: amount.into(),
            fiscal_code_pa: ENTITY.into(),
            iban: Some(BANK.into()),
            remittance: "TARI".into(),
            category: "9/0101101IM/".into(),
        }],
        psp: "BCITITMM".into(),
        stand_in: false,
    };
    ask(d, "paSendRTV2", &requests::send_rt(&caller(), true, &spec))
}

#[test]
fn variations_agree_with_the_station() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);

    // Reduction: the node sees the new amount, split over the transfers.
    let p = create(&d, "RED-1", &tari());
    let nav = first_nav(&p);
    let v = verify(&d, &nav);
    assert_eq!(
        (v.outcome.as_str(), v.amount.as_deref()),
        ("OK", Some("100.00"))
    );
    let (status, reduced) = api(
        &d,
        "POST",
        &positions(&format!("/RED-1/instalments/{nav}/reduction")),
        Some(&json!({"new_amount": "80.00", "act": "Det. 7/2026", "reason": "sgravio"})),
    );
    assert_eq!(status, 200, "{reduced}");
    let inst = &reduced["options"][0]["instalments"][0];
    assert_eq!(inst["amount"], 8_000);
    assert_eq!(inst["original_amount"], 10_000);
    // Each beneficiary keeps its share: 95 % and 5 % of 80.00.
    assert_eq!(inst["transfers"][0]["amount"], 7_600);
    assert_eq!(inst["transfers"][1]["amount"], 400);
    let v = verify(&d, &nav);
    assert_eq!(
        (v.outcome.as_str(), v.amount.as_deref()),
        ("OK", Some("80.00"))
    );
    let got = ask(
        &d,
        "paGetPaymentV2",
        &requests::get_payment(&caller(), true, ENTITY, &nav, Some("80.00")),
    );
    assert_eq!(got.amount.as_deref(), Some("80.00"));
    let split: Vec<&str> = got.transfers.iter().map(|t| t.amount.as_str()).collect();
    assert_eq!(split, ["76.00", "4.00"]);
    // The same body again changes nothing; a changed one would undo the reduction: refused.
    let (status, same) = api(&d, "PUT", &positions("/RED-1"), Some(&tari()));
    assert_eq!(status, 200, "{same}");
    let mut changed = tari();
    changed["description"] = json!("Tassa rifiuti 2026 (rettifica)");
    let (status, err) = api(&d, "PUT", &positions("/RED-1"), Some(&changed));
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("HAS_VARIATIONS")),
        "{err}"
    );
    let v = verify(&d, &nav);
    assert_eq!(v.amount.as_deref(), Some("80.00"));

    // Cancel, then restore: the same NAV is payable again.
    let cancel = json!({"reason": "emesso per errore"});
    let (status, c) = api(&d, "POST", &positions("/RED-1/cancel"), Some(&cancel));
    assert_eq!(
        (status, c["status"].as_str()),
        (200, Some("Cancelled")),
        "{c}"
    );
    assert_eq!(fault(&verify(&d, &nav)), "PAA_PAGAMENTO_ANNULLATO");
    assert_eq!(get_payment_fault(&d, &nav), "PAA_PAGAMENTO_ANNULLATO");
    let (status, err) = api(&d, "POST", &positions("/RED-1/restore"), Some(&json!({})));
    assert_eq!(
        (status, err["field"].as_str()),
        (400, Some("reason")),
        "{err}"
    );
    let (status, r) = api(&d, "POST", &positions("/RED-1/restore"), Some(&cancel));
    assert_eq!((status, r["status"].as_str()), (200, Some("Valid")), "{r}");
    assert_eq!(verify(&d, &nav).outcome, "OK");
    let (_, ledger) = api(&d, "GET", &positions("/RED-1/ledger"), None);
    let kinds: Vec<&str> = ledger["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["change_type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["loaded", "reduced", "cancelled", "restored"]);
    assert_eq!(ledger["events"][2]["reason"], "emesso per errore");

    // Partial then full offline payment: payable for the rest, then a duplicate for the node.
    let pay = |amount: &str, reference: &str| {
        api(
            &d,
            "POST",
            &positions(&format!("/RED-1/instalments/{nav}/offline-payments")),
            Some(&json!({"channel": "BankTransfer", "date": "2026-02-10",
                         "amount": amount, "reference": reference})),
        )
    };
    let (status, part) = pay("30.00", "CRO-1");
    assert_eq!(
        (status, part["status"].as_str()),
        (200, Some("PartiallyPaid")),
        "{part}"
    );
    assert_eq!(verify(&d, &nav).amount.as_deref(), Some("50.00"));
    // The same transfer posted again is the same payment.
    let (status, again) = pay("30.00", "CRO-1");
    assert_eq!(
        (status, &again["paid_amount"]),
        (200, &json!(3_000)),
        "{again}"
    );
    let (status, full) = pay("50.00", "CRO-3");
    assert_eq!(
        (status, full["status"].as_str()),
        (200, Some("Paid")),
        "{full}"
    );
    assert_eq!(fault(&verify(&d, &nav)), "PAA_PAGAMENTO_DUPLICATO");
    assert_eq!(get_payment_fault(&d, &nav), "PAA_PAGAMENTO_DUPLICATO");

    // A pagoPA receipt for it anyway: accepted, and flagged as a double payment.
    let iuv = full["options"][0]["instalments"][0]["iuv"]
        .as_str()
        .expect("iuv")
        .to_owned();
    let rt = receipt(&d, "0a1b2c3d4e5f60718293a4b5c6d7e8f9", &nav, &iuv, "80.00");
    assert_eq!(rt.outcome, "OK", "{rt:?}");
    let after = get(&d, "RED-1");
    let doubles = after["double_payments"]
        .as_array()
        .expect("double_payments");
    assert_eq!(doubles.len(), 1, "{after}");
    assert_eq!(doubles[0]["nav"], nav.as_str());
    assert_eq!(doubles[0]["found"], "AlreadyPaid");
    assert_eq!(after["refunds_due"], 8_000, "{after}");

    // Rescheduling: the old notice is withdrawn, the plan's new notices are payable.
    let p = create(&d, "PLAN-1", &tari());
    let old = first_nav(&p);
    let plan = json!({"replaced": [old], "reason": "piano concordato", "instalments": [
        {"amount": 5_000, "due": "2030-06-30", "description": "Rata 1 di 2",
         "transfers": [{"amount": 5_000, "remittance": "TARI rata 1", "category": "9/0101101IM/"}]},
        {"amount": "50.00", "due": "2030-12-31", "description": "Rata 2 di 2",
         "transfers": [{"amount": 5_000, "remittance": "TARI rata 2", "category": "9/0101101IM/"}]}
    ]});
    let (status, planned) = api(&d, "POST", &positions("/PLAN-1/reschedule"), Some(&plan));
    assert_eq!(status, 200, "{planned}");
    // The plan takes the replaced notice's place in its option.
    let new: Vec<String> = planned["options"][0]["instalments"]
        .as_array()
        .expect("plan")
        .iter()
        .skip(1)
        .map(|i| i["nav"].as_str().expect("nav").to_owned())
        .collect();
    assert_eq!(new.len(), 2);
    assert_eq!(
        planned["options"][0]["instalments"][0]["status"],
        "Cancelled"
    );
    assert_eq!(fault(&verify(&d, &old)), "PAA_PAGAMENTO_ANNULLATO");
    assert_eq!(get_payment_fault(&d, &old), "PAA_PAGAMENTO_ANNULLATO");
    // A receipt for the replaced notice all the same: accepted, flagged as a double payment.
    let old_iuv = p["options"][0]["instalments"][0]["iuv"]
        .as_str()
        .expect("iuv")
        .to_owned();
    let rt = receipt(
        &d,
        "1a1b2c3d4e5f60718293a4b5c6d7e8f9",
        &old,
        &old_iuv,
        "100.00",
    );
    assert_eq!(rt.outcome, "OK", "{rt:?}");
    let after = get(&d, "PLAN-1");
    assert_eq!(after["double_payments"][0]["nav"], old.as_str(), "{after}");
    for n in &new {
        let v = verify(&d, n);
        assert_eq!(
            (v.outcome.as_str(), v.amount.as_deref()),
            ("OK", Some("50.00")),
            "{n}"
        );
    }

    // Reduced to zero: the notice is withdrawn, and the node is told it is cancelled.
    let z = create(&d, "ZERO-1", &tari());
    let zero = first_nav(&z);
    let (status, reduced) = api(
        &d,
        "POST",
        &positions(&format!("/ZERO-1/instalments/{zero}/reduction")),
        Some(&json!({"new_amount": "0.00", "act": "Det. 9/2026", "reason": "sgravio totale"})),
    );
    assert_eq!(
        (status, reduced["status"].as_str()),
        (200, Some("Cancelled")),
        "{reduced}"
    );
    assert_eq!(fault(&verify(&d, &zero)), "PAA_PAGAMENTO_ANNULLATO");
    assert_eq!(get_payment_fault(&d, &zero), "PAA_PAGAMENTO_ANNULLATO");

    // Debtor data.
    let debtor = json!({"code": "RSSMRA80A01H501U", "name": "Mario Rossi",
                        "street": "Via Roma 1", "city": "Castelverde"});
    let (status, updated) = api(&d, "PUT", &positions("/PLAN-1/debtor"), Some(&debtor));
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["debtor"]["street"], "Via Roma 1");
    let events = ledger_len(&d, "PLAN-1");
    let (status, _) = api(&d, "PUT", &positions("/PLAN-1/debtor"), Some(&debtor));
    assert_eq!(status, 200);
    assert_eq!(
        ledger_len(&d, "PLAN-1"),
        events,
        "the same debtor is not a change"
    );

    // Another entity's position is out of reach of this key even by iupd.
    let (status, _) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{OTHER}/positions/PLAN-1"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 401);
}

/// The IUV sequence number inside one of the demo's NAVs (aux digit 3, segregation code: the
/// 13 digits after it).
fn sequence_of(nav: &str) -> u64 {
    nav[3..16].parse().expect("sequence")
}

#[test]
fn a_refused_body_does_not_take_notice_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let first = create(&d, "SEQ-1", &tari());
    // Refused: the transfers do not add up, and the plan replaces a notice the position lacks.
    let mut bad = tari();
    bad["options"][0]["instalments"][0]["transfers"][0]["amount"] = json!(9000);
    let (status, err) = api(&d, "PUT", &positions("/SEQ-BAD"), Some(&bad));
    assert_eq!(status, 400, "{err}");
    let plan = json!({
        "replaced": ["301999999999999900"],
        "instalments": [{"amount": "100.00", "due": "2031-01-31", "description": "Rata unica",
            "transfers": [{"amount": 10000, "remittance": "TARI", "category": "9/0101101IM/"}]}],
        "reason": "rateizzazione"
    });
    let (status, err) = api(&d, "POST", &positions("/SEQ-1/reschedule"), Some(&plan));
    assert!(status == 400 || status == 409, "{status} {err}");
    // The next position gets the very next number: nothing was used up by the refusals.
    let second = create(&d, "SEQ-2", &tari());
    assert_eq!(
        sequence_of(&first_nav(&second)),
        sequence_of(&first_nav(&first)) + 1,
        "{} then {}",
        first_nav(&first),
        first_nav(&second)
    );
}

#[test]
fn a_body_that_is_not_json_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let (status, body) = mpay_tests::http_request(
        d.api.expect("api"),
        "PUT",
        &positions("/NOT-JSON"),
        &[
            ("Authorization", &format!("Bearer {KEY}")),
            ("Content-Type", "application/json"),
        ],
        b"{not json",
    )
    .expect("request");
    let err: Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["code"], "BAD_REQUEST", "{err}");
    assert!(err["field"].is_null(), "{err}");
    let text = err["error"].as_str().expect("error");
    assert!(
        text.starts_with("the body is not JSON") && text.contains("line 1"),
        "{err}"
    );
}

#[test]
fn free_text_and_dates_follow_one_rule_and_name_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let p = create(&d, "TXT-1", &tari());
    let nav = first_nav(&p);
    let put = |edit: &dyn Fn(&mut Value)| {
        let mut body = tari();
        edit(&mut body);
        ("PUT", positions("/TXT-1"), body)
    };
    let bad = (400, "INVALID_FIELD");
    let long = "x".repeat(10_000);
    refused(
        &d,
        "TXT-1",
        put(&|b| b["debtor"]["street"] = json!(long)),
        bad,
        "debtor.street",
    );
    refused(
        &d,
        "TXT-1",
        put(&|b| b["description"] = json!("TARI\u{0}2026")),
        bad,
        "description",
    );
    refused(
        &d,
        "TXT-1",
        put(&|b| b["debtor"]["name"] = json!("Mario\nRossi")),
        bad,
        "debtor.name",
    );
    refused(
        &d,
        "TXT-1",
        put(&|b| b["debtor"]["email"] = json!("mario@example.it\r\nBcc: x@y.z")),
        bad,
        "debtor.email",
    );
    refused(
        &d,
        "TXT-1",
        put(&|b| b["debtor"]["province"] = json!("ZZZZZZ")),
        bad,
        "debtor.province",
    );
    refused(
        &d,
        "TXT-1",
        put(&|b| b["debtor"]["country"] = json!("Italia")),
        bad,
        "debtor.country",
    );
    // A typo in the debtor is refused, as anywhere else in the body.
    refused(
        &d,
        "TXT-1",
        put(&|b| b["debtor"]["citta"] = json!("Ancona")),
        bad,
        "debtor",
    );
    // A foreign province is free text.
    let mut abroad = tari();
    abroad["debtor"]["country"] = json!("DE");
    abroad["debtor"]["province"] = json!("Bayern");
    let (status, body) = api(&d, "PUT", &positions("/TXT-1"), Some(&abroad));
    assert_eq!(status, 200, "{body}");

    let pay = |date: &str, reason: &str| {
        (
            "POST",
            positions(&format!("/TXT-1/instalments/{nav}/offline-payments")),
            json!({"channel": "Counter", "date": date, "amount": "100.00",
                   "reference": "Q-9", "reason": reason}),
        )
    };
    refused(
        &d,
        "TXT-1",
        pay("2099-01-01", "allo sportello"),
        bad,
        "date",
    );
    refused(
        &d,
        "TXT-1",
        pay("1900-01-01", "allo sportello"),
        bad,
        "date",
    );
    refused(&d, "TXT-1", pay("2026-03-01", &long), bad, "reason");
}

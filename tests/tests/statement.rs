//! The citizen statement (estratto conto) against a real mpayd on demo data: a debtor with
//! positions in two entities, every kind of variation and payment (a pagoPA receipt sent to the
//! station as the node does), the totals after each, and who may read what.

use mpay_tests::Daemon;
use mpay_tests::xsd::validate_body;
use mpayd::simulator::requests::{self, Caller, ReceiptSpec, ReceiptTransfer, read_answer};
use serde_json::{Value, json};

const CASTELVERDE: &str = "00123456782";
const MONTALTO: &str = "00987654324";
const CASTELVERDE_KEY: &str = "demo-castelverde-key";
const MONTALTO_KEY: &str = "demo-montalto-key";
const PORTAL_KEY: &str = "demo-portal-key";
const DEBTOR: &str = "RSSMRA80A01H501U";

fn start(dir: &tempfile::TempDir) -> Daemon {
    Daemon::demo(&dir.path().join("demo"), 40).ready()
}

fn position_path(entity: &str, rest: &str) -> String {
    format!("/api/v1/entities/{entity}/positions{rest}")
}

fn entity_statement(entity: &str, debtor: &str) -> String {
    format!("/api/v1/entities/{entity}/statements/{debtor}")
}

fn statement_path(debtor: &str) -> String {
    format!("/api/v1/statements/{debtor}")
}

fn call(d: &Daemon, key: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let (status, v) = d.api_call(method, path, Some(key), body);
    assert_eq!(status / 100, 2, "{method} {path}: {status} {v}");
    v
}

fn read(d: &Daemon, key: &str, path: &str) -> Value {
    call(d, key, "GET", path, None)
}

/// A position of one notice of `cents` with one transfer to the entity.
fn single(description: &str, cents: i64) -> Value {
    json!({
        "kind": "TARI",
        "debtor": {"code": DEBTOR, "name": "Mario Rossi"},
        "description": description,
        "options": [{"kind": "Single", "instalments": [{
            "amount": cents,
            "due": "2030-12-31",
            "description": format!("{description}, unica soluzione"),
            "transfers": [{"amount": cents, "remittance": "TARI", "category": "9/0101101IM/"}]
        }]}]
    })
}

fn notice(p: &Value, option: usize, i: usize, field: &str) -> String {
    p["options"][option]["instalments"][i][field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {p}"))
        .to_owned()
}

fn by_iupd<'a>(s: &'a Value, iupd: &str) -> &'a Value {
    s["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .find(|p| p["iupd"] == iupd)
        .unwrap_or_else(|| panic!("{iupd} not in the statement: {s}"))
}

fn iupds(s: &Value) -> Vec<String> {
    s["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|p| p["iupd"].as_str().expect("iupd").to_owned())
        .collect()
}

/// (open, paid via pagoPA, paid offline, refunds due) in cents, checking the texts agree.
fn totals(s: &Value) -> (i64, i64, i64, i64) {
    let t = &s["totals"];
    let cents = |k: &str| {
        let c = t[k]["cents"]
            .as_i64()
            .unwrap_or_else(|| panic!("{k} in {t}"));
        assert_eq!(
            t[k]["text"].as_str(),
            Some(format!("{}.{:02}", c / 100, c % 100).as_str()),
            "{k}"
        );
        c
    };
    (
        cents("open_amount"),
        cents("paid_pagopa"),
        cents("paid_offline"),
        cents("refunds_due"),
    )
}

fn is_timestamp(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok())
}

#[test]
fn a_citizen_statement_across_two_entities() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);

    // Two positions in Castelverde, one in Montalto, for the same person.
    let a = call(
        &d,
        CASTELVERDE_KEY,
        "PUT",
        &position_path(CASTELVERDE, "/ST-A"),
        Some(&single("Tassa rifiuti 2026", 10_000)),
    );
    let b = call(
        &d,
        CASTELVERDE_KEY,
        "PUT",
        &position_path(CASTELVERDE, "/ST-B"),
        Some(&single("Mensa scolastica", 8_000)),
    );
    let c = call(
        &d,
        MONTALTO_KEY,
        "PUT",
        &position_path(MONTALTO, "/ST-C"),
        Some(&single("Tassa rifiuti 2026", 6_000)),
    );
    let (nav_a, nav_b, nav_c) = (
        notice(&a, 0, 0, "nav"),
        notice(&b, 0, 0, "nav"),
        notice(&c, 0, 0, "nav"),
    );

    // The entity's key sees only its entity.
    let own = read(&d, CASTELVERDE_KEY, &entity_statement(CASTELVERDE, DEBTOR));
    assert_eq!(own["debtor"], DEBTOR);
    assert_eq!(own["entity"]["fiscal_code"], CASTELVERDE);
    assert_eq!(own["entity"]["name"], "Comune di Castelverde");
    assert_eq!(
        iupds(&own),
        ["ST-B", "ST-A"],
        "newest first, own entity only"
    );
    assert_eq!(totals(&own), (18_000, 0, 0, 0));
    assert_eq!(own["totals"]["positions"], 2);
    let montalto = read(&d, MONTALTO_KEY, &entity_statement(MONTALTO, DEBTOR));
    assert_eq!(iupds(&montalto), ["ST-C"]);
    assert_eq!(
        montalto["positions"][0]["entity"]["name"],
        "Comune di Montalto Marche"
    );

    // The portal key sees both entities, and may also ask for one.
    let all = read(&d, PORTAL_KEY, &statement_path(DEBTOR));
    assert!(all["entity"].is_null(), "{all}");
    assert_eq!(iupds(&all), ["ST-C", "ST-B", "ST-A"]);
    assert_eq!(totals(&all), (24_000, 0, 0, 0));
    assert_eq!(all["truncated"], false);
    let scoped = read(&d, PORTAL_KEY, &entity_statement(MONTALTO, DEBTOR));
    assert_eq!(iupds(&scoped), ["ST-C"]);

    // An open notice: amount, due date, QR text.
    let pa = by_iupd(&all, "ST-A");
    assert_eq!(pa["status"], "Valid");
    assert_eq!(pa["kind"], "TARI");
    assert_eq!(pa["description"], "Tassa rifiuti 2026");
    let n = &pa["notices"][0];
    assert_eq!(n["nav"], nav_a.as_str());
    assert_eq!(n["iuv"], notice(&a, 0, 0, "iuv").as_str());
    assert_eq!(n["amount"]["text"], "100.00");
    assert_eq!(n["due_amount"]["cents"], 10_000);
    assert_eq!(n["due"], "2030-12-31");
    assert_eq!(n["status"], "Unpaid");
    assert_eq!(n["qr"], format!("PAGOPA|002|{nav_a}|{CASTELVERDE}|10000"));

    // Offline payment of part of ST-A.
    call(
        &d,
        CASTELVERDE_KEY,
        "POST",
        &position_path(
            CASTELVERDE,
            &format!("/ST-A/instalments/{nav_a}/offline-payments"),
        ),
        Some(
            &json!({"channel": "Counter", "date": "2026-01-15", "amount": "30.00",
                     "reference": "RIC-2026-1", "reason": "pagato allo sportello"}),
        ),
    );
    let all = read(&d, PORTAL_KEY, &statement_path(DEBTOR));
    assert_eq!(totals(&all), (21_000, 0, 3_000, 0));
    let pa = by_iupd(&all, "ST-A");
    assert_eq!(pa["status"], "PartiallyPaid");
    let pay = &pa["payments"][0];
    assert_eq!(pay["via"], "offline");
    assert_eq!(pay["nav"], nav_a.as_str());
    assert_eq!(pay["channel"], "Counter");
    assert_eq!(pay["date"], "2026-01-15");
    assert_eq!(pay["amount"]["cents"], 3_000);
    assert_eq!(pay["reference"], "RIC-2026-1");
    assert_eq!(pay["reason"], "pagato allo sportello");
    assert!(is_timestamp(&pay["recorded_at"]), "{pay}");
    assert_eq!(pa["notices"][0]["due_amount"]["text"], "70.00");
    assert_eq!(
        pa["notices"][0]["qr"],
        format!("PAGOPA|002|{nav_a}|{CASTELVERDE}|7000")
    );

    // Cancelled and restored: nothing owed meanwhile, both listed with their reasons.
    call(
        &d,
        CASTELVERDE_KEY,
        "POST",
        &position_path(CASTELVERDE, "/ST-B/cancel"),
        Some(&json!({"reason": "iscrizione ritirata"})),
    );
    let all = read(&d, PORTAL_KEY, &statement_path(DEBTOR));
    assert_eq!(totals(&all).0, 13_000);
    let pb = by_iupd(&all, "ST-B");
    assert_eq!(pb["status"], "Cancelled");
    assert!(pb["notices"][0]["qr"].is_null(), "{pb}");
    call(
        &d,
        CASTELVERDE_KEY,
        "POST",
        &position_path(CASTELVERDE, "/ST-B/restore"),
        Some(&json!({"reason": "ritiro annullato"})),
    );

    // Reduction of ST-B: 80.00 → 50.00.
    call(
        &d,
        CASTELVERDE_KEY,
        "POST",
        &position_path(CASTELVERDE, &format!("/ST-B/instalments/{nav_b}/reduction")),
        Some(&json!({"new_amount": "50.00", "act": "Det. 12/2026", "reason": "ISEE aggiornato"})),
    );
    let all = read(&d, PORTAL_KEY, &statement_path(DEBTOR));
    assert_eq!(totals(&all), (18_000, 0, 3_000, 0));
    let pb = by_iupd(&all, "ST-B");
    let v = pb["variations"].as_array().expect("variations");
    let types: Vec<&str> = v
        .iter()
        .map(|x| x["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["cancelled", "restored", "reduced"], "{pb}");
    assert_eq!(v[0]["reason"], "iscrizione ritirata");
    assert_eq!(v[1]["reason"], "ritiro annullato");
    assert_eq!(v[2]["nav"], nav_b.as_str());
    assert_eq!(v[2]["old_amount"]["cents"], 8_000);
    assert_eq!(v[2]["new_amount"]["text"], "50.00");
    assert_eq!(v[2]["act"], "Det. 12/2026");
    assert_eq!(v[2]["reason"], "ISEE aggiornato");
    assert!(v.iter().all(|x| is_timestamp(&x["at"])), "{pb}");
    assert_eq!(pb["notices"][0]["original_amount"]["cents"], 8_000);
    assert_eq!(pb["notices"][0]["amount"]["cents"], 5_000);
    assert_eq!(
        pb["notices"][0]["qr"],
        format!("PAGOPA|002|{nav_b}|{CASTELVERDE}|5000")
    );

    // Reschedule of ST-C into two instalments of 30.00.
    let plan = json!({"replaced": [nav_c], "reason": "rateizzazione concessa", "instalments": [
        {"amount": 3_000, "due": "2030-06-30", "description": "Rata 1 di 2",
         "transfers": [{"amount": 3_000, "remittance": "TARI rata 1", "category": "9/0101101IM/"}]},
        {"amount": 3_000, "due": "2030-12-31", "description": "Rata 2 di 2",
         "transfers": [{"amount": 3_000, "remittance": "TARI rata 2", "category": "9/0101101IM/"}]}
    ]});
    let planned = call(
        &d,
        MONTALTO_KEY,
        "POST",
        &position_path(MONTALTO, "/ST-C/reschedule"),
        Some(&plan),
    );
    // The plan takes the replaced notice's place in its option.
    let new_navs = [notice(&planned, 0, 1, "nav"), notice(&planned, 0, 2, "nav")];
    let all = read(&d, PORTAL_KEY, &statement_path(DEBTOR));
    assert_eq!(
        totals(&all),
        (18_000, 0, 3_000, 0),
        "a plan of the same total"
    );
    let pc = by_iupd(&all, "ST-C");
    let v = &pc["variations"][0];
    assert_eq!(v["type"], "rescheduled");
    assert_eq!(v["replaced"], json!([nav_c]));
    assert_eq!(v["new"], json!(new_navs));
    assert_eq!(v["reason"], "rateizzazione concessa");
    let notices = pc["notices"].as_array().expect("notices");
    assert_eq!(notices.len(), 3);
    assert_eq!(notices[0]["status"], "Cancelled");
    assert!(notices[0]["qr"].is_null());
    assert_eq!(notices[1]["option"], 0);
    assert_eq!(notices[1]["option_kind"], "Plan");
    assert_eq!(notices[1]["due"], "2030-06-30");
    assert_eq!(
        notices[2]["qr"],
        format!("PAGOPA|002|{}|{MONTALTO}|3000", new_navs[1])
    );

    // A pagoPA receipt for ST-B, sent to the station as the node does (Castelverde: primitives v2).
    let caller = Caller {
        id_pa: CASTELVERDE.into(),
        broker: "01111111116".into(),
        station: "01111111116_01".into(),
    };
    let receipt = |id: &str| ReceiptSpec {
        receipt_id: id.into(),
        nav: nav_b.clone(),
        notice_entity: CASTELVERDE.into(),
        iuv: notice(&b, 0, 0, "iuv"),
        amount: "50.00".into(),
        transfers: vec![ReceiptTransfer {
            id: "1".into(),
            amount: "50.00".into(),
            fiscal_code_pa: CASTELVERDE.into(),
            iban: Some("IT92R0306902117100000046111".into()),
            remittance: "TARI".into(),
            category: "9/0101101IM/".into(),
        }],
        psp: "BCITITMM".into(),
        stand_in: false,
    };
    let send = |spec: &ReceiptSpec| {
        let response = d.soap("paSendRTV2", &requests::send_rt(&caller, true, spec));
        if let Err(e) = validate_body(&response) {
            panic!("paSendRTV2: response not valid against the XSD: {e}\n{response}");
        }
        let answer = read_answer(&response).expect("readable answer");
        assert_eq!(answer.outcome, "OK", "{answer:?}");
    };
    send(&receipt("1f2e3d4c5b6a79880123456789abcdef"));
    let all = read(&d, PORTAL_KEY, &statement_path(DEBTOR));
    assert_eq!(totals(&all), (13_000, 5_000, 3_000, 0));
    let pb = by_iupd(&all, "ST-B");
    assert_eq!(pb["status"], "Paid");
    assert_eq!(pb["notices"][0]["status"], "Paid");
    assert!(pb["notices"][0]["qr"].is_null());
    let pay = &pb["payments"][0];
    assert_eq!(pay["via"], "pagopa", "{pb}");
    assert_eq!(pay["nav"], nav_b.as_str());
    assert_eq!(pay["psp"], "BCITITMM");
    assert_eq!(pay["amount"]["text"], "50.00");
    assert_eq!(pay["receipt_id"], "1f2e3d4c5b6a79880123456789abcdef");
    assert_eq!(pay["double_payment"], false);
    assert!(is_timestamp(&pay["paid_at"]), "{pay}");

    // The same notice paid again through pagoPA: a double payment, a refund due.
    send(&receipt("aa2e3d4c5b6a79880123456789abcdef"));
    let all = read(&d, PORTAL_KEY, &statement_path(DEBTOR));
    assert_eq!(totals(&all), (13_000, 10_000, 3_000, 5_000));
    let pb = by_iupd(&all, "ST-B");
    assert_eq!(pb["payments"][1]["double_payment"], true);
    assert_eq!(pb["refunds_due"]["cents"], 5_000);
    let dp = &pb["double_payments"][0];
    assert_eq!(dp["receipt_id"], "aa2e3d4c5b6a79880123456789abcdef");
    assert_eq!(dp["found"], "AlreadyPaid");
    assert_eq!(dp["amount"]["cents"], 5_000);
    let refund = &pb["refunds"][0];
    assert_eq!(
        (&refund["beneficiary"], &refund["amount"]["cents"]),
        (&json!(CASTELVERDE), &json!(5_000))
    );

    // The entity's view changed with it, and still holds only its own positions.
    let own = read(&d, CASTELVERDE_KEY, &entity_statement(CASTELVERDE, DEBTOR));
    assert_eq!(iupds(&own), ["ST-B", "ST-A"]);
    assert_eq!(totals(&own), (7_000, 10_000, 3_000, 5_000));
    let montalto = read(&d, MONTALTO_KEY, &entity_statement(MONTALTO, DEBTOR));
    assert_eq!(totals(&montalto), (6_000, 0, 0, 0));
}

#[test]
fn statements_follow_the_debtor_index_on_demo_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let page = read(&d, CASTELVERDE_KEY, &position_path(CASTELVERDE, "?limit=1"));
    let debtor = page["positions"][0]["debtor"]
        .as_str()
        .expect("a demo position")
        .to_owned();
    let listed = read(
        &d,
        CASTELVERDE_KEY,
        &position_path(CASTELVERDE, &format!("?debtor={debtor}")),
    );
    let mut want: Vec<String> = listed["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|p| p["iupd"].as_str().expect("iupd").to_owned())
        .collect();
    let s = read(&d, CASTELVERDE_KEY, &entity_statement(CASTELVERDE, &debtor));
    let mut got = iupds(&s);
    assert!(!got.is_empty());
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let open: i64 = listed["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|p| p["open_amount"].as_i64().expect("open"))
        .sum();
    assert_eq!(totals(&s).0, open);
    // Created timestamps never increase down the list.
    let created: Vec<jiff::Timestamp> = s["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|p| {
            p["created_at"]
                .as_str()
                .expect("created")
                .parse()
                .expect("timestamp")
        })
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
}

#[test]
fn who_may_read_a_statement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let own = entity_statement(CASTELVERDE, DEBTOR);

    let (status, err) = d.api_call("GET", &own, None, None);
    assert_eq!(status, 401, "{err}");
    let (status, err) = d.api_call("GET", &statement_path(DEBTOR), None, None);
    assert_eq!(status, 401, "{err}");
    let (status, unknown) =
        d.api_call("GET", &statement_path(DEBTOR), Some("demo-wrong-key"), None);
    assert_eq!(status, 401, "{unknown}");

    // Another entity's key; an entity's key on the cross-entity path: the same 401 as an
    // unknown key.
    let (status, err) = d.api_call("GET", &own, Some(MONTALTO_KEY), None);
    assert_eq!(status, 401, "{err}");
    let (status, err) = d.api_call("GET", &statement_path(DEBTOR), Some(CASTELVERDE_KEY), None);
    assert_eq!(status, 401, "{err}");
    assert_eq!(err, unknown);
    assert!(
        err["error"]
            .as_str()
            .expect("error")
            .contains("citizen-portal key")
    );

    // The portal key reads statements only.
    let (status, err) = d.api_call(
        "GET",
        &position_path(CASTELVERDE, ""),
        Some(PORTAL_KEY),
        None,
    );
    assert_eq!(status, 401, "{err}");
    let (status, err) = d.api_call(
        "GET",
        &entity_statement("00000000000", DEBTOR),
        Some(PORTAL_KEY),
        None,
    );
    assert_eq!(status, 404, "{err}");

    // Anonymous and malformed debtors.
    for key in [PORTAL_KEY, CASTELVERDE_KEY] {
        let path = if key == PORTAL_KEY {
            statement_path("ANONIMO")
        } else {
            entity_statement(CASTELVERDE, "ANONIMO")
        };
        let (status, err) = d.api_call("GET", &path, Some(key), None);
        assert_eq!(
            (status, err["field"].as_str()),
            (400, Some("debtor")),
            "{err}"
        );
        assert!(err["error"].as_str().expect("error").contains("anonymous"));
    }
    let (status, err) = d.api_call(
        "GET",
        &statement_path("RSSMRA80A01H501X"),
        Some(PORTAL_KEY),
        None,
    );
    assert_eq!(
        (status, err["field"].as_str()),
        (400, Some("debtor")),
        "{err}"
    );

    // A valid code with nothing: an empty statement.
    let (status, s) = d.api_call(
        "GET",
        &statement_path("12345678903"),
        Some(PORTAL_KEY),
        None,
    );
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["positions"], json!([]));
    assert_eq!(totals(&s), (0, 0, 0, 0));
}

#[test]
fn one_authority_cannot_push_another_out_of_a_statement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    call(
        &d,
        CASTELVERDE_KEY,
        "PUT",
        &position_path(CASTELVERDE, "/TARI-REAL"),
        Some(&single("TARI 2026", 48_000)),
    );
    // Another authority loads 1,001 positions of one cent for the same citizen.
    let mut csv =
        String::from("iupd,kind,debtor_code,debtor_name,description,due,amount,t1_category\n");
    for n in 0..1001 {
        csv.push_str(&format!(
            "FLOOD-{n:04},DIRITTI,{DEBTOR},Mario Rossi,Diritti,2031-01-31,0.01,9/0201102SE/\n"
        ));
    }
    let job = d.bulk_upload(MONTALTO, MONTALTO_KEY, csv.as_bytes());
    let job = d.bulk_finished(MONTALTO, MONTALTO_KEY, &job);
    assert_eq!(job["created"], 1001, "{job}");
    let s = read(&d, PORTAL_KEY, &statement_path(DEBTOR));
    assert!(
        iupds(&s).contains(&"TARI-REAL".to_owned()),
        "the other authority's position is still there"
    );
    let (open, ..) = totals(&s);
    assert_eq!(open, 48_000 + 1000, "480.00 and the 1,000 cents listed");
    assert_eq!(s["truncated"], true, "one authority's list was cut");
}

#[test]
fn the_readme_s_citizen_has_debts_with_every_demo_authority() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir);
    let all = read(&d, PORTAL_KEY, &statement_path(mpayd::demo::DEMO_CITIZEN));
    let mut entities: Vec<&str> = all["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .filter_map(|p| p["entity"]["fiscal_code"].as_str())
        .collect();
    entities.sort_unstable();
    entities.dedup();
    assert_eq!(entities.len(), 3, "{all}");
    assert!(all["totals"]["positions"].as_u64() >= Some(3), "{all}");
}

//! The station as pagoPA's node sees it: a real mpayd on demo data, real HTTP, and every answer
//! validated against the official XSD with libxml2.

use mpay_tests::xsd::validate_body;
use mpay_tests::{Daemon, STATION_PATH, http_post};
use mpayd::simulator::requests::{self, Answer, Caller, ReceiptSpec, read_answer};
use serde_json::Value;

const BROKER: &str = "01111111116";
const V2_STATION: &str = "01111111116_01";
const V1_STATION: &str = "01111111116_02";
const ENTITY: &str = "00123456782";
const PROVINCE: &str = "80001234568";

fn caller(entity: &str, station: &str) -> Caller {
    Caller {
        id_pa: entity.into(),
        broker: BROKER.into(),
        station: station.into(),
    }
}

/// Sends, checks the answer against the XSD, and reads it.
fn ask(daemon: &Daemon, action: &str, body: &str) -> Answer {
    let response = daemon.soap(action, body);
    if let Err(e) = validate_body(&response) {
        panic!("{action}: response not valid against the XSD: {e}\n{response}");
    }
    assert!(
        !response.contains("Fault>"),
        "never a SOAP Fault: {response}"
    );
    read_answer(&response).unwrap_or_else(|| panic!("unreadable answer: {response}"))
}

fn fault(answer: &Answer) -> &str {
    answer.fault_code.as_deref().unwrap_or("none")
}

fn payable(daemon: &Daemon, entity: &str) -> Vec<Value> {
    daemon
        .notices(false)
        .into_iter()
        .filter(|n| n["entity"] == entity)
        .collect()
}

fn notice_state(daemon: &Daemon, nav: &str) -> Value {
    daemon
        .notices(true)
        .into_iter()
        .find(|n| n["nav"] == nav)
        .unwrap_or_else(|| panic!("notice {nav} not listed"))
}

fn receipt_for(entity: &str, nav: &str, iuv: &str, amount: &str, id: &str) -> ReceiptSpec {
    ReceiptSpec::single(entity, nav, iuv, amount, id, "IT92R0306902117100000046111")
}

fn start(dir: &tempfile::TempDir) -> Daemon {
    Daemon::demo(&dir.path().join("demo"), 600).ready()
}

#[test]
fn a_payment_from_verify_to_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(&dir);
    let notices = payable(&daemon, ENTITY);
    let n = &notices[0];
    let nav = n["nav"].as_str().expect("nav");
    let c = caller(ENTITY, V2_STATION);

    let verify = ask(
        &daemon,
        "paVerifyPaymentNotice",
        &requests::verify(&c, ENTITY, nav),
    );
    assert_eq!(verify.outcome, "OK", "{verify:?}");
    assert_eq!(verify.amount.as_deref(), n["amount"].as_str());

    // Activation is a read: repeating it changes nothing.
    let body = requests::get_payment(&c, true, ENTITY, nav, verify.amount.as_deref());
    let first = ask(&daemon, "paGetPaymentV2", &body);
    let second = ask(&daemon, "paGetPaymentV2", &body);
    assert_eq!(first, second);
    assert_eq!(first.outcome, "OK");
    assert_eq!(first.iuv.as_deref(), n["iuv"].as_str());
    let total: i64 = first
        .transfers
        .iter()
        .map(|t| t.amount.replace('.', "").parse::<i64>().expect("amount"))
        .sum();
    assert_eq!(
        total,
        first
            .amount
            .as_deref()
            .expect("amount")
            .replace('.', "")
            .parse::<i64>()
            .expect("cents")
    );
    assert_eq!(notice_state(&daemon, nav)["status"], "Unpaid");

    let spec = ReceiptSpec {
        transfers: first.transfers.clone(),
        ..receipt_for(
            ENTITY,
            nav,
            first.iuv.as_deref().expect("iuv"),
            first.amount.as_deref().expect("amount"),
            "a1b2c3d4e5f60718293a4b5c6d7e8f90",
        )
    };
    let rt = ask(&daemon, "paSendRTV2", &requests::send_rt(&c, true, &spec));
    assert_eq!(rt.outcome, "OK", "{rt:?}");
    let state = notice_state(&daemon, nav);
    assert_eq!(state["status"], "Paid");
    assert_eq!(state["receipt_id"], "a1b2c3d4e5f60718293a4b5c6d7e8f90");

    // Now the notice is paid for the node too.
    let again = ask(
        &daemon,
        "paVerifyPaymentNotice",
        &requests::verify(&c, ENTITY, nav),
    );
    assert_eq!(fault(&again), "PAA_PAGAMENTO_DUPLICATO");
    let again = ask(&daemon, "paGetPaymentV2", &body);
    assert_eq!(fault(&again), "PAA_PAGAMENTO_DUPLICATO");

    // The node retries the same receipt: OK, and nothing is applied twice.
    let replay = ask(&daemon, "paSendRTV2", &requests::send_rt(&c, true, &spec));
    assert_eq!(replay.outcome, "OK");
    let state = notice_state(&daemon, nav);
    assert_eq!(state["double_payments"], 0);

    // A second payment of the same notice: stored, OK, flagged as a double payment.
    let other = ReceiptSpec {
        receipt_id: "ffffffffffffffffffffffffffffffff".into(),
        ..spec
    };
    let double = ask(&daemon, "paSendRTV2", &requests::send_rt(&c, true, &other));
    assert_eq!(double.outcome, "OK");
    let state = notice_state(&daemon, nav);
    assert_eq!(state["receipt_id"], "a1b2c3d4e5f60718293a4b5c6d7e8f90");
    assert_eq!(state["double_payments"], 1);

    // The journal saw every exchange, and the metrics count them.
    let (_, metrics) = mpay_tests::http_get(daemon.admin, "/metrics").expect("metrics");
    let metrics = String::from_utf8(metrics).expect("utf-8");
    assert!(
        metrics.contains(
            "mpay_station_requests_total{operation=\"paSendRTV2\",outcome=\"OK\",fault=\"\"} 3"
        ),
        "{metrics}"
    );
}

#[test]
fn primitives_version_1_station() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(&dir);
    let n = &payable(&daemon, PROVINCE)[0];
    let nav = n["nav"].as_str().expect("nav");
    let c = caller(PROVINCE, V1_STATION);
    let get = ask(
        &daemon,
        "paGetPayment",
        &requests::get_payment(&c, false, PROVINCE, nav, None),
    );
    assert_eq!(get.outcome, "OK", "{get:?}");
    // This station speaks version 1: a V2 activation is refused.
    let v2 = ask(
        &daemon,
        "paGetPaymentV2",
        &requests::get_payment(&c, true, PROVINCE, nav, None),
    );
    assert_eq!(fault(&v2), "PAA_SEMANTICA");
    let spec = ReceiptSpec {
        transfers: get.transfers.clone(),
        ..receipt_for(
            PROVINCE,
            nav,
            get.iuv.as_deref().expect("iuv"),
            get.amount.as_deref().expect("amount"),
            "r-v1-0001",
        )
    };
    let rt = ask(&daemon, "paSendRT", &requests::send_rt(&c, false, &spec));
    assert_eq!(rt.outcome, "OK");
    assert_eq!(notice_state(&daemon, nav)["status"], "Paid");
}

#[test]
fn every_fault_the_node_can_meet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(&dir);
    let all = daemon.notices(true);
    let ours = |status: &str| -> Option<String> {
        all.iter()
            .find(|n| n["entity"] == ENTITY && n["status"] == status)
            .and_then(|n| n["nav"].as_str().map(str::to_string))
    };
    let c = caller(ENTITY, V2_STATION);
    let nav = ours("Unpaid").expect("a payable notice");
    let verify = |c: &Caller, nav: &str| {
        ask(
            &daemon,
            "paVerifyPaymentNotice",
            &requests::verify(c, ENTITY, nav),
        )
    };

    let wrong_broker = Caller {
        broker: "99999999999".into(),
        ..c.clone()
    };
    assert_eq!(
        fault(&verify(&wrong_broker, &nav)),
        "PAA_ID_INTERMEDIARIO_ERRATO"
    );
    let wrong_station = Caller {
        station: "01111111116_99".into(),
        ..c.clone()
    };
    assert_eq!(
        fault(&verify(&wrong_station, &nav)),
        "PAA_STAZIONE_INT_ERRATA"
    );
    // A real entity, but not served through that station.
    let not_served = caller(ENTITY, V1_STATION);
    assert_eq!(fault(&verify(&not_served, &nav)), "PAA_ID_DOMINIO_ERRATO");
    let unknown_entity = caller("00743110157", V2_STATION);
    assert_eq!(
        fault(&verify(&unknown_entity, &nav)),
        "PAA_ID_DOMINIO_ERRATO"
    );
    // Fault id is the entity's fiscal code.
    let response = daemon.soap(
        "paVerifyPaymentNotice",
        &requests::verify(&wrong_station, ENTITY, &nav),
    );
    assert!(
        response.contains(&format!("<id>{ENTITY}</id>")),
        "{response}"
    );

    // A well-formed notice number that is not ours, and one with a wrong check digit.
    assert_eq!(
        fault(&verify(&c, "399000000000000001")),
        "PAA_PAGAMENTO_SCONOSCIUTO"
    );
    let mut bad_check = nav.clone();
    bad_check.replace_range(16.., if nav.ends_with("00") { "01" } else { "00" });
    assert_eq!(fault(&verify(&c, &bad_check)), "PAA_PAGAMENTO_SCONOSCIUTO");

    if let Some(paid) = ours("PaidOffline") {
        assert_eq!(fault(&verify(&c, &paid)), "PAA_PAGAMENTO_DUPLICATO");
    }
    let cancelled = ours("Cancelled").expect("the demo cancels some notices");
    assert_eq!(fault(&verify(&c, &cancelled)), "PAA_PAGAMENTO_ANNULLATO");
    let expired = ours("Expired").expect("the demo has expired fines");
    assert_eq!(fault(&verify(&c, &expired)), "PAA_PAGAMENTO_SCADUTO");

    // Syntax: not XML, a SOAP 1.1 envelope in the wrong namespace, a missing element, a DOCTYPE.
    let good = requests::verify(&c, ENTITY, &nav);
    for (body, code) in [
        ("this is not xml".to_string(), "PAA_SINTASSI_EXTRAXSD"),
        (
            good.replace("http://schemas.xmlsoap.org/soap/envelope/", "urn:wrong"),
            "PAA_SINTASSI_EXTRAXSD",
        ),
        (
            good.replace(
                "http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd",
                "urn:wrong",
            ),
            "PAA_SINTASSI_EXTRAXSD",
        ),
        (
            good.replace("<idStation>01111111116_01</idStation>", ""),
            "PAA_SINTASSI_XSD",
        ),
        (
            format!(
                "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{}",
                good.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
            ),
            "PAA_SINTASSI_EXTRAXSD",
        ),
    ] {
        let answer = ask(&daemon, "paVerifyPaymentNotice", &body);
        assert_eq!(fault(&answer), code, "{body}");
    }
    // Bodies over the limit never reach the parser, and the node still gets SOAP: a KO of the
    // operation its SOAPAction names, else a SOAP Fault.
    let huge = vec![b'x'; 300 * 1024];
    let (status, answer) = http_post(
        daemon.station,
        STATION_PATH,
        &[("SOAPAction", "\"paVerifyPaymentNotice\"")],
        &huge,
    )
    .expect("post");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status, 200, "{answer}");
    validate_body(&answer).unwrap_or_else(|e| panic!("{e}\n{answer}"));
    assert_eq!(
        read_answer(&answer).expect("answer").fault_code.as_deref(),
        Some("PAA_SINTASSI_EXTRAXSD")
    );
    let (status, answer) = http_post(daemon.station, STATION_PATH, &[], &huge).expect("post");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer.contains("<soapenv:Fault><faultcode>soapenv:Client</faultcode>"),
        "{answer}"
    );
    // Another path, another method: a SOAP Fault too, not an empty 404 or 405.
    for (status, answer) in [
        http_post(daemon.station, "/elsewhere", &[], b"<a/>").expect("post"),
        mpay_tests::http_get(daemon.station, STATION_PATH).expect("get"),
    ] {
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert_eq!(status, 500, "{answer}");
        assert!(
            answer.contains("soapenv:Fault") && answer.contains("SOAP POSTs"),
            "{answer}"
        );
    }
}

#[test]
fn receipts_are_never_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(&dir);
    let all = daemon.notices(true);
    let find = |status: &str| {
        all.iter()
            .find(|n| n["entity"] == ENTITY && n["status"] == status)
            .cloned()
            .unwrap_or_else(|| panic!("no {status} notice in the demo"))
    };
    let c = caller(ENTITY, V2_STATION);
    for (status, id) in [
        ("Cancelled", "rt-after-cancel"),
        ("PaidOffline", "rt-after-offline"),
    ] {
        let n = find(status);
        let nav = n["nav"].as_str().expect("nav");
        let spec = receipt_for(ENTITY, nav, n["iuv"].as_str().expect("iuv"), "10.00", id);
        let answer = ask(&daemon, "paSendRTV2", &requests::send_rt(&c, true, &spec));
        assert_eq!(answer.outcome, "OK", "{status}: {answer:?}");
        assert_eq!(notice_state(&daemon, nav)["double_payments"], 1, "{status}");
    }
    // A receipt for a notice nobody knows is kept too.
    let spec = receipt_for(
        ENTITY,
        "399000000000000001",
        "99000000000000001",
        "5.00",
        "rt-orphan",
    );
    let answer = ask(&daemon, "paSendRTV2", &requests::send_rt(&c, true, &spec));
    assert_eq!(answer.outcome, "OK");

    // A secondary beneficiary (the province's TEFA share) receives the receipt of the
    // municipality's notice through its own station: OK, not "unknown".
    let n = payable(&daemon, ENTITY)[0].clone();
    let spec = receipt_for(
        ENTITY,
        n["nav"].as_str().expect("nav"),
        n["iuv"].as_str().expect("iuv"),
        n["amount"].as_str().expect("amount"),
        "rt-secondary",
    );
    let province = caller(PROVINCE, V1_STATION);
    let answer = ask(
        &daemon,
        "paSendRT",
        &requests::send_rt(&province, false, &spec),
    );
    assert_eq!(answer.outcome, "OK", "{answer:?}");
    // The municipality's notice is untouched by the province's copy.
    assert_eq!(
        notice_state(&daemon, n["nav"].as_str().expect("nav"))["status"],
        "Unpaid"
    );
}

#[test]
fn a_spontaneous_payment_is_created_on_demand_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(&dir);
    let c = caller(ENTITY, V2_STATION);
    // Service 00001, subject 00001: the demo's certificate fee for segregation code 01.
    let body = requests::demand(&c, "00001", "00001", "PGRhdGk+Y2VydGlmaWNhdG88L2RhdGk+");
    let first = ask(&daemon, "paDemandPaymentNotice", &body);
    assert_eq!(first.outcome, "OK", "{first:?}");
    assert_eq!(first.amount.as_deref(), Some("5.16"));
    let nav = first.notice_number.clone().expect("a notice number");
    let again = ask(&daemon, "paDemandPaymentNotice", &body);
    assert_eq!(again.notice_number.as_deref(), Some(nav.as_str()));
    let verify = ask(
        &daemon,
        "paVerifyPaymentNotice",
        &requests::verify(&c, ENTITY, &nav),
    );
    assert_eq!(verify.outcome, "OK");
    let unknown = ask(
        &daemon,
        "paDemandPaymentNotice",
        &requests::demand(&c, "00009", "00001", "AAAA"),
    );
    assert_eq!(fault(&unknown), "PAA_SEMANTICA");
}

/// The official example requests, with the demo's ids in place of the samples'.
#[test]
fn official_examples_get_valid_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(&dir);
    let n = payable(&daemon, ENTITY)[0].clone();
    let nav = n["nav"].as_str().expect("nav");
    let iuv = n["iuv"].as_str().expect("iuv");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/pagopa/examples/");
    let adapt = |file: &str| {
        std::fs::read_to_string(format!("{examples}{file}"))
            .expect("example")
            .replace("77777777777_01", V2_STATION)
            .replace("<idBrokerPA>77777777777", &format!("<idBrokerPA>{BROKER}"))
            .replace("77777777777", ENTITY)
            .replace("311111111112222222", nav)
            .replace("11111111112222222", iuv)
    };
    let verify = ask(
        &daemon,
        "paVerifyPaymentNotice",
        &adapt("01_paVerifyPaymentNoticeReq.xml"),
    );
    // Example 01 binds its prefix to nodeForPsp.xsd instead of paForNode.xsd.
    assert!(
        verify.outcome == "OK" || fault(&verify) == "PAA_SINTASSI_EXTRAXSD",
        "{verify:?}"
    );
    let get = ask(&daemon, "paGetPayment", &adapt("03_paGetPaymentReq.xml"));
    // The demo's station _01 speaks version 2.
    assert_eq!(fault(&get), "PAA_SEMANTICA", "{get:?}");
    let rt = ask(&daemon, "paSendRT", &adapt("05_paSendRTReq.xml"));
    assert!(
        rt.outcome == "OK" || fault(&rt) == "PAA_SINTASSI_XSD",
        "{rt:?}"
    );
}

#[test]
fn a_receipt_id_cannot_write_a_line_of_its_own_in_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(&dir);
    let c = caller(ENTITY, V2_STATION);
    // An orphan receipt is logged with its id; the id carries a line break.
    let spec = receipt_for(
        ENTITY,
        "399000000000000001",
        "99000000000000001",
        "5.00",
        "rt\n2000-01-01 ERROR forged",
    );
    let answer = ask(&daemon, "paSendRTV2", &requests::send_rt(&c, true, &spec));
    assert_eq!(answer.outcome, "OK", "{answer:?}");
    let log = daemon.log_text();
    assert!(
        log.contains("ERROR forged"),
        "the receipt was logged: {log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2000-01-01 ERROR forged")),
        "a forged log line: {log}"
    );
}

#[test]
fn idle_and_slow_clients_are_cut_and_connections_are_capped() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 20)
        .ready()
        .reconfigured(|text| {
            text.replace("header_timeout_secs = 10", "header_timeout_secs = 1")
                .replace("max_connections = 1024", "max_connections = 4")
        });
    let connect = || {
        let s = std::net::TcpStream::connect(d.station).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s
    };
    // Closed by the station: a read ends (0 bytes, or a reset) instead of waiting.
    let closed_within = |mut s: std::net::TcpStream| {
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        started.elapsed()
    };
    // Four idle connections take every place: a fifth is closed at once.
    let idle: Vec<_> = (0..3).map(|_| connect()).collect();
    let mut slow = connect();
    slow.write_all(b"POST /pagopa/paForNode HTTP/1.1\r\nHost: x\r\n")
        .expect("half a header");
    std::thread::sleep(Duration::from_millis(200));
    let fifth = connect();
    assert!(
        closed_within(fifth) < Duration::from_secs(1),
        "over the cap"
    );
    // The idle and the slow ones are cut after the header timeout, which frees their places.
    for s in idle {
        assert!(
            closed_within(s) < Duration::from_secs(5),
            "an idle client was kept"
        );
    }
    assert!(
        closed_within(slow) < Duration::from_secs(5),
        "a slow client was kept"
    );
    let notice = d
        .notices(false)
        .into_iter()
        .find(|n| n["entity"] == ENTITY)
        .expect("a payable notice");
    let nav = notice["nav"].as_str().expect("nav");
    let answer = read_answer(&d.soap(
        "paVerifyPaymentNotice",
        &requests::verify(&caller(ENTITY, V2_STATION), ENTITY, nav),
    ))
    .expect("answer");
    assert_eq!(answer.outcome, "OK", "the node is served again");
    assert!(
        d.log_text().contains("station.max_connections reached"),
        "the refusal is logged"
    );
    assert!(d.stop().success());
}

#[test]
fn two_thousand_idle_connections_under_a_low_descriptor_limit_do_not_silence_the_node() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    // Station and API hold 100 connections each, cut idle ones after a second; the process
    // may open 512 files in all.
    let d = Daemon::demo(&dir.path().join("demo"), 20)
        .ready()
        .reconfigured_under(&["prlimit", "--nofile=512:512"], |text| {
            text.replace("header_timeout_secs = 10", "header_timeout_secs = 1")
                .replace("max_connections = 1024", "max_connections = 100")
        });
    let api = d.api.expect("api address");
    let idle: Vec<std::net::TcpStream> = (0..2000)
        .filter_map(|i| {
            let target = if i % 2 == 0 { d.station } else { api };
            std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2)).ok()
        })
        .collect();
    assert!(idle.len() >= 1900, "only {} connections opened", idle.len());
    // The admin listener, not flooded, answers at once.
    assert_eq!(d.health()["status"], "ok");
    let notice = d
        .notices(false)
        .into_iter()
        .find(|n| n["entity"] == ENTITY)
        .expect("a payable notice");
    let nav = notice["nav"].as_str().expect("nav").to_string();
    let verify = requests::verify(&caller(ENTITY, V2_STATION), ENTITY, &nav);
    // The node gets in once the idle connections are cut: within seconds, not never.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let sent = mpay_tests::http_post(
            d.station,
            STATION_PATH,
            &[("SOAPAction", "\"paVerifyPaymentNotice\"")],
            verify.as_bytes(),
        );
        if let Ok((200, body)) = sent {
            break read_answer(&String::from_utf8_lossy(&body)).expect("answer");
        }
        assert!(Instant::now() < deadline, "the node was never served");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(answer.outcome, "OK", "{answer:?}");
    let log = d.log_text();
    assert!(log.contains("station.max_connections reached"), "{log}");
    assert!(log.contains("api.max_connections reached"), "{log}");
    drop(idle);
    assert!(d.stop().success());
}

#[test]
fn a_peer_walking_notice_numbers_is_stopped_and_demands_are_capped_per_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 20)
        .ready()
        .reconfigured(|text| {
            text.replace(
                "max_unknown_lookups_per_minute = 0",
                "max_unknown_lookups_per_minute = 5",
            )
            .replace("max_per_day = 1000", "max_per_day = 2")
        });
    let c = caller(ENTITY, V2_STATION);
    let known = payable(&d, ENTITY)[0]["nav"]
        .as_str()
        .expect("nav")
        .to_string();
    let numbering = mpay_common::ids::IuvSettings {
        aux: mpay_common::ids::AuxDigit::Three,
        segregation_code: Some(1),
        application_code: None,
    };
    let verify = |nav: &str| {
        ask(
            &d,
            "paVerifyPaymentNotice",
            &requests::verify(&c, ENTITY, nav),
        )
    };
    // Notice numbers in a row that nobody was given, as a peer walking them asks; past five in
    // a minute even a real notice is refused. A minute that ends half-way starts it again.
    let mut stopped = false;
    for attempt in 0..2u64 {
        for i in 0..5 {
            let nav = numbering.notice(9_000_000 + attempt * 10 + i).expect("nav");
            assert_eq!(fault(&verify(nav.as_ref())), "PAA_PAGAMENTO_SCONOSCIUTO");
        }
        let answer = verify(&known);
        if fault(&answer) == "PAA_SYSTEM_ERROR" {
            stopped = true;
            break;
        }
        assert_eq!(answer.outcome, "OK", "{answer:?}");
    }
    assert!(stopped, "five unknown lookups did not stop the peer");
    assert!(
        d.log_text()
            .contains("lookups of unknown notices from 127.0.0.1"),
        "{}",
        d.log_text()
    );

    // Two distinct demands make two notices; the third of the day is refused; the first asked
    // again still gets its own notice.
    let demand = |data: &str| {
        ask(
            &d,
            "paDemandPaymentNotice",
            &requests::demand(&c, "00001", "00001", data),
        )
    };
    let first = demand("QUFBQQ==");
    assert_eq!(first.outcome, "OK", "{first:?}");
    assert_eq!(demand("QkJCQg==").outcome, "OK");
    let third = demand("Q0NDQw==");
    assert_eq!(fault(&third), "PAA_SEMANTICA", "{third:?}");
    let again = demand("QUFBQQ==");
    assert_eq!(again.notice_number, first.notice_number, "{again:?}");
}

//! Crash safety: kill -9 the daemon while receipts are being delivered, restart it, and check
//! that every receipt that got OK is there and applied exactly once.
//!
//! `MPAY_CRASH_CYCLES` sets the number of kill/restart cycles (default 5); the run prints the
//! restart times.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpay_tests::{Daemon, STATION_PATH, http_post};
use mpayd::simulator::requests::{self, Caller, ReceiptSpec, ReceiptTransfer, read_answer};
use serde_json::Value;

fn receipt(n: &Value, id: String) -> (Caller, ReceiptSpec) {
    let entity = n["entity"].as_str().expect("entity").to_string();
    let amount = n["amount"].as_str().expect("amount").to_string();
    let caller = Caller {
        id_pa: entity.clone(),
        broker: "01111111116".into(),
        station: n["station"].as_str().expect("station").to_string(),
    };
    let spec = ReceiptSpec {
        receipt_id: id,
        nav: n["nav"].as_str().expect("nav").to_string(),
        notice_entity: entity.clone(),
        iuv: n["iuv"].as_str().expect("iuv").to_string(),
        amount: amount.clone(),
        transfers: vec![ReceiptTransfer {
            id: "1".into(),
            amount,
            fiscal_code_pa: entity,
            iban: Some("IT92R0306902117100000046111".into()),
            remittance: "Pagamento".into(),
            category: "9/0101108TS/".into(),
        }],
        psp: "BCITITMM".into(),
        stand_in: false,
    };
    (caller, spec)
}

#[test]
fn acknowledged_receipts_survive_kill_9() {
    let cycles: usize = std::env::var("MPAY_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    // About two thirds of the demo's positions have a single payable notice.
    let positions = (cycles as u64 * 60).max(3000);
    let mut daemon = Daemon::demo(&data, positions).ready();
    // Single-notice positions only, so that one receipt settles one position.
    let notices: Vec<Value> = daemon
        .notices(false)
        .into_iter()
        .filter(|n| !n["iupd"].as_str().unwrap_or("").starts_with("TARI"))
        .collect();
    let per_cycle = notices.len() / cycles;
    assert!(per_cycle >= 20, "not enough notices for {cycles} cycles");
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    // Every receipt sent, acknowledged or not: (action, body, nav).
    let mut sent: Vec<(String, String, String)> = Vec::new();
    let mut restarts = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for cycle in 0..cycles {
        let batch = &notices[cycle * per_cycle..(cycle + 1) * per_cycle];
        let acked = Arc::new(Mutex::new(Vec::new()));
        let tried = Arc::new(Mutex::new(Vec::new()));
        let station = daemon.station;
        let senders: Vec<_> = batch
            .chunks(batch.len().div_ceil(4))
            .enumerate()
            .map(|(w, chunk)| {
                let chunk = chunk.to_vec();
                let acked = Arc::clone(&acked);
                let tried = Arc::clone(&tried);
                std::thread::spawn(move || {
                    for (i, n) in chunk.iter().enumerate() {
                        let v2 = n["version"] == 2;
                        let (caller, spec) = receipt(n, format!("crash-{cycle}-{w}-{i}"));
                        let action = if v2 { "paSendRTV2" } else { "paSendRT" };
                        let body = requests::send_rt(&caller, v2, &spec);
                        tried.lock().expect("lock").push((
                            action.to_string(),
                            body.clone(),
                            spec.nav.clone(),
                        ));
                        let Ok((200, response)) = http_post(
                            station,
                            STATION_PATH,
                            &[("SOAPAction", action)],
                            body.as_bytes(),
                        ) else {
                            return;
                        };
                        let answer = read_answer(&String::from_utf8_lossy(&response));
                        if answer.is_some_and(|a| a.outcome == "OK") {
                            acked
                                .lock()
                                .expect("lock")
                                .push((spec.nav.clone(), spec.receipt_id.clone()));
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.u64(30..400)));
        let status = daemon.kill9();
        assert!(!status.success());
        for s in senders {
            s.join().expect("sender");
        }
        acknowledged.extend(acked.lock().expect("lock").drain(..));
        sent.extend(tried.lock().expect("lock").drain(..));
        let started = Instant::now();
        daemon = Daemon::demo(&data, positions).ready();
        restarts.push(started.elapsed());
    }
    // The node retries every receipt it is unsure of: each is answered OK and none is applied
    // a second time.
    for (action, body, nav) in &sent {
        let (status, response) = http_post(
            daemon.station,
            STATION_PATH,
            &[("SOAPAction", action)],
            body.as_bytes(),
        )
        .expect("resend");
        let answer = read_answer(&String::from_utf8_lossy(&response));
        assert!(
            status == 200 && answer.is_some_and(|a| a.outcome == "OK"),
            "resent receipt for {nav} not taken"
        );
    }
    let state: std::collections::HashMap<String, Value> = daemon
        .notices(true)
        .into_iter()
        .map(|n| (n["nav"].as_str().unwrap_or("").to_string(), n))
        .collect();
    for (nav, receipt_id) in &acknowledged {
        let n = &state[nav];
        assert_eq!(
            n["status"], "Paid",
            "acknowledged receipt {receipt_id} lost"
        );
        assert_eq!(n["receipt_id"], receipt_id.as_str());
    }
    for (_, _, nav) in &sent {
        let n = &state[nav];
        assert_eq!(n["status"], "Paid", "resent receipt for {nav} not applied");
        assert_eq!(n["double_payments"], 0, "a receipt for {nav} applied twice");
    }
    restarts.sort();
    println!(
        "{cycles} kill -9 cycles, {} acknowledged receipts all present once; restart to serving: \
         median {:?}, max {:?}",
        acknowledged.len(),
        restarts[restarts.len() / 2],
        restarts[restarts.len() - 1]
    );
    assert!(
        !acknowledged.is_empty(),
        "the test must have delivered receipts"
    );
}

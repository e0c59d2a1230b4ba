//! The services on a real store with the application's clock set by hand: time-dependent rules
//! at chosen dates.

use std::sync::Arc;

use jiff::Timestamp;
use mpay_common::ledger::{Actor, PositionStatus};
use mpay_common::requests::{PositionIn, PositionQuery};

use super::{positions, search, statements};
use crate::App;
use crate::clock::Clock;
use crate::store::Store;

fn app(dir: &std::path::Path, at: &str) -> App {
    let any = "127.0.0.1:0".parse().expect("address");
    let config = crate::demo::config(dir, any, any);
    // The engine is `MPAY_STORE_ENGINE`'s, as in the store's own tests.
    let options = crate::store::StoreOptions {
        engine: config.store.engine,
        ..Default::default()
    };
    let store = Store::open(&dir.join("store"), &options).expect("store");
    App {
        config: Arc::new(config),
        store: Arc::new(store),
        metrics: crate::metrics::Metrics::new(),
        clock: Clock::manual(at.parse().expect("instant")),
        live: crate::live::LiveStats::default(),
    }
}

/// A fine that expires on 1 March 2026.
fn fine() -> PositionIn {
    serde_json::from_value(serde_json::json!({
        "kind": "SANZIONE_CDS",
        "debtor": {"code": "RSSMRA80A01H501U", "name": "Mario Rossi"},
        "description": "Verbale 123/2026",
        "expiry": "2026-03-01",
        "options": [{"kind": "Single", "instalments": [{
            "amount": "42.00", "due": "2026-03-01", "description": "Verbale",
            "transfers": [{"amount": "42.00", "remittance": "Verbale", "category": "9/0101108TS/"}]
        }]}]
    }))
    .expect("a valid body")
}

fn count(app: &App, status: PositionStatus) -> usize {
    let entity = &app.config.entities[0].fiscal_code;
    let query = PositionQuery {
        status: Some(status),
        ..PositionQuery::default()
    };
    search::positions(app, entity, &query)
        .expect("search")
        .positions
        .len()
}

#[test]
fn the_day_is_rome_s_day_at_any_hour() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 23:30 in Rome on 1 March (22:30 UTC): the fine's last day, still payable.
    let app = app(dir.path(), "2026-03-01T22:30:00Z");
    let entity = app.config.entities[0].clone();
    let (_, loaded) = positions::upsert(
        &app,
        &entity,
        &Actor::System,
        "FINE-1".parse().expect("iupd"),
        fine(),
    )
    .expect("loads");
    assert_eq!(loaded.created_at, app.clock.now());
    assert_eq!(count(&app, PositionStatus::Valid), 1);
    assert_eq!(count(&app, PositionStatus::Expired), 0);
    // 00:30 in Rome on 2 March, still 1 March in UTC: expired.
    app.clock
        .set("2026-03-01T23:30:00Z".parse().expect("instant"));
    assert_eq!(count(&app, PositionStatus::Expired), 1);
    let debtor = statements::debtor_of("RSSMRA80A01H501U").expect("code");
    let statement = statements::statement(&app, None, &debtor).expect("statement");
    assert_eq!(statement.date, jiff::civil::date(2026, 3, 2));
    assert_eq!(statement.generated_at, app.clock.now());
    // Events carry the clock's time.
    let later: Timestamp = "2026-03-05T08:00:00Z".parse().expect("instant");
    app.clock.set(later);
    let after = positions::cancel(
        &app,
        &entity.fiscal_code,
        &Actor::System,
        &"FINE-1".parse().expect("iupd"),
        "annullato".into(),
    )
    .expect("cancels");
    assert_eq!(after.updated_at, later);
}

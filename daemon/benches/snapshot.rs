//! Decoding and encoding a stored position snapshot: what every read of a position costs when
//! it is not in the position cache.
//!
//!     cargo bench -p mpayd --bench snapshot

use jiff::Timestamp;
use mpay_common::ledger::{Actor, Change, Event, Position};
use mpayd::demo::{self, Builder, Kind};

fn main() {
    divan::main();
}

fn snapshot(kind: Kind) -> Position {
    let any = "127.0.0.1:0".parse().expect("addr");
    let config = demo::config(std::path::Path::new("/x"), any, any);
    let (entity, province) = (&config.entities[0], &config.entities[2]);
    let mut navs = (0..4).map(|s| entity.iuv.notice(s).expect("nav"));
    let data = Builder::new(entity, province, 3)
        .position(1, kind, &mut navs)
        .expect("position");
    let event = Event::new(Timestamp::now(), Actor::System, Change::Loaded(data));
    Position::load(entity.fiscal_code.clone(), &event).expect("load")
}

#[divan::bench(args = ["canteen (1 notice)", "TARI (4 notices)"])]
fn decode(bencher: divan::Bencher, kind: &str) {
    let kind = if kind.starts_with("TARI") {
        Kind::Tari
    } else {
        Kind::Canteen
    };
    let bytes = mpayd::store::encode_snapshot(&snapshot(kind)).expect("encode");
    bencher.bench(|| mpayd::store::decode_snapshot(divan::black_box(&bytes)).expect("decode"));
}

#[divan::bench(args = ["canteen (1 notice)", "TARI (4 notices)"])]
fn encode(bencher: divan::Bencher, kind: &str) {
    let kind = if kind.starts_with("TARI") {
        Kind::Tari
    } else {
        Kind::Canteen
    };
    let position = snapshot(kind);
    bencher.bench(|| mpayd::store::encode_snapshot(divan::black_box(&position)).expect("encode"));
}

use std::sync::Arc;

use jiff::Timestamp;
use mpay_common::ids::{DebtorCode, Nav};
use mpay_common::ledger::{Actor, Change, Event, InstalmentStatus, LedgerError, OfflineChannel};
use mpay_common::model::PositionData;
use mpay_common::money::Cents;

use sha2::Digest;

use super::*;
use crate::fixture::{self, Builder, Entity};

/// The options the store's tests run with: the engine is `MPAY_STORE_ENGINE` (sled if unset),
/// so that the whole suite runs on each engine.
pub(crate) fn options() -> StoreOptions {
    let engine = match std::env::var(kv::ENGINE_VAR) {
        Ok(name) => name.parse().expect("MPAY_STORE_ENGINE: sled or fjall"),
        Err(_) => kv::Engine::default(),
    };
    StoreOptions {
        engine,
        ..StoreOptions::default()
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, &options()).expect("open store")
}

fn loaded(data: PositionData) -> Event {
    Event::new(Timestamp::now(), Actor::System, Change::Loaded(data))
}

/// `count` canteen positions (one notice each) for the entity, with fresh notice numbers.
fn positions(store: &Store, entity: &Entity, count: u64) -> Vec<PositionData> {
    let range = store
        .reserve_sequence(&entity.fiscal_code, count)
        .expect("sequence");
    let first = range.start;
    let mut navs = range.map(|s| entity.iuv.notice(s).expect("nav"));
    let mut builder = Builder::new(entity, 7 + first);
    (first..first + count)
        .map(|n| builder.position(n, &mut navs).expect("position"))
        .collect()
}

/// Loads `data` in one commit; their ids, in order.
fn load_all(store: &Store, entity: &Entity, data: &[PositionData]) -> Vec<PositionId> {
    store
        .load_many(
            &entity.fiscal_code,
            data.iter().cloned().map(loaded).collect(),
        )
        .expect("load")
        .into_iter()
        .map(|r| r.expect("loaded"))
        .collect()
}

fn first_nav(data: &PositionData) -> Nav {
    data.instalments().next().expect("instalment").nav.clone()
}

#[test]
fn load_then_look_up_by_every_key_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entities = fixture::entities();
    let entity = &entities[0];
    let data = {
        let store = open(dir.path());
        let data = positions(&store, entity, 3);
        let results = store
            .load_many(
                &entity.fiscal_code,
                data.iter().cloned().map(loaded).collect(),
            )
            .expect("load");
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(store.stats().positions, 3);
        data
    };
    // Everything acknowledged is there after a reopen.
    let store = open(dir.path());
    assert_eq!(store.stats().positions, 3);
    for d in &data {
        let nav = first_nav(d);
        let (id, by_nav) = store
            .by_nav(&entity.fiscal_code, &nav)
            .expect("read")
            .expect("found by NAV");
        assert_eq!(by_nav.iupd, d.iupd);
        let (id2, _) = store
            .by_iupd(&entity.fiscal_code, &d.iupd)
            .expect("read")
            .expect("found by iupd");
        let (id3, _) = store
            .by_iuv(&entity.fiscal_code, &nav.iuv())
            .expect("read")
            .expect("found by IUV");
        assert_eq!((id, id), (id2, id3));
        let by_debtor = store.by_debtor(&d.debtor.code, None, 10).expect("debtor");
        if !matches!(d.debtor.code, DebtorCode::Anonymous) {
            assert!(by_debtor.iter().any(|(i, _)| *i == id));
        }
        // A NAV of the same entity number space under another entity is not found.
        assert!(
            store
                .by_nav(&entities[1].fiscal_code, &nav)
                .expect("read")
                .is_none()
        );
    }
}

#[test]
fn duplicates_are_refused_item_by_item_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let entities = fixture::entities();
    let entity = &entities[0];
    let data = positions(&store, entity, 2);
    store
        .load(&entity.fiscal_code, loaded(data[0].clone()))
        .expect("first load");
    let commits = store.stats().commits;

    // Same iupd again, a new position reusing the NAV, and the same iupd twice in one batch.
    let mut reuses_nav = data[1].clone();
    reuses_nav.options[0].instalments[0] = data[0].options[0].instalments[0].clone();
    let results = store
        .load_many(
            &entity.fiscal_code,
            vec![loaded(data[0].clone()), loaded(reuses_nav)],
        )
        .expect("load");
    assert!(matches!(&results[0], Err(WriteError::Exists(_))));
    assert!(matches!(&results[1], Err(WriteError::NavTaken { .. })));
    assert_eq!(
        store.stats().commits,
        commits,
        "a batch with no success commits nothing"
    );
    assert_eq!(store.stats().positions, 1);

    let results = store
        .load_many(
            &entity.fiscal_code,
            vec![loaded(data[1].clone()), loaded(data[1].clone())],
        )
        .expect("load");
    assert!(results[0].is_ok());
    assert!(matches!(&results[1], Err(WriteError::Exists(_))));
    assert_eq!(store.stats().positions, 2);
}

#[test]
fn invalid_position_is_refused_with_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let entities = fixture::entities();
    let entity = &entities[0];
    let mut data = positions(&store, entity, 1).remove(0);
    data.options[0].instalments[0].amount = Cents(1);
    let err = store
        .load(&entity.fiscal_code, loaded(data))
        .expect_err("refused");
    assert!(
        err.to_string()
            .contains("options[0].instalments[0].transfers"),
        "{err}"
    );
    assert_eq!(store.stats().positions, 0);
}

#[test]
fn append_applies_rules_and_keeps_the_ledger_foldable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let entities = fixture::entities();
    let entity = &entities[0];
    let data = positions(&store, entity, 1).remove(0);
    let nav = first_nav(&data);
    let amount = data.options[0].instalments[0].amount;
    let id = store.load(&entity.fiscal_code, loaded(data)).expect("load");
    let today = fixture::today();

    let cancel = Event::new(
        Timestamp::now(),
        Actor::Operator("anna".into()),
        Change::Cancelled,
    )
    .with_reason("wrong debtor");
    let p = store.append(id, cancel).expect("cancel");
    assert!(p.cancelled);
    // A cancelled position cannot be reduced: refused, nothing appended.
    let reduce = Event::new(
        Timestamp::now(),
        Actor::ApiKey("tributi".into()),
        Change::Reduced {
            nav: nav.clone(),
            old_amount: amount,
            new_amount: Cents::ZERO,
            transfer_amounts: vec![Cents::ZERO; 2],
            act: "act".into(),
        },
    );
    let err = store.append(id, reduce).expect_err("refused");
    assert!(matches!(
        err,
        WriteError::Rejected(LedgerError::PositionCancelled)
    ));
    assert_eq!(store.ledger(id).expect("ledger").len(), 2);

    store
        .append(
            id,
            Event::new(Timestamp::now(), Actor::System, Change::Restored),
        )
        .expect("restore");
    let pay = Event::new(
        Timestamp::now(),
        Actor::ApiKey("tributi".into()),
        Change::PaidOffline {
            nav: nav.clone(),
            channel: OfflineChannel::Counter,
            date: today,
            amount,
            reference: "R1".into(),
            transfer_amounts: None,
        },
    );
    let p = store.append(id, pay).expect("pay");
    let inst = p.instalment(&nav).expect("instalment");
    assert_eq!(
        p.instalment_status(inst, today),
        InstalmentStatus::PaidOffline
    );

    let ledger = store.ledger(id).expect("ledger");
    assert_eq!(ledger.len(), 4);
    assert!(ledger.windows(2).all(|w| w[0].commit < w[1].commit));
    assert_eq!(store.refold(id).expect("refold"), Some(p.clone()));
    assert_eq!(store.position(id).expect("read"), Some(p));
    assert!(matches!(
        store.append(
            999,
            Event::new(Timestamp::now(), Actor::System, Change::Cancelled)
        ),
        Err(WriteError::NotFound)
    ));
}

#[test]
fn a_plan_indexes_its_new_notices_and_refuses_taken_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let entities = fixture::entities();
    let entity = &entities[0];
    let data = positions(&store, entity, 3);
    let ids = load_all(&store, entity, &data);
    // Replace the first position's notice by the second position's notice: refused.
    let mut plan = data[1].options[0].clone();
    plan.kind = mpay_common::model::OptionKind::Plan;
    let taken = Change::Rescheduled {
        replaced: vec![first_nav(&data[0])],
        plan: plan.clone(),
    };
    let err = store
        .append(ids[0], Event::new(Timestamp::now(), Actor::System, taken))
        .expect_err("taken NAV");
    assert!(matches!(err, WriteError::NavTaken { .. }), "{err}");

    // With a fresh notice number the plan is indexed.
    let seq = store.reserve_sequence(&entity.fiscal_code, 1).expect("seq");
    let fresh = entity.iuv.notice(seq.start).expect("nav");
    plan.instalments[0].iuv = fresh.iuv();
    plan.instalments[0].nav = fresh.clone();
    let change = Change::Rescheduled {
        replaced: vec![first_nav(&data[0])],
        plan,
    };
    store
        .append(ids[0], Event::new(Timestamp::now(), Actor::System, change))
        .expect("rescheduled");
    let (found, _) = store
        .by_nav(&entity.fiscal_code, &fresh)
        .expect("read")
        .expect("new notice indexed");
    assert_eq!(found, ids[0]);
}

#[test]
fn concurrent_committers_share_flushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let entities = fixture::entities();
    let entity = &entities[0];
    let data = positions(&store, entity, 64 * 10);
    let before = store.stats();
    std::thread::scope(|s| {
        for chunk in data.chunks(10) {
            let store = Arc::clone(&store);
            let entity = entity.fiscal_code.clone();
            s.spawn(move || {
                for d in chunk {
                    store.load(&entity, loaded(d.clone())).expect("load");
                }
            });
        }
    });
    let after = store.stats();
    assert_eq!(after.positions, 640);
    assert_eq!(after.commits - before.commits, 640);
    // Every commit waited for a flush, but concurrent ones shared them.
    assert!(after.flushes - before.flushes < 640, "{before:?} {after:?}");
}

#[test]
fn a_store_from_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    {
        let options = options();
        let tuning = kv::Tuning {
            cache_bytes: options.cache_bytes,
            write_buffer_bytes: options.write_buffer_bytes,
        };
        let db = kv::Kv::open(dir.path(), options.engine, tuning).expect("engine");
        let data = db.table("data").expect("table");
        data.insert(keys::META_FORMAT, u64::from(STORE_FORMAT + 1).to_be_bytes())
            .expect("insert");
        db.flush().expect("flush");
    }
    let err = Store::open(dir.path(), &options()).err().expect("refused");
    assert!(matches!(err, StoreError::TooNew { found, .. } if found == STORE_FORMAT + 1));
    assert!(err.to_string().contains("newer mpayd"), "{err}");
}

#[test]
fn backup_is_a_consistent_cut_and_restores_to_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("store"));
    let entities = fixture::entities();
    let entity = &entities[1];
    // Enough data that the backup's 1 MiB buffer reaches the sink while the ledger is still being
    // scanned: the variation below then lands mid-scan, after the cut.
    const N: u64 = 3000;
    let data = positions(&store, entity, N);
    let ids = load_all(&store, entity, &data);
    store
        .append(
            ids[3],
            Event::new(Timestamp::now(), Actor::System, Change::Cancelled),
        )
        .expect("cancel");
    let flow = FlowRecord {
        entity: entity.fiscal_code.clone(),
        flow_id: "2026-01-02BCITITMM-1".into(),
        time: "2026-01-02T10:00:00".into(),
        received_at: Timestamp::now(),
        source: "test".into(),
        flow: None,
        error: Some("kept unread".into()),
        reported: 0,
        commit: 0,
        raw: "<x/>".into(),
    };
    assert!(matches!(
        store
            .record_flow(flow.clone(), Vec::new(), Vec::new())
            .expect("flow"),
        FlowRecorded::New(_)
    ));
    assert!(matches!(
        store
            .record_flow(flow, Vec::new(), Vec::new())
            .expect("flow"),
        FlowRecorded::Held(_)
    ));
    // A variation committed while the backup streams is after the cut: not in the backup.
    struct WritesDuring<'a> {
        file: Vec<u8>,
        store: &'a Store,
        id: PositionId,
        done: bool,
    }
    impl std::io::Write for WritesDuring<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.done {
                self.done = true;
                self.store
                    .append(
                        self.id,
                        Event::new(Timestamp::now(), Actor::System, Change::Cancelled),
                    )
                    .map_err(std::io::Error::other)?;
            }
            self.file.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = WritesDuring {
        file: Vec::new(),
        store: &store,
        id: ids[N as usize - 1],
        done: false,
    };
    let summary = store.backup(&mut sink).expect("backup");
    assert!(sink.done, "the variation happened during the backup");
    assert!(
        store
            .position(ids[N as usize - 1])
            .expect("read")
            .expect("there")
            .cancelled
    );
    assert_eq!(summary.positions, N);
    let file = sink.file;
    let path = dir.path().join("b.mpaybak");
    std::fs::write(&path, &file).expect("write");

    let target = dir.path().join("restored");
    let (restored, kept) = restore(&path, &target, options().engine, &mut |_| {}).expect("restore");
    assert!(kept.is_none());
    assert_eq!(restored.positions, N);
    let copy = open(&target);
    assert_eq!(copy.stats().positions, N);
    let flows = copy
        .flow_revisions(&entity.fiscal_code, "2026-01-02BCITITMM-1")
        .expect("flows");
    assert_eq!(flows.len(), 1, "flows travel with the backup");
    assert_eq!(
        copy.position(ids[3]).expect("read"),
        store.position(ids[3]).expect("read")
    );
    assert!(
        !copy
            .position(ids[N as usize - 1])
            .expect("read")
            .expect("there")
            .cancelled
    );
    let nav = first_nav(&data[10]);
    assert_eq!(
        copy.by_nav(&entity.fiscal_code, &nav)
            .expect("read")
            .map(|(i, _)| i),
        Some(ids[10])
    );
    // Sequences survive: the next notice number is not one already used.
    let next = copy.reserve_sequence(&entity.fiscal_code, 1).expect("seq");
    assert_eq!(next.start, N);
    // New positions get new ids.
    let more = positions(&copy, entity, 1);
    let id = copy
        .load(&entity.fiscal_code, loaded(more[0].clone()))
        .expect("load");
    assert_eq!(id, N);
}

#[test]
fn a_damaged_backup_is_refused_and_the_current_store_is_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let entities = fixture::entities();
    let entity = &entities[0];
    let mut file = Vec::new();
    {
        let store = open(&store_dir);
        let data = positions(&store, entity, 5);
        store
            .load_many(&entity.fiscal_code, data.into_iter().map(loaded).collect())
            .expect("load");
        store.backup(&mut file).expect("backup");
    }
    let path = dir.path().join("b.mpaybak");
    let damages: [fn(&mut Vec<u8>); 3] = [
        |f| {
            let n = f.len() / 2;
            f[n] ^= 0x55;
        },
        |f| f.truncate(f.len() - 3),
        |f| f[0] = b'X',
    ];
    for damage in damages {
        let mut bad = file.clone();
        damage(&mut bad);
        std::fs::write(&path, &bad).expect("write");
        let err = restore(&path, &store_dir, options().engine, &mut |_| {}).expect_err("refused");
        assert!(matches!(err, StoreError::Backup(_)), "{err}");
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(entries.len(), 2, "no leftovers: {entries:?}");
        assert_eq!(open(&store_dir).stats().positions, 5);
    }
    // The same backup in the first format (CRC-32 trailer) is still read.
    let body = &file[..file.len() - 32];
    let mut v1 = [b"MPAYBAK1".as_slice(), &body[8..]].concat();
    let crc = crc32fast::hash(&v1);
    v1.extend_from_slice(&crc.to_be_bytes());
    std::fs::write(&path, &v1).expect("write");
    assert_eq!(verify(&path).expect("a format-1 backup").positions, 5);

    std::fs::write(&path, &file).expect("write");
    let summary = verify(&path).expect("verify");
    let whole: String = sha2::Sha256::digest(&file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(summary.file_sha256, Some(whole));
    let (_, kept) = restore(&path, &store_dir, options().engine, &mut |_| {}).expect("restore");
    let kept = kept.expect("old store kept aside");
    assert_eq!(open(&kept).stats().positions, 5);
}

fn receipt_record(store_entity: &Entity, nav: &Nav, id: &str) -> ReceiptRecord {
    ReceiptRecord {
        entity: store_entity.fiscal_code.clone(),
        receipt_id: id.into(),
        notice_entity: store_entity.fiscal_code.to_string(),
        nav: nav.to_string(),
        iuv: nav.iuv().to_string(),
        amount: Cents(1000),
        psp: "BCITITMM".into(),
        station: "01111111116_01".into(),
        v2: true,
        stand_in: false,
        received_at: Timestamp::now(),
        position: None,
        disposition: Disposition::Orphan,
        commit: 0,
        raw: "<receipt/>".into(),
    }
}

fn paid(nav: &Nav, id: &str, amount: Cents) -> Event {
    Event::new(
        Timestamp::now(),
        Actor::Node,
        Change::PaidViaPagoPa {
            nav: nav.clone(),
            receipt_id: id.into(),
            amount,
            psp: "BCITITMM".into(),
            paid_at: Timestamp::now(),
            transfers: Vec::new(),
            flags: Vec::new(),
        },
    )
}

#[test]
fn a_receipt_is_stored_once_with_its_payment_and_survives_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("store"));
    let entities = fixture::entities();
    let entity = &entities[0];
    let data = positions(&store, entity, 2);
    let ids = load_all(&store, entity, &data);
    let nav = first_nav(&data[0]);
    let due = data[0].options[0].instalments[0].amount;

    let first = store
        .record_receipt(
            receipt_record(entity, &nav, "r1"),
            Some(paid(&nav, "r1", due)),
        )
        .expect("stored");
    assert!(matches!(&first, Recorded::New(r) if r.disposition == Disposition::Applied));
    let replay = store
        .record_receipt(
            receipt_record(entity, &nav, "r1"),
            Some(paid(&nav, "r1", due)),
        )
        .expect("replayed");
    assert!(matches!(replay, Recorded::Replay(_)));
    assert_eq!(
        store.ledger(ids[0]).expect("ledger").len(),
        2,
        "applied once"
    );
    let double = store
        .record_receipt(
            receipt_record(entity, &nav, "r2"),
            Some(paid(&nav, "r2", due)),
        )
        .expect("stored");
    assert!(matches!(&double, Recorded::New(r) if r.disposition == Disposition::DoublePayment));
    let position = store.position(ids[0]).expect("read").expect("there");
    assert_eq!(position.double_payments().count(), 1);
    assert_eq!(
        position
            .instalment(&nav)
            .and_then(|i| i.receipts().next())
            .and_then(|r| r.receipt_id()),
        Some("r1")
    );
    let orphan = store
        .record_receipt(receipt_record(entity, &nav, "r3"), None)
        .expect("stored");
    assert!(matches!(&orphan, Recorded::New(r) if r.disposition == Disposition::Orphan));
    // A payment for a notice no position has is kept as an orphan too.
    let unknown = entity.iuv.notice(999_999).expect("nav");
    let stray = store
        .record_receipt(
            receipt_record(entity, &unknown, "r4"),
            Some(paid(&unknown, "r4", due)),
        )
        .expect("stored");
    assert!(matches!(&stray, Recorded::New(r) if r.disposition == Disposition::Orphan));
    assert_eq!(store.receipts().count(), 4);

    let mut file = Vec::new();
    store.backup(&mut file).expect("backup");
    let path = dir.path().join("b.mpaybak");
    std::fs::write(&path, &file).expect("write");
    let target = dir.path().join("restored");
    restore(&path, &target, options().engine, &mut |_| {}).expect("restore");
    let copy = open(&target);
    assert_eq!(copy.receipts().count(), 4);
    let r1 = copy
        .receipt(&entity.fiscal_code, "r1")
        .expect("read")
        .expect("kept");
    assert_eq!(r1.raw, "<receipt/>");
    assert_eq!(copy.position(ids[0]).expect("read"), Some(position));
}

fn exchange(n: u64) -> (JournalEntry, JournalBodies) {
    let at = Timestamp::now();
    (
        JournalEntry {
            seq: 0,
            at,
            direction: Direction::Inbound,
            operation: "paVerifyPaymentNotice".into(),
            entity: None,
            station: None,
            nav: None,
            iuv: None,
            outcome: "OK".into(),
            fault_code: None,
            latency_us: 1,
            remote: None,
            request_bytes: 0,
            response_bytes: 0,
            body: None,
        },
        JournalBodies {
            at,
            request: format!("<request {n}/>"),
            response: format!("<response {n}/>"),
        },
    )
}

#[test]
fn journal_bodies_are_checked_and_never_read_from_bytes_written_after_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bodies_dir = dir.path().join("journal-bodies");
    let store = open(dir.path());
    store
        .append_journal((0..3).map(exchange).collect())
        .expect("append");
    assert_eq!(
        store
            .journal_bodies(2)
            .expect("read")
            .expect("kept")
            .request,
        "<request 2/>"
    );
    // The day's files go missing (a restore brings back summaries, not bodies); the next
    // process writes the same day again.
    drop(store);
    for entry in std::fs::read_dir(&bodies_dir).expect("ls") {
        std::fs::remove_file(entry.expect("entry").path()).expect("remove");
    }
    let store = open(dir.path());
    store
        .append_journal((3..6).map(exchange).collect())
        .expect("append");
    // The old summaries find nothing rather than the new exchanges' bytes at their offsets.
    for seq in 0..3 {
        assert!(store.journal_bodies(seq).expect("read").is_none(), "{seq}");
    }
    assert_eq!(
        store
            .journal_bodies(4)
            .expect("read")
            .expect("kept")
            .response,
        "<response 4/>"
    );
    // Another start writes another segment; both read back.
    drop(store);
    let store = open(dir.path());
    store.append_journal(vec![exchange(6)]).expect("append");
    let files = std::fs::read_dir(&bodies_dir).expect("ls").count();
    assert_eq!(files, 2, "one segment per process and day");
    for seq in 3..7 {
        let b = store.journal_bodies(seq).expect("read").expect("kept");
        assert_eq!(b.request, format!("<request {seq}/>"));
    }
    // A damaged byte is reported, naming the file, not served.
    let entry = store.journal(6, 1).expect("journal").remove(0);
    let body = entry.body.expect("body");
    let path = std::fs::read_dir(&bodies_dir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.to_string_lossy()
                .ends_with(&format!("-{}.log", body.segment))
        })
        .expect("the segment file");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[body.offset as usize + 3] ^= 0x20;
    std::fs::write(&path, &bytes).expect("damage");
    let err = store.journal_bodies(6).expect_err("refused");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
}

#[test]
fn the_journal_keeps_summaries_and_prunes_bodies_by_age_then_by_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let record = |n: u64, at: Timestamp| {
        (
            JournalEntry {
                seq: 0,
                at,
                direction: Direction::Inbound,
                operation: "paVerifyPaymentNotice".into(),
                entity: Some("00123456782".into()),
                station: None,
                nav: Some(format!("{n}")),
                iuv: None,
                outcome: "OK".into(),
                fault_code: None,
                latency_us: 100,
                remote: None,
                request_bytes: 100,
                response_bytes: 100,
                body: None,
            },
            JournalBodies {
                at,
                request: format!("<request {n}/>"),
                response: "r".repeat(100),
            },
        )
    };
    let day = jiff::SignedDuration::from_hours(24);
    let now = Timestamp::now();
    let (old, older) = (now - day * 100, now - day * 120);
    // 2 exchanges 120 days ago, 3 exchanges 100 days ago, 5 today.
    let at = |n: u64| match n {
        0..2 => older,
        2..5 => old,
        _ => now,
    };
    let seqs = store
        .append_journal((0..10).map(|n| record(n, at(n))).collect())
        .expect("append");
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    let size = |n: u64| (format!("<request {n}/>").len() + 100) as u64;
    assert_eq!(store.journal_body_bytes(), (0..10).map(size).sum::<u64>());
    let bodies = store.journal_bodies(4).expect("read").expect("kept");
    assert_eq!(bodies.request, "<request 4/>");
    assert_eq!(bodies.response.len(), 100);

    // Within 110 days: only the oldest day goes.
    let days = store
        .prune_journal_bodies(std::time::Duration::from_secs(110 * 86_400), 1 << 30)
        .expect("prune");
    assert_eq!(days, 1);
    assert!(store.journal_bodies(1).expect("read").is_none());
    assert!(store.journal_bodies(2).expect("read").is_some());
    // Over the byte budget: older days go first, today's file always stays.
    let days = store
        .prune_journal_bodies(std::time::Duration::from_secs(110 * 86_400), 1)
        .expect("prune");
    assert_eq!(days, 1);
    assert!(store.journal_bodies(4).expect("read").is_none());
    assert_eq!(
        store
            .journal_bodies(9)
            .expect("read")
            .expect("today's")
            .request,
        "<request 9/>"
    );
    assert_eq!(store.journal_body_bytes(), (5..10).map(size).sum::<u64>());

    // Summaries stay, all of them, and sequence numbers go on after a reopen.
    assert_eq!(store.journal(0, 100).expect("journal").len(), 10);
    assert_eq!(store.journal_tail(1).expect("tail")[0].seq, 9);
    drop(store);
    let store = open(dir.path());
    let seqs = store
        .append_journal(vec![record(10, Timestamp::now())])
        .expect("append");
    assert_eq!(seqs, vec![10]);
    assert_eq!(
        store
            .journal_bodies(10)
            .expect("read")
            .expect("kept")
            .request,
        "<request 10/>"
    );
    assert_eq!(
        store
            .journal_bodies(9)
            .expect("read")
            .expect("kept")
            .request,
        "<request 9/>"
    );

    // A busy day's bodies go to new segments as they grow, so that today's can be pruned too,
    // all but the segment being written.
    let big = |n: u64| {
        let (entry, mut bodies) = record(n, Timestamp::now());
        bodies.response = "b".repeat(8 << 20);
        (entry, bodies)
    };
    let seqs = store
        .append_journal((0..9).map(big).collect())
        .expect("append");
    store
        .prune_journal_bodies(std::time::Duration::from_secs(110 * 86_400), 1)
        .expect("prune");
    assert!(store.journal_bodies(seqs[0]).expect("read").is_none());
    assert!(
        store.journal_bodies(10).expect("read").is_none(),
        "today's first segment"
    );
    let last = store
        .journal_bodies(seqs[8])
        .expect("read")
        .expect("the segment being written");
    assert_eq!(last.response.len(), 8 << 20);
    assert!(store.journal_body_bytes() < 2 * (8 << 20));
}

#[test]
fn a_prepared_load_stores_what_a_direct_load_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entities = fixture::entities();
    let entity = &entities[0];
    let store = open(dir.path());
    let data = positions(&store, entity, 3);
    let event = loaded(data[0].clone());
    // The ledger value is spliced from the bare event: it must be the stored event's encoding.
    for commit in [0, 1, 127, 128, 300, u64::MAX] {
        let spliced =
            codec::with_commit(commit, &codec::encode_bare(&event).expect("bare")).expect("splice");
        let whole = codec::encode(&StoredEvent {
            commit,
            event: event.clone(),
        })
        .expect("encode");
        assert_eq!(spliced, whole, "commit {commit}");
    }
    let prepared = data
        .iter()
        .map(|d| Store::prepare_load(&entity.fiscal_code, &loaded(d.clone())).expect("prepare"))
        .collect();
    let ids: Vec<PositionId> = store
        .load_prepared(&entity.fiscal_code, 0, prepared)
        .expect("load")
        .into_iter()
        .map(|r| r.expect("loaded"))
        .collect();
    for (id, d) in ids.iter().zip(&data) {
        let ledger = store.ledger(*id).expect("ledger");
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger[0].event.change, Change::Loaded(d.clone()));
        let (found, _) = store
            .by_nav(&entity.fiscal_code, &first_nav(d))
            .expect("lookup")
            .expect("indexed");
        assert_eq!(found, *id);
    }
    // The same positions again: refused, one by one, and nothing changes.
    let again = data
        .iter()
        .map(|d| Store::prepare_load(&entity.fiscal_code, &loaded(d.clone())).expect("prepare"))
        .collect();
    let commits = store.stats().commits;
    let results = store
        .load_prepared(&entity.fiscal_code, 0, again)
        .expect("load");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(WriteError::Exists(_))))
    );
    assert_eq!(store.stats().commits, commits);
}

#[test]
fn numbers_taken_are_stored_by_the_load_that_uses_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entities = fixture::entities();
    let entity = &entities[0];
    let cf = &entity.fiscal_code;
    let taken = {
        let store = open(dir.path());
        let first = store.take_numbers(cf, 3).expect("take");
        let second = store.take_numbers(cf, 2).expect("take");
        assert_eq!(second.start, first.end, "handed out once");
        // Only the second range is used and committed: its end is what the store keeps.
        let mut navs = second.clone().map(|s| entity.iuv.notice(s).expect("nav"));
        let mut builder = Builder::new(entity, 11);
        let loads = second
            .clone()
            .map(|n| {
                let data = builder.position(n, &mut navs).expect("position");
                Store::prepare_load(cf, &loaded(data)).expect("prepare")
            })
            .collect();
        let results = store.load_prepared(cf, second.end, loads).expect("load");
        assert!(results.iter().all(Result::is_ok));
        // A load for another entity is refused.
        let other = &entities[1];
        let mut navs = (0..1).map(|s| other.iuv.notice(s).expect("nav"));
        let data = Builder::new(other, 12)
            .position(0, &mut navs)
            .expect("position");
        let foreign = Store::prepare_load(&other.fiscal_code, &loaded(data)).expect("prepare");
        let results = store.load_prepared(cf, 0, vec![foreign]).expect("load");
        assert!(matches!(results[0], Err(WriteError::Conflict(_))));
        second
    };
    // After a restart nothing below the stored end is handed out again.
    let store = open(dir.path());
    assert_eq!(store.take_numbers(cf, 1).expect("take").start, taken.end);
    let reserved = store.reserve_sequence(cf, 4).expect("reserve");
    assert_eq!(reserved.start, taken.end + 1);
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.take_numbers(cf, 1).expect("take").start,
        reserved.end,
        "a reservation is durable on its own"
    );
}

#[test]
fn by_debtor_gives_the_newest_first_of_one_entity_or_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entities = fixture::entities();
    let (castelverde, montalto) = (&entities[0], &entities[1]);
    let store = open(dir.path());
    let debtor: DebtorCode = "RSSMRA80A01H501U".parse().expect("code");
    let mut ids = Vec::new();
    // Alternating entities: castelverde, montalto, castelverde, ...
    for round in 0..3 {
        for entity in [castelverde, montalto] {
            let mut data = positions(&store, entity, 1).remove(0);
            data.iupd = format!("D-{round}").parse().expect("iupd");
            data.debtor.code = debtor.clone();
            let id = store.load(&entity.fiscal_code, loaded(data)).expect("load");
            ids.push((id, entity.fiscal_code.clone()));
        }
    }
    let found = |entity: Option<&EntityFiscalCode>, limit| -> Vec<PositionId> {
        store
            .by_debtor(&debtor, entity, limit)
            .expect("by debtor")
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    let newest_first: Vec<PositionId> = ids.iter().rev().map(|(id, _)| *id).collect();
    assert_eq!(found(None, 10), newest_first);
    assert_eq!(found(None, 2), newest_first[..2]);
    // Filtered before the limit: the two newest of castelverde, not whatever came first.
    let castelverde_newest: Vec<PositionId> = ids
        .iter()
        .rev()
        .filter(|(_, e)| e == &castelverde.fiscal_code)
        .map(|(id, _)| *id)
        .take(2)
        .collect();
    assert_eq!(found(Some(&castelverde.fiscal_code), 2), castelverde_newest);
}

#[test]
fn a_format_1_store_is_read_and_its_positions_folded_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let entities = fixture::entities();
    let entity = &entities[0];
    let (id, nav, expected) = {
        let store = open(&path);
        let data = positions(&store, entity, 1);
        let id = load_all(&store, entity, &data)[0];
        let nav = first_nav(&data[0]);
        let pay = |change| Event::new(Timestamp::now(), Actor::System, change);
        store
            .append(
                id,
                pay(Change::PaidOffline {
                    nav: nav.clone(),
                    channel: OfflineChannel::Counter,
                    date: fixture::today(),
                    amount: Cents(100),
                    reference: "SLIP-1".into(),
                    transfer_amounts: None,
                }),
            )
            .expect("offline");
        store.append(id, pay(Change::Cancelled)).expect("cancel");
        let expected = store.position(id).expect("read").expect("there");
        // Write everything back as format 1 wrote it: old ledger layout, old snapshot.
        for entry in store.data.scan_prefix(keys::ledger_prefix(id)) {
            let (k, v) = entry.expect("entry");
            let stored: StoredEvent = codec::decode(&v, "event").expect("decode");
            let old = legacy::encode_v1(&stored).expect("expressible in format 1");
            store.data.insert(k, old).expect("insert");
        }
        let mut snapshot = vec![1];
        snapshot.extend(postcard::to_stdvec(&entity.fiscal_code).expect("entity"));
        snapshot.extend([0xff, 0xfe]);
        store
            .data
            .insert(keys::position(id), snapshot)
            .expect("snapshot");
        store
            .data
            .insert(keys::META_FORMAT, 1u64.to_be_bytes())
            .expect("format");
        store.db.flush().expect("flush");
        (id, nav, expected)
    };
    let store = open(&path);
    let upgraded = store.position(id).expect("read").expect("there");
    assert_eq!(upgraded.options, expected.options);
    assert_eq!(upgraded.cancelled, expected.cancelled);
    assert_eq!(upgraded.events, expected.events);
    assert_eq!(store.refold(id).expect("refold"), Some(upgraded.clone()));
    let inst = upgraded.instalment(&nav).expect("notice");
    assert_eq!(inst.paid().iter().map(|c| c.get()).sum::<i64>(), 100);
    let format = store
        .data
        .get(keys::META_FORMAT)
        .expect("get")
        .expect("set");
    assert_eq!(keys::decode_u64(&format), Some(u64::from(STORE_FORMAT)));
}

#[test]
fn the_changes_feed_pages_whole_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let entities = fixture::entities();
    let entity = &entities[0];
    // Two commits of 30 and 5 positions, read ten at a time: nothing is skipped.
    let first = load_all(&store, entity, &positions(&store, entity, 30));
    let second = load_all(&store, entity, &positions(&store, entity, 5));
    let page = store.changes_after(0, 10).expect("page");
    assert_eq!(
        page.len(),
        30,
        "the first page ends with the whole first commit"
    );
    let after = page.last().expect("entries").3.commit;
    let next = store.changes_after(after, 10).expect("page");
    let ids: Vec<PositionId> = next.iter().map(|(id, ..)| *id).collect();
    assert_eq!(ids, second);
    let mut walked = Vec::new();
    store
        .entries_between(1, Timestamp::MAX, |id, _, _| {
            walked.push(id);
            Ok(())
        })
        .expect("walk");
    assert_eq!(walked, [first, second].concat());
    let e = store
        .first_change_after(0)
        .expect("first")
        .expect("an entry");
    assert_eq!(e.commit, page[0].3.commit);
}

/// The store reads identifiers back as their stored text without checking them again
/// (`ids::id_serde`): every kind must come back as the same value, debtor kinds included.
#[test]
fn snapshot_identifiers_read_back_as_written() {
    let [entity, ..] = fixture::entities();
    let mut navs = (0..3).map(|s| entity.iuv.notice(s).expect("nav"));
    let mut builder = Builder::new(&entity, 11);
    let base = builder.position(1, &mut navs).expect("position");
    let codes = [
        "RSSMRA85T10A562S".parse::<DebtorCode>().expect("person"),
        "00743110157".parse().expect("legal"),
        DebtorCode::Anonymous,
    ];
    for code in codes {
        let mut data = base.clone();
        data.debtor.code = code.clone();
        data.options[0].instalments[0].transfers[0].target =
            mpay_common::model::TransferTarget::Postal(
                "IT46X0760103200000000123456".parse().expect("postal IBAN"),
            );
        let position = Position::load(entity.fiscal_code.clone(), &loaded(data)).expect("load");
        let back = decode_snapshot(&encode_snapshot(&position).expect("encode")).expect("decode");
        assert_eq!(back, position);
        assert_eq!(back.debtor.code, code);
    }
}

#[test]
fn a_bulk_loads_search_entries_go_in_as_a_run_and_a_crash_leaves_them_to_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entities = fixture::entities();
    let entity = &entities[0];
    let cf = &entity.fiscal_code;
    let debtor: DebtorCode = "RSSMRA80A01H501U".parse().expect("code");
    let moved: DebtorCode = "VRDLGU75B02F205A".parse().expect("code");
    let prepared = |store: &Store, count, prefix: &str| -> Vec<PreparedLoad> {
        positions(store, entity, count)
            .into_iter()
            .enumerate()
            .map(|(n, mut d)| {
                d.iupd = format!("{prefix}-{n}").parse().expect("iupd");
                d.debtor.code = debtor.clone();
                d.debtor.name = format!("Maria {prefix} Rossi");
                Store::prepare_load(cf, &loaded(d)).expect("prepare")
            })
            .collect()
    };
    let ids = |found: Vec<(PositionId, Position)>| -> Vec<PositionId> {
        found.into_iter().map(|(id, _)| id).collect()
    };
    let (first, second) = {
        let store = open(dir.path());
        let mut run = SearchRun::new(7);
        let first: Vec<PositionId> = store
            .load_prepared_deferred(cf, 0, prepared(&store, 3, "A"), &mut run)
            .expect("load")
            .into_iter()
            .map(|r| r.expect("loaded"))
            .collect();
        // Committed and found by their notices; by debtor or name only once the run is
        // written, where the engine takes runs (on sled they went with the commit).
        assert!(
            store
                .by_iupd(cf, &"A-0".parse().expect("iupd"))
                .expect("iupd")
                .is_some()
        );
        if !store.data.takes_runs() {
            assert_eq!(store.by_debtor(&debtor, None, 10).expect("debtor").len(), 3);
            assert!(store.pending_search_jobs().expect("pending").is_empty());
            assert!(run.is_empty());
            return;
        }
        assert!(
            store
                .by_debtor(&debtor, None, 10)
                .expect("debtor")
                .is_empty()
        );
        assert_eq!(store.pending_search_jobs().expect("pending"), vec![7]);
        // The first position changes debtor before the run is written: the run's entry for
        // the old debtor is stale and must not be served.
        let mut changed = store
            .position(first[0])
            .expect("read")
            .expect("there")
            .debtor;
        changed.code = moved.clone();
        changed.name = "Giulia Verdi".into();
        let event = Event::new(
            Timestamp::now(),
            Actor::System,
            Change::DebtorUpdated(changed),
        );
        store.append(first[0], event).expect("debtor changed");
        assert!(!run.is_empty());
        store.write_search_run(&mut run).expect("run written");
        assert!(run.is_empty());
        assert!(store.pending_search_jobs().expect("pending").is_empty());
        assert_eq!(
            ids(store.by_debtor(&debtor, None, 10).expect("debtor")),
            vec![first[2], first[1]]
        );
        // A page through the index reads an entry per position, the stale one included, so
        // that a caller paging by entries read never stops early (it checks the debtor).
        assert_eq!(
            ids(store.by_debtor_from(&debtor, 0, 10).expect("page")),
            first
        );
        assert_eq!(
            ids(store.by_debtor(&moved, None, 10).expect("debtor")),
            vec![first[0]]
        );
        assert_eq!(
            ids(store.by_name_prefix("rossi", None, 10).expect("name")),
            vec![first[1], first[2]]
        );
        assert_eq!(
            ids(store.by_name_prefix("verdi", None, 10).expect("name")),
            vec![first[0]]
        );
        // A second batch, and a crash before its run is written.
        let second: Vec<PositionId> = store
            .load_prepared_deferred(cf, 0, prepared(&store, 2, "B"), &mut run)
            .expect("load")
            .into_iter()
            .map(|r| r.expect("loaded"))
            .collect();
        (first, second)
    };
    let store = open(dir.path());
    assert_eq!(store.pending_search_jobs().expect("pending"), vec![7]);
    assert_eq!(
        store.by_name_prefix("maria b", None, 10).expect("name"),
        Vec::new()
    );
    assert_eq!(store.rebuild_pending(7).expect("rebuilt"), 2);
    assert!(store.pending_search_jobs().expect("pending").is_empty());
    assert_eq!(
        ids(store.by_name_prefix("maria b", None, 10).expect("name")),
        second
    );
    let mut all = vec![second[1], second[0], first[2], first[1]];
    assert_eq!(
        ids(store.by_debtor(&debtor, None, 10).expect("debtor")),
        all
    );
    // Everything again after a reopen: the run's tables are durable.
    drop(store);
    let store = open(dir.path());
    all.sort_unstable();
    let mut found = ids(store.by_debtor(&debtor, None, 10).expect("debtor"));
    found.sort_unstable();
    assert_eq!(found, all);
    assert_eq!(store.rebuild_pending(7).expect("nothing left"), 0);
}

#[test]
fn an_ingested_run_reads_back_in_order_across_the_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // Keys of two indexes (two keyspaces on fjall), one already there from a commit.
    let mut keys: Vec<Vec<u8>> = (0u32..3_000)
        .map(|n| {
            let mut k = vec![if n % 2 == 0 {
                keys::BY_DEBTOR
            } else {
                keys::BY_NAME
            }];
            k.extend_from_slice(&n.to_be_bytes());
            k
        })
        .collect();
    store.data.insert(keys[10].clone(), []).expect("insert");
    keys.sort_unstable();
    store.data.ingest(&keys).expect("ingest");
    store.group.begin().wait_durable().expect("durable");
    drop(store);
    let store = open(dir.path());
    let read: Vec<Vec<u8>> = store
        .data
        .range([keys::BY_DEBTOR].as_slice()..[keys::BY_NAME + 1].as_slice())
        .map(|e| e.expect("entry").0.to_vec())
        .collect();
    assert_eq!(read, keys);
}

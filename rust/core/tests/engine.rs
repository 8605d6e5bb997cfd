//! Engine-level tests: snapshot isolation, OCC, write skew, durability through SQLite,
//! recovery refusing corrupt or torn records, and the conflict check against a naive model.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use reactive_core::catalog::Catalog;
use reactive_core::engine::{Engine, EngineConfig};
use reactive_core::error::Error;
use reactive_core::id::TableNumber;
use reactive_core::interval::{Interval, IntervalSet};
use reactive_core::log::recovery::{LoadedState, Loader};
use reactive_core::mvcc::MvccStore;
use reactive_core::sqlite::SqlitePersistence;
use reactive_core::timestamp::Timestamp;
use reactive_core::value::{Object, Value};
use reactive_core::write_log::{WriteLog, WriteLogConfig, WriteLogEntry};

fn empty_engine() -> Engine {
    let state = LoadedState {
        catalog: Catalog::new(),
        store: MvccStore::new(),
        max_ts: Timestamp(0),
        commits: 0,
        revisions: 0,
    };
    Engine::new(state, EngineConfig::default())
}

fn obj(pairs: &[(&str, Value)]) -> Object {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Persist and publish everything queued (as the Python flusher does, without a backend).
fn flush(engine: &Engine) {
    let batch = engine.take_batch();
    engine.publish(&batch);
}

fn flush_to(engine: &Engine, store: &SqlitePersistence) {
    let batch = engine.take_batch();
    store.write_batch(&batch).unwrap();
    engine.publish(&batch);
}

#[test]
fn snapshot_isolation() {
    let engine = empty_engine();
    let table = engine.create_table("t").unwrap();
    let mut a = engine.begin(false);
    let b = engine.begin(true);
    let doc = a.insert(table, obj(&[("x", Value::Int64(1))])).unwrap();
    engine.commit(a).unwrap().unwrap();
    flush(&engine);
    let mut b = b;
    assert!(
        b.get(&doc.id).unwrap().is_none(),
        "an older snapshot must not see the commit"
    );
    let mut c = engine.begin(true);
    assert!(
        c.get(&doc.id).unwrap().is_some(),
        "a later snapshot sees it"
    );
}

#[test]
fn write_skew_is_refused() {
    let engine = empty_engine();
    let table = engine.create_table("doctors").unwrap();
    let mut setup = engine.begin(false);
    let alice = setup
        .insert(table, obj(&[("on_call", Value::Boolean(true))]))
        .unwrap();
    let bob = setup
        .insert(table, obj(&[("on_call", Value::Boolean(true))]))
        .unwrap();
    engine.commit(setup).unwrap();
    flush(&engine);
    // Both read both doctors at the same snapshot and each takes itself off call.
    let mut t1 = engine.begin(false);
    let mut t2 = engine.begin(false);
    for t in [&mut t1, &mut t2] {
        assert!(t.get(&alice.id).unwrap().is_some());
        assert!(t.get(&bob.id).unwrap().is_some());
    }
    t1.replace(&alice.id, obj(&[("on_call", Value::Boolean(false))]))
        .unwrap();
    t2.replace(&bob.id, obj(&[("on_call", Value::Boolean(false))]))
        .unwrap();
    engine.commit(t1).unwrap().unwrap();
    match engine.commit(t2) {
        Err(Error::Conflict(c)) => {
            assert_eq!(c.table, "doctors");
        }
        other => panic!("write skew must be refused, got {other:?}"),
    }
}

#[test]
fn timestamps_increase_and_commits_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let mut ids = Vec::new();
    let mut last_ts = Timestamp(0);
    for round in 0..3 {
        let store = SqlitePersistence::open(&path).unwrap();
        let engine = Engine::new(store.load().unwrap(), EngineConfig::default());
        let table = engine.create_table("t").unwrap();
        {
            let mut check = engine.begin(true);
            for id in &ids {
                assert!(check.get(id).unwrap().is_some(), "round {round}: lost {id}");
            }
        }
        let mut txn = engine.begin(false);
        let doc = txn
            .insert(table, obj(&[("round", Value::Int64(round))]))
            .unwrap();
        let ts = engine.commit(txn).unwrap().unwrap();
        assert!(ts > last_ts, "timestamps must increase across reopen");
        last_ts = ts;
        flush_to(&engine, &store);
        ids.push(doc.id);
        let report = store
            .check(engine.catalog(), &engine.store().read(), ts)
            .unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}

fn corrupt_and_reopen(sql: &str) -> Error {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    {
        let store = SqlitePersistence::open(&path).unwrap();
        let engine = Engine::new(store.load().unwrap(), EngineConfig::default());
        let table = engine.create_table("t").unwrap();
        for i in 0..5 {
            let mut txn = engine.begin(false);
            let d = txn.insert(table, obj(&[("i", Value::Int64(i))])).unwrap();
            engine.commit(txn).unwrap();
            flush_to(&engine, &store);
            let mut txn = engine.begin(false);
            txn.get(&d.id).unwrap();
            txn.replace(&d.id, obj(&[("i", Value::Int64(i + 100))]))
                .unwrap();
            engine.commit(txn).unwrap();
            flush_to(&engine, &store);
        }
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    let store = SqlitePersistence::open(&path).unwrap();
    match store.load() {
        Err(e) => e,
        Ok(_) => panic!("corruption not detected: {sql}"),
    }
}

#[test]
fn recovery_refuses_corrupt_and_torn_records() {
    let e = corrupt_and_reopen(
        "UPDATE documents SET value = CAST(value || x'00' AS BLOB) \
         WHERE ts = (SELECT min(ts) FROM documents)",
    );
    assert!(
        matches!(e, Error::Corrupt(_)) && e.to_string().contains("checksum"),
        "{e}"
    );
    let e = corrupt_and_reopen(
        "UPDATE documents SET value = 'text' WHERE ts = (SELECT min(ts) FROM documents)",
    );
    assert!(
        matches!(e, Error::Corrupt(_)) && e.to_string().contains("column value"),
        "{e}"
    );
    let e = corrupt_and_reopen(
        "DELETE FROM indexes WHERE (index_id, key, ts) IN \
         (SELECT index_id, key, ts FROM indexes LIMIT 1)",
    );
    let e2 = corrupt_and_reopen("DELETE FROM indexes WHERE ts = (SELECT max(ts) FROM indexes)");
    for e in [e, e2] {
        assert!(
            matches!(e, Error::Corrupt(_)) && e.to_string().contains("torn"),
            "{e}"
        );
    }
    let e = corrupt_and_reopen("DELETE FROM commits WHERE ts = (SELECT max(ts) FROM commits)");
    assert!(e.to_string().contains("no commit record"), "{e}");
    let e = corrupt_and_reopen(
        "UPDATE commits SET document_count = 2 WHERE ts = (SELECT min(ts) FROM commits)",
    );
    assert!(e.to_string().contains("checksum"), "{e}");
}

#[test]
fn loader_never_half_applies() {
    // A loader fed one good commit and one torn one refuses everything.
    let engine = empty_engine();
    let table = engine.create_table("t").unwrap();
    let mut txn = engine.begin(false);
    txn.insert(table, obj(&[])).unwrap();
    engine.commit(txn).unwrap();
    let batch = engine.take_batch();
    let mut loader = Loader::new((*engine.catalog()).clone(), Timestamp(0));
    for r in batch.commits.commit_records() {
        loader.add_commit(*r).unwrap();
    }
    for r in batch.commits.revisions() {
        loader.add_revision(r.clone()).unwrap();
    }
    // No index entries: the commit is torn.
    assert!(loader.finish().is_err());
}

/// Serializes `take_batch` + `publish` across the test's threads (the flusher's role).
static PUBLISH: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

#[test]
fn concurrent_transfers_keep_the_total() {
    let engine = Arc::new(empty_engine());
    let table = engine.create_table("accounts").unwrap();
    let mut setup = engine.begin(false);
    let ids: Vec<_> = (0..4)
        .map(|_| {
            setup
                .insert(table, obj(&[("balance", Value::Int64(100))]))
                .unwrap()
                .id
        })
        .collect();
    engine.commit(setup).unwrap();
    flush(&engine);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let engine = Arc::clone(&engine);
            let ids = ids.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                let mut attempt = 0u64;
                while done < 50 {
                    attempt += 1;
                    let from = ids[((t + attempt) % 4) as usize];
                    let to = ids[((t + attempt + 1) % 4) as usize];
                    let mut txn = engine.begin(false);
                    let balance = |d: &Object| match d.get("balance") {
                        Some(Value::Int64(b)) => *b,
                        _ => panic!("no balance"),
                    };
                    let a = balance(&txn.get(&from).unwrap().unwrap().fields());
                    let b = balance(&txn.get(&to).unwrap().unwrap().fields());
                    let amount = 7.min(a);
                    txn.replace(&from, obj(&[("balance", Value::Int64(a - amount))]))
                        .unwrap();
                    txn.replace(&to, obj(&[("balance", Value::Int64(b + amount))]))
                        .unwrap();
                    match engine.commit(txn) {
                        Ok(_) => done += 1,
                        Err(Error::Conflict(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                    // Publish whatever is queued (any thread may do it; publication is in order
                    // because take_batch and publish happen under this lock).
                    let _g = PUBLISH.lock();
                    flush(&engine);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    flush(&engine);
    let mut txn = engine.begin(true);
    let total: i64 = ids
        .iter()
        .map(|id| {
            match txn
                .get(id)
                .unwrap()
                .unwrap()
                .fields()
                .get("balance")
                .cloned()
            {
                Some(Value::Int64(b)) => {
                    assert!(b >= 0);
                    b
                }
                _ => panic!(),
            }
        })
        .sum();
    assert_eq!(total, 400);
}

fn arb_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..6, 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The write log's conflict check agrees with a naive model: a transaction conflicts
    /// iff some commit after its begin timestamp wrote a key inside one of its intervals.
    #[test]
    fn conflict_check_agrees_with_naive_model(
        commits in prop::collection::vec(prop::collection::vec(arb_key(), 1..4), 1..80),
        trim_to in 0u64..40,
        aborted in 0u64..80,
        reads in prop::collection::vec((arb_key(), arb_key()), 0..6),
        begin in 0u64..82,
    ) {
        // max_age 1 ns: `trim` drops every entry older than `trim_to`.
        let config = WriteLogConfig { max_age_ns: 1, max_entries: usize::MAX };
        let mut log = WriteLog::new(Timestamp(0), config);
        let mut model: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        for (i, keys) in commits.iter().enumerate() {
            let ts = i as u64 + 1;
            let mut sorted: Vec<Box<[u8]>> = keys.iter().map(|k| k.clone().into_boxed_slice()).collect();
            sorted.sort();
            sorted.dedup();
            log.append(Arc::new(WriteLogEntry { ts: Timestamp(ts), keys: sorted }));
            model.insert(ts, keys.clone());
        }
        // An aborted commit leaves the window; old commits are trimmed (raising the floor).
        log.remove(Timestamp(aborted));
        model.remove(&aborted);
        log.trim(Timestamp(trim_to + 1), Timestamp::MAX);
        let floor = log.floor().0;
        let intervals: Vec<Interval> =
            reads.into_iter().filter_map(|(a, b)| Interval::new(a, b)).collect();
        let mut set = IntervalSet::new();
        for iv in &intervals {
            set.push(iv.clone());
        }
        set.normalize();
        let naive = model
            .range(begin + 1..)
            .any(|(_, keys)| keys.iter().any(|k| intervals.iter().any(|iv| iv.contains(k))));
        let Ok(found) = log.first_overlap(Timestamp(begin), Timestamp::MAX, &set) else {
            prop_assert!(begin < floor);
            return Ok(());
        };
        prop_assert_eq!(found.is_some(), naive);
        if let Some(o) = found {
            prop_assert!(o.ts.0 > begin);
            prop_assert!(intervals.iter().any(|iv| iv.contains(&o.key)));
        }
    }
}

#[test]
fn ids_of_tables_differ() {
    let engine = empty_engine();
    let a = engine.create_table("a").unwrap();
    let b = engine.create_table("b").unwrap();
    assert_ne!(a, b);
    assert_eq!(a, TableNumber(10001));
}

#[test]
fn rollback_to_a_savepoint_drops_only_later_writes() {
    let engine = empty_engine();
    let table = engine.create_table("t").unwrap();
    let mut setup = engine.begin(false);
    let kept = setup.insert(table, obj(&[("x", Value::Int64(1))])).unwrap();
    engine.commit(setup).unwrap();
    flush(&engine);

    let mut txn = engine.begin(false);
    let before = txn.insert(table, obj(&[("x", Value::Int64(2))])).unwrap();
    let point = txn.savepoint();
    let during = txn.insert(table, obj(&[("x", Value::Int64(3))])).unwrap();
    txn.replace(&kept.id, obj(&[("x", Value::Int64(10))]))
        .unwrap();
    txn.delete(&before.id).unwrap();
    assert!(txn.get(&during.id).unwrap().is_some());
    txn.rollback_to(&point).unwrap();
    // The writes before the savepoint stand; those after it are gone, from reads too.
    assert!(txn.get(&during.id).unwrap().is_none());
    assert!(txn.get(&before.id).unwrap().is_some());
    let current = txn.get(&kept.id).unwrap().unwrap();
    assert_eq!(current.fields().get("x"), Some(&Value::Int64(1)));
    assert_eq!(txn.writes().len(), 1);
    engine.commit(txn).unwrap().unwrap();
    flush(&engine);
    let mut after = engine.begin(true);
    assert!(after.get(&during.id).unwrap().is_none());
    assert!(after.get(&before.id).unwrap().is_some());
    // A savepoint of another transaction is refused.
    let mut other = engine.begin(false);
    other.insert(table, obj(&[("x", Value::Int64(4))])).unwrap();
    let foreign = other.savepoint();
    let mut later = engine.begin(false);
    assert!(later.rollback_to(&foreign).is_err());
}

//! Following the log: a follower engine that applies a leader's log in random slices
//! ([`Engine::apply_log`]) holds, after every slice, what the leader held at that
//! timestamp: the same documents, the same entries in every ready index, the same written
//! keys per commit (so conflict checks and subscriptions agree), the same subscriptions
//! invalidated; and at the end what a full load of the persisted log holds. Bad slices
//! (a torn commit, a missed commit, a repeated one) are refused with nothing applied.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use reactive_core::catalog::{Catalog, IndexId};
use reactive_core::engine::{Engine, EngineConfig, PersistBatch};
use reactive_core::error::Error;
use reactive_core::id::{DocumentId, TableNumber};
use reactive_core::interval::{Interval, IntervalSet};
use reactive_core::keys;
use reactive_core::log::record::{CommitRecord, DocumentRevision};
use reactive_core::log::recovery::LoadedState;
use reactive_core::mvcc::MvccStore;
use reactive_core::sqlite::SqlitePersistence;
use reactive_core::timestamp::Timestamp;
use reactive_core::value::{Object, Value};
use reactive_core::write_log::WriteLogConfig;

fn config() -> EngineConfig {
    EngineConfig {
        write_log: WriteLogConfig {
            max_entries: 1 << 20,
            max_age_ns: u64::MAX / 4,
        },
        ..EngineConfig::default()
    }
}

fn empty_engine() -> Engine {
    Engine::new(
        LoadedState {
            catalog: Catalog::new(),
            store: MvccStore::new(),
            max_ts: Timestamp(0),
            commits: 0,
            revisions: 0,
        },
        config(),
    )
}

/// One persisted batch as a follower reads it back: the catalog stored with it (if it
/// changed), its commit records and document revisions.
#[derive(Clone)]
struct Persisted {
    catalog: Option<String>,
    commits: Vec<CommitRecord>,
    revisions: Vec<DocumentRevision>,
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        table: usize,
        x: i64,
        s: usize,
    },
    Replace {
        pick: usize,
        x: i64,
        s: usize,
    },
    Delete {
        pick: usize,
    },
    /// Several writes in one transaction.
    Multi {
        picks: Vec<usize>,
        x: i64,
    },
    AddIndex {
        table: usize,
        field: usize,
    },
    DropIndex {
        pick: usize,
    },
    Flush,
}

const TABLES: [&str; 3] = ["a", "b", "c"];
const FIELDS: [&str; 2] = ["x", "s"];
const WORDS: [&str; 4] = ["alpha beta", "beta gamma", "gamma", "delta alpha"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, -3..4i64, 0..4usize).prop_map(|(table, x, s)| Op::Insert { table, x, s }),
        4 => (any::<usize>(), -3..4i64, 0..4usize).prop_map(|(pick, x, s)| Op::Replace { pick, x, s }),
        2 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        2 => (prop::collection::vec(any::<usize>(), 1..4), -3..4i64)
            .prop_map(|(picks, x)| Op::Multi { picks, x }),
        1 => (0..3usize, 0..2usize).prop_map(|(table, field)| Op::AddIndex { table, field }),
        1 => any::<usize>().prop_map(|pick| Op::DropIndex { pick }),
        3 => Just(Op::Flush),
    ]
}

fn fields(x: i64, s: usize) -> Object {
    let mut o = Object::new();
    o.insert("x".to_owned(), Value::Int64(x));
    o.insert(
        "s".to_owned(),
        Value::String(WORDS[s % WORDS.len()].to_owned()),
    );
    o
}

struct Leader {
    engine: Engine,
    log: Vec<Persisted>,
    sqlite: SqlitePersistence,
    next_index: usize,
}

impl Leader {
    fn new(dir: &std::path::Path) -> Leader {
        let engine = empty_engine();
        engine.create_table("a").unwrap();
        engine.create_table("b").unwrap();
        // "c" is created by the first transaction that inserts into it.
        engine
            .register_text_index("a", "search_s", "s", &[])
            .unwrap();
        Leader {
            engine,
            log: Vec::new(),
            sqlite: SqlitePersistence::open(&dir.join("leader.sqlite3")).unwrap(),
            next_index: 0,
        }
    }

    fn flush(&mut self) {
        let batch: PersistBatch = self.engine.take_batch();
        if batch.is_empty() {
            return;
        }
        self.sqlite.write_batch(&batch).unwrap();
        self.log.push(Persisted {
            catalog: batch.catalog.as_ref().map(|(_, json)| json.clone()),
            commits: batch.commits.commit_records().copied().collect(),
            revisions: batch.commits.revisions().cloned().collect(),
        });
        self.engine.publish(&batch);
    }

    fn live(&self) -> Vec<DocumentId> {
        let ts = self.engine.visible_ts();
        let store = self.engine.store().read();
        store
            .documents()
            .filter(|(_, c)| c.at(ts).is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn table(&self, txn: &mut reactive_core::transaction::Transaction, t: usize) -> TableNumber {
        let name = TABLES[t];
        if let Some(table) = self.engine.catalog().table(name) {
            return TableNumber(table.number);
        }
        if let Some(table) = txn.catalog().table(name) {
            return TableNumber(table.number);
        }
        let reservation = self.engine.reserve_table(name).unwrap().unwrap();
        txn.create_table(name, reservation).unwrap();
        TableNumber(reservation.number)
    }

    /// Commit; a conflict with a commit not yet published (the snapshot is the visible
    /// timestamp) drops the transaction.
    fn commit(&self, txn: reactive_core::transaction::Transaction) {
        match self.engine.commit(txn) {
            Ok(_) | Err(Error::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }

    fn run(&mut self, op: &Op) {
        let live = self.live();
        match op {
            Op::Insert { table, x, s } => {
                let mut txn = self.engine.begin(false);
                let t = self.table(&mut txn, *table);
                txn.insert(t, fields(*x, *s)).unwrap();
                self.commit(txn);
            }
            Op::Replace { pick, x, s } if !live.is_empty() => {
                let mut txn = self.engine.begin(false);
                txn.replace(&live[pick % live.len()], fields(*x, *s))
                    .unwrap();
                self.commit(txn);
            }
            Op::Delete { pick } if !live.is_empty() => {
                let mut txn = self.engine.begin(false);
                txn.delete(&live[pick % live.len()]).unwrap();
                self.commit(txn);
            }
            Op::Multi { picks, x } if !live.is_empty() => {
                let mut txn = self.engine.begin(false);
                let targets: BTreeSet<DocumentId> =
                    picks.iter().map(|p| live[p % live.len()]).collect();
                for (i, id) in targets.iter().enumerate() {
                    if i % 2 == 0 {
                        txn.replace(id, fields(*x, i)).unwrap();
                    } else {
                        txn.delete(id).unwrap();
                    }
                }
                let t = self.table(&mut txn, 1);
                txn.insert(t, fields(*x, 0)).unwrap();
                self.commit(txn);
            }
            Op::AddIndex { table, field } => {
                let name = TABLES[*table];
                if self.engine.catalog().table(name).is_none() {
                    return;
                }
                self.flush();
                self.next_index += 1;
                let index_name = format!("by_{}_{}", FIELDS[*field], self.next_index);
                let (index, snapshot) = self
                    .engine
                    .add_index(name, &index_name, vec![FIELDS[*field].to_owned()])
                    .unwrap();
                self.flush();
                let mut after: Option<Vec<u8>> = None;
                loop {
                    let (_, next) = self
                        .engine
                        .backfill_chunk(index, snapshot, after.as_deref(), 3)
                        .unwrap();
                    self.flush();
                    match next {
                        Some(k) => after = Some(k),
                        None => break,
                    }
                }
                self.engine
                    .set_index_ready(index, self.engine.visible_ts())
                    .unwrap();
            }
            Op::DropIndex { pick } => {
                let catalog = self.engine.catalog();
                let added: Vec<IndexId> = catalog
                    .all_indexes()
                    .filter(|i| i.name.starts_with("by_x_") || i.name.starts_with("by_s_"))
                    .map(|i| i.id)
                    .collect();
                if !added.is_empty() {
                    self.engine.drop_index(added[pick % added.len()]).unwrap();
                }
            }
            Op::Flush => self.flush(),
            _ => {}
        }
    }
}

/// What a reader at `ts` sees in the store: documents (stored form) and, per index ready
/// at `ts` in `catalog`, its entries.
type View = (BTreeMap<DocumentId, Vec<u8>>, BTreeMap<Vec<u8>, DocumentId>);

fn view(engine: &Engine, catalog: &Catalog, ts: Timestamp) -> View {
    let store = engine.store().read();
    let docs = store
        .documents()
        .filter_map(|(id, c)| c.at(ts).map(|d| (*id, d.to_stored())))
        .collect();
    let mut entries = BTreeMap::new();
    // An index the engine dropped since is gone from its store at every timestamp.
    let current = engine.catalog();
    for index in catalog
        .all_indexes()
        .filter(|i| i.ready_at(ts.0) && current.index(i.id).is_some())
    {
        let end = keys::prefix_successor(&index.id.prefix()).unwrap();
        for (key, chain) in store.range(&index.id.prefix(), &end, false) {
            if let Some(doc) = chain.at(ts) {
                entries.insert(key.to_vec(), doc.id);
            }
        }
    }
    (docs, entries)
}

/// Assert two engines show the same at `ts`, naming the first differences.
fn same_view(ours: &Engine, theirs: &Engine, catalog: &Catalog, ts: Timestamp) {
    let mut both = catalog.clone();
    for gone in catalog
        .all_indexes()
        .filter(|i| theirs.catalog().index(i.id).is_none())
    {
        both.remove_index(gone.id);
    }
    let catalog = &both;
    let (a_docs, a_entries) = view(ours, catalog, ts);
    let (b_docs, b_entries) = view(theirs, catalog, ts);
    let docs: Vec<_> = a_docs
        .iter()
        .filter(|(k, v)| b_docs.get(*k) != Some(v))
        .map(|(k, _)| format!("ours {k}"))
        .chain(
            b_docs
                .iter()
                .filter(|(k, v)| a_docs.get(*k) != Some(v))
                .map(|(k, _)| format!("theirs {k}")),
        )
        .collect();
    let entries: Vec<_> = a_entries
        .iter()
        .filter(|(k, v)| b_entries.get(*k) != Some(v))
        .map(|(k, d)| format!("ours {:?} -> {d}", IndexId::of_key(k)))
        .chain(
            b_entries
                .iter()
                .filter(|(k, v)| a_entries.get(*k) != Some(v))
                .map(|(k, d)| format!("theirs {:?} -> {d}", IndexId::of_key(k))),
        )
        .collect();
    assert!(
        docs.is_empty() && entries.is_empty(),
        "at ts {ts}: documents {docs:?}, index entries {entries:?}; catalog {}; their catalog {}",
        catalog.to_json(),
        theirs.catalog().to_json()
    );
}

fn catalog_of(engine: &Engine) -> Catalog {
    (*engine.catalog()).clone()
}

fn keys_at(engine: &Engine, ts: Timestamp) -> Vec<Box<[u8]>> {
    engine
        .written_at(ts)
        .map(|e| e.keys.clone())
        .unwrap_or_default()
}

/// Replay `ops` on a leader, then apply its log to a follower in slices of `cuts` batches,
/// checking after each slice.
fn check_follow(ops: &[Op], cuts: &[usize], newer_catalog: &[bool], subs: &[(u8, u8)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::new(dir.path());
    for op in ops {
        leader.run(op);
    }
    leader.flush();
    let log = leader.log.clone();

    // Snapshots of the leader's view at each batch's last commit are taken by replaying
    // the leader's store: it keeps every version (no retention here).
    // The follower registers the app's search index as the leader did, once the table it is
    // on exists (from the first catalog of the log).
    let follower = empty_engine();
    let first = log.iter().find_map(|p| p.catalog.clone()).unwrap();
    follower
        .apply_log(Some(Catalog::from_json(&first).unwrap()), &[], &[])
        .unwrap();
    follower
        .register_text_index("a", "search_s", "s", &[])
        .unwrap();
    // Subscriptions on both engines over random key ranges: each slice must invalidate the
    // same ones on the follower as the leader's commits of that slice did.
    let ranges: Vec<Interval> = subs
        .iter()
        .filter_map(|(a, b)| {
            let (lo, hi) = if a <= b { (*a, *b) } else { (*b, *a) };
            Interval::new(vec![0, 0, 0, lo], vec![0, 0, 0, hi.saturating_add(1)])
        })
        .collect();
    let mut sub_ids = Vec::new();
    for r in &ranges {
        let mut set = IntervalSet::new();
        set.push(r.clone());
        set.normalize();
        sub_ids.push((follower.subscribe(&set, Timestamp(0)).0, set));
    }

    let mut applied = 0;
    let mut cut_i = 0;
    // The position in the log of the catalog installed: snapshots only move forward, so it
    // never goes back.
    let mut installed: Option<usize> = None;
    while applied < log.len() {
        let take = cuts
            .get(cut_i)
            .copied()
            .unwrap_or(1)
            .clamp(1, log.len() - applied);
        let slice = &log[applied..applied + take];
        let mut newest = (0..applied + take)
            .rev()
            .find(|i| log[*i].catalog.is_some());
        // A reader's snapshot may be newer than the slice's last commit (the slice was cut
        // by its size): it sees the catalog of a later batch without commits.
        if newer_catalog.get(cut_i).copied().unwrap_or(false) {
            for (i, batch) in log.iter().enumerate().skip(applied + take) {
                if !batch.commits.is_empty() {
                    break;
                }
                if batch.catalog.is_some() {
                    newest = Some(i);
                }
            }
        }
        let catalog_changed = newest != installed;
        let ahead = newest.is_some_and(|n| n >= applied + take);
        let newest = newest.max(installed);
        let catalog_json = if newest == installed {
            None
        } else {
            installed = newest;
            newest.and_then(|i| log[i].catalog.clone())
        };
        cut_i += 1;
        let commits: Vec<CommitRecord> = slice.iter().flat_map(|p| p.commits.clone()).collect();
        let revisions: Vec<DocumentRevision> =
            slice.iter().flat_map(|p| p.revisions.clone()).collect();
        let before = follower.visible_ts();
        let installed_ahead = installed.is_some_and(|i| i >= applied + take);
        let result = follower
            .apply_log(
                catalog_json
                    .as_deref()
                    .map(|j| Catalog::from_json(j).unwrap()),
                &commits,
                &revisions,
            )
            .unwrap();
        applied += take;
        let Some(last) = commits.last().map(|c| c.ts) else {
            assert_eq!(follower.visible_ts(), before);
            continue;
        };
        assert_eq!(result.last_ts, Some(last));
        assert_eq!(follower.visible_ts(), last);
        // Same documents and ready index entries at `last` as the leader.
        let follower_catalog = catalog_of(&follower);
        same_view(&follower, &leader.engine, &follower_catalog, last);
        // Same keys written per commit when the catalog did not change in the slice;
        // a superset otherwise (every key the leader wrote in an index still there).
        // (The follower may run ahead with a catalog of a later batch.)
        let catalog_changed = catalog_changed || ahead || installed_ahead;
        // Index backfill chunks (commits without revisions) are not replayed: a follower
        // derives a new index whole when it installs the catalog that adds it, and nothing
        // reads an index before it is ready.
        for c in commits.iter().filter(|c| c.document_count > 0) {
            let ours: BTreeSet<Box<[u8]>> = keys_at(&follower, c.ts).into_iter().collect();
            let theirs: BTreeSet<Box<[u8]>> = keys_at(&leader.engine, c.ts).into_iter().collect();
            if catalog_changed {
                for k in &theirs {
                    let known = IndexId::of_key(k)
                        .is_some_and(|i| follower_catalog.index(i).is_some() || i.0 >= 0xF000_0000);
                    if known {
                        assert!(ours.contains(k), "commit {} lost a written key", c.ts);
                    }
                }
            } else {
                assert_eq!(ours, theirs, "written keys of commit {}", c.ts);
            }
        }
        // Subscriptions hit by the slice: those whose range a commit of it wrote into.
        let expected: BTreeSet<u64> = sub_ids
            .iter()
            .filter(|(_, set)| {
                commits.iter().any(|c| {
                    keys_at(&follower, c.ts)
                        .iter()
                        .any(|k| set.find(k).is_some())
                })
            })
            .map(|(id, _)| id.0)
            .collect();
        let got: BTreeSet<u64> = result.invalidated.iter().map(|s| s.0).collect();
        assert_eq!(got, expected);
    }
    // The end state equals a full load of what the leader persisted.
    let loaded = leader.sqlite.load().unwrap();
    let last = follower.visible_ts();
    assert_eq!(loaded.max_ts.max(last), loaded.max_ts);
    let reloaded = Engine::new(loaded, config());
    let catalog = catalog_of(&reloaded);
    same_view(&follower, &reloaded, &catalog, last);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn follower_matches_leader(
        ops in prop::collection::vec(op(), 1..60),
        cuts in prop::collection::vec(1..5usize, 0..40),
        newer in prop::collection::vec(any::<bool>(), 0..40),
        subs in prop::collection::vec((any::<u8>(), any::<u8>()), 0..6),
    ) {
        check_follow(&ops, &cuts, &newer, &subs);
    }
}

fn small_log() -> (tempfile::TempDir, Leader) {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::new(dir.path());
    for op in [
        Op::Insert {
            table: 0,
            x: 1,
            s: 0,
        },
        Op::Flush,
        Op::Insert {
            table: 1,
            x: 2,
            s: 1,
        },
        Op::Flush,
        Op::Replace {
            pick: 0,
            x: 3,
            s: 2,
        },
        Op::Flush,
    ] {
        leader.run(&op);
    }
    leader.flush();
    (dir, leader)
}

fn parts(p: &[Persisted]) -> (Option<Catalog>, Vec<CommitRecord>, Vec<DocumentRevision>) {
    let catalog = p
        .iter()
        .rev()
        .find_map(|b| b.catalog.as_deref())
        .map(|j| Catalog::from_json(j).unwrap());
    (
        catalog,
        p.iter().flat_map(|b| b.commits.clone()).collect(),
        p.iter().flat_map(|b| b.revisions.clone()).collect(),
    )
}

fn refused(result: reactive_core::error::Result<reactive_core::engine::AppliedLog>) -> Error {
    match result {
        Ok(_) => panic!("the slice was applied"),
        Err(e) => e,
    }
}

#[test]
fn refuses_bad_slices_and_applies_nothing() {
    let (_dir, leader) = small_log();
    let log = &leader.log;
    // A repeated slice: its commits are not above what was applied.
    let follower = empty_engine();
    let (catalog, commits, revisions) = parts(&log[..2]);
    follower
        .apply_log(catalog.clone(), &commits, &revisions)
        .unwrap();
    let applied = follower.visible_ts();
    assert!(matches!(
        refused(follower.apply_log(catalog.clone(), &commits, &revisions)),
        Error::LogGap(_)
    ));
    assert_eq!(follower.visible_ts(), applied);

    // A torn commit: a revision missing, or one without its commit record.
    let follower = empty_engine();
    let (catalog, commits, mut revisions) = parts(log);
    let dropped = revisions.pop().unwrap();
    assert!(matches!(
        refused(follower.apply_log(catalog.clone(), &commits, &revisions)),
        Error::Corrupt(_)
    ));
    assert_eq!(follower.visible_ts(), Timestamp(0));
    let mut orphan = revisions.clone();
    orphan.push(dropped);
    let mut fewer = commits.clone();
    fewer.pop();
    assert!(matches!(
        refused(follower.apply_log(catalog.clone(), &fewer, &orphan)),
        Error::Corrupt(_)
    ));
    // A flipped bit in a value.
    let (catalog, commits, mut revisions) = parts(log);
    if let Some(v) = revisions[0].value.as_mut() {
        v[3] ^= 1;
    }
    assert!(matches!(
        refused(follower.apply_log(catalog, &commits, &revisions)),
        Error::Corrupt(_)
    ));
    assert_eq!(follower.visible_ts(), Timestamp(0));
    assert_eq!(follower.store().read().documents().count(), 0);
}

#[test]
fn missed_commit_is_a_gap() {
    // Three commits on one document: insert, replace, replace.
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::new(dir.path());
    leader.run(&Op::Insert {
        table: 0,
        x: 1,
        s: 0,
    });
    leader.flush();
    leader.run(&Op::Replace {
        pick: 0,
        x: 2,
        s: 0,
    });
    leader.flush();
    leader.run(&Op::Replace {
        pick: 0,
        x: 3,
        s: 0,
    });
    leader.flush();
    assert_eq!(leader.log.len(), 3);
    // The follower misses the middle one: the last names a revision it does not hold.
    let follower = empty_engine();
    let (catalog, commits, revisions) = parts(&leader.log[..1]);
    follower.apply_log(catalog, &commits, &revisions).unwrap();
    let applied = follower.visible_ts();
    let (_, commits, revisions) = parts(&leader.log[2..]);
    let e = refused(follower.apply_log(None, &commits, &revisions));
    assert!(matches!(e, Error::LogGap(_)), "{e}");
    assert_eq!(follower.visible_ts(), applied);
    // The follower misses the insert: it holds no revision of a document whose next
    // revision names one.
    let follower = empty_engine();
    let (catalog, _, _) = parts(&leader.log[..1]);
    let (_, commits, revisions) = parts(&leader.log[1..2]);
    let e = refused(follower.apply_log(catalog, &commits, &revisions));
    assert!(matches!(e, Error::LogGap(_)), "{e}");
}

#[test]
fn a_follower_does_not_commit_while_following() {
    let (_dir, leader) = small_log();
    let follower = empty_engine();
    follower.set_following(true);
    let (catalog, commits, revisions) = parts(&leader.log[..2]);
    follower.apply_log(catalog, &commits, &revisions).unwrap();
    let table = TableNumber(follower.catalog().table("a").unwrap().number);
    // Writes, catalog changes and backfills are refused; reads are not.
    let mut txn = follower.begin(false);
    txn.insert(table, fields(9, 0)).unwrap();
    assert!(matches!(follower.commit(txn), Err(Error::NotWriter(_))));
    let read_only = follower.begin(false);
    assert_eq!(follower.commit(read_only).unwrap(), None);
    assert!(matches!(
        follower.create_table("z"),
        Err(Error::NotWriter(_))
    ));
    assert!(matches!(
        follower.add_index("a", "by_x", vec!["x".into()]),
        Err(Error::NotWriter(_))
    ));
    let by_id = follower.by_id_index("a").unwrap();
    assert!(matches!(
        follower.drop_index(by_id),
        Err(Error::NotWriter(_))
    ));
    assert!(!follower.has_pending());
    // Following goes on.
    let (_, commits, revisions) = parts(&leader.log[2..]);
    follower.apply_log(None, &commits, &revisions).unwrap();
    // An engine with commits of its own waiting cannot apply another's log.
    follower.set_following(false);
    let mut txn = follower.begin(false);
    txn.insert(table, fields(9, 0)).unwrap();
    follower.commit(txn).unwrap();
    let e = refused(follower.apply_log(None, &[], &[]));
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

/// Send a transaction a follower ran to the leader as the wire carries it.
fn forward(
    leader: &Leader,
    txn: &mut reactive_core::transaction::Transaction,
) -> reactive_core::error::Result<Option<Timestamp>> {
    use reactive_core::forward::ForwardedTransaction;
    let bytes = ForwardedTransaction::of(txn)?.encode();
    leader
        .engine
        .commit_forwarded(ForwardedTransaction::decode(&bytes)?)
}

/// A follower caught up with everything `leader` persisted (with the app's search index).
fn caught_up(leader: &Leader) -> Engine {
    let follower = empty_engine();
    let (catalog, commits, revisions) = parts(&leader.log);
    follower.apply_log(catalog, &[], &[]).unwrap();
    follower
        .register_text_index("a", "search_s", "s", &[])
        .unwrap();
    follower.set_following(true);
    follower.apply_log(None, &commits, &revisions).unwrap();
    follower
}

#[test]
fn a_follower_transaction_commits_through_the_leader() {
    let (_dir, mut leader) = small_log();
    let follower = caught_up(&leader);
    let applied = leader.log.len();
    let live = leader.live();
    let table = TableNumber(follower.catalog().table("a").unwrap().number);
    // On the follower: replace one document, delete another, insert a third.
    let mut txn = follower.begin(false);
    assert!(txn.get(&live[0]).unwrap().is_some());
    txn.replace(&live[0], fields(10, 3)).unwrap();
    txn.delete(&live[1]).unwrap();
    let inserted = txn.insert(table, fields(11, 1)).unwrap();
    let ts = forward(&leader, &mut txn).unwrap().unwrap();
    leader.flush();
    // The leader maintained every index (text index included) as for a local commit, and
    // the follower applies the commit like any other.
    let (_, commits, revisions) = parts(&leader.log[applied..]);
    follower.apply_log(None, &commits, &revisions).unwrap();
    assert_eq!(follower.visible_ts(), ts);
    same_view(&follower, &leader.engine, &catalog_of(&leader.engine), ts);
    let mut check = leader.engine.begin(true);
    assert_eq!(
        check.get(&inserted.id).unwrap().unwrap().encoded(),
        inserted.encoded()
    );
    assert!(check.get(&live[1]).unwrap().is_none());
    assert_eq!(keys_at(&follower, ts), keys_at(&leader.engine, ts));
    // The same transaction resent (its answer lost) conflicts with itself: its insert is
    // there now, so it does not land twice.
    assert!(matches!(
        forward(&leader, &mut txn),
        Err(Error::Conflict(_))
    ));
}

#[test]
fn a_forwarded_transaction_is_validated_against_later_commits() {
    let (_dir, mut leader) = small_log();
    let follower = caught_up(&leader);
    let live = leader.live();
    // Write skew across processes: the follower reads both documents and writes one;
    // the leader meanwhile writes the other (not yet persisted: pending commits count).
    let mut txn = follower.begin(false);
    assert!(txn.get(&live[0]).unwrap().is_some());
    assert!(txn.get(&live[1]).unwrap().is_some());
    txn.replace(&live[0], fields(20, 0)).unwrap();
    let mut local = leader.engine.begin(false);
    local.replace(&live[1], fields(21, 0)).unwrap();
    leader.engine.commit(local).unwrap().unwrap();
    match forward(&leader, &mut txn) {
        Err(Error::Conflict(c)) => {
            let catalog = leader.engine.catalog();
            assert_eq!(
                c.table,
                catalog.table_by_number(live[1].table).unwrap().name
            );
        }
        other => panic!("write skew must be refused, got {other:?}"),
    }
    leader.flush();
    // A blind write (no read) of a document changed after the snapshot conflicts too.
    let mut blind = follower.begin(false);
    blind.delete(&live[1]).unwrap();
    let mut forwarded = reactive_core::forward::ForwardedTransaction::of(&mut blind).unwrap();
    forwarded.reads = IntervalSet::new();
    assert!(matches!(
        leader.engine.commit_forwarded(forwarded),
        Err(Error::Conflict(_))
    ));
    // A snapshot the leader has not published is refused (the caller waits for it first);
    // a transaction that created a table is not forwarded; a follower does not take one.
    let mut ahead = follower.begin(false);
    ahead.replace(&live[0], fields(22, 0)).unwrap();
    let mut forwarded = reactive_core::forward::ForwardedTransaction::of(&mut ahead).unwrap();
    forwarded.begin_ts = Timestamp(leader.engine.visible_ts().0 + 1_000_000);
    assert!(matches!(
        leader.engine.commit_forwarded(forwarded.clone()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        follower.commit_forwarded(forwarded),
        Err(Error::NotWriter(_))
    ));
    let mut creates = leader.engine.begin(false);
    let reservation = leader.engine.reserve_table("d").unwrap().unwrap();
    creates.create_table("d", reservation).unwrap();
    assert!(matches!(
        reactive_core::forward::ForwardedTransaction::of(&mut creates),
        Err(Error::InvalidArgument(_))
    ));
}

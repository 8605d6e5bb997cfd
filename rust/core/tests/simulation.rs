//! Deterministic simulation of the committer, the write log and the subscriptions, in the
//! style of FoundationDB's simulation testing.
//!
//! One thread runs everything. A seed drives a small PRNG (`SplitMix64`) that draws the shape
//! of a run (tables, key space, clients and their speeds, persistence failure rate, write
//! log window) and then, step after step, which actor moves next:
//! - read-write clients: begin a transaction, make a few reads (`get`, index range scans on
//!   `by_id`, `by_creation_time` and a user index `by_v`, with bounds, direction and limits)
//!   and writes (insert / replace / delete on a handful of document ids, so that conflicts
//!   are frequent), one operation per step, then commit and wait for the outcome;
//! - the persistence loop: take the queued commits as a batch, then "persist" it: success
//!   (publish) or an injected failure (abort; the batch's commits are reported failed);
//! - subscription clients: run a query at the visible snapshot, (re)subscribe it (possibly
//!   many steps later, so the engine must notice commits published in between), re-run it
//!   when a publish invalidates it, and sometimes unsubscribe and watch another query.
//!
//! Nothing depends on threads or on the wall clock: document ids and creation times are
//! drawn from the seed (`insert_existing`), the write log is trimmed by count only. Commit
//! timestamps come from the engine (wall clock, strictly increasing): the harness uses only
//! their order, and reports commits by their ordinal.
//!
//! Checked against a model (a `BTreeMap` of documents per published commit):
//! 1. serializability: every transaction's reads equal the model at its begin timestamp
//!    (merged with its own earlier writes); for each published commit they also equal the
//!    model just before its commit timestamp, so the published commits applied in
//!    timestamp order explain every read; the engine's documents and indexes equal the
//!    model at the end and at every published (and every aborted) timestamp; each batch
//!    holds exactly the queued commits with the writes and written keys the harness expects;
//! 2. a failed batch changes nothing visible (the visible timestamp stays, no snapshot ever
//!    shows its commits); every conflict names an accepted, not aborted commit after the
//!    transaction's begin timestamp that wrote a key of its read set; `TransactionTooOld`
//!    names a published commit after the begin timestamp (and never happens when the write
//!    log keeps everything);
//! 3. subscriptions: each publish invalidates exactly the subscriptions whose registered read
//!    set holds a key the batch wrote; (re)subscribing reports a miss whenever a commit
//!    published since the query's snapshot wrote into its read set; a subscription not
//!    invalidated always holds the result a fresh query would give (checked after every
//!    publish, at registration and at the end); semantically spurious invalidations (the
//!    re-run gives the same result) are counted;
//! 4. commit timestamps strictly increase, the visible timestamp only moves forward, to the
//!    last commit of each published batch.
//!
//! Running: `cargo test -p reactive-core --release --test simulation` runs `DEFAULT_SEEDS`
//! seeds. `SIM_SEEDS=N` runs N seeds, `SIM_SEED_BASE=B` starts at seed B (to explore new
//! seeds), `SIM_SEED=S` runs exactly seed S, and `SIM_TRACE=1` prints its event trace. A
//! failure names its seed and the command that reproduces it. The other tests break the
//! system on purpose (no conflict checks in the engine; a harness that publishes a failed
//! batch; a harness that drops invalidations) and assert that the checker notices.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use reactive_core::catalog::{Catalog, IndexDescriptor, IndexId, IndexState};
use reactive_core::document::{Document, DocumentRef};
use reactive_core::engine::{Engine, EngineConfig, PersistBatch};
use reactive_core::error::{Conflict, Error};
use reactive_core::id::{DocumentId, InternalId, TableNumber};
use reactive_core::interval::{Interval, IntervalSet};
use reactive_core::log::recovery::LoadedState;
use reactive_core::mvcc::MvccStore;
use reactive_core::query::{RangeOp, index_range};
use reactive_core::subscriptions::SubscriptionId;
use reactive_core::timestamp::Timestamp;
use reactive_core::transaction::{ScanRequest, Transaction};
use reactive_core::value::{Object, Value};
use reactive_core::write_log::WriteLogConfig;

/// Seeds run by default (about 10-20 s in release mode on a 2-core machine).
const DEFAULT_SEEDS: u64 = 5000;
/// A run that has not quiesced after this many steps is reported.
const MAX_STEPS: u64 = 2_000_000;
/// The write log's check through its newest-writer map starts above this many commits.
const PER_COMMIT_CHECK_LIMIT: usize = 32;
/// A stalled transaction or subscription waits for this many commits.
const STALL_COMMITS: usize = 40;

// ---------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------

/// `SplitMix64`: tiny, fast, and every seed gives a well-mixed stream.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0x5851_F42D_4C95_7F2D)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < per_mille as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// An index drawn with the given weights (not all zero).
    fn weighted(&mut self, weights: impl Iterator<Item = u32> + Clone) -> usize {
        let total: u64 = weights.clone().map(u64::from).sum();
        let mut x = ((u128::from(self.next_u64()) * u128::from(total)) >> 64) as u64;
        for (i, w) in weights.enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        unreachable!("weights sum to more than the draw")
    }
}

// ---------------------------------------------------------------------------------------
// Parameters of one run
// ---------------------------------------------------------------------------------------

/// The shape of one run, drawn from its seed.
#[derive(Clone, Debug)]
struct Params {
    /// Tables (each with `by_id`, `by_creation_time` and `by_v` on field `v`).
    tables: usize,
    /// Document ids per table (the key space).
    keys: usize,
    /// The first `hot` ids of each table get half of the accesses.
    hot: usize,
    /// Field `v` takes values in `0..values`.
    values: usize,
    /// Speed (scheduling weight) of each read-write client.
    clients: Vec<u32>,
    /// Speed of each subscription client.
    subscribers: Vec<u32>,
    /// Transactions begun before the run drains.
    txns: usize,
    max_reads: usize,
    max_writes: usize,
    read_only_pm: u32,
    /// Chance that persisting a batch fails (per mille).
    fail_pm: u32,
    take_weight: u32,
    complete_weight: u32,
    /// Weight of a subscription client's unsubscribing (0: never).
    churn: u32,
    /// The write log keeps at most this many commits.
    write_log_entries: usize,
    /// Chance (per mille) that a transaction stalls before committing, or a subscription
    /// before registering, until `STALL_COMMITS` more commits happened.
    stall_pm: u32,
}

impl Params {
    fn draw(rng: &mut Rng) -> Params {
        let keys = rng.range(2, 8);
        let clients = (0..rng.range(1, 8))
            .map(|_| rng.pick(&[1, 2, 5, 10, 20]))
            .collect();
        let subscribers = (0..rng.range(0, 8))
            .map(|_| rng.pick(&[1, 3, 10, 20]))
            .collect();
        let txns = if rng.chance(100) {
            rng.range(100, 200)
        } else {
            rng.range(8, 60)
        };
        Params {
            tables: rng.range(1, 2),
            keys,
            hot: rng.range(1, keys.min(3)),
            values: rng.range(2, 5),
            clients,
            subscribers,
            txns,
            max_reads: rng.range(1, 5),
            max_writes: rng.range(1, 4),
            read_only_pm: rng.pick(&[0, 100, 300]),
            fail_pm: rng.pick(&[0, 0, 30, 150, 400]),
            take_weight: rng.pick(&[1, 5, 20]),
            complete_weight: rng.pick(&[1, 5, 20]),
            churn: rng.pick(&[0, 0, 1]),
            write_log_entries: if rng.chance(250) {
                rng.range(1, 8)
            } else {
                100_000
            },
            stall_pm: rng.pick(&[0, 0, 0, 30]),
        }
    }
}

/// What the harness breaks on purpose (to show the checker notices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// The engine commits without conflict checks (`EngineConfig::unsafe_skip_validation`).
    SkipValidation,
    /// The harness publishes a batch whose persistence failed instead of aborting it (while
    /// telling the clients that their commits failed).
    PublishFailedBatches,
    /// The harness ignores the subscriptions a publish invalidates.
    DropInvalidations,
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// (table, key): one of the document ids the run uses.
type Slot = (usize, usize);

/// A document as the model holds it: user field `v`, a payload `p` unique to each write,
/// and the creation time.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Doc {
    v: i64,
    p: i64,
    ct: f64,
}

impl Doc {
    fn fields(&self) -> Object {
        Object::from([
            ("v".to_owned(), Value::Int64(self.v)),
            ("p".to_owned(), Value::Int64(self.p)),
        ])
    }
}

type State = BTreeMap<Slot, Doc>;
/// A transaction's own writes: the final revision of each document it wrote.
type OwnView = BTreeMap<Slot, Option<Doc>>;

/// An index range, with the bounds on the index's first field.
#[derive(Clone, Copy, Debug)]
enum Range {
    /// `by_id`, bounds are ids of keys.
    ById {
        lo: Option<(usize, bool)>,
        hi: Option<(usize, bool)>,
    },
    /// `by_creation_time`.
    ByCreationTime {
        lo: Option<(f64, bool)>,
        hi: Option<(f64, bool)>,
    },
    /// `by_v` with `eq(v)`.
    ByVEq(i64),
    /// `by_v` with bounds.
    ByV {
        lo: Option<(i64, bool)>,
        hi: Option<(i64, bool)>,
    },
}

#[derive(Clone, Copy, Debug)]
struct Scan {
    table: usize,
    range: Range,
    desc: bool,
    limit: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
enum Query {
    Get(Slot),
    /// Whether the document exists (the read an insert or replace makes).
    Exists(Slot),
    Scan(Scan),
}

/// What a read saw.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Doc(Option<Doc>),
    Exists(bool),
    Docs(Vec<(Slot, Doc)>),
}

/// One read of a transaction: the query, its own writes at that moment, what it saw.
struct ReadRecord {
    query: Query,
    own: OwnView,
    seen: Seen,
}

/// `lo <= x <= hi` with each bound inclusive or not.
fn within<T: PartialOrd + Copy>(x: T, lo: Option<(T, bool)>, hi: Option<(T, bool)>) -> bool {
    let above = lo.is_none_or(|(l, inclusive)| match x.partial_cmp(&l) {
        Some(Ordering::Greater) => true,
        Some(Ordering::Equal) => inclusive,
        _ => false,
    });
    let below = hi.is_none_or(|(h, inclusive)| match x.partial_cmp(&h) {
        Some(Ordering::Less) => true,
        Some(Ordering::Equal) => inclusive,
        _ => false,
    });
    above && below
}

fn view(state: &State, own: &OwnView, slot: Slot) -> Option<Doc> {
    match own.get(&slot) {
        Some(d) => *d,
        None => state.get(&slot).copied(),
    }
}

// ---------------------------------------------------------------------------------------
// Schema: tables, ids, indexes
// ---------------------------------------------------------------------------------------

struct TableInfo {
    name: String,
    ids: Vec<DocumentId>,
    id_text: Vec<String>,
    by_id: IndexId,
    by_creation_time: IndexId,
    by_v: IndexId,
    indexes: Vec<IndexDescriptor>,
}

struct Schema {
    catalog: Catalog,
    tables: Vec<TableInfo>,
    keys: usize,
    slot_of: HashMap<DocumentId, Slot>,
}

impl Schema {
    fn new(rng: &mut Rng, p: &Params) -> Schema {
        let mut catalog = Catalog::new();
        let mut numbers = Vec::new();
        for t in 0..p.tables {
            let name = format!("t{t}");
            let number = catalog.add_table(&name, 0).expect("add table");
            catalog
                .add_index(
                    &name,
                    "by_v",
                    vec!["v".into()],
                    IndexState::Ready { since: 0 },
                )
                .expect("add index");
            numbers.push((name, number));
        }
        let mut slot_of = HashMap::new();
        let mut tables = Vec::new();
        for (t, (name, number)) in numbers.into_iter().enumerate() {
            let ids: Vec<DocumentId> = (0..p.keys)
                .map(|k| {
                    let mut bytes = [0u8; 16];
                    for b in &mut bytes[..14] {
                        *b = rng.next_u64() as u8;
                    }
                    bytes[14..].copy_from_slice(&20_000u16.to_be_bytes());
                    let id = DocumentId {
                        table: TableNumber(number.0),
                        internal: InternalId(bytes),
                    };
                    slot_of.insert(id, (t, k));
                    id
                })
                .collect();
            let descriptor = catalog.table(&name).expect("table");
            let index = |n: &str| descriptor.indexes[n];
            let info = TableInfo {
                id_text: ids.iter().map(DocumentId::encode).collect(),
                ids,
                by_id: index("by_id"),
                by_creation_time: index("by_creation_time"),
                by_v: index("by_v"),
                indexes: catalog.table_indexes(descriptor).cloned().collect(),
                name,
            };
            tables.push(info);
        }
        Schema {
            catalog,
            tables,
            keys: p.keys,
            slot_of,
        }
    }

    fn id(&self, (t, k): Slot) -> DocumentId {
        self.tables[t].ids[k]
    }

    fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        (0..self.tables.len()).flat_map(|t| (0..self.keys).map(move |k| (t, k)))
    }

    /// The model's form of a document the engine returned.
    fn to_doc(&self, doc: &DocumentRef) -> Result<(Slot, Doc), String> {
        let slot = *self
            .slot_of
            .get(&doc.id)
            .ok_or_else(|| format!("the engine returned an unknown document {}", doc.id))?;
        let fields = doc.fields();
        let int = |name: &str| match fields.get(name) {
            Some(Value::Int64(x)) => Ok(*x),
            other => Err(format!("document {slot:?}: field {name} is {other:?}")),
        };
        Ok((
            slot,
            Doc {
                v: int("v")?,
                p: int("p")?,
                ct: doc.creation_time(),
            },
        ))
    }

    /// Every index key of `doc` at `slot` (the keys a commit writing it touches).
    fn keys_of(&self, slot: Slot, doc: &Doc, out: &mut Vec<Vec<u8>>) {
        let document = Document::new(self.id(slot), doc.ct, doc.fields()).expect("document");
        for index in &self.tables[slot.0].indexes {
            out.push(document.index_key(index));
        }
    }

    /// The index and keyspace interval of a scan, built as the query layer does.
    fn scan_interval(&self, scan: &Scan) -> Result<(IndexId, Interval), String> {
        fn bounds(
            field: &str,
            lo: Option<(Value, bool)>,
            hi: Option<(Value, bool)>,
        ) -> Vec<RangeOp> {
            let mut ops = Vec::new();
            if let Some((v, inclusive)) = lo {
                ops.push(if inclusive {
                    RangeOp::Gte(field.into(), v)
                } else {
                    RangeOp::Gt(field.into(), v)
                });
            }
            if let Some((v, inclusive)) = hi {
                ops.push(if inclusive {
                    RangeOp::Lte(field.into(), v)
                } else {
                    RangeOp::Lt(field.into(), v)
                });
            }
            ops
        }
        let t = &self.tables[scan.table];
        let id_value = |(k, inc): (usize, bool)| (Value::String(t.id_text[k].clone()), inc);
        let (index, ops) = match scan.range {
            Range::ById { lo, hi } => (t.by_id, bounds("_id", lo.map(id_value), hi.map(id_value))),
            Range::ByCreationTime { lo, hi } => {
                let f = |(x, inc): (f64, bool)| (Value::Float64(x), inc);
                (
                    t.by_creation_time,
                    bounds("_creationTime", lo.map(f), hi.map(f)),
                )
            }
            Range::ByVEq(v) => (t.by_v, vec![RangeOp::Eq("v".into(), Value::Int64(v))]),
            Range::ByV { lo, hi } => {
                let f = |(x, inc): (i64, bool)| (Value::Int64(x), inc);
                (t.by_v, bounds("v", lo.map(f), hi.map(f)))
            }
        };
        let descriptor = self
            .catalog
            .index(index)
            .ok_or_else(|| format!("no index {index}"))?;
        let interval = index_range(descriptor, &t.name, &ops)
            .map_err(|e| format!("index range {ops:?}: {e}"))?;
        Ok((index, interval))
    }

    /// The model's answer to a query.
    fn eval(&self, state: &State, own: &OwnView, query: &Query) -> Seen {
        match query {
            Query::Get(slot) => Seen::Doc(view(state, own, *slot)),
            Query::Exists(slot) => Seen::Exists(view(state, own, *slot).is_some()),
            Query::Scan(scan) => Seen::Docs(self.eval_scan(state, own, scan)),
        }
    }

    fn eval_scan(&self, state: &State, own: &OwnView, scan: &Scan) -> Vec<(Slot, Doc)> {
        let t = &self.tables[scan.table];
        let mut docs: Vec<(Slot, Doc)> = (0..self.keys)
            .filter_map(|k| view(state, own, (scan.table, k)).map(|d| ((scan.table, k), d)))
            .filter(|((_, k), d)| match scan.range {
                Range::ById { lo, hi } => within(
                    &t.id_text[*k],
                    lo.map(|(j, inc)| (&t.id_text[j], inc)),
                    hi.map(|(j, inc)| (&t.id_text[j], inc)),
                ),
                Range::ByCreationTime { lo, hi } => within(d.ct, lo, hi),
                Range::ByVEq(v) => d.v == v,
                Range::ByV { lo, hi } => within(d.v, lo, hi),
            })
            .collect();
        // Index order: by_v is (v, _creationTime, _id), by_creation_time (_creationTime, _id).
        docs.sort_by(|((_, ka), a), ((_, kb), b)| {
            let ids = || t.id_text[*ka].cmp(&t.id_text[*kb]);
            match scan.range {
                Range::ById { .. } => ids(),
                Range::ByCreationTime { .. } => a.ct.total_cmp(&b.ct).then_with(ids),
                Range::ByVEq(_) | Range::ByV { .. } => {
                    a.v.cmp(&b.v).then(a.ct.total_cmp(&b.ct)).then_with(ids)
                }
            }
        });
        if scan.desc {
            docs.reverse();
        }
        if let Some(n) = scan.limit {
            docs.truncate(n);
        }
        docs
    }

    /// Run a query in a transaction of the engine.
    fn run(&self, txn: &mut Transaction, query: &Query) -> Result<Seen, String> {
        match query {
            Query::Get(slot) | Query::Exists(slot) => {
                let found = txn
                    .get(&self.id(*slot))
                    .map_err(|e| format!("get {slot:?}: {e}"))?;
                let doc = match found {
                    Some(d) => {
                        let (s, doc) = self.to_doc(&d)?;
                        if s != *slot {
                            return Err(format!("get {slot:?} returned document {s:?}"));
                        }
                        Some(doc)
                    }
                    None => None,
                };
                Ok(match query {
                    Query::Exists(_) => Seen::Exists(doc.is_some()),
                    _ => Seen::Doc(doc),
                })
            }
            Query::Scan(scan) => {
                let (index, interval) = self.scan_interval(scan)?;
                let result = txn
                    .scan(&ScanRequest {
                        index,
                        interval,
                        descending: scan.desc,
                        limit: scan.limit,
                        filter: None,
                        new_query: true,
                    })
                    .map_err(|e| format!("scan {scan:?}: {e}"))?;
                let docs = result
                    .docs
                    .iter()
                    .map(|d| self.to_doc(d))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Seen::Docs(docs))
            }
        }
    }

    /// Full scans of every index of every table (the state check at a snapshot).
    fn full_scans(&self) -> impl Iterator<Item = Query> + '_ {
        (0..self.tables.len()).flat_map(|table| {
            [
                Range::ById { lo: None, hi: None },
                Range::ByCreationTime { lo: None, hi: None },
                Range::ByV { lo: None, hi: None },
            ]
            .into_iter()
            .map(move |range| {
                Query::Scan(Scan {
                    table,
                    range,
                    desc: false,
                    limit: None,
                })
            })
        })
    }
}

fn random_bound<T>(rng: &mut Rng, value: impl FnOnce(&mut Rng) -> T) -> Option<(T, bool)> {
    if rng.chance(500) {
        let v = value(rng);
        Some((v, rng.chance(500)))
    } else {
        None
    }
}

fn random_slot(rng: &mut Rng, p: &Params) -> Slot {
    let table = rng.below(p.tables);
    let key = if rng.chance(500) {
        rng.below(p.hot)
    } else {
        rng.below(p.keys)
    };
    (table, key)
}

fn random_query(rng: &mut Rng, p: &Params) -> Query {
    if rng.chance(350) {
        return Query::Get(random_slot(rng, p));
    }
    let keys = p.keys;
    let values = p.values;
    let range = match rng.below(4) {
        0 => Range::ById {
            lo: random_bound(rng, |r| r.below(keys)),
            hi: random_bound(rng, |r| r.below(keys)),
        },
        1 => Range::ByCreationTime {
            lo: random_bound(rng, |r| r.range(0, 5) as f64),
            hi: random_bound(rng, |r| r.range(0, 5) as f64),
        },
        2 => Range::ByVEq(rng.below(values) as i64),
        _ => Range::ByV {
            lo: random_bound(rng, |r| r.range(0, values + 1) as i64 - 1),
            hi: random_bound(rng, |r| r.range(0, values + 1) as i64 - 1),
        },
    };
    Query::Scan(Scan {
        table: rng.below(p.tables),
        range,
        desc: rng.chance(500),
        limit: if rng.chance(400) {
            None
        } else {
            Some(rng.pick(&[0, 1, 1, 2, 2, 3]))
        },
    })
}

/// One or two queries, mostly from the shared pool.
fn subscriber_queries(rng: &mut Rng, p: &Params, pool: &[Query]) -> Vec<Query> {
    (0..rng.range(1, 2))
        .map(|_| {
            if rng.chance(700) {
                rng.pick(pool)
            } else {
                random_query(rng, p)
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Violations, statistics, trace
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A read differs from the model at the transaction's snapshot.
    Snapshot,
    /// A committed transaction's reads differ from the model just before its commit.
    Serializability,
    /// A conflict (or `TransactionTooOld`) without a cause.
    Conflict,
    /// Something of a failed batch became visible.
    Aborted,
    /// A missed, unexpected or wrong invalidation, or a stale subscription result.
    Subscription,
    /// Timestamps out of order, or the visible timestamp moved wrongly.
    Timestamps,
    /// A batch that does not hold what was committed.
    Batch,
    /// The engine's state differs from the model at the end.
    FinalState,
    /// An unexpected error or panic.
    Engine,
}

#[derive(Debug)]
struct Violation {
    kind: Kind,
    step: u64,
    message: String,
}

#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    seeds: u64,
    steps: u64,
    txns: u64,
    read_only: u64,
    write_errors: u64,
    commits: u64,
    published: u64,
    failed: u64,
    conflicts: u64,
    conflicts_with_undurable: u64,
    too_old: u64,
    long_validations: u64,
    batches: u64,
    failed_batches: u64,
    empty_batches: u64,
    max_batch: u64,
    subscriptions: u64,
    invalidations: u64,
    missed_at_subscribe: u64,
    conservative_misses: u64,
    long_missed_checks: u64,
    spurious: u64,
    snapshots_checked: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        let Stats {
            seeds,
            steps,
            txns,
            read_only,
            write_errors,
            commits,
            published,
            failed,
            conflicts,
            conflicts_with_undurable,
            too_old,
            long_validations,
            batches,
            failed_batches,
            empty_batches,
            max_batch,
            subscriptions,
            invalidations,
            missed_at_subscribe,
            conservative_misses,
            long_missed_checks,
            spurious,
            snapshots_checked,
        } = *o;
        self.seeds += seeds;
        self.steps += steps;
        self.txns += txns;
        self.read_only += read_only;
        self.write_errors += write_errors;
        self.commits += commits;
        self.published += published;
        self.failed += failed;
        self.conflicts += conflicts;
        self.conflicts_with_undurable += conflicts_with_undurable;
        self.too_old += too_old;
        self.long_validations += long_validations;
        self.batches += batches;
        self.failed_batches += failed_batches;
        self.empty_batches += empty_batches;
        self.max_batch = self.max_batch.max(max_batch);
        self.subscriptions += subscriptions;
        self.invalidations += invalidations;
        self.missed_at_subscribe += missed_at_subscribe;
        self.conservative_misses += conservative_misses;
        self.long_missed_checks += long_missed_checks;
        self.spurious += spurious;
        self.snapshots_checked += snapshots_checked;
    }
}

/// The run's events: always hashed (a fingerprint of the run), kept as text on request.
struct Trace {
    hasher: DefaultHasher,
    lines: Option<Vec<String>>,
}

impl Trace {
    fn note(&mut self, step: u64, tag: &'static str, a: u64, b: u64) {
        (tag, a, b).hash(&mut self.hasher);
        if let Some(lines) = &mut self.lines {
            lines.push(format!("{step:>7} {tag:<14} {a:>5} {b:>5}"));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Actors
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Own {
    /// The revision at the transaction's snapshot.
    old: Option<Doc>,
    /// The revision it wrote.
    new: Option<Doc>,
}

struct Active {
    txn: Transaction,
    number: u64,
    read_only: bool,
    reads_left: usize,
    writes_left: usize,
    reads: Vec<ReadRecord>,
    own: BTreeMap<Slot, Own>,
    /// Commit only once this many commits were accepted (a long transaction).
    stall_until: Option<usize>,
}

impl Active {
    fn own_view(&self) -> OwnView {
        self.own.iter().map(|(s, o)| (*s, o.new)).collect()
    }
}

enum ClientState {
    Idle,
    Active(Box<Active>),
    /// Its commit is queued; it waits for the batch's outcome.
    Waiting,
}

struct Client {
    speed: u32,
    state: ClientState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Queued,
    InFlight,
    Published,
    Aborted,
}

/// A commit the engine accepted.
struct CommitInfo {
    ts: Timestamp,
    client: usize,
    txn: u64,
    begin: Timestamp,
    reads: Vec<ReadRecord>,
    /// Net writes (documents whose revision changed).
    writes: BTreeMap<Slot, Own>,
    /// Every index key of the old and new revisions, sorted, deduplicated.
    keys: Vec<Vec<u8>>,
    status: Status,
}

enum Phase {
    /// Needs a (first) run.
    Fresh,
    /// Ran at `ts`; not registered yet.
    Running {
        ts: Timestamp,
        result: Vec<Seen>,
        reads: IntervalSet,
        /// Register only once this many commits were published, all settled.
        stall_until: Option<u64>,
    },
    /// Registered with the result of a run at `ts`; `valid` until invalidated.
    Registered {
        ts: Timestamp,
        result: Vec<Seen>,
        valid: bool,
    },
}

struct Subscriber {
    speed: u32,
    queries: Vec<Query>,
    /// The id and the read set the engine's index holds for it.
    registered: Option<(SubscriptionId, IntervalSet)>,
    phase: Phase,
    /// The result it had when it was last invalidated (to count spurious invalidations).
    previous: Option<Vec<Seen>>,
}

enum Pipeline {
    Idle,
    Taken(Box<PersistBatch>, Vec<usize>),
}

#[derive(Clone, Copy)]
enum Action {
    Client(usize),
    Take,
    Complete,
    Subscriber(usize),
}

macro_rules! ensure {
    ($sim:expr, $cond:expr, $kind:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($sim.violation($kind, format!($($arg)+)));
        }
    };
}

struct Sim {
    rng: Rng,
    p: Params,
    fault: Fault,
    engine: Engine,
    schema: Schema,
    step: u64,
    /// Published states in timestamp order, starting with the empty one at 0.
    history: Vec<(Timestamp, Arc<State>)>,
    commits: Vec<CommitInfo>,
    ordinal_of: HashMap<u64, usize>,
    /// Accepted commits not yet taken, in order.
    pending: Vec<usize>,
    pipeline: Pipeline,
    clients: Vec<Client>,
    subscribers: Vec<Subscriber>,
    /// Queries subscribers pick from.
    pool: Vec<Query>,
    subscriber_of: HashMap<SubscriptionId, usize>,
    unsubscribed: Vec<SubscriptionId>,
    started: usize,
    next_payload: i64,
    last_generation: u64,
    stats: Stats,
    trace: Trace,
}

/// The result of a run that passed.
struct Outcome {
    stats: Stats,
    fingerprint: u64,
    trace: Option<Vec<String>>,
}

impl Sim {
    fn new(seed: u64, fault: Fault, keep_trace: bool) -> Sim {
        let mut rng = Rng::new(seed);
        let p = Params::draw(&mut rng);
        let schema = Schema::new(&mut rng, &p);
        let loaded = LoadedState {
            catalog: schema.catalog.clone(),
            store: MvccStore::new(),
            max_ts: Timestamp::ZERO,
            commits: 0,
            revisions: 0,
        };
        let config = EngineConfig {
            write_log: WriteLogConfig {
                // Trim by count only: the wall clock must not matter.
                max_age_ns: u64::MAX,
                max_entries: p.write_log_entries,
            },
            unsafe_skip_validation: fault == Fault::SkipValidation,
            ..EngineConfig::default()
        };
        let engine = Engine::new(loaded, config);
        let clients = p
            .clients
            .iter()
            .map(|&speed| Client {
                speed,
                state: ClientState::Idle,
            })
            .collect();
        // Subscribers often watch the same queries (one interned read set, many readers).
        let pool: Vec<Query> = (0..rng.range(2, 6))
            .map(|_| random_query(&mut rng, &p))
            .collect();
        let subscribers = p
            .subscribers
            .clone()
            .into_iter()
            .map(|speed| Subscriber {
                speed,
                queries: subscriber_queries(&mut rng, &p, &pool),
                registered: None,
                phase: Phase::Fresh,
                previous: None,
            })
            .collect();
        Sim {
            rng,
            fault,
            engine,
            schema,
            step: 0,
            history: vec![(Timestamp::ZERO, Arc::new(State::new()))],
            commits: Vec::new(),
            ordinal_of: HashMap::new(),
            pending: Vec::new(),
            pipeline: Pipeline::Idle,
            clients,
            subscribers,
            pool,
            subscriber_of: HashMap::new(),
            unsubscribed: Vec::new(),
            started: 0,
            next_payload: 1,
            last_generation: 0,
            stats: Stats {
                seeds: 1,
                ..Stats::default()
            },
            trace: Trace {
                hasher: DefaultHasher::new(),
                lines: keep_trace.then(Vec::new),
            },
            p,
        }
    }

    fn violation(&self, kind: Kind, message: String) -> Violation {
        Violation {
            kind,
            step: self.step,
            message,
        }
    }

    fn note(&mut self, tag: &'static str, a: u64, b: u64) {
        self.trace.note(self.step, tag, a, b);
    }

    /// A timestamp as the run knows it: `c<ordinal>` for commits, `0` for the start.
    fn name_ts(&self, ts: Timestamp) -> String {
        match self.ordinal_of.get(&ts.0) {
            Some(o) => format!("c{o}"),
            None if ts == Timestamp::ZERO => "0".into(),
            None => format!("?{}", ts.0),
        }
    }

    fn latest(&self) -> &Arc<State> {
        &self.history.last().expect("history starts non-empty").1
    }

    /// The model at snapshot `ts` (every published commit at or before it).
    fn state_at(&self, ts: Timestamp) -> &Arc<State> {
        let i = self.history.partition_point(|(t, _)| *t <= ts);
        &self.history[i - 1].1
    }

    fn run(mut self) -> Result<Outcome, Violation> {
        let mut actions: Vec<(Action, u32)> = Vec::new();
        loop {
            self.step += 1;
            ensure!(
                self,
                self.step < MAX_STEPS,
                Kind::Engine,
                "the run did not quiesce"
            );
            actions.clear();
            let draining = self.started >= self.p.txns;
            let mut stalled = false;
            for (c, client) in self.clients.iter().enumerate() {
                match &client.state {
                    ClientState::Idle if !draining => {
                        actions.push((Action::Client(c), client.speed));
                    }
                    ClientState::Active(a) => {
                        let waits = a.reads_left + a.writes_left == 0
                            && a.stall_until.is_some_and(|n| self.commits.len() < n);
                        stalled |= waits;
                        if !waits {
                            actions.push((Action::Client(c), client.speed));
                        }
                    }
                    _ => {}
                }
            }
            let clients_can_move = !actions.is_empty();
            match self.pipeline {
                Pipeline::Idle if !self.pending.is_empty() => {
                    actions.push((Action::Take, self.p.take_weight));
                }
                Pipeline::Idle if !draining => actions.push((Action::Take, 1)),
                Pipeline::Taken(..) => actions.push((Action::Complete, self.p.complete_weight)),
                Pipeline::Idle => {}
            }
            let settled = self.pending.is_empty() && matches!(self.pipeline, Pipeline::Idle);
            if stalled && settled && !clients_can_move {
                // No client can move and nothing is queued: the stalls would last forever.
                self.release_stalls();
                continue;
            }
            for (i, s) in self.subscribers.iter().enumerate() {
                let weight = match s.phase {
                    Phase::Registered { valid: true, .. } if draining => 0,
                    Phase::Registered { valid: true, .. } => self.p.churn,
                    Phase::Running {
                        stall_until: Some(n),
                        ..
                    } if !settled || self.stats.published < n => {
                        stalled = true;
                        0
                    }
                    _ => s.speed,
                };
                if weight > 0 {
                    actions.push((Action::Subscriber(i), weight));
                }
            }
            if actions.is_empty() {
                if !stalled {
                    break;
                }
                self.release_stalls();
                continue;
            }
            let i = self.rng.weighted(actions.iter().map(|a| a.1));
            match actions[i].0 {
                Action::Client(c) => self.client_step(c)?,
                Action::Take => self.take()?,
                Action::Complete => self.complete()?,
                Action::Subscriber(i) => self.subscriber_step(i)?,
            }
            let visible = self.engine.visible_ts();
            let expected = self.history.last().expect("history").0;
            ensure!(
                self,
                visible == expected,
                Kind::Timestamps,
                "visible timestamp {} but the last published commit is {}",
                self.name_ts(visible),
                self.name_ts(expected)
            );
        }
        self.stats.steps = self.step;
        self.final_checks()?;
        Ok(Outcome {
            stats: self.stats,
            fingerprint: self.trace.hasher.finish(),
            trace: self.trace.lines,
        })
    }

    fn release_stalls(&mut self) {
        self.note("release-stalls", 0, 0);
        for c in &mut self.clients {
            if let ClientState::Active(a) = &mut c.state {
                a.stall_until = None;
            }
        }
        for s in &mut self.subscribers {
            if let Phase::Running { stall_until, .. } = &mut s.phase {
                *stall_until = None;
            }
        }
    }

    // -- read-write clients -------------------------------------------------------------

    fn client_step(&mut self, c: usize) -> Result<(), Violation> {
        let state = std::mem::replace(&mut self.clients[c].state, ClientState::Idle);
        let mut active = match state {
            ClientState::Idle => {
                return self.begin(c);
            }
            ClientState::Active(a) => a,
            ClientState::Waiting => unreachable!("a waiting client is not scheduled"),
        };
        let left = active.reads_left + active.writes_left;
        if left == 0 {
            return self.commit(c, *active);
        }
        if self.rng.below(left) < active.reads_left {
            active.reads_left -= 1;
            let query = random_query(&mut self.rng, &self.p);
            self.read(&mut active, query)?;
        } else {
            active.writes_left -= 1;
            self.write(&mut active)?;
        }
        self.clients[c].state = ClientState::Active(active);
        Ok(())
    }

    fn begin(&mut self, c: usize) -> Result<(), Violation> {
        self.started += 1;
        self.stats.txns += 1;
        let read_only = self.rng.chance(self.p.read_only_pm);
        let visible = self.engine.visible_ts();
        let txn = if read_only && self.rng.chance(300) {
            // A point-in-time read at an earlier published snapshot.
            let ts = self.history[self.rng.below(self.history.len())].0;
            let txn = self
                .engine
                .begin_at(ts)
                .map_err(|e| self.violation(Kind::Engine, format!("begin_at: {e}")))?;
            ensure!(
                self,
                txn.begin_ts() == ts && txn.is_read_only(),
                Kind::Engine,
                "begin_at({}) began at {}",
                self.name_ts(ts),
                self.name_ts(txn.begin_ts())
            );
            txn
        } else {
            let txn = self.engine.begin(read_only);
            ensure!(
                self,
                txn.begin_ts() == visible,
                Kind::Timestamps,
                "a transaction began at {}, the visible timestamp is {}",
                self.name_ts(txn.begin_ts()),
                self.name_ts(visible)
            );
            txn
        };
        let reads_left = self.rng.range(usize::from(read_only), self.p.max_reads);
        let writes_left = if read_only {
            0
        } else {
            self.rng.range(0, self.p.max_writes)
        };
        let number = self.started as u64;
        let stall_until = self
            .rng
            .chance(self.p.stall_pm)
            .then_some(self.commits.len() + STALL_COMMITS);
        self.note("begin", c as u64, number);
        self.clients[c].state = ClientState::Active(Box::new(Active {
            txn,
            number,
            read_only,
            reads_left,
            writes_left,
            reads: Vec::new(),
            own: BTreeMap::new(),
            stall_until,
        }));
        Ok(())
    }

    fn read(&mut self, a: &mut Active, query: Query) -> Result<(), Violation> {
        let seen = self
            .schema
            .run(&mut a.txn, &query)
            .map_err(|e| self.violation(Kind::Engine, e))?;
        self.note("read", a.number, 0);
        a.reads.push(ReadRecord {
            query,
            own: a.own_view(),
            seen,
        });
        Ok(())
    }

    fn payload(&mut self) -> i64 {
        self.next_payload += 1;
        self.next_payload
    }

    fn record_write(a: &mut Active, slot: Slot, old: Option<Doc>, new: Option<Doc>) {
        a.own
            .entry(slot)
            .and_modify(|o| o.new = new)
            .or_insert(Own { old, new });
    }

    fn write(&mut self, a: &mut Active) -> Result<(), Violation> {
        let slot = random_slot(&mut self.rng, &self.p);
        let id = self.schema.id(slot);
        let v = self.rng.below(self.p.values) as i64;
        let op = if self.rng.chance(600) {
            // Look first, then write what fits.
            self.read(a, Query::Get(slot))?;
            let exists = matches!(
                a.reads.last(),
                Some(ReadRecord {
                    seen: Seen::Doc(Some(_)),
                    ..
                })
            );
            match (exists, self.rng.chance(700)) {
                (false, _) => 0,
                (true, true) => 10,
                (true, false) => 19,
            }
        } else {
            // Blindly: the write may fail (the document exists, or does not).
            self.rng.below(20)
        };
        match op {
            // Insert: the id must not exist (a read of it).
            0..8 => {
                let doc = Doc {
                    v,
                    p: self.payload(),
                    ct: self.rng.range(1, 4) as f64,
                };
                let own = a.own_view();
                let seen = match a.txn.insert_existing(id, doc.ct, doc.fields()) {
                    Ok(written) => {
                        let got = self.schema.to_doc(&written);
                        ensure!(
                            self,
                            got == Ok((slot, doc)),
                            Kind::Engine,
                            "insert of {doc:?} at {slot:?} returned {got:?}"
                        );
                        Self::record_write(a, slot, None, Some(doc));
                        false
                    }
                    Err(Error::InvalidDocument(m)) if m.contains("already exists") => {
                        self.stats.write_errors += 1;
                        true
                    }
                    Err(e) => return Err(self.violation(Kind::Engine, format!("insert: {e}"))),
                };
                self.note("insert", a.number, u64::from(seen));
                a.reads.push(ReadRecord {
                    query: Query::Exists(slot),
                    own,
                    seen: Seen::Exists(seen),
                });
            }
            // Replace: read the document, then replace it if it exists.
            8..15 => {
                self.read(a, Query::Get(slot))?;
                let Some(ReadRecord {
                    seen: Seen::Doc(current),
                    ..
                }) = a.reads.last()
                else {
                    unreachable!("a get records a document")
                };
                let current = *current;
                let p = self.payload();
                let result = a.txn.replace(&id, Doc { v, p, ct: 0.0 }.fields());
                match (current, result) {
                    (Some(old), Ok(written)) => {
                        let doc = Doc { v, p, ct: old.ct };
                        let got = self.schema.to_doc(&written);
                        ensure!(
                            self,
                            got == Ok((slot, doc)),
                            Kind::Engine,
                            "replace of {slot:?} by {doc:?} returned {got:?}"
                        );
                        Self::record_write(a, slot, Some(old), Some(doc));
                    }
                    (None, Err(Error::DocumentNotFound(_))) => self.stats.write_errors += 1,
                    (current, result) => {
                        return Err(self.violation(
                            Kind::Engine,
                            format!(
                                "replace of {slot:?} (get saw {current:?}) returned {:?}",
                                result.map(|d| self.schema.to_doc(&d))
                            ),
                        ));
                    }
                }
                self.note("replace", a.number, u64::from(current.is_some()));
            }
            // Delete: returns the deleted revision (a read of it).
            _ => {
                let own = a.own_view();
                let seen = match a.txn.delete(&id) {
                    Ok(deleted) => {
                        let (s, old) = self
                            .schema
                            .to_doc(&deleted)
                            .map_err(|e| self.violation(Kind::Engine, e))?;
                        ensure!(
                            self,
                            s == slot,
                            Kind::Engine,
                            "delete of {slot:?} deleted {s:?}"
                        );
                        Self::record_write(a, slot, Some(old), None);
                        Some(old)
                    }
                    Err(Error::DocumentNotFound(_)) => {
                        self.stats.write_errors += 1;
                        None
                    }
                    Err(e) => return Err(self.violation(Kind::Engine, format!("delete: {e}"))),
                };
                self.note("delete", a.number, u64::from(seen.is_some()));
                a.reads.push(ReadRecord {
                    query: Query::Get(slot),
                    own,
                    seen: Seen::Doc(seen),
                });
            }
        }
        Ok(())
    }

    /// Check reads against the model `state` (with the transaction's own writes).
    fn check_reads(
        &self,
        reads: &[ReadRecord],
        state: &State,
        kind: Kind,
        what: &str,
    ) -> Result<(), Violation> {
        for (i, r) in reads.iter().enumerate() {
            let want = self.schema.eval(state, &r.own, &r.query);
            ensure!(
                self,
                want == r.seen,
                kind,
                "{what}: read #{i} {:?} saw {:?}, the model has {want:?}",
                r.query,
                r.seen
            );
        }
        Ok(())
    }

    fn commit(&mut self, c: usize, mut a: Active) -> Result<(), Violation> {
        let begin = a.txn.begin_ts();
        let read_set = a.txn.read_set().clone();
        let writes: BTreeMap<Slot, Own> = a
            .own
            .iter()
            .filter(|(_, o)| o.old.is_some() || o.new.is_some())
            .map(|(s, o)| (*s, *o))
            .collect();
        // Every commit at or before the snapshot is settled: the reads must match it.
        let what = format!(
            "transaction {} at snapshot {}",
            a.number,
            self.name_ts(begin)
        );
        self.check_reads(&a.reads, self.state_at(begin), Kind::Snapshot, &what)?;
        // The write log check goes through its newest-writer map past 32 later commits.
        let later = self
            .commits
            .iter()
            .rev()
            .take_while(|i| i.ts > begin)
            .filter(|i| i.status != Status::Aborted)
            .count();
        if later > PER_COMMIT_CHECK_LIMIT && self.p.write_log_entries > PER_COMMIT_CHECK_LIMIT {
            self.stats.long_validations += 1;
        }
        let visible = self.engine.visible_ts();
        match self.engine.commit(a.txn) {
            Ok(Some(ts)) => {
                ensure!(
                    self,
                    !writes.is_empty() && !a.read_only,
                    Kind::Engine,
                    "{what}: commit without writes got timestamp {}",
                    ts.0
                );
                let last = self.commits.last().map_or(Timestamp::ZERO, |i| i.ts);
                ensure!(
                    self,
                    ts > last && ts > visible,
                    Kind::Timestamps,
                    "{what}: commit timestamp {} is not above the last one {} and the visible {}",
                    ts.0,
                    last.0,
                    visible.0
                );
                let mut keys = Vec::new();
                for (slot, own) in &writes {
                    for doc in [own.old, own.new].iter().flatten() {
                        self.schema.keys_of(*slot, doc, &mut keys);
                    }
                }
                keys.sort_unstable();
                keys.dedup();
                let ordinal = self.commits.len();
                self.ordinal_of.insert(ts.0, ordinal);
                self.commits.push(CommitInfo {
                    ts,
                    client: c,
                    txn: a.number,
                    begin,
                    reads: a.reads,
                    writes,
                    keys,
                    status: Status::Queued,
                });
                self.pending.push(ordinal);
                self.stats.commits += 1;
                self.note("commit", a.number, ordinal as u64);
                self.clients[c].state = ClientState::Waiting;
            }
            Ok(None) => {
                ensure!(
                    self,
                    writes.is_empty(),
                    Kind::Engine,
                    "{what}: {} writes committed as read-only",
                    writes.len()
                );
                self.stats.read_only += 1;
                self.note("commit-ro", a.number, 0);
            }
            Err(Error::Conflict(conflict)) => {
                self.justify_conflict(&what, begin, &read_set, &conflict)?;
                self.stats.conflicts += 1;
                let ordinal = self.ordinal_of[&conflict.ts.0];
                self.note("conflict", a.number, ordinal as u64);
            }
            Err(Error::TransactionTooOld { begin_ts, oldest }) => {
                let known = self
                    .ordinal_of
                    .get(&oldest.0)
                    .map(|&o| self.commits[o].status);
                ensure!(
                    self,
                    begin_ts == begin
                        && oldest > begin
                        && known == Some(Status::Published)
                        && self.p.write_log_entries < self.commits.len(),
                    Kind::Conflict,
                    "{what}: TransactionTooOld (begin {}, oldest {} {known:?}) with a write log \
                     of {} entries after {} commits",
                    self.name_ts(begin_ts),
                    self.name_ts(oldest),
                    self.p.write_log_entries,
                    self.commits.len()
                );
                self.stats.too_old += 1;
                self.note("too-old", a.number, 0);
            }
            Err(e) => return Err(self.violation(Kind::Engine, format!("{what}: commit: {e}"))),
        }
        Ok(())
    }

    fn justify_conflict(
        &mut self,
        what: &str,
        begin: Timestamp,
        read_set: &IntervalSet,
        conflict: &Conflict,
    ) -> Result<(), Violation> {
        let Some(&ordinal) = self.ordinal_of.get(&conflict.ts.0) else {
            return Err(self.violation(
                Kind::Conflict,
                format!("{what}: conflict with unknown timestamp {}", conflict.ts.0),
            ));
        };
        let info = &self.commits[ordinal];
        let key = unhex(&conflict.key_hex);
        ensure!(
            self,
            info.ts > begin && info.status != Status::Aborted,
            Kind::Conflict,
            "{what}: conflict with c{ordinal} ({:?}), which is not a live commit after the \
             snapshot",
            info.status
        );
        ensure!(
            self,
            key.as_ref()
                .is_some_and(|k| read_set.intervals().iter().any(|iv| iv.contains(k))),
            Kind::Conflict,
            "{what}: the conflict key {} is not in the read set {read_set:?}",
            conflict.key_hex
        );
        ensure!(
            self,
            key.as_ref()
                .is_some_and(|k| info.keys.binary_search(k).is_ok()),
            Kind::Conflict,
            "{what}: c{ordinal} did not write the conflict key {}",
            conflict.key_hex
        );
        if info.status != Status::Published {
            self.stats.conflicts_with_undurable += 1;
        }
        Ok(())
    }

    // -- persistence ----------------------------------------------------------------------

    fn take(&mut self) -> Result<(), Violation> {
        let batch = self.engine.take_batch();
        ensure!(
            self,
            !self.engine.has_pending(),
            Kind::Batch,
            "something is pending right after take_batch"
        );
        ensure!(
            self,
            batch.generation >= self.last_generation,
            Kind::Batch,
            "batch generation went back from {} to {}",
            self.last_generation,
            batch.generation
        );
        self.last_generation = batch.generation;
        ensure!(
            self,
            batch.catalog.is_none() && batch.dropped_indexes.is_empty(),
            Kind::Batch,
            "the batch carries catalog changes nobody made"
        );
        let got: Vec<String> = batch
            .commits
            .timestamps()
            .into_iter()
            .map(|t| self.name_ts(t))
            .collect();
        let want: Vec<String> = self.pending.iter().map(|o| format!("c{o}")).collect();
        ensure!(
            self,
            got == want,
            Kind::Batch,
            "the batch holds {got:?}, the queued commits are {want:?}"
        );
        let ordinals = std::mem::take(&mut self.pending);
        for (commit, &ordinal) in batch.commits.commits.iter().zip(&ordinals) {
            let info = &self.commits[ordinal];
            let mut changes = Vec::new();
            for change in &commit.changes {
                let doc = change.doc.as_ref().map(|d| self.schema.to_doc(d));
                let slot = self.schema.slot_of.get(&change.id).copied();
                changes.push((slot, doc.map(|d| d.map(|(_, d)| d))));
            }
            changes.sort_by_key(|c| c.0);
            let expected: Vec<_> = info
                .writes
                .iter()
                .map(|(s, o)| (Some(*s), o.new.map(Ok)))
                .collect();
            ensure!(
                self,
                changes == expected,
                Kind::Batch,
                "c{ordinal}: the batch applies {changes:?}, the transaction wrote {expected:?}"
            );
            let written: Vec<&[u8]> = commit.written.keys.iter().map(|k| &**k).collect();
            let expected: Vec<&[u8]> = info.keys.iter().map(Vec::as_slice).collect();
            ensure!(
                self,
                written == expected,
                Kind::Batch,
                "c{ordinal}: the write log entry holds {} keys, the documents have {} index keys",
                written.len(),
                expected.len()
            );
        }
        for &o in &ordinals {
            self.commits[o].status = Status::InFlight;
        }
        if ordinals.is_empty() {
            self.stats.empty_batches += 1;
            self.note("take-empty", 0, 0);
        } else {
            self.stats.batches += 1;
            self.stats.max_batch = self.stats.max_batch.max(ordinals.len() as u64);
            self.note("take", ordinals[0] as u64, ordinals.len() as u64);
            self.pipeline = Pipeline::Taken(Box::new(batch), ordinals);
        }
        Ok(())
    }

    fn complete(&mut self) -> Result<(), Violation> {
        let Pipeline::Taken(batch, ordinals) =
            std::mem::replace(&mut self.pipeline, Pipeline::Idle)
        else {
            unreachable!("complete is scheduled with a batch in flight")
        };
        if self.rng.chance(self.p.fail_pm) {
            self.fail(*batch, &ordinals)
        } else {
            self.publish(&batch, &ordinals)
        }
    }

    fn fail(&mut self, batch: PersistBatch, ordinals: &[usize]) -> Result<(), Violation> {
        let before = self.engine.visible_ts();
        self.note("fail", ordinals[0] as u64, ordinals.len() as u64);
        if self.fault == Fault::PublishFailedBatches {
            self.engine.publish(&batch);
        } else {
            self.engine.abort(batch);
        }
        self.stats.failed_batches += 1;
        for &o in ordinals {
            self.commits[o].status = Status::Aborted;
            self.stats.failed += 1;
            // The client learns that its commit failed.
            let client = self.commits[o].client;
            self.clients[client].state = ClientState::Idle;
        }
        let after = self.engine.visible_ts();
        ensure!(
            self,
            after == before,
            Kind::Aborted,
            "a failed batch ({:?}) moved the visible timestamp from {} to {}",
            ordinals,
            self.name_ts(before),
            self.name_ts(after)
        );
        Ok(())
    }

    fn publish(&mut self, batch: &PersistBatch, ordinals: &[usize]) -> Result<(), Violation> {
        let before = self.engine.visible_ts();
        let hits = self.engine.publish(batch);
        let after = self.engine.visible_ts();
        let last = self.commits[*ordinals.last().expect("non-empty batch")].ts;
        ensure!(
            self,
            after == last && after > before,
            Kind::Timestamps,
            "publishing {ordinals:?} moved the visible timestamp from {} to {}",
            self.name_ts(before),
            self.name_ts(after)
        );
        self.stats.published += ordinals.len() as u64;
        // Serializability: each commit's reads, against the published commits before it.
        let mut state = State::clone(self.latest());
        for &o in ordinals {
            let info = &self.commits[o];
            let what = format!(
                "c{o} (transaction {}, snapshot {})",
                info.txn,
                self.name_ts(info.begin)
            );
            self.check_reads(&info.reads, &state, Kind::Serializability, &what)?;
            for (slot, own) in &info.writes {
                match own.new {
                    Some(d) => state.insert(*slot, d),
                    None => state.remove(slot),
                };
            }
            let ts = info.ts;
            let client = info.client;
            self.history.push((ts, Arc::new(state.clone())));
            self.commits[o].status = Status::Published;
            self.clients[client].state = ClientState::Idle;
        }
        self.note("publish", ordinals[0] as u64, hits.len() as u64);
        // Exactly the registered read sets holding a written key are invalidated.
        let mut expected: Vec<SubscriptionId> = self
            .subscribers
            .iter()
            .filter_map(|s| s.registered.as_ref())
            .filter(|(_, reads)| {
                ordinals.iter().any(|&o| {
                    self.commits[o]
                        .keys
                        .iter()
                        .any(|k| reads.intervals().iter().any(|iv| iv.contains(k)))
                })
            })
            .map(|(id, _)| *id)
            .collect();
        expected.sort_unstable();
        ensure!(
            self,
            hits == expected,
            Kind::Subscription,
            "publishing {ordinals:?} invalidated {hits:?}, the read sets hold written keys for \
             {expected:?} (unsubscribed: {:?})",
            self.unsubscribed
        );
        if self.fault != Fault::DropInvalidations {
            for id in &hits {
                let s = &mut self.subscribers[self.subscriber_of[id]];
                // A subscription being re-run is checked for misses when it registers.
                if let Phase::Registered { valid, result, .. } = &mut s.phase
                    && *valid
                {
                    *valid = false;
                    s.previous = Some(result.clone());
                    self.stats.invalidations += 1;
                }
            }
        }
        self.check_subscriptions()
    }

    // -- subscriptions ------------------------------------------------------------------

    /// Every subscription not invalidated holds what a query at the visible timestamp gives.
    fn check_subscriptions(&self) -> Result<(), Violation> {
        let state = self.latest();
        let no_writes = OwnView::new();
        for (i, s) in self.subscribers.iter().enumerate() {
            if let Phase::Registered {
                ts,
                result,
                valid: true,
            } = &s.phase
            {
                let want: Vec<Seen> = s
                    .queries
                    .iter()
                    .map(|q| self.schema.eval(state, &no_writes, q))
                    .collect();
                ensure!(
                    self,
                    *result == want,
                    Kind::Subscription,
                    "missed invalidation: subscriber {i} ({:?}, run at {}) holds {result:?}, at \
                     {} the queries give {want:?}",
                    s.queries,
                    self.name_ts(*ts),
                    self.name_ts(self.history.last().expect("history").0)
                );
            }
        }
        Ok(())
    }

    fn subscriber_step(&mut self, i: usize) -> Result<(), Violation> {
        let phase = std::mem::replace(&mut self.subscribers[i].phase, Phase::Fresh);
        match phase {
            Phase::Fresh | Phase::Registered { valid: false, .. } => {
                let mut txn = self.engine.begin(true);
                let ts = txn.begin_ts();
                let mut result = Vec::new();
                for q in &self.subscribers[i].queries {
                    let seen = self
                        .schema
                        .run(&mut txn, q)
                        .map_err(|e| self.violation(Kind::Engine, e))?;
                    result.push(seen);
                }
                let what = format!("subscriber {i} at {}", self.name_ts(ts));
                let state = self.state_at(ts);
                let no_writes = OwnView::new();
                for (q, seen) in self.subscribers[i].queries.iter().zip(&result) {
                    let want = self.schema.eval(state, &no_writes, q);
                    ensure!(
                        self,
                        *seen == want,
                        Kind::Snapshot,
                        "{what}: {q:?} saw {seen:?}, the model has {want:?}"
                    );
                }
                if self.subscribers[i].previous.take().as_ref() == Some(&result) {
                    self.stats.spurious += 1;
                }
                let reads = txn.read_set().clone();
                let stall_until = self
                    .rng
                    .chance(self.p.stall_pm)
                    .then_some(self.stats.published + STALL_COMMITS as u64);
                self.note("sub-run", i as u64, 0);
                self.subscribers[i].phase = Phase::Running {
                    ts,
                    result,
                    reads,
                    stall_until,
                };
            }
            Phase::Running {
                ts, result, reads, ..
            } => {
                let visible = self.engine.visible_ts();
                let missed = match self.subscribers[i].registered.take() {
                    None => {
                        let (id, missed) = self.engine.subscribe(&reads, ts);
                        ensure!(
                            self,
                            !self.subscriber_of.contains_key(&id),
                            Kind::Subscription,
                            "subscription id {id:?} handed out twice"
                        );
                        self.subscriber_of.insert(id, i);
                        self.stats.subscriptions += 1;
                        self.subscribers[i].registered = Some((id, reads.clone()));
                        missed
                    }
                    Some((id, _)) => {
                        let missed = self.engine.resubscribe(id, &reads, ts);
                        self.subscribers[i].registered = Some((id, reads.clone()));
                        missed
                    }
                };
                // Did a commit published after the run write into its read set?
                let mut since = 0;
                let mut overlap = false;
                let mut settled = true;
                for info in self.commits.iter().rev().take_while(|c| c.ts > ts) {
                    match info.status {
                        Status::Published if info.ts <= visible => {
                            since += 1;
                            overlap |= info
                                .keys
                                .iter()
                                .any(|k| reads.intervals().iter().any(|iv| iv.contains(k)));
                        }
                        Status::Aborted => {}
                        _ => settled = false,
                    }
                }
                if since > PER_COMMIT_CHECK_LIMIT
                    && settled
                    && self.p.write_log_entries > PER_COMMIT_CHECK_LIMIT
                {
                    self.stats.long_missed_checks += 1;
                }
                ensure!(
                    self,
                    missed || !overlap,
                    Kind::Subscription,
                    "subscriber {i} registered a run at {} as current, but a commit published \
                     since (visible {}) wrote into its read set",
                    self.name_ts(ts),
                    self.name_ts(visible)
                );
                if missed {
                    self.stats.missed_at_subscribe += 1;
                    if !overlap {
                        self.stats.conservative_misses += 1;
                    }
                    self.subscribers[i].previous = Some(result.clone());
                }
                self.note("sub-register", i as u64, u64::from(missed));
                self.subscribers[i].phase = Phase::Registered {
                    ts,
                    result,
                    valid: !missed,
                };
                self.check_subscriptions()?;
            }
            Phase::Registered { valid: true, .. } => {
                // Churn: unsubscribe, and watch another query.
                let (id, _) = self.subscribers[i]
                    .registered
                    .take()
                    .expect("a registered subscriber has an id");
                ensure!(
                    self,
                    self.engine.unsubscribe(id),
                    Kind::Subscription,
                    "unsubscribe({id:?}) found nothing"
                );
                self.subscriber_of.remove(&id);
                self.unsubscribed.push(id);
                self.subscribers[i].queries =
                    subscriber_queries(&mut self.rng, &self.p, &self.pool);
                self.subscribers[i].previous = None;
                self.note("unsubscribe", i as u64, id.0);
            }
        }
        Ok(())
    }

    // -- the end ------------------------------------------------------------------------

    fn final_checks(&mut self) -> Result<(), Violation> {
        ensure!(
            self,
            self.pending.is_empty()
                && matches!(self.pipeline, Pipeline::Idle)
                && self
                    .clients
                    .iter()
                    .all(|c| matches!(c.state, ClientState::Idle))
                && !self.engine.has_pending(),
            Kind::Engine,
            "the run ended with work outstanding"
        );
        if let Some(o) = self
            .commits
            .iter()
            .position(|c| !matches!(c.status, Status::Published | Status::Aborted))
        {
            return Err(self.violation(Kind::Batch, format!("c{o} was never settled")));
        }
        // The engine's documents at the visible timestamp are the model's.
        let latest = Arc::clone(self.latest());
        let mut txn = self.engine.begin(true);
        let no_writes = OwnView::new();
        let slots: Vec<Slot> = self.schema.slots().collect();
        for slot in slots {
            let q = Query::Get(slot);
            let got = self
                .schema
                .run(&mut txn, &q)
                .map_err(|e| self.violation(Kind::Engine, e))?;
            let want = self.schema.eval(&latest, &no_writes, &q);
            ensure!(
                self,
                got == want,
                Kind::FinalState,
                "at the end {slot:?} is {got:?}, the model has {want:?}"
            );
        }
        // Every snapshot, published or aborted: the indexes hold exactly the model's documents.
        let mut snapshots: Vec<(Timestamp, Kind)> = self
            .history
            .iter()
            .map(|(ts, _)| (*ts, Kind::FinalState))
            .collect();
        let visible = self.engine.visible_ts();
        snapshots.extend(
            self.commits
                .iter()
                .filter(|c| c.status == Status::Aborted && c.ts <= visible)
                .map(|c| (c.ts, Kind::Aborted)),
        );
        let scans: Vec<Query> = self.schema.full_scans().collect();
        for (ts, kind) in snapshots {
            let mut txn = self
                .engine
                .begin_at(ts)
                .map_err(|e| self.violation(Kind::Engine, format!("begin_at: {e}")))?;
            let state = self.state_at(ts);
            for q in &scans {
                let got = self
                    .schema
                    .run(&mut txn, q)
                    .map_err(|e| self.violation(Kind::Engine, e))?;
                let want = self.schema.eval(state, &no_writes, q);
                ensure!(
                    self,
                    got == want,
                    kind,
                    "at snapshot {} the engine's {q:?} gives {got:?}, the model {want:?}",
                    self.name_ts(ts)
                );
            }
            self.stats.snapshots_checked += 1;
        }
        // Every subscription holds what a fresh query gives.
        let registered = self
            .subscribers
            .iter()
            .filter(|s| s.registered.is_some())
            .count();
        ensure!(
            self,
            self.engine.subscription_count() == registered,
            Kind::Subscription,
            "the engine holds {} subscriptions, the clients {registered}",
            self.engine.subscription_count()
        );
        for (i, s) in self.subscribers.iter().enumerate() {
            let Phase::Registered {
                result,
                valid: true,
                ..
            } = &s.phase
            else {
                if s.registered.is_none() {
                    continue;
                }
                return Err(
                    self.violation(Kind::Subscription, format!("subscriber {i} did not settle"))
                );
            };
            let mut txn = self.engine.begin(true);
            for (q, held) in s.queries.iter().zip(result) {
                let fresh = self
                    .schema
                    .run(&mut txn, q)
                    .map_err(|e| self.violation(Kind::Engine, e))?;
                ensure!(
                    self,
                    *held == fresh,
                    Kind::Subscription,
                    "at the end subscriber {i} holds {held:?} for {q:?}, a fresh query gives \
                     {fresh:?}"
                );
            }
        }
        Ok(())
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Running seeds
// ---------------------------------------------------------------------------------------

/// Run one seed; a panic inside counts as a violation of kind `Engine`.
fn run_seed(seed: u64, fault: Fault, keep_trace: bool) -> Result<Outcome, Violation> {
    catch_unwind(AssertUnwindSafe(|| Sim::new(seed, fault, keep_trace).run())).unwrap_or_else(
        |panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(Violation {
                kind: Kind::Engine,
                step: 0,
                message: format!("panic: {message}"),
            })
        },
    )
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn report(seed: u64, v: &Violation) -> String {
    let mut out = format!(
        "simulation seed {seed} failed at step {}: {:?} violation: {}\n\
         reproduce: SIM_SEED={seed} cargo test -p reactive-core --release --test simulation -- \
         simulate_seeds --nocapture\n\
         (add SIM_TRACE=1 to print the run's events)",
        v.step, v.kind, v.message
    );
    if let Ok(Ok(params)) = catch_unwind(|| Ok::<_, ()>(Params::draw(&mut Rng::new(seed)))) {
        let _ = write!(out, "\nparameters: {params:?}");
    }
    out
}

/// The main test: many seeds, each a whole run, all invariants checked.
#[test]
fn simulate_seeds() {
    let trace = std::env::var_os("SIM_TRACE").is_some();
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let base = env_u64("SIM_SEED_BASE").unwrap_or(0);
            let count = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
            (base..base + count).collect()
        }
    };
    let started = Instant::now();
    let mut total = Stats::default();
    for &seed in &seeds {
        match run_seed(seed, Fault::None, trace) {
            Ok(outcome) => {
                if let Some(lines) = outcome.trace {
                    eprintln!("seed {seed}: {} events", lines.len());
                    for line in lines {
                        eprintln!("{line}");
                    }
                }
                total.add(&outcome.stats);
            }
            Err(v) => panic!("{}", report(seed, &v)),
        }
    }
    eprintln!(
        "simulated {} seeds ({}..={}) in {:.1?}: {total:#?}",
        seeds.len(),
        seeds[0],
        seeds[seeds.len() - 1],
        started.elapsed()
    );
    if seeds.len() >= 500 {
        // The runs must exercise what they claim to check.
        let t = &total;
        for (what, n) in [
            ("published commits", t.published),
            ("failed commits", t.failed),
            ("conflicts", t.conflicts),
            (
                "conflicts with commits not yet durable",
                t.conflicts_with_undurable,
            ),
            ("TransactionTooOld", t.too_old),
            ("validations past the per-commit limit", t.long_validations),
            ("invalidations", t.invalidations),
            ("misses reported at subscribe", t.missed_at_subscribe),
            (
                "miss checks past the per-commit limit",
                t.long_missed_checks,
            ),
            ("spurious invalidations", t.spurious),
            ("empty batches", t.empty_batches),
            ("write errors", t.write_errors),
        ] {
            assert!(
                n > 0,
                "no {what} in {} seeds: the simulation lost coverage",
                seeds.len()
            );
        }
    }
}

/// The first seed in `seeds` whose run breaks an invariant, with the violation.
fn first_violation(fault: Fault, seeds: std::ops::Range<u64>) -> Option<(u64, Violation)> {
    seeds
        .into_iter()
        .find_map(|seed| run_seed(seed, fault, false).err().map(|v| (seed, v)))
}

#[test]
fn without_conflict_checks_serializability_fails() {
    let found = (0..400).find_map(|seed| match run_seed(seed, Fault::SkipValidation, false) {
        Err(v) if v.kind == Kind::Serializability => Some((seed, v)),
        _ => None,
    });
    let (seed, v) = found.expect("with unsafe_skip_validation the checker must see a violation");
    eprintln!(
        "unsafe_skip_validation caught at seed {seed}: {}",
        v.message
    );
}

#[test]
fn publishing_a_failed_batch_is_caught() {
    let (seed, v) = first_violation(Fault::PublishFailedBatches, 0..400)
        .expect("publishing failed batches must be caught");
    assert_eq!(v.kind, Kind::Aborted, "seed {seed}: {}", v.message);
    eprintln!(
        "publishing a failed batch caught at seed {seed}: {}",
        v.message
    );
}

#[test]
fn dropped_invalidations_are_caught() {
    let (seed, v) = first_violation(Fault::DropInvalidations, 0..400)
        .expect("dropping invalidations must be caught");
    assert_eq!(v.kind, Kind::Subscription, "seed {seed}: {}", v.message);
    eprintln!("dropped invalidations caught at seed {seed}: {}", v.message);
}

#[test]
fn a_seed_replays_identically() {
    for seed in [1, 7, 42, 1234] {
        let a =
            run_seed(seed, Fault::None, false).unwrap_or_else(|v| panic!("{}", report(seed, &v)));
        let b =
            run_seed(seed, Fault::None, false).unwrap_or_else(|v| panic!("{}", report(seed, &v)));
        assert_eq!(
            a.fingerprint, b.fingerprint,
            "seed {seed} ran differently twice"
        );
        assert_eq!(a.stats.steps, b.stats.steps);
    }
    let a = run_seed(1, Fault::None, false).map(|o| o.fingerprint).ok();
    let b = run_seed(2, Fault::None, false).map(|o| o.fingerprint).ok();
    assert_ne!(a, b, "different seeds should make different runs");
}

//! Conflict checking: one committer check of a read set against a window of the write log.
//!
//! The figure of merit (ARCHITECTURE.md, the committer) is checks per second for a transaction
//! with a 100-interval read set (normalized) that began before a 10,000-commit window of the
//! write log, each commit having written 4 keys (one document: `by_id`, `by_creation_time`
//! and two user-index keys). No write overlaps the read set, so every entry is checked: this
//! is the worst case of a successful commit. The keys interleave with the read intervals in
//! the same indexes, so each lookup really binary-searches instead of falling off an end.
//!
//! Variants give context: a 1-interval read set (a typical insert-only mutation reads one
//! `by_id` point or nothing; with fewer intervals than keys `IntervalSet::first_hit` takes
//! its other branch) and a 1,000-interval read set (a deeper binary search per key), both
//! against the same 10k window, and the 100-interval set against a 1k window (the cost is
//! linear in the window).
//!
//! Run: `cargo bench -p reactive-core --bench conflict` (add `-- --quick` for a fast pass).
//! `benches/run.py` parses the `thrpt:` line of `conflict/read100_log10k` (elements = checks).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use reactive_core::interval::{Interval, IntervalSet};
use reactive_core::timestamp::Timestamp;
use reactive_core::write_log::{WriteLog, WriteLogConfig, WriteLogEntry};

/// Index ids as the catalog numbers them (4 bytes big-endian lead every keyspace key).
const BY_ID: u32 = 1;
const BY_CREATION_TIME: u32 = 2;
const BY_X: u32 = 3;
const BY_Y: u32 = 4;

/// A keyspace key: index id, a type tag, an 8-byte big-endian number, and a 16-byte tail
/// standing in for the document id that user-index keys end with (~29 bytes, like real keys).
fn key(index: u32, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(29);
    k.extend_from_slice(&index.to_be_bytes());
    k.push(0x05);
    k.extend_from_slice(&n.to_be_bytes());
    k.extend_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k.extend_from_slice(&(!n).to_be_bytes());
    k
}

/// The `n`-th read-set interval: even ones are `get` points in `by_id`, odd ones are range
/// scans `[2s·W, 2s·W + W)` in `by_x`. Written keys use odd multiples (see [`write_key`]), so
/// nothing overlaps while keys and intervals interleave across the whole key range.
const SPREAD: u64 = 1 << 20;

fn read_set(intervals: usize) -> IntervalSet {
    let mut set = IntervalSet::new();
    for i in 0..intervals as u64 {
        let slot = i / 2;
        if i % 2 == 0 {
            set.push(Interval::point(&key(BY_ID, 2 * slot * SPREAD)));
        } else {
            let start = key(BY_X, 2 * slot * SPREAD);
            let end = key(BY_X, 2 * slot * SPREAD + SPREAD);
            set.push(Interval::new(start, end).expect("non-empty"));
        }
    }
    set.normalize();
    assert_eq!(
        set.len(),
        intervals,
        "intervals must stay distinct after normalizing"
    );
    set
}

/// The written keys of commit `c`: its document's four index keys, sorted as the committer
/// stores them; every one lies between read intervals, never inside.
fn write_keys(c: u64, spread_over: u64) -> Vec<Box<[u8]>> {
    let slot = c % spread_over;
    let odd = (2 * slot + 1) * SPREAD + c / spread_over; // inside a gap of both indexes
    let mut keys: Vec<Box<[u8]>> = vec![
        key(BY_ID, odd).into_boxed_slice(),
        key(BY_CREATION_TIME, c).into_boxed_slice(),
        key(BY_X, odd).into_boxed_slice(),
        key(BY_Y, c).into_boxed_slice(),
    ];
    keys.sort_unstable();
    keys
}

fn write_log(entries: u64, spread_over: u64) -> WriteLog {
    let config = WriteLogConfig {
        max_age_ns: u64::MAX,
        max_entries: usize::MAX,
    };
    let mut log = WriteLog::new(Timestamp(1_000), config);
    for c in 0..entries {
        let ts = Timestamp(1_001 + c);
        log.append(Arc::new(WriteLogEntry {
            ts,
            keys: write_keys(c, spread_over),
        }));
    }
    log
}

fn bench_check(c: &mut Criterion, name: &str, intervals: usize, entries: u64) {
    let reads = read_set(intervals);
    let log = write_log(entries, (intervals as u64 / 2).max(1) + 1);
    let begin = Timestamp(1_000); // before every entry: the whole window is checked
    assert_eq!(log.len(), entries as usize);
    assert_eq!(
        log.first_overlap(begin, Timestamp::MAX, &reads),
        Ok(None),
        "the bench needs a read set that no write overlaps"
    );
    let mut group = c.benchmark_group("conflict");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| black_box(log.first_overlap(black_box(begin), Timestamp::MAX, &reads)));
    });
    group.finish();
}

fn conflict(c: &mut Criterion) {
    bench_check(c, "read100_log10k", 100, 10_000);
    bench_check(c, "read1_log10k", 1, 10_000);
    bench_check(c, "read1000_log10k", 1_000, 10_000);
    bench_check(c, "read100_log1k", 100, 1_000);
}

/// Sanity check that the fixture conflicts when it should (a read covering a written key).
fn fixture_detects_overlap() {
    let log = write_log(1_000, 51);
    let mut reads = read_set(100);
    reads.push(Interval::point(&write_keys(500, 51)[0]));
    reads.normalize();
    let hit = log
        .first_overlap(Timestamp(1_000), Timestamp::MAX, &reads)
        .expect("in window");
    assert_eq!(hit.map(|o| o.ts), Some(Timestamp(1_501)));
}

fn config() -> Criterion {
    fixture_detects_overlap();
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = conflict
}
criterion_main!(benches);

//! Benchmarks `SubscriptionIndex::matches` for one commit of 4 written keys at 1k, 10k,
//! 100k and 1M subscriptions, then prints a plain table of median ns per commit.
//!
//! Key shape: 4-byte index id, tag 0x10, a string value (8-15 bytes), 0x00, then a
//! 16-byte document id for written/point keys. Mixes:
//! * `prefix`: every subscription is one distinct prefix range `[P, succ(P))`;
//! * `half_point`: even subscriptions are prefix ranges, odd ones point intervals;
//! * `range` (informational): general ranges `[P ++ docid, succ(P))` held in the treap.
//!
//! Each commit writes 2 keys that hit some subscription and 2 that hit none. `cold`
//! cycles through a pool of 65 536 distinct commits (so lookups miss the CPU caches as
//! they would in production); `hot` repeats one commit.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
use reactive_core::interval::Interval;
use reactive_core::subscriptions::{SubscriptionId, SubscriptionIndex};

const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];
const POOL: usize = 1 << 16;
const INDEX_ID: [u8; 4] = [0, 0, 0, 7];

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `INDEX_ID ++ 0x10 ++ value_i ++ 0x00`; distinct for every `i < 2^32`.
fn prefix_key(i: u64) -> Vec<u8> {
    // Bijective scramble of the low 32 bits keeps values distinct but unordered.
    let x = (i as u32).wrapping_mul(0x9E37_79B1).rotate_left(13) ^ 0x5bd1_e995;
    let h = mix64(i);
    let mut k = INDEX_ID.to_vec();
    k.push(0x10);
    k.extend(format!("{x:08x}").bytes());
    k.extend((0..h % 8).map(|j| b'a' + ((h >> (8 + 5 * j)) % 26) as u8));
    k.push(0);
    k
}

fn successor(p: &[u8]) -> Vec<u8> {
    let mut e = p.to_vec();
    while e.last() == Some(&0xFF) {
        e.pop();
    }
    if let Some(last) = e.last_mut() {
        *last += 1;
    }
    e
}

fn doc_key(prefix: &[u8], doc: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend(mix64(doc).to_be_bytes());
    k.extend(mix64(!doc).to_be_bytes());
    k
}

#[derive(Clone, Copy, PartialEq)]
enum Mix {
    Prefix,
    HalfPoint,
    Range,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Prefix => "prefix",
            Mix::HalfPoint => "half_point",
            Mix::Range => "range",
        }
    }

    fn interval(self, i: u64) -> Interval {
        let p = prefix_key(i);
        match self {
            Mix::HalfPoint if i % 2 == 1 => Interval::point(&doc_key(&p, i)),
            Mix::Range => {
                let mut lo = p.clone();
                lo.extend([0x40; 8]);
                Interval {
                    end: successor(&p),
                    start: lo,
                }
            }
            _ => Interval {
                end: successor(&p),
                start: p,
            },
        }
    }

    /// A written key inside subscription `i`'s interval.
    fn hit(self, i: u64, salt: u64) -> Vec<u8> {
        match self {
            Mix::HalfPoint if i % 2 == 1 => doc_key(&prefix_key(i), i),
            Mix::Range => {
                let mut k = prefix_key(i);
                k.extend([0x80; 8]);
                k.extend(mix64(salt).to_be_bytes());
                k
            }
            _ => doc_key(&prefix_key(i), salt),
        }
    }
}

fn build(mix: Mix, n: usize) -> SubscriptionIndex {
    let mut idx = SubscriptionIndex::new();
    for i in 0..n as u64 {
        idx.insert(SubscriptionId(i), &[mix.interval(i)]);
    }
    idx
}

/// Commits of 4 keys: 2 hitting random subscriptions, 2 hitting nothing, shuffled.
fn commits(mix: Mix, n: usize, count: usize) -> Vec<Vec<Vec<u8>>> {
    (0..count as u64)
        .map(|c| {
            let r = |j: u64| mix64(c * 8 + j);
            let mut keys = vec![
                mix.hit(r(0) % n as u64, r(1)),
                mix.hit(r(2) % n as u64, r(3)),
                doc_key(&prefix_key(n as u64 + r(4) % n as u64), r(5)),
                doc_key(&prefix_key(n as u64 + r(6) % n as u64), r(7)),
            ];
            keys.rotate_left((r(8) % 4) as usize);
            keys
        })
        .collect()
}

/// Median over rounds of the mean ns per commit, cycling through `pool`.
fn median_ns(idx: &SubscriptionIndex, pool: &[Vec<Vec<u8>>], per_round: usize) -> f64 {
    let mut j = 0;
    let mut rounds: Vec<f64> = (0..31)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_round {
                black_box(idx.matches(black_box(&pool[j % pool.len()])));
                j += 1;
            }
            t.elapsed().as_nanos() as f64 / per_round as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

struct Row {
    mix: Mix,
    size: usize,
    build_s: f64,
    cold: f64,
    hot: f64,
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .configure_from_args();
    let mut rows = Vec::new();
    for mix in [Mix::Prefix, Mix::HalfPoint, Mix::Range] {
        let mut group = c.benchmark_group(format!("matches_4_keys/{}", mix.name()));
        for n in SIZES {
            let t = Instant::now();
            let idx = build(mix, n);
            let build_s = t.elapsed().as_secs_f64();
            let pool = commits(mix, n, POOL);
            for commit in pool.iter().take(64) {
                assert!(!idx.matches(commit).is_empty(), "commit must hit");
            }
            let mut j = 0;
            group.bench_with_input(BenchmarkId::new("cold", n), &pool, |b, pool| {
                b.iter(|| {
                    j += 1;
                    idx.matches(black_box(&pool[j % pool.len()]))
                });
            });
            let cold = median_ns(&idx, &pool, 20_000);
            let hot = median_ns(&idx, &pool[..1], 20_000);
            rows.push(Row {
                mix,
                size: n,
                build_s,
                cold,
                hot,
            });
        }
        group.finish();
    }
    c.final_summary();

    println!("\nmedian ns per commit (4 written keys: 2 hit, 2 miss)");
    println!(
        "{:<11} {:>9} {:>9} {:>10} {:>10}",
        "mix", "subs", "build s", "cold ns", "hot ns"
    );
    for r in &rows {
        println!(
            "{:<11} {:>9} {:>9.2} {:>10.0} {:>10.0}",
            r.mix.name(),
            r.size,
            r.build_s,
            r.cold,
            r.hot
        );
    }
    for mix in [Mix::Prefix, Mix::HalfPoint, Mix::Range] {
        let get = |n| rows.iter().find(|r| r.mix == mix && r.size == n);
        if let (Some(a), Some(b)) = (get(1_000), get(1_000_000)) {
            println!(
                "{:<11} ratio 1M/1k: cold {:.2}x, hot {:.2}x",
                mix.name(),
                b.cold / a.cold,
                b.hot / a.hot
            );
        }
    }
}

//! Benchmarks `SubscriptionIndex::matches` for one commit of 4 written keys at 1k, 10k,
//! 100k and 1M subscriptions, then prints a plain table of median ns per commit.
//!
//! Key shape: 4-byte index id, tag 0x10, a string value (8-15 bytes), 0x00, then a
//! 16-byte document id for written/point keys. Mixes:
//! * `prefix`: every subscription is the range of one distinct index value,
//!   `[P, P ++ 0xFF)` (what `with_index(q.eq(...))` reads);
//! * `half_point`: even subscriptions are prefix ranges, odd ones point intervals;
//! * `range` (informational): "take 50 latest"-shaped ranges `[P ++ key, P ++ 0xFF)`,
//!   which live in the per-bucket treaps.
//!
//! Each commit writes 2 keys that hit some subscription and 2 that hit none. `cold`
//! cycles through a pool of 65 536 distinct commits (so lookups miss the CPU caches as
//! they would in production); `hot` repeats one commit, as a plain criterion loop over one commit would.
//!
//! `cargo bench --bench subscriptions` runs criterion then prints the table; pass a
//! filter matching no benchmark (`-- table`) to print only the table.

// The results table is this benchmark's output.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::{Duration, Instant};

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

/// The end of an index range of `eq`s on the values `p`: `p ++ 0xFF` (see
/// `reactive_core::query`).
fn after_values(p: &[u8]) -> Vec<u8> {
    let mut e = p.to_vec();
    e.push(0xFF);
    e
}

/// A document's key under `prefix`: the float64 tag of `_creationTime` follows the values.
fn doc_key(prefix: &[u8], doc: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.push(0x0D);
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
                lo.extend([0x0D, 0x40, 0, 0, 0, 0, 0, 0, 0]);
                Interval {
                    end: after_values(&p),
                    start: lo,
                }
            }
            _ => Interval {
                end: after_values(&p),
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
                k.extend([0x0D, 0x80, 0, 0, 0, 0, 0, 0, 0]);
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

/// Commits of 4 keys: `hits` hitting random subscriptions, the others hitting nothing
/// (values no subscription uses), in random order.
fn commits(mix: Mix, n: usize, count: usize, hits: u64) -> Vec<Vec<Vec<u8>>> {
    let n = n as u64;
    (0..count as u64)
        .map(|c| {
            let r = |j: u64| mix64(c * 16 + j);
            let mut keys: Vec<Vec<u8>> = (0..4)
                .map(|k| {
                    if k < hits {
                        mix.hit(r(2 * k) % n, r(2 * k + 1))
                    } else {
                        doc_key(&prefix_key(n + r(2 * k) % n), r(2 * k + 1))
                    }
                })
                .collect();
            keys.rotate_left((r(8) % 4) as usize);
            keys
        })
        .collect()
}

/// Mean ns per commit over one round of commits, cycling through `pool` from `*j`.
fn round_ns(idx: &SubscriptionIndex, pool: &[Vec<Vec<u8>>], j: &mut usize) -> f64 {
    const PER_ROUND: usize = 10_000;
    let t = Instant::now();
    for _ in 0..PER_ROUND {
        black_box(idx.matches(black_box(&pool[*j % pool.len()])));
        *j += 1;
    }
    t.elapsed().as_nanos() as f64 / PER_ROUND as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Built {
    size: usize,
    build_s: f64,
    idx: SubscriptionIndex,
    /// Commits with 2 hitting and 2 missing keys.
    pool: Vec<Vec<Vec<u8>>>,
    /// Commits whose 4 keys all miss.
    misses: Vec<Vec<Vec<u8>>>,
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut rows = Vec::new();
    for mix in [Mix::Prefix, Mix::HalfPoint, Mix::Range] {
        let built: Vec<Built> = SIZES
            .iter()
            .map(|&size| {
                let t = Instant::now();
                let idx = build(mix, size);
                let build_s = t.elapsed().as_secs_f64();
                let pool = commits(mix, size, POOL, 2);
                let misses = commits(mix, size, POOL, 0);
                assert!(pool.iter().take(64).all(|c| !idx.matches(c).is_empty()));
                assert!(misses.iter().take(64).all(|c| idx.matches(c).is_empty()));
                Built {
                    size,
                    build_s,
                    idx,
                    pool,
                    misses,
                }
            })
            .collect();
        let mut group = c.benchmark_group(format!("matches_4_keys/{}", mix.name()));
        for b in &built {
            for (name, pool) in [("cold", &b.pool[..]), ("hot", &b.pool[..1])] {
                let mut j = 0;
                group.bench_with_input(BenchmarkId::new(name, b.size), pool, |bench, pool| {
                    bench.iter(|| {
                        j += 1;
                        b.idx.matches(black_box(&pool[j % pool.len()]))
                    });
                });
            }
        }
        group.finish();
        // Interleave sizes round by round so that machine noise hits all sizes alike.
        let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; built.len()];
        let mut cursors = vec![0; built.len()];
        for _ in 0..41 {
            for (i, b) in built.iter().enumerate() {
                let mut j = cursors[i];
                samples[i][0].push(round_ns(&b.idx, &b.pool, &mut cursors[i]));
                samples[i][1].push(round_ns(&b.idx, &b.misses, &mut j));
                samples[i][2].push(round_ns(&b.idx, &b.pool[..1], &mut 0));
            }
        }
        for (b, s) in built.iter().zip(samples) {
            let [cold, miss, hot] = s.map(median);
            rows.push((mix, b.size, b.build_s, cold, miss, hot));
        }
    }
    c.final_summary();

    println!("\nmedian ns per commit of 4 written keys, 41 interleaved rounds of 10 000");
    println!("  cold: 2 keys hit + 2 miss, 65 536 distinct commits cycled (cache-cold)");
    println!("  cold-0: the same but all 4 keys miss; hot: one 2-hit commit repeated");
    let header = ["mix", "subs", "build s", "cold", "cold-0", "hot"];
    println!(
        "{:<11} {:>9} {:>8} {:>8} {:>8} {:>8}",
        header[0], header[1], header[2], header[3], header[4], header[5]
    );
    for &(mix, size, build_s, cold, miss, hot) in &rows {
        let name = mix.name();
        println!("{name:<11} {size:>9} {build_s:>8.2} {cold:>8.0} {miss:>8.0} {hot:>8.0}");
    }
    for mix in [Mix::Prefix, Mix::HalfPoint, Mix::Range] {
        let get = |n| rows.iter().find(|r| r.0 == mix && r.1 == n);
        if let (Some(a), Some(b)) = (get(1_000), get(1_000_000)) {
            let (cold, miss, hot) = (b.3 / a.3, b.4 / a.4, b.5 / a.5);
            let name = mix.name();
            println!("{name:<11} 1M/1k: cold {cold:.2}x, cold-0 {miss:.2}x, hot {hot:.2}x");
        }
    }
}

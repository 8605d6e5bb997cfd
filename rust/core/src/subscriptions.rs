//! Interval index over the read sets of live subscriptions.
//!
//! # Role
//! Every live query (a *subscription*) records the key intervals it read. When a
//! transaction commits, the engine asks which subscriptions read at least one written
//! key; those queries must re-run. The index is in-memory and `Send + Sync`; `matches`
//! takes `&self`, so it can sit behind an `RwLock`.
//!
//! # Data structure
//! * **Interning.** Each distinct interval owns one *slot* (arena, `u32` id) listing
//!   the subscriptions that read it: 1,000 clients watching one query cost one index
//!   entry, and a match reports them with no per-duplicate search.
//! * **Buckets.** Every interval `[s, e)` lies inside the set of keys starting with
//!   `p = lcp(s, e)`. One hash map, keyed by byte strings `p`, holds per key: the point
//!   interval `[p, p ++ 0x00)`, the prefix interval `[p, prefix_successor(p))` (all keys
//!   starting with `p`), the *equal-values* interval `[p, p ++ 0xFF)` (what an index
//!   range of `eq`s reads: keys starting with `p` whose next byte is not 0xFF), and a
//!   treap of the other intervals whose longest common prefix is `p`. A written key `k` probes `k[..len]` for each distinct indexed length
//!   `len <= |k|` (a short sorted list in practice: lengths cluster by index shape),
//!   plus `k` itself for points.
//! * **Filter.** A blocked Bloom filter (one `u64` word per probe, 11-32 bits per
//!   bucket key) in front of the map rejects ~98-99.8% of probes for absent keys from
//!   a compact, cache-resident array (2 MiB at 1M buckets). Surviving probes are resolved back to back so the CPU can
//!   overlap their cache misses.
//! * **Treaps.** The general ranges of a bucket form a treap in a shared `Vec` arena
//!   with `u32` links, ordered by `(start, end)` and augmented with the subtree's
//!   maximum `end`, so a stabbing query prunes subtrees that end at or before the key.
//!   Nodes store only the suffixes after `p` (one allocation) plus 8-byte order-keeping
//!   *heads* of them, and are one cache line each: most comparisons stay in the node.
//!
//! # Invariants
//! * A subscription maps to `(slot, position)` entries, one per distinct non-empty
//!   interval; `slots[slot].members[position] == (id, index of that entry)`. These
//!   back-pointers make removal O(1) per interval (swap-remove plus one fix-up).
//! * A slot is live iff it has members; it is reachable from exactly one bucket field
//!   or treap node, which points back to it. A bucket exists iff something is in it.
//! * `lens` counts prefix intervals and treap nodes by bucket-key length (no zeros).
//! * The filter contains every bucket key. Treaps: search order on `(start, end)`,
//!   heap order on priorities, `max_at` names a node of maximal `end` in the subtree.
//! * Intervals with `start >= end` contain no key and are ignored (a subscription may
//!   thus have no interval; it stays registered).
//!
//! # Costs (`n` distinct intervals, `m` in one call, `L` distinct bucket-key lengths)
//! * `insert` / `remove`: O(m) hash operations, plus expected O(log b) per general
//!   range in a bucket of `b` ranges; the filter is rebuilt in amortised O(1).
//! * `matches`: per written key O(1 + L) filter probes, one map lookup per bucket that
//!   passes, and an expected O((1 + r) log b) walk of each matching treap; then
//!   O(R log R) to sort and deduplicate the R reported ids. Nothing is linear in `n`.
//! * Memory: per distinct interval one slot, and one bucket entry or treap node; per
//!   (subscription, interval) two `u32`-sized back-pointers. At most `u32::MAX - 1`
//!   distinct intervals.

use std::cmp::Ordering;
use std::hash::Hasher;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHasher};
use smallvec::SmallVec;

use crate::interval::Interval;

/// Identifier of a subscription (a live query), chosen by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u64);

/// Null link / absent slot.
const NIL: u32 = u32::MAX;

/// Where an interned interval lives; bucket keys are shared with the map via `Arc`.
#[derive(Default)]
enum Home {
    #[default]
    Free,
    Point(Arc<[u8]>),
    Prefix(Arc<[u8]>),
    Equal(Arc<[u8]>),
    /// Bucket key and treap node.
    Range(Arc<[u8]>, u32),
}

/// One distinct interval and its readers: `(subscriber, index of its entry)`.
#[derive(Default)]
struct Slot {
    home: Home,
    members: SmallVec<[(SubscriptionId, u32); 1]>,
}

/// Everything indexed under one bucket key `p`.
#[derive(Clone, Copy)]
struct Bucket {
    /// Slot of `[p, p ++ 0x00)`.
    point: u32,
    /// Slot of the keys starting with `p`.
    prefix: u32,
    /// Slot of `[p, p ++ 0xFF)`.
    equal: u32,
    /// Treap of the other intervals with longest common prefix `p`.
    root: u32,
}

/// Kind of a non-empty interval `[s, e)`.
#[derive(Clone, Copy)]
enum Kind {
    Point,
    Prefix,
    Equal,
    /// General range; the length of `lcp(s, e)`.
    Range(usize),
}

fn classify(s: &[u8], e: &[u8]) -> Kind {
    if e.len() == s.len() + 1 && e.starts_with(s) {
        match e.last() {
            Some(0) => return Kind::Point,
            Some(0xFF) => return Kind::Equal,
            _ => {}
        }
    }
    // `e == prefix_successor(s)`: strip trailing 0xFF from `s`, increment the last byte.
    let m = s.len() - s.iter().rev().take_while(|&&b| b == 0xFF).count();
    if m > 0
        && e.len() == m
        && e[..m - 1] == s[..m - 1]
        && s[m - 1].checked_add(1) == Some(e[m - 1])
    {
        return Kind::Prefix;
    }
    Kind::Range(s.iter().zip(e).take_while(|(a, b)| a == b).count())
}

/// Index from key intervals to the subscriptions that read them.
///
/// See the [module documentation](self) for the structure and its costs.
#[derive(Default)]
pub struct SubscriptionIndex {
    subs: FxHashMap<SubscriptionId, SmallVec<[(u32, u32); 2]>>,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    buckets: FxHashMap<Arc<[u8]>, Bucket>,
    /// Sorted `(bucket-key length, prefix intervals + treap nodes at that length)`.
    lens: Vec<(usize, usize)>,
    /// Number of distinct point intervals.
    points: usize,
    filter: Filter,
    tree: Treap,
}

impl SubscriptionIndex {
    /// Creates an empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `id` with these intervals, replacing any intervals it had.
    ///
    /// Duplicate intervals are stored once; intervals with `start >= end` are ignored.
    /// The new intervals are linked before the old ones are unlinked, so re-registering
    /// an unchanged read set (a query re-run) frees and re-creates nothing.
    pub fn insert(&mut self, id: SubscriptionId, intervals: &[Interval]) {
        let old = self.subs.remove(&id);
        let mut ivs: SmallVec<[&Interval; 4]> =
            intervals.iter().filter(|iv| iv.start < iv.end).collect();
        ivs.sort_unstable();
        ivs.dedup();
        let mut entries = SmallVec::with_capacity(ivs.len());
        for (i, iv) in ivs.into_iter().enumerate() {
            let slot = self.intern(&iv.start, &iv.end);
            let members = &mut self.slots[slot as usize].members;
            entries.push((slot, members.len() as u32));
            members.push((id, i as u32));
        }
        self.subs.insert(id, entries);
        self.detach(old.unwrap_or_default());
    }

    /// Unregisters `id`; returns whether it was present (absent ids are a no-op).
    pub fn remove(&mut self, id: SubscriptionId) -> bool {
        let entries = self.subs.remove(&id);
        let present = entries.is_some();
        self.detach(entries.unwrap_or_default());
        present
    }

    /// Removes the member at each `(slot, position)`, fixing the back-pointer of the
    /// member moved into its place (possibly a new entry of the same subscription),
    /// and releases slots left empty.
    fn detach(&mut self, entries: SmallVec<[(u32, u32); 2]>) {
        for (slot, pos) in entries {
            let (members, pos) = (&mut self.slots[slot as usize].members, pos as usize);
            if pos >= members.len() {
                debug_assert!(false, "corrupt back-pointer");
                continue;
            }
            members.swap_remove(pos);
            if let Some(&(moved, entry)) = members.get(pos) {
                let moved = self.subs.get_mut(&moved);
                if let Some(e) = moved.and_then(|e| e.get_mut(entry as usize)) {
                    e.1 = pos as u32;
                }
            } else if members.is_empty() {
                self.release(slot);
            }
        }
    }

    /// Every subscription with an interval containing at least one of `keys` (keys in
    /// any order, may repeat), sorted ascending and deduplicated.
    pub fn matches<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<SubscriptionId> {
        // Phase 1 touches only the small, cache-resident filter; phase 2 resolves the
        // surviving probes back to back so that their cache misses overlap.
        let mut probes: SmallVec<[(&[u8], usize); 16]> = SmallVec::new();
        for key in keys {
            self.probes(key.as_ref(), &mut probes);
        }
        let mut hits: SmallVec<[u32; 16]> = SmallVec::new();
        for (key, len) in probes {
            if let Some(b) = self.buckets.get(&key[..len]) {
                let point = if len == key.len() { b.point } else { NIL };
                let equal = if key.get(len) == Some(&0xFF) {
                    NIL
                } else {
                    b.equal
                };
                hits.extend([point, b.prefix, equal].into_iter().filter(|&s| s != NIL));
                self.tree.stab(b.root, &key[len..], &mut hits);
            }
        }
        // An upper bound on the output; reading the slots now also starts their loads.
        let total = hits
            .iter()
            .map(|&s| self.slots[s as usize].members.len())
            .sum();
        hits.sort_unstable();
        hits.dedup();
        let mut out = Vec::with_capacity(total);
        for &s in &hits {
            out.extend(self.slots[s as usize].members.iter().map(|&(id, _)| id));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Number of registered subscriptions (including those with no interval).
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether no subscription is registered.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Number of distinct intervals indexed; an interval read by several
    /// subscriptions counts once.
    pub fn interval_count(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    /// Pushes `(key, len)` for each bucket key `key[..len]` that may hold an interval
    /// containing `key`.
    fn probes<'k>(&self, key: &'k [u8], out: &mut SmallVec<[(&'k [u8], usize); 16]>) {
        let mut full = self.points > 0;
        for &(len, _) in &self.lens {
            if len > key.len() {
                break;
            }
            full &= len < key.len();
            if self.filter.may_contain(&key[..len]) {
                out.push((key, len));
            }
        }
        if full && self.filter.may_contain(key) {
            out.push((key, key.len()));
        }
    }

    /// Returns the slot of the non-empty interval `[start, end)`, creating it if needed.
    fn intern(&mut self, start: &[u8], end: &[u8]) -> u32 {
        let kind = classify(start, end);
        // Bucket key, and (for general ranges) the suffixes kept in the treap.
        let lcp = if let Kind::Range(lcp) = kind {
            lcp
        } else {
            start.len()
        };
        let (bucket_key, tails) = (
            &start[..lcp],
            (&start[lcp..], end.get(lcp..).unwrap_or_default()),
        );
        let (key, is_new) = match self.buckets.get_key_value(bucket_key) {
            Some((key, bucket)) => {
                let found = match kind {
                    Kind::Point => bucket.point,
                    Kind::Prefix => bucket.prefix,
                    Kind::Equal => bucket.equal,
                    Kind::Range(_) => self.tree.find(bucket.root, tails.0, tails.1),
                };
                if found != NIL {
                    return found;
                }
                (Arc::clone(key), false)
            }
            None => (Arc::<[u8]>::from(bucket_key), true),
        };
        let slot = self.new_slot();
        let empty = Bucket {
            point: NIL,
            prefix: NIL,
            equal: NIL,
            root: NIL,
        };
        let bucket = self.buckets.entry(Arc::clone(&key)).or_insert(empty);
        let home = match kind {
            Kind::Point => {
                bucket.point = slot;
                self.points += 1;
                Home::Point(Arc::clone(&key))
            }
            Kind::Prefix => {
                bucket.prefix = slot;
                Home::Prefix(Arc::clone(&key))
            }
            Kind::Equal => {
                bucket.equal = slot;
                Home::Equal(Arc::clone(&key))
            }
            Kind::Range(_) => {
                let node;
                (bucket.root, node) = self.tree.insert(bucket.root, tails.0, tails.1, slot);
                Home::Range(Arc::clone(&key), node)
            }
        };
        if !matches!(kind, Kind::Point) {
            match self.lens.binary_search_by_key(&key.len(), |l| l.0) {
                Ok(i) => self.lens[i].1 += 1,
                Err(i) => self.lens.insert(i, (key.len(), 1)),
            }
        }
        self.slots[slot as usize].home = home;
        if is_new && self.filter.insert(&key) {
            self.filter.rebuild(self.buckets.keys().map(|k| &**k));
        }
        slot
    }

    fn new_slot(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u32
        })
    }

    /// Frees an empty slot and unlinks its interval from its bucket.
    fn release(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.members = SmallVec::new();
        let home = std::mem::replace(&mut s.home, Home::Free);
        let key = match &home {
            Home::Free => return,
            Home::Point(k) | Home::Prefix(k) | Home::Equal(k) | Home::Range(k, _) => Arc::clone(k),
        };
        self.free_slots.push(slot);
        let Some(b) = self.buckets.get_mut(&key) else {
            return;
        };
        match home {
            Home::Point(_) => {
                b.point = NIL;
                self.points -= 1;
            }
            Home::Prefix(_) => b.prefix = NIL,
            Home::Equal(_) => b.equal = NIL,
            Home::Range(_, node) => b.root = self.tree.remove(b.root, node),
            Home::Free => {}
        }
        if (b.point, b.prefix, b.equal, b.root) == (NIL, NIL, NIL, NIL) {
            self.buckets.remove(&key);
            if self.filter.remove() {
                self.filter.rebuild(self.buckets.keys().map(|k| &**k));
            }
        }
        if let Ok(i) = self.lens.binary_search_by_key(&key.len(), |l| l.0)
            && !matches!(home, Home::Point(_))
        {
            self.lens[i].1 -= 1;
            if self.lens[i].1 == 0 {
                self.lens.remove(i);
            }
        }
    }
}

/// Blocked Bloom filter over byte keys: three bits in one `u64` word per key.
///
/// Bits cannot be cleared, so removals are counted and the filter is rebuilt from the
/// live keys once stale keys outnumber them; it is also rebuilt, larger, when it holds
/// more than 6 keys per word. Both are amortised O(1) per operation.
#[derive(Default)]
struct Filter {
    words: Vec<u64>,
    live: usize,
    stale: usize,
}

impl Filter {
    /// Word index (from the high bits) and three-bit mask (from the low bits).
    fn locate(&self, key: &[u8]) -> (usize, u64) {
        let mut h = FxHasher::default();
        h.write(key);
        // splitmix64 finaliser spreads the hash over all 64 bits.
        let mut z = h.finish();
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let bits = 1 << (z & 63) | 1 << ((z >> 6) & 63) | 1 << ((z >> 12) & 63);
        ((z >> 32) as usize & self.words.len().wrapping_sub(1), bits)
    }

    fn may_contain(&self, key: &[u8]) -> bool {
        let (w, bits) = self.locate(key);
        self.words.get(w).is_none_or(|&word| word & bits == bits)
    }

    /// Adds `key`; returns whether the filter is full and must be rebuilt.
    fn insert(&mut self, key: &[u8]) -> bool {
        self.live += 1;
        if self.live + self.stale > self.words.len() * 6 {
            return true;
        }
        let (w, bits) = self.locate(key);
        self.words[w] |= bits;
        false
    }

    /// Records a removal; returns whether the filter should now be rebuilt.
    fn remove(&mut self) -> bool {
        self.live = self.live.saturating_sub(1);
        self.stale += 1;
        self.stale > self.live.max(256)
    }

    /// Resets the filter to exactly `keys`, at 16 to 32 bits per key.
    fn rebuild<'a>(&mut self, keys: impl ExactSizeIterator<Item = &'a [u8]>) {
        self.words = vec![0; (keys.len().next_power_of_two() / 4).max(64)];
        (self.live, self.stale) = (keys.len(), 0);
        for k in keys {
            let (w, bits) = self.locate(k);
            self.words[w] |= bits;
        }
    }
}

/// Order-keeping 8-byte summary of a key: its first 7 bytes (zero-padded) and
/// `min(len, 7)`. Distinct heads order like their keys; equal heads mean equal keys
/// unless both are at least 7 bytes long.
fn head(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(7);
    b[..n].copy_from_slice(&key[..n]);
    b[7] = n as u8;
    u64::from_be_bytes(b)
}

/// Compares keys by their heads alone when that is decisive.
fn cmp_heads(a: u64, b: u64) -> Option<Ordering> {
    (a != b || a & 0xFF < 7).then(|| a.cmp(&b))
}

/// Treap node for a general range (suffixes after the bucket key): one cache line.
#[repr(align(64))]
struct Node {
    /// `start ++ end`; `start` is the first `split` bytes.
    keys: Box<[u8]>,
    split: u32,
    slot: u32,
    start_head: u64,
    end_head: u64,
    /// Head of the largest `end` in this subtree.
    max_head: u64,
    /// Node of this subtree whose `end` is largest.
    max_at: u32,
    /// Left and right children.
    kids: [u32; 2],
    prio: u32,
}

const _: () = assert!(std::mem::size_of::<Node>() == 64);

impl Node {
    fn start(&self) -> &[u8] {
        self.keys.get(..self.split as usize).unwrap_or_default()
    }

    fn end(&self) -> &[u8] {
        self.keys.get(self.split as usize..).unwrap_or_default()
    }
}

/// Arena of randomised search trees (one per bucket), augmented with max-end.
#[derive(Default)]
struct Treap {
    nodes: Vec<Node>,
    free: Vec<u32>,
    rng: u64,
}

impl Treap {
    fn node(&self, i: u32) -> &Node {
        &self.nodes[i as usize]
    }

    /// Orders the range `[s, e)` (with heads `hs`, `he`) against node `t`.
    fn cmp_to(&self, hs: u64, s: &[u8], he: u64, e: &[u8], t: u32) -> Ordering {
        let n = self.node(t);
        let by_start = cmp_heads(hs, n.start_head).unwrap_or_else(|| s.cmp(n.start()));
        by_start.then_with(|| cmp_heads(he, n.end_head).unwrap_or_else(|| e.cmp(n.end())))
    }

    /// Slot of the range `[s, e)` in the tree at `t`, or `NIL`.
    fn find(&self, mut t: u32, s: &[u8], e: &[u8]) -> u32 {
        let (hs, he) = (head(s), head(e));
        while t != NIL {
            t = match self.cmp_to(hs, s, he, e, t) {
                Ordering::Less => self.node(t).kids[0],
                Ordering::Greater => self.node(t).kids[1],
                Ordering::Equal => return self.node(t).slot,
            };
        }
        NIL
    }

    /// Inserts the absent range `[s, e)` into the tree at `root`; returns the new root
    /// and the new node.
    fn insert(&mut self, root: u32, s: &[u8], e: &[u8], slot: u32) -> (u32, u32) {
        // splitmix64 sequence: deterministic, well-mixed priorities.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = (self.rng ^ (self.rng >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let n = self.free.pop().unwrap_or(self.nodes.len() as u32);
        let node = Node {
            keys: [s, e].concat().into(),
            split: s.len() as u32,
            slot,
            start_head: head(s),
            end_head: head(e),
            max_head: head(e),
            max_at: n,
            kids: [NIL; 2],
            prio: (z >> 32) as u32,
        };
        if n as usize == self.nodes.len() {
            self.nodes.push(node);
        } else {
            self.nodes[n as usize] = node;
        }
        (self.insert_at(root, n), n)
    }

    /// Index of the child of `t` on the side where node `n` belongs.
    fn side(&self, t: u32, n: u32) -> usize {
        let m = self.node(n);
        usize::from(
            self.cmp_to(m.start_head, m.start(), m.end_head, m.end(), t)
                .is_ge(),
        )
    }

    fn insert_at(&mut self, mut t: u32, n: u32) -> u32 {
        if t == NIL {
            return n;
        }
        let d = self.side(t, n);
        let c = self.insert_at(self.node(t).kids[d], n);
        self.nodes[t as usize].kids[d] = c;
        if self.node(c).prio > self.node(t).prio {
            // Rotate `c` above `t`.
            self.nodes[t as usize].kids[d] = self.node(c).kids[1 - d];
            self.nodes[c as usize].kids[1 - d] = t;
            self.pull(t);
            t = c;
        }
        self.pull(t);
        t
    }

    /// Recomputes the subtree maximum of `t` from its own end and its children's.
    fn pull(&mut self, t: u32) {
        let n = self.node(t);
        let (mut best, mut best_head) = (t, n.end_head);
        for c in n.kids {
            if c != NIL {
                let (cand, cand_head) = (self.node(c).max_at, self.node(c).max_head);
                let ord = cmp_heads(cand_head, best_head)
                    .unwrap_or_else(|| self.node(cand).end().cmp(self.node(best).end()));
                if ord == Ordering::Greater {
                    (best, best_head) = (cand, cand_head);
                }
            }
        }
        let n = &mut self.nodes[t as usize];
        (n.max_at, n.max_head) = (best, best_head);
    }

    /// Unlinks node `n` from the tree at `root`, frees it, and returns the new root.
    fn remove(&mut self, root: u32, n: u32) -> u32 {
        let root = self.remove_at(root, n);
        let node = &mut self.nodes[n as usize];
        (node.keys, node.split) = (Box::default(), 0);
        self.free.push(n);
        root
    }

    fn remove_at(&mut self, t: u32, n: u32) -> u32 {
        if t == NIL {
            return NIL;
        }
        if t == n {
            return self.merge(self.node(t).kids);
        }
        let d = self.side(t, n);
        self.nodes[t as usize].kids[d] = self.remove_at(self.node(t).kids[d], n);
        self.pull(t);
        t
    }

    /// Joins two trees where every range of `a` orders before every one of `b`.
    fn merge(&mut self, [a, b]: [u32; 2]) -> u32 {
        if a == NIL || b == NIL {
            return if a == NIL { b } else { a };
        }
        let (top, d, pair) = if self.node(a).prio > self.node(b).prio {
            (a, 1, [self.node(a).kids[1], b])
        } else {
            (b, 0, [a, self.node(b).kids[0]])
        };
        self.nodes[top as usize].kids[d] = self.merge(pair);
        self.pull(top);
        top
    }

    /// Pushes the slot of every range in the tree at `t` that contains `key`.
    fn stab(&self, t: u32, key: &[u8], out: &mut SmallVec<[u32; 16]>) {
        if t != NIL {
            self.stab_at(t, key, head(key), out);
        }
    }

    fn stab_at(&self, mut t: u32, key: &[u8], hk: u64, out: &mut SmallVec<[u32; 16]>) {
        while t != NIL {
            let n = self.node(t);
            let max =
                cmp_heads(n.max_head, hk).unwrap_or_else(|| self.node(n.max_at).end().cmp(key));
            if max != Ordering::Greater {
                return; // Every range here ends at or before `key`.
            }
            self.stab_at(n.kids[0], key, hk, out);
            if cmp_heads(n.start_head, hk).unwrap_or_else(|| n.start().cmp(key))
                == Ordering::Greater
            {
                return; // This node and its right subtree start after `key`.
            }
            if cmp_heads(hk, n.end_head).unwrap_or_else(|| key.cmp(n.end())) == Ordering::Less {
                out.push(n.slot);
            }
            t = n.kids[1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SubscriptionId as Id, *};
    use proptest::prelude::*;

    fn iv(s: &[u8], e: &[u8]) -> Interval {
        Interval {
            start: s.to_vec(),
            end: e.to_vec(),
        }
    }

    fn prefix(p: &[u8]) -> Interval {
        let mut e = p.to_vec();
        while e.pop_if(|b| *b == 0xFF).is_some() {}
        *e.last_mut().expect("has successor") += 1;
        iv(p, &e)
    }

    fn hit(idx: &SubscriptionIndex, keys: &[&[u8]]) -> Vec<u64> {
        idx.check();
        idx.matches(keys).into_iter().map(|s| s.0).collect()
    }

    impl SubscriptionIndex {
        /// Asserts every invariant listed in the module docs.
        fn check(&self) {
            let mut lens = std::collections::BTreeMap::new();
            for (s, slot) in self.slots.iter().enumerate() {
                let s = s as u32;
                assert_eq!(slot.members.is_empty(), self.free_slots.contains(&s));
                for (pos, &(sid, entry)) in slot.members.iter().enumerate() {
                    assert_eq!(self.subs[&sid][entry as usize], (s, pos as u32));
                }
                let (b, k) = match &slot.home {
                    Home::Free => continue,
                    Home::Point(k) => (self.buckets[k].point, k),
                    Home::Prefix(k) => (self.buckets[k].prefix, k),
                    Home::Equal(k) => (self.buckets[k].equal, k),
                    Home::Range(k, n) => (self.tree.node(*n).slot, k),
                };
                assert_eq!(b, s);
                if !matches!(slot.home, Home::Point(_)) {
                    *lens.entry(k.len()).or_insert(0) += 1;
                }
            }
            assert_eq!(lens.into_iter().collect::<Vec<_>>(), self.lens);
            for (&sid, entries) in &self.subs {
                for &(s, pos) in entries {
                    assert_eq!(self.slots[s as usize].members[pos as usize].0, sid);
                }
            }
            let points = self.buckets.values().filter(|b| b.point != NIL).count();
            assert_eq!(points, self.points);
            assert_eq!(self.filter.live, self.buckets.len());
            let mut nodes = 0;
            for (k, b) in &self.buckets {
                assert!(self.filter.may_contain(k));
                assert!(b.point != NIL || b.prefix != NIL || b.equal != NIL || b.root != NIL);
                self.check_tree(b.root, u32::MAX, &mut nodes);
            }
            assert_eq!(nodes + self.tree.free.len(), self.tree.nodes.len());
        }

        /// Checks the treap at `t`; returns its largest end.
        fn check_tree(&self, t: u32, parent_prio: u32, count: &mut usize) -> Vec<u8> {
            if t == NIL {
                return Vec::new();
            }
            *count += 1;
            let n = self.tree.node(t);
            assert!(n.prio <= parent_prio);
            assert_eq!((n.start_head, n.end_head), (head(n.start()), head(n.end())));
            let mut max = n.end().to_vec();
            for (c, ord) in n.kids.into_iter().zip([Ordering::Less, Ordering::Greater]) {
                if c != NIL {
                    let cn = self.tree.node(c);
                    assert_eq!((cn.start(), cn.end()).cmp(&(n.start(), n.end())), ord);
                    max = max.max(self.check_tree(c, n.prio, count));
                }
            }
            assert_eq!(
                (self.tree.node(n.max_at).end(), n.max_head),
                (&max[..], head(&max))
            );
            max
        }
    }

    #[test]
    fn points_prefixes_and_kinds() {
        assert!(matches!(classify(b"", b"\0"), Kind::Point));
        assert!(matches!(classify(b"a\xFF\xFF", b"b"), Kind::Prefix));
        assert!(matches!(classify(b"ab", b"ad"), Kind::Range(1)));
        assert!(matches!(classify(b"\xFF", b"\xFF\x01"), Kind::Range(1)));
        let mut idx = SubscriptionIndex::default();
        idx.insert(Id(1), &[Interval::point(b"doc1"), Interval::point(b"")]);
        idx.insert(Id(2), &[prefix(b"ab"), prefix(b"a\xFF")]);
        idx.insert(Id(3), &[prefix(b"abc"), Interval::point(b"ab")]);
        assert_eq!(hit(&idx, &[b"doc1", b"doc1"]), [1]);
        assert_eq!(hit(&idx, &[b"", b"doc10", b"doc", b"a", b"b", b"ac"]), [1]);
        assert_eq!(hit(&idx, &[b"ab"]), [2, 3]);
        assert_eq!(hit(&idx, &[b"abz"]), [2]);
        assert_eq!(hit(&idx, &[b"abcd", b"a\xFF\xFF"]), [2, 3]);
        assert_eq!((idx.len(), idx.interval_count()), (3, 6));
    }

    #[test]
    fn ranges() {
        let mut idx = SubscriptionIndex::new();
        idx.insert(Id(1), &[iv(b"b", b"d")]);
        idx.insert(Id(2), &[iv(b"a", b"z"), iv(b"0", b"1")]);
        idx.insert(Id(3), &[iv(b"", b"b")]);
        idx.insert(Id(4), &[iv(b"longcommon-1", b"longcommon-5")]);
        idx.insert(Id(5), &[iv(b"longcommon-0123456789", b"longcommon-3")]);
        assert_eq!(hit(&idx, &[b"b"]), [1, 2]);
        assert_eq!(hit(&idx, &[b"d", b"z", b"zz"]), [2]);
        assert_eq!(hit(&idx, &[b"", b"0zz"]), [2, 3]);
        assert_eq!(hit(&idx, &[b"longcommon-4zzz"]), [2, 4]);
        assert_eq!(hit(&idx, &[b"longcommon-2"]), [2, 4, 5]);
        assert_eq!(hit(&idx, &[b"longcommon-012345678", b"longcommon-5"]), [2]);
    }

    #[test]
    fn duplicates_replace_and_remove() {
        let mut idx = SubscriptionIndex::new();
        let shared = [prefix(b"users/"), iv(b"k1", b"k9"), Interval::point(b"x")];
        for n in 0..1000 {
            idx.insert(Id(n), &shared);
        }
        idx.insert(Id(5000), &[Interval::point(b"x"), Interval::point(b"x")]);
        assert_eq!((idx.len(), idx.interval_count()), (1001, 3));
        assert_eq!(
            hit(&idx, &[b"users/7", b"k5", b"users/8"]),
            (0..1000).collect::<Vec<_>>()
        );
        assert_eq!(hit(&idx, &[b"x"]).len(), 1001);
        for n in (0..1000).step_by(2) {
            assert!(idx.remove(Id(n)));
        }
        assert_eq!(
            hit(&idx, &[b"k2"]),
            (1..1000).step_by(2).collect::<Vec<_>>()
        );
        // Replacing drops the old intervals; bad intervals are ignored.
        idx.insert(Id(5000), &[prefix(b"q"), iv(b"b", b"a"), iv(b"a", b"a")]);
        assert_eq!(hit(&idx, &[b"qq"]), [5000]);
        assert_eq!(hit(&idx, &[b"x"]).len(), 500);
        let solo = [Interval::point(b"solo"), prefix(b"y")];
        idx.insert(Id(5001), &solo);
        let (entries, slot_count) = (idx.subs[&Id(5001)].clone(), idx.slots.len());
        idx.insert(Id(5001), &solo); // A re-run keeps its slots.
        assert_eq!(
            (&idx.subs[&Id(5001)], idx.slots.len()),
            (&entries, slot_count)
        );
        assert!(idx.remove(Id(5001)));
        idx.insert(Id(5000), &[]);
        assert_eq!((idx.len(), idx.interval_count()), (501, 3));
        assert!(idx.remove(Id(5000)) && !idx.remove(Id(5000)));
        for n in 0..6000 {
            idx.remove(Id(n));
        }
        assert!(idx.is_empty() && idx.interval_count() == 0 && idx.buckets.is_empty());
        idx.check();
    }

    #[test]
    fn large_bucket_stays_correct() {
        let mut idx = SubscriptionIndex::new();
        for n in 0..3000u32 {
            let (s, e) = (n.to_be_bytes(), (n + 3).to_be_bytes());
            idx.insert(Id(u64::from(n)), &[iv(&s, &e)]);
        }
        assert_eq!(hit(&idx, &[&100u32.to_be_bytes()]), [98, 99, 100]);
        for n in 0..1500 {
            idx.remove(Id(n * 2));
        }
        assert_eq!(
            hit(&idx, &[&100u32.to_be_bytes(), &2999u32.to_be_bytes()]),
            [99, 2997, 2999]
        );
    }

    /// Keys of up to 4 tokens from a tiny set, so that collisions and overlaps are
    /// frequent; the 8-byte token yields keys longer than a node head (7 bytes).
    fn key() -> impl Strategy<Value = Vec<u8>> {
        let tokens: Vec<&[u8]> = vec![&[0], &[1], &[2], &[0xFF], &[1; 8]];
        prop::collection::vec(prop::sample::select(tokens), 0..5).prop_map(|t| t.concat())
    }

    fn interval() -> impl Strategy<Value = Interval> {
        prop_oneof![
            key().prop_map(|k| Interval::point(&k)),
            key()
                .prop_filter("has successor", |k| k.iter().any(|&b| b != 0xFF))
                .prop_map(|k| prefix(&k)),
            key().prop_map(|k| {
                let mut e = k.clone();
                e.push(0xFF);
                iv(&k, &e)
            }),
            (key(), key()).prop_map(|(a, b)| iv(&a.clone().min(b.clone()), &a.max(b))),
        ]
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, Vec<Interval>),
        Remove(u64),
        Matches(Vec<Vec<u8>>),
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn agrees_with_naive_model(ops in prop::collection::vec(prop_oneof![
            3 => (0..12u64, prop::collection::vec(interval(), 0..4)).prop_map(|(i, v)| Op::Insert(i, v)),
            1 => (0..12u64).prop_map(Op::Remove),
            3 => prop::collection::vec(key(), 0..5).prop_map(Op::Matches),
        ], 1..60)) {
            let (mut idx, mut model) = (SubscriptionIndex::new(), Vec::<(u64, Vec<Interval>)>::new());
            for op in ops {
                match op {
                    Op::Insert(i, v) => {
                        idx.insert(Id(i), &v);
                        model.retain(|m| m.0 != i);
                        model.push((i, v));
                    }
                    Op::Remove(i) => {
                        prop_assert_eq!(idx.remove(Id(i)), model.iter().any(|m| m.0 == i));
                        model.retain(|m| m.0 != i);
                    }
                    Op::Matches(keys) => {
                        let mut want: Vec<SubscriptionId> = model.iter()
                            .filter(|(_, v)| v.iter().any(|r| keys.iter().any(|k| r.contains(k))))
                            .map(|m| Id(m.0))
                            .collect();
                        want.sort_unstable();
                        prop_assert_eq!(idx.matches(&keys), want);
                    }
                }
                let mut distinct: Vec<&Interval> =
                    model.iter().flat_map(|m| &m.1).filter(|r| r.start < r.end).collect();
                distinct.sort_unstable();
                distinct.dedup();
                prop_assert_eq!((idx.len(), idx.interval_count()), (model.len(), distinct.len()));
                idx.check();
            }
        }
    }
}

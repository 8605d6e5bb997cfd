//! Interval index over the read sets of live subscriptions.
//!
//! # Role
//!
//! Every live query (a *subscription*) records the key intervals it read. When a
//! transaction commits, the engine asks this index which subscriptions read at least
//! one of the written keys; those are the queries that must be re-run. The index is a
//! pure in-memory structure: callers serialise access (it is `Send + Sync`, and
//! `matches` takes `&self`, so it can sit behind an `RwLock`).
//!
//! # Data structure
//!
//! * **Interning.** Identical intervals are stored once. Each distinct interval owns
//!   a *slot* (in an arena, addressed by `u32`) holding the list of subscriptions that
//!   read it, so a thousand clients watching one query cost one index entry, and a
//!   match reports them without any per-duplicate search work.
//! * **Point intervals** `[k, k ++ 0x00)` (a `get` of one document) are found through a
//!   hash map keyed by `k`: one probe per written key.
//! * **Prefix intervals** `[p, prefix_successor(p))` (exactly the keys starting with
//!   `p`) live in the same hash map, keyed by `p`. A written key `k` probes
//!   `k[..len]` for each *distinct* prefix length `len` currently indexed (a sorted,
//!   reference-counted list that is short in practice: lengths cluster by index shape).
//! * **General intervals** go into an augmented treap stored in a `Vec` arena with
//!   `u32` links. Nodes are ordered by `(start, end)` and carry the maximum `end` of
//!   their subtree, so a stabbing query prunes every subtree whose intervals all end
//!   at or before the key. Each node caches the first 8 bytes of `start`, `end` and the
//!   subtree maximum as big-endian `u64`s, so most comparisons never touch the heap.
//!
//! # Invariants
//!
//! * Every registered subscription maps to its list of `(slot, position)` entries,
//!   one per distinct non-empty interval it read; `slots[slot].members[position]`
//!   is `(id, index of that entry)`. These back-pointers make removal O(1) per
//!   interval (swap-remove plus one fix-up).
//! * A slot exists iff its member list is non-empty; its interval is reachable from
//!   exactly one store (point map, prefix map or treap), and that store points back to
//!   the slot.
//! * `prefix_lens` holds, for each length, the number of indexed prefix intervals of
//!   that length (never zero).
//! * Treap: binary-search-tree order on `(start, end)`, heap order on priorities, and
//!   `max_node` names a node of the subtree whose `end` is maximal.
//! * Intervals with `start >= end` contain no key and are ignored (a subscription
//!   may therefore have no interval; it is still registered).
//!
//! # Costs (`n` distinct intervals, `m` intervals in one call, `L` distinct prefix lengths)
//!
//! * `insert` / `remove`: O(m) hash operations for point and prefix intervals, expected
//!   O(m log n) for general intervals; replacing a read set removes the old one first.
//! * `matches`: per written key, O(1 + L) expected hash probes plus an expected
//!   O(log n + r log n) treap walk when general intervals exist (r = general
//!   intervals reported), then O(R log R) to sort and deduplicate the R reported ids.
//! * Memory: one slot per distinct interval, one `(id, u32)` pair per
//!   (subscription, interval), one hash entry or treap node per distinct interval;
//!   point and prefix keys are shared between the map and the slot through an `Arc`.
//! * Capacity: at most `u32::MAX - 1` distinct intervals.

use std::cmp::Ordering;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::interval::Interval;

/// Identifier of a subscription (a live query) chosen by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u64);

/// Null link / absent slot.
const NIL: u32 = u32::MAX;

/// Where an interned interval is stored.
enum Home {
    /// Slot is on the free list.
    Free,
    /// Point interval `[key, key ++ 0x00)`; the key is shared with the hash map.
    Point(Arc<[u8]>),
    /// Prefix interval over every key starting with this prefix.
    Prefix(Arc<[u8]>),
    /// General interval, stored in this treap node.
    Tree(u32),
}

/// One distinct interval and the subscriptions that read it.
struct Slot {
    home: Home,
    /// `(subscriber, index of the entry for this slot in the subscriber's list)`.
    members: Vec<(SubscriptionId, u32)>,
}

/// Slots of the point and prefix interval whose key is the map key (`NIL` if none).
#[derive(Clone, Copy)]
struct Exact {
    point: u32,
    prefix: u32,
}

/// Per subscription: `(slot, position in that slot's member list)`.
type Entries = SmallVec<[(u32, u32); 2]>;

/// Index from key intervals to the subscriptions that read them.
///
/// See the [module documentation](self) for the structure and its costs.
pub struct SubscriptionIndex {
    subs: FxHashMap<SubscriptionId, Entries>,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    /// Point and prefix intervals, keyed by the point key or the prefix.
    exact: FxHashMap<Arc<[u8]>, Exact>,
    /// Sorted `(prefix length, number of prefix intervals of that length)`.
    prefix_lens: Vec<(usize, usize)>,
    /// Number of distinct point intervals.
    points: usize,
    tree: Treap,
}

/// Shape of an interval, deciding its store.
enum Kind {
    Empty,
    Point,
    Prefix,
    Range,
}

fn classify(iv: &Interval) -> Kind {
    let (s, e) = (iv.start.as_slice(), iv.end.as_slice());
    if s >= e {
        return Kind::Empty;
    }
    if e.len() == s.len() + 1 && e.last() == Some(&0) && e.starts_with(s) {
        return Kind::Point;
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
    Kind::Range
}

impl Default for SubscriptionIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl SubscriptionIndex {
    /// Creates an empty index.
    pub fn new() -> Self {
        SubscriptionIndex {
            subs: FxHashMap::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            exact: FxHashMap::default(),
            prefix_lens: Vec::new(),
            points: 0,
            tree: Treap::new(),
        }
    }

    /// Registers `id` with these intervals, replacing any intervals it had.
    ///
    /// Duplicate intervals are stored once; intervals with `start >= end` are ignored.
    /// Expected cost: O(m) hash operations plus O(m log n) for general ranges.
    pub fn insert(&mut self, id: SubscriptionId, intervals: &[Interval]) {
        self.remove(id);
        let mut ivs: SmallVec<[&Interval; 4]> =
            intervals.iter().filter(|iv| iv.start < iv.end).collect();
        ivs.sort_unstable();
        ivs.dedup();
        let mut entries = Entries::with_capacity(ivs.len());
        for (i, iv) in ivs.into_iter().enumerate() {
            let slot = self.intern(iv);
            let members = &mut self.slots[slot as usize].members;
            entries.push((slot, members.len() as u32));
            members.push((id, i as u32));
        }
        self.subs.insert(id, entries);
    }

    /// Unregisters `id`; returns whether it was present (absent ids are a no-op).
    pub fn remove(&mut self, id: SubscriptionId) -> bool {
        let Some(entries) = self.subs.remove(&id) else {
            return false;
        };
        for (slot, pos) in entries {
            let members = &mut self.slots[slot as usize].members;
            let pos = pos as usize;
            if pos >= members.len() {
                debug_assert!(false, "corrupt back-pointer");
                continue;
            }
            members.swap_remove(pos);
            if let Some(&(moved, entry)) = members.get(pos) {
                // Another subscriber moved into `pos`; fix its back-pointer.
                if let Some(e) = self
                    .subs
                    .get_mut(&moved)
                    .and_then(|e| e.get_mut(entry as usize))
                {
                    e.1 = pos as u32;
                }
            } else if members.is_empty() {
                self.release(slot);
            }
        }
        true
    }

    /// Returns every subscription with an interval containing at least one of `keys`
    /// (keys in any order, may repeat), sorted ascending and deduplicated.
    ///
    /// Expected cost per key: one point probe, one probe per distinct prefix length not
    /// longer than the key, and an O(log n) treap walk if general ranges exist.
    pub fn matches<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<SubscriptionId> {
        let mut hits: SmallVec<[u32; 16]> = SmallVec::new();
        for key in keys {
            self.collect(key.as_ref(), &mut hits);
        }
        if hits.is_empty() {
            return Vec::new();
        }
        hits.sort_unstable();
        hits.dedup();
        let total = hits
            .iter()
            .map(|&s| self.slots[s as usize].members.len())
            .sum();
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

    /// Number of distinct intervals indexed; identical intervals read by several
    /// subscriptions count once.
    pub fn interval_count(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    /// Pushes the slot of every interval containing `key` onto `out`.
    fn collect(&self, key: &[u8], out: &mut SmallVec<[u32; 16]>) {
        if !self.exact.is_empty() {
            let full_prefix = self
                .prefix_lens
                .binary_search_by_key(&key.len(), |p| p.0)
                .is_ok();
            if (self.points > 0 || full_prefix)
                && let Some(e) = self.exact.get(key)
            {
                out.extend([e.point, e.prefix].into_iter().filter(|&s| s != NIL));
            }
            for &(len, _) in &self.prefix_lens {
                if len >= key.len() {
                    break;
                }
                if let Some(e) = self.exact.get(&key[..len])
                    && e.prefix != NIL
                {
                    out.push(e.prefix);
                }
            }
        }
        self.tree.stab(key, out);
    }

    /// Returns the slot of `iv` (which must be non-empty), creating it if needed.
    fn intern(&mut self, iv: &Interval) -> u32 {
        let kind = classify(iv);
        if matches!(kind, Kind::Range | Kind::Empty) {
            if let Some(node) = self.tree.find(&iv.start, &iv.end) {
                return self.tree.nodes[node as usize].slot;
            }
            let slot = self.new_slot(Home::Free);
            let node = self.tree.insert(&iv.start, &iv.end, slot);
            self.slots[slot as usize].home = Home::Tree(node);
            return slot;
        }
        let is_point = matches!(kind, Kind::Point);
        let key: Arc<[u8]> = match self.exact.get_key_value(iv.start.as_slice()) {
            Some((_, e)) if is_point && e.point != NIL => return e.point,
            Some((_, e)) if !is_point && e.prefix != NIL => return e.prefix,
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(iv.start.as_slice()),
        };
        let len = key.len();
        let home = if is_point {
            Home::Point(Arc::clone(&key))
        } else {
            Home::Prefix(Arc::clone(&key))
        };
        let slot = self.new_slot(home);
        let entry = self.exact.entry(key).or_insert(Exact {
            point: NIL,
            prefix: NIL,
        });
        if is_point {
            entry.point = slot;
            self.points += 1;
        } else {
            entry.prefix = slot;
            match self.prefix_lens.binary_search_by_key(&len, |p| p.0) {
                Ok(i) => self.prefix_lens[i].1 += 1,
                Err(i) => self.prefix_lens.insert(i, (len, 1)),
            }
        }
        slot
    }

    fn new_slot(&mut self, home: Home) -> u32 {
        if let Some(s) = self.free_slots.pop() {
            self.slots[s as usize].home = home;
            s
        } else {
            self.slots.push(Slot {
                home,
                members: Vec::new(),
            });
            (self.slots.len() - 1) as u32
        }
    }

    /// Frees an empty slot and unlinks its interval from its store.
    fn release(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.members = Vec::new();
        match std::mem::replace(&mut s.home, Home::Free) {
            Home::Free => return,
            Home::Tree(node) => self.tree.remove(node),
            Home::Point(key) => {
                self.points -= 1;
                self.unlink_exact(&key, true);
            }
            Home::Prefix(key) => {
                if let Ok(i) = self.prefix_lens.binary_search_by_key(&key.len(), |p| p.0) {
                    self.prefix_lens[i].1 -= 1;
                    if self.prefix_lens[i].1 == 0 {
                        self.prefix_lens.remove(i);
                    }
                }
                self.unlink_exact(&key, false);
            }
        }
        self.free_slots.push(slot);
    }

    fn unlink_exact(&mut self, key: &[u8], point: bool) {
        if let Some(e) = self.exact.get_mut(key) {
            if point {
                e.point = NIL;
            } else {
                e.prefix = NIL;
            }
            if e.point == NIL && e.prefix == NIL {
                self.exact.remove(key);
            }
        }
    }
}

/// First 8 bytes of `key`, zero-padded, as a big-endian integer. If `head(a) < head(b)`
/// then `a < b`; equal heads need a full comparison.
fn head(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Compares two keys given their heads.
fn cmp_keys(ha: u64, a: &[u8], hb: u64, b: &[u8]) -> Ordering {
    ha.cmp(&hb).then_with(|| a.cmp(b))
}

/// Treap node for a general interval.
struct Node {
    start: Box<[u8]>,
    end: Box<[u8]>,
    start_head: u64,
    end_head: u64,
    /// Head of the largest `end` in this subtree.
    max_head: u64,
    /// Node of this subtree whose `end` is largest.
    max_node: u32,
    left: u32,
    right: u32,
    prio: u32,
    slot: u32,
}

/// Randomised balanced search tree over general intervals, augmented with max-end.
struct Treap {
    nodes: Vec<Node>,
    free: Vec<u32>,
    root: u32,
    rng: u64,
}

impl Treap {
    fn new() -> Self {
        Treap {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn node(&self, i: u32) -> &Node {
        &self.nodes[i as usize]
    }

    /// Orders interval `(hs, s, he, e)` against node `t` by `(start, end)`.
    fn cmp_to(&self, hs: u64, s: &[u8], he: u64, e: &[u8], t: u32) -> Ordering {
        let n = self.node(t);
        cmp_keys(hs, s, n.start_head, &n.start).then_with(|| cmp_keys(he, e, n.end_head, &n.end))
    }

    fn find(&self, s: &[u8], e: &[u8]) -> Option<u32> {
        let (hs, he) = (head(s), head(e));
        let mut t = self.root;
        while t != NIL {
            t = match self.cmp_to(hs, s, he, e, t) {
                Ordering::Less => self.node(t).left,
                Ordering::Greater => self.node(t).right,
                Ordering::Equal => return Some(t),
            };
        }
        None
    }

    /// Inserts a new interval (absent from the tree) and returns its node.
    fn insert(&mut self, s: &[u8], e: &[u8], slot: u32) -> u32 {
        // splitmix64 step: deterministic, well-mixed priorities.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let node = Node {
            start_head: head(s),
            end_head: head(e),
            max_head: head(e),
            start: s.into(),
            end: e.into(),
            max_node: NIL,
            left: NIL,
            right: NIL,
            prio: (z >> 32) as u32,
            slot,
        };
        let n = if let Some(n) = self.free.pop() {
            self.nodes[n as usize] = node;
            n
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        };
        self.nodes[n as usize].max_node = n;
        self.root = self.insert_at(self.root, n);
        n
    }

    fn insert_at(&mut self, t: u32, n: u32) -> u32 {
        if t == NIL {
            return n;
        }
        let m = self.node(n);
        let goes_left =
            self.cmp_to(m.start_head, &m.start, m.end_head, &m.end, t) == Ordering::Less;
        let mut t = t;
        if goes_left {
            let l = self.insert_at(self.node(t).left, n);
            self.nodes[t as usize].left = l;
            if self.node(l).prio > self.node(t).prio {
                t = self.rotate_right(t);
            }
        } else {
            let r = self.insert_at(self.node(t).right, n);
            self.nodes[t as usize].right = r;
            if self.node(r).prio > self.node(t).prio {
                t = self.rotate_left(t);
            }
        }
        self.pull(t);
        t
    }

    fn rotate_right(&mut self, t: u32) -> u32 {
        let l = self.node(t).left;
        self.nodes[t as usize].left = self.node(l).right;
        self.nodes[l as usize].right = t;
        self.pull(t);
        self.pull(l);
        l
    }

    fn rotate_left(&mut self, t: u32) -> u32 {
        let r = self.node(t).right;
        self.nodes[t as usize].right = self.node(r).left;
        self.nodes[r as usize].left = t;
        self.pull(t);
        self.pull(r);
        r
    }

    /// Recomputes the subtree maximum of `t` from its own end and its children.
    fn pull(&mut self, t: u32) {
        let n = self.node(t);
        let (mut best, mut best_head) = (t, n.end_head);
        for c in [n.left, n.right] {
            if c == NIL {
                continue;
            }
            let (cand, cand_head) = (self.node(c).max_node, self.node(c).max_head);
            let greater = match cand_head.cmp(&best_head) {
                Ordering::Equal => self.node(cand).end > self.node(best).end,
                ord => ord == Ordering::Greater,
            };
            if greater {
                (best, best_head) = (cand, cand_head);
            }
        }
        let n = &mut self.nodes[t as usize];
        n.max_node = best;
        n.max_head = best_head;
    }

    /// Unlinks node `n` from the tree and frees it.
    fn remove(&mut self, n: u32) {
        self.root = self.remove_at(self.root, n);
        let node = &mut self.nodes[n as usize];
        node.start = Box::default();
        node.end = Box::default();
        (node.left, node.right) = (NIL, NIL);
        self.free.push(n);
    }

    fn remove_at(&mut self, t: u32, n: u32) -> u32 {
        if t == NIL {
            return NIL;
        }
        if t == n {
            let (l, r) = (self.node(t).left, self.node(t).right);
            return self.merge(l, r);
        }
        let m = self.node(n);
        if self.cmp_to(m.start_head, &m.start, m.end_head, &m.end, t) == Ordering::Less {
            let l = self.remove_at(self.node(t).left, n);
            self.nodes[t as usize].left = l;
        } else {
            let r = self.remove_at(self.node(t).right, n);
            self.nodes[t as usize].right = r;
        }
        self.pull(t);
        t
    }

    /// Joins two treaps where every interval of `a` orders before every one of `b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.node(a).prio > self.node(b).prio {
            let r = self.merge(self.node(a).right, b);
            self.nodes[a as usize].right = r;
            self.pull(a);
            a
        } else {
            let l = self.merge(a, self.node(b).left);
            self.nodes[b as usize].left = l;
            self.pull(b);
            b
        }
    }

    /// Pushes the slot of every interval containing `key`.
    fn stab(&self, key: &[u8], out: &mut SmallVec<[u32; 16]>) {
        if self.root != NIL {
            self.stab_at(self.root, key, head(key), out);
        }
    }

    fn stab_at(&self, mut t: u32, key: &[u8], hk: u64, out: &mut SmallVec<[u32; 16]>) {
        while t != NIL {
            let n = self.node(t);
            // Every interval here ends at or before `key`: nothing to report.
            let ends_after = match n.max_head.cmp(&hk) {
                Ordering::Equal => &*self.node(n.max_node).end > key,
                ord => ord == Ordering::Greater,
            };
            if !ends_after {
                return;
            }
            self.stab_at(n.left, key, hk, out);
            // This node and its right subtree start after `key`.
            if cmp_keys(n.start_head, &n.start, hk, key) == Ordering::Greater {
                return;
            }
            if cmp_keys(hk, key, n.end_head, &n.end) == Ordering::Less {
                out.push(n.slot);
            }
            t = n.right;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u64) -> SubscriptionId {
        SubscriptionId(n)
    }

    fn iv(s: &[u8], e: &[u8]) -> Interval {
        Interval::new(s.to_vec(), e.to_vec()).expect("non-empty")
    }

    fn prefix(p: &[u8]) -> Interval {
        let mut e = p.to_vec();
        while e.last() == Some(&0xFF) {
            e.pop();
        }
        *e.last_mut().expect("has successor") += 1;
        iv(p, &e)
    }

    fn hit(idx: &SubscriptionIndex, keys: &[&[u8]]) -> Vec<SubscriptionId> {
        idx.matches(keys)
    }

    fn ids(v: &[u64]) -> Vec<SubscriptionId> {
        v.iter().copied().map(SubscriptionId).collect()
    }

    impl SubscriptionIndex {
        /// Verifies every structural invariant listed in the module docs.
        fn check(&self) {
            let mut live = 0;
            for (s, slot) in self.slots.iter().enumerate() {
                if matches!(slot.home, Home::Free) {
                    assert!(slot.members.is_empty());
                    assert!(self.free_slots.contains(&(s as u32)));
                    continue;
                }
                live += 1;
                assert!(!slot.members.is_empty(), "live slot without members");
                for (pos, &(sid, entry)) in slot.members.iter().enumerate() {
                    assert_eq!(self.subs[&sid][entry as usize], (s as u32, pos as u32));
                }
                match &slot.home {
                    Home::Point(k) => assert_eq!(self.exact[k].point, s as u32),
                    Home::Prefix(k) => assert_eq!(self.exact[k].prefix, s as u32),
                    Home::Tree(n) => assert_eq!(self.tree.node(*n).slot, s as u32),
                    Home::Free => unreachable!(),
                }
            }
            assert_eq!(live, self.interval_count());
            for (sid, entries) in &self.subs {
                for &(s, pos) in entries {
                    assert_eq!(self.slots[s as usize].members[pos as usize].0, *sid);
                }
            }
            let points = self.exact.values().filter(|e| e.point != NIL).count();
            assert_eq!(points, self.points);
            let mut lens: Vec<(usize, usize)> = Vec::new();
            for (k, e) in &self.exact {
                assert!(e.point != NIL || e.prefix != NIL);
                if e.prefix != NIL {
                    match lens.iter_mut().find(|l| l.0 == k.len()) {
                        Some(l) => l.1 += 1,
                        None => lens.push((k.len(), 1)),
                    }
                }
            }
            lens.sort_unstable();
            assert_eq!(lens, self.prefix_lens);
            let mut count = 0;
            self.check_node(self.tree.root, &mut count, None);
            assert_eq!(count + self.tree.free.len(), self.tree.nodes.len());
        }

        /// Checks the subtree of `t`; returns its largest end.
        fn check_node(&self, t: u32, count: &mut usize, parent_prio: Option<u32>) -> Vec<u8> {
            if t == NIL {
                return Vec::new();
            }
            *count += 1;
            let n = self.tree.node(t);
            assert!(parent_prio.is_none_or(|p| p >= n.prio));
            assert_eq!((n.start_head, n.end_head), (head(&n.start), head(&n.end)));
            let mut max = n.end.to_vec();
            for (c, ord) in [(n.left, Ordering::Less), (n.right, Ordering::Greater)] {
                if c != NIL {
                    let cn = self.tree.node(c);
                    assert_eq!((&cn.start, &cn.end).cmp(&(&n.start, &n.end)), ord);
                    max = max.max(self.check_node(c, count, Some(n.prio)));
                }
            }
            assert_eq!(&*self.tree.node(n.max_node).end, max.as_slice());
            assert_eq!(n.max_head, head(&max));
            max
        }
    }

    #[test]
    fn send_sync_default() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SubscriptionIndex>();
        let idx = SubscriptionIndex::default();
        assert!(idx.is_empty());
        assert_eq!(hit(&idx, &[b"a"]), ids(&[]));
        assert_eq!(idx.matches::<&[u8]>(&[]), ids(&[]));
    }

    #[test]
    fn classification() {
        assert!(matches!(classify(&Interval::point(b"ab")), Kind::Point));
        assert!(matches!(classify(&Interval::point(b"")), Kind::Point));
        assert!(matches!(classify(&prefix(b"ab")), Kind::Prefix));
        assert!(matches!(classify(&prefix(b"a\xFF\xFF")), Kind::Prefix));
        assert!(matches!(classify(&iv(b"ab", b"ad")), Kind::Range));
        assert!(matches!(classify(&iv(b"", b"a")), Kind::Range));
        assert!(matches!(classify(&iv(b"\xFF", b"\xFF\x01")), Kind::Range));
        let inverted = Interval {
            start: b"b".to_vec(),
            end: b"a".to_vec(),
        };
        assert!(matches!(classify(&inverted), Kind::Empty));
    }

    #[test]
    fn points() {
        let mut idx = SubscriptionIndex::new();
        idx.insert(id(1), &[Interval::point(b"doc1")]);
        idx.insert(id(2), &[Interval::point(b"doc2"), Interval::point(b"")]);
        assert_eq!(hit(&idx, &[b"doc1"]), ids(&[1]));
        assert_eq!(hit(&idx, &[b"doc2", b"doc1", b"doc2"]), ids(&[1, 2]));
        assert_eq!(hit(&idx, &[b"doc", b"doc10", b"doc1\0"]), ids(&[]));
        assert_eq!(hit(&idx, &[b""]), ids(&[2]));
        assert_eq!((idx.len(), idx.interval_count()), (2, 3));
        idx.check();
    }

    #[test]
    fn prefixes() {
        let mut idx = SubscriptionIndex::new();
        idx.insert(id(1), &[prefix(b"ab")]);
        idx.insert(id(2), &[prefix(b"abc")]);
        idx.insert(id(3), &[prefix(b"a\xFF")]);
        idx.insert(id(4), &[Interval::point(b"ab")]);
        assert_eq!(hit(&idx, &[b"ab"]), ids(&[1, 4]));
        assert_eq!(hit(&idx, &[b"abcd"]), ids(&[1, 2]));
        assert_eq!(hit(&idx, &[b"a", b"b", b"ac", b"aa\xFF"]), ids(&[]));
        assert_eq!(hit(&idx, &[b"a\xFF", b"a\xFF\xFF\x00"]), ids(&[3]));
        idx.check();
        assert!(idx.remove(id(4)));
        assert_eq!(hit(&idx, &[b"ab"]), ids(&[1]));
        idx.check();
    }

    #[test]
    fn ranges() {
        let mut idx = SubscriptionIndex::new();
        idx.insert(id(1), &[iv(b"b", b"d")]);
        idx.insert(id(2), &[iv(b"a", b"z"), iv(b"0", b"1")]);
        idx.insert(id(3), &[iv(b"", b"b")]);
        idx.insert(id(4), &[iv(b"longcommonprefix-1", b"longcommonprefix-5")]);
        assert_eq!(hit(&idx, &[b"b"]), ids(&[1, 2]));
        assert_eq!(hit(&idx, &[b"d"]), ids(&[2]));
        assert_eq!(hit(&idx, &[b""]), ids(&[3]));
        assert_eq!(hit(&idx, &[b"0zz"]), ids(&[2, 3]));
        assert_eq!(hit(&idx, &[b"z", b"zz"]), ids(&[]));
        assert_eq!(hit(&idx, &[b"longcommonprefix-4zzz"]), ids(&[2, 4]));
        assert_eq!(hit(&idx, &[b"longcommonprefix-5"]), ids(&[2]));
        idx.check();
    }

    #[test]
    fn duplicates_are_interned() {
        let mut idx = SubscriptionIndex::new();
        let shared = [prefix(b"users/"), iv(b"k1", b"k9"), Interval::point(b"x")];
        for n in 0..1000 {
            idx.insert(id(n), &shared);
        }
        // Duplicates inside one read set are stored once.
        idx.insert(id(5000), &[Interval::point(b"x"), Interval::point(b"x")]);
        assert_eq!((idx.len(), idx.interval_count()), (1001, 3));
        let all: Vec<u64> = (0..1000).collect();
        assert_eq!(hit(&idx, &[b"users/7", b"k5", b"users/8"]), ids(&all));
        assert_eq!(hit(&idx, &[b"x"]).len(), 1001);
        idx.check();
        for n in (0..1000).step_by(2) {
            assert!(idx.remove(id(n)));
        }
        idx.check();
        let odd: Vec<u64> = (1..1000).step_by(2).collect();
        assert_eq!(hit(&idx, &[b"k2"]), ids(&odd));
        assert_eq!(idx.interval_count(), 3);
    }

    #[test]
    fn insert_replaces() {
        let mut idx = SubscriptionIndex::new();
        idx.insert(id(7), &[Interval::point(b"a"), iv(b"m", b"p")]);
        idx.insert(id(7), &[prefix(b"q")]);
        assert_eq!(hit(&idx, &[b"a", b"n"]), ids(&[]));
        assert_eq!(hit(&idx, &[b"qq"]), ids(&[7]));
        assert_eq!((idx.len(), idx.interval_count()), (1, 1));
        idx.insert(id(7), &[]);
        assert_eq!((idx.len(), idx.interval_count()), (1, 0));
        assert_eq!(hit(&idx, &[b"qq"]), ids(&[]));
        idx.check();
    }

    #[test]
    fn remove_and_bad_input() {
        let mut idx = SubscriptionIndex::new();
        assert!(!idx.remove(id(1)));
        let inverted = Interval {
            start: b"b".to_vec(),
            end: b"a".to_vec(),
        };
        let empty = Interval {
            start: b"a".to_vec(),
            end: b"a".to_vec(),
        };
        idx.insert(id(1), &[inverted, empty]);
        assert_eq!((idx.len(), idx.interval_count()), (1, 0));
        assert!(hit(&idx, &[b"a", b"b"]).is_empty());
        assert!(idx.remove(id(1)));
        assert!(!idx.remove(id(1)));
        assert!(idx.is_empty());
        idx.check();
    }

    #[test]
    fn many_ranges_stay_balanced() {
        let mut idx = SubscriptionIndex::new();
        for n in 0..5000u32 {
            let s = n.to_be_bytes();
            let e = (n + 3).to_be_bytes();
            idx.insert(id(u64::from(n)), &[iv(&s, &e)]);
        }
        idx.check();
        assert_eq!(idx.matches(&[100u32.to_be_bytes()]), ids(&[98, 99, 100]));
        for n in 0..2500 {
            idx.remove(id(n * 2));
        }
        idx.check();
        assert_eq!(idx.matches(&[100u32.to_be_bytes()]), ids(&[99]));
    }

    /// Keys over a tiny alphabet so that collisions and overlaps are frequent.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 0xFF]), 0..4)
    }

    fn interval() -> impl Strategy<Value = Interval> {
        prop_oneof![
            key().prop_map(|k| Interval::point(&k)),
            key().prop_filter_map("has successor", |mut p| {
                let start = p.clone();
                while p.last() == Some(&0xFF) {
                    p.pop();
                }
                let last = p.last_mut()?;
                *last += 1;
                Some(Interval { start, end: p })
            }),
            (key(), key()).prop_map(|(a, b)| Interval {
                start: a.clone().min(b.clone()),
                end: a.max(b)
            }),
        ]
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, Vec<Interval>),
        Remove(u64),
        Matches(Vec<Vec<u8>>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..12u64, prop::collection::vec(interval(), 0..4)).prop_map(|(i, v)| Op::Insert(i, v)),
            1 => (0..12u64).prop_map(Op::Remove),
            3 => prop::collection::vec(key(), 0..5).prop_map(Op::Matches),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn matches_naive_model(ops in prop::collection::vec(op(), 1..60)) {
            let mut idx = SubscriptionIndex::new();
            let mut model: Vec<(u64, Vec<Interval>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(i, v) => {
                        idx.insert(id(i), &v);
                        model.retain(|m| m.0 != i);
                        model.push((i, v));
                    }
                    Op::Remove(i) => {
                        let present = model.iter().any(|m| m.0 == i);
                        prop_assert_eq!(idx.remove(id(i)), present);
                        model.retain(|m| m.0 != i);
                    }
                    Op::Matches(keys) => {
                        let mut want: Vec<u64> = model.iter()
                            .filter(|(_, v)| v.iter().any(|r| keys.iter().any(|k| r.contains(k))))
                            .map(|m| m.0)
                            .collect();
                        want.sort_unstable();
                        prop_assert_eq!(idx.matches(&keys), ids(&want));
                    }
                }
                prop_assert_eq!(idx.len(), model.len());
                let mut distinct: Vec<&Interval> = model.iter()
                    .flat_map(|m| m.1.iter())
                    .filter(|r| r.start < r.end)
                    .collect();
                distinct.sort_unstable();
                distinct.dedup();
                prop_assert_eq!(idx.interval_count(), distinct.len());
                idx.check();
            }
        }
    }
}

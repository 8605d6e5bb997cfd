//! Half-open intervals of keyspace keys, and sets of them (read sets).
//!
//! A keyspace key is an index id (4 bytes, big-endian) followed by an index key
//! ([`crate::keys`]), so every index range is one contiguous byte range and every interval is
//! bounded: an open-ended range of index `i` ends at the first key of index `i + 1`.
//!
//! Invariants: an [`Interval`] has `start < end` (empty intervals are never stored); an
//! [`IntervalSet`] after [`IntervalSet::normalize`] is sorted by start, pairwise disjoint and
//! non-adjacent, so a point lookup is one binary search.

use std::fmt;

/// The keys `k` with `start <= k < end` (byte order).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interval {
    /// First key in the interval (inclusive).
    pub start: Vec<u8>,
    /// First key after the interval (exclusive).
    pub end: Vec<u8>,
}

impl Interval {
    /// The interval `[start, end)`, or `None` if it is empty.
    pub fn new(start: Vec<u8>, end: Vec<u8>) -> Option<Interval> {
        (start < end).then_some(Interval { start, end })
    }

    /// The interval holding exactly `key`: `[key, key ++ 0x00)`.
    pub fn point(key: &[u8]) -> Interval {
        Interval {
            start: key.to_vec(),
            end: crate::keys::successor(key),
        }
    }

    /// Whether `key` lies in the interval.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.start.as_slice() <= key && key < self.end.as_slice()
    }

    /// Whether the two intervals share a key.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }
}

impl fmt::Debug for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", hex(&self.start), hex(&self.end))
    }
}

/// Lower-case hex of a byte string (for messages and debugging).
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A set of intervals. Built by appending; [`IntervalSet::normalize`] sorts and merges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalSet {
    intervals: Vec<Interval>,
    normalized: bool,
}

impl IntervalSet {
    /// An empty set.
    pub fn new() -> Self {
        IntervalSet {
            intervals: Vec::new(),
            normalized: true,
        }
    }

    /// Add an interval.
    pub fn push(&mut self, interval: Interval) {
        self.intervals.push(interval);
        self.normalized = self.intervals.len() <= 1;
    }

    /// Number of intervals (after merging, if normalized).
    pub fn len(&self) -> usize {
        self.intervals.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Sort by start and merge overlapping or adjacent intervals.
    pub fn normalize(&mut self) {
        if self.normalized {
            return;
        }
        self.intervals
            .sort_unstable_by(|a, b| a.start.cmp(&b.start));
        let mut merged: Vec<Interval> = Vec::with_capacity(self.intervals.len());
        for iv in self.intervals.drain(..) {
            match merged.last_mut() {
                Some(last) if iv.start <= last.end => {
                    if iv.end > last.end {
                        last.end = iv.end;
                    }
                }
                _ => merged.push(iv),
            }
        }
        self.intervals = merged;
        self.normalized = true;
    }

    /// The intervals (sorted and disjoint once normalized).
    pub fn intervals(&self) -> &[Interval] {
        &self.intervals
    }

    /// Consume into the intervals.
    pub fn into_intervals(mut self) -> Vec<Interval> {
        self.normalize();
        self.intervals
    }

    /// The interval containing `key`, if any. The set must be normalized.
    pub fn find(&self, key: &[u8]) -> Option<&Interval> {
        debug_assert!(self.normalized);
        let i = self
            .intervals
            .partition_point(|iv| iv.start.as_slice() <= key);
        let iv = self.intervals.get(i.checked_sub(1)?)?;
        iv.contains(key).then_some(iv)
    }

    /// The first key of `sorted_keys` inside the set, if any. Both must be sorted (the set
    /// normalized); the cost is `O(min(k, r) * log(max(k, r)))` for `k` keys and `r` intervals.
    pub fn first_hit<'a, K: AsRef<[u8]>>(&self, sorted_keys: &'a [K]) -> Option<&'a [u8]> {
        debug_assert!(self.normalized);
        if self.intervals.is_empty() || sorted_keys.is_empty() {
            return None;
        }
        if sorted_keys.len() <= self.intervals.len() {
            sorted_keys
                .iter()
                .map(AsRef::as_ref)
                .find(|k| self.find(k).is_some())
        } else {
            self.intervals.iter().find_map(|iv| {
                let i = sorted_keys.partition_point(|k| k.as_ref() < iv.start.as_slice());
                sorted_keys
                    .get(i)
                    .map(AsRef::as_ref)
                    .filter(|k| *k < iv.end.as_slice())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_interval() -> impl Strategy<Value = Interval> {
        (
            prop::collection::vec(0u8..4, 0..3),
            prop::collection::vec(0u8..4, 0..3),
        )
            .prop_filter_map("empty", |(a, b)| Interval::new(a, b))
    }

    proptest! {
        #[test]
        fn normalized_set_agrees_with_naive(
            intervals in prop::collection::vec(arb_interval(), 0..8),
            keys in prop::collection::vec(prop::collection::vec(0u8..4, 0..3), 0..8),
        ) {
            let mut set = IntervalSet::new();
            for iv in &intervals { set.push(iv.clone()); }
            set.normalize();
            for pair in set.intervals().windows(2) {
                prop_assert!(pair[0].end < pair[1].start);
            }
            let mut sorted = keys.clone();
            sorted.sort();
            for k in &sorted {
                let naive = intervals.iter().any(|iv| iv.contains(k));
                prop_assert_eq!(set.find(k).is_some(), naive);
            }
            let naive_first = sorted.iter().find(|k| intervals.iter().any(|iv| iv.contains(k)));
            let hit = set.first_hit(&sorted);
            prop_assert_eq!(hit.is_some(), naive_first.is_some());
            if let Some(h) = hit {
                prop_assert!(intervals.iter().any(|iv| iv.contains(h)));
            }
        }
    }
}

//! The write log: the in-memory window of recent commits' written keys.
//!
//! The committer checks a transaction's read set against every entry committed after the
//! transaction's begin timestamp; subscriptions registered at an older snapshot check the
//! entries they missed. It is not the transaction log (that is [`crate::log`], whose records
//! persistence makes durable).
//!
//! Invariants: entries are in strictly increasing `ts`; every commit with `ts > floor` that
//! was accepted and not aborted has its entry here, pending (not yet durable) ones included;
//! only entries at or below the visible timestamp are trimmed, so a pending commit is always
//! checked against. A transaction that began below `floor` cannot be checked and gets
//! [`crate::error::Error::TransactionTooOld`]. `latest` maps every key of the window to the
//! newest timestamp that wrote it (as FoundationDB's resolver keeps), so a transaction with
//! many commits after its begin timestamp is checked per read interval, not per commit.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use crate::interval::IntervalSet;
use crate::timestamp::Timestamp;

/// The keys one commit wrote (sorted, deduplicated keyspace keys).
#[derive(Debug)]
pub struct WriteLogEntry {
    /// The commit timestamp.
    pub ts: Timestamp,
    /// Every index key the commit removed or added, in every index of the tables it wrote.
    pub keys: Vec<Box<[u8]>>,
}

/// How much of the past the write log keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteLogConfig {
    /// Entries older than this many nanoseconds (by commit timestamp) are dropped.
    pub max_age_ns: u64,
    /// At most this many entries are kept.
    pub max_entries: usize,
}

impl Default for WriteLogConfig {
    fn default() -> Self {
        WriteLogConfig {
            max_age_ns: 60_000_000_000,
            max_entries: 100_000,
        }
    }
}

/// The window of recent commits.
#[derive(Debug)]
pub struct WriteLog {
    entries: VecDeque<Arc<WriteLogEntry>>,
    floor: Timestamp,
    config: WriteLogConfig,
    latest: BTreeMap<Box<[u8]>, Timestamp>,
}

/// Above this many commits after a transaction's begin timestamp, the check goes through
/// `latest` (cost per read interval) rather than through each commit.
const PER_COMMIT_CHECK_LIMIT: usize = 32;

/// A write that overlaps a read set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// The commit that wrote the key.
    pub ts: Timestamp,
    /// The key.
    pub key: Vec<u8>,
}

impl WriteLog {
    /// An empty log that can check transactions that began at or after `floor`.
    pub fn new(floor: Timestamp, config: WriteLogConfig) -> Self {
        WriteLog {
            entries: VecDeque::new(),
            floor,
            config,
            latest: BTreeMap::new(),
        }
    }

    /// The oldest begin timestamp that can be checked.
    pub fn floor(&self) -> Timestamp {
        self.floor
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append a commit's entry; its `ts` is above every entry's.
    pub fn append(&mut self, entry: Arc<WriteLogEntry>) {
        debug_assert!(self.entries.back().is_none_or(|e| e.ts < entry.ts));
        for key in &entry.keys {
            match self.latest.get_mut(key) {
                Some(ts) => *ts = entry.ts,
                None => {
                    self.latest.insert(key.clone(), entry.ts);
                }
            }
        }
        self.entries.push_back(entry);
    }

    /// Remove the entry of an aborted commit (its batch failed to persist).
    pub fn remove(&mut self, ts: Timestamp) {
        if let Ok(i) = self.entries.binary_search_by(|e| e.ts.cmp(&ts)) {
            self.entries.remove(i);
            // Rare (a batch failed to persist): rebuild the newest writer of every key.
            self.latest.clear();
            for entry in &self.entries {
                for key in &entry.keys {
                    self.latest.insert(key.clone(), entry.ts);
                }
            }
        }
    }

    /// Drop entries beyond the window, never one above `visible`.
    pub fn trim(&mut self, now: Timestamp, visible: Timestamp) {
        let oldest_allowed = Timestamp(now.0.saturating_sub(self.config.max_age_ns));
        while let Some(front) = self.entries.front() {
            let too_old = front.ts < oldest_allowed || self.entries.len() > self.config.max_entries;
            if !too_old || front.ts > visible {
                break;
            }
            self.floor = front.ts;
            if let Some(old) = self.entries.pop_front() {
                for key in &old.keys {
                    if self.latest.get(key) == Some(&old.ts) {
                        self.latest.remove(key);
                    }
                }
            }
        }
    }

    /// Entries with `ts` in `(after, upto]`.
    pub fn between(
        &self,
        after: Timestamp,
        upto: Timestamp,
    ) -> impl Iterator<Item = &Arc<WriteLogEntry>> {
        let start = self.entries.partition_point(|e| e.ts <= after);
        self.entries
            .range(start..)
            .take_while(move |e| e.ts <= upto)
    }

    /// The first write after `begin_ts` (up to `upto`) that lands in `reads` (normalized).
    ///
    /// Errors with the floor if `begin_ts` is below it: the window no longer holds what the
    /// transaction would have to be checked against.
    pub fn first_overlap(
        &self,
        begin_ts: Timestamp,
        upto: Timestamp,
        reads: &IntervalSet,
    ) -> Result<Option<Overlap>, Timestamp> {
        if begin_ts < self.floor {
            return Err(self.floor);
        }
        if reads.is_empty() {
            return Ok(None);
        }
        let start = self.entries.partition_point(|e| e.ts <= begin_ts);
        let after = self.entries.len() - start;
        let newest = self.entries.back().map_or(Timestamp::ZERO, |e| e.ts);
        // `latest` holds only each key's newest writer: exact when every entry is <= upto.
        if after > PER_COMMIT_CHECK_LIMIT && upto >= newest {
            for iv in reads.intervals() {
                let range = self.latest.range::<[u8], _>((
                    Bound::Included(iv.start.as_slice()),
                    Bound::Excluded(iv.end.as_slice()),
                ));
                if let Some((key, ts)) = range.into_iter().find(|(_, ts)| **ts > begin_ts) {
                    return Ok(Some(Overlap {
                        ts: *ts,
                        key: key.to_vec(),
                    }));
                }
            }
            return Ok(None);
        }
        for entry in self.between(begin_ts, upto) {
            if let Some(key) = reads.first_hit(&entry.keys) {
                return Ok(Some(Overlap {
                    ts: entry.ts,
                    key: key.to_vec(),
                }));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interval::Interval;

    fn entry(ts: u64, keys: &[&[u8]]) -> Arc<WriteLogEntry> {
        Arc::new(WriteLogEntry {
            ts: Timestamp(ts),
            keys: keys.iter().map(|k| (*k).into()).collect(),
        })
    }

    #[test]
    fn overlaps_after_begin_only() {
        let mut log = WriteLog::new(Timestamp(0), WriteLogConfig::default());
        log.append(entry(10, &[b"a"]));
        log.append(entry(20, &[b"m"]));
        let mut reads = IntervalSet::new();
        reads.push(Interval::new(b"l".to_vec(), b"n".to_vec()).unwrap());
        reads.push(Interval::point(b"a"));
        reads.normalize();
        let hit = log
            .first_overlap(Timestamp(5), Timestamp::MAX, &reads)
            .unwrap()
            .unwrap();
        assert_eq!(hit.ts, Timestamp(10));
        let hit = log
            .first_overlap(Timestamp(10), Timestamp::MAX, &reads)
            .unwrap()
            .unwrap();
        assert_eq!(hit.ts, Timestamp(20));
        assert!(
            log.first_overlap(Timestamp(20), Timestamp::MAX, &reads)
                .unwrap()
                .is_none()
        );
        log.remove(Timestamp(20));
        assert!(
            log.first_overlap(Timestamp(10), Timestamp::MAX, &reads)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn trimming_raises_the_floor_but_keeps_pending() {
        let config = WriteLogConfig {
            max_age_ns: 100,
            max_entries: 10,
        };
        let mut log = WriteLog::new(Timestamp(0), config);
        log.append(entry(10, &[b"a"]));
        log.append(entry(20, &[b"b"]));
        log.trim(Timestamp(1000), Timestamp(10));
        assert_eq!(log.floor(), Timestamp(10));
        assert_eq!(log.len(), 1, "the entry above the visible timestamp stays");
        let reads = IntervalSet::new();
        assert_eq!(
            log.first_overlap(Timestamp(5), Timestamp::MAX, &reads),
            Err(Timestamp(10))
        );
    }
}

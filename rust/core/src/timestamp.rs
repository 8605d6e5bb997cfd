//! Commit timestamps: u64 nanoseconds since the Unix epoch.
//!
//! Invariants: the committer hands out strictly increasing timestamps, never below the
//! highest one persisted, whatever the wall clock does (see [`crate::committer`]). The wire
//! protocol caps timestamps at `i64::MAX` (spec §3), which every backend column can hold.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A point in the commit order: nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The zero timestamp: before every commit.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The largest timestamp the wire protocol and the backends accept.
    pub const MAX: Timestamp = Timestamp(i64::MAX as u64);

    /// The wall clock now, in nanoseconds since the epoch (0 if the clock is before 1970).
    pub fn wall_clock() -> Timestamp {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Timestamp(u64::try_from(ns).unwrap_or(u64::MAX).min(Self::MAX.0))
    }

    /// The next timestamp (saturating at [`Timestamp::MAX`]).
    #[must_use]
    pub fn succ(self) -> Timestamp {
        Timestamp(self.0.saturating_add(1).min(Self::MAX.0))
    }

    /// Milliseconds since the epoch as a float, the unit of `_creationTime`.
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

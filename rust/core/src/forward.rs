//! Transaction forwarding: a transaction run on a follower, committed by the writer.
//!
//! A process that follows the log runs a mutation at its own snapshot like any other
//! transaction, then sends what the committer needs to the process holding the writer
//! lease: the begin timestamp, the read set and the written documents
//! ([`ForwardedTransaction::encode`]). The writer rebuilds the commit against its own store
//! ([`crate::engine::Engine::commit_forwarded`]): each written document's revision at the
//! begin timestamp comes from its store (the follower applied the same log, so it is the
//! revision the follower read), the read set is validated against every commit after the
//! begin timestamp exactly as a local transaction's is, and the commit gets its timestamp
//! from the writer's committer. Convex's function runners hand their transactions to one
//! committer the same way (`crates/database/src/committer.rs` in get-convex/convex-backend).
//!
//! Invariants: the read set sent includes the `by_id` key of every written document (added
//! by the writer when it rebuilds the commit), so a write whose document changed after the
//! begin timestamp conflicts even when the follower did not read it (an insert, resent after
//! a lost answer, conflicts with itself instead of landing twice); a transaction that created
//! a table is not forwarded (table numbers are handed out by the writer's catalog).
//!
//! Encoding (little-endian): `b"RFT1"`, `begin_ts: u64`, `intervals: u32` then for each
//! `start` and `end` as `u32` length + bytes, `writes: u32` then for each the document id
//! ([`DocumentId::to_bytes`]) as `u32` length + bytes, a flags byte (bit 0: a revision was
//! visible at the begin timestamp, bit 1: the document exists after the write), the old
//! revision's timestamp as `u64` when bit 0 is set, and the new revision's stored encoding
//! ([`Document::to_stored`]) as `u32` length + bytes when bit 1 is set.

use std::sync::Arc;

use crate::document::{Document, DocumentRef};
use crate::error::{Error, Result};
use crate::id::DocumentId;
use crate::interval::{Interval, IntervalSet};
use crate::timestamp::Timestamp;
use crate::transaction::Transaction;

const MAGIC: &[u8; 4] = b"RFT1";
const HAS_OLD: u8 = 1;
const HAS_NEW: u8 = 2;

/// One written document of a forwarded transaction.
#[derive(Clone, Debug)]
pub struct ForwardedWrite {
    /// The document.
    pub id: DocumentId,
    /// The timestamp of its revision visible at the begin timestamp (`None`: inserted).
    pub old_ts: Option<Timestamp>,
    /// Its new revision (`None`: deleted).
    pub new: Option<DocumentRef>,
}

/// What a follower sends the writer for one transaction.
#[derive(Clone, Debug)]
pub struct ForwardedTransaction {
    /// The snapshot the transaction read (a commit timestamp of the log).
    pub begin_ts: Timestamp,
    /// Its read set (normalized).
    pub reads: IntervalSet,
    /// Its writes, in document id order.
    pub writes: Vec<ForwardedWrite>,
}

fn bad(what: &str) -> Error {
    Error::InvalidArgument(format!("malformed forwarded transaction: {what}"))
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or_else(|| bad(what))?;
        let out = self.bytes.get(self.at..end).ok_or_else(|| bad(what))?;
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    /// A count of items each at least `min_size` bytes long (bounded by what is left).
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_size) > self.bytes.len() - self.at {
            return Err(bad(what));
        }
        Ok(n)
    }
}

impl ForwardedTransaction {
    /// What `txn` would commit, to send to the writer.
    ///
    /// Errors: `InvalidArgument` when the transaction created a table (run it on the writer).
    pub fn of(txn: &mut Transaction) -> Result<ForwardedTransaction> {
        if txn.created_tables_count() > 0 {
            return Err(Error::InvalidArgument(
                "a transaction that creates a table cannot be forwarded; run it on the writer"
                    .to_owned(),
            ));
        }
        let reads = txn.read_set().clone();
        let writes = txn
            .writes()
            .iter()
            .filter(|(_, w)| w.old.is_some() || w.new.is_some())
            .map(|(id, w)| ForwardedWrite {
                id: *id,
                old_ts: w.old.as_ref().map(|(ts, _)| *ts),
                new: w.new.clone(),
            })
            .collect();
        Ok(ForwardedTransaction {
            begin_ts: txn.begin_ts(),
            reads,
            writes,
        })
    }

    /// The wire encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.writes.len() * 128);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.begin_ts.0.to_le_bytes());
        out.extend_from_slice(&(self.reads.len() as u32).to_le_bytes());
        for iv in self.reads.intervals() {
            put_bytes(&mut out, &iv.start);
            put_bytes(&mut out, &iv.end);
        }
        out.extend_from_slice(&(self.writes.len() as u32).to_le_bytes());
        for w in &self.writes {
            put_bytes(&mut out, &w.id.to_bytes());
            let flags = if w.old_ts.is_some() { HAS_OLD } else { 0 }
                | if w.new.is_some() { HAS_NEW } else { 0 };
            out.push(flags);
            if let Some(ts) = w.old_ts {
                out.extend_from_slice(&ts.0.to_le_bytes());
            }
            if let Some(doc) = &w.new {
                put_bytes(&mut out, &doc.to_stored());
            }
        }
        out
    }

    /// Only the begin timestamp of an encoding (to wait for it before decoding the rest).
    ///
    /// Errors: `InvalidArgument` for bytes that do not start like an encoding.
    pub fn peek_begin_ts(bytes: &[u8]) -> Result<Timestamp> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4, "magic")? != MAGIC {
            return Err(bad("not a forwarded transaction"));
        }
        Ok(Timestamp(r.u64("begin timestamp")?))
    }

    /// Parse an encoding made by [`ForwardedTransaction::encode`].
    ///
    /// Errors: `InvalidArgument` for malformed bytes (truncated, trailing bytes, a bad id,
    /// an empty interval); `Corrupt` for a stored document that does not decode.
    pub fn decode(bytes: &[u8]) -> Result<ForwardedTransaction> {
        let begin_ts = Self::peek_begin_ts(bytes)?;
        let mut r = Reader { bytes, at: 12 };
        let n = r.count(8, "interval count")?;
        let mut reads = IntervalSet::new();
        for _ in 0..n {
            let start = r.bytes("interval start")?.to_vec();
            let end = r.bytes("interval end")?.to_vec();
            reads.push(Interval::new(start, end).ok_or_else(|| bad("an empty interval"))?);
        }
        reads.normalize();
        let n = r.count(5, "write count")?;
        let mut writes = Vec::with_capacity(n);
        for _ in 0..n {
            let id = DocumentId::from_bytes(r.bytes("document id")?).map_err(bad)?;
            let flags = r.u8("write flags")?;
            if flags & !(HAS_OLD | HAS_NEW) != 0 || flags == 0 {
                return Err(bad("write flags"));
            }
            let old_ts = if flags & HAS_OLD != 0 {
                Some(Timestamp(r.u64("old revision timestamp")?))
            } else {
                None
            };
            let new = if flags & HAS_NEW != 0 {
                Some(Arc::new(Document::from_stored(id, r.bytes("document")?)?))
            } else {
                None
            };
            writes.push(ForwardedWrite { id, old_ts, new });
        }
        if r.at != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(ForwardedTransaction {
            begin_ts,
            reads,
            writes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{InternalId, TableNumber};
    use crate::value::{Object, Value};

    fn doc(n: u8) -> DocumentRef {
        let id = DocumentId {
            table: TableNumber(10001),
            internal: InternalId([n; 16]),
        };
        let mut fields = Object::new();
        fields.insert("n".to_owned(), Value::Float64(f64::from(n)));
        Arc::new(Document::new(id, 1_700_000_000_000.0, fields).unwrap())
    }

    fn sample() -> ForwardedTransaction {
        let mut reads = IntervalSet::new();
        reads.push(Interval::new(b"a".to_vec(), b"c".to_vec()).unwrap());
        reads.push(Interval::point(b"x"));
        reads.normalize();
        let (a, b) = (doc(1), doc(2));
        ForwardedTransaction {
            begin_ts: Timestamp(42),
            reads,
            writes: vec![
                ForwardedWrite {
                    id: a.id,
                    old_ts: None,
                    new: Some(a),
                },
                ForwardedWrite {
                    id: b.id,
                    old_ts: Some(Timestamp(7)),
                    new: None,
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let bytes = t.encode();
        assert_eq!(
            ForwardedTransaction::peek_begin_ts(&bytes).unwrap(),
            Timestamp(42)
        );
        let back = ForwardedTransaction::decode(&bytes).unwrap();
        assert_eq!(back.begin_ts, t.begin_ts);
        assert_eq!(back.reads, t.reads);
        assert_eq!(back.writes.len(), 2);
        assert_eq!(back.writes[0].id, t.writes[0].id);
        assert_eq!(
            back.writes[0].new.as_ref().unwrap().encoded(),
            t.writes[0].new.as_ref().unwrap().encoded()
        );
        assert_eq!(back.writes[1].old_ts, Some(Timestamp(7)));
        assert!(back.writes[1].new.is_none());
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(
                ForwardedTransaction::decode(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ForwardedTransaction::decode(&longer).is_err());
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ForwardedTransaction::decode(&bytes),
            Err(Error::InvalidArgument(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let mut input = MAGIC.to_vec();
            input.extend_from_slice(&bytes);
            let _ = ForwardedTransaction::decode(&input);
            let _ = ForwardedTransaction::decode(&bytes);
        }
    }
}

//! Transaction-log records: document revisions, index entries and commit records, each with
//! a CRC-32C checksum over a canonical serialization (`docs/design/log-records.md`).
//!
//! Invariants: a record's checksum covers every field of the row it becomes, so a flipped
//! bit anywhere in a row is detected when it is read back; a commit record counts the
//! document revisions and index entries written at its timestamp, so a commit with a missing
//! or extra row (torn) is detected at open.

use crate::catalog::IndexId;
use crate::error::{Error, Result};
use crate::id::{DocumentId, TableNumber};
use crate::interval::hex;
use crate::timestamp::Timestamp;

const DOCUMENT_DOMAIN: u8 = b'D';

/// A timestamp column value; a negative one is a corrupt row.
pub fn row_ts(v: i64, what: &str) -> Result<Timestamp> {
    u64::try_from(v)
        .map(Timestamp)
        .map_err(|_| Error::Corrupt(format!("{what}: negative timestamp {v}")))
}
const INDEX_DOMAIN: u8 = b'I';
const COMMIT_DOMAIN: u8 = b'C';
const NO_PREV_TS: u64 = u64::MAX;

/// One revision of one document: a row of `documents`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentRevision {
    /// The document.
    pub id: DocumentId,
    /// The commit that wrote this revision.
    pub ts: Timestamp,
    /// The value ([`crate::codec`] stored form), or `None` for a deletion.
    pub value: Option<Vec<u8>>,
    /// The timestamp of the previous revision, if any.
    pub prev_ts: Option<Timestamp>,
    /// CRC-32C of the canonical serialization.
    pub checksum: u32,
}

impl DocumentRevision {
    /// A revision with its checksum computed.
    pub fn new(
        id: DocumentId,
        ts: Timestamp,
        value: Option<Vec<u8>>,
        prev_ts: Option<Timestamp>,
    ) -> Self {
        let mut r = DocumentRevision {
            id,
            ts,
            value,
            prev_ts,
            checksum: 0,
        };
        r.checksum = r.compute_checksum();
        r
    }

    /// A revision read back from a `documents` row, checking the row's shape (the id
    /// parses, the table column matches the id, `deleted` matches a missing value); the
    /// checksum is verified by the loader.
    pub fn from_row(
        ts: i64,
        id: &[u8],
        table: i64,
        value: Option<Vec<u8>>,
        deleted: bool,
        prev_ts: Option<i64>,
        checksum: i64,
    ) -> Result<Self> {
        let ts = row_ts(ts, "document revision")?;
        let id = DocumentId::from_bytes(id).map_err(|e| {
            Error::Corrupt(format!(
                "document revision at ts {ts}: bad document id: {e}"
            ))
        })?;
        let what = format!("document revision (id {id}, ts {ts})");
        if table != i64::from(id.table.0) || deleted != value.is_none() {
            return Err(Error::Corrupt(format!(
                "{what}: table or deleted flag disagrees with the row"
            )));
        }
        let prev_ts = prev_ts.map(|p| row_ts(p, &what)).transpose()?;
        let checksum = u32::try_from(checksum)
            .map_err(|_| Error::Corrupt(format!("{what}: checksum out of range")))?;
        Ok(DocumentRevision {
            id,
            ts,
            value,
            prev_ts,
            checksum,
        })
    }

    /// The table of the document.
    pub fn table(&self) -> TableNumber {
        self.id.table
    }

    fn compute_checksum(&self) -> u32 {
        let id = self.id.to_bytes();
        let mut c = crc32c::crc32c(&[DOCUMENT_DOMAIN]);
        c = crc32c::crc32c_append(c, &(id.len() as u32).to_be_bytes());
        c = crc32c::crc32c_append(c, &id);
        c = crc32c::crc32c_append(c, &self.ts.0.to_be_bytes());
        c = crc32c::crc32c_append(c, &self.id.table.0.to_be_bytes());
        c = crc32c::crc32c_append(c, &self.prev_ts.map_or(NO_PREV_TS, |t| t.0).to_be_bytes());
        match &self.value {
            Some(v) => {
                c = crc32c::crc32c_append(c, &[0]);
                c = crc32c::crc32c_append(c, v);
            }
            None => c = crc32c::crc32c_append(c, &[1]),
        }
        c
    }

    /// Check the checksum; the error names the row.
    pub fn verify(&self) -> Result<()> {
        if self.compute_checksum() == self.checksum {
            Ok(())
        } else {
            Err(Error::Corrupt(format!(
                "document revision (id {}, ts {}) fails its checksum",
                self.id, self.ts
            )))
        }
    }
}

/// One index entry: a row of `indexes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The index.
    pub index_id: IndexId,
    /// The index key, without the 4-byte index id prefix of the keyspace.
    pub key: Vec<u8>,
    /// The commit that wrote this entry.
    pub ts: Timestamp,
    /// The document the key points to.
    pub doc_id: DocumentId,
    /// Whether the key was removed at `ts`.
    pub deleted: bool,
    /// CRC-32C of the canonical serialization.
    pub checksum: u32,
}

impl IndexEntry {
    /// An entry with its checksum computed.
    pub fn new(
        index_id: IndexId,
        key: Vec<u8>,
        ts: Timestamp,
        doc_id: DocumentId,
        deleted: bool,
    ) -> Self {
        let mut e = IndexEntry {
            index_id,
            key,
            ts,
            doc_id,
            deleted,
            checksum: 0,
        };
        e.checksum = e.compute_checksum();
        e
    }

    fn compute_checksum(&self) -> u32 {
        let id = self.doc_id.to_bytes();
        let mut c = crc32c::crc32c(&[INDEX_DOMAIN]);
        c = crc32c::crc32c_append(c, &self.index_id.0.to_be_bytes());
        c = crc32c::crc32c_append(c, &(self.key.len() as u32).to_be_bytes());
        c = crc32c::crc32c_append(c, &self.key);
        c = crc32c::crc32c_append(c, &self.ts.0.to_be_bytes());
        c = crc32c::crc32c_append(c, &(id.len() as u32).to_be_bytes());
        c = crc32c::crc32c_append(c, &id);
        crc32c::crc32c_append(c, &[u8::from(self.deleted)])
    }

    /// An entry read back from an `indexes` row (the checksum is verified by the loader).
    pub fn from_row(
        index_id: i64,
        key: Vec<u8>,
        ts: i64,
        doc_id: &[u8],
        deleted: bool,
        checksum: i64,
    ) -> Result<Self> {
        let ts = row_ts(ts, "index entry")?;
        let what = format!("index entry at ts {ts}");
        let doc_id = DocumentId::from_bytes(doc_id)
            .map_err(|e| Error::Corrupt(format!("{what}: bad document id: {e}")))?;
        let index_id = u32::try_from(index_id)
            .map_err(|_| Error::Corrupt(format!("{what}: index id out of range")))?;
        let checksum = u32::try_from(checksum)
            .map_err(|_| Error::Corrupt(format!("{what}: checksum out of range")))?;
        Ok(IndexEntry {
            index_id: IndexId(index_id),
            key,
            ts,
            doc_id,
            deleted,
            checksum,
        })
    }

    /// The keyspace key (index id prefix + key).
    pub fn keyspace_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.key.len() + 4);
        k.extend_from_slice(&self.index_id.prefix());
        k.extend_from_slice(&self.key);
        k
    }

    /// Check the checksum; the error names the row.
    pub fn verify(&self) -> Result<()> {
        if self.compute_checksum() == self.checksum {
            Ok(())
        } else {
            Err(Error::Corrupt(format!(
                "index entry (index {}, key {}, ts {}) fails its checksum",
                self.index_id,
                hex(&self.key),
                self.ts
            )))
        }
    }
}

/// The header of one commit: a row of `commits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitRecord {
    /// The commit timestamp.
    pub ts: Timestamp,
    /// How many document revisions the commit wrote.
    pub document_count: u32,
    /// How many index entries the commit wrote.
    pub index_entry_count: u32,
    /// CRC-32C of the canonical serialization.
    pub checksum: u32,
}

impl CommitRecord {
    /// A commit record with its checksum computed.
    pub fn new(ts: Timestamp, document_count: u32, index_entry_count: u32) -> Self {
        let mut r = CommitRecord {
            ts,
            document_count,
            index_entry_count,
            checksum: 0,
        };
        r.checksum = r.compute_checksum();
        r
    }

    fn compute_checksum(&self) -> u32 {
        let mut c = crc32c::crc32c(&[COMMIT_DOMAIN]);
        c = crc32c::crc32c_append(c, &self.ts.0.to_be_bytes());
        c = crc32c::crc32c_append(c, &self.document_count.to_be_bytes());
        crc32c::crc32c_append(c, &self.index_entry_count.to_be_bytes())
    }

    /// A commit record read back from a `commits` row (the checksum is verified by the
    /// loader).
    pub fn from_row(
        ts: i64,
        document_count: i64,
        index_entry_count: i64,
        checksum: i64,
    ) -> Result<Self> {
        let ts = row_ts(ts, "commit record")?;
        let field = |v: i64, name: &str| {
            u32::try_from(v).map_err(|_| {
                Error::Corrupt(format!("commit record (ts {ts}): {name} out of range"))
            })
        };
        Ok(CommitRecord {
            ts,
            document_count: field(document_count, "document_count")?,
            index_entry_count: field(index_entry_count, "index_entry_count")?,
            checksum: field(checksum, "checksum")?,
        })
    }

    /// Check the checksum; the error names the commit.
    pub fn verify(&self) -> Result<()> {
        if self.compute_checksum() == self.checksum {
            Ok(())
        } else {
            Err(Error::Corrupt(format!(
                "commit record (ts {}) fails its checksum",
                self.ts
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::InternalId;

    #[test]
    fn checksums_catch_any_changed_field() {
        let id = DocumentId {
            table: TableNumber(10001),
            internal: InternalId([1; 16]),
        };
        let r = DocumentRevision::new(id, Timestamp(5), Some(vec![0, 3]), None);
        r.verify().unwrap();
        let mut bad = r.clone();
        bad.value = Some(vec![0, 4]);
        assert!(bad.verify().unwrap_err().to_string().contains("ts 5"));
        let mut bad = r.clone();
        bad.prev_ts = Some(Timestamp(1));
        assert!(bad.verify().is_err());

        let e = IndexEntry::new(IndexId(3), vec![0x10, 0x61, 0], Timestamp(5), id, false);
        e.verify().unwrap();
        let mut bad = e.clone();
        bad.deleted = true;
        assert!(bad.verify().is_err());

        let c = CommitRecord::new(Timestamp(5), 1, 3);
        c.verify().unwrap();
        let mut bad = c;
        bad.index_entry_count = 2;
        assert!(bad.verify().is_err());
    }
}

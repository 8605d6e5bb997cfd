//! Transaction-log records (`log::record`): rows read back from the database.
//!
//! - Raw rows (arbitrary column values): `from_row` and `verify` return `Ok`/`Err`, never
//!   panic, and their messages format.
//! - Rows written from a record (`new`, then the columns as `sqlite.rs` writes them): read
//!   back with `from_row` they give the same record, whose checksum verifies.
//! - The same row with any one bit flipped in any column: `from_row` or `verify` refuses it
//!   (`docs/design/log-records.md`: the checksum covers every field of the row).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use reactive_core::catalog::IndexId;
use reactive_core::id::{DocumentId, InternalId, TableNumber};
use reactive_core::log::record::{CommitRecord, DocumentRevision, IndexEntry};
use reactive_core::timestamp::Timestamp;

#[derive(Arbitrary, Debug)]
enum IdBytes {
    /// Any bytes.
    Raw(Vec<u8>),
    /// The bytes of a well-formed id (then maybe with one bit flipped).
    Valid {
        table: u32,
        internal: [u8; 16],
        flip: Option<u16>,
    },
}

impl IdBytes {
    fn bytes(&self) -> Vec<u8> {
        match self {
            IdBytes::Raw(b) => b.clone(),
            IdBytes::Valid {
                table,
                internal,
                flip,
            } => {
                let mut b = make_id(*table, *internal).to_bytes();
                if let Some(f) = flip {
                    let bit = usize::from(*f) % (b.len() * 8);
                    b[bit / 8] ^= 1 << (bit % 8);
                }
                b
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Input {
    RawDocument {
        ts: i64,
        id: IdBytes,
        /// `None`: the table the id names (so the row gets past the shape check).
        table: Option<i64>,
        value: Option<Vec<u8>>,
        deleted: bool,
        prev_ts: Option<i64>,
        checksum: i64,
    },
    RawIndex {
        index_id: i64,
        key: Vec<u8>,
        ts: i64,
        doc_id: IdBytes,
        deleted: bool,
        checksum: i64,
    },
    RawCommit {
        ts: i64,
        document_count: i64,
        index_entry_count: i64,
        checksum: i64,
    },
    Document {
        table: u32,
        internal: [u8; 16],
        ts: u64,
        value: Option<Vec<u8>>,
        prev_ts: Option<u64>,
        flip: u32,
    },
    Index {
        index_id: u32,
        key: Vec<u8>,
        ts: u64,
        table: u32,
        internal: [u8; 16],
        deleted: bool,
        flip: u32,
    },
    Commit {
        ts: u64,
        document_count: u32,
        index_entry_count: u32,
        flip: u32,
    },
}

fn make_id(table: u32, internal: [u8; 16]) -> DocumentId {
    DocumentId {
        table: TableNumber(table.max(1)),
        internal: InternalId(internal),
    }
}

/// A timestamp a row can hold (`i64` column, never negative).
fn ts_of(t: u64) -> Timestamp {
    Timestamp(t & (i64::MAX as u64))
}

/// One column of a row as bytes, and how many of its bits the database stores (a boolean
/// column stores one).
type Column<'a> = (&'a mut [u8], usize);

/// Flip bit `bit` (modulo the row's stored bits) of the row's columns taken in order;
/// returns the bit's index in the row.
fn flip_bit(columns: &mut [Column<'_>], bit: u32) -> usize {
    let total: usize = columns.iter().map(|c| c.1).sum();
    let at = bit as usize % total;
    let mut rest = at;
    for (bytes, bits) in columns.iter_mut() {
        if rest < *bits {
            bytes[rest / 8] ^= 1 << (rest % 8);
            return at;
        }
        rest -= *bits;
    }
    unreachable!("bit index past the row")
}

fn i64_col(b: &[u8]) -> i64 {
    i64::from_be_bytes(b.try_into().expect("8 bytes"))
}

fn check_document(
    table: u32,
    internal: [u8; 16],
    ts: u64,
    value: Option<Vec<u8>>,
    prev_ts: Option<u64>,
    flip: u32,
) {
    let id = make_id(table, internal);
    let rec = DocumentRevision::new(id, ts_of(ts), value, prev_ts.map(ts_of));
    rec.verify().expect("a fresh revision fails its checksum");

    // The columns as sqlite.rs writes them (NULL columns are absent).
    let has_value = rec.value.is_some();
    let has_prev = rec.prev_ts.is_some();
    let mut ts_col = (rec.ts.0 as i64).to_be_bytes();
    let mut id_col = rec.id.to_bytes();
    let mut table_col = i64::from(rec.id.table.0).to_be_bytes();
    let mut value_col = rec.value.clone().unwrap_or_default();
    let mut deleted_col = [u8::from(!has_value)];
    let mut prev_col = (rec.prev_ts.map_or(0, |t| t.0) as i64).to_be_bytes();
    let mut checksum_col = i64::from(rec.checksum).to_be_bytes();

    let read = |ts: &[u8],
                id: &[u8],
                table: &[u8],
                value: &[u8],
                deleted: &[u8],
                prev: &[u8],
                checksum: &[u8]| {
        DocumentRevision::from_row(
            i64_col(ts),
            id,
            i64_col(table),
            has_value.then(|| value.to_vec()),
            deleted[0] != 0,
            has_prev.then(|| i64_col(prev)),
            i64_col(checksum),
        )
    };
    let back = read(
        &ts_col,
        &id_col,
        &table_col,
        &value_col,
        &deleted_col,
        &prev_col,
        &checksum_col,
    )
    .expect("from_row refuses a row written from a revision");
    assert_eq!(back, rec, "revision changed on its way through a row");
    back.verify().expect("row read back fails its checksum");

    let (id_bits, value_bits) = (id_col.len() * 8, value_col.len() * 8);
    let bit = flip_bit(
        &mut [
            (&mut ts_col, 64),
            (&mut id_col, id_bits),
            (&mut table_col, 64),
            (&mut value_col, value_bits),
            (&mut deleted_col, 1),
            (&mut prev_col, if has_prev { 64 } else { 0 }),
            (&mut checksum_col, 64),
        ],
        flip,
    );
    let result = read(
        &ts_col,
        &id_col,
        &table_col,
        &value_col,
        &deleted_col,
        &prev_col,
        &checksum_col,
    )
    .and_then(|r| r.verify().map(|()| r));
    assert!(
        result.is_err(),
        "revision row with bit {bit} flipped passes: {result:?} (original {rec:?})"
    );
}

fn check_index(
    index_id: u32,
    key: Vec<u8>,
    ts: u64,
    table: u32,
    internal: [u8; 16],
    deleted: bool,
    flip: u32,
) {
    let e = IndexEntry::new(
        IndexId(index_id),
        key,
        ts_of(ts),
        make_id(table, internal),
        deleted,
    );
    e.verify().expect("a fresh index entry fails its checksum");
    let mut index_col = i64::from(e.index_id.0).to_be_bytes();
    let mut key_col = e.key.clone();
    let mut ts_col = (e.ts.0 as i64).to_be_bytes();
    let mut id_col = e.doc_id.to_bytes();
    let mut deleted_col = [u8::from(e.deleted)];
    let mut checksum_col = i64::from(e.checksum).to_be_bytes();
    let read = |index: &[u8], key: &[u8], ts: &[u8], id: &[u8], deleted: &[u8], checksum: &[u8]| {
        IndexEntry::from_row(
            i64_col(index),
            key.to_vec(),
            i64_col(ts),
            id,
            deleted[0] != 0,
            i64_col(checksum),
        )
    };
    let back = read(
        &index_col,
        &key_col,
        &ts_col,
        &id_col,
        &deleted_col,
        &checksum_col,
    )
    .expect("from_row refuses a row written from an index entry");
    assert_eq!(back, e, "index entry changed on its way through a row");
    back.verify().expect("row read back fails its checksum");
    assert_eq!(&back.keyspace_key()[4..], &e.key[..]);

    let (key_bits, id_bits) = (key_col.len() * 8, id_col.len() * 8);
    let bit = flip_bit(
        &mut [
            (&mut index_col, 64),
            (&mut key_col, key_bits),
            (&mut ts_col, 64),
            (&mut id_col, id_bits),
            (&mut deleted_col, 1),
            (&mut checksum_col, 64),
        ],
        flip,
    );
    let result = read(
        &index_col,
        &key_col,
        &ts_col,
        &id_col,
        &deleted_col,
        &checksum_col,
    )
    .and_then(|r| r.verify().map(|()| r));
    assert!(
        result.is_err(),
        "index row with bit {bit} flipped passes: {result:?} (original {e:?})"
    );
}

fn check_commit(ts: u64, document_count: u32, index_entry_count: u32, flip: u32) {
    let c = CommitRecord::new(ts_of(ts), document_count, index_entry_count);
    c.verify()
        .expect("a fresh commit record fails its checksum");
    let mut cols = [
        (c.ts.0 as i64).to_be_bytes(),
        i64::from(c.document_count).to_be_bytes(),
        i64::from(c.index_entry_count).to_be_bytes(),
        i64::from(c.checksum).to_be_bytes(),
    ];
    let read = |cols: &[[u8; 8]; 4]| {
        let i = |k: usize| i64::from_be_bytes(cols[k]);
        CommitRecord::from_row(i(0), i(1), i(2), i(3))
    };
    let back = read(&cols).expect("from_row refuses a row written from a commit record");
    assert_eq!(back, c);
    back.verify().expect("row read back fails its checksum");
    let bit = flip as usize % 256;
    cols[bit / 64][bit % 64 / 8] ^= 1 << (bit % 8);
    let result = read(&cols).and_then(|r| r.verify().map(|()| r));
    assert!(
        result.is_err(),
        "commit row with bit {bit} flipped passes: {result:?}"
    );
}

fuzz_target!(|input: Input| {
    match input {
        Input::RawDocument {
            ts,
            id,
            table,
            value,
            deleted,
            prev_ts,
            checksum,
        } => {
            let id = id.bytes();
            let table = table
                .unwrap_or_else(|| DocumentId::from_bytes(&id).map_or(0, |d| i64::from(d.table.0)));
            match DocumentRevision::from_row(ts, &id, table, value, deleted, prev_ts, checksum) {
                Ok(r) => {
                    if r.verify().is_ok() {
                        // A row that verifies is the row `new` would write.
                        let again = DocumentRevision::new(r.id, r.ts, r.value.clone(), r.prev_ts);
                        assert_eq!(again, r);
                    } else {
                        let _ = r.verify().unwrap_err().to_string();
                    }
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        Input::RawIndex {
            index_id,
            key,
            ts,
            doc_id,
            deleted,
            checksum,
        } => {
            let doc_id = doc_id.bytes();
            match IndexEntry::from_row(index_id, key, ts, &doc_id, deleted, checksum) {
                Ok(e) => match e.verify() {
                    Ok(()) => {
                        let again =
                            IndexEntry::new(e.index_id, e.key.clone(), e.ts, e.doc_id, e.deleted);
                        assert_eq!(again, e);
                    }
                    Err(err) => {
                        let _ = err.to_string();
                    }
                },
                Err(err) => {
                    let _ = err.to_string();
                }
            }
        }
        Input::RawCommit {
            ts,
            document_count,
            index_entry_count,
            checksum,
        } => match CommitRecord::from_row(ts, document_count, index_entry_count, checksum) {
            Ok(c) => match c.verify() {
                Ok(()) => assert_eq!(
                    CommitRecord::new(c.ts, c.document_count, c.index_entry_count),
                    c
                ),
                Err(err) => {
                    let _ = err.to_string();
                }
            },
            Err(err) => {
                let _ = err.to_string();
            }
        },
        Input::Document {
            table,
            internal,
            ts,
            value,
            prev_ts,
            flip,
        } => {
            check_document(table, internal, ts, value, prev_ts, flip);
        }
        Input::Index {
            index_id,
            key,
            ts,
            table,
            internal,
            deleted,
            flip,
        } => {
            check_index(index_id, key, ts, table, internal, deleted, flip);
        }
        Input::Commit {
            ts,
            document_count,
            index_entry_count,
            flip,
        } => {
            check_commit(ts, document_count, index_entry_count, flip);
        }
    }
});

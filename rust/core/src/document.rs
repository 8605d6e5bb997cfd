//! Documents: an object with the system fields `_id` and `_creationTime`, and its index keys.
//!
//! A document is held as one contiguous buffer: the plain [`crate::codec`] encoding of the
//! whole object, system fields included. Reading it (to Python, into index keys, for
//! filters) walks that buffer instead of chasing a tree of allocations, and it takes about a
//! third of the memory of a decoded object.
//!
//! Invariants: the encoded object always holds `_id` (the id's text) and `_creationTime`
//! (float ms), and no other top-level field starting with `_`; it satisfies the value
//! limits and is at most [`limits::MAX_DOCUMENT_SIZE_BYTES`] as [`Value::size`] counts.
//! Stored form: [`crate::codec`] stored encoding of the object without `_id` (the id is its
//! own column).

use std::sync::Arc;

use crate::catalog::IndexDescriptor;
use crate::codec;
use crate::error::{Error, Limit, Result};
use crate::id::{DocumentId, TableNumber};
use crate::keys;
use crate::limits;
use crate::value::{FieldPath, Object, Value, check_object, object_size};

/// Name of the id system field.
pub const ID_FIELD: &str = "_id";
/// Name of the creation-time system field.
pub const CREATION_TIME_FIELD: &str = "_creationTime";

/// One revision of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The document's id.
    pub id: DocumentId,
    /// The plain encoding of the whole object (`_id` and `_creationTime` included).
    encoded: Box<[u8]>,
    /// `_creationTime`, ms.
    creation_time: f64,
    /// Size as [`Value::size`] counts it (system fields included).
    pub size: usize,
}

/// A shared document revision: the MVCC store and transactions hold these.
pub type DocumentRef = Arc<Document>;

fn corrupt(id: DocumentId, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("document {id}: {e}"))
}

impl Document {
    /// Build a document from user fields, checking the rules of documents.
    ///
    /// `user_fields` must not contain `_`-prefixed names (the system fields are added here).
    pub fn new(id: DocumentId, creation_time: f64, user_fields: Object) -> Result<Document> {
        for name in user_fields.keys() {
            if name.starts_with('_') {
                return Err(Error::InvalidDocument(format!(
                    "field {name:?}: top-level field names starting with '_' are reserved for \
                     system fields"
                )));
            }
        }
        // The user's fields are checked before the system fields join them, so the
        // 1024-fields limit is the user's to use.
        check_object(&user_fields, "document")?;
        let mut fields = user_fields;
        fields.insert(ID_FIELD.to_owned(), Value::String(id.encode()));
        fields.insert(
            CREATION_TIME_FIELD.to_owned(),
            Value::Float64(creation_time),
        );
        let size = object_size(&fields);
        if size > limits::MAX_DOCUMENT_SIZE_BYTES {
            return Err(Error::LimitExceeded {
                limit: Limit::DocumentSize,
                limit_value: limits::MAX_DOCUMENT_SIZE_BYTES,
                message: format!("document {id} is {size} bytes"),
            });
        }
        let encoded = codec::encode_plain(&Value::Object(fields)).into_boxed_slice();
        Ok(Document {
            id,
            encoded,
            creation_time,
            size,
        })
    }

    /// The table the document belongs to.
    pub fn table(&self) -> TableNumber {
        self.id.table
    }

    /// `_creationTime` in ms.
    pub fn creation_time(&self) -> f64 {
        self.creation_time
    }

    /// The plain encoding of the whole object (decode it with [`codec::Decoder`]).
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// All fields, decoded (system fields included).
    pub fn fields(&self) -> Object {
        match codec::decode_plain(&self.encoded) {
            Ok(Value::Object(o)) => o,
            // Built from a checked object or verified at load: always an object.
            _ => Object::new(),
        }
    }

    /// Whether the document has a value at `path` (nothing is decoded).
    pub fn has(&self, path: &FieldPath) -> bool {
        matches!(codec::lookup(&self.encoded, path.parts()), Ok(Some(_)))
    }

    /// The value at `path`, decoded; `None` when missing.
    pub fn get(&self, path: &FieldPath) -> Option<Value> {
        let bytes = codec::lookup(&self.encoded, path.parts()).ok()??;
        codec::decode_plain(bytes).ok()
    }

    /// The keyspace key of this document in `index`: index id, then each key field's value
    /// (`undefined` when missing).
    pub fn index_key(&self, index: &IndexDescriptor) -> Vec<u8> {
        let mut key = Vec::with_capacity(48);
        key.extend_from_slice(&index.id.prefix());
        for field in &index.key_fields {
            match codec::lookup(&self.encoded, field.parts()) {
                Ok(Some(value)) => {
                    if codec::transcode_to_key(value, &mut key).is_err() {
                        keys::encode_optional(None, &mut key);
                    }
                }
                _ => keys::encode_optional(None, &mut key),
            }
        }
        key
    }

    /// The stored encoding: the object without `_id`.
    pub fn to_stored(&self) -> Vec<u8> {
        match codec::object_without(&self.encoded, ID_FIELD) {
            Ok(plain) => codec::store_plain(&plain),
            // The buffer is always a valid object (see the invariants).
            Err(_) => codec::store_plain(&self.encoded),
        }
    }

    /// Rebuild from the stored encoding (verifying its shape).
    pub fn from_stored(id: DocumentId, bytes: &[u8]) -> Result<Document> {
        let Value::Object(mut fields) = codec::decode_stored(bytes)? else {
            return Err(corrupt(id, "stored value is not an object"));
        };
        let Some(Value::Float64(creation_time)) = fields.get(CREATION_TIME_FIELD).cloned() else {
            return Err(corrupt(id, "no _creationTime"));
        };
        fields.insert(ID_FIELD.to_owned(), Value::String(id.encode()));
        let size = object_size(&fields);
        let encoded = codec::encode_plain(&Value::Object(fields)).into_boxed_slice();
        Ok(Document {
            id,
            encoded,
            creation_time,
            size,
        })
    }
}

/// Field lookups for filter expressions.
pub trait FieldSource {
    /// The value at `path`, or `None` (undefined).
    fn field(&self, path: &FieldPath) -> Option<Value>;
}

impl FieldSource for Document {
    fn field(&self, path: &FieldPath) -> Option<Value> {
        self.get(path)
    }
}

impl FieldSource for Object {
    fn field(&self, path: &FieldPath) -> Option<Value> {
        path.lookup(self).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, IndexState};
    use crate::id::InternalId;

    #[test]
    fn system_fields_and_round_trip() {
        let id = DocumentId {
            table: TableNumber(10001),
            internal: InternalId([7; 16]),
        };
        let mut f = Object::new();
        f.insert("body".into(), Value::String("hi".into()));
        let d = Document::new(id, 1234.5, f).unwrap();
        assert_eq!(d.fields().get("_id"), Some(&Value::String(id.encode())));
        assert_eq!(d.creation_time().to_bits(), 1234.5f64.to_bits());
        let back = Document::from_stored(id, &d.to_stored()).unwrap();
        assert_eq!(back, d);

        let mut bad = Object::new();
        bad.insert("_secret".into(), Value::Null);
        assert!(Document::new(id, 1.0, bad).is_err());
        let mut big = Object::new();
        big.insert("b".into(), Value::Bytes(vec![0; 1 << 20]));
        let err = Document::new(id, 1.0, big).unwrap_err();
        assert!(err.to_string().contains("document size"), "{err}");
    }

    #[test]
    fn index_keys_match_the_value_encoding() {
        let mut c = Catalog::new();
        c.add_table("t", 0).unwrap();
        c.add_index(
            "t",
            "by_ab",
            vec!["a.b".into(), "s".into()],
            IndexState::Backfilling,
        )
        .unwrap();
        let t = c.table("t").unwrap().clone();
        let index = c.index_by_name(&t, "by_ab").unwrap().clone();
        let id = DocumentId {
            table: TableNumber(10001),
            internal: InternalId([3; 16]),
        };
        let mut inner = Object::new();
        inner.insert(
            "b".into(),
            Value::Array(vec![Value::Int64(-5), Value::Null]),
        );
        let mut f = Object::new();
        f.insert("a".into(), Value::Object(inner));
        f.insert("s".into(), Value::String("x\0y".into()));
        let d = Document::new(id, 7.5, f.clone()).unwrap();
        let mut expected = index.id.prefix().to_vec();
        let mut all = f;
        all.insert(ID_FIELD.into(), Value::String(id.encode()));
        all.insert(CREATION_TIME_FIELD.into(), Value::Float64(7.5));
        for field in &index.key_fields {
            keys::encode_optional(field.lookup(&all), &mut expected);
        }
        assert_eq!(d.index_key(&index), expected);
        let path = FieldPath::parse("a.missing").unwrap();
        assert_eq!(d.get(&path), None);
    }
}

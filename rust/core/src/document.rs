//! Documents: an object with the system fields `_id` and `_creationTime`, and its index keys.
//!
//! Invariants: a [`Document`]'s `fields` always hold `_id` (the id's text) and
//! `_creationTime` (float ms), and no other field starting with `_` at the top level; it
//! satisfies the value limits and is at most [`limits::MAX_DOCUMENT_SIZE_BYTES`]. Stored
//! form: [`crate::codec`] of the object without `_id` (the id is its own column).

use std::sync::Arc;

use crate::catalog::IndexDescriptor;
use crate::codec;
use crate::error::{Error, Limit, Result};
use crate::id::{DocumentId, TableNumber};
use crate::keys;
use crate::limits;
use crate::value::{Object, Value, check_object, object_size};

/// Name of the id system field.
pub const ID_FIELD: &str = "_id";
/// Name of the creation-time system field.
pub const CREATION_TIME_FIELD: &str = "_creationTime";

/// One revision of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The document's id.
    pub id: DocumentId,
    /// All fields, `_id` and `_creationTime` included.
    pub fields: Object,
    /// Size as [`Value::size`] counts it (system fields included).
    pub size: usize,
}

/// A shared document revision: the MVCC store and transactions hold these.
pub type DocumentRef = Arc<Document>;

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
        Ok(Document { id, fields, size })
    }

    /// The table the document belongs to.
    pub fn table(&self) -> TableNumber {
        self.id.table
    }

    /// `_creationTime` in ms.
    pub fn creation_time(&self) -> f64 {
        match self.fields.get(CREATION_TIME_FIELD) {
            Some(Value::Float64(t)) => *t,
            _ => 0.0,
        }
    }

    /// The fields without the system fields.
    pub fn user_fields(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.fields.iter().filter(|(k, _)| !k.starts_with('_'))
    }

    /// The keyspace key of this document in `index`: index id, then each key field's value
    /// (`undefined` when missing).
    pub fn index_key(&self, index: &IndexDescriptor) -> Vec<u8> {
        let mut key = Vec::with_capacity(48);
        key.extend_from_slice(&index.id.prefix());
        for field in &index.key_fields {
            keys::encode_optional(field.lookup(&self.fields), &mut key);
        }
        key
    }

    /// The stored encoding: the object without `_id`.
    pub fn to_stored(&self) -> Vec<u8> {
        let mut without_id = self.fields.clone();
        without_id.remove(ID_FIELD);
        codec::encode_stored(&Value::Object(without_id))
    }

    /// Rebuild from the stored encoding.
    pub fn from_stored(id: DocumentId, bytes: &[u8]) -> Result<Document> {
        let Value::Object(mut fields) = codec::decode_stored(bytes)? else {
            return Err(Error::Corrupt(format!(
                "document {id}: stored value is not an object"
            )));
        };
        if !matches!(fields.get(CREATION_TIME_FIELD), Some(Value::Float64(_))) {
            return Err(Error::Corrupt(format!("document {id}: no _creationTime")));
        }
        fields.insert(ID_FIELD.to_owned(), Value::String(id.encode()));
        let size = object_size(&fields);
        Ok(Document { id, fields, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(d.fields.get("_id"), Some(&Value::String(id.encode())));
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
}

//! Limits on values, documents and transactions, with Convex's defaults.
//!
//! Sources: the Convex sync protocol's value rules and Convex's "Limits" documentation
//! page (values, documents, per-transaction reads and writes).
//! Every error that enforces one of these names the limit in its message.

/// Maximum nesting of arrays and objects in a value (Convex's: nesting 64 deep).
pub const MAX_VALUE_DEPTH: usize = 64;
/// Maximum elements in one array.
pub const MAX_ARRAY_LEN: usize = 8192;
/// Maximum fields in one object.
pub const MAX_OBJECT_FIELDS: usize = 1024;
/// Maximum length of a field name, in bytes (field names are ASCII).
pub const MAX_FIELD_NAME_LEN: usize = 1024;
/// Maximum size of a stored document, system fields included, as [`crate::value::Value::size`]
/// counts it.
pub const MAX_DOCUMENT_SIZE_BYTES: usize = 1 << 20;
/// Maximum length of an identifier (table, index and function names).
pub const MAX_IDENTIFIER_LEN: usize = 64;

/// Per-transaction limits. Convex's defaults; all knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionLimits {
    /// Documents scanned (returned or filtered out), over all reads.
    pub max_documents_read: usize,
    /// Bytes of documents scanned.
    pub max_bytes_read: usize,
    /// Index ranges read: each `get` and each query counts one.
    pub max_read_intervals: usize,
    /// Documents inserted, replaced, patched or deleted.
    pub max_documents_written: usize,
    /// Bytes of documents written.
    pub max_bytes_written: usize,
}

impl Default for TransactionLimits {
    fn default() -> Self {
        TransactionLimits {
            max_documents_read: 32_000,
            max_bytes_read: 16 << 20,
            max_read_intervals: 4096,
            max_documents_written: 16_000,
            max_bytes_written: 16 << 20,
        }
    }
}

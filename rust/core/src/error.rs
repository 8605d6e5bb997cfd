//! The crate's error type: one enum, with the per-layer errors folded in by `From`.
//!
//! Invariants: every variant carries enough to write a message that names what went wrong
//! (table, field, limit, document, timestamp); the bindings map each variant to one class of
//! `reactive.errors` with an exhaustive match, so adding a variant is a compile error there.

use crate::codec::CodecError;
use crate::id::IdError;
use crate::keys::KeyDecodeError;
use crate::timestamp::Timestamp;
use crate::value::ValueError;

/// A schema or catalog problem (bad names, bad index definitions).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SchemaError {
    /// What is wrong.
    pub message: String,
}

impl SchemaError {
    /// A schema error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        SchemaError {
            message: message.into(),
        }
    }
}

/// A transaction's read set overlaps a write committed after it began.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "write conflict: table {table:?} was written at timestamp {ts} (key {key_hex}) after this \
     transaction read it; the transaction can be retried"
)]
pub struct Conflict {
    /// The table whose index key was written.
    pub table: String,
    /// The conflicting keyspace key, hex.
    pub key_hex: String,
    /// The commit timestamp of the conflicting write.
    pub ts: Timestamp,
}

/// Which per-transaction limit was crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// Documents scanned.
    DocumentsRead,
    /// Bytes scanned.
    BytesRead,
    /// Index ranges read (gets and queries).
    ReadIntervals,
    /// Documents written.
    DocumentsWritten,
    /// Bytes written.
    BytesWritten,
    /// Size of one document.
    DocumentSize,
}

impl Limit {
    /// The limit's name as it appears in messages.
    pub fn name(self) -> &'static str {
        match self {
            Limit::DocumentsRead => "documents read per transaction",
            Limit::BytesRead => "bytes read per transaction",
            Limit::ReadIntervals => "index ranges read per transaction",
            Limit::DocumentsWritten => "documents written per transaction",
            Limit::BytesWritten => "bytes written per transaction",
            Limit::DocumentSize => "document size",
        }
    }
}

/// Every error of the engine.
///
/// Deliberately not `#[non_exhaustive]`: the bindings match it exhaustively so that a new
/// variant cannot reach Python without a class chosen for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A value breaks the value model or a value limit.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// Text that is not a valid id.
    #[error(transparent)]
    Id(#[from] IdError),
    /// Bytes that are not a valid index key.
    #[error(transparent)]
    KeyDecode(#[from] KeyDecodeError),
    /// A stored value that does not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A bad schema or catalog change.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// A document that breaks a rule of documents (system fields, shape).
    #[error("{0}")]
    InvalidDocument(String),
    /// An argument that is not usable (bad range expression, bad filter, bad cursor...).
    #[error("{0}")]
    InvalidArgument(String),
    /// No such table.
    #[error("table {0:?} does not exist")]
    TableNotFound(String),
    /// No such index.
    #[error("index {table}.{index} does not exist")]
    IndexNotFound {
        /// Table name.
        table: String,
        /// Index name.
        index: String,
    },
    /// The index is being backfilled and cannot serve this snapshot yet.
    #[error("index {table}.{index} is still being backfilled; retry when it is ready")]
    IndexNotReady {
        /// Table name.
        table: String,
        /// Index name.
        index: String,
    },
    /// No document with this id (for patch, replace, delete).
    #[error("document {0} does not exist")]
    DocumentNotFound(String),
    /// A per-transaction or per-document limit was crossed.
    #[error("{message} (limit: {} {limit_value})", limit.name())]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// Its value.
        limit_value: usize,
        /// What happened.
        message: String,
    },
    /// A write in a read-only transaction.
    #[error("this transaction is read-only: queries cannot write ({0})")]
    ReadOnly(&'static str),
    /// The transaction was already committed or abandoned.
    #[error("this transaction has already finished")]
    TransactionFinished,
    /// OCC validation failed.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The transaction began before the write log's window.
    #[error(
        "transaction began at timestamp {begin_ts}, before the oldest timestamp the write log \
         still holds ({oldest}); retry it"
    )]
    TransactionTooOld {
        /// The transaction's begin timestamp.
        begin_ts: Timestamp,
        /// The oldest timestamp conflicts can still be checked against.
        oldest: Timestamp,
    },
    /// Persisted data that fails verification (checksum, torn commit, bad format).
    #[error("corrupt database: {0}")]
    Corrupt(String),
    /// A write on an engine that follows another process's log ([`crate::engine::Engine::
    /// set_following`]): the process holding the writer lease makes every write.
    #[error(
        "this process follows the database's log as a read replica: {0} runs on the process \
         holding the writer lease"
    )]
    NotWriter(&'static str),
    /// A follower's log slice does not continue what it applied (a missed commit, or
    /// history pruned past its position): it must reload.
    #[error("log gap: {0}; reload the state from the database")]
    LogGap(String),
    /// The backend failed (I/O, SQL error).
    #[error("persistence error: {0}")]
    Persistence(String),
    /// The database's format is newer than this code understands, or another process
    /// holds it.
    #[error("{0}")]
    Incompatible(String),
    /// The engine was shut down.
    #[error("the database is closed")]
    Closed,
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Persistence(format!("sqlite: {e}"))
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

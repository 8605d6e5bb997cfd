//! One mapping from `reactive_core::Error` to the exceptions of `reactive.errors`.
//!
//! The match is exhaustive (no `_ =>` arm over known variants): a new core error variant
//! must be given its Python class here.

use pyo3::PyErr;
use reactive_core::error::Error;

pyo3::import_exception!(reactive.errors, InvalidValueError);
pyo3::import_exception!(reactive.errors, InvalidIdError);
pyo3::import_exception!(reactive.errors, InvalidQueryError);
pyo3::import_exception!(reactive.errors, SchemaError);
pyo3::import_exception!(reactive.errors, SchemaValidationError);
pyo3::import_exception!(reactive.errors, TableNotFoundError);
pyo3::import_exception!(reactive.errors, IndexNotFoundError);
pyo3::import_exception!(reactive.errors, IndexNotReadyError);
pyo3::import_exception!(reactive.errors, DocumentNotFoundError);
pyo3::import_exception!(reactive.errors, LimitExceededError);
pyo3::import_exception!(reactive.errors, ReadOnlyError);
pyo3::import_exception!(reactive.errors, WriteConflict);
pyo3::import_exception!(reactive.errors, TransactionTooOldError);
pyo3::import_exception!(reactive.errors, CorruptionError);
pyo3::import_exception!(reactive.errors, LogGapError);
pyo3::import_exception!(reactive.errors, PersistenceError);
pyo3::import_exception!(reactive.errors, IncompatibleDatabaseError);
pyo3::import_exception!(reactive.errors, DatabaseClosedError);
pyo3::import_exception!(reactive.errors, ReactiveError);

/// Wraps a core error so `?` converts it (the orphan rule forbids `From<Error> for PyErr`).
pub struct CoreError(pub Error);

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        CoreError(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(CoreError(e): CoreError) -> PyErr {
        let message = e.to_string();
        match e {
            Error::Value(_) | Error::Codec(_) => InvalidValueError::new_err(message),
            Error::InvalidDocument(_) => SchemaValidationError::new_err(message),
            Error::Id(_) => InvalidIdError::new_err(message),
            Error::KeyDecode(_) | Error::InvalidArgument(_) => InvalidQueryError::new_err(message),
            Error::Schema(_) => SchemaError::new_err(message),
            Error::TableNotFound(_) => TableNotFoundError::new_err(message),
            Error::IndexNotFound { .. } => IndexNotFoundError::new_err(message),
            Error::IndexNotReady { .. } => IndexNotReadyError::new_err(message),
            Error::DocumentNotFound(_) => DocumentNotFoundError::new_err(message),
            Error::LimitExceeded { .. } => LimitExceededError::new_err(message),
            Error::ReadOnly(_) | Error::NotWriter(_) => ReadOnlyError::new_err(message),
            Error::TransactionFinished => ReactiveError::new_err(message),
            Error::Conflict(c) => WriteConflict::new_err((message, c.table, c.key_hex, c.ts.0)),
            Error::TransactionTooOld { .. } => TransactionTooOldError::new_err(message),
            Error::Corrupt(_) => CorruptionError::new_err(message),
            Error::LogGap(_) => LogGapError::new_err(message),
            Error::Persistence(_) => PersistenceError::new_err(message),
            Error::Incompatible(_) => IncompatibleDatabaseError::new_err(message),
            Error::Closed => DatabaseClosedError::new_err(message),
        }
    }
}

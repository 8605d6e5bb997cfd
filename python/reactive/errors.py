"""Errors raised by ``reactive``.

Every error is a :class:`ReactiveError`. The tree::

    ReactiveError
    ├── ConvexError                 raised by functions to fail with data the caller receives
    ├── ValidationError             a value or argument is not acceptable (also a ValueError)
    │   ├── InvalidValueError         not a Convex value, or over a value limit (depth, size...)
    │   ├── SchemaValidationError     a document does not match its table's validator
    │   ├── ArgumentValidationError   function arguments or return value fail the validator
    │   ├── InvalidIdError            text that is not an id (of the expected table)
    │   └── InvalidQueryError         a bad index range, filter, order or cursor
    │       └── InvalidCursorError      a pagination cursor that is forged or of another query
    ├── LimitExceededError          a per-document or per-transaction limit was crossed
    │   ├── FunctionTimeoutError      a function ran past its time limit (and was stopped)
    │   └── TooManyRequestsError      a per-socket or per-server request limit was reached
    ├── NotFoundError
    │   ├── DocumentNotFoundError     patch/replace/delete of a missing document
    │   ├── TableNotFoundError
    │   ├── IndexNotFoundError
    │   └── FunctionNotFoundError     no public function at that path
    ├── IndexNotReadyError          the index is still being backfilled (retryable)
    ├── ReadOnlyError               a write inside a query
    ├── RetryableError              the transaction can simply be run again
    │   ├── WriteConflict             OCC: a later commit wrote what it read (table, key, ts)
    │   └── TransactionTooOldError    it began before the write log's window
    ├── SchemaError                 a bad schema, or stored documents that violate a new one
    ├── PersistenceError            the storage backend failed (cause chained)
    │   ├── CommitOutcomeUnknownError contact lost mid-commit and never resolved: reopen
    │   ├── CorruptionError           a record failed verification at open (named)
    │   ├── IncompatibleDatabaseError newer on-disk format, or open in another process
    │   └── LogGapError               a log reader's position was pruned away: reload
    ├── FunctionError               a function failed with an ordinary exception
    ├── AuthError                   a server refused the client's token (``reactive.client``)
    └── DatabaseClosedError         the database was closed

Source: the Rust core maps each ``reactive_core::Error`` variant to one of these
(``rust/bindings/src/errors.rs``); ``ConvexError`` is Convex's application error.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArgumentValidationError",
    "AuthError",
    "CommitOutcomeUnknownError",
    "ConvexError",
    "CorruptionError",
    "DatabaseClosedError",
    "DocumentNotFoundError",
    "FunctionError",
    "FunctionNotFoundError",
    "FunctionTimeoutError",
    "IncompatibleDatabaseError",
    "IndexNotFoundError",
    "IndexNotReadyError",
    "InvalidCursorError",
    "InvalidIdError",
    "InvalidQueryError",
    "InvalidValueError",
    "LimitExceededError",
    "LogGapError",
    "NotFoundError",
    "PersistenceError",
    "ReactiveError",
    "ReadOnlyError",
    "RetryableError",
    "SchemaError",
    "SchemaValidationError",
    "TableNotFoundError",
    "TooManyRequestsError",
    "TransactionTooOldError",
    "ValidationError",
    "WriteConflict",
]


class ReactiveError(Exception):
    """Base class of every error raised by ``reactive``."""


class ConvexError(ReactiveError):
    """Fail a function with application data that reaches the caller, as Convex's ``ConvexError``.

    Args:
        data: Any Convex value (``None``, ``int``, ``float``, ``bool``, ``str``, ``bytes``,
            ``list``, ``dict``). Callers receive it as ``error.data``.

    The message is ``str(data)`` for a string and ``"ConvexError"`` otherwise.
    """

    def __init__(self, data: Any = None) -> None:
        self.data = data
        super().__init__(data if isinstance(data, str) else "ConvexError")


class ValidationError(ReactiveError, ValueError):
    """A value or argument is not acceptable."""


class InvalidValueError(ValidationError):
    """Not a Convex value (unsupported type, int out of int64 range) or over a value limit."""


class SchemaValidationError(ValidationError):
    """A document does not match its table's validator.

    Attributes:
        table: The table written to.
        path: The field path that failed (``"author.name"``), or ``""`` for the document.
        expected: What the validator wanted (``"string"``).
        found: What it got (``"int64"``).
    """

    def __init__(
        self, message: str, table: str = "", path: str = "", expected: str = "", found: str = ""
    ) -> None:
        super().__init__(message)
        self.table = table
        self.path = path
        self.expected = expected
        self.found = found


class ArgumentValidationError(ValidationError):
    """Function arguments (or a return value) fail the function's validator."""


class InvalidIdError(ValidationError):
    """Text that is not a valid document id, or an id of another table."""


class InvalidQueryError(ValidationError):
    """A bad index range, filter expression, order or pagination option."""


class InvalidCursorError(InvalidQueryError):
    """A pagination cursor that was not issued for this query."""


class LimitExceededError(ReactiveError):
    """A limit was crossed; the message names the limit and its value."""


class FunctionTimeoutError(LimitExceededError):
    """A function ran past its time limit and was stopped (nothing it wrote committed).

    Limits follow Convex's: 1 s of execution for queries and mutations, 10 minutes for
    actions (``reactive.open(..., function_time_limit_s=, action_time_limit_s=)``).
    """


class TooManyRequestsError(LimitExceededError):
    """A request limit was reached.

    In-flight requests or queries of one socket, entries of one ``query_batch``, functions
    waiting to run, or open connections.
    """


class NotFoundError(ReactiveError, LookupError):
    """Something named does not exist."""


class DocumentNotFoundError(NotFoundError):
    """``patch``, ``replace`` or ``delete`` of a document that does not exist."""


class TableNotFoundError(NotFoundError):
    """No table of that name (or not in the schema)."""


class IndexNotFoundError(NotFoundError):
    """No index of that name on the table."""


class FunctionNotFoundError(NotFoundError):
    """No function at that path, or an internal function called from outside."""


class IndexNotReadyError(ReactiveError):
    """The index is still being backfilled; retry when it is ready."""


class ReadOnlyError(ReactiveError):
    """A write was attempted in a read-only transaction (a query)."""


class RetryableError(ReactiveError):
    """The transaction failed for a reason that running it again can fix."""


class WriteConflict(RetryableError):
    """Optimistic concurrency control refused the commit.

    Attributes:
        table: Table whose index key a later commit wrote.
        key: That keyspace key, hex.
        ts: Commit timestamp (u64 ns) of the conflicting write.
    """

    def __init__(self, message: str, table: str = "", key: str = "", ts: int = 0) -> None:
        super().__init__(message)
        self.table = table
        self.key = key
        self.ts = ts


class TransactionTooOldError(RetryableError):
    """The transaction began before the oldest commit the write log still holds."""


class SchemaError(ReactiveError):
    """A bad schema definition, or stored documents that the new schema refuses."""


class PersistenceError(ReactiveError):
    """The storage backend failed; the driver's exception is chained as ``__cause__``."""


class CommitOutcomeUnknownError(PersistenceError):
    """The backend lost contact during a commit and could not tell whether it happened.

    The database stops committing (every later commit fails with this error) until it is
    reopened, which loads the truth from the backend: a commit is never reported failed
    and then found applied.
    """


class CorruptionError(PersistenceError):
    """A stored record failed verification (checksum, torn commit); the message names it."""


class IncompatibleDatabaseError(PersistenceError):
    """The database has a newer on-disk format, or another process has it open."""


class LogGapError(PersistenceError):
    """A log reader asked for commits after a timestamp the database no longer has whole.

    Retention pruned revisions through ``retained_ts``, past the reader's position
    ``after_ts``: reading on would miss what was pruned, so the reader must load the whole
    state again (``Persistence.load``) and tail from its ``max_ts``.

    Attributes:
        after_ts: The reader's position (u64 ns): the last commit it has applied.
        retained_ts: The timestamp persistence is pruned to (u64 ns), ``> after_ts``.
    """

    def __init__(self, message: str, after_ts: int = 0, retained_ts: int = 0) -> None:
        super().__init__(message)
        self.after_ts = after_ts
        self.retained_ts = retained_ts


class FunctionError(ReactiveError):
    """A function raised an ordinary exception; its writes were rolled back."""


class AuthError(ReactiveError):
    """A server refused the client's token, and no fresh one could be had.

    The token expired, or its signature, issuer or audience is wrong: ``reactive.client``
    goes on without a token, and calls made with it fail with this error instead of being
    sent again without it.
    """


class DatabaseClosedError(ReactiveError):
    """The database was closed."""

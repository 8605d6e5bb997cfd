"""What functions receive: ``ctx.db`` (reader or writer) and the ``ctx`` objects.

Shapes follow Convex's ``GenericDatabaseReader``/``GenericDatabaseWriter`` and
``QueryCtx``/``MutationCtx``/``ActionCtx``. Documents are dicts holding
``_id`` (str) and ``_creationTime`` (float, ms since the epoch) beside the user's fields.
Reads see the transaction's own writes. Every write is checked against the table's
validator first; a failure raises ``SchemaValidationError`` naming table, field, expected
and found type, and writes nothing.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from reactive import _core
from reactive.db.query import Query
from reactive.errors import (
    DocumentNotFoundError,
    IndexNotFoundError,
    InvalidIdError,
    SchemaValidationError,
    TableNotFoundError,
)
from reactive.pytypes import _PLAIN, plain_document
from reactive.schema import TableDefinition, ValidationFailure, type_name

if TYPE_CHECKING:
    from reactive.db.cursor import CursorCodec
    from reactive.db.database import Database
    from reactive.db.scheduler import Scheduler
    from reactive.db.storage import StorageActionWriter, StorageReader, StorageWriter
    from reactive.functions import Function

__all__ = [
    "MAX_NESTED_CALLS",
    "UNSET",
    "ActionCtx",
    "Auth",
    "DatabaseReader",
    "DatabaseWriter",
    "Env",
    "MutationCtx",
    "QueryCtx",
    "SystemReader",
]

_SYSTEM_FIELDS = ("_id", "_creationTime")

MAX_NESTED_CALLS = 16
"""How deep ``ctx.run_query`` / ``ctx.run_mutation`` calls may nest in one transaction."""


class _Unset:
    """The type of :data:`UNSET` (one instance)."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNSET"


UNSET = _Unset()
"""A field value meaning "no such field": ``patch(id, {"f": UNSET})`` removes ``f``.

Convex writes this as ``undefined``. In ``insert`` and ``replace`` a top-level field set
to ``UNSET`` is left out; anywhere else it is not a value (``InvalidValueError``).
"""


def _without_unset(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: x for k, x in fields.items() if x is not UNSET}


def _plain_fields(document: Any) -> Any:
    """``plain_document(document)`` without its top-level ``UNSET`` fields.

    A dict of scalar fields (the common document) is returned as it is: it holds no
    ``UNSET`` and nothing to convert; the core copies what it stores.
    """
    if type(document) is dict:
        for x in document.values():
            if not isinstance(x, _PLAIN):
                break
        else:
            return document
    document = plain_document(document)
    if isinstance(document, dict):
        document = _without_unset(document)
    return document


class Auth:
    """``ctx.auth``: the caller's identity (``None`` when the caller is not signed in)."""

    def __init__(self, identity: dict[str, Any] | None = None) -> None:
        self._identity = identity

    async def get_user_identity(self) -> dict[str, Any] | None:
        """The identity's claims (``subject``, ``issuer``, ``tokenIdentifier``...), or None."""
        return self._identity


class DatabaseReader:
    """``ctx.db`` in a query: read-only access at the transaction's snapshot."""

    def __init__(self, txn: _core.Transaction, db: Database, journal: str | None = None) -> None:
        self._txn = txn
        self._db = db
        self._cursors: CursorCodec = db._cursors
        # Query journals (spec §6.9): the end cursor a paginated query reached on its first
        # run, so that re-runs cover exactly the same range (gapless reactive pagination).
        self._journal_in = journal
        self._journal_out: str | None = None

    def _ids(self, table: str, text: str) -> bool:
        return self._txn.normalize_id(table, text) is not None

    def _check_table(self, table: str) -> None:
        if not isinstance(table, str):
            raise TableNotFoundError(f"table names are strings, not {type(table).__name__}")
        if table.startswith("_"):
            raise TableNotFoundError(f"table {table!r}: tables starting with '_' are system tables")
        if self._txn.has_table(table):
            return
        schema = self._db._app.schema
        if schema is not None and schema.strict_tables and table not in schema.tables:
            raise TableNotFoundError(f"table {table!r} is not in the schema")

    async def get(self, id: str) -> dict[str, Any] | None:
        """The document with this id, or ``None`` if there is none.

        Raises:
            InvalidIdError: ``id`` is not a valid id.
        """
        if not isinstance(id, str):
            raise InvalidIdError(f"ids are strings, not {type_name(id)}")
        return self._txn.get(id)

    def query(self, table: str) -> Query:
        """Start a query on ``table`` (by creation time unless ``with_index`` says otherwise).

        Raises:
            TableNotFoundError: a schema is defined and does not have the table.
        """
        self._check_table(table)
        return Query(self, table)

    @property
    def system(self) -> SystemReader:
        """Read the system tables functions may read (``_scheduled_functions``)."""
        return SystemReader(self)

    async def vector_search(
        self, table: str, index: str, query: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Vector search at this transaction's snapshot (with its own writes), reactive.

        ``query``: ``{"vector": [float...], "limit": 1..256 (default 10), "filter": lambda
        q: q.eq(field, value) | q.or_(...)}``. Returns ``[{"_id", "_score"}]``, best
        (highest cosine similarity) first. Beyond Convex, where only actions search vectors.

        Raises:
            InvalidQueryError: a bad query (dimensions, limit, filter field).
            IndexNotFoundError: no such vector index.
        """
        return _vector_search(self._txn, self._db, table, index, query)

    def normalize_id(self, table: str, id: str) -> str | None:
        """``id`` if it is a valid id of ``table``, else ``None``."""
        if not isinstance(id, str) or not isinstance(table, str):
            return None
        return self._txn.normalize_id(table, id)

    def _scan(
        self,
        table: str,
        index: str,
        ops: list[tuple[str, str, Any]],
        order: str,
        limit: int | None,
        filter_tree: tuple[Any, ...] | None,
        after: bytes | None,
        until: bytes | None,
        new_query: bool,
    ) -> tuple[list[dict[str, Any]], bytes | None, bool]:
        return self._txn.scan(table, index, ops, order, limit, filter_tree, after, until, new_query)


def _vector_search(
    txn: _core.Transaction, db: Database, table: str, index: str, query: dict[str, Any]
) -> list[dict[str, Any]]:
    from reactive.db.search import parse_vector_query

    schema = db._app.schema
    definition = schema.tables.get(table) if schema is not None and isinstance(table, str) else None
    if definition is None or not any(i.name == index for i in definition.vector_indexes):
        raise IndexNotFoundError(f"vector index {table}.{index} does not exist")
    vector, limit, terms = parse_vector_query(query, definition.validator)
    found = txn.vector_search(table, index, vector, limit, terms)
    return [{"_id": id, "_score": score} for id, score in found]


class SystemReader:
    """``ctx.db.system``: ``get`` and ``query`` of the readable system tables.

    Convex's ``ctx.db.system``: reads are part of the transaction (and reactive).
    """

    READABLE = ("_scheduled_functions", "_cron_jobs", "_storage")

    def __init__(self, reader: DatabaseReader) -> None:
        self._reader = reader

    async def get(self, id: str) -> dict[str, Any] | None:
        """The system document with this id, or ``None``.

        Raises:
            InvalidIdError: ``id`` is not an id of a readable system table.
        """
        if not isinstance(id, str):
            raise InvalidIdError(f"ids are strings, not {type_name(id)}")
        if self._reader._txn.table_of(id) not in self.READABLE:
            raise InvalidIdError(f"{id!r} is not an id of a system table ({self.READABLE})")
        return self._reader._txn.get(id)

    def query(self, table: str) -> Query:
        """Start a query on a readable system table.

        Raises:
            TableNotFoundError: ``table`` is not one of :attr:`READABLE`.
        """
        if table not in self.READABLE:
            raise TableNotFoundError(
                f"system table {table!r} cannot be read; readable: {', '.join(self.READABLE)}"
            )
        return Query(self._reader, table)


class DatabaseWriter(DatabaseReader):
    """``ctx.db`` in a mutation: reads plus ``insert``, ``patch``, ``replace``, ``delete``."""

    def _definition(self, table: str) -> TableDefinition | None:
        schema = self._db._app.schema
        if schema is None:
            return None
        definition = schema.tables.get(table)
        if definition is None and schema.strict_tables:
            raise TableNotFoundError(f"table {table!r} is not in the schema")
        if definition is None or not schema.schema_validation:
            return None
        return definition

    def _validate(self, table: str, doc: Any, what: str) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise SchemaValidationError(
                f"{what} for table {table!r} must be a dict, found {type_name(doc)}",
                table=table,
                expected="object",
                found=type_name(doc),
            )
        definition = self._definition(table)
        if definition is None:
            return doc
        try:
            return definition.check_document(doc, self._ids)
        except ValidationFailure as failure:
            raise SchemaValidationError(
                f"{what} for table {table!r} does not match the schema: {failure}",
                table=table,
                path=failure.path,
                expected=failure.expected,
                found=failure.found,
            ) from None

    async def insert(self, table: str, document: dict[str, Any]) -> str:
        """Insert ``document`` into ``table``; returns the new ``_id``.

        Raises:
            SchemaValidationError: the document does not match the table's validator, or has
                a system field.
            TableNotFoundError: the table is not in the schema.
            InvalidValueError / LimitExceededError: not a value, or over a limit.
        """
        txn = self._txn
        # The common case in one step: a user table that exists (else the full check).
        exists = type(table) is str and not table.startswith("_") and txn.has_table(table)
        if not exists:
            self._check_table(table)
        fields = self._validate(table, _plain_fields(document), "document")
        if not exists and not txn.has_table(table):
            txn.create_table(self._db._engine, table)
        return txn.insert(table, fields)

    def _existing(self, id: str) -> tuple[str, dict[str, Any]]:
        if not isinstance(id, str):
            raise InvalidIdError(f"ids are strings, not {type_name(id)}")
        current = self._txn.get(id)
        table = self._txn.table_of(id)
        if current is None or table is None:
            raise DocumentNotFoundError(f"document {id} does not exist")
        return table, current

    @staticmethod
    def _strip_system(table: str, current: dict[str, Any], fields: dict[str, Any]) -> None:
        for name in _SYSTEM_FIELDS:
            if name in fields:
                if fields[name] != current[name]:
                    raise SchemaValidationError(
                        f"document for table {table!r}: system field {name} cannot be changed",
                        table=table,
                        path=name,
                    )
                del fields[name]

    async def patch(self, id: str, fields: dict[str, Any]) -> None:
        """Shallow-merge ``fields`` into the document (other fields are kept).

        A field set to :data:`UNSET` is removed; ``None`` stores null.

        Raises:
            DocumentNotFoundError: no such document.
            SchemaValidationError: the merged document does not match the validator.
        """
        table, current = self._existing(id)
        fields = plain_document(fields)
        if not isinstance(fields, dict):
            raise SchemaValidationError(
                f"patch for table {table!r} must be a dict, found {type_name(fields)}",
                table=table,
            )
        fields = dict(fields)
        self._strip_system(table, current, fields)
        merged = {k: x for k, x in current.items() if k not in _SYSTEM_FIELDS}
        merged.update(fields)
        merged = self._validate(table, _without_unset(merged), "patched document")
        self._txn.replace(id, merged)

    async def replace(self, id: str, document: dict[str, Any]) -> None:
        """Replace the document's fields with ``document`` (system fields stay).

        Raises:
            DocumentNotFoundError: no such document.
            SchemaValidationError: the document does not match the validator.
        """
        table, current = self._existing(id)
        document = plain_document(document)
        if not isinstance(document, dict):
            raise SchemaValidationError(
                f"document for table {table!r} must be a dict, found {type_name(document)}",
                table=table,
            )
        document = _without_unset(document)
        self._strip_system(table, current, document)
        document = self._validate(table, document, "document")
        self._txn.replace(id, document)

    async def delete(self, id: str) -> None:
        """Delete the document.

        Raises:
            DocumentNotFoundError: no such document.
        """
        self._existing(id)
        self._txn.delete(id)


class _BaseCtx:
    # Defaults until set on the instance (a context is made per run: fewer stores).
    _random: random.Random | None = None
    _auth: Auth | None = None
    _depth = 0
    _scheduler: Scheduler | None = None
    _storage: Any = None

    def __init__(self, now: float, seed: int, identity: dict[str, Any] | None) -> None:
        self.now = now
        """Milliseconds since the epoch when the run began; the same on every retry."""
        self._seed = seed
        self._identity = identity

    @property
    def random(self) -> random.Random:
        """A generator seeded once per run: a retried mutation draws the same numbers."""
        if self._random is None:
            self._random = random.Random(self._seed)
        return self._random

    @property
    def auth(self) -> Auth:
        """The caller's identity."""
        if self._auth is None:
            self._auth = Auth(self._identity)
        return self._auth


class Env:
    """``ctx.env``: the deployment's environment variables (strings by name).

    Set with ``python -m reactive env set NAME VALUE`` or ``npx convex env set``. In queries
    and mutations a variable is read in the function's transaction, so a subscribed query
    that read one re-runs when it changes; in actions each read sees the latest value.
    """

    def __init__(self, txn_of: Callable[[], _core.Transaction]) -> None:
        self._txn_of = txn_of

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of ``name``, or ``default`` when it is not set."""
        from reactive.db.system import get_environment_variable

        value = get_environment_variable(self._txn_of(), name)
        return default if value is None else value

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(f"environment variable {name!r} is not set")
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


async def _nested(
    parent: QueryCtx | MutationCtx,
    kind: str,
    function: str | Function[Any],
    args: dict[str, Any] | None,
) -> Any:
    """Run a query or mutation inside ``parent``'s transaction (see ``run_query``)."""
    from reactive.db.runner import _call, _check_result, _validate_args

    if parent._depth >= MAX_NESTED_CALLS:
        raise RecursionError(
            f"ctx.run_query/run_mutation calls nest more than {MAX_NESTED_CALLS} deep"
        )
    db = parent.db._db
    fn = db._runner.resolve(function, kind, internal_ok=True)  # type: ignore[arg-type]
    txn = parent.db._txn
    seed = parent.random.getrandbits(64)
    child: QueryCtx | MutationCtx
    if kind == "query":
        reader = DatabaseReader(txn, db)
        checked = _validate_args(fn, args, reader._ids)
        child = QueryCtx(reader, parent.now, seed, parent._identity)
        child._depth = parent._depth + 1
        return _check_result(fn, await _call(fn, child, checked), reader._ids)
    writer = DatabaseWriter(txn, db)
    checked = _validate_args(fn, args, writer._ids)
    child = MutationCtx(writer, parent.now, seed, parent._identity)
    child._depth = parent._depth + 1
    if isinstance(parent, MutationCtx):
        child._scheduler = parent.scheduler
        child._storage = parent.storage
    point = txn.savepoint()
    try:
        return _check_result(fn, await _call(fn, child, checked), writer._ids)
    except BaseException:
        txn.rollback_to(point)
        raise


class QueryCtx(_BaseCtx):
    """The ``ctx`` of a query: ``db`` (read-only), ``auth``, ``env``, ``now``, ``random``."""

    def __init__(
        self, db: DatabaseReader, now: float, seed: int, identity: dict[str, Any] | None
    ) -> None:
        super().__init__(now, seed, identity)
        self.db = db

    @property
    def env(self) -> Env:
        """The deployment's environment variables (read in this transaction)."""
        return Env(lambda: self.db._txn)

    @property
    def storage(self) -> StorageReader:
        """File storage: ``get_url`` (:mod:`reactive.db.storage`)."""
        if self._storage is None:
            from reactive.db.storage import StorageReader

            self._storage = StorageReader(self.db._db, self.db._txn)
        storage: StorageReader = self._storage
        return storage

    async def run_query(
        self, function: str | Function[Any], args: dict[str, Any] | None = None
    ) -> Any:
        """Run another query (public or internal) in this query's transaction.

        Its arguments and result are checked by its validators, its reads join this
        query's read set, and it sees the same snapshot (Convex's ``ctx.runQuery``).

        Raises:
            FunctionNotFoundError: no such query.
            ArgumentValidationError: the arguments or result do not match the validators.
            RecursionError: calls nest more than :data:`MAX_NESTED_CALLS` deep.
            Exception: whatever the query raised.
        """
        return await _nested(self, "query", function, args)


class MutationCtx(_BaseCtx):
    """The ``ctx`` of a mutation: ``db`` (read-write), ``auth``, ``env``, ``now``, ``random``."""

    def __init__(
        self, db: DatabaseWriter, now: float, seed: int, identity: dict[str, Any] | None
    ) -> None:
        self.now = now
        """Milliseconds since the epoch when the run began; the same on every retry."""
        self._seed = seed
        self._identity = identity
        self.db = db

    @property
    def env(self) -> Env:
        """The deployment's environment variables (read in this transaction)."""
        return Env(lambda: self.db._txn)

    async def run_query(
        self, function: str | Function[Any], args: dict[str, Any] | None = None
    ) -> Any:
        """Run a query (public or internal) in this mutation's transaction.

        It sees this mutation's writes so far; its reads join the read set. Raises as
        :meth:`QueryCtx.run_query`.
        """
        return await _nested(self, "query", function, args)

    @property
    def scheduler(self) -> Scheduler:
        """Schedule functions (``run_after``, ``run_at``, ``cancel``) in this transaction."""
        if self._scheduler is None:
            from reactive.db.scheduler import Scheduler

            self._scheduler = Scheduler(self.db._db, self.db._txn)
        return self._scheduler

    @property
    def storage(self) -> StorageWriter:
        """File storage: ``generate_upload_url``, ``get_url``, ``delete`` (this transaction).

        See :mod:`reactive.db.storage`.
        """
        if self._storage is None:
            from reactive.db.storage import StorageWriter

            self._storage = StorageWriter(self.db._db, self.db._txn)
        storage: StorageWriter = self._storage
        return storage

    async def run_mutation(
        self, function: str | Function[Any], args: dict[str, Any] | None = None
    ) -> Any:
        """Run a mutation (public or internal) inside this mutation's transaction.

        Its writes commit with this mutation's, all or nothing. If it raises, its writes
        are rolled back (a savepoint) and the error reaches this mutation: caught, the rest
        of the transaction goes on without them (Convex's ``ctx.runMutation``).

        Raises:
            FunctionNotFoundError: no such mutation.
            ArgumentValidationError: the arguments or result do not match the validators.
            RecursionError: calls nest more than :data:`MAX_NESTED_CALLS` deep.
            Exception: whatever the mutation raised (its writes undone).
        """
        return await _nested(self, "mutation", function, args)


class ActionCtx(_BaseCtx):
    """The ``ctx`` of an action: ``run_query``, ``run_mutation``, ``run_action``, ``auth``.

    Actions have no ``db``: each ``run_*`` call is its own transaction. They may do I/O.
    """

    def __init__(
        self,
        runner: Callable[[str, Any, str, Any], Awaitable[Any]],
        now: float,
        seed: int,
        identity: dict[str, Any] | None,
        env: Env | None = None,
    ) -> None:
        super().__init__(now, seed, identity)
        self._runner = runner
        self._env = env
        self._db: Database | None = None

    @property
    def scheduler(self) -> Scheduler:
        """Schedule functions (``run_after``, ``run_at``, ``cancel``); each call commits."""
        if self._scheduler is None:
            from reactive.db.scheduler import Scheduler

            if self._db is None:
                raise RuntimeError("this action context has no database")
            self._scheduler = Scheduler(self._db, None)
        return self._scheduler

    @property
    def storage(self) -> StorageActionWriter:
        """File storage: ``store``, ``get``, ``delete``, ``get_url``, ``generate_upload_url``.

        Each call is its own transaction (:mod:`reactive.db.storage`).
        """
        if self._storage is None:
            from reactive.db.storage import StorageActionWriter

            if self._db is None:
                raise RuntimeError("this action context has no database")
            self._storage = StorageActionWriter(self._db)
        storage: StorageActionWriter = self._storage
        return storage

    @property
    def env(self) -> Env:
        """The deployment's environment variables (each read sees the latest value)."""
        if self._env is None:
            raise RuntimeError("this action context has no environment")
        return self._env

    async def run_query(
        self, function: str | Function[Any], args: dict[str, Any] | None = None
    ) -> Any:
        """Run a query (public or internal) in its own transaction; returns its result."""
        return await self._runner("query", function, "run_query", args)

    async def vector_search(
        self, table: str, index: str, query: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Vector search at the latest snapshot (Convex's ``ctx.vectorSearch``).

        ``query``: ``{"vector": [float...], "limit": 1..256 (default 10), "filter": lambda
        q: q.eq(field, value) | q.or_(...)}``. Returns ``[{"_id", "_score"}]``, best
        (highest cosine similarity) first; load documents with ``ctx.run_query``.

        Raises:
            InvalidQueryError: a bad query (dimensions, limit, filter field).
            IndexNotFoundError: no such vector index.
        """
        if self._db is None:
            raise RuntimeError("this action context has no database")
        txn = self._db._engine.begin(True)
        return _vector_search(txn, self._db, table, index, query)

    async def run_mutation(
        self, function: str | Function[Any], args: dict[str, Any] | None = None
    ) -> Any:
        """Run a mutation (public or internal) in its own transaction; returns its result."""
        return await self._runner("mutation", function, "run_mutation", args)

    async def run_action(
        self, function: str | Function[Any], args: dict[str, Any] | None = None
    ) -> Any:
        """Run another action; returns its result."""
        return await self._runner("action", function, "run_action", args)

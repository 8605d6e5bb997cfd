"""System tables: data the database keeps for itself, in its own transactions.

``_session_requests`` remembers each mutation a client ran, by (session id, request id,
caller), in the same transaction as the mutation's writes (spec §6.8, as Convex's backend
does). A client that resends the mutation after a reconnect — the JS client does, on the
same session id — gets the stored result instead of a second run, even across a server
restart. Rows older than :data:`SESSION_REQUEST_RETENTION_S` are deleted in the background.
A cluster's follower records each mutation it runs under a session id it makes up
(:func:`forwarded_session`), only to answer its own resend after a lost answer or a
failover, within seconds: those rows go after :data:`FORWARDED_REQUEST_RETENTION_S`.

The caller (:func:`caller_key`) is a hash of who called and what: the identity's principal
and the function path. Session and request ids come from the client, so another caller can
send the same pair; it must neither read the first caller's result nor have its own
mutation skipped. Only a replay by the same caller of the same function returns the record;
anyone else runs their mutation normally and records their own result. Records written
before the ``caller`` field existed have none and never match: such a request runs again.

Users cannot read or write tables whose names start with ``_``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from reactive import _core
from reactive.db.schema_sync import backfill_index
from reactive.errors import IndexNotFoundError, RetryableError, TableNotFoundError, ValidationError

if TYPE_CHECKING:
    from reactive.db.database import Database

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "FORWARDED_REQUEST_RETENTION_S",
    "SESSION_REQUESTS",
    "SESSION_REQUEST_RETENTION_S",
    "caller_key",
    "change_environment_variables",
    "check_environment_variable",
    "commit_system",
    "document_fields",
    "ensure_environment_table",
    "ensure_system_table",
    "ensure_system_tables",
    "find_session_request",
    "forwarded_session",
    "get_environment_variable",
    "list_environment_variables",
    "patch_system",
    "prune_session_requests",
    "record_session_request",
    "set_environment_variable",
    "write_system",
]

log = logging.getLogger("reactive.system")

SESSION_REQUESTS = "_session_requests"
"""The table of mutations run per (session id, request id)."""
_BY_REQUEST = "by_request"
_BY_CALLER_REQUEST = "by_caller_request"
_INDEXES = {
    _BY_REQUEST: ["session", "request"],
    _BY_CALLER_REQUEST: ["session", "request", "caller"],
}
SESSION_REQUEST_RETENTION_S = 3600.0
FORWARDED_SESSION_PREFIX = "forwarded:"
FORWARDED_REQUEST_RETENTION_S = 300.0
"""How long the record of a mutation run under a made-up session id is kept (seconds): it
answers that process's own resend (within the forward time-out, 30 s, and a failover)."""


def _forwarded_prefix(ms: float) -> str:
    return f"{FORWARDED_SESSION_PREFIX}{max(0, int(ms)):012x}:"


def forwarded_session() -> str:
    """A made-up session id for a mutation that came without one (on a cluster's follower).

    ``forwarded:<creation ms, 12 hex digits>:<random>``: the old ones form one range of the
    ``by_request`` index, pruned early.
    """
    return _forwarded_prefix(time.time() * 1000.0) + secrets.token_hex(8)


"""How long a mutation's record is kept for replays (clients reconnect within minutes)."""


async def ensure_system_tables(db: Database) -> None:
    """Create the system tables and their indexes if they do not exist."""
    await ensure_system_table(db, SESSION_REQUESTS, _INDEXES)
    await ensure_environment_table(db)


async def ensure_environment_table(db: Database) -> None:
    """Create ``_environment_variables`` and its ``by_name`` index if they do not exist."""
    await ensure_system_table(db, ENVIRONMENT_VARIABLES, {_BY_NAME: ["name"]})


async def ensure_system_table(db: Database, table_name: str, indexes: dict[str, list[str]]) -> None:
    """Create the system table ``table_name`` and its ``indexes`` (name -> fields) if needed.

    Raises:
        ReadOnlyError: the database follows another process's log (a read replica).
    """
    db._check_writable(f"creating {table_name}")
    engine = db._engine
    engine.create_system_table(table_name)
    for name, fields in indexes.items():
        table = next(t for t in engine.tables() if t["name"] == table_name)
        index = next((i for i in table["indexes"] if i["name"] == name), None)
        if index is None:
            index_id, snapshot = engine.add_index(table_name, name, fields)
            await backfill_index(db, index_id, snapshot)
        elif index["ready_since"] is None:
            await backfill_index(db, index["id"], engine.visible_ts)
    await db._flusher.flush()


ENVIRONMENT_VARIABLES = "_environment_variables"
"""The deployment's environment variables: ``{name, value}`` documents."""
_BY_NAME = "by_name"
MAX_ENV_NAME = 40
MAX_ENV_VALUE_BYTES = 8192
_ENV_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def check_environment_variable(name: Any, value: Any = "") -> None:
    """Refuse a bad environment variable name or value.

    Convex's rules: a letter then letters, digits or ``_``, at most 40 characters; values
    are strings of at most 8 KiB.

    Raises:
        ValidationError: the name or the value is not acceptable (the message says why).
    """
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name) or len(name) > MAX_ENV_NAME:
        raise ValidationError(
            f"environment variable name {name!r:.60} must start with a letter, hold only "
            f"letters, digits and '_', and have at most {MAX_ENV_NAME} characters"
        )
    if not isinstance(value, str):
        raise ValidationError(f"the value of {name} must be a string")
    if len(value.encode()) > MAX_ENV_VALUE_BYTES:
        raise ValidationError(f"the value of {name} is over {MAX_ENV_VALUE_BYTES} bytes")


def _env_docs(txn: _core.Transaction, name: str | None, limit: int) -> list[dict[str, Any]]:
    ops = [] if name is None else [("eq", "name", name)]
    try:
        docs, _, _ = txn.scan(
            ENVIRONMENT_VARIABLES, _BY_NAME, ops, "asc", limit, None, None, None, True
        )
    except (TableNotFoundError, IndexNotFoundError):
        return []  # no variable was ever set
    return list(docs)


def get_environment_variable(txn: _core.Transaction, name: str) -> str | None:
    """The value of ``name``, read in ``txn`` (so a subscription watches it), or None."""
    docs = _env_docs(txn, name, 1)
    return str(docs[0]["value"]) if docs else None


def list_environment_variables(txn: _core.Transaction) -> list[dict[str, str]]:
    """Every variable as ``{"name", "value"}``, by name."""
    return [{"name": d["name"], "value": d["value"]} for d in _env_docs(txn, None, 100_000)]


def set_environment_variable(txn: _core.Transaction, name: str, value: str | None) -> None:
    """Set (or with ``None`` remove) ``name`` in ``txn``.

    Raises:
        ValidationError: a bad name or value.
    """
    check_environment_variable(name, "" if value is None else value)
    for doc in _env_docs(txn, name, 16):
        txn.delete(doc["_id"])
    if value is not None:
        txn.insert(ENVIRONMENT_VARIABLES, {"name": name, "value": value})


async def change_environment_variables(db: Database, changes: list[tuple[str, str | None]]) -> int:
    """Apply ``(name, value or None to remove)`` changes in one durable transaction.

    Returns:
        The commit timestamp.

    Raises:
        ValidationError: a bad name or value (nothing is changed).
    """
    for name, value in changes:
        check_environment_variable(name, "" if value is None else value)
    await ensure_environment_table(db)

    def change(txn: _core.Transaction) -> None:
        for name, value in changes:
            set_environment_variable(txn, name, value)

    _, ts = await commit_system(db, change)
    return ts


T = TypeVar("T")

SYSTEM_WRITE_ATTEMPTS = 32
"""Attempts of a system write that keeps conflicting before it gives up."""


async def commit_system(db: Database, change: Callable[[_core.Transaction], T]) -> tuple[T, int]:
    """Run ``change`` in a write transaction (again on a conflict) and wait until durable.

    Returns:
        What ``change`` returned, and the commit timestamp (the newest visible one when
        ``change`` wrote nothing).

    Raises:
        ReadOnlyError: the database follows another process's log (a read replica).
        RetryableError: :data:`SYSTEM_WRITE_ATTEMPTS` attempts conflicted.
        Exception: whatever ``change`` raised (nothing is written).
    """
    db._check_writable("a system write")
    engine = db._engine
    for _ in range(SYSTEM_WRITE_ATTEMPTS):
        txn = engine.begin(False)
        result = change(txn)
        try:
            ts = engine.commit(txn)
        except RetryableError:
            continue
        if ts is None:
            return result, int(engine.visible_ts)
        db._flusher.nudge()
        await db._flusher.wait(ts)
        return result, int(ts)
    raise RetryableError("too many write conflicts on a system table; try again")


def document_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """A document's own fields (without ``_id``, ``_creationTime``)."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def patch_system(txn: _core.Transaction, doc: dict[str, Any], fields: dict[str, Any]) -> None:
    """Shallow-merge ``fields`` into the system document ``doc`` (read in ``txn``)."""
    txn.replace(doc["_id"], {**document_fields(doc), **fields})


async def write_system(db: Database, change: Callable[[_core.Transaction], T]) -> T:
    """:func:`commit_system` without the timestamp."""
    result, _ = await commit_system(db, change)
    return result


def caller_key(identity: dict[str, Any] | None, path: str | None) -> str:
    """Who ran a mutation, as a hex hash of the identity's principal and the function path.

    The principal is the identity's ``tokenIdentifier`` (issuer and subject) when it has
    one, so a client whose token was refreshed between a mutation and its replay (new
    ``exp``/``iat``) is still the same caller; otherwise the identity's canonical JSON
    (sorted keys). No identity (``None``) is its own principal.
    """
    if identity is None:
        principal = ""
    elif isinstance(identity.get("tokenIdentifier"), str):
        principal = "t" + json.dumps(identity["tokenIdentifier"])
    else:
        principal = "j" + json.dumps(
            identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
        )
    data = principal + "\0" + (path or "")
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


def find_session_request(
    txn: _core.Transaction,
    session: str,
    request: int,
    *,
    identity: dict[str, Any] | None,
    path: str | None,
) -> dict[str, Any] | None:
    """The record of mutation (``session``, ``request``) by this caller, read in ``txn``.

    Only a record by the same caller (:func:`caller_key` of ``identity`` and ``path``)
    matches. The read is in ``txn``'s read set, so it conflicts with a concurrent replay
    that commits first.
    """
    caller = caller_key(identity, path)
    ops = [("eq", "session", session), ("eq", "request", request), ("eq", "caller", caller)]
    docs, _, _ = txn.scan(
        SESSION_REQUESTS, _BY_CALLER_REQUEST, ops, "asc", 1, None, None, None, True
    )
    return docs[0] if docs else None


def record_session_request(
    txn: _core.Transaction,
    session: str,
    request: int,
    value_json: str,
    log_lines: list[str],
    *,
    identity: dict[str, Any] | None,
    path: str | None,
) -> None:
    """Record a mutation's result, by this caller, in its own transaction."""
    txn.insert(
        SESSION_REQUESTS,
        {
            "session": session,
            "request": request,
            "caller": caller_key(identity, path),
            "value": value_json,
            "logLines": log_lines,
        },
    )


async def prune_session_requests(
    db: Database, batch: int = 1000, forwarded_retention_s: float = FORWARDED_REQUEST_RETENTION_S
) -> int:
    """Delete up to ``batch`` records older than the retention window; returns how many.

    Records of made-up sessions (:func:`forwarded_session`) go after
    ``forwarded_retention_s`` (seconds), the others after
    :data:`SESSION_REQUEST_RETENTION_S`.

    A follower deletes none: the writer prunes them.
    """
    if db.following:
        return 0
    engine = db._engine
    now = time.time()
    cutoff_ms = (now - SESSION_REQUEST_RETENTION_S) * 1000.0
    txn = engine.begin(False)
    # The made-up sessions first: one range of by_request, oldest first.
    forwarded_end = _forwarded_prefix((now - forwarded_retention_s) * 1000.0)
    ops: list[tuple[str, str, Any]] = [
        ("gte", "session", FORWARDED_SESSION_PREFIX),
        ("lt", "session", forwarded_end),
    ]
    docs, _, _ = txn.scan(SESSION_REQUESTS, _BY_REQUEST, ops, "asc", batch, None, None, None, True)
    if len(docs) < batch:
        ops = [("lt", "_creationTime", cutoff_ms)]
        older, _, _ = txn.scan(
            SESSION_REQUESTS, "by_creation_time", ops, "asc", batch, None, None, None, True
        )
        ids = {d["_id"] for d in docs}
        docs += [d for d in older if d["_id"] not in ids][: batch - len(docs)]
    for doc in docs:
        txn.delete(doc["_id"])
    try:
        ts = engine.commit(txn)
    except RetryableError:
        return 0
    if ts is not None:
        await db._flusher.wait(ts)
    return len(docs)

"""System tables: data the database keeps for itself, in its own transactions.

``_session_requests`` remembers each mutation a client ran, by (session id, request id,
caller), in the same transaction as the mutation's writes (spec §6.8, as Convex's backend
does). A client that resends the mutation after a reconnect — the JS client does, on the
same session id — gets the stored result instead of a second run, even across a server
restart. Rows older than :data:`SESSION_REQUEST_RETENTION_S` are deleted in the background.

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
import time
from typing import TYPE_CHECKING, Any

from reactive import _core
from reactive.db.schema_sync import backfill_index
from reactive.errors import RetryableError

if TYPE_CHECKING:
    from reactive.db.database import Database

__all__ = [
    "SESSION_REQUESTS",
    "SESSION_REQUEST_RETENTION_S",
    "caller_key",
    "ensure_system_tables",
    "find_session_request",
    "prune_session_requests",
    "record_session_request",
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
"""How long a mutation's record is kept for replays (clients reconnect within minutes)."""


async def ensure_system_tables(db: Database) -> None:
    """Create the system tables and their indexes if they do not exist."""
    engine = db._engine
    engine.create_system_table(SESSION_REQUESTS)
    for name, fields in _INDEXES.items():
        table = next(t for t in engine.tables() if t["name"] == SESSION_REQUESTS)
        index = next((i for i in table["indexes"] if i["name"] == name), None)
        if index is None:
            index_id, snapshot = engine.add_index(SESSION_REQUESTS, name, fields)
            await backfill_index(db, index_id, snapshot)
        elif index["ready_since"] is None:
            await backfill_index(db, index["id"], engine.visible_ts)
    await db._flusher.flush()


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


async def prune_session_requests(db: Database, batch: int = 1000) -> int:
    """Delete up to ``batch`` records older than the retention window; returns how many."""
    engine = db._engine
    cutoff_ms = (time.time() - SESSION_REQUEST_RETENTION_S) * 1000.0
    txn = engine.begin(False)
    ops = [("lt", "_creationTime", cutoff_ms)]
    docs, _, _ = txn.scan(
        SESSION_REQUESTS, "by_creation_time", ops, "asc", batch, None, None, None, True
    )
    for doc in docs:
        txn.delete(doc["_id"])
    try:
        ts = engine.commit(txn)
    except RetryableError:
        return 0
    if ts is not None:
        await db._flusher.wait(ts)
    return len(docs)

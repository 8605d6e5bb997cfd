"""Applying the app's schema at open: tables, indexes, backfills, validation.

At open, the schema of the app is compared with what the database holds:

1. If the validator of a table changed (or no schema was stored before), every stored
   document of that table is checked against it; one that fails refuses the open with
   ``SchemaError`` naming the document, and the database is left unchanged.
2. Missing tables are created.
3. A new index is added in the *backfilling* state: commits from then on maintain it, and a
   backfill adds the documents written before, in chunks, each chunk a commit. Small
   tables are backfilled before ``open`` returns; large ones in the background, and a query
   on the index before it is ready gets ``IndexNotReadyError``. An index whose fields
   changed is dropped and added again; an index no longer in the schema is dropped (its
   entries go from memory at once and from persistence with the next batch).
4. The schema's JSON is stored to compare with next time.

Source: Convex's schema pushes and index backfill.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from reactive.errors import SchemaError, TransactionTooOldError
from reactive.schema import DatabaseSchema, ValidationFailure

if TYPE_CHECKING:
    from reactive.db.database import Database

__all__ = ["apply_schema", "backfill_index", "register_search_indexes"]

log = logging.getLogger("reactive.schema")

BACKFILL_CHUNK = 1000
"""Documents per backfill commit."""
FOREGROUND_BACKFILL_LIMIT = 20_000
"""Tables up to this many documents are backfilled before ``open`` returns."""
_BUILTIN = ("by_id", "by_creation_time")


async def _validate_stored(db: Database, schema: DatabaseSchema, changed: set[str]) -> None:
    engine = db._engine
    existing = {t["name"] for t in engine.tables()}
    ts = engine.visible_ts
    for name in sorted(changed & existing):
        definition = schema.tables[name]
        if definition.validator is None or not schema.schema_validation:
            continue
        after: bytes | None = None
        while True:
            docs, after = engine.table_page(name, ts, after, 1000)
            for doc in docs:
                fields = {k: x for k, x in doc.items() if k not in ("_id", "_creationTime")}
                try:
                    definition.check_document(fields, db._id_checker)
                except ValidationFailure as failure:
                    raise SchemaError(
                        f"the schema refuses document {doc['_id']} of table {name!r}: "
                        f"{failure}; fix the document or the schema (the database was not "
                        "changed)"
                    ) from None
            if after is None:
                break
            await asyncio.sleep(0)


async def backfill_index(db: Database, index_id: int, snapshot_ts: int) -> None:
    """Add the documents written before the index existed, then mark it ready."""
    engine = db._engine
    await db._flusher.flush()
    after: bytes | None = None
    last_ts = 0
    while True:
        try:
            ts, after = engine.backfill_chunk(index_id, snapshot_ts, after, BACKFILL_CHUNK)
        except TransactionTooOldError:
            # The write log no longer covers the snapshot: start again from a newer one.
            # Commits after the old snapshot maintained the index already.
            # Documents before `after` are covered: the entries added stay, and commits since
            # kept them current. Continue from `after` at a newer snapshot.
            await db._flusher.flush()
            snapshot_ts = engine.visible_ts
            continue
        if ts is not None:
            db._flusher.nudge()
            await db._flusher.wait(ts)
            last_ts = ts
        if after is None:
            break
        await asyncio.sleep(0)
    await db._flusher.flush()
    engine.set_index_ready(index_id, max(last_ts, snapshot_ts, engine.visible_ts))
    await db._flusher.flush()


async def register_search_indexes(db: Database, schema: DatabaseSchema) -> None:
    """Register the schema's search and vector indexes with the engine.

    The engine builds each new one from its table's documents (on a thread for large
    tables) and drops the ones the schema no longer has. Search indexes are derived state:
    nothing of them is persisted.
    """
    engine = db._engine
    keep: list[tuple[str, str]] = []
    for name, definition in schema.tables.items():
        for text in definition.search_indexes:
            await asyncio.to_thread(
                engine.register_text_index,
                name,
                text.name,
                text.search_field,
                list(text.filter_fields),
            )
            keep.append((name, text.name))
        for vector in definition.vector_indexes:
            await asyncio.to_thread(
                engine.register_vector_index,
                name,
                vector.name,
                vector.vector_field,
                vector.dimensions,
                list(vector.filter_fields),
                db._vector_exact_limit,
            )
            keep.append((name, vector.name))
    engine.retain_search_indexes(keep)


async def apply_schema(db: Database, schema: DatabaseSchema | None) -> list[asyncio.Task[None]]:
    """Bring the database in line with ``schema``; returns background backfill tasks.

    Raises:
        SchemaError: a stored document violates the new schema (nothing was changed).
    """
    engine = db._engine
    backfills: list[tuple[int, int, int]] = []  # (index id, snapshot ts, table size)
    if schema is None:
        # No app schema (tools such as `python -m reactive check`): change nothing. An
        # interrupted backfill resumes at the next open with the app.
        return []
    catalog = {t["name"]: t for t in engine.tables()}
    for table in catalog.values():
        for index in table["indexes"]:
            if index["ready_since"] is None and table["name"] not in schema.tables:
                # A backfill interrupted by a crash on an index the schema no longer has.
                engine.drop_index(index["id"])
    stored_raw = await db._persistence.get_global("schema")
    stored: dict[str, Any] = json.loads(stored_raw) if stored_raw else {}
    new_json: dict[str, Any] = json.loads(schema.to_json())
    changed = {
        name
        for name, table in new_json.items()
        if stored.get(name, {}).get("documentType", "missing") != table["documentType"]
    }
    await _validate_stored(db, schema, changed)
    for name in schema.tables:
        if name not in catalog:
            engine.create_table(name)
    catalog = {t["name"]: t for t in engine.tables()}
    for name, definition in schema.tables.items():
        current = {i["name"]: i for i in catalog[name]["indexes"] if i["name"] not in _BUILTIN}
        wanted = {i.name: list(i.fields) for i in definition.indexes}
        for index_name, info in current.items():
            if index_name not in wanted or info["fields"] != wanted[index_name]:
                engine.drop_index(info["id"])
                log.info("dropped index %s.%s", name, index_name)
        for index_name, fields in wanted.items():
            info = current.get(index_name)
            if info is not None and info["fields"] == fields:
                if info["ready_since"] is None:
                    backfills.append((info["id"], engine.visible_ts, 0))
                continue
            index_id, snapshot = engine.add_index(name, index_name, fields)
            backfills.append((index_id, snapshot, 0))
            log.info("added index %s.%s on %s", name, index_name, fields)
    await db._flusher.flush()
    await register_search_indexes(db, schema)
    tasks: list[asyncio.Task[None]] = []
    for index_id, snapshot, _ in backfills:
        table_name: str = next(
            t["name"] for t in engine.tables() for i in t["indexes"] if i["id"] == index_id
        )
        if engine.count_documents(table_name) <= FOREGROUND_BACKFILL_LIMIT:
            await backfill_index(db, index_id, snapshot)
        else:
            log.info("backfilling an index of %s in the background", table_name)
            tasks.append(
                asyncio.get_running_loop().create_task(
                    backfill_index(db, index_id, snapshot), name=f"reactive-backfill-{index_id}"
                )
            )
    await db._persistence.set_global("schema", schema.to_json().encode())
    return tasks

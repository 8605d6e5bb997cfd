"""Documents and data sets shared by the benchmarks.

A document is ``{"x": int, "author": str, "body": str, "score": float}`` (~150 bytes of
JSON). The read benchmarks load the same documents into a reactive database and into a
plain ``sqlite3`` table (the anchor): ``docs(id TEXT PRIMARY KEY, x, creation, value)`` with
the JSON document in ``value`` and an index on ``(x, creation)``.
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import reactive
from common import APP

BODY = "The quick brown fox jumps over the lazy dog; reactive benchmarks carry a payload. "


def make_doc(i: int, groups: int) -> dict[str, Any]:
    """Document number ``i``; ``x`` cycles through ``groups`` values."""
    return {
        "x": i % groups,
        "author": f"user-{i % 1000:04d}",
        "body": f"{i:08d} {BODY}",
        "score": i * 0.5,
    }


def connect_anchor(path: Path) -> sqlite3.Connection:
    """A ``sqlite3`` connection set up as the anchors use it: WAL, synchronous=FULL,
    autocommit mode (explicit ``BEGIN``/``COMMIT``)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


@dataclass
class ReadFixture:
    """The same documents in a reactive database and in an anchor ``sqlite3`` table."""

    db: reactive.Database
    anchor: sqlite3.Connection
    ids: list[str]
    groups: int

    async def close(self) -> None:
        """Close both."""
        await self.db.close()
        self.anchor.close()


async def load_read_fixture(directory: Path, count: int, per_group: int = 100) -> ReadFixture:
    """``count`` documents, ``per_group`` per value of ``x``, in both stores.

    The anchor gets a 64 MiB page cache so it reads from memory, as reactive does (its
    indexes are in memory): the anchor at its best.
    """
    groups = max(1, count // per_group)
    db = await reactive.open(f"sqlite:///{directory / 'reactive.db'}", app=APP)
    ids: list[str] = []
    docs = [make_doc(i, groups) for i in range(count)]
    chunk = 1000
    for start in range(0, count, chunk):
        ids.extend(await db.mutation("docs:insert_many", {"docs": docs[start : start + chunk]}))
    anchor = connect_anchor(directory / "anchor.db")
    anchor.execute("PRAGMA cache_size=-65536")
    anchor.execute(
        "CREATE TABLE docs (id TEXT PRIMARY KEY, x INTEGER NOT NULL, creation REAL NOT NULL, "
        "value TEXT NOT NULL)"
    )
    anchor.execute("CREATE INDEX docs_by_x ON docs (x, creation)")
    anchor.execute("BEGIN")
    anchor.executemany(
        "INSERT INTO docs (id, x, creation, value) VALUES (?, ?, ?, ?)",
        (
            (
                doc_id,
                doc["x"],
                float(n),
                json.dumps({"_id": doc_id, "_creationTime": float(n), **doc}),
            )
            for n, (doc_id, doc) in enumerate(zip(ids, docs, strict=True))
        ),
    )
    anchor.execute("COMMIT")
    anchor.execute("ANALYZE")
    # Warm both: every page of the anchor into its cache, every id through reactive once.
    anchor.execute("SELECT count(*), sum(length(value)) FROM docs").fetchone()
    anchor.execute("SELECT count(*) FROM docs INDEXED BY docs_by_x WHERE x >= 0").fetchone()
    return ReadFixture(db, anchor, ids, groups)


def shuffled(ids: list[str], seed: int = 7) -> list[str]:
    """A shuffled copy (gets in random order, not insertion order)."""
    out = list(ids)
    random.Random(seed).shuffle(out)
    return out

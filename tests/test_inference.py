"""``python -m reactive schema``: the inferred schema describes every stored document.

Documents of mixed shapes are written without a schema; the inferred module is then loaded
as the app's schema and the database must open with it (every document validates), and its
text must say what was inferred (unions, optionals, ids, nested objects, records).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import reactive
from reactive.inference import infer_schema, render_schema

APP = """
from reactive import mutation, v


@mutation(args={"doc": v.any()})
async def put(ctx, doc):
    return await ctx.db.insert("things", doc)


@mutation(args={"owner": v.string()})
async def put_ref(ctx, owner):
    return await ctx.db.insert("refs", {"owner": owner, "tags": [], "weird": {"a-b": 1.0}})
"""

SCHEMA_WITH_INDEX = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "things": define_table(v.any()).index("by_name", ["name"]),
    "refs": define_table(v.any()),
})
"""


async def test_inferred_schema_validates_every_document(
    db_url: str, make_app: Any, tmp_path: Path
) -> None:
    app = make_app({"m.py": APP, "schema.py": SCHEMA_WITH_INDEX})
    async with reactive.open(db_url, app=app) as db:
        first = await db.mutation("m:put", {"doc": {"name": "a", "n": 1.0, "meta": {"x": True}}})
        await db.mutation("m:put", {"doc": {"name": "b", "n": "two", "big": 2**40}})
        await db.mutation("m:put", {"doc": {"name": None, "n": 3.0, "blob": b"\x00\x01"}})
        await db.mutation("m:put_ref", {"owner": first})
        tables = await infer_schema(db)
    text = render_schema(tables)
    assert '"name": v.union(v.null(), v.string())' in text, text
    assert '"n": v.union(v.float64(), v.string())' in text, text
    assert '"big": v.optional(v.int64())' in text, text
    assert '"blob": v.optional(v.bytes())' in text, text
    assert '"x": v.boolean()' in text, text
    assert '"owner": v.id("things")' in text, text
    assert '"tags": v.array(v.any())' in text, text
    assert '"weird": v.record(v.string(), v.float64())' in text, text
    assert ".index('by_name', ['name'])" in text, text
    # The inferred module is a working schema: the database opens with it (every stored
    # document is checked against a new schema) and accepts a document of the same shape.
    inferred = make_app({"m.py": APP, "schema.py": text})
    async with reactive.open(db_url, app=inferred) as db:
        assert db.app.schema is not None
        await db.mutation("m:put", {"doc": {"name": "c", "n": 4.0}})


def test_cli_prints_the_schema(db_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "reactive", "schema", "--db", db_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('"""Inferred from the stored documents')
    assert "schema = define_schema({" in proc.stdout

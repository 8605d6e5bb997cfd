"""Search key ids are derived from each index's definition (``rust/core/src/search/mod.rs``):
the id in a conflict's key is the formula's, in any declaration order, and two indexes
whose ids collide make the schema fail, naming both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.errors import SchemaError, WriteConflict

KEY_ID_BASE = 0xF000_0000
KEY_ID_BITS = 27


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFF_FFFF_FFFF_FFFF
    return h


def _str(s: str) -> bytes:
    raw = s.encode()
    return len(raw).to_bytes(8, "big") + raw


def _list(items: list[str]) -> bytes:
    return len(items).to_bytes(8, "big") + b"".join(_str(i) for i in items)


def text_key_id(table: str, index: str, search_field: str, filter_fields: list[str]) -> int:
    """An independent implementation of the documented formula."""
    encoding = _str("text") + _str(table) + _str(index) + _str(search_field)
    return KEY_ID_BASE + (fnv1a64(encoding + _list(filter_fields)) >> (64 - KEY_ID_BITS))


def schema(indexes: list[str]) -> str:
    chained = "".join(
        f'.search_index("{name}", search_field="body", filter_fields=["channel"])'
        for name in indexes
    )
    return f"""
from reactive import define_schema, define_table, v

schema = define_schema({{
    "messages": define_table({{"channel": v.string(), "body": v.string()}}){chained},
}})
"""


FUNCS = """
from reactive import mutation, v


@mutation(args={"channel": v.string(), "body": v.string()})
async def send(ctx, channel, body):
    return await ctx.db.insert("messages", {"channel": channel, "body": body})
"""


async def conflict_key_id(db: Any, index: str) -> int:
    """The key id of the conflict a search of ``index`` meets."""
    txn = db._engine.begin(False)
    txn.text_search("messages", index, "seat", [], 10)
    txn.insert("messages", {"channel": "a", "body": "booked"})
    await db.mutation("f:send", {"channel": "a", "body": "seat"})
    with pytest.raises(WriteConflict, match="search index") as caught:
        db._engine.commit(txn)
    return int(caught.value.key[:8], 16)


@pytest.mark.parametrize("order", [["alpha", "beta"], ["beta", "alpha"]])
async def test_key_id_is_the_formula_in_any_order(
    make_app: Any, db_url: str, order: list[str]
) -> None:
    app: Path = make_app({"schema.py": schema(order), "f.py": FUNCS})
    async with reactive.open(db_url, app=app) as db:
        assert await conflict_key_id(db, "beta") == text_key_id(
            "messages", "beta", "body", ["channel"]
        )
        assert await conflict_key_id(db, "alpha") == text_key_id(
            "messages", "alpha", "body", ["channel"]
        )


def colliding_names() -> tuple[str, str]:
    seen: dict[int, str] = {}
    for i in range(1_000_000):
        name = f"i{i}"
        key_id = text_key_id("messages", name, "body", ["channel"])
        if key_id in seen:
            return seen[key_id], name
        seen[key_id] = name
    raise AssertionError("no collision among a million names")


async def test_colliding_indexes_fail_the_schema_naming_both(make_app: Any, db_url: str) -> None:
    first, second = colliding_names()
    app: Path = make_app({"schema.py": schema([first, second]), "f.py": FUNCS})
    with pytest.raises(SchemaError) as caught:
        async with reactive.open(db_url, app=app):
            pass
    message = str(caught.value)
    assert f"messages.{first}" in message and f"messages.{second}" in message, message
    # Without the second one the schema applies, and the first has the formula's id.
    app = make_app({"schema.py": schema([first]), "f.py": FUNCS})
    async with reactive.open(db_url, app=app) as db:
        assert await conflict_key_id(db, first) == text_key_id(
            "messages", first, "body", ["channel"]
        )

"""Pagination (spec §17): pages, isDone, cursors, endCursor, concurrent writes, bad cursors."""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.errors import InvalidCursorError, InvalidQueryError

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "items": define_table().index("by_n", ["n"]).index("by_g_n", ["g", "n"]),
})
"""

FUNCS = """
from reactive import mutation, query


@query
async def page(ctx, opts, index="by_n", g=None, lo=None, order="asc", even=False):
    q = ctx.db.query("items")
    if index == "by_n":
        q = q.with_index("by_n", (lambda r: r.gte("n", lo)) if lo is not None else None)
    elif index == "by_g_n":
        q = q.with_index("by_g_n", lambda r: r.eq("g", g))
    elif index != "by_creation_time":
        raise ValueError(index)
    q = q.order(order)
    if even:
        q = q.filter(lambda f: f.eq(f.mod(f.field("n"), 2), 0))
    return await q.paginate(opts)


@query
async def all(ctx, index="by_n", g=None, order="asc"):
    q = ctx.db.query("items")
    if index == "by_g_n":
        q = q.with_index("by_g_n", lambda r: r.eq("g", g))
    elif index == "by_n":
        q = q.with_index("by_n")
    return await q.order(order).collect()


@mutation
async def insert_many(ctx, docs):
    return [await ctx.db.insert("items", d) for d in docs]


@mutation
async def delete(ctx, id):
    await ctx.db.delete(id)
"""


@pytest.fixture
def app(make_app: Any) -> Path:
    return make_app({"schema.py": SCHEMA, "f.py": FUNCS})


@pytest.fixture
async def db(db_url: str, app: Path) -> Any:
    database = await reactive.open(db_url, app=app)
    try:
        yield database
    finally:
        await database.close()


async def insert(db: Any, docs: list[dict[str, Any]]) -> list[str]:
    return await db.mutation("f:insert_many", {"docs": docs})


async def page(db: Any, opts: dict[str, Any], **kw: Any) -> dict[str, Any]:
    result = await db.query("f:page", {"opts": opts, **kw})
    # The shape every official client checks (spec §17).
    assert isinstance(result["page"], list)
    assert isinstance(result["isDone"], bool)
    assert isinstance(result["continueCursor"], str)
    return result


async def walk(db: Any, num: int, **kw: Any) -> list[dict[str, Any]]:
    """Every page from the start to isDone."""
    pages = []
    cursor = None
    for _ in range(1000):
        result = await page(db, {"numItems": num, "cursor": cursor}, **kw)
        pages.append(result)
        if result["isDone"]:
            return pages
        cursor = result["continueCursor"]
    raise AssertionError("pagination never finished")


def ns(docs: list[dict[str, Any]]) -> list[int]:
    return [d["n"] for d in docs]


@pytest.fixture
async def items(db: Any) -> list[str]:
    order = list(range(23))
    random.Random(3).shuffle(order)
    ids = await insert(db, [{"n": n, "g": n % 2} for n in order])
    by_n = dict(zip(order, ids, strict=True))
    return [by_n[n] for n in range(23)]


@pytest.mark.parametrize("num", [1, 5, 7, 23, 24])
@pytest.mark.parametrize(
    "query",
    [
        {},
        {"order": "desc"},
        {"index": "by_creation_time"},
        {"index": "by_creation_time", "order": "desc"},
        {"index": "by_g_n", "g": 1},
        {"index": "by_g_n", "g": 0, "order": "desc"},
        {"lo": 10},
    ],
)
async def test_pages_concatenate_to_the_whole(
    db: Any, items: list[str], num: int, query: dict[str, Any]
) -> None:
    full_kw = {k: x for k, x in query.items() if k != "lo"}
    full = await db.query("f:all", full_kw)
    if "lo" in query:
        full = [d for d in full if d["n"] >= query["lo"]]
    pages = await walk(db, num, **query)
    joined = [d for p in pages for d in p["page"]]
    assert [d["_id"] for d in joined] == [d["_id"] for d in full]
    # Every page but the last is full; only the last reports isDone.
    for p in pages[:-1]:
        assert len(p["page"]) == num
        assert p["isDone"] is False
    assert pages[-1]["isDone"] is True
    assert len(pages[-1]["page"]) <= num
    # A whole number of full pages ends with an extra empty page (spec §17).
    if len(full) % num == 0:
        assert pages[-1]["page"] == []
        assert len(pages) == len(full) // num + 1
    else:
        assert len(pages) == len(full) // num + 1
    assert all(p["splitCursor"] is None and p["pageStatus"] is None for p in pages)


async def test_exactly_full_page_then_empty_done(db: Any) -> None:
    await insert(db, [{"n": n} for n in range(10)])
    first = await page(db, {"numItems": 10, "cursor": None})
    assert ns(first["page"]) == list(range(10))
    assert first["isDone"] is False
    second = await page(db, {"numItems": 10, "cursor": first["continueCursor"]})
    assert second["page"] == []
    assert second["isDone"] is True
    # The end cursor stays at the end.
    third = await page(db, {"numItems": 10, "cursor": second["continueCursor"]})
    assert third["page"] == []
    assert third["isDone"] is True
    assert isinstance(third["continueCursor"], str)
    # A page that runs off the end is done at once.
    bigger = await page(db, {"numItems": 11, "cursor": None})
    assert ns(bigger["page"]) == list(range(10))
    assert bigger["isDone"] is True


async def test_empty_table(db: Any) -> None:
    result = await page(db, {"numItems": 5, "cursor": None})
    assert result["page"] == []
    assert result["isDone"] is True
    # Documents inserted after the end was reached are not seen from the end cursor.
    await insert(db, [{"n": 1}])
    again = await page(db, {"numItems": 5, "cursor": result["continueCursor"]})
    assert again["page"] == []
    assert again["isDone"] is True


async def test_float_num_items_as_clients_send_them(db: Any) -> None:
    await insert(db, [{"n": n} for n in range(5)])
    result = await page(db, {"numItems": 2.0, "cursor": None, "id": 7.0})
    assert ns(result["page"]) == [0, 1]


async def test_filtered_pages(db: Any, items: list[str]) -> None:
    pages = await walk(db, 3, even=True)
    joined = [d for p in pages for d in p["page"]]
    assert ns(joined) == list(range(0, 23, 2))


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_no_gaps_or_repeats_with_concurrent_inserts(db: Any, order: str) -> None:
    await insert(db, [{"n": n} for n in range(0, 100, 10)])  # 0, 10, ..., 90
    asc = order == "asc"
    first = await page(db, {"numItems": 3, "cursor": None}, order=order)
    assert ns(first["page"]) == ([0, 10, 20] if asc else [90, 80, 70])
    # Insert around the cursor: before it (already passed), just after it, and far after.
    if asc:
        before, after = [5, 15, 20], [21, 25, 95]
    else:
        before, after = [85, 75, 70], [69, 65, -5]
    await insert(db, [{"n": n, "late": True} for n in before + after])
    rest: list[dict[str, Any]] = []
    cursor = first["continueCursor"]
    while True:
        result = await page(db, {"numItems": 3, "cursor": cursor}, order=order)
        rest += result["page"]
        if result["isDone"]:
            break
        cursor = result["continueCursor"]
        # Between pages, more inserts on both sides of the cursor.
        last = result["page"][-1]["n"]
        await insert(db, [{"n": last - 1 if asc else last + 1, "late": "behind"}])
        await insert(db, [{"n": last + 1 if asc else last - 1, "late": "ahead"}])
    seen = ns(first["page"]) + ns(rest)
    ids = [d["_id"] for d in first["page"] + rest]
    assert len(ids) == len(set(ids))  # no repeats
    assert seen == sorted(seen, reverse=not asc)  # one ordered walk (ties by creation)
    # Nothing inserted behind the cursor appears; everything ahead of it does.
    assert not any(d.get("late") == "behind" for d in rest)
    assert sum(d.get("late") == "ahead" for d in rest) >= 2
    for n in before:
        if n != 20:
            assert n not in ns(rest)
    for n in after:
        assert n in ns(rest)
    # Exactly: every document now in the table that sorts after the first page, except the
    # ones inserted behind a later cursor.
    final = await db.query("f:all", {"order": order})
    final_ids = [d["_id"] for d in final]
    start = final_ids.index(first["page"][-1]["_id"]) + 1
    expected = [d["_id"] for d in final[start:] if d.get("late") != "behind"]
    assert ids[3:] == expected
    # The same n as the cursor, inserted later, sorts after it ascending, before it descending.
    late_ns = [d["n"] for d in rest if d.get("late") is True]
    assert (20 in late_ns) is asc
    assert 70 not in late_ns


async def test_deleting_the_cursor_document(db: Any) -> None:
    ids = await insert(db, [{"n": n} for n in range(10)])
    first = await page(db, {"numItems": 4, "cursor": None})
    assert ns(first["page"]) == [0, 1, 2, 3]
    await db.mutation("f:delete", {"id": ids[3]})
    await db.mutation("f:delete", {"id": ids[4]})
    second = await page(db, {"numItems": 4, "cursor": first["continueCursor"]})
    assert ns(second["page"]) == [5, 6, 7, 8]


async def test_end_cursor(db: Any) -> None:
    await insert(db, [{"n": n} for n in range(0, 100, 10)])
    p1 = await page(db, {"numItems": 3, "cursor": None})
    p2 = await page(db, {"numItems": 3, "cursor": p1["continueCursor"]})
    assert ns(p1["page"]) == [0, 10, 20]
    assert ns(p2["page"]) == [30, 40, 50]
    c1, c2 = p1["continueCursor"], p2["continueCursor"]
    # With endCursor: exactly up to it, whatever numItems says; continueCursor is it.
    again1 = await page(db, {"numItems": 1, "cursor": None, "endCursor": c1})
    assert ns(again1["page"]) == [0, 10, 20]
    assert again1["continueCursor"] == c1
    assert again1["isDone"] is False
    again2 = await page(db, {"numItems": 100, "cursor": c1, "endCursor": c2})
    assert ns(again2["page"]) == [30, 40, 50]
    assert again2["continueCursor"] == c2
    assert again2["isDone"] is False
    # The page grows with inserts inside its range, never past its ends.
    await insert(db, [{"n": n} for n in (-1, 25, 35, 50, 55, 99)])
    grown1 = await page(db, {"numItems": 1, "cursor": None, "endCursor": c1})
    assert ns(grown1["page"]) == [-1, 0, 10, 20]
    grown2 = await page(db, {"numItems": 1, "cursor": c1, "endCursor": c2})
    assert ns(grown2["page"]) == [25, 30, 35, 40, 50]  # the new 50 sorts after the old one
    # The last page, re-covered to its End cursor, runs to the end of the range.
    p3 = await page(db, {"numItems": 100, "cursor": c2})
    assert p3["isDone"] is True
    tail = await page(db, {"numItems": 1, "cursor": c2, "endCursor": p3["continueCursor"]})
    assert ns(tail["page"]) == [50, 55, 60, 70, 80, 90, 99]
    assert tail["isDone"] is True
    assert tail["continueCursor"] == p3["continueCursor"]
    # Pages joined by their end cursors cover everything once.
    joined = grown1["page"] + grown2["page"] + tail["page"]
    assert ns(joined) == ns(await db.query("f:all", {}))


async def test_end_cursor_descending(db: Any) -> None:
    await insert(db, [{"n": n} for n in range(6)])
    p1 = await page(db, {"numItems": 2, "cursor": None}, order="desc")
    p2 = await page(db, {"numItems": 2, "cursor": p1["continueCursor"]}, order="desc")
    assert ns(p1["page"]) == [5, 4]
    assert ns(p2["page"]) == [3, 2]
    await insert(db, [{"n": 3.5}, {"n": 4}])
    again = await page(
        db,
        {"numItems": 1, "cursor": p1["continueCursor"], "endCursor": p2["continueCursor"]},
        order="desc",
    )
    # 3.5 is a float64, so it sorts above every int64: it is not in this range.
    assert ns(again["page"]) == [3, 2]


async def test_cursor_of_another_query_is_refused(db: Any, items: list[str]) -> None:
    base = await page(db, {"numItems": 3, "cursor": None})
    cursor = base["continueCursor"]
    others: list[dict[str, Any]] = [
        {"order": "desc"},
        {"index": "by_creation_time"},
        {"index": "by_g_n", "g": 0},
        {"lo": 0},
    ]
    for kw in others:
        with pytest.raises(InvalidCursorError):
            await page(db, {"numItems": 3, "cursor": cursor}, **kw)
        with pytest.raises(InvalidCursorError):
            await page(db, {"numItems": 3, "cursor": None, "endCursor": cursor}, **kw)
    g0 = (await page(db, {"numItems": 3, "cursor": None}, index="by_g_n", g=0))["continueCursor"]
    with pytest.raises(InvalidCursorError):
        await page(db, {"numItems": 3, "cursor": g0}, index="by_g_n", g=1)
    # The End cursor is bound to its query too.
    end = (await page(db, {"numItems": 100, "cursor": None}))["continueCursor"]
    with pytest.raises(InvalidCursorError):
        await page(db, {"numItems": 3, "cursor": end}, order="desc")
    # The right query still accepts them.
    assert ns((await page(db, {"numItems": 3, "cursor": cursor}))["page"]) == [3, 4, 5]
    assert (await page(db, {"numItems": 3, "cursor": g0}, index="by_g_n", g=0))["page"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_tampered_cursors_are_refused(db: Any, items: list[str]) -> None:
    cursor = (await page(db, {"numItems": 3, "cursor": None}))["continueCursor"]
    raw = _unb64(cursor)
    tampered = []
    for i in range(len(raw)):  # flip one bit of each byte in turn
        changed = bytearray(raw)
        changed[i] ^= 0x01
        tampered.append(_b64(bytes(changed)))
    tampered += [
        _b64(raw[:-1]),
        _b64(raw + b"\x00"),
        cursor[: len(cursor) // 2],
        "",
        "not a cursor!",
        "AAAA",
        "x" * 10_000,
    ]
    for bad in tampered:
        with pytest.raises(InvalidCursorError):
            await page(db, {"numItems": 3, "cursor": bad})
    for bad in (123, 1.5, ["a"], {"a": 1}, True, b"bytes"):
        with pytest.raises(InvalidCursorError):
            await page(db, {"numItems": 3, "cursor": bad})


async def test_cursors_survive_reopen_but_not_another_database(
    db_url: str, app: Path, tmp_path: Path
) -> None:
    async with reactive.open(db_url, app=app) as db:
        await insert(db, [{"n": n} for n in range(6)])
        cursor = (await page(db, {"numItems": 2, "cursor": None}))["continueCursor"]
    async with reactive.open(db_url, app=app) as db:
        assert ns((await page(db, {"numItems": 2, "cursor": cursor}))["page"]) == [2, 3]
    other_url = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    async with reactive.open(other_url, app=app) as other:
        await insert(other, [{"n": n} for n in range(6)])
        with pytest.raises(InvalidCursorError):
            await page(other, {"numItems": 2, "cursor": cursor})


@pytest.mark.parametrize("num", [0, -1, -100, 0.0, 1.5, "3", None, True])
async def test_bad_num_items(db: Any, items: list[str], num: Any) -> None:
    with pytest.raises(InvalidQueryError) as info:
        await page(db, {"numItems": num, "cursor": None})
    assert not isinstance(info.value, InvalidCursorError)
    assert "numItems" in str(info.value)


async def test_bad_options(db: Any) -> None:
    with pytest.raises(InvalidQueryError):
        await page(db, {"cursor": None})

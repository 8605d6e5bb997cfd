"""Model-based test: the public API against a plain-Python model of tables and indexes.

A hypothesis ``RuleBasedStateMachine`` drives ``insert`` / ``patch`` / ``replace`` /
``delete`` (alone, several in one mutation, and in a mutation that fails after writing),
``get``, queries (``with_index`` eq and range, ``order``, ``filter``, ``collect`` / ``take``
/ ``first`` / ``unique``) and ``paginate`` (following the cursors to the end, with writes or
a reopen between pages) through ``reactive.open(url, app=...)`` and ``db.mutation`` /
``db.query``, and compares every answer with a model: a dict of documents, sorted by the
index key of spec §12.

The model's index key (spec §12, ``rust/core/src/catalog.rs``, ``keys.rs``): the indexed
field values in Convex's total order (missing < null < int64 < float64 < boolean < string <
bytes < array < object; float64 by IEEE total order, so -0.0 < 0.0; strings and bytes by
bytes; arrays and objects element-wise, a prefix first), then ``_creationTime``, then
``_id`` (as a string value, so by its UTF-8 bytes). ``by_creation_time`` is
``[_creationTime, _id]``. A filter compares with the same order. Results are compared
strictly (``True`` is not ``1``, ``1`` is not ``1.0``, ``-0.0`` is not ``0.0``, NaN is NaN).

Closing and reopening the database is a rule too: the state must persist, and a cursor
handed out before the reopen must still work after it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import reactive
from reactive.errors import ConvexError, DocumentNotFoundError, InvalidQueryError

SCHEMA = """
from reactive import define_schema, define_table

schema = define_schema({
    "items": define_table().index("by_a", ["a"]).index("by_a_b", ["a", "b"]),
})
"""

FUNCS = """
from reactive import ConvexError, mutation, query


def _range(ops):
    def build(r):
        for op, field, value in ops:
            r = getattr(r, op)(field, value)
        return r
    return build


def _expr(q, tree):
    kind = tree[0]
    if kind == "and":
        return q.and_(*(_expr(q, t) for t in tree[1:]))
    if kind == "or":
        return q.or_(*(_expr(q, t) for t in tree[1:]))
    if kind == "not":
        return q.not_(_expr(q, tree[1]))
    _, op, field, value = tree
    return getattr(q, op)(q.field(field), value)


def _build(ctx, spec):
    q = ctx.db.query("items")
    if spec["index"] is not None:
        q = q.with_index(spec["index"], _range(spec["ops"]) if spec["ops"] else None)
    if spec["order"] is not None:
        q = q.order(spec["order"])
    if spec["filter"] is not None:
        q = q.filter(lambda f: _expr(f, spec["filter"]))
    return q


@query
async def run(ctx, spec):
    q = _build(ctx, spec)
    end = spec["end"]
    if end == "collect":
        return await q.collect()
    if end == "take":
        return await q.take(spec["n"])
    if end == "first":
        return await q.first()
    if end == "unique":
        return await q.unique()
    async_iterated = []
    async for doc in q:
        async_iterated.append(doc)
    return async_iterated


@query
async def page(ctx, spec, opts):
    return await _build(ctx, spec).paginate(opts)


@query
async def get(ctx, id):
    return await ctx.db.get(id)


@query
async def everything(ctx):
    return await ctx.db.query("items").collect()


async def _apply(ctx, op):
    kind = op[0]
    if kind == "insert":
        return await ctx.db.get(await ctx.db.insert("items", op[1]))
    if kind == "patch":
        await ctx.db.patch(op[1], op[2])
    elif kind == "replace":
        await ctx.db.replace(op[1], op[2])
    elif kind == "delete":
        await ctx.db.delete(op[1])
        return None
    return await ctx.db.get(op[1])


@mutation
async def apply(ctx, ops, fail):
    # Every op sees the writes of the ones before it; `fail` rolls all of them back.
    out = [await _apply(ctx, op) for op in ops]
    if fail:
        raise ConvexError("rolled back")
    return out
"""

# -- Convex's total order (spec §12) --------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _float_bits(x: float) -> int:
    bits: int = struct.unpack(">Q", struct.pack(">d", x))[0]
    return bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | (1 << 63)


def vkey(v: Any) -> tuple[Any, ...]:
    """A Python key whose order is Convex's value order (``MISSING`` = undefined)."""
    if v is MISSING:
        return (0,)
    if v is None:
        return (1,)
    if isinstance(v, bool):
        return (4, v)
    if isinstance(v, int):
        return (2, v)
    if isinstance(v, float):
        return (3, _float_bits(v))
    if isinstance(v, str):
        return (5, v.encode())
    if isinstance(v, bytes):
        return (6, v)
    if isinstance(v, list):
        return (7, tuple(vkey(x) for x in v))
    if isinstance(v, dict):
        pairs = sorted(v.items(), key=lambda kv: kv[0].encode())
        return (8, tuple((k.encode(), vkey(x)) for k, x in pairs))
    raise TypeError(type(v))


def canon(v: Any) -> Any:
    """A form whose ``==`` is Convex's equality (strict on types, -0.0 and NaN by bits)."""
    if isinstance(v, (bool, int, float)) or v is None:
        return vkey(v)
    if isinstance(v, list):
        return ("list", tuple(canon(x) for x in v))
    if isinstance(v, dict):
        return ("obj", tuple(sorted((k, canon(x)) for k, x in v.items())))
    return (type(v).__name__, v)


INDEX_FIELDS = {
    "by_creation_time": [],
    "by_a": ["a"],
    "by_a_b": ["a", "b"],
}


def index_key(doc: dict[str, Any], index: str) -> tuple[Any, ...]:
    fields = [vkey(doc.get(f, MISSING)) for f in INDEX_FIELDS[index]]
    return (*fields, vkey(doc["_creationTime"]), vkey(doc["_id"]))


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda x, y: x == y,
    "neq": lambda x, y: x != y,
    "lt": lambda x, y: x < y,
    "lte": lambda x, y: x <= y,
    "gt": lambda x, y: x > y,
    "gte": lambda x, y: x >= y,
}


def eval_filter(tree: list[Any], doc: dict[str, Any]) -> bool:
    kind = tree[0]
    if kind == "and":
        return all(eval_filter(t, doc) for t in tree[1:])
    if kind == "or":
        return any(eval_filter(t, doc) for t in tree[1:])
    if kind == "not":
        return not eval_filter(tree[1], doc)
    _, op, field, value = tree
    return _CMP[op](vkey(doc.get(field, MISSING)), vkey(value))


def in_range(ops: list[list[Any]], doc: dict[str, Any]) -> bool:
    return all(_CMP[op](vkey(doc.get(field, MISSING)), vkey(value)) for op, field, value in ops)


# -- strategies ------------------------------------------------------------------------

# Values chosen to cross every type boundary of the order, with the awkward members of
# each type: -0.0 beside 0.0, NaN, infinities, int64 beside the same float64 and bool,
# strings with NUL and non-ASCII, bytes prefixes, nested arrays and objects.
A_VALUES: list[Any] = [
    None,
    -3,
    0,
    1,
    2**40,
    -1.5,
    -0.0,
    0.0,
    1.0,
    2.5,
    math.inf,
    -math.inf,
    math.nan,
    False,
    True,
    "",
    "a",
    "a\x00b",
    "b",
    "é",
    b"",
    b"\x00",
    b"a",
    [],
    [1],
    [1, "x"],
    {},
    {"k": 1},
    {"k": "v"},
    {"j": 0},
]
B_VALUES: list[Any] = [None, -2, -1, 0, 1, 2, 0.5, "z"]

a_values = st.sampled_from(A_VALUES)
b_values = st.sampled_from(B_VALUES)


def with_refs(values: Any) -> Any:
    """A literal, or (often) ``{"$ref": k}``: the same field of the k-th live document,
    resolved when the rule runs, so ranges and filters hit documents that exist."""
    return st.one_of(values, st.builds(lambda k: {"$ref": k}, st.integers(0, 10**6)))


@st.composite
def documents(draw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"n": draw(st.integers(0, 9))}
    if draw(st.integers(0, 9)) < 8:
        doc["a"] = draw(a_values)
    if draw(st.integers(0, 9)) < 6:
        doc["b"] = draw(b_values)
    return doc


@st.composite
def patches(draw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, values in (("a", a_values), ("b", b_values), ("n", st.integers(0, 9))):
        if draw(st.booleans()):
            fields[name] = draw(values)
    return fields


LOWER = ["gt", "gte"]
UPPER = ["lt", "lte"]


@st.composite
def bound_ops(draw: Any, field: str, values: Any) -> list[list[Any]]:
    ops: list[list[Any]] = []
    if draw(st.booleans()):
        ops.append([draw(st.sampled_from(LOWER)), field, draw(values)])
    if draw(st.booleans()):
        ops.append([draw(st.sampled_from(UPPER)), field, draw(values)])
    return ops


@st.composite
def filters(draw: Any, depth: int = 2) -> list[Any]:
    if depth > 0 and draw(st.integers(0, 3)) == 0:
        kind = draw(st.sampled_from(["and", "or", "not"]))
        if kind == "not":
            return ["not", draw(filters(depth - 1))]
        return [kind, draw(filters(depth - 1)), draw(filters(depth - 1))]
    field = draw(st.sampled_from(["a", "b", "n"]))
    value = draw(with_refs({"a": a_values, "b": b_values, "n": st.integers(0, 9)}[field]))
    return ["cmp", draw(st.sampled_from(sorted(_CMP))), field, value]


@st.composite
def query_specs(draw: Any) -> dict[str, Any]:
    index = draw(st.sampled_from([None, "by_creation_time", "by_a", "by_a_b"]))
    ops: list[list[Any]] = []
    a, b = with_refs(a_values), with_refs(b_values)
    if index == "by_a":
        ops = [["eq", "a", draw(a)]] if draw(st.booleans()) else draw(bound_ops("a", a))
    elif index == "by_a_b":
        shape = draw(st.integers(0, 3))
        if shape == 1:
            ops = draw(bound_ops("a", a))
        elif shape == 2:
            ops = [["eq", "a", draw(a)], *draw(bound_ops("b", b))]
        elif shape == 3:
            ops = [["eq", "a", draw(a)], ["eq", "b", draw(b)]]
    elif index == "by_creation_time":
        refs = st.builds(lambda k: {"$ref": k}, st.integers(0, 10**6))
        ops = draw(bound_ops("_creationTime", refs))
    return {
        "index": index,
        "ops": ops,
        "order": draw(st.sampled_from([None, "asc", "desc"])),
        "filter": draw(st.one_of(st.none(), filters())),
        "end": draw(st.sampled_from(["collect", "take", "first", "unique", "iterate"])),
        "n": draw(st.integers(0, 6)),
    }


write_plans = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), documents(), st.none()),
        st.tuples(st.just("patch"), st.integers(0, 10**6), patches()),
        st.tuples(st.just("replace"), st.integers(0, 10**6), documents()),
        st.tuples(st.just("delete"), st.integers(0, 10**6), st.none()),
    ),
    min_size=1,
    max_size=5,
)

# -- the machine -----------------------------------------------------------------------

_db_counter = itertools.count()
STATS: collections.Counter[str] = collections.Counter()  # what ran, printed at the end


class DatabaseModel(RuleBasedStateMachine):
    """One database per example, opened on its own event loop (state machines are sync)."""

    directory: Path
    app: Path

    def __init__(self) -> None:
        super().__init__()
        self.url = f"sqlite:///{self.directory / f'model{next(_db_counter)}.sqlite3'}"
        self.runner = asyncio.Runner()
        self.db: Any = None
        self.db = self.run(self.open())
        self.docs: dict[str, dict[str, Any]] = {}  # the model: live documents by id
        self.ids: list[str] = []  # every id ever inserted (deleted ones too)
        self.steps_since_reopen = 0

    async def open(self) -> Any:
        return await reactive.open(self.url, app=self.app)

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    def teardown(self) -> None:
        try:
            if self.db is not None:
                self.run(self.db.close())
        finally:
            self.runner.close()

    # -- helpers -------------------------------------------------------------------

    def pick(self, k: int) -> str:
        """Mostly a live document; one time in five any id ever inserted (maybe deleted)."""
        live = list(self.docs)
        if live and k % 5:
            return live[(k // 5) % len(live)]
        return self.ids[k % len(self.ids)]

    def expected(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        index = spec["index"] or "by_creation_time"
        docs = [d for d in self.docs.values() if in_range(spec["ops"], d)]
        if spec["filter"] is not None:
            docs = [d for d in docs if eval_filter(spec["filter"], d)]
        docs.sort(key=lambda d: index_key(d, index), reverse=spec["order"] == "desc")
        return docs

    def resolve(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Replace each ``{"$ref": k}`` by the field's value in the k-th live document."""
        live = list(self.docs.values())

        def value(field: str, x: Any) -> Any:
            if not (isinstance(x, dict) and "$ref" in x):
                return x
            if not live:
                return 0.0 if field == "_creationTime" else None
            return live[x["$ref"] % len(live)].get(field, None)

        def tree(t: list[Any]) -> list[Any]:
            if t[0] == "cmp":
                return ["cmp", t[1], t[2], value(t[2], t[3])]
            return [t[0], *(tree(x) if isinstance(x, list) else x for x in t[1:])]

        ops = [[op, field, value(field, x)] for op, field, x in spec["ops"]]
        filter_tree = None if spec["filter"] is None else tree(spec["filter"])
        return {**spec, "ops": ops, "filter": filter_tree}

    def mutate(self, ops: list[list[Any]], fail: bool = False) -> list[Any]:
        return self.run(self.db.mutation("m:apply", {"ops": ops, "fail": fail}))

    def apply_to_model(self, op: list[Any], model: dict[str, dict[str, Any]], result: Any) -> None:
        kind = op[0]
        if kind == "insert":
            assert isinstance(result, dict), result
            assert canon({k: v for k, v in result.items() if not k.startswith("_")}) == canon(op[1])
            assert result["_id"] not in model and result["_id"] not in self.ids
            model[result["_id"]] = result
            self.ids.append(result["_id"])
            return
        doc_id = op[1]
        if kind == "delete":
            del model[doc_id]
            return
        current = model[doc_id]
        system = {"_id": current["_id"], "_creationTime": current["_creationTime"]}
        new = {**current, **op[2]} if kind == "patch" else {**system, **op[2]}
        assert canon(result) == canon(new), (op, result, new)
        model[doc_id] = new

    def check_same(self, got: list[dict[str, Any]], want: list[dict[str, Any]], what: Any) -> None:
        assert [d["_id"] for d in got] == [d["_id"] for d in want], what
        assert canon(got) == canon(want), what

    # -- writes ----------------------------------------------------------------------

    @initialize(docs=st.lists(documents(), max_size=30))
    def load(self, docs: list[dict[str, Any]]) -> None:
        if docs:
            ops = [["insert", d] for d in docs]
            for op, result in zip(ops, self.mutate(ops), strict=True):
                self.apply_to_model(op, self.docs, result)

    @rule(doc=documents())
    def insert(self, doc: dict[str, Any]) -> None:
        op = ["insert", doc]
        (result,) = self.mutate([op])
        self.apply_to_model(op, self.docs, result)

    @rule(docs=st.lists(documents(), min_size=2, max_size=4))
    def insert_many(self, docs: list[dict[str, Any]]) -> None:
        ops = [["insert", d] for d in docs]
        results = self.mutate(ops)
        for op, result in zip(ops, results, strict=True):
            self.apply_to_model(op, self.docs, result)

    @precondition(lambda self: self.ids)
    @rule(k=st.integers(0, 10**6), fields=patches())
    def patch(self, k: int, fields: dict[str, Any]) -> None:
        self.write_one(["patch", self.pick(k), fields])

    @precondition(lambda self: self.ids)
    @rule(k=st.integers(0, 10**6), doc=documents())
    def replace(self, k: int, doc: dict[str, Any]) -> None:
        self.write_one(["replace", self.pick(k), doc])

    @precondition(lambda self: self.ids)
    @rule(k=st.integers(0, 10**6))
    def delete(self, k: int) -> None:
        self.write_one(["delete", self.pick(k)])

    def write_one(self, op: list[Any]) -> None:
        STATS[op[0]] += 1
        if op[1] not in self.docs:
            STATS[f"{op[0]} of a deleted document"] += 1
            try:
                self.mutate([op])
            except DocumentNotFoundError:
                return
            raise AssertionError(f"{op[0]} of a deleted document succeeded")
        (result,) = self.mutate([op])
        self.apply_to_model(op, self.docs, result)

    @rule(plan=write_plans, fail=st.booleans())
    def several_in_one_mutation(self, plan: list[tuple[str, Any, Any]], fail: bool) -> None:
        """Several writes in one transaction, each seeing the ones before; ``fail`` rolls
        every one of them back."""
        model = dict(self.docs)
        ops: list[list[Any]] = []
        known = list(self.ids)
        for kind, x, y in plan:
            if kind == "insert":
                ops.append(["insert", x])
                continue
            live = [i for i in known if i in model] if known else []
            if not live:
                continue
            target = live[x % len(live)]
            ops.append([kind, target] if kind == "delete" else [kind, target, y])
            if kind == "delete":
                model = {i: d for i, d in model.items() if i != target}
        if not ops:
            return
        STATS["several in one mutation" + (", rolled back" if fail else "")] += 1
        if fail:
            try:
                self.mutate(ops, fail=True)
            except ConvexError as exc:
                assert exc.data == "rolled back"
            else:
                raise AssertionError("the failing mutation succeeded")
            return  # nothing changed: the invariant checks it
        results = self.mutate(ops)
        for op, result in zip(ops, results, strict=True):
            self.apply_to_model(op, self.docs, result)

    # -- reads -----------------------------------------------------------------------

    @precondition(lambda self: self.ids)
    @rule(k=st.integers(0, 10**6))
    def get(self, k: int) -> None:
        doc_id = self.pick(k)
        got = self.run(self.db.query("m:get", {"id": doc_id}))
        want = self.docs.get(doc_id)
        assert canon(got) == canon(want), (doc_id, got, want)

    @rule(specs=st.lists(query_specs(), min_size=1, max_size=4))
    def queries(self, specs: list[dict[str, Any]]) -> None:
        for spec in specs:
            self.query(spec)

    def query(self, spec: dict[str, Any]) -> None:
        spec = self.resolve(spec)
        want = self.expected(spec)
        end = spec["end"]
        if end == "unique" and len(want) > 1:
            try:
                self.run(self.db.query("m:run", {"spec": spec}))
            except InvalidQueryError:
                return
            raise AssertionError(f"unique() of {len(want)} documents did not fail: {spec}")
        got = self.run(self.db.query("m:run", {"spec": spec}))
        STATS[f"query {end}"] += 1
        STATS["query results non-empty"] += bool(want)
        STATS["query with range"] += bool(spec["ops"])
        STATS["query with range, non-empty"] += bool(spec["ops"]) and bool(want)
        STATS["query with filter, non-empty"] += spec["filter"] is not None and bool(want)
        if end in ("first", "unique"):
            assert canon(got) == canon(want[0] if want else None), (spec, got, want[:1])
            return
        if end == "take":
            want = want[: spec["n"]]
        self.check_same(got, want, spec)

    @rule(
        spec=query_specs(),
        num=st.integers(1, 5),
        between=st.lists(
            st.sampled_from(["nothing", "insert", "delete", "patch", "reopen"]), max_size=6
        ),
        docs=st.lists(documents(), min_size=6, max_size=6),
        picks=st.lists(st.integers(0, 10**6), min_size=6, max_size=6),
    )
    def paginate(
        self,
        spec: dict[str, Any],
        num: int,
        between: list[str],
        docs: list[dict[str, Any]],
        picks: list[int],
    ) -> None:
        """Follow the cursors to the end; between pages, maybe a write or a reopen.

        A cursor is the position just after the last document of its page, so the next
        page must be the model's documents strictly after that key, as the model is then.
        """
        spec = {**self.resolve(spec), "end": "paginate"}
        index = spec["index"] or "by_creation_time"
        desc = spec["order"] == "desc"
        cursor = None
        last_key: tuple[Any, ...] | None = None
        for page_no in range(200):
            want = self.expected(spec)
            if last_key is not None:
                want = [
                    d
                    for d in want
                    if (index_key(d, index) < last_key if desc else index_key(d, index) > last_key)
                ]
            opts = {"numItems": num, "cursor": cursor}
            result = self.run(self.db.query("m:page", {"spec": spec, "opts": opts}))
            page = result["page"]
            STATS["pages"] += 1
            assert len(page) == min(num, len(want)), (spec, page_no, len(page), len(want))
            self.check_same(page, want[: len(page)], (spec, page_no))
            if result["isDone"]:
                assert len(want) == len(page), (spec, page_no, "isDone with documents left")
                STATS["paginations"] += 1
                STATS["paginations over several pages"] += page_no > 0
                return
            assert isinstance(result["continueCursor"], str)
            cursor = result["continueCursor"]
            if page:
                last_key = index_key(page[-1], index)
            if page_no < len(between):
                self.between_pages(between[page_no], docs[page_no % 6], picks[page_no % 6])
        raise AssertionError(f"pagination did not end after 200 pages: {spec}")

    def between_pages(self, what: str, doc: dict[str, Any], k: int) -> None:
        STATS[f"between pages: {what}"] += 1
        if what == "insert":
            self.insert(doc)
        elif what == "reopen":
            self.reopen()
        elif self.ids and what == "delete":
            self.delete(k)
        elif self.ids and what == "patch":
            self.patch(k, {"a": doc.get("a"), "b": doc.get("b", 0)})

    # -- persistence -------------------------------------------------------------------

    @precondition(lambda self: self.steps_since_reopen >= 4)
    @rule()
    def reopen(self) -> None:
        """Close and open again: everything committed is still there, indexes agree."""
        self.run(self.db.close())
        self.db = None
        self.db = self.run(self.open())
        STATS["reopens"] += 1
        self.steps_since_reopen = 0
        report = self.run(self.db.check())
        assert report["problems"] == [], report["problems"][:5]
        assert report["documents"] >= len(self.docs)

    @invariant()
    def everything_matches(self) -> None:
        got = self.run(self.db.query("m:everything", {}))
        want = sorted(self.docs.values(), key=lambda d: index_key(d, "by_creation_time"))
        self.check_same(got, want, "the whole table")
        STATS["steps"] += 1
        self.steps_since_reopen += 1
        STATS["max documents"] = max(STATS["max documents"], len(self.docs))


def test_database_matches_model(tmp_path: Path, make_app: Any) -> None:
    DatabaseModel.directory = tmp_path
    DatabaseModel.app = make_app({"schema.py": SCHEMA, "m.py": FUNCS})
    run_state_machine_as_test(
        DatabaseModel,
        settings=settings(
            max_examples=int(os.environ.get("REACTIVE_MODEL_EXAMPLES", "40")),
            stateful_step_count=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print("\nmodel test:", ", ".join(f"{k} {v}" for k, v in sorted(STATS.items())))

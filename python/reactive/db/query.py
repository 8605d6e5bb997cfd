"""Queries: ``ctx.db.query(table).with_index(...).order(...).filter(...)`` and its ends.

A query names one index of one table (``by_creation_time`` unless ``with_index`` says
otherwise), a range on it, an order and optional filters; the Rust core scans the range at
the transaction's snapshot (merged with the transaction's own writes), evaluates filters and
records in the read set exactly the part of the range it consumed (so ``take(5)`` depends on
five documents, not the whole table). Shapes follow Convex's ``QueryInitializer`` /
``OrderedQuery`` / ``Query``, with ``and_``/``or_``/``not_`` for Python.

Errors:
    ``InvalidQueryError`` for a bad range, order or filter; ``IndexNotFoundError``;
    ``IndexNotReadyError`` while an index backfills; ``InvalidCursorError`` for a cursor
    from another query; ``LimitExceededError`` past the per-transaction read limits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from reactive.db.cursor import CursorCodec
from reactive.errors import InvalidCursorError, InvalidQueryError, ReactiveError
from reactive.schema import is_float_field
from reactive.values import Int64

if TYPE_CHECKING:
    from reactive.db.context import DatabaseReader
    from reactive.db.search import SearchFilterBuilder, SearchQuery

__all__ = [
    "Expression",
    "FilterBuilder",
    "IndexRangeBuilder",
    "PaginationResult",
    "Query",
]

PaginationResult = dict[str, Any]
"""``{"page": [doc...], "isDone": bool, "continueCursor": str, "splitCursor": None,
"pageStatus": None}`` (spec §17)."""

# Pages fetched by ``async for``: small first (a loop that breaks early reads little), then
# larger (a loop that runs on pays few round trips into the core).
_ITER_PAGES = (8, 32, 128, 512)


def num_items(options: Any) -> int:
    """``options["numItems"]`` of a ``paginate`` call, checked.

    Raises:
        InvalidQueryError: ``options`` is not a dict, or ``numItems`` not a positive integer.
    """
    if not isinstance(options, dict):
        raise InvalidQueryError('paginate() needs {"numItems": n, "cursor": ...}')
    num = options.get("numItems")
    if isinstance(num, float) and num.is_integer():
        num = int(num)
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise InvalidQueryError(f"paginate(): numItems must be a positive integer, not {num!r}")
    return num


def page_result(page: list[dict[str, Any]], done: bool, cursor: str) -> PaginationResult:
    """A ``PaginationResult`` with no split cursor or page status."""
    return {
        "page": page,
        "isDone": done,
        "continueCursor": cursor,
        "splitCursor": None,
        "pageStatus": None,
    }


class Expression:
    """A filter expression node; build them with the ``q`` of ``filter(lambda q: ...)``."""

    __slots__ = ("tree",)

    def __init__(self, tree: tuple[Any, ...]) -> None:
        self.tree = tree

    def __bool__(self) -> bool:
        raise InvalidQueryError(
            "filter expressions cannot be used with Python's and/or/not or in if statements: "
            "use q.and_(...), q.or_(...), q.not_(...)"
        )

    def __repr__(self) -> str:
        return f"Expression{self.tree!r}"


def _expr(x: Any) -> tuple[Any, ...]:
    if isinstance(x, Expression):
        return x.tree
    return ("literal", x)


class FilterBuilder:
    """The ``q`` passed to ``filter``: Convex's ``FilterBuilder``.

    Comparisons use Convex's total value order (a missing field is below everything; int64
    is below float64); ``and_``/``or_``/``not_`` combine booleans; ``add``, ``sub``, ``mul``,
    ``div``, ``mod``, ``neg`` do arithmetic on two numbers of one type.
    """

    @staticmethod
    def field(path: str) -> Expression:
        """The value of a (possibly dotted) field; ``undefined`` when missing."""
        if not isinstance(path, str) or not path:
            raise InvalidQueryError("q.field() needs a field path")
        return Expression(("field", path))

    @staticmethod
    def eq(a: Any, b: Any) -> Expression:
        """``a == b``."""
        return Expression(("eq", _expr(a), _expr(b)))

    @staticmethod
    def neq(a: Any, b: Any) -> Expression:
        """``a != b``."""
        return Expression(("neq", _expr(a), _expr(b)))

    @staticmethod
    def lt(a: Any, b: Any) -> Expression:
        """``a < b``."""
        return Expression(("lt", _expr(a), _expr(b)))

    @staticmethod
    def lte(a: Any, b: Any) -> Expression:
        """``a <= b``."""
        return Expression(("lte", _expr(a), _expr(b)))

    @staticmethod
    def gt(a: Any, b: Any) -> Expression:
        """``a > b``."""
        return Expression(("gt", _expr(a), _expr(b)))

    @staticmethod
    def gte(a: Any, b: Any) -> Expression:
        """``a >= b``."""
        return Expression(("gte", _expr(a), _expr(b)))

    @staticmethod
    def and_(*xs: Any) -> Expression:
        """All true."""
        return Expression(("and", [_expr(x) for x in xs]))

    @staticmethod
    def or_(*xs: Any) -> Expression:
        """Any true."""
        return Expression(("or", [_expr(x) for x in xs]))

    @staticmethod
    def not_(x: Any) -> Expression:
        """Not ``x``."""
        return Expression(("not", _expr(x)))

    @staticmethod
    def add(a: Any, b: Any) -> Expression:
        """``a + b``."""
        return Expression(("add", _expr(a), _expr(b)))

    @staticmethod
    def sub(a: Any, b: Any) -> Expression:
        """``a - b``."""
        return Expression(("sub", _expr(a), _expr(b)))

    @staticmethod
    def mul(a: Any, b: Any) -> Expression:
        """``a * b``."""
        return Expression(("mul", _expr(a), _expr(b)))

    @staticmethod
    def div(a: Any, b: Any) -> Expression:
        """``a / b``."""
        return Expression(("div", _expr(a), _expr(b)))

    @staticmethod
    def mod(a: Any, b: Any) -> Expression:
        """``a % b``."""
        return Expression(("mod", _expr(a), _expr(b)))

    @staticmethod
    def neg(a: Any) -> Expression:
        """``-a``."""
        return Expression(("neg", _expr(a)))


class IndexRangeBuilder:
    """The ``q`` passed to ``with_index``.

    ``eq`` on the index's fields in order, then at most one lower (``gt``/``gte``) and one
    upper (``lt``/``lte``) bound on the next field.
    """

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[tuple[str, str, Any]] = []

    def _add(self, op: str, field: str, value: Any) -> IndexRangeBuilder:
        if not isinstance(field, str):
            raise InvalidQueryError(f"index range: {op}() needs a field name")
        self.ops.append((op, field, value))
        return self

    def eq(self, field: str, value: Any) -> IndexRangeBuilder:
        """``field == value``."""
        return self._add("eq", field, value)

    def gt(self, field: str, value: Any) -> IndexRangeBuilder:
        """``field > value``."""
        return self._add("gt", field, value)

    def gte(self, field: str, value: Any) -> IndexRangeBuilder:
        """``field >= value``."""
        return self._add("gte", field, value)

    def lt(self, field: str, value: Any) -> IndexRangeBuilder:
        """``field < value``."""
        return self._add("lt", field, value)

    def lte(self, field: str, value: Any) -> IndexRangeBuilder:
        """``field <= value``."""
        return self._add("lte", field, value)


class Query:
    """A query on one table.

    Chain ``with_index``, ``order``, ``filter``, then end with ``collect``, ``take``,
    ``first``, ``unique``, ``paginate`` or ``async for``.
    """

    def __init__(self, reader: DatabaseReader, table: str) -> None:
        self._reader = reader
        self._table = table
        self._index = "by_creation_time"
        self._ops: list[tuple[str, str, Any]] = []
        self._order = "asc"
        self._filter: tuple[Any, ...] | None = None
        self._indexed = False
        self._ordered = False

    def _copy(self) -> Query:
        q = Query(self._reader, self._table)
        q._index, q._ops, q._order = self._index, list(self._ops), self._order
        q._filter, q._indexed, q._ordered = self._filter, self._indexed, self._ordered
        return q

    def with_index(
        self,
        index_name: str,
        index_range: Callable[[IndexRangeBuilder], IndexRangeBuilder] | None = None,
    ) -> Query:
        """Scan ``index_name`` over the range ``index_range(q)`` builds (all of it if none).

        Raises:
            InvalidQueryError: called twice, or the range function returns something else.
        """
        if self._indexed:
            raise InvalidQueryError("with_index() may be called once per query")
        if not isinstance(index_name, str):
            raise InvalidQueryError("with_index() needs an index name")
        q = self._copy()
        q._index = index_name
        q._indexed = True
        if index_range is not None:
            built = index_range(IndexRangeBuilder())
            if not isinstance(built, IndexRangeBuilder):
                raise InvalidQueryError(
                    "the index range function must return the builder it was given "
                    "(q.eq(...).gt(...))"
                )
            q._ops = [(op, field, self._number(field, value)) for op, field, value in built.ops]
        return q

    def _validator(self) -> Any:
        schema = self._reader._db.app.schema
        table = schema.tables.get(self._table) if schema is not None else None
        return table.validator if table is not None else None

    def _number(self, field: str, value: Any) -> Any:
        """``value``, as a float if it is an int bound on a ``v.float64()`` field."""
        if type(value) in (int, Int64) and is_float_field(self._validator(), field):
            return float(value)
        return value

    def _numbers(self, tree: tuple[Any, ...]) -> tuple[Any, ...]:
        """``tree`` with int literals compared to float64 fields made floats."""
        op = tree[0]
        if op in ("and", "or"):
            return (op, [self._numbers(x) for x in tree[1]])
        if op == "not":
            return (op, self._numbers(tree[1]))
        if op in ("eq", "neq", "lt", "lte", "gt", "gte"):
            a, b = tree[1], tree[2]
            if a[0] == "field" and b[0] == "literal":
                b = ("literal", self._number(a[1], b[1]))
            elif b[0] == "field" and a[0] == "literal":
                a = ("literal", self._number(b[1], a[1]))
            return (op, a, b)
        return tree

    def with_search_index(
        self, index_name: str, search: Callable[[SearchFilterBuilder], Any]
    ) -> SearchQuery:
        """Full-text search on search index ``index_name``, in relevance order.

        ``search(q)`` is ``q.search(field, text)`` and optional ``.eq(filter_field, value)``
        (see :mod:`reactive.db.search`).

        Raises:
            InvalidQueryError: a malformed search, or after ``with_index``/``order``/``filter``.
            IndexNotFoundError: the schema has no such search index.
        """
        from reactive.db.search import SearchQuery

        if self._indexed or self._ordered or self._filter is not None:
            raise InvalidQueryError(
                "with_search_index() starts a query: it cannot follow with_index, order or filter"
            )
        return SearchQuery.build(self._reader, self._table, index_name, search, self._validator())

    def full_table_scan(self) -> Query:
        """Scan the whole table in creation order (the default)."""
        return self._copy()

    def order(self, order: str) -> Query:
        """``"asc"`` (default) or ``"desc"`` in index order.

        Raises:
            InvalidQueryError: another value, or called twice.
        """
        if order not in ("asc", "desc"):
            raise InvalidQueryError(f'order must be "asc" or "desc", not {order!r:.40}')
        if self._ordered:
            raise InvalidQueryError("order() may be called once per query")
        q = self._copy()
        q._order = order
        q._ordered = True
        return q

    def filter(self, predicate: Callable[[FilterBuilder], Expression]) -> Query:
        """Keep documents for which ``predicate(q)`` is true (all are still read).

        Raises:
            InvalidQueryError: the predicate does not return an expression.
        """
        built = predicate(FilterBuilder())
        if not isinstance(built, Expression):
            raise InvalidQueryError(
                "filter() needs a function returning an expression built with q "
                f"(q.eq(q.field('x'), 1)), not {type(built).__name__}"
            )
        q = self._copy()
        tree = self._numbers(built.tree)
        q._filter = tree if self._filter is None else ("and", [self._filter, tree])
        return q

    def _scan(
        self,
        limit: int | None,
        after: bytes | None = None,
        until: bytes | None = None,
        new_query: bool = True,
    ) -> tuple[list[dict[str, Any]], bytes | None, bool]:
        return self._reader._scan(
            self._table,
            self._index,
            self._ops,
            self._order,
            limit,
            self._filter,
            after,
            until,
            new_query,
        )

    async def collect(self) -> list[dict[str, Any]]:
        """Every matching document."""
        docs, _, _ = self._scan(None)
        return docs

    async def take(self, n: int) -> list[dict[str, Any]]:
        """The first ``n`` matching documents.

        Raises:
            InvalidQueryError: ``n`` is not a non-negative int.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InvalidQueryError(f"take() needs a non-negative int, not {n!r:.40}")
        if n == 0:
            return []
        docs, _, _ = self._scan(n)
        return docs

    async def first(self) -> dict[str, Any] | None:
        """The first matching document, or ``None``."""
        docs, _, _ = self._scan(1)
        return docs[0] if docs else None

    async def unique(self) -> dict[str, Any] | None:
        """The only matching document, or ``None``.

        Raises:
            InvalidQueryError: more than one document matches.
        """
        docs, _, _ = self._scan(2)
        if len(docs) > 1:
            raise InvalidQueryError(
                f"unique() found more than one document in {self._table!r} "
                f"(ids {docs[0]['_id']} and {docs[1]['_id']})"
            )
        return docs[0] if docs else None

    def _fingerprint(self) -> bytes:
        return repr((self._table, self._index, self._ops, self._order, self._filter)).encode()

    async def paginate(self, options: dict[str, Any]) -> PaginationResult:
        """One page: ``{"numItems": n, "cursor": str | None, "endCursor"?: str | None}``.

        Returns Convex's ``PaginationResult``: ``page``, ``isDone`` and ``continueCursor``
        (always a string; pass it back as ``cursor``). Cursors are positions in the index,
        so concurrent inserts cause neither gaps nor repeats across pages (spec §17). With
        ``endCursor`` the page runs exactly to it, whatever ``numItems`` says.

        Raises:
            InvalidQueryError: bad options.
            InvalidCursorError: a cursor from another query or forged.
        """
        num = num_items(options)
        codec: CursorCodec = self._reader._cursors
        fingerprint = self._fingerprint()
        after = codec.decode(options.get("cursor"), fingerprint)
        end_cursor = options.get("endCursor")
        journal = self._reader._journal_in
        if end_cursor is None and journal is not None:
            # A re-run of a reactive page ends where its first run did (spec §17); a
            # journal this query did not issue is ignored.
            try:
                codec.decode(journal, fingerprint)
                end_cursor = journal
            except InvalidCursorError:
                end_cursor = None
        if after is CursorCodec.END:
            return page_result([], True, codec.encode(CursorCodec.END, fingerprint))
        if end_cursor is not None:
            until = codec.decode(end_cursor, fingerprint)
            if until is None:
                raise InvalidQueryError("paginate(): endCursor cannot be the start")
            docs, _, done = self._scan(
                None,
                after if isinstance(after, bytes) else None,
                until if isinstance(until, bytes) else None,
            )
            self._reader._journal_out = end_cursor
            return page_result(docs, until is CursorCodec.END, end_cursor)
        docs, last, done = self._scan(num, after if isinstance(after, bytes) else None)
        if done or last is None:
            cont = codec.encode(CursorCodec.END, fingerprint)
        else:
            cont = codec.encode(last, fingerprint)
        if self._reader._journal_out is None:
            self._reader._journal_out = cont
        return page_result(docs, done, cont)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        after: bytes | None = None
        page = 0
        new_query = True
        while True:
            limit = _ITER_PAGES[min(page, len(_ITER_PAGES) - 1)]
            docs, last, done = self._scan(limit, after, None, new_query)
            new_query = False
            for doc in docs:
                yield doc
            if done or last is None:
                return
            after = last
            page += 1

    def __await__(self) -> Any:
        raise ReactiveError(
            "a query is not awaitable itself: end it with .collect(), .take(n), .first(), "
            ".unique() or .paginate(...)"
        )

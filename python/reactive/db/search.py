"""Full-text and vector search: the query builders and their ends.

Text search (Convex's ``withSearchIndex``)::

    await ctx.db.query("messages").with_search_index(
        "search_body", lambda q: q.search("body", "hello wor").eq("channel", "general")
    ).take(10)

Results come best first by BM25 relevance, then by ``_id``. Terms are split on every
character that is not a letter or digit and lowercased; the last term also matches as a
prefix (``wor`` finds ``world``). At most 16 terms, 8 ``eq`` filters and 1,024 results.

Vector search (Convex's ``ctx.vectorSearch`` in actions; here also ``ctx.db.vector_search``
in queries and mutations, transactional and reactive)::

    await ctx.vector_search("messages", "by_embedding", {
        "vector": embedding, "limit": 10,
        "filter": lambda q: q.or_(q.eq("channel", "a"), q.eq("channel", "b")),
    })  # -> [{"_id": id, "_score": cosine similarity}, ...] best first

Both read at the transaction's snapshot with its own writes. A subscription re-runs when a
commit writes a document holding one of the search's terms under its filter values (text),
or a vector under its filter values (vector).

Errors: ``InvalidQueryError`` for a malformed search (limits, a field that is not a filter
field, a vector of the wrong dimensions); ``IndexNotFoundError``; ``IndexNotReadyError``
while a large index builds.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from reactive.db.cursor import CursorCodec
from reactive.db.query import (
    Expression,
    FilterBuilder,
    PaginationResult,
    num_items,
    page_result,
)
from reactive.errors import InvalidQueryError, ReactiveError
from reactive.schema import is_float_field
from reactive.values import Int64

if TYPE_CHECKING:
    from reactive.db.context import DatabaseReader

__all__ = [
    "MAX_SEARCH_RESULTS",
    "SearchFilterBuilder",
    "SearchQuery",
    "VectorFilterBuilder",
    "VectorFilterExpression",
    "parse_vector_query",
]

MAX_SEARCH_RESULTS = 1024
"""The most results one text search returns (Convex's limit)."""


class SearchFilterBuilder:
    """The ``q`` of ``with_search_index``: ``q.search(field, text)``, then ``.eq(...)``s."""

    def __init__(self) -> None:
        self.field: str | None = None
        self.text: str = ""
        self.filters: list[tuple[str, Any]] = []

    def search(self, field: str, text: str) -> SearchFilterBuilder:
        """Search ``field`` (the index's search field) for the terms of ``text``."""
        if self.field is not None:
            raise InvalidQueryError("a search query calls q.search(...) once")
        if not isinstance(field, str) or not isinstance(text, str):
            raise InvalidQueryError("q.search(field, text) takes two strings")
        self.field, self.text = field, text
        return self

    def eq(self, field: str, value: Any) -> SearchFilterBuilder:
        """Only documents whose filter field ``field`` equals ``value``."""
        if self.field is None:
            raise InvalidQueryError("q.search(field, text) comes before .eq(...) in a search")
        if not isinstance(field, str):
            raise InvalidQueryError("q.eq(field, value) needs a field name")
        self.filters.append((field, value))
        return self


class SearchQuery:
    """A text search on one index.

    End it with ``take``, ``collect``, ``first``, ``unique``, ``paginate`` or ``async for``;
    ``filter`` applies to the results in relevance order.
    """

    def __init__(
        self,
        reader: DatabaseReader,
        table: str,
        index: str,
        text: str,
        filters: list[tuple[str, Any]],
        post_filter: tuple[Any, ...] | None = None,
    ) -> None:
        self._reader = reader
        self._table = table
        self._index = index
        self._text = text
        self._filters = filters
        self._post_filter = post_filter

    @classmethod
    def build(
        cls,
        reader: DatabaseReader,
        table: str,
        index: str,
        search: Callable[[SearchFilterBuilder], Any],
        validator: Any,
    ) -> SearchQuery:
        """The search ``search(q)`` describes on ``index`` of ``table``.

        Raises:
            InvalidQueryError: the function does not return the builder, or names a field
                other than the index's search field.
            IndexNotFoundError: no such search index in the schema.
        """
        from reactive.errors import IndexNotFoundError

        schema = reader._db.app.schema
        definition = schema.tables.get(table) if schema is not None else None
        declared = None
        if definition is not None:
            declared = next((i for i in definition.search_indexes if i.name == index), None)
        if declared is None:
            raise IndexNotFoundError(f"search index {table}.{index} does not exist")
        built = search(SearchFilterBuilder())
        if not isinstance(built, SearchFilterBuilder) or built.field is None:
            raise InvalidQueryError(
                "with_search_index() needs a function returning q.search(field, text)"
                "[.eq(field, value)...]"
            )
        if built.field != declared.search_field:
            raise InvalidQueryError(
                f"search index {table}.{index} searches {declared.search_field!r}, "
                f"not {built.field!r}"
            )
        filters = [
            (f, float(v) if type(v) in (int, Int64) and is_float_field(validator, f) else v)
            for f, v in built.filters
        ]
        return cls(reader, table, index, built.text, filters)

    def filter(self, predicate: Callable[[FilterBuilder], Expression]) -> SearchQuery:
        """Keep results for which ``predicate(q)`` is true (of the best 1,024)."""
        built = predicate(FilterBuilder())
        if not isinstance(built, Expression):
            raise InvalidQueryError(
                "filter() needs a function returning an expression built with q"
            )
        tree = built.tree
        if self._post_filter is not None:
            tree = ("and", [self._post_filter, tree])
        return SearchQuery(self._reader, self._table, self._index, self._text, self._filters, tree)

    def order(self, order: str) -> SearchQuery:
        """Search results are in relevance order; ``order`` is refused.

        Raises:
            InvalidQueryError: always.
        """
        raise InvalidQueryError("search results come in relevance order; order() cannot change it")

    def _run(self, limit: int) -> list[dict[str, Any]]:
        found = self._reader._txn.text_search(
            self._table, self._index, self._text, self._filters, limit, self._post_filter
        )
        return [doc for doc, _score in found]

    async def take(self, n: int) -> list[dict[str, Any]]:
        """The best ``n`` results (``n`` from 0 to 1,024)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InvalidQueryError(f"take() needs a non-negative integer, not {n!r}")
        if n > MAX_SEARCH_RESULTS:
            raise InvalidQueryError(
                f"a search returns at most {MAX_SEARCH_RESULTS} results; take({n}) asked for more"
            )
        if n == 0:
            return []
        return self._run(n)

    async def collect(self) -> list[dict[str, Any]]:
        """Every result, up to 1,024."""
        return self._run(MAX_SEARCH_RESULTS)

    async def first(self) -> dict[str, Any] | None:
        """The best result, or ``None``."""
        docs = self._run(1)
        return docs[0] if docs else None

    async def unique(self) -> dict[str, Any] | None:
        """The only result, or ``None``.

        Raises:
            InvalidQueryError: more than one result.
        """
        docs = self._run(2)
        if len(docs) > 1:
            raise InvalidQueryError("unique() found more than one result")
        return docs[0] if docs else None

    def _fingerprint(self) -> bytes:
        return json.dumps(
            [
                "search",
                self._table,
                self._index,
                self._text,
                repr(self._filters),
                repr(self._post_filter),
            ]
        ).encode()

    async def paginate(self, options: dict[str, Any]) -> PaginationResult:
        """One page of results: ``{"numItems": n, "cursor": str | None}``.

        A cursor is a position in the relevance order of the search; a page reads the
        results up to its end (so pages past 1,024 results are empty and done).

        Raises:
            InvalidQueryError: bad options. InvalidCursorError: a cursor of another query.
        """
        num = num_items(options)
        codec: CursorCodec = self._reader._cursors
        fingerprint = self._fingerprint()
        position = codec.decode(options.get("cursor"), fingerprint)
        end = codec.encode(CursorCodec.END, fingerprint)
        if position is CursorCodec.END:
            return page_result([], True, end)
        offset = int.from_bytes(position, "big") if isinstance(position, bytes) else 0
        want = min(offset + num, MAX_SEARCH_RESULTS)
        docs = self._run(want) if want > offset else []
        page = docs[offset:]
        done = len(docs) < want or want >= MAX_SEARCH_RESULTS
        cont = end if done else codec.encode((offset + len(page)).to_bytes(4, "big"), fingerprint)
        return page_result(page, done, cont)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        for doc in self._run(MAX_SEARCH_RESULTS):
            yield doc

    def __await__(self) -> Any:
        raise ReactiveError(
            "a search query is not awaitable itself: end it with .take(n), .collect(), "
            ".first(), .unique() or .paginate(...)"
        )


class VectorFilterExpression:
    """``q.eq(field, value)`` or a ``q.or_`` of them.

    It selects the rows whose filter field equals any of the values.
    """

    __slots__ = ("terms",)

    def __init__(self, terms: list[tuple[str, Any]]) -> None:
        self.terms = terms

    def __bool__(self) -> bool:
        raise InvalidQueryError("vector filters combine with q.or_(...), not Python's or/and")


class VectorFilterBuilder:
    """The ``q`` of a vector search's ``filter``: ``eq`` and ``or_`` (Convex's set)."""

    @staticmethod
    def eq(field: str, value: Any) -> VectorFilterExpression:
        """Rows whose filter field ``field`` equals ``value``."""
        if not isinstance(field, str):
            raise InvalidQueryError("q.eq(field, value) needs a field name")
        return VectorFilterExpression([(field, value)])

    @staticmethod
    def or_(*exprs: VectorFilterExpression) -> VectorFilterExpression:
        """Rows passing any of ``exprs``."""
        terms: list[tuple[str, Any]] = []
        for e in exprs:
            if not isinstance(e, VectorFilterExpression):
                raise InvalidQueryError("q.or_(...) takes expressions built with q.eq / q.or_")
            terms.extend(e.terms)
        return VectorFilterExpression(terms)


def parse_vector_query(query: Any, validator: Any) -> tuple[Any, int, list[tuple[str, Any]]]:
    """``(vector, limit, filter terms)`` from ``{"vector": [...], "limit"?: n, "filter"?: fn}``.

    Raises:
        InvalidQueryError: a missing vector, a bad limit or filter.
    """
    if not isinstance(query, dict):
        raise InvalidQueryError(
            'vector_search() needs {"vector": [...], "limit"?: n, "filter"?: f}'
        )
    unknown = set(query) - {"vector", "limit", "filter"}
    if unknown:
        raise InvalidQueryError(f"vector_search(): unknown option(s) {sorted(unknown)}")
    vector = query.get("vector")
    if isinstance(vector, (list, tuple)):
        vector = [
            float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x
            for x in vector
        ]
        if any(isinstance(x, float) and not math.isfinite(x) for x in vector):
            raise InvalidQueryError("vector_search(): the vector holds a NaN or infinite number")
    elif vector is not None and hasattr(vector, "tolist"):
        vector = [float(x) for x in vector.tolist()]
    else:
        raise InvalidQueryError('vector_search(): "vector" must be a list of numbers')
    limit = query.get("limit", 10)
    if isinstance(limit, float) and limit.is_integer():
        limit = int(limit)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 256:
        raise InvalidQueryError(
            f"vector_search(): limit must be an integer in [1, 256], not {limit!r}"
        )
    terms: list[tuple[str, Any]] = []
    fn = query.get("filter")
    if fn is not None:
        built = fn(VectorFilterBuilder())
        if not isinstance(built, VectorFilterExpression):
            raise InvalidQueryError("vector_search(): filter must return q.eq(...) or q.or_(...)")
        terms = [
            (f, float(v) if type(v) in (int, Int64) and is_float_field(validator, f) else v)
            for f, v in built.terms
        ]
    return vector, limit, terms

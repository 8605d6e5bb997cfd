"""``_system/cli/*``: what ``npx convex data`` and ``npx convex env`` ask the backend.

Each is a query run under the admin key only, by the same runner as the app's functions
(so it is transactional and, subscribed, reactive):

* ``_system/cli/tables`` (paginated): ``{"name"}`` of every user table, by name.
* ``_system/cli/tableData`` ``{table, order, paginationOpts}``: a page of documents.
* ``_system/cli/queryEnvironmentVariables``: ``[{"name", "value"}]``;
  ``…:get`` ``{name}``: one of them or ``null``.

Source: the Convex CLI (``convex/src/cli/lib/data.ts``, ``env.ts``), which names these
functions and reads their results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactive.db.system import get_environment_variable, list_environment_variables
from reactive.functions import Function, canonicalize_path, query
from reactive.schema import v

__all__ = ["SYSTEM_FUNCTIONS", "system_function"]


def _system_query(args: dict[str, Any]) -> Callable[[Callable[..., Any]], Function]:
    decorator: Callable[[Callable[..., Any]], Function] = query(args=args)
    return decorator


@_system_query({"paginationOpts": v.optional(v.any())})
async def tables(ctx: Any, paginationOpts: Any = None) -> dict[str, Any]:
    """Every user table's name (one page: the list is small)."""
    names = sorted(t["name"] for t in ctx.db._db._engine.tables() if not t["name"].startswith("_"))
    return {"page": [{"name": n} for n in names], "isDone": True, "continueCursor": ""}


@_system_query(
    {
        "table": v.string(),
        "order": v.optional(v.union(v.literal("asc"), v.literal("desc"))),
        "paginationOpts": v.any(),
    }
)
async def table_data(
    ctx: Any,
    table: str,
    paginationOpts: Any,
    order: str = "desc",
) -> Any:
    """A page of ``table``'s documents in creation order."""
    if not ctx.db._txn.has_table(table):
        return {"page": [], "isDone": True, "continueCursor": ""}
    return await ctx.db.query(table).order(order).paginate(paginationOpts)


@_system_query({})
async def environment_variables(ctx: Any) -> list[dict[str, str]]:
    """Every environment variable."""
    return list_environment_variables(ctx.db._txn)


@_system_query({"name": v.string()})
async def environment_variable(ctx: Any, name: str) -> dict[str, str] | None:
    """One environment variable, or ``None``."""
    value = get_environment_variable(ctx.db._txn, name)
    return None if value is None else {"name": name, "value": value}


def _named(fn: Function, path: str) -> Function:
    fn.path = canonicalize_path(path)
    return fn


SYSTEM_FUNCTIONS: dict[str, Function] = {
    f.path or "": f
    for f in (
        _named(tables, "_system/cli/tables"),
        _named(table_data, "_system/cli/tableData"),
        _named(environment_variables, "_system/cli/queryEnvironmentVariables"),
        _named(environment_variable, "_system/cli/queryEnvironmentVariables:get"),
    )
}
"""Canonical path -> function, for admin callers."""


def system_function(path: str) -> Function | None:
    """The system function at ``path`` (any accepted spelling), or ``None``."""
    if not path.startswith("_system/"):
        return None
    try:
        return SYSTEM_FUNCTIONS.get(canonicalize_path(path))
    except Exception:
        return None

"""``_system/cli/*``: what ``npx convex data`` and ``npx convex env`` ask the backend.

Each is a query run under the admin key only, by the same runner as the app's functions
(so it is transactional and, subscribed, reactive):

* ``_system/cli/tables`` (paginated): ``{"name"}`` of every user table, by name.
* ``_system/cli/tableData`` ``{table, order, paginationOpts}``: a page of documents.
* ``_system/cli/queryEnvironmentVariables``: ``[{"name", "value"}]``;
  ``…:get`` ``{name}``: one of them or ``null``.
* ``_system/cli/exports:getLatest``: the newest export's record (``npx convex export``);
  ``_system/cli/queryImport`` ``{importId}`` and ``…:list``: imports' records
  (``npx convex import``), see :mod:`reactive.admin.jobs`.
* ``_system/cli/modules:apiSpec``: every function with its validators;
  ``_system/cli/convexUrl:cloudUrl``: the server's URL (``npx convex function-spec``).

Source: the Convex CLI (``convex/src/cli/lib/data.ts``, ``env.ts``, ``functionSpec.ts``),
which names these
functions and reads their results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactive.admin import jobs
from reactive.db.system import get_environment_variable, list_environment_variables
from reactive.functions import Function, canonicalize_path, query
from reactive.schema import v

__all__ = ["SYSTEM_FUNCTIONS", "system_function"]


def _system_query(args: dict[str, Any]) -> Callable[[Callable[..., Any]], Function[Any]]:
    decorator: Callable[[Callable[..., Any]], Function[Any]] = query(args=args)
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


_FUNCTION_TYPES = {"query": "Query", "mutation": "Mutation", "action": "Action"}
_ANY = {"type": "any"}


@_system_query({})
async def api_spec(ctx: Any) -> list[dict[str, Any]]:
    """Every function of the app with its validators, as ``npx convex function-spec`` prints.

    Validators are Convex's ``ValidatorJSON``.

    ``identifier`` follows Convex's module naming (``messages.js:list`` for the function
    clients call as ``messages:list``).
    """
    out = []
    for path, fn in sorted(ctx.db._db.app.functions.items()):
        module, _, name = path.rpartition(":")
        out.append(
            {
                "identifier": f"{module}.js:{name}",
                "functionType": _FUNCTION_TYPES[fn.kind],
                "visibility": {"kind": "internal" if fn.internal else "public"},
                "args": fn.args.to_json() if fn.args is not None else _ANY,
                "returns": fn.returns.to_json() if fn.returns is not None else _ANY,
            }
        )
    return out


@_system_query({})
async def latest_export(ctx: Any) -> dict[str, Any] | None:
    """The newest snapshot export's ``_exports`` document (``None``: never requested)."""
    return jobs.latest_export(ctx.db._txn)


@_system_query({"importId": v.string()})
async def query_import(ctx: Any, importId: str) -> dict[str, Any] | None:
    """One import's ``_snapshot_imports`` document (its ``state`` is what the CLI follows)."""
    return jobs.get_import(ctx.db._txn, importId)


@_system_query({})
async def list_imports(ctx: Any) -> list[dict[str, Any]]:
    """The newest imports, newest first."""
    return jobs.list_imports(ctx.db._txn)


@_system_query({})
async def cloud_url(ctx: Any) -> str:
    """The deployment's URL (the server's, as it was started)."""
    return ctx.db._db.public_url or ""


def _named(fn: Function[Any], path: str) -> Function[Any]:
    fn.path = canonicalize_path(path)
    return fn


SYSTEM_FUNCTIONS: dict[str, Function[Any]] = {
    f.path or "": f
    for f in (
        _named(tables, "_system/cli/tables"),
        _named(table_data, "_system/cli/tableData"),
        _named(environment_variables, "_system/cli/queryEnvironmentVariables"),
        _named(environment_variable, "_system/cli/queryEnvironmentVariables:get"),
        _named(api_spec, "_system/cli/modules:apiSpec"),
        _named(cloud_url, "_system/cli/convexUrl:cloudUrl"),
        _named(latest_export, "_system/cli/exports:getLatest"),
        _named(query_import, "_system/cli/queryImport"),
        _named(list_imports, "_system/cli/queryImport:list"),
    )
}
"""Canonical path -> function, for admin callers."""


def system_function(path: str) -> Function[Any] | None:
    """The system function at ``path`` (any accepted spelling), or ``None``."""
    if not path.startswith("_system/"):
        return None
    from reactive.admin.dashboard import DASHBOARD_FUNCTIONS

    try:
        canonical = canonicalize_path(path)
    except Exception:
        return None
    return SYSTEM_FUNCTIONS.get(canonical) or DASHBOARD_FUNCTIONS.get(canonical)

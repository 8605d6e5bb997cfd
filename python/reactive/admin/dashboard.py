"""``_system/dashboard/*``: the system queries the dashboard page subscribes to.

Each is a query run under the admin key only (over HTTP ``/api/query`` or subscribed over
the sync protocol, where it is reactive like any query):

* ``_system/dashboard/info``: ``{version, url, functions, hasSchema}`` (the login check).
* ``_system/dashboard/tables``: ``[{name, count, exact}]`` of every user table, by name.
  A table of at most :data:`COUNT_LIMIT` documents is counted in the query (exact and
  reactive); a larger one is counted by the engine when the query runs (``exact: false``:
  the number is re-read when the table's newest documents change, e.g. on an insert).
* ``_system/dashboard/documents`` ``{table, limit?}``: ``{page, hasMore}``, the newest
  ``limit`` (default 100, at most :data:`MAX_DOCUMENTS`) documents of a user table.
* ``_system/dashboard/functions``: every function of the app (``path``, ``kind``,
  ``visibility``, ``args`` and ``returns`` as Convex's validator JSON and as source,
  ``argsTemplate``: arguments of that shape to start from).
* ``_system/dashboard/scheduled``, ``…/crons``, ``…/files``: ``{exists, documents}``, the
  newest documents of the system tables ``_scheduled_functions``, ``_cron_jobs`` and
  ``_storage`` (``exists: false`` while the table was never created).

:func:`render_declared_schema` writes the app's declared schema as the ``define_schema``
source, in the form :func:`reactive.inference.render_schema` writes the inferred one (the
dashboard shows them side by side).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from reactive import _core
from reactive.errors import IndexNotFoundError, InvalidQueryError, TableNotFoundError
from reactive.functions import Function, canonicalize_path, query
from reactive.schema import DatabaseSchema, TableDefinition, v

__all__ = [
    "COUNT_LIMIT",
    "DASHBOARD_FUNCTIONS",
    "MAX_DOCUMENTS",
    "render_declared_schema",
    "render_validator",
]

COUNT_LIMIT = 1000
"""Tables with at most this many documents are counted inside the (reactive) query."""
COUNT_BYTES_BUDGET = 4 << 20
"""Bytes the tables query may read while counting (the transaction's limit is 16 MiB)."""
MAX_DOCUMENTS = 1000
"""Most documents one ``_system/dashboard/documents`` page holds."""
SYSTEM_TABLE_LIMIT = 200
"""Documents listed from ``_scheduled_functions``, ``_cron_jobs`` and ``_storage``."""


def _system_query(args: dict[str, Any]) -> Callable[[Callable[..., Any]], Function[Any]]:
    decorator: Callable[[Callable[..., Any]], Function[Any]] = query(args=args)
    return decorator


def _user_tables(ctx: Any) -> list[str]:
    return sorted(t["name"] for t in ctx.db._db._engine.tables() if not t["name"].startswith("_"))


@_system_query({})
async def info(ctx: Any) -> dict[str, Any]:
    """What the page shows in its header (and the call that checks the admin key)."""
    app = ctx.db._db.app
    return {
        "version": _core.__version__,
        "url": ctx.db._db.public_url or "",
        "functions": float(len(app.functions)),  # a JS number (an int would be an int64)
        "hasSchema": app.schema is not None,
    }


@_system_query({})
async def tables(ctx: Any) -> list[dict[str, Any]]:
    """Every user table with its document count (see the module's docstring)."""
    engine = ctx.db._db._engine
    txn = ctx.db._txn
    out = []
    for name in _user_tables(ctx):
        if not txn.has_table(name):
            continue  # created after this query's snapshot
        count = 0
        exact = True
        # Newest first: an insert lands in the range read, so it re-runs this query.
        async for _ in ctx.db.query(name).order("desc"):
            count += 1
            if count > COUNT_LIMIT or txn.usage().get("bytes_read", 0) > COUNT_BYTES_BUDGET:
                exact = False
                break
        if not exact:
            count = engine.count_documents(name)
        out.append({"name": name, "count": float(count), "exact": exact})
    return out


@_system_query({"table": v.string(), "limit": v.optional(v.float64())})
async def documents(ctx: Any, table: str, limit: float | None = None) -> dict[str, Any]:
    """The newest ``limit`` documents of a user table, newest first."""
    if table.startswith("_"):
        raise InvalidQueryError(f"{table!r} is a system table: the dashboard lists user tables")
    n = 100 if limit is None else int(limit)
    n = max(1, min(n, MAX_DOCUMENTS))
    if not ctx.db._txn.has_table(table):
        return {"page": [], "hasMore": False, "exists": False}
    docs = await ctx.db.query(table).order("desc").take(n + 1)
    return {"page": docs[:n], "hasMore": len(docs) > n, "exists": True}


@_system_query({})
async def functions(ctx: Any) -> list[dict[str, Any]]:
    """Every function of the app with its validators."""
    out = []
    for path, fn in sorted(ctx.db._db.app.functions.items()):
        args = fn.args.to_json() if fn.args is not None else None
        returns = fn.returns.to_json() if fn.returns is not None else None
        out.append(
            {
                "path": path,
                "kind": fn.kind,
                "visibility": "internal" if fn.internal else "public",
                "args": args,
                "argsSource": _render_args(args),
                "argsTemplate": _template(args) if args is not None else {},
                "returns": returns,
                "returnsSource": "v.any()" if returns is None else render_validator(returns),
            }
        )
    return out


def _system_table(ctx: Any, table: str) -> dict[str, Any]:
    txn = ctx.db._txn
    if not txn.has_table(table):
        return {"exists": False, "documents": []}
    try:
        docs, _, _ = txn.scan(
            table, "by_creation_time", [], "desc", SYSTEM_TABLE_LIMIT, None, None, None, True
        )
    except (TableNotFoundError, IndexNotFoundError):
        return {"exists": False, "documents": []}
    return {"exists": True, "documents": list(docs)}


@_system_query({})
async def scheduled(ctx: Any) -> dict[str, Any]:
    """The newest ``_scheduled_functions`` documents."""
    return _system_table(ctx, "_scheduled_functions")


@_system_query({})
async def crons(ctx: Any) -> dict[str, Any]:
    """The newest ``_cron_jobs`` documents."""
    return _system_table(ctx, "_cron_jobs")


@_system_query({})
async def files(ctx: Any) -> dict[str, Any]:
    """The newest ``_storage`` documents."""
    return _system_table(ctx, "_storage")


# -- the declared schema as source ------------------------------------------------------------


def render_validator(j: dict[str, Any], indent: int = 0) -> str:
    """Convex's validator JSON written as the ``v.…`` expression that declares it."""
    kind = j.get("type")
    simple = {
        "any": "v.any()",
        "string": "v.string()",
        "number": "v.float64()",
        "bigint": "v.int64()",
        "boolean": "v.boolean()",
        "null": "v.null()",
        "bytes": "v.bytes()",
    }
    if kind in simple:
        return simple[kind]
    if kind == "id":
        return f"v.id({json.dumps(j.get('tableName'))})"
    if kind == "array":
        return f"v.array({render_validator(j.get('value') or {}, indent)})"
    if kind == "object":
        return f"v.object({_render_fields(j.get('value') or {}, indent)})"
    if kind == "record":
        keys = render_validator(j.get("keys") or {}, indent)
        values = render_validator((j.get("values") or {}).get("fieldType") or {}, indent)
        return f"v.record({keys}, {values})"
    if kind == "union":
        members = [render_validator(m, indent) for m in j.get("value") or []]
        return f"v.union({', '.join(members)})"
    if kind == "literal":
        value = j.get("value")
        if isinstance(value, dict) and "$integer" in value:
            return f"v.literal({value['$integer']})"
        return f"v.literal({json.dumps(value)})"
    return "v.any()"


def _render_args(args: dict[str, Any] | None) -> str:
    """Arguments as written in the decorator: ``{"field": v.…}`` (or a validator)."""
    if args is None:
        return "any object"
    if args.get("type") == "object":
        return _render_fields(args.get("value") or {}, 0)
    return render_validator(args)


def _template(j: dict[str, Any]) -> Any:
    """A JSON value of the validator's shape (what the run form starts from)."""
    kind = j.get("type")
    if kind == "object":
        fields = j.get("value") or {}
        return {
            k: _template(f.get("fieldType") or {})
            for k, f in sorted(fields.items())
            if not f.get("optional")
        }
    if kind == "union":
        members = j.get("value") or []
        return _template(members[0]) if members else None
    if kind == "literal":
        value = j.get("value")
        if isinstance(value, dict):  # an int64 literal: {"$integer": "<decimal>"}
            text = str(value.get("$integer", "0"))
            return int(text) if text.lstrip("-").isdigit() else 0
        return value
    return {
        "string": "",
        "id": "",
        "number": 0.0,
        "bigint": 0,
        "boolean": False,
        "array": [],
        "record": {},
    }.get(str(kind))


def _render_fields(fields: dict[str, Any], indent: int) -> str:
    if not fields:
        return "{}"
    pad = " " * (indent + 4)
    lines = []
    for key in sorted(fields):
        field = fields[key]
        rendered = render_validator(field.get("fieldType") or {}, indent + 4)
        if field.get("optional"):
            rendered = f"v.optional({rendered})"
        lines.append(f"{pad}{json.dumps(key)}: {rendered},")
    return "{\n" + "\n".join(lines) + "\n" + " " * indent + "}"


def _render_table(table: TableDefinition) -> str:
    validator = table.validator.to_json() if table.validator is not None else None
    if validator is None:
        inner = ""
    elif validator.get("type") == "object":
        inner = _render_fields(validator.get("value") or {}, 4)
    else:
        inner = render_validator(validator, 4)
    out = f"define_table({inner})"
    for index in table.indexes:
        out += f".index({json.dumps(index.name)}, {json.dumps(list(index.fields))})"
    for search in table.search_indexes:
        out += (
            f".search_index({json.dumps(search.name)}, search_field="
            f"{json.dumps(search.search_field)}, filter_fields="
            f"{json.dumps(list(search.filter_fields))})"
        )
    for vector in table.vector_indexes:
        out += (
            f".vector_index({json.dumps(vector.name)}, vector_field="
            f"{json.dumps(vector.vector_field)}, dimensions={vector.dimensions}, "
            f"filter_fields={json.dumps(list(vector.filter_fields))})"
        )
    return out


def render_declared_schema(schema: DatabaseSchema | None) -> str | None:
    """The Python source of the app's ``schema`` module (``None``: the app declares none)."""
    if schema is None:
        return None
    lines = [
        '"""The schema the app declares (its schema module)."""',
        "",
        "from reactive import define_schema, define_table, v",
        "",
        "schema = define_schema({",
    ]
    for name, table in sorted(schema.tables.items()):
        lines.append(f"    {json.dumps(name)}: {_render_table(table)},")
    options = []
    if not schema.schema_validation:
        options.append("schema_validation=False")
    if not schema.strict_tables:
        options.append("strict_table_name_types=False")
    lines.append("}" + "".join(f", {o}" for o in options) + ")")
    return "\n".join(lines) + "\n"


def _named(fn: Function[Any], path: str) -> Function[Any]:
    fn.path = canonicalize_path(path)
    return fn


DASHBOARD_FUNCTIONS: dict[str, Function[Any]] = {
    f.path or "": f
    for f in (
        _named(info, "_system/dashboard/info"),
        _named(tables, "_system/dashboard/tables"),
        _named(documents, "_system/dashboard/documents"),
        _named(functions, "_system/dashboard/functions"),
        _named(scheduled, "_system/dashboard/scheduled"),
        _named(crons, "_system/dashboard/crons"),
        _named(files, "_system/dashboard/files"),
    )
}
"""Canonical path -> function, for admin callers."""

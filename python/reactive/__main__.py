"""``python -m reactive``: run functions, look at data, check a database.

Commands:
    run PATH [ARGS_JSON] --app DIR   run a query, mutation or action (internal ones too)
    data TABLE                       print a table's documents, one JSON object per line
    check                            verify every index entry against the documents
    tables                           list tables and their indexes
    gc [--keep-seconds S]            delete versions older than S seconds (default 60)
    schema                           print a define_schema(...) inferred from the documents
    env list | get NAME | set NAME VALUE | remove NAME
                                     the environment variables functions read (ctx.env)
    export [URL] PATH                write a snapshot ZIP (Convex's export layout) of URL
    import [URL] PATH                load a snapshot ZIP into URL (tables absent or empty)

``export``/``import`` take the database URL as their first argument or from ``--db``; they
stream (a table is never held whole in memory) and show a progress bar on a terminal.
Every command takes ``--db URL`` (default: ``$REACTIVE_DB_URL``, else
``sqlite:///.reactive/db.sqlite3``). Values print as JSON; ``bytes`` as ``{"$bytes": b64}``.
Exit status: 0 on success, 1 when ``check`` finds problems or a function fails, 2 on usage
errors.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from typing import Any

__all__ = ["main"]

DEFAULT_DB = "sqlite:///.reactive/db.sqlite3"


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    raise TypeError(f"{type(value).__name__} is not a value")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, allow_nan=True)


def _parse_args_json(text: str | None) -> dict[str, Any]:
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: ARGS_JSON is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SystemExit('error: ARGS_JSON must be a JSON object, e.g. \'{"channel": "general"}\'')
    return value


async def _run(ns: argparse.Namespace) -> int:
    import reactive
    from reactive.functions import canonicalize_path

    async with reactive.open(ns.db, app=ns.app) as db:
        path = canonicalize_path(ns.path)
        fn = db.app.lookup(path)
        args = _parse_args_json(ns.args)
        try:
            if fn.kind == "query":
                result = await db.query(path, args, internal=True)
            elif fn.kind == "mutation":
                result = await db.mutation(path, args, internal=True)
            else:
                result = await db.action(path, args, internal=True)
        except reactive.ConvexError as exc:
            print(f"ConvexError: {_dumps(exc.data)}", file=sys.stderr)
            return 1
        except Exception as exc:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(_dumps(result))
    return 0


async def _data(ns: argparse.Namespace) -> int:
    import reactive

    async with reactive.open(ns.db, app=ns.app) as db:
        engine = db._engine
        ts = engine.visible_ts
        after: bytes | None = None
        printed = 0
        while ns.limit is None or printed < ns.limit:
            docs, after = engine.table_page(ns.table, ts, after, 500)
            for doc in docs:
                if ns.limit is not None and printed >= ns.limit:
                    break
                print(_dumps(doc))
                printed += 1
            if after is None:
                break
    return 0


async def _check(ns: argparse.Namespace) -> int:
    import reactive

    async with reactive.open(ns.db) as db:
        report = await db.check()
    for problem in report["problems"]:
        print(f"problem: {problem}")
    status = "ok" if not report["problems"] else f"{len(report['problems'])} problem(s)"
    print(
        f"checked {report['documents']} documents and {report['index_entries']} index entries: "
        f"{status}"
    )
    return 0 if not report["problems"] else 1


async def _tables(ns: argparse.Namespace) -> int:
    import reactive

    async with reactive.open(ns.db) as db:
        for table in db._engine.tables():
            count = db._engine.count_documents(table["name"])
            print(f"{table['name']} ({count} documents)")
            for index in table["indexes"]:
                state = "ready" if index["ready_since"] is not None else "backfilling"
                fields = ", ".join(index["fields"]) or "(built-in)"
                print(f"  {index['name']}: {fields} [{state}]")
    return 0


async def _gc(ns: argparse.Namespace) -> int:
    import reactive

    async with reactive.open(ns.db) as db:
        report = await db.gc(keep_s=ns.keep_seconds)
        counts = getattr(db._persistence, "row_counts", None)
        left = f"; {(await counts())[0]} revisions remain" if counts is not None else ""
    print(
        f"deleted {report.documents_deleted} old revisions and "
        f"{report.index_entries_deleted} index entries{left}"
    )
    return 0


async def _schema(ns: argparse.Namespace) -> int:
    import reactive
    from reactive.inference import infer_schema, render_schema

    async with reactive.open(ns.db) as db:
        tables = await infer_schema(db)
    print(render_schema(tables), end="")
    return 0


async def _env(ns: argparse.Namespace) -> int:
    import reactive
    from reactive.db.system import (
        change_environment_variables,
        get_environment_variable,
        list_environment_variables,
    )

    async with reactive.open(ns.db) as db:
        if ns.action == "list":
            for var in list_environment_variables(db._engine.begin(True)):
                print(f"{var['name']}={var['value']}")
        elif ns.action == "get":
            value = get_environment_variable(db._engine.begin(True), ns.name)
            if value is None:
                print(f"error: environment variable {ns.name} is not set", file=sys.stderr)
                return 1
            print(value)
        elif ns.action == "set":
            await change_environment_variables(db, [(ns.name, ns.value)])
            print(f"set {ns.name}")
        else:
            await change_environment_variables(db, [(ns.name, None)])
            print(f"removed {ns.name}")
    return 0


class _RichProgress:
    """Rich progress bars, one per table (``reactive.snapshot.Progress``)."""

    def __init__(self, unit: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        count = MofNCompleteColumn() if unit == "documents" else TaskProgressColumn()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            count,
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=_stderr_console(),
            transient=False,
        )

    def add_table(self, name: str, total: int | None) -> Any:
        return self.progress.add_task(name, total=total)

    def advance(self, task: Any, amount: int) -> None:
        self.progress.advance(task, amount)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _snapshot_paths(ns: argparse.Namespace) -> tuple[str, str]:
    if ns.path is None:
        return ns.db, ns.target
    return ns.target, ns.path


async def _export(ns: argparse.Namespace) -> int:
    import reactive
    from reactive.snapshot import export_snapshot

    url, path = _snapshot_paths(ns)
    async with reactive.open(url) as db:
        bars = _RichProgress("documents")
        with bars.progress:
            report = await export_snapshot(db, path, progress=bars)
    print(
        f"exported {report.documents} documents from {len(report.tables)} table(s) at "
        f"timestamp {report.ts} to {path}"
    )
    return 0


async def _import(ns: argparse.Namespace) -> int:
    import reactive
    from reactive.snapshot import import_snapshot

    url, path = _snapshot_paths(ns)
    if not os.path.exists(path):
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    async with reactive.open(url) as db:
        bars = _RichProgress("bytes")
        with bars.progress:
            report = await import_snapshot(db, path, progress=bars)
    for skipped in report.skipped:
        print(f"skipped: {skipped}", file=sys.stderr)
    print(f"imported {report.documents} documents into {len(report.tables)} table(s) from {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m reactive`` and the ``reactive`` script."""
    parser = argparse.ArgumentParser(prog="python -m reactive", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--db",
        default=os.environ.get("REACTIVE_DB_URL", DEFAULT_DB),
        help="database URL (default: $REACTIVE_DB_URL or %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a function and print its result as JSON")
    p_run.add_argument("path", help="function path, e.g. messages:send")
    p_run.add_argument("args", nargs="?", help="arguments as a JSON object")
    p_run.add_argument("--app", required=True, help="app directory or package")
    p_run.add_argument("--db", dest="db", default=argparse.SUPPRESS)
    p_data = sub.add_parser("data", help="print a table's documents as JSON lines")
    p_data.add_argument("table")
    p_data.add_argument("--limit", type=int, default=None)
    p_data.add_argument("--app", default=None, help="app directory or package (optional)")
    p_data.add_argument("--db", dest="db", default=argparse.SUPPRESS)
    p_check = sub.add_parser("check", help="verify every index entry against the documents")
    p_check.add_argument("--db", dest="db", default=argparse.SUPPRESS)
    p_tables = sub.add_parser("tables", help="list tables and indexes")
    p_tables.add_argument("--db", dest="db", default=argparse.SUPPRESS)
    p_gc = sub.add_parser("gc", help="delete versions older than the retention window")
    p_gc.add_argument("--keep-seconds", type=float, default=60.0, help="default: %(default)s")
    p_gc.add_argument("--db", dest="db", default=argparse.SUPPRESS)
    p_env = sub.add_parser("env", help="list, get, set or remove environment variables")
    env_sub = p_env.add_subparsers(dest="action", required=True)
    env_list = env_sub.add_parser("list", help="every variable as NAME=VALUE")
    env_get = env_sub.add_parser("get", help="one variable's value")
    env_get.add_argument("name")
    env_set = env_sub.add_parser("set", help="set a variable")
    env_set.add_argument("name")
    env_set.add_argument("value")
    env_remove = env_sub.add_parser("remove", help="remove a variable")
    env_remove.add_argument("name")
    for env_parser in (p_env, env_list, env_get, env_set, env_remove):
        env_parser.add_argument("--db", dest="db", default=argparse.SUPPRESS)
    p_schema = sub.add_parser("schema", help="print a schema inferred from stored documents")
    p_schema.add_argument("--db", dest="db", default=argparse.SUPPRESS)
    for name, help_text in (
        ("export", "write a snapshot ZIP of the database"),
        ("import", "load a snapshot ZIP into the database"),
    ):
        p_snap = sub.add_parser(name, help=help_text)
        p_snap.add_argument("target", metavar="URL_OR_PATH", help="database URL, or the ZIP path")
        p_snap.add_argument("path", nargs="?", default=None, help="the ZIP path (after URL)")
        p_snap.add_argument("--db", dest="db", default=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    handlers = {
        "run": _run,
        "data": _data,
        "check": _check,
        "tables": _tables,
        "export": _export,
        "import": _import,
        "gc": _gc,
        "schema": _schema,
        "env": _env,
    }
    from reactive.errors import ReactiveError

    try:
        return asyncio.run(handlers[ns.command](ns))
    except ReactiveError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

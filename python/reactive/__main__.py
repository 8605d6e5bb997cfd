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
    import [URL] PATH                load a snapshot ZIP, or a JSONL/JSON/CSV file into
                                     --table, into URL (--append, --replace, --replace-all)
    logs                             follow the function log of a running server (--url)

Offline, a command opens the database itself: ``--db URL`` (default: ``$REACTIVE_DB_URL``,
else ``sqlite:///.reactive/db.sqlite3``), or ``export``/``import``'s first argument. A
database a server has open is reached through the server instead: ``--url
http://127.0.0.1:3210`` (or ``$REACTIVE_URL``) with ``--admin-key KEY`` (or
``$REACTIVE_ADMIN_KEY``); every command then runs against the live server (``run`` needs no
``--app``; ``export`` downloads a snapshot taken while writes go on).

``export``/``import`` stream (a table is never held whole in memory) and show a progress
bar on a terminal. Values print as JSON; ``bytes`` as ``{"$bytes": b64}``.
Exit status: 0 on success, 1 when ``check`` finds problems or a function or request fails,
2 on usage errors.
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

    if ns.app is None:
        raise SystemExit("error: run needs --app DIR (or --url URL to run on a server)")
    # A short-lived process: what the function schedules stays pending for the server.
    async with reactive.open(ns.db, app=ns.app, run_scheduled=False) as db:
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

    async with reactive.open(ns.db, app=ns.app, run_scheduled=False) as db:
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

    # With --app, the app's search indexes are built and checked too (they are derived from
    # the documents; without the schema there are none to check). Scheduled functions are
    # left alone: a check runs nothing.
    async with reactive.open(ns.db, app=ns.app, run_scheduled=False) as db:
        report = await db.check()
    return _print_check(report)


def _print_check(report: dict[str, Any]) -> int:
    for problem in report["problems"]:
        print(f"problem: {problem}")
    status = "ok" if not report["problems"] else f"{len(report['problems'])} problem(s)"
    searched = report.get("search_indexes", 0)
    also = f" and {searched} search index(es)" if searched else ""
    print(
        f"checked {report['documents']} documents and {report['index_entries']} index "
        f"entries{also}: {status}"
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


async def _codegen(ns: argparse.Namespace) -> int:
    from reactive.codegen import write, write_python
    from reactive.functions import load_app

    if ns.ts is None and ns.py is None:
        print("codegen: give --ts DIR, --py FILE or both", file=sys.stderr)
        return 2
    app = load_app(ns.app)
    written = write(app, ns.ts) if ns.ts is not None else []
    if ns.py is not None:
        written.append(write_python(app, ns.py))
    for path in written:
        print(f"wrote {path}")
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
    async with reactive.open(url, storage_dir=ns.storage_dir) as db:
        bars = _RichProgress("documents")
        with bars.progress:
            report = await export_snapshot(
                db, path, progress=bars, include_storage=ns.include_file_storage
            )
    files = f" and {report.files} file(s)" if ns.include_file_storage else ""
    print(
        f"exported {report.documents} documents from {len(report.tables)} table(s){files} at "
        f"timestamp {report.ts} to {path}"
    )
    return 0


def _import_format(ns: argparse.Namespace, path: str) -> str:
    if ns.format is not None:
        return str(ns.format)
    suffixes = {".zip": "zip", ".jsonl": "jsonLines", ".ndjson": "jsonLines"}
    suffixes |= {".json": "jsonArray", ".csv": "csv"}
    ext = os.path.splitext(path)[1].lower()
    if ext not in suffixes:
        raise SystemExit(
            f"error: cannot tell the format of {path} from its extension; give --format "
            "(zip, jsonLines, jsonArray or csv)"
        )
    return suffixes[ext]


def _import_mode(ns: argparse.Namespace) -> str:
    chosen = [m for m, on in (("append", ns.append), ("replace", ns.replace)) if on]
    if ns.replace_all:
        chosen.append("replaceAll")
    if len(chosen) > 1:
        raise SystemExit("error: give at most one of --append, --replace, --replace-all")
    return chosen[0] if chosen else "requireEmpty"


async def _import(ns: argparse.Namespace) -> int:
    import reactive
    from reactive.snapshot import perform_import, plan_import

    url, path = _snapshot_paths(ns)
    if not os.path.exists(path):
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    format, mode = _import_format(ns, path), _import_mode(ns)
    async with reactive.open(url, storage_dir=ns.storage_dir) as db:
        plan = await asyncio.to_thread(
            plan_import, db, path, format=format, table=ns.table, mode=mode
        )
        if plan.needs_confirmation and not _confirm(plan.summary(), ns):
            return 1
        bars = _RichProgress("documents")
        with bars.progress:
            report = await perform_import(db, plan, progress=bars)
    for skipped in report.skipped:
        print(f"skipped: {skipped}", file=sys.stderr)
    files = f" and {report.files} file(s)" if report.files else ""
    print(
        f"imported {report.documents} documents into {len(report.tables)} table(s){files} "
        f"from {path}"
    )
    return 0


# -- against a running server (--url) ------------------------------------------------------


def _remote(ns: argparse.Namespace) -> Any:
    from reactive.admin.remote import Remote

    if not ns.admin_key:
        raise SystemExit(
            "error: --url needs the server's admin key: --admin-key KEY or $REACTIVE_ADMIN_KEY"
        )
    return Remote(ns.url, ns.admin_key)


def _print_log_lines(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)


async def _remote_run(ns: argparse.Namespace) -> int:
    from reactive.admin.remote import RemoteLogError

    async with _remote(ns) as remote:
        try:
            result, lines = await remote.call(ns.path, _parse_args_json(ns.args))
        except RemoteLogError as exc:
            _print_log_lines(exc.log_lines)
            print(f"error: {exc}", file=sys.stderr)
            return 1
    _print_log_lines(lines)
    print(_dumps(result))
    return 0


async def _remote_data(ns: argparse.Namespace) -> int:
    async with _remote(ns) as remote:
        printed = 0
        async for doc in remote.documents(ns.table):
            if ns.limit is not None and printed >= ns.limit:
                break
            print(_dumps(doc))
            printed += 1
    return 0


async def _remote_check(ns: argparse.Namespace) -> int:
    async with _remote(ns) as remote:
        report = await remote.check()
    return _print_check(report)


async def _remote_tables(ns: argparse.Namespace) -> int:
    async with _remote(ns) as remote:
        for table in await remote.tables():
            print(f"{table['name']} ({table['documents']} documents)")
            for index in table["indexes"]:
                state = "ready" if index["ready"] else "backfilling"
                fields = ", ".join(index["fields"]) or "(built-in)"
                print(f"  {index['name']}: {fields} [{state}]")
    return 0


async def _remote_gc(ns: argparse.Namespace) -> int:
    async with _remote(ns) as remote:
        report = await remote.gc(ns.keep_seconds)
    print(
        f"deleted {report['documents_deleted']} old revisions and "
        f"{report['index_entries_deleted']} index entries"
    )
    return 0


async def _remote_schema(ns: argparse.Namespace) -> int:
    async with _remote(ns) as remote:
        print(await remote.schema(), end="")
    return 0


async def _remote_env(ns: argparse.Namespace) -> int:
    async with _remote(ns) as remote:
        if ns.action in ("list", "get"):
            variables = await remote.environment_variables()
            if ns.action == "list":
                for var in variables:
                    print(f"{var['name']}={var['value']}")
                return 0
            for var in variables:
                if var["name"] == ns.name:
                    print(var["value"])
                    return 0
            print(f"error: environment variable {ns.name} is not set", file=sys.stderr)
            return 1
        value = ns.value if ns.action == "set" else None
        await remote.change_environment_variables([(ns.name, value)])
    print(f"set {ns.name}" if ns.action == "set" else f"removed {ns.name}")
    return 0


class _ByteBar:
    """One rich progress bar counting bytes."""

    def __init__(self, label: str) -> None:
        self.bars = _RichProgress("bytes")
        self.task = self.bars.add_table(label, None)

    def __call__(self, amount: int, total: int | None) -> None:
        if total is not None:
            self.bars.progress.update(self.task, total=total)
        self.bars.advance(self.task, amount)


async def _remote_export(ns: argparse.Namespace) -> int:
    if ns.path is not None:
        raise SystemExit("error: with --url, export takes only the ZIP path")
    async with _remote(ns) as remote:
        bar = _ByteBar("download")
        with bar.bars.progress:
            ts = await remote.export(ns.target, bar, include_storage=ns.include_file_storage)
    print(f"exported the snapshot at timestamp {ts} from {ns.url} to {ns.target}")
    return 0


def _confirm(summary: str, ns: argparse.Namespace) -> bool:
    """Whether to go on with an import that deletes documents."""
    print(summary, file=sys.stderr)
    if ns.yes:
        return True
    if not sys.stdin.isatty():
        print("error: this import deletes documents; pass --yes to go on", file=sys.stderr)
        return False
    return input("Go on with the import? [y/N] ").strip().lower() in ("y", "yes")


async def _remote_import(ns: argparse.Namespace) -> int:
    if ns.path is not None:
        raise SystemExit("error: with --url, import takes only the file path")
    path = ns.target
    if not os.path.exists(path):
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    format, mode = _import_format(ns, path), _import_mode(ns)
    async with _remote(ns) as remote:
        bar = _ByteBar("upload")
        with bar.bars.progress:
            import_id = await remote.start_import(
                path, format=format, table=ns.table, mode=mode, on_bytes=bar
            )
        state = await remote.import_state(import_id, ("waiting_for_confirmation",))
        if state.get("require_manual_confirmation") and not _confirm(
            str(state.get("message_to_confirm", "")), ns
        ):
            await remote.cancel_import(import_id)
            return 1
        await remote.perform_import(import_id)
        state = await remote.import_state(import_id, ("completed",))
    print(f"imported {state.get('num_rows_written', 0)} documents from {path} into {ns.url}")
    return 0


def _format_time(seconds: float) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


_KIND_LETTERS = {"Query": "Q", "Mutation": "M", "Action": "A", "HttpAction": "H"}


async def _logs(ns: argparse.Namespace) -> int:
    if ns.url is None:
        raise SystemExit("error: logs follows a running server: give --url URL (and the key)")
    loop = asyncio.get_running_loop()
    deadline = None if ns.seconds is None else loop.time() + ns.seconds
    async with _remote(ns) as remote:
        entries, cursor = await remote.log_entries(0.0, 0.0)
        backlog = entries[-ns.history :] if ns.history > 0 else []
        while True:
            for entry in backlog:
                _print_entry(entry, ns.success)
            sys.stdout.flush()
            wait = 50.0
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    return 0
            backlog, cursor = await remote.log_entries(cursor, wait)


def _print_entry(entry: dict[str, Any], success: bool) -> None:
    head = (
        f"{_format_time(float(entry['timestamp']))} "
        f"[{_KIND_LETTERS.get(entry['udfType'], '?')} {entry['identifier']}]"
    )
    for line in entry.get("logLines") or []:
        print(f"{head} {line['level']} {' '.join(line['messages'])}")
    if entry.get("error"):
        print(f"{head} failed: {entry['error']}")
    elif success:
        print(f"{head} ok in {float(entry['executionTime']) * 1000:.1f} ms")


def _connection_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """``--db``, ``--url`` and ``--admin-key``, before or after the command's name."""
    if top:
        parser.add_argument(
            "--db",
            default=os.environ.get("REACTIVE_DB_URL", DEFAULT_DB),
            help="database URL, offline (default: $REACTIVE_DB_URL or %(default)s)",
        )
        parser.add_argument(
            "--url",
            default=os.environ.get("REACTIVE_URL") or None,
            help="a running server's URL, e.g. http://127.0.0.1:3210 (default: $REACTIVE_URL)",
        )
        parser.add_argument(
            "--admin-key",
            default=os.environ.get("REACTIVE_ADMIN_KEY") or None,
            help="the server's admin key, with --url (default: $REACTIVE_ADMIN_KEY)",
        )
        return
    for flag in ("--db", "--url", "--admin-key"):
        parser.add_argument(flag, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reactive",
        description=__doc__.split("\n")[0],
        epilog="Offline, a command opens the database (--db); with --url it asks the server.",
    )
    _connection_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a function and print its result as JSON")
    p_run.add_argument("path", help="function path, e.g. messages:send")
    p_run.add_argument("args", nargs="?", help="arguments as a JSON object")
    p_run.add_argument("--app", default=None, help="app directory or package (offline)")
    p_data = sub.add_parser("data", help="print a table's documents as JSON lines")
    p_data.add_argument("table")
    p_data.add_argument("--limit", type=int, default=None)
    p_data.add_argument("--app", default=None, help="app directory or package (optional)")
    p_check = sub.add_parser("check", help="verify every index entry against the documents")
    p_check.add_argument(
        "--app", default=None, help="app directory or package: check its search indexes too"
    )
    sub.add_parser("tables", help="list tables and indexes")
    p_gc = sub.add_parser("gc", help="delete versions older than the retention window")
    p_gc.add_argument("--keep-seconds", type=float, default=60.0, help="default: %(default)s")
    p_env = sub.add_parser("env", help="list, get, set or remove environment variables")
    env_sub = p_env.add_subparsers(dest="action", required=True)
    env_parsers = [
        env_sub.add_parser("list", help="every variable as NAME=VALUE"),
        env_sub.add_parser("get", help="one variable's value"),
        env_sub.add_parser("set", help="set a variable"),
        env_sub.add_parser("remove", help="remove a variable"),
    ]
    for env_parser in env_parsers[1:]:
        env_parser.add_argument("name")
    env_parsers[2].add_argument("value")
    for env_parser in env_parsers:
        _connection_options(env_parser, top=False)
    sub.add_parser("schema", help="print a schema inferred from stored documents")
    p_export = sub.add_parser("export", help="write a snapshot ZIP of the database")
    p_import = sub.add_parser(
        "import", help="load a snapshot ZIP, or a JSONL/JSON/CSV file into one table"
    )
    for p_snap in (p_export, p_import):
        p_snap.add_argument("target", metavar="URL_OR_PATH", help="database URL, or the path")
        p_snap.add_argument("path", nargs="?", default=None, help="the path (after URL)")
        p_snap.add_argument(
            "--storage-dir",
            default=None,
            help="the database's file storage (default: storage/ beside the SQLite file)",
        )
    p_export.add_argument(
        "--include-file-storage",
        action="store_true",
        help="also export the files of file storage (_storage/ in the ZIP)",
    )
    p_import.add_argument("--table", default=None, help="the table a JSONL/JSON/CSV file fills")
    p_import.add_argument(
        "--format",
        choices=["zip", "jsonLines", "jsonArray", "csv"],
        default=None,
        help="default: from the extension (.zip, .jsonl, .json, .csv)",
    )
    p_import.add_argument("--append", action="store_true", help="add to existing documents")
    p_import.add_argument("--replace", action="store_true", help="empty the imported tables first")
    p_import.add_argument(
        "--replace-all", action="store_true", help="empty every table first (snapshot ZIP)"
    )
    p_import.add_argument(
        "-y", "--yes", action="store_true", help="do not ask before deleting documents"
    )
    p_codegen = sub.add_parser(
        "codegen",
        help="write the app's types: TypeScript for a frontend (--ts), a typed Python "
        "module of function references for a client (--py)",
    )
    p_codegen.add_argument("--app", required=True, help="the app directory or package")
    p_codegen.add_argument(
        "--ts", help="the directory to write api.d.ts, ... to (e.g. frontend/convex/_generated)"
    )
    p_codegen.add_argument(
        "--py",
        help="the Python file to write typed references to the public functions to "
        "(e.g. client/api.py: await client.query(api.messages.list, {...}) type-checks)",
    )
    p_logs = sub.add_parser("logs", help="follow a running server's function log (--url)")
    p_logs.add_argument(
        "--history", type=int, default=0, help="first print the last N runs (default 0)"
    )
    p_logs.add_argument(
        "--success",
        action="store_true",
        help="also print a line for every run that succeeded ('ok in N ms'; a run's log "
        "lines and failures are printed either way)",
    )
    p_logs.add_argument(
        "--seconds", type=float, default=None, help="stop after S seconds (default: never)"
    )
    for name, command in sub.choices.items():
        if name != "env":
            _connection_options(command, top=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m reactive`` and the ``reactive`` script."""
    ns = _parser().parse_args(argv)
    offline = {
        "run": _run,
        "data": _data,
        "check": _check,
        "tables": _tables,
        "export": _export,
        "import": _import,
        "gc": _gc,
        "schema": _schema,
        "env": _env,
        "logs": _logs,
        "codegen": _codegen,
    }
    online = {
        "run": _remote_run,
        "data": _remote_data,
        "check": _remote_check,
        "tables": _remote_tables,
        "export": _remote_export,
        "import": _remote_import,
        "gc": _remote_gc,
        "schema": _remote_schema,
        "env": _remote_env,
        "logs": _logs,
        "codegen": _codegen,
    }
    handlers = online if ns.url else offline
    from reactive.errors import ReactiveError

    try:
        return asyncio.run(handlers[ns.command](ns))
    except ReactiveError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

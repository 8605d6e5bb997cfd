"""``python -m reactive --url URL --admin-key KEY VERB``: every verb against a live server.

The server keeps the database open (an offline verb would be refused); the verbs go
through the admin routes instead, and an export taken while writes go on is one snapshot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import ServerProcess

ADMIN = "remote-cli-admin-key"

APP = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({
            "orders": define_table({"n": v.float64()}),
            "receipts": define_table({"n": v.float64()}).index("by_n", ["n"]),
        })
    """,
    "shop.py": """
        from reactive import internal_query, mutation, query, v


        @mutation(args={"n": v.float64()})
        async def buy(ctx, n):
            # One transaction writes both tables: a snapshot always holds as many of each.
            await ctx.db.insert("orders", {"n": n})
            await ctx.db.insert("receipts", {"n": n})
            print(f"bought {n}")
            return n


        @query(args={})
        async def count(ctx):
            return len(await ctx.db.query("orders").collect())


        @internal_query(args={"x": v.float64()})
        async def double(ctx, x):
            return x * 2


        @mutation(args={})
        async def fail(ctx):
            print("about to fail")
            raise ValueError("refused on purpose")
    """,
}


@pytest.fixture
def server(
    make_app: Callable[[dict[str, str]], Path], start_server: Callable[..., ServerProcess]
) -> ServerProcess:
    return start_server(make_app(APP), "--admin-key", ADMIN)


def cli(
    server: ServerProcess, *args: str, key: str | None = ADMIN, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m reactive --url <server> ARGS`` with the admin key in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTIVE_")}
    env["REACTIVE_URL"] = server.url
    if key is not None:
        env["REACTIVE_ADMIN_KEY"] = key
    proc = subprocess.run(
        [sys.executable, "-m", "reactive", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    if ok:
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def buy(server: ServerProcess, n: float) -> None:
    r = httpx.post(
        f"{server.url}/api/mutation", json={"path": "shop:buy", "args": {"n": n}}, timeout=20
    )
    assert r.json()["status"] == "success", r.text


def test_run_data_tables_schema_check_gc(server: ServerProcess) -> None:
    for n in (1, 2, 3):
        buy(server, n)
    proc = cli(server, "run", "shop:buy", '{"n": 4}')
    assert json.loads(proc.stdout) == 4
    assert "bought 4" in proc.stderr
    # Internal functions run for the admin; failures print their log and exit 1.
    assert json.loads(cli(server, "run", "shop:double", '{"x": 21}').stdout) == 42
    failed = cli(server, "run", "shop:fail", ok=False)
    assert failed.returncode == 1
    assert "refused on purpose" in failed.stderr and "about to fail" in failed.stderr

    docs = [json.loads(line) for line in cli(server, "data", "orders").stdout.splitlines()]
    assert [d["n"] for d in docs] == [1, 2, 3, 4]
    assert all(d["_id"] and d["_creationTime"] for d in docs)
    assert len(cli(server, "data", "orders", "--limit", "2").stdout.splitlines()) == 2

    tables = cli(server, "tables").stdout
    assert "orders (4 documents)" in tables
    assert "by_n: n [ready]" in tables
    schema = cli(server, "schema").stdout
    assert '"receipts": define_table({' in schema and '"n": v.float64()' in schema
    check = cli(server, "check").stdout
    assert check.startswith("checked ") and check.strip().endswith(": ok")
    assert cli(server, "gc", "--keep-seconds", "0").stdout.startswith("deleted ")


def test_env_verbs(server: ServerProcess) -> None:
    assert cli(server, "env", "set", "REGION", "eu-west").stdout.strip() == "set REGION"
    assert cli(server, "env", "get", "REGION").stdout.strip() == "eu-west"
    assert "REGION=eu-west" in cli(server, "env", "list").stdout.splitlines()
    cli(server, "env", "remove", "REGION")
    missing = cli(server, "env", "get", "REGION", ok=False)
    assert missing.returncode == 1 and "not set" in missing.stderr


def test_export_while_writing_is_one_snapshot(server: ServerProcess, tmp_path: Path) -> None:
    for n in range(20):
        buy(server, n)
    stop = threading.Event()
    written = []

    def keep_buying() -> None:
        n = 1000
        while not stop.is_set() and n < 1400:  # bounded: stops by itself
            buy(server, n)
            written.append(n)
            n += 1

    writer = threading.Thread(target=keep_buying)
    writer.start()
    try:
        target = tmp_path / "snap.zip"
        out = cli(server, "export", str(target)).stdout
        assert "exported the snapshot at timestamp" in out
    finally:
        stop.set()
        writer.join(timeout=60)
    assert written, "the writer never ran during the export"
    with zipfile.ZipFile(target) as zf:
        names = set(zf.namelist())
        assert {"_tables/documents.jsonl", "orders/documents.jsonl"} <= names
        orders = zf.read("orders/documents.jsonl").splitlines()
        receipts = zf.read("receipts/documents.jsonl").splitlines()
    assert len(orders) >= 20
    assert len(orders) == len(receipts), "the export mixed two snapshots"


def test_import_modes_and_confirmation(server: ServerProcess, tmp_path: Path) -> None:
    jsonl = tmp_path / "people.jsonl"
    jsonl.write_text('{"name": "ada", "age": 36}\n{"name": "alan", "age": 41}\n')
    csv = tmp_path / "more.csv"
    csv.write_text("name,age\ngrace,85\n")
    assert "imported 2 documents" in cli(server, "import", str(jsonl), "--table", "people").stdout
    # Into a table that has documents, without a mode: refused, nothing written.
    again = cli(server, "import", str(jsonl), "--table", "people", ok=False)
    assert again.returncode == 1 and "already has documents" in again.stderr
    cli(server, "import", str(csv), "--table", "people", "--append")
    names = sorted(
        json.loads(d)["name"] for d in cli(server, "data", "people").stdout.split("\n")[:-1]
    )
    assert names == ["ada", "alan", "grace"]
    # --replace deletes documents: without --yes (and no terminal) it asks, and stops.
    refused = cli(server, "import", str(csv), "--table", "people", "--replace", ok=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert len(cli(server, "data", "people").stdout.splitlines()) == 3
    cli(server, "import", str(csv), "--table", "people", "--replace", "--yes")
    docs = [json.loads(d) for d in cli(server, "data", "people").stdout.splitlines()]
    assert [(d["name"], d["age"]) for d in docs] == [("grace", 85.0)]
    # A bad file: a clear error naming the line, nothing stored.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "ok"}\nnot json\n')
    failed = cli(server, "import", str(bad), "--table", "broken", ok=False)
    assert failed.returncode == 1 and "line 2" in failed.stderr and "not JSON" in failed.stderr
    assert cli(server, "data", "broken").stdout == ""
    # A snapshot ZIP round trip into a fresh server keeps ids.
    buy(server, 7)
    snap = tmp_path / "all.zip"
    cli(server, "export", str(snap))
    ids = {json.loads(d)["_id"] for d in cli(server, "data", "orders").stdout.splitlines()}
    cli(server, "import", str(snap), "--replace-all", "--yes")
    after = {json.loads(d)["_id"] for d in cli(server, "data", "orders").stdout.splitlines()}
    assert after == ids


def test_logs_follow_the_server(server: ServerProcess) -> None:
    buy(server, 1)
    proc = cli(server, "logs", "--history", "5", "--success", "--seconds", "1")
    assert "[M shop:buy] LOG bought 1" in proc.stdout
    assert "[M shop:buy] ok in" in proc.stdout
    # Without --success, a run's log lines alone (and a line for a failure).
    quiet = cli(server, "logs", "--history", "5", "--seconds", "1")
    assert "[M shop:buy] LOG bought 1" in quiet.stdout and " ok in " not in quiet.stdout
    # The help says what --success does (as `npx convex logs --success`: a line for every
    # successful run, log lines printed either way).
    helped = subprocess.run(
        [sys.executable, "-m", "reactive", "logs", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    described = " ".join(helped.split("--success", 2)[2].split("--seconds")[0].split())
    assert "every run that succeeded" in described and "without log lines" not in described
    command = [sys.executable, "-m", "reactive", "--url", server.url, "--admin-key", ADMIN]
    with subprocess.Popen(
        [*command, "logs"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as follower:
        guard = threading.Timer(30.0, follower.terminate)  # readline never blocks for good
        guard.start()
        try:
            # The follower starts from "now": runs before it are not printed.
            time.sleep(1.5)
            buy(server, 2)
            assert follower.stdout is not None
            line = follower.stdout.readline()
            assert "[M shop:buy] LOG bought 2" in line
        finally:
            guard.cancel()
            follower.terminate()
            follower.wait(timeout=20)


def test_refused_without_the_admin_key(server: ServerProcess, tmp_path: Path) -> None:
    wrong = cli(server, "tables", key="not-the-key", ok=False)
    assert wrong.returncode == 1 and "admin key is not valid" in wrong.stderr
    missing = cli(server, "tables", key=None, ok=False)
    assert missing.returncode != 0 and "admin key" in missing.stderr
    for method, route in (
        ("GET", "/api/reactive/tables"),
        ("GET", "/api/reactive/schema"),
        ("POST", "/api/reactive/check"),
        ("POST", "/api/reactive/gc"),
    ):
        r = httpx.request(method, f"{server.url}{route}", timeout=20)
        assert r.status_code == 401, (route, r.text)
        r = httpx.request(
            method, f"{server.url}{route}", headers={"Authorization": "Convex nope"}, timeout=20
        )
        assert r.status_code == 401, (route, r.text)
    r = httpx.post(
        f"{server.url}/api/reactive/gc",
        json={"keep_seconds": "soon"},
        headers={"Authorization": f"Convex {ADMIN}"},
        timeout=20,
    )
    assert r.status_code == 400 and "keep_seconds" in r.json()["message"]


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reactive",
            "--url",
            "http://127.0.0.1:9",
            "--admin-key",
            "k",
            "tables",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "cannot reach http://127.0.0.1:9" in proc.stderr

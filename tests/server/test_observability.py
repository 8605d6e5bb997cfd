"""``/metrics``, ``/health/ready``, the slow-function log and the run records.

A real server runs a known workload; its ``/metrics`` text is parsed with
``prometheus_client.parser`` and the counts must match what was done.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

import reactive
from gate import Gate, on_loop

if TYPE_CHECKING:
    from conftest import ServerProcess

CHAT = Path(__file__).resolve().parents[2] / "examples" / "chat"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    r = httpx.get(f"{url}/metrics", timeout=10.0)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_a_known_workload(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(CHAT, "--slow-function-ms", "0")
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        before = scrape(server.url)
        commits_before = value(before, "reactive_commits_total")
        for i in range(5):
            r = http.post(
                "/api/mutation",
                json={
                    "path": "messages:send",
                    "args": {"channel": "m", "author": "a", "body": f"b{i}"},
                },
            )
            assert r.json()["status"] == "success", r.text
        for _ in range(3):
            r = http.post("/api/query", json={"path": "messages:list", "args": {"channel": "m"}})
            assert r.json()["status"] == "success", r.text
        r = http.post("/api/mutation", json={"path": "channels:create", "args": {"name": ""}})
        assert r.json()["status"] == "error"
        url = server.url.replace("http://", "ws://") + "/api/sync"
        with (
            connect(url, open_timeout=10.0, proxy=None, ping_interval=None) as one,
            connect(url, open_timeout=10.0, proxy=None, ping_interval=None) as two,
        ):
            for ws in (one, two):
                ws.send(
                    json.dumps(
                        {"type": "Connect", "sessionId": str(uuid.uuid4()), "connectionCount": 0}
                    )
                )
            one.send(
                json.dumps(
                    {
                        "type": "ModifyQuerySet",
                        "baseVersion": 0,
                        "newVersion": 1,
                        "modifications": [
                            {
                                "type": "Add",
                                "queryId": 0,
                                "udfPath": "messages:list",
                                "args": [{"channel": "m"}],
                            }
                        ],
                    }
                )
            )
            deadline = time.monotonic() + 10.0
            while json.loads(one.recv(timeout=10.0))["type"] != "Transition":
                assert time.monotonic() < deadline
            live = scrape(server.url)
            assert value(live, "reactive_websocket_connections") == 2
            assert value(live, "reactive_subscriptions") == 1
        after = scrape(server.url)

    send = {"path": "messages:send", "type": "mutation"}
    assert value(after, "reactive_function_duration_seconds_count", **send) == 5
    listing = value(
        after, "reactive_function_duration_seconds_count", path="messages:list", type="query"
    )
    assert listing >= 4  # three over HTTP, at least one for the subscription
    failed = {"path": "channels:create", "type": "mutation", "error": "ConvexError"}
    assert value(after, "reactive_function_errors_total", **failed) == 1
    assert value(after, "reactive_commits_total") - commits_before == 5
    batches = value(after, "reactive_commit_batch_size_count")
    assert batches >= 1 and value(after, "reactive_commit_batch_size_sum") >= 5
    assert value(after, "reactive_commit_duration_seconds_count") == 5
    # Every run was slower than 0 ms: each is in the slow log with what it read.
    deadline = time.monotonic() + 5.0
    while "slow mutation messages:send" not in server.log():
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.05)
    line = next(x for x in server.log().splitlines() if "slow query messages:list" in x)
    assert re.search(r"\d+ documents, \d+ bytes read; \d+ index ranges read", line), line


def test_ready_makes_a_persistence_round_trip(chat_server: ServerProcess) -> None:
    r = httpx.get(f"{chat_server.url}/health/ready", timeout=10.0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready"
    assert body["read_ms"] >= 0 and body["write_ms"] >= 0


def test_slow_function_ms_is_checked(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "reactive.server", "--slow-function-ms", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "--slow-function-ms" in proc.stderr
    with pytest.raises(ValueError, match="slow_function_ms"):
        reactive.open("sqlite:///unused.db", slow_function_ms=float("nan"))


APP = """
from reactive import mutation, query, v

HOOKS = {}


@mutation(args={})
async def create(ctx):
    return await ctx.db.insert("counters", {"n": 0.0})


@mutation(args={"id": v.id("counters")})
async def bump(ctx, id):
    doc = await ctx.db.get(id)
    hook = HOOKS.pop("pause", None)
    if hook is not None:
        await hook()
    await ctx.db.patch(id, {"n": doc["n"] + 1})


@query(args={})
async def noisy(ctx):
    print("hello from noisy")
    return 1
"""

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({"counters": define_table({"n": v.float64()})})
"""


async def test_write_conflicts_and_run_records(db_url: str, make_app: Any) -> None:
    import importlib

    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    async with reactive.open(db_url, app=app_dir, function_time_limit_s=30) as db:
        mod = importlib.import_module(f"{app_dir.name}.m")
        counter = await db.mutation("m:create")
        loop = asyncio.get_running_loop()
        gate = Gate()

        async def interfere() -> None:
            await db.mutation("m:bump", {"id": counter})
            gate.set()

        mod.HOOKS["pause"] = on_loop(loop, interfere)
        await db.mutation("m:bump", {"id": counter})  # its first attempt conflicts
        assert gate.is_set()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(db.metrics.render().decode())
            for s in f.samples
        }
        assert value(samples, "reactive_write_conflicts_total") >= 1
        assert await db.query("m:noisy") == 1
        runs = list(db.function_log)
        assert [r.path for r in runs][-1] == "m:noisy"
        last = runs[-1]
        assert last.type == "query" and last.error is None
        assert last.log_lines == ("[LOG] hello from noisy",)
        assert last.duration_s >= 0 and abs(last.started - time.time()) < 60
        bumps = [r for r in runs if r.path == "m:bump"]
        assert len(bumps) == 2 and all(r.error is None for r in bumps)


def test_the_root_page_says_what_is_running(chat_server: ServerProcess) -> None:
    r = httpx.get(f"{chat_server.url}/", timeout=10.0)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = r.text
    assert f"reactive {reactive.__version__} is running" in page
    assert f'ConvexClient("{chat_server.url}")' in page
    assert 'href="/dashboard"' in page and "with an app of" in page
    assert chat_server.db_url not in page  # no database URL
    assert "messages:send" not in page  # no function names
    assert httpx.head(f"{chat_server.url}/", timeout=10.0).status_code == 200
    assert httpx.post(f"{chat_server.url}/", timeout=10.0).status_code == 405

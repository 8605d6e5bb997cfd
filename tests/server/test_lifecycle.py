"""Server lifecycle: SIGTERM under load, restart, timestamps across restarts, idle pings."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from reactive.sync.messages import decode_ts

ServerProcess = Any  # tests/server/conftest.py's ServerProcess


TIMEOUT_S = 30.0
CLIENTS = 4

APP_FILES = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({
            "parts": define_table({"key": v.string(), "part": v.string()})
                .index("by_key", ["key"]),
            "totals": define_table({"count": v.float64()}),
        })
    """,
    "parts.py": """
        from reactive import mutation, query, v

        @mutation(args={"key": v.string()})
        async def write(ctx, key):
            # Three writes that must commit together or not at all.
            await ctx.db.insert("parts", {"key": key, "part": "a"})
            total = await ctx.db.query("totals").first()
            if total is None:
                await ctx.db.insert("totals", {"count": 1.0})
            else:
                await ctx.db.patch(total["_id"], {"count": total["count"] + 1.0})
            await ctx.db.insert("parts", {"key": key, "part": "b"})
            return key

        @query(args={})
        async def all(ctx):
            parts = await ctx.db.query("parts").collect()
            total = await ctx.db.query("totals").first()
            return {
                "parts": [[p["key"], p["part"]] for p in parts],
                "total": 0.0 if total is None else total["count"],
            }
    """,
}


def query_ts(url: str) -> int:
    r = httpx.post(f"{url}/api/query_ts", timeout=TIMEOUT_S)
    assert r.status_code == 200, r.text
    return decode_ts(r.json()["ts"])


class Writer(threading.Thread):
    """An HTTP client writing keys until the server goes away."""

    def __init__(self, url: str, name: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.prefix = name
        self.halt = stop
        self.ok: list[str] = []  # success responses
        self.failed: list[str] = []  # function error responses: nothing may be written
        self.unknown: list[str] = []  # no response: either outcome is fine
        self.other: list[str] = []  # anything else (a bug)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=TIMEOUT_S) as http:
            for i in range(100_000):
                if self.halt.is_set():
                    return
                key = f"{self.prefix}-{i}"
                try:
                    r = http.post(
                        "/api/mutation", json={"path": "parts:write", "args": {"key": key}}
                    )
                except httpx.HTTPError:
                    self.unknown.append(key)
                    return
                try:
                    body = r.json()
                except ValueError:
                    body = None
                if (
                    r.status_code == 200
                    and isinstance(body, dict)
                    and body.get("status") == "success"
                ):
                    assert body["value"] == key
                    self.ok.append(key)
                elif (
                    r.status_code == 200
                    and isinstance(body, dict)
                    and body.get("status") == "error"
                ):
                    self.failed.append(key)
                elif r.status_code >= 500 or r.status_code == 503:
                    self.unknown.append(key)  # refused while shutting down
                    return
                else:
                    self.other.append(f"{key}: {r.status_code} {r.text[:200]}")
                    return


class TsWatcher(threading.Thread):
    """Polls /api/query_ts until the server goes away; keeps the largest ts seen."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.max_ts = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=TIMEOUT_S) as http:
            while True:
                try:
                    r = http.post("/api/query_ts")
                except httpx.HTTPError:
                    return
                if r.status_code != 200:
                    return
                self.max_ts = max(self.max_ts, decode_ts(r.json()["ts"]))


def test_sigterm_under_load_loses_nothing_acknowledged(
    start_server: Callable[..., ServerProcess], make_app: Callable[..., Path]
) -> None:
    server = start_server(make_app(APP_FILES))
    ts_start = query_ts(server.url)

    # A subscribed WebSocket client, to see how it is told of the shutdown.
    ws = connect(
        server.url.replace("http://", "ws://") + "/api/sync",
        proxy=None,
        compression=None,
        ping_interval=None,
        open_timeout=TIMEOUT_S,
        legacy=True,
    )
    ws.send(
        json.dumps(
            {"type": "Connect", "sessionId": str(uuid.uuid4()), "connectionCount": 0, "clientTs": 0}
        )
    )
    ws.send(
        json.dumps(
            {
                "type": "ModifyQuerySet",
                "baseVersion": 0,
                "newVersion": 1,
                "modifications": [
                    {"type": "Add", "queryId": 0, "udfPath": "parts:all", "args": [{}]}
                ],
            }
        )
    )
    assert json.loads(ws.recv(timeout=TIMEOUT_S))["type"] == "Transition"

    stop = threading.Event()
    writers = [Writer(server.url, f"w{n}", stop) for n in range(CLIENTS)]
    watcher = TsWatcher(server.url)
    for w in writers:
        w.start()
    watcher.start()
    deadline = time.monotonic() + TIMEOUT_S
    # Progress from the writers, and the watcher's first answer (else a fast server could
    # be stopped before the watcher ever asked: a race in the test, not a finding).
    while sum(len(w.ok) for w in writers) < 40 or watcher.max_ts == 0:
        assert time.monotonic() < deadline, "the writers (or the watcher) made no progress"
        assert all(w.is_alive() for w in writers), [w.other for w in writers]
        time.sleep(0.01)

    # SIGTERM with requests in flight: a clean exit.
    code = server.stop()
    assert code == 0, server.log()[-3000:]
    stop.set()
    for w in writers:
        w.join(TIMEOUT_S)
        assert not w.is_alive()
    watcher.join(TIMEOUT_S)
    assert not watcher.is_alive()
    assert [x for w in writers for x in w.other] == []
    assert watcher.max_ts > ts_start

    # The subscribed socket was closed with a close frame, not dropped.
    try:
        while True:
            ws.recv(timeout=TIMEOUT_S)
    except ConnectionClosed:
        pass
    assert ws.close_code in (1001, 1012), (ws.close_code, ws.close_reason)

    # Restart on the same database.
    server.restart()
    after = httpx.post(
        f"{server.url}/api/query", json={"path": "parts:all", "args": {}}, timeout=TIMEOUT_S
    ).json()
    assert after["status"] == "success", after
    parts: dict[str, list[str]] = {}
    for key, part in after["value"]["parts"]:
        parts.setdefault(key, []).append(part)
    ok = [k for w in writers for k in w.ok]
    failed = [k for w in writers for k in w.failed]
    unknown = [k for w in writers for k in w.unknown]
    missing = [k for k in ok if k not in parts]
    assert missing == [], f"acknowledged but lost: {missing}"
    assert [k for k in failed if k in parts] == [], "reported failed but written"
    assert set(parts) <= set(ok) | set(unknown)
    half = {k: v for k, v in parts.items() if sorted(v) != ["a", "b"]}
    assert half == {}, f"half-applied: {half}"
    assert after["value"]["total"] == float(len(parts))

    # Timestamps never go back across the restart (spec §6.4).
    ts_restart = query_ts(server.url)
    assert ts_restart >= watcher.max_ts
    r = httpx.post(
        f"{server.url}/api/mutation",
        json={"path": "parts:write", "args": {"key": "post-restart"}},
        timeout=TIMEOUT_S,
    )
    assert r.json()["status"] == "success", r.text
    assert query_ts(server.url) > watcher.max_ts

    # The indexes agree with the documents.
    assert server.stop() == 0
    check = subprocess.run(
        [sys.executable, "-m", "reactive", "check", "--db", server.db_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "problem" not in check.stdout.replace("0 problem", "")


def test_idle_socket_gets_a_ping(chat_server: ServerProcess) -> None:
    """Connect, then silence: the server sends {"type":"Ping"} (spec §2.4: every ~15 s)."""
    with connect(
        chat_server.url.replace("http://", "ws://") + "/api/1.45.0/sync",
        proxy=None,
        compression=None,
        ping_interval=None,
        open_timeout=TIMEOUT_S,
    ) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "Connect",
                    "sessionId": str(uuid.uuid4()),
                    "connectionCount": 0,
                    "lastCloseReason": "InitialConnect",
                    "clientTs": time.time() * 1000,
                }
            )
        )
        first = json.loads(ws.recv(timeout=25.0))
        assert first == {"type": "Ping"}
        # The socket is still fully usable afterwards.
        ws.send(
            json.dumps(
                {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": []}
            )
        )
        t = json.loads(ws.recv(timeout=TIMEOUT_S))
        assert t["type"] == "Transition" and t["endVersion"]["querySet"] == 1
        assert t["startVersion"] == {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}

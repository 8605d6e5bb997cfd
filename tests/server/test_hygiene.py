"""Connection hygiene and error redaction of `python -m reactive.server`, against a real server.

Header and body time-outs, the connection cap (reactive.server.transport), what a client
sees of a function's error and what the log keeps (reactive.server.errors), and request
limits of the HTTP API (nesting, query_batch size, unknown vs internal functions).
"""

from __future__ import annotations

import re
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

ServerProcess = Any  # tests/server/conftest.py's ServerProcess

ROOT = Path(__file__).resolve().parents[2]

KNOBS = ("--header-timeout-s", "1", "--body-timeout-s", "1", "--max-connections", "50")
TIMEOUT_S = 1.0  # what KNOBS set
SLACK_S = 2.0  # scheduling slack on a busy machine
REQUEST_ID = re.compile(r"\[Request ID: ([0-9a-f]{16})\] Server Error")

APP_FILES = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({"items": define_table({"n": v.int64()})})
    """,
    "hygiene.py": """
        from reactive import ConvexError, action, internal_query, mutation, query, v

        @query(args={})
        async def fine(ctx):
            return "fine"

        @query(args={"x": v.any()})
        async def echo(ctx, x):
            return x

        @query(args={"n": v.int64()})
        async def typed(ctx, n):
            return n

        @query(args={})
        async def leaks(ctx):
            raise ValueError("secret /etc/passwd")

        @mutation(args={})
        async def leaks_key(ctx):
            raise KeyError("api-key-0123456789")

        @action(args={})
        async def leaks_runtime(ctx):
            raise RuntimeError("action secret /etc/shadow")

        @mutation(args={})
        async def convex_fails(ctx):
            raise ConvexError({"code": "BAD", "n": 7})

        @internal_query(args={})
        async def hidden(ctx):
            return "hidden"
    """,
}


@pytest.fixture
def hygiene_app(make_app: Callable[[dict[str, str]], Path]) -> Path:
    return make_app(APP_FILES)


@pytest.fixture
def server(start_server: Callable[..., ServerProcess], hygiene_app: Path) -> ServerProcess:
    return start_server(hygiene_app, *KNOBS, "--max-query-batch", "5")


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


def raw(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10.0)
    return sock


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (monotonic)."""
    deadline = time.monotonic() + limit_s
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the connection is still open after {limit_s} s: {data!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data, time.monotonic()
        data += chunk


def read_response(sock: socket.socket, limit_s: float = 5.0) -> bytes:
    """One whole response (headers and a Content-Length body)."""
    deadline = time.monotonic() + limit_s
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if length is not None and len(body) >= int(length.group(1)):
                return data
        left = deadline - time.monotonic()
        assert left > 0, f"no whole response in {limit_s} s: {data!r}"
        sock.settimeout(left)
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk


def post(http: httpx.Client, route: str, path: str, args: Any = None) -> dict[str, Any]:
    r = http.post(route, json={"path": path, "args": {} if args is None else args})
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_for_log(server: ServerProcess, *needles: str, limit_s: float = 10.0) -> str:
    deadline = time.monotonic() + limit_s
    while True:
        log = server.log()
        if all(n in log for n in needles):
            return str(log)
        assert time.monotonic() < deadline, (needles, log[-3000:])
        time.sleep(0.05)


# -- time-outs ---------------------------------------------------------------------------------


def test_idle_connections_are_closed(server: ServerProcess) -> None:
    socks = [raw(server) for _ in range(5)]
    opened = time.monotonic()
    for sock in socks:
        data, closed = read_until_closed(sock, TIMEOUT_S + SLACK_S)
        assert data == b""
        assert closed - opened >= TIMEOUT_S * 0.8
        sock.close()
    # Keep-alive: idle after a response is the same clock.
    with raw(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 200"), first
        answered = time.monotonic()
        rest, closed = read_until_closed(sock, TIMEOUT_S + SLACK_S)
        assert closed - answered >= TIMEOUT_S * 0.8, rest


def test_keep_alive_serves_requests_within_the_time_out(server: ServerProcess) -> None:
    with raw(server) as sock:
        for _ in range(4):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(TIMEOUT_S * 0.5)  # the clock restarts at each response


def test_slowloris_headers_are_cut(server: ServerProcess) -> None:
    with raw(server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        closed_at = None
        for byte in b"X-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # broken pipe or reset: it was closed
                closed_at = time.monotonic()
                break
            readable, _, _ = select.select([sock], [], [], 0.3)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                assert not data.startswith(b"HTTP/1.1 200"), data
                if not data:
                    closed_at = time.monotonic()
                    break
            assert time.monotonic() - started < TIMEOUT_S + SLACK_S, "slowloris was not cut"
        assert closed_at is not None
        assert TIMEOUT_S * 0.8 <= closed_at - started < TIMEOUT_S + SLACK_S


def test_stalled_body_answers_408_while_others_are_served(
    server: ServerProcess, http: httpx.Client
) -> None:
    with raw(server) as sock:
        sock.sendall(
            b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"path": "'
        )
        sent = time.monotonic()
        # Meanwhile another client is served at once.
        r = http.post("/api/query", json={"path": "hygiene:fine", "args": {}})
        assert r.status_code == 200 and r.json()["value"] == "fine"
        assert time.monotonic() - sent < 1.0
        data, closed = read_until_closed(sock, TIMEOUT_S + SLACK_S)
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
        assert b"RequestTimeout" in data or data == b""
        assert TIMEOUT_S * 0.8 <= closed - sent < TIMEOUT_S + SLACK_S
    # A body that keeps coming, slower than the time-out in total, is fine.
    with raw(server) as sock:
        body = b'{"path": "hygiene:fine", "args": {}}'
        sock.sendall(
            b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        for i in range(0, len(body), 8):
            sock.sendall(body[i : i + 8])
            time.sleep(TIMEOUT_S * 0.3)
        answer = read_response(sock)
        assert answer.startswith(b"HTTP/1.1 200") and b'"fine"' in answer, answer


def test_connection_cap(server: ServerProcess) -> None:
    socks: list[socket.socket] = []
    try:
        for _ in range(200):
            socks.append(raw(server))
        # Past 50 open connections: refused at once, with a 503 that says why.
        r = httpx.get(f"{server.url}/health", timeout=5.0)
        assert r.status_code == 503, r.text
        assert r.json() == {
            "code": "TooManyConnections",
            "message": "too many open connections (50); try again later",
        }
        refused = 0
        for sock in socks[50:]:
            data, _ = read_until_closed(sock, TIMEOUT_S + SLACK_S)
            if data.startswith(b"HTTP/1.1 503"):
                assert b"too many open connections (50)" in data
                refused += 1
        assert refused >= 140, refused
        # Once the idle ones time out, the server answers again.
        deadline = time.monotonic() + TIMEOUT_S + SLACK_S + 2.0
        while True:
            try:
                if httpx.get(f"{server.url}/health", timeout=5.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "/health never answered 200 again"
            time.sleep(0.1)
    finally:
        for sock in socks:
            sock.close()
    assert server.process.poll() is None
    assert "refused" in wait_for_log(server, "--max-connections")


def test_websockets_outlive_the_header_time_out_and_count(
    start_server: Callable[..., ServerProcess], hygiene_app: Path
) -> None:
    server = start_server(hygiene_app, "--header-timeout-s", "1", "--max-connections", "2")
    url = server.url.replace("http://", "ws://") + "/api/sync"
    options: dict[str, Any] = {"proxy": None, "compression": None, "ping_interval": None}
    with connect(url, open_timeout=10.0, **options) as one:
        with connect(url, open_timeout=10.0, **options) as two:
            for ws in (one, two):
                session = f'"sessionId": "{uuid.uuid4()}"'
                ws.send(f'{{"type": "Connect", {session}, "connectionCount": 0, "clientTs": 0}}')
            time.sleep(TIMEOUT_S * 2.5)
            # Still open: an established socket is not cut by the header deadline...
            for ws in (one, two):
                assert ws.ping().wait(5.0)
            # ... and each counts as an open connection.
            r = httpx.get(f"{server.url}/health", timeout=5.0)
            assert r.status_code == 503 and "too many open connections (2)" in r.text
        deadline = time.monotonic() + 10.0
        while httpx.get(f"{server.url}/health", timeout=5.0).status_code != 200:
            assert time.monotonic() < deadline, "a closed WebSocket still counts"
            time.sleep(0.05)
        assert one.ping().wait(5.0)


def test_websocket_that_never_says_connect_is_closed(
    start_server: Callable[..., ServerProcess], hygiene_app: Path
) -> None:
    """A socket past the handshake that never sends Connect holds a descriptor for nothing:
    it is closed (1008) once the header time-out has passed; one that connected stays."""
    server = start_server(hygiene_app, "--header-timeout-s", "1")
    url = server.url.replace("http://", "ws://") + "/api/sync"
    options: dict[str, Any] = {"proxy": None, "compression": None, "ping_interval": None}
    with (
        connect(url, open_timeout=10.0, **options) as silent,
        connect(url, open_timeout=10.0, **options) as talking,
    ):
        session = f'"sessionId": "{uuid.uuid4()}"'
        talking.send(f'{{"type": "Connect", {session}, "connectionCount": 0, "clientTs": 0}}')
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as info:
            while True:
                silent.recv(timeout=10.0)
        assert time.monotonic() - started < 8.0
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008, info.value
        assert talking.ping().wait(5.0)


# -- error redaction ---------------------------------------------------------------------------


def test_user_errors_are_redacted_and_logged(server: ServerProcess, http: httpx.Client) -> None:
    cases = [
        ("/api/query", "hygiene:leaks", "ValueError: secret /etc/passwd"),
        ("/api/mutation", "hygiene:leaks_key", "KeyError: 'api-key-0123456789'"),
        ("/api/action", "hygiene:leaks_runtime", "RuntimeError: action secret /etc/shadow"),
    ]
    for route, path, secret in cases:
        r = http.post(route, json={"path": path, "args": {}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "error" and "errorData" not in body
        match = REQUEST_ID.fullmatch(body["errorMessage"])
        assert match, body
        assert secret.split(": ", 1)[1] not in r.text
        log = wait_for_log(server, match.group(1), secret)
        line = next(x for x in log.splitlines() if match.group(1) in x)
        assert secret in line and "WARNING" in line
        assert "Traceback" in log
    # GET /api/query too.
    r = http.get("/api/query", params={"path": "hygiene:leaks", "args": "{}"})
    assert REQUEST_ID.fullmatch(r.json()["errorMessage"]) and "passwd" not in r.text


def test_dev_mode_shows_user_errors(
    start_server: Callable[..., ServerProcess], hygiene_app: Path
) -> None:
    server = start_server(hygiene_app, *KNOBS, "--dev")
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        body = post(http, "/api/query", "hygiene:leaks")
        message = body["errorMessage"]
        assert REQUEST_ID.match(message)
        assert message.endswith("\nUncaught ValueError: secret /etc/passwd"), message


def test_database_and_convex_errors_are_shown(http: httpx.Client) -> None:
    body = post(http, "/api/mutation", "hygiene:convex_fails")
    # A computed int in the data is a number, as a JS function's would be.
    assert body["errorData"] == {"code": "BAD", "n": 7.0}
    assert REQUEST_ID.match(body["errorMessage"])
    assert "\nUncaught ConvexError: " in body["errorMessage"]
    r = http.post(
        "/api/mutation",
        json={"path": "hygiene:convex_fails", "args": {}, "format": "convex_encoded_json"},
    )
    assert r.json()["errorData"] == {"code": "BAD", "n": 7.0}
    # The database's own errors (argument validation here) keep their text.
    body = post(http, "/api/query", "hygiene:typed", {"n": "not an int"})
    assert "\nUncaught ArgumentValidationError: " in body["errorMessage"], body


# -- HTTP API limits ---------------------------------------------------------------------------


def request_error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["code"] == code, body
    return str(body["message"])


def test_deeply_nested_args_answer_4xx(http: httpx.Client) -> None:
    for depth in (100, 5_000, 100_000):
        deep = "[" * depth + "]" * depth
        for args in (deep, '{"x": ' + deep + "}"):
            if len(args) < 20_000:
                r = http.get("/api/query", params={"path": "hygiene:echo", "args": args})
                message = request_error(r, 400, "BadArgs")
                assert len(message) < 500
            body = '{"path": "hygiene:echo", "args": ' + args + "}"
            r = http.post("/api/query", content=body, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (depth, r.status_code, r.text[:300])
    # Deep, but within the value limit: served.
    shallow = "[" * 30 + "]" * 30
    r = http.get("/api/query", params={"path": "hygiene:echo", "args": '{"x": ' + shallow + "}"})
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    assert http.get("/health").status_code == 200


def test_query_batch_limit(http: httpx.Client) -> None:
    five = [{"path": "hygiene:fine", "args": {}}] * 5
    r = http.post("/api/query_batch", json={"queries": five})
    assert r.status_code == 200 and [x["value"] for x in r.json()["results"]] == ["fine"] * 5
    message = request_error(
        http.post("/api/query_batch", json={"queries": [*five, five[0]]}), 400, "TooManyRequests"
    )
    assert "5" in message and "6" in message


def test_internal_and_unknown_functions_look_the_same(http: httpx.Client) -> None:
    messages = {}
    for path in ("hygiene:hidden", "hygiene:nothing", "nope:nothing"):
        r = http.post("/api/query", json={"path": path, "args": {}})
        messages[path] = request_error(r, 404, "FunctionNotFound")
        assert messages[path] == (
            f"Could not find public function for '{path}'. Did you forget to run "
            "`npx convex dev` or `npx convex deploy`?"
        )


# -- command line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--max-connections", "0"),
        ("--max-connections", "-5"),
        ("--header-timeout-s", "0"),
        ("--body-timeout-s", "nan"),
        ("--send-timeout-s", "inf"),
        ("--max-inflight-actions", "0"),
        ("--max-queued-mutations", "-1"),
        ("--max-queries-per-socket", "0"),
        ("--max-query-batch", "0"),
        ("--function-time-limit-s", "-1"),
        ("--action-time-limit-s", "inf"),
    ],
)
def test_bad_knobs_are_usage_errors(args: tuple[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reactive.server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert result.returncode == 2, result
    assert args[0] in result.stderr and "positive and finite" in result.stderr

"""The official Convex Python client (PyPI ``convex`` 0.8.1) against a real
``python -m reactive.server``.

``convex.ConvexClient`` is a Rust client behind PyO3 that holds the GIL while it waits, so
every client here runs in its own process: a small script written to tmp_path, run with
``subprocess`` under a timeout, that saves a JSON report to a file (stdout is left to the
client, which prints function log lines there). ``ConvexHttpClient`` runs the same way.

Spec: the Convex sync protocol, as the official Python client uses it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import ServerProcess


CLIENT_TIMEOUT_S = 60.0

# Shared by every client script: argv is (url, report path, extra...); ``tag`` turns a
# value the client returned into JSON that keeps its Python type visible.
PRELUDE = """
import json
import sys

import convex
from convex import ConvexClient, ConvexError, ConvexInt64
from convex.http_client import ConvexHttpClient

URL, REPORT = sys.argv[1], sys.argv[2]
EXTRA = sys.argv[3:]


def tag(value):
    if isinstance(value, ConvexInt64):
        return {"int64": value.value}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return {"float": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, list):
        return [tag(v) for v in value]
    if isinstance(value, dict):
        return {k: tag(v) for k, v in value.items()}
    return {"other": repr(value)}


def error(e):
    return {
        "type": type(e).__name__,
        "isConvexError": isinstance(e, ConvexError),
        "message": str(e),
        "data": tag(e.data) if isinstance(e, ConvexError) else None,
    }


def attempt(fn, *args):
    try:
        return {"ok": True, "value": tag(fn(*args))}
    except Exception as e:
        return {"ok": False, "error": error(e)}


def save(report):
    with open(REPORT, "w") as f:
        json.dump(report, f)
"""

# An app with untyped functions that describe the Python types of what they receive.
TYPES_APP = {
    "types.py": '''
    from reactive import ConvexError, action, mutation, query, v


    def _describe(value):
        if isinstance(value, dict):
            return {k: _describe(x) for k, x in value.items()}
        if isinstance(value, list):
            return [_describe(x) for x in value]
        return type(value).__name__


    @query
    async def describe(ctx, **args):
        """The Python type of every argument: int is int64, float is float64."""
        return {"types": _describe(args), "values": args}


    @mutation
    async def echo(ctx, **args):
        return {"types": _describe(args), "values": args}


    @query(args={"n": v.int64()}, returns=v.int64())
    async def next_int(ctx, n):
        return n + 1


    @mutation(args={"n": v.int64()})
    async def store_int(ctx, n):
        return n


    @action(args={"n": v.int64(), "label": v.string()})
    async def act(ctx, n, label):
        return {"n": n * 2, "type": type(n).__name__, "label": label}


    @action(args={})
    async def fail_plain(ctx):
        raise ValueError("boom")


    @action(args={})
    async def fail_data(ctx):
        raise ConvexError({"why": "because", "n": 3})
    ''',
}


def run_client(
    tmp_path: Path,
    name: str,
    body: str,
    server: ServerProcess,
    *extra: str,
    timeout_s: float = CLIENT_TIMEOUT_S,
) -> tuple[dict[str, Any], str]:
    """Run a client script (PRELUDE + body) in its own process; (report, stdout)."""
    # A prefix, so that no script shadows a module (http.py, numbers.py...).
    script = tmp_path / f"client_{name}.py"
    script.write_text(PRELUDE + "\n" + textwrap.dedent(body))
    report_path = tmp_path / f"client_{name}.json"
    try:
        proc = subprocess.run(
            [sys.executable, str(script), server.url, str(report_path), *extra],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        partial = report_path.read_text() if report_path.exists() else None
        raise AssertionError(
            f"{name} did not finish within {timeout_s} s (report so far: {partial})\n"
            f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}\n"
            f"server log:\n{server.log()[-4000:]}"
        ) from exc
    context = (
        f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
        f"stderr:\n{proc.stderr[-4000:]}\nserver log:\n{server.log()[-4000:]}"
    )
    assert proc.returncode == 0, context
    assert report_path.exists(), context
    return json.loads(report_path.read_text()), proc.stdout


@pytest.fixture
def types_server(
    start_server: Callable[..., ServerProcess], make_app: Callable[[dict[str, str]], Path]
) -> ServerProcess:
    return start_server(make_app(TYPES_APP))


def test_query_and_mutation(tmp_path: Path, chat_server: ServerProcess) -> None:
    report, stdout = run_client(
        tmp_path,
        "basic",
        """
        client = ConvexClient(URL)
        r = {}
        r["before"] = tag(client.query("messages:list", {"channel": "general"}))
        r["channel"] = tag(client.mutation("channels:create", {"name": "general"}))
        r["sent"] = tag(client.mutation(
            "messages:send", {"channel": "general", "author": "alice", "body": "hi"}
        ))
        # A query after the mutation returned sees its write (spec §6.6).
        r["after"] = tag(client.query("messages:list", {"channel": "general"}))
        # Paths in other spellings name the same function (spec §14).
        r["js_path"] = tag(client.query("channels.js:list"))
        r["channels"] = tag(client.query("channels:list", {}))
        save(r)
        """,
        chat_server,
    )
    assert report["before"] == []
    channel_id = report["channel"]
    assert isinstance(channel_id, str) and channel_id
    sent = report["sent"]
    assert isinstance(sent, str) and sent
    after = report["after"]
    assert [m["_id"] for m in after] == [sent]
    assert after[0]["body"] == "hi" and after[0]["author"] == "alice"
    assert set(after[0]["_creationTime"]) == {"float"}
    assert report["channels"] == report["js_path"]
    assert [(c["_id"], c["name"]) for c in report["channels"]] == [(channel_id, "general")]
    # The client prints the mutation's log lines (spec §9.4: "[LOG] text").
    assert "[LOG] alice -> #general: hi" in stdout


def test_subscription_sees_another_clients_mutation(
    tmp_path: Path, chat_server: ServerProcess
) -> None:
    """A subscriber process gets its first result, starts a second client process that
    sends a message, then iterates its subscription until the message arrives."""
    sender = tmp_path / "client_sender.py"
    sender.write_text(
        PRELUDE
        + textwrap.dedent(
            """
            client = ConvexClient(URL)
            sent = client.mutation(
                "messages:send", {"channel": "live", "author": "bob", "body": "from b"}
            )
            save({"sent": sent})
            """
        )
    )
    report, _ = run_client(
        tmp_path,
        "subscriber",
        """
        import subprocess

        client = ConvexClient(URL)
        sub = client.subscribe("messages:list", {"channel": "live"})
        r = {"first": tag(next(sub))}
        sender, sender_report = EXTRA
        proc = subprocess.run(
            [sys.executable, sender, URL, sender_report], capture_output=True, timeout=30
        )
        r["sender_rc"] = proc.returncode
        with open(sender_report) as f:
            sent = json.load(f)["sent"]
        r["sent"] = sent
        seen = []
        for value in sub:  # yields after every transition (spec §7)
            seen.append(tag(value))
            if any(m["_id"] == sent for m in value) or len(seen) >= 20:
                break
        r["seen"] = seen
        sub.unsubscribe()
        save(r)
        """,
        chat_server,
        str(sender),
        str(tmp_path / "client_sender.json"),
    )
    assert report["first"] == []
    assert report["sender_rc"] == 0
    last = report["seen"][-1]
    assert [m["_id"] for m in last] == [report["sent"]]
    assert last[0]["body"] == "from b"


def test_subscription_survives_a_server_restart(tmp_path: Path, chat_server: ServerProcess) -> None:
    """The server restarts under a subscribed client: it reconnects (a new session id, the
    path re-added as "messages.js:list", spec §8) and sees a message sent afterwards."""
    script = tmp_path / "client_restart.py"
    script.write_text(
        PRELUDE
        + textwrap.dedent(
            """
            client = ConvexClient(URL)
            sub = client.subscribe("messages:list", {"channel": "r"})
            r = {"first": tag(next(sub))}
            ready = EXTRA[0]
            open(ready, "w").close()  # tell the test to restart the server
            seen = []
            for value in sub:
                seen.append(tag(value))
                if any(m["body"] == "after restart" for m in value) or len(seen) >= 50:
                    break
            r["seen"] = seen
            save(r)
            """
        )
    )
    ready = tmp_path / "client_restart.ready"
    report_path = tmp_path / "client_restart.json"
    proc = subprocess.Popen(
        [sys.executable, str(script), chat_server.url, str(report_path), str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the subscriber never got its first result"
            time.sleep(0.05)
        chat_server.restart()
        # Another official client sends a message to the restarted server.
        sent, _ = run_client(
            tmp_path,
            "restart_sender",
            """
            client = ConvexClient(URL)
            save({"sent": client.mutation(
                "messages:send", {"channel": "r", "author": "s", "body": "after restart"}
            )})
            """,
            chat_server,
        )
        stdout, stderr = proc.communicate(timeout=CLIENT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (stdout, stderr, chat_server.log()[-4000:])
    report = json.loads(report_path.read_text())
    assert report["first"] == []
    last = report["seen"][-1]
    assert [m["_id"] for m in last] == [sent["sent"]]


def test_convex_error_and_plain_errors(tmp_path: Path, chat_server: ServerProcess) -> None:
    report, _ = run_client(
        tmp_path,
        "errors",
        """
        client = ConvexClient(URL)
        r = {}
        r["empty"] = attempt(client.mutation, "channels:create", {"name": "  "})
        r["created"] = attempt(client.mutation, "channels:create", {"name": "x"})
        r["taken"] = attempt(client.mutation, "channels:create", {"name": "x"})
        r["missing_mutation"] = attempt(client.mutation, "nope:missing", {})
        r["missing_query"] = attempt(client.query, "nope:missing", {})
        r["bad_mutation_args"] = attempt(client.mutation, "messages:send", {"channel": "x"})
        # The socket still works after all that.
        r["after"] = attempt(client.query, "channels:list", {})
        save(r)
        """,
        chat_server,
    )
    empty = report["empty"]
    assert empty["ok"] is False
    assert empty["error"]["isConvexError"] is True
    assert empty["error"]["data"] == {
        "code": "EMPTY_NAME",
        "message": "channel names cannot be empty",
    }
    assert "ConvexError" in empty["error"]["message"]
    assert report["created"]["ok"] is True
    assert report["taken"]["error"]["isConvexError"] is True
    assert report["taken"]["error"]["data"] == {"code": "TAKEN", "channel": "x"}
    for key in ["missing_mutation", "missing_query", "bad_mutation_args"]:
        outcome = report[key]
        assert outcome["ok"] is False, key
        assert outcome["error"]["isConvexError"] is False, key
        assert outcome["error"]["type"] == "Exception", key
    assert "nope:missing" in report["missing_query"]["error"]["message"]
    assert "author" in report["bad_mutation_args"]["error"]["message"]
    assert report["after"]["ok"] is True
    assert [c["name"] for c in report["after"]["value"]] == ["x"]


def test_numbers_ints_travel_as_float64(tmp_path: Path, types_server: ServerProcess) -> None:
    """The client sends Python ints as float64 (query, subscribe, mutation, action args);
    ConvexInt64 travels as int64 both ways."""
    report, _ = run_client(
        tmp_path,
        "numbers",
        """
        client = ConvexClient(URL)
        args = {"i": 5, "f": 2.5, "big": ConvexInt64(2**40), "nested": [1, {"x": 2}],
                "b": b"xy", "t": True, "s": "str", "none": None}
        r = {}
        r["query"] = tag(client.query("types:describe", args))
        sub = client.subscribe("types:describe", {"i": 5, "big": ConvexInt64(7)})
        r["subscribe"] = tag(next(sub))
        sub.unsubscribe()
        r["mutation"] = tag(client.mutation("types:echo", {"i": 5, "big": ConvexInt64(7)}))
        r["next_int"] = attempt(client.query, "types:next_int", {"n": ConvexInt64(41)})
        r["store_int"] = attempt(client.mutation, "types:store_int", {"n": ConvexInt64(-3)})
        # v.int64() refuses the float64 a Python int becomes.
        r["store_plain_int"] = attempt(client.mutation, "types:store_int", {"n": 3})
        r["action"] = attempt(client.action, "types:act", {"n": ConvexInt64(21), "label": "x"})
        r["action_plain_int"] = attempt(client.action, "types:act", {"n": 21, "label": "x"})
        r["fail_plain"] = attempt(client.action, "types:fail_plain")
        r["fail_data"] = attempt(client.action, "types:fail_data")
        save(r)
        """,
        types_server,
    )
    assert report["query"]["types"] == {
        "i": "float",
        "f": "float",
        "big": "Int64",
        "nested": ["float", {"x": "float"}],
        "b": "bytes",
        "t": "bool",
        "s": "str",
        "none": "NoneType",
    }
    values = report["query"]["values"]
    assert values["i"] == {"float": 5.0}
    assert values["big"] == {"int64": 2**40}
    assert values["b"] == {"bytes": "7879"}
    assert values["nested"] == [{"float": 1.0}, {"x": {"float": 2.0}}]
    for key in ["subscribe", "mutation"]:
        assert report[key]["types"] == {"i": "float", "big": "Int64"}, key
        assert report[key]["values"] == {"i": {"float": 5.0}, "big": {"int64": 7}}, key
    assert report["next_int"] == {"ok": True, "value": {"int64": 42}}
    assert report["store_int"] == {"ok": True, "value": {"int64": -3}}
    assert report["store_plain_int"]["ok"] is False
    assert "int64" in report["store_plain_int"]["error"]["message"]
    assert report["action"] == {
        "ok": True,
        # n * 2 is computed: a number (an int64 would need returns=v.int64()).
        "value": {"n": {"float": 42.0}, "type": "Int64", "label": "x"},
    }
    assert report["action_plain_int"]["ok"] is False
    assert report["fail_plain"]["ok"] is False
    assert report["fail_plain"]["error"]["isConvexError"] is False
    # An app's own exception is redacted (no --dev): the request id only, never its text.
    assert "Server Error" in report["fail_plain"]["error"]["message"]
    assert "boom" not in report["fail_plain"]["error"]["message"]
    assert report["fail_data"]["error"]["isConvexError"] is True
    assert report["fail_data"]["error"]["data"] == {"why": "because", "n": {"float": 3.0}}


def test_query_with_invalid_arguments_raises(tmp_path: Path, types_server: ServerProcess) -> None:
    """``client.query`` of a query whose validator rejects the arguments raises (the
    server answers QueryFailed, spec §18.1 items 4 and 12) rather than waiting forever.
    The common case: a Python int sent to a ``v.int64()`` argument arrives as float64."""
    script = """
        # Save what we know before each call that may block (the timeout is the parent's).
        client = ConvexClient(URL)
        r = {"started": True}
        save(r)
        r["plain_int"] = attempt(client.query, "types:next_int", {"n": 3})
        save(r)
        r["after"] = attempt(client.query, "types:next_int", {"n": ConvexInt64(1)})
        save(r)
        """
    try:
        # A healthy server answers in milliseconds; 10 s bounds the wait for a broken one.
        report, _ = run_client(tmp_path, "bad_query_args", script, types_server, timeout_s=10)
    except AssertionError as exc:
        raise AssertionError(
            "client.query() with arguments the validator rejects never returned: the "
            "server sent no QueryFailed for it\n" + str(exc)[:3000]
        ) from None
    assert report["plain_int"]["ok"] is False
    assert report["plain_int"]["error"]["isConvexError"] is False
    assert "int64" in report["plain_int"]["error"]["message"]
    assert report["after"] == {"ok": True, "value": {"int64": 2}}


def test_http_client(tmp_path: Path, types_server: ServerProcess) -> None:
    """convex.http_client.ConvexHttpClient: query, mutation, action, errors, numbers."""
    report, _ = run_client(
        tmp_path,
        "http",
        """
        client = ConvexHttpClient(URL)
        r = {}
        r["query"] = attempt(client.query, "types:describe", {"i": 5, "big": ConvexInt64(9)})
        r["mutation"] = attempt(client.mutation, "types:echo", {"f": 1.5, "s": "x"})
        r["next_int"] = attempt(client.query, "types:next_int", {"n": ConvexInt64(41)})
        r["plain_int"] = attempt(client.query, "types:next_int", {"n": 3})
        r["action"] = attempt(client.action, "types:act", {"n": ConvexInt64(4), "label": "y"})
        r["fail_plain"] = attempt(client.action, "types:fail_plain")
        r["fail_data"] = attempt(client.action, "types:fail_data")
        r["missing"] = attempt(client.query, "nope:missing")
        save(r)
        """,
        types_server,
    )
    assert report["query"]["ok"] is True
    assert report["query"]["value"]["types"] == {"i": "float", "big": "Int64"}
    assert report["query"]["value"]["values"] == {"i": {"float": 5.0}, "big": {"int64": 9}}
    assert report["mutation"]["value"]["types"] == {"f": "float", "s": "str"}
    assert report["next_int"] == {"ok": True, "value": {"int64": 42}}
    assert report["plain_int"]["ok"] is False
    assert report["plain_int"]["error"]["type"] == "ConvexExecutionError"
    assert "int64" in report["plain_int"]["error"]["message"]
    assert report["action"]["value"] == {"n": {"float": 8.0}, "type": "Int64", "label": "y"}
    assert report["fail_plain"]["error"]["type"] == "ConvexExecutionError"
    # An app's own exception reads "Server Error" over HTTP (its text only with --dev).
    assert "Server Error" in report["fail_plain"]["error"]["message"]
    assert "boom" not in report["fail_plain"]["error"]["message"]
    assert report["fail_data"]["error"]["isConvexError"] is True
    # The HTTP client hands errorData over as raw Convex JSON (it does not decode it, unlike
    # the WebSocket client), and its message is a fixed "Convex error" for object data.
    assert report["fail_data"]["error"]["data"] == {"why": "because", "n": {"float": 3.0}}
    assert report["fail_data"]["error"]["message"] == "Convex error"
    # A request error: non-2xx with {"code", "message"} (spec §18.1 item 13).
    assert report["missing"]["ok"] is False
    assert report["missing"]["error"]["isConvexError"] is False
    assert re.match(
        r"4\d\d FunctionNotFound: .*nope:missing", report["missing"]["error"]["message"]
    )

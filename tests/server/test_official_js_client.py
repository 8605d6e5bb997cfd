"""The official Convex JS client (npm ``convex``, pinned in tests/js/package.json) against
a real ``python -m reactive.server`` serving the chat example.

Each test runs one ES-module script of tests/js under Node with the server's URL; the
script prints one JSON report on stdout and exits by itself (its own deadline, and a
subprocess timeout here). ``npm ci`` runs once per session when tests/js/node_modules is
missing or holds another convex version than the pin. Skipped only when ``node`` is not on
PATH.

Spec: the Convex sync protocol, as the official JS client uses it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import ServerProcess


JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT_TIMEOUT_S = 90.0


def _installed_convex() -> str | None:
    """The version of convex in tests/js/node_modules, if installed."""
    installed = JS_DIR / "node_modules" / "convex" / "package.json"
    if not installed.exists():
        return None
    return str(json.loads(installed.read_text())["version"])


@pytest.fixture(scope="session")
def js_project() -> Path:
    """tests/js with its node_modules installed (``npm ci`` once if missing or stale)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the official JS client tests need Node.js >= 18")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 18, f"node {version}: need >= 18"
    pinned = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["convex"]
    if _installed_convex() != pinned:
        npm = shutil.which("npm")
        assert npm is not None, "npm is not on PATH: cannot install tests/js's dependencies"
        proc = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"npm ci failed:\n{proc.stdout}\n{proc.stderr}"
        assert _installed_convex() == pinned
    return JS_DIR


def run_script(project: Path, script: str, server: ServerProcess) -> dict[str, Any]:
    """Run ``node tests/js/<script> <url>`` and return its JSON report."""
    node = shutil.which("node")
    assert node is not None
    try:
        proc = subprocess.run(
            [node, script, server.url],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{script} did not exit within {SCRIPT_TIMEOUT_S} s\nstdout: {exc.stdout!r}\n"
            f"stderr: {exc.stderr!r}\nserver log:\n{server.log()[-4000:]}"
        ) from exc
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    context = (
        f"{script} exited {proc.returncode}\nstdout:\n{proc.stdout[-6000:]}\n"
        f"stderr:\n{proc.stderr[-6000:]}\nserver log:\n{server.log()[-4000:]}"
    )
    assert lines, context
    report: dict[str, Any] = json.loads(lines[-1])
    assert proc.returncode == 0 and "error" not in report, context
    return report


def ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["_id"] for m in messages]


def test_package_json_pins_the_client() -> None:
    """The Node project pins exact versions and commits its lock file."""
    package = json.loads((JS_DIR / "package.json").read_text())
    deps = package["dependencies"]
    assert deps["convex"].split(".")[0] == "1" and deps["convex"][0].isdigit()
    assert deps["ws"][0].isdigit()
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/convex"]["version"] == deps["convex"]
    assert lock["packages"]["node_modules/ws"]["version"] == deps["ws"]


def test_websocket_client(js_project: Path, chat_server: ServerProcess) -> None:
    """ConvexClient: onUpdate, mutation, query, ConvexError, a second client's write."""
    r = run_script(js_project, "client_basic.mjs", chat_server)

    # The subscription's first result is the current (empty) one.
    assert r["initial"] == []
    # A mutation resolves with the new id, and by then the subscription already shows
    # the write: the transition that released the mutation carried it (spec §6.6).
    sent = r["sentId"]
    assert isinstance(sent, str) and sent
    latest = r["latestWhenMutationResolved"]
    assert ids(latest) == [sent]
    assert latest[0]["author"] == "alice" and latest[0]["body"] == "hello"
    assert isinstance(latest[0]["_creationTime"], float | int)
    # A one-shot query sees it too.
    assert ids(r["queried"]) == [sent]

    # ConvexError: an instance of convex/values' ConvexError with .data decoded.
    empty = r["emptyName"]
    assert empty["ok"] is False
    assert empty["error"]["isConvexError"] is True
    assert empty["error"]["name"] == "ConvexError"
    assert empty["error"]["data"] == {
        "code": "EMPTY_NAME",
        "message": "channel names cannot be empty",
    }
    assert r["created"]["ok"] is True and isinstance(r["created"]["value"], str)
    assert r["taken"]["ok"] is False
    assert r["taken"]["error"]["isConvexError"] is True
    assert r["taken"]["error"]["data"] == {"code": "TAKEN", "channel": "general"}
    assert [c["name"] for c in r["channels"]] == ["general"]

    # Ordinary failures are plain Errors naming the function, not ConvexErrors.
    for key, fragment in [
        ("missingQuery", "nope:missing"),
        ("missingMutation", "nope:missing"),
        ("badArgsMutation", "author"),
    ]:
        outcome = r[key]
        assert outcome["ok"] is False, key
        assert outcome["error"]["isConvexError"] is False, key
        assert fragment in outcome["error"]["message"], key
    assert "Q(nope:missing)" in r["missingQuery"]["error"]["message"]
    assert "M(nope:missing)" in r["missingMutation"]["error"]["message"]

    # The second client's mutation reached the first client's onUpdate.
    from_b = r["fromBId"]
    assert ids(r["latestAfterB"]) == [from_b, sent]
    assert r["latestAfterB"][0]["author"] == "bob"
    # Every update is a distinct result: no repeats of unchanged results (spec §6.5).
    assert [ids(u) for u in r["updates"]] == [[], [sent], [from_b, sent]]
    assert r["updateErrors"] == []

    state = r["connectionState"]
    assert state["isWebSocketConnected"] is True
    assert state["hasInflightRequests"] is False
    assert state["connectionRetries"] == 0
    assert r["closed"] == [True, True]

    # Function log lines reach the client's console in the "[LOG] text" form it parses
    # (spec §9.4); nothing was logged as unparseable, nor as a protocol failure.
    logged = [text for _, text in r["console"]]
    assert any(
        "[CONVEX M(messages:send)] [LOG]" in t and "alice -> #general: hello" in t for t in logged
    )
    assert not any("Could not parse" in t for t in logged)
    assert not any("FATAL" in t or "Invalid start version" in t for t in logged)


def test_http_client(js_project: Path, chat_server: ServerProcess) -> None:
    """ConvexHttpClient: query, mutation, consistentQuery, ConvexError, errors."""
    r = run_script(js_project, "http_client.mjs", chat_server)
    assert r["initialChannels"] == []
    created = r["createdId"]
    assert isinstance(created, str) and created
    assert [(c["_id"], c["name"]) for c in r["channels"]] == [(created, "http")]

    assert r["emptyName"]["ok"] is False
    assert r["emptyName"]["error"]["isConvexError"] is True
    assert r["emptyName"]["error"]["data"]["code"] == "EMPTY_NAME"
    assert r["taken"]["error"]["isConvexError"] is True
    assert r["taken"]["error"]["data"] == {"code": "TAKEN", "channel": "http"}

    assert ids(r["messages"]) == [r["sentId"]]
    assert r["messages"][0]["body"] == "over http"
    assert r["consistent"] == r["messages"]

    for key in ["missingQuery", "badArgsQuery", "missingMutation"]:
        assert r[key]["ok"] is False, key
        assert r[key]["error"]["isConvexError"] is False, key
    assert "nope:missing" in r["missingQuery"]["error"]["message"]
    assert "channel" in r["badArgsQuery"]["error"]["message"]
    # A deployment URL with a trailing slash works (…//api/query, spec §2.1).
    assert r["trailingSlash"]["ok"] is True
    assert [c["name"] for c in r["trailingSlash"]["value"]] == ["http"]


def test_paginated_queries(js_project: Path, chat_server: ServerProcess) -> None:
    """messages:page by continueCursor, and onPaginatedUpdate_experimental with loadMore."""
    r = run_script(js_project, "paginated.mjs", chat_server)
    assert len(set(r["sent"])) == 5
    # One-shot pages of 2: a page that is exactly full is not done; the last one is.
    assert r["pages"] == [
        {"bodies": ["m0", "m1"], "isDone": False, "continueCursorType": "string"},
        {"bodies": ["m2", "m3"], "isDone": False, "continueCursorType": "string"},
        {"bodies": ["m4"], "isDone": True, "continueCursorType": "string"},
    ]
    assert r["firstPage"] == {"bodies": ["m0", "m1"], "status": "CanLoadMore"}
    assert r["afterLoadMore"] == {"bodies": ["m0", "m1", "m2", "m3", "m4"], "status": "Exhausted"}
    assert r["errors"] == []
    assert r["zeroItems"]["ok"] is False
    assert "numItems" in r["zeroItems"]["error"]["message"]


def test_paginated_last_page_follows_inserts(js_project: Path, chat_server: ServerProcess) -> None:
    """Once exhausted, the last page runs to the end of the index: new messages appear in it
    and the status stays Exhausted (the page's journal holds the End cursor, spec §17 and
    §6.9: the server must reuse the journal when the same query re-runs on the socket)."""
    r = run_script(js_project, "paginated.mjs", chat_server)
    assert r["afterLoadMore"]["status"] == "Exhausted"
    assert r["after_m5"]["seen"] is True
    assert r["after_m5"]["bodies"] == ["m0", "m1", "m2", "m3", "m4", "m5"]
    assert r["after_m5"]["status"] == "Exhausted"
    assert r["after_m6"]["seen"] is True, r["after_m6"]
    assert r["after_m6"]["bodies"] == ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]
    assert r["after_m6"]["status"] == "Exhausted"


def test_query_with_invalid_arguments_fails(js_project: Path, chat_server: ServerProcess) -> None:
    """A subscribed query whose arguments fail validation gets QueryFailed (spec §5.1,
    §18.1 item 4), so onUpdate's error callback fires and a one-shot query rejects, and
    the socket keeps serving other queries meanwhile."""
    r = run_script(js_project, "query_errors.mjs", chat_server)
    assert r["before"]["settled"] is True and r["before"]["ok"] is True
    assert r["duringBadQuery"]["settled"] is True and r["duringBadQuery"]["ok"] is True
    assert r["answered"] is True, "onUpdate with a bad argument got neither a value nor an error"
    assert r["values"] == []
    assert len(r["errors"]) == 1
    assert r["errors"][0]["isConvexError"] is False
    assert "channel" in r["errors"][0]["message"]
    assert r["oneShot"]["settled"] is True, "client.query() with a bad argument never settled"
    assert r["oneShot"]["ok"] is False
    assert r["after"]["settled"] is True, "a good query on the same socket never got a result"
    assert r["after"]["ok"] is True
    assert [m["body"] for m in r["after"]["value"]] == ["two", "one"]


def test_optimistic_update_never_shows_with_its_real_row(
    js_project: Path, chat_server: ServerProcess
) -> None:
    """Optimistic updates: the server sends a MutationResponse before any transition that
    holds the mutation's write, so the client drops the optimistic row in the same update
    that brings the real one (40 rounds, another client writing the channel meanwhile)."""
    r = run_script(js_project, "optimistic.mjs", chat_server)
    assert r["errors"] == []
    assert r["optimisticSeen"] > 0, r  # the optimistic rows were shown at all
    assert r["both"] == [], r
    assert r["finalOptimistic"] == 0 and r["finalHasLast"] is True, r

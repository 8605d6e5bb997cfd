"""HTTP bodies fuzzed (hypothesis) against a real server: every request gets a JSON answer
with a 2xx/4xx status — never a 5xx, a hang or a dropped connection — and the server keeps
serving with its data unchanged.

Bodies are drawn from: arbitrary bytes; arbitrary JSON; and request-shaped JSON (``path``,
``args``, ``format``, ``ts``, ``queries``) with values of every type in every place,
including real function paths with wrong arguments, so the parsers past the JSON decoder
are reached too. They go to every POST route of spec §13 with a random ``Content-Type``.
Mutations run only with arguments that cannot validate (the chat app's ``messages:send``
needs three strings; the generator never gives it all three), so the stored data must be
exactly what it was.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from conftest import ServerProcess

ROUTES = [
    "/api/query",
    "/api/mutation",
    "/api/action",
    "/api/function",
    "/api/run/messages/list",
    "/api/run/messages/send",
    "/api/run/nope/nothing",
    "/api/query_ts",
    "/api/query_at_ts",
    "/api/query_batch",
]
PATHS = ["messages:list", "messages:send", "channels:list", "messages:page", "nope:x", ""]

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["$integer", "$float", "$bytes", "channel", "limit", "a", "body"])
            | st.text(max_size=4),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)


@st.composite
def shaped(draw: st.DrawFn) -> Any:
    """A request-like JSON object: the right keys with values of any type."""
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        body["path"] = draw(st.sampled_from(PATHS) | json_values)
    if draw(st.booleans()):
        args = draw(json_values)
        if isinstance(args, dict):
            # Never all three strings messages:send needs: no mutation can succeed.
            args.pop("author", None)
        body["args"] = args
    if draw(st.booleans()):
        body["format"] = draw(st.sampled_from(["json", "convex_encoded_json", "x"]) | json_values)
    if draw(st.booleans()):
        body["ts"] = draw(json_values)
    if draw(st.booleans()):
        body["queries"] = draw(st.lists(json_values, max_size=3) | json_values)
    return body


bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda x: json.dumps(x).encode()),
    shaped().map(lambda x: json.dumps(x).encode()),
)
content_types = st.sampled_from(
    ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
)


@pytest.fixture
def seeded_server(chat_server: ServerProcess) -> ServerProcess:
    with httpx.Client(base_url=chat_server.url, timeout=10.0) as http:
        for body in ("one", "two"):
            r = http.post(
                "/api/mutation",
                json={
                    "path": "messages:send",
                    "args": {"channel": "general", "author": "ann", "body": body},
                    "format": "json",
                },
            )
            assert r.status_code == 200 and r.json()["status"] == "success", r.text
    return chat_server


def snapshot(http: httpx.Client) -> Any:
    r = http.post(
        "/api/query",
        json={"path": "messages:list", "args": {"channel": "general"}, "format": "json"},
    )
    assert r.status_code == 200, r.text
    return r.json()["value"]


def test_fuzzed_http_bodies(seeded_server: ServerProcess) -> None:
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=seeded_server.url, timeout=10.0) as http:
        before = snapshot(http)
        assert sorted(m["body"] for m in before) == ["one", "two"]

        @given(route=st.sampled_from(ROUTES), body=bodies, content_type=content_types)
        @settings(
            max_examples=1500,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        def one(route: str, body: bytes, content_type: str) -> None:
            headers = {"Content-Type": content_type} if content_type else {}
            r = http.post(route, content=body, headers=headers)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (route, body, r.status_code, r.text)
            answer = r.json()  # every answer is JSON
            if r.status_code >= 400:
                assert set(answer) >= {"code", "message"}, answer
            elif route not in ("/api/query_batch", "/api/query_ts"):
                assert answer.get("status") in {"success", "error"}, answer
                if route in ("/api/mutation", "/api/run/messages/send"):
                    assert answer["status"] == "error", (body, answer)

        one()
        # Still serving, and nothing changed.
        assert http.get("/health").status_code == 200
        assert snapshot(http) == before
    print("\nHTTP fuzz statuses:", dict(sorted(statuses.items())))
    assert seeded_server.process.poll() is None

"""The HTTP API of `python -m reactive.server` (spec §13), against a real server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reactive import _core
from reactive.sync.messages import decode_ts, encode_ts

ServerProcess = Any  # tests/server/conftest.py's ServerProcess

APP_FILES = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({"notes": define_table({"text": v.string(), "n": v.int64()})})
    """,
    "notes.py": """
        from reactive import (
            ConvexError, Int64, action, internal_action, internal_mutation, internal_query,
            mutation, query, v,
        )

        @query(args={})
        async def list(ctx):
            return [d["text"] for d in await ctx.db.query("notes").collect()]

        @query(args={"x": v.any()})
        async def echo(ctx, x):
            print("echo", repr(x))
            return x

        @query(args={})
        async def values(ctx):
            return {"int": Int64(42), "float": 1.5, "bytes": b"hello", "nan": float("nan"),
                    "inf": float("inf"), "neg": -0.0, "list": [Int64(1), None, True],
                    "computed": 6 * 7}

        @query(args={})
        async def whoami(ctx):
            return await ctx.auth.get_user_identity()

        @query(args={})
        async def quiet(ctx):
            return "quiet"

        @query(args={"code": v.string()})
        async def query_fails(ctx, code):
            print("query about to fail")
            raise ConvexError({"code": code, "n": Int64(7), "computed": 7})

        @mutation(args={"text": v.string(), "n": v.int64()})
        async def add(ctx, text, n):
            print("adding", text)
            return await ctx.db.insert("notes", {"text": text, "n": n})

        @mutation(args={"text": v.string()})
        async def add_then_fail(ctx, text):
            await ctx.db.insert("notes", {"text": text, "n": 0})
            print("about to fail")
            raise ValueError("boom")

        @mutation(args={})
        async def fail_convex(ctx):
            raise ConvexError({"code": "BAD", "n": Int64(42), "b": b"hi", "computed": 42})

        @mutation(args={})
        async def fail_convex_string(ctx):
            raise ConvexError("just a message")

        @action(args={"text": v.string()})
        async def shout(ctx, text):
            print("shouting", text)
            return await ctx.run_mutation("notes:secret", {"text": text.upper()})

        @action(args={})
        async def action_fails(ctx):
            raise RuntimeError("action broke")

        @internal_mutation(args={"text": v.string()})
        async def secret(ctx, text):
            return await ctx.db.insert("notes", {"text": text, "n": 1})

        @internal_query(args={})
        async def hidden(ctx):
            return "hidden"

        @internal_action(args={})
        async def hidden_action(ctx):
            return "hidden"

        @query(args={})
        async def reserved_error_data(ctx):
            raise ConvexError({"$integer": "AQAAAAAAAAA="})
    """,
    "dir/__init__.py": "",
    "dir/file.py": """
        from reactive import query

        @query(args={})
        async def fn(ctx):
            return "nested"

        @query(args={})
        async def default(ctx):
            return "nested default"
    """,
}

ORIGIN = "http://app.example.com"


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def notes_app(make_app: Callable[[dict[str, str]], Path]) -> Path:
    return make_app(APP_FILES)


@pytest.fixture
def http(chat_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chat_server.url, timeout=30.0) as client:
        yield client


@pytest.fixture
def notes(start_server: Callable[..., ServerProcess], notes_app: Path) -> Iterator[httpx.Client]:
    server = start_server(notes_app)
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    """The value of a successful function response; checks the body's exact shape."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    assert set(body) <= {"status", "value", "logLines"}, body
    if "logLines" in body:
        assert body["logLines"], "logLines must be left out when empty"
        assert all(isinstance(x, str) and x.startswith("[") for x in body["logLines"])
    return body["value"]


def fn_error(response: httpx.Response) -> dict[str, Any]:
    """A function that ran and failed: HTTP 200 with status error."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "error", body
    assert set(body) <= {"status", "errorMessage", "errorData", "logLines"}, body
    assert isinstance(body["errorMessage"], str) and body["errorMessage"]
    if "logLines" in body:
        assert body["logLines"]
    return dict(body)


def request_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """A request refused before any function ran: non-2xx with {"code", "message"}."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "message"}, body
    assert isinstance(body["code"], str) and body["code"]
    assert isinstance(body["message"], str) and body["message"]
    if code is not None:
        assert body["code"] == code, body
    return str(body["message"])


def send(http: httpx.Client, body: str = "hi", channel: str = "general") -> str:
    value = ok(
        http.post(
            "/api/mutation",
            json={
                "path": "messages:send",
                "args": {"channel": channel, "author": "ada", "body": body},
            },
        )
    )
    assert isinstance(value, str)
    return value


def bodies(http: httpx.Client, channel: str = "general", **extra: Any) -> list[str]:
    value = ok(
        http.post(
            "/api/query", json={"path": "messages:list", "args": {"channel": channel}, **extra}
        )
    )
    return [m["body"] for m in value]


# -- the chat app ------------------------------------------------------------------------------


def test_mutation_and_query_with_both_args_forms(http: httpx.Client) -> None:
    r = http.post(
        "/api/mutation",
        json={
            "path": "messages:send",
            "args": [{"channel": "general", "author": "ada", "body": "hello"}],
            "format": "convex_encoded_json",
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "success" and isinstance(body["value"], str)
    assert body["logLines"] == ["[LOG] ada -> #general: hello"]
    assert set(body) == {"status", "value", "logLines"}
    # Object form (Python client), array form (JS client).
    for args in ({"channel": "general"}, [{"channel": "general"}]):
        r = http.post(
            "/api/query",
            json={"path": "messages:list", "args": args, "format": "convex_encoded_json"},
        )
        assert set(r.json()) == {"status", "value"}  # no logLines: nothing printed
        (doc,) = ok(r)
        assert doc["body"] == "hello" and doc["_id"] == body["value"]
        assert isinstance(doc["_creationTime"], float)
    # args left out means {}.
    assert ok(http.post("/api/query", json={"path": "channels:list"})) == []


def test_paths_are_canonicalized(http: httpx.Client) -> None:
    send(http, "x")
    for path in ("messages:list", "messages.js:list", "messages.py:list"):
        assert bodies_at(http, path) == ["x"]


def bodies_at(http: httpx.Client, path: str) -> list[str]:
    value = ok(http.post("/api/query", json={"path": path, "args": {"channel": "general"}}))
    return [m["body"] for m in value]


def test_function_endpoint_runs_every_kind(http: httpx.Client) -> None:
    created = ok(
        http.post("/api/function", json={"path": "channels:create", "args": {"name": "g"}})
    )
    assert isinstance(created, str)
    channels = ok(http.post("/api/function", json={"path": "channels:list", "args": {}}))
    assert [c["name"] for c in channels] == ["g"]


def test_run_route(http: httpx.Client) -> None:
    ok(
        http.post(
            "/api/run/messages/send", json={"args": {"channel": "c", "author": "a", "body": "b"}}
        )
    )
    (doc,) = ok(http.post("/api/run/messages/list", json={"args": {"channel": "c"}}))
    assert doc["body"] == "b"
    # Default format is json: the same as asking for it.
    limited = ok(
        http.post(
            "/api/run/messages/list",
            json={"args": [{"channel": "c", "limit": 1.0}], "format": "json"},
        )
    )
    assert limited == [doc]
    request_error(
        http.post("/api/run/messages", json={"args": {}}), 400, "BadConvexFunctionIdentifier"
    )
    request_error(http.post("/api/run/nope/nothing", json={"args": {}}), 404)


def test_get_query(http: httpx.Client) -> None:
    send(http, "via get")
    r = http.get(
        "/api/query", params={"path": "messages:list", "args": json.dumps({"channel": "general"})}
    )
    assert [m["body"] for m in ok(r)] == ["via get"]
    r = http.get(
        "/api/query",
        params={
            "path": "messages:list",
            "args": json.dumps([{"channel": "general"}]),
            "format": "convex_encoded_json",
        },
    )
    assert [m["body"] for m in ok(r)] == ["via get"]
    request_error(http.get("/api/query", params={"path": "messages:list", "args": "{bad"}), 400)
    request_error(http.get("/api/query", params={"path": "messages:send"}), 400)


def test_query_ts_and_query_at_ts(http: httpx.Client) -> None:
    send(http, "first")
    r = http.post("/api/query_ts")
    assert r.status_code == 200 and set(r.json()) == {"ts"}
    ts1 = r.json()["ts"]
    send(http, "second")
    ts2 = http.post("/api/query_ts").json()["ts"]
    assert decode_ts(ts2) > decode_ts(ts1)

    def at(ts: str) -> list[str]:
        r = http.post(
            "/api/query_at_ts",
            json={
                "path": "messages:list",
                "args": [{"channel": "general"}],
                "format": "convex_encoded_json",
                "ts": ts,
            },
        )
        return [m["body"] for m in ok(r)]

    assert at(ts1) == ["first"]  # the later mutation is not visible at the earlier ts
    assert at(ts2) == ["second", "first"]
    assert bodies(http) == ["second", "first"]
    request_error(
        http.post(
            "/api/query_at_ts", json={"path": "messages:list", "args": {"channel": "general"}}
        ),
        400,
    )
    request_error(
        http.post(
            "/api/query_at_ts",
            json={"path": "messages:list", "args": {"channel": "general"}, "ts": "not a ts"},
        ),
        400,
    )
    future = encode_ts(decode_ts(ts2) + 10**15)
    request_error(
        http.post(
            "/api/query_at_ts",
            json={"path": "messages:list", "args": {"channel": "general"}, "ts": future},
        ),
        400,
    )


def test_query_batch(http: httpx.Client) -> None:
    send(http, "a", channel="one")
    send(http, "b", channel="two")
    r = http.post(
        "/api/query_batch",
        json={
            "queries": [
                {"path": "messages:list", "args": {"channel": "one"}},
                {
                    "path": "messages:list",
                    "args": [{"channel": "two"}],
                    "format": "convex_encoded_json",
                },
                {"path": "nope:nothing", "args": {}},
            ]
        },
    )
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 3
    assert [m["body"] for m in results[0]["value"]] == ["a"]
    assert [m["body"] for m in results[1]["value"]] == ["b"]
    assert results[0]["status"] == results[1]["status"] == "success"
    assert results[2]["status"] == "error" and results[2]["errorMessage"]
    request_error(http.post("/api/query_batch", json={"queries": 5}), 400)


def test_instance_name_and_health(http: httpx.Client) -> None:
    r = http.get("/instance_name")
    assert r.status_code == 200 and r.text.strip()
    r = http.get("/health")
    assert r.status_code == 200
    r = http.get("/instance_version")
    assert r.status_code == 200 and r.text.strip()


def test_function_errors(http: httpx.Client) -> None:
    # ConvexError: errorData, in the requested format.
    for fmt in ("json", "convex_encoded_json"):
        err = fn_error(
            http.post(
                "/api/mutation",
                json={"path": "channels:create", "args": {"name": " "}, "format": fmt},
            )
        )
        assert err["errorData"] == {
            "code": "EMPTY_NAME",
            "message": "channel names cannot be empty",
        }
    # Any other error: no errorData.
    err = fn_error(
        http.post("/api/mutation", json={"path": "channels:create", "args": {"name": 5}})
    )
    assert "errorData" not in err
    assert "ArgumentValidationError" in err["errorMessage"]
    assert ok(http.post("/api/query", json={"path": "channels:list", "args": {}})) == []


REQUEST_ERRORS: list[tuple[bytes, int, str | None]] = [
    (b"{bad json", 400, None),
    (b"[1, 2]", 400, None),
    (b'"text"', 400, None),
    (b"null", 400, None),
    (b'{"path": "messages:list", "args": {"channel": NaN}}', 400, None),
    (json.dumps({"path": "nope:nothing", "args": {}}).encode(), 404, None),
    (json.dumps({"path": "messages:nothing", "args": {}}).encode(), 404, None),
    (json.dumps({"path": "a b:c", "args": {}}).encode(), 400, "BadConvexFunctionIdentifier"),
    (
        json.dumps({"path": "messages:1list", "args": {}}).encode(),
        400,
        "BadConvexFunctionIdentifier",
    ),
    (json.dumps({"path": "/abs:list", "args": {}}).encode(), 400, "BadConvexFunctionIdentifier"),
    (json.dumps({"path": "", "args": {}}).encode(), 400, "BadConvexFunctionIdentifier"),
    (json.dumps({"path": 5, "args": {}}).encode(), 400, None),
    (json.dumps({"args": {}}).encode(), 400, None),
    (b"", 400, None),
    (json.dumps({"path": "messages:send", "args": {}}).encode(), 400, None),  # wrong kind
    (json.dumps({"path": "messages:list", "args": 5}).encode(), 400, None),
    (json.dumps({"path": "messages:list", "args": [{}, {}]}).encode(), 400, None),
    (json.dumps({"path": "messages:list", "args": {}, "format": "xml"}).encode(), 400, None),
]


def test_request_errors(http: httpx.Client) -> None:
    for content, status, code in REQUEST_ERRORS:
        r = http.post("/api/query", content=content, headers={"content-type": "application/json"})
        request_error(r, status, code)
    assert ok(http.post("/api/query", json={"path": "channels:list", "args": {}})) == []


def test_unknown_routes_and_methods_are_json_errors(http: httpx.Client) -> None:
    assert "/api/no_such_route" in request_error(http.get("/api/no_such_route"), 404, "NotFound")
    assert "/nope" in request_error(http.post("/nope", json={}), 404, "NotFound")
    message = request_error(http.get("/api/mutation"), 405, "MethodNotAllowed")
    assert message.startswith("GET /api/mutation"), message


def test_cors(http: httpx.Client) -> None:
    r = http.options(
        "/api/query",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization,convex-client",
        },
    )
    assert r.status_code in (200, 204)
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-max-age"] == "86400"
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = r.headers["access-control-allow-headers"].lower()
    for header in ("content-type", "authorization", "convex-client"):
        assert header in allowed
    # The actual request gets the origin mirrored as well.
    r = http.post(
        "/api/query",
        json={"path": "channels:list", "args": {}},
        headers={"Origin": "http://other.test"},
    )
    ok(r)
    assert r.headers["access-control-allow-origin"] == "http://other.test"
    assert r.headers["access-control-allow-credentials"] == "true"


def test_double_slash_paths(http: httpx.Client) -> None:
    """A deployment URL with a trailing slash gives `…//api/query` (spec §2.1)."""
    send(http, "slashes")
    root = str(http.base_url).rstrip("/")
    r = http.post(
        f"{root}//api/query", json={"path": "messages:list", "args": [{"channel": "general"}]}
    )
    assert r.url.raw_path.startswith(b"//api/")
    assert [m["body"] for m in ok(r)] == ["slashes"]
    ok(http.post(f"{root}//api/mutation", json={"path": "channels:create", "args": {"name": "x"}}))
    assert http.post(f"{root}//api/query_ts").status_code == 200


def test_authorization_without_configured_auth(http: httpx.Client) -> None:
    expected = {
        "Bearer not-a-jwt": "NoAuthProvider",
        "Convex some-admin-key": "admin keys are not accepted",
        "Basic dXNlcjpwYXNz": "Authorization must be",
    }
    for header, reason in expected.items():
        r = http.post(
            "/api/query",
            json={"path": "channels:list", "args": {}},
            headers={"Authorization": header},
        )
        assert reason in request_error(r, 401, "Unauthenticated"), header
    assert ok(http.post("/api/query", json={"path": "channels:list", "args": {}})) == []


# -- an app with actions, internal functions, ConvexErrors and logging ---------------------------


def test_actions(notes: httpx.Client) -> None:
    r = notes.post("/api/action", json={"path": "notes:shout", "args": {"text": "hey"}})
    value = ok(r)
    assert isinstance(value, str)
    assert r.json()["logLines"] == ["[LOG] shouting hey"]
    assert ok(notes.post("/api/query", json={"path": "notes:list", "args": {}})) == ["HEY"]
    err = fn_error(notes.post("/api/action", json={"path": "notes:action_fails", "args": [{}]}))
    # An app's own exception reads "Server Error" (its text only with --dev: test_hygiene.py).
    assert err["errorMessage"].endswith("] Server Error") and "errorData" not in err
    assert "action broke" not in err["errorMessage"]
    # Wrong kinds.
    request_error(notes.post("/api/action", json={"path": "notes:list", "args": {}}), 400)
    request_error(
        notes.post("/api/mutation", json={"path": "notes:shout", "args": {"text": "x"}}), 400
    )
    request_error(notes.post("/api/query", json={"path": "notes:add", "args": {}}), 400)


INTERNAL_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("/api/query", {"path": "notes:hidden", "args": {}}),
    ("/api/mutation", {"path": "notes:secret", "args": {"text": "sneaky"}}),
    ("/api/action", {"path": "notes:hidden_action", "args": {}}),
    ("/api/function", {"path": "notes:secret", "args": {"text": "sneaky"}}),
    ("/api/function", {"path": "notes:hidden", "args": {}}),
    ("/api/run/notes/secret", {"args": {"text": "sneaky"}}),
]


def test_internal_functions_are_not_callable(notes: httpx.Client) -> None:
    for route, body in INTERNAL_CALLS:
        message = request_error(notes.post(route, json=body), 404)
        assert "secret" in message or "hidden" in message
    r = notes.post("/api/query_batch", json={"queries": [{"path": "notes:hidden", "args": {}}]})
    assert r.json()["results"][0]["status"] == "error"
    assert ok(notes.post("/api/query", json={"path": "notes:list", "args": {}})) == []


def test_nested_module_paths(notes: httpx.Client) -> None:
    assert ok(notes.post("/api/query", json={"path": "dir/file:fn", "args": {}})) == "nested"
    assert ok(notes.post("/api/query", json={"path": "dir/file.js:fn", "args": {}})) == "nested"
    assert ok(notes.post("/api/query", json={"path": "dir/file", "args": {}})) == "nested default"
    assert (
        ok(notes.post("/api/query", json={"path": "dir/file:default", "args": {}}))
        == "nested default"
    )
    assert ok(notes.post("/api/run/dir/file/fn", json={"args": {}})) == "nested"
    assert ok(notes.post("/api/run/dir/file/default", json={"args": {}})) == "nested default"
    request_error(notes.post("/api/run/dir/nope/fn", json={"args": {}}), 404)


def test_formats(notes: httpx.Client) -> None:
    convex = ok(
        notes.post(
            "/api/query", json={"path": "notes:values", "args": {}, "format": "convex_encoded_json"}
        )
    )
    assert convex == {
        "int": {"$integer": "KgAAAAAAAAA="},
        "float": 1.5,
        "bytes": {"$bytes": "aGVsbG8="},
        "nan": {"$float": "AAAAAAAA+H8="},
        "inf": {"$float": "AAAAAAAA8H8="},
        "neg": {"$float": "AAAAAAAAAIA="},
        "list": [{"$integer": "AQAAAAAAAAA="}, None, True],
        # An int the function computed is a number (an Int64 stays an int64).
        "computed": 42.0,
    }
    # convex_json is an alias.
    alias = ok(
        notes.post("/api/query", json={"path": "notes:values", "args": {}, "format": "convex_json"})
    )
    assert alias == convex
    for fmt in ("json", "convex_clean_json", None):
        body: dict[str, Any] = {"path": "notes:values", "args": {}}
        if fmt is not None:
            body["format"] = fmt
        clean = ok(notes.post("/api/query", json=body))
        assert clean["int"] == "42" and clean["bytes"] == "aGVsbG8=" and clean["nan"] == "NaN"
        assert clean["inf"] == "Infinity" and clean["float"] == 1.5
        assert clean["list"] == ["1", None, True] and clean["computed"] == 42.0
    # Arguments are Convex JSON in either format: an int64 stays an int64.
    for fmt in ("json", "convex_encoded_json"):
        r = notes.post(
            "/api/mutation",
            json={
                "path": "notes:add",
                "args": {"text": "t", "n": {"$integer": "KgAAAAAAAAA="}},
                "format": fmt,
            },
        )
        ok(r)
        assert r.json()["logLines"] == ["[LOG] adding t"]
    # A JSON number is a float64: refused by v.int64().
    err = fn_error(
        notes.post("/api/mutation", json={"path": "notes:add", "args": {"text": "t", "n": 42}})
    )
    assert "errorData" not in err
    r = notes.post(
        "/api/query",
        json={"path": "notes:echo", "args": {"x": {"$integer": "KgAAAAAAAAA="}}, "format": "json"},
    )
    assert ok(r) == "42" and r.json()["logLines"] == ["[LOG] echo 42"]
    r = notes.post(
        "/api/query",
        json={"path": "notes:echo", "args": {"x": 42}, "format": "convex_encoded_json"},
    )
    assert ok(r) == 42.0 and r.json()["logLines"] == ["[LOG] echo 42.0"]
    # Bad Convex JSON in args is refused before or by the function, never a crash.
    bad: dict[str, Any]
    for bad in (
        {"$integer": "AQAAAAAAAA=="},
        {"$float": "AAAAAAAA+D8="},
        {"$set": []},
        {"$foo": 1},
    ):
        r = notes.post("/api/query", json={"path": "notes:echo", "args": {"x": bad}})
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200:
            fn_error(r)
        else:
            request_error(r, 400)


def test_convex_error_data_formats(notes: httpx.Client) -> None:
    err = fn_error(
        notes.post(
            "/api/mutation", json={"path": "notes:fail_convex", "args": {}, "format": "json"}
        )
    )
    assert err["errorData"] == {"code": "BAD", "n": "42", "b": "aGk=", "computed": 42.0}
    err = fn_error(
        notes.post(
            "/api/mutation",
            json={"path": "notes:fail_convex", "args": {}, "format": "convex_encoded_json"},
        )
    )
    assert err["errorData"] == {
        "code": "BAD",
        "n": {"$integer": "KgAAAAAAAAA="},
        "b": {"$bytes": "aGk="},
        "computed": 42.0,
    }
    err = fn_error(
        notes.post("/api/mutation", json={"path": "notes:fail_convex_string", "args": {}})
    )
    assert err["errorData"] == "just a message"
    err = fn_error(
        notes.post("/api/query", json={"path": "notes:query_fails", "args": {"code": "Q"}})
    )
    assert err["errorData"] == {"code": "Q", "n": "7", "computed": 7.0}
    assert err["logLines"] == ["[LOG] query about to fail"]


def test_failed_mutation_is_rolled_back_and_keeps_its_logs(notes: httpx.Client) -> None:
    err = fn_error(
        notes.post("/api/mutation", json={"path": "notes:add_then_fail", "args": {"text": "ghost"}})
    )
    # An app's own exception reads "Server Error" (its text only with --dev: test_hygiene.py).
    assert err["errorMessage"].endswith("] Server Error") and "errorData" not in err
    assert "boom" not in err["errorMessage"]
    assert ok(notes.post("/api/query", json={"path": "notes:list", "args": {}})) == []
    # What the function printed before failing is what its developer needs (spec §13.2).
    assert err.get("logLines") == ["[LOG] about to fail"], err


def test_convex_error_data_never_carries_reserved_keys(notes: httpx.Client) -> None:
    """`raise ConvexError({"$integer": "AQAAAAAAAAA="})` holds a dict of a string; a client
    must not decode it as the int64 1 (spec §11.1: no `$` keys but the encoding's)."""
    err = fn_error(
        notes.post(
            "/api/query",
            json={"path": "notes:reserved_error_data", "args": {}, "format": "convex_encoded_json"},
        )
    )
    data = err.get("errorData")
    if data is not None:
        assert not (isinstance(data, dict) and any(k.startswith("$") for k in data)), data
        _core.from_convex_json(data)


def test_request_body_limit(start_server: Callable[..., ServerProcess], notes_app: Path) -> None:
    server = start_server(notes_app, "--max-frame-bytes", "100000")
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        big = {"path": "notes:echo", "args": {"x": "a" * 200_000}}
        request_error(http.post("/api/query", json=big), 413)
        request_error(
            http.post("/api/mutation", json={"path": "notes:add", "args": {"text": "a" * 200_000}}),
            413,
        )

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
            yield b'{"path": "notes:echo", "args": {"x": "'
            for _ in range(30):
                yield b"a" * 10_000
            yield b'"}}'

        request_error(
            http.post("/api/query", content=chunks(), headers={"content-type": "application/json"}),
            413,
        )
        # Under the limit: served, and the server is still fine.
        assert (
            ok(http.post("/api/query", json={"path": "notes:echo", "args": {"x": "a" * 50_000}}))
            == "a" * 50_000
        )
        assert ok(http.post("/api/query", json={"path": "notes:list", "args": {}})) == []


def test_admin_key(start_server: Callable[..., ServerProcess], notes_app: Path) -> None:
    server = start_server(notes_app, "--admin-key", "k")
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        who = {"path": "notes:whoami", "args": {}}
        identity = ok(http.post("/api/query", json=who, headers={"Authorization": "Convex k"}))
        assert identity is None  # an admin-key caller has no identity (as in Convex)
        assert ok(http.post("/api/query", json=who)) is None
        for header in ("Convex wrong", "Convex", "Convex kk", "Bearer k", "k"):
            request_error(http.post("/api/query", json=who, headers={"Authorization": header}), 401)
        # Admin calls work for mutations too.
        r = http.post(
            "/api/mutation",
            json={"path": "notes:add", "args": {"text": "adm", "n": {"$integer": "AQAAAAAAAAA="}}},
            headers={"Authorization": "Convex k"},
        )
        ok(r)


def test_admin_key_refused_without_one(notes: httpx.Client) -> None:
    who = {"path": "notes:whoami", "args": {}}
    r = notes.post("/api/query", json=who, headers={"Authorization": "Convex k"})
    assert "admin keys are not accepted" in request_error(r, 401, "Unauthenticated")

"""Malformed and random sync-protocol frames against a real server (spec §4, §7, §9.3).

For every frame, the socket that sent it gets a FatalError (or AuthError) and a close, or,
for a frame that is valid, a normal reply; meanwhile the server keeps serving: clients
connected before and after see correct query results and their mutations commit, and the
stored data is unchanged.

The expected outcome of a frame comes from a local `SyncSession` fed the same frames (the
protocol's reference state machine); where it has no opinion (binary frames, frames over
the size limit) the rule is stated in the test.
"""

from __future__ import annotations

import base64
import itertools
import json
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from reactive.sync.messages import decode_ts
from reactive.sync.session import Close, Send, SyncSession

ServerProcess = Any  # tests/server/conftest.py's ServerProcess


MAX_FRAME = 1_000_000
TIMEOUT_S = 15.0
PROBE_ID = 4_000_000_000
SERVER_TYPES = {
    "Transition",
    "MutationResponse",
    "ActionResponse",
    "AuthError",
    "FatalError",
    "Ping",
}

APP_FILES = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({
            "messages": define_table(
                {"channel": v.string(), "author": v.string(), "body": v.string()}
            ).index("by_channel", ["channel"]),
        })
    """,
    "messages.py": """
        from reactive import ConvexError, mutation, query, v

        @query(args={})
        async def all(ctx):
            return [m["body"] for m in await ctx.db.query("messages").collect()]

        @query(args={"channel": v.string()})
        async def list(ctx, channel):
            return await (ctx.db.query("messages")
                          .with_index("by_channel", lambda q: q.eq("channel", channel))
                          .collect())

        @query(args={"id": v.id("messages")})
        async def get(ctx, id):
            return await ctx.db.get(id)

        @mutation(args={"channel": v.string(), "author": v.string(), "body": v.string()})
        async def send(ctx, channel, author, body):
            return await ctx.db.insert(
                "messages", {"channel": channel, "author": author, "body": body})

        @mutation(args={"id": v.id("messages")})
        async def remove(ctx, id):
            await ctx.db.delete(id)

        @mutation(args={"count": v.float64()})
        async def refuse(ctx, count):
            raise ConvexError({"count": count})
    """,
}


def connect_frame(session: str = "fuzz") -> str:
    return json.dumps(
        {
            "type": "Connect",
            "sessionId": session,
            "connectionCount": 0,
            "lastCloseReason": "InitialConnect",
            "clientTs": 0,
        }
    )


PROBE = json.dumps(
    {"type": "Mutation", "requestId": PROBE_ID, "udfPath": "nope:none", "args": [{}]}
)


def ws_url(server: ServerProcess) -> str:
    return str(server.url).replace("http://", "ws://") + "/api/sync"


def open_ws(server: ServerProcess) -> ClientConnection:
    return connect(
        ws_url(server),
        proxy=None,
        compression=None,
        max_size=None,
        open_timeout=TIMEOUT_S,
        close_timeout=5,
        ping_interval=None,
        legacy=True,  # a plain connection object (websockets >= 17.1 wants this said)
    )


def parse_server_message(text: Any) -> dict[str, Any]:
    assert isinstance(text, str), f"the server sent a binary frame: {text!r:.100}"
    msg = json.loads(text)
    assert isinstance(msg, dict) and msg.get("type") in SERVER_TYPES, msg
    return dict(msg)


# -- a well-behaved client ---------------------------------------------------------------------


@dataclass
class Peer:
    """A correct client subscribed to `messages:all`, checking every transition."""

    ws: ClientConnection
    version: dict[str, Any] = field(
        default_factory=lambda: {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}
    )
    value: Any = None
    next_request: int = 0

    @classmethod
    def join(cls, server: ServerProcess) -> Peer:
        peer = cls(open_ws(server))
        # A session id of its own: (session id, request id) names a mutation (spec §6.8).
        peer.ws.send(connect_frame(str(uuid.uuid4())))
        peer.ws.send(
            json.dumps(
                {
                    "type": "ModifyQuerySet",
                    "baseVersion": 0,
                    "newVersion": 1,
                    "modifications": [
                        {"type": "Add", "queryId": 0, "udfPath": "messages:all", "args": [{}]}
                    ],
                }
            )
        )
        peer.read_until(lambda m: m["type"] == "Transition" and m["endVersion"]["querySet"] == 1)
        return peer

    def read_until(self, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            try:
                text = self.ws.recv(timeout=max(left, 0.001))
            except TimeoutError:
                raise AssertionError(
                    f"no answer within {TIMEOUT_S} s (at {self.version})"
                ) from None
            msg = parse_server_message(text)
            assert msg["type"] not in ("FatalError", "AuthError"), msg
            if msg["type"] == "Transition":
                assert msg["startVersion"] == self.version, (msg, self.version)
                assert decode_ts(msg["endVersion"]["ts"]) >= decode_ts(self.version["ts"])
                self.version = msg["endVersion"]
                for mod in msg["modifications"]:
                    if mod["queryId"] == 0:
                        assert mod["type"] == "QueryUpdated", mod
                        self.value = mod["value"]
            if done(msg):
                return msg

    def send(self, body: str) -> None:
        """Post a message and wait until the subscription shows it (spec §6.6)."""
        rid = self.next_request
        self.next_request += 1
        self.ws.send(
            json.dumps(
                {
                    "type": "Mutation",
                    "requestId": rid,
                    "udfPath": "messages:send",
                    "args": [{"channel": "c", "author": "peer", "body": body}],
                }
            )
        )
        resp = self.read_until(lambda m: m["type"] == "MutationResponse")
        assert resp["requestId"] == rid and resp["success"] is True, resp
        ts = decode_ts(resp["ts"])
        self.read_until(
            lambda m: m["type"] == "Transition" and decode_ts(m["endVersion"]["ts"]) >= ts
        )
        assert body in self.value, (body, self.value)


def stored_bodies(server: ServerProcess) -> list[str]:
    r = httpx.post(
        server.url + "/api/query", json={"path": "messages:all", "args": {}}, timeout=TIMEOUT_S
    )
    assert r.status_code == 200, r.text
    return sorted(r.json()["value"])


# -- one frame ----------------------------------------------------------------------------------


def expected(frames: list[str | bytes]) -> str:
    """What the reference state machine does with these frames: "close" or "reply"."""
    ref = SyncSession()
    for f in frames:
        if isinstance(f, bytes):
            return "close"  # binary frames are not part of the protocol (spec §2.3)
        if len(f.encode()) > MAX_FRAME:
            return "close"  # over --max-frame-bytes
        try:
            effects = ref.receive(f)
        except Exception:  # the reference itself failed: the server must still close cleanly
            return "close"
        if any(isinstance(e, Close) for e in effects):
            first = [json.loads(e.text)["type"] for e in effects if isinstance(e, Send)]
            return "close:" + ",".join(first)
    return "reply"


def check_frames(server: ServerProcess, frames: list[str | bytes]) -> str | None:
    """Send ``frames`` on a fresh socket; a description of what went wrong, or None."""
    want = expected(frames)
    got: list[dict[str, Any]] = []
    with open_ws(server) as ws:
        try:
            for f in [*frames, PROBE] if want == "reply" else frames:
                ws.send(f)
        except ConnectionClosed:
            pass  # closed while sending: what it sent before closing is still queued here
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return f"expected {want}, the server neither answered nor closed: {got}"
                try:
                    msg = parse_server_message(ws.recv(timeout=left))
                except TimeoutError:
                    continue
                got.append(msg)
                if want == "reply" and msg["type"] in ("FatalError", "AuthError"):
                    return f"a valid frame got {msg}"
                if msg["type"] == "MutationResponse" and msg["requestId"] == PROBE_ID:
                    if want != "reply":
                        return f"expected {want}, the socket stayed open: {got}"
                    if msg["success"] is not False or not isinstance(msg["result"], str):
                        return f"bad probe response {msg}"
                    return None
        except ConnectionClosed:
            pass
        code = ws.close_code
        if want == "reply":
            return f"a valid frame closed the socket ({code} {ws.close_reason}): {got}"
        if code is None or code == 1006:
            return f"the socket was dropped without a close frame (code {code}) after {got}"
        sent_types = [m["type"] for m in got]
        if want.startswith("close:") and want != "close:":
            first = want.split(":", 1)[1].split(",")[0]
            if first not in sent_types:
                return f"expected a {first} before the close, got {sent_types} (close {code})"
        for m in got:
            if m["type"] == "FatalError":
                assert isinstance(m["error"], str) and m["error"], m
            if m["type"] == "AuthError":
                assert m["authUpdateAttempted"] is True and isinstance(m["baseVersion"], int), m
        return None


# -- the corpus ------------------------------------------------------------------------------


def _mqs(base: int, new: int, *mods: dict[str, Any]) -> str:
    return json.dumps(
        {
            "type": "ModifyQuerySet",
            "baseVersion": base,
            "newVersion": new,
            "modifications": list(mods),
        }
    )


def _add(qid: int, path: str = "messages:all", args: Any = None) -> dict[str, Any]:
    return {"type": "Add", "queryId": qid, "udfPath": path, "args": [{} if args is None else args]}


def _mutation(args: Any, path: str = "messages:send", rid: int = 0) -> str:
    return json.dumps({"type": "Mutation", "requestId": rid, "udfPath": path, "args": args})


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


C = connect_frame()
VALID_ARGS = {"channel": "c", "author": "a", "body": "b"}
NESTED_10K = (
    '{"type":"Mutation","requestId":0,"udfPath":"messages:send","args":['
    + "[" * 10_000
    + "]" * 10_000
    + "]}"
)
NESTED_800 = '{"type":"Event","eventType":"x","event":' + '{"a":' * 800 + "1" + "}" * 800 + "}"
NESTED_ARGS_300 = (
    '{"type":"Mutation","requestId":0,"udfPath":"messages:send","args":[{"channel":'
    + "[" * 300
    + "]" * 300
    + ',"author":"a","body":"b"}]}'
)

CORPUS: list[tuple[str, list[str | bytes]]] = [
    ("invalid json", [C, "{"]),
    ("not json at all", [C, "hello"]),
    ("empty text", [C, ""]),
    ("NaN literal", [C, '{"type":"Event","event":NaN}']),
    ("binary frame", [C, b"\x00\x01\x02"]),
    ("binary json", [C, C.encode()]),
    ("array", [C, "[]"]),
    ("array of a message", [C, json.dumps([json.loads(C)])]),
    ("number", [C, "12"]),
    ("unknown type", [C, '{"type":"Subscribe"}']),
    ("no type", [C, '{"baseVersion":0}']),
    ("wrong base version", [C, _mqs(1, 2)]),
    ("new version not above base", [C, _mqs(0, 0)]),
    ("remove unknown id", [C, _mqs(0, 1, {"type": "Remove", "queryId": 5})]),
    ("add twice", [C, _mqs(0, 1, _add(0)), _mqs(1, 2, _add(0))]),
    ("add twice in one message", [C, _mqs(0, 1, _add(3), _add(3))]),
    ("args an object", [C, _mutation(VALID_ARGS)]),
    ("args empty", [C, _mutation([])]),
    ("args two objects", [C, _mutation([VALID_ARGS, VALID_ARGS])]),
    ("args a string", [C, _mutation(json.dumps([VALID_ARGS]))]),
    ("args a list of list", [C, _mutation([[VALID_ARGS]])]),
    (
        "$integer of 7 bytes",
        [C, _mutation([{**VALID_ARGS, "body": {"$integer": _b64(b"\x01" * 7)}}])],
    ),
    (
        "$integer of 7 bytes in a query",
        [C, _mqs(0, 1, _add(0, "messages:list", {"channel": {"$integer": _b64(b"\x01" * 7)}}))],
    ),
    (
        "$float 1.5",
        [C, _mutation([{**VALID_ARGS, "body": {"$float": _b64(struct.pack("<d", 1.5))}}])],
    ),
    (
        "$float 1.5 to a float arg",
        [C, _mutation([{"count": {"$float": _b64(struct.pack("<d", 1.5))}}], "messages:refuse")],
    ),
    ("$set", [C, _mutation([{**VALID_ARGS, "body": {"$set": []}}])]),
    ("$-key", [C, _mutation([{**VALID_ARGS, "$body": "x"}])]),
    ("deeply nested json", [C, NESTED_10K]),
    ("nested 800 levels", [C, NESTED_800]),
    ("nested arguments", [C, NESTED_ARGS_300]),
    ("huge string path", [C, _mutation([VALID_ARGS], "m" * 500_000)]),
    ("huge string value", [C, _mutation([{**VALID_ARGS, "channel": 5, "body": "x" * 500_000}])]),
    ("huge type", [C, json.dumps({"type": "T" * 500_000})]),
    ("frame over max size", [C, json.dumps({"type": "Event", "event": "x" * (MAX_FRAME + 10)})]),
    ("connect twice", [C, C]),
    ("modify before connect", [_mqs(0, 1, _add(0))]),
    ("mutation before connect", [_mutation([VALID_ARGS])]),
    ("event before connect", ['{"type":"Event","eventType":"x","event":null}']),
    (
        "connect count 1e400",
        ['{"type":"Connect","sessionId":"s","connectionCount":1e400,"clientTs":0}'],
    ),
    ("request id 1e400", [C, '{"type":"Mutation","requestId":1e400,"udfPath":"a:b","args":[{}]}']),
    ("query id 2^32", [C, _mqs(0, 1, {**_add(0), "queryId": 2**32})]),
    ("query id negative", [C, _mqs(0, 1, {**_add(0), "queryId": -1})]),
    (
        "integer of 5000 digits",
        [C, '{"type":"Mutation","requestId":' + "9" * 5000 + ',"udfPath":"a:b","args":[{}]}'],
    ),
    (
        "bad token type",
        [C, '{"type":"Authenticate","baseVersion":0,"tokenType":"Bearer","value":"x"}'],
    ),
    (
        "refused token",
        [C, '{"type":"Authenticate","baseVersion":0,"tokenType":"User","value":"x.y.z"}'],
    ),
    (
        "refused admin key",
        [C, '{"type":"Authenticate","baseVersion":0,"tokenType":"Admin","value":"k"}'],
    ),
    ("identity base version", [C, '{"type":"Authenticate","baseVersion":3,"tokenType":"None"}']),
    ("bad max observed ts", [json.dumps({**json.loads(C), "maxObservedTimestamp": "nope"})]),
    ("component path", [C, _mqs(0, 1, {**_add(0), "componentPath": "child"})]),
    ("journal not a string", [C, _mqs(0, 1, {**_add(0), "journal": 5})]),
    # Valid frames: a normal reply.
    ("event", [C, '{"type":"Event","eventType":"ClientConnect","event":{"a":1}}']),
    ("empty modify", [C, _mqs(0, 1)]),
    ("unknown function query", [C, _mqs(0, 1, _add(0, "nope:nothing"), _add(1, "a b c"))]),
    ("journal garbage", [C, _mqs(0, 1, {**_add(0), "journal": "garbage"})]),
    ("logout", [C, '{"type":"Authenticate","baseVersion":0,"tokenType":"None"}']),
    ("unknown fields", [json.dumps({**json.loads(C), "extra": [1, {"x": None}]}), _mqs(0, 1)]),
]


def test_malformed_frames(
    start_server: Callable[..., ServerProcess], make_app: Callable[..., Path]
) -> None:
    server = start_server(make_app(APP_FILES), "--max-frame-bytes", str(MAX_FRAME))
    before = Peer.join(server)
    before.send("before")
    failures = []
    for name, frames in CORPUS:
        problem = check_frames(server, frames)
        if problem is not None:
            failures.append(f"{name}: {problem[:400]}")
    # The server kept serving: the old client, a new one, and the data.
    before.send("during")
    after = Peer.join(server)
    assert sorted(after.value) == ["before", "during"]
    after.send("after")
    before.read_until(lambda m: m["type"] == "Transition" and "after" in (before.value or []))
    assert stored_bodies(server) == ["after", "before", "during"]
    assert failures == [], "\n".join(failures)
    assert "Traceback" not in server.log(), server.log()[-3000:]


def test_bad_ids_and_argument_types_fail_the_mutation_only(
    start_server: Callable[..., ServerProcess], make_app: Callable[..., Path]
) -> None:
    server = start_server(make_app(APP_FILES))
    peer = Peer.join(server)
    peer.send("kept")
    bad_calls: list[tuple[str, dict[str, Any]]] = [
        ("messages:remove", {"id": "not-an-id"}),
        ("messages:remove", {"id": "j57000820c20a1g7104gm2rc1m70ynr8"}),  # well formed, unknown
        ("messages:remove", {"id": 5.0}),
        ("messages:remove", {}),
        ("messages:send", {"channel": 5.0, "author": "a", "body": "b"}),
        ("messages:send", {"channel": "c", "author": "a", "body": {"$integer": "AQAAAAAAAAA="}}),
        ("messages:send", {"channel": "c", "author": "a", "body": "b", "extra": True}),
        ("messages:send", {"channel": "c"}),
        ("messages:refuse", {"count": 2.0}),
        ("messages:list", {"channel": "c"}),  # a query, not a mutation
        ("nope:none", {}),
        ("bad path!", {}),
        ("messages.js:remove", {"id": ""}),
    ]
    for path, args in bad_calls:
        rid = peer.next_request
        peer.next_request += 1
        peer.ws.send(
            json.dumps({"type": "Mutation", "requestId": rid, "udfPath": path, "args": [args]})
        )
        resp = peer.read_until(lambda m: m["type"] == "MutationResponse")
        assert resp["requestId"] == rid
        assert resp["success"] is False, (path, args, resp)
        assert isinstance(resp["result"], str) and resp["result"], resp
        assert resp.get("ts") is None and resp["logLines"] == []
        if path == "messages:refuse":
            assert resp["errorData"] == {"count": 2.0}
        else:
            assert "errorData" not in resp, resp
        # A transition follows a failed mutation too (the Python client waits for it).
        peer.read_until(lambda m: m["type"] == "Transition")
    peer.send("still works")
    assert stored_bodies(server) == ["kept", "still works"]
    assert "Traceback" not in server.log()


def test_queries_with_bad_arguments_fail_as_queries(
    start_server: Callable[..., ServerProcess], make_app: Callable[..., Path]
) -> None:
    """A subscription whose arguments fail validation gets a QueryFailed (spec §9.1);
    the socket stays usable."""
    server = start_server(make_app(APP_FILES))
    peer = Peer.join(server)
    peer.send("kept")
    qs = peer.version["querySet"]
    peer.ws.send(
        _mqs(
            qs,
            qs + 1,
            _add(1, "messages:get", {"id": "not-an-id"}),
            _add(2, "messages:list", {"channel": 5.0}),
            _add(3, "messages:list", {"channel": "c", "extra": 1.0}),
        )
    )
    failed: dict[int, dict[str, Any]] = {}

    def all_failed(m: dict[str, Any]) -> bool:
        if m["type"] == "Transition":
            for mod in m["modifications"]:
                assert mod["type"] != "QueryUpdated" or mod["queryId"] == 0, mod
                if mod["type"] == "QueryFailed":
                    failed[mod["queryId"]] = mod
        return set(failed) == {1, 2, 3}

    peer.read_until(all_failed)
    for mod in failed.values():
        assert isinstance(mod["errorMessage"], str) and mod["errorMessage"]
        assert "errorData" not in mod and isinstance(mod["logLines"], list)
    peer.send("still works")
    assert sorted(peer.value) == ["kept", "still works"]


# -- generated frames ----------------------------------------------------------------------------

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
_json = st.recursive(
    _leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
_special = st.one_of(
    st.builds(lambda n: {"$integer": _b64(b"\x01" * n)}, st.integers(0, 10)),
    st.builds(lambda x: {"$float": _b64(struct.pack("<d", x))}, st.floats()),
    st.builds(lambda b: {"$bytes": _b64(b)}, st.binary(max_size=8)),
    st.sampled_from([{"$set": []}, {"$map": []}, {"$integer": 5}, {"$bytes": None}, {"$x": 1}]),
)
_number = st.one_of(st.integers(0, 3), st.integers(-5, 2**33), st.floats(), _json)
_path = st.one_of(
    st.sampled_from(
        [
            "messages:all",
            "messages:list",
            "messages:get",
            "messages.js:all",
            "messages",
            "nope:none",
            "",
            "a b:c",
            "messages:remove",
        ]
    ),
    st.text(max_size=20),
)
_arg_object = st.dictionaries(st.text(max_size=5), st.one_of(_json, _special), max_size=3)
_args = st.one_of(
    st.lists(_arg_object, min_size=1, max_size=1), st.lists(_arg_object, max_size=3), _json
)
_add_mod = st.fixed_dictionaries(
    {"type": st.just("Add"), "queryId": _number, "udfPath": _path, "args": _args},
    optional={"journal": st.one_of(st.none(), st.text(max_size=10), _json), "componentPath": _json},
)
_remove_mod = st.fixed_dictionaries({"type": st.just("Remove"), "queryId": _number})
_messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("Connect"), "sessionId": st.one_of(st.text(max_size=10), _json)},
        optional={
            "connectionCount": _number,
            "lastCloseReason": _json,
            "clientTs": _number,
            "maxObservedTimestamp": st.one_of(
                st.sampled_from(["AAAAAAAAAAA=", "AQAAAAAAAAA=", "x"]), _json
            ),
        },
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("ModifyQuerySet"),
            "baseVersion": _number,
            "newVersion": _number,
            "modifications": st.one_of(
                st.lists(st.one_of(_add_mod, _remove_mod, _json), max_size=3), _json
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["Mutation", "Action"]),
            "requestId": _number,
            "udfPath": _path,
            "args": _args,
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("Authenticate"),
            "baseVersion": _number,
            "tokenType": st.one_of(st.sampled_from(["User", "Admin", "None"]), _json),
        },
        optional={"value": st.one_of(st.text(max_size=10), _json)},
    ),
    st.fixed_dictionaries(
        {"type": st.one_of(st.just("Event"), st.text(max_size=8), _json)},
        optional={"eventType": _json, "event": _json},
    ),
    _json,
)
_frame = st.one_of(
    _messages.map(json.dumps),
    _messages.map(json.dumps).flatmap(lambda t: st.integers(0, len(t)).map(lambda k: t[:k])),
    st.text(max_size=30),
    st.binary(max_size=30),
)
# (connect first?, frames)
_case = st.tuples(st.booleans(), st.lists(_frame, min_size=1, max_size=3))


def test_generated_frames(
    start_server: Callable[..., ServerProcess], make_app: Callable[..., Path]
) -> None:
    server = start_server(make_app(APP_FILES), "--max-frame-bytes", str(MAX_FRAME))
    before = Peer.join(server)
    before.send("before")
    failures: list[str] = []
    counter = itertools.count()

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_case)
    def run(case: tuple[bool, list[str | bytes]]) -> None:
        next(counter)
        connect_first, frames = case
        all_frames = [connect_frame(), *frames] if connect_first else frames
        problem = check_frames(server, all_frames)
        if problem is not None and len(failures) < 20:
            failures.append(f"{all_frames!r:.300}: {problem[:300]}")

    run()
    assert next(counter) >= 200
    before.send("during")
    after = Peer.join(server)
    after.send("after")
    assert stored_bodies(server) == ["after", "before", "during"]
    assert failures == [], "\n".join(failures)
    assert "Traceback" not in server.log(), server.log()[-3000:]
    # The stored data, read by the CLI with the server stopped, is exactly the peers' writes.
    assert server.stop() == 0
    out = subprocess.run(
        [sys.executable, "-m", "reactive", "data", "messages", "--db", server.db_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert sorted(r["body"] for r in rows) == ["after", "before", "during"]


def test_a_frame_over_the_limit_gets_its_close_frame_while_still_being_sent(
    start_server: Callable[..., ServerProcess], make_app: Callable[..., Path]
) -> None:
    """The client is still sending the oversized frame when the server fails the
    connection: it must still receive the 1009 close frame (a socket closed with unread
    data answers with a reset, which can destroy the close frame in flight)."""
    import os
    import socket

    server = start_server(make_app(APP_FILES), "--max-frame-bytes", str(MAX_FRAME))
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /api/sync HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(4096)
        assert response.startswith(b"HTTP/1.1 101"), response
        # A masked text frame announcing more than the limit: the server fails the
        # connection at once. Then the rest of the frame arrives at the server (as from a
        # client still sending it), and only then does the client read.
        sock.sendall(b"\x81\xff" + struct.pack("!Q", 4 * MAX_FRAME) + b"\x00" * 4)
        time.sleep(0.3)
        try:
            sock.sendall(b"x" * (2 * MAX_FRAME))
        except OSError as exc:  # a reset: the server is no longer reading
            raise AssertionError(f"the server reset the connection: {exc}") from None
        time.sleep(0.2)
        received = b""
        try:
            while len(received) < 4:
                data = sock.recv(4096)
                assert data, "the connection ended without a close frame"
                received += data
        except OSError as exc:
            raise AssertionError(f"the close frame was lost: {exc}") from None
        sock.close()
        assert received[:1] == b"\x88", received  # a close frame...
        assert struct.unpack("!H", received[2:4])[0] == 1009  # ...saying "too big"

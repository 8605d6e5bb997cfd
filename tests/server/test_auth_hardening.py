"""A server that no client can take down: authentication and exactly-once hardening.

* An empty (or whitespace-only) admin key or JWT key would let anyone in: refused at
  start-up (``python -m reactive.server`` usage error, flag or environment variable) and by
  ``Authenticator`` (``ValueError``), so programmatic ``ServerConfig`` use is refused too.
* User JWTs must carry ``exp``; expired ones are refused.
* No identity claim gives admin rights: a ``tokenType`` claim is dropped, ``subject``,
  ``issuer`` and ``tokenIdentifier`` always come from ``sub``/``iss``, and an admin-key
  caller has no identity at all (``None``, as in Convex).
* RS256 and ES256 tokens verify with a PEM public key (the ``cryptography`` package).
* Exactly-once replay of WebSocket mutations (spec §6.8) is keyed by the caller as well as
  by (session id, request id): another identity reusing the ids runs its own mutation.

Source: python/reactive/server/auth.py, python/reactive/server/__main__.py,
python/reactive/db/system.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.sync.client import ClientConnection, connect

import reactive
from reactive.db.schema_sync import backfill_index
from reactive.db.system import SESSION_REQUESTS, caller_key, ensure_system_tables
from reactive.server.app import ServerConfig, create_app
from reactive.server.auth import Authenticator
from reactive.sync.session import AuthFailure

ServerProcess = Any  # tests/server/conftest.py's ServerProcess
MakeApp = Callable[[dict[str, str]], Path]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-that-is-long-enough-for-hs256!"
ADMIN = "the-admin-key"
TIMEOUT_S = 30.0

APP_FILES = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({"bumps": define_table({"who": v.string(), "by": v.string()})})
    """,
    "auth_probe.py": """
        from reactive import internal_query, mutation, query


        @query(args={})
        async def whoami(ctx):
            return await ctx.auth.get_user_identity()


        @query(args={})
        async def count(ctx):
            return float(len(await ctx.db.query("bumps").collect()))


        async def _bump(ctx, by):
            identity = await ctx.auth.get_user_identity()
            who = "" if identity is None else identity["subject"]
            await ctx.db.insert("bumps", {"who": who, "by": by})
            return {"n": float(len(await ctx.db.query("bumps").collect())), "who": who}


        @mutation(args={})
        async def bump(ctx):
            return await _bump(ctx, "bump")


        @mutation(args={})
        async def bump_other(ctx):
            return await _bump(ctx, "bump_other")


        @internal_query(args={})
        async def hidden(ctx):
            return "hidden"
    """,
}


def token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A signed JWT; ``exp`` defaults to an hour from now (pass ``exp=None`` to leave it out)."""
    now = int(time.time())
    body: dict[str, Any] = {"sub": "alice", "iat": now, "exp": now + 3600, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=algorithm)


# -- start-up: empty keys are usage errors -----------------------------------------------------


def _start_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``python -m reactive.server`` expecting it to refuse to start."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REACTIVE_")}
    environ.update(env or {})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "reactive.server",
            "--db",
            f"sqlite:///{tmp_path / 'never.db'}",
            "--port",
            "0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,  # a server that did start would not exit: the test fails here
        cwd=str(ROOT),
        env=environ,
    )


@pytest.mark.parametrize("flag", ["--admin-key", "--jwt-key"])
@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_empty_key_flag_is_a_usage_error(tmp_path: Path, flag: str, value: str) -> None:
    done = _start_cli(tmp_path, flag, value)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert flag in done.stderr and "must not be empty" in done.stderr, done.stderr
    assert "serving" not in done.stdout
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("var", ["REACTIVE_ADMIN_KEY", "REACTIVE_JWT_KEY"])
def test_empty_key_env_var_is_a_usage_error(tmp_path: Path, var: str) -> None:
    done = _start_cli(tmp_path, env={var: ""})
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert var in done.stderr and "must not be empty" in done.stderr, done.stderr


@pytest.mark.parametrize("field", ["admin_key", "jwt_key"])
@pytest.mark.parametrize("value", ["", " ", "\n"])
def test_authenticator_refuses_empty_keys(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must not be empty"):
        Authenticator(**{field: value})
    with pytest.raises(ValueError, match=f"{field} must not be empty"):
        create_app(ServerConfig(db_url="sqlite:///unused.db", **{field: value}))
    # Unset means "refuse such tokens", and a real key is fine.
    Authenticator(**{field: None})
    Authenticator(**{field: "k"})


# -- the Authenticator -------------------------------------------------------------------------


def test_admin_key_caller_has_no_identity() -> None:
    auth = Authenticator(admin_key=ADMIN)
    assert auth("Admin", ADMIN) is None
    assert auth.from_header(f"Convex {ADMIN}") is None
    for bad in ("", "x", ADMIN + "x", ADMIN[:-1]):
        with pytest.raises(AuthFailure, match="admin key is not valid"):
            auth("Admin", bad)


def test_jwt_without_exp_is_refused() -> None:
    auth = Authenticator(jwt_key=SECRET)
    with pytest.raises(AuthFailure, match="no 'exp'"):
        auth("User", token(exp=None))
    with pytest.raises(AuthFailure, match="sub"):
        auth("User", token(sub=None))


def test_expired_jwt_is_refused() -> None:
    auth = Authenticator(jwt_key=SECRET)
    with pytest.raises(AuthFailure, match="expired"):
        auth("User", token(exp=int(time.time()) - 3600))


def test_jwt_with_non_numeric_exp_is_refused() -> None:
    auth = Authenticator(jwt_key=SECRET)
    for exp in ("soon", [1], {"a": 1}):
        with pytest.raises(AuthFailure):
            auth("User", token(exp=exp))


def test_claims_cannot_make_an_admin_or_override_the_subject() -> None:
    auth = Authenticator(jwt_key=SECRET, admin_key=ADMIN)
    exp = int(time.time()) + 600
    forged = token(
        sub="mallory",
        iss="https://issuer.example",
        exp=exp,
        tokenType="Admin",
        subject="admin",
        issuer="other",
        tokenIdentifier="admin",
        name="Mallory",
    )
    identity = auth("User", forged)
    assert identity is not None
    assert "tokenType" not in identity
    assert identity["subject"] == "mallory"
    assert identity["issuer"] == "https://issuer.example"
    assert identity["tokenIdentifier"] == "https://issuer.example|mallory"
    assert identity["name"] == "Mallory"
    assert identity["exp"] == exp and type(identity["exp"]) is int
    assert auth.from_header(f"Bearer {forged}") == identity


def _pem_public(private: Any) -> str:
    return str(
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_asymmetric_tokens_verify_with_a_pem_public_key(algorithm: str) -> None:
    if algorithm == "RS256":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        other = ec.generate_private_key(ec.SECP256R1())
    public_pem = _pem_public(private)
    auth = Authenticator(jwt_key=public_pem, jwt_issuer="https://iss", jwt_audience="app")
    good = token(private, algorithm, iss="https://iss", aud="app")
    identity = auth("User", good)
    assert identity is not None and identity["tokenIdentifier"] == "https://iss|alice"
    # Signed by another key, wrong issuer or audience, no exp: refused.
    with pytest.raises(AuthFailure):
        auth("User", token(other, algorithm, iss="https://iss", aud="app"))
    with pytest.raises(AuthFailure):
        auth("User", token(private, algorithm, iss="https://evil", aud="app"))
    with pytest.raises(AuthFailure):
        auth("User", token(private, algorithm, iss="https://iss", aud="other"))
    with pytest.raises(AuthFailure, match="no 'exp'"):
        auth("User", token(private, algorithm, iss="https://iss", aud="app", exp=None))
    # Algorithm confusion: an HS256 token "signed" with the public key is refused.
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    claims = {"sub": "x", "exp": now + 60, "iss": "https://iss", "aud": "app"}
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode())
    signing_input = header + b"." + payload
    signature = hmac.new(public_pem.encode(), signing_input, hashlib.sha256).digest()
    confused = (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()
    with pytest.raises(AuthFailure):
        auth("User", confused)


# -- over a real server ------------------------------------------------------------------------


@pytest.fixture
def auth_app(make_app: MakeApp) -> Path:
    return make_app(APP_FILES)


@pytest.fixture
def server(start_server: Callable[..., ServerProcess], auth_app: Path) -> ServerProcess:
    return start_server(auth_app, "--admin-key", ADMIN, "--jwt-key", SECRET)


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        yield client


def call(http: httpx.Client, kind: str, path: str, header: str | None = None) -> httpx.Response:
    headers = {"Authorization": header} if header is not None else {}
    return http.post(f"/api/{kind}", json={"path": path, "args": {}}, headers=headers)


def value(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    return body["value"]


def test_http_identities(http: httpx.Client) -> None:
    who = "auth_probe:whoami"
    assert value(call(http, "query", who)) is None
    # The admin key is accepted, and its caller has no identity (as in Convex).
    assert value(call(http, "query", who, f"Convex {ADMIN}")) is None
    # A user token claiming to be an admin is only a user.
    forged = token(sub="mallory", tokenType="Admin", subject="admin", tokenIdentifier="admin")
    identity = value(call(http, "query", who, f"Bearer {forged}"))
    assert isinstance(identity, dict)
    assert "tokenType" not in identity
    assert identity["subject"] == "mallory" and identity["tokenIdentifier"] == "|mallory"
    assert "exp" in identity and "iat" in identity
    # ... and gets no internal function either.
    r = call(http, "query", "auth_probe:hidden", f"Bearer {forged}")
    assert r.status_code == 404, r.text
    # No exp, expired, wrong key: 401.
    for bad in (
        token(exp=None),
        token(exp=int(time.time()) - 10),
        token("another-secret-of-thirty-two-bytes!!"),
    ):
        r = call(http, "query", who, f"Bearer {bad}")
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "Unauthenticated"


def ws_url(server: ServerProcess) -> str:
    return str(server.url).replace("http://", "ws://") + "/api/sync"


def open_ws(server: ServerProcess, session_id: str) -> ClientConnection:
    ws = connect(
        ws_url(server),
        proxy=None,
        compression=None,
        max_size=None,
        open_timeout=TIMEOUT_S,
        close_timeout=5,
        ping_interval=None,
        legacy=True,  # a plain connection object (websockets >= 17.1 wants this said)
    )
    ws.send(
        json.dumps(
            {
                "type": "Connect",
                "sessionId": session_id,
                "connectionCount": 0,
                "lastCloseReason": None,
            }
        )
    )
    return ws


def read_until(ws: ClientConnection, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        text = ws.recv(timeout=max(deadline - time.monotonic(), 0.001))
        msg = json.loads(text)
        assert isinstance(msg, dict), msg
        if done(msg):
            return msg
        assert msg["type"] not in ("FatalError", "AuthError"), msg


def authenticate(ws: ClientConnection, jwt_token: str | None) -> None:
    if jwt_token is not None:
        ws.send(
            json.dumps(
                {"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": jwt_token}
            )
        )


def mutate(
    server: ServerProcess,
    session_id: str,
    jwt_token: str | None,
    path: str = "auth_probe:bump",
    request_id: int = 0,
) -> Any:
    """One socket: Connect (``session_id``), Authenticate, Mutation ``request_id``."""
    with open_ws(server, session_id) as ws:
        authenticate(ws, jwt_token)
        ws.send(
            json.dumps({"type": "Mutation", "requestId": request_id, "udfPath": path, "args": [{}]})
        )
        resp = read_until(ws, lambda m: m["type"] == "MutationResponse")
    assert resp["requestId"] == request_id and resp["success"] is True, resp
    return resp["result"]


def subscribe_whoami(ws: ClientConnection) -> None:
    """Add ``auth_probe:whoami`` as query 0 (query set version 0 -> 1)."""
    add = {"type": "Add", "queryId": 0, "udfPath": "auth_probe:whoami", "args": [{}]}
    modify = {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [add]}
    ws.send(json.dumps(modify))


def test_ws_identity_of_a_forged_admin_claim(server: ServerProcess) -> None:
    forged = token(sub="mallory", tokenType="Admin", tokenIdentifier="admin")
    with open_ws(server, str(uuid.uuid4())) as ws:
        authenticate(ws, forged)
        subscribe_whoami(ws)
        msg = read_until(
            ws, lambda m: m["type"] == "Transition" and m["endVersion"]["querySet"] == 1
        )
    (mod,) = msg["modifications"]
    assert mod["type"] == "QueryUpdated", mod
    identity = mod["value"]
    assert "tokenType" not in identity
    assert identity["subject"] == "mallory" and identity["tokenIdentifier"] == "|mallory"


@pytest.mark.parametrize("bad", ["no exp", "expired"])
def test_ws_refuses_tokens_without_a_valid_exp(server: ServerProcess, bad: str) -> None:
    exp = None if bad == "no exp" else int(time.time()) - 10
    with open_ws(server, str(uuid.uuid4())) as ws:
        authenticate(ws, token(exp=exp))
        msg = read_until(ws, lambda m: m["type"] == "AuthError")
    assert "exp" in msg["error"] or "expired" in msg["error"], msg


def test_replay_is_keyed_by_caller(server: ServerProcess, http: httpx.Client) -> None:
    session = str(uuid.uuid4())
    alice = token(sub="alice")
    bob = token(sub="bob")
    # Alice runs request 0 of the session.
    assert mutate(server, session, alice) == {"n": 1.0, "who": "alice"}
    # Bob, then an unauthenticated caller, reuse (session, request 0): their own mutations
    # run (the count goes up) and they do not see Alice's result.
    assert mutate(server, session, bob) == {"n": 2.0, "who": "bob"}
    assert mutate(server, session, None) == {"n": 3.0, "who": ""}
    assert value(call(http, "query", "auth_probe:count")) == 3.0
    # Alice's replay (a refreshed token: same principal, new iat/exp) gets her recorded
    # result without a second run; so do Bob's and the anonymous caller's.
    refreshed = token(sub="alice", iat=int(time.time()) - 30, exp=int(time.time()) + 7200)
    assert refreshed != alice
    assert mutate(server, session, refreshed) == {"n": 1.0, "who": "alice"}
    assert mutate(server, session, bob) == {"n": 2.0, "who": "bob"}
    assert mutate(server, session, None) == {"n": 3.0, "who": ""}
    assert value(call(http, "query", "auth_probe:count")) == 3.0
    # The same ids for another function are another request: it runs.
    assert mutate(server, session, alice, "auth_probe:bump_other") == {"n": 4.0, "who": "alice"}
    assert mutate(server, session, alice, "auth_probe:bump_other") == {"n": 4.0, "who": "alice"}
    # Another issuer with the same subject is another principal.
    other_issuer = token(sub="alice", iss="https://elsewhere")
    assert mutate(server, session, other_issuer) == {"n": 5.0, "who": "alice"}
    assert value(call(http, "query", "auth_probe:count")) == 5.0


# -- the records, in the database --------------------------------------------------------------


def test_caller_key() -> None:
    a = {"subject": "a", "tokenIdentifier": "i|a", "exp": 1}
    assert caller_key(a, "m:f") == caller_key({**a, "exp": 2, "iat": 0}, "m:f")
    assert caller_key(a, "m:f") != caller_key(a, "m:g")
    assert caller_key(a, "m:f") != caller_key({**a, "tokenIdentifier": "i|b"}, "m:f")
    assert caller_key(None, "m:f") != caller_key({}, "m:f")
    assert caller_key(None, "m:f") != caller_key(a, "m:f")
    # Without a tokenIdentifier the whole identity counts, whatever its key order.
    assert caller_key({"x": 1, "y": 2}, "m:f") == caller_key({"y": 2, "x": 1}, "m:f")
    assert caller_key({"x": 1}, "m:f") != caller_key({"x": 2}, "m:f")
    assert len(caller_key(a, "m:f")) == 64


async def test_records_without_a_caller_never_match(auth_app: Path, tmp_path: Path) -> None:
    """A database from before the caller key: the new index is backfilled, old records
    (no ``caller``) are never replayed, and new ones are."""
    async with reactive.open(f"sqlite:///{tmp_path / 'old.db'}", app=auth_app) as db:
        engine = db._engine
        # What ensure_system_tables made before: the table and its by_request index only.
        engine.create_system_table(SESSION_REQUESTS)
        index_id, snapshot = engine.add_index(
            SESSION_REQUESTS, "by_request", ["session", "request"]
        )
        await backfill_index(db, index_id, snapshot)
        txn = engine.begin(False)
        old = {"session": "s", "request": 0, "value": '"old result"', "logLines": []}
        txn.insert(SESSION_REQUESTS, old)
        ts = engine.commit(txn)
        assert ts is not None
        await db._flusher.wait(ts)

        await ensure_system_tables(db)
        await ensure_system_tables(db)  # idempotent
        table = next(t for t in engine.tables() if t["name"] == SESSION_REQUESTS)
        indexes = {i["name"]: i for i in table["indexes"]}
        assert indexes["by_caller_request"]["ready_since"] is not None

        first = await db.run_mutation("auth_probe:bump", {}, request=("s", 0))
        assert not first.replayed and first.value == {"n": 1.0, "who": ""}
        again = await db.run_mutation("auth_probe:bump", {}, request=("s", 0))
        assert again.replayed and again.value == {"n": 1.0, "who": ""}
        someone = {"subject": "u", "tokenIdentifier": "|u"}
        theirs = await db.run_mutation("auth_probe:bump", {}, identity=someone, request=("s", 0))
        assert not theirs.replayed and theirs.value == {"n": 2.0, "who": "u"}
        assert (await db.run_query("auth_probe:count")).value == 2.0


def test_ws_token_expiring_mid_session_is_dropped(server: ServerProcess) -> None:
    """A token accepted at Authenticate expires while the socket is open: the server says
    so (AuthError, authUpdateAttempted false), keeps the socket, and the subscribed
    query re-runs without the identity."""
    expires = int(time.time()) + 3
    with open_ws(server, str(uuid.uuid4())) as ws:
        authenticate(ws, token(sub="carol", exp=expires))
        subscribe_whoami(ws)
        first = read_until(ws, lambda m: m["type"] == "Transition" and m["modifications"])
        assert first["modifications"][0]["value"]["subject"] == "carol"
        assert time.time() < expires, "the first result came after the token expired"
        seen: list[dict[str, Any]] = []

        def after_expiry(msg: dict[str, Any]) -> bool:
            seen.append(msg)
            return msg["type"] == "Transition" and any(
                m["queryId"] == 0 and m.get("value", "x") is None for m in msg["modifications"]
            )

        deadline = time.monotonic() + TIMEOUT_S
        while True:
            text = ws.recv(timeout=max(deadline - time.monotonic(), 0.001))
            msg = json.loads(text)
            assert msg["type"] != "FatalError", msg
            if after_expiry(msg):
                break
        assert time.time() >= expires
        errors = [m for m in seen if m["type"] == "AuthError"]
        assert len(errors) == 1, seen
        assert errors[0]["authUpdateAttempted"] is False
        assert "expired" in errors[0]["error"]
        # The socket goes on: a mutation now runs unauthenticated.
        ws.send(
            json.dumps(
                {"type": "Mutation", "requestId": 0, "udfPath": "auth_probe:bump", "args": [{}]}
            )
        )
        resp = read_until(ws, lambda m: m["type"] == "MutationResponse")
        assert resp["success"] is True and resp["result"]["who"] == "", resp

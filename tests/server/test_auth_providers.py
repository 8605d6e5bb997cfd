"""Auth providers from an app's ``auth.py`` against a local OIDC issuer, and acting-as.

The issuer is a small HTTP server on 127.0.0.1 serving the OIDC discovery document and a
JWKS made from keys generated here; the test rotates its keys mid-session, takes it down,
and checks what the reactive server accepts and refuses.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from websockets.sync.client import connect

if TYPE_CHECKING:
    from conftest import ServerProcess

ADMIN = "provider-test-admin-key"
AUDIENCE = "test-app"


class Issuer:
    """An OIDC issuer on 127.0.0.1: discovery, two key sets, request counts."""

    def __init__(self) -> None:
        self.rsa: dict[str, Any] = {}  # kid -> private key (served: their public halves)
        self.ec: dict[str, Any] = {}
        self.requests: list[str] = []
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.requests.append(self.path)
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
                elif self.path == "/jwks":
                    body = issuer.jwks(issuer.rsa, RSAAlgorithm, "RS256")
                elif self.path == "/ec-jwks":
                    body = issuer.jwks(issuer.ec, ECAlgorithm, "ES256")
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def jwks(keys: dict[str, Any], algorithm: Any, alg: str) -> dict[str, Any]:
        out = []
        for kid, private in keys.items():
            jwk = algorithm.to_jwk(private.public_key(), as_dict=True)
            jwk.update({"kid": kid, "use": "sig", "alg": alg})
            out.append(jwk)
        return {"keys": out}

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def token(
        self, kid: str, *, iss: str | None = None, aud: str | None = AUDIENCE, **claims: Any
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": iss or self.url,
            "sub": "user-1",
            "iat": now,
            "exp": now + 600,
            **claims,
        }
        if aud is not None:
            body["aud"] = aud
        if kid in self.ec:
            return jwt.encode(body, self.ec[kid], algorithm="ES256", headers={"kid": kid})
        return jwt.encode(body, self.rsa[kid], algorithm="RS256", headers={"kid": kid})


def new_rsa() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    server.rsa["k1"] = new_rsa()
    server.ec["e1"] = ec.generate_private_key(ec.SECP256R1())
    yield server
    server.stop()


WHOAMI = """
from reactive import query


@query(args={})
async def whoami(ctx):
    return await ctx.auth.get_user_identity()
"""


@pytest.fixture
def server(
    issuer: Issuer,
    make_app: Callable[[dict[str, str]], Path],
    start_server: Callable[..., ServerProcess],
) -> ServerProcess:
    auth = (
        "providers = [\n"
        f"    {{'domain': {issuer.url!r}, 'application_id': {AUDIENCE!r}}},\n"
        f"    {{'type': 'custom_jwt', 'issuer': {issuer.url + '/ec'!r},\n"
        f"     'jwks': {issuer.url + '/ec-jwks'!r}, 'algorithm': 'ES256'}},\n"
        "]\n"
    )
    app = make_app({"auth.py": auth, "who.py": WHOAMI})
    return start_server(app, "--admin-key", ADMIN)


def whoami(server: ServerProcess, authorization: str | None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return httpx.post(
        f"{server.url}/api/query",
        json={"path": "who:whoami", "args": {}},
        headers=headers,
        timeout=20.0,
    )


def identity_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    return body["value"]


def test_oidc_provider_discovery_and_jwks(server: ServerProcess, issuer: Issuer) -> None:
    who = identity_of(whoami(server, f"Bearer {issuer.token('k1', name='Ada')}"))
    assert who["subject"] == "user-1" and who["issuer"] == issuer.url
    assert who["tokenIdentifier"] == f"{issuer.url}|user-1" and who["name"] == "Ada"
    assert "/.well-known/openid-configuration" in issuer.requests and "/jwks" in issuer.requests
    # Keys are cached: a second token costs no fetch.
    fetched = len(issuer.requests)
    identity_of(whoami(server, f"Bearer {issuer.token('k1')}"))
    assert len(issuer.requests) == fetched


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("audience", "Audience"),
        ("expired", "expired"),
        ("no exp", "exp"),
        ("forged", "Signature"),
        ("unknown issuer", "NoAuthProvider"),
    ],
)
def test_bad_tokens_are_refused(
    server: ServerProcess, issuer: Issuer, case: str, needle: str
) -> None:
    if case == "audience":
        token = issuer.token("k1", aud="another-app")
    elif case == "expired":
        token = issuer.token("k1", exp=int(time.time()) - 60)
    elif case == "no exp":
        token = jwt.encode(
            {"iss": issuer.url, "sub": "x", "aud": AUDIENCE},
            issuer.rsa["k1"],
            algorithm="RS256",
            headers={"kid": "k1"},
        )
    elif case == "forged":
        token = jwt.encode(
            {"iss": issuer.url, "sub": "x", "aud": AUDIENCE, "exp": int(time.time()) + 60},
            new_rsa(),
            algorithm="RS256",
            headers={"kid": "k1"},
        )
    else:
        token = issuer.token("k1", iss="https://not-configured.example")
    r = whoami(server, f"Bearer {token}")
    assert r.status_code == 401, r.text
    assert needle in r.json()["message"], r.json()


def test_custom_jwt_provider_es256(server: ServerProcess, issuer: Issuer) -> None:
    who = identity_of(whoami(server, f"Bearer {issuer.token('e1', iss=issuer.url + '/ec')}"))
    assert who["tokenIdentifier"] == f"{issuer.url}/ec|user-1"


def test_key_rotation_mid_session(server: ServerProcess, issuer: Issuer) -> None:
    """A socket authenticated with k1; the issuer rotates to k2; the client's fresh token
    (signed with k2) is accepted on the same socket once the server refetches the keys."""
    with whoami_socket(server) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "Authenticate",
                    "baseVersion": 0,
                    "tokenType": "User",
                    "value": issuer.token("k1", sub="before"),
                }
            )
        )
        assert value_of(ws, identity_version=1)["subject"] == "before"
        issuer.rsa.clear()
        issuer.rsa["k2"] = new_rsa()
        time.sleep(2.2)  # the refetch interval for an unknown key id
        ws.send(
            json.dumps(
                {
                    "type": "Authenticate",
                    "baseVersion": 1,
                    "tokenType": "User",
                    "value": issuer.token("k2", sub="after"),
                }
            )
        )
        assert value_of(ws, identity_version=2)["subject"] == "after"


@contextlib.contextmanager
def whoami_socket(server: ServerProcess) -> Iterator[Any]:
    """A connected socket subscribed to ``who:whoami`` (query 0, query set version 1)."""
    url = server.url.replace("http://", "ws://") + "/api/sync"
    with connect(url, open_timeout=10.0, proxy=None, ping_interval=None) as ws:
        ws.send(
            json.dumps({"type": "Connect", "sessionId": str(uuid.uuid4()), "connectionCount": 0})
        )
        add = {"type": "Add", "queryId": 0, "udfPath": "who:whoami", "args": [{}]}
        modify = {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1}
        ws.send(json.dumps({**modify, "modifications": [add]}))
        yield ws


def value_of(ws: Any, identity_version: int) -> Any:
    deadline = time.monotonic() + 20.0
    while True:
        msg = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        assert msg["type"] not in ("AuthError", "FatalError"), msg
        if (
            msg["type"] == "Transition"
            and msg["endVersion"]["identity"] == identity_version
            and msg["modifications"]
        ):
            return msg["modifications"][0]["value"]


def test_provider_down_refuses_clearly_and_serves_others(
    server: ServerProcess, issuer: Issuer
) -> None:
    token = issuer.token("e1", iss=issuer.url + "/ec")  # its keys were never fetched
    issuer.stop()
    started = time.monotonic()
    r = whoami(server, f"Bearer {token}")
    assert r.status_code == 401, r.text
    assert "cannot be reached" in r.json()["message"], r.json()
    assert time.monotonic() - started < 15.0
    health = httpx.get(f"{server.url}/health", timeout=5.0)
    assert health.status_code == 200


def acting_as(identity: dict[str, Any], key: str = ADMIN) -> str:
    encoded = base64.b64encode(json.dumps(identity).encode()).decode()
    return f"Convex {key}:{encoded}"


def test_admin_key_acting_as_a_user(server: ServerProcess) -> None:
    who = identity_of(
        whoami(server, acting_as({"subject": "u9", "issuer": "https://x.example", "name": "N"}))
    )
    assert who == {
        "subject": "u9",
        "issuer": "https://x.example",
        "name": "N",
        "tokenIdentifier": "https://x.example|u9",
    }
    # A plain admin caller has no identity.
    assert identity_of(whoami(server, f"Convex {ADMIN}")) is None
    # Only with the admin key; and the identity must be an object with subject and issuer.
    assert (
        whoami(server, acting_as({"subject": "u9", "issuer": "i"}, key="wrong")).status_code == 401
    )
    assert whoami(server, acting_as({"subject": "u9"})).status_code == 401
    assert whoami(server, f"Convex {ADMIN}:!!notbase64!!").status_code == 401


def test_admin_key_impersonating_over_the_sync_protocol(server: ServerProcess) -> None:
    with whoami_socket(server) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "Authenticate",
                    "baseVersion": 0,
                    "tokenType": "Admin",
                    "value": ADMIN,
                    "impersonating": {"subject": "imp", "issuer": "https://i.example"},
                }
            )
        )
        assert value_of(ws, identity_version=1)["tokenIdentifier"] == "https://i.example|imp"


def test_malformed_auth_py_stops_the_server(
    make_app: Callable[[dict[str, str]], Path], tmp_path: Path
) -> None:
    app = make_app({"auth.py": "providers = [{'type': 'custom_jwt', 'issuer': 'x'}]\n"})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reactive.server",
            "--app",
            str(app),
            "--db",
            f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "providers[0]" in proc.stderr and "'jwks'" in proc.stderr, proc.stderr[-2000:]

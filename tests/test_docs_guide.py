"""The guide's pages on auth, the server and its clients, backends, operating it,
guarantees and benchmarks: their examples run as written.

``python`` blocks that start with ``# app/<module>.py`` are an app (written out and opened
embedded, or served by a real ``python -m reactive.server``); other blocks are found by a
line they hold and run with the page's URLs and keys replaced by the test's. Shell lines
(``python -m reactive ...``) run with ``sys.executable`` against a temporary database, and
their output is compared with what the page says. The JS blocks run under Node with the
official ``convex`` package (tests/js; skipped without Node), the React block is
type-checked with ``tsc`` (tests/js-ts).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

import reactive

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"```python\n# app/(?P<module>[\w/]+\.py)\n(?P<source>.*?)```", re.S)
FENCE = re.compile(r"```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
PAGE_URL = "http://127.0.0.1:3210"
SECRET = "a-shared-secret-of-the-docs-test-0123456789"
ADMIN = "docs-test-admin-key"
MakeApp = Callable[[dict[str, str]], Path]


def app_of(page: str) -> dict[str, str]:
    """The modules a docs page defines (a module named twice is concatenated)."""
    files: dict[str, str] = {}
    for match in BLOCK.finditer((DOCS / page).read_text()):
        files[match["module"]] = files.get(match["module"], "") + match["source"]
    return files


def block(page: str, lang: str, holding: str) -> str:
    """The one ``lang`` block of ``page`` that holds ``holding``."""
    found = [
        m["body"]
        for m in FENCE.finditer((DOCS / page).read_text())
        if m["lang"] == lang and holding in m["body"]
    ]
    assert len(found) == 1, f"{page}: {len(found)} {lang} blocks hold {holding!r}"
    return found[0]


def run_python(source: str, namespace: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``exec`` a page's block; returns what it printed and its namespace."""
    namespace = {} if namespace is None else namespace
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<docs>", "exec"), namespace)
    return out.getvalue(), namespace


def capture(coro: Any) -> str:
    """Run ``coro`` to its end; what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        asyncio.run(coro)
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Any:
    """``python -m reactive ARGS`` (a page's shell line); returns the finished process."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REACTIVE_")}
    return subprocess.run(
        [sys.executable, "-m", "reactive", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


class Server:
    """``python -m reactive.server`` in a subprocess (``argv`` after the module name)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        environ = {k: v for k, v in os.environ.items() if not k.startswith("REACTIVE_")}
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reactive.server", *argv, "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start:\n" + self.log()
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def page(self, text: str) -> str:
        """A page's text with its URL replaced by this server's."""
        return text.replace(PAGE_URL, self.url)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers (``serve(argv, env=...)``); all are stopped at the end."""
    started: list[Server] = []

    def start(argv: list[str], env: dict[str, str] | None = None) -> Server:
        server = Server(argv, tmp_path / f"server{len(started)}.log", env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def shell_argv(line: str, replace: dict[str, str]) -> list[str]:
    """A page's shell line as argv: ``python`` is this interpreter, words replaced."""
    words = shlex.split(line.split(" #")[0])
    return [sys.executable if w == "python" else replace.get(w, w) for w in words]


def post(url: str, path: str, args: dict[str, Any], authorization: str | None = None) -> Any:
    headers = {} if authorization is None else {"Authorization": authorization}
    return httpx.post(
        f"{url}/api/query",
        json={"path": path, "args": args},
        headers=headers,
        timeout=20.0,
    )


# -- Node: the official JS client and tsc ------------------------------------------------------

JS_DIR = ROOT / "tests" / "js"
TS_DIR = ROOT / "tests" / "js-ts"


def node_project(directory: Path) -> str:
    """``node``, with ``directory``'s pinned packages installed (``npm ci`` once)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the JS examples need Node.js >= 18")
    pins = json.loads((directory / "package.json").read_text())["dependencies"]
    installed = directory / "node_modules" / "convex" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != pins["convex"]:
        npm = shutil.which("npm")
        assert npm is not None, "npm is not on PATH"
        proc = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return node


def js_script(tmp_path: Path, name: str, source: str) -> Path:
    """``source`` as an ES module beside tests/js's packages."""
    project = tmp_path / f"js-{name}"
    project.mkdir()
    (project / "node_modules").symlink_to(JS_DIR / "node_modules")
    (project / "package.json").write_text('{"type": "module"}')
    script = project / f"{name}.mjs"
    script.write_text(source)
    return script


def node_lines(node: str, script: Path, until: Callable[[list[str]], bool]) -> list[str]:
    """Run ``script`` until the lines it printed satisfy ``until`` (then stop it)."""
    out, err = script.with_suffix(".out"), script.with_suffix(".err")
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen([node, str(script)], stdout=stdout, stderr=stderr)
    deadline = time.monotonic() + 30
    try:
        while True:
            exited = proc.poll() is not None
            lines = out.read_text().splitlines()
            if until(lines):
                return lines
            assert not exited, f"node exited {proc.returncode}: {lines} {err.read_text()}"
            assert time.monotonic() < deadline, f"node printed {lines} {err.read_text()}"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


# -- auth.md -----------------------------------------------------------------------------------


class Issuer:
    """The page's two providers on 127.0.0.1 (OIDC with RS256, custom JWT with ES256), and
    the page's token endpoint (``/token``: an HS256 token for user-42, ``--jwt-key``'s)."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from jwt.algorithms import ECAlgorithm, RSAAlgorithm

        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.tokens_served = 0
        issuer = self

        def jwks(key: Any, algorithm: Any, alg: str) -> dict[str, Any]:
            jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
            return {"keys": [{**jwk, "kid": f"{alg}-1", "use": "sig", "alg": alg}]}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/.well-known/openid-configuration":
                    body = json.dumps({"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"})
                elif path == "/jwks":
                    body = json.dumps(jwks(issuer.rsa, RSAAlgorithm, "RS256"))
                elif path == "/custom/.well-known/jwks.json":
                    body = json.dumps(jwks(issuer.ec, ECAlgorithm, "ES256"))
                elif path == "/token":
                    issuer.tokens_served += 1
                    body = hs256_token()
                else:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def token(self, custom: bool = False, **claims: Any) -> str:
        now = int(time.time())
        body = {"sub": "oidc-user", "iat": now, "exp": now + 600, **claims}
        if custom:
            body["iss"] = self.url + "/custom"
            return jwt.encode(body, self.ec, algorithm="ES256", headers={"kid": "ES256-1"})
        body = {"iss": self.url, "aud": "my-app", **body}
        return jwt.encode(body, self.rsa, algorithm="RS256", headers={"kid": "RS256-1"})

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def hs256_token(**claims: Any) -> str:
    """A token as the page's PyJWT block mints it (``exp`` an hour ahead)."""
    body = {"sub": "user-42", "iss": "https://my-backend.example", "exp": int(time.time()) + 3600}
    return jwt.encode({**body, **claims}, SECRET, algorithm="HS256")


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    yield server
    server.stop()


@pytest.fixture
def auth_server(
    issuer: Issuer, make_app: MakeApp, serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> Server:
    """The page's app served as the page's command says, with both providers of auth.py."""
    env = {
        "OIDC_DOMAIN": issuer.url,
        "JWT_ISSUER": issuer.url + "/custom",
        "REACTIVE_JWT_KEY": SECRET,
        "REACTIVE_ADMIN_KEY": ADMIN,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    files = app_of("auth.md")
    assert set(files) == {"schema.py", "notes.py", "auth.py"}
    app = make_app(files)
    line = next(
        x
        for x in block("auth.md", "sh", "python -m reactive.server").splitlines()
        if x.startswith("python -m reactive.server")
    )
    argv = shell_argv(line, {"app": str(app)})[3:]  # after `python -m reactive.server`
    db = f"sqlite:///{app.parent / 'auth.db'}"
    return serve([*argv, "--db", db], env=env)


async def test_auth_page_embedded(
    db_url: str, make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OIDC_DOMAIN", "https://issuer.example")
    monkeypatch.setenv("JWT_ISSUER", "https://jwt.example")
    app = make_app(app_of("auth.md"))
    source = block("auth.md", "python", "ADA = {").replace("sqlite:///notes.db", db_url)
    _, namespace = run_python(source)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await namespace["main"](app)
    assert out.getvalue().splitlines() == ["['buy milk']", "[]"]
    # Without an identity, add refuses; whoami is None.
    async with reactive.open(db_url, app=app) as db:
        assert await db.query("notes:whoami") is None
        with pytest.raises(reactive.ConvexError) as refused:
            await db.mutation("notes:add", {"text": "x"})
    assert refused.value.data == {"code": "UNAUTHENTICATED"}


def test_auth_page_served(auth_server: Server, issuer: Issuer) -> None:
    url = auth_server.url
    # The page's token, minted as its PyJWT block does, with the server's key.
    _, minted = run_python(block("auth.md", "python", "jwt.encode("))
    token = minted["token"]
    who = post(url, "notes:whoami", {}, f"Bearer {token}").json()["value"]
    assert who["subject"] == "user-42" and who["name"] == "Ada"
    assert who["tokenIdentifier"] == "https://my-backend.example|user-42"
    assert who["issuer"] == who["iss"] == "https://my-backend.example"
    # The official Python client: set_auth, then clear_auth.
    printed, _ = run_python(
        auth_server.page(block("auth.md", "python", "client.set_auth(token)")), {"token": token}
    )
    lines = printed.splitlines()
    assert lines[1:] == ["['buy milk']", "[]"] and len(lines) == 3
    # reactive's own client.
    _, namespace = run_python(auth_server.page(block("auth.md", "python", "auth_token=token")))
    assert capture(namespace["main"](token)).splitlines() == ["['buy milk', 'call mom']"]
    # An admin key acting as user-42 sees what user-42 sees.
    printed, _ = run_python(
        auth_server.page(block("auth.md", "python", "acting_as = ")), {"admin_key": ADMIN}
    )
    assert printed.splitlines() == ["['buy milk', 'call mom']"]
    # The admin key alone has no identity; a wrong key or a half identity is refused.
    assert post(url, "notes:whoami", {}, f"Convex {ADMIN}").json()["value"] is None
    half = base64.b64encode(json.dumps({"subject": "x"}).encode()).decode()
    assert post(url, "notes:whoami", {}, f"Convex {ADMIN}:{half}").status_code == 401
    assert post(url, "notes:whoami", {}, "Convex wrong-key").status_code == 401
    # Both providers of auth.py.
    oidc = post(url, "notes:whoami", {}, f"Bearer {issuer.token(name='Grace')}").json()
    assert oidc["value"]["tokenIdentifier"] == f"{issuer.url}|oidc-user"
    assert oidc["value"]["name"] == "Grace"
    custom = post(url, "notes:whoami", {}, f"Bearer {issuer.token(custom=True)}").json()
    assert custom["value"]["tokenIdentifier"] == f"{issuer.url}/custom|oidc-user"
    # Refused: expired, wrong audience, wrong --jwt-issuer, no exp.
    refused = [
        hs256_token(exp=int(time.time()) - 10),
        issuer.token(aud="another-app"),
        hs256_token(iss="https://elsewhere.example"),
        jwt.encode({"sub": "user-42", "iss": "https://my-backend.example"}, SECRET, "HS256"),
    ]
    for bad in refused:
        r = post(url, "notes:whoami", {}, f"Bearer {bad}")
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "Unauthenticated"
        assert r.json()["message"].startswith("the token is not valid")
    assert "expired" in post(url, "notes:whoami", {}, f"Bearer {refused[0]}").json()["message"]


def test_auth_page_js_set_auth(auth_server: Server, issuer: Issuer, tmp_path: Path) -> None:
    node = node_project(JS_DIR)
    source = auth_server.page(block("auth.md", "js", "client.setAuth(")).replace(
        "http://127.0.0.1:8000", issuer.url
    )
    script = js_script(tmp_path, "set_auth", source)
    lines = node_lines(node, script, lambda seen: "user-42" in seen)
    assert lines[-1] == "user-42"
    assert issuer.tokens_served >= 1


def test_auth_page_refusals(tmp_path: Path) -> None:
    from reactive.server.providers import parse_providers

    # The message the page quotes for a malformed auth.py entry.
    with pytest.raises(ValueError) as malformed:
        parse_providers([{"type": "custom_jwt", "issuer": "https://jwt.example"}])
    page = (DOCS / "auth.md").read_text()
    assert str(malformed.value).split(", not")[0] in page
    assert str(malformed.value) in page.replace("\n", " ")
    # An empty key: the server does not start.
    for flag, env in (("--jwt-key", "REACTIVE_JWT_KEY"), ("--admin-key", "REACTIVE_ADMIN_KEY")):
        db = f"sqlite:///{tmp_path / 'x.db'}"
        done = subprocess.run(
            [sys.executable, "-m", "reactive.server", "--db", db, flag, "  "],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert f"{flag} (or ${env}) must not be empty" in done.stderr
    assert "`--jwt-key (or $REACTIVE_JWT_KEY) must not be empty` (exit status 2)" in page.replace(
        "\n", " "
    )

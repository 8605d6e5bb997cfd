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
    # reactive's own client, with a token, then with a token fetcher (the page's endpoint).
    _, namespace = run_python(auth_server.page(block("auth.md", "python", "auth_token=token")))
    assert capture(namespace["main"](token)).splitlines() == ["['buy milk', 'call mom']"]
    fetching = block("auth.md", "python", "fetch_token=fetch_token")
    _, namespace = run_python(
        auth_server.page(fetching.replace("http://127.0.0.1:8000", issuer.url))
    )
    served = issuer.tokens_served
    assert capture(namespace["main"]()).splitlines() == [
        "['buy milk', 'call mom', 'water the plants']"
    ]
    assert issuer.tokens_served == served + 1
    # An admin key acting as user-42 sees what user-42 sees.
    printed, _ = run_python(
        auth_server.page(block("auth.md", "python", "acting_as = ")), {"admin_key": ADMIN}
    )
    assert printed.splitlines() == ["['buy milk', 'call mom', 'water the plants']"]
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


async def test_auth_page_reactive_client_expiry(auth_server: Server) -> None:
    """What the page says reactive's client does when a fixed token expires, and its
    refresh leeway."""
    import inspect

    from reactive.client import Client
    from reactive.errors import AuthError

    page = " ".join((DOCS / "auth.md").read_text().split())
    leeway = inspect.signature(Client).parameters["refresh_leeway_s"].default
    assert f"fetches a fresh token {leeway:g} seconds before" in page
    assert f"refresh_leeway_s={leeway:g})" in page
    quoted = re.search(r'raises `reactive.errors.AuthError` once \("([^"]+)"\)', page)
    assert quoted is not None
    async with Client(auth_server.url, auth_token=hs256_token(exp=int(time.time()) + 2)) as client:
        sub = client.subscribe("notes:whoami")
        assert (await asyncio.wait_for(sub.get(), 20))["subject"] == "user-42"
        with pytest.raises(AuthError) as expired:
            await asyncio.wait_for(sub.get(), 20)
        assert str(expired.value) == quoted[1]
        assert await asyncio.wait_for(sub.get(), 20) is None
        with pytest.raises(reactive.ConvexError):  # notes:add refuses anonymous callers
            await asyncio.wait_for(client.mutation("notes:add", {"text": "x"}), 20)
        sub.close()


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


# -- server.md ---------------------------------------------------------------------------------


def help_defaults(module: str) -> dict[str, str]:
    """Each option of ``python -m MODULE --help`` with its default (``""`` when none)."""
    text = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    text = re.sub(r"\s+", " ", text.split("options:", 1)[1])
    options: dict[str, str] = {}
    for match in re.finditer(r"(--[a-z-]+)(?: [A-Z_]+)? (.*?)(?= --[a-z-]+(?: [A-Z_]+)? |$)", text):
        default = re.search(r"\(default:? ([^)]*)\)", match[2])
        options[match[1]] = default[1] if default else ""
    return options


@pytest.fixture
def chat_server(make_app: MakeApp, serve: Callable[..., Server], tmp_path: Path) -> Server:
    """The server page's app, started as the page's command says."""
    files = app_of("server.md")
    assert set(files) == {"schema.py", "messages.py"}
    app = make_app(files)
    line = block("server.md", "sh", "python -m reactive.server").strip()
    db = f"sqlite:///{tmp_path / 'app.db'}"
    argv = shell_argv(line, {"app": str(app), "sqlite:///app.db": db})
    assert argv[1:3] == ["-m", "reactive.server"]
    return serve(argv[3:])


def test_server_page_clients(chat_server: Server) -> None:
    server = chat_server
    page = (DOCS / "server.md").read_text()
    # What it prints when it starts, and the landing page.
    printed = server.log().splitlines()[0]
    shown = re.search(r"prints `(reactive: serving .*?)`", page.replace("\n", " "))
    assert shown is not None
    assert re.sub(r"serving \S+ on \S+ \(database \S+\)", "X", printed) == re.sub(
        r"serving \S+ on \S+ \(database \S+\)", "X", shown[1]
    )
    landing = httpx.get(server.url + "/", timeout=10).text
    assert f"reactive {reactive.__version__} is running" in landing
    assert server.url in landing and "/dashboard" in landing and "/metrics" in landing
    # The official Python client.
    out, _ = run_python(server.page(block("server.md", "python", "from convex import")))
    assert out.splitlines() == ["['hello from Python']", "['hello from Python']"]
    # reactive's own client.
    out, _ = run_python(server.page(block("server.md", "python", "from reactive.client")))
    assert out.splitlines() == [
        "['hello from Python']",
        "['hello from Python', 'from asyncio']",
    ]
    # Plain HTTP: the page's curl line.
    curl = shlex.split(server.page(block("server.md", "sh", "curl ")).replace("\\\n", " "))
    body = json.loads(curl[curl.index("-d") + 1])
    answer = httpx.post(curl[2], json=body, timeout=10).json()
    assert answer == {"status": "success", "value": ["hello from Python", "from asyncio"]}
    # An unknown function: 404 with a code.
    r = httpx.post(f"{server.url}/api/query", json={"path": "nope:x", "args": {}}, timeout=10)
    assert r.status_code == 404 and r.json()["code"]
    # SIGTERM: exit status 0.
    assert server.stop() == 0


def test_server_page_js_clients(chat_server: Server, tmp_path: Path) -> None:
    node = node_project(JS_DIR)
    ws = js_script(
        tmp_path, "ws", server_js := chat_server.page(block("server.md", "js", "onUpdate"))
    )
    assert "webSocketConstructor" in server_js
    lines = node_lines(node, ws, lambda seen: any("hello from JS" in x for x in seen))
    assert "hello from JS" in lines[-1]
    http = js_script(
        tmp_path, "http", chat_server.page(block("server.md", "js", "ConvexHttpClient("))
    )
    lines = node_lines(node, http, lambda seen: any("over HTTP" in x for x in seen))
    assert "over HTTP" in lines[-1] and "hello from JS" in lines[-1]


def test_server_page_codegen_and_react(make_app: MakeApp, tmp_path: Path) -> None:
    node = node_project(TS_DIR)
    app = make_app(app_of("server.md"))
    line = block("server.md", "sh", "python -m reactive codegen").strip()
    web = tmp_path / "web"
    argv = shell_argv(
        line, {"app": str(app), "web/convex/_generated": str(web / "convex/_generated")}
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (web / "convex/_generated").iterdir()) == [
        "api.d.ts",
        "api.js",
        "dataModel.d.ts",
    ]
    (web / "src").mkdir()
    (web / "src/App.tsx").write_text(block("server.md", "tsx", "useQuery"))
    (web / "node_modules").symlink_to(TS_DIR / "node_modules")
    config = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "target": "ES2022",
            "module": "ESNext",
            "moduleResolution": "Bundler",
            "jsx": "react-jsx",
            "skipLibCheck": True,
            "types": [],
        },
        "include": ["src", "convex/_generated"],
    }
    (web / "tsconfig.json").write_text(json.dumps(config))
    tsc = TS_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    checked = subprocess.run(
        [node, str(tsc), "-p", str(web), "--pretty", "false"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The page's comment on useQuery's type holds: a wrong use is refused.
    wrong = block("server.md", "tsx", "useQuery").replace(
        "bodies.map((body, i)", "bodies.map((body: number, i)"
    )
    (web / "src/App.tsx").write_text(wrong)
    refused = subprocess.run(
        [node, str(tsc), "-p", str(web), "--pretty", "false"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert refused.returncode != 0 and "number" in refused.stdout


def test_server_page_options_match_the_server(tmp_path: Path) -> None:
    options = help_defaults("reactive.server")
    text = (DOCS / "server.md").read_text()
    page = text[text.index("## Options") : text.index("## Development mode")]
    named = set(re.findall(r"`(--[a-z-]+)", page))
    assert set(options) - {"--help"} <= named, "options the page does not mention"
    assert named <= set(options), "options the page names that the server does not have"
    # The tables' defaults are the server's.
    source = (ROOT / "python/reactive/server/__main__.py").read_text()
    for row in re.finditer(r"^\| `(--[a-z-]+)[^`]*` \| `([^`]+)`", page, re.M):
        if row[2].startswith("$"):  # an environment variable the option reads
            assert f'os.environ.get("{row[2][1:]}"' in source, row[0]
        elif options[row[1]]:
            assert options[row[1]] in (row[2], row[2] + ".0"), (row[0], options[row[1]])
        else:  # the help does not say: the parser's default
            assert f'"{row[1]}", default="{row[2]}"' in source, row[0]
    # The limits paragraph's defaults.
    sizes = {"16 MiB": "16777216", "20 MiB": "20971520", "1 GiB": "1073741824"}
    for flag, default in re.findall(r"`(--[a-z-]+)` \(([^)]+)\)", page.replace("\n", " ")):
        want = sizes.get(default, default)
        assert options[flag] in (want, want + ".0"), (flag, default, options[flag])
    # A usage error, before anything opens.
    db = tmp_path / "never.db"
    argv = ["-m", "reactive.server", "--db", f"sqlite:///{db}", "--port", "4000"]
    done = subprocess.run(
        [sys.executable, *argv, "--site-port", "4000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--site-port" in done.stderr and not db.exists()
    # The message the page quotes for a bad limit.
    quoted = re.search(r"a message such as\s+`([^`]+)`", text)
    assert quoted is not None
    done = subprocess.run(
        [sys.executable, *argv, "--max-frame-bytes", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and quoted[1] in done.stderr and not db.exists(), done.stderr


# -- backends.md -------------------------------------------------------------------------------


async def test_backends_page(
    tmp_path: Path, make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reactive.errors import IncompatibleDatabaseError, PersistenceError
    from reactive.persistence import resolve_url

    app = make_app(app_of("server.md"))
    monkeypatch.chdir(tmp_path)
    # The SQLite example: a relative URL, the file and its directory created.
    _, namespace = run_python(block("backends.md", "python", "sqlite:///data/app.db"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await namespace["main"](app)
    assert re.fullmatch(r"[0-9a-z]{32}\n", out.getvalue())
    assert (tmp_path / "data" / "app.db").exists()
    assert (tmp_path / "data" / "app.db.lock").exists()
    url = f"sqlite:///{tmp_path / 'data' / 'app.db'}"
    # In memory: refused.
    with pytest.raises(PersistenceError, match="in-memory"):
        await reactive.open("sqlite:///:memory:")
    # One writer: another process, another name of the file, this process again.
    (tmp_path / "alias.db").symlink_to(tmp_path / "data" / "app.db")
    async with reactive.open(url, app=app):
        for name in (url, f"sqlite:///{tmp_path / 'alias.db'}"):
            done = cli("tables", "--db", name)
            assert done.returncode == 1
            assert "is open in another process" in done.stderr
            assert "one process at a time may open it" in done.stderr
        assert "(pid " in cli("tables", "--db", url).stderr
        with pytest.raises(IncompatibleDatabaseError, match="already open in this process"):
            await reactive.open(url)
    page = (DOCS / "backends.md").read_text().replace("\n", " ")
    assert "is open in another process; one process at a time may open it` (with the" in page
    # The environment fills what a postgresql:// URL leaves out.
    exports = block("backends.md", "sh", "REACTIVE_POSTGRES_HOST")
    for name, value in re.findall(r"(REACTIVE_POSTGRES_\w+)=(\S+)", exports):
        monkeypatch.setenv(name, value)
    assert "--db postgresql://\n" in exports
    assert resolve_url("postgresql://") == "postgresql://app:secret@db.internal/app"
    explicit = block("backends.md", "sh", "pip install 'reactive[postgres]'").split("--db ")[1]
    assert resolve_url(explicit.strip()) == explicit.strip()
    with pytest.raises(PersistenceError, match="unsupported database URL scheme"):
        await reactive.open("oracle://db/app")
    # Moving: export, then import elsewhere (another SQLite file standing for PostgreSQL).
    moved = f"sqlite:///{tmp_path / 'moved.db'}"
    for line in block("backends.md", "sh", "python -m reactive export").strip().splitlines():
        target = "sqlite:///app.db" if " export " in line else line.split()[4]
        argv = shell_argv(line, {target: moved if " import " in line else url})
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, (line, done.stderr)
    assert (
        cli("data", "messages", "--db", moved).stdout == cli("data", "messages", "--db", url).stdout
    )
    assert cli("check", "--db", moved).stdout.endswith(": ok\n")


# -- operating.md ------------------------------------------------------------------------------


def test_operating_page_offline_cli(tmp_path: Path, make_app: MakeApp) -> None:
    app = make_app(app_of("server.md"))
    db = f"sqlite:///{tmp_path / 'app.db'}"
    lines = block("operating.md", "sh", "python -m reactive run messages:send").strip()
    outputs = []
    for line in lines.splitlines():
        done = subprocess.run(
            shell_argv(line, {"app": str(app), "sqlite:///app.db": db}),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, (line, done.stderr)
        outputs.append(done.stdout.strip())
    new_id = json.loads(outputs[0])
    assert re.fullmatch(r"[0-9a-z]{32}", new_id)
    doc = json.loads(outputs[1])
    assert doc["_id"] == new_id and doc["body"] == "hi" and doc["channel"] == "general"
    page = (DOCS / "operating.md").read_text().replace("\n", " ")
    for printed in outputs[2:]:
        assert f"`{printed}`" in page, printed
    # Usage and failures: the exit statuses the page gives.
    assert cli("nope").returncode == 2
    assert cli("env", "get", "MISSING", "--db", db).returncode == 1
    assert cli("run", "messages:nope", "{}", "--app", str(app), "--db", db).returncode == 1
    # The import rules: refused into a table with documents; --replace-all asks first.
    zip_path = tmp_path / "backup.zip"
    assert cli("export", db, str(zip_path)).returncode == 0
    refused = cli("import", db, str(zip_path))
    assert refused.returncode == 1 and "already has documents" in refused.stderr
    asks = cli("import", db, str(zip_path), "--replace-all")
    assert asks.returncode == 1
    quoted = "error: this import deletes documents; pass --yes to go on"
    assert quoted in asks.stderr and f"`{quoted}`" in page
    assert cli("import", db, str(zip_path), "--replace-all", "--yes").returncode == 0


async def test_operating_page_logs_metrics_retention(
    db_url: str, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    files = app_of("operating.md")
    assert set(files) == {"orders.py"}
    app = make_app(files)
    page = (DOCS / "operating.md").read_text()
    async with reactive.open(db_url, app=app, slow_function_ms=0) as db:
        # The function log, as the page prints it.
        _, namespace = run_python(block("operating.md", "python", "async def show_runs"))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            await namespace["show_runs"](db)
        said = re.search(r"prints `(orders:place .*?)`", page.replace("\n", " "))
        # (The function's own print reaches stdout too, before.)
        assert said is not None and out.getvalue().splitlines() == [
            "placing 150 x apples",
            said[1],
        ]
        with pytest.raises(reactive.ConvexError):
            await db.mutation("orders:place", {"item": "air", "quantity": 0})
        failed = list(db.function_log)[-1]
        assert failed.error == "ConvexError" and failed.error_message.startswith(
            "Uncaught ConvexError: "
        )
        # The slow log's line has the page's shape.
        slow = [r.getMessage() for r in caplog.records if r.name == "reactive.slow"]
        shape = (
            r"slow \w+ [\w:/]+: [\d.]+ ms \(limit \d+ ms\)(, failed with \w+)?; "
            r"\d+ documents, \d+ bytes read; \d+ index ranges read"
        )
        assert slow and all(re.fullmatch(shape, line) for line in slow), slow
        sample = re.search(r"`(slow query .*?read)`", page.replace("\n", " "))
        assert sample is not None and re.fullmatch(shape, sample[1])
        # Retention: a read at an earlier snapshot.
        _, namespace = run_python(block("operating.md", "python", "async def history"))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            await namespace["history"](db)
        assert out.getvalue().splitlines()[-1] == "1 2"
        # Metrics: every name of the table but the server's WebSocket and sync gauges.
        metrics = db.metrics.render().decode()
        names = re.findall(r"^\| `(reactive_\w+)", page, re.M)
        assert len(names) == 13
        served_only = {
            "reactive_websocket_connections",
            "reactive_sync_transitions_direct",
            "reactive_sync_transitions_queued",
            # A cluster's server only (tests/persistence/test_cluster.py reads them).
            "reactive_cluster_leader",
            "reactive_cluster_forwarded",
            "reactive_cluster_lag_seconds",
        }
        for name in names:
            if name not in served_only:
                assert name in metrics, name
        for name in served_only:
            assert name in names and name not in metrics, name


def test_operating_page_against_a_server(
    tmp_path: Path, make_app: MakeApp, serve: Callable[..., Server]
) -> None:
    app = make_app(app_of("operating.md"))
    db = f"sqlite:///{tmp_path / 'served.db'}"
    server = serve(["--app", str(app), "--db", db, "--admin-key", ADMIN])
    page = (DOCS / "operating.md").read_text()
    # Health, readiness, metrics, version: no key needed.
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    ready = httpx.get(f"{server.url}/health/ready", timeout=10).json()
    assert ready["status"] == "ready" and {"read_ms", "write_ms"} <= set(ready)
    assert httpx.get(f"{server.url}/version", timeout=10).text == reactive.__version__
    for body in ({"item": "apples", "quantity": 150}, {"item": "air", "quantity": 0}):
        httpx.post(
            f"{server.url}/api/mutation", json={"path": "orders:place", "args": body}, timeout=10
        )
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    for name in re.findall(r"^\| `(reactive_\w+)", page, re.M):
        # A cluster's metrics: tests/persistence/test_cluster.py reads them on a cluster.
        assert name in metrics or name.startswith("reactive_cluster_"), name
    assert "reactive_cluster_" not in metrics  # not served by a lone process
    assert 'type="mutation"' in metrics
    # The page's lines against a running server (logs for 1 s instead of 5).
    env = {"REACTIVE_URL": server.url, "REACTIVE_ADMIN_KEY": ADMIN}
    lines = block("operating.md", "sh", "export REACTIVE_URL").strip().splitlines()
    assert lines[0].startswith("export REACTIVE_URL=http://127.0.0.1:3210 ")
    outputs = []
    for line in lines[1:]:
        argv = shell_argv(line.replace("--seconds 5", "--seconds 1"), {})
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={**os.environ, **env},
        )
        assert done.returncode == 0, (line, done.stderr)
        outputs.append(done.stdout)
    assert json.loads(outputs[0]) == 1
    assert outputs[1].startswith("exported the snapshot at timestamp ")
    assert (tmp_path / "backup.zip").exists()
    logged = outputs[2].splitlines()
    sample = block("operating.md", "text", "[M orders:place]").strip().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z "
    for want, got in zip(sample, logged, strict=True):
        pattern = stamp + re.escape(want[len("2026-01-05 09:12:03.120Z ") :]).replace(
            re.escape("..."), ".*"
        )
        assert re.fullmatch(pattern, got), (want, got)
    # Backups: the export from the running server, then with the server stopped, the
    # offline export, the import into an empty database and the check.
    restored = f"sqlite:///{tmp_path / 'restored.db'}"
    backup = block("operating.md", "sh", "# into an empty database").strip().splitlines()
    assert len(backup) == 4 and "--url" in backup[1]
    (tmp_path / "backup.zip").unlink()
    live = server.page(backup[1])
    done = subprocess.run(
        shell_argv(live, {}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "REACTIVE_ADMIN_KEY": ADMIN},
    )
    assert done.returncode == 0 and (tmp_path / "backup.zip").exists(), done.stderr
    assert server.stop() == 0
    for line in (backup[0], backup[2], backup[3]):
        line = line.replace("sqlite:///app.db", db).replace("sqlite:///restored.db", restored)
        done = subprocess.run(
            shell_argv(line, {}), capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert done.returncode == 0, (line, done.stderr)
    assert cli("check", "--db", restored).stdout.endswith(": ok\n")
    assert (
        cli("data", "orders", "--db", restored).stdout == cli("data", "orders", "--db", db).stdout
    )


def test_operating_page_limits_match_the_server() -> None:
    options = help_defaults("reactive.server")
    page = (DOCS / "operating.md").read_text()
    table = page[page.index("## Limits and time-outs") : page.index("## Backups")]
    sizes = {"16 MiB": "16777216", "20 MiB": "20971520", "1 GiB": "1073741824"}
    rows = re.findall(r"^\| `(--[a-z-]+)` \| ([^|]+) \|", table, re.M)
    assert len(rows) == 15
    for flag, default in rows:
        want = sizes.get(default.strip(), default.strip())
        assert options[flag] in (want, want + ".0"), (flag, options[flag])
    # Every command of the CLI is in the page's table, with its options.
    commands_table = page[page.index("| command |") : page.index("`--db`, `--url`")]
    commands = re.findall(r"^\| `(\w+)", commands_table, re.M)
    cli_help = subprocess.run(
        [sys.executable, "-m", "reactive", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    listed = re.search(r"\{([a-z,]+)\}", cli_help)
    assert listed is not None and set(listed[1].split(",")) == set(commands)
    for command in commands:
        help_text = cli("--help") if command == "env" else cli(command, "--help")
        for flag in re.findall(r"(--[a-z-]+)", help_text.stdout.split("options:")[-1]):
            if flag not in ("--help", "--format", "--storage-dir"):
                assert flag in page, (command, flag)


# -- guarantees.md, benchmarks.md, README ------------------------------------------------------


def test_test_docstrings_cite_the_guide() -> None:
    """A test's docstring that cites a section of README or of a guide page names a heading
    the page has; what README only summarizes (its "Guarantees" and "Benchmarks") is cited
    on its guide page."""
    import ast

    def headings(path: Path) -> set[str]:
        return set(re.findall(r"^#+ (.+?)\s*$", path.read_text(), re.M))

    pages = {"README": headings(ROOT / "README.md")}
    pages |= {f"docs/{page.name}": headings(page) for page in DOCS.glob("*.md")}
    summaries = {"Guarantees": "docs/guarantees.md", "Benchmarks": "docs/benchmarks.md"}
    cited = 0
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        doc = " ".join((ast.get_docstring(ast.parse(path.read_text())) or "").split())
        where = path.relative_to(ROOT)
        for summary, page in summaries.items():
            assert not re.search(rf"README.{{0,60}}\b{summary}\b", doc), (where, page)
        for page, section in re.findall(
            r'(README|docs/[\w-]+\.md)(?:\.md)?,? \(?"([^"]+)"', doc
        ) + re.findall(r"(README)(?:\.md)? \(([A-Z][^\"():]*)[):]", doc):
            cited += 1
            assert page in pages, (where, page)
            assert section in pages[page], (where, page, section)
    assert cited >= 8


def test_guarantees_page_names_real_tests_and_knobs() -> None:
    page = (DOCS / "guarantees.md").read_text()
    paths = set(re.findall(r"`((?:tests|rust|scripts|benches)/[\w./-]+)`", page))
    assert len(paths) >= 15
    for path in paths:
        assert (ROOT / path).exists(), path
    sources = "\n".join(
        (ROOT / p).read_text()
        for p in (
            "tests/isolation/conftest.py",
            "tests/isolation/listappend.py",
            "rust/core/tests/simulation.rs",
            "tests/db/test_model.py",
            "tests/server/test_soak.py",
            "Makefile",
        )
    )
    for knob in re.findall(r"`(?:make fuzz )?([A-Z_]{4,})=\w+", page):
        assert knob in sources, knob
    # The limits and time limits the page states are the database's.
    from reactive.db.database import open as open_db

    defaults = open_db.__kwdefaults__
    assert defaults["function_time_limit_s"] == 1.0 and defaults["action_time_limit_s"] == 600.0


def test_benchmarks_page_commands_and_groups() -> None:
    page = (DOCS / "benchmarks.md").read_text()
    text = (ROOT / "benches" / "run.py").read_text()
    groups = re.search(r"GROUPS: dict\[str, list\[str\]\] = \{(.*?)\n\}", text, re.S)
    assert groups is not None
    declared = dict(re.findall(r'"(\w+)": \[([^\]]*)\]', groups[1]))
    for name, members in declared.items():
        row = re.search(rf"^\| `{name}` \| ([^|]+) \|", page, re.M)
        assert row is not None, name
        assert re.findall(r"`(\w+)`", row[1]) == re.findall(r'"(\w+)"', members), name
    benches = re.findall(r'^    "(\w+)": bench_\w+,$', text, re.M)
    assert set(benches) == set(
        re.findall(r"`(\w+)`", page.split("benchmark names (")[1].split(")")[0])
    )
    for flag in ("--quick", "--only", "--skip-rust"):
        assert f'"{flag}"' in text and flag in page
    assert "bench:" in (ROOT / "Makefile").read_text() and "make bench" in page
    # The README's summary quotes the page's ratios.
    readme = (ROOT / "README.md").read_text()
    summary = readme[readme.index("## Benchmarks") :]
    for ratio in re.findall(r"\*\*([\d.]+x)\*\*", summary.split("\n## ")[0]):
        assert f"**{ratio}**" in page, ratio


def test_readme_links_the_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\((docs/[\w/-]+\.md)(?:#[\w-]+)?\)", readme):
        assert (ROOT / target).exists(), target
    for page in ("guarantees.md", "benchmarks.md", "auth.md", "server.md", "operating.md"):
        assert f"(docs/{page}" in readme, page

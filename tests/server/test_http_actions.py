"""HTTP actions (``http.py``, ``http_router``, ``@http_action``) against a real server."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from reactive import http_action, http_router
from reactive.http_router import HttpAction, HttpRouter

JWT_KEY = "http-actions-test-secret-key-of-some-length"
ADMIN_KEY = "http-actions-admin-key"
ORIGIN = "https://app.example.com"
BODY_LIMIT = 4 << 20  # --max-http-action-body-bytes for these tests

APP_FILES = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({"notes": define_table({"text": v.string()})})
    """,
    "notes.py": """
        from reactive import internal_mutation, mutation, query, v

        @mutation(args={"text": v.string()})
        async def add(ctx, text):
            return await ctx.db.insert("notes", {"text": text})

        @internal_mutation(args={"text": v.string()})
        async def add_later(ctx, text):
            await ctx.db.insert("notes", {"text": text})

        @query(args={})
        async def texts(ctx):
            return sorted(d["text"] for d in await ctx.db.query("notes").collect())
    """,
    "http.py": """
        import asyncio
        import hashlib

        from starlette.responses import JSONResponse, PlainTextResponse, Response
        from starlette.responses import StreamingResponse

        from reactive import http_action, http_router

        CORS = {"Access-Control-Allow-Origin": "https://app.example.com", "Vary": "Origin"}

        @http_action
        async def hello(ctx, request):
            return PlainTextResponse(f"hello {request.method} {request.url.path}")

        @http_action
        async def files(ctx, request):
            return JSONResponse({"route": "files", "path": request.url.path})

        @http_action
        async def deep(ctx, request):
            return JSONResponse({"route": "deep", "path": request.url.path})

        @http_action
        async def add(ctx, request):
            body = await request.json()
            note = await ctx.run_mutation("notes:add", {"text": body["text"]})
            await ctx.scheduler.run_after(0, "notes:add_later", {"text": body["text"] + "!"})
            texts = await ctx.run_query("notes:texts", {})
            print("added", body["text"])
            return JSONResponse({"id": note, "texts": texts}, status_code=201)

        @http_action
        async def upload(ctx, request):
            digest, size = hashlib.sha256(), 0
            async for chunk in request.stream():
                digest.update(chunk)
                size += len(chunk)
            return JSONResponse({"sha256": digest.hexdigest(), "bytes": size})

        @http_action
        async def upload_whole(ctx, request):
            body = await request.body()
            return JSONResponse({"bytes": len(body)})

        @http_action
        async def download(ctx, request):
            count = int(request.query_params.get("chunks", "5"))

            async def chunks():
                for i in range(count):
                    yield f"chunk {i}\\n".encode()
                    await asyncio.sleep(0.01)

            return StreamingResponse(chunks(), media_type="text/plain")

        @http_action
        async def preflight(ctx, request):
            headers = request.headers
            if headers.get("origin") and headers.get("access-control-request-method"):
                return Response(
                    headers={
                        **CORS,
                        "Access-Control-Allow-Methods": "POST",
                        "Access-Control-Allow-Headers": "Content-Type, Authorization",
                        "Access-Control-Max-Age": "86400",
                    }
                )
            return Response()

        @http_action
        async def cors_post(ctx, request):
            return JSONResponse({"ok": True}, headers=CORS)

        @http_action
        async def boom(ctx, request):
            print("about to fail")
            raise ValueError("kaboom")

        @http_action
        def not_response(ctx, request):
            return {"not": "a response"}

        @http_action
        async def whoami(ctx, request):
            return JSONResponse({"identity": await ctx.auth.get_user_identity()})

        http = http_router()
        http.route(path="/hello", method="GET", handler=hello)
        http.route(path="/hello", method="POST", handler=hello)
        http.route(path_prefix="/files/", method="GET", handler=files)
        http.route(path_prefix="/files/deep/", method="GET", handler=deep)
        http.route(path="/files/exact", method="GET", handler=hello)
        http.route(path="/add", method="POST", handler=add)
        http.route(path="/upload", method="POST", handler=upload)
        http.route(path="/upload_whole", method="POST", handler=upload_whole)
        http.route(path="/download", method="GET", handler=download)
        http.route(path="/cors", method="OPTIONS", handler=preflight)
        http.route(path="/cors", method="POST", handler=cors_post)
        http.route(path="/boom", method="GET", handler=boom)
        http.route(path="/not_response", method="GET", handler=not_response)
        http.route(path="/whoami", method="GET", handler=whoami)
    """,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """One server process with a site port."""

    def __init__(self, root: Path, tmp: Path, *extra: str) -> None:
        self.port, self.site_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.site = f"http://127.0.0.1:{self.site_port}"
        self.log_path = tmp / "server.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "reactive.server", "--app", str(root)),
                    *("--db", f"sqlite:///{tmp / 'db.sqlite3'}", "--port", str(self.port)),
                    *("--site-port", str(self.site_port), "--log-level", "warning"),
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


def write_app(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    (root / "__init__.py").write_text("")
    for rel, source in files.items():
        (root / rel).write_text(textwrap.dedent(source))
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the whole module: the tests stay fast."""
    tmp = tmp_path_factory.mktemp("http_actions")
    root = write_app(tmp / "http_actions_app", APP_FILES)
    server = Served(
        root,
        tmp,
        *("--jwt-key", JWT_KEY, "--admin-key", ADMIN_KEY),
        *("--max-http-action-body-bytes", str(BODY_LIMIT)),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(served: Served) -> Served:
    return served


@pytest.fixture
def http(server: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/http", timeout=30.0) as client:
        yield client


def json_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["code"], str) and isinstance(body["message"], str), body
    if code is not None:
        assert body["code"] == code, body
    return str(body["message"])


# -- routing -----------------------------------------------------------------------------------


def test_exact_and_prefix_routes(http: httpx.Client) -> None:
    r = http.get("/hello")
    assert r.status_code == 200 and r.text == "hello GET /http/hello"
    assert http.post("/hello").text == "hello POST /http/hello"
    assert http.get("/files/a/b.txt").json() == {"route": "files", "path": "/http/files/a/b.txt"}
    # The longest prefix wins; an exact route wins over every prefix.
    assert http.get("/files/deep/x").json()["route"] == "deep"
    assert http.get("/files/exact").text == "hello GET /http/files/exact"
    # HEAD is routed as GET (and has no body).
    head = http.head("/hello")
    assert head.status_code == 200 and head.content == b""


def test_unmatched_answers_404(http: httpx.Client) -> None:
    assert "No HttpAction routed for /nope" in json_error(http.get("/nope"), 404, "NotFound")
    # A path routed for another method only, and a method no route may name.
    json_error(http.delete("/hello"), 404, "NotFound")
    json_error(http.request("TRACE", "/hello"), 404, "NotFound")
    # No OPTIONS route: a preflight is not answered for the app (Convex answers 404 too).
    r = http.options("/hello", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    json_error(r, 404, "NotFound")
    assert "access-control-allow-origin" not in r.headers


def test_run_functions_and_schedule(server: Served, http: httpx.Client) -> None:
    r = http.post("/add", json={"text": "from a webhook"})
    assert r.status_code == 201, r.text
    assert "from a webhook" in r.json()["texts"]
    # The scheduled mutation runs soon after.
    deadline = time.monotonic() + 10
    while True:
        texts = httpx.post(
            f"{server.url}/api/query", json={"path": "notes:texts", "args": {}}
        ).json()["value"]
        if "from a webhook!" in texts:
            break
        assert time.monotonic() < deadline, texts
        time.sleep(0.05)
    # The run is in the function log (type HttpAction, its route as the identifier) with
    # what it printed, and in the metrics with type httpAction.
    logs = httpx.get(
        f"{server.url}/api/stream_function_logs",
        params={"cursor": 0, "timeout_s": 0},
        headers={"Authorization": f"Convex {ADMIN_KEY}"},
    ).json()["entries"]
    runs = [e for e in logs if e["identifier"] == "POST /add"]
    assert runs and runs[-1]["udfType"] == "HttpAction", logs
    assert any("added from a webhook" in m for ln in runs[-1]["logLines"] for m in ln["messages"])
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'reactive_function_duration_seconds_count{path="POST /add",type="httpAction"}' in (
        metrics
    )


def test_http_action_is_not_a_client_function(server: Served) -> None:
    for path in ("http:add", "http:hello", "http:http"):
        r = httpx.post(f"{server.url}/api/action", json={"path": path, "args": {}})
        assert r.status_code == 404, r.text


# -- bodies ------------------------------------------------------------------------------------


def test_streaming_upload(http: httpx.Client) -> None:
    data = os.urandom(3 << 20)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 256 << 10):
            yield data[i : i + (256 << 10)]

    r = http.post("/upload", content=chunks())  # chunked: no Content-Length
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    r = http.post("/upload", content=data)
    assert r.json()["bytes"] == len(data)


def test_streaming_response(server: Served) -> None:
    with (
        httpx.Client(timeout=30.0) as client,
        client.stream("GET", f"{server.url}/http/download", params={"chunks": 20}) as r,
    ):
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        parts = list(r.iter_bytes())
    assert b"".join(parts) == b"".join(f"chunk {i}\n".encode() for i in range(20))


def test_body_over_the_limit_answers_413(http: httpx.Client) -> None:
    big = b"x" * (BODY_LIMIT + 1)
    # Declared too large: refused before the handler runs.
    json_error(http.post("/upload", content=big), 413, "RequestTooLarge")

    # Streamed past the limit (no Content-Length): the handler's read fails, 413.
    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 512 << 10):
            yield big[i : i + (512 << 10)]

    json_error(http.post("/upload", content=chunks()), 413, "RequestTooLarge")
    json_error(http.post("/upload_whole", content=chunks()), 413, "RequestTooLarge")
    # At the limit is fine.
    assert http.post("/upload_whole", content=big[:-1]).json() == {"bytes": BODY_LIMIT}


# -- errors ------------------------------------------------------------------------------------


def test_handler_errors_answer_500(server: Served, http: httpx.Client) -> None:
    message = json_error(http.get("/boom"), 500, "ServerError")
    assert "Server Error" in message and "kaboom" not in message  # redacted without --dev
    message = json_error(http.get("/not_response"), 500, "ServerError")
    assert "dict, not a Response" in message
    # The server keeps serving; the failures are logged.
    assert http.get("/hello").status_code == 200
    deadline = time.monotonic() + 5
    while "kaboom" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def test_app_without_http_module(tmp_path: Path) -> None:
    root = write_app(tmp_path / "no_http_app", {"notes.py": APP_FILES["notes.py"]})
    server = Served(root, tmp_path)
    try:
        r = httpx.get(f"{server.url}/http/hello")
        assert "no http.py" in json_error(r, 404, "NotFound")
        assert "no http.py" in json_error(httpx.get(f"{server.site}/hello"), 404, "NotFound")
    finally:
        assert server.stop() == 0
    with socket.socket() as s:  # SIGTERM stopped both listeners
        assert s.connect_ex(("127.0.0.1", server.site_port)) != 0


# -- auth and CORS -----------------------------------------------------------------------------


def test_bearer_token_identity(http: httpx.Client) -> None:
    assert http.get("/whoami").json() == {"identity": None}
    token = jwt.encode(
        {"sub": "user-1", "iss": "https://issuer.example", "exp": int(time.time()) + 600},
        JWT_KEY,
        algorithm="HS256",
    )
    identity = http.get("/whoami", headers={"Authorization": f"Bearer {token}"}).json()["identity"]
    assert identity["subject"] == "user-1"
    assert identity["tokenIdentifier"] == "https://issuer.example|user-1"
    bad = http.get("/whoami", headers={"Authorization": "Bearer not-a-jwt"})
    json_error(bad, 401, "Unauthenticated")
    # Other schemes are the handler's business.
    basic = http.get("/whoami", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert basic.json() == {"identity": None}


def test_cors_preflight_by_the_app(http: httpx.Client) -> None:
    r = http.options(
        "/cors",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-methods"] == "POST"
    assert "Content-Type" in r.headers["access-control-allow-headers"]
    assert r.headers["access-control-max-age"] == "86400"
    # The actual request carries the app's header, not the API's (which mirror any origin).
    r = http.post("/cors", json={}, headers={"Origin": "https://evil.example"})
    assert r.json() == {"ok": True}
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in r.headers


# -- the site port -----------------------------------------------------------------------------


def test_site_port_serves_the_routes_at_its_root(server: Served) -> None:
    site = server.site
    r = httpx.get(f"{site}/hello")
    assert r.status_code == 200 and r.text == "hello GET /hello"
    assert httpx.get(f"{site}/files/deep/1").json() == {"route": "deep", "path": "/files/deep/1"}
    json_error(httpx.get(f"{site}/http/hello"), 404, "NotFound")
    json_error(httpx.get(f"{site}/api/query"), 404, "NotFound")
    r = httpx.post(f"{site}/add", json={"text": "via the site"})
    assert r.status_code == 201 and "via the site" in r.json()["texts"]
    json_error(httpx.post(f"{site}/upload", content=b"x" * (BODY_LIMIT + 1)), 413)


def test_site_port_in_use_fails_at_start(tmp_path: Path) -> None:
    root = write_app(tmp_path / "busy_app", APP_FILES)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "reactive.server", "--app", str(root)),
                *("--db", f"sqlite:///{tmp_path / 'db.sqlite3'}"),
                *("--port", str(free_port()), "--site-port", str(port)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode != 0
    assert "address already in use" in (proc.stdout + proc.stderr).lower()


# -- the router (embedded) ---------------------------------------------------------------------


def test_router_matching_and_errors() -> None:
    @http_action
    async def a(ctx: Any, request: Any) -> Any:
        return None

    @http_action
    async def b(ctx: Any, request: Any) -> Any:
        return None

    router = http_router()
    assert isinstance(router, HttpRouter) and isinstance(a, HttpAction)
    router.route(path="/x", method="GET", handler=a)
    router.route(path_prefix="/p/", method="GET", handler=a)
    router.route(path_prefix="/p/q/", method="GET", handler=b)
    router.route(path="/p/q/exact", method="GET", handler=a)
    assert router.lookup("/x", "GET") == (a, "GET", "/x")
    assert router.lookup("/x", "HEAD") == (a, "GET", "/x")
    assert router.lookup("/x", "POST") is None
    assert router.lookup("/x/", "GET") is None
    assert router.lookup("/p/anything", "GET") == (a, "GET", "/p/*")
    assert router.lookup("/p/q/r", "GET") == (b, "GET", "/p/q/*")
    assert router.lookup("/p/q/exact", "GET") == (a, "GET", "/p/q/exact")
    assert router.lookup("/p", "GET") is None
    assert [r[:2] for r in router.get_routes()] == [
        ("/p/q/exact", "GET"),
        ("/x", "GET"),
        ("/p/*", "GET"),
        ("/p/q/*", "GET"),
    ]
    with pytest.raises(ValueError, match="already in use"):
        router.route(path="/x", method="GET", handler=b)
    with pytest.raises(ValueError, match="already defined"):
        router.route(path_prefix="/p/", method="GET", handler=b)
    router.route(path="/x", method="POST", handler=b)  # another method is fine
    with pytest.raises(ValueError, match="does not start with a /"):
        router.route(path="x", method="GET", handler=a)
    with pytest.raises(ValueError, match="must end with a /"):
        router.route(path_prefix="/p", method="GET", handler=a)
    with pytest.raises(ValueError, match="not an allowed HTTP method"):
        router.route(path="/y", method="HEAD", handler=a)
    with pytest.raises(ValueError, match="not an allowed HTTP method"):
        router.route(path="/y", method="get", handler=a)
    with pytest.raises(ValueError, match="both"):
        router.route(path="/y", path_prefix="/y/", method="GET", handler=a)
    with pytest.raises(ValueError, match="either"):
        router.route(method="GET", handler=a)
    with pytest.raises(ValueError, match="reserved"):
        router.route(path="/.files/x", method="GET", handler=a)
    with pytest.raises(TypeError, match="@http_action"):
        router.route(path="/y", method="GET", handler=lambda ctx, req: None)  # type: ignore[arg-type]


def test_http_action_not_registered_as_function(
    make_app: Callable[[dict[str, str]], Path],
) -> None:
    from reactive.functions import load_app

    app = load_app(make_app(APP_FILES))
    assert not any(path.startswith("http:") for path in app.functions)
    assert isinstance(app.http, HttpRouter)
    assert app.http.lookup("/add", "POST") is not None

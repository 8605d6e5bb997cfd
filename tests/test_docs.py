"""The guide's examples run: the ``python`` blocks of a docs page that start with
``# app/<module>.py`` are written out as an app, opened embedded, and driven as the page
says they behave.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import reactive
import reactive.errors

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```python\n# app/(?P<module>[\w/]+\.py)\n(?P<source>.*?)```", re.S)


def app_of(page: str) -> dict[str, str]:
    """The modules a docs page defines (a module named twice is concatenated)."""
    files: dict[str, str] = {}
    for match in BLOCK.finditer((DOCS / page).read_text()):
        files[match["module"]] = files.get(match["module"], "") + match["source"]
    return files


async def wait_for(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_scheduling_page(db_url: str, make_app: Callable[[dict[str, str]], Path]) -> None:
    files = app_of("scheduling.md")
    assert set(files) == {"reminders.py", "crons.py", "sweep.py"}
    async with reactive.open(db_url, app=make_app(files)) as db:
        # Scheduled: sent a moment later.
        soon = await db.mutation("reminders:remind", {"text": "stretch", "in_s": 0.2})
        assert await db.query("reminders:status", {"id": soon}) == {
            "sent": False,
            "job": "pending",
        }

        async def sent() -> bool:
            return await db.query("reminders:status", {"id": soon}) == {
                "sent": True,
                "job": "success",
            }

        await wait_for(sent)
        # Canceled: never sent.
        later = await db.mutation("reminders:remind", {"text": "later", "in_s": 3600.0})
        await db.mutation("reminders:cancel", {"id": later})
        status = await db.query("reminders:status", {"id": later})
        assert status == {"sent": False, "job": "canceled"}
        # At a time: in the past means now.
        at = await db.mutation("reminders:remind_at", {"text": "past", "at_ms": 0.0})

        async def at_sent() -> bool:
            return bool((await db.query("reminders:status", {"id": at}))["sent"])

        await wait_for(at_sent)
        # The crons: six jobs; the interval one ran when registered (a sweep: it deleted
        # what had been sent by then, or runs again within five minutes).
        txn = db._engine.begin(True)
        jobs = txn.scan("_cron_jobs", "by_name", [], "asc", None, None, None, None, True)[0]
        assert sorted(j["name"] for j in jobs) == [
            "hourly",
            "monthly",
            "nightly",
            "sweep reminders",
            "weekday digest",
            "weekly",
        ]
        sweep = next(j for j in jobs if j["name"] == "sweep reminders")
        assert sweep["function"] == "sweep:sweep" and "lastRun" in sweep


async def test_getting_started_page(
    db_url: str, make_app: Callable[[dict[str, str]], Path]
) -> None:
    files = app_of("index.md")
    assert set(files) == {"messages.py"}
    async with reactive.open(db_url, app=make_app(files)) as db:
        await db.mutation("messages:send", {"channel": "general", "body": "hi"})
        messages = await db.query("messages:list", {"channel": "general"})
        assert [m["body"] for m in messages] == ["hi"]


def test_the_guide_builds_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict``: every page in the nav, no broken link or anchor."""
    import os
    import subprocess
    import sys

    root = DOCS.parent
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    nav = (root / "mkdocs.yml").read_text()
    assert all(page in nav for page in pages), "a docs page is missing from mkdocs.yml's nav"


async def test_data_model_page(db_url: str, make_app: Callable[[dict[str, str]], Path]) -> None:
    files = app_of("data-model.md")
    assert set(files) == {"schema.py", "people.py"}
    async with reactive.open(db_url, app=make_app(files)) as db:
        await db.mutation("people:add", {"name": "ada", "age": 36})
        await db.mutation("people:add", {"name": "bo", "age": 52})
        assert await db.query("people:at_least", {"min_age": 45}) == ["bo"]


async def test_queries_page(db_url: str, make_app: Callable[[dict[str, str]], Path]) -> None:
    files = app_of("queries.md")
    assert set(files) == {"schema.py", "tasks.py"}
    async with reactive.open(db_url, app=make_app(files)) as db:
        ids = []
        for title, priority in [("write", 1), ("test", 5), ("ship", 3)]:
            task = {"project": "site", "title": title, "priority": priority}
            ids.append(await db.mutation("tasks:add", task))
        await db.mutation("tasks:add", {"project": "other", "title": "x", "priority": 9})
        await db.mutation("tasks:finish", {"id": ids[0]})
        assert await db.query("tasks:open_tasks", {"project": "site"}) == ["test", "ship"]
        assert await db.query("tasks:urgent", {"project": "site", "at_least": 3}) == [
            "test",
            "ship",
        ]
        first = await db.query(
            "tasks:page", {"project": "site", "paginationOpts": {"numItems": 2, "cursor": None}}
        )
        assert [t["title"] for t in first["page"]] == ["write", "test"] and not first["isDone"]
        rest = await db.query(
            "tasks:page",
            {
                "project": "site",
                "paginationOpts": {"numItems": 2, "cursor": first["continueCursor"]},
            },
        )
        assert [t["title"] for t in rest["page"]] == ["ship"]
        # The page's subscription example, run as written.
        namespace: dict[str, Any] = {}
        source = re.search(
            r"```python\n(import asyncio\n.*?)```", (DOCS / "queries.md").read_text(), re.S
        )
        assert source is not None
        exec(source.group(1), namespace)
        await namespace["watch"](db)
        assert "logo" in await db.query("tasks:open_tasks", {"project": "site"})


async def test_functions_page(db_url: str, make_app: Callable[[dict[str, str]], Path]) -> None:
    from reactive.db.system import change_environment_variables

    files = app_of("functions.md")
    assert set(files) == {"accounts.py"}
    async with reactive.open(db_url, app=make_app(files)) as db:
        await db.mutation("accounts:open_account", {"name": "ada", "balance": 100})
        await db.mutation("accounts:open_account", {"name": "bo", "balance": 5})
        try:
            await db.mutation("accounts:open_account", {"name": "ada", "balance": 1})
            raise AssertionError("a taken name must fail")
        except reactive.ConvexError as exc:
            assert exc.data == {"code": "TAKEN", "name": "ada"}
        assert await db.mutation(
            "accounts:transfer", {"source": "ada", "target": "bo", "amount": 30}
        )
        assert not await db.mutation(
            "accounts:transfer", {"source": "bo", "target": "ada", "amount": 500}
        )
        assert await db.query("accounts:balance", {"name": "ada"}) == 70.0
        assert await db.query("accounts:balance", {"name": "bo"}) == 35.0
        ada = await db.query("accounts:find", {"name": "ada"}, internal=True)
        assert "note" not in ada  # removed with UNSET
        assert await db.action("accounts:report", {"name": "bo"}) == "bo: 35.0 EUR"
        await change_environment_variables(db, [("CURRENCY", "CHF")])
        assert await db.action("accounts:report", {"name": "bo"}) == "bo: 35.0 CHF"


async def test_search_page(db_url: str, make_app: Callable[[dict[str, str]], Path]) -> None:
    files = app_of("search.md")
    assert set(files) == {"schema.py", "messages.py"}
    async with reactive.open(db_url, app=make_app(files)) as db:
        for channel, body in [
            ("general", "hello world"),
            ("general", "help wanted"),
            ("random", "hello again, hello"),
        ]:
            await db.mutation("messages:send", {"channel": channel, "body": body})
        # BM25 ranks the message saying "hello" twice first; the last term is a prefix.
        assert await db.query("messages:search", {"text": "hello"}) == [
            "hello again, hello",
            "hello world",
        ]
        assert sorted(await db.query("messages:search", {"text": "hel"})) == [
            "hello again, hello",
            "hello world",
            "help wanted",
        ]
        assert await db.query("messages:search", {"text": "hello", "channel": "general"}) == [
            "hello world"
        ]
        assert await db.query("messages:search", {"text": "goodbye"}) == []
        # Reactive: a matching message re-runs the subscription, an unrelated one does not.
        sub = db.subscribe("messages:search", {"text": "hello", "channel": "general"})
        assert await sub.get(timeout_s=5) == ["hello world"]
        await db.mutation("messages:send", {"channel": "general", "body": "nothing here"})
        await db.mutation("messages:send", {"channel": "general", "body": "hello there"})
        assert sorted(await sub.get(timeout_s=5)) == ["hello there", "hello world"]
        assert sub.runs == 2
        sub.close()
        # Vectors.
        for channel, body, vec in [
            ("general", "east", [1.0, 0.0, 0.0]),
            ("general", "north", [0.0, 1.0, 0.0]),
            ("random", "north-east", [0.7, 0.7, 0.0]),
        ]:
            await db.mutation(
                "messages:send_embedded", {"channel": channel, "body": body, "embedding": vec}
            )
        near = {"embedding": [0.9, 0.1, 0.0], "channels": ["general", "random"]}
        assert await db.query("messages:similar", near) == ["east", "north-east"]
        near["channels"] = ["general"]
        assert await db.query("messages:similar", near) == ["east", "north"]
        ids = await db.action("messages:similar_ids", {"embedding": [0.0, 1.0, 0.1]})
        assert len(ids) == 1
        with pytest.raises(reactive.errors.ReactiveError, match="3 dimensions"):
            await db.mutation(
                "messages:send_embedded",
                {"channel": "general", "body": "bad", "embedding": [1.0, 2.0]},
            )

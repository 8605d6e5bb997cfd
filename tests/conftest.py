"""Shared fixtures: a fresh database directory and small apps written on the fly."""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_counter = itertools.count()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A SQLite URL in a fresh temporary directory."""
    return f"sqlite:///{tmp_path / 'db.sqlite3'}"


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[object]:
    """Write an app package from ``{"module.py": source}`` and return its directory.

    Each call gets a unique package name so apps never collide in ``sys.modules``.
    """
    created: list[str] = []

    def make(files: dict[str, str]) -> Path:
        name = f"app_{next(_counter)}_{tmp_path.name}".replace("-", "_")
        root = tmp_path / "apps" / name
        root.mkdir(parents=True)
        (root / "__init__.py").write_text("")
        for rel, source in files.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(source))
        created.append(name)
        return root

    yield make
    for name in created:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]


def _blocking(coro: Any) -> None:
    # Run admin SQL from sync fixtures even inside a running event loop: its own thread.
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def _fresh_pg(base: str) -> tuple[str, Callable[[], None]]:
    import asyncpg

    name = f"rt_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _blocking(run(f'CREATE DATABASE "{name}"'))
    head, _, _ = base.rpartition("/")
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    return f"{head}/{name}", lambda: _blocking(run(drop))


def _fresh_mysql(base: str) -> tuple[str, Callable[[], None]]:
    from urllib.parse import urlsplit

    import asyncmy

    name = f"rt_{uuid.uuid4().hex[:12]}"
    u = urlsplit(base)

    async def run(sql: str) -> None:
        conn = await asyncmy.connect(
            host=u.hostname, port=u.port or 3306, user=u.username, password=u.password or ""
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql)
        finally:
            conn.close()

    _blocking(run(f"CREATE DATABASE `{name}`"))
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}", lambda: _blocking(run(f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture
def backend_urls(tmp_path: Path) -> Any:
    """Fresh database URLs: ``urls("sqlite")``, ``urls("postgres")``, ``urls("mysql")``."""
    cleanups: list[Callable[[], None]] = []
    counter = iter(range(1000))

    def make(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / f'db{next(counter)}.sqlite3'}"
        env = {"postgres": "REACTIVE_TEST_POSTGRES_URL", "mysql": "REACTIVE_TEST_MYSQL_URL"}[kind]
        base = os.environ.get(env)
        if not base:
            pytest.skip(f"{env} is not set")
        url, cleanup = (_fresh_pg if kind == "postgres" else _fresh_mysql)(base)
        cleanups.append(cleanup)
        return url

    yield make
    for cleanup in cleanups:
        cleanup()

"""Shared fixtures: a fresh database directory and small apps written on the fly."""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

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

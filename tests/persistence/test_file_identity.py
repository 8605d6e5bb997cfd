"""The SQLite backend follows the database *file*, not the path that names it, and opens only
reactive databases.

* One writer per file: while one process has a database open, another process opening the
  same file through a hard link, a symlink or a relative path with ``..`` is refused with
  ``IncompatibleDatabaseError`` ("open in another process"), and the holder keeps
  committing; once the holder has closed, the second process opens it (and sees those
  commits).
* A file that is not a reactive database (another application's SQLite database, a text
  file, random bytes) is refused with ``IncompatibleDatabaseError`` naming the file and what
  was found, and left exactly as it was: same bytes (sha256), same mtime, no ``-wal``/
  ``-shm``/``.lock`` files beside it. A missing file and an empty (0-byte) file open as new
  databases.
* ``python -m reactive check`` still works on a normal database.

Every second opener is a separate process (``flock`` is per open file, so only another
process shows what another process sees). SQLite files are made with Python's ``sqlite3`` in
a subprocess too: never a second copy of SQLite in this process (see ``conftest.py``).

Source: rust/core/src/sqlite.rs (module doc: "One writer per database file", "Only reactive
databases are opened"); docs/guarantees.md ("One writer per database").
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import reactive
from reactive.errors import IncompatibleDatabaseError

MakeApp = Callable[[dict[str, str]], Path]

APP = """
from reactive import mutation, query


@mutation
async def put(ctx, n):
    return await ctx.db.insert("items", {"n": n})


@query
async def ns(ctx):
    return sorted(d["n"] for d in await ctx.db.query("items").collect())
"""

# Holds the database open; one command a line on stdin: `put N` (prints `ok`), `close`.
HOLDER = """
import asyncio
import sys

import reactive


async def main():
    db = await reactive.open(sys.argv[1], app=sys.argv[2])
    print("opened", flush=True)
    while True:
        line = (await asyncio.to_thread(sys.stdin.readline)).split()
        if not line or line[0] == "close":
            break
        await db.mutation("m:put", {"n": int(line[1])})
        print("ok", flush=True)
    await db.close()
    print("closed", flush=True)


asyncio.run(main())
"""

# Tries to open the database once: prints `opened` (exit 0) or the error (exit 3).
OPENER = """
import asyncio
import sys

import reactive


async def main():
    try:
        db = await reactive.open(sys.argv[1])
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
        return 3
    await db.close()
    print("opened")
    return 0


sys.exit(asyncio.run(main()))
"""

FOREIGN = """
import sqlite3
import sys

con = sqlite3.connect(sys.argv[1])
con.executescript('''
    CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
    INSERT INTO users (name) VALUES ('ada'), ('grace');
    CREATE TABLE globals (name TEXT PRIMARY KEY, value BLOB NOT NULL);
    INSERT INTO globals VALUES ('theme', 'dark'), ('max_ts', '17');
''')
con.commit()
con.close()
"""


class Holder:
    """A separate process that has the database open until :meth:`close`."""

    def __init__(self, url: str, app: Path, script: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), url, str(app)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._expect("opened")

    def _expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != word:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"holder said {line!r}, expected {word!r}: {err}")

    def put(self, n: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"put {n}\n")
        self.proc.stdin.flush()
        self._expect("ok")

    def close(self) -> None:
        if self.proc.poll() is not None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()
        self._expect("closed")
        self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    folder = tmp_path / "scripts"
    folder.mkdir()
    for name, source in (("holder.py", HOLDER), ("opener.py", OPENER)):
        (folder / name).write_text(textwrap.dedent(source))
    return folder


@pytest.fixture
def holder(tmp_path: Path, make_app: MakeApp, scripts: Path) -> Iterator[Callable[[str], Holder]]:
    started: list[Holder] = []

    def start(url: str) -> Holder:
        started.append(Holder(url, make_app({"m.py": APP}), scripts / "holder.py"))
        return started[-1]

    yield start
    for h in started:
        if h.proc.poll() is None:
            h.proc.kill()
            h.proc.communicate(timeout=30)


def try_open(scripts: Path, url: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Open ``url`` in a separate process (from ``cwd``) and close it again."""
    return subprocess.run(
        [sys.executable, str(scripts / "opener.py"), url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def assert_refused_elsewhere(result: subprocess.CompletedProcess[str], path: str) -> None:
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith(IncompatibleDatabaseError.__name__), result.stdout
    assert "open in another process" in result.stdout, result.stdout
    assert path in result.stdout, result.stdout


# -- one writer per file ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["same path", "hard link", "symlink", "relative with .."])
async def test_another_process_is_refused_under_any_name(
    tmp_path: Path, scripts: Path, holder: Callable[[str], Holder], make_app: MakeApp, name: str
) -> None:
    db = tmp_path / "db.sqlite3"
    sub = tmp_path / "sub"
    sub.mkdir()
    first = await asyncio.to_thread(holder, f"sqlite:///{db}")
    await asyncio.to_thread(first.put, 1)
    cwd = None
    if name == "same path":
        other = str(db)
    elif name == "hard link":
        os.link(db, tmp_path / "hard.sqlite3")
        other = str(tmp_path / "hard.sqlite3")
    elif name == "symlink":
        os.symlink(db, sub / "sym.sqlite3")
        other = str(sub / "sym.sqlite3")
    else:
        cwd, other = sub, "../sub/../db.sqlite3"
    for _ in range(2):
        result = await asyncio.to_thread(try_open, scripts, f"sqlite:///{other}", cwd)
        assert_refused_elsewhere(result, other)
    # The refused opener created nothing beside the name it used.
    if name in ("hard link", "symlink"):
        for suffix in ("-wal", "-shm", ".lock"):
            assert not os.path.lexists(other + suffix), suffix
    # The holder is unaffected: its commits are acknowledged and kept.
    await asyncio.to_thread(first.put, 2)
    await asyncio.to_thread(first.close)

    # Closed: the second process opens it under that name, and so does this one.
    result = await asyncio.to_thread(try_open, scripts, f"sqlite:///{other}", cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "opened"
    async with reactive.open(f"sqlite:///{db}", app=make_app({"m.py": APP})) as again:
        assert await again.query("m:ns") == [1, 2]


async def test_this_process_is_refused_under_any_name(tmp_path: Path, make_app: MakeApp) -> None:
    app = make_app({"m.py": APP})
    db = tmp_path / "db.sqlite3"
    os.symlink(db, tmp_path / "sym.sqlite3")
    async with reactive.open(f"sqlite:///{db}", app=app) as first:
        await first.mutation("m:put", {"n": 1})
        os.link(db, tmp_path / "hard.sqlite3")
        for other in (db, tmp_path / "hard.sqlite3", tmp_path / "sym.sqlite3"):
            with pytest.raises(IncompatibleDatabaseError) as info:
                await reactive.open(f"sqlite:///{other}")
            assert str(other) in str(info.value)
            assert "already open in this process" in str(info.value)
        # The refusals closed no descriptor of the file: commits go on.
        await first.mutation("m:put", {"n": 2})
        assert await first.query("m:ns") == [1, 2]
    async with reactive.open(f"sqlite:///{tmp_path / 'hard.sqlite3'}", app=app) as again:
        assert await again.query("m:ns") == [1, 2]


# -- only reactive databases ------------------------------------------------------------------


def fingerprint(path: Path) -> tuple[str, int, list[str]]:
    """The file's sha256 and mtime, and what else is in its directory."""
    return (
        hashlib.sha256(path.read_bytes()).hexdigest(),
        path.stat().st_mtime_ns,
        sorted(p.name for p in path.parent.iterdir() if p != path),
    )


async def assert_refused_unchanged(path: Path, *expected: str) -> str:
    before = fingerprint(path)
    for _ in range(2):
        with pytest.raises(IncompatibleDatabaseError) as info:
            await reactive.open(f"sqlite:///{path}")
        message = str(info.value)
        assert str(path) in message, message
        assert "is not a reactive database" in message, message
        for part in expected:
            assert part in message, message
        assert fingerprint(path) == before
    return message


async def test_a_foreign_sqlite_database_is_refused_unchanged(tmp_path: Path) -> None:
    folder = tmp_path / "foreign"
    folder.mkdir()
    path = folder / "app.db"
    made = subprocess.run(
        [sys.executable, "-c", FOREIGN, str(path)], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    assert fingerprint(path)[2] == []  # no -wal, -shm
    await assert_refused_unchanged(path, "users", "globals", "format version")
    assert fingerprint(path)[2] == []


@pytest.mark.parametrize("kind", ["text", "random bytes", "random bytes after a SQLite header"])
async def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    path = folder / "data.db"
    if kind == "text":
        path.write_text("name,email\nada,ada@example.com\n")
    elif kind == "random bytes":
        path.write_bytes(os.urandom(16384))
    else:
        path.write_bytes(b"SQLite format 3\0" + os.urandom(4096))
    await assert_refused_unchanged(path)
    assert fingerprint(path)[2] == []


@pytest.mark.parametrize("kind", ["missing", "empty"])
async def test_a_missing_or_empty_file_opens_as_a_new_database(
    tmp_path: Path, make_app: MakeApp, kind: str
) -> None:
    path = tmp_path / "new" / "db.sqlite3"
    if kind == "empty":
        path.parent.mkdir()
        path.write_bytes(b"")
    app = make_app({"m.py": APP})
    async with reactive.open(f"sqlite:///{path}", app=app) as db:
        await db.mutation("m:put", {"n": 1})
    async with reactive.open(f"sqlite:///{path}", app=app) as db:
        assert await db.query("m:ns") == [1]


async def test_check_works_on_a_normal_database(
    tmp_path: Path, make_app: MakeApp, db_url: str
) -> None:
    async with reactive.open(db_url, app=make_app({"m.py": APP})) as db:
        for n in range(3):
            await db.mutation("m:put", {"n": n})
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reactive", "check", "--db", db_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checked 3 documents" in result.stdout, result.stdout

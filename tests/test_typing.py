"""Typed calls, checked by ``mypy --strict`` and by ``pyright`` in strict mode.

Function objects carry their result type and their handler's parameters after ``ctx``:
``await db.query(notes.count)`` is an ``int``, ``db.query(notes.recent, channel="x")``
checks the keyword arguments, the dict form and string paths stay accepted, and
``reactive.client.Client`` types the same calls. The module ``python -m reactive codegen
--py`` writes types the calls of a program that does not import the app: ``await
client.query(api.notes.recent, {"channel": "x"})`` checks the argument dict against its
``TypedDict``. Each misuse sits in its own file and must be an error under both checkers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({
            "users": define_table({"name": v.string()}),
            "notes": define_table({
                "text": v.string(),
                "owner": v.id("users"),
                "done": v.optional(v.boolean()),
                "priority": v.union(v.literal("low"), v.literal("high")),
                "count": v.int64(),
            }),
        })
    """,
    "notes.py": """
        from reactive import action, internal_query, mutation, query, v


        @query(args={})
        async def count(ctx: object) -> int:
            return 3


        @query(args={"channel": v.string(), "limit": v.optional(v.int64())})
        async def recent(ctx: object, channel: str, limit: int = 10) -> list[str]:
            return [channel] * limit


        @mutation(args={"text": v.string()})
        async def add(ctx: object, text: str) -> str:
            return text


        @action
        def plain(ctx: object) -> list[float]:
            return [1.0]


        @mutation(
            args={
                "text": v.string(),
                "owner": v.id("users"),
                "priority": v.union(v.literal("low"), v.literal("high")),
                "count": v.int64(),
                "meta": v.object({"list": v.array(v.string()), "weight": v.float64()}),
            },
            returns=v.id("notes"),
        )
        async def create(ctx: object, **fields: object) -> str:
            return "id"


        @query(
            args={"id": v.id("notes")},
            returns=v.union(v.null(), v.object({"text": v.string()})),
        )
        async def get(ctx: object, id: str) -> object:
            return None


        @query
        async def annotated(ctx: object, n: int, label: str = "x") -> dict[str, int]:
            return {label: n}


        @internal_query(args={})
        async def secret(ctx: object) -> str:
            return "internal"
    """,
    "admin/users.py": """
        from reactive import mutation, v


        @mutation(args={"name": v.string()})
        async def rename(ctx: object, name: str) -> None:
            return None
    """,
}

PRELUDE = """
import reactive
from reactive.client import Client

from api import NotesId, UsersId, api
from typedapp import notes
from typedapp.admin import users

__all__ = ["api", "notes", "users"]  # used or not, in every file


def want(value: str) -> None: ...


async def main(db: reactive.Database, client: Client, owner: UsersId, note: NotesId) -> None:
"""

# (call, revealed type): each revealed under both checkers (normalized: no module prefixes).
GOOD = [
    ("await db.query(notes.count, {})", "int"),
    ("await db.query(notes.count)", "int"),
    ("await db.query(notes.count).at(5)", "int"),
    ('await db.query(notes.recent, channel="x")', "list[str]"),
    ('await db.query(notes.recent, channel="x", limit=2).at(5)', "list[str]"),
    ('await db.query(notes.recent, {"channel": "x"})', "list[str]"),
    ('await db.query(notes.recent, {"channel": "x"}, internal=True)', "list[str]"),
    ('await db.mutation(notes.add, text="x")', "str"),
    ('await db.mutation(notes.add, {"text": "x"})', "str"),
    ("await db.action(notes.plain)", "list[float]"),
    ('await db.mutation(users.rename, name="x")', "None"),
    ('await db.mutation(notes.create, {"text": "x"})', "str"),
    ('await db.query("notes:count")', "Any"),
    ('await db.query("notes:recent", channel="x")', "Any"),
    ('await client.query(notes.recent, channel="x", limit=2)', "list[str]"),
    ('await client.mutation(notes.add, {"text": "x"})', "str"),
    ('await client.query("notes:count")', "Any"),
    ("await client.query(api.notes.count)", "int"),
    ('await client.query(api.notes.recent, {"channel": "x", "limit": 2})', "list[str]"),
    ('await db.query(api.notes.recent, {"channel": "x"})', "list[str]"),
    ("await client.query(api.notes.annotated, {'n': 1})", "dict[str, int]"),
    ('await client.mutation(api.admin.users.rename, {"name": "x"})', "None"),
    (
        'await client.mutation(api.notes.create, {"text": "x", "owner": owner, '
        '"priority": "low", "count": 2, "meta": {"list": ["a"], "weight": 1}})',
        "NotesId",
    ),
    ("(await client.query(api.notes.get, {'id': note}) or {'text': ''})['text']", "str"),
    ("client.subscribe(notes.recent, channel='x')", "ClientSubscription[list[str]]"),
]

# Each misuse in its own file: both checkers must report an error there.
BAD = {
    "wrong_keyword": 'await db.query(notes.recent, chanel="x")',
    "wrong_keyword_type": "await db.query(notes.recent, channel=1)",
    "missing_argument": "await db.mutation(notes.add)",
    "wrong_result": "want(await db.query(notes.count))",
    "wrong_result_dict_form": 'want(await db.query(notes.recent, {"channel": "x"}))',
    "client_wrong_keyword": 'await client.mutation(notes.add, txt="x")',
    "client_wrong_result": "want(await client.action(notes.plain))",
    "stub_wrong_key": 'await client.query(api.notes.recent, {"chanel": "x"})',
    "stub_wrong_type": 'await client.query(api.notes.recent, {"channel": "x", "limit": "2"})',
    "stub_wrong_literal": (
        'await client.mutation(api.notes.create, {"text": "x", "owner": owner, '
        '"priority": "urgent", "count": 2, "meta": {"list": [], "weight": 1.0}})'
    ),
    "stub_str_for_id": 'await client.query(api.notes.get, {"id": "abc"})',
    "stub_missing_args": "await client.query(api.notes.recent)",
    "stub_wrong_kind": 'await client.mutation(api.notes.recent, {"channel": "x"})',
    "stub_wrong_result": "want(await client.query(api.notes.count))",
    "stub_unknown_function": "await client.query(api.notes.nope, {})",
    "stub_internal_function": "await client.query(api.notes.secret, {})",
}

MISUSE_LINE = PRELUDE.count("\n") + 1

PYRIGHT_CONFIG = {"typeCheckingMode": "strict", "pythonVersion": "3.11"}


def normalize(revealed: str) -> str:
    """A revealed type without module prefixes (``builtins.list[builtins.str]``)."""
    return re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])", "", revealed)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The app, its generated ``api.py`` and the files that use them."""
    root = tmp_path_factory.mktemp("typing")
    app = root / "typedapp"
    for rel, source in {"__init__.py": "", "admin/__init__.py": "", **APP}.items():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_text(textwrap.dedent(source))
    proc = subprocess.run(
        [sys.executable, "-m", "reactive", "codegen", "--app", str(app), "--py", "api.py"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    body = "".join(f"    reveal_type({call})\n" for call, _ in GOOD)
    (root / "good.py").write_text(PRELUDE + body)
    for name, line in BAD.items():
        (root / f"bad_{name}.py").write_text(PRELUDE + f"    {line}\n")
    (root / "pyrightconfig.json").write_text(json.dumps(PYRIGHT_CONFIG))
    yield root


def files(root: Path) -> list[str]:
    return ["good.py", *(f"bad_{name}.py" for name in BAD)]


def test_mypy_strict(project: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *files(project)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    revealed = [
        normalize(line.split("Revealed type is ")[1].strip('"'))
        for line in out.splitlines()
        if line.startswith("good.py") and "Revealed type is" in line
    ]
    assert revealed == [t for _, t in GOOD], out
    errors = [line for line in out.splitlines() if ": error:" in line]
    # Errors only at the misuse, the last line of its file, and one at each.
    assert all(line.startswith("bad_") and f".py:{MISUSE_LINE}:" in line for line in errors), out
    failing = {line.split(".py:")[0].removeprefix("bad_") for line in errors}
    assert failing == set(BAD), out


def test_pyright_strict(project: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH: pyright runs on Node.js")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyright",
            "--outputjson",
            "--pythonpath",
            sys.executable,
            *files(project),
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        # Node from PATH, and no check for a newer pyright on PyPI.
        env={**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"},
    )
    report = json.loads(proc.stdout)
    diagnostics = report["generalDiagnostics"]
    revealed = [
        normalize(re.sub(r'^Type of ".*" is "(.*)"$', r"\1", d["message"], flags=re.S))
        for d in diagnostics
        if d["file"].endswith("good.py") and d["severity"] == "information"
    ]
    assert revealed == [t for _, t in GOOD], proc.stdout
    errors = [d for d in diagnostics if d["severity"] in ("error", "warning")]
    assert all(
        Path(d["file"]).name.startswith("bad_") and d["range"]["start"]["line"] + 1 == MISUSE_LINE
        for d in errors
    ), proc.stdout
    failing = {Path(d["file"]).stem.removeprefix("bad_") for d in errors}
    assert failing == set(BAD), proc.stdout

"""Function objects carry their result types for mypy: ``await db.query(notes.count)`` is
an ``int``, a decorated handler's result type flows through ``db.mutation`` and
``db.action``, and misusing a result is a type error (``mypy --strict`` run on a small app).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

APP = """
    from reactive import action, mutation, query, v


    @query(args={})
    async def count(ctx: object) -> int:
        return 3


    @mutation(args={"text": v.string()})
    async def add(ctx: object, text: str) -> str:
        return text


    @action
    def plain(ctx: object) -> list[float]:
        return [1.0]
"""

USE = """
    import reactive

    from typedapp import notes


    async def main() -> None:
        async with reactive.open("sqlite:///x.db", app="typedapp") as db:
            reveal_type(await db.query(notes.count, {}))
            reveal_type(await db.query(notes.count).at(5))
            reveal_type(await db.mutation(notes.add, {"text": "x"}))
            reveal_type(await db.action(notes.plain))
            reveal_type(await db.query("notes:count"))
            wrong: str = await db.query(notes.count)
"""


def test_results_are_typed(tmp_path: Path) -> None:
    app = tmp_path / "typedapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "notes.py").write_text(textwrap.dedent(APP))
    (tmp_path / "use.py").write_text(textwrap.dedent(USE))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "use.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    revealed = [
        line.split("Revealed type is ")[1].replace("builtins.", "")
        for line in out.splitlines()
        if "Revealed" in line
    ]
    assert revealed == ['"int"', '"int"', '"str"', '"list[float]"', '"Any"'], out
    errors = [line for line in out.splitlines() if ": error:" in line]
    # `wrong: str = await db.query(notes.count)` (line 14): an int is not a str.
    assert len(errors) == 1 and errors[0].startswith("use.py:14: error"), out

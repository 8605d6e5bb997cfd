"""Calling functions embedded with keyword arguments, the argument dict, positional
arguments bound to the handler's parameters, and generated references
(``python -m reactive codegen --py``): every form reaches the same function with the same
arguments, and the ambiguous ones are refused with a ``TypeError``.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import pytest

import reactive
from reactive.codegen import write_python
from reactive.errors import ArgumentValidationError, FunctionNotFoundError
from reactive.functions import (
    MutationReference,
    QueryReference,
    call_arguments,
    function_path,
    load_app,
)

MakeApp = Callable[[dict[str, str]], Path]

APP = {
    "notes.py": """
        from reactive import action, internal_query, mutation, query, v


        @mutation(args={"text": v.string(), "stars": v.optional(v.int64())})
        async def add(ctx, text: str, stars: int = 0) -> str:
            return await ctx.db.insert("notes", {"text": text, "stars": stars})


        @query(args={"prefix": v.string(), "limit": v.optional(v.int64())})
        async def find(ctx, prefix: str, limit: int = 10) -> list[str]:
            notes = await ctx.db.query("notes").collect()
            return [n["text"] for n in notes if n["text"].startswith(prefix)][:limit]


        @query(args={})
        async def count(ctx) -> int:
            return len(await ctx.db.query("notes").collect())


        @action(args={"text": v.string()})
        async def shout(ctx, text: str) -> str:
            return text.upper()


        @internal_query(args={"label": v.string()})
        async def secret(ctx, label: str) -> str:
            return f"secret {label}"


        @query
        async def echo(ctx, **args):
            return args
    """,
}


@dataclasses.dataclass
class NewNote:
    text: str
    stars: int = 0


async def test_query_mutation_action_with_keyword_arguments(db_url: str, make_app: MakeApp) -> None:
    root = make_app(APP)
    async with reactive.open(db_url, app=root) as db:
        notes = importlib.import_module(f"{root.name}.notes")
        await db.mutation(notes.add, text="apple", stars=2)
        await db.mutation(notes.add, {"text": "apricot"})
        await db.mutation(notes.add, "banana")  # positional: bound to `text`
        await db.mutation(notes.add, "avocado", stars=1)
        await db.mutation(notes.add, NewNote("cherry", 3))  # an argument object
        await db.mutation(notes.add, MappingProxyType({"text": "date"}))  # any mapping
        assert await db.query(notes.find, prefix="a") == ["apple", "apricot", "avocado"]
        assert await db.query(notes.find, "a", limit=1) == ["apple"]
        assert await db.query(notes.find, {"prefix": "a", "limit": 2}) == ["apple", "apricot"]
        assert await db.query("notes:find", prefix="b") == ["banana"]
        assert await db.query(notes.count) == 6
        assert await db.action(notes.shout, text="hi") == "HI"
        assert await db.action("notes:shout", {"text": "yo"}) == "YO"
        # Keyword arguments and a point-in-time read.
        before = db.timestamp
        await db.mutation(notes.add, text="almond")
        assert await db.query(notes.find, prefix="al").at(before) == []
        assert await db.query(notes.find, prefix="al") == ["almond"]
        # `internal=` is the call's flag in every form.
        assert await db.query(notes.secret, label="x", internal=True) == "secret x"
        assert await db.query(notes.secret, {"label": "y"}, internal=True) == "secret y"
        with pytest.raises(FunctionNotFoundError, match="internal"):
            await db.query(notes.secret, label="x")
        # A handler taking **args gets exactly the keywords.
        assert await db.query(notes.echo, a=1, b="two") == {"a": 1, "b": "two"}
        assert await db.query(notes.echo) == {}
        # Keyword arguments are validated like the dict.
        with pytest.raises(ArgumentValidationError, match="stars"):
            await db.mutation(notes.add, text="x", stars="many")


async def test_a_dict_and_keywords_together_are_a_type_error(
    db_url: str, make_app: MakeApp
) -> None:
    root = make_app(APP)
    async with reactive.open(db_url, app=root) as db:
        notes = importlib.import_module(f"{root.name}.notes")
        with pytest.raises(TypeError, match="either as one dict or as keyword arguments"):
            db.query(notes.find, {"prefix": "a"}, limit=1)
        with pytest.raises(TypeError, match="either as one dict or as keyword arguments"):
            await db.mutation("notes:add", {"text": "a"}, stars=1)
        with pytest.raises(TypeError, match="takes 1 positional argument"):
            await db.action(notes.shout, "a", "b")
        with pytest.raises(TypeError, match="'text' twice"):
            await db.mutation(notes.add, "a", text="b")
        # One value that is not an object, by path: refused as a bad argument, as always.
        with pytest.raises(ArgumentValidationError):
            await db.query("notes:find", "a")
        with pytest.raises(TypeError, match="takes one argument dict"):
            db.query(QueryReference("notes:find"), "a", "b")
        assert await db.query(notes.count) == 0  # nothing ran


async def test_generated_references_call_query_mutation_action_embedded(
    db_url: str, make_app: MakeApp, tmp_path: Path
) -> None:
    root = make_app(APP)
    stub = write_python(load_app(root), tmp_path / "stubs" / f"{root.name}_api.py")
    sys.path.insert(0, str(stub.parent))
    try:
        api = importlib.import_module(stub.stem).api
    finally:
        sys.path.remove(str(stub.parent))
    assert isinstance(api.notes.find, QueryReference)
    assert isinstance(api.notes.add, MutationReference)
    assert not hasattr(api.notes, "secret")  # internal functions are left out
    async with reactive.open(db_url, app=root) as db:
        note_id = await db.mutation(api.notes.add, {"text": "fig", "stars": 1})
        assert isinstance(note_id, str)
        assert await db.query(api.notes.find, {"prefix": "f"}) == ["fig"]
        assert await db.query(api.notes.count) == 1
        assert await db.action(api.notes.shout, {"text": "fig"}) == "FIG"
        assert await db.query(api.notes.echo, {"x": 1}) == {"x": 1}
        async for texts in db.subscribe(api.notes.find, {"prefix": "f"}):
            assert texts == ["fig"]
            break
        with pytest.raises(FunctionNotFoundError, match="is a query"):
            await db.mutation(QueryReference("notes:find"), {"prefix": "f"})  # the wrong kind


def test_paths_and_argument_objects_of_calls(make_app: MakeApp) -> None:
    root = make_app(APP)
    if str(root.parent) not in sys.path:
        sys.path.insert(0, str(root.parent))  # as load_app does, and a client program would
    notes = importlib.import_module(f"{root.name}.notes")
    # Not loaded with an app: the path comes from the module under the app's package.
    assert notes.find.path is None
    assert function_path(notes.find) == "notes:find"
    assert function_path(QueryReference("notes.js:find")) == "notes:find"
    assert function_path("anything:goes") == "anything:goes"
    load_app(root)
    assert function_path(notes.find) == "notes:find"
    assert call_arguments(notes.find, (), {}) is None
    assert call_arguments(notes.find, (None,), {}) is None
    assert call_arguments(notes.find, (), {"prefix": "a"}) == {"prefix": "a"}
    assert call_arguments(notes.find, ("a", 3), {}) == {"prefix": "a", "limit": 3}
    note = NewNote("x")
    assert call_arguments(notes.add, (note,), {}) is note
    with pytest.raises(FunctionNotFoundError):
        QueryReference("not a path")
    assert QueryReference("notes:find") == QueryReference("notes.js:find")
    assert QueryReference("notes:find") != MutationReference("notes:find")

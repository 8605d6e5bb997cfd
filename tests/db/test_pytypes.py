"""Validators from Python types: dataclasses, TypedDicts and pydantic models as tables,
``args=`` and ``returns=``; instances stored as their fields; model results for embedded
callers; pydantic's own constraints and field names in errors; unmappable types refused
when the app loads, naming the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import pytest

import reactive
from reactive import v
from reactive.errors import ArgumentValidationError, SchemaError, SchemaValidationError
from reactive.pytypes import to_value, validator_from_type

MakeApp = Callable[[dict[str, str]], Path]

APP = {
    "models.py": """
        import dataclasses
        from typing import Annotated, Literal, Optional, TypedDict

        from pydantic import BaseModel, Field

        from reactive import v


        class Meta(TypedDict):
            source: str
            weight: float


        @dataclasses.dataclass
        class Note:
            text: str
            owner: Annotated[str, v.id("users")]
            priority: Literal["low", "high"]
            meta: Meta
            tags: list[str] = dataclasses.field(default_factory=list)
            done: Optional[bool] = None


        class NewNote(BaseModel):
            text: str = Field(min_length=1, max_length=20)
            owner: Annotated[str, v.id("users")]
            priority: Literal["low", "high"] = "low"
            stars: int = Field(default=0, ge=0, le=5)


        class Summary(BaseModel):
            count: int
            texts: list[str]
    """,
    "schema.py": """
        from reactive import define_schema, define_table, v

        from .models import Note

        schema = define_schema({
            "users": define_table({"name": v.string()}),
            "notes": define_table(Note).index("by_owner", ["owner"]),
        })
    """,
    "notes.py": """
        from reactive import mutation, query, v

        from .models import Meta, NewNote, Note, Summary


        @mutation(args={"name": str})
        async def user(ctx, name):
            return await ctx.db.insert("users", {"name": name})


        @mutation(args=NewNote, returns=v.id("notes"))
        async def add(ctx, text, owner, priority="low", stars=0):
            meta = Meta(source="app", weight=float(stars))
            return await ctx.db.insert(
                "notes", Note(text=text, owner=owner, priority=priority, meta=meta)
            )


        @mutation(args={"id": v.id("notes"), "done": bool})
        async def finish(ctx, id, done):
            await ctx.db.patch(id, {"done": done})


        @query(args={"id": v.id("notes")}, returns=Note)
        async def get(ctx, id):
            doc = await ctx.db.get(id)
            return {k: x for k, x in doc.items() if not k.startswith("_")}


        @query(args={}, returns=Summary)
        async def summary(ctx):
            notes = await ctx.db.query("notes").collect()
            return Summary(count=len(notes), texts=[n["text"] for n in notes])
    """,
}


async def test_types_as_tables_args_and_returns(db_url: str, make_app: MakeApp) -> None:
    root = make_app(APP)
    async with reactive.open(db_url, app=root) as db:
        models = __import__(f"{root.name}.models", fromlist=["Note"])
        owner = await db.mutation("notes:user", {"name": "ada"})
        note_id = await db.mutation("notes:add", {"text": "buy milk", "owner": owner})
        await db.mutation("notes:finish", {"id": note_id, "done": True})
        note = await db.query("notes:get", {"id": note_id})
        assert isinstance(note, models.Note)  # returns= a dataclass: an embedded caller gets one
        assert note.text == "buy milk" and note.done is True and note.tags == []
        assert note.meta == {"source": "app", "weight": 0.0}
        summary = await db.query("notes:summary", {})
        assert isinstance(summary, models.Summary)
        assert summary.count == 1 and summary.texts == ["buy milk"]
        # Arguments may be the model itself.
        again = await db.mutation("notes:add", models.NewNote(text="call", owner=owner, stars=2))
        assert (await db.query("notes:get", {"id": again})).meta["weight"] == 2.0
        # The table's validator came from the dataclass: a wrong field is refused.
        with pytest.raises(ArgumentValidationError, match="priority"):
            await db.mutation("notes:add", {"text": "x", "owner": owner, "priority": "urgent"})


async def test_pydantic_constraints_name_the_field(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        owner = await db.mutation("notes:user", {"name": "ada"})
        with pytest.raises(ArgumentValidationError, match=r"stars: Input should be less"):
            await db.mutation("notes:add", {"text": "x", "owner": owner, "stars": 9})
        with pytest.raises(ArgumentValidationError, match=r"text: String should have at least"):
            await db.mutation("notes:add", {"text": "", "owner": owner})
        with pytest.raises(ArgumentValidationError, match="owner"):
            await db.mutation("notes:add", {"text": "x", "owner": "not-an-id"})
        assert await db.query("notes:summary", {}) is not None


async def test_a_stored_document_is_checked_against_the_dataclass(
    db_url: str, make_app: MakeApp
) -> None:
    app = {
        **APP,
        "bad.py": """
            from reactive import mutation, v


            @mutation(args={"owner": v.id("users")})
            async def insert_wrong(ctx, owner):
                await ctx.db.insert("notes", {"text": 5, "owner": owner, "priority": "low",
                                              "meta": {"source": "x", "weight": 1.0}})
        """,
    }
    async with reactive.open(db_url, app=make_app(app)) as db:
        owner = await db.mutation("notes:user", {"name": "ada"})
        with pytest.raises(SchemaValidationError, match="text"):
            await db.mutation("bad:insert_wrong", {"owner": owner})


def test_type_mapping() -> None:
    class Row(TypedDict, total=False):
        a: int
        b: Annotated[bytes, "doc"]

    @dataclasses.dataclass
    class Point:
        x: float
        y: float = 0.0

    cases: list[tuple[Any, dict[str, Any]]] = [
        (str, {"type": "string"}),
        (int | None, {"type": "union", "value": [{"type": "bigint"}, {"type": "null"}]}),
        (list[float], {"type": "array", "value": {"type": "number"}}),
        (dict[str, bool], v.record(v.string(), v.boolean()).to_json()),
        (Literal["a"], {"type": "literal", "value": "a"}),
        (Any, {"type": "any"}),
        (tuple[str, ...], {"type": "array", "value": {"type": "string"}}),
    ]
    for tp, expected in cases:
        assert validator_from_type(tp, "t").to_json() == expected, tp
    row = validator_from_type(Row, "t").to_json()["value"]
    assert row["a"]["optional"] and row["b"]["fieldType"] == {"type": "bytes"}
    point = validator_from_type(Point, "t").to_json()["value"]
    assert not point["x"]["optional"] and point["y"]["optional"]
    assert to_value([Point(1.0), {"p": Point(2.0, 3.0)}]) == [
        {"x": 1.0, "y": 0.0},
        {"p": {"x": 2.0, "y": 3.0}},
    ]


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("import datetime\n\nclass M:\n    pass\n\nT = datetime.datetime", "datetime"),
        ("class M:\n    pass\n\nT = set[str]", "no Convex value type"),
        ("class M:\n    pass\n\nT = dict[int, str]", "keys are strings"),
        ("class M:\n    pass\n\nT = tuple[int, str]", "fixed tuple"),
    ],
)
def test_unmappable_types_are_refused_at_load(make_app: MakeApp, source: str, words: str) -> None:
    app = {
        "m.py": source
        + "\n\nimport dataclasses\nfrom reactive import query\n\n\n"
        + "@dataclasses.dataclass\nclass Bad:\n    when: T\n\n\n"
        + "@query(args=Bad)\nasync def f(ctx, when):\n    return None\n",
    }
    with pytest.raises(SchemaError, match=words) as info:
        reactive.functions.load_app(make_app(app))
    assert "when" in str(info.value)  # the field is named

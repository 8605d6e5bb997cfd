"""The number policy, row by row, as the official clients receive it: the npm ``convex``
client (``ConvexClient`` over WebSocket, ``ConvexHttpClient``) and the PyPI ``convex``
client, against a real ``python -m reactive.server``.

The rows (the guide's "Numbers" table): an ``int`` a function computes reaches clients as a
float64 number (JS ``number``, Python ``float``) unless an int64 validator declares it; an
int64 the database stored, a client sent or a ``v.int64()`` validator checked stays an
int64 (JS ``bigint``); a ``v.float64()`` field stores an ``int`` as a float; an ``int``
beyond 2**53, not exact as a number, stays an int64.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_official_js_client import js_project, run_script  # noqa: F401 - the fixture
from test_official_python_client import run_client

if TYPE_CHECKING:
    from conftest import ServerProcess

NUMBERS_APP = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema(
            {"counters": define_table({"n": v.int64(), "f": v.float64()})},
            strict_table_name_types=False,
        )
    """,
    "numbers.py": """
        from reactive import ConvexError, action, mutation, query, v


        @mutation(args={})
        async def seed(ctx):
            if await ctx.db.query("counters").first() is None:
                await ctx.db.insert("counters", {"n": 7, "f": 3})
                await ctx.db.insert("loose", {"k": 5})


        @query(args={})
        async def table(ctx):
            counter = await ctx.db.query("counters").first()
            loose = await ctx.db.query("loose").first()
            return {
                "computed": len([1, 2]),
                "stored_int64": counter["n"],
                "stored_float": counter["f"],
                "stored_undeclared": loose["k"],
                "computed_from_stored": counter["n"] + 1,
                "huge": 2**60,
                "nested": [{"x": 1}],
                "float": 2.5,
                "flag": True,
            }


        @query(args={}, returns=v.object({"n": v.int64(), "f": v.float64(), "a": v.any()}))
        async def declared(ctx):
            return {"n": 2, "f": 3, "a": 4}


        @query(args={"n": v.int64(), "f": v.float64()})
        async def echo(ctx, n, f):
            return {"arg": n, "plus": n + 1, "float_arg": f}


        @mutation(args={})
        async def count(ctx):
            return len(await ctx.db.query("counters").collect())


        @action(args={})
        async def act(ctx):
            return {"n": 4}


        @mutation(args={})
        async def fail(ctx):
            raise ConvexError({"code": 5})
    """,
}


@pytest.fixture
def numbers_server(
    start_server: Callable[..., ServerProcess], make_app: Callable[[dict[str, str]], Path]
) -> ServerProcess:
    return start_server(make_app(NUMBERS_APP))


def js(kind: str, value: str) -> list[str]:
    return [kind, value]


def test_js_client_numbers(js_project: Path, numbers_server: ServerProcess) -> None:  # noqa: F811
    r: dict[str, Any] = run_script(js_project, "numbers.mjs", numbers_server)
    table = {
        "computed": js("number", "2"),
        "stored_int64": js("bigint", "7"),
        "stored_float": js("number", "3"),
        "stored_undeclared": js("bigint", "5"),
        "computed_from_stored": js("number", "8"),
        "huge": js("bigint", str(2**60)),
        "nested": [{"x": js("number", "1")}],
        "float": js("number", "2.5"),
        "flag": js("boolean", "true"),
    }
    assert r["table"] == table
    assert r["subscribed"] == table
    assert r["httpTable"] == table
    assert r["declared"] == {
        "n": js("bigint", "2"),
        "f": js("number", "3"),
        "a": js("number", "4"),
    }
    assert r["echo"] == {
        "arg": js("bigint", "41"),
        "plus": js("number", "42"),
        "float_arg": js("number", "41"),
    }
    assert r["mutation"] == js("number", "1")
    assert r["httpMutation"] == js("number", "1")
    assert r["action"] == {"n": js("number", "4")}
    assert r["fail"] == {"code": js("number", "5")}
    # `count + 1` works, as a component written for Convex expects.
    assert r["countPlusOne"] == 3


def test_python_client_numbers(tmp_path: Path, numbers_server: ServerProcess) -> None:
    report, _ = run_client(
        tmp_path,
        "numbers",
        """
        client = ConvexClient(URL)
        client.mutation("numbers:seed", {})
        r = {}
        r["table"] = tag(client.query("numbers:table", {}))
        r["declared"] = tag(client.query("numbers:declared", {}))
        r["echo"] = tag(client.query("numbers:echo", {"n": ConvexInt64(41), "f": 41}))
        r["mutation"] = tag(client.mutation("numbers:count", {}))
        r["action"] = tag(client.action("numbers:act", {}))
        r["fail"] = attempt(client.mutation, "numbers:fail", {})
        http = ConvexHttpClient(URL)
        r["http"] = tag(http.query("numbers:table", {}))
        save(r)
        """,
        numbers_server,
    )
    table = {
        "computed": {"float": 2.0},
        "stored_int64": {"int64": 7},
        "stored_float": {"float": 3.0},
        "stored_undeclared": {"int64": 5},
        "computed_from_stored": {"float": 8.0},
        "huge": {"int64": 2**60},
        "nested": [{"x": {"float": 1.0}}],
        "float": {"float": 2.5},
        "flag": True,
    }
    assert report["table"] == table
    assert report["http"] == table
    assert report["declared"] == {"n": {"int64": 2}, "f": {"float": 3.0}, "a": {"float": 4.0}}
    assert report["echo"] == {
        "arg": {"int64": 41},
        "plus": {"float": 42.0},
        "float_arg": {"float": 41.0},
    }
    assert report["mutation"] == {"float": 1.0}
    assert report["action"] == {"n": {"float": 4.0}}
    assert report["fail"]["error"]["data"] == {"code": {"float": 5.0}}

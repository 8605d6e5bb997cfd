"""``--dev`` hot reload: saving a module swaps in the new code without dropping the socket;
subscribed queries re-run with it; a broken module (syntax error, import error, a schema
the data violates) keeps the previous version serving and logs where it broke.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from reactive.client import Client

if TYPE_CHECKING:
    from conftest import ServerProcess

V1 = """
    from reactive import mutation, query, v


    @query(args={})
    async def greeting(ctx):
        return "v1"


    @mutation(args={"text": v.string()})
    async def add(ctx, text):
        await ctx.db.insert("notes", {"text": text})


    @query(args={})
    async def count(ctx):
        return len(await ctx.db.query("notes").collect())
"""


def write(app: Path, name: str, source: str) -> None:
    (app / name).write_text(textwrap.dedent(source))


async def wait_log(server: ServerProcess, words: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while words not in server.log():
        assert time.monotonic() < deadline, f"{words!r} not in the log:\n{server.log()[-2000:]}"
        await asyncio.sleep(0.05)


async def test_saving_swaps_the_code_under_a_live_subscription(
    make_app: Callable[[dict[str, str]], Path], start_server: Callable[..., ServerProcess]
) -> None:
    app = make_app({"m.py": V1})
    server = start_server(app, "--dev", "--log-level", "info")
    async with Client(server.url) as client:
        live = client.subscribe("m:greeting", {})
        assert await live.get(timeout_s=10) == "v1"
        await client.mutation("m:add", {"text": "kept"})

        write(app, "m.py", V1.replace('"v1"', '"v2"'))
        assert await live.get(timeout_s=15) == "v2"  # same socket, new code

        # A syntax error: the previous version keeps serving, the log says where.
        write(app, "m.py", V1.replace('return "v1"', 'return "v3" +'))
        await wait_log(server, "reload failed at")
        assert re.search(r"reload failed at \S*m\.py:7;", server.log()), server.log()[-2000:]
        assert await client.query("m:greeting", {}) == "v2"
        await client.mutation("m:add", {"text": "still works"})
        assert await client.query("m:count", {}) == 2

        # Fixed again (same result: no new transition needed), then a schema the stored
        # documents violate, which is refused too.
        write(app, "m.py", V1.replace('"v1"', '"v2"'))
        await wait_log(server, "reloaded", timeout_s=15)
        deadline = time.monotonic() + 15
        while server.log().count("reloaded") < 2:
            assert time.monotonic() < deadline, server.log()[-2000:]
            await asyncio.sleep(0.05)
        write(
            app,
            "schema.py",
            """
            from reactive import define_schema, define_table, v

            schema = define_schema({"notes": define_table({"text": v.float64()})})
            """,
        )
        deadline = time.monotonic() + 15
        while server.log().count("reload failed") < 2:
            assert time.monotonic() < deadline, server.log()[-2000:]
            await asyncio.sleep(0.05)
        assert "SchemaError" in server.log().rsplit("reload failed", 1)[1]
        assert await client.query("m:count", {}) == 2
        (app / "schema.py").unlink()

        # Fixed: the new version arrives on the same subscription.
        write(app, "m.py", V1.replace('"v1"', '"v4"'))
        assert await live.get(timeout_s=15) == "v4"

        # A removed function: its subscription gets the error.
        write(app, "m.py", V1.replace("async def greeting", "async def hello"))
        failed = False
        try:
            await live.get(timeout_s=15)
        except Exception as exc:
            failed = "greeting" in str(exc)
        assert failed

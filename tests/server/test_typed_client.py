"""``reactive.client.Client`` called with typed function objects and generated references,
against a real ``python -m reactive.server``.

The app's own function objects (imported as a client program would, not loaded as an app:
their paths come from their modules), keyword arguments, and the references ``python -m
reactive codegen --py`` writes reach the server's functions with the same arguments as the
path-and-dict form.
"""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reactive.client import Client
from reactive.errors import ConvexError, FunctionError

if TYPE_CHECKING:
    from conftest import ServerProcess

WAIT_S = 20.0

APP = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({
            "users": define_table({"name": v.string()}),
            "notes": define_table({"text": v.string(), "owner": v.id("users")}),
        })
    """,
    "notes.py": """
        from reactive import ConvexError, action, mutation, query, v


        @mutation(args={"name": v.string()}, returns=v.id("users"))
        async def user(ctx, name: str) -> str:
            return await ctx.db.insert("users", {"name": name})


        @mutation(args={"text": v.string(), "owner": v.id("users")}, returns=v.id("notes"))
        async def add(ctx, text: str, owner: str) -> str:
            if not text:
                raise ConvexError({"code": "EMPTY"})
            return await ctx.db.insert("notes", {"text": text, "owner": owner})


        @query(
            args={"owner": v.id("users"), "limit": v.optional(v.int64())},
            returns=v.array(v.string()),
        )
        async def texts(ctx, owner: str, limit: int = 10) -> list[str]:
            notes = await ctx.db.query("notes").collect()
            return [n["text"] for n in notes if n["owner"] == owner][:limit]


        @query(args={})
        async def count(ctx) -> int:
            return len(await ctx.db.query("notes").collect())


        @action(args={"owner": v.id("users")})
        async def summary(ctx, owner: str) -> str:
            texts = await ctx.run_query("notes:texts", {"owner": owner})
            return ", ".join(texts)
    """,
    "admin/users.py": """
        from reactive import mutation, v


        @mutation(args={"id": v.id("users"), "name": v.string()})
        async def rename(ctx, id: str, name: str) -> None:
            await ctx.db.patch(id, {"name": name})
    """,
}


@pytest.fixture
def app_dir(make_app: Callable[[dict[str, str]], Path]) -> Iterator[Path]:
    root = make_app({"admin/__init__.py": "", **APP})
    sys.path.insert(0, str(root.parent))
    yield root
    sys.path.remove(str(root.parent))


async def test_client_query_mutation_action_with_function_objects_and_keywords(
    start_server: Callable[..., ServerProcess], app_dir: Path
) -> None:
    server = start_server(app_dir)
    # Imported as a client program would: the paths come from the modules.
    notes = importlib.import_module(f"{app_dir.name}.notes")
    users = importlib.import_module(f"{app_dir.name}.admin.users")
    assert notes.add.path is None
    async with Client(server.url) as client:
        owner = await asyncio.wait_for(client.mutation(notes.user, name="ada"), WAIT_S)
        await asyncio.wait_for(client.mutation(notes.add, text="one", owner=owner), WAIT_S)
        await asyncio.wait_for(client.mutation(notes.add, {"text": "two", "owner": owner}), WAIT_S)
        await asyncio.wait_for(client.mutation(notes.add, "three", owner), WAIT_S)
        texts = await asyncio.wait_for(client.query(notes.texts, owner=owner, limit=2), WAIT_S)
        assert texts == ["one", "two"]
        assert await asyncio.wait_for(client.query(notes.count), WAIT_S) == 3
        summary = await asyncio.wait_for(client.action(notes.summary, owner=owner), WAIT_S)
        assert summary == "one, two, three"
        await asyncio.wait_for(client.mutation(users.rename, id=owner, name="bo"), WAIT_S)
        # Keyword arguments with a path, and errors as with the dict form.
        assert await asyncio.wait_for(client.query("notes:count"), WAIT_S) == 3
        with pytest.raises(ConvexError) as info:
            await asyncio.wait_for(client.mutation(notes.add, text="", owner=owner), WAIT_S)
        assert info.value.data == {"code": "EMPTY"}
        with pytest.raises(FunctionError):
            await asyncio.wait_for(client.query(notes.texts, owner="nope"), WAIT_S)
        with pytest.raises(TypeError, match="either as one dict or as keyword arguments"):
            await client.query(notes.texts, {"owner": owner}, limit=1)
        # A subscription with keyword arguments sees a later mutation.
        async with client.subscribe(notes.texts, owner=owner) as sub:
            assert await asyncio.wait_for(sub.get(), WAIT_S) == ["one", "two", "three"]
            await asyncio.wait_for(client.mutation(notes.add, text="four", owner=owner), WAIT_S)
            assert (await asyncio.wait_for(sub.get(), WAIT_S))[-1] == "four"


async def test_client_query_mutation_action_with_generated_references(
    start_server: Callable[..., ServerProcess], app_dir: Path, tmp_path: Path
) -> None:
    server = start_server(app_dir)
    stub = tmp_path / "client" / "chat_api.py"
    proc = subprocess.run(
        [sys.executable, "-m", "reactive", "codegen", "--app", str(app_dir), "--py", str(stub)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {stub}"
    sys.path.insert(0, str(stub.parent))
    try:
        generated = importlib.import_module("chat_api")
    finally:
        sys.path.remove(str(stub.parent))
        sys.modules.pop("chat_api", None)
    api = generated.api
    async with Client(server.url) as client:
        owner = await asyncio.wait_for(client.mutation(api.notes.user, {"name": "ada"}), WAIT_S)
        owner_id = generated.UsersId(owner)
        await asyncio.wait_for(
            client.mutation(api.notes.add, {"text": "one", "owner": owner_id}), WAIT_S
        )
        texts = await asyncio.wait_for(client.query(api.notes.texts, {"owner": owner_id}), WAIT_S)
        assert texts == ["one"]
        assert await asyncio.wait_for(client.query(api.notes.count), WAIT_S) == 1
        assert await asyncio.wait_for(client.query(api.notes.count, {}), WAIT_S) == 1
        summary = await asyncio.wait_for(
            client.action(api.notes.summary, {"owner": owner_id}), WAIT_S
        )
        assert summary == "one"
        await asyncio.wait_for(
            client.mutation(api.admin.users.rename, {"id": owner_id, "name": "bo"}), WAIT_S
        )
        async with client.subscribe(api.notes.count) as sub:
            assert await asyncio.wait_for(sub.get(), WAIT_S) == 1

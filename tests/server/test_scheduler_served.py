"""The scheduler and crons behind the server: what a client schedules runs, a subscription
over the WebSocket sees it, and pending work survives a restart of the server.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from reactive.client import Client

if TYPE_CHECKING:
    from conftest import ServerProcess


def call(server: ServerProcess, kind: str, path: str, args: dict[str, Any]) -> Any:
    r = httpx.post(f"{server.url}/api/{kind}", json={"path": path, "args": args}, timeout=10)
    body = r.json()
    assert body["status"] == "success", body
    return body["value"]


def bodies(server: ServerProcess) -> list[str]:
    messages = call(server, "query", "messages:list", {"channel": "general"})
    return [m["body"] for m in messages]


def wait_until(check: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


async def test_a_subscription_sees_a_scheduled_deletion(chat_server: ServerProcess) -> None:
    async with Client(chat_server.url) as client:
        await client.mutation("channels:create", {"name": "general"})
        live = client.subscribe("messages:list", {"channel": "general"})
        assert await live.get(timeout_s=10) == []
        goes = {"channel": "general", "author": "ada", "body": "goes", "expires_in_s": 0.5}
        await client.mutation("messages:send", goes)
        await client.mutation(
            "messages:send", {"channel": "general", "author": "ada", "body": "stays"}
        )
        seen = []
        while not seen or seen[-1] != ["stays"]:
            seen.append([m["body"] for m in await live.get(timeout_s=10)])
        assert ["stays", "goes"] in seen  # both were there before the deletion ran


def test_pending_work_survives_a_server_restart(chat_server: ServerProcess) -> None:
    call(chat_server, "mutation", "channels:create", {"name": "general"})
    send = {"channel": "general", "author": "ada", "body": "later", "expires_in_s": 3.0}
    call(chat_server, "mutation", "messages:send", send)
    chat_server.restart()  # before the deletion is due
    assert bodies(chat_server) == ["later"]
    wait_until(lambda: bodies(chat_server) == [])

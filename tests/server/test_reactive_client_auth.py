"""``reactive.client.Client``'s tokens against a real server (``--jwt-key``, short-lived JWTs).

* A token fetcher (``fetch_token=``, ``set_auth(fetch)``, as the JS client's ``setAuth``):
  when the server says the token expired (``AuthError``, ``authUpdateAttempted: false``),
  the client fetches a fresh one with ``force_refresh=True`` and sends a new
  ``Authenticate`` on the same socket; a longer-lived token is refreshed before its
  ``exp``; a token the server refuses (it closes the socket) is replaced by a fresh one on
  the next socket, and calls made meanwhile run under it.
* Without a fresh token (a fixed token, or a fetcher that returns ``None``), the client
  drops the token and goes on unauthenticated: subscriptions raise ``AuthError`` once,
  then yield results without the identity; calls the server did not run under the token
  fail with ``AuthError`` (never sent again without it, never waiting forever); the client
  does not keep reconnecting with the refused token.
* ``set_auth`` and ``clear_auth`` change the identity of an open socket.

Before this, the client treated ``AuthError`` as fatal and reconnected with the same token
forever: its calls and subscriptions waited.

Source: python/reactive/client/client.py; the server's side: python/reactive/sync/session.py
(``_authenticate``, ``check_auth_expiry``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from reactive.client import Client, ClientSubscription
from reactive.errors import AuthError

ServerProcess = Any  # tests/server/conftest.py's ServerProcess
MakeApp = Callable[[dict[str, str]], Path]

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
ADMIN = "the-admin-key"
WAIT_S = 20.0

APP = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({"bumps": define_table({"who": v.string()})})
    """,
    "probe.py": """
        from reactive import action, mutation, query


        @query(args={})
        async def whoami(ctx):
            identity = await ctx.auth.get_user_identity()
            return None if identity is None else {
                "subject": identity["subject"], "name": identity.get("name")
            }


        @mutation(args={})
        async def bump(ctx):
            identity = await ctx.auth.get_user_identity()
            who = "" if identity is None else identity["subject"]
            await ctx.db.insert("bumps", {"who": who})
            return who


        @query(args={})
        async def bumps(ctx):
            return [b["who"] for b in await ctx.db.query("bumps").collect()]


        @action(args={})
        async def whoami_action(ctx):
            identity = await ctx.auth.get_user_identity()
            return None if identity is None else identity["subject"]
    """,
}


def token(lifetime_s: float = 3600, sub: str = "ada", **claims: Any) -> str:
    """A JWT the server's ``--jwt-key`` verifies, expiring ``lifetime_s`` from now."""
    now = time.time()
    body = {"sub": sub, "iat": int(now), "exp": int(now + lifetime_s), **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


class Fetcher:
    """A token fetcher that hands out the tokens it is given, recording each call."""

    def __init__(self, *tokens: str | None) -> None:
        self.tokens = list(tokens)
        self.calls: list[bool] = []

    async def __call__(self, *, force_refresh: bool) -> str | None:
        self.calls.append(force_refresh)
        await asyncio.sleep(0.01)  # a round trip to the auth provider
        return self.tokens.pop(0) if self.tokens else None


@pytest.fixture
def server(start_server: Callable[..., ServerProcess], make_app: MakeApp) -> ServerProcess:
    return start_server(make_app(APP), "--jwt-key", SECRET, "--admin-key", ADMIN)


async def until(sub: ClientSubscription[Any], predicate: Callable[[Any], bool]) -> list[Any]:
    """The subscription's values (AuthError included) up to one satisfying ``predicate``."""
    seen: list[Any] = []

    async def scan() -> list[Any]:
        while True:
            try:
                value = await sub.__anext__()
            except AuthError as exc:
                value = exc
            seen.append(value)
            if predicate(value):
                return seen

    try:
        return await asyncio.wait_for(scan(), WAIT_S)
    except TimeoutError:
        raise AssertionError(f"timed out; the subscription gave {seen}") from None


def named(name: str) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, dict) and v["name"] == name


async def test_fetcher_refreshes_a_token_the_server_expired(server: ServerProcess) -> None:
    """A 2-second token (too short to refresh ahead): the server expires it, the client
    fetches a fresh one (force_refresh) and re-authenticates on the same socket."""
    fetch = Fetcher(token(2, name="first"), token(name="second"))
    async with Client(server.url, fetch_token=fetch) as client:
        sub = client.subscribe("probe:whoami")
        first = await until(sub, lambda v: v is not None)
        assert first[-1] == {"subject": "ada", "name": "first"}
        seen = await until(sub, named("second"))
        assert not any(isinstance(v, AuthError) for v in seen), seen
        assert fetch.calls == [False, True]
        # Calls after the refresh run as the user, on the same socket.
        assert await asyncio.wait_for(client.mutation("probe:bump"), WAIT_S) == "ada"
        assert await asyncio.wait_for(client.action("probe:whoami_action"), WAIT_S) == "ada"
        assert client.reconnects == 0
        sub.close()


async def test_fetcher_refreshes_ahead_of_exp(server: ServerProcess) -> None:
    """A token that lives longer than refresh_leeway_s is replaced before it expires: the
    subscription never loses the identity."""
    expiring = token(4, name="first")
    exp = jwt.decode(expiring, options={"verify_signature": False})["exp"]
    fetch = Fetcher(expiring, token(name="second"))
    async with Client(server.url, fetch_token=fetch, refresh_leeway_s=2.0) as client:
        sub = client.subscribe("probe:whoami")
        seen = await until(sub, named("second"))
        assert time.time() < exp, "refreshed only after the token expired"
        assert None not in seen and seen[0]["name"] == "first", seen
        assert fetch.calls == [False, True]
        sub.close()


async def test_fetcher_replaces_a_refused_token(server: ServerProcess) -> None:
    """The fetcher's first (cached) token has expired: the server refuses it and closes
    the socket; the client fetches a fresh one and the call made meanwhile runs with it."""
    fetch = Fetcher(token(-60, name="stale"), token(name="fresh"))
    changes: list[bool] = []
    async with Client(server.url) as client:
        client.set_auth(fetch, on_change=changes.append)
        assert await asyncio.wait_for(client.mutation("probe:bump"), WAIT_S) == "ada"
        assert await asyncio.wait_for(client.query("probe:whoami"), WAIT_S) == {
            "subject": "ada",
            "name": "fresh",
        }
        assert fetch.calls == [False, True]
        assert changes == [True]
        assert await asyncio.wait_for(client.query("probe:bumps"), WAIT_S) == ["ada"]


async def test_fixed_token_expiry_surfaces_and_goes_on_unauthenticated(
    server: ServerProcess,
) -> None:
    changes: list[bool] = []
    async with Client(server.url) as client:
        client.set_auth(token(2), on_change=changes.append)
        sub = client.subscribe("probe:whoami")
        assert (await until(sub, lambda v: v is not None))[-1]["subject"] == "ada"
        seen = await until(sub, lambda v: isinstance(v, AuthError))
        assert "expired" in str(seen[-1]) and "unauthenticated" in str(seen[-1])
        # Then the results without the identity, on the same socket.
        assert (await until(sub, lambda v: True)) == [None]
        assert await asyncio.wait_for(client.mutation("probe:bump"), WAIT_S) == ""
        assert client.reconnects == 0
        assert changes == [True, False]
        sub.close()


async def test_fixed_refused_token_fails_pending_calls(server: ServerProcess) -> None:
    """An expired token from the start: the calls made with it fail with AuthError (not
    run, not sent again without it); the client then goes on unauthenticated instead of
    reconnecting with the refused token forever."""
    async with Client(server.url, auth_token=token(-60), max_backoff_s=0.5) as client:
        sub = client.subscribe("probe:whoami")
        with pytest.raises(AuthError, match="refused the authentication token") as refused:
            await asyncio.wait_for(client.mutation("probe:bump"), WAIT_S)
        assert "expired" in str(refused.value) and "was not sent again" in str(refused.value)
        seen = await until(sub, lambda v: v is None)
        assert isinstance(seen[0], AuthError), seen
        assert await asyncio.wait_for(client.mutation("probe:bump"), WAIT_S) == ""
        assert await asyncio.wait_for(client.query("probe:bumps"), WAIT_S) == [""]
        await asyncio.sleep(1.0)
        assert client.reconnects == 1  # the one after the refusal, and no more
        sub.close()


async def test_refused_admin_key_fails_pending_calls(server: ServerProcess) -> None:
    async with Client(server.url, admin_key="not-the-key") as client:
        with pytest.raises(AuthError, match="admin key"):
            await asyncio.wait_for(client.query("probe:whoami"), WAIT_S)
        assert await asyncio.wait_for(client.query("probe:whoami"), WAIT_S) is None


async def test_fetcher_without_a_fresh_token_gives_up(server: ServerProcess) -> None:
    """The fetcher has no fresh token when the first expires (signed out): as a fixed
    token, the subscription raises AuthError once and goes on without the identity."""
    fetch = Fetcher(token(2))
    async with Client(server.url, fetch_token=fetch) as client:
        sub = client.subscribe("probe:whoami")
        assert (await until(sub, lambda v: v is not None))[-1]["subject"] == "ada"
        # (The server re-runs the query without the identity as the token expires: that
        # result may come before or after the client hears there is no fresh token.)
        seen = await until(sub, lambda v: isinstance(v, AuthError))
        assert "no fresh one" in str(seen[-1]) and set(map(repr, seen[:-1])) <= {"None"}
        assert fetch.calls == [False, True]
        assert await asyncio.wait_for(client.mutation("probe:bump"), WAIT_S) == ""
        sub.close()


async def test_set_auth_and_clear_auth_on_an_open_socket(server: ServerProcess) -> None:
    async with Client(server.url) as client:
        sub = client.subscribe("probe:whoami")
        assert await until(sub, lambda v: True) == [None]
        client.set_auth(token(sub="grace", name="g"))
        # The mutation made right after set_auth already runs as the new user.
        assert await asyncio.wait_for(client.mutation("probe:bump"), WAIT_S) == "grace"
        assert (await until(sub, lambda v: v is not None))[-1]["subject"] == "grace"
        client.clear_auth()
        assert await asyncio.wait_for(client.mutation("probe:bump"), WAIT_S) == ""
        assert (await until(sub, lambda v: v is None))[-1] is None
        assert client.reconnects == 0
        with pytest.raises(ValueError, match="empty"):
            client.set_auth("")
        sub.close()

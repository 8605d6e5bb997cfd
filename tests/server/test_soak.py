"""Soak: 200 clients subscribing and mutating through a real server for 60 seconds.

Each client (a ``reactive.client.Client``, one WebSocket each) subscribes to the state of
one of 20 groups (its counter and its 10 newest messages), posts a message to a random
group every 0.5-3.5 s (a mutation that bumps the group's counter, inserts the message and
deletes the group's messages past the newest 10, so the data stays bounded), and now and
then moves its subscription to another group. The server's resident set size (RSS, from
``/proc/PID/status``) is sampled every second and printed over time.

Checked:

* the server's RSS is bounded: after the warm-up (the first third of the run, during which
  the retention window of 10 s fills), the highest RSS of the last third is within 25 % +
  48 MiB of the highest of the middle third;
* no mutation or subscription failed (write conflicts are retried by the server);
* once the load stops, each client's latest subscription result equals a fresh query of
  the same group (bounded wait: the last transitions may still be on their way), and each
  group's counter equals the number of acknowledged posts to it.

A longer or bigger run: ``REACTIVE_SOAK_SECONDS`` (default 60) and ``REACTIVE_SOAK_CLIENTS``
(default 200), e.g. ``REACTIVE_SOAK_SECONDS=1800 .venv/bin/pytest tests/server/test_soak.py
-s``; ``-s`` prints the RSS series and the counts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from reactive.client import Client, ClientSubscription

if TYPE_CHECKING:
    from conftest import ServerProcess

SECONDS = float(os.environ.get("REACTIVE_SOAK_SECONDS", "60"))
CLIENTS = int(os.environ.get("REACTIVE_SOAK_CLIENTS", "200"))
GROUPS = 20
KEEP = 10  # messages kept per group
RETENTION_S = 10.0
WAIT_S = 30.0

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "counters": define_table({"group": v.int64(), "n": v.int64()}).index("by_group", ["group"]),
    "messages": define_table({"group": v.int64(), "client": v.int64(), "seq": v.int64()})
        .index("by_group", ["group"]),
})
"""

FUNCS = """
from reactive import mutation, query, v

KEEP = 10


@query(args={"group": v.int64()})
async def state(ctx, group):
    counter = await (
        ctx.db.query("counters").with_index("by_group", lambda q: q.eq("group", group)).unique()
    )
    latest = await (
        ctx.db.query("messages")
        .with_index("by_group", lambda q: q.eq("group", group))
        .order("desc")
        .take(KEEP)
    )
    return {
        "n": counter["n"] if counter else 0,
        "latest": [[m["client"], m["seq"]] for m in latest],
    }


@mutation(args={"group": v.int64(), "client": v.int64(), "seq": v.int64()})
async def post(ctx, group, client, seq):
    counter = await (
        ctx.db.query("counters").with_index("by_group", lambda q: q.eq("group", group)).unique()
    )
    if counter is None:
        await ctx.db.insert("counters", {"group": group, "n": 1})
    else:
        await ctx.db.patch(counter["_id"], {"n": counter["n"] + 1})
    await ctx.db.insert("messages", {"group": group, "client": client, "seq": seq})
    newest = await (
        ctx.db.query("messages")
        .with_index("by_group", lambda q: q.eq("group", group))
        .order("desc")
        .take(KEEP + 2)
    )
    for old in newest[KEEP:]:
        await ctx.db.delete(old["_id"])
    return seq
"""


def rss_bytes(pid: int) -> int:
    """The process's resident set size (``VmRSS`` of ``/proc/PID/status``), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class SoakClient:
    """One client: a subscription to a group's state, and a posting loop."""

    def __init__(self, number: int, url: str, rng: random.Random) -> None:
        self.number = number
        self.client = Client(url, max_backoff_s=1.0)
        self.rng = rng
        self.group = number % GROUPS
        self.latest: Any = None
        self.results = 0
        self.posts: collections.Counter[int] = collections.Counter()
        self.errors: list[str] = []
        self.moves = 0
        self._sub: ClientSubscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._seq = 0

    def watch(self, group: int) -> None:
        """Subscribe to ``group`` (dropping the previous subscription)."""
        if self._sub is not None:
            self._sub.close()
        if self._reader is not None:
            self._reader.cancel()
        self.group, self.latest = group, None
        self._sub = self.client.subscribe("soak:state", {"group": group})
        self._reader = asyncio.get_running_loop().create_task(self._read(self._sub))

    async def _read(self, sub: ClientSubscription) -> None:
        try:
            async for value in sub:
                self.latest = value
                self.results += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors.append(f"subscription of group {self.group}: {exc!r}")

    async def run(self, stop: asyncio.Event) -> None:
        """Post until ``stop`` is set; sometimes move the subscription."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(0.5, 3.5))
            if stop.is_set():
                return
            if self.rng.random() < 0.05:
                self.watch(self.rng.randrange(GROUPS))
                self.moves += 1
            group = self.rng.randrange(GROUPS)
            self._seq += 1
            try:
                await asyncio.wait_for(
                    self.client.mutation(
                        "soak:post", {"group": group, "client": self.number, "seq": self._seq}
                    ),
                    WAIT_S,
                )
            except Exception as exc:
                self.errors.append(f"post to group {group}: {exc!r}")
            else:
                self.posts[group] += 1

    async def settle(self, expected: dict[int, Any]) -> None:
        """Wait (bounded) until the subscription holds ``expected[group]``."""
        deadline = time.monotonic() + WAIT_S
        while self.latest != expected[self.group] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._reader is not None:
            self._reader.cancel()
        await self.client.close()


@pytest.fixture
def soak_server(
    start_server: Callable[..., ServerProcess], make_app: Callable[[dict[str, str]], Path]
) -> ServerProcess:
    app = make_app({"schema.py": SCHEMA, "soak.py": FUNCS})
    return start_server(app, "--retention-seconds", str(RETENTION_S))


async def sample_rss(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    started = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - started, rss_bytes(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def test_soak_200_clients(soak_server: ServerProcess) -> None:
    rng = random.Random(20261123)
    pid = soak_server.process.pid
    clients = [SoakClient(i, soak_server.url, random.Random(rng.random())) for i in range(CLIENTS)]
    samples: list[tuple[float, int]] = []
    stop_load, stop_sampling = asyncio.Event(), asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, samples, stop_sampling))
    try:
        for c in clients:
            c.watch(c.group)
        await asyncio.wait_for(
            asyncio.gather(*(c.client.wait_connected(WAIT_S) for c in clients)), WAIT_S * 2
        )
        started = time.monotonic()
        load = [asyncio.create_task(c.run(stop_load)) for c in clients]
        await asyncio.sleep(SECONDS)
        stop_load.set()
        await asyncio.wait_for(asyncio.gather(*load), WAIT_S * 2)
        elapsed = time.monotonic() - started
        stop_sampling.set()
        await sampler

        # The final state, read fresh by a new client once every post is acknowledged.
        async with Client(soak_server.url) as checker:
            fresh = {
                g: await asyncio.wait_for(checker.query("soak:state", {"group": g}), WAIT_S)
                for g in range(GROUPS)
            }
        await asyncio.wait_for(asyncio.gather(*(c.settle(fresh) for c in clients)), WAIT_S * 2)

        errors = [e for c in clients for e in c.errors]
        posts: collections.Counter[int] = collections.Counter()
        for c in clients:
            posts.update(c.posts)
        stale = [
            (c.number, c.group, c.latest, fresh[c.group])
            for c in clients
            if c.latest != fresh[c.group]
        ]

        print(
            f"\nsoak: {CLIENTS} clients for {elapsed:.0f} s: {sum(posts.values())} mutations "
            f"({sum(posts.values()) / elapsed:.0f}/s), "
            f"{sum(c.results for c in clients)} subscription results, "
            f"{sum(c.moves for c in clients)} subscription moves, "
            f"{sum(c.client.reconnects for c in clients)} reconnects, {len(errors)} errors"
        )
        print(
            "server RSS (MiB) over time: "
            + ", ".join(
                f"{t:.0f}s {rss / 2**20:.0f}" for t, rss in samples[:: max(1, len(samples) // 15)]
            )
        )
        assert not errors, errors[:10]
        assert not stale, f"{len(stale)} clients hold a stale result, e.g. {stale[:3]}"
        for g in range(GROUPS):
            assert fresh[g]["n"] == posts[g], (g, fresh[g]["n"], posts[g])
            assert len(fresh[g]["latest"]) == min(KEEP, posts[g])

        third = len(samples) // 3
        middle = max(rss for _, rss in samples[third : 2 * third])
        last = max(rss for _, rss in samples[2 * third :])
        print(
            f"server RSS: start {samples[0][1] / 2**20:.0f} MiB, peak of middle third "
            f"{middle / 2**20:.0f} MiB, peak of last third {last / 2**20:.0f} MiB"
        )
        assert last <= middle * 1.25 + 48 * 2**20, (middle, last)
    finally:
        stop_load.set()
        stop_sampling.set()
        if not sampler.done():
            sampler.cancel()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

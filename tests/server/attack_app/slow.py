"""Functions that run too long or never return."""

import asyncio
import time

from reactive import action, mutation, query


@mutation
def spin(ctx):
    """A plain ``def`` mutation that never returns (and never yields)."""
    while True:
        pass


@mutation
async def spin_async(ctx):
    """Writes, then busy-loops without awaiting: the write must never become visible."""
    await ctx.db.insert("marks", {"note": "written by spin_async before it spun"})
    while True:
        pass


@query
def sleepy(ctx):
    """A plain ``def`` query that blocks its thread for 2 s."""
    time.sleep(2.0)
    return "woke up"


@query
async def burn(ctx):
    """An ``async def`` query that burns 5 s of CPU without awaiting."""
    end = time.monotonic() + 5.0
    n = 0
    while time.monotonic() < end:
        n += 1
    return float(n)


@query
async def marks(ctx):
    """How many ``marks`` documents are visible."""
    return float(len(await ctx.db.query("marks").collect()))


@mutation
async def nap(ctx):
    """A mutation that takes 0.5 s (within the time limit), awaiting."""
    await asyncio.sleep(0.5)
    return "rested"


@action
async def forever(ctx):
    """An action that never returns (within any test)."""
    await asyncio.sleep(3600)


@mutation
async def nap_with(ctx, blob: str):
    """A mutation that takes 0.8 s and carries a large argument (queues of big frames)."""
    await asyncio.sleep(0.8)
    return float(len(blob))

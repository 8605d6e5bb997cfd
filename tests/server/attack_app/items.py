"""A scan heavy enough that a batch of them takes seconds."""

from reactive import mutation, query, v

ROUNDS = 24


@mutation(args={"count": v.float64()})
async def seed(ctx, count):
    """Insert ``count`` items."""
    pad = "p" * 200
    for k in range(int(count)):
        await ctx.db.insert("items", {"k": float(k), "pad": pad})
    return count


@query(args={})
async def scan(ctx):
    """Read every item and do some work per item (~50 ms for 5,000 items)."""
    total = 0.0
    for doc in await ctx.db.query("items").collect():
        for _ in range(ROUNDS):
            total += doc["k"] + len(doc["pad"].upper())
    return total

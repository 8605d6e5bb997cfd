"""The hot document, per-key documents and a cheap probe."""

from reactive import mutation, query, v


async def _hot(ctx):
    return await ctx.db.query("hot").with_index("by_name", lambda q: q.eq("name", "hot")).first()


@query(args={})
async def ping(ctx):
    """A cheap query for the probing client: reads the hot document (or nothing)."""
    doc = await _hot(ctx)
    return -1.0 if doc is None else doc["n"]


@query(args={"i": v.float64()})
async def read(ctx, i):
    """One of many live queries (distinct by ``i``) all reading the hot document."""
    doc = await _hot(ctx)
    return {"i": i, "n": None if doc is None else doc["n"]}


@mutation(args={"n": v.float64()})
async def write(ctx, n):
    """Set the hot document's ``n`` (creating it); returns ``n``."""
    doc = await _hot(ctx)
    if doc is None:
        await ctx.db.insert("hot", {"name": "hot", "n": n})
    else:
        await ctx.db.patch(doc["_id"], {"n": n})
    return n


@query(args={"i": v.float64(), "pad": v.optional(v.string())})
async def big(ctx, i, pad=""):
    """A large result (~64 KiB), distinct per ``i``: cheap to ask for, costly to send."""
    return {"i": i, "blob": "x" * 65536}


@query(args={"k": v.float64()})
async def own(ctx, k):
    """Reads only the document of key ``k``."""
    doc = await ctx.db.query("keyed").with_index("by_k", lambda q: q.eq("k", k)).first()
    return {"k": k, "n": None if doc is None else doc["n"]}


@mutation(args={"start": v.float64(), "count": v.float64()})
async def seed_keyed(ctx, start, count):
    """Insert keyed documents ``start .. start+count-1`` with ``n = 0``."""
    for k in range(int(start), int(start + count)):
        await ctx.db.insert("keyed", {"k": float(k), "n": 0.0})
    return count


@mutation(args={"k": v.float64(), "n": v.float64()})
async def write_own(ctx, k, n):
    """Set the ``n`` of key ``k``'s document."""
    doc = await ctx.db.query("keyed").with_index("by_k", lambda q: q.eq("k", k)).first()
    await ctx.db.patch(doc["_id"], {"n": n})
    return n

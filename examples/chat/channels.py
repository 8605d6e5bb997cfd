"""Channels: create and list."""

from reactive import ConvexError, mutation, query, v


@query(args={})
async def list(ctx):
    """Every channel, by name."""
    return await ctx.db.query("channels").with_index("by_name").collect()


@mutation(args={"name": v.string()})
async def create(ctx, name):
    """Create a channel; a name already taken is a ConvexError with data."""
    name = name.strip()
    if not name:
        raise ConvexError({"code": "EMPTY_NAME", "message": "channel names cannot be empty"})
    existing = await (
        ctx.db.query("channels").with_index("by_name", lambda q: q.eq("name", name)).unique()
    )
    if existing is not None:
        raise ConvexError({"code": "TAKEN", "channel": name})
    return await ctx.db.insert("channels", {"name": name})

"""Messages: send, and read a channel's latest."""

from reactive import mutation, query, v


@query(args={"channel": v.string(), "limit": v.optional(v.float64())})
async def list(ctx, channel, limit=50.0):
    """The channel's latest messages, newest first."""
    return await (
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .order("desc")
        .take(int(limit))
    )


@mutation(args={"channel": v.string(), "author": v.string(), "body": v.string()})
async def send(ctx, channel, author, body):
    """Post a message; returns its id."""
    print(f"{author} -> #{channel}: {body}")
    return await ctx.db.insert("messages", {"channel": channel, "author": author, "body": body})


@query(args={"channel": v.string(), "paginationOpts": v.any()})
async def page(ctx, channel, paginationOpts):
    """One page of a channel's messages, oldest first (for paginated clients)."""
    return await (
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .paginate(paginationOpts)
    )

"""Messages: send, and read a channel's latest."""

from reactive import internal_mutation, mutation, query, v


@query(args={"channel": v.string(), "limit": v.optional(v.float64())})
async def list(ctx, channel, limit=50.0):
    """The channel's latest messages, newest first."""
    return await (
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .order("desc")
        .take(int(limit))
    )


@mutation(
    args={
        "channel": v.string(),
        "author": v.string(),
        "body": v.string(),
        "expires_in_s": v.optional(v.float64()),
    }
)
async def send(ctx, channel, author, body, expires_in_s=None):
    """Post a message; returns its id. With ``expires_in_s`` it is deleted that much later."""
    print(f"{author} -> #{channel}: {body}")
    message_id = await ctx.db.insert(
        "messages", {"channel": channel, "author": author, "body": body}
    )
    if expires_in_s is not None:
        # Scheduled in this transaction: if the send fails, nothing is scheduled.
        await ctx.scheduler.run_after(expires_in_s, expire, {"id": message_id})
    return message_id


@internal_mutation(args={"id": v.id("messages")})
async def expire(ctx, id):
    """Delete an expiring message (run by the scheduler); gone already is fine."""
    if await ctx.db.get(id) is not None:
        await ctx.db.delete(id)


@query(args={"channel": v.string(), "paginationOpts": v.any()})
async def page(ctx, channel, paginationOpts):
    """One page of a channel's messages, oldest first (for paginated clients)."""
    return await (
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .paginate(paginationOpts)
    )

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
        "image": v.optional(v.id("_storage")),
    }
)
async def send(ctx, channel, author, body, expires_in_s=None, image=None):
    """Post a message; returns its id.

    With ``expires_in_s`` it is deleted that much later; ``image`` is a file uploaded to a
    URL from :func:`generate_upload_url` (its ``storageId``).
    """
    print(f"{author} -> #{channel}: {body}")
    message = {"channel": channel, "author": author, "body": body}
    if image is not None:
        message["image"] = image
    message_id = await ctx.db.insert("messages", message)
    if expires_in_s is not None:
        # Scheduled in this transaction: if the send fails, nothing is scheduled.
        await ctx.scheduler.run_after(expires_in_s, expire, {"id": message_id})
    return message_id


@internal_mutation(args={"id": v.id("messages")})
async def expire(ctx, id):
    """Delete an expiring message (run by the scheduler) and its image; gone is fine."""
    message = await ctx.db.get(id)
    if message is not None:
        await ctx.db.delete(id)
        if "image" in message:
            await ctx.storage.delete(message["image"])


@mutation(args={})
async def generate_upload_url(ctx):
    """A single-use URL to POST an image to (valid one hour); it answers ``{"storageId"}``."""
    return await ctx.storage.generate_upload_url()


@query(args={"id": v.id("messages")})
async def image_url(ctx, id):
    """The URL serving a message's image, or None (no image, or no such message)."""
    message = await ctx.db.get(id)
    if message is None or "image" not in message:
        return None
    return await ctx.storage.get_url(message["image"])


@query(args={"channel": v.string(), "paginationOpts": v.any()})
async def page(ctx, channel, paginationOpts):
    """One page of a channel's messages, oldest first (for paginated clients)."""
    return await (
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .paginate(paginationOpts)
    )

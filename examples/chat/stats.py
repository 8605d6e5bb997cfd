"""Daily statistics: a cron job counts each channel's messages (see crons.py)."""

from reactive import internal_mutation, query


@internal_mutation(args={})
async def count_messages(ctx):
    """Record how many messages each channel holds now (one ``daily_stats`` row each)."""
    counts: dict[str, int] = {}
    async for message in ctx.db.query("messages"):
        counts[message["channel"]] = counts.get(message["channel"], 0) + 1
    for channel, messages in sorted(counts.items()):
        await ctx.db.insert("daily_stats", {"channel": channel, "messages": messages})
    return counts


@query(args={})
async def latest(ctx):
    """The newest statistics row of each channel."""
    newest: dict[str, dict] = {}
    async for row in ctx.db.query("daily_stats").order("desc"):
        newest.setdefault(row["channel"], row)
    return sorted(newest.values(), key=lambda row: row["channel"])

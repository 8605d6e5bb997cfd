"""The chat app's schema."""

from reactive import define_schema, define_table, v

schema = define_schema(
    {
        "channels": define_table({"name": v.string()}).index("by_name", ["name"]),
        "messages": define_table(
            {
                "channel": v.string(),
                "author": v.string(),
                "body": v.string(),
                "image": v.optional(v.id("_storage")),
            }
        ).index("by_channel", ["channel"]),
        "daily_stats": define_table({"channel": v.string(), "messages": v.int64()}),
    }
)

"""Schema of the search benchmark app: ``docs`` (full-text index) and ``vecs`` (vector index)."""

from reactive import define_schema, define_table, v

DIMENSIONS = 384

schema = define_schema(
    {
        "docs": define_table({"body": v.string(), "channel": v.string()}).search_index(
            "search_body", search_field="body", filter_fields=["channel"]
        ),
        "vecs": define_table(
            {"embedding": v.array(v.float64()), "channel": v.string()}
        ).vector_index(
            "by_embedding",
            vector_field="embedding",
            dimensions=DIMENSIONS,
            filter_fields=["channel"],
        ),
    }
)

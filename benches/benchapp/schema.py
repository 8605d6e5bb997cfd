"""Schema of the benchmark app: ``docs`` with the user index ``by_x``."""

from reactive import define_schema, define_table, v

schema = define_schema(
    {
        "docs": define_table(
            {"x": v.int64(), "author": v.string(), "body": v.string(), "score": v.float64()}
        ).index("by_x", ["x"]),
    }
)

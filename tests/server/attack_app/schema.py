"""The attack app's schema."""

from reactive import define_schema, define_table, v

schema = define_schema(
    {
        # "hot": the one document that every `hot:read` query reads; "keyed": one
        # document per key for `hot:own` (each query reads only its own).
        "hot": define_table({"name": v.string(), "n": v.float64()}).index("by_name", ["name"]),
        "keyed": define_table({"k": v.float64(), "n": v.float64()}).index("by_k", ["k"]),
        # Written by a mutation that then spins past its time limit: must stay empty.
        "marks": define_table({"note": v.string()}),
        # Scanned by `items:scan`.
        "items": define_table({"k": v.float64(), "pad": v.string()}),
    }
)

"""Live queries of the server benchmarks (``bench_latency``, ``bench_fanout``).

* ``live:latest`` — the newest document with ``x == x`` (``by_x``, descending, first): a
  subscription whose result changes on every ``docs:insert`` of that ``x`` and stays one
  document long however many were inserted, so the work per update does not grow over a
  run of 2,000 mutations.
"""

from reactive import query, v


@query(args={"x": v.int64()})
async def latest(ctx, x):
    """The newest document with ``x == x``, or None."""
    docs = ctx.db.query("docs").with_index("by_x", lambda q: q.eq("x", x))
    return await docs.order("desc").first()

"""Functions of the benchmark app.

* ``docs:insert`` — one durable single-document insert (benchmark 1).
* ``docs:insert_many`` — bulk load for the read benchmarks' fixtures.
* ``docs:get_many`` — ``await ctx.db.get(id)`` for each id given (benchmark 2); returns
  how many were found, so the figure is the gets and not the conversion of a large result.
* ``docs:scan`` — the 100 documents with ``x == k`` through ``by_x`` (benchmark 3),
  returned to the caller as documents.
* ``docs:get`` — one document by id, returned whole (the point read of
  ``bench_pocketbase``, beside PocketBase's ``GET /api/collections/docs/records/{id}``).
* ``docs:work`` — a mutation that computes before it writes: ``rounds`` SHA-256 rounds in a
  Python loop (2,500: about 1 ms here), then one insert (the function-CPU case of
  ``bench_cluster``: where a mutation runs decides which process spends that CPU).
"""

import hashlib

from reactive import mutation, query, v


@mutation(args={"x": v.int64(), "author": v.string(), "body": v.string(), "score": v.float64()})
async def insert(ctx, x, author, body, score):
    """Insert one document; returns its id."""
    return await ctx.db.insert("docs", {"x": x, "author": author, "body": body, "score": score})


@mutation(args={"x": v.int64(), "rounds": v.int64()})
async def work(ctx, x, rounds):
    """Hash ``rounds`` times, then insert the digest; returns the new id."""
    digest = str(x).encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return await ctx.db.insert(
        "docs", {"x": x, "author": "work", "body": digest.hex(), "score": 0.0}
    )


@mutation(args={"docs": v.array(v.any())})
async def insert_many(ctx, docs):
    """Insert many documents in one transaction; returns their ids."""
    return [await ctx.db.insert("docs", d) for d in docs]


@query(args={"ids": v.array(v.string())})
async def get_many(ctx, ids):
    """``ctx.db.get`` every id; returns the number of documents found."""
    found = 0
    for i in ids:
        if await ctx.db.get(i) is not None:
            found += 1
    return found


@query(args={"id": v.id("docs")})
async def get(ctx, id):
    """The document with this id, or None."""
    return await ctx.db.get(id)


@query(args={"x": v.int64(), "n": v.int64()})
async def scan(ctx, x, n):
    """The first ``n`` documents with ``x == x`` in index order."""
    return await ctx.db.query("docs").with_index("by_x", lambda q: q.eq("x", x)).take(n)


@query(args={"x": v.int64(), "n": v.int64()})
async def scan_count(ctx, x, n):
    """As ``scan``, but returns only how many documents it read (for the cost split)."""
    docs = await ctx.db.query("docs").with_index("by_x", lambda q: q.eq("x", x)).take(n)
    return len(docs)

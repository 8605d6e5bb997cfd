"""Functions of the search benchmark app on ``docs`` (full text).

* ``docs:insert_many`` — insert a batch of documents in one transaction (the indexing figure
  inserts the corpus 500 at a time); returns their ids.
* ``docs:search`` — the ``n`` most relevant documents for ``text`` through ``search_body``,
  returned to the caller as documents (relevance order).
* ``docs:search_ids`` — the same search, returning only the ids (what the anchors return).
"""

from reactive import mutation, query, v


@mutation(args={"docs": v.array(v.any())})
async def insert_many(ctx, docs):
    """Insert many documents in one transaction; returns their ids."""
    return [await ctx.db.insert("docs", d) for d in docs]


@query(args={"text": v.string(), "n": v.int64()})
async def search(ctx, text, n):
    """The ``n`` best matches of ``text`` in ``body``, most relevant first."""
    return (
        await ctx.db.query("docs")
        .with_search_index("search_body", lambda q: q.search("body", text))
        .take(n)
    )


@query(args={"text": v.string(), "n": v.int64()})
async def search_ids(ctx, text, n):
    """As ``search``, but returns the documents' ids only."""
    docs = (
        await ctx.db.query("docs")
        .with_search_index("search_body", lambda q: q.search("body", text))
        .take(n)
    )
    return [d["_id"] for d in docs]

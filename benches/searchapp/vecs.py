"""Functions of the search benchmark app on ``vecs`` (vectors).

* ``vecs:insert_many`` — insert a batch of ``{embedding, channel}`` in one transaction;
  returns their ids.
* ``vecs:search`` — ``ctx.db.vector_search`` of ``vector`` through ``by_embedding``: the
  ``n`` nearest, ``[{"_id", "_score"}]``, nearest first.
"""

from reactive import mutation, query, v


@mutation(args={"docs": v.array(v.any())})
async def insert_many(ctx, docs):
    """Insert many vectors in one transaction; returns their ids."""
    return [await ctx.db.insert("vecs", d) for d in docs]


@query(args={"vector": v.array(v.float64()), "n": v.int64()})
async def search(ctx, vector, n):
    """The ``n`` nearest neighbours of ``vector``: ``[{"_id", "_score"}]``."""
    return await ctx.db.vector_search("vecs", "by_embedding", {"vector": vector, "limit": n})

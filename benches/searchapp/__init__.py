"""The app of the search benchmark (``bench_search.py``): two tables, ``docs`` and ``vecs``.

* ``docs``: ``{body: str, channel: str}`` with the full-text index ``search_body`` on ``body``
  (filter field ``channel``); its documents are ``search_corpus.build_corpus``'s.
* ``vecs``: ``{embedding: float64[384], channel: str}`` with the vector index ``by_embedding``
  (384 dimensions, filter field ``channel``); its vectors are ``search_corpus.vectors``'s.

Importing the schema needs an engine with ``search_index`` and ``vector_index``; until then the
benchmark's reactive rows say so and carry no figures.
"""

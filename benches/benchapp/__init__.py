"""The app the benchmarks run: one table, ``docs``, with one user index, ``by_x``.

Every document has 3 index entries (``by_id``, ``by_creation_time``, ``by_x``), as the
insert benchmark's anchor writes 3 index rows per document.
"""

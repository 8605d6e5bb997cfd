"""The app attacked by tests/server/test_attacks.py (and served by benches/bench_invalidation.py).

Modules: ``hot`` (a hot document read by many live queries, per-key documents, a cheap
probe query), ``slow`` (functions that spin, sleep or never return: time limits and
in-flight limits), ``items`` (a scan heavy enough to make ``query_batch`` expensive).
"""

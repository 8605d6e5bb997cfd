"""Isolation tests: an Elle-style checker run against reactive ("prove the guarantees").

What is here:

* ``elle.py``: a self-contained checker of list-append histories after Kingsbury & Alvaro,
  "Elle: Inferring Isolation Anomalies from Experimental Observations" (VLDB 2020). It infers
  each key's version order from the reads, the ww/wr/rw dependency graph (and real-time
  edges), finds its cycles (G0, G1c, G2 with G-single) and the other anomalies (G1a, G1b,
  lost and duplicated appends, garbage reads, incompatible orders, internal
  inconsistencies). ``test_elle.py`` tests it on hand-written histories and on random
  serial executions (always valid).
* ``listappend.py``: the workload: an app with a table ``lists`` and a mutation
  ``lists:txn(ops)``, a generator of random transactions over a few hot keys, and a runner
  that records the history (errors proving no commit are ``fail``, anything else unknown is
  ``info``) and ends with a read of every key.
* ``test_isolation_embedded.py``: thousands of concurrent transactions through
  ``reactive.open(...)``; the checker must find nothing, real-time order included (strict
  serializability). Then the same workload with ``unsafe_skip_validation=1`` (the committer
  skips conflict checks): the checker must find anomalies, which proves it can fail.
* ``test_isolation_server.py``: the workload through ``python -m reactive.server``, over
  WebSocket (several ``reactive.client.Client``), over HTTP (``POST /api/mutation``), and
  over WebSocket while the server is killed (SIGKILL) and restarted twice: the clients'
  replays must apply each mutation exactly once and lose no acknowledged one.

Read-only transactions run half the time as the query ``lists:read`` (``db.query``,
``client.query``, ``POST /api/query``) rather than as the mutation.

Run them::

    .venv/bin/pytest tests/isolation

A longer run: ``REACTIVE_ELLE_TXNS`` sets the number of transactions of every run (default
4,000 embedded, 1,500 on PostgreSQL and MySQL, 2,000 over WebSocket or HTTP, 1,000 with
crashes), ``REACTIVE_ELLE_CONCURRENCY`` the number of concurrent workers (default 32; 16
over HTTP) and ``REACTIVE_ELLE_SEED`` the generator's seed::

    REACTIVE_ELLE_TXNS=100000 .venv/bin/pytest tests/isolation -k "not unsafe" -s

(``-s`` prints each run's statistics and the checker's summary; the unsafe run is capped at
4,000 transactions, enough to show anomalies.) On failure the assertion message is the
checker's report: the anomalies by kind, each with its transactions and, for a cycle, every
edge with the key and values that make it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from listappend import Server, start_server


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Path], Server]]:
    """``serve(app_dir)`` starts a server on a fresh SQLite database; stopped at the end."""
    started: list[Server] = []

    def start(app: Path) -> Server:
        server = start_server(app, tmp_path, f"server{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

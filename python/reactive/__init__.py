"""reactive: a reactive document database for Python.

Documents in tables, one ordered transaction log, multi-versioned indexes, serializable
transactions by optimistic concurrency, and queries that re-run and push new results when a
commit touches what they read: the ideas of the Convex backend, embedded in a Python process
(``await reactive.open(url, app=...)``) or served to the official Convex clients
(``python -m reactive.server``).

The names here are the public API (README, "Use it").
"""

from reactive._core import __version__
from reactive.crons import cron_jobs
from reactive.db import (
    UNSET,
    ActionCtx,
    Database,
    DatabaseReader,
    DatabaseWriter,
    MutationCtx,
    QueryCtx,
    Subscription,
    open,
)
from reactive.errors import ConvexError
from reactive.functions import (
    action,
    internal_action,
    internal_mutation,
    internal_query,
    mutation,
    query,
)
from reactive.http_router import http_action, http_router
from reactive.schema import define_schema, define_table, v
from reactive.values import Int64

__all__ = [
    "UNSET",
    "ActionCtx",
    "ConvexError",
    "Database",
    "DatabaseReader",
    "DatabaseWriter",
    "Int64",
    "MutationCtx",
    "QueryCtx",
    "Subscription",
    "__version__",
    "action",
    "cron_jobs",
    "define_schema",
    "define_table",
    "http_action",
    "http_router",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "mutation",
    "open",
    "query",
    "v",
]

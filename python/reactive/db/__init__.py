"""The embedded database: opening, functions, transactions, queries, subscriptions."""

from reactive.db.context import (
    UNSET,
    ActionCtx,
    Auth,
    DatabaseReader,
    DatabaseWriter,
    MutationCtx,
    QueryCtx,
)
from reactive.db.database import Database, open
from reactive.db.query import Expression, FilterBuilder, IndexRangeBuilder, Query
from reactive.db.subscription import Subscription

__all__ = [
    "UNSET",
    "ActionCtx",
    "Auth",
    "Database",
    "DatabaseReader",
    "DatabaseWriter",
    "Expression",
    "FilterBuilder",
    "IndexRangeBuilder",
    "MutationCtx",
    "Query",
    "QueryCtx",
    "Subscription",
    "open",
]

"""The admin surface: system functions the Convex CLI and tools call with the admin key.

``reactive.admin.cli`` holds the ``_system/cli/*`` functions (tables, table data,
environment variables) as Convex's backend names them; only callers holding the admin key
can run them (over the sync protocol or HTTP).
"""

from reactive.admin.cli import SYSTEM_FUNCTIONS, system_function

__all__ = ["SYSTEM_FUNCTIONS", "system_function"]

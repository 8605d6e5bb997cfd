"""``_system/dashboard/*``: the system queries the dashboard page subscribes to."""

from __future__ import annotations

from reactive.functions import Function

__all__ = ["DASHBOARD_FUNCTIONS"]

DASHBOARD_FUNCTIONS: dict[str, Function] = {}
"""Canonical path -> function, for admin callers."""

"""``/dashboard``: the operator's web page (routes added to the server's application)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from reactive.server.app import Server

__all__ = ["routes"]


def routes(server: Server) -> list[BaseRoute]:
    """The dashboard's routes."""
    return []

"""The server: ``python -m reactive.server --app DIR --db URL``.

Serves an app over the Convex sync protocol (WebSocket) and HTTP API on one port, so the
official Convex clients work against it unchanged (Convex's sync protocol).
"""

from reactive.server.app import Server, ServerConfig, create_app

__all__ = ["Server", "ServerConfig", "create_app"]

"""``/dashboard``: the operator's web page (routes added to the server's application).

The page is static (hand-written HTML, CSS and JavaScript modules in ``dashboard_assets``,
shipped in the package, no build step) and public. What it shows comes from admin-only
sources, called with the admin key the operator types in (kept in the tab's
``sessionStorage``), except the metrics, which are public:

* the ``_system/dashboard/*`` and ``_system/cli/*`` queries (:mod:`reactive.admin`), over
  ``POST /api/query`` and subscribed over the sync protocol (``/api/sync``, so the data
  pages are live);
* ``POST /api/query|mutation|action`` to run a function, ``GET
  /api/stream_function_logs`` (live logs), ``POST /api/update_environment_variables``;
* ``GET /dashboard/api/schema`` (here): the declared and the inferred schema;
* ``GET /metrics`` (public, as the server's).

Routes: ``GET /dashboard`` (and ``/dashboard/``) the page, ``GET /dashboard/assets/…`` its
files. Every response carries a Content-Security-Policy that allows scripts, styles and
connections to this origin only (no inline script), ``X-Content-Type-Options: nosniff``,
``Referrer-Policy: no-referrer`` and ``Cache-Control: no-cache`` (revalidated by ETag, so
an upgraded server's page is never stale).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reactive.admin.dashboard import render_declared_schema
from reactive.inference import infer_schema, render_schema
from reactive.server.http import RequestError

if TYPE_CHECKING:
    from reactive.server.app import Server

__all__ = ["ASSETS", "SECURITY_HEADERS", "routes"]

ASSETS = Path(__file__).resolve().parent / "dashboard_assets"
"""The page's files (``index.html`` and what it loads)."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
_RAW_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


class _Secured:
    """An ASGI app whose responses carry :data:`SECURITY_HEADERS` (replacing its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in _RAW_HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": headers + _RAW_HEADERS}
            await send(message)

        await self.app(scope, receive, send_secured)


def routes(server: Server) -> list[BaseRoute]:
    """The dashboard's routes."""

    async def page(request: Request) -> Response:
        headers = dict(SECURITY_HEADERS)
        host = request.headers.get("host", "")
        if _HOST.fullmatch(host):
            # 'self' covers ws:/wss: to this host in CSP3 browsers; older ones need it named.
            headers["Content-Security-Policy"] = CSP.replace(
                "connect-src 'self'", f"connect-src 'self' ws://{host} wss://{host}"
            )
        return FileResponse(
            ASSETS / "index.html", media_type="text/html; charset=utf-8", headers=headers
        )

    async def schema(request: Request) -> Response:
        """``GET /dashboard/api/schema``: ``{declared, inferred, tables}`` (admin key only)."""
        try:
            _, admin = await server.http._caller(request)
            if not admin:
                raise RequestError(
                    401, "Unauthenticated", "this route needs the admin key (Convex <key>)"
                )
        except RequestError as exc:
            return exc.response()
        db = server.db
        inferred = await infer_schema(db)
        return JSONResponse(
            {
                "declared": render_declared_schema(db.app.schema),
                "inferred": render_schema(inferred),
                "tables": [{"name": t.name, "documents": t.documents} for t in inferred],
            },
            headers={"Cache-Control": "no-store"},
        )

    return [
        Route("/dashboard", page, methods=["GET", "HEAD"]),
        Route("/dashboard/", page, methods=["GET", "HEAD"]),
        Route("/dashboard/api/schema", schema, methods=["GET"]),
        Mount("/dashboard/assets", app=_Secured(StaticFiles(directory=ASSETS)), name="dashboard"),
    ]

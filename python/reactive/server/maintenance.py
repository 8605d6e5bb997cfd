"""``/api/reactive/*``: what ``python -m reactive --url URL VERB`` asks a running server.

The verbs that have no Convex route (the rest use Convex's routes and ``_system/cli/*``
functions, as the Convex CLI does). Every route needs the admin key
(``Authorization: Convex <key>``; 401 otherwise) and answers JSON:

* ``GET /api/reactive/tables`` → ``{"tables": [{"name", "documents", "indexes":
  [{"name", "fields", "ready"}]}]}``, user and system tables alike;
* ``GET /api/reactive/schema`` → ``{"schema": text}``: a ``define_schema(...)`` inferred
  from the stored documents;
* ``POST /api/reactive/check`` → ``{"documents", "index_entries", "problems": [text]}``;
* ``POST /api/reactive/gc`` body ``{"keep_seconds": S}`` (default 60) →
  ``{"documents_deleted", "index_entries_deleted"}``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from reactive.server.http import RequestError

if TYPE_CHECKING:
    from reactive.server.app import Server

__all__ = ["routes"]


def routes(server: Server) -> list[BaseRoute]:
    """The maintenance routes of ``server``."""

    def admin_route(
        handler: Callable[[Request], Awaitable[dict[str, Any]]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                _, admin = await server.http._caller(request)
                if not admin:
                    raise RequestError(
                        401, "Unauthenticated", "this route needs the admin key (Convex <key>)"
                    )
                return JSONResponse(await handler(request))
            except RequestError as exc:
                refused: Response = exc.response()
                return refused

        return endpoint

    async def tables(request: Request) -> dict[str, Any]:
        engine = server.db._engine
        out = []
        for table in engine.tables():
            out.append(
                {
                    "name": table["name"],
                    "documents": engine.count_documents(table["name"]),
                    "indexes": [
                        {
                            "name": index["name"],
                            "fields": list(index["fields"]),
                            "ready": index["ready_since"] is not None,
                        }
                        for index in table["indexes"]
                    ],
                }
            )
        return {"tables": out}

    async def schema(request: Request) -> dict[str, Any]:
        from reactive.inference import infer_schema, render_schema

        return {"schema": render_schema(await infer_schema(server.db))}

    async def check(request: Request) -> dict[str, Any]:
        report = await server.db.check()
        return {
            "documents": report["documents"],
            "index_entries": report["index_entries"],
            "problems": [str(p) for p in report["problems"]],
        }

    async def gc(request: Request) -> dict[str, Any]:
        body = await server.http._body(request)
        keep = body.get("keep_seconds", 60.0)
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not math.isfinite(keep):
            raise RequestError(400, "BadJsonBody", "keep_seconds must be a finite number")
        if keep < 0:
            raise RequestError(400, "BadJsonBody", "keep_seconds must be >= 0")
        report = await server.db.gc(keep_s=float(keep))
        return {
            "documents_deleted": report.documents_deleted,
            "index_entries_deleted": report.index_entries_deleted,
        }

    return [
        Route("/api/reactive/tables", admin_route(tables), methods=["GET"]),
        Route("/api/reactive/schema", admin_route(schema), methods=["GET"]),
        Route("/api/reactive/check", admin_route(check), methods=["POST"]),
        Route("/api/reactive/gc", admin_route(gc), methods=["POST"]),
    ]

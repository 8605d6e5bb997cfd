"""The admin HTTP routes the Convex CLI uses against a self-hosted backend.

Every route here but ``GET /version`` needs the admin key (``Authorization: Convex
<key>``); without it the answer is 401 ``Unauthenticated`` (Convex's CLI stops on 401/403
instead of retrying).

* ``GET /version``: the server's version (plain text). Public, as Convex's is, like the
  server's ``/health``, ``/health/ready`` and ``/metrics`` (:mod:`reactive.server.http`).
* ``GET /api/stream_function_logs?cursor=MS``: a long poll for function runs after
  ``cursor`` (answers as soon as there is one, else after 60 s or ``timeout_s``), as
  ``{"entries": [FunctionExecutionJson], "newCursor": MS}`` in Convex's shape (what
  ``npx convex logs`` prints).
* ``POST /api/export/request/zip?includeStorage=BOOL``: start a snapshot export (400
  ``ExportInProgress`` while one runs); ``GET /api/export/zip/{ts}``: download it.
* ``POST /api/import/start_upload`` → ``{"uploadToken"}``;
  ``POST /api/import/upload_part?uploadToken=&partNumber=`` (raw bytes) → a part token;
  ``POST /api/import/finish_upload`` ``{import: {tableName?, mode, format}, uploadToken,
  partTokens}`` → ``{"importId"}``; ``POST /api/perform_import`` ``{importId}``;
  ``POST /api/cancel_import`` ``{importId}``; ``POST /api/import?format=&tableName=&mode=``
  (one request: the body is the file) → ``{"numWritten"}``.

The jobs themselves are :mod:`reactive.admin.jobs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from reactive import _core
from reactive.admin.jobs import Exporter, Importer, JobError
from reactive.observability import FunctionRun
from reactive.server.http import RequestError
from reactive.snapshot import SnapshotError

if TYPE_CHECKING:
    from reactive.server.app import Server

__all__ = ["AdminApi"]

LOG_POLL_S = 60.0
"""How long a log poll waits for a run (Convex's backend waits 60 s)."""
MAX_LOG_ENTRIES = 1000
_UDF_TYPES = {
    "query": "Query",
    "mutation": "Mutation",
    "action": "Action",
    "http": "HttpAction",
    "httpAction": "HttpAction",
}
_LEVELS = ("LOG", "DEBUG", "INFO", "WARN", "ERROR")
T = TypeVar("T")


def log_entry(run: FunctionRun) -> dict[str, Any]:
    """A run as Convex's ``FunctionExecutionJson`` (kind ``Completion``).

    ``timestamp`` and ``executionTime`` are seconds; log lines are structured
    ``{messages, level, timestamp (ms), isTruncated}``.
    """
    lines = []
    for line in run.log_lines:
        level, text = "LOG", line
        if line.startswith("["):
            head, _, rest = line.partition("] ")
            if head[1:] in _LEVELS:
                level, text = head[1:], rest
        lines.append(
            {
                "messages": [text],
                "level": level,
                "timestamp": int(run.started * 1000),
                "isTruncated": False,
            }
        )
    return {
        "kind": "Completion",
        "udfType": _UDF_TYPES.get(run.type, "Action"),
        "identifier": run.path,
        "componentPath": None,
        "logLines": lines,
        "timestamp": run.started,
        "cachedResult": False,
        "caller": run.caller or "",
        "executionTime": run.duration_s,
        "success": None,
        "error": run.error_message,
        "requestId": run.execution_id[:16],
        "executionId": run.execution_id,
        "usageStats": {},
        "willRetry": False,
        "executionTimestamp": run.started + run.duration_s,
        "identityType": "user" if run.caller else "unknown",
        "environment": "python",
        "cursor": run.cursor_ms,
    }


class AdminApi:
    """The admin routes of one server, and the export/import jobs behind them."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.exporter: Exporter | None = None
        self.importer: Importer | None = None

    async def open(self, storage_dir: Path) -> None:
        """Start the export and import jobs (files under ``storage_dir``)."""
        db = self.server.db
        self.exporter = Exporter(db, storage_dir / "exports")
        self.importer = Importer(db, storage_dir / "imports")
        await self.exporter.open()
        await self.importer.open()

    async def close(self) -> None:
        """Stop running jobs."""
        for job in (self.exporter, self.importer):
            if job is not None:
                await job.close()

    def routes(self) -> list[BaseRoute]:
        """The routes, for the application."""
        return [
            Route("/version", self.version, methods=["GET"]),
            Route("/api/stream_function_logs", self.stream_function_logs, methods=["GET"]),
            Route("/api/export/request/zip", self.request_export, methods=["POST"]),
            Route("/api/export/zip/{ts}", self.download_export, methods=["GET"]),
            Route("/api/import/start_upload", self.start_upload, methods=["POST"]),
            Route("/api/import/upload_part", self.upload_part, methods=["POST"]),
            Route("/api/import/finish_upload", self.finish_upload, methods=["POST"]),
            Route("/api/perform_import", self.perform_import, methods=["POST"]),
            Route("/api/cancel_import", self.cancel_import, methods=["POST"]),
            Route("/api/import", self.import_now, methods=["POST"]),
        ]

    async def _admin(self, request: Request) -> None:
        _, admin = await self.server.http._caller(request)
        if not admin:
            raise RequestError(
                401, "Unauthenticated", "this route needs the admin key (Convex <key>)"
            )

    async def _run(self, request: Request, handler: Any) -> Response:
        try:
            await self._admin(request)
            response: Response = await handler()
            return response
        except RequestError as exc:
            return exc.response()
        except JobError as exc:
            return JSONResponse({"code": exc.code, "message": str(exc)}, status_code=exc.status)
        except SnapshotError as exc:
            return JSONResponse({"code": "ImportFailed", "message": str(exc)}, status_code=400)

    async def version(self, request: Request) -> Response:
        """``GET /version``: the server's version as plain text (public, as Convex's)."""
        return PlainTextResponse(_core.__version__)

    async def stream_function_logs(self, request: Request) -> Response:
        """``GET /api/stream_function_logs?cursor=MS[&timeout_s=S]`` (a long poll)."""

        async def handle() -> Response:
            cursor = _number(request.query_params.get("cursor", "0"), "cursor")
            timeout = min(
                _number(request.query_params.get("timeout_s", str(LOG_POLL_S)), "timeout_s"),
                LOG_POLL_S,
            )
            log = self.server.db.function_log
            runs = await _unless_disconnected(request, log.wait_after(cursor, max(0.0, timeout)))
            if runs is None:  # the client is gone: nothing to answer
                return Response(status_code=499)
            runs = runs[-MAX_LOG_ENTRIES:]
            new_cursor = runs[-1].cursor_ms if runs else max(cursor, 0.0)
            return JSONResponse({"entries": [log_entry(r) for r in runs], "newCursor": new_cursor})

        return await self._run(request, handle)

    async def request_export(self, request: Request) -> Response:
        """``POST /api/export/request/zip?includeStorage=BOOL``."""

        async def handle() -> Response:
            assert self.exporter is not None
            include = request.query_params.get("includeStorage", "false").lower() == "true"
            await self.exporter.request(include)
            return JSONResponse({})

        return await self._run(request, handle)

    async def download_export(self, request: Request) -> Response:
        """``GET /api/export/zip/{ts}``: the ZIP, as an attachment."""

        async def handle() -> Response:
            assert self.exporter is not None
            path = self.exporter.zip_path(request.path_params["ts"])
            return FileResponse(
                path,
                media_type="application/zip",
                headers={"Content-Disposition": f"attachment; filename={path.name}"},
            )

        return await self._run(request, handle)

    async def start_upload(self, request: Request) -> Response:
        """``POST /api/import/start_upload``."""

        async def handle() -> Response:
            assert self.importer is not None
            return JSONResponse({"uploadToken": self.importer.start_upload()})

        return await self._run(request, handle)

    async def upload_part(self, request: Request) -> Response:
        """``POST /api/import/upload_part?uploadToken=…&partNumber=N`` (raw bytes)."""

        async def handle() -> Response:
            assert self.importer is not None
            number = request.query_params.get("partNumber", "")
            part = int(number) if number.isdigit() else number
            try:
                token = await self.importer.upload_part(
                    request.query_params.get("uploadToken"), part, request.stream()
                )
            except ClientDisconnect:
                raise RequestError(408, "RequestTimeout", "the part did not arrive") from None
            return JSONResponse(token)

        return await self._run(request, handle)

    async def finish_upload(self, request: Request) -> Response:
        """``POST /api/import/finish_upload``."""

        async def handle() -> Response:
            assert self.importer is not None
            body = await self.server.http._body(request)
            spec = body.get("import")
            if not isinstance(spec, dict):
                raise RequestError(400, "BadJsonBody", "import must be an object")
            if spec.get("componentPath"):
                raise JobError("components are not supported: import into the root app")
            import_id = await self.importer.finish_upload(
                body.get("uploadToken"),
                body.get("partTokens"),
                format=spec.get("format"),
                mode=spec.get("mode") or "requireEmpty",
                table=spec.get("tableName"),
            )
            return JSONResponse({"importId": import_id})

        return await self._run(request, handle)

    async def perform_import(self, request: Request) -> Response:
        """``POST /api/perform_import`` ``{importId}``."""

        async def handle() -> Response:
            assert self.importer is not None
            body = await self.server.http._body(request)
            await self.importer.perform(body.get("importId"))
            return JSONResponse({})

        return await self._run(request, handle)

    async def cancel_import(self, request: Request) -> Response:
        """``POST /api/cancel_import`` ``{importId}``."""

        async def handle() -> Response:
            assert self.importer is not None
            body = await self.server.http._body(request)
            await self.importer.cancel(body.get("importId"))
            return JSONResponse({})

        return await self._run(request, handle)

    async def import_now(self, request: Request) -> Response:
        """``POST /api/import?format=F&tableName=T&mode=M``: the body is the whole file."""

        async def handle() -> Response:
            importer = self.importer
            assert importer is not None
            params = request.query_params
            fmt = params.get("format")
            suffix = {"zip": ".zip", "jsonLines": ".jsonl", "jsonArray": ".json", "csv": ".csv"}
            if fmt not in suffix:
                raise JobError(f"unknown import format {fmt!r}", "InvalidImportFormat")
            path = importer.directory / f"direct-{secrets.token_hex(8)}{suffix[fmt]}"
            try:
                with open(path, "wb") as f:
                    async for chunk in request.stream():
                        f.write(chunk)
            except ClientDisconnect:
                path.unlink(missing_ok=True)
                raise RequestError(408, "RequestTimeout", "the body did not arrive") from None
            written = await importer.run_now(
                path,
                format=fmt,
                mode=params.get("mode") or "requireEmpty",
                table=params.get("tableName"),
            )
            return JSONResponse({"numWritten": written})

        return await self._run(request, handle)


async def _unless_disconnected(request: Request, waiting: Awaitable[T]) -> T | None:
    """``waiting``'s result, or ``None`` as soon as the client disconnects.

    A long poll whose client went away (``npx convex logs`` stopped) would otherwise hold
    its task for the whole poll, and hold up a graceful shutdown behind it.
    """

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    wait = asyncio.ensure_future(waiting)
    gone = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({wait, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (wait, gone):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if wait.done() and not wait.cancelled():
        return wait.result()
    return None


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RequestError(400, "BadRequest", f"{name} must be a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise RequestError(400, "BadRequest", f"{name} must be a finite number")
    return value

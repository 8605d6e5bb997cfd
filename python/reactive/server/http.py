"""The HTTP API (spec §13): run functions, consistent reads, health.

A function that ran answers HTTP 200 with ``{"status": "success", "value": …}`` or
``{"status": "error", "errorMessage": …, "errorData"?: …}`` (``logLines`` when any). A
request that fails before a function runs (bad JSON, bad path, unknown function, refused
token, body too large, arguments that are not Convex values or nest too deeply) answers 4xx
with ``{"code": …, "message": …}``. An unknown function and an internal one answer the same
404 (Convex's wording), so the API does not tell which internal functions exist.

A function error's message is Convex's ``[Request ID: …] Server Error`` and, for
``ConvexError`` and the database's own errors (or any error with ``--dev``), ``Uncaught
<Error>: <message>`` (:func:`reactive.server.errors.error_message`).

Values are Convex JSON (``format: "convex_encoded_json"``, what the official clients ask
for) or the clean form (``format: "json"``, the default: int64 as decimal strings, bytes as
base64 strings).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from reactive import _core
from reactive.db.system import change_environment_variables
from reactive.errors import (
    FunctionNotFoundError,
    InvalidValueError,
    ReactiveError,
    TransactionTooOldError,
    ValidationError,
)
from reactive.functions import Function, FunctionKind, canonicalize_path
from reactive.server.errors import error_message
from reactive.sync.messages import PARSE_OFF_LOOP_BYTES, ProtocolError, decode_ts, encode_ts, loads
from reactive.sync.session import AuthFailure

if TYPE_CHECKING:
    from reactive.server.app import Server

__all__ = ["HttpApi"]

READY_TIMEOUT_S = 5.0
READY_GLOBAL = "health_ready"


_CONVEX_FORMATS = {"convex_encoded_json", "convex_json"}
_CLEAN_FORMATS = {"json", "convex_clean_json"}


def _not_found(path: str) -> str:
    return (
        f"Could not find public function for '{path}'. Did you forget to run "
        "`npx convex dev` or `npx convex deploy`?"
    )


class RequestError(Exception):
    """A request refused before any function ran."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> Response:
        """The JSON error response."""
        return JSONResponse({"code": self.code, "message": self.message}, status_code=self.status)


def _clean(fmt: Any) -> bool:
    if fmt is None:
        return True
    if not isinstance(fmt, str):
        raise RequestError(400, "BadFormat", f"format must be a string, not {fmt!r:.60}")
    if fmt in _CONVEX_FORMATS:
        return False
    if fmt in _CLEAN_FORMATS:
        return True
    raise RequestError(400, "BadFormat", f"unsupported format {fmt!r:.60}")


def _args_of(body: dict[str, Any]) -> Any:
    args = body.get("args", {})
    if isinstance(args, list):
        if len(args) != 1:
            raise RequestError(400, "BadArgs", "args must be an object or [object]")
        args = args[0]
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise RequestError(400, "BadArgs", "args must be an object or [object]")
    return args


def _short(exc: BaseException, limit: int = 200) -> str:
    """An error's text, its middle cut to keep ``limit`` characters (a deep path is long)."""
    text = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
    half = limit // 2
    return text if len(text) <= limit else f"{text[:half]}…{text[-half:]}"


class HttpApi:
    """The HTTP routes of one server."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def _body(self, request: Request) -> dict[str, Any]:
        limit = self.server.max_request_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise RequestError(413, "RequestTooLarge", f"the body is over {limit} bytes")
        data = bytearray()
        try:
            async for chunk in request.stream():
                data += chunk
                if len(data) > limit:
                    raise RequestError(413, "RequestTooLarge", f"the body is over {limit} bytes")
        except ClientDisconnect:
            # The client went away, or sent nothing for body_timeout_s (the transport has
            # answered 408 and closed): nobody reads this response.
            raise RequestError(408, "RequestTimeout", "the request body did not arrive") from None
        if not data:
            return {}
        try:
            raw = bytes(data)
            # A large body is parsed on a thread: the loop keeps serving other clients.
            body = (
                await asyncio.to_thread(loads, raw)
                if len(raw) >= PARSE_OFF_LOOP_BYTES
                else loads(raw)
            )
        except ValueError as exc:
            raise RequestError(400, "BadJsonBody", f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise RequestError(400, "BadJsonBody", "the body is nested too deeply") from None
        if not isinstance(body, dict):
            raise RequestError(400, "BadJsonBody", "the body must be a JSON object")
        return body

    async def _caller(self, request: Request) -> tuple[dict[str, Any] | None, bool]:
        """The caller's identity, and whether it holds the admin key."""
        header = request.headers.get("authorization")
        try:
            identity = await self.server.authenticate.from_header_async(header)
        except AuthFailure as exc:
            raise RequestError(401, "Unauthenticated", str(exc)) from None
        admin = header is not None and header.strip().lower().startswith("convex ")
        return identity, admin

    def _function(self, path: Any, kind: FunctionKind | None, admin: bool = False) -> Function[Any]:
        if not isinstance(path, str):
            raise RequestError(400, "BadConvexFunctionIdentifier", "path must be a string")
        try:
            canonical = canonicalize_path(path)
        except FunctionNotFoundError as exc:
            raise RequestError(400, "BadConvexFunctionIdentifier", str(exc)) from None
        if admin and canonical.startswith("_system/"):
            from reactive.admin import system_function

            system = system_function(canonical)
            if system is None:
                raise RequestError(404, "FunctionNotFound", _not_found(canonical))
            if kind is not None and system.kind != kind:
                raise RequestError(
                    400, "WrongFunctionType", f"{canonical!r} is a {system.kind}, not a {kind}"
                )
            return system
        try:
            fn = self.server.db.app.lookup(canonical)
        except FunctionNotFoundError:
            raise RequestError(404, "FunctionNotFound", _not_found(canonical)) from None
        if fn.internal and not admin:
            raise RequestError(404, "FunctionNotFound", _not_found(canonical))
        if kind is not None and fn.kind != kind:
            raise RequestError(
                400, "WrongFunctionType", f"{canonical!r} is a {fn.kind}, not a {kind}"
            )
        return fn

    async def _run(
        self,
        fn: Function[Any],
        args: Any,
        identity: dict[str, Any] | None,
        clean: bool,
        ts: int | None = None,
        admin: bool = False,
    ) -> dict[str, Any]:
        runner = self.server.db._runner
        logs: list[str] = []
        try:
            value_args = _core.from_convex_json(args, "args")
        except (ValueError, RecursionError) as exc:  # InvalidValueError is a ValueError
            raise RequestError(
                400, "BadArgs", f"args is not a Convex value: {_short(exc)}"
            ) from None
        try:
            if fn.kind == "query":
                outcome = await runner.run_query(fn, value_args, identity, ts)
                logs = outcome.log_lines
                if outcome.error is not None:
                    raise outcome.error
                value = outcome.value
            elif fn.kind == "mutation":
                m = await runner.run_mutation(fn, value_args, identity)
                logs, value = m.log_lines, m.value
            else:
                a = await runner.run_action(fn, value_args, identity)
                logs, value = a.log_lines, a.value
            out: dict[str, Any] = {
                "status": "success",
                "value": json.loads(_core.convex_json(value, clean, result=True)),
            }
        except TransactionTooOldError as exc:
            raise RequestError(400, "OutOfRetention", str(exc)) from None
        except Exception as exc:
            logs = list(getattr(exc, "log_lines", None) or logs)
            # The admin sees full errors, as Convex shows them to admin callers.
            message, data = error_message(exc, dev=self.server.config.dev or admin)
            out = {"status": "error", "errorMessage": message}
            if data is not None and isinstance(exc, ReactiveError):
                data_value = getattr(exc, "data", None)
                try:
                    out["errorData"] = json.loads(_core.convex_json(data_value, clean, result=True))
                except InvalidValueError:
                    out["errorData"] = str(data_value)
        if logs:
            out["logLines"] = logs
        return out

    async def call(self, request: Request, kind: FunctionKind | None) -> Response:
        """``POST /api/query|mutation|action|function``."""
        try:
            body = await self._body(request)
            identity, admin = await self._caller(request)
            fn = self._function(body.get("path"), kind, admin)
            result = await self._run(
                fn, _args_of(body), identity, _clean(body.get("format")), admin=admin
            )
        except RequestError as exc:
            return exc.response()
        return JSONResponse(result)

    async def query_get(self, request: Request) -> Response:
        """``GET /api/query?path=…&args=<json>&format=…``."""
        try:
            identity, admin = await self._caller(request)
            fn = self._function(request.query_params.get("path"), "query", admin)
            raw = request.query_params.get("args") or "{}"
            try:
                args = loads(raw)
            except ValueError as exc:
                raise RequestError(400, "BadArgs", f"args is not valid JSON: {exc}") from None
            except RecursionError:
                raise RequestError(400, "BadArgs", "args is nested too deeply") from None
            clean = _clean(request.query_params.get("format"))
            result = await self._run(fn, _args_of({"args": args}), identity, clean, admin=admin)
        except RequestError as exc:
            return exc.response()
        return JSONResponse(result)

    async def run_path(self, request: Request) -> Response:
        """``POST /api/run/{module path}/{function}``: any kind, default format ``json``."""
        rest = request.path_params.get("path", "").strip("/")
        module, _, name = rest.rpartition("/")
        try:
            if not module or not name:
                raise RequestError(
                    400,
                    "BadConvexFunctionIdentifier",
                    f"/api/run/{rest[:200]} names no function: use /api/run/<module>/<function>",
                )
            body = await self._body(request)
            identity, admin = await self._caller(request)
            fn = self._function(f"{module}:{name}", None, admin)
            result = await self._run(
                fn, _args_of(body), identity, _clean(body.get("format")), admin=admin
            )
        except RequestError as exc:
            return exc.response()
        return JSONResponse(result)

    async def query_ts(self, request: Request) -> Response:
        """``POST /api/query_ts``: the snapshot the next consistent reads can use."""
        return JSONResponse({"ts": encode_ts(self.server.db.published_timestamp)})

    async def query_at_ts(self, request: Request) -> Response:
        """``POST /api/query_at_ts``: a query at an earlier snapshot (within retention)."""
        try:
            body = await self._body(request)
            identity, admin = await self._caller(request)
            fn = self._function(body.get("path"), "query", admin)
            try:
                ts = decode_ts(body.get("ts"), "ts")
            except ProtocolError as exc:
                raise RequestError(400, "BadTimestamp", str(exc)) from None
            if ts > self.server.db.published_timestamp:
                raise RequestError(400, "BadTimestamp", "ts is in the future")
            clean = _clean(body.get("format"))
            result = await self._run(fn, _args_of(body), identity, clean, ts, admin)
        except RequestError as exc:
            return exc.response()
        return JSONResponse(result)

    async def query_batch(self, request: Request) -> Response:
        """``POST /api/query_batch``: several queries at one snapshot."""
        try:
            body = await self._body(request)
            identity, admin = await self._caller(request)
            queries = body.get("queries")
            if not isinstance(queries, list):
                raise RequestError(400, "BadJsonBody", "queries must be an array")
            limit = self.server.config.max_query_batch
            if len(queries) > limit:
                raise RequestError(
                    400,
                    "TooManyRequests",
                    f"query_batch has {len(queries)} queries; at most {limit} are allowed "
                    "(--max-query-batch)",
                )
            ts = self.server.db.published_timestamp
            results = []
            for q in queries:
                if not isinstance(q, dict):
                    raise RequestError(400, "BadJsonBody", "each query must be an object")
                try:
                    fn = self._function(q.get("path"), "query", admin)
                    results.append(
                        await self._run(
                            fn, _args_of(q), identity, _clean(q.get("format")), ts, admin
                        )
                    )
                except RequestError as exc:
                    results.append({"status": "error", "errorMessage": exc.message})
        except RequestError as exc:
            return exc.response()
        return JSONResponse({"results": results})

    async def instance_name(self, request: Request) -> Response:
        """``GET /instance_name``."""
        return PlainTextResponse(self.server.instance_name)

    async def instance_version(self, request: Request) -> Response:
        """``GET /instance_version``."""
        return PlainTextResponse(_core.__version__)

    async def update_environment_variables(self, request: Request) -> Response:
        """``POST /api/update_environment_variables`` (admin key only).

        Body ``{"changes": [{"name", "value"}]}``, a ``null`` value removing the variable;
        all the changes in one transaction (the Convex CLI's ``env set/remove``).
        """
        try:
            body = await self._body(request)
            _, admin = await self._caller(request)
            if not admin:
                raise RequestError(
                    401, "Unauthenticated", "this route needs the admin key (Convex <key>)"
                )
            changes = body.get("changes")
            if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
                raise RequestError(400, "BadJsonBody", "changes must be a list of objects")
            pairs: list[tuple[str, str | None]] = []
            for change in changes:
                name, value = change.get("name"), change.get("value")
                if not isinstance(name, str) or not (value is None or isinstance(value, str)):
                    raise RequestError(
                        400, "BadJsonBody", "each change is {name: string, value: string|null}"
                    )
                pairs.append((name, value))
            try:
                await change_environment_variables(self.server.db, pairs)
            except ValidationError as exc:
                raise RequestError(400, "InvalidEnvironmentVariable", str(exc)) from None
        except RequestError as exc:
            return exc.response()
        return JSONResponse({})

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text (:mod:`reactive.observability` lists them)."""
        return Response(self.server.db.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def ready(self, request: Request) -> Response:
        """``GET /health/ready``: 200 after a read and a write round trip to persistence.

        503 with the reason when the database is closed, commits have stopped (an
        unknown commit outcome) or persistence does not answer within 5 s.
        """
        db = self.server.db
        if db._closed:
            return JSONResponse({"status": "closed"}, status_code=503)
        stopped = db._flusher.stopped_error()
        if stopped is not None:
            return JSONResponse({"status": "stopped", "error": str(stopped)}, status_code=503)
        persistence = db._persistence
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                t0 = time.perf_counter()
                await persistence.get_global(READY_GLOBAL)
                t1 = time.perf_counter()
                await persistence.set_global(READY_GLOBAL, str(time.time()).encode())
                t2 = time.perf_counter()
        except TimeoutError:
            return JSONResponse(
                {"status": "unavailable", "error": f"persistence took over {READY_TIMEOUT_S} s"},
                status_code=503,
            )
        except Exception as exc:
            return JSONResponse(
                {"status": "unavailable", "error": f"{type(exc).__name__}: {exc}"[:500]},
                status_code=503,
            )
        return JSONResponse(
            {
                "status": "ready",
                "read_ms": round((t1 - t0) * 1000, 3),
                "write_ms": round((t2 - t1) * 1000, 3),
            }
        )

    async def health(self, request: Request) -> Response:
        """``GET /health``: 200 while the database is open."""
        db = self.server.db
        if db._closed:
            return JSONResponse({"status": "closed"}, status_code=503)
        return JSONResponse({"status": "ok", "ts": str(db.published_timestamp)})

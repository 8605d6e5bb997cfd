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

The function routes (``POST /api/query|mutation|action|function`` and ``/api/run/…``) are
served by :meth:`HttpApi.asgi`, a plain ASGI callable the application dispatches to
before Starlette's middleware and router (:func:`reactive.server.app.create_app`): the
same responses (CORS headers included) for a fraction of the CPU. The Starlette handlers
below build their bodies with the same code.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

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
from reactive.server.transport import send_response
from reactive.sync.messages import PARSE_OFF_LOOP_BYTES, ProtocolError, decode_ts, encode_ts, loads
from reactive.sync.session import AuthFailure

if TYPE_CHECKING:
    from reactive.server.app import Server

__all__ = ["HttpApi"]

READY_TIMEOUT_S = 5.0
READY_GLOBAL = "health_ready"


_CONVEX_FORMATS = {"convex_encoded_json", "convex_json"}
_CLEAN_FORMATS = {"json", "convex_clean_json"}

#: The function routes :meth:`HttpApi.asgi` serves (``POST``), and the kind each runs.
FUNCTION_ROUTES: dict[str, FunctionKind | None] = {
    "/api/query": "query",
    "/api/mutation": "mutation",
    "/api/action": "action",
    "/api/function": None,
}
#: ``POST /api/run/<module path>/<function>``: any kind.
RUN_PREFIX = "/api/run/"

#: Canonical forms kept of function paths as clients spell them (a path is a pure
#: function of its text): up to this many spellings, each at most ``_PATH_CACHE_KEY``
#: characters; others are computed each time.
_PATH_CACHE_SIZE = 4096
_PATH_CACHE_KEY = 256

# The same text Starlette's JSONResponse renders (compact, UTF-8, no NaN), without a new
# encoder per call; the parser is the sync protocol's strict one (no NaN or Infinity).
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


def _loads(raw: bytes) -> Any:
    """``json.loads(raw)`` strictly (as ``reactive.sync.messages.loads``), one decoder kept."""
    # A body starting "{x" with x not NUL is UTF-8 to json.detect_encoding (no BOM, not
    # UTF-16/32): skip asking it.
    utf8 = raw[:1] == b"{" and raw[1:2] != b"\0"
    encoding = "utf-8" if utf8 else json.detect_encoding(raw)
    return _decode(raw.decode(encoding, "surrogatepass"))


def _parse(raw: bytes) -> dict[str, Any]:
    """A request body's JSON object (``{}`` when empty)."""
    if not raw:
        return {}
    try:
        body = _loads(raw)
    except ValueError as exc:
        raise RequestError(400, "BadJsonBody", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, "BadJsonBody", "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError(400, "BadJsonBody", "the body must be a JSON object")
    return body


async def _parse_body(raw: bytes) -> dict[str, Any]:
    """:func:`_parse`, on a thread for a large body (the loop keeps serving other clients)."""
    if len(raw) >= PARSE_OFF_LOOP_BYTES:
        return await asyncio.to_thread(_parse, raw)
    return _parse(raw)


# Response headers. CORS as Starlette's CORSMiddleware configured in ``create_app`` sends
# them on a simple (not preflight) request: the origin mirrored with credentials, and
# ``Vary: Origin`` whether or not the request had an origin.
_CONTENT_TYPE = (b"content-type", b"application/json")
_ALLOW_CREDENTIALS = (b"access-control-allow-credentials", b"true")
_VARY = (b"vary", b"Origin")
_ERROR_500 = b"Internal Server Error"
_ERROR_500_HEADERS = [
    (b"content-length", str(len(_ERROR_500)).encode()),
    (b"content-type", b"text/plain; charset=utf-8"),
]


def _not_found(path: str) -> str:
    return (
        f"Could not find public function for '{path}'. Did you forget to run "
        "`npx convex dev` or `npx convex deploy`?"
    )


def _json(text: str, status: int = 200) -> Response:
    """A JSON response of already-encoded ``text`` (the headers of ``JSONResponse``)."""
    return Response(text.encode(), status_code=status, media_type="application/json")


class RequestError(Exception):
    """A request refused before any function ran."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def text(self) -> str:
        """The JSON body: ``{"code": …, "message": …}``."""
        return _dumps({"code": self.code, "message": self.message})

    def response(self) -> Response:
        """The JSON error response."""
        return _json(self.text(), self.status)


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


def _run_path(rest: str) -> str:
    """The function path of ``/api/run/<rest>`` (``module/path/function``)."""
    rest = rest.strip("/")
    module, _, name = rest.rpartition("/")
    if not module or not name:
        raise RequestError(
            400,
            "BadConvexFunctionIdentifier",
            f"/api/run/{rest[:200]} names no function: use /api/run/<module>/<function>",
        )
    return f"{module}:{name}"


class HttpApi:
    """The HTTP routes of one server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        # path as sent -> (canonical path, the key App.lookup finds it under, or None).
        self._paths: dict[str, tuple[str, str | None]] = {}

    # -- the function routes, as a plain ASGI callable -------------------------------------

    def route(self, scope: Scope) -> tuple[FunctionKind | None, str | None] | None:
        """``(kind, /api/run path)`` when :meth:`asgi` serves ``scope``, else ``None``.

        Only ``POST`` to the exact function routes (``//api/…`` as ``/api/…``); anything
        else (other methods: 405, preflights, a trailing slash, a root path) is left to
        Starlette.
        """
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        if path in FUNCTION_ROUTES:
            return FUNCTION_ROUTES[path], None
        if path.startswith(RUN_PREFIX):
            return None, path[len(RUN_PREFIX) :]
        return None

    async def asgi(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        kind: FunctionKind | None,
        run: str | None = None,
    ) -> None:
        """Serve a function route (``run``: the ``/api/run/`` remainder) on raw ASGI.

        The responses are those of the Starlette handlers behind the app's middleware:
        CORS headers as ``CORSMiddleware`` adds them, and an unexpected exception answers
        ``500 Internal Server Error`` (text) and is raised on to the server, which logs
        it, as ``ServerErrorMiddleware`` does.
        """
        auth = origin = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if auth is None:
                    auth = value
            elif name == b"origin":
                if origin is None:
                    origin = value
            elif name == b"content-length" and length is None:
                length = value
        started = False
        try:
            try:
                path = _run_path(run) if run is not None else None
                raw = await self._receive(receive, length)
                body = _parse(raw) if len(raw) < PARSE_OFF_LOOP_BYTES else await _parse_body(raw)
                text = await self._call(
                    body, None if auth is None else auth.decode("latin-1"), kind, path
                )
                status = 200
            except RequestError as exc:
                text, status = exc.text(), exc.status
            payload = text.encode()
            headers = [(b"content-length", str(len(payload)).encode()), _CONTENT_TYPE]
            if origin is not None:
                headers += [_ALLOW_CREDENTIALS, (b"access-control-allow-origin", origin), _VARY]
            else:
                headers.append(_VARY)
            started = True
            await send_response(
                send,
                {"type": "http.response.start", "status": status, "headers": headers},
                {"type": "http.response.body", "body": payload},
            )
        except Exception:
            if not started:
                await send(
                    {"type": "http.response.start", "status": 500, "headers": _ERROR_500_HEADERS}
                )
                await send({"type": "http.response.body", "body": _ERROR_500})
            raise

    async def _receive(self, receive: Receive, length: bytes | None) -> bytes:
        """The request body from ASGI ``receive``, within ``max_request_bytes``."""
        limit = self.server.max_request_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise RequestError(413, "RequestTooLarge", f"the body is over {limit} bytes")
        message = await receive()
        data: bytes | bytearray = b""
        while True:
            if message["type"] != "http.request":
                # The client went away, or sent nothing for body_timeout_s (the transport
                # has answered 408 and closed): nobody reads this response.
                raise RequestError(408, "RequestTimeout", "the request body did not arrive")
            chunk = message.get("body", b"")
            if chunk:
                if data:
                    if not isinstance(data, bytearray):
                        data = bytearray(data)
                    data += chunk
                else:
                    data = chunk
                if len(data) > limit:
                    raise RequestError(413, "RequestTooLarge", f"the body is over {limit} bytes")
            if not message.get("more_body", False):
                return bytes(data)
            message = await receive()

    # -- shared by every route ---------------------------------------------------------------

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
        return await _parse_body(bytes(data))

    async def _identify(self, header: str | None) -> tuple[dict[str, Any] | None, bool]:
        """The identity of an ``Authorization`` header, and whether it is the admin key."""
        if header is None:
            return None, False
        try:
            identity = await self.server.authenticate.from_header_async(header)
        except AuthFailure as exc:
            raise RequestError(401, "Unauthenticated", str(exc)) from None
        admin = header.strip().lower().startswith("convex ")
        return identity, admin

    async def _caller(self, request: Request) -> tuple[dict[str, Any] | None, bool]:
        """The caller's identity, and whether it holds the admin key."""
        return await self._identify(request.headers.get("authorization"))

    def _resolve(self, path: str) -> tuple[str, str | None]:
        """``path``'s canonical form and the key ``App.lookup`` would find it under."""
        resolved = self._paths.get(path)
        if resolved is not None:
            return resolved
        try:
            canonical = canonicalize_path(path)
        except FunctionNotFoundError as exc:
            raise RequestError(400, "BadConvexFunctionIdentifier", str(exc)) from None
        try:
            key: str | None = canonicalize_path(canonical)  # what App.lookup does again
        except FunctionNotFoundError:
            key = None
        resolved = (canonical, key)
        if len(path) <= _PATH_CACHE_KEY and len(self._paths) < _PATH_CACHE_SIZE:
            self._paths[path] = resolved
        return resolved

    def _function(self, path: Any, kind: FunctionKind | None, admin: bool = False) -> Function[Any]:
        if not isinstance(path, str):
            raise RequestError(400, "BadConvexFunctionIdentifier", "path must be a string")
        canonical, key = self._resolve(path)
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
        fn = None if key is None else self.server.db.app.functions.get(key)
        if fn is None or (fn.internal and not admin):
            raise RequestError(404, "FunctionNotFound", _not_found(canonical))
        if kind is not None and fn.kind != kind:
            raise RequestError(
                400, "WrongFunctionType", f"{canonical!r} is a {fn.kind}, not a {kind}"
            )
        return fn

    async def _call(
        self,
        body: dict[str, Any],
        authorization: str | None,
        kind: FunctionKind | None,
        path: str | None = None,
    ) -> str:
        """Run the function a request body names (or ``path``): the response's JSON text."""
        if authorization is None:
            identity, admin = None, False
        else:
            identity, admin = await self._identify(authorization)
        fn = self._function(body.get("path") if path is None else path, kind, admin)
        args = _args_of(body)
        return await self._run(fn, args, identity, _clean(body.get("format")), admin=admin)

    async def _run(
        self,
        fn: Function[Any],
        args: Any,
        identity: dict[str, Any] | None,
        clean: bool,
        ts: int | None = None,
        admin: bool = False,
    ) -> str:
        """Run ``fn``: the JSON text of ``{"status": …, …}``."""
        runner = self.server.db._runner
        logs: list[str] = []
        try:
            value_args = _core.from_convex_json(args, "args")
        except (ValueError, RecursionError) as exc:  # InvalidValueError is a ValueError
            raise RequestError(
                400, "BadArgs", f"args is not a Convex value: {_short(exc)}"
            ) from None
        try:
            kind = fn.kind
            if kind == "mutation":
                m = await runner.run_mutation(fn, value_args, identity)
                logs, value = m.log_lines, m.value
            elif kind == "query":
                outcome = await runner.run_query(fn, value_args, identity, ts)
                logs = outcome.log_lines
                if outcome.error is not None:
                    raise outcome.error
                value = outcome.value
            else:
                a = await runner.run_action(fn, value_args, identity)
                logs, value = a.log_lines, a.value
            # Convex JSON text from the core, spliced in as it is (valid compact JSON).
            text = '{"status":"success","value":' + _core.convex_json(value, clean, result=True)
        except TransactionTooOldError as exc:
            raise RequestError(400, "OutOfRetention", str(exc)) from None
        except Exception as exc:
            logs = list(getattr(exc, "log_lines", None) or logs)
            # The admin sees full errors, as Convex shows them to admin callers.
            message, data = error_message(exc, dev=self.server.config.dev or admin)
            out: dict[str, Any] = {"status": "error", "errorMessage": message}
            if data is not None and isinstance(exc, ReactiveError):
                data_value = getattr(exc, "data", None)
                try:
                    out["errorData"] = json.loads(_core.convex_json(data_value, clean, result=True))
                except InvalidValueError:
                    out["errorData"] = str(data_value)
            if logs:
                out["logLines"] = logs
            return _dumps(out)
        if logs:
            return text + ',"logLines":' + _dumps(logs) + "}"
        return text + "}"

    # -- the Starlette handlers ------------------------------------------------------------

    async def call(self, request: Request, kind: FunctionKind | None) -> Response:
        """``POST /api/query|mutation|action|function`` (:meth:`asgi` serves these first)."""
        try:
            body = await self._body(request)
            text = await self._call(body, request.headers.get("authorization"), kind)
        except RequestError as exc:
            return exc.response()
        return _json(text)

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
            text = await self._run(fn, _args_of({"args": args}), identity, clean, admin=admin)
        except RequestError as exc:
            return exc.response()
        return _json(text)

    async def run_path(self, request: Request) -> Response:
        """``POST /api/run/{module path}/{function}``: any kind, default format ``json``."""
        try:
            path = _run_path(request.path_params.get("path", ""))
            body = await self._body(request)
            text = await self._call(body, request.headers.get("authorization"), None, path)
        except RequestError as exc:
            return exc.response()
        return _json(text)

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
            text = await self._run(fn, _args_of(body), identity, clean, ts, admin)
        except RequestError as exc:
            return exc.response()
        return _json(text)

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
            # A query that finishes within the loop guard's budget runs inline and returns
            # without suspending: the batch goes straight on to its next entry. The
            # runner's budget per turn of the loop bounds how long such entries hold it,
            # and queues the rest behind other callers' runs (executor.wait_turn).
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
                    results.append(_dumps({"status": "error", "errorMessage": exc.message}))
        except RequestError as exc:
            return exc.response()
        return _json('{"results":[' + ",".join(results) + "]}")

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
        unknown commit outcome) or persistence does not answer within 5 s. In a cluster
        the answer names this process's ``role`` (``leader`` or ``follower``) and
        ``node``; a follower makes only the read (it writes nothing), reports its
        ``lag_ms`` (how long it has been behind a commit it heard of:
        ``LogFollower.lag_ts``), and is 503 once it stopped following.
        """
        db = self.server.db
        cluster = self.server.cluster
        role = {} if cluster is None else {"role": cluster.role, "node": cluster.node_id}
        if db._closed:
            return JSONResponse({"status": "closed", **role}, status_code=503)
        stopped = db._flusher.stopped_error()
        if stopped is not None:
            return JSONResponse(
                {"status": "stopped", "error": str(stopped), **role}, status_code=503
            )
        persistence = db._persistence
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                t0 = time.perf_counter()
                await persistence.get_global(READY_GLOBAL)
                t1 = time.perf_counter()
                # A follower writes nothing: its read round trip is the check.
                if not db.following:
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
        follower = db._follower
        lag = {} if follower is None else {"lag_ms": round(follower.lag_ts / 1e6, 3)}
        return JSONResponse(
            {
                "status": "ready",
                "read_ms": round((t1 - t0) * 1000, 3),
                "write_ms": round((t2 - t1) * 1000, 3),
                **role,
                **lag,
            }
        )

    async def health(self, request: Request) -> Response:
        """``GET /health``: 200 while the database is open."""
        db = self.server.db
        if db._closed:
            return JSONResponse({"status": "closed"}, status_code=503)
        return JSONResponse({"status": "ok", "ts": str(db.published_timestamp)})

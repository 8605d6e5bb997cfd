"""Serving an app's HTTP actions: ``/http/…`` on the main port, the root of ``--site-port``.

The app's ``http`` module routes requests (:mod:`reactive.http_router`, Convex's
``httpRouter``); this module answers them, as Convex serves HTTP actions on a deployment's
``.convex.site`` origin (and under ``/http/`` of its API origin):

* The request reaches the handler as a Starlette ``Request`` whose URL is the one the client
  asked for (``/http/hook`` on the main port); routing uses the path after ``/http``.
* No route for the path and method: 404 ``{"code": "NotFound", "message": "No HttpAction
  routed for /path"}`` (an ``OPTIONS`` preflight included: a route for ``OPTIONS`` handles
  preflights, as in Convex). An app without an ``http`` module answers 404 saying so.
* ``Authorization: Bearer <jwt>`` (or ``Convex <admin key>``) is checked as on the function
  routes: ``ctx.auth.get_user_identity()`` is its identity; a refused token answers 401
  ``{"code": "Unauthenticated", …}`` before the handler runs. Other schemes (``Basic``…)
  are left to the handler.
* The request body is limited to ``max_http_action_body_bytes`` (default 20 MiB, Convex's
  limit): a larger ``Content-Length`` answers 413 at once; a body streamed past the limit
  makes the handler's read (``request.stream()``, ``body()``, ``json()``…) raise
  :class:`RequestBodyTooLargeError`, and the request answers 413 unless the handler
  answered first. The server's body time-out applies as to every request.
* The handler runs as an action (:meth:`reactive.db.runner.Runner.run_http_action`): on a
  worker thread, within the action time limit (which also covers streaming the response),
  logged in the function log and the function metrics with type ``httpAction``.
* An exception before the response started answers 500 ``{"code": "ServerError",
  "message": …}`` (the message redacted to ``[Request ID: …] Server Error`` as for other
  functions, unless ``--dev`` or the error is the database's own), and is logged; a
  ``ConvexError`` adds its data as ``data``. A handler returning something that is not a
  ``Response`` is such an error. After the response started, the connection is closed.

No CORS headers are added: the app's handlers set them (see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reactive.errors import ConvexError, FunctionError, LimitExceededError, ReactiveError
from reactive.http_router import ROUTABLE_HTTP_METHODS, HttpRouter
from reactive.server.errors import error_message
from reactive.sync.session import AuthFailure

if TYPE_CHECKING:
    from reactive.server.app import Server

__all__ = [
    "DEFAULT_MAX_HTTP_ACTION_BODY_BYTES",
    "HttpActions",
    "HttpActionsMount",
    "RequestBodyTooLargeError",
]

log = logging.getLogger("reactive.server")

DEFAULT_MAX_HTTP_ACTION_BODY_BYTES = 20 << 20
"""Largest HTTP action request body (bytes): 20 MiB, Convex's ``HTTP_ACTION_BODY_LIMIT``."""

SITE_SHUTDOWN_S = 3.0
"""How long stopping the ``--site-port`` listener waits for its requests (seconds)."""


class RequestBodyTooLargeError(LimitExceededError):
    """An HTTP action's request body passed ``max_http_action_body_bytes`` (answers 413)."""


def _json(status: int, body: dict[str, Any]) -> list[Message]:
    data = json.dumps(body).encode()
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        },
        {"type": "http.response.body", "body": data},
    ]


def _on_loop(
    loop: asyncio.AbstractEventLoop, fn: Callable[..., Coroutine[Any, Any, Any]]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``fn`` callable from any thread's event loop: it runs on ``loop`` (the server's)."""

    async def call(*args: Any) -> Any:
        if asyncio.get_running_loop() is loop:
            return await fn(*args)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(*args), loop))

    return call


class _Exchange:
    """One request's receive and send, limited and watched, usable from a worker thread."""

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self._receive = receive
        self._send = send
        self.limit = limit
        self.received = 0
        self.too_large = False
        self.started = False
        loop = asyncio.get_running_loop()
        self.receive: Receive = _on_loop(loop, self._limited_receive)
        self.send: Send = _on_loop(loop, self._tracked_send)

    def _refuse(self) -> RequestBodyTooLargeError:
        self.too_large = True
        return RequestBodyTooLargeError(
            f"the request body is over {self.limit} bytes (--max-http-action-body-bytes)"
        )

    async def _limited_receive(self) -> Message:
        if self.too_large:
            raise self._refuse()
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise self._refuse()
        return message

    async def _tracked_send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class HttpActions:
    """The HTTP actions of one server: routing, limits, auth, errors, the site listener."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._site: Any = None
        self._site_task: asyncio.Task[None] | None = None

    def router(self) -> HttpRouter | None:
        """The app's router, or ``None`` when the app has no ``http`` module.

        Raises:
            ValueError: the ``http`` module's ``http`` (or ``default``) is not an
                ``http_router()``.
        """
        routes = self.server.db.app.http
        if routes is None:
            return None
        if not isinstance(routes, HttpRouter):
            raise ValueError(
                "the app's http.py must define `http = http_router()` (from reactive import "
                f"http_router); found {type(routes).__name__}"
            )
        return routes

    async def open(self) -> None:
        """Check the router; start the ``site_port`` listener when configured.

        Raises:
            ValueError: the app's ``http`` module is not an ``http_router()``.
            OSError: the site port cannot be bound.
        """
        self.router()
        config = self.server.config
        if config.site_port is None:
            return
        from reactive.server.transport import http_protocol

        sock = socket.socket(socket.AF_INET6 if ":" in config.site_host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((config.site_host, config.site_port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        uv = uvicorn.Config(
            self.site_app(),
            http=http_protocol(config),
            timeout_keep_alive=int(config.header_timeout_s),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(SITE_SHUTDOWN_S),
        )
        site = _SiteServer(uv)
        self._site = site
        self._site_task = asyncio.get_running_loop().create_task(
            site.serve(sockets=[sock]), name="reactive-site-port"
        )
        while not site.started:
            if self._site_task.done():
                self._site_task.result()  # its error
                raise RuntimeError("the site port listener stopped at start-up")
            await asyncio.sleep(0.01)
        log.info("serving HTTP actions on http://%s:%d", config.site_host, config.site_port)

    async def close(self) -> None:
        """Stop the site listener (its requests get ``SITE_SHUTDOWN_S`` to finish)."""
        task, site = self._site_task, self._site
        self._site_task = self._site = None
        if task is None or site is None:
            return
        site.should_exit = True
        try:
            await asyncio.wait_for(task, SITE_SHUTDOWN_S + 5.0)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        except Exception as exc:
            log.warning("stopping the site port listener failed: %s", exc)

    def site_app(self) -> ASGIApp:
        """The ASGI app of the site port: the HTTP actions at its root."""

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                await self.serve(scope, receive, send, scope.get("path") or "/")
            elif scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})

        return app

    async def serve(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Answer one HTTP request for the action routed at ``path``."""
        try:
            await self._serve(scope, receive, send, path)
        except _Answer as answer:
            for message in _json(answer.status, answer.body):
                await send(message)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        server = self.server
        if server._db is None:
            raise _Answer(503, "Unavailable", "the server is starting or stopping")
        try:
            router = self.router()
        except ValueError as exc:
            raise _Answer(500, "InvalidHttpRouter", str(exc)) from None
        if router is None:
            raise _Answer(
                404,
                "NotFound",
                f"No HttpAction routed for {path[:200]}: the app has no http.py "
                "(define `http = http_router()` there)",
            )
        method = str(scope.get("method", "GET")).upper()
        match = (
            router.lookup(path, method)
            if method in ROUTABLE_HTTP_METHODS or method == "HEAD"
            else None
        )
        if match is None:
            raise _Answer(404, "NotFound", f"No HttpAction routed for {path[:200]}")
        action, routed_method, route = match
        request = Request(scope)
        limit = server.config.max_http_action_body_bytes
        length = request.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > limit:
            raise _Answer(
                413,
                "RequestTooLarge",
                f"the request body is over {limit} bytes (--max-http-action-body-bytes)",
            )
        header = request.headers.get("authorization")
        identity = None
        if header and header.strip().partition(" ")[0].lower() in ("bearer", "convex"):
            try:
                identity = await server.authenticate.from_header_async(header)
            except AuthFailure as exc:
                raise _Answer(401, "Unauthenticated", str(exc)) from None
        exchange = _Exchange(receive, send, limit)
        request = Request(scope, exchange.receive)

        async def respond(response: Any) -> None:
            await response(scope, exchange.receive, exchange.send)

        name = f"{routed_method} {route}"
        try:
            await server.db._runner.run_http_action(action, name, request, identity, respond)
        except Exception as exc:
            if exchange.started:
                log.warning("HTTP action %s failed while sending its response: %s", name, exc)
                return
            if exchange.too_large or isinstance(exc, RequestBodyTooLargeError):
                raise _Answer(413, "RequestTooLarge", exchange._refuse().args[0]) from None
            dev = server.config.dev
            message, data = error_message(exc, dev=dev)
            if dev or (isinstance(exc, ReactiveError) and not isinstance(exc, FunctionError)):
                # error_message logged the redacted ones in full already.
                log.warning("HTTP action %s failed: %s: %s", name, type(exc).__name__, exc)
            body: dict[str, Any] = {"code": "ServerError", "message": message}
            if data is not None and isinstance(exc, ConvexError):
                body["data"] = json.loads(data)
            raise _Answer(500, body=body) from None


class _Answer(Exception):
    """A JSON answer of the HTTP action routes (raised, then sent)."""

    def __init__(
        self, status: int, code: str = "", message: str = "", body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body if body is not None else {"code": code, "message": message}


class HttpActionsMount:
    """ASGI middleware: ``/http/…`` goes to the HTTP actions, everything else on.

    It sits outside the API's CORS middleware: HTTP actions set their own CORS headers.
    """

    def __init__(self, app: ASGIApp, actions: HttpActions) -> None:
        self.app = app
        self.actions = actions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``/http/…`` as an HTTP action; pass anything else to the app."""
        if scope["type"] == "http":
            path: str = scope.get("path", "")
            if path.startswith("/http/"):
                await self.actions.serve(scope, receive, send, path[len("/http") :])
                return
        await self.app(scope, receive, send)


class _SiteServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the main server (whose shutdown stops it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

"""The ASGI application: the sync protocol over WebSocket and the HTTP API on one port.

Routes: ``/api/sync`` and ``/api/{version}/sync`` (WebSocket, spec §2), the function routes
of spec §13, ``/instance_name``, ``/instance_version``, ``/health`` (alive),
``/health/ready`` (a read and a write round trip to persistence) and ``/metrics``
(Prometheus text), these five public (no key), the admin routes of
:mod:`reactive.server.admin_api` (``/version`` public, the others for the admin key), and
the app's HTTP actions under ``/http/``
(:mod:`reactive.server.http_actions`; with ``site_port``, also at the root of that port).
``/api/*`` answers CORS as Convex does (the request's origin mirrored, credentials
allowed, preflights cached for a day). A path starting with ``//`` (a deployment URL with
a trailing slash) is served as if it had one slash. ``POST`` to the function routes
(``/api/query``, ``/api/mutation``, ``/api/action``, ``/api/function``, ``/api/run/…``) is
served before Starlette's middleware and router, on plain ASGI
(:meth:`reactive.server.http.HttpApi.asgi`, the same responses).

The database opens in the application's lifespan and closes (queued commits persisted) on
shutdown; open sockets are closed with code 1012 so clients reconnect to the next server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

import reactive
from reactive.cluster.node import CALL_PATH, COMMIT_PATH, ClusterNode
from reactive.cluster.protocol import check_key
from reactive.db.database import Database
from reactive.db.storage import DEFAULT_MAX_UPLOAD_BYTES
from reactive.db.system import ensure_system_tables, prune_session_requests
from reactive.persistence import sqlite_path
from reactive.server import dashboard, landing, maintenance
from reactive.server import storage as file_storage
from reactive.server.admin_api import AdminApi
from reactive.server.auth import Authenticator
from reactive.server.connection import Connection
from reactive.server.devmode import Reloader
from reactive.server.http import HttpApi
from reactive.server.http_actions import (
    DEFAULT_MAX_HTTP_ACTION_BODY_BYTES,
    HttpActions,
    HttpActionsMount,
)
from reactive.server.providers import Providers, parse_providers
from reactive.server.queries import QueryCache

__all__ = ["Server", "ServerConfig", "create_app"]

log = logging.getLogger("reactive.server")

DEFAULT_MAX_FRAME_BYTES = 16 << 20
CLOSE_TIMEOUT_S = 10.0
"""How long shutdown waits for the database to write what is queued."""
PING_SWEEP_BATCH = 1000
"""Sockets the once-a-second ping and stalled-send check visits between two yields to the
event loop (10,000 sockets in one go held it for about 90 ms)."""
#: Exit status of a cluster process that must start over (EX_TEMPFAIL).
EXIT_RESTART = 75


def _exit_for_restart(reason: str) -> None:
    """A cluster process cannot serve its role any more: exit at once (status 75).

    A leader that lost its lease can no longer commit (another leads, with a higher
    epoch); a follower that stopped following (a gap in the log) serves stale reads. Its
    clients reconnect to another process, and its supervisor restarts it: it then follows
    the current leader from a fresh load. At once, without closing: a graceful close would
    wait on the database it lost. Kubernetes' controllers exit the same way when they
    lose their leader election.
    """
    log.critical("exiting (status %d) to be restarted: %s", EXIT_RESTART, reason)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_RESTART)


SWITCH_INTERVAL_S = 0.001
GC_GEN0_THRESHOLD = 10_000
"""The cyclic collector's first threshold in a server (Python's default is 700).

Python runs a young-generation collection each time 700 more container objects (dicts,
lists, coroutines, futures) were made than freed. A server under load has thousands of
them alive at any moment in the requests under way, so at 700 it collects every few
hundred requests, and each collection promotes the requests' live objects to the older
generations, whose full collections then walk every object of the process (17 ms each
with the example app loaded). Measured with 64 HTTP clients creating documents: 5.7 % of
the server's CPU went to the collector at 700, under 0.2 % at 10,000, with
about 6 % more creates per second. Garbage without cycles is freed at once either way (by
reference counting); only cyclic garbage waits longer, at most this many objects.
"""


@dataclass
class ServerConfig:
    """What a server serves and how.

    Attributes:
        db_url: The database URL (``sqlite:///…``).
        app: The app (directory, package name, module).
        max_frame_bytes: Largest WebSocket frame or HTTP body accepted (bytes).
        admin_key: Key accepted in ``Admin`` tokens (``Authorization: Convex <key>``).
        jwt_key: Key to verify user JWTs with (HS256 secret or PEM public key).
        jwt_issuer: Required issuer of user JWTs.
        jwt_audience: Required audience of user JWTs.
        instance_name: What ``/instance_name`` answers.
        open_options: Extra options for :func:`reactive.open` (``function_time_limit_s``,
            ``action_time_limit_s``, ``retention_s``...).
        dev: Development mode: clients see the full text of every function error (else
            errors that are not ``ConvexError`` or the database's own read
            ``Server Error`` with a request id, and the full text goes to the log).
        max_connections: Open connections (HTTP and WebSocket) served at once; more are
            refused with HTTP 503.
        header_timeout_s: Seconds a connection may take to send a request's headers
            (from connect, or from the previous response); then it is closed.
        body_timeout_s: Seconds a request body may go without sending a byte; then the
            request answers 408 and the connection is closed.
        send_timeout_s: Seconds a WebSocket send may wait for a client that does not
            read; then the socket is closed.
        max_inflight_actions: Actions one socket may have running; more fail with
            ``TooManyRequestsError``.
        max_queued_mutations: Mutations one socket may have queued; more close the
            socket (1013, the client reconnects and resends).
        max_queries_per_socket: Queries one socket's query set may hold; more end the
            socket with a ``FatalError``.
        max_query_batch: Entries of one ``POST /api/query_batch``; more answer 400.
        url: The URL clients reach the server at (what ``npx convex function-spec``
            prints), when known.
        storage_dir: Where files live: exports, imports being uploaded (default: a
            ``storage`` folder beside the SQLite file; ``.reactive/storage`` for other
            backends). File storage keeps its bytes there too (``files/``).
        max_upload_bytes: Largest file a ``POST /api/storage/upload`` accepts (bytes;
            default 1 GiB); larger ones answer 413 and store nothing.
        max_http_action_body_bytes: Largest HTTP action request body (bytes; 20 MiB as
            Convex); larger answers 413.
        site_port: A second port serving only the app's HTTP actions, at its root (as
            Convex's ``.convex.site`` origin), or ``None``.
        site_host: The address the site port listens on.
        cluster_key: Run as one process of a cluster on a PostgreSQL or MySQL database
            shared with other processes started with the same key
            (:mod:`reactive.cluster`), or ``None``: this process alone.
        cluster_advertise_url: Where the other processes of the cluster reach this one
            (default ``url``).
        cluster_lease_timeout_s: In a cluster, how long the database server keeps the
            writer lease of a leader it no longer hears from before another process may
            take it (seconds, 1 to 3600; ``reactive.open``'s ``lease_timeout_s``). The
            leader checks its lease every third of it, at most every second.
    """

    db_url: str
    app: Any = None
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    admin_key: str | None = None
    jwt_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    instance_name: str = "reactive"
    open_options: dict[str, Any] = field(default_factory=dict)
    dev: bool = False
    max_connections: int = 4096
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    send_timeout_s: float = 30.0
    max_inflight_actions: int = 64
    max_queued_mutations: int = 1000
    max_queries_per_socket: int = 10_000
    max_query_batch: int = 100
    url: str | None = None
    storage_dir: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_http_action_body_bytes: int = DEFAULT_MAX_HTTP_ACTION_BODY_BYTES
    site_port: int | None = None
    site_host: str = "127.0.0.1"
    cluster_key: str | None = None
    cluster_advertise_url: str | None = None
    cluster_lease_timeout_s: float = 3.0

    def storage_path(self) -> Path:
        """The storage directory (``storage_dir`` or its default)."""
        if self.storage_dir:
            return Path(self.storage_dir)
        if "://" not in self.db_url or self.db_url.startswith("sqlite:"):
            return sqlite_path(self.db_url).absolute().parent / "storage"
        return Path(".reactive/storage").absolute()


class Server:
    """One served database: its sockets and shared live queries."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.authenticate = Authenticator(
            admin_key=config.admin_key,
            jwt_key=config.jwt_key,
            jwt_issuer=config.jwt_issuer,
            jwt_audience=config.jwt_audience,
        )
        self.max_request_bytes = config.max_frame_bytes
        self.instance_name = config.instance_name
        self.ping_check_s = 1.0
        self.connections: set[Connection] = set()
        self._db: Database | None = None
        self._queries: QueryCache | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self.http = HttpApi(self)
        self.admin = AdminApi(self)
        self.http_actions = HttpActions(self)
        self.reloader: Reloader | None = None
        self.cluster: ClusterNode | None = None

    @property
    def db(self) -> Database:
        """The open database."""
        if self._db is None:
            raise RuntimeError("the server's database is not open")
        return self._db

    @property
    def queries(self) -> QueryCache:
        """The shared live queries."""
        if self._queries is None:
            raise RuntimeError("the server's database is not open")
        return self._queries

    async def open(self) -> None:
        """Open the database."""
        # User code runs on worker threads: hand the GIL back to the event loop serving
        # the sockets within 1 ms (Python's default is 5 ms), so a function computing on
        # its thread delays other clients by milliseconds, not tens of them.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        gen0, gen1, gen2 = gc.get_threshold()
        if 0 < gen0 < GC_GEN0_THRESHOLD:  # 0: the collector is off; leave it so
            gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
        options = {"storage_dir": self.config.storage_path(), **self.config.open_options}
        if self.config.cluster_key is not None:
            lease_timeout_s = self.config.cluster_lease_timeout_s
            options["lease_timeout_s"] = lease_timeout_s
            self.cluster = ClusterNode(
                self.config.db_url,
                check_key(self.config.cluster_key),
                self.config.cluster_advertise_url or self.config.url or "",
                lease_check_s=min(1.0, lease_timeout_s / 3),
            )
            self.cluster.on_promoted = self._promoted
            self.cluster.on_must_restart = _exit_for_restart

            async def open_db(follow: bool) -> Database:
                return await reactive.open(
                    self.config.db_url, app=self.config.app, follow=follow, **options
                )

            self._db = await self.cluster.open(open_db)
        else:
            self._db = await reactive.open(self.config.db_url, app=self.config.app, **options)
        if not self._db.following:
            await ensure_system_tables(self._db)
        self._db.public_url = self.config.url
        try:
            self.authenticate.providers = Providers(parse_providers(self._db.app.auth_providers))
            self.http_actions.router()  # a bad http.py fails at start-up
        except ValueError:
            await self._db.close()
            raise
        self._queries = QueryCache(self._db, dev=self.config.dev)
        if not self._db.following:
            await self.admin.open(self.config.storage_path())
        metrics = self._db.metrics
        if self.cluster is not None:
            cluster = self.cluster
            metrics.gauge(
                "reactive_cluster_leader",
                "1 while this process leads its cluster (holds the writer lease), else 0.",
                lambda: 1 if cluster.role == "leader" else 0,
            )
            metrics.gauge(
                "reactive_cluster_forwarded",
                "Transactions and mutation calls this process sent to the cluster's leader.",
                lambda: cluster.forwarded,
            )
            server_db = self._db

            def lag_seconds() -> float:
                follower = server_db._follower
                return 0.0 if follower is None else follower.lag_ts / 1e9

            metrics.gauge(
                "reactive_cluster_lag_seconds",
                "How long this follower has been behind a commit it heard of and has not "
                "applied yet (0 when caught up, and on the leader).",
                lag_seconds,
            )
        metrics.gauge(
            "reactive_websocket_connections",
            "Open sync sockets.",
            lambda: len(self.connections),
        )
        queries = self._queries
        metrics.gauge("reactive_subscriptions", "Live queries (shared).", lambda: len(queries))
        self._pruner = asyncio.get_running_loop().create_task(
            self._prune(), name="reactive-prune-session-requests"
        )
        self._pinger = asyncio.get_running_loop().create_task(self._ping(), name="reactive-ws-ping")
        await self.http_actions.open()
        app = self.config.app
        if self.config.dev and isinstance(app, (str, Path)) and Path(app).is_dir():
            self.reloader = Reloader(self, Path(app))
            self.reloader.start()

    async def _promoted(self) -> None:
        """This follower took the writer lease: the writer's server-side work starts."""
        db = self.db
        await ensure_system_tables(db)
        await self.admin.open(self.config.storage_path())

    async def _ping(self) -> None:
        # One timer for every socket (a task per socket costs wake-ups at fan-out scale),
        # which lets the loop serve others between sweeps of PING_SWEEP_BATCH sockets.
        while True:
            await asyncio.sleep(self.ping_check_s)
            connections = list(self.connections)
            for start in range(0, len(connections), PING_SWEEP_BATCH):
                if start:
                    await asyncio.sleep(0)
                now = time.monotonic()
                for conn in connections[start : start + PING_SWEEP_BATCH]:
                    conn.ping_due(now)

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(60.0)
            try:
                while await prune_session_requests(self.db) > 0:
                    await asyncio.sleep(0)
            except Exception as exc:
                log.warning("pruning old session requests failed: %s", exc)

    async def close(self) -> None:
        """Close every socket (1012: restart) and then the database."""
        if self.reloader is not None:
            await self.reloader.stop()
        await self.http_actions.close()  # the site port's requests end first
        for task in (self._pruner, self._pinger):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.admin.close()
        if self.cluster is not None:
            await self.cluster.close()
        if self._queries is not None:
            self._queries.close()
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(1012, "ServiceRestart"), 2.0)
        if self._db is not None:
            # Queued commits are written; a backend that hangs cannot hold the exit.
            try:
                await asyncio.wait_for(self._db.close(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.error("closing the database took over %s s; exiting anyway", CLOSE_TIMEOUT_S)

    async def websocket(self, websocket: WebSocket) -> None:
        """Serve one sync socket."""
        conn = Connection(self, websocket)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)


class _CollapseSlashes:
    """Serve ``//api/…`` as ``/api/…`` (clients given a URL with a trailing slash)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope.get("path", "")
            if path.startswith("//"):
                scope = dict(scope)
                scope["path"] = "/" + path.lstrip("/")
        await self.app(scope, receive, send)


class _Application(Starlette):
    """Starlette, with ``POST`` to the function routes served first (no middleware).

    :meth:`HttpApi.asgi <reactive.server.http.HttpApi.asgi>` answers them as the routes
    below would through the middleware (CORS headers, ``//`` paths, the 500 of an
    unexpected error), at a fraction of the CPU per request.
    """

    api: HttpApi
    # ``POST /_cluster/commit`` of a cluster's process: between processes, so no CORS, and
    # served without the middleware too (it cost the leader about 8 % of its CPU per
    # forwarded transaction).
    cluster_commit: Callable[[Request], Awaitable[Response]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.api.route(scope)
        if route is not None:
            await self.api.asgi(scope, receive, send, *route)
            return
        if (
            self.cluster_commit is not None
            and scope["type"] == "http"
            and scope["path"] == COMMIT_PATH
            and scope["method"] == "POST"
        ):
            try:
                response = await self.cluster_commit(Request(scope, receive))
            except Exception:
                log.exception("POST %s failed", COMMIT_PATH)
                response = JSONResponse({"code": "InternalServerError"}, status_code=500)
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(config: ServerConfig) -> Starlette:
    """The ASGI application serving ``config``'s app and database."""
    server = Server(config)
    api = server.http

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.open()
        app.state.server = server
        try:
            yield
        finally:
            await server.close()

    async def query(request: Request) -> Response:
        if request.method == "GET":
            return await api.query_get(request)
        return await api.call(request, "query")

    async def mutation(request: Request) -> Response:
        return await api.call(request, "mutation")

    async def action(request: Request) -> Response:
        return await api.call(request, "action")

    async def function(request: Request) -> Response:
        return await api.call(request, None)

    routes = [
        WebSocketRoute("/api/sync", server.websocket),
        WebSocketRoute("/api/{version}/sync", server.websocket),
        Route("/api/query", query, methods=["GET", "POST"]),
        Route("/api/mutation", mutation, methods=["POST"]),
        Route("/api/action", action, methods=["POST"]),
        Route("/api/function", function, methods=["POST"]),
        Route("/api/run/{path:path}", api.run_path, methods=["POST"]),
        Route("/api/query_ts", api.query_ts, methods=["POST"]),
        Route("/api/query_at_ts", api.query_at_ts, methods=["POST"]),
        Route("/api/query_batch", api.query_batch, methods=["POST"]),
        Route("/instance_name", api.instance_name, methods=["GET"]),
        Route("/instance_version", api.instance_version, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/health/ready", api.ready, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route(
            "/api/update_environment_variables",
            api.update_environment_variables,
            methods=["POST"],
        ),
    ]
    if config.cluster_key is not None:

        async def cluster_call(request: Request) -> Response:
            if server.cluster is None:
                return JSONResponse({"code": "NotLeader"}, status_code=503)
            return await server.cluster.handle_call(request)

        async def cluster_commit(request: Request) -> Response:
            if server.cluster is None:
                return JSONResponse({"code": "NotLeader"}, status_code=503)
            return await server.cluster.handle_commit(request)

        routes.append(Route(CALL_PATH, cluster_call, methods=["POST"]))
        routes.append(Route(COMMIT_PATH, cluster_commit, methods=["POST"]))
    routes += server.admin.routes()
    routes += maintenance.routes(server)
    routes += file_storage.routes(server)
    routes += dashboard.routes(server)
    routes += landing.routes(server)
    middleware = [
        Middleware(_CollapseSlashes),
        # /http/… (HTTP actions) before the API's CORS: actions set their own headers.
        Middleware(HttpActionsMount, actions=server.http_actions),
        Middleware(
            CORSMiddleware,
            allow_origin_regex=".*",
            allow_credentials=True,
            allow_methods=["GET", "POST", "OPTIONS", "PATCH", "DELETE", "PUT"],
            allow_headers=["*"],
            max_age=86400,
        ),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        # Unknown routes and methods answer like every request-level failure (spec §13.2).
        status = getattr(exc, "status_code", 500)
        codes = {404: "NotFound", 405: "MethodNotAllowed"}
        return JSONResponse(
            {
                "code": codes.get(status, "BadRequest"),
                "message": f"{request.method} {request.url.path}: "
                + str(getattr(exc, "detail", "") or "request failed"),
            },
            status_code=status,
        )

    app = _Application(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={404: http_error, 405: http_error},
    )
    app.api = api
    if config.cluster_key is not None:
        app.cluster_commit = cluster_commit
    app.state.server = server
    return app

"""``python -m reactive.server``: serve an app over WebSocket and HTTP on one port.

Options: ``--app DIR`` (the app), ``--db URL`` (default ``$REACTIVE_DB_URL``, else an
embedded SQLite file under ``./.reactive/``), ``--host`` (127.0.0.1), ``--port`` (3210),
``--admin-key`` (``$REACTIVE_ADMIN_KEY``), ``--jwt-key`` (``$REACTIVE_JWT_KEY``: a shared
secret for HS256 tokens, or a PEM public key for RS256 and ES256 tokens), ``--jwt-issuer``
and ``--jwt-audience`` (the ``iss`` and ``aud`` such tokens must carry), ``--retention-seconds``
(``$REACTIVE_RETENTION_SECONDS``, default 60: how long old versions stay readable for
point-in-time reads before memory and persistence drop them), ``--log-level``,
``--site-port PORT`` (also serve the app's HTTP actions, ``/http/…`` on the main port, at
the root of this port on the same host: Convex's ``.convex.site`` origin),
``--cluster-key`` (``$REACTIVE_CLUSTER_KEY``: one process of a cluster on a shared
PostgreSQL or MySQL database, :mod:`reactive.cluster`), ``--cluster-lease-timeout``
(seconds the database keeps a silent leader's lease, default 3) and
``--cluster-advertise-url`` (where the other processes reach this one).

Limits and time-outs (each positive and finite; see :class:`~reactive.server.app.ServerConfig`):
``--dev`` (clients see the full text of every function error; else errors raised by the
app's own code read ``Server Error`` with a request id and go to the log in full),
``--max-connections`` (4096 open HTTP and WebSocket connections; more are refused with 503),
``--max-frame-bytes`` (16 MiB: the largest WebSocket frame and function-route body),
``--header-timeout-s`` (10: a connection must complete a request's headers this soon after
it opens or after its previous response, else it is closed), ``--body-timeout-s`` (10: a
request body that sends nothing this long answers 408), ``--send-timeout-s`` (30: a
WebSocket send to a client that does not read), ``--max-inflight-actions`` (64 per socket),
``--max-queued-mutations`` (1000 per socket), ``--max-queries-per-socket`` (10000),
``--max-query-batch`` (100 entries of ``/api/query_batch``),
``--max-http-action-body-bytes`` (20 MiB: larger HTTP action request bodies answer 413),
``--function-time-limit-s``
(1: queries and mutations) and ``--action-time-limit-s`` (600: actions);
``--slow-function-ms N`` logs every function run slower than N ms (logger
``reactive.slow``).

SIGTERM or SIGINT: stop accepting, close sockets (1012, clients reconnect), persist queued
commits, exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

__all__ = ["main"]

DEFAULT_DB = "sqlite:///.reactive/db.sqlite3"


def main(argv: list[str] | None = None) -> int:
    """Parse the options and serve until stopped."""
    import uvicorn

    from reactive.server.app import DEFAULT_MAX_FRAME_BYTES, ServerConfig, create_app
    from reactive.server.transport import WebSocketProtocol, http_protocol, raise_fd_limit

    defaults = ServerConfig(db_url="")

    parser = argparse.ArgumentParser(
        prog="python -m reactive.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--app", default=None, help="app directory or importable package")
    parser.add_argument(
        "--db",
        default=os.environ.get("REACTIVE_DB_URL", DEFAULT_DB),
        help=f"database URL: sqlite:///, postgresql://, mysql:// (default $REACTIVE_DB_URL, "
        f"else {DEFAULT_DB})",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=3210, help="port (default 3210)")
    parser.add_argument(
        "--admin-key",
        default=os.environ.get("REACTIVE_ADMIN_KEY"),
        help="the admin key: CLI, dashboard, admin routes (default $REACTIVE_ADMIN_KEY)",
    )
    parser.add_argument(
        "--jwt-key",
        default=os.environ.get("REACTIVE_JWT_KEY"),
        help="the key that verifies user tokens: a shared secret (HS256 tokens) or a PEM "
        "public key (RS256 and ES256 tokens) (default $REACTIVE_JWT_KEY)",
    )
    parser.add_argument(
        "--jwt-issuer",
        default=os.environ.get("REACTIVE_JWT_ISSUER"),
        help="the iss a token verified with --jwt-key must carry (default $REACTIVE_JWT_ISSUER)",
    )
    parser.add_argument(
        "--jwt-audience",
        default=os.environ.get("REACTIVE_JWT_AUDIENCE"),
        help="the aud a token verified with --jwt-key must carry (default $REACTIVE_JWT_AUDIENCE)",
    )
    parser.add_argument(
        "--retention-seconds",
        type=float,
        default=float(os.environ.get("REACTIVE_RETENTION_SECONDS", "60")),
        help="how long old versions stay readable (seconds, default 60)",
    )
    parser.add_argument(
        "--storage-dir",
        default=os.environ.get("REACTIVE_STORAGE_DIR"),
        help="where files, exports and uploads live (default: storage/ beside the SQLite file)",
    )
    parser.add_argument(
        "--max-upload-bytes",
        type=int,
        default=defaults.max_upload_bytes,
        help=f"largest file an upload URL accepts (default {defaults.max_upload_bytes})",
    )
    parser.add_argument(
        "--public-url",
        default=os.environ.get("REACTIVE_PUBLIC_URL"),
        help="the URL clients reach this server at, for file URLs and the Convex CLI "
        "(default http://HOST:PORT, 127.0.0.1 for a wildcard host)",
    )
    parser.add_argument(
        "--log-level", default="info", help="debug, info, warning or error (default info)"
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: reload the app on save, and clients see the full text of "
        "every function error",
    )
    limits: list[tuple[str, type, Any, str]] = [
        (
            "--max-frame-bytes",
            int,
            DEFAULT_MAX_FRAME_BYTES,
            "largest WebSocket frame and function-route body in bytes",
        ),
        ("--max-connections", int, defaults.max_connections, "open connections served at once"),
        ("--header-timeout-s", float, defaults.header_timeout_s, "seconds to send headers"),
        ("--body-timeout-s", float, defaults.body_timeout_s, "seconds a body may stall"),
        ("--send-timeout-s", float, defaults.send_timeout_s, "seconds a WebSocket send waits"),
        ("--max-inflight-actions", int, defaults.max_inflight_actions, "actions per socket"),
        ("--max-queued-mutations", int, defaults.max_queued_mutations, "mutations per socket"),
        ("--max-queries-per-socket", int, defaults.max_queries_per_socket, "queries per socket"),
        ("--max-query-batch", int, defaults.max_query_batch, "entries of one query_batch"),
        ("--function-time-limit-s", float, 1.0, "seconds a query or mutation may run"),
        ("--action-time-limit-s", float, 600.0, "seconds an action may run"),
        ("--scheduler-concurrency", int, 10, "scheduled functions running at once"),
        ("--scheduler-starts-per-s", float, 100.0, "scheduled functions started per second"),
        (
            "--max-http-action-body-bytes",
            int,
            defaults.max_http_action_body_bytes,
            "largest HTTP action request body in bytes",
        ),
    ]
    for flag, kind, default, what in limits:
        parser.add_argument(flag, type=kind, default=default, help=f"{what} (default {default})")
    parser.add_argument(
        "--site-port",
        type=int,
        default=None,
        help="also serve the app's HTTP actions at the root of this port (same host)",
    )
    parser.add_argument(
        "--slow-function-ms",
        type=float,
        default=None,
        help="log every function run slower than this many milliseconds (logger reactive.slow)",
    )
    parser.add_argument(
        "--cluster-key",
        default=os.environ.get("REACTIVE_CLUSTER_KEY"),
        help="run as one process of a cluster sharing a PostgreSQL or MySQL database with "
        "other processes started with the same key, at least 16 bytes "
        "(default $REACTIVE_CLUSTER_KEY)",
    )
    parser.add_argument(
        "--cluster-advertise-url",
        default=os.environ.get("REACTIVE_CLUSTER_ADVERTISE_URL"),
        help="where the cluster's other processes reach this one "
        "(default http://HOST:PORT, 127.0.0.1 for a wildcard host)",
    )
    parser.add_argument(
        "--cluster-lease-timeout",
        type=float,
        default=os.environ.get("REACTIVE_CLUSTER_LEASE_TIMEOUT", "3"),
        help="in a cluster, seconds the database keeps the lease of a leader it no longer "
        "hears from before a follower may take over (1 to 3600, default 3, "
        "$REACTIVE_CLUSTER_LEASE_TIMEOUT)",
    )
    ns = parser.parse_args(argv)
    if ns.slow_function_ms is not None and not 0 <= ns.slow_function_ms < float("inf"):
        parser.error(f"--slow-function-ms must be >= 0 and finite, not {ns.slow_function_ms}")
    for flag, _kind, _default, _what in limits:
        value = getattr(ns, flag[2:].replace("-", "_"))
        if not 0 < value < float("inf"):
            parser.error(f"{flag} must be positive and finite, not {value}")
    if ns.site_port is not None and not (0 < ns.site_port < 65536 and ns.site_port != ns.port):
        parser.error(f"--site-port must be a port other than --port, not {ns.site_port}")
    if ns.max_upload_bytes < 1:
        parser.error(f"--max-upload-bytes must be positive, not {ns.max_upload_bytes}")
    if not 0 <= ns.retention_seconds < float("inf"):
        parser.error(f"--retention-seconds must be >= 0 and finite, not {ns.retention_seconds}")
    for flag, key in (("--admin-key", ns.admin_key), ("--jwt-key", ns.jwt_key)):
        if key is not None and not key.strip():
            env = "REACTIVE_ADMIN_KEY" if flag == "--admin-key" else "REACTIVE_JWT_KEY"
            parser.error(
                f"{flag} (or ${env}) must not be empty: an empty key would let anyone in; "
                "leave it unset to refuse such tokens"
            )
    public_url = ns.public_url
    if public_url is None:
        host = "127.0.0.1" if ns.host in ("0.0.0.0", "::", "") else ns.host
        host = f"[{host}]" if ":" in host else host
        public_url = f"http://{host}:{ns.port}"
    elif not public_url.startswith(("http://", "https://")) or "?" in public_url:
        parser.error(f"--public-url must be an http:// or https:// URL, not {public_url!r}")
    public_url = public_url.rstrip("/")
    advertise_url = ns.cluster_advertise_url
    if ns.cluster_key is not None:
        from reactive.cluster.protocol import check_key

        try:
            check_key(ns.cluster_key)
        except ValueError as exc:
            parser.error(f"--cluster-key: {exc}")
        if "://" not in ns.db or ns.db.startswith(("sqlite:", "file:")):
            parser.error(
                "--cluster-key needs a PostgreSQL or MySQL --db shared by the cluster's "
                "processes (SQLite is opened by one process)"
            )
        if ns.dev:
            parser.error("--cluster-key and --dev do not go together (--dev reloads the app)")
        if not 1 <= ns.cluster_lease_timeout <= 3600:
            parser.error(
                f"--cluster-lease-timeout must be seconds from 1 to 3600, not "
                f"{ns.cluster_lease_timeout}"
            )
        if advertise_url is None:
            host = "127.0.0.1" if ns.host in ("0.0.0.0", "::", "") else ns.host
            host = f"[{host}]" if ":" in host else host
            advertise_url = f"http://{host}:{ns.port}"
        elif not advertise_url.startswith(("http://", "https://")):
            parser.error(
                f"--cluster-advertise-url must be an http(s):// URL, not {advertise_url!r}"
            )
    logging.basicConfig(
        level=ns.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServerConfig(
        db_url=ns.db,
        app=ns.app,
        max_frame_bytes=ns.max_frame_bytes,
        admin_key=ns.admin_key,
        jwt_key=ns.jwt_key,
        jwt_issuer=ns.jwt_issuer,
        jwt_audience=ns.jwt_audience,
        open_options={
            "retention_s": ns.retention_seconds,
            "function_time_limit_s": ns.function_time_limit_s,
            "action_time_limit_s": ns.action_time_limit_s,
            "slow_function_ms": ns.slow_function_ms,
            "scheduler_concurrency": ns.scheduler_concurrency,
            "scheduler_starts_per_s": ns.scheduler_starts_per_s,
        },
        dev=ns.dev,
        max_connections=ns.max_connections,
        header_timeout_s=ns.header_timeout_s,
        body_timeout_s=ns.body_timeout_s,
        send_timeout_s=ns.send_timeout_s,
        max_inflight_actions=ns.max_inflight_actions,
        max_queued_mutations=ns.max_queued_mutations,
        max_queries_per_socket=ns.max_queries_per_socket,
        max_query_batch=ns.max_query_batch,
        url=public_url,
        storage_dir=ns.storage_dir,
        max_upload_bytes=ns.max_upload_bytes,
        max_http_action_body_bytes=ns.max_http_action_body_bytes,
        site_port=ns.site_port,
        site_host=ns.host,
        cluster_key=ns.cluster_key,
        cluster_advertise_url=advertise_url,
        cluster_lease_timeout_s=ns.cluster_lease_timeout,
    )
    # The connection cap must stay below the open-file limit (else accepts fail and even
    # /health cannot be served).
    raise_fd_limit(config.max_connections)
    app = create_app(config)
    uv = uvicorn.Config(
        app,
        host=ns.host,
        port=ns.port,
        # Header and body time-outs and the connection cap (reactive.server.transport); the
        # keep-alive idle time is the header time-out.
        http=http_protocol(config),
        ws=WebSocketProtocol,
        timeout_keep_alive=config.header_timeout_s,  # type: ignore[arg-type]
        ws_max_size=ns.max_frame_bytes,
        # Sync frames are small and many: compressing each costs more than it saves.
        ws_per_message_deflate=False,
        ws_ping_interval=5.0,
        ws_ping_timeout=120.0,
        lifespan="on",
        log_level=ns.log_level,
        timeout_graceful_shutdown=3,
        access_log=False,
    )
    server = uvicorn.Server(uv)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal to the
    # handler that was in place before it: make that a no-op, so a clean shutdown exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    print(
        f"reactive: serving {ns.app or '(no app)'} on http://{ns.host}:{ns.port} "
        f"(database {ns.db})"
        + (f"; HTTP actions on http://{ns.host}:{ns.site_port}" if ns.site_port else ""),
        flush=True,
    )
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

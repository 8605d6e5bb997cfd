"""Bare servers the server benchmarks compare reactive's server with (run as a subprocess).

    python benches/anchor_servers.py --kind ws --port P     # websockets: echo, broadcast
    python benches/anchor_servers.py --kind http --port P   # uvicorn + Starlette, no database

``ws``: a ``websockets`` (asyncio) server. A text message ``E…`` is echoed whole to its
sender; ``B<payload>`` sends ``<payload>`` to every other connected socket with
``websockets.broadcast`` (one synchronous write per socket); ``L<payload>`` does the same
with a loop of ``await ws.send``. ``GET /health`` answers 200. Library defaults are kept
(permessage-deflate is offered, as uvicorn offers it for reactive's server).

``http``: uvicorn configured as ``python -m reactive.server`` configures it, serving a
Starlette app whose ``POST /api/mutation`` reads and parses the JSON body and answers a
fixed ``{"status": "success", "value": …}``: the HTTP stack's ceiling, with no function run.
``POST /api/query`` does the same and answers a fixed document shaped as ``live:latest``
answers from the bench app (``_id``, ``_creationTime``, ``x`` as an encoded int64,
``author``, ``body``, ``score``), encoded per request as a handler would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from http import HTTPStatus
from typing import Any


def run_ws(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    clients: set[ServerConnection] = set()

    def process_request(connection: ServerConnection, request: Any) -> Any:
        if request.path == "/health":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode()
                op, payload = text[:1], text[1:]
                if op == "E":
                    await ws.send(text)
                elif op == "B":
                    broadcast([c for c in clients if c is not ws], payload)
                elif op == "L":
                    for c in [c for c in clients if c is not ws]:
                        await c.send(payload)
        finally:
            clients.discard(ws)

    async def main() -> None:
        stop = asyncio.get_running_loop().create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
        async with serve(
            handler, "127.0.0.1", port, process_request=process_request, max_size=None
        ):
            await stop

    asyncio.run(main())


def run_http(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def mutation(request: Request) -> Response:
        body = json.loads(await request.body())
        return JSONResponse({"status": "success", "value": str(body.get("path"))})

    document = {
        "_creationTime": 1767225600000.5,
        "_id": "k57e4cw1cr0tv7mf3q5vdhk0gd7qa8mh",
        "author": "user-0042",
        "body": "00000042 The quick brown fox jumps over the lazy dog; reactive benchmarks "
        "carry a payload. ",
        "score": 21.0,
        "x": {"$integer": "KgAAAAAAAAA="},
    }

    async def query(request: Request) -> Response:
        body = json.loads(await request.body())
        if not isinstance(body.get("path"), str):
            return JSONResponse({"code": "BadPath", "message": "no path"}, status_code=400)
        return JSONResponse({"status": "success", "value": document})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/api/mutation", mutation, methods=["POST"]),
            Route("/api/query", query, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    # The options `python -m reactive.server` passes (reactive/server/__main__.py).
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=3,
        access_log=False,
    )
    uvicorn.Server(config).run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=["ws", "http"], required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.kind == "ws":
        run_ws(args.port)
    else:
        run_http(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

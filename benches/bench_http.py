"""Benchmark 8: mutations and queries per second over HTTP, 64 concurrent clients.

Reactive: ``python -m reactive.server`` in a subprocess (fresh SQLite database, the app of
``benches/benchapp``). 64 asyncio tasks in the benchmark process share one
``aiohttp.ClientSession`` whose connector holds up to 64 keep-alive connections; each task
POSTs ``/api/mutation`` with ``{"path": "docs:insert", "args": {…}, "format":
"convex_encoded_json"}`` one request after another for a fixed time (5 s full, 2 s quick).
A request counts when it answered 200 with ``"status": "success"`` (the mutation committed
durably). ``httpx.AsyncClient`` was tried first and reached well under 100 requests/s
here with 64 concurrent requests on one pool, so aiohttp is the client.

Queries: the same 64 tasks POST ``/api/query`` with ``{"path": "live:latest", "args":
{"x": {"$integer": …}}, "format": "convex_encoded_json"}``, ``x`` cycling through the 100
groups the mutations filled: one ``by_x`` index lookup returning one document (about 250
bytes of Convex JSON), after the mutation run of the same repetition.

Anchors, same run, repetitions interleaved:

* the embedded figure: ``bench_insert.reactive_inserts`` with 64 callers of
  ``db.mutation("docs:insert")`` in one process (no HTTP), as in benchmark 1;
* the HTTP stack's ceiling: the same client against uvicorn + Starlette configured as
  ``python -m reactive.server`` configures uvicorn, serving a ``POST /api/mutation`` that
  parses the JSON body and answers a fixed success without running anything
  (``benches/anchor_servers.py --kind http``); for queries, its ``POST /api/query``,
  which parses the body and answers a fixed document of the same shape.

Notes give the CPU the server process and the client process used during each run (from
``/proc/<pid>/stat`` and ``time.process_time``): with 2 vCPUs, a side at ~100 % of one core is
the bottleneck.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_insert import reactive_inserts
from common import Row, log, median, scratch_dir, standalone
from fixtures import BODY
from servers import anchor_server, closed_loop_load, reactive_server

CONCURRENCY = 64
GROUPS = 100


def _int64(x: int) -> dict[str, str]:
    return {"$integer": base64.b64encode(x.to_bytes(8, "little")).decode()}


def _query_body(i: int) -> bytes:
    return json.dumps(
        {"path": "live:latest", "args": {"x": _int64(i % GROUPS)}, "format": "convex_encoded_json"}
    ).encode()


def _body(i: int) -> bytes:
    x = i % GROUPS
    return json.dumps(
        {
            "path": "docs:insert",
            "args": {
                "x": _int64(x),
                "author": f"user-{i % 1000:04d}",
                "body": f"{i:08d} {BODY}",
                "score": i * 0.5,
            },
            "format": "convex_encoded_json",
        }
    ).encode()


async def http_run(
    url: str,
    server_pid: int,
    seconds: float,
    warmup: int = 200,
    body: Callable[[int], bytes] = _body,
) -> dict[str, Any]:
    """64 tasks POSTing ``body(i)`` for ``seconds``; returns rate, errors, latencies and CPU
    use."""
    import aiohttp

    bodies = [body(i) for i in range(1000)]
    headers = {"content-type": "application/json"}
    first_error = ""
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(i: int) -> bool:
            nonlocal first_error
            async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                text = await r.read()
                ok = r.status == 200 and b'"status":"success"' in text
                if not ok and not first_error:
                    first_error = f"{r.status} {text[:200]!r}"
                return ok

        got = await closed_loop_load(post, server_pid, seconds, CONCURRENCY, warmup)
    return {**got, "first_error": first_error}


async def _measure(reps: int, seconds: float) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {
        "http": [],
        "embedded": [],
        "noop": [],
        "query": [],
        "noop_query": [],
    }
    with reactive_server("http") as server, anchor_server("http") as noop:
        for rep in range(reps):
            runs["http"].append(await http_run(f"{server.http}/api/mutation", server.pid, seconds))
            with scratch_dir("http-embedded") as d:
                runs["embedded"].append(await reactive_inserts(d, CONCURRENCY, seconds))
            runs["noop"].append(await http_run(f"{noop.http}/api/mutation", noop.pid, seconds))
            runs["query"].append(
                await http_run(f"{server.http}/api/query", server.pid, seconds, body=_query_body)
            )
            runs["noop_query"].append(
                await http_run(f"{noop.http}/api/query", noop.pid, seconds, body=_query_body)
            )
            h, e, n = runs["http"][-1], runs["embedded"][-1], runs["noop"][-1]
            q, nq = runs["query"][-1], runs["noop_query"][-1]
            log(
                f"  http rep {rep + 1}/{reps}: HTTP {h['rate']:,.0f}/s (server "
                f"{h['server_cpu_us']:.0f} µs CPU/request, {h['server_cpu_pct']:.0f} % of a core; "
                f"client {h['client_cpu_pct']:.0f} %), embedded {e['rate']:,.0f}/s, no-op HTTP "
                f"{n['rate']:,.0f}/s ({n['server_cpu_us']:.0f} µs CPU/request, "
                f"{n['server_cpu_pct']:.0f} %); queries {q['rate']:,.0f}/s "
                f"({q['server_cpu_us']:.0f} µs, {q['server_cpu_pct']:.0f} %), no-op "
                f"{nq['rate']:,.0f}/s ({nq['server_cpu_us']:.0f} µs, {nq['server_cpu_pct']:.0f} %)"
            )
    return runs


def run(quick: bool = False) -> list[Row]:
    reps, seconds = (2, 2.0) if quick else (3, 5.0)
    runs = asyncio.run(_measure(reps, seconds))

    def med(side: str, key: str) -> float:
        return median([r[key] for r in runs[side]]) or 0.0

    errors = sum(
        r["errors"] for side in ("http", "noop", "query", "noop_query") for r in runs[side]
    )
    first_error = next(
        (r["first_error"] for r in runs["http"] + runs["query"] if r["first_error"]), ""
    )
    ok_embedded = all(r["ok"] for r in runs["embedded"])
    check = (
        "every HTTP request answered success"
        if errors == 0
        else f"{errors} HTTP requests failed (first: {first_error})"
    ) + ("" if ok_embedded else "; EMBEDDED COUNT MISMATCH")
    return [
        Row.from_samples(
            "http",
            f"HTTP POST /api/mutation, {CONCURRENCY} clients (mutations/s)",
            "mutations/s",
            [r["rate"] for r in runs["http"]],
            [r["rate"] for r in runs["embedded"]],
            anchor_name=f"embedded db.mutation, {CONCURRENCY} callers",
            target="context",
            notes=(
                f"{check}; HTTP latency p50 {med('http', 'p50_ms'):.1f} ms, p99 "
                f"{med('http', 'p99_ms'):.1f} ms; server process CPU "
                f"{med('http', 'server_cpu_pct'):.0f} % of one core, client (aiohttp) "
                f"{med('http', 'client_cpu_pct'):.0f} %; embedded "
                f"{med('embedded', 'commits_per_batch'):.1f} commits/batch"
            ),
            extra={"runs": runs},
        ),
        Row.from_samples(
            "http",
            "HTTP mutations/s vs uvicorn + Starlette no-op endpoint",
            "mutations/s",
            [r["rate"] for r in runs["http"]],
            [r["rate"] for r in runs["noop"]],
            anchor_name="same client, POST answered without running anything",
            target="≥ 0.8",
            notes=(
                f"no-op server CPU {med('noop', 'server_cpu_pct'):.0f} %, client "
                f"{med('noop', 'client_cpu_pct'):.0f} %; p50 {med('noop', 'p50_ms'):.1f} ms"
            ),
        ),
        Row.from_samples(
            "http",
            "server CPU per HTTP mutation vs per no-op request (µs)",
            "µs",
            [r["server_cpu_us"] for r in runs["http"]],
            [r["server_cpu_us"] for r in runs["noop"]],
            anchor_name="uvicorn + Starlette no-op",
            higher_is_better=False,
            target="context",
            notes=(
                "CPU time of all the server's threads (/proc/<pid>/task/*/schedstat) over the "
                "requests served; steadier than throughput on a shared machine; ratio = the "
                "share of a mutation request's server CPU that the bare HTTP stack costs"
            ),
        ),
        Row.from_samples(
            "http",
            "HTTP POST /api/query (1-document index read), 64 clients vs no-op endpoint",
            "queries/s",
            [r["rate"] for r in runs["query"]],
            [r["rate"] for r in runs["noop_query"]],
            anchor_name="same client, uvicorn + Starlette answering a fixed document",
            target="≥ 0.8",
            notes=(
                f"live:latest (by_x, newest first); latency p50 {med('query', 'p50_ms'):.1f} ms, "
                f"p99 {med('query', 'p99_ms'):.1f} ms; server CPU "
                f"{med('query', 'server_cpu_pct'):.0f} % of one core, client "
                f"{med('query', 'client_cpu_pct'):.0f} %; no-op server "
                f"{med('noop_query', 'server_cpu_pct'):.0f} %, client "
                f"{med('noop_query', 'client_cpu_pct'):.0f} %"
            ),
        ),
        Row.from_samples(
            "http",
            "server CPU per HTTP query vs per no-op request (µs)",
            "µs",
            [r["server_cpu_us"] for r in runs["query"]],
            [r["server_cpu_us"] for r in runs["noop_query"]],
            anchor_name="uvicorn + Starlette no-op",
            higher_is_better=False,
            target="context",
        ),
    ]


if __name__ == "__main__":
    standalone(run)

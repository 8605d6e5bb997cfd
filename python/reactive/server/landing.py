"""``GET /``: a page saying what is running here, for a person who opens the server's URL.

It names the version and the URL clients connect to, links the dashboard and the operating
routes, and shows how to connect with the official Convex clients and reactive's own.
Nothing in it is secret: no database URL, no function names. (Convex's backend answers its
root with a one-line text; a page is more use to someone who just ran ``make serve``.)
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from reactive import __version__

if TYPE_CHECKING:
    from reactive.server.app import Server

__all__ = ["routes"]

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>reactive {version}</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d2330; }}
code, pre {{ font: 14px/1.45 ui-monospace, monospace; }}
pre {{ background: #f3f4f7; padding: .75rem 1rem; overflow-x: auto; border-radius: 6px; }}
@media (prefers-color-scheme: dark) {{
  body {{ background: #15181f; color: #e4e7ee; }} pre {{ background: #222733; }}
  a {{ color: #8ab4ff; }}
}}
</style>
</head>
<body>
<main>
<h1>reactive {version} is running</h1>
<p>A reactive document database serving the Convex sync protocol and HTTP API at
<code>{url}</code>{app_note}.</p>
<ul>
<li><a href="/dashboard">Dashboard</a> (log in with the server's admin key)</li>
<li><a href="/health">/health</a>, <a href="/health/ready">/health/ready</a>,
<a href="/metrics">/metrics</a>, <a href="/version">/version</a></li>
</ul>
<h2>Connect</h2>
<p>The official Convex Python client (<code>pip install convex</code>):</p>
<pre>from convex import ConvexClient
client = ConvexClient("{url}")
print(client.query("module:function", {{}}))</pre>
<p>The official JS client (<code>npm install convex</code>):</p>
<pre>import {{ ConvexClient }} from "convex/browser";
const client = new ConvexClient("{url}");</pre>
<p>reactive's own async client:</p>
<pre>from reactive.client import Client
async with Client("{url}") as client:
    print(await client.query("module:function", {{}}))</pre>
<p>The Convex CLI, as a self-hosted backend:</p>
<pre>export CONVEX_SELF_HOSTED_URL={url} CONVEX_SELF_HOSTED_ADMIN_KEY=...
npx convex data</pre>
</main>
</body>
</html>
"""


def routes(server: Server) -> list[BaseRoute]:
    """``GET /`` (and ``HEAD``)."""

    async def landing(request: Request) -> Response:
        url = server.config.url or str(request.base_url).rstrip("/")
        db = server._db
        functions = len(db.app.functions) if db is not None else 0
        app_note = f", with an app of {functions} functions" if functions else ", with no app"
        page = _PAGE.format(
            version=html.escape(__version__), url=html.escape(url), app_note=app_note
        )
        return HTMLResponse(page, headers=HEADERS)

    return [Route("/", landing, methods=["GET", "HEAD"])]

"""The chat app's HTTP actions (served under /http/, and at the root of --site-port).

* ``POST /http/webhook`` posts a message from JSON ``{"channel", "author", "body"}``; when
  the environment variable ``WEBHOOK_SECRET`` is set, the request must carry it in the
  ``X-Webhook-Secret`` header.
* ``GET /http/channels/<name>`` returns a channel's latest messages as JSON, readable from
  any web page (CORS), with its ``OPTIONS`` preflight.
"""

import hmac

from starlette.responses import JSONResponse, Response

from reactive import http_action, http_router

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}


@http_action
async def webhook(ctx, request):
    """Post the message a webhook sends; 401 without the shared secret, 400 if malformed."""
    secret = ctx.env.get("WEBHOOK_SECRET")
    given = request.headers.get("x-webhook-secret", "")
    if secret and not hmac.compare_digest(secret.encode(), given.encode()):
        return JSONResponse({"error": "wrong or missing X-Webhook-Secret"}, status_code=401)
    try:
        payload = await request.json()
        message = {k: payload[k] for k in ("channel", "author", "body")}
    except (ValueError, KeyError, TypeError):
        return JSONResponse(
            {"error": 'send JSON {"channel": ..., "author": ..., "body": ...}'}, status_code=400
        )
    if not all(isinstance(value, str) for value in message.values()):
        return JSONResponse({"error": "channel, author and body are strings"}, status_code=400)
    message_id = await ctx.run_mutation("messages:send", message)
    return JSONResponse({"id": message_id}, status_code=201)


@http_action
async def channel_messages(ctx, request):
    """A channel's latest messages (the path's last part names the channel)."""
    channel = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    messages = await ctx.run_query("messages:list", {"channel": channel, "limit": 20.0})
    return JSONResponse(messages, headers=CORS)


@http_action
async def preflight(ctx, request):
    """Answer a browser's CORS preflight for the channel routes."""
    return Response(status_code=204, headers=CORS)


http = http_router()
http.route(path="/webhook", method="POST", handler=webhook)
http.route(path_prefix="/channels/", method="GET", handler=channel_messages)
http.route(path_prefix="/channels/", method="OPTIONS", handler=preflight)

"""The chat example's platform features, served: the webhook (with its secret from an
environment variable), the CORS-readable channel route on the site port, image
attachments through the upload-URL flow, and an expiring message taking its image along.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from conftest import ServerProcess


CHAT = Path(__file__).resolve().parents[2] / "examples" / "chat"
ADMIN = "chat-platform-admin"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(server: ServerProcess, kind: str, path: str, args: dict[str, Any]) -> Any:
    r = httpx.post(f"{server.url}/api/{kind}", json={"path": path, "args": args}, timeout=10)
    body = r.json()
    assert body["status"] == "success", body
    return body["value"]


def bodies(server: ServerProcess) -> list[str]:
    return [m["body"] for m in call(server, "query", "messages:list", {"channel": "general"})]


def test_webhook_channel_route_and_images(start_server: Callable[..., ServerProcess]) -> None:
    site = free_port()
    server = start_server(CHAT, "--admin-key", ADMIN, "--site-port", str(site))
    hook = {"channel": "general", "author": "ci", "body": "build passed"}
    r = httpx.post(f"{server.url}/http/webhook", json=hook)
    assert r.status_code == 201 and r.json()["id"]
    assert httpx.post(f"{server.url}/http/webhook", json={"channel": 1}).status_code == 400

    # With a secret set, the webhook needs it.
    change = {"changes": [{"name": "WEBHOOK_SECRET", "value": "s3cret"}]}
    r = httpx.post(
        f"{server.url}/api/update_environment_variables",
        json=change,
        headers={"Authorization": f"Convex {ADMIN}"},
    )
    assert r.status_code == 200, r.text
    again = {**hook, "body": "deployed"}
    assert httpx.post(f"{server.url}/http/webhook", json=again).status_code == 401
    r = httpx.post(
        f"http://127.0.0.1:{site}/webhook", json=again, headers={"X-Webhook-Secret": "s3cret"}
    )
    assert r.status_code == 201
    assert bodies(server) == ["deployed", "build passed"]

    # The channel route answers browsers: a preflight, then the JSON with CORS headers.
    r = httpx.options(
        f"http://127.0.0.1:{site}/channels/general",
        headers={"Origin": "https://example.com", "Access-Control-Request-Method": "GET"},
    )
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
    r = httpx.get(f"{server.url}/http/channels/general")
    assert r.headers["access-control-allow-origin"] == "*"
    assert [m["body"] for m in r.json()] == ["deployed", "build passed"]

    # An image: upload URL, POST the bytes, send the message with it, fetch it back.
    upload = call(server, "mutation", "messages:generate_upload_url", {})
    r = httpx.post(upload, content=PNG, headers={"Content-Type": "image/png"})
    image = r.json()["storageId"]
    message = {"channel": "general", "author": "ada", "body": "look", "image": image}
    message_id = call(server, "mutation", "messages:send", {**message, "expires_in_s": 0.5})
    url = call(server, "query", "messages:image_url", {"id": message_id})
    got = httpx.get(url)
    assert got.content == PNG and got.headers["content-type"] == "image/png"

    # The message expires (a scheduled mutation) and deletes its image with it.
    deadline = time.monotonic() + 15
    while "look" in bodies(server):
        assert time.monotonic() < deadline, "the message did not expire"
        time.sleep(0.05)
    deadline = time.monotonic() + 5
    while httpx.get(url).status_code != 404:
        assert time.monotonic() < deadline, "the image is still served"
        time.sleep(0.05)

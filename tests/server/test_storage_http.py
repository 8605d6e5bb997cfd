"""File storage served: the upload-URL round trip (``generate_upload_url`` → POST bytes →
``{"storageId"}`` → ``get_url`` → GET), refused uploads (used, forged, too large), serving
(content type, ETag, ranges, 404 after delete, 400 for bad ids), export with
``--include-file-storage`` and import into a fresh server, and the official Python client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import ServerProcess

ADMIN = "storage-admin-key"
MAX_UPLOAD = 100_000
APP = {
    "files.py": """
        from reactive import mutation, query, v


        @mutation(args={})
        async def upload_url(ctx):
            return await ctx.storage.generate_upload_url()


        @mutation(args={"file": v.id("_storage"), "name": v.string()})
        async def attach(ctx, file, name):
            await ctx.db.insert("photos", {"file": file, "name": name})


        @query(args={})
        async def photos(ctx):
            out = []
            for p in await ctx.db.query("photos").collect():
                out.append({"name": p["name"], "url": await ctx.storage.get_url(p["file"])})
            return out


        @query(args={"id": v.id("_storage")})
        async def url(ctx, id):
            return await ctx.storage.get_url(id)


        @query(args={})
        async def count(ctx):
            return float(len(await ctx.db.system.query("_storage").collect()))


        @mutation(args={"id": v.id("_storage")})
        async def remove(ctx, id):
            await ctx.storage.delete(id)
    """,
}


@pytest.fixture
def app(make_app: Callable[[dict[str, str]], Path]) -> Path:
    return make_app(APP)


def call(server: ServerProcess, kind: str, path: str, args: dict[str, Any] | None = None) -> Any:
    response = httpx.post(
        f"{server.url}/api/{kind}", json={"path": path, "args": args or {}, "format": "json"}
    )
    body = response.json()
    assert body["status"] == "success", body
    return body["value"]


def upload(url: str, data: bytes, content_type: str = "image/png") -> httpx.Response:
    return httpx.post(url, content=data, headers={"Content-Type": content_type}, timeout=30)


def test_the_upload_url_round_trip(app: Path, start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(app, "--max-upload-bytes", str(MAX_UPLOAD))
    data = os.urandom(50_000)
    url = call(server, "mutation", "files:upload_url")
    assert url.startswith(f"{server.url}/api/storage/upload?token=")
    answer = upload(url, data)
    assert answer.status_code == 200, answer.text
    storage_id = answer.json()["storageId"]
    file_url = call(server, "query", "files:url", {"id": storage_id})
    assert file_url == f"{server.url}/api/storage/{storage_id}"

    got = httpx.get(file_url)
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-length"] == str(len(data))
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert got.headers["etag"] == f'"{digest}"'
    part = httpx.get(file_url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]

    # Single use: the same URL again is refused, and nothing more is stored.
    again = upload(url, b"second")
    assert again.status_code == 409 and again.json()["code"] == "UploadUrlUsed"
    # A forged or malformed token is refused.
    forged = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert upload(forged, b"x").json()["code"] == "InvalidUploadUrl"
    assert upload(url.split("?")[0], b"x").status_code == 401
    # Over the limit: 413, nothing stored (declared length, or a chunked body).
    big = upload(call(server, "mutation", "files:upload_url"), os.urandom(MAX_UPLOAD + 1))
    assert big.status_code == 413 and big.json()["code"] == "FileTooLarge"

    def chunks() -> Any:
        for _ in range(5):
            yield os.urandom(MAX_UPLOAD // 4)

    streamed = httpx.post(call(server, "mutation", "files:upload_url"), content=chunks())
    assert streamed.status_code == 413
    assert call(server, "query", "files:count") == 1

    # Delete: the URL is gone, the file 404s.
    call(server, "mutation", "files:remove", {"id": storage_id})
    assert call(server, "query", "files:url", {"id": storage_id}) is None
    gone = httpx.get(file_url)
    assert gone.status_code == 404 and gone.json()["code"] == "FileNotFound"
    bad = httpx.get(f"{server.url}/api/storage/not-a-storage-id")
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidStorageId"


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTIVE_")}
    env["REACTIVE_URL"] = server.url
    env["REACTIVE_ADMIN_KEY"] = ADMIN
    proc = subprocess.run(
        [sys.executable, "-m", "reactive", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_export_with_files_and_import_into_a_fresh_server(
    app: Path, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    source = start_server(app, "--admin-key", ADMIN)
    for name, data in (("cat", b"\x89PNG cat"), ("dog", b"\x89PNG dog")):
        answer = upload(call(source, "mutation", "files:upload_url"), data)
        call(source, "mutation", "files:attach", {"file": answer.json()["storageId"], "name": name})
    snap = tmp_path / "snap.zip"
    out = cli(source, "export", str(snap), "--include-file-storage").stdout
    assert "exported" in out
    with zipfile.ZipFile(snap) as zf:
        names = zf.namelist()
        metas = [json.loads(x) for x in zf.read("_storage/documents.jsonl").splitlines()]
    assert len(metas) == 2
    assert {f"_storage/{m['_id']}.png" for m in metas} <= set(names)
    plain = tmp_path / "plain.zip"
    cli(source, "export", str(plain))
    with zipfile.ZipFile(plain) as zf:
        assert not any(n.startswith("_storage/") for n in zf.namelist())

    target = start_server(app, "--admin-key", ADMIN)  # same folder, its own files
    cli(target, "import", str(snap))
    photos = {p["name"]: p["url"] for p in call(target, "query", "files:photos")}
    assert set(photos) == {"cat", "dog"}
    for name, url in photos.items():
        assert url.startswith(target.url)
        got = httpx.get(url)
        assert got.status_code == 200 and got.content == f"\x89PNG {name}".encode("latin-1")
        assert got.headers["content-type"] == "image/png"


def test_the_official_python_client_gets_an_upload_url(
    app: Path, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    pytest.importorskip("convex")
    server = start_server(app)
    script = tmp_path / "client.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from convex import ConvexClient

            client = ConvexClient(sys.argv[1])
            print(client.mutation("files:upload_url"))
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script), server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    url = proc.stdout.strip().splitlines()[-1]
    answer = upload(url, b"from the official client", "text/plain")
    storage_id = answer.json()["storageId"]
    got = httpx.get(call(server, "query", "files:url", {"id": storage_id}))
    assert got.content == b"from the official client"
    assert got.headers["content-type"].startswith("text/plain")


def test_urls_use_the_public_url(app: Path, start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(app, "--public-url", "https://chat.example.com/")
    url = call(server, "mutation", "files:upload_url")
    assert url.startswith("https://chat.example.com/api/storage/upload?token=")
    # The path is the server's own: the upload works against the real address.
    local = server.url + url.removeprefix("https://chat.example.com")
    stored = httpx.post(local, content=b"hi", headers={"Content-Type": "text/plain"})
    storage_id = stored.json()["storageId"]
    assert call(server, "query", "files:url", {"id": storage_id}) == (
        f"https://chat.example.com/api/storage/{storage_id}"
    )

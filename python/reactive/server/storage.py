"""The file storage routes (Convex's ``/api/storage``; see :mod:`reactive.db.storage`).

* ``POST /api/storage/upload?token=…``: the body is the file's bytes, its ``Content-Type``
  their type; answers ``{"storageId": id}``. The token comes from
  ``ctx.storage.generate_upload_url()`` (single-use, valid one hour). Refusals: 401
  ``InvalidUploadUrl`` (forged or malformed) or ``UploadUrlExpired``; 409 ``UploadUrlUsed``;
  413 ``FileTooLarge`` over the server's ``--max-upload-bytes`` (nothing is stored); 408
  when the body stalls past ``--body-timeout-s``.
* ``GET /api/storage/{id}``: the bytes, with ``Content-Type``, ``Content-Length``, an
  ``ETag`` (the base64 SHA-256) and ``Accept-Ranges`` (a ``Range`` request answers 206);
  404 ``FileNotFound`` for a deleted file; 400 ``InvalidStorageId`` for text that is not a
  storage id.

No other credential is needed: the upload token and the storage id are the capability, as
in Convex.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from reactive.db.storage import FileStore, FileTooLargeError, UploadUrlError
from reactive.errors import InvalidIdError

if TYPE_CHECKING:
    from reactive.server.app import Server

__all__ = ["routes"]

_CACHE = "private, max-age=2592000"


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def routes(server: Server) -> list[BaseRoute]:
    """The routes, for the application."""

    def files() -> FileStore:
        store = server.db._files
        if store is None:
            raise RuntimeError("file storage is not open")
        return store

    async def upload(request: Request) -> Response:
        store = files()
        try:
            upload = store.check_token(request.query_params.get("token"))
        except UploadUrlError as exc:
            return _error(401, exc.code, str(exc))
        if store.token_used(upload[0]):
            return _error(409, "UploadUrlUsed", "this upload URL was used already")
        limit = server.config.max_upload_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return _error(
                413, "FileTooLarge", f"the file is over the upload limit of {limit} bytes"
            )
        content_type = request.headers.get("content-type") or None
        try:
            storage_id = await store.save(
                request.stream(), content_type, max_bytes=limit, upload=upload
            )
        except FileTooLargeError as exc:
            return _error(413, "FileTooLarge", str(exc))
        except UploadUrlError as exc:
            return _error(409, exc.code, str(exc))
        except ClientDisconnect:
            return _error(408, "RequestTimeout", "the file did not arrive")
        return JSONResponse({"storageId": storage_id})

    async def get(request: Request) -> Response:
        store = files()
        storage_id = request.path_params["storage_id"]
        try:
            doc = store.latest(storage_id)
        except InvalidIdError:
            return _error(
                400,
                "InvalidStorageId",
                f"{storage_id!r:.80} is not a storage id; use ctx.storage.get_url(id) for a "
                "file's URL",
            )
        if doc is None:
            return _error(404, "FileNotFound", f"file {storage_id} does not exist (deleted?)")
        path = store.path_of(doc["sha256"])
        if not path.is_file():
            return _error(404, "FileNotFound", f"the bytes of file {storage_id} are gone")
        return FileResponse(
            path,
            media_type=doc.get("contentType") or "application/octet-stream",
            headers={"ETag": f'"{doc["sha256"]}"', "Cache-Control": _CACHE},
        )

    return [
        Route("/api/storage/upload", upload, methods=["POST"]),
        Route("/api/storage/{storage_id}", get, methods=["GET", "HEAD"]),
    ]

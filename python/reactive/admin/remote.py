"""The admin client of a running server: what ``python -m reactive --url URL VERB`` calls.

Every request carries the admin key (``Authorization: Convex <key>``). Functions run
through Convex's ``/api/function``; tables, documents and environment variables through
the ``_system/cli/*`` queries the Convex CLI uses; exports and imports through Convex's
``/api/export/*`` and ``/api/import/*`` jobs; the log through the
``/api/stream_function_logs`` long poll; ``tables``, ``schema``, ``check`` and ``gc``
through ``/api/reactive/*`` (see :mod:`reactive.server.maintenance`).

Errors: :class:`RemoteError` with the server's ``code: message``, or why the server could
not be reached.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from reactive import _core
from reactive.errors import ReactiveError

__all__ = ["Remote", "RemoteError"]

UPLOAD_PART_BYTES = 8 * 1024 * 1024
"""Bytes per import upload part (the server takes up to 64 MiB)."""
POLL_S = 0.25
"""How often export/import job states are polled."""


class RemoteError(ReactiveError):
    """The server refused a request, or could not be reached."""


class Remote:
    """An admin connection to the server at ``url`` (e.g. ``http://127.0.0.1:3210``).

    Use as ``async with Remote(url, key) as remote: ...``.
    """

    def __init__(self, url: str, admin_key: str, *, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Convex {admin_key}"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )

    async def __aenter__(self) -> Remote:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _request(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, route, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self.url}{route}: {exc}") from None
        if response.status_code >= 400:
            raise RemoteError(_error_text(response))
        return response

    async def _json(self, method: str, route: str, **kwargs: Any) -> Any:
        response = await self._request(method, route, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise RemoteError(f"{route} answered something that is not JSON") from None

    async def call(self, path: str, args: dict[str, Any]) -> tuple[Any, list[str]]:
        """Run any function (internal ones too); ``(result, log lines)``.

        ``args`` and the result are Convex JSON (numbers are float64; ``{"$integer"}``
        int64, ``{"$bytes"}`` bytes); the result comes back decoded to Python values.

        Raises:
            RemoteError: the function failed (its message), or the request did.
        """
        body = await self._json(
            "POST", "/api/function", json={"path": path, "args": args, "format": "json"}
        )
        lines = [str(line) for line in body.get("logLines") or []]
        if body.get("status") != "success":
            message = body.get("errorMessage", "the function failed")
            if "errorData" in body:
                message += f" (data: {json.dumps(body['errorData'])})"
            raise RemoteLogError(message, lines)
        return _core.from_convex_json(body.get("value")), lines

    async def query(self, path: str, args: dict[str, Any]) -> Any:
        """Run a (system) query; its decoded result."""
        value, _ = await self.call(path, args)
        return value

    async def documents(self, table: str, page_size: int = 500) -> AsyncIterator[dict[str, Any]]:
        """``table``'s documents in creation order, a page at a time."""
        cursor: str | None = None
        while True:
            page = await self.query(
                "_system/cli/tableData",
                {
                    "table": table,
                    "order": "asc",
                    "paginationOpts": {"numItems": page_size, "cursor": cursor},
                },
            )
            for doc in page["page"]:
                yield doc
            if page["isDone"]:
                return
            cursor = page["continueCursor"]

    async def tables(self) -> list[dict[str, Any]]:
        """Every table with its document count and indexes."""
        body = await self._json("GET", "/api/reactive/tables")
        tables: list[dict[str, Any]] = body["tables"]
        return tables

    async def schema(self) -> str:
        """A ``define_schema(...)`` inferred from the stored documents."""
        body = await self._json("GET", "/api/reactive/schema")
        return str(body["schema"])

    async def check(self) -> dict[str, Any]:
        """Verify every index entry; ``{"documents", "index_entries", "problems"}``."""
        report: dict[str, Any] = await self._json("POST", "/api/reactive/check", json={})
        return report

    async def gc(self, keep_s: float) -> dict[str, Any]:
        """Delete versions older than ``keep_s`` seconds; the counts deleted."""
        report: dict[str, Any] = await self._json(
            "POST", "/api/reactive/gc", json={"keep_seconds": keep_s}
        )
        return report

    async def environment_variables(self) -> list[dict[str, str]]:
        """Every environment variable, ``[{"name", "value"}]``."""
        variables: list[dict[str, str]] = await self.query(
            "_system/cli/queryEnvironmentVariables", {}
        )
        return variables

    async def change_environment_variables(self, changes: list[tuple[str, str | None]]) -> None:
        """Set (or, with ``None``, remove) variables, in one transaction."""
        await self._json(
            "POST",
            "/api/update_environment_variables",
            json={"changes": [{"name": n, "value": v} for n, v in changes]},
        )

    async def export(
        self,
        path: str | Path,
        on_bytes: Callable[[int, int | None], None] | None = None,
        *,
        include_storage: bool = False,
    ) -> int:
        """Request a snapshot export, wait for it, download the ZIP to ``path``.

        The server writes the ZIP from one snapshot while writes go on. ``on_bytes(n,
        total)`` is called as bytes arrive; ``include_storage`` adds the files
        (``_storage/``, Convex's ``--include-file-storage``). Returns the snapshot's
        timestamp.

        Raises:
            RemoteError: the export failed (its reason) or a request did.
        """
        include = "true" if include_storage else "false"
        await self._json("POST", f"/api/export/request/zip?includeStorage={include}")
        while True:
            latest = await self.query("_system/cli/exports:getLatest", {})
            state = (latest or {}).get("state")
            if state == "completed":
                break
            if state == "failed":
                raise RemoteError(f"the export failed: {latest.get('failure_reason')}")
            await asyncio.sleep(POLL_S)
        ts = int(latest["start_ts"])
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        try:
            async with self._http.stream("GET", f"/api/export/zip/{ts}") as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise RemoteError(_error_text(response))
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                with open(partial, "wb") as f:
                    async for chunk in response.aiter_bytes():
                        f.write(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk), total)
            partial.replace(target)
        except httpx.HTTPError as exc:
            raise RemoteError(f"the download of export {ts} failed: {exc}") from None
        finally:
            partial.unlink(missing_ok=True)
        return ts

    async def start_import(
        self,
        path: str | Path,
        *,
        format: str,
        table: str | None,
        mode: str,
        on_bytes: Callable[[int, int | None], None] | None = None,
    ) -> str:
        """Upload ``path`` in parts and have the server check it; the import's id.

        Raises:
            RemoteError: the upload was refused.
        """
        source = Path(path)
        total = source.stat().st_size
        body = await self._json("POST", "/api/import/start_upload")
        token = body["uploadToken"]
        parts = []
        with open(source, "rb") as f:
            number = 1
            while chunk := f.read(UPLOAD_PART_BYTES):
                parts.append(
                    await self._json(
                        "POST",
                        "/api/import/upload_part",
                        params={"uploadToken": token, "partNumber": number},
                        content=chunk,
                    )
                )
                if on_bytes is not None:
                    on_bytes(len(chunk), total)
                number += 1
        spec: dict[str, Any] = {"format": format, "mode": mode}
        if table is not None:
            spec["tableName"] = table
        body = await self._json(
            "POST",
            "/api/import/finish_upload",
            json={
                "import": spec,
                "uploadToken": token,
                "partTokens": parts,
            },
        )
        return str(body["importId"])

    async def import_state(self, import_id: str, until: tuple[str, ...]) -> dict[str, Any]:
        """Poll the import until its state is one of ``until`` (or failed); that state.

        Raises:
            RemoteError: the import failed (its error message) or is gone.
        """
        while True:
            doc = await self.query("_system/cli/queryImport", {"importId": import_id})
            if doc is None:
                raise RemoteError(f"import {import_id} does not exist")
            state: dict[str, Any] = doc["state"]
            if state["state"] == "failed":
                raise RemoteError(state.get("error_message") or "the import failed")
            if state["state"] in until:
                return state
            await asyncio.sleep(POLL_S)

    async def perform_import(self, import_id: str) -> None:
        """Confirm a checked import: the server starts writing."""
        await self._json("POST", "/api/perform_import", json={"importId": import_id})

    async def cancel_import(self, import_id: str) -> None:
        """Cancel an import not yet performed."""
        await self._json("POST", "/api/cancel_import", json={"importId": import_id})

    async def log_entries(
        self, cursor: float = 0.0, timeout_s: float = 60.0
    ) -> tuple[list[dict[str, Any]], float]:
        """Function runs after ``cursor`` (waits up to ``timeout_s`` for one); and the cursor.

        Entries are Convex's ``FunctionExecutionJson``.
        """
        body = await self._json(
            "GET",
            "/api/stream_function_logs",
            params={"cursor": cursor, "timeout_s": timeout_s},
            timeout=timeout_s + 30.0,
        )
        return list(body["entries"]), float(body["newCursor"])


class RemoteLogError(RemoteError):
    """A function run failed on the server; ``log_lines`` are what it printed."""

    def __init__(self, message: str, log_lines: list[str]) -> None:
        super().__init__(message)
        self.log_lines = log_lines


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    if isinstance(body, dict) and "message" in body:
        code = body.get("code")
        return f"{code}: {body['message']}" if code else str(body["message"])
    return f"HTTP {response.status_code}: {response.text[:500]}"

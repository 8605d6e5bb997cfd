"""Snapshot exports and imports run by the server, recorded in system tables.

What ``npx convex export`` and ``npx convex import`` drive (and the dashboard shows):

* ``_exports``: one document per requested export, ``{state: "requested" | "in_progress"
  | "completed" | "failed", format: {format: "zip", include_storage}, requested_ms,
  start_ts?, complete_ts?, zip_object_key?, failure_reason?}``. An export reads one
  snapshot (``start_ts``) while writes go on and writes a ZIP (:mod:`reactive.snapshot`)
  under ``<storage dir>/exports``; the newest :data:`KEPT_EXPORTS` ZIPs are kept.
* ``_snapshot_imports``: one document per import, ``{state: {...}, format, mode,
  table_name?}`` where ``state`` moves ``uploaded`` → ``waiting_for_confirmation``
  (``message_to_confirm``, ``require_manual_confirmation``) → ``in_progress``
  (``progress_message``, ``checkpoint_messages``) → ``completed`` (``num_rows_written``) or
  ``failed`` (``error_message``), as Convex's backend records them. An upload arrives in
  parts (``start_upload`` / ``upload_part`` / ``finish_upload``) into
  ``<storage dir>/imports``; the whole file is checked (:func:`reactive.snapshot.plan_import`)
  before it waits for confirmation, and written only once confirmed (``perform``).

Both tables are ordinary system tables: their changes are transactional and reactive, so
a client subscribed to ``_system/cli/exports:getLatest`` or ``_system/cli/queryImport``
sees each state as it is committed. A server that stops during a job marks the job
``failed`` when it starts again (an interrupted job is never resumed half-way).

Source of the shapes: the Convex CLI (``convexExport.ts``, ``convexImport.ts``) and
backend (``crates/application/src/exports``, ``snapshot_import``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reactive import _core
from reactive.db.system import patch_system, write_system
from reactive.errors import (
    IndexNotFoundError,
    ReactiveError,
    TableNotFoundError,
)
from reactive.snapshot import (
    IMPORT_FORMATS,
    IMPORT_MODES,
    ImportPlan,
    export_snapshot,
    perform_import,
    plan_import,
)

if TYPE_CHECKING:
    from reactive.db.database import Database

__all__ = [
    "EXPORTS",
    "IMPORTS",
    "KEPT_EXPORTS",
    "Exporter",
    "Importer",
    "JobError",
    "get_import",
    "latest_export",
    "list_imports",
]

log = logging.getLogger("reactive.admin")

EXPORTS = "_exports"
IMPORTS = "_snapshot_imports"
KEPT_EXPORTS = 3
"""Completed export ZIPs kept on disk (older ones are deleted)."""
MAX_PART_BYTES = 64 << 20
"""Largest upload part (the Convex CLI sends 5 MiB parts)."""
MAX_PARTS = 10_000
MAX_OPEN_UPLOADS = 16
UPLOAD_IDLE_S = 3600.0
"""An upload that receives nothing for this long is dropped."""
PROGRESS_EVERY_S = 1.0


UPLOAD_LABEL = "the uploaded file"
"""How import errors name an uploaded file (the client does not send its name)."""


class JobError(ReactiveError):
    """A request about an export or import that cannot be honoured.

    ``code`` is Convex's error code (``ExportInProgress``, ``InvalidImport``...);
    ``status`` the HTTP status to answer with.
    """

    def __init__(self, message: str, code: str = "BadRequest", status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def _docs(txn: _core.Transaction, table: str, order: str, limit: int) -> list[dict[str, Any]]:
    try:
        docs, _, _ = txn.scan(table, "by_creation_time", [], order, limit, None, None, None, True)
    except (TableNotFoundError, IndexNotFoundError):
        return []
    return list(docs)


def latest_export(txn: _core.Transaction) -> dict[str, Any] | None:
    """The newest ``_exports`` document, or ``None`` when none was ever requested."""
    docs = _docs(txn, EXPORTS, "desc", 1)
    return docs[0] if docs else None


def list_imports(txn: _core.Transaction, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` ``_snapshot_imports`` documents, newest first."""
    return _docs(txn, IMPORTS, "desc", limit)


def get_import(txn: _core.Transaction, import_id: str) -> dict[str, Any] | None:
    """One ``_snapshot_imports`` document, or ``None`` (also for an id of another table)."""
    try:
        if txn.table_of(import_id) != IMPORTS:
            return None
        doc = txn.get(import_id)
    except (ReactiveError, ValueError):
        return None
    return doc


def _patch(txn: _core.Transaction, doc_id: str, fields: dict[str, Any]) -> None:
    doc = txn.get(doc_id)
    if doc is not None:
        patch_system(txn, doc, fields)


async def _fail_interrupted(db: Database, table: str, is_running: Callable[[Any], bool]) -> int:
    def change(txn: _core.Transaction) -> int:
        n = 0
        for doc in _docs(txn, table, "desc", 1000):
            if is_running(doc["state"]):
                reason = "the server stopped while this ran; run it again"
                if table == EXPORTS:
                    _patch(txn, doc["_id"], {"state": "failed", "failure_reason": reason})
                else:
                    _patch(txn, doc["_id"], {"state": {"state": "failed", "error_message": reason}})
                n += 1
        return n

    return await write_system(db, change)


class Exporter:
    """Runs snapshot exports in the background (one at a time) into ``directory``."""

    def __init__(self, db: Database, directory: Path) -> None:
        self.db = db
        self.directory = directory
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Create ``_exports``; mark exports a previous process left running as failed."""
        self.db._engine.create_system_table(EXPORTS)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stray in self.directory.glob("*.partial"):
            stray.unlink(missing_ok=True)
        failed = await _fail_interrupted(
            self.db, EXPORTS, lambda state: state in ("requested", "in_progress")
        )
        if failed:
            log.warning("%d export(s) interrupted by the last stop are marked failed", failed)

    async def close(self) -> None:
        """Stop a running export (it is marked failed at the next start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def request(self, include_storage: bool = False) -> str:
        """Start an export; returns its ``_exports`` id.

        Raises:
            JobError: ``ExportInProgress`` when one is requested or running.
        """

        def change(txn: _core.Transaction) -> str:
            latest = latest_export(txn)
            if latest is not None and latest["state"] in ("requested", "in_progress"):
                raise JobError(
                    "a snapshot export is already requested or in progress; wait for it to finish",
                    "ExportInProgress",
                )
            return str(
                txn.insert(
                    EXPORTS,
                    {
                        "state": "requested",
                        "format": {"format": "zip", "include_storage": include_storage},
                        "requested_ms": time.time() * 1000.0,
                    },
                )
            )

        export_id = await write_system(self.db, change)
        self._task = asyncio.get_running_loop().create_task(
            self._run(export_id, include_storage), name="reactive-export"
        )
        return export_id

    async def _run(self, export_id: str, include_storage: bool = False) -> None:
        db = self.db
        partial = self.directory / f"export-{export_id}.zip"
        try:
            ts = db._engine.visible_ts
            await write_system(
                db, lambda txn: _patch(txn, export_id, {"state": "in_progress", "start_ts": ts})
            )
            with db.pin_snapshot(ts):
                report = await export_snapshot(db, partial, include_storage=include_storage)
            name = f"snapshot_{report.ts}.zip"
            partial.replace(self.directory / name)
            done = {
                "state": "completed",
                "start_ts": report.ts,
                "complete_ts": int(db._engine.visible_ts),
                "zip_object_key": name,
            }
            await write_system(db, lambda txn: _patch(txn, export_id, done))
            log.info("export %s: %d documents at timestamp %d", name, report.documents, report.ts)
            self._prune()
        except asyncio.CancelledError:
            partial.unlink(missing_ok=True)
            raise
        except Exception as exc:
            partial.unlink(missing_ok=True)
            log.exception("export %s failed", export_id)
            failed = {"state": "failed", "failure_reason": f"{type(exc).__name__}: {exc}"}
            with contextlib.suppress(Exception):
                await write_system(db, lambda txn: _patch(txn, export_id, failed))

    def _prune(self) -> None:
        zips = sorted(
            self.directory.glob("snapshot_*.zip"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for old in zips[KEPT_EXPORTS:]:
            old.unlink(missing_ok=True)

    def zip_path(self, ts: str) -> Path:
        """The ZIP of the export at snapshot ``ts``.

        Raises:
            JobError: ``NotFound`` (404) when there is none (never made, or deleted).
        """
        if not ts.isdigit():
            raise JobError(f"{ts!r} is not a snapshot timestamp", "BadRequest")
        path = self.directory / f"snapshot_{int(ts)}.zip"
        if not path.is_file():
            raise JobError(
                f"no export at timestamp {ts} (only the newest {KEPT_EXPORTS} are kept)",
                "NotFound",
                404,
            )
        return path


@dataclass
class _Upload:
    directory: Path
    parts: dict[int, tuple[Path, int]] = field(default_factory=dict)
    touched: float = field(default_factory=time.monotonic)


class Importer:
    """Uploads, checks and runs imports; files live under ``directory`` while they run."""

    def __init__(self, db: Database, directory: Path) -> None:
        self.db = db
        self.directory = directory
        self._uploads: dict[str, _Upload] = {}
        self._plans: dict[str, ImportPlan] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def open(self) -> None:
        """Create ``_snapshot_imports``; fail imports a previous process left unfinished."""
        self.db._engine.create_system_table(IMPORTS)
        if self.directory.exists():
            for leftover in self.directory.iterdir():
                _remove(leftover)
        self.directory.mkdir(parents=True, exist_ok=True)
        failed = await _fail_interrupted(
            self.db,
            IMPORTS,
            lambda state: state.get("state") not in ("completed", "failed"),
        )
        if failed:
            log.warning("%d import(s) interrupted by the last stop are marked failed", failed)

    async def close(self) -> None:
        """Stop running imports (marked failed at the next start) and drop uploads."""
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for upload in self._uploads.values():
            _remove(upload.directory)
        self._uploads.clear()

    def _sweep(self) -> None:
        now = time.monotonic()
        for token, upload in list(self._uploads.items()):
            if now - upload.touched > UPLOAD_IDLE_S:
                _remove(upload.directory)
                del self._uploads[token]

    def start_upload(self) -> str:
        """A new upload; returns its token.

        Raises:
            JobError: too many uploads are open.
        """
        self._sweep()
        if len(self._uploads) >= MAX_OPEN_UPLOADS:
            raise JobError(
                f"{MAX_OPEN_UPLOADS} uploads are open; finish one first", "TooManyUploads", 429
            )
        token = secrets.token_urlsafe(24)
        directory = self.directory / f"upload-{token}"
        directory.mkdir(parents=True)
        self._uploads[token] = _Upload(directory)
        return token

    def _upload(self, token: Any) -> _Upload:
        upload = self._uploads.get(token) if isinstance(token, str) else None
        if upload is None:
            raise JobError("unknown or expired upload token", "InvalidUploadToken")
        upload.touched = time.monotonic()
        return upload

    async def upload_part(self, token: Any, part_number: Any, body: AsyncIterator[bytes]) -> str:
        """Store one part of an upload; returns its part token.

        Raises:
            JobError: a bad token or part number, or a part over :data:`MAX_PART_BYTES`.
        """
        upload = self._upload(token)
        if not isinstance(part_number, int) or not 1 <= part_number <= MAX_PARTS:
            raise JobError(f"partNumber must be an integer from 1 to {MAX_PARTS}")
        path = upload.directory / f"part-{part_number}"
        size = 0
        with open(path, "wb") as f:
            async for chunk in body:
                size += len(chunk)
                if size > MAX_PART_BYTES:
                    f.close()
                    path.unlink(missing_ok=True)
                    raise JobError(
                        f"an upload part is limited to {MAX_PART_BYTES} bytes",
                        "RequestTooLarge",
                        413,
                    )
                f.write(chunk)
        upload.parts[part_number] = (path, size)
        return f"{part_number}.{size}"

    async def finish_upload(
        self,
        token: Any,
        part_tokens: Any,
        *,
        format: Any,
        mode: Any = "requireEmpty",
        table: Any = None,
    ) -> str:
        """Join the parts into one file and start checking it; returns the import's id.

        Raises:
            JobError: a bad token, part list, format, mode or table name.
        """
        upload = self._upload(token)
        if format not in IMPORT_FORMATS:
            raise JobError(f"unknown import format {format!r}", "InvalidImportFormat")
        if mode not in IMPORT_MODES:
            raise JobError(f"unknown import mode {mode!r}", "InvalidImportMode")
        if format == "zip" and table is not None:
            raise JobError("ZIP import cannot have table name", "InvalidName")
        if format != "zip" and not isinstance(table, str):
            raise JobError(f"a {format} import requires a table name", "InvalidName")
        if not isinstance(part_tokens, list) or not part_tokens:
            raise JobError("partTokens must be a non-empty list")
        order = []
        for part_token in part_tokens:
            number = str(part_token).split(".", 1)[0]
            if not number.isdigit() or int(number) not in upload.parts:
                raise JobError(f"unknown part token {part_token!r:.40}", "InvalidUploadToken")
            order.append(upload.parts[int(number)][0])
        del self._uploads[token]
        suffix = {"zip": ".zip", "jsonLines": ".jsonl", "jsonArray": ".json", "csv": ".csv"}
        target = upload.directory.with_name(upload.directory.name + suffix[format])
        await asyncio.to_thread(_concatenate, order, target)
        _remove(upload.directory)
        fields: dict[str, Any] = {
            "state": {"state": "uploaded"},
            "format": format,
            "mode": mode,
            "requested_ms": time.time() * 1000.0,
        }
        if table is not None:
            fields["table_name"] = table
        import_id = await write_system(self.db, lambda txn: str(txn.insert(IMPORTS, fields)))
        self._start(import_id, self._check(import_id, target, format, mode, table))
        return import_id

    def _start(self, import_id: str, job: Any) -> None:
        task = asyncio.get_running_loop().create_task(job, name=f"reactive-import-{import_id}")
        self._tasks[import_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(import_id, None))

    async def _set_state(self, import_id: str, state: dict[str, Any]) -> None:
        await write_system(self.db, lambda txn: _patch(txn, import_id, {"state": state}))

    async def _check(
        self, import_id: str, path: Path, format: str, mode: str, table: str | None
    ) -> None:
        try:
            plan = await asyncio.to_thread(
                plan_import,
                self.db,
                path,
                format=format,
                table=table,
                mode=mode,
                label=UPLOAD_LABEL,
            )
        except Exception as exc:
            path.unlink(missing_ok=True)
            await self._set_state(import_id, {"state": "failed", "error_message": str(exc)})
            return
        self._plans[import_id] = plan
        message = plan.summary()
        for skipped in plan.skipped:
            message += f"\nSkipped: {skipped}"
        message += (
            "\nOnce the import has started, it will run in the background.\n"
            "Interrupting `npx convex import` will not cancel it."
        )
        await self._set_state(
            import_id,
            {
                "state": "waiting_for_confirmation",
                "message_to_confirm": message,
                "require_manual_confirmation": plan.needs_confirmation,
            },
        )

    async def perform(self, import_id: Any) -> None:
        """Start writing a checked import (``POST /api/perform_import``).

        Raises:
            JobError: the import does not exist or is not waiting for confirmation.
        """
        plan = self._plans.pop(import_id, None) if isinstance(import_id, str) else None
        if plan is None:
            doc = get_import(self.db._engine.begin(True), str(import_id))
            state = None if doc is None else doc["state"].get("state")
            raise JobError(
                f"import {import_id!r:.40} is not waiting for confirmation (state: {state})",
                "InvalidImport",
            )
        await self._set_state(
            import_id,
            {"state": "in_progress", "progress_message": "Importing", "checkpoint_messages": []},
        )
        self._start(import_id, self._perform(import_id, plan))

    async def _perform(self, import_id: str, plan: ImportPlan) -> None:
        progress = _StateProgress(self, import_id)
        try:
            report = await perform_import(self.db, plan, progress=progress)
            await progress.settle()
            await self._set_state(
                import_id,
                {
                    "state": "completed",
                    "num_rows_written": int(report.documents),
                    "checkpoint_messages": progress.messages(),
                },
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("import %s failed: %s", import_id, exc)
            await progress.settle()
            await self._set_state(import_id, {"state": "failed", "error_message": str(exc)})
        finally:
            plan.path.unlink(missing_ok=True)

    async def cancel(self, import_id: Any) -> None:
        """Cancel an import that has not started writing.

        Raises:
            JobError: the import does not exist or is already writing or finished.
        """
        plan = self._plans.pop(import_id, None) if isinstance(import_id, str) else None
        if plan is None:
            raise JobError(
                f"import {import_id!r:.40} cannot be canceled (it is not waiting for confirmation)",
                "InvalidImport",
            )
        plan.path.unlink(missing_ok=True)
        await self._set_state(import_id, {"state": "failed", "error_message": "Import canceled"})

    async def run_now(self, path: Path, *, format: str, mode: str, table: str | None) -> int:
        """Check and write an import at once (``POST /api/import``); documents written.

        Raises:
            SnapshotError: the file or the import is not acceptable.
        """
        try:
            plan = await asyncio.to_thread(
                plan_import,
                self.db,
                path,
                format=format,
                table=table,
                mode=mode,
                label=UPLOAD_LABEL,
            )
            report = await perform_import(self.db, plan)
        finally:
            path.unlink(missing_ok=True)
        return report.documents


class _StateProgress:
    """Reports an import's progress into its ``_snapshot_imports`` state (at most 1/s)."""

    def __init__(self, importer: Importer, import_id: str) -> None:
        self.importer = importer
        self.import_id = import_id
        self.tables: dict[Any, list[Any]] = {}
        self.done: list[str] = []
        self.last = 0.0
        self.pending: asyncio.Task[None] | None = None

    def add_table(self, name: str, total: int | None) -> Any:
        self._finish_previous()
        self.tables[name] = [name, 0, total]
        return name

    def _finish_previous(self) -> None:
        for name, count, _total in self.tables.values():
            line = f"Imported {count:,} documents into table {name}"
            if line not in self.done:
                self.done.append(line)

    def messages(self) -> list[str]:
        self._finish_previous()
        return list(self.done)

    def advance(self, task: Any, amount: int) -> None:
        entry = self.tables[task]
        entry[1] += amount
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S or (
            self.pending is not None and not self.pending.done()
        ):
            return
        self.last = now
        state = {
            "state": "in_progress",
            "progress_message": f"Importing {entry[0]} ({entry[1]:,} of {entry[2]:,} documents)",
            "checkpoint_messages": list(self.done),
        }
        self.pending = asyncio.get_running_loop().create_task(
            self.importer._set_state(self.import_id, state)
        )

    async def settle(self) -> None:
        """Wait for the progress write in flight (so it cannot land after the outcome)."""
        if self.pending is not None:
            with contextlib.suppress(Exception):
                await self.pending


def _concatenate(parts: list[Path], target: Path) -> None:
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 20):
                    out.write(chunk)


def _remove(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            _remove(child)
        with contextlib.suppress(OSError):
            path.rmdir()
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)

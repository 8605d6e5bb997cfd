"""Snapshot export and import in the Convex snapshot ZIP layout.

The layout is the one ``npx convex export`` writes (spec §16, from the Convex backend's
``crates/exports``)::

    README.md                        a short note about the export
    _tables/documents.jsonl          one line per user table: {"name": ..., "id": number}
    <table>/documents.jsonl          one document per line, export JSON (spec §11.3)
    <table>/generated_schema.jsonl   the single line "uniform" (legacy)

Export JSON writes an int64 as a JSON integer (``42``) and a float64 always with a decimal
point or an exponent (``42.0``), so the importer tells them apart by the number's text;
non-finite floats are ``{"$float": base64}`` and bytes ``{"$bytes": base64}``; object keys
are sorted by byte order. Every document keeps its ``_id`` and ``_creationTime``, and a
table keeps its table number (ids encode it), so a database moves between backends
(SQLite → PostgreSQL → MySQL → SQLite) unchanged.

Both directions stream: export reads one page of a table at a time from a pinned
snapshot (the export is one consistent snapshot however long it runs) and writes each
line into the compressed ZIP entry as it goes; import reads a ZIP entry line by line and
commits documents in transactions of at most :data:`IMPORT_BATCH_DOCUMENTS` documents /
:data:`IMPORT_BATCH_BYTES` bytes. Memory stays bounded by a page or a batch.

Indexes are not part of a snapshot (as in Convex, they come from the app's schema): after
an import, opening the database with the app backfills the schema's indexes.
"""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reactive import _core
from reactive.errors import InvalidValueError, ReactiveError

if TYPE_CHECKING:
    from reactive.db.database import Database

__all__ = [
    "IMPORT_BATCH_BYTES",
    "IMPORT_BATCH_DOCUMENTS",
    "ExportReport",
    "ImportReport",
    "SnapshotError",
    "export_snapshot",
    "import_snapshot",
]

#: Documents per import transaction.
IMPORT_BATCH_DOCUMENTS = 1000
#: Approximate bytes of JSON per import transaction (below the per-transaction write limit).
IMPORT_BATCH_BYTES = 4 << 20
#: Documents read per page while exporting.
EXPORT_PAGE_DOCUMENTS = 500

_README = """\
This is a snapshot export of a `reactive` database, in the Convex snapshot ZIP layout.

_tables/documents.jsonl lists the tables ({"name", "id"}: the table number that document
ids encode). <table>/documents.jsonl holds one document per line in Convex's export JSON:
an int64 is a JSON integer (42), a float64 always has a decimal point or an exponent
(42.0), non-finite floats are {"$float": base64 of 8 bytes little-endian} and bytes are
{"$bytes": base64}.

Import it with `python -m reactive import URL PATH`, or with `npx convex import`.
"""


class SnapshotError(ReactiveError):
    """A snapshot ZIP cannot be read or imported; the message names the file and line."""


@dataclass
class ExportReport:
    """What an export wrote: the snapshot timestamp and documents per table."""

    ts: int
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        """Documents written in all tables."""
        return sum(self.tables.values())


@dataclass
class ImportReport:
    """What an import wrote: documents per table, and what it skipped (with why)."""

    tables: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def documents(self) -> int:
        """Documents imported into all tables."""
        return sum(self.tables.values())


class Progress(Protocol):
    """What export and import report progress to (``reactive.snapshot`` uses rich's)."""

    def add_table(self, name: str, total: int | None) -> Any: ...

    def advance(self, task: Any, amount: int) -> None: ...


class _NoProgress:
    def add_table(self, name: str, total: int | None) -> Any:
        return None

    def advance(self, task: Any, amount: int) -> None:
        return None


def _user_tables(db: Database) -> list[dict[str, Any]]:
    tables = [t for t in db._engine.tables() if not t["name"].startswith("_")]
    tables.sort(key=lambda t: t["number"])
    return tables


async def export_snapshot(
    db: Database, path: str | Path, *, progress: Progress | None = None
) -> ExportReport:
    """Write every user table of ``db`` at one snapshot to the ZIP file ``path``.

    The file is written to ``path + ".partial"`` and renamed at the end, so ``path`` never
    holds half an export. System tables (names starting with ``_``) are not exported.

    Returns:
        ExportReport: the snapshot timestamp and documents per table.

    Raises:
        OSError: the file cannot be written.
    """
    progress = progress or _NoProgress()
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    engine = db._engine
    await db._flusher.flush()
    with db.pin_snapshot() as ts:
        report = ExportReport(ts)
        tables = _user_tables(db)
        try:
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                _write_text(zf, "README.md", _README)
                _write_text(
                    zf,
                    "_tables/documents.jsonl",
                    "".join(
                        json.dumps({"name": t["name"], "id": t["number"]}) + "\n" for t in tables
                    ),
                )
                for table in tables:
                    name = table["name"]
                    task = progress.add_table(name, engine.count_documents(name))
                    count = 0
                    # force_zip64: a table may pass 2 GiB, and its size is not known up front.
                    entry = _entry(f"{name}/documents.jsonl")
                    with zf.open(entry, "w", force_zip64=True) as out:
                        after: bytes | None = None
                        while True:
                            docs, after = engine.table_page(name, ts, after, EXPORT_PAGE_DOCUMENTS)
                            chunk = "".join(_core.export_json(d) + "\n" for d in docs)
                            out.write(chunk.encode())
                            count += len(docs)
                            progress.advance(task, len(docs))
                            if after is None:
                                break
                            await asyncio.sleep(0)  # let commits and queries run
                    _write_text(zf, f"{name}/generated_schema.jsonl", '"uniform"\n')
                    report.tables[name] = count
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return report


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o100644 << 16
    return info


def _write_text(zf: zipfile.ZipFile, name: str, text: str) -> None:
    zf.writestr(_entry(name), text)


def _lines(zf: zipfile.ZipFile, name: str) -> Iterator[tuple[int, bytes]]:
    with zf.open(name) as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if line:
                yield number, line


def _read_tables(zf: zipfile.ZipFile, names: set[str]) -> list[tuple[str, int]]:
    if "_tables/documents.jsonl" not in names:
        raise SnapshotError(
            "not a snapshot export: _tables/documents.jsonl is missing (expected the Convex "
            "snapshot ZIP layout written by `python -m reactive export` or `npx convex export`)"
        )
    tables = []
    for number, line in _lines(zf, "_tables/documents.jsonl"):
        where = f"_tables/documents.jsonl line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SnapshotError(f"{where}: not JSON: {exc}") from None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("name"), str)
            or not isinstance(entry.get("id"), int)
            or isinstance(entry.get("id"), bool)
        ):
            raise SnapshotError(f'{where}: expected {{"name": string, "id": integer}}')
        tables.append((entry["name"], entry["id"]))
    return tables


def _check_generated_schema(zf: zipfile.ZipFile, names: set[str], table: str) -> None:
    # Old Convex exports list per-document type overrides after the first line; their
    # documents.jsonl cannot be read without them, so refuse instead of guessing types.
    name = f"{table}/generated_schema.jsonl"
    if name not in names:
        return
    for number, _ in _lines(zf, name):
        if number > 1:
            raise SnapshotError(
                f"{name} has type overrides (a legacy Convex export format); export again "
                "with a current Convex CLI"
            )


def _prepare_table(db: Database, name: str, number: int) -> None:
    engine = db._engine
    existing = {t["name"]: t for t in engine.tables()}
    if name in existing:
        t = existing[name]
        if t["number"] != number:
            raise SnapshotError(
                f"table {name!r} exists with table number {t['number']}, but the snapshot's "
                f"ids use {number}; import into a database without this table"
            )
        if engine.count_documents(name):
            raise SnapshotError(
                f"table {name!r} already has documents; import into an empty database or "
                "an empty table (nothing was imported into it)"
            )
        return
    for t in existing.values():
        if t["number"] == number:
            raise SnapshotError(
                f"table number {number} of {name!r} is taken by table {t['name']!r}; import "
                "into a database without it"
            )
    engine.create_table_numbered(name, number)


async def import_snapshot(
    db: Database, path: str | Path, *, progress: Progress | None = None
) -> ImportReport:
    """Load a snapshot ZIP (ours or Convex's) into ``db``, keeping ids and creation times.

    Each table of the snapshot must be absent from ``db`` or empty. Documents are committed
    in transactions of up to :data:`IMPORT_BATCH_DOCUMENTS`; when an error stops the
    import, the transactions already committed stay (the error names the table and line).
    File storage (``_storage``) and child components (``_components``) are skipped and
    listed in the report.

    Raises:
        SnapshotError: the file is not a snapshot, a line is malformed, or a table cannot
            be imported (it has documents or its number is taken).
        FileNotFoundError: ``path`` does not exist.
    """
    progress = progress or _NoProgress()
    report = ImportReport()
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise SnapshotError(f"{path} is not a ZIP file: {exc}") from None
    with zf:
        names = set(zf.namelist())
        tables = _read_tables(zf, names)
        for name, _number in tables:
            if name.startswith("_"):
                report.skipped.append(f"system table {name}")
        if any(n.startswith("_storage/") for n in names):
            report.skipped.append("_storage (file storage is not supported)")
        if any(n.startswith("_components/") for n in names):
            report.skipped.append("_components (child components are not supported)")
        wanted = [(n, k) for n, k in tables if not n.startswith("_")]
        for name, _number in wanted:
            if f"{name}/documents.jsonl" not in names:
                raise SnapshotError(f"{name}/documents.jsonl is missing from the snapshot")
            _check_generated_schema(zf, names, name)
        for name, number in wanted:
            _prepare_table(db, name, number)
            entry = zf.getinfo(f"{name}/documents.jsonl")
            task = progress.add_table(name, entry.file_size)
            report.tables[name] = await _import_table(db, zf, name, number, progress, task)
    return report


async def _import_table(
    db: Database,
    zf: zipfile.ZipFile,
    name: str,
    number: int,
    progress: Progress,
    task: Any,
) -> int:
    entry = f"{name}/documents.jsonl"
    batch: list[tuple[str, float, dict[str, Any]]] = []
    batch_bytes = 0
    count = 0
    with zf.open(entry) as f:
        for line_number, raw in enumerate(f, start=1):
            progress.advance(task, len(raw))
            line = raw.strip()
            if not line:
                continue
            where = f"{entry} line {line_number}"
            batch.append(_parse_document(line, where, number))
            batch_bytes += len(line)
            if len(batch) >= IMPORT_BATCH_DOCUMENTS or batch_bytes >= IMPORT_BATCH_BYTES:
                count += await _commit(db, batch, entry)
                batch, batch_bytes = [], 0
    if batch:
        count += await _commit(db, batch, entry)
    return count


def _parse_document(line: bytes, where: str, number: int) -> tuple[str, float, dict[str, Any]]:
    try:
        parsed = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{where}: not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise SnapshotError(f"{where}: a document must be a JSON object")
    doc_id = parsed.pop("_id", None)
    creation = parsed.pop("_creationTime", None)
    if not isinstance(doc_id, str):
        raise SnapshotError(f"{where}: _id is missing or not a string")
    if isinstance(creation, int) and not isinstance(creation, bool):
        creation = float(creation)
    if not isinstance(creation, float):
        raise SnapshotError(f"{where}: _creationTime is missing or not a number")
    if _core.id_table_number(doc_id) != number:
        raise SnapshotError(
            f"{where}: _id {doc_id!r} is not an id of table number {number} "
            "(_tables/documents.jsonl)"
        )
    try:
        fields = _core.from_convex_json(parsed, where, export=True)
    except InvalidValueError as exc:
        raise SnapshotError(str(exc)) from None
    return doc_id, creation, fields


async def _commit(db: Database, batch: list[tuple[str, float, dict[str, Any]]], entry: str) -> int:
    engine = db._engine
    txn = engine.begin(False)
    for doc_id, creation, fields in batch:
        try:
            txn.insert_existing(doc_id, creation, fields)
        except ReactiveError as exc:
            raise SnapshotError(f"{entry}: document {doc_id}: {exc}") from exc
    ts = engine.commit(txn)
    if ts is not None:
        db._flusher.nudge()
        await db._flusher.wait(ts)
    return len(batch)

"""Snapshot export and import in the Convex snapshot ZIP layout.

The layout is the one ``npx convex export`` writes (spec §16, from the Convex backend's
``crates/exports``)::

    README.md                        a short note about the export
    _tables/documents.jsonl          one line per user table: {"name": ..., "id": number}
    <table>/documents.jsonl          one document per line, export JSON (spec §11.3)
    <table>/generated_schema.jsonl   the single line "uniform" (legacy)
    _storage/documents.jsonl         with file storage: one line per file, {"_id",
                                     "_creationTime", "sha256", "size", "contentType"?}
    _storage/<id>[.<ext>]            with file storage: each file's bytes

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

File storage is exported when asked (``include_storage``; Convex's
``npx convex export --include-file-storage``) and imported whenever the ZIP has it. An
import keeps the files' storage ids when the target's ``_storage`` table has the same table
number as the source's (e.g. a fresh server of the same app); otherwise each file gets a new
id and every string in the imported documents equal to an old storage id is rewritten to
the new one, so documents that reference files stay valid either way.

Indexes are not part of a snapshot (as in Convex, they come from the app's schema): after
an import, opening the database with the app backfills the schema's indexes.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import mimetypes
import re
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from reactive import _core
from reactive.errors import InvalidValueError, ReactiveError, RetryableError

if TYPE_CHECKING:
    from reactive.db.database import Database

__all__ = [
    "EXPORTED_SYSTEM_TABLES",
    "IMPORT_BATCH_BYTES",
    "IMPORT_BATCH_DOCUMENTS",
    "IMPORT_FORMATS",
    "IMPORT_MODES",
    "ExportReport",
    "ImportPlan",
    "ImportReport",
    "SnapshotError",
    "TablePlan",
    "export_snapshot",
    "import_snapshot",
    "perform_import",
    "plan_import",
]

log = logging.getLogger("reactive.snapshot")

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

_storage/documents.jsonl and _storage/<id>, when the export includes file storage, are the
files' metadata and bytes (the extension after the id is a guess from the content type).

_scheduled_functions/documents.jsonl, when there are any, records the scheduled functions (their
names, arguments, times and states); an import skips it, so a restore does not run them.

Import it with `python -m reactive import URL PATH`, or with `npx convex import`.
"""

EXPORTED_SYSTEM_TABLES = ("_scheduled_functions",)
"""System tables an export writes (not in ``_tables``; an import skips them)."""


class SnapshotError(ReactiveError):
    """A snapshot ZIP cannot be read or imported; the message names the file and line."""


@dataclass
class ExportReport:
    """What an export wrote: the snapshot timestamp and documents per table."""

    ts: int
    tables: dict[str, int] = field(default_factory=dict)
    system_tables: dict[str, int] = field(default_factory=dict)
    """Documents of the system tables written for the record (``_scheduled_functions``)."""
    files: int = 0
    """Files written (``_storage/``; only when the export includes file storage)."""

    @property
    def documents(self) -> int:
        """Documents written in all tables."""
        return sum(self.tables.values())


@dataclass
class ImportReport:
    """What an import wrote: documents per table, and what it skipped (with why)."""

    tables: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    files: int = 0
    """Files imported into file storage (``_storage/``)."""
    storage_ids_kept: bool = True
    """Whether the files kept their storage ids (else references were rewritten)."""

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
    db: Database,
    path: str | Path,
    *,
    progress: Progress | None = None,
    include_storage: bool = False,
) -> ExportReport:
    """Write every user table of ``db`` at one snapshot to the ZIP file ``path``.

    The file is written to ``path + ".partial"`` and renamed at the end, so ``path`` never
    holds half an export. System tables (names starting with ``_``) are not exported, but
    for ``_scheduled_functions``, written for the record (an import skips it), and with
    ``include_storage`` the files of ``_storage`` (metadata and bytes, streamed).

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
                system = [
                    t
                    for t in engine.tables()
                    if t["name"] in EXPORTED_SYSTEM_TABLES and engine.count_documents(t["name"])
                ]
                for table in tables + system:
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
                    if name in EXPORTED_SYSTEM_TABLES:
                        report.system_tables[name] = count
                        continue
                    _write_text(zf, f"{name}/generated_schema.jsonl", '"uniform"\n')
                    report.tables[name] = count
                if include_storage:
                    report.files = await _export_files(db, zf, ts, progress)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return report


async def _export_files(db: Database, zf: zipfile.ZipFile, ts: int, progress: Progress) -> int:
    """Write ``_storage/documents.jsonl`` and ``_storage/<id>[.ext]`` at snapshot ``ts``."""
    from reactive.db.storage import STORAGE

    files = db._files
    engine = db._engine
    if files is None or not any(t["name"] == STORAGE for t in engine.tables()):
        return 0
    docs: list[dict[str, Any]] = []
    after: bytes | None = None
    while True:
        page, after = engine.table_page(STORAGE, ts, after, EXPORT_PAGE_DOCUMENTS)
        docs.extend(page)
        if after is None:
            break
    shas = [str(d["sha256"]) for d in docs]
    for sha in shas:
        files.pin(sha)  # a concurrent delete keeps the bytes until they are written
    try:
        # A file deleted after the snapshot may have lost its bytes already: left out.
        present = [d for d in docs if files.path_of(d["sha256"]).is_file()]
        if len(present) < len(docs):
            log.warning(
                "export: %d file(s) deleted meanwhile are left out", len(docs) - len(present)
            )
        lines = []
        for doc in present:
            meta: dict[str, Any] = {"_id": doc["_id"], "_creationTime": doc["_creationTime"]}
            meta["sha256"] = doc["sha256"]
            meta["size"] = int(doc["size"])
            if doc.get("contentType") is not None:
                meta["contentType"] = doc["contentType"]
            lines.append(json.dumps(meta) + "\n")
        _write_text(zf, f"{STORAGE}/documents.jsonl", "".join(lines))
        task = progress.add_table(STORAGE, len(present))
        for doc in present:
            ext = mimetypes.guess_extension(doc.get("contentType") or "") or ""
            info = zipfile.ZipInfo(f"{STORAGE}/{doc['_id']}{ext}")
            info.external_attr = 0o100644 << 16
            source = files.path_of(doc["sha256"]).open("rb")
            with source, zf.open(info, "w", force_zip64=True) as out:
                while chunk := await asyncio.to_thread(source.read, 1 << 20):
                    await asyncio.to_thread(out.write, chunk)
            progress.advance(task, 1)
    finally:
        for sha in shas:
            files.unpin(sha)
    return len(present)


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


IMPORT_FORMATS = ("zip", "jsonLines", "jsonArray", "csv")
"""What an import reads: a snapshot ZIP, or one table as JSON lines, a JSON array or CSV."""
IMPORT_MODES = ("requireEmpty", "append", "replace", "replaceAll")
"""Convex's import modes: the tables must be empty; add to them; replace the imported
tables' documents; replace every user table (tables absent from the import are emptied)."""
MAX_JSON_ARRAY_BYTES = 256 << 20
"""Largest JSON-array file (it is parsed whole; JSON lines and CSV stream)."""

_CSV_NUMBER = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE
)

Row = tuple[str | None, float | None, dict[str, Any]]
"""One document to import: ``(_id or None for a new one, _creationTime or None, fields)``."""


@dataclass
class TablePlan:
    """What an import does to one table.

    ``number`` is the table number the imported ids encode (``None``: the rows carry no
    ids); ``rows`` the documents to write; ``existing`` the documents there now and
    ``deletes`` how many of them the import removes first.
    """

    name: str
    number: int | None
    rows: int
    existing: int
    deletes: int
    source: str


@dataclass
class StoragePlan:
    """What an import does to file storage (``_storage/`` in the ZIP).

    ``entries`` maps each exported storage id to its ZIP entry; ``number`` is the table
    number the ids encode; ``keep_ids`` whether they can be kept (the target's
    ``_storage`` has that number), else files get new ids and references are rewritten.
    """

    entries: dict[str, str]
    number: int | None = None
    rows: int = 0
    existing: int = 0
    deletes: int = 0
    keep_ids: bool = False


_STORAGE_ENTRY = re.compile(r"(?:.*/)?_storage/([^/.]+)(?:\.[^/]+)?")


def _storage_entries(names: set[str]) -> dict[str, str]:
    entries: dict[str, str] = {}
    for name in names:
        match = _STORAGE_ENTRY.fullmatch(name)
        if match and name != "_storage/documents.jsonl":
            entries[match.group(1)] = name
    return entries


@dataclass
class ImportPlan:
    """An import checked in full against the file and the database, before any write.

    Built by :func:`plan_import`, carried out by :func:`perform_import`.
    """

    path: Path
    format: str
    mode: str
    tables: list[TablePlan] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    label: str = ""
    storage: StoragePlan | None = None
    """The files to import (``_storage/`` in a ZIP), if any."""
    """How error messages name the file (default: its base name)."""

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.path.name

    @property
    def needs_confirmation(self) -> bool:
        """True when the import deletes documents (Convex asks before that)."""
        return any(t.deletes for t in self.tables) or bool(self.storage and self.storage.deletes)

    def summary(self) -> str:
        """Convex's change summary: a table of documents created and deleted per table."""
        rows = [("table", "create", "delete")]
        for t in self.tables:
            rows.append((t.name, f"{t.rows:,}", f"{t.deletes:,} of {t.existing:,} documents"))
        if self.storage is not None:
            st = self.storage
            rows.append(("_storage", f"{st.rows:,}", f"{st.deletes:,} of {st.existing:,} files"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["Import change summary:"]
        for i, r in enumerate(rows):
            lines.append(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
            if i == 0:
                lines.append("-" * (sum(widths) + 8))
        return "\n".join(lines)


def plan_import(
    db: Database,
    path: str | Path,
    *,
    format: str = "zip",
    table: str | None = None,
    mode: str = "requireEmpty",
    label: str | None = None,
) -> ImportPlan:
    """Read ``path`` in full and check it can be imported into ``db``; write nothing.

    Every line is parsed and every value converted; ids must belong to their table's
    number; in ``requireEmpty`` mode the tables must be empty, and in ``append`` mode an
    imported ``_id`` must not exist yet. Blocking (reads the whole file): run it on a
    thread for large files. ``label`` is how messages name the file (default: its name).

    Raises:
        SnapshotError: the file, a line, the format, mode or table name is not acceptable
            (the message names the file and line).
        FileNotFoundError: ``path`` does not exist.
    """
    if format not in IMPORT_FORMATS:
        raise SnapshotError(f"unknown import format {format!r}; one of {', '.join(IMPORT_FORMATS)}")
    if mode not in IMPORT_MODES:
        raise SnapshotError(f"unknown import mode {mode!r}; one of {', '.join(IMPORT_MODES)}")
    plan = ImportPlan(Path(path), format, mode, label=label or "")
    if format == "zip":
        if table is not None:
            raise SnapshotError("a ZIP import cannot name a table (the snapshot names them)")
        sources = _zip_sources(plan)
    else:
        if not table:
            raise SnapshotError(f"a {format} import needs a table name")
        _check_table_name(table)
        sources = [(table, None, format)]
    existing = {t["name"]: t for t in _user_tables(db)}
    txn = db._engine.begin(True)
    for name, number, source in sources:
        rows = 0
        numbers: set[int] = set()
        for doc_id, _creation, _fields in _rows(plan, name, number, source):
            rows += 1
            if doc_id is not None:
                numbers.add(cast(int, _core.id_table_number(doc_id)))
                if mode == "append" and name in existing and txn.get(doc_id) is not None:
                    raise SnapshotError(
                        f"{name}: a document with _id {doc_id} already exists; import "
                        "with mode replace, or without _id fields"
                    )
        if number is None and numbers:
            if len(numbers) > 1:
                raise SnapshotError(
                    f"{name}: the _id fields belong to {len(numbers)} different tables"
                )
            number = numbers.pop()
        plan.tables.append(_table_plan(db, existing, name, number, rows, mode, source))
    if plan.storage is not None:
        _plan_storage(db, plan)
    if mode == "replaceAll":
        named = {t.name for t in plan.tables}
        for name in existing:
            if name not in named:
                count = db._engine.count_documents(name)
                plan.tables.append(TablePlan(name, None, 0, count, count, ""))
    return plan


def _storage_rows(plan: ImportPlan) -> Iterator[tuple[str, float, dict[str, Any]]]:
    """``(id, creation ms, {"sha256"?, "contentType"?})`` of each file in the ZIP."""
    source = "_storage/documents.jsonl"
    with zipfile.ZipFile(plan.path) as zf:
        for number, line in _lines(zf, source):
            where = f"{source} line {number}"
            try:
                meta = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SnapshotError(f"{where}: not JSON: {exc}") from None
            if not isinstance(meta, dict):
                raise SnapshotError(f"{where}: a file's metadata must be a JSON object")
            file_id, creation = meta.get("_id"), meta.get("_creationTime")
            if not isinstance(file_id, str) or _core.id_table_number(file_id) is None:
                raise SnapshotError(f"{where}: _id {file_id!r:.60} is not a storage id")
            if creation is None:
                creation = time.time() * 1000.0
            if isinstance(creation, bool) or not isinstance(creation, (int, float)):
                raise SnapshotError(f"{where}: _creationTime must be a number")
            extra: dict[str, Any] = {}
            for key in ("sha256", "contentType"):
                value = meta.get(key)
                if value is not None and not isinstance(value, str):
                    raise SnapshotError(f"{where}: {key} must be a string")
                if value is not None:
                    extra[key] = value
            yield file_id, float(creation), extra


def _plan_storage(db: Database, plan: ImportPlan) -> None:
    from reactive.db.storage import STORAGE

    st = plan.storage
    assert st is not None
    numbers: set[int] = set()
    for file_id, _creation, _extra in _storage_rows(plan):
        st.rows += 1
        numbers.add(cast(int, _core.id_table_number(file_id)))
        if file_id not in st.entries:
            raise SnapshotError(f"_storage/{file_id}: the file of {file_id} is missing")
    if len(numbers) > 1:
        raise SnapshotError("_storage/documents.jsonl: the ids belong to different tables")
    st.number = numbers.pop() if numbers else None
    target = next((t for t in db._engine.tables() if t["name"] == STORAGE), None)
    st.existing = db._engine.count_documents(STORAGE) if target is not None else 0
    if plan.mode == "requireEmpty" and st.existing:
        raise SnapshotError(
            f"file storage already has {st.existing} file(s); import into a database without "
            "files, or with mode append or replace (nothing was imported)"
        )
    st.deletes = st.existing if plan.mode in ("replace", "replaceAll") else 0
    st.keep_ids = target is not None and st.number == target["number"]
    if st.keep_ids and plan.mode == "append":
        txn = db._engine.begin(True)
        for file_id, _creation, _extra in _storage_rows(plan):
            if txn.get(file_id) is not None:
                raise SnapshotError(
                    f"_storage: file {file_id} already exists; import with mode replace"
                )


def _check_table_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", name):
        raise SnapshotError(
            f"invalid table name {name!r}: a letter, then letters, digits or '_' (at most 64)"
        )


def _table_plan(
    db: Database,
    existing: dict[str, dict[str, Any]],
    name: str,
    number: int | None,
    rows: int,
    mode: str,
    source: str,
) -> TablePlan:
    count = 0
    if name in existing:
        count = db._engine.count_documents(name)
        have = existing[name]["number"]
        if number is not None and number != have:
            raise SnapshotError(
                f"table {name!r} exists with table number {have}, but the imported ids use "
                f"{number}; import into a database without this table, or without _id fields"
            )
        if mode == "requireEmpty" and count:
            raise SnapshotError(
                f"table {name!r} already has documents ({count}); import into an empty "
                "table, or with mode append or replace (nothing was imported)"
            )
    elif number is not None:
        for t in db._engine.tables():
            if t["number"] == number:
                raise SnapshotError(
                    f"table number {number} of {name!r} is taken by table {t['name']!r}; "
                    "import into a database without it, or without _id fields"
                )
    deletes = count if mode in ("replace", "replaceAll") else 0
    return TablePlan(name, number, rows, count, deletes, source)


def _zip_sources(plan: ImportPlan) -> list[tuple[str, int | None, str]]:
    try:
        zf = zipfile.ZipFile(plan.path)
    except zipfile.BadZipFile as exc:
        raise SnapshotError(f"{plan.label} is not a ZIP file: {exc}") from None
    with zf:
        names = set(zf.namelist())
        tables = _read_tables(zf, names)
        has_files = "_storage/documents.jsonl" in names
        for name, _number in tables:
            if name.startswith("_") and not (name == "_storage" and has_files):
                plan.skipped.append(f"system table {name}")
        for name in EXPORTED_SYSTEM_TABLES:
            if f"{name}/documents.jsonl" in names:
                plan.skipped.append(f"system table {name}")
        if has_files:
            plan.storage = StoragePlan(entries=_storage_entries(names))
        elif any(n.startswith("_storage/") for n in names):
            plan.skipped.append("_storage (files without _storage/documents.jsonl)")
        if any(n.startswith("_components/") for n in names):
            plan.skipped.append("_components (child components are not supported)")
        wanted = [(n, k) for n, k in tables if not n.startswith("_")]
        for name, _number in wanted:
            if f"{name}/documents.jsonl" not in names:
                raise SnapshotError(f"{name}/documents.jsonl is missing from the snapshot")
            _check_generated_schema(zf, names, name)
    return [(name, number, f"{name}/documents.jsonl") for name, number in wanted]


def _rows(plan: ImportPlan, name: str, number: int | None, source: str) -> Iterator[Row]:
    """The rows of one table of the import, in file order (streamed, except JSON arrays)."""
    if plan.format == "zip":
        assert number is not None
        with zipfile.ZipFile(plan.path) as zf, zf.open(source) as f:
            for line_number, raw in enumerate(f, start=1):
                line = raw.strip()
                if line:
                    yield _parse_document(line, f"{source} line {line_number}", number)
    elif plan.format == "jsonLines":
        with open(plan.path, "rb") as f:
            for line_number, raw in enumerate(f, start=1):
                line = raw.strip()
                if line_number == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                if not line:
                    continue
                where = f"{plan.label} line {line_number}"
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise SnapshotError(f"{where}: not JSON: {exc}") from None
                yield _parse_row(obj, where)
    elif plan.format == "jsonArray":
        size = plan.path.stat().st_size
        if size > MAX_JSON_ARRAY_BYTES:
            raise SnapshotError(
                f"{plan.label} is {size} bytes; a JSON array import takes at most "
                f"{MAX_JSON_ARRAY_BYTES} (use JSON lines for larger files)"
            )
        try:
            data = json.loads(plan.path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{plan.label}: not JSON: {exc}") from None
        if not isinstance(data, list):
            raise SnapshotError(f"{plan.label}: a JSON array import needs a top-level array")
        for i, obj in enumerate(data):
            yield _parse_row(obj, f"{plan.label} element {i}")
    else:
        yield from _csv_rows(plan.path, plan.label)


def _csv_rows(path: Path, label: str) -> Iterator[Row]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise SnapshotError(f"{label}: a CSV import needs a header row") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{label} line 1: not CSV: {exc}") from None
        fields = [h.strip(" ") for h in header]
        for name in fields:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name) or name.startswith("$"):
                raise SnapshotError(f"{label}: invalid field name {name!r} in the header")
        try:
            for line_number, cells in enumerate(reader, start=2):
                where = f"{label} line {line_number}"
                if len(cells) != len(fields):
                    raise SnapshotError(
                        f"{where}: {len(cells)} cells for {len(fields)} header fields"
                    )
                obj = {
                    name: float(cell) if _CSV_NUMBER.fullmatch(cell) else cell
                    for name, cell in zip(fields, cells, strict=True)
                }
                yield _parse_row(obj, where)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{label}: not CSV: {exc}") from None


def _parse_row(obj: Any, where: str) -> Row:
    """A document of a one-table import: Convex JSON (a JSON number is a float64)."""
    if not isinstance(obj, dict):
        raise SnapshotError(f"{where}: a document must be a JSON object")
    doc_id = obj.pop("_id", None)
    creation = obj.pop("_creationTime", None)
    if doc_id is not None and (
        not isinstance(doc_id, str) or _core.id_table_number(doc_id) is None
    ):
        raise SnapshotError(f"{where}: _id {doc_id!r:.60} is not a document id")
    if creation is not None:
        if isinstance(creation, bool) or not isinstance(creation, (int, float)):
            raise SnapshotError(f"{where}: _creationTime must be a number (ms since the epoch)")
        creation = float(creation)
    try:
        fields = _core.from_convex_json(obj, where)
    except InvalidValueError as exc:
        raise SnapshotError(str(exc)) from None
    return doc_id, creation, fields


async def perform_import(
    db: Database, plan: ImportPlan, *, progress: Progress | None = None
) -> ImportReport:
    """Carry out ``plan``: empty what it replaces, then write its rows.

    Documents are committed in transactions of up to :data:`IMPORT_BATCH_DOCUMENTS`
    documents / :data:`IMPORT_BATCH_BYTES` bytes, so memory stays bounded. Rows with an
    ``_id`` keep it and their ``_creationTime``; rows without get a new id and creation time.
    The plan checked the whole file first, so an import fails midway only on what that
    check cannot see (a write conflict with a concurrent writer, a backend error); the
    batches committed before stay and the error names the table.

    Raises:
        SnapshotError: a write failed (the message names the table and document).
        ReadOnlyError: the database follows another process's log (a read replica).
    """
    db._check_writable("import")
    progress = progress or _NoProgress()
    report = ImportReport(skipped=list(plan.skipped))
    engine = db._engine
    for t in plan.tables:
        if t.deletes:
            await _empty_table(db, t.name)
    # User tables first: file storage's system tables, made next if missing, must not take
    # the numbers the imported ids carry.
    for t in plan.tables:
        if t.source and not any(x["name"] == t.name for x in engine.tables()):
            if t.number is None:
                engine.create_table(t.name)
            else:
                engine.create_table_numbered(t.name, t.number)
    remap: dict[str, str] = {}
    if plan.storage is not None:
        remap = await _import_files(db, plan, plan.storage, progress)
        report.files = plan.storage.rows
        report.storage_ids_kept = not remap
    for t in plan.tables:
        if not t.source:
            continue
        task = progress.add_table(t.name, t.rows)
        batch: list[Row] = []
        batch_bytes = 0
        count = 0
        rows = _rows(plan, t.name, t.number, t.source)
        while True:
            # Parsing is CPU work: a batch is read on a thread, so the loop keeps serving.
            chunk = await asyncio.to_thread(_take, rows, IMPORT_BATCH_DOCUMENTS)
            if not chunk:
                break
            for row in chunk:
                if remap:
                    row = (row[0], row[1], _remapped(row[2], remap))
                batch.append(row)
                batch_bytes += _core.value_size(row[2])
                if len(batch) >= IMPORT_BATCH_DOCUMENTS or batch_bytes >= IMPORT_BATCH_BYTES:
                    count += await _commit(db, t.name, batch)
                    progress.advance(task, len(batch))
                    batch, batch_bytes = [], 0
        if batch:
            count += await _commit(db, t.name, batch)
            progress.advance(task, len(batch))
        report.tables[t.name] = count
    return report


def _remapped(value: Any, remap: dict[str, str]) -> Any:
    """``value`` with every string that is an old storage id replaced by the new id."""
    if isinstance(value, str):
        return remap.get(value, value)
    if isinstance(value, dict):
        return {k: _remapped(x, remap) for k, x in value.items()}
    if isinstance(value, list):
        return [_remapped(x, remap) for x in value]
    return value


async def _import_files(
    db: Database, plan: ImportPlan, st: StoragePlan, progress: Progress
) -> dict[str, str]:
    """Store the ZIP's files; returns old id -> new id when ids could not be kept."""
    from reactive.db.storage import STORAGE, StorageError

    files = db._files
    if files is None:
        raise SnapshotError("file storage is not open: cannot import _storage")
    await files.ensure_tables()
    if st.deletes:
        while True:
            txn = db._engine.begin(True)
            docs, _, _ = txn.scan(
                STORAGE, "by_creation_time", [], "asc", 100, None, None, None, True
            )
            if not docs:
                break
            for doc in docs:
                await files.delete(doc["_id"])
    target = next(t for t in db._engine.tables() if t["name"] == STORAGE)
    keep = st.number == target["number"]
    remap: dict[str, str] = {}
    task = progress.add_table(STORAGE, st.rows)
    with zipfile.ZipFile(plan.path) as zf:
        for file_id, creation, extra in _storage_rows(plan):
            entry = zf.open(st.entries[file_id])

            async def chunks(entry: Any = entry) -> AsyncIterator[bytes]:
                while chunk := await asyncio.to_thread(entry.read, 1 << 20):
                    yield chunk

            try:
                with entry:
                    new_id = await files.save(
                        chunks(),
                        extra.get("contentType"),
                        keep=(file_id, creation) if keep else None,
                        expect_sha256=extra.get("sha256"),
                    )
            except (StorageError, ReactiveError) as exc:
                raise SnapshotError(f"_storage: file {file_id}: {exc}") from exc
            if new_id != file_id:
                remap[file_id] = new_id
            progress.advance(task, 1)
    return remap


def _take(rows: Iterator[Row], n: int) -> list[Row]:
    out = []
    for row in rows:
        out.append(row)
        if len(out) >= n:
            break
    return out


async def _empty_table(db: Database, table: str) -> None:
    engine = db._engine
    while True:
        txn = engine.begin(False)
        docs, _, _ = txn.scan(
            table, "by_creation_time", [], "asc", IMPORT_BATCH_DOCUMENTS, None, None, None, True
        )
        if not docs:
            return
        for doc in docs:
            txn.delete(doc["_id"])
        try:
            ts = engine.commit(txn)
        except RetryableError:
            continue
        if ts is not None:
            db._flusher.nudge()
            await db._flusher.wait(ts)


async def import_snapshot(
    db: Database,
    path: str | Path,
    *,
    progress: Progress | None = None,
    format: str = "zip",
    table: str | None = None,
    mode: str = "requireEmpty",
) -> ImportReport:
    """Import ``path`` into ``db``: :func:`plan_import`, then :func:`perform_import`.

    A snapshot ZIP (ours or Convex's) keeps ids and creation times; its tables must be
    absent or (mode ``requireEmpty``, the default) empty. Files (``_storage/``) are
    imported too (see the module docstring for their ids); child components
    (``_components``) are skipped and listed in the report.

    Raises:
        SnapshotError: the file is not acceptable (nothing is written), or a write failed.
        FileNotFoundError: ``path`` does not exist.
    """
    plan = await asyncio.to_thread(plan_import, db, path, format=format, table=table, mode=mode)
    return await perform_import(db, plan, progress=progress)


def _parse_document(line: bytes, where: str, number: int) -> Row:
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


async def _commit(db: Database, table: str, batch: list[Row]) -> int:
    engine = db._engine
    for _ in range(32):
        txn = engine.begin(False)
        now_ms = time.time() * 1000.0
        for doc_id, creation, fields in batch:
            try:
                if doc_id is None:
                    txn.insert(table, fields)
                else:
                    txn.insert_existing(doc_id, now_ms if creation is None else creation, fields)
            except ReactiveError as exc:
                raise SnapshotError(f"{table}: document {doc_id or ''}: {exc}") from exc
        try:
            ts = engine.commit(txn)
        except RetryableError:
            continue
        if ts is not None:
            db._flusher.nudge()
            await db._flusher.wait(ts)
        return len(batch)
    raise SnapshotError(f"{table}: too many write conflicts with concurrent writers")

"""File storage: ``ctx.storage``, the ``_storage`` system table and the bytes on disk.

As Convex's file storage ("File Storage" in Convex's docs): a file is a ``_storage``
document plus its bytes::

    {_id, _creationTime, contentType?: str, sha256: str (base64 of the SHA-256 digest),
     size: float (bytes)}

Its ``_id`` is the storage id (``v.id("_storage")`` validates it; ``ctx.db.system.get`` reads
the document). Files come in three ways: a client POSTs them to a URL from
``ctx.storage.generate_upload_url()`` (Convex's upload-URL flow, answered with
``{"storageId": id}``), an action calls ``ctx.storage.store(data)``, or a snapshot import
brings them. ``ctx.storage.get_url(id)`` gives the URL serving them
(``GET <server>/api/storage/<id>``).

**Bytes on disk.** They live content-addressed under the storage directory::

    <storage dir>/files/<database instance>/<hex[0:2]>/<hex[2:4]>/<sha256 hex>
    <storage dir>/files/<database instance>/tmp/          uploads being written

The instance is a random name kept in the database, so two databases sharing a storage
directory (two SQLite files in one folder) never see each other's files. Identical bytes
are stored once. A file is written to ``tmp/`` while it is hashed (never whole in memory),
fsynced, renamed to its content address and the directory fsynced; only then is its
``_storage`` document committed, so a committed document always has durable bytes.

**Garbage.** A crash can leave a temporary file, or a content file whose document never
committed; neither is visible (no document names it). When the database opens, every
temporary file and every content file no ``_storage`` document references is removed (the
*sweep*: one process has the database open, so nothing is being uploaded then). Deleting a
file commits the document's removal first; once that is durable, its bytes are removed
unless another document has the same digest. Uploads of identical bytes in flight *pin*
their digest, so a concurrent delete never removes bytes a commit is about to reference.

**Upload URLs** carry a token ``<expiry s>.<nonce>.<HMAC>`` signed with a key derived from
the database's secret: valid for :data:`UPLOAD_URL_VALIDITY_S` (Convex: one hour), and
single-use. The nonce of a used token is recorded in the system table
``_storage_uploads`` (``{nonce, expiresAt}``) in the same transaction as the file's
document, so a second POST to the same URL is refused even after a restart, and two
concurrent POSTs cannot both commit (the second conflicts, re-reads and is refused).
Records are pruned once their token has expired anyway.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reactive import _core
from reactive.errors import (
    IndexNotFoundError,
    InvalidIdError,
    LimitExceededError,
    ReactiveError,
    TableNotFoundError,
)

if TYPE_CHECKING:
    from reactive.db.database import Database

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "STORAGE",
    "STORAGE_INDEXES",
    "STORAGE_UPLOADS",
    "UPLOAD_URL_VALIDITY_S",
    "FileStore",
    "FileTooLargeError",
    "StorageActionWriter",
    "StorageError",
    "StorageReader",
    "StorageWriter",
    "UploadUrlError",
    "default_storage_dir",
]

log = logging.getLogger("reactive.storage")

STORAGE = "_storage"
"""The system table of stored files."""
BY_SHA256 = "by_sha256"
STORAGE_INDEXES = {BY_SHA256: ["sha256"]}
STORAGE_UPLOADS = "_storage_uploads"
"""The system table of used upload tokens (``{nonce, expiresAt}``)."""
UPLOAD_INDEXES = {"by_nonce": ["nonce"], "by_expiry": ["expiresAt"]}
UPLOAD_URL_VALIDITY_S = 3600.0
"""How long an upload URL is valid (seconds; Convex's one hour)."""
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30
"""Largest file an upload URL accepts by default (1 GiB; ``--max-upload-bytes``)."""
_CHUNK = 1 << 20
_INSTANCE_KEY = "storage_instance"
_HEX = re.compile(r"[0-9a-f]{64}")


class StorageError(ReactiveError):
    """File storage cannot do what was asked (the message says why)."""


class UploadUrlError(StorageError):
    """An upload URL's token is refused; ``code`` says why.

    ``InvalidUploadUrl`` (forged or malformed), ``UploadUrlExpired`` or ``UploadUrlUsed``.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class FileTooLargeError(StorageError, LimitExceededError):
    """An upload is larger than the limit (nothing was stored)."""


def default_storage_dir(url: str) -> Path:
    """The storage directory of database ``url`` when none is given.

    A ``storage`` folder beside the SQLite file; for PostgreSQL and MySQL,
    ``.reactive/storage`` in the current directory (made absolute when the database opens).
    """
    from reactive.persistence import sqlite_path

    if "://" not in url or url.startswith("sqlite:"):
        return sqlite_path(url).absolute().parent / "storage"
    return Path(".reactive/storage").absolute()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _hex_of(sha256_b64: str) -> str | None:
    try:
        digest = base64.b64decode(sha256_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 32 else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """The files of one open database (``db._files``); use it on the database's loop.

    Args:
        db: The database.
        root: The storage directory.
    """

    def __init__(self, db: Database, root: Path) -> None:
        self._db = db
        self.root = root
        self._dir: Path | None = None
        self._key = hmac.new(
            db._cursors._secret, b"reactive storage upload tokens v1", hashlib.sha256
        ).digest()
        self._pins: collections.Counter[str] = collections.Counter()
        self._uploads = 0

    # -- opening ---------------------------------------------------------------------

    async def open(self, *, tables: bool, follower: bool = False) -> None:
        """Name this database's folder, create the tables (``tables``) and sweep garbage.

        A ``follower`` (a read replica, :mod:`reactive.db.follower`) only names the folder
        the writer named: it creates nothing and deletes nothing (its ``storage_dir`` must be
        the writer's to serve the bytes).
        """
        persistence = self._db._persistence
        instance = await persistence.get_global(_INSTANCE_KEY)
        if follower:
            if instance is not None:
                self._dir = self.root.absolute() / "files" / instance.decode()
            return
        if instance is None:
            instance = secrets.token_hex(8).encode()
            await persistence.set_global(_INSTANCE_KEY, instance)
        self._dir = self.root.absolute() / "files" / instance.decode()
        if tables:
            await self.ensure_tables()
        await self.sweep()

    async def ensure_tables(self) -> None:
        """Create ``_storage`` and ``_storage_uploads`` with their indexes if needed."""
        from reactive.db.system import ensure_system_table

        await ensure_system_table(self._db, STORAGE, STORAGE_INDEXES)
        await ensure_system_table(self._db, STORAGE_UPLOADS, UPLOAD_INDEXES)

    @property
    def directory(self) -> Path:
        """This database's folder of files."""
        if self._dir is None:
            raise StorageError("file storage is not open")
        return self._dir

    def path_of(self, sha256_b64: str) -> Path:
        """Where the bytes of digest ``sha256_b64`` (base64) live."""
        hexd = _hex_of(sha256_b64)
        if hexd is None:
            raise StorageError(f"{sha256_b64!r} is not a base64 SHA-256 digest")
        return self.directory / hexd[:2] / hexd[2:4] / hexd

    # -- reading documents -------------------------------------------------------------

    @staticmethod
    def document(txn: _core.Transaction, storage_id: Any) -> dict[str, Any] | None:
        """The ``_storage`` document ``storage_id`` read in ``txn``, or None if deleted.

        Raises:
            InvalidIdError: ``storage_id`` is not an id of ``_storage``.
        """
        if not isinstance(storage_id, str):
            raise InvalidIdError(f"storage ids are strings, not {type(storage_id).__name__}")
        try:
            table = txn.table_of(storage_id)
        except (ReactiveError, ValueError):
            table = None
        if table != STORAGE:
            raise InvalidIdError(
                f"{storage_id!r:.80} is not a storage id (an id of the _storage table)"
            )
        return txn.get(storage_id)

    def latest(self, storage_id: Any) -> dict[str, Any] | None:
        """The ``_storage`` document at the newest snapshot, or None.

        Raises as :meth:`document`.
        """
        return self.document(self._db._engine.begin(True), storage_id)

    def _referenced(self, txn: _core.Transaction, sha256_b64: str) -> bool:
        try:
            docs, _, _ = txn.scan(
                STORAGE, BY_SHA256, [("eq", "sha256", sha256_b64)], "asc", 1, None, None, None, True
            )
        except (TableNotFoundError, IndexNotFoundError):
            return False
        return bool(docs)

    # -- URLs --------------------------------------------------------------------------

    def _base_url(self) -> str:
        url = self._db.public_url
        if not url:
            raise StorageError(
                "file URLs need a server: serve this database with `python -m reactive.server`"
                " (embedded, use ctx.storage.store/get in actions)"
            )
        return url.rstrip("/")

    def url_of(self, storage_id: str) -> str:
        """The absolute URL serving file ``storage_id`` (``<server>/api/storage/<id>``).

        Raises:
            StorageError: no server serves this database (``db.public_url`` is unset).
        """
        return f"{self._base_url()}/api/storage/{storage_id}"

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:32]

    def upload_token(self, validity_s: float = UPLOAD_URL_VALIDITY_S) -> str:
        """A new single-use upload token, valid for ``validity_s`` seconds."""
        body = f"{int(time.time() + validity_s)}.{secrets.token_hex(12)}"
        return f"{body}.{self._sign(body)}"

    def upload_url(self) -> str:
        """A new upload URL (``<server>/api/storage/upload?token=…``), valid one hour.

        Raises:
            StorageError: no server serves this database.
        """
        return f"{self._base_url()}/api/storage/upload?token={self.upload_token()}"

    def check_token(self, token: Any) -> tuple[str, float]:
        """The nonce and expiry (s since the epoch) of a valid token.

        Raises:
            UploadUrlError: forged, malformed or expired (used tokens are checked at commit).
        """
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 12:
            raise UploadUrlError(
                "the upload URL is not valid (no or a malformed token)", "InvalidUploadUrl"
            )
        body = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(body), parts[2]):
            raise UploadUrlError("the upload URL is not valid (bad signature)", "InvalidUploadUrl")
        expires = float(parts[0])
        if expires < time.time():
            raise UploadUrlError(
                "the upload URL has expired (valid one hour): generate a new one",
                "UploadUrlExpired",
            )
        return parts[1], expires

    def token_used(self, nonce: str) -> bool:
        """Whether the token with ``nonce`` was used already (at the newest snapshot)."""
        return self._used(self._db._engine.begin(True), nonce)

    @staticmethod
    def _used(txn: _core.Transaction, nonce: str) -> bool:
        try:
            docs, _, _ = txn.scan(
                STORAGE_UPLOADS,
                "by_nonce",
                [("eq", "nonce", nonce)],
                "asc",
                1,
                None,
                None,
                None,
                True,
            )
        except (TableNotFoundError, IndexNotFoundError):
            return False
        return bool(docs)

    # -- writing -----------------------------------------------------------------------

    async def save(
        self,
        chunks: AsyncIterator[bytes],
        content_type: str | None = None,
        *,
        max_bytes: int | None = None,
        upload: tuple[str, float] | None = None,
        keep: tuple[str, float] | None = None,
        expect_sha256: str | None = None,
    ) -> str:
        """Store the bytes of ``chunks``; returns the new file's storage id.

        The bytes are hashed and written to a temporary file as they come, made durable
        and renamed to their content address; then the ``_storage`` document commits (and
        is durable when this returns).

        Args:
            chunks: The bytes.
            content_type: The file's MIME type (left out of the document when None).
            max_bytes: Refuse more bytes than this.
            upload: ``(nonce, expiry s)`` of the upload token: recorded as used in the same
                transaction, refused if it was used already.
            keep: ``(id, creation time ms)`` to insert the document with (imports).
            expect_sha256: The digest (base64) the bytes must have (imports).

        Raises:
            FileTooLargeError: over ``max_bytes`` (nothing is stored).
            UploadUrlError: ``UploadUrlUsed``, the token was used already.
            StorageError: the bytes do not match ``expect_sha256``.
            OSError: the storage directory cannot be written.
        """
        tmp_dir = self.directory / "tmp"
        await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
        tmp = tmp_dir / secrets.token_hex(12)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise FileTooLargeError(
                            f"the file is over the upload limit of {max_bytes} bytes"
                        )
                    digest.update(chunk)
                    if len(chunk) > _CHUNK:
                        await asyncio.to_thread(out.write, chunk)
                    else:
                        out.write(chunk)
                await asyncio.to_thread(_flush_and_sync, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        sha = _b64(digest.digest())
        if expect_sha256 is not None and expect_sha256 != sha:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"the bytes' SHA-256 is {sha}, not {expect_sha256}")
        fields: dict[str, Any] = {"sha256": sha, "size": float(size)}
        if content_type:
            fields["contentType"] = content_type
        path = self.path_of(sha)
        self._pins[sha] += 1
        try:
            try:
                await asyncio.to_thread(_place, tmp, path, self.directory)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return await self._commit(fields, upload, keep)
        finally:
            self._unpin(sha)

    async def _commit(
        self,
        fields: dict[str, Any],
        upload: tuple[str, float] | None,
        keep: tuple[str, float] | None,
    ) -> str:
        from reactive.db.system import write_system

        def change(txn: _core.Transaction) -> str:
            if upload is not None:
                nonce, expires = upload
                if self._used(txn, nonce):
                    raise UploadUrlError(
                        "this upload URL was used already (each is single-use): generate a new one",
                        "UploadUrlUsed",
                    )
                txn.insert(STORAGE_UPLOADS, {"nonce": nonce, "expiresAt": expires * 1000.0})
            if keep is not None:
                txn.insert_existing(keep[0], keep[1], fields)
                return keep[0]
            return str(txn.insert(STORAGE, fields))

        storage_id = await write_system(self._db, change)
        if upload is not None:
            self._uploads += 1
            if self._uploads % 100 == 0:
                await self.prune_uploads()
        return storage_id

    async def store(self, data: bytes, content_type: str | None = None) -> str:
        """Store ``data``; returns its storage id (durable). Raises as :meth:`save`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"storage.store takes bytes, not {type(data).__name__}")
        if content_type is not None and not isinstance(content_type, str):
            raise TypeError(f"content_type is a str, not {type(content_type).__name__}")
        view = memoryview(data).cast("B")

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, max(len(view), 1), _CHUNK):
                yield bytes(view[i : i + _CHUNK])

        return await self.save(chunks(), content_type)

    async def read(self, storage_id: Any) -> bytes | None:
        """The bytes of file ``storage_id``, or None if it was deleted.

        Raises:
            InvalidIdError: not a storage id.
        """
        doc = self.latest(storage_id)
        if doc is None:
            return None
        sha = doc["sha256"]
        self._pins[sha] += 1
        try:
            return await asyncio.to_thread(self.path_of(sha).read_bytes)
        except FileNotFoundError:
            return None
        finally:
            self._unpin(sha)

    async def delete(self, storage_id: Any) -> None:
        """Delete file ``storage_id`` in its own transaction, then its unreferenced bytes.

        Raises:
            InvalidIdError: not a storage id.
        """
        from reactive.db.system import write_system

        def change(txn: _core.Transaction) -> str | None:
            doc = self.document(txn, storage_id)
            if doc is None:
                return None
            txn.delete(storage_id)
            return str(doc["sha256"])

        sha = await write_system(self._db, change)
        if sha is not None:
            self.collect([sha])

    # -- garbage -----------------------------------------------------------------------

    def pin(self, sha256_b64: str) -> None:
        """Keep the bytes of this digest while they are read (undo with :meth:`unpin`)."""
        self._pins[sha256_b64] += 1

    def unpin(self, sha256_b64: str) -> None:
        """Release a :meth:`pin`; the bytes go if no document references them."""
        self._unpin(sha256_b64)

    def _unpin(self, sha: str) -> None:
        self._pins[sha] -= 1
        if self._pins[sha] <= 0:
            del self._pins[sha]
            self.collect([sha])

    def collect(self, shas: list[str]) -> int:
        """Remove the bytes of digests no durable document references; how many went.

        Call it once the deletions are durable (reads see only durable commits). Digests
        pinned by an upload or a read in flight are kept.
        """
        if self._dir is None:
            return 0
        txn = self._db._engine.begin(True)
        removed = 0
        for sha in set(shas):
            if self._pins.get(sha) or self._referenced(txn, sha):
                continue
            with contextlib.suppress(FileNotFoundError, StorageError):
                self.path_of(sha).unlink()
                removed += 1
        return removed

    async def sweep(self) -> int:
        """Remove temporary files and unreferenced content files; how many went.

        Run at open (nothing is uploading then); safe later too: files of uploads in
        flight are pinned, and temporary files are only removed at open.
        """
        opening = not self._pins
        tmp, content = await asyncio.to_thread(_listing, self.directory)
        removed = 0
        if opening:
            for path in tmp:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        txn = self._db._engine.begin(True)
        for hexd, path in content:
            sha = _b64(bytes.fromhex(hexd))
            if self._pins.get(sha) or self._referenced(txn, sha):
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        if removed:
            log.info("file storage: removed %d file(s) no document references", removed)
        await self.prune_uploads()
        return removed

    async def prune_uploads(self, batch: int = 1000) -> int:
        """Delete records of used upload tokens that have expired; how many went."""
        from reactive.db.system import write_system

        def change(txn: _core.Transaction) -> int:
            try:
                docs, _, _ = txn.scan(
                    STORAGE_UPLOADS,
                    "by_expiry",
                    [("lt", "expiresAt", time.time() * 1000.0)],
                    "asc",
                    batch,
                    None,
                    None,
                    None,
                    True,
                )
            except (TableNotFoundError, IndexNotFoundError):
                return 0
            for doc in docs:
                txn.delete(doc["_id"])
            return len(docs)

        try:
            return await write_system(self._db, change)
        except ReactiveError as exc:
            log.warning("pruning used upload tokens failed: %s", exc)
            return 0


def _flush_and_sync(out: Any) -> None:
    out.flush()
    os.fsync(out.fileno())


def _place(tmp: Path, path: Path, top: Path) -> None:
    """Rename ``tmp`` to ``path`` durably (creating and fsyncing the shard folders)."""
    created = [p for p in (path.parent.parent, path.parent) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    for folder in reversed(created):
        _fsync_dir(folder.parent)
    if created:
        _fsync_dir(top)


def _listing(top: Path) -> tuple[list[Path], list[tuple[str, Path]]]:
    tmp: list[Path] = []
    content: list[tuple[str, Path]] = []
    if not top.is_dir():
        return tmp, content
    tmp_dir = top / "tmp"
    if tmp_dir.is_dir():
        tmp = [p for p in tmp_dir.iterdir() if p.is_file()]
    for first in top.iterdir():
        if first.name == "tmp" or not first.is_dir():
            continue
        for second in first.iterdir():
            if not second.is_dir():
                continue
            for path in second.iterdir():
                if _HEX.fullmatch(path.name) and path.name[:2] == first.name:
                    content.append((path.name, path))
    return tmp, content


# -- ctx.storage ----------------------------------------------------------------------------


def _files(db: Database) -> FileStore:
    files: FileStore | None = getattr(db, "_files", None)
    if files is None:
        raise StorageError("file storage is not open for this database")
    return files


class StorageReader:
    """``ctx.storage`` in a query (Convex's ``StorageReader``): ``get_url``."""

    def __init__(self, db: Database, txn: _core.Transaction) -> None:
        self._db = db
        self._txn = txn

    async def get_url(self, storage_id: str) -> str | None:
        """The absolute URL serving the file's bytes, or ``None`` if it was deleted.

        The document is read in this function's transaction (a subscribed query re-runs
        when the file is deleted).

        Raises:
            InvalidIdError: ``storage_id`` is not an id of ``_storage``.
            StorageError: no server serves this database (``db.public_url`` is unset).
        """
        files = _files(self._db)
        if FileStore.document(self._txn, storage_id) is None:
            return None
        return files.url_of(storage_id)


class StorageWriter(StorageReader):
    """``ctx.storage`` in a mutation (Convex's ``StorageWriter``).

    ``get_url``, and also ``generate_upload_url`` and ``delete``.
    """

    def __init__(self, db: Database, txn: _core.Transaction) -> None:
        super().__init__(db, txn)
        self.deleted: list[str] = []
        """Digests of files deleted in this transaction (bytes removed once durable)."""

    async def generate_upload_url(self) -> str:
        """A single-use URL a client POSTs a file's bytes to (valid one hour).

        The POST carries the bytes as its body and their ``Content-Type``; it answers
        ``{"storageId": id}``. Nothing is written until then.

        Raises:
            StorageError: no server serves this database.
        """
        return _files(self._db).upload_url()

    async def delete(self, storage_id: str) -> None:
        """Delete the file in this transaction (its bytes go once the commit is durable).

        Deleting a file that is already deleted does nothing.

        Raises:
            InvalidIdError: ``storage_id`` is not an id of ``_storage``.
        """
        doc = FileStore.document(self._txn, storage_id)
        if doc is None:
            return
        self._txn.delete(storage_id)
        self.deleted.append(str(doc["sha256"]))


class StorageActionWriter:
    """``ctx.storage`` in an action (Convex's ``StorageActionWriter``).

    ``generate_upload_url``, ``get_url``, ``delete``, ``store`` and ``get``; each call that
    writes is its own transaction, durable when it returns.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _loop(self, make: Callable[[FileStore], Any]) -> Any:
        files = _files(self._db)
        return await self._db._runner._on_loop(make(files))

    async def generate_upload_url(self) -> str:
        """As :meth:`StorageWriter.generate_upload_url`."""
        return _files(self._db).upload_url()

    async def get_url(self, storage_id: str) -> str | None:
        """The URL serving the file, or ``None`` if it was deleted (newest snapshot).

        Raises as :meth:`StorageReader.get_url`.
        """

        async def run(files: FileStore) -> str | None:
            if files.latest(storage_id) is None:
                return None
            return files.url_of(storage_id)

        result: str | None = await self._loop(run)
        return result

    async def store(self, data: bytes, content_type: str | None = None) -> str:
        """Store ``data`` (bytes) as a new file; returns its storage id.

        Raises:
            TypeError: ``data`` is not bytes.
            OSError: the storage directory cannot be written.
        """
        result: str = await self._loop(lambda files: files.store(data, content_type))
        return result

    async def get(self, storage_id: str) -> bytes | None:
        """The file's bytes, or ``None`` if it was deleted.

        Raises:
            InvalidIdError: ``storage_id`` is not an id of ``_storage``.
        """
        result: bytes | None = await self._loop(lambda files: files.read(storage_id))
        return result

    async def delete(self, storage_id: str) -> None:
        """Delete the file (its own transaction; bytes removed once durable).

        Raises:
            InvalidIdError: ``storage_id`` is not an id of ``_storage``.
        """
        await self._loop(lambda files: files.delete(storage_id))

"""The MySQL / MariaDB backend (``mysql://user:pass@host:3306/db``), on asyncmy.

The same tables as the other backends (InnoDB; keys split as
:mod:`reactive.persistence.sql` says, the prefix within InnoDB's 3072-byte key limit). A
batch is one transaction that first checks the writer's lease epoch under a row lock
(``SELECT … FOR UPDATE``); the lease itself is a named lock (``GET_LOCK``) held on a
dedicated connection. A connection lost while a batch commits is resolved by reading the
batch's first commit record back, as for PostgreSQL.

Opened with ``lease=False`` it is a reader: no lock, no migration, sessions read-only
(``SET SESSION TRANSACTION READ ONLY``); ``load``, ``read_log_since`` (the log after a
timestamp, for followers) and the other reads work while the writer commits, and every
write raises ``PersistenceError``. MySQL has no ``LISTEN``: ``wait_log`` reads ``max_ts`` and
the catalog's MD5 every ``log_poll_s`` (default 0.05 s) until the log moves.

Errors: driver errors are wrapped in ``PersistenceError`` (the cause chained); a second
process gets ``IncompatibleDatabaseError``; a database of a newer format too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from reactive import _core
from reactive.errors import (
    CommitOutcomeUnknownError,
    IncompatibleDatabaseError,
    PersistenceError,
)
from reactive.persistence.base import (
    LEASE_TIMEOUT_S,
    LOG_SLICE_BYTES,
    LOG_SLICE_COMMITS,
    PRUNE_CHUNK_REVISIONS,
    RETAINED_TS,
    CheckReport,
    CommitRow,
    DocumentRow,
    LogSlice,
    LogWatch,
    PruneReport,
    check_lease_timeout_s,
    check_log_poll_s,
)
from reactive.persistence.sql import (
    KEY_PREFIX_BYTES,
    LEASE_EPOCH,
    LOAD_BATCH_ROWS,
    LOG_GLOBALS,
    SqlUrl,
    check_reader_format,
    choose_window,
    log_globals,
    parse_sql_url,
    read_only_error,
    recount_commits,
    slice_log,
    split_key,
)
from reactive.persistence.sql import format_version as _format_version

__all__ = ["MysqlPersistence"]

log = logging.getLogger("reactive.persistence.mysql")

FORMAT_VERSION = 1

#: Default ``log_poll_s``: how often a ``wait_log`` reads the globals.
LOG_POLL_S = 0.05
#: What a waiter polls: the ``max_ts`` global and the catalog's MD5.
_POLL_SQL = (
    "SELECT (SELECT value FROM globals WHERE name = 'max_ts'), "
    "(SELECT MD5(value) FROM globals WHERE name = 'catalog')"
)

MIGRATIONS: list[list[str]] = [
    # 0 -> 1
    [
        """CREATE TABLE IF NOT EXISTS commits (
            ts BIGINT PRIMARY KEY,
            document_count INT NOT NULL,
            index_entry_count INT NOT NULL,
            checksum BIGINT NOT NULL) ENGINE=InnoDB""",
        """CREATE TABLE IF NOT EXISTS documents (
            ts BIGINT NOT NULL,
            id VARBINARY(64) NOT NULL,
            table_id INT NOT NULL,
            value LONGBLOB,
            deleted BOOLEAN NOT NULL,
            prev_ts BIGINT,
            checksum BIGINT NOT NULL,
            PRIMARY KEY (ts, id),
            KEY documents_by_id (id, ts)) ENGINE=InnoDB""",
        f"""CREATE TABLE IF NOT EXISTS indexes (
            ts BIGINT NOT NULL,
            index_id INT NOT NULL,
            key_prefix VARBINARY({KEY_PREFIX_BYTES}) NOT NULL,
            key_suffix LONGBLOB NOT NULL,
            key_hash BINARY(16) NOT NULL,
            doc_id VARBINARY(64) NOT NULL,
            deleted BOOLEAN NOT NULL,
            checksum BIGINT NOT NULL,
            PRIMARY KEY (ts, index_id, key_hash),
            KEY indexes_by_key (index_id, key_prefix, key_hash, ts)) ENGINE=InnoDB""",
    ],
]


def _driver() -> Any:
    try:
        import asyncmy
        import asyncmy.errors
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PersistenceError(
            "the MySQL backend needs asyncmy: pip install 'reactive[mysql]'"
        ) from exc
    return asyncmy


def _wrap(what: str, exc: BaseException) -> PersistenceError:
    err = PersistenceError(f"mysql: {what}: {exc}")
    err.__cause__ = exc
    return err


def _errors() -> tuple[type[BaseException], ...]:
    asyncmy = _driver()
    # RuntimeError: asyncmy's "Transport does not expose socket instance" when a new
    # connection is reset as it opens.
    return (OSError, asyncio.TimeoutError, asyncmy.errors.Error, RuntimeError)


def _lost_connection(exc: BaseException) -> bool:
    asyncmy = _driver()
    if isinstance(exc, (ConnectionError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, asyncmy.errors.OperationalError) and exc.args:
        return exc.args[0] in (2006, 2013, 2055)  # server gone / lost connection
    return isinstance(exc, asyncmy.errors.InterfaceError)


class MysqlPersistence:
    """A MySQL or MariaDB database.

    Args:
        url: ``mysql://user:pass@host:port/database``.
        pool_size: Connections for commits and reads.
        timeout_s: Timeout of every wait on the server.
        lease: Take the writer lease (the default), or open read-only without it.
        log_poll_s: How often ``wait_log`` reads the globals (seconds).
        lease_timeout_s: The lease session's ``wait_timeout`` once ``check_lease`` runs
            (seconds, rounded up): the server ends a session idle that long, freeing the
            lease of a holder that stopped checking.
    """

    def __init__(
        self,
        url: SqlUrl,
        pool: Any,
        lease: Any | None,
        epoch: int | None,
        timeout_s: float,
        *,
        log_poll_s: float = LOG_POLL_S,
        lease_timeout_s: float = LEASE_TIMEOUT_S,
    ) -> None:
        self._url = url
        self.url = url.redacted()
        self._pool = pool
        self._lease = lease
        self._epoch = epoch
        self._timeout_s = timeout_s
        self._lost_lease = False
        self._lease_heartbeat = False
        self._lease_wait_timeout = max(1, math.ceil(lease_timeout_s))
        self._log_poll_s = log_poll_s
        self._watch = LogWatch("mysql")

    @staticmethod
    def _connect_args(url: SqlUrl, timeout_s: float) -> dict[str, Any]:
        return {
            "host": url.host,
            "port": url.port or 3306,
            "user": url.user or "root",
            "password": url.password or "",
            "db": url.database,
            "connect_timeout": timeout_s,
            "autocommit": False,
        }

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = 8,
        timeout_s: float = 30.0,
        lease: bool = True,
        log_poll_s: float = LOG_POLL_S,
        lease_timeout_s: float = LEASE_TIMEOUT_S,
    ) -> MysqlPersistence:
        """Connect, migrate, take the writer lease; or, with ``lease=False``, open a reader.

        A reader takes no lock, bumps no epoch and never migrates: it checks the format
        version, and its sessions are read-only.

        Raises:
            IncompatibleDatabaseError: another process holds the lease (``lease=True``), or
                the format is newer than this code (or, for a reader, older).
            PersistenceError: the server cannot be reached or refuses; for a reader, no
                writer has initialized the database yet.
            ValueError: ``log_poll_s`` is not a positive number, or ``lease_timeout_s``
                is not from 1 to 3600 seconds.
        """
        asyncmy = _driver()
        log_poll_s = check_log_poll_s(log_poll_s)
        lease_timeout_s = check_lease_timeout_s(lease_timeout_s)
        parsed = parse_sql_url(url)
        args = cls._connect_args(parsed, timeout_s)
        if not lease:
            return await cls._open_reader(parsed, args, pool_size, timeout_s, log_poll_s)
        try:
            lease_conn = await asyncio.wait_for(asyncmy.connect(**args), timeout_s)
        except _errors() as exc:
            raise _wrap(f"cannot connect to {parsed.redacted()}", exc) from exc
        try:
            async with lease_conn.cursor() as cur:
                # Wait a moment: a process that just closed may still be disconnecting.
                await cur.execute("SELECT GET_LOCK(%s, 2)", (f"reactive:{parsed.database}",))
                (got,) = await cur.fetchone()
            if got != 1:
                raise IncompatibleDatabaseError(
                    f"database {parsed.redacted()} is open in another process (it holds the "
                    "writer lease); one process at a time may open it"
                )
            await cls._migrate(lease_conn, parsed)
            async with lease_conn.cursor() as cur:
                await cur.execute(
                    "SELECT value FROM globals WHERE name = %s FOR UPDATE", (LEASE_EPOCH,)
                )
                row = await cur.fetchone()
                epoch = int(bytes(row[0]).decode()) + 1 if row is not None else 1
                await cur.execute(
                    "REPLACE INTO globals (name, value) VALUES (%s, %s)",
                    (LEASE_EPOCH, str(epoch).encode()),
                )
            await lease_conn.commit()
            pool = await asyncmy.create_pool(minsize=1, maxsize=pool_size, **args)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                lease_conn.close()
            if isinstance(exc, _errors()):
                raise _wrap("opening failed", exc) from exc
            raise
        return cls(
            parsed,
            pool,
            lease_conn,
            epoch,
            timeout_s,
            log_poll_s=log_poll_s,
            lease_timeout_s=lease_timeout_s,
        )

    @classmethod
    async def _open_reader(
        cls,
        parsed: SqlUrl,
        args: dict[str, Any],
        pool_size: int,
        timeout_s: float,
        log_poll_s: float,
    ) -> MysqlPersistence:
        asyncmy = _driver()
        args = {**args, "init_command": "SET SESSION TRANSACTION READ ONLY"}
        try:
            pool = await asyncmy.create_pool(minsize=1, maxsize=pool_size, **args)
        except _errors() as exc:
            raise _wrap(f"cannot connect to {parsed.redacted()}", exc) from exc
        try:
            async with pool.acquire() as conn:
                async with conn.cursor() as cur:
                    await cur.execute(
                        "SELECT COUNT(*) FROM information_schema.tables "
                        "WHERE table_schema = DATABASE() AND table_name = 'globals'"
                    )
                    (tables,) = await cur.fetchone()
                    row = None
                    if tables:
                        await cur.execute("SELECT value FROM globals WHERE name = 'format_version'")
                        row = await cur.fetchone()
                await conn.rollback()
            version = _format_version(None if row is None else bytes(row[0]), parsed)
            check_reader_format(version, FORMAT_VERSION, parsed)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                pool.close()
                await asyncio.wait_for(pool.wait_closed(), timeout_s)
            if isinstance(exc, _errors()):
                raise _wrap("opening failed", exc) from exc
            raise
        return cls(parsed, pool, None, None, timeout_s, log_poll_s=log_poll_s)

    async def check_lease(self) -> None:
        """Check that this process still holds the writer lease (one round trip).

        The lease is ``GET_LOCK`` held by this object's own session. The first call also
        sets that session's ``wait_timeout`` to the lease time-out (``lease_timeout_s``,
        3 s by default): from then on the caller must call again well within it (a
        cluster's leader calls every third of it, at most every second), and a leader that
        stops calling (its machine vanished, its network cut) has its session ended by the
        server, which frees the lease.

        Raises:
            PersistenceError: the lease is lost (or this is a reader, which has none).
        """
        if self._lease is None:
            raise PersistenceError("a reader (lease=False) holds no writer lease")
        if self._lost_lease:
            raise PersistenceError("this process lost its writer lease")
        lock = f"reactive:{self._url.database}"
        try:
            async with asyncio.timeout(min(self._timeout_s, 3.0)):
                async with self._lease.cursor() as cur:
                    if not self._lease_heartbeat:
                        await cur.execute(
                            f"SET SESSION wait_timeout = {int(self._lease_wait_timeout)}"
                        )
                        self._lease_heartbeat = True
                    await cur.execute("SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (lock,))
                    row = await cur.fetchone()
        except Exception as exc:
            if not isinstance(exc, (TimeoutError, *_errors())):
                raise
            self._lost_lease = True
            raise _wrap("the writer lease's connection failed", exc) from exc
        if row is None or row[0] != 1:
            self._lost_lease = True
            raise PersistenceError("this process no longer holds the writer lease")

    def _writable(self, what: str) -> None:
        if self._lease is None:
            raise read_only_error(self._url, f"mysql: {what}")

    @staticmethod
    async def _migrate(conn: Any, url: SqlUrl) -> None:
        async with conn.cursor() as cur:
            await cur.execute(
                # VARBINARY: names compare byte for byte (no case folding, no pad spaces).
                "CREATE TABLE IF NOT EXISTS globals (name VARBINARY(191) PRIMARY KEY, "
                "value LONGBLOB NOT NULL) ENGINE=InnoDB"
            )
            await cur.execute("SELECT value FROM globals WHERE name = 'format_version'")
            row = await cur.fetchone()
            version = _format_version(None if row is None else bytes(row[0]), url)
            if version > FORMAT_VERSION:
                raise IncompatibleDatabaseError(
                    f"database {url.redacted()} has format version {version}; this version of "
                    f"reactive reads formats up to {FORMAT_VERSION}: upgrade reactive to open it"
                )
            for i in range(version, FORMAT_VERSION):
                for statement in MIGRATIONS[i]:
                    await cur.execute(statement)
                await cur.execute(
                    "REPLACE INTO globals (name, value) VALUES ('format_version', %s)",
                    (str(i + 1).encode(),),
                )
        await conn.commit()

    # -- reading ---------------------------------------------------------------------------

    async def get_global(self, name: str) -> bytes | None:
        """A named global value, or ``None``."""
        try:
            async with self._pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute("SELECT value FROM globals WHERE name = %s", (name,))
                row = await cur.fetchone()
                await conn.rollback()
        except _errors() as exc:
            raise _wrap("reading globals", exc) from exc
        return None if row is None else bytes(row[0])

    async def set_global(self, name: str, value: bytes) -> None:
        """Durably set a named global value.

        Raises:
            PersistenceError: the server failed, or this is a reader (``lease=False``).
        """
        self._writable("cannot set a global")
        try:
            async with self._pool.acquire() as conn:
                async with conn.cursor() as cur:
                    await cur.execute(
                        "REPLACE INTO globals (name, value) VALUES (%s, %s)", (name, value)
                    )
                await conn.commit()
        except _errors() as exc:
            raise _wrap("writing globals", exc) from exc

    async def _stream(self, conn: Any, sql: str, sink: Any, convert: Any = tuple) -> None:
        from asyncmy.cursors import SSCursor

        async with conn.cursor(SSCursor) as cur:
            await cur.execute(sql)
            while True:
                rows = await cur.fetchmany(LOAD_BATCH_ROWS)
                if not rows:
                    break
                await asyncio.to_thread(sink, [convert(r) for r in rows])

    @staticmethod
    def _document_row(r: Any) -> DocumentRow:
        return (
            r[0],
            bytes(r[1]),
            r[2],
            None if r[3] is None else bytes(r[3]),
            bool(r[4]),
            r[5],
            r[6],
        )

    @staticmethod
    def _index_row(r: Any) -> tuple[Any, ...]:
        return (r[0], bytes(r[1]), r[2], bytes(r[3]), bool(r[4]), r[5])

    async def load(self) -> _core.LoadedState:
        """Rebuild the state from the log, verifying every record."""
        mark = self._watch.reading()
        try:
            async with self._pool.acquire() as conn:
                async with conn.cursor() as cur:
                    await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    await cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    await cur.execute("SELECT value FROM globals WHERE name = 'catalog'")
                    catalog = await cur.fetchone()
                    await cur.execute("SELECT value FROM globals WHERE name = 'max_ts'")
                    max_ts = await cur.fetchone()
                stored = None if catalog is None else bytes(catalog[0])
                loaded_ts = int(bytes(max_ts[0]).decode()) if max_ts is not None else 0
                loader = _core.Loader(None if stored is None else stored.decode(), loaded_ts)
                await self._stream(
                    conn,
                    "SELECT ts, document_count, index_entry_count, checksum FROM commits",
                    loader.add_commits,
                )
                await self._stream(
                    conn,
                    "SELECT ts, id, table_id, value, deleted, prev_ts, checksum FROM documents "
                    "ORDER BY ts",
                    loader.add_documents,
                    self._document_row,
                )
                await self._stream(
                    conn,
                    "SELECT index_id, CONCAT(key_prefix, key_suffix), ts, doc_id, deleted, "
                    "checksum FROM indexes",
                    loader.add_index_entries,
                    self._index_row,
                )
                await conn.rollback()
        except _errors() as exc:
            raise _wrap("loading", exc) from exc
        state = await asyncio.to_thread(loader.finish)
        self._watch.read(mark, loaded_ts, stored)
        return state

    async def read_log_since(
        self,
        after_ts: int,
        max_commits: int = LOG_SLICE_COMMITS,
        max_bytes: int = LOG_SLICE_BYTES,
    ) -> LogSlice:
        """The whole commits after ``after_ts``, in one snapshot (``LogSource.read_log_since``).

        Both tables are keyed by ``ts`` first: each read is a range scan of a primary key.

        Raises:
            LogGapError: the database is pruned past ``after_ts``: the reader must reload.
            ValueError: ``max_commits < 1``.
            PersistenceError: the server failed.
        """
        if max_commits < 1:
            raise ValueError(f"max_commits must be at least 1, not {max_commits}")
        mark = self._watch.reading()
        try:
            async with self._pool.acquire() as conn:
                try:
                    async with conn.cursor() as cur:
                        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        await cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                        await cur.execute(
                            "SELECT name, value FROM globals WHERE name IN (%s, %s, %s)",
                            LOG_GLOBALS,
                        )
                        globals_ = log_globals(
                            [(bytes(n).decode(), bytes(v)) for n, v in await cur.fetchall()],
                            after_ts,
                            self._url,
                        )
                        await cur.execute(
                            "SELECT ts, document_count, index_entry_count, checksum FROM commits "
                            "WHERE ts > %s ORDER BY ts LIMIT %s",
                            (after_ts, max_commits + 1),
                        )
                        commits: list[CommitRow] = [
                            (int(r[0]), int(r[1]), int(r[2]), int(r[3]))
                            for r in await cur.fetchall()
                        ]

                        async def documents(low: int, high: int) -> list[DocumentRow]:
                            await cur.execute(
                                "SELECT ts, id, table_id, value, deleted, prev_ts, checksum "
                                "FROM documents WHERE ts > %s AND ts <= %s ORDER BY ts, id",
                                (low, high),
                            )
                            return [self._document_row(r) for r in await cur.fetchall()]

                        piece = await slice_log(
                            globals_, commits, after_ts, max_commits, max_bytes, documents
                        )
                finally:
                    with contextlib.suppress(Exception):
                        await conn.rollback()
        except PersistenceError:
            raise
        except _errors() as exc:
            raise _wrap("reading the log", exc) from exc
        catalog = None if piece.catalog_json is None else piece.catalog_json.encode()
        self._watch.read(mark, piece.max_ts, catalog)
        return piece

    # -- waiting for the log ---------------------------------------------------------------

    def heard_of(self, ts: int) -> None:
        """Commit ``ts`` is durable: waiters for earlier timestamps wake (``LogSource``)."""
        self._watch.heard_of(ts)

    async def wait_log(self, after_ts: int, timeout_s: float) -> int:
        """Wait for the log to pass ``after_ts``, at most ``timeout_s`` (``LogSource.wait_log``).

        Reads ``max_ts`` and the catalog's MD5 every ``log_poll_s`` (each waiter polls; a
        poll wakes the other waiters too). Returns the newest ``max_ts`` known (u64 ns).

        Raises:
            PersistenceError: the persistence is closed.
        """
        watch = self._watch
        watch.check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        seen = watch.seen()
        while not watch.ready(after_ts, seen):
            await self._poll()
            watch.check_open()
            now = loop.time()
            if watch.ready(after_ts, seen) or now >= deadline:
                break
            changed = watch.changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._log_poll_s, deadline - now)):
                    await changed.wait()
            watch.check_open()
        watch.returned()
        return watch.max_ts

    async def _poll(self) -> None:
        """Read the ``max_ts`` global and the catalog's MD5 into the watch; errors logged."""
        # RuntimeError: the pool is closed.
        failures: tuple[type[BaseException], ...] = (*_errors(), RuntimeError)
        try:
            async with self._pool.acquire() as conn:
                try:
                    async with conn.cursor() as cur:
                        await cur.execute(_POLL_SQL)
                        row = await cur.fetchone()
                finally:
                    # Ends the transaction: the next poll must not read the same snapshot.
                    with contextlib.suppress(Exception):
                        await conn.rollback()
        except failures as exc:
            if not self._watch.closed:
                log.debug("reading max_ts for wait_log failed: %r", exc)
            return
        max_ts = int(bytes(row[0]).decode()) if row[0] is not None else 0
        token = row[1]
        if isinstance(token, (bytes, bytearray)):
            token = bytes(token).decode()
        self._watch.polled(max_ts, None if token is None else str(token).lower())

    async def check(self, engine: _core.Engine) -> CheckReport:
        """Verify every index entry against the live documents, both directions."""
        checker = _core.Checker(engine)
        try:
            async with self._pool.acquire() as conn:
                await self._stream(
                    conn,
                    "SELECT index_id, CONCAT(key_prefix, key_suffix), ts, doc_id, deleted, "
                    "checksum FROM indexes",
                    checker.add_index_entries,
                    self._index_row,
                )
                await conn.rollback()
        except _errors() as exc:
            raise _wrap("checking", exc) from exc
        return checker.finish()

    async def read_documents(self, ids: list[str], ts: int) -> dict[str, bytes | None]:
        """The stored value of each document at snapshot ``ts`` (``None``: absent/deleted)."""
        out: dict[str, bytes | None] = {}
        async with self._pool.acquire() as conn, conn.cursor() as cur:
            for text in ids:
                raw = _core.id_bytes(text)
                if raw is None:
                    out[text] = None
                    continue
                await cur.execute(
                    "SELECT value FROM documents WHERE id = %s AND ts <= %s "
                    "ORDER BY ts DESC LIMIT 1",
                    (raw, ts),
                )
                row = await cur.fetchone()
                out[text] = None if row is None or row[0] is None else bytes(row[0])
            await conn.rollback()
        return out

    async def read_index_range(
        self, index_id: int, start: bytes, end: bytes, ts: int, limit: int = 1000
    ) -> list[tuple[bytes, bytes]]:
        """Index entries with ``start <= key < end`` live at ``ts``: ``[(key, doc id)]``."""
        async with self._pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT CONCAT(key_prefix, key_suffix) AS k, doc_id, deleted, ts FROM indexes "
                "WHERE index_id = %s AND ts <= %s AND key_prefix >= %s AND key_prefix <= %s "
                "ORDER BY key_prefix, key_suffix, ts DESC",
                (index_id, ts, start[:KEY_PREFIX_BYTES], end[:KEY_PREFIX_BYTES]),
            )
            rows = await cur.fetchall()
            await conn.rollback()
        # The newest row of each key decides. Ordered here, on whole keys: the server sorts
        # BLOBs on their first max_sort_length bytes only.
        newest: dict[bytes, tuple[int, bytes, bool]] = {}
        for key, doc, deleted, at in rows:
            key = bytes(key)
            if not start <= key < end:
                continue
            held = newest.get(key)
            if held is None or at > held[0]:
                newest[key] = (int(at), bytes(doc), bool(deleted))
        live = sorted((k, d) for k, (_, d, deleted) in newest.items() if not deleted)
        return live[:limit]

    # -- writing ---------------------------------------------------------------------------

    async def write_batch(self, batch: _core.PersistBatch) -> None:
        """Write one batch in one transaction; durable on return.

        Raises:
            PersistenceError: nothing of the batch was written (or the lease is lost, or
                this is a reader: ``lease=False``).
        """
        self._writable("cannot commit")
        if self._lost_lease:
            raise PersistenceError("this process lost its writer lease; it can no longer commit")
        commits = batch.commit_rows()
        documents = batch.document_rows()
        entries = [
            (ts, index_id, *split_key(key), doc, deleted, checksum)
            for (index_id, key, ts, doc, deleted, checksum) in batch.index_rows()
        ]
        drops = batch.dropped_indexes()
        adjusted = [ts for ts, _ in batch.count_adjustments()]
        catalog = batch.catalog_json()
        max_ts = batch.max_ts
        try:
            async with self._pool.acquire() as conn:
                try:
                    await self._write(
                        conn, commits, documents, entries, adjusted, drops, catalog, max_ts
                    )
                except PersistenceError:
                    with contextlib.suppress(Exception):
                        await conn.rollback()
                    raise
                except Exception as exc:
                    # Lost contact or an unexpected failure: the COMMIT may have happened.
                    unknown = not isinstance(exc, _errors()) or _lost_connection(exc)
                    if unknown and commits and await self._committed(commits[0][0]):
                        log.warning("a batch whose commit failed with %r did commit", exc)
                        return
                    with contextlib.suppress(Exception):
                        await conn.rollback()
                    raise _wrap("the commit failed", exc) from exc
        except PersistenceError:
            raise
        except Exception as exc:
            raise _wrap("the commit failed", exc) from exc

    async def _write(
        self,
        conn: Any,
        commits: list[tuple[int, int, int, int]],
        documents: list[tuple[Any, ...]],
        entries: list[tuple[Any, ...]],
        adjusted: list[int],
        drops: list[int],
        catalog: str | None,
        max_ts: int | None,
    ) -> None:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT value FROM globals WHERE name = %s FOR UPDATE", (LEASE_EPOCH,)
            )
            row = await cur.fetchone()
            if row is None or int(bytes(row[0]).decode()) != self._epoch:
                self._lost_lease = True
                raise PersistenceError(
                    "this process lost its writer lease (another process opened the database); "
                    "it can no longer commit"
                )
            if commits:
                await cur.executemany(
                    "INSERT INTO commits (ts, document_count, index_entry_count, checksum) "
                    "VALUES (%s, %s, %s, %s)",
                    commits,
                )
            if documents:
                await cur.executemany(
                    "INSERT INTO documents (ts, id, table_id, value, deleted, prev_ts, checksum) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    documents,
                )
            late = set(adjusted)
            fresh = [e for e in entries if e[0] not in late]
            backfill = [e for e in entries if e[0] in late]
            insert = (
                "INSERT INTO indexes (ts, index_id, key_prefix, key_suffix, key_hash, "
                "doc_id, deleted, checksum) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            )
            if fresh:
                await cur.executemany(insert, fresh)
            if backfill:
                # At their revisions' timestamps; a resumed backfill may write a row again.
                await cur.executemany(insert + " ON DUPLICATE KEY UPDATE ts = ts", backfill)
            if adjusted:  # index backfill rows written at earlier commits' timestamps
                await self._recount(cur, adjusted)
            for index_id in drops:
                await self._drop_index_rows(cur, index_id)
            if catalog is not None:
                await cur.execute(
                    "REPLACE INTO globals (name, value) VALUES ('catalog', %s)", (catalog.encode(),)
                )
            if max_ts is not None:
                await cur.execute(
                    "REPLACE INTO globals (name, value) VALUES ('max_ts', %s)",
                    (str(max_ts).encode(),),
                )
        await conn.commit()

    @staticmethod
    async def _drop_index_rows(cur: Any, index_id: int) -> None:
        await cur.execute("SELECT DISTINCT ts FROM indexes WHERE index_id = %s", (index_id,))
        stamps = [r[0] for r in await cur.fetchall()]
        await cur.execute("DELETE FROM indexes WHERE index_id = %s", (index_id,))
        await MysqlPersistence._recount(cur, stamps)

    @staticmethod
    async def _recount(cur: Any, stamps: list[int]) -> None:
        """Rewrite the commit records at ``stamps`` to count the rows now there."""
        for i in range(0, len(stamps), 500):
            part = stamps[i : i + 500]
            marks = ", ".join(["%s"] * len(part))
            counts: list[dict[int, int]] = []
            for table in ("documents", "indexes"):
                await cur.execute(
                    f"SELECT ts, count(*) FROM {table} WHERE ts IN ({marks}) GROUP BY ts", part
                )
                counts.append({int(r[0]): int(r[1]) for r in await cur.fetchall()})
            await cur.execute(f"SELECT ts FROM commits WHERE ts IN ({marks}) FOR UPDATE", part)
            existing = {int(r[0]) for r in await cur.fetchall()}
            updates, deletes = recount_commits(part, existing, counts[0], counts[1])
            if updates:
                await cur.executemany(
                    "UPDATE commits SET document_count = %s, index_entry_count = %s, "
                    "checksum = %s WHERE ts = %s",
                    updates,
                )
            if deletes:
                marks = ", ".join(["%s"] * len(deletes))
                await cur.execute(f"DELETE FROM commits WHERE ts IN ({marks})", deletes)

    # -- retention -------------------------------------------------------------------------

    async def prune(self, engine: _core.Engine, cutoff: int) -> PruneReport:
        """Delete rows no snapshot at or after ``cutoff`` needs (see ``Persistence.prune``).

        Runs at READ COMMITTED, so its row locks never take gap locks that would hold up
        commits appending at the end of the log.

        Raises:
            PersistenceError: the server failed (rows deleted by finished chunks stay
                deleted; the next call goes on from there), or this is a reader
                (``lease=False``).
        """
        self._writable("cannot prune")
        report = PruneReport()
        try:
            while True:
                async with self._pool.acquire() as conn:
                    try:
                        async with conn.cursor() as cur:
                            await cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                            await cur.execute("START TRANSACTION")
                            chunk = await self._prune_chunk(cur, engine, cutoff)
                        await conn.commit()
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await conn.rollback()
                        raise
                report.add(chunk)
                if chunk["done"]:
                    return report
                await asyncio.sleep(0)
        except PersistenceError:
            raise
        except _errors() as exc:
            raise _wrap("pruning old versions failed", exc) from exc

    async def _prune_chunk(self, cur: Any, engine: _core.Engine, cutoff: int) -> dict[str, Any]:
        await cur.execute("SELECT value FROM globals WHERE name = %s", (LEASE_EPOCH,))
        row = await cur.fetchone()
        if row is None or int(bytes(row[0]).decode()) != self._epoch:
            self._lost_lease = True
            raise PersistenceError("this process lost its writer lease; it cannot prune")
        await cur.execute("SELECT value FROM globals WHERE name = %s FOR UPDATE", (RETAINED_TS,))
        row = await cur.fetchone()
        start = int(bytes(row[0]).decode()) if row is not None else 0
        chunk: dict[str, Any] = {
            "retained_ts": start,
            "revisions": 0,
            "documents_deleted": 0,
            "index_entries_deleted": 0,
            "done": True,
        }
        if cutoff <= start:
            return chunk
        limit = PRUNE_CHUNK_REVISIONS
        select = "SELECT ts, id, value, prev_ts FROM documents "

        def window_row(r: Any) -> tuple[int, bytes, bytes | None, int | None]:
            return (
                int(r[0]),
                bytes(r[1]),
                None if r[2] is None else bytes(r[2]),
                None if r[3] is None else int(r[3]),
            )

        await cur.execute(
            select + "WHERE ts > %s AND ts <= %s ORDER BY ts, id LIMIT %s", (start, cutoff, limit)
        )
        rows = [window_row(r) for r in await cur.fetchall()]
        rows, through, whole = choose_window(rows, limit, cutoff)
        if whole is not None:
            await cur.execute(select + "WHERE ts = %s", (whole,))
            rows = [window_row(r) for r in await cur.fetchall()]
        values: dict[tuple[int, bytes], bytes | None] = {}
        for _, doc_id, _, prev in rows:
            if prev is not None:
                await cur.execute(
                    "SELECT value FROM documents WHERE ts = %s AND id = %s", (prev, doc_id)
                )
                found = await cur.fetchone()
                if found is not None:
                    values[(prev, doc_id)] = None if found[0] is None else bytes(found[0])
        window = [
            (ts, doc_id, value, prev, None if prev is None else values.get((prev, doc_id)))
            for ts, doc_id, value, prev in rows
        ]
        doc_keys, entry_keys = engine.prune_plan(window)
        touched: set[int] = set()
        deleted = 0
        for ts, doc_id in doc_keys:
            deleted += await cur.execute(
                "DELETE FROM documents WHERE ts = %s AND id = %s", (ts, doc_id)
            )
            touched.add(ts)
        chunk["documents_deleted"] = deleted
        deleted = 0
        for ts, index_id, key, doc_id in entry_keys:
            deleted += await cur.execute(
                "DELETE FROM indexes WHERE ts = %s AND index_id = %s AND key_hash = %s "
                "AND doc_id = %s",
                (ts, index_id, split_key(key)[2], doc_id),
            )
            touched.add(ts)
        chunk["index_entries_deleted"] = deleted
        await self._recount(cur, sorted(touched))
        await cur.execute(
            "REPLACE INTO globals (name, value) VALUES (%s, %s)",
            (RETAINED_TS, str(through).encode()),
        )
        chunk.update(retained_ts=through, revisions=len(rows), done=through >= cutoff)
        return chunk

    async def _committed(self, ts: int) -> bool:
        """Whether commit ``ts`` is in the database (after a lost connection)."""
        for attempt in range(10):
            try:
                async with self._pool.acquire() as conn, conn.cursor() as cur:
                    await cur.execute("SELECT 1 FROM commits WHERE ts = %s", (ts,))
                    found = await cur.fetchone() is not None
                    await conn.rollback()
                    return found
            except _errors():
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        raise CommitOutcomeUnknownError(
            "mysql: a batch's connection was lost during COMMIT and the server stayed "
            "unreachable: whether it committed is unknown; reopen the database to find out"
        )

    async def close(self) -> None:
        """Close the pool and release the lease (a reader has none).

        Waiters in ``wait_log`` raise ``PersistenceError``, as does every later ``wait_log``.
        """
        self._watch.close()
        with contextlib.suppress(Exception):
            self._pool.close()
            await asyncio.wait_for(self._pool.wait_closed(), self._timeout_s)
        if self._lease is None:
            return
        with contextlib.suppress(Exception):
            # Released explicitly: closing the socket frees it only once the server notices.
            async with self._lease.cursor() as cur:
                await asyncio.wait_for(
                    cur.execute("SELECT RELEASE_LOCK(%s)", (f"reactive:{self._url.database}",)),
                    self._timeout_s,
                )
        with contextlib.suppress(Exception):
            self._lease.close()

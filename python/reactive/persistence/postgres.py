"""The PostgreSQL backend (``postgresql://user:pass@host:5432/db``), on asyncpg.

Tables (ARCHITECTURE.md; created and upgraded by the numbered migrations below): ``documents``
(one row per document revision), ``indexes`` (one row per index entry; keys split as
:mod:`reactive.persistence.sql` says), ``commits`` (rows per commit), ``globals``. A batch
is one SERIALIZABLE transaction that first checks the writer's lease epoch under a row lock.

A connection lost while a batch commits leaves its outcome unknown: the adapter reconnects
and looks for the batch's first commit record, then reports the batch committed or failed —
never half-applied (one transaction) and never applied twice.

Opened with ``lease=False`` it is a reader: no lease, no migration, sessions read-only;
``load``, ``read_log_since`` (the log after a timestamp, for followers) and the other reads
work while the writer commits, and every write raises ``PersistenceError``.

Each batch's transaction ends with ``pg_notify('reactive_log', max_ts)`` (a batch of catalog
changes only notifies the current ``max_ts``): delivered only if it commits. ``wait_log``
listens for it on one connection of its own, opened on first use and reopened with backoff
when it drops, and reads the globals after (re)connecting and every ``log_poll_s`` while
waiting, since notifications sent while it is down are lost.

Errors: driver errors are wrapped in ``PersistenceError`` (the cause chained); a second
process gets ``IncompatibleDatabaseError``; a database of a newer format too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from reactive import _core
from reactive.errors import (
    CommitOutcomeUnknownError,
    IncompatibleDatabaseError,
    PersistenceError,
)
from reactive.persistence.base import (
    LEASE_TIMEOUT_S,
    LOG_CHANNEL,
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

__all__ = ["PostgresPersistence"]

log = logging.getLogger("reactive.persistence.postgres")

FORMAT_VERSION = 1
_INDEX_COLUMNS = (
    "ts",
    "index_id",
    "key_prefix",
    "key_suffix",
    "key_hash",
    "doc_id",
    "deleted",
    "checksum",
)

#: Advisory lock key of the writer lease ("reactive" in ASCII).
LEASE_LOCK = 0x7265616374697665


def lease_session_settings(lease_timeout_s: float = LEASE_TIMEOUT_S) -> dict[str, str]:
    """Server settings of the lease's connection for a lease time-out (seconds).

    PostgreSQL probes an idle leader after a third of the time-out, every third of it, and
    ends its session (freeing the lease) after 2 unanswered probes, or when data it sent
    stays unacknowledged for the whole time-out: a leader whose machine vanished without a
    TCP reset loses the lease after about ``lease_timeout_s`` (3 s by default) rather than
    the kernel's default two hours.
    """
    third = str(max(1, round(lease_timeout_s / 3)))
    return {
        "tcp_keepalives_idle": third,
        "tcp_keepalives_interval": third,
        "tcp_keepalives_count": "2",
        "tcp_user_timeout": str(int(lease_timeout_s * 1000)),
    }


#: Default ``log_poll_s``: how often a ``wait_log`` reads the globals besides listening.
LOG_POLL_S = 1.0
#: Longest pause between attempts to reopen the ``LISTEN`` connection.
LISTEN_BACKOFF_MAX_S = 1.0

#: A batch's new ``max_ts`` and its notification, in one statement (one round trip).
_SET_MAX_TS_SQL = (
    "WITH w AS (INSERT INTO globals (name, value) VALUES ('max_ts', $1) "
    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value RETURNING 1) "
    f"SELECT pg_notify('{LOG_CHANNEL}', $2) FROM w"
)
#: The notification of a batch without commits (a catalog change): the stored ``max_ts``.
_NOTIFY_SQL = (
    f"SELECT pg_notify('{LOG_CHANNEL}', COALESCE("
    "(SELECT convert_from(value, 'UTF8') FROM globals WHERE name = 'max_ts'), '0'))"
)
#: What a waiter polls: the ``max_ts`` global and the catalog's MD5.
_POLL_SQL = (
    "SELECT (SELECT value FROM globals WHERE name = 'max_ts'), "
    "(SELECT md5(value) FROM globals WHERE name = 'catalog')"
)

MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE IF NOT EXISTS globals (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
    CREATE TABLE IF NOT EXISTS commits (
        ts BIGINT PRIMARY KEY,
        document_count INTEGER NOT NULL,
        index_entry_count INTEGER NOT NULL,
        checksum BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS documents (
        ts BIGINT NOT NULL,
        id BYTEA NOT NULL,
        table_id INTEGER NOT NULL,
        value BYTEA,
        deleted BOOLEAN NOT NULL,
        prev_ts BIGINT,
        checksum BIGINT NOT NULL,
        PRIMARY KEY (ts, id));
    CREATE INDEX IF NOT EXISTS documents_by_id ON documents (id, ts);
    CREATE TABLE IF NOT EXISTS indexes (
        ts BIGINT NOT NULL,
        index_id INTEGER NOT NULL,
        key_prefix BYTEA NOT NULL,
        key_suffix BYTEA NOT NULL,
        key_hash BYTEA NOT NULL,
        doc_id BYTEA NOT NULL,
        deleted BOOLEAN NOT NULL,
        checksum BIGINT NOT NULL,
        PRIMARY KEY (ts, index_id, key_hash));
    CREATE INDEX IF NOT EXISTS indexes_by_key ON indexes (index_id, key_prefix, key_hash, ts);
    """,
]


def _driver() -> Any:
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PersistenceError(
            "the PostgreSQL backend needs asyncpg: pip install 'reactive[postgres]'"
        ) from exc
    return asyncpg


def _wrap(what: str, exc: BaseException) -> PersistenceError:
    err = PersistenceError(f"postgresql: {what}: {exc}")
    err.__cause__ = exc
    return err


class PostgresPersistence:
    """A PostgreSQL database.

    Args:
        url: ``postgresql://user:pass@host:port/database``.
        pool_size: Connections for commits and reads.
        timeout_s: Timeout of every wait on the server (connect, query, commit).
        lease: Take the writer lease (the default), or open read-only without it.
        log_poll_s: How often ``wait_log`` reads the globals besides listening (seconds).
        lease_timeout_s: How long the server keeps the lease of a holder it no longer
            hears from (seconds; :func:`lease_session_settings`).
    """

    def __init__(
        self,
        url: SqlUrl,
        pool: Any,
        lease: Any | None,
        epoch: int | None,
        timeout_s: float,
        *,
        connect_kwargs: dict[str, Any] | None = None,
        log_poll_s: float = LOG_POLL_S,
    ) -> None:
        self._url = url
        self.url = url.redacted()
        self._pool = pool
        self._lease = lease
        self._epoch = epoch
        self._timeout_s = timeout_s
        self._lost_lease = False
        self._connect_kwargs = dict(connect_kwargs or {})
        self._log_poll_s = log_poll_s
        self._watch = LogWatch("postgresql")
        self._listener: asyncio.Task[None] | None = None

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
    ) -> PostgresPersistence:
        """Connect, migrate, take the writer lease; or, with ``lease=False``, open a reader.

        A reader takes no lock, bumps no epoch and never migrates: it checks the format
        version, and its sessions are read-only (``default_transaction_read_only``).

        Raises:
            IncompatibleDatabaseError: another process holds the lease (``lease=True``), or
                the format is newer than this code (or, for a reader, older).
            PersistenceError: the server cannot be reached or refuses; for a reader, no
                writer has initialized the database yet.
            ValueError: ``log_poll_s`` is not a positive number, or ``lease_timeout_s``
                is not from 1 to 3600 seconds.
        """
        asyncpg = _driver()
        log_poll_s = check_log_poll_s(log_poll_s)
        settings = lease_session_settings(check_lease_timeout_s(lease_timeout_s))
        parsed = parse_sql_url(url)
        kwargs = {
            "host": parsed.host,
            "port": parsed.port or 5432,
            "user": parsed.user,
            "password": parsed.password,
            "database": parsed.database,
            "timeout": timeout_s,
            "command_timeout": timeout_s,
        }
        if not lease:
            return await cls._open_reader(parsed, kwargs, pool_size, timeout_s, log_poll_s)
        try:
            lease_conn = await asyncpg.connect(**kwargs, server_settings=settings)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _wrap(f"cannot connect to {parsed.redacted()}", exc) from exc
        try:
            # Try for a moment: a process that just closed may still be disconnecting.
            for attempt in range(20):
                if await lease_conn.fetchval("SELECT pg_try_advisory_lock($1)", LEASE_LOCK):
                    break
                if attempt < 19:
                    await asyncio.sleep(0.1)
            else:
                raise IncompatibleDatabaseError(
                    f"database {parsed.redacted()} is open in another process (it holds the "
                    "writer lease); one process at a time may open it"
                )
            await cls._migrate(lease_conn, parsed)
            async with lease_conn.transaction():
                row = await lease_conn.fetchval(
                    "SELECT value FROM globals WHERE name = $1 FOR UPDATE", LEASE_EPOCH
                )
                epoch = int(bytes(row).decode()) + 1 if row is not None else 1
                await lease_conn.execute(
                    "INSERT INTO globals (name, value) VALUES ($1, $2) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    LEASE_EPOCH,
                    str(epoch).encode(),
                )
            pool = await asyncpg.create_pool(min_size=1, max_size=pool_size, **kwargs)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await lease_conn.close()
            if isinstance(exc, (asyncpg.PostgresError, OSError)):
                raise _wrap("opening failed", exc) from exc
            raise
        return cls(
            parsed,
            pool,
            lease_conn,
            epoch,
            timeout_s,
            connect_kwargs=kwargs,
            log_poll_s=log_poll_s,
        )

    @classmethod
    async def _open_reader(
        cls,
        parsed: SqlUrl,
        kwargs: dict[str, Any],
        pool_size: int,
        timeout_s: float,
        log_poll_s: float,
    ) -> PostgresPersistence:
        asyncpg = _driver()
        kwargs = {**kwargs, "server_settings": {"default_transaction_read_only": "on"}}
        try:
            pool = await asyncpg.create_pool(min_size=1, max_size=pool_size, **kwargs)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _wrap(f"cannot connect to {parsed.redacted()}", exc) from exc
        try:
            async with pool.acquire(timeout=timeout_s) as conn:
                raw = None
                if await conn.fetchval("SELECT to_regclass('globals')") is not None:
                    raw = await conn.fetchval(
                        "SELECT value FROM globals WHERE name = 'format_version'"
                    )
            check_reader_format(
                _format_version(None if raw is None else bytes(raw), parsed), FORMAT_VERSION, parsed
            )
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), timeout_s)
            if isinstance(
                exc, (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
            ):
                raise _wrap("opening failed", exc) from exc
            raise
        return cls(
            parsed, pool, None, None, timeout_s, connect_kwargs=kwargs, log_poll_s=log_poll_s
        )

    async def check_lease(self) -> None:
        """Check that this process still holds the writer lease (one round trip).

        The lease is the advisory lock of this object's own session: it holds while that
        connection answers. A cluster's leader calls this every second or so to learn, in
        bounded time, that the lease is gone (the connection dropped, the database ended
        the session), rather than at its next commit.

        Raises:
            PersistenceError: the lease is lost (or this is a reader, which has none).
        """
        if self._lease is None:
            raise PersistenceError("a reader (lease=False) holds no writer lease")
        if self._lost_lease:
            raise PersistenceError("this process lost its writer lease")
        asyncpg = _driver()
        try:
            await asyncio.wait_for(self._lease.fetchval("SELECT 1"), min(self._timeout_s, 3.0))
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._lost_lease = True
            raise _wrap("the writer lease's connection failed", exc) from exc

    def _writable(self, what: str) -> None:
        if self._lease is None:
            raise read_only_error(self._url, f"postgresql: {what}")

    @staticmethod
    async def _migrate(conn: Any, url: SqlUrl) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LEASE_LOCK + 1)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS globals (name TEXT PRIMARY KEY, value BYTEA NOT NULL)"
            )
            raw = await conn.fetchval("SELECT value FROM globals WHERE name = 'format_version'")
            version = _format_version(None if raw is None else bytes(raw), url)
            if version > FORMAT_VERSION:
                raise IncompatibleDatabaseError(
                    f"database {url.redacted()} has format version {version}; this version of "
                    f"reactive reads formats up to {FORMAT_VERSION}: upgrade reactive to open it"
                )
            for i in range(version, FORMAT_VERSION):
                await conn.execute(MIGRATIONS[i])
                await conn.execute(
                    "INSERT INTO globals (name, value) VALUES ('format_version', $1) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    str(i + 1).encode(),
                )

    # -- reading ---------------------------------------------------------------------------

    async def get_global(self, name: str) -> bytes | None:
        """A named global value, or ``None``."""
        asyncpg = _driver()
        try:
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                raw = await conn.fetchval("SELECT value FROM globals WHERE name = $1", name)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _wrap("reading globals", exc) from exc
        return None if raw is None else bytes(raw)

    async def set_global(self, name: str, value: bytes) -> None:
        """Durably set a named global value.

        Raises:
            PersistenceError: the server failed, or this is a reader (``lease=False``).
        """
        self._writable("cannot set a global")
        asyncpg = _driver()
        try:
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                await conn.execute(
                    "INSERT INTO globals (name, value) VALUES ($1, $2) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    name,
                    value,
                )
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _wrap("writing globals", exc) from exc

    async def _stream(self, conn: Any, sql: str, sink: Any) -> None:
        batch: list[tuple[Any, ...]] = []
        async for record in conn.cursor(sql, prefetch=LOAD_BATCH_ROWS):
            batch.append(tuple(record))
            if len(batch) >= LOAD_BATCH_ROWS:
                await asyncio.to_thread(sink, batch)
                batch = []
        if batch:
            await asyncio.to_thread(sink, batch)

    async def load(self) -> _core.LoadedState:
        """Rebuild the state from the log, verifying every record.

        One read-only repeatable-read transaction reads the ``catalog`` and ``max_ts``
        globals and every row, so a writer committing meanwhile is wholly in or out of it.
        """
        asyncpg = _driver()
        mark = self._watch.reading()
        try:
            async with (
                self._pool.acquire(timeout=self._timeout_s) as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                # The snapshot is taken at the first statement: this one.
                catalog = await conn.fetchval("SELECT value FROM globals WHERE name = 'catalog'")
                max_ts = await conn.fetchval("SELECT value FROM globals WHERE name = 'max_ts'")
                catalog = None if catalog is None else bytes(catalog)
                loaded_ts = int(bytes(max_ts).decode()) if max_ts is not None else 0
                loader = _core.Loader(None if catalog is None else catalog.decode(), loaded_ts)
                await self._stream(
                    conn,
                    "SELECT ts, document_count, index_entry_count, checksum FROM commits",
                    loader.add_commits,
                )
                await self._stream(
                    conn,
                    "SELECT ts, id, table_id, value, deleted, prev_ts, checksum "
                    "FROM documents ORDER BY ts",
                    loader.add_documents,
                )
                await self._stream(
                    conn,
                    "SELECT index_id, key_prefix || key_suffix, ts, doc_id, deleted, checksum "
                    "FROM indexes",
                    loader.add_index_entries,
                )
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _wrap("loading", exc) from exc
        state = await asyncio.to_thread(loader.finish)
        self._watch.read(mark, loaded_ts, catalog)
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
        asyncpg = _driver()
        mark = self._watch.reading()
        try:
            async with (
                self._pool.acquire(timeout=self._timeout_s) as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                found = await conn.fetch(
                    "SELECT name, value FROM globals WHERE name = ANY($1::text[])",
                    list(LOG_GLOBALS),
                )
                globals_ = log_globals([(r[0], bytes(r[1])) for r in found], after_ts, self._url)
                commits: list[CommitRow] = [
                    (r[0], r[1], r[2], r[3])
                    for r in await conn.fetch(
                        "SELECT ts, document_count, index_entry_count, checksum FROM commits "
                        "WHERE ts > $1 ORDER BY ts LIMIT $2",
                        after_ts,
                        max_commits + 1,
                    )
                ]

                async def documents(low: int, high: int) -> list[DocumentRow]:
                    return [
                        (
                            r[0],
                            bytes(r[1]),
                            r[2],
                            None if r[3] is None else bytes(r[3]),
                            r[4],
                            r[5],
                            r[6],
                        )
                        for r in await conn.fetch(
                            "SELECT ts, id, table_id, value, deleted, prev_ts, checksum "
                            "FROM documents WHERE ts > $1 AND ts <= $2 ORDER BY ts, id",
                            low,
                            high,
                        )
                    ]

                piece = await slice_log(
                    globals_, commits, after_ts, max_commits, max_bytes, documents
                )
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
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

        Woken by the writer's ``NOTIFY`` on one ``LISTEN`` connection (opened on the first
        call); the globals are also read every ``log_poll_s``, at the timeout, and after the
        connection (re)opens. Returns the newest ``max_ts`` known (u64 ns).

        Raises:
            PersistenceError: the persistence is closed.
        """
        watch = self._watch
        watch.check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        if self._listener is None or self._listener.done():
            self._listener = loop.create_task(
                self._listen(), name=f"reactive-log-listen {self.url}"
            )
        seen = watch.seen()
        next_poll = loop.time() + self._log_poll_s
        while not watch.ready(after_ts, seen):
            now = loop.time()
            if now >= deadline:
                await self._poll()
                break
            if now >= next_poll:
                await self._poll()
                next_poll = loop.time() + self._log_poll_s
                continue
            changed = watch.changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(deadline, next_poll) - now):
                    await changed.wait()
            watch.check_open()
        watch.check_open()
        watch.returned()
        return watch.max_ts

    async def _poll(self) -> None:
        """Read the ``max_ts`` global and the catalog's MD5 into the watch; errors logged."""
        asyncpg = _driver()
        try:
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                row = await conn.fetchrow(_POLL_SQL)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not self._watch.closed:
                log.debug("reading max_ts for wait_log failed: %r", exc)
            return
        max_ts = int(bytes(row[0]).decode()) if row[0] is not None else 0
        self._watch.polled(max_ts, row[1])

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            max_ts: int | None = int(payload)
        except ValueError:
            max_ts = None
        self._watch.notified(max_ts)

    async def _listen(self) -> None:
        """Hold the ``LISTEN`` connection, reopening it with backoff until closed."""
        asyncpg = _driver()
        delay = 0.05
        while not self._watch.closed:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(**self._connect_kwargs)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("wait_log: cannot open the LISTEN connection: %r", exc)
            else:
                try:
                    conn.add_termination_listener(lambda _conn, event=lost: event.set())
                    await conn.add_listener(LOG_CHANNEL, self._notified)
                    # What was committed before the LISTEN took effect is read here.
                    await self._poll()
                    delay = 0.05
                    await lost.wait()
                    if not self._watch.closed:
                        log.warning("wait_log: the LISTEN connection was lost; reopening it")
                except (
                    TimeoutError,
                    OSError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                ) as exc:
                    log.warning("wait_log: the LISTEN connection failed: %r", exc)
                finally:
                    await self._drop_listen(conn)
            if self._watch.closed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTEN_BACKOFF_MAX_S)

    async def _drop_listen(self, conn: Any) -> None:
        if conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), min(self._timeout_s, 2.0))
        except asyncio.CancelledError:
            conn.terminate()
            raise
        except Exception:
            conn.terminate()

    async def check(self, engine: _core.Engine) -> CheckReport:
        """Verify every index entry against the live documents, both directions."""
        asyncpg = _driver()
        checker = _core.Checker(engine)
        try:
            async with (
                self._pool.acquire(timeout=self._timeout_s) as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                await self._stream(
                    conn,
                    "SELECT index_id, key_prefix || key_suffix, ts, doc_id, deleted, checksum "
                    "FROM indexes",
                    checker.add_index_entries,
                )
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _wrap("checking", exc) from exc
        return checker.finish()

    async def read_documents(self, ids: list[str], ts: int) -> dict[str, bytes | None]:
        """The stored value of each document at snapshot ``ts`` (``None``: absent/deleted)."""
        out: dict[str, bytes | None] = {}
        async with self._pool.acquire(timeout=self._timeout_s) as conn:
            for text in ids:
                raw = _core.id_bytes(text)
                if raw is None:
                    out[text] = None
                    continue
                value = await conn.fetchrow(
                    "SELECT value FROM documents WHERE id = $1 AND ts <= $2 "
                    "ORDER BY ts DESC LIMIT 1",
                    raw,
                    ts,
                )
                out[text] = None if value is None or value[0] is None else bytes(value[0])
        return out

    async def read_index_range(
        self, index_id: int, start: bytes, end: bytes, ts: int, limit: int = 1000
    ) -> list[tuple[bytes, bytes]]:
        """Index entries with ``start <= key < end`` live at ``ts``: ``[(key, doc id)]``.

        Keys are without the 4-byte index prefix; entries come in key order.
        """
        sql = """
            SELECT DISTINCT ON (key_prefix, key_suffix)
                   key_prefix || key_suffix AS key, doc_id, deleted
            FROM indexes
            WHERE index_id = $1 AND ts <= $2
              AND key_prefix >= $3 AND key_prefix <= $4
              AND key_prefix || key_suffix >= $5 AND key_prefix || key_suffix < $6
            ORDER BY key_prefix, key_suffix, ts DESC
        """
        async with self._pool.acquire(timeout=self._timeout_s) as conn:
            rows = await conn.fetch(
                sql, index_id, ts, start[:KEY_PREFIX_BYTES], end[:KEY_PREFIX_BYTES], start, end
            )
        out = [(bytes(r["key"]), bytes(r["doc_id"])) for r in rows if not r["deleted"]]
        return out[:limit]

    # -- writing ---------------------------------------------------------------------------

    async def write_batch(self, batch: _core.PersistBatch) -> None:
        """Write one batch in one SERIALIZABLE transaction; durable on return.

        Raises:
            PersistenceError: nothing of the batch was written (or the lease is lost, or
                this is a reader: ``lease=False``).
        """
        asyncpg = _driver()
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
            conn_cm = self._pool.acquire(timeout=self._timeout_s)
            conn = await conn_cm.__aenter__()
        except Exception as exc:  # no connection: nothing was sent
            raise _wrap("the commit failed (no connection)", exc) from exc
        try:
            await self._write(conn, commits, documents, entries, adjusted, drops, catalog, max_ts)
        except PersistenceError:
            raise
        except asyncpg.SerializationError as exc:
            raise _wrap("the commit failed", exc) from exc
        except Exception as exc:
            # Whatever failed (the connection, the server, the driver's state: asyncpg's
            # InternalClientError after a restart), the COMMIT may have happened: read back.
            if commits and await self._committed(commits[0][0]):
                log.warning("a batch whose commit failed with %r did commit", exc)
                return
            raise _wrap("the commit failed", exc) from exc
        finally:
            with contextlib.suppress(Exception):
                await conn_cm.__aexit__(None, None, None)

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
        async with conn.transaction(isolation="serializable"):
            epoch = await conn.fetchval(
                "SELECT value FROM globals WHERE name = $1 FOR UPDATE", LEASE_EPOCH
            )
            if epoch is None or int(bytes(epoch).decode()) != self._epoch:
                self._lost_lease = True
                raise PersistenceError(
                    "this process lost its writer lease (another process opened the database); "
                    "it can no longer commit"
                )
            # New rows go in by COPY (binary): a third less time per batch than
            # executemany of INSERTs, measured on 64-commit batches (benches/README.md).
            if commits:
                await conn.copy_records_to_table(
                    "commits",
                    records=commits,
                    columns=("ts", "document_count", "index_entry_count", "checksum"),
                )
            if documents:
                await conn.copy_records_to_table(
                    "documents",
                    records=documents,
                    columns=("ts", "id", "table_id", "value", "deleted", "prev_ts", "checksum"),
                )
            late = set(adjusted)
            fresh = [e for e in entries if e[0] not in late]
            backfill = [e for e in entries if e[0] in late]
            if fresh:
                await conn.copy_records_to_table("indexes", records=fresh, columns=_INDEX_COLUMNS)
            if backfill:
                # At their revisions' timestamps; a resumed backfill may write a row again.
                await conn.executemany(
                    f"INSERT INTO indexes ({', '.join(_INDEX_COLUMNS)}) VALUES "
                    "($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    backfill,
                )
            if adjusted:  # index backfill rows written at earlier commits' timestamps
                await self._recount(conn, adjusted)
            for index_id in drops:
                await self._drop_index_rows(conn, index_id)
            if catalog is not None:
                await conn.execute(
                    "INSERT INTO globals (name, value) VALUES ('catalog', $1) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    catalog.encode(),
                )
            # Each NOTIFY wakes the followers' wait_log, once (and only if) this commits.
            if max_ts is not None:
                await conn.execute(_SET_MAX_TS_SQL, str(max_ts).encode(), str(max_ts))
            elif catalog is not None or drops:
                await conn.execute(_NOTIFY_SQL)

    @staticmethod
    async def _drop_index_rows(conn: Any, index_id: int) -> None:
        stamps = [
            r[0]
            for r in await conn.fetch(
                "SELECT DISTINCT ts FROM indexes WHERE index_id = $1", index_id
            )
        ]
        await conn.execute("DELETE FROM indexes WHERE index_id = $1", index_id)
        await PostgresPersistence._recount(conn, stamps)

    @staticmethod
    async def _recount(conn: Any, stamps: list[int]) -> None:
        """Rewrite the commit records at ``stamps`` to count the rows now there."""
        if not stamps:
            return
        documents = dict(
            await conn.fetch(
                "SELECT ts, count(*) FROM documents WHERE ts = ANY($1::bigint[]) GROUP BY ts",
                stamps,
            )
        )
        entries = dict(
            await conn.fetch(
                "SELECT ts, count(*) FROM indexes WHERE ts = ANY($1::bigint[]) GROUP BY ts",
                stamps,
            )
        )
        existing = {
            r[0]
            for r in await conn.fetch(
                "SELECT ts FROM commits WHERE ts = ANY($1::bigint[]) FOR UPDATE", stamps
            )
        }
        updates, deletes = recount_commits(stamps, existing, documents, entries)
        if updates:
            await conn.executemany(
                "UPDATE commits SET document_count = $1, index_entry_count = $2, checksum = $3 "
                "WHERE ts = $4",
                updates,
            )
        if deletes:
            await conn.execute("DELETE FROM commits WHERE ts = ANY($1::bigint[])", deletes)

    # -- retention -------------------------------------------------------------------------

    async def prune(self, engine: _core.Engine, cutoff: int) -> PruneReport:
        """Delete rows no snapshot at or after ``cutoff`` needs (see ``Persistence.prune``).

        Raises:
            PersistenceError: the server failed (rows deleted by finished chunks stay
                deleted; the next call goes on from there), or this is a reader
                (``lease=False``).
        """
        asyncpg = _driver()
        self._writable("cannot prune")
        report = PruneReport()
        try:
            while True:
                async with (
                    self._pool.acquire(timeout=self._timeout_s) as conn,
                    conn.transaction(),
                ):
                    chunk = await self._prune_chunk(conn, engine, cutoff)
                report.add(chunk)
                if chunk["done"]:
                    return report
                await asyncio.sleep(0)
        except PersistenceError:
            raise
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _wrap("pruning old versions failed", exc) from exc

    async def _prune_chunk(self, conn: Any, engine: _core.Engine, cutoff: int) -> dict[str, Any]:
        epoch = await conn.fetchval("SELECT value FROM globals WHERE name = $1", LEASE_EPOCH)
        if epoch is None or int(bytes(epoch).decode()) != self._epoch:
            self._lost_lease = True
            raise PersistenceError("this process lost its writer lease; it cannot prune")
        raw = await conn.fetchval(
            "SELECT value FROM globals WHERE name = $1 FOR UPDATE", RETAINED_TS
        )
        start = int(bytes(raw).decode()) if raw is not None else 0
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
        rows = [
            (r[0], bytes(r[1]), None if r[2] is None else bytes(r[2]), r[3])
            for r in await conn.fetch(
                select + "WHERE ts > $1 AND ts <= $2 ORDER BY ts, id LIMIT $3",
                start,
                cutoff,
                limit,
            )
        ]
        rows, through, whole = choose_window(rows, limit, cutoff)
        if whole is not None:
            rows = [
                (r[0], bytes(r[1]), None if r[2] is None else bytes(r[2]), r[3])
                for r in await conn.fetch(select + "WHERE ts = $1", whole)
            ]
        previous = [(r[3], r[1]) for r in rows if r[3] is not None]
        values: dict[tuple[int, bytes], bytes | None] = {}
        if previous:
            for r in await conn.fetch(
                "SELECT d.ts, d.id, d.value FROM documents d "
                "JOIN unnest($1::bigint[], $2::bytea[]) AS t(ts, id) "
                "ON d.ts = t.ts AND d.id = t.id",
                [p[0] for p in previous],
                [p[1] for p in previous],
            ):
                values[(r[0], bytes(r[1]))] = None if r[2] is None else bytes(r[2])
        window = [
            (ts, doc_id, value, prev, None if prev is None else values.get((prev, doc_id)))
            for ts, doc_id, value, prev in rows
        ]
        doc_keys, entry_keys = engine.prune_plan(window)
        touched: list[int] = []
        if doc_keys:
            gone = await conn.fetch(
                "DELETE FROM documents d USING unnest($1::bigint[], $2::bytea[]) AS t(ts, id) "
                "WHERE d.ts = t.ts AND d.id = t.id RETURNING d.ts",
                [k[0] for k in doc_keys],
                [k[1] for k in doc_keys],
            )
            chunk["documents_deleted"] = len(gone)
            touched += [r[0] for r in gone]
        if entry_keys:
            gone = await conn.fetch(
                "DELETE FROM indexes i USING unnest($1::bigint[], $2::integer[], $3::bytea[], "
                "$4::bytea[]) AS t(ts, index_id, key_hash, doc_id) WHERE i.ts = t.ts "
                "AND i.index_id = t.index_id AND i.key_hash = t.key_hash "
                "AND i.doc_id = t.doc_id RETURNING i.ts",
                [k[0] for k in entry_keys],
                [k[1] for k in entry_keys],
                [split_key(k[2])[2] for k in entry_keys],
                [k[3] for k in entry_keys],
            )
            chunk["index_entries_deleted"] = len(gone)
            touched += [r[0] for r in gone]
        await self._recount(conn, sorted(set(touched)))
        await conn.execute(
            "INSERT INTO globals (name, value) VALUES ($1, $2) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            RETAINED_TS,
            str(through).encode(),
        )
        chunk.update(retained_ts=through, revisions=len(rows), done=through >= cutoff)
        return chunk

    async def _committed(self, ts: int) -> bool:
        """Whether commit ``ts`` is in the database (after a lost connection)."""
        asyncpg = _driver()
        for attempt in range(10):
            try:
                async with self._pool.acquire(timeout=self._timeout_s) as conn:
                    return bool(
                        await conn.fetchval(
                            "SELECT EXISTS (SELECT 1 FROM commits WHERE ts = $1)", ts
                        )
                    )
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        raise CommitOutcomeUnknownError(
            "postgresql: a batch's connection was lost during COMMIT and the server stayed "
            "unreachable: whether it committed is unknown; reopen the database to find out"
        )

    async def close(self) -> None:
        """Close the ``LISTEN`` connection and the pool, release the lease (if held).

        Waiters in ``wait_log`` raise ``PersistenceError``, as does every later ``wait_log``.
        """
        self._watch.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener])
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._pool.close(), self._timeout_s)
        if self._lease is None:
            return
        with contextlib.suppress(Exception):
            # Unlocked explicitly: a closed socket frees it only once the server notices.
            await asyncio.wait_for(
                self._lease.execute("SELECT pg_advisory_unlock($1)", LEASE_LOCK), self._timeout_s
            )
        with contextlib.suppress(Exception):
            await self._lease.close()

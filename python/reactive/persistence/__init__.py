"""Persistence backends, chosen by URL.

* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (or a plain file path): the
  embedded SQLite default.
* ``postgresql://user:pass@host:5432/db`` (also ``postgres://``): PostgreSQL, on asyncpg
  (``pip install 'reactive[postgres]'``).
* ``mysql://user:pass@host:3306/db``: MySQL or MariaDB, on asyncmy
  (``pip install 'reactive[mysql]'``).

Parts missing from a ``postgresql://`` or ``mysql://`` URL come from
``REACTIVE_POSTGRES_HOST/PORT/USER/PASSWORD/DATABASE`` or the ``REACTIVE_MYSQL_*``
equivalents; a URL of just ``postgresql://`` or ``mysql://`` takes all of them. Drivers are
imported only when their URL is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlsplit

from reactive.errors import PersistenceError
from reactive.persistence.base import CheckReport, LogSlice, LogSource, Persistence

__all__ = [
    "CheckReport",
    "LogSlice",
    "LogSource",
    "Persistence",
    "open_persistence",
    "resolve_url",
    "sqlite_path",
]


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:`` URL (or a bare path) names.

    Raises:
        PersistenceError: the URL names no file.
    """
    if not url:
        raise PersistenceError("the database URL is empty; use e.g. sqlite:///app.db")
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:") :]
        if rest.startswith("///"):
            path = rest[3:]
        elif rest.startswith("//"):
            path = rest[2:]
        else:
            path = rest
        path = path.split("?", 1)[0]
        if not path or path == ":memory:":
            raise PersistenceError(
                f"{url!r}: name a database file, e.g. sqlite:///app.db (in-memory SQLite is "
                "not durable and is not supported)"
            )
        return Path(path)
    return Path(url)


def resolve_url(url: str) -> str:
    """Fill the parts a ``postgresql://``/``mysql://`` URL leaves out from the environment."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    prefix = {
        "postgresql": "REACTIVE_POSTGRES_",
        "postgres": "REACTIVE_POSTGRES_",
        "mysql": "REACTIVE_MYSQL_",
    }.get(scheme)
    if prefix is None:
        return url
    parts = urlsplit(url)
    env = os.environ.get
    host = parts.hostname or env(prefix + "HOST") or "127.0.0.1"
    port = parts.port or env(prefix + "PORT")
    user = parts.username or env(prefix + "USER")
    password = parts.password or env(prefix + "PASSWORD")
    database = parts.path.lstrip("/") or env(prefix + "DATABASE") or ""
    auth = ""
    if user:
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        auth += "@"
    return f"{scheme}://{auth}{host}{':' + str(port) if port else ''}/{database}"


async def open_persistence(url: str, *, lease: bool = True, **options: object) -> Persistence:
    """Open the backend a URL names.

    Args:
        url: A database URL (module docstring).
        lease: Take the writer lease (the default). ``False`` opens a PostgreSQL or MySQL
            database read-only beside its writer, to load it and follow its log (a
            ``LogSource``): no lock, no migration, and every write raises
            ``PersistenceError``. SQLite is single-process and has no such mode.
        **options: ``pool_size`` and ``timeout_s`` for the server backends.

    Raises:
        PersistenceError: an unknown scheme, the backend fails to open, or ``lease=False``
            on SQLite.
    """
    url = resolve_url(url)
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("", "sqlite", "file"):
        from reactive.persistence.sqlite import SqlitePersistence

        if not lease:
            raise PersistenceError(
                f"{url!r}: SQLite is opened by one process, holding its lock; lease=False "
                "(a reader beside the writer) is for PostgreSQL and MySQL"
            )

        target = Path(urlsplit(url).path) if scheme == "file" else sqlite_path(url)
        return await SqlitePersistence.open(target, url)
    if scheme in ("postgresql", "postgres"):
        from reactive.persistence.postgres import PostgresPersistence

        return await PostgresPersistence.open(url, lease=lease, **options)  # type: ignore[arg-type]
    if scheme == "mysql":
        from reactive.persistence.mysql import MysqlPersistence

        return await MysqlPersistence.open(url, lease=lease, **options)  # type: ignore[arg-type]
    raise PersistenceError(
        f"unsupported database URL scheme {scheme!r} in {url!r}; use sqlite:///path.db, "
        "postgresql://… or mysql://…"
    )

"""Persistence backends, chosen by URL.

``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (or a plain file path) open
the embedded SQLite backend. Drivers of other backends are imported only when their URL is
used.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from reactive.errors import PersistenceError
from reactive.persistence.base import CheckReport, Persistence

__all__ = ["CheckReport", "Persistence", "open_persistence", "sqlite_path"]


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:`` URL (or a bare path) names.

    Raises:
        PersistenceError: the URL names no file.
    """
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


async def open_persistence(url: str) -> Persistence:
    """Open the backend a URL names.

    Raises:
        PersistenceError: an unknown scheme, or the backend fails to open.
    """
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("", "sqlite", "file"):
        from reactive.persistence.sqlite import SqlitePersistence

        target = Path(urlsplit(url).path) if scheme == "file" else sqlite_path(url)
        return await SqlitePersistence.open(target, url)
    raise PersistenceError(
        f"unsupported database URL scheme {scheme!r} in {url!r}; use sqlite:///path.db"
    )

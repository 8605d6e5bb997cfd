"""Development mode's hot reload: ``python -m reactive.server --dev`` reloads the app on save.

As ``npx convex dev`` does for a Convex app: the app's directory is watched (``watchfiles``)
and, a moment after a ``.py`` file changes, the app is imported afresh and swapped in
without dropping a socket:

1. the modules are imported again (the package's entries in ``sys.modules`` are replaced);
2. the new schema is applied (new tables and indexes; a schema the stored documents violate
   is refused);
3. the cron jobs are checked and brought in step (``_cron_jobs``);
4. the new functions serve every call from then on; HTTP routes come from the new
   ``http.py`` at the next request;
5. every live query re-runs with the new code, and each socket gets a transition with the
   new results (a query whose function is gone gets its error).

If any step before the swap fails (a syntax error, an import error, a bad validator, a
schema the data violates, a cron naming a missing function), the previous version keeps
serving and the error is logged with the file and line where it broke. Changes to
``auth.py`` providers need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reactive.errors import FunctionNotFoundError

if TYPE_CHECKING:
    from reactive.functions import App, Function
    from reactive.server.app import Server

__all__ = ["Reloader"]

log = logging.getLogger("reactive.dev")


def _where(exc: BaseException, root: Path) -> str:
    """``file:line`` of the innermost frame of ``exc`` inside ``root`` (or of a syntax error)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    inside = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if Path(frame.filename).resolve().is_relative_to(root)
    ]
    if inside:
        return f"{inside[-1].filename}:{inside[-1].lineno}"
    return str(root)


class Reloader:
    """Watches an app directory and swaps in each new version (see the module docstring).

    Args:
        server: The server whose database and live queries are updated.
        directory: The app's directory.
    """

    def __init__(self, server: Server, directory: Path) -> None:
        self.server = server
        self.directory = directory.resolve()
        self.reloads = 0
        """Versions swapped in so far."""
        self.failures = 0
        """Versions refused so far (the previous one kept serving)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start watching."""
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="reactive-dev")
        log.info("development mode: watching %s for changes", self.directory)

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _watch(self) -> None:
        from watchfiles import awatch

        async for changes in awatch(self.directory, debounce=200, step=50):
            if any(path.endswith(".py") for _, path in changes):
                await self.reload()

    async def reload(self) -> bool:
        """Import the app again and swap it in; False (and logged) if the new one fails."""
        from reactive.db.cron_runner import resolve_crons
        from reactive.db.schema_sync import apply_schema
        from reactive.functions import load_app

        db = self.server.db
        name = db.app.name
        saved = {m: mod for m, mod in sys.modules.items() if m == name or m.startswith(name + ".")}
        for module in saved:
            del sys.modules[module]
        try:
            app = load_app(self.directory)
            jobs = resolve_crons(db, app)
            for task in await apply_schema(db, app.schema):
                db._background.add(task)
                task.add_done_callback(db._background_done)
        except BaseException as exc:
            for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                del sys.modules[module]
            sys.modules.update(saved)  # the previous version's modules keep serving
            self.failures += 1
            log.error(
                "reload failed at %s; the previous version keeps serving:\n%s",
                _where(exc, self.directory),
                "".join(traceback.format_exception(exc)).rstrip(),
            )
            if not isinstance(exc, Exception):
                raise
            return False
        db._app = app
        if db._cron_runner is not None:
            db._cron_runner._jobs = jobs
            await db._cron_runner.sync()
        self._rerun_queries(app)
        self.reloads += 1
        log.info("reloaded %s: %d functions", self.directory, len(app.functions))
        return True

    def _rerun_queries(self, app: App) -> None:
        for entry in list(self.server.queries._entries.values()):
            path = entry.fn.path or entry.key[0]
            try:
                entry.fn = app.lookup(path)
            except FunctionNotFoundError:
                entry.fn = _gone(path)
            entry.latest = None  # results of the old code hold at no snapshot
            entry._invalidate()


def _gone(path: str) -> Function[Any]:
    """A query standing for one the new version removed: running it is the error."""
    from reactive.functions import Function

    def missing(ctx: Any, **_: Any) -> None:
        raise FunctionNotFoundError(f"Could not find public function for '{path}'")

    fn: Function[None] = Function("query", missing, None, None, False)
    fn.path = path
    return fn

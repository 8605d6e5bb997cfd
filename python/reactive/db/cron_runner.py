"""Runs an app's cron jobs (:mod:`reactive.crons`) through the scheduler.

At open the jobs of ``crons.py`` are checked (each names a mutation or an action of the
app, with arguments its validator accepts) and written to ``_cron_jobs``: a new or changed
job starts afresh, a removed one is deleted, and an unchanged one keeps its next run,
unless that time passed while the database was not running (the missed runs are skipped).
While the database runs its scheduled functions, a loop hands each due run to the
scheduler: in one transaction it inserts the ``_scheduled_functions`` document and moves
the job's ``nextRun`` on, so a run is scheduled once however many processes look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from reactive import _core
from reactive.crons import CronJob, CronJobs, next_run_ms
from reactive.db.scheduler import SCHEDULED_FUNCTIONS
from reactive.db.system import document_fields, write_system
from reactive.errors import FunctionNotFoundError

if TYPE_CHECKING:
    from reactive.db.database import Database
    from reactive.functions import App

__all__ = ["CRON_JOBS", "INDEXES", "CronRunner", "resolve_crons"]

log = logging.getLogger("reactive.crons")

CRON_JOBS = "_cron_jobs"
BY_NAME = "by_name"
BY_NEXT_RUN = "by_next_run"
INDEXES = {BY_NAME: ["name"], BY_NEXT_RUN: ["nextRun"]}
_BUSY = ("pending", "inProgress")


def resolve_crons(db: Database, app: App) -> dict[str, dict[str, Any]]:
    """The jobs of ``app.crons`` as ``_cron_jobs`` fields (without ``nextRun``), by name.

    Raises:
        FunctionNotFoundError: ``crons.py``'s ``crons`` is not a :class:`CronJobs`, or a job
            names a missing function or a query.
        ArgumentValidationError: a job's ``args`` do not match its function's validator.
    """
    from reactive.db.runner import _validate_args
    from reactive.functions import Function, canonicalize_path

    crons = app.crons
    if crons is None:
        return {}
    if not isinstance(crons, CronJobs):
        raise FunctionNotFoundError(
            f"crons.py must define crons = cron_jobs(), not {type(crons).__name__}"
        )
    out: dict[str, dict[str, Any]] = {}
    for job in crons.jobs.values():
        fn = _function(app, job)
        if fn.kind not in ("mutation", "action"):
            raise FunctionNotFoundError(
                f"cron job {job.name!r}: {fn.path} is a {fn.kind}; a cron job runs a mutation "
                "or an action"
            )
        args = _validate_args(fn, job.args, db._id_checker)
        assert isinstance(fn, Function) and fn.path is not None
        out[job.name] = {
            "name": job.name,
            "schedule": job.schedule,
            "function": canonicalize_path(fn.path),
            "args": args,
        }
    return out


def _function(app: App, job: CronJob) -> Any:
    from reactive.functions import Function

    target = job.function
    if isinstance(target, Function):
        if target.path is None:
            raise FunctionNotFoundError(
                f"cron job {job.name!r}: {target!r} is not a function of this app"
            )
        target = target.path
    if not isinstance(target, str):
        raise FunctionNotFoundError(
            f"cron job {job.name!r}: name a path 'module:function' or a function, not {target!r}"
        )
    try:
        return app.lookup(target)
    except FunctionNotFoundError:
        raise FunctionNotFoundError(
            f"cron job {job.name!r}: there is no function {target!r} in this app"
        ) from None


def _all_jobs(txn: _core.Transaction) -> list[dict[str, Any]]:
    docs, _, _ = txn.scan(CRON_JOBS, BY_NAME, [], "asc", None, None, None, None, True)
    return docs


class CronRunner:
    """Keeps ``_cron_jobs`` in step with the app and hands due runs to the scheduler.

    Args:
        db: The open database.
        jobs: The app's jobs, from :func:`resolve_crons`.
        poll_s: The longest sleep between looks at ``_cron_jobs``.
    """

    def __init__(self, db: Database, jobs: dict[str, dict[str, Any]], poll_s: float = 1.0):
        self._db = db
        self._jobs = jobs
        self.poll_s = poll_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def sync(self) -> None:
        """Write the app's jobs to ``_cron_jobs`` (see the module docstring)."""
        jobs = self._jobs

        def change(txn: _core.Transaction) -> tuple[int, int]:
            now = time.time() * 1000.0
            skipped = changed = 0
            seen: set[str] = set()
            for doc in _all_jobs(txn):
                name = doc["name"]
                want = jobs.get(name)
                if want is None or name in seen:
                    txn.delete(doc["_id"])
                    changed += 1
                    continue
                seen.add(name)
                fields = document_fields(doc)
                if all(fields.get(k) == v for k, v in want.items()):
                    if fields["nextRun"] < now:
                        fields["nextRun"] = next_run_ms(want["schedule"], fields["nextRun"], now)
                        txn.replace(doc["_id"], fields)
                        skipped += 1
                    continue
                txn.replace(
                    doc["_id"], {**want, "nextRun": next_run_ms(want["schedule"], None, now)}
                )
                changed += 1
            for name, want in jobs.items():
                if name not in seen:
                    txn.insert(
                        CRON_JOBS, {**want, "nextRun": next_run_ms(want["schedule"], None, now)}
                    )
                    changed += 1
            return skipped, changed

        skipped, changed = await write_system(self._db, change)
        if skipped:
            log.info("%d cron job(s) missed runs while the database was not running", skipped)
        if changed:
            log.info("cron jobs updated: %d added, changed or removed", changed)

    async def start(self) -> None:
        """Start handing due runs to the scheduler."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="reactive-crons")

    async def stop(self) -> None:
        """Stop (a run already handed to the scheduler stays scheduled)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _next_due(self) -> tuple[list[str], float | None]:
        txn = self._db._engine.begin(True)
        docs, _, _ = txn.scan(CRON_JOBS, BY_NEXT_RUN, [], "asc", 100, None, None, None, True)
        now = time.time() * 1000.0
        due = [d["_id"] for d in docs if d["nextRun"] <= now]
        later = [d["nextRun"] for d in docs if d["nextRun"] > now]
        return due, (min(later) if later else None)

    async def _fire(self, cron_id: str) -> None:
        def change(txn: _core.Transaction) -> bool:
            doc = txn.get(cron_id)
            now = time.time() * 1000.0
            if doc is None or doc["nextRun"] > now:
                return False
            fields = document_fields(doc)
            occurrence = fields["nextRun"]
            last = fields.get("lastRun")
            busy = False
            if last is not None:
                previous = txn.get(last["scheduledFunctionId"])
                busy = previous is not None and previous["state"]["kind"] in _BUSY
            if busy:
                fields["lastSkipped"] = occurrence
                log.warning(
                    "cron job %r: a run came due while the previous one was still %s; skipped",
                    fields["name"],
                    previous["state"]["kind"] if previous else "running",
                )
            else:
                job_id = txn.insert(
                    SCHEDULED_FUNCTIONS,
                    {
                        "name": fields["function"],
                        "args": fields["args"],
                        "scheduledTime": occurrence,
                        "state": {"kind": "pending"},
                    },
                )
                fields["lastRun"] = {"scheduledTime": occurrence, "scheduledFunctionId": job_id}
            fields["nextRun"] = next_run_ms(fields["schedule"], occurrence, now)
            txn.replace(cron_id, fields)
            return not busy

        if await write_system(self._db, change):
            self._db._wake_scheduler()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                due, next_ms = self._next_due()
                for cron_id in due:
                    await self._fire(cron_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the cron runner could not run a job")
                due, next_ms = [], None
            wait = self.poll_s
            if next_ms is not None:
                wait = min(wait, max(0.0, (next_ms - time.time() * 1000.0) / 1000.0))
            await asyncio.sleep(wait)

"""Cron jobs: an app's ``crons.py`` registers functions to run on a schedule.

As Convex's ``cronJobs()`` ("Scheduling: cron jobs" in Convex's docs), in snake_case::

    # crons.py
    from reactive import cron_jobs

    crons = cron_jobs()
    crons.interval("clear presence", {"minutes": 5}, "presence:clear", {})
    crons.cron("digest", "0 9 * * mon-fri", "mail:digest", {})          # UTC
    crons.hourly("rollup", {"minute_utc": 15}, "stats:rollup", {})
    crons.daily("backup", {"hour_utc": 3, "minute_utc": 0}, "ops:backup", {})
    crons.weekly("report", {"day_of_week": "monday", "hour_utc": 8, "minute_utc": 0},
                 "ops:report", {})
    crons.monthly("invoice", {"day": 1, "hour_utc": 0, "minute_utc": 0}, "billing:run", {})

Each job names a mutation or an action (a path ``"module:function"`` or the decorated
function, internal ones included) and its arguments. While the database runs its
scheduled functions, each due run is handed to the scheduler (a ``_scheduled_functions``
document) and recorded in the system table ``_cron_jobs``::

    {_id, _creationTime, name, schedule: {"type": "interval", "seconds": s} |
     {"type": "cron", "cron": expr} | {"type": "hourly", "minute_utc": m} | ...,
     function: "module:function", args: {...}, nextRun: ms,
     lastRun?: {"scheduledTime": ms, "scheduledFunctionId": id},
     lastSkipped?: ms}

Rules, as Convex's: one run of a job at a time (a run that comes due while the previous
one is still pending or running is skipped, and ``lastSkipped`` says when); runs missed
while the database was not running are skipped, not made up; an interval job first runs
when it is registered, then every interval; clock schedules are in UTC. Changing
``crons.py`` and restarting updates the jobs: a changed job starts afresh, a removed one is
deleted.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reactive.functions import Function

__all__ = ["CronJob", "CronJobs", "cron_jobs", "next_run_ms"]

DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
MIN_INTERVAL_S = 1.0
"""The shortest interval (seconds)."""
_UNITS = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0}


@dataclass(frozen=True)
class CronJob:
    """One registered job: its name, schedule (as stored), function and arguments."""

    name: str
    schedule: dict[str, Any]
    function: str | Function[Any]
    args: dict[str, Any]


class CronJobs:
    """The jobs of an app's ``crons.py`` (make one with :func:`cron_jobs`).

    Every method registers a job and raises ``ValueError`` naming the job when its name is
    taken or empty, its schedule is malformed (unknown or missing fields, out-of-range
    values, a bad cron expression) or ``args`` is not a dict.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, CronJob] = {}

    def interval(
        self,
        name: str,
        schedule: dict[str, float],
        function: str | Function[Any],
        args: dict[str, Any] | None = None,
    ) -> None:
        """Run every ``{"seconds": s}``, ``{"minutes": m}`` or ``{"hours": h}`` (one key).

        The first run is when the job is registered; then one every interval (at least
        one second).
        """
        fields = _fields(name, schedule, required=(), optional=tuple(_UNITS))
        if len(fields) != 1:
            raise ValueError(
                f"cron job {name!r}: an interval is one of seconds, minutes or hours, "
                f"not {sorted(fields) or 'nothing'}"
            )
        ((unit, amount),) = fields.items()
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise ValueError(f"cron job {name!r}: {unit} must be a number, not {amount!r}")
        seconds = float(amount) * _UNITS[unit]
        if not MIN_INTERVAL_S <= seconds < math.inf:
            raise ValueError(f"cron job {name!r}: the interval must be at least 1 second")
        self._add(name, {"type": "interval", "seconds": seconds}, function, args)

    def cron(
        self,
        name: str,
        expression: str,
        function: str | Function[Any],
        args: dict[str, Any] | None = None,
    ) -> None:
        """Run on a cron expression (five fields: minute hour day month weekday; UTC)."""
        from croniter import croniter

        if not isinstance(expression, str) or len(expression.split()) != 5:
            raise ValueError(
                f"cron job {name!r}: {expression!r} is not a cron expression of five fields "
                "(minute hour day-of-month month day-of-week)"
            )
        if not croniter.is_valid(expression):
            raise ValueError(f"cron job {name!r}: {expression!r} is not a valid cron expression")
        self._add(name, {"type": "cron", "cron": expression}, function, args)

    def hourly(
        self,
        name: str,
        schedule: dict[str, int],
        function: str | Function[Any],
        args: dict[str, Any] | None = None,
    ) -> None:
        """Run every hour at ``{"minute_utc": 0..59}``."""
        fields = _fields(name, schedule, required=("minute_utc",))
        self._add(name, {"type": "hourly", **_clock(name, fields)}, function, args)

    def daily(
        self,
        name: str,
        schedule: dict[str, int],
        function: str | Function[Any],
        args: dict[str, Any] | None = None,
    ) -> None:
        """Run every day at ``{"hour_utc": 0..23, "minute_utc": 0..59}``."""
        fields = _fields(name, schedule, required=("hour_utc", "minute_utc"))
        self._add(name, {"type": "daily", **_clock(name, fields)}, function, args)

    def weekly(
        self,
        name: str,
        schedule: dict[str, Any],
        function: str | Function[Any],
        args: dict[str, Any] | None = None,
    ) -> None:
        """Run every week at ``{"day_of_week": "monday", "hour_utc": h, "minute_utc": m}``."""
        fields = _fields(name, schedule, required=("day_of_week", "hour_utc", "minute_utc"))
        day = fields.pop("day_of_week")
        if not isinstance(day, str) or day.lower() not in DAYS:
            raise ValueError(f"cron job {name!r}: day_of_week is one of {DAYS}, not {day!r}")
        stored = {"type": "weekly", "day_of_week": day.lower(), **_clock(name, fields)}
        self._add(name, stored, function, args)

    def monthly(
        self,
        name: str,
        schedule: dict[str, int],
        function: str | Function[Any],
        args: dict[str, Any] | None = None,
    ) -> None:
        """Run every month at ``{"day": 1..31, "hour_utc": h, "minute_utc": m}``.

        A month without that day (``day=31`` in April) has no run.
        """
        fields = _fields(name, schedule, required=("day", "hour_utc", "minute_utc"))
        day = fields.pop("day")
        _check_int(name, "day", day, 1, 31)
        self._add(name, {"type": "monthly", "day": day, **_clock(name, fields)}, function, args)

    def _add(
        self,
        name: str,
        schedule: dict[str, Any],
        function: str | Function[Any],
        args: dict[str, Any] | None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a cron job needs a name (a non-empty string), not {name!r}")
        if name in self.jobs:
            raise ValueError(f"cron job {name!r} is registered twice")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise ValueError(f"cron job {name!r}: args must be a dict, not {type(args).__name__}")
        self.jobs[name] = CronJob(name, schedule, function, args)


def cron_jobs() -> CronJobs:
    """A new, empty set of cron jobs (Convex's ``cronJobs()``)."""
    return CronJobs()


def _fields(
    name: str, schedule: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    if not isinstance(schedule, dict):
        raise ValueError(f"cron job {name!r}: the schedule must be a dict, not {schedule!r}")
    unknown = set(schedule) - set(required) - set(optional)
    if unknown:
        known = ", ".join((*required, *optional))
        raise ValueError(f"cron job {name!r}: unknown field(s) {sorted(unknown)}; known: {known}")
    missing = [f for f in required if f not in schedule]
    if missing:
        raise ValueError(f"cron job {name!r}: the schedule needs {', '.join(missing)}")
    return dict(schedule)


def _check_int(name: str, field: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(
            f"cron job {name!r}: {field} must be an integer from {low} to {high}, not {value!r}"
        )


def _clock(name: str, fields: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    if "hour_utc" in fields:
        _check_int(name, "hour_utc", fields["hour_utc"], 0, 23)
        out["hour_utc"] = fields["hour_utc"]
    _check_int(name, "minute_utc", fields["minute_utc"], 0, 59)
    out["minute_utc"] = fields["minute_utc"]
    return out


def _expression(schedule: dict[str, Any]) -> str:
    kind = schedule["type"]
    if kind == "cron":
        return str(schedule["cron"])
    minute = schedule["minute_utc"]
    if kind == "hourly":
        return f"{minute} * * * *"
    hour = schedule["hour_utc"]
    if kind == "daily":
        return f"{minute} {hour} * * *"
    if kind == "weekly":
        return f"{minute} {hour} * * {DAYS.index(schedule['day_of_week'])}"
    if kind == "monthly":
        return f"{minute} {hour} {schedule['day']} * *"
    raise ValueError(f"unknown cron schedule type {kind!r}")


def next_run_ms(schedule: dict[str, Any], previous_ms: float | None, now_ms: float) -> float:
    """When a job runs next (ms since the epoch): the first occurrence after ``now_ms``.

    An interval job with no previous run runs at ``now_ms``; otherwise it keeps its cadence
    (``previous_ms`` plus a whole number of intervals). Occurrences at or before ``now_ms``
    are skipped, not made up.
    """
    if schedule["type"] == "interval":
        period_ms = float(schedule["seconds"]) * 1000.0
        if previous_ms is None:
            return now_ms
        steps = max(1, math.floor((now_ms - previous_ms) / period_ms) + 1)
        return previous_ms + steps * period_ms
    from croniter import croniter

    start = datetime.datetime.fromtimestamp(now_ms / 1000.0, tz=datetime.UTC)
    following = croniter(_expression(schedule), start).get_next(datetime.datetime)
    return float(following.timestamp() * 1000.0)

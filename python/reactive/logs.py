"""Log lines of function runs.

``print`` and ``logging`` inside a function become ``"[LOG] text"`` lines (spec §9.4)
that callers receive with the result.

A context variable names the collector of the function running in the current task; a
proxy installed once on ``sys.stdout`` and a ``logging`` handler on the root logger append
to it. Output outside a function run, and the output itself, still go where they always
went (the proxy writes through).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from typing import Any, TextIO

__all__ = ["LogCollector", "collecting", "install"]

MAX_LINES = 256
"""Lines kept per run (Convex keeps 256); later ones are counted in a last line."""
MAX_LINE_CHARS = 32_768

_current: contextvars.ContextVar[LogCollector | None] = contextvars.ContextVar(
    "reactive_log_collector", default=None
)
_install_lock = threading.Lock()
_installed = False


class LogCollector:
    """The log lines of one function run, each ``"[LEVEL] message"``."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.dropped = 0
        self._partial = ""

    def add(self, level: str, message: str) -> None:
        """Append one line (cut to ``MAX_LINE_CHARS``)."""
        if len(self.lines) >= MAX_LINES:
            self.dropped += 1
            return
        self.lines.append(f"[{level}] {message[:MAX_LINE_CHARS]}")

    def write(self, text: str) -> None:
        """Text written to stdout: complete lines become ``[LOG]`` lines."""
        text = self._partial + text
        *complete, self._partial = text.split("\n")
        for line in complete:
            self.add("LOG", line)

    def finish(self) -> list[str]:
        """The lines, with any unterminated output and a note of dropped lines."""
        if self._partial:
            self.add("LOG", self._partial)
            self._partial = ""
        if self.dropped:
            self.lines.append(f"[WARN] {self.dropped} more log lines were dropped (limit 256)")
            self.dropped = 0
        return self.lines


class _StdoutProxy:
    """Writes through to the real stdout and to the current run's collector."""

    def __init__(self, target: TextIO) -> None:
        self._target = target

    def write(self, text: str) -> int:
        collector = _current.get()
        if collector is not None:
            collector.write(text)
        return self._target.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


_LEVELS = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "ERROR",
}


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        collector = _current.get()
        if collector is None:
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not fail the function
            message = str(record.msg)
        level = _LEVELS.get(record.levelno, "LOG" if record.levelno < logging.DEBUG else "INFO")
        collector.add(level, message)


def install() -> None:
    """Install the stdout proxy and the logging handler (once per process)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        if not isinstance(sys.stdout, _StdoutProxy) and sys.stdout is not None:
            sys.stdout = _StdoutProxy(sys.stdout)
        logging.getLogger().addHandler(_Handler(level=logging.DEBUG))
        _installed = True


def collecting(collector: LogCollector) -> contextvars.Token[LogCollector | None]:
    """Make ``collector`` the current task's collector; reset with ``_current.reset``.

    If something replaced ``sys.stdout`` since :func:`install` (a test harness capturing
    output, an app redirecting it), the proxy is put back in front of the new stream.
    """
    stdout = sys.stdout
    if stdout is not None and not isinstance(stdout, _StdoutProxy):
        sys.stdout = _StdoutProxy(stdout)
    return _current.set(collector)


def reset(token: contextvars.Token[LogCollector | None]) -> None:
    """Undo :func:`collecting`."""
    _current.reset(token)

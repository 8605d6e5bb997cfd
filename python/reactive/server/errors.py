"""What a client is told about a failed function, and what the operator's log keeps.

A function's exception reaches the client in Convex's form, ``[Request ID: <id>] Server
Error`` then ``Uncaught <Error>: <message>``, only when its text is safe to show:

* ``ConvexError``: always, with its data (that is what it is for).
* The database's own errors (every :class:`~reactive.errors.ReactiveError` but
  ``ConvexError`` and ``FunctionError``: validation, not found, limits, write conflicts):
  always; their text is written by ``reactive``, not taken from user data.
* Anything else (``ValueError``, ``KeyError``, ``RuntimeError``... raised by the app's own
  code, whose text may hold paths, secrets or user data): only ``[Request ID: <id>] Server
  Error``, unless the server runs in development mode (``--dev``). The full text and the
  traceback go to the log (logger ``reactive.server``, WARNING) under the same request id,
  so an operator can find what a user reports.
"""

from __future__ import annotations

import logging
import secrets

from reactive import _core
from reactive.errors import ConvexError, FunctionError, ReactiveError

__all__ = ["error_message"]

log = logging.getLogger("reactive.server")


def _shown(exc: BaseException) -> bool:
    """Whether the text of ``exc`` is the database's own (safe to show any client)."""
    return isinstance(exc, ReactiveError) and not isinstance(exc, FunctionError)


def error_message(exc: BaseException, *, dev: bool) -> tuple[str, str | None]:
    """The client-facing message of a function error, and ``ConvexError`` data as Convex JSON.

    Args:
        exc: What the function raised.
        dev: Development mode: show the text of every error.

    Returns:
        ``(message, data)``: the message in Convex's form (``[Request ID: …] Server Error``,
        then ``Uncaught <Error>: <message>`` unless redacted) and, for a ``ConvexError``,
        its data as Convex JSON text (else ``None``). A redacted error is logged in full.
    """
    request_id = secrets.token_hex(8)
    head = f"[Request ID: {request_id}] Server Error"
    if isinstance(exc, ConvexError):
        try:
            data = _core.convex_json(exc.data, result=True)
        except ReactiveError:
            data = _core.convex_json(str(exc.data))
        return f"{head}\nUncaught ConvexError: {data}", data
    detail = f"Uncaught {type(exc).__name__}: {exc}"
    if dev or _shown(exc):
        return f"{head}\n{detail}", None
    log.warning(
        "[Request ID: %s] function error (shown to the client as 'Server Error'): %s",
        request_id,
        detail,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return head, None

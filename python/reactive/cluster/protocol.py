"""What the processes of a cluster say to each other, and how they know it is one of them.

Requests between processes (a follower forwarding a mutation to the writer) are HTTP
``POST`` requests to ``/_cluster/…`` carrying a header

    Reactive-Cluster: v1 <unix seconds> <nonce> <hex HMAC-SHA256>

the HMAC keyed with the cluster key over ``"reactive-cluster-v1" | method | path | unix
seconds | nonce | SHA-256 of the body``. The receiver refuses a request more than
:data:`CLOCK_SKEW_S` from its clock or whose nonce it saw in that window (a replay). The
answer carries ``Reactive-Cluster-Reply: <hex HMAC>`` over ``"reactive-cluster-reply-v1" |
nonce | SHA-256 of the body``, so a follower acts only on an answer from a holder of the key.

Errors cross as ``{"type": <class name>, "message", "data" (ConvexError only, Convex
JSON), "conflict" (WriteConflict only: table, key hex, ts), "logLines"}`` and are raised
again on the follower as the same class of :mod:`reactive.errors` (an app's own exception
as an ``Exception`` of the same class name), so clients see what they would see from the
writer.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from reactive import _core
from reactive import errors as errors_module
from reactive.errors import ConvexError, ReactiveError, WriteConflict

__all__ = [
    "CLOCK_SKEW_S",
    "HEADER",
    "MIN_KEY_BYTES",
    "REPLY_HEADER",
    "NonceCache",
    "check_key",
    "decode_error",
    "encode_error",
    "sign_reply",
    "sign_request",
    "verify_reply",
    "verify_request",
]

HEADER = "Reactive-Cluster"
"""The request header that authenticates a cluster request."""

REPLY_HEADER = "Reactive-Cluster-Reply"
"""The response header that authenticates the answer."""

CLOCK_SKEW_S = 30.0
"""A request's time may differ from the receiver's clock by at most this (seconds)."""

MIN_KEY_BYTES = 16
"""The shortest cluster key accepted (bytes of UTF-8)."""


def check_key(key: str) -> bytes:
    """The cluster key as bytes.

    Raises:
        ValueError: shorter than :data:`MIN_KEY_BYTES` bytes.
    """
    raw = key.encode()
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(
            f"the cluster key must be at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex "
            f"32`), not {len(raw)}"
        )
    return raw


def _mac(key: bytes, *parts: bytes) -> str:
    return hmac.new(key, b"|".join(parts), hashlib.sha256).hexdigest()


def sign_request(key: bytes, method: str, path: str, body: bytes) -> tuple[str, str]:
    """The ``Reactive-Cluster`` header value for a request, and its nonce."""
    now = str(int(time.time()))
    nonce = secrets.token_hex(16)
    mac = _mac(
        key,
        b"reactive-cluster-v1",
        method.encode(),
        path.encode(),
        now.encode(),
        nonce.encode(),
        hashlib.sha256(body).digest(),
    )
    return f"v1 {now} {nonce} {mac}", nonce


class NonceCache:
    """Nonces seen in the last ``2 * CLOCK_SKEW_S`` seconds (replays are refused).

    A queue in arrival order beside a set, so expired nonces leave from the front in
    constant time per request (a sweep of the whole cache on every request past 10,000
    entries had cost about 0.8 ms each, capping a leader near 1,300 forwarded
    requests/s). At most ``max_entries`` (500,000: 8,000 requests/s for the whole window);
    past that the oldest leave early.
    """

    def __init__(self, max_entries: int = 500_000) -> None:
        self._order: collections.deque[tuple[float, str]] = collections.deque()
        self._seen: set[str] = set()
        self._max = max_entries

    def add(self, nonce: str, now: float) -> bool:
        """Record ``nonce`` (seen at ``now``, epoch seconds); whether it is new."""
        order, seen = self._order, self._seen
        cutoff = now - 2 * CLOCK_SKEW_S
        while order and (order[0][0] < cutoff or len(order) >= self._max):
            seen.discard(order.popleft()[1])
        if nonce in seen:
            return False
        seen.add(nonce)
        order.append((now, nonce))
        return True


def verify_request(
    key: bytes, header: str | None, method: str, path: str, body: bytes, nonces: NonceCache
) -> str | None:
    """Check a request's ``Reactive-Cluster`` header; returns its nonce, or ``None``.

    ``None`` when the header is missing or malformed, the HMAC is wrong, the time is
    further than :data:`CLOCK_SKEW_S` from this clock, or the nonce was seen before.
    """
    if not header:
        return None
    parts = header.split(" ")
    if len(parts) != 4 or parts[0] != "v1":
        return None
    _, stamp, nonce, mac = parts
    try:
        sent = int(stamp)
    except ValueError:
        return None
    now = time.time()
    if abs(now - sent) > CLOCK_SKEW_S or not 8 <= len(nonce) <= 64:
        return None
    expected = _mac(
        key,
        b"reactive-cluster-v1",
        method.encode(),
        path.encode(),
        stamp.encode(),
        nonce.encode(),
        hashlib.sha256(body).digest(),
    )
    if not hmac.compare_digest(expected, mac):
        return None
    if not nonces.add(nonce, now):
        return None
    return nonce


def sign_reply(key: bytes, nonce: str, body: bytes) -> str:
    """The ``Reactive-Cluster-Reply`` header value of an answer to request ``nonce``."""
    return _mac(key, b"reactive-cluster-reply-v1", nonce.encode(), hashlib.sha256(body).digest())


def verify_reply(key: bytes, nonce: str, header: str | None, body: bytes) -> bool:
    """Whether an answer to request ``nonce`` comes from a holder of the key."""
    return bool(header) and hmac.compare_digest(sign_reply(key, nonce, body), header or "")


def encode_error(exc: BaseException) -> dict[str, Any]:
    """An exception as it crosses to the follower (see the module docstring)."""
    out: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc),
        "logLines": list(getattr(exc, "log_lines", None) or ()),
    }
    if isinstance(exc, WriteConflict):
        out["conflict"] = [exc.table, exc.key, exc.ts]
    if isinstance(exc, ConvexError):
        try:
            out["data"] = _core.convex_json(exc.data, result=True)
        except ReactiveError:
            out["data"] = _core.convex_json(str(exc.data))
    return out


_APP_ERRORS: dict[str, type[Exception]] = {}


def decode_error(payload: dict[str, Any]) -> Exception:
    """The exception :func:`encode_error` described, to raise again here."""
    name = str(payload.get("type", "Exception"))
    message = str(payload.get("message", ""))
    exc: Exception
    cls = getattr(errors_module, name, None)
    if name == "ConvexError":
        data = payload.get("data")
        exc = ConvexError(_core.from_convex_json(json.loads(data)) if data is not None else None)
    elif name == "WriteConflict":
        table, key, ts = [*(payload.get("conflict") or []), "", "", 0][:3]
        exc = WriteConflict(message, str(table), str(key), int(ts or 0))
    elif isinstance(cls, type) and issubclass(cls, ReactiveError):
        # Without running a subclass's own __init__ (its arguments differ): the message is
        # what clients see.
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
    else:
        # The app's own exception: an Exception of the same class name (the name is what
        # a client is shown, in development mode).
        if not name.isidentifier():
            name = "Exception"
        app_cls = _APP_ERRORS.get(name)
        if app_cls is None:
            app_cls = type(name, (Exception,), {"__module__": "reactive.cluster.remote"})
            _APP_ERRORS[name] = app_cls
        exc = app_cls(message)
    exc.log_lines = list(payload.get("logLines") or [])  # type: ignore[attr-defined]
    return exc

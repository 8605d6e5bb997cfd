"""Messages of the Convex sync protocol: parsing what clients send, writing what servers send.

Source: the Convex sync protocol's messages. Client messages are JSON objects
tagged by ``"type"``: ``Connect``, ``ModifyQuerySet``, ``Mutation``, ``Action``,
``Authenticate``, ``Event``. Parsing is strict about what the protocol needs (types of
required fields) and ignores unknown fields. Timestamps travel as the standard base64 (with
padding) of their 8 little-endian bytes.

Errors: :class:`ProtocolError` for a message that cannot be understood; its text goes to
the client in a ``FatalError``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "PARSE_OFF_LOOP_BYTES",
    "Action",
    "Add",
    "Authenticate",
    "ClientMessage",
    "Connect",
    "Event",
    "ModifyQuerySet",
    "Mutation",
    "ProtocolError",
    "Remove",
    "decode_ts",
    "dumps",
    "encode_ts",
    "parse_client_message",
]

PARSE_OFF_LOOP_BYTES = 64 << 10
"""Frames and request bodies at least this large are parsed on a thread by the server, so
one big message never holds the event loop that serves every other client."""

MAX_U32: Final = 2**32 - 1


class ProtocolError(Exception):
    """A client message that breaks the protocol (sent back in a ``FatalError``)."""


def encode_ts(ts: int) -> str:
    """The wire form of a timestamp (u64 ns): base64 of its 8 little-endian bytes."""
    return base64.b64encode(struct.pack("<Q", ts)).decode("ascii")


def decode_ts(text: object, what: str = "timestamp") -> int:
    """Parse a wire timestamp.

    Raises:
        ProtocolError: not base64 of exactly 8 bytes.
    """
    if not isinstance(text, str):
        raise ProtocolError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{what} is not valid base64") from None
    if len(raw) != 8:
        raise ProtocolError(f"{what} must decode to 8 bytes")
    value: int = struct.unpack("<Q", raw)[0]
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    """Parse JSON text strictly (no NaN or Infinity literals)."""
    return json.loads(text, parse_constant=_reject_constant)


def dumps(obj: Any) -> str:
    """Compact JSON text."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _u32(msg: dict[str, Any], name: str) -> int:
    value = msg.get(name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_U32:
        raise ProtocolError(f"{msg.get('type')}.{name} must be an integer in [0, 2^32)")
    return value


def _count(value: Any) -> int:
    # Informational only (how many times the client connected): anything odd counts as 0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return max(0, min(int(value), MAX_U32))


def _str(msg: dict[str, Any], name: str) -> str:
    value = msg.get(name)
    if not isinstance(value, str):
        raise ProtocolError(f"{msg.get('type')}.{name} must be a string")
    return value


def _args(msg: dict[str, Any]) -> Any:
    args = msg.get("args")
    if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], dict):
        raise ProtocolError(
            f"{msg.get('type')}.args must be an array holding exactly one argument object"
        )
    return args[0]


@dataclass(frozen=True)
class Connect:
    """``Connect``: the first message on every socket."""

    session_id: str
    connection_count: int
    last_close_reason: str | None
    max_observed_timestamp: int | None
    client_ts: float | None


@dataclass(frozen=True)
class Add:
    """Add a query to the query set."""

    query_id: int
    udf_path: str
    args: Any
    journal: str | None


@dataclass(frozen=True)
class Remove:
    """Remove a query from the query set."""

    query_id: int


@dataclass(frozen=True)
class ModifyQuerySet:
    """``ModifyQuerySet``: change the query set from ``base_version`` to ``new_version``."""

    base_version: int
    new_version: int
    modifications: list[Add | Remove] = field(default_factory=list)


@dataclass(frozen=True)
class Mutation:
    """``Mutation``: run a mutation (args still in Convex JSON)."""

    request_id: int
    udf_path: str
    args: Any


@dataclass(frozen=True)
class Action:
    """``Action``: run an action (args still in Convex JSON)."""

    request_id: int
    udf_path: str
    args: Any


@dataclass(frozen=True)
class Authenticate:
    """``Authenticate``: set (``User``, ``Admin``) or clear (``None``) the identity."""

    base_version: int
    token_type: str
    value: str | None
    impersonating: dict[str, Any] | None = None  # an admin key acting as this identity


@dataclass(frozen=True)
class Event:
    """``Event``: client telemetry (ignored)."""

    event_type: str


ClientMessage = Connect | ModifyQuerySet | Mutation | Action | Authenticate | Event


def _parse_modification(m: Any) -> Add | Remove:
    if not isinstance(m, dict):
        raise ProtocolError("ModifyQuerySet.modifications must hold objects")
    kind = m.get("type")
    if kind == "Add":
        journal = m.get("journal")
        if journal is not None and not isinstance(journal, str):
            raise ProtocolError("Add.journal must be a string or null")
        component = m.get("componentPath")
        if component not in (None, ""):
            raise ProtocolError("Add.componentPath: components are not supported")
        args = _args({"type": "Add", "args": m.get("args")})
        return Add(_u32(m, "queryId"), _str(m, "udfPath"), args, journal)
    if kind == "Remove":
        return Remove(_u32(m, "queryId"))
    raise ProtocolError(f"unknown query set modification {kind!r:.40}")


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse one client frame.

    Raises:
        ProtocolError: not JSON, not an object, an unknown ``type``, or a field of the wrong
            type.
    """
    try:
        msg = loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"message is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = msg.get("type")
    if kind == "Connect":
        max_ts = msg.get("maxObservedTimestamp")
        reason = msg.get("lastCloseReason")
        client_ts = msg.get("clientTs")
        return Connect(
            session_id=_str(msg, "sessionId"),
            connection_count=_count(msg.get("connectionCount")),
            last_close_reason=reason if isinstance(reason, str) else None,
            max_observed_timestamp=None
            if max_ts is None
            else decode_ts(max_ts, "maxObservedTimestamp"),
            client_ts=float(client_ts)
            if isinstance(client_ts, (int, float)) and math.isfinite(client_ts)
            else None,
        )
    if kind == "ModifyQuerySet":
        mods = msg.get("modifications")
        if not isinstance(mods, list):
            raise ProtocolError("ModifyQuerySet.modifications must be an array")
        base, new = _u32(msg, "baseVersion"), _u32(msg, "newVersion")
        return ModifyQuerySet(base, new, [_parse_modification(m) for m in mods])
    if kind == "Mutation":
        return Mutation(_u32(msg, "requestId"), _str(msg, "udfPath"), _args(msg))
    if kind == "Action":
        return Action(_u32(msg, "requestId"), _str(msg, "udfPath"), _args(msg))
    if kind == "Authenticate":
        token_type = msg.get("tokenType")
        if token_type not in ("User", "Admin", "None"):
            raise ProtocolError("Authenticate.tokenType must be User, Admin or None")
        value = msg.get("value")
        if token_type != "None" and not isinstance(value, str):
            raise ProtocolError("Authenticate.value must be a string")
        impersonating = msg.get("impersonating")
        if impersonating is not None and not isinstance(impersonating, dict):
            raise ProtocolError("Authenticate.impersonating must be an object")
        return Authenticate(
            _u32(msg, "baseVersion"),
            token_type,
            value if isinstance(value, str) else None,
            impersonating if token_type == "Admin" else None,
        )
    if kind == "Event":
        event_type = msg.get("eventType")
        return Event(event_type if isinstance(event_type, str) else "")
    raise ProtocolError(f"unknown message type {kind!r:.60}")

"""Pagination cursors: opaque, authenticated positions in an index.

A cursor names "just after index key K of this query" or "the end" (spec §17). It is
``base64url(version ‖ kind ‖ key ‖ tag)`` where ``tag`` is the first 16 bytes of
HMAC-SHA256 over ``fingerprint ‖ version ‖ kind ‖ key`` with a per-database secret, and
``fingerprint`` identifies the query (table, index, range, order). A cursor from another
query, another database or edited by hand fails the tag check: ``InvalidCursorError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final

from reactive.errors import InvalidCursorError

__all__ = ["CursorCodec"]

_VERSION: Final = 1
_POSITION: Final = 0
_END: Final = 1
_TAG_BYTES: Final = 16


class _End:
    """The position after the last document."""

    def __repr__(self) -> str:
        return "CursorCodec.END"


class CursorCodec:
    """Encodes and checks cursors with one database's secret (32 random bytes)."""

    END: Final = _End()

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _tag(self, fingerprint: bytes, body: bytes) -> bytes:
        return hmac.new(self._secret, fingerprint + body, hashlib.sha256).digest()[:_TAG_BYTES]

    def encode(self, position: bytes | _End, fingerprint: bytes) -> str:
        """The cursor for ``position`` (an index key, or ``END``) in the query."""
        if isinstance(position, _End):
            body = bytes([_VERSION, _END])
        else:
            body = bytes([_VERSION, _POSITION]) + position
        raw = body + self._tag(fingerprint, body)
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def decode(self, cursor: object, fingerprint: bytes) -> bytes | _End | None:
        """The position of a cursor; ``None`` (the start) for ``None``.

        Raises:
            InvalidCursorError: not a cursor issued for this query by this database.
        """
        if cursor is None:
            return None
        if not isinstance(cursor, str) or len(cursor) > 8192:
            raise InvalidCursorError("the pagination cursor must be a string from continueCursor")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursorError("the pagination cursor is not valid") from exc
        if len(raw) < 2 + _TAG_BYTES or raw[0] != _VERSION:
            raise InvalidCursorError("the pagination cursor is not valid")
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(fingerprint, body)):
            raise InvalidCursorError(
                "the pagination cursor was not issued for this query (a different table, "
                "index, range or order) or was altered"
            )
        if body[1] == _END:
            return CursorCodec.END
        return body[2:]

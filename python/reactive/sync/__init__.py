"""The Convex sync protocol, sans I/O: messages and the per-socket state machine.

Nothing here imports asyncio or touches sockets; ``reactive.server`` and
``reactive.client`` do the I/O.
"""

from reactive.sync.messages import ProtocolError, decode_ts, encode_ts, parse_client_message
from reactive.sync.session import (
    AuthFailure,
    Close,
    ComputeTransition,
    QueryResult,
    QuerySpec,
    RunAction,
    RunMutation,
    Send,
    SyncSession,
)

__all__ = [
    "AuthFailure",
    "Close",
    "ComputeTransition",
    "ProtocolError",
    "QueryResult",
    "QuerySpec",
    "RunAction",
    "RunMutation",
    "Send",
    "SyncSession",
    "decode_ts",
    "encode_ts",
    "parse_client_message",
]

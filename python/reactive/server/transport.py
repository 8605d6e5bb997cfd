"""Connection hygiene for uvicorn: header and body time-outs, a cap on open connections.

uvicorn on its own keeps a TCP connection that never sends a request open forever, waits
forever for a body shorter than its ``Content-Length``, and accepts connections until the
process runs out of file descriptors (and then ``/health`` fails too).
:func:`http_protocol` builds, from a :class:`~reactive.server.app.ServerConfig`, a subclass
of uvicorn's httptools protocol that

* closes a connection whose request headers are not complete ``header_timeout_s`` after it
  opened, or after the previous response (the keep-alive idle time is the same clock: an
  absolute deadline, so sending one byte at a time does not extend it);
* answers 408 and closes when a request body sends nothing for ``body_timeout_s`` (time the
  server itself stopped reading, for flow control or before ``100 Continue``, is not
  counted);
* refuses a connection past ``max_connections`` open ones (HTTP and WebSocket: uvicorn's
  ``server_state.connections``) with an immediate 503 ``{"code": "TooManyConnections",
  "message": "too many open connections (N)…"}``, then closes it.

:func:`send_response` sends a whole response (head and body) in one write to the socket,
where uvicorn makes two.

A WebSocket starts as an HTTP request, so the header deadline covers its upgrade request;
once upgraded, uvicorn's WebSocket protocol and its ping/pong govern it.

:func:`raise_fd_limit` raises ``RLIMIT_NOFILE``'s soft limit to the hard limit at start-up
and warns when ``max_connections`` does not fit under it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from asyncio import TimerHandle
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

if TYPE_CHECKING:
    from reactive.server.app import ServerConfig

__all__ = [
    "FD_RESERVE",
    "LINGER_S",
    "HygienicHttpProtocol",
    "WebSocketProtocol",
    "http_protocol",
    "raise_fd_limit",
    "send_response",
]

log = logging.getLogger("reactive.server")

#: Descriptors kept free for what is not a client connection (database files, listening
#: socket, logs, database server connections, refused connections lingering to close).
FD_RESERVE = 128

#: Longest a refused connection stays open to let its 503 reach the client.
_REFUSE_LINGER_S = 1.0
#: Least interval between two "refused" log lines (a flood must not flood the log).
_REFUSE_LOG_EVERY_S = 10.0


class _Refusals:
    """Counts refused connections and logs them at most every ``_REFUSE_LOG_EVERY_S``."""

    count = 0
    last_logged = 0.0

    @classmethod
    def note(cls, limit: int) -> None:
        cls.count += 1
        now = time.monotonic()
        if now - cls.last_logged >= _REFUSE_LOG_EVERY_S:
            log.warning(
                "refused %d connection(s): %d open connections is the limit (--max-connections)",
                cls.count,
                limit,
            )
            cls.count = 0
            cls.last_logged = now


def _raw_response(
    status: int, code: str, message: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A complete ``Connection: close`` JSON response, written without the ASGI app."""
    body = json.dumps({"code": code, "message": message}).encode()
    out = [STATUS_LINE[status]]
    for name, value in default_headers:
        out += [name, b": ", value, b"\r\n"]
    out += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"connection: close\r\n",
    ]
    if status == 503:
        out.append(b"retry-after: 1\r\n")
    out += [b"\r\n", body]
    return b"".join(out)


class HygienicHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body deadlines and a connection cap.

    Hooks: ``connection_made`` (the cap; arm the header deadline), ``data_received`` (a
    refused connection's input is dropped), ``on_headers_complete`` (disarm the header
    deadline, arm the body one when a body follows), ``on_body`` (body progress),
    ``on_message_complete`` (disarm the body deadline), ``on_response_complete`` (uvicorn's
    keep-alive timer is replaced by the header deadline), ``handle_websocket_upgrade`` and
    ``connection_lost`` (disarm everything). Configure with :func:`http_protocol`.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections: int = 4096

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's keep-alive idle time is the header deadline (see on_response_complete).
        self.timeout_keep_alive = self.header_timeout_s  # type: ignore[assignment]
        # Each deadline is one timer that stays armed across requests: arming moves the
        # deadline (a float), disarming clears it, and the timer, when it fires, re-arms
        # itself for what is left (two timers created and cancelled per request cost more
        # than the rest of this class).
        self._header_timer: TimerHandle | None = None
        self._header_deadline: float | None = None
        self._body_timer: TimerHandle | None = None
        self._body_active = False
        self._body_seen = 0.0
        self._refused = False
        self._linger: TimerHandle | None = None

    # -- the connection cap ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse past ``max_connections``; else serve and arm the header deadline."""
        if len(self.connections) >= self.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        self.transport = transport
        _Refusals.note(self.max_connections)
        transport.write(
            _raw_response(
                503,
                "TooManyConnections",
                f"too many open connections ({self.max_connections}); try again later",
                self.server_state.default_headers,
            )
        )
        # Half-close and keep reading (and dropping) what the client sends for a moment: a
        # close with unread input would reset the connection, and the client could lose the
        # 503 before reading it.
        if transport.can_write_eof():
            transport.write_eof()
            self._linger = self.loop.call_later(_REFUSE_LINGER_S, transport.close)
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        """Parse the input (dropped on a refused connection)."""
        if self._refused:
            return
        super().data_received(data)

    def eof_received(self) -> None:
        """The client half-closed: close (a refused connection has nothing more to say)."""
        if self._refused:
            self.transport.close()
            return
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Disarm every timer."""
        self._cancel_timers()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    # -- the header deadline --------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._header_deadline = self.loop.time() + self.header_timeout_s
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        deadline = self._header_deadline
        if deadline is None:
            return  # disarmed meanwhile (headers came); the next arm starts a timer
        left = deadline - self.loop.time()
        if left > 0:
            self._header_timer = self.loop.call_later(left, self._header_timeout)
            return
        if not self.transport.is_closing():
            self.transport.close()

    def on_headers_complete(self) -> None:
        """Disarm the header deadline; arm the body deadline when a body follows."""
        self._header_deadline = None
        super().on_headers_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        if self._expects_body():
            self._body_seen = self.loop.time()
            self._body_active = True
            if self._body_timer is None:
                self._arm_body_timer(self.body_timeout_s)

    def on_response_complete(self) -> None:
        """Idle again: arm the header deadline (in place of uvicorn's keep-alive timer)."""
        super().on_response_complete()
        # uvicorn armed its keep-alive timer when nothing is pipelined: use the header
        # deadline instead (the same time-out, but bytes that do not complete a request's
        # headers do not extend it).
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
            self._arm_header_timer()

    def handle_websocket_upgrade(self) -> None:
        """Hand the transport to the WebSocket protocol, disarming every timer first."""
        self._cancel_timers()
        super().handle_websocket_upgrade()

    # -- the body deadline ----------------------------------------------------------------

    def _expects_body(self) -> bool:
        for name, value in self.headers:
            if name == b"transfer-encoding" or (
                name == b"content-length" and value.strip() not in (b"0", b"")
            ):
                return True
        return False

    def _arm_body_timer(self, delay: float) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_later(delay, self._body_timeout)

    def on_body(self, body: bytes) -> None:
        """Body progress: the body deadline restarts."""
        self._body_seen = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The whole body arrived: disarm the body deadline."""
        self._body_active = False
        super().on_message_complete()

    def _body_timeout(self) -> None:
        self._body_timer = None
        if not self._body_active:
            return  # the body arrived meanwhile; the next one starts a timer
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        now = self.loop.time()
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # The server is not reading (flow control, a pipelined request waiting its turn,
            # or the app has not asked for the body yet): not the client's delay.
            self._body_seen = now
        idle = now - self._body_seen
        if idle < self.body_timeout_s:
            self._arm_body_timer(self.body_timeout_s - idle)
            return
        if cycle is not None and not cycle.response_started:
            transport.write(
                _raw_response(
                    408,
                    "RequestTimeout",
                    f"the request body sent nothing for {self.body_timeout_s:g} s",
                    self.server_state.default_headers,
                )
            )
            # The app's receive() answers http.disconnect; whatever it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
        self._header_deadline = None
        self._body_active = False


def http_protocol(config: ServerConfig) -> type[HygienicHttpProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with ``config``'s limits."""
    return type(
        "ReactiveHttpProtocol",
        (HygienicHttpProtocol,),
        {
            "header_timeout_s": float(config.header_timeout_s),
            "body_timeout_s": float(config.body_timeout_s),
            "max_connections": int(config.max_connections),
        },
    )


def raise_fd_limit(max_connections: int) -> int | None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; warn if connections do not fit.

    Returns the soft limit now in force (``None`` where there is no such limit).
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_RESERVE
    targets = [hard] if hard != resource.RLIM_INFINITY else []
    targets += [max(wanted, 65536), wanted]  # where the hard limit is refused (macOS)
    for target in targets:
        if target == resource.RLIM_INFINITY or target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        soft = target
        break
    if soft != resource.RLIM_INFINITY and wanted > soft:
        log.warning(
            "--max-connections %d does not fit the open-file limit %d (%d kept for the "
            "database and logs): past %d connections accepts fail; raise `ulimit -n` "
            "or lower --max-connections",
            max_connections,
            soft,
            FD_RESERVE,
            max(soft - FD_RESERVE, 0),
        )
    return int(soft)


_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")

LINGER_S = 2.0
"""How long a failed WebSocket connection keeps reading (and discarding) before it closes."""


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, with its transport and itself visible to the app.

    The sync connection watches the transport's write buffer
    (``scope["reactive.transport"]``): a client that leaves it full for
    ``send_timeout_s`` is cut off with ``transport.abort()`` — a graceful close would
    wait behind the unsent bytes that such a client never reads.

    It also writes fan-out transitions through :meth:`write_text` (``scope
    ["reactive.protocol"]``): one synchronous call per socket, where the ASGI send path
    costs a task wake-up and three layers of ``await`` per frame.
    """

    _lingering = False
    _write_paused = False
    # The peer's close frame arrived, or the connection is gone (see can_write).
    _peer_gone = False
    # No extension was negotiated (known once the handshake is done; see write_text).
    _plain: bool | None = None

    def handle_connect(self, event: Any) -> None:
        """As uvicorn's, and put the transport and protocol in the scope."""
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and self.transport is not None:
            scope["reactive.transport"] = self.transport
            scope["reactive.protocol"] = self

    def can_write(self) -> bool:
        """True when :meth:`write_text` can write a frame now.

        The app accepted the socket, no close was sent or received, and the transport's
        write buffer is under its high-water mark (else the caller takes the ASGI send,
        which waits for the client to read).
        """
        return (
            not self._write_paused
            and not self.close_sent
            and not self._peer_gone
            and self.handshake_complete
            and self.initial_response is None
        )

    # can_write is read for every socket of a fan-out, so it reads flags of this object
    # only, not websockets' state (a property of another object) or the transport's
    # is_closing(). The connection leaves the OPEN state, and uvicorn closes the
    # transport, only where one of them is set: a close frame sent or a protocol error
    # (uvicorn sets close_sent; so does handle_parser_exception below), the peer's close
    # frame (handle_close), the connection lost, the server shutting down (shutdown), and
    # the app returning (the sync connection is closed by then: it stops calling). A
    # transport that a failed write closed is lost one loop pass later; a write meanwhile
    # is dropped by the transport.

    def handle_close(self, event: Any) -> None:
        """The peer's close frame arrived (as uvicorn's, and remembered)."""
        self._peer_gone = True
        super().handle_close(event)

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone (as uvicorn's, and remembered)."""
        self._peer_gone = True
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The server is stopping: uvicorn sends 1012 and closes (remembered)."""
        self._peer_gone = True
        super().shutdown()

    def pause_writing(self) -> None:
        """The write buffer passed its high-water mark (as uvicorn's, and remembered)."""
        self._write_paused = True
        super().pause_writing()

    def resume_writing(self) -> None:
        """The write buffer drained below its low-water mark."""
        self._write_paused = False
        super().resume_writing()

    def write_text(self, text: str, frames: dict[str, bytes]) -> None:
        """Write one text frame now (call only when :meth:`can_write` is true).

        Without negotiated extensions the frame is built here (RFC 6455 §5.2: FIN + text
        opcode, the payload length in 7, 16 or 64 bits, no mask from a server), saving
        ``websockets``' frame objects, and ``frames`` (a memo shared by the sockets of one
        fan-out) keeps it for the next socket sending the same text; with
        ``permessage-deflate`` the connection compresses and frames it (per socket: the
        compressor's state is the connection's).
        """
        plain = self._plain
        if plain is None:
            # Extensions are negotiated in the handshake, which is done (can_write).
            plain = self._plain = not self.conn.extensions
        if not plain:
            self.conn.send_text(text.encode())
            self.transport.write(b"".join(self.conn.data_to_send()))
            return
        frame = frames.get(text)
        if frame is None:
            frame = frames[text] = _text_frame(text)
        self.transport.write(frame)

    def handle_parser_exception(self) -> None:
        """Fail the connection (a frame over the size limit, a protocol error) gracefully.

        uvicorn writes the close frame and closes the socket at once. The client is often
        still sending the frame that failed: the kernel then answers the unread bytes with
        a reset, which can destroy the close frame before the client reads it (the client
        sees 1006, not 1009). Instead, half-close after the close frame and read and
        discard what still comes (a "lingering close", as web servers do) until the client
        closes, or :data:`LINGER_S` passes.
        """
        assert self.conn.close_sent is not None
        code, reason = self.conn.close_sent.code, self.conn.close_sent.reason
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self._lingering = True
        # uvicorn's close timer: while it is set, the end of the app does not close the
        # socket, and losing the connection cancels it.
        self.close_timer = self.loop.call_later(LINGER_S, self.transport.close)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        """As uvicorn's, but discard data while lingering after a failed connection."""
        if self._lingering:
            return
        super().data_received(data)

    def eof_received(self) -> None:
        """The client closed its side: a lingering close ends here."""
        if self._lingering:
            self.transport.close()


def _text_frame(text: str) -> bytes:
    """An unmasked, unfragmented text frame holding ``text`` (RFC 6455 §5.2)."""
    data = text.encode()
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 65536:
        return _HEADER_16.pack(0x81, 126, size) + data
    return _HEADER_64.pack(0x81, 127, size) + data


class _HeldWrites:
    """Stands in for a response cycle's transport while it sends one whole response.

    Collects the cycle's writes and writes them as one (:meth:`release`); anything else
    is the transport's. A ``close`` (uvicorn closes after the last body of a connection
    that is not kept alive) writes what is held first.
    """

    __slots__ = ("chunks", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def close(self) -> None:
        self.release()
        self.transport.close()

    def release(self) -> None:
        """Write what is held, in one write (dropped if the connection is closing)."""
        chunks = self.chunks
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            if not self.transport.is_closing():
                self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def send_response(send: Any, start: dict[str, Any], body: dict[str, Any]) -> None:
    """``await send(start)``, then ``await send(body)`` (the last body), as one write.

    uvicorn's httptools cycle writes the status line and headers, then the body: two
    writes to the socket, so two system calls and, on the other side, often two wake-ups
    and reads for one small response. When ``send`` is that cycle's (the app was not
    wrapped by middleware that replaces it), its transport is held in between and the
    two are written together; otherwise (another server, a wrapped ``send``) this is
    just the two sends. Messages, errors and ordering are those of the two sends.
    """
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not RequestResponseCycle:
        await send(start)
        await send(body)
        return
    transport = cycle.transport
    held = _HeldWrites(transport)
    cycle.transport = held  # type: ignore[assignment]
    try:
        await send(start)
        await send(body)
    finally:
        cycle.transport = transport
        held.release()

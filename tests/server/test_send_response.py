"""``send_response``: a function route's head and body reach the socket in one write.

uvicorn's httptools cycle writes a response's status line and headers, then its body: two
writes (two system calls, and often two wake-ups and reads at the client). These drive a
real uvicorn ``RequestResponseCycle`` over a transport that records its writes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from reactive.server.transport import send_response

START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-length", b"11"), (b"content-type", b"application/json")],
}
BODY = {"type": "http.response.body", "body": b'{"ok":true}'}


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def cycle_on(transport: RecordingTransport, keep_alive: bool = True) -> RequestResponseCycle:
    done: list[bool] = []
    scope: Any = {"type": "http", "method": "POST", "path": "/api/query", "headers": []}
    cycle = RequestResponseCycle(
        scope=scope,
        transport=transport,
        flow=FlowControl(transport),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[(b"server", b"test")],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: done.append(True),
    )
    cycle.done = done  # type: ignore[attr-defined]
    return cycle


async def test_head_and_body_are_one_write() -> None:
    transport = RecordingTransport()
    cycle = cycle_on(transport)
    await send_response(cycle.send, START, BODY)
    assert len(transport.writes) == 1
    data = transport.writes[0]
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b'\r\n\r\n{"ok":true}')
    assert b"content-length: 11\r\n" in data
    # The cycle is complete and its own transport again; the connection stays open.
    assert cycle.response_complete and cycle.done  # type: ignore[attr-defined]
    assert cycle.transport is transport and not transport.closed


async def test_the_same_bytes_as_two_sends() -> None:
    one, two = RecordingTransport(), RecordingTransport()
    await send_response(cycle_on(one).send, START, BODY)
    plain = cycle_on(two)
    await plain.send(START)
    await plain.send(BODY)
    assert len(two.writes) == 2
    assert one.writes == [b"".join(two.writes)]


async def test_a_closing_connection_gets_the_response_before_the_close() -> None:
    transport = RecordingTransport()
    await send_response(cycle_on(transport, keep_alive=False).send, START, BODY)
    assert transport.closed
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b'{"ok":true}')
    assert b"connection: close\r\n" in transport.writes[0]


async def test_a_wrapped_send_gets_the_two_messages() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await send_response(send, START, BODY)
    assert sent == [START, BODY]


async def test_an_error_in_the_body_send_still_writes_the_head_and_restores() -> None:
    transport = RecordingTransport()
    cycle = cycle_on(transport)
    bad = {"type": "http.response.body", "body": b"longer than eleven bytes"}
    try:
        await send_response(cycle.send, START, bad)
    except RuntimeError as exc:
        assert "longer than Content-Length" in str(exc)
    else:
        raise AssertionError("uvicorn accepted a body longer than its Content-Length")
    assert cycle.transport is transport
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200")

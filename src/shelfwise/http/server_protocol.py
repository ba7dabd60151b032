"""The HTTP/1.1 connection protocol `shelfwise serve` runs: uvicorn's httptools protocol
with a header deadline, a header size limit and problem+json parser errors.

uvicorn + httptools has no timeout between a connection's first byte and the end of
its request headers: a client that opens connections and sends a header line now and
then (slowloris) holds each one, and the process's connection cap, forever. Each
connection here gets a timer when a request begins (at connect, and again at every
keep-alive request); when the headers are not complete in `server_header_timeout_seconds`
the server answers `408` and closes. The timer is a `call_later` handle on the loop, so
ten thousand idle connections cost ten thousand timer entries, not tasks.

The parser's own refusals (an invalid request line, a NUL in a header) were plain text;
they are problem+json now, like every other error, and headers over
`server_max_header_bytes` (request line included) are `431` (RFC 6585). See
docs/decisions/0031-header-timeout-in-the-protocol.md.

A response with a `Content-Length` leaves in one transport write, head and body together
(`HeadWithBody`): uvicorn writes the head at `http.response.start` and the body at the
next message, two `send` system calls, each waking the client. An order's response paid
both; streamed responses (chunked) still send their head at once (decision 0043).

Every request's scope also carries a `BodyWriter` (`scope["extensions"][BODY_WRITER]`):
the live hub writes a flush's frames through it straight to an event stream's
connection, from the flush itself, without waking the stream's task and passing the
chunk down the ASGI `send` chain (live/streaming.py, decision 0038).
"""

from __future__ import annotations

import asyncio
import json
from functools import cache
from http import HTTPStatus
from typing import Any, cast

import structlog
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from shelfwise.http.problems import PROBLEM_MEDIA_TYPE
from shelfwise.observability.metrics import HTTP_PARSER_REFUSALS

log = structlog.get_logger("shelfwise.server")
BODY_WRITER = "shelfwise.body_writer"


@cache
def _limits() -> tuple[float, int]:
    # Read once per process: the class is named in uvicorn's config, and every worker
    # process imports it afresh, so the settings come from the same environment.
    from shelfwise.config import load_settings

    settings = load_settings()
    return settings.server_header_timeout_seconds, settings.server_max_header_bytes


class HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing; httptools turns it into a parser
    error, which uvicorn answers through `send_400_response`."""


def problem_bytes(status: int, code: str, detail: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection: the parser's state is
    unknown after an error, so nothing more is read from it."""
    phrase = HTTPStatus(status).phrase
    body = json.dumps(
        {
            "type": f"urn:shelfwise:problem:{code}",
            "title": phrase,
            "status": status,
            "detail": detail,
            "code": code,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE}\r\n"
        f"content-length: {len(body)}\r\n"
        "x-content-type-options: nosniff\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BodyWriter:
    """Writes chunks of one response's body to its connection at once, synchronously —
    or refuses (False), and the caller goes the ordinary way (the ASGI `send`, which
    waits for a full write buffer to drain): while the connection's writes are paused
    (its client reads too slowly), when it is gone, and unless the response is streamed
    in HTTP/1.1 chunks (its headers sent, no Content-Length). The caller must not
    write through both at once: its own `send` must have nothing taken and unwritten."""

    __slots__ = ("_cycle", "_flow", "_transport", "written")

    def __init__(
        self, cycle: RequestResponseCycle, flow: FlowControl, transport: asyncio.Transport
    ) -> None:
        self._cycle = cycle
        self._flow = flow
        self._transport = transport
        self.written = 0  # body bytes, for the access log

    @staticmethod
    def chunk(body: bytes) -> bytes:
        """`body` framed as one chunk of the chunked transfer coding (once, for every
        connection it goes to)."""
        return b"%x\r\n%b\r\n" % (len(body), body)

    def write(self, chunk: bytes, size: int) -> bool:
        """Write `chunk` (`BodyWriter.chunk` of a body of `size` bytes), or refuse."""
        cycle = self._cycle
        if (
            self._flow.write_paused
            or cycle.disconnected
            or not cycle.chunked_encoding
            or cycle.response_complete
        ):
            return False
        self._transport.write(chunk)
        self.written += size
        return True


class HeadWithBody:
    """A response cycle's transport that holds the head of a response with a
    `Content-Length` and writes it with the body's first write (one system call, one
    wake-up of the client instead of two). Everything else passes straight through: a
    `100 Continue` (written before the response starts), the head of a chunked response
    (a stream must see its headers at once) and of a `HEAD` response (no body follows).
    If the response never gets a body message, uvicorn closes the connection anyway."""

    __slots__ = ("_cycle", "_head", "_transport", "_wrote_head")

    def __init__(self, cycle: RequestResponseCycle, transport: asyncio.Transport) -> None:
        self._cycle = cycle
        self._transport = transport
        self._head: bytes | None = None
        self._wrote_head = False

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
            return
        cycle = self._cycle
        if not self._wrote_head and cycle.response_started:
            # uvicorn's first write once the response has started is its head.
            self._wrote_head = True
            if cycle.chunked_encoding is False and cycle.scope["method"] != "HEAD":
                self._head = data
                return
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ShelfwiseHttpToolsProtocol(HttpToolsProtocol):
    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._header_timer is None:
            self._arm_header_timer()  # the next request on a kept-alive connection

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # (not an upgrade)
            cycle.transport = HeadWithBody(cycle, self.transport)  # type: ignore[assignment]
            scope = cast("dict[str, Any]", self.scope)
            scope.setdefault("extensions", {})[BODY_WRITER] = BodyWriter(
                cycle, self.flow, self.transport
            )

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a parser error (invalid request line, NUL in a header, or
        # our own stop when the headers grew too large).
        if self._header_bytes > _limits()[1]:
            self._refuse(431, "headers_too_large", "The request headers are too large")
        else:
            self._refuse(400, "malformed_request", msg)

    # -- internals -------------------------------------------------------------------------

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > _limits()[1]:
            raise HeadersTooLarge

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(_limits()[0], self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served; its own deadlines apply
        self._refuse(408, "header_timeout", "The request headers did not arrive in time")

    def _refuse(self, status: int, code: str, detail: str) -> None:
        self._disarm_header_timer()
        HTTP_PARSER_REFUSALS.labels(code).inc()
        log.info("connection_refused", status=status, code=code, client=self.client)
        if not self.transport.is_closing():
            self.transport.write(problem_bytes(status, code, detail))
            self.transport.close()

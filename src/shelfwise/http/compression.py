"""gzip for responses over the threshold, as Starlette's `GZipMiddleware`, at less cost
for the many responses it leaves alone.

Starlette's layer, on every request, parses the request headers into a `Headers`, builds a
responder object (normalising its list of excluded media types again), holds back the
response's start until the first body chunk and parses the response headers into
another `Headers` — also for the answers it then passes through unchanged: a small JSON
body, an event stream, a 304. Here one pass over the response's start decides: a response
that declares a length under the threshold, has an encoding, is partial (206) or of an
excluded type goes through untouched (what Starlette would send, minus the work); any
other is handed to Starlette's own responder — gzip for a client that accepts it, else
the identity responder that adds `Vary: Accept-Encoding` — so what gets compressed, and
how, is Starlette's.
"""

from __future__ import annotations

from starlette.middleware.gzip import (
    DEFAULT_EXCLUDED_CONTENT_TYPES,
    GZipResponder,
    IdentityResponder,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ACCEPT_ENCODING = b"accept-encoding"
_CONTENT_ENCODING = b"content-encoding"
_CONTENT_LENGTH = b"content-length"
_CONTENT_TYPE = b"content-type"


def _accepts_gzip(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == _ACCEPT_ENCODING:
            return b"gzip" in value  # Starlette's test: "gzip" anywhere in the header
    return False


class CompressionMiddleware:
    def __init__(self, app: ASGIApp, *, minimum_size: int, compresslevel: int = 9) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.compresslevel = compresslevel
        self.excluded = frozenset(
            t.partition(";")[0].strip() for t in DEFAULT_EXCLUDED_CONTENT_TYPES
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _Negotiation(self, send, _accepts_gzip(scope)).send)

    def leaves_alone(self, start: Message) -> bool:
        """Whether a response with this start goes out as it is, whatever its body."""
        if start["status"] == 206:
            return True
        media_type = ""
        for name, value in start.get("headers", ()):
            lowered = name.lower()
            if lowered == _CONTENT_ENCODING:
                return True
            if lowered == _CONTENT_LENGTH and value.isdigit() and int(value) < self.minimum_size:
                return True
            if lowered == _CONTENT_TYPE:
                media_type = value.decode("latin-1").partition(";")[0].strip().lower()
        if media_type in self.excluded or f"{media_type.partition('/')[0]}/*" in self.excluded:
            return True
        return media_type.startswith("application/grpc+")  # Starlette excludes these too

    def responder(self, gzip: bool, send: Send) -> IdentityResponder:
        responder = (
            GZipResponder(self.app, self.minimum_size, compresslevel=self.compresslevel)
            if gzip
            else IdentityResponder(self.app, self.minimum_size)
        )
        responder.send = send
        return responder


class _Negotiation:
    """One response's way through the layer: straight out, or through Starlette's
    responder once its start showed it may need one."""

    __slots__ = ("_gzip", "_layer", "_responder", "_send")

    def __init__(self, layer: CompressionMiddleware, send: Send, gzip: bool) -> None:
        self._layer = layer
        self._send = send
        self._gzip = gzip
        self._responder: IdentityResponder | None = None

    async def send(self, message: Message) -> None:
        if self._responder is not None:
            await self._responder.send_with_compression(message)
        elif message["type"] != "http.response.start" or self._layer.leaves_alone(message):
            await self._send(message)
        else:
            self._responder = self._layer.responder(self._gzip, self._send)
            await self._responder.send_with_compression(message)

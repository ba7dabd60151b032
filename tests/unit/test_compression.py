"""The compression layer (`http/compression.py`) answers what Starlette's `GZipMiddleware`
answers — the same status, headers and bytes — for every kind of response it meets: small
and large, streamed, already encoded, partial, excluded types; with and without
`Accept-Encoding: gzip`."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from shelfwise.http.compression import CompressionMiddleware

MINIMUM = 1024
SMALL = b'{"id": 1}'
LARGE = b'{"data": "' + b"mug " * 600 + b'"}'


def respond(
    content_type: bytes,
    chunks: list[bytes],
    *,
    status: int = 200,
    length: bool = True,
    **extra: bytes,
) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", content_type)]
        if length:
            headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
        headers += [(name.replace("_", "-").encode(), value) for name, value in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, chunk in enumerate(chunks):
            more = i < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

    return app


RESPONSES = {
    "small json": respond(b"application/json", [SMALL]),
    "large json": respond(b"application/json", [LARGE]),
    "large html": respond(b"text/html; charset=utf-8", [LARGE]),
    "streamed, no length": respond(b"application/x-ndjson", [SMALL, LARGE, SMALL], length=False),
    "small, no length": respond(b"application/json", [SMALL], length=False),
    "event stream": respond(b"text/event-stream", [LARGE, LARGE], length=False),
    "image": respond(b"image/png", [LARGE]),
    "already encoded": respond(b"application/json", [LARGE], content_encoding=b"br"),
    "partial": respond(b"application/json", [LARGE], status=206),
    "grpc+proto": respond(b"application/grpc+proto", [LARGE]),
    "304": respond(b"application/json", [b""], status=304),
}


async def call(app: ASGIApp, accept: bytes | None) -> list[dict[str, Any]]:
    headers = [(b"accept-encoding", accept)] if accept is not None else []
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message, headers=list(message.get("headers", []))))

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("accept", [b"gzip, deflate, br", b"identity", None])
@pytest.mark.parametrize("name", sorted(RESPONSES))
async def test_answers_what_starlettes_gzip_answers(name: str, accept: bytes | None) -> None:
    app = RESPONSES[name]
    ours = await call(CompressionMiddleware(app, minimum_size=MINIMUM), accept)
    starlettes = await call(GZipMiddleware(app, minimum_size=MINIMUM), accept)
    assert ours == starlettes


async def test_large_json_is_gzipped_for_a_client_that_accepts_it() -> None:
    sent = await call(CompressionMiddleware(RESPONSES["large json"], minimum_size=MINIMUM), b"gzip")
    headers = dict(sent[0]["headers"])
    assert headers[b"content-encoding"] == b"gzip"
    assert b"Accept-Encoding" in headers[b"vary"]
    assert len(sent[1]["body"]) < len(LARGE)

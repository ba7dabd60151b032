"""The live-send spans (WebSocket, long-poll) and a Redis call span, without processes.

An in-memory exporter stands in for OTLP: Shelfwise's hooks are switched on for the test
(`tracing._state`) and given a tracer of a private provider, so no global provider is
installed (that would turn FastAPI's own telemetry on for every later test in this
worker). A "writer" span around a stock adjustment plays the placing request; every span
that carries its event must link back to it. The end-to-end view over real OTLP is
`tests/e2e/test_tracing.py`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer
from redis.asyncio import Redis

from shelfwise.observability import trace_events, tracing
from tests.integration.test_live import adjust, stocked
from tests.live_support import running_relay, serve, settle
from tests.redis_support import redis_server


@dataclass
class Traced:
    tracer: Tracer
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def sent(self, destination: str) -> list[ReadableSpan]:
        return [
            span
            for span in self.exporter.get_finished_spans()
            if span.name == "live send"
            and (span.attributes or {}).get("messaging.destination.name") == destination
        ]


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    local = provider.get_tracer("shelfwise")
    monkeypatch.setitem(tracing._state, "enabled", True)
    monkeypatch.setattr(tracing, "tracer", lambda: local)
    monkeypatch.setattr(trace_events, "tracer", lambda: local)
    yield Traced(local, provider, exporter)
    provider.shutdown()


def _links_to(span: ReadableSpan, trace_id: int) -> bool:
    """A link to the writer's trace naming its event, whose aggregate (the stock level)
    the span also lists."""
    ids = (span.attributes or {}).get("shelfwise.aggregate.ids") or ()
    return any(
        link.context.trace_id == trace_id
        and (link.attributes or {}).get("shelfwise.event.type") == "stock.changed"
        and (link.attributes or {}).get("shelfwise.aggregate.id") in ids
        for link in span.links
    )


async def test_a_websocket_write_is_a_live_send_span_linked_to_the_writer(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    database_url: str,
    app: Any,
    traced: Traced,
) -> None:
    product_id, location_id = await stocked(client, staff["headers"])
    token = staff["headers"]["Authorization"].removeprefix("Bearer ")
    async with running_relay(database_url), serve(app) as address:
        await settle(app.state.ctx)
        async with websockets.connect(f"ws://{address}/v1/ws") as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            channel = f"stock:{product_id}"
            await ws.send(json.dumps({"type": "subscribe", "channels": [channel]}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
            with traced.tracer.start_as_current_span("writer") as writer:
                await adjust(client, staff["headers"], product_id, location_id, 2)
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["data"]["on_hand"] == 7
    trace_id = writer.get_span_context().trace_id
    (sent,) = [s for s in traced.sent("ws") if _links_to(s, trace_id)]
    assert sent.kind is SpanKind.PRODUCER
    assert (sent.attributes or {})["messaging.operation.type"] == "send"
    assert sent.context is not None
    assert sent.context.trace_id != trace_id  # linked, not a child


async def test_a_long_poll_answer_is_a_live_send_span_linked_to_the_writer(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    database_url: str,
    app: Any,
    traced: Traced,
) -> None:
    product_id, location_id = await stocked(client, staff["headers"])
    headers = staff["headers"]
    url = f"/v1/poll?channels=stock:{product_id}"
    async with running_relay(database_url):
        await settle(app.state.ctx)
        start = await client.get(url, headers=headers)
        assert start.status_code == 200, start.text
        with traced.tracer.start_as_current_span("writer") as writer:
            await adjust(client, headers, product_id, location_id, 3)
        answer = await client.get(
            f"{url}&since={start.json()['position']}&timeout=10", headers=headers
        )
    assert answer.status_code == 200, answer.text
    assert [e["data"]["on_hand"] for e in answer.json()["events"]] == [8]
    trace_id = writer.get_span_context().trace_id
    (sent,) = [s for s in traced.sent("poll") if _links_to(s, trace_id)]
    assert sent.kind is SpanKind.PRODUCER
    assert (sent.attributes or {})["messaging.batch.message_count"] == 1


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="shelfwise-trace-redis-"))
    try:
        async with redis_server(workdir) as url:
            yield url
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def test_a_redis_call_inside_an_operation_is_a_client_span_of_it(
    traced: Traced, redis_url: str
) -> None:
    """What `configure_tracing` applies (the Redis instrumentation), on a private
    provider: a command is a client span in the trace of the operation that ran it."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=traced.provider)
    try:
        redis = Redis.from_url(redis_url)
        try:
            with traced.tracer.start_as_current_span("request") as request:
                await redis.set("shelfwise:trace-probe", "1")
        finally:
            await redis.aclose()
    finally:
        instrumentor.uninstrument()
    (command,) = [s for s in traced.exporter.get_finished_spans() if s.name == "SET"]
    assert command.kind is SpanKind.CLIENT
    assert (command.attributes or {}).get("db.system") == "redis"
    assert command.parent is not None
    assert command.parent.span_id == request.get_span_context().span_id

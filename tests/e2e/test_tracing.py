"""Following one order end to end in its traces, exported over real OTLP/HTTP.

Real processes (`shelfwise serve`, `shelfwise worker`) export to an OTLP/HTTP receiver
this test runs (a small HTTP server decoding `ExportTraceServiceRequest` protobuf). One
order placed with a webhook subscribed and an SSE client connected must leave: the
server span (route template, request id, order id) with its database spans, and — in
traces of their own — the relay's publish, the hub's fan-out, the live send and the
webhook delivery (with its outgoing HTTP call), each linked to the placing request's
span and naming the order.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from shelfwise.app import build_context
from shelfwise.clock import SystemClock
from shelfwise.config import Settings
from shelfwise.db import libpq_url
from shelfwise.http.ratelimit import RateLimiter
from shelfwise.identity.models import Role
from tests.live_support import sse_events, take
from tests.redis_support import free_port
from tests.support import make_user, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"

pytestmark = pytest.mark.e2e
SERVER, CLIENT = 2, 3  # OTLP span kinds


@dataclass
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    links: list[tuple[str, str, dict[str, Any]]]  # (trace id, span id, attributes)


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass
class Collector:
    """What the OTLP/HTTP receiver decoded, span by span."""

    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                service = _attributes(resource_spans.resource.attributes).get("service.name", "")
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        self.spans.append(
                            Span(
                                service=service,
                                name=s.name,
                                kind=s.kind,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_id=s.parent_span_id.hex(),
                                attributes=_attributes(s.attributes),
                                links=[
                                    (
                                        link.trace_id.hex(),
                                        link.span_id.hex(),
                                        _attributes(link.attributes),
                                    )
                                    for link in s.links
                                ],
                            )
                        )

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Collector]]:
    collector = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                collector.add(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", collector
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def start(env: dict[str, str], workdir: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (workdir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [str(SHELFWISE), *args], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    return process


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: concurrent pytest runs on this machine may clean it up.
    path = Path(tempfile.mkdtemp(prefix="shelfwise-tracing-"))
    yield path
    for log in sorted(path.glob("*.log")):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    shutil.rmtree(path, ignore_errors=True)


async def test_one_order_is_followed_through_its_traces(
    database_url: str, workdir: Path, settings: Settings
) -> None:
    headers = await _admin_headers(settings, database_url)
    with ExitStack() as cleanup:
        endpoint, collector = cleanup.enter_context(otlp_receiver())
        hook_url, hooks = cleanup.enter_context(webhook_receiver())
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SHELFWISE_ENV": "test",
            "SHELFWISE_DATA_DIR": str(workdir),
            "SHELFWISE_DB_POOL_SIZE": "3",
            "SHELFWISE_LOG_JSON": "true",
            "SHELFWISE_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
            "SHELFWISE_WEBHOOK_FANOUT_POLL_SECONDS": "0.2",
            "SHELFWISE_WORKER_POLL_SECONDS": "0.2",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        port = free_port()
        processes = [
            start(env, workdir, "api", "serve", "--host", "127.0.0.1", "--port", str(port)),
            start(env, workdir, "worker", "worker"),
        ]

        def stop_all() -> None:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=15)

        cleanup.callback(stop_all)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=15, headers=headers
        ) as client:
            await wait_until(lambda: _ready(client), timeout=30, what="/readyz")
            product, location = await _stocked(client)
            subscribed = await client.post(
                "/v1/webhooks", json={"url": hook_url, "event_types": ["order.reserved"]}
            )
            assert subscribed.status_code == 201, subscribed.text
            async with client.stream("GET", "/v1/stream?channels=orders") as stream:
                assert stream.status_code == 200
                frames = sse_events(stream)
                placed = await client.post(
                    "/v1/orders",
                    json={
                        "lines": [{"product_id": product, "quantity": 1}],
                        "location_id": location,
                    },
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
                assert placed.status_code == 201, placed.text
                order_id = placed.json()["id"]
                request_id = placed.headers["X-Request-ID"]
                (frame,) = await take(frames, 1, kind="order.reserved", timeout=20)
                assert frame.data["data"]["order_id"] == order_id
            await wait_until(lambda: _delivered(hooks, order_id), timeout=20, what="webhook")

            # A refusal names its trace beside its request id.
            refused = await client.get(f"/v1/orders/{uuid.uuid4()}")
            assert refused.status_code == 404
            assert len(refused.json()["trace_id"]) == 32

        async def followed() -> bool:
            return _follow(collector.snapshot(), order_id, request_id) is not None

        try:
            await wait_until(followed, timeout=20, what="the order's spans")
        except AssertionError:
            print(_spans_seen(collector.snapshot()))
            raise
        trail = _follow(collector.snapshot(), order_id, request_id)
        assert trail is not None
        server, statements = trail["server"], trail["statements"]
        assert server.attributes["http.route"] == "/v1/orders"
        assert server.attributes["http.response.status_code"] == 201
        assert server.service == "shelfwise-api"
        assert any("INSERT INTO orders" in s.attributes.get("db.statement", "") for s in statements)
        assert trail["relay"].service == "shelfwise-worker"
        # The webhook delivery made its HTTP call inside its job's span.
        delivery = trail["delivery"]
        assert any(
            s.parent_id == delivery.span_id and s.kind == CLIENT
            for s in collector.snapshot()
            if s.trace_id == delivery.trace_id and s.name == "POST"
        )
        # `trace_id` in the log lines written while the order was placed.
        log_lines = [
            json.loads(line)
            for line in (workdir / "api.log").read_text().splitlines()
            if line.startswith("{")
        ]
        assert any(
            line.get("request_id") == request_id and line.get("trace_id") == server.trace_id
            for line in log_lines
        )


COMMENT_PROBE = """
import asyncio, json, os, psycopg
from opentelemetry import trace
from shelfwise.observability.tracing import configure_tracing

assert configure_tracing("probe")
ACTIVITY = "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()"

async def main():
    # Autocommit: pg_stat_activity is read once per transaction, then cached.
    dsn = os.environ["PROBE_DSN"]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        with trace.get_tracer("probe").start_as_current_span("a request") as span:
            traced = (await (await conn.execute(ACTIVITY)).fetchone())[0]
            trace_id = format(span.get_span_context().trace_id, "032x")
        background = (await (await conn.execute(ACTIVITY)).fetchone())[0]
        # A request its caller did not sample (traceparent flags 00): spans non-recording,
        # so no comment either.
        caller = trace.NonRecordingSpan(trace.SpanContext(
            0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True,
            trace_flags=trace.TraceFlags(0),
        ))
        with trace.get_tracer("probe").start_as_current_span(
            "an unsampled request", context=trace.set_span_in_context(caller)
        ) as span:
            assert not span.is_recording()
            unsampled = (await (await conn.execute(ACTIVITY)).fetchone())[0]
    print(json.dumps({
        "traced": traced, "background": background, "unsampled": unsampled,
        "trace_id": trace_id,
    }))

asyncio.run(main())
"""


def test_a_statement_names_its_trace_in_pg_stat_activity(database_url: str) -> None:
    """The sqlcommenter `traceparent` reaches PostgreSQL: the query text a DBA sees in
    `pg_stat_activity` names the trace (and the statement's span) that runs it."""
    with otlp_receiver() as (endpoint, _):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "PROBE_DSN": libpq_url(database_url)}
        run = subprocess.run(
            [sys.executable, "-c", COMMENT_PROBE],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert f"/*traceparent='00-{seen['trace_id']}-" in seen["traced"]
    # Outside any operation nothing is sampled and nothing is appended; nor inside an
    # operation that is not sampled.
    assert "traceparent" not in seen["background"]
    assert "traceparent" not in seen["unsampled"]


async def _admin_headers(settings: Settings, database_url: str) -> dict[str, str]:
    """An admin and a token the servers accept, without starting an app in this process
    (only its database and signing key are needed; the servers run on the wall clock)."""
    ctx = build_context(settings, database_url, SystemClock(), RateLimiter(None))
    try:
        admin = await make_user(ctx, Role.ADMIN)
    finally:
        await ctx.db.dispose()
        ctx.hasher.close()
    token, _ = ctx.tokens.issue(user_id=admin["id"], role="admin", now=datetime.now(UTC))
    return {"Authorization": f"Bearer {token}"}


def _follow(spans: list[Span], order_id: str, request_id: str) -> dict[str, Any] | None:
    """The order's server span, its statements and the spans linked to it, once all
    have arrived."""
    placing = {s.trace_id for s in spans if s.attributes.get("shelfwise.order.id") == order_id}
    servers = [s for s in spans if s.trace_id in placing and s.kind == SERVER and not s.parent_id]
    if not servers:
        return None
    (server,) = servers
    assert server.name == "POST /v1/orders"
    assert server.attributes["shelfwise.request_id"] == request_id
    # One span per request of FastAPI's (operation spans off, observability/trace_http.py).
    assert not any(s.name.startswith("fastapi.") for s in spans)

    def linked(name: str, names_order: Any) -> Span | None:
        for span in spans:
            if span.name != name:
                continue
            for trace_id, _, attributes in span.links:
                if trace_id == server.trace_id and names_order(span, attributes):
                    return span
        return None

    def in_batch(span: Span, attributes: dict[str, Any]) -> bool:
        return attributes.get(
            "shelfwise.aggregate.id"
        ) == order_id and order_id in span.attributes.get("shelfwise.aggregate.ids", [])

    def delivered(span: Span, _: dict[str, Any]) -> bool:
        return span.attributes.get("shelfwise.aggregate.id") == order_id

    trail: dict[str, Any] = {
        "server": server,
        "statements": [
            s for s in spans if s.trace_id == server.trace_id and s.attributes.get("db.system")
        ],
        "relay": linked("outbox publish", in_batch),
        "fanout": linked("live fan-out", in_batch),
        "live": linked("live send", in_batch),
        "delivery": linked("deliver_webhook process", delivered),
    }
    return trail if trail["statements"] and all(trail.values()) else None


async def _ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def _delivered(hooks: list[dict[str, Any]], order_id: str) -> bool:
    return any(hook["aggregate"]["id"] == order_id for hook in hooks)


async def _stocked(client: httpx.AsyncClient) -> tuple[str, str]:
    product = await client.post(
        "/v1/products",
        json={
            "sku": f"TR-{free_port()}",
            "name": "Traced mug",
            "price_minor": 500,
            "currency": "EUR",
        },
    )
    assert product.status_code == 201, product.text
    location = await client.post("/v1/locations", json={"code": f"T{free_port()}", "name": "T"})
    assert location.status_code == 201, location.text
    ids = [product.json()["id"], location.json()["id"]]
    received = await client.post(
        "/v1/stock/adjustments",
        json={
            "product_id": ids[0],
            "location_id": ids[1],
            "kind": "receipt",
            "quantity": 5,
            "reason": "setup",
        },
    )
    assert received.status_code == 201, received.text
    return ids[0], ids[1]


def _spans_seen(spans: list[Span]) -> str:
    return "\n".join(
        f"{s.service} {s.name!r} trace={s.trace_id[:8]} parent={s.parent_id[:8]} "
        f"links={[t[:8] for t, _, _ in s.links]} "
        f"{ {k: v for k, v in s.attributes.items() if k.startswith('shelfwise.')} }"
        for s in spans
    )

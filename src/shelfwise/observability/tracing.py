"""OpenTelemetry tracing, configured by the standard `OTEL_*` variables — or not at all.

Tracing is on only when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_SDK_DISABLED` is not `true`. Then this
process gets an SDK tracer provider exporting over OTLP/HTTP in batches, and the
psycopg, httpx and Redis instrumentations. Everything else is the SDK's own reading of
the environment: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`
(+ `_ARG` for the ratio), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`.

Without an endpoint nothing is installed: the API's no-op tracer stays, no library is
patched, the SDK is not even imported, and Shelfwise's own hooks return after reading
one module flag (`enabled()`).

Trace context crosses the asynchronous boundaries as *data*, a W3C carrier
(`{"traceparent": ..., "tracestate": ...}`) stored with each outbox event and each
deferred job. The other side does not continue that trace: a relay batch, a webhook
delivery or a live frame is its own operation, started later and often carrying many
events, so it starts its own span with a **link** to each event's context (OpenTelemetry
messaging conventions). `inject_context()` and `link_from()` are the stable helpers for
any other transport (the RabbitMQ publisher puts the carrier in message headers).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util.types import AttributeValue

# The key under which a deferred job's args carry its trace context (jobs/defer.py); the
# worker removes it before calling the task (observability/trace_jobs.py).
TRACE_KEY = "_trace"
TRACER_NAME = "shelfwise"
# Span attribute naming the aggregate (order, product, ...) an operation is about.
AGGREGATE_ID = "shelfwise.aggregate.id"
AGGREGATE_TYPE = "shelfwise.aggregate.type"
EVENT_TYPE = "shelfwise.event.type"
ORDER_ID = "shelfwise.order.id"

# The sqlcommenter keys we keep: only the trace context (`traceparent`), which is what
# lets `pg_stat_activity` name the request a query belongs to.
_COMMENTER_OPTIONS = {
    "db_driver": False,
    "dbapi_threadsafety": False,
    "dbapi_level": False,
    "libpq_version": False,
    "driver_paramstyle": False,
    "opentelemetry_values": True,
}

_state: dict[str, Any] = {"enabled": False}


def enabled() -> bool:
    """Whether this process exports traces (the check every hook makes first)."""
    return bool(_state["enabled"])


def endpoint_configured(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure_tracing(default_service_name: str) -> bool:
    """Install the SDK and the instrumentations when an endpoint is configured.

    Idempotent; returns whether tracing is on. `default_service_name` applies only when
    neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names the service."""
    if _state["enabled"]:
        return True
    if not endpoint_configured():
        return False
    # Imported here so a process without tracing never loads the SDK or the exporters.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from shelfwise.observability.trace_sampling import sampler_from_env

    detected = OTELResourceDetector().detect()
    defaults = {} if SERVICE_NAME in detected.attributes else {SERVICE_NAME: default_service_name}
    # The provider flushes its batch at interpreter exit (SIGTERM ends our loops normally).
    provider = TracerProvider(
        resource=Resource.create(defaults),
        # OTEL_TRACES_SAMPLER / _ARG decide (default: parent-based, always on), except
        # for client calls made outside any operation (below).
        sampler=sampler_from_env(),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # psycopg at the driver, not SQLAlchemy's engine events: SQLAlchemy, the driver pool,
    # placement's borrowed connection, the relay and Procrastinate all run their
    # statements through psycopg cursors, so this is one span (and one `traceparent`
    # comment) per statement on every path (docs/decisions/0014-tracing-at-the-driver.md).
    PsycopgInstrumentor().instrument(enable_commenter=True, commenter_options=_COMMENTER_OPTIONS)
    HTTPXClientInstrumentor().instrument()
    RedisInstrumentor().instrument()
    _state.update(enabled=True)
    return True


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits (what trace backends search by), or None."""
    if not _state["enabled"]:
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def inject_context() -> dict[str, str] | None:
    """The current trace context as a W3C carrier, or None when there is none to carry."""
    if not _state["enabled"]:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def with_trace(args: dict[str, Any], carrier: Mapping[str, str] | None) -> dict[str, Any]:
    """A job's `args` carrying `carrier` (an event's stored context) for its span to link
    to, instead of the deferring code's own context (`jobs/defer.py`)."""
    if carrier is None or not _state["enabled"]:
        return args
    return {**args, TRACE_KEY: dict(carrier)}


def link_from(
    carrier: Mapping[str, Any] | None, attributes: Mapping[str, AttributeValue] | None = None
) -> Link | None:
    """A span link to the context stored in `carrier`; None when it holds no valid one."""
    if not carrier or not _state["enabled"]:
        return None
    strings = {str(k): str(v) for k, v in carrier.items() if isinstance(v, str)}
    context = trace.get_current_span(propagate.extract(strings)).get_span_context()
    if not context.is_valid:
        return None
    return Link(context, attributes=dict(attributes) if attributes else None)


def links_from(
    carriers: Iterable[tuple[Mapping[str, Any] | None, Mapping[str, AttributeValue]]],
) -> list[Link]:
    """One link per carrier that holds a valid context (attributes name the event)."""
    links = (link_from(carrier, attributes) for carrier, attributes in carriers)
    return [link for link in links if link is not None]


def annotate(attributes: Mapping[str, AttributeValue]) -> None:
    """Set attributes on the current span (e.g. the order a request placed)."""
    if not _state["enabled"]:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


@contextmanager
def linked_span(
    name: str,
    links: list[Link],
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Mapping[str, AttributeValue] | None = None,
    root: bool = True,
) -> Iterator[Span | None]:
    """A span linked to the contexts it handles; None when tracing is off.

    `root`: start a trace of its own (a relay batch, a job) rather than a child of the
    current span (a frame written inside a stream's request span)."""
    if not _state["enabled"]:
        yield None
        return
    with tracer().start_as_current_span(
        name,
        context=trace.set_span_in_context(trace.INVALID_SPAN) if root else None,
        kind=kind,
        links=links,
        attributes=dict(attributes) if attributes else None,
    ) as span:
        yield span

"""The sampler: the one `OTEL_TRACES_SAMPLER` names, minus the background loops' polls.

Imported only when tracing is on (it needs the SDK).
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes


def sampler_from_env() -> Sampler:
    # The SDK's own reading of OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (what
    # `TracerProvider()` does without a sampler argument).
    return SkipOrphanClientSpans(sampling._get_from_env_or_default())


class SkipOrphanClientSpans(Sampler):
    """Drops client spans (a statement, a Redis call, an HTTP call) that have no parent.

    Those are the background loops' polls — the relay's stamping pass, the queue gauges,
    Procrastinate's job fetch, the live feeds — several a second, each a trace of its
    own that says nothing. A statement inside a request, a job, or a relay batch has a
    parent and is sampled as usual."""

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"SkipOrphanClientSpans{{{self._delegate.get_description()}}}"

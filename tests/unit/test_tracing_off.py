"""Without an OTLP endpoint, tracing installs nothing: no SDK, no patched library, no layer.

Checked in a fresh interpreter, so nothing another test imported or configured counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from shelfwise.observability.tracing import endpoint_configured

PROBE = """
import json, sys
import httpx, psycopg, redis.asyncio
from opentelemetry import trace
from shelfwise.app import create_app
from shelfwise.observability import tracing
app = create_app()
print(json.dumps({
    "enabled": tracing.enabled(),
    "provider": type(trace.get_tracer_provider()).__name__,
    "sdk_loaded": "opentelemetry.sdk.trace" in sys.modules,
    "psycopg_patched": hasattr(psycopg.AsyncConnection.connect, "__wrapped__"),
    "httpx_patched": hasattr(httpx.AsyncClient.send, "__wrapped__")
        or hasattr(httpx.AsyncHTTPTransport.handle_async_request, "__wrapped__"),
    "redis_patched": hasattr(redis.asyncio.Redis.execute_command, "__wrapped__"),
    "layers": [m.cls.__name__ for m in app.user_middleware],
    "trace_id": tracing.current_trace_id(),
    "carrier": tracing.inject_context(),
}))
"""


def probe(**otel: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"SHELFWISE_ENV": "test", **otel}
    run = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    seen: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return seen


def test_no_endpoint_installs_nothing() -> None:
    seen = probe()
    layers = seen.pop("layers")
    assert seen == {
        "enabled": False,
        "provider": "ProxyTracerProvider",  # the API's default: every span a no-op
        "sdk_loaded": False,
        "psycopg_patched": False,
        "httpx_patched": False,
        "redis_patched": False,
        "trace_id": None,
        "carrier": None,
    }
    assert "EdgeMiddleware" in layers  # request id, access log, ... (http/edge.py)
    assert "RequestIdSpanMiddleware" not in layers


def test_an_endpoint_installs_the_sdk_and_the_instrumentations() -> None:
    """The same probe sees everything when tracing is on (so it can see it missing)."""
    seen = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_BSP_EXPORT_TIMEOUT="1")
    assert seen["enabled"] is True
    assert seen["provider"] == "TracerProvider"
    assert seen["sdk_loaded"]
    assert seen["psycopg_patched"]
    assert seen["httpx_patched"]
    assert seen["redis_patched"]
    assert "RequestIdSpanMiddleware" in seen["layers"]


@pytest.mark.parametrize(
    ("environ", "configured"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_SERVICE_NAME": "shelfwise"}, False),  # a name alone exports nothing
    ],
)
def test_tracing_is_on_only_with_an_endpoint(environ: dict[str, str], configured: bool) -> None:
    assert endpoint_configured(environ) is configured

"""Schemathesis against the app's own `/openapi.json`, in process.

For every operation in the document Schemathesis generates a bounded, derandomized set
of cases — valid ones (positive) and ones that break the schema (negative) — which are
sent through the ASGI app with a Bearer token (staff; admin for the admin-only routes;
none for the public ones in an extra anonymous pass). Every response is checked with
Schemathesis' own checks:

- `not_a_server_error`: no 5xx, whatever the input;
- `status_code_conformance` and `content_type_conformance`: the status and media type
  are documented (errors are documented once, as problem+json, for every operation);
- `response_schema_conformance`: the body matches the documented schema;
- `negative_data_rejection`: input that breaks the schema is refused with a 4xx.

Cases are drawn with Hypothesis (derandomized, no example database) and sent with httpx
in the test's own event loop, so the app runs with the usual per-test database.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from shelfwise.http.timeouts import STREAMING_PREFIXES

EXAMPLES = {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 5}
ANONYMOUS_EXAMPLES = 2
# Typically 10-25 s; the bound only stops a runaway (slow CI machines included).
BUDGET_SECONDS = 120.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
ADMIN_PREFIXES = ("/v1/users", "/v1/api-keys", "/v1/admin")
BASE_URL = "https://shelfwise.test"
REQUEST_TIMEOUT = 15.0


def draw(operation: Any, mode: GenerationMode, count: int) -> list[Case]:
    """A fixed, reproducible sample of cases for one operation."""
    cases: list[Case] = []

    @hypothesis.given(operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def collect(case: Case) -> None:
        cases.append(case)

    collect()
    return cases


def to_httpx(case: Case, authorization: str | None) -> dict[str, Any]:
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    headers = dict(kwargs.get("headers") or {})
    negative = case.meta is not None and case.meta.generation.mode is GenerationMode.NEGATIVE
    # Valid cases carry our token; invalid ones may keep a mangled Authorization header.
    if authorization is not None and not (negative and "Authorization" in headers):
        headers["Authorization"] = authorization
    cookies = kwargs.get("cookies") or {}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": headers,
        "params": kwargs.get("params") or None,
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif isinstance(kwargs.get("data"), bytes | str):
        request["content"] = kwargs["data"]
    elif kwargs.get("data") is not None:
        request["data"] = kwargs["data"]
    return request


async def run_cases(
    client: httpx.AsyncClient,
    cases: list[Case],
    authorization: str | None,
    failures: list[str],
    stats: dict[str, int],
) -> None:
    for case in cases:
        try:
            request = to_httpx(case, authorization)
            response = await asyncio.wait_for(client.request(**request), REQUEST_TIMEOUT)
        except (UnicodeEncodeError, httpx.InvalidURL, httpx.LocalProtocolError):
            # Not sendable over HTTP at all (e.g. a header value outside latin-1): a real
            # client could not produce it either.
            stats["unsendable"] += 1
            continue
        stats["sent"] += 1
        stats[f"{response.status_code // 100}xx"] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=request["headers"])
        except FailureGroup as group:
            for failure in group.exceptions:
                failures.append(
                    f"{case.operation.label} -> {response.status_code}: {failure.title}"
                    f" ({failure.message[:300]})"
                )


def bearer_for(path: str, staff: str, admin: str) -> str:
    return admin if path.startswith(ADMIN_PREFIXES) else staff


async def test_openapi_operations_survive_schemathesis(
    client: httpx.AsyncClient, staff: dict[str, Any], admin: dict[str, Any]
) -> None:
    started = time.monotonic()
    spec = (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    # Long-lived streams (SSE, long-poll) never "finish" a response; they have their own
    # tests. Everything else is fuzzed.
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if not op.path.startswith(STREAMING_PREFIXES)
    ]
    assert len(operations) >= 30  # the whole API, not a stub

    failures: list[str] = []
    stats: dict[str, int] = dict.fromkeys(
        ("sent", "unsendable", "1xx", "2xx", "3xx", "4xx", "5xx"), 0
    )
    staff_auth = staff["headers"]["Authorization"]
    admin_auth = admin["headers"]["Authorization"]

    for operation in operations:
        authorization = bearer_for(operation.path, staff_auth, admin_auth)
        for mode, count in EXAMPLES.items():
            cases = draw(operation, mode, count)
            await run_cases(client, cases, authorization, failures, stats)
        if not operation.definition.raw.get("security"):
            cases = draw(operation, GenerationMode.POSITIVE, ANONYMOUS_EXAMPLES)
            await run_cases(client, cases, None, failures, stats)
        assert time.monotonic() - started < BUDGET_SECONDS, "Schemathesis run over budget"

    print(f"schemathesis: {len(operations)} operations, {stats}")
    assert stats["sent"] >= len(operations) * 5
    assert stats["2xx"] > 0  # the valid cases really reach the handlers
    assert stats["5xx"] == 0
    distinct = sorted(set(failures))
    assert not distinct, f"{len(distinct)} distinct failures:\n" + "\n".join(distinct)

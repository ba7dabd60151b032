"""Schemathesis against the app's own `/openapi.json`, in process, with every check.

For every operation in the document Schemathesis generates a bounded, derandomized set
of cases in its three phases, as `schemathesis run --checks all` would:

- examples: the documented examples;
- coverage: boundary values for every constraint (lengths, bounds, patterns, enums),
  missing required parameters and headers, undeclared methods, wrong types;
- fuzzing: valid (positive) and schema-breaking (negative) values drawn by Hypothesis.

They are sent through the ASGI app with a Bearer token (staff; admin for the admin-only
routes; none for the public ones in an extra anonymous pass), and every response is
checked with *all* of Schemathesis' checks (`schemathesis.checks.CHECKS`): no 5xx,
documented status/media type/headers/body, negative data rejected and positive data
accepted, missing required headers refused, undeclared methods answered 405 with a
truthful `Allow`. Rate limits are raised for it (a fuzzer is not a user).

Cases are drawn with Hypothesis (derandomized, no example database) and sent with httpx
in the test's own event loop, so the app runs with the usual per-test database.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import Case, GenerationMode
from schemathesis.checks import CHECKS as CHECKS_REGISTRY
from schemathesis.checks import load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.hypothesis.builder import (
    HypothesisTestConfig,
    HypothesisTestMode,
    create_test,
)

from shelfwise.config import Settings
from shelfwise.http.timeouts import STREAMING_PREFIXES

MAX_EXAMPLES = 12  # fuzzing cases per operation and generation mode
ANONYMOUS_EXAMPLES = 3
# Coverage cases per operation: the phase enumerates boundaries and can yield hundreds for
# a wide body; a seeded sample of them keeps the run inside its budget.
COVERAGE_SAMPLE = 40
# Typically 30-60 s on two busy cores; the bound only stops a runaway.
BUDGET_SECONDS = 90.0
MODES = [HypothesisTestMode.EXAMPLES, HypothesisTestMode.COVERAGE, HypothesisTestMode.FUZZING]
# `ignored_auth` re-sends a case without credentials over its own transport (a network
# request to the base URL); the anonymous pass below and tests/api/test_authz_matrix.py
# prove the same for every operation in process.
load_all_checks()  # the registry holds only `not_a_server_error` until the OpenAPI ones load
CHECKS = [check for check in CHECKS_REGISTRY.get_all() if check.__name__ != "ignored_auth"]
assert len(CHECKS) >= 12, [check.__name__ for check in CHECKS]
# Rules JSON Schema cannot state, each said in the document's descriptions instead. A
# schema-valid request refused for one of these (and nothing else) is not a failure:
# - a cursor the server did not issue (an HMAC-signed token; its shape is documented);
# - an order line naming a product that does not exist (a reference, not a shape);
# - a password on the shipped breach list (ASVS 2.1.7; 2,872 entries);
# - two order lines for one product (uniqueness by a property of array items);
# - an email address at a special-use domain (`.local`, `.test`: RFC 6761's list).
INEXPRESSIBLE_CODES = {"invalid_cursor", "unknown_product"}
INEXPRESSIBLE_FIELD_ERRORS = ("too common", "appears twice", "special-use or reserved name")


def refused_for_inexpressible_rule(response: httpx.Response) -> bool:
    if response.status_code != 422:
        return False
    body = response.json()
    if body.get("code") in INEXPRESSIBLE_CODES:
        return True
    errors = body.get("errors") or []
    return bool(errors) and all(
        any(marker in str(error.get("message", "")) for marker in INEXPRESSIBLE_FIELD_ERRORS)
        for error in errors
    )


ADMIN_PREFIXES = ("/v1/users", "/v1/api-keys", "/v1/admin")
BASE_URL = "https://shelfwise.test"
REQUEST_TIMEOUT = 15.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    huge = "1000000/minute"
    return settings.model_copy(
        update={
            "rate_limit_authenticated": huge,
            "rate_limit_anonymous": huge,
            "rate_limit_login": huge,
            "rate_limit_register": huge,
            "rate_limit_refresh": huge,
        }
    )


def draw(schema: Any, operation: Any, modes: list[HypothesisTestMode], count: int) -> list[Case]:
    """A fixed, reproducible sample of cases for one operation, in the given phases."""
    cases: list[Case] = []

    def collect(case: Case) -> None:
        cases.append(case)

    test = create_test(
        operation=operation,
        test_func=collect,
        config=HypothesisTestConfig(
            project=schema.config,
            modes=modes,
            settings=hypothesis.settings(
                max_examples=count,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            ),
        ),
    )
    test()
    return cases


def sample(cases: list[Case], operation: Any) -> list[Case]:
    """Explicit (examples and coverage) cases are sampled; fuzzed ones kept."""
    explicit = [c for c in cases if _phase(c) != "fuzzing"]
    fuzzed = [c for c in cases if _phase(c) == "fuzzing"]
    if len(explicit) > COVERAGE_SAMPLE:
        explicit = random.Random(operation.label).sample(explicit, COVERAGE_SAMPLE)
    return explicit + fuzzed


def _phase(case: Case) -> str:
    return str(case.meta.phase.name) if case.meta is not None else "fuzzing"


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
    failures: dict[tuple[str, int, str], str],
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
                if failure.title == "Schema-valid request rejected" and (
                    refused_for_inexpressible_rule(response)
                ):
                    stats["inexpressible"] += 1
                    continue
                key = (case.operation.label, response.status_code, failure.title)
                failures.setdefault(
                    key,
                    f"{case.operation.label} -> {response.status_code}: {failure.title}"
                    f" ({failure.message[:300]}) answer: {response.text[:300]}",
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

    failures: dict[tuple[str, int, str], str] = {}
    stats: dict[str, int] = dict.fromkeys(
        ("sent", "unsendable", "inexpressible", "1xx", "2xx", "3xx", "4xx", "5xx"), 0
    )
    staff_auth = staff["headers"]["Authorization"]
    admin_auth = admin["headers"]["Authorization"]

    for operation in operations:
        authorization = bearer_for(operation.path, staff_auth, admin_auth)
        cases = sample(draw(schema, operation, MODES, MAX_EXAMPLES), operation)
        await run_cases(client, cases, authorization, failures, stats)
        if not operation.definition.raw.get("security"):
            anonymous = draw(schema, operation, [HypothesisTestMode.FUZZING], ANONYMOUS_EXAMPLES)
            await run_cases(client, anonymous, None, failures, stats)
        assert time.monotonic() - started < BUDGET_SECONDS, "Schemathesis run over budget"

    print(f"schemathesis: {len(operations)} operations, {stats}")
    assert stats["sent"] >= len(operations) * 20  # enough examples to matter
    assert stats["2xx"] > 0  # the valid cases really reach the handlers
    assert stats["5xx"] == 0
    assert not failures, f"{len(failures)} distinct failures:\n" + "\n".join(
        failures[key] for key in sorted(failures)
    )

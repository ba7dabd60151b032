"""Security headers on every kind of response, HSTS only in production, the CORS
allow-list, and `X-Forwarded-Proto` honoured only from trusted proxies."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI, Request

from shelfwise.clock import FixedClock
from shelfwise.config import Environment
from tests.security_support import (
    build_settings,
    client_for,
    running_app,
)

ALLOWED_ORIGIN = "https://dashboard.shelfwise.example"
OTHER_ORIGIN = "https://evil.example"
PRODUCTION_SECRETS = {
    "jwt_secret": "prod-jwt-signing-key-" + "j" * 40,
    "cursor_secret": "prod-cursor-key-" + "c" * 40,
    "session_secret": "prod-session-key-" + "s" * 40,
}


def csp_directives(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    directives = (d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    return {d[0]: (d[1] if len(d) > 1 else "") for d in directives}


def assert_common_headers(response: httpx.Response) -> None:
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert "camera=()" in headers["permissions-policy"]
    assert "geolocation=()" in headers["permissions-policy"]
    csp = csp_directives(response)
    assert csp["frame-ancestors"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert "default-src" in csp


async def test_every_kind_of_response_carries_the_security_headers(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    responses = {
        "json": await client.get("/v1/products"),
        "authenticated json": await client.get("/v1/auth/me", headers=staff["headers"]),
        "problem": await client.get(f"/v1/products/{uuid.uuid4()}"),
        "validation problem": await client.get("/v1/products", params={"limit": 0}),
        "401": await client.get("/v1/auth/me"),
        "unknown route": await client.get("/no/such/route"),
        "method not allowed": await client.put("/v1/products"),
        "openapi": await client.get("/openapi.json"),
        "health": await client.get("/healthz"),
        "docs": await client.get("/docs"),
    }
    expected_status = {
        "problem": 404,
        "validation problem": 422,
        "401": 401,
        "unknown route": 404,
        "method not allowed": 405,
    }
    for kind, response in responses.items():
        assert response.status_code == expected_status.get(kind, 200), (kind, response.text)
        assert_common_headers(response)
        # Not production: no HSTS (it would pin plain-http development hosts to https).
        assert "strict-transport-security" not in response.headers, kind

    for kind, response in responses.items():
        if kind == "docs":
            continue
        # The API answers data, never documents: nothing may load or run from it.
        csp = csp_directives(response)
        assert csp["default-src"] == "'none'", kind
        assert csp["form-action"] == "'none'", kind
        assert "script-src" not in csp, kind

    docs = responses["docs"]
    assert docs.headers["content-type"].startswith("text/html")
    docs_csp = csp_directives(docs)
    assert docs_csp["default-src"] == "'none'"
    assert "'unsafe-eval'" not in docs.headers["content-security-policy"]


async def test_hsts_only_in_production(database_url: str, clock: FixedClock) -> None:
    settings = build_settings(
        database_url, env=Environment.PRODUCTION, log_json=True, **PRODUCTION_SECRETS
    )
    assert settings.is_production
    async with running_app(settings, clock) as app, client_for(app) as client:
        for path in ("/v1/products", f"/v1/products/{uuid.uuid4()}", "/nope", "/healthz"):
            response = await client.get(path)
            hsts = response.headers["strict-transport-security"]
            assert "max-age=63072000" in hsts, path
            assert "includeSubDomains" in hsts
            assert_common_headers(response)


async def test_cors_allows_only_listed_origins_with_credentials(
    database_url: str, clock: FixedClock
) -> None:
    settings = build_settings(database_url, cors_origins=[ALLOWED_ORIGIN])
    async with running_app(settings, clock) as app, client_for(app) as client:
        preflight_headers = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-csrf-token",
        }
        allowed = await client.options(
            "/v1/products", headers={"Origin": ALLOWED_ORIGIN, **preflight_headers}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert "POST" in allowed.headers["access-control-allow-methods"]
        allowed_headers = allowed.headers["access-control-allow-headers"].lower()
        assert "x-csrf-token" in allowed_headers
        assert "authorization" in allowed_headers
        assert "origin" in allowed.headers["vary"].lower()

        refused = await client.options(
            "/v1/products", headers={"Origin": OTHER_ORIGIN, **preflight_headers}
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "cors_refused"  # a problem, like every refusal
        # Without Access-Control-Allow-Origin the browser refuses the request (Starlette
        # still sends its fixed Allow-Credentials on a refused preflight; inert alone).
        assert "access-control-allow-origin" not in refused.headers

        actual = await client.get("/v1/products", headers={"Origin": ALLOWED_ORIGIN})
        assert actual.status_code == 200
        assert actual.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert actual.headers["access-control-allow-credentials"] == "true"
        exposed = actual.headers["access-control-expose-headers"].lower()
        assert "ratelimit" in exposed
        assert "x-request-id" in exposed

        foreign = await client.get("/v1/products", headers={"Origin": OTHER_ORIGIN})
        assert foreign.status_code == 200  # CORS is enforced by the browser, not here
        # No Allow-Origin: the page on the foreign origin cannot read the response, with
        # or without credentials.
        assert "access-control-allow-origin" not in foreign.headers

        # Never a wildcard, and never a reflected arbitrary origin.
        for response in (allowed, actual):
            assert response.headers["access-control-allow-origin"] != "*"


async def test_without_cors_origins_nothing_is_allowed_cross_origin(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/products", headers={"Origin": ALLOWED_ORIGIN})
    assert "access-control-allow-origin" not in response.headers
    preflight = await client.options(
        "/v1/products",
        headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-credentials" not in preflight.headers


async def test_forwarded_proto_is_honoured_only_from_trusted_proxies(
    database_url: str, clock: FixedClock
) -> None:
    settings = build_settings(database_url, trusted_proxies=["10.0.0.5"])

    def add_probe(app: FastAPI) -> None:
        @app.get("/test/scheme", include_in_schema=False)
        async def scheme(request: Request) -> dict[str, str]:
            return {"scheme": request.url.scheme, "client": request.client.host}  # type: ignore[union-attr]

    async with running_app(settings, clock) as app:
        add_probe(app)
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        async with client_for(app, peer="10.0.0.5", base_url="http://shelfwise.test") as proxy:
            seen = (await proxy.get("/test/scheme", headers=headers)).json()
            assert seen == {"scheme": "https", "client": "203.0.113.9"}
            plain = (await proxy.get("/test/scheme")).json()
            assert plain == {"scheme": "http", "client": "10.0.0.5"}
        async with client_for(app, peer="10.0.0.6", base_url="http://shelfwise.test") as direct:
            seen = (await direct.get("/test/scheme", headers=headers)).json()
            assert seen == {"scheme": "http", "client": "10.0.0.6"}
        # 127.0.0.1 is not implicitly trusted either.
        async with client_for(app, base_url="http://shelfwise.test") as local:
            seen = (await local.get("/test/scheme", headers=headers)).json()
            assert seen == {"scheme": "http", "client": "127.0.0.1"}

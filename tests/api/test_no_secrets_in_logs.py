"""Nothing secret is ever logged.

A full authentication flow runs against an app whose logging is configured inside the
test, so every structlog line (stderr, through PrintLogger) and every stdlib record is
captured — at DEBUG, with both the development (console) and production (JSON)
renderers. The flow includes failures on purpose (wrong password, CSRF refusal, refresh
token reuse, an invalid API key and an unexpected server error during login), since
error paths are where secrets usually leak. Afterwards no password, access token,
refresh token, API key, session cookie, CSRF token or signing key appears anywhere.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from shelfwise.clock import FixedClock
from shelfwise.identity.models import Role
from tests.security_support import (
    SAME_ORIGIN,
    bearer,
    build_settings,
    client_for,
    context_of,
    running_app,
    set_cookies,
    use_cookie,
)
from tests.support import PASSWORD, make_user

USER_PASSWORD = "Zebra-Quartz-Lantern-9041"
WRONG_PASSWORD = "Wrong-Orchid-Telescope-7713"
WEAK_PASSWORD = "Short-8813"
SIGNING_SECRETS = {
    "jwt_secret": "jwt-signing-secret-for-the-log-test-4b1f9a",
    "cursor_secret": "cursor-secret-for-the-log-test-77c2d0e81",
    "session_secret": "session-secret-for-the-log-test-3e9a51bb",
}


class ExplodingHasher:
    """Stands in for the password hasher to cause an unexpected error mid-login."""

    def __init__(self, real: Any) -> None:
        self.real = real

    async def verify(self, stored: str | None, password: str) -> bool:
        raise RuntimeError("hasher pool is gone")

    def close(self) -> None:
        self.real.close()


def leaks(output: str, secrets: dict[str, str]) -> dict[str, str]:
    found = {}
    for name, secret in secrets.items():
        candidates = [secret]
        if secret.count(".") == 2:  # a JWT: its signature alone is the secret part
            candidates.append(secret.rsplit(".", 1)[1])
        for candidate in candidates:
            if candidate and candidate in output:
                found[name] = candidate
    return found


@pytest.mark.parametrize("log_json", [False, True], ids=["console", "json"])
async def test_a_full_auth_flow_logs_no_secrets(
    database_url: str,
    clock: FixedClock,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    log_json: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = build_settings(
        database_url, log_level="DEBUG", log_json=log_json, access_log=True, **SIGNING_SECRETS
    )
    secrets: dict[str, str] = {
        "user password": USER_PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "weak password": WEAK_PASSWORD,
        "admin password": PASSWORD,
        **SIGNING_SECRETS,
    }
    # Built here, not in a fixture: logging is configured while the capture is active.
    async with running_app(settings, clock) as app, client_for(app) as client:
        ctx = context_of(app)
        admin = await make_user(ctx, Role.ADMIN)
        secrets["admin token (fixture)"] = admin["headers"]["Authorization"].split()[1]
        email = "logged-user@example.com"

        weak = await client.post(
            "/v1/auth/register", json={"email": email, "password": WEAK_PASSWORD}
        )
        assert weak.status_code == 422
        registered = await client.post(
            "/v1/auth/register",
            json={"email": email, "password": USER_PASSWORD, "full_name": "Logged User"},
        )
        assert registered.status_code == 201, registered.text

        # Token mode, refresh, reuse detection, logout.
        tokens = (
            await client.post("/v1/auth/login", json={"email": email, "password": USER_PASSWORD})
        ).json()
        secrets["access token"] = tokens["access_token"]
        secrets["refresh token"] = tokens["refresh_token"]
        rotated = await client.post(
            "/v1/auth/token/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert rotated.status_code == 200
        secrets["rotated access token"] = rotated.json()["access_token"]
        secrets["rotated refresh token"] = rotated.json()["refresh_token"]
        reused = await client.post(
            "/v1/auth/token/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert reused.status_code == 401
        assert (await client.get("/v1/auth/me", headers=bearer(tokens["access_token"]))).is_success
        again = (
            await client.post("/v1/auth/login", json={"email": email, "password": USER_PASSWORD})
        ).json()
        secrets["second refresh token"] = again["refresh_token"]
        out = await client.post("/v1/auth/logout", json={"refresh_token": again["refresh_token"]})
        assert out.status_code == 204

        # Browser token mode: the refresh token in a cookie.
        browser = await client.post(
            "/v1/auth/login",
            json={"email": email, "password": USER_PASSWORD},
            headers={"Origin": SAME_ORIGIN},
        )
        assert browser.status_code == 200
        cookie = set_cookies(browser)["__Host-refresh"].value
        secrets["refresh cookie"] = cookie
        secrets["browser access token"] = browser.json()["access_token"]
        use_cookie(client, "__Host-refresh", cookie)
        refreshed = await client.post("/v1/auth/token/refresh", headers={"Origin": SAME_ORIGIN})
        assert refreshed.status_code == 200
        secrets["rotated refresh cookie"] = set_cookies(refreshed)["__Host-refresh"].value
        client.cookies.clear()

        # Session mode: sign-in, a CSRF-protected write, a CSRF refusal, sign-out.
        signed = await client.post(
            "/v1/auth/session",
            json={"email": admin["email"], "password": PASSWORD},
            headers={"Origin": SAME_ORIGIN},
        )
        assert signed.status_code == 200
        secrets["session cookie"] = set_cookies(signed)["__Host-session"].value
        secrets["csrf token"] = signed.json()["csrf_token"]
        csrf = {"Origin": SAME_ORIGIN, "X-CSRF-Token": signed.json()["csrf_token"]}
        key = await client.post(
            "/v1/api-keys", json={"name": "logged key", "scopes": ["catalog:read"]}, headers=csrf
        )
        assert key.status_code == 201, key.text
        api_key = key.json()["secret"]
        secrets["api key"] = api_key
        secrets["api key secret part"] = api_key.split("_", 2)[2]
        refused = await client.post(
            "/v1/api-keys", json={"name": "csrf", "scopes": ["catalog:read"]}
        )
        assert refused.status_code == 403
        ended = await client.delete("/v1/auth/session", headers=csrf)
        assert ended.status_code == 204
        client.cookies.clear()

        # API key use, a tampered key, a wrong password, an unknown email.
        assert (await client.get("/v1/auth/me", headers=bearer(api_key))).status_code == 200
        tampered = api_key[:-4] + "XXXX"
        assert (await client.get("/v1/auth/me", headers=bearer(tampered))).status_code == 401
        for who in (email, "nobody@example.com"):
            failed = await client.post(
                "/v1/auth/login", json={"email": who, "password": WRONG_PASSWORD}
            )
            assert failed.status_code == 401

        # An unexpected error while the password is in flight: logged with a traceback.
        real_hasher = ctx.hasher
        ctx.hasher = ExplodingHasher(real_hasher)  # type: ignore[assignment]
        try:
            boom = await client.post(
                "/v1/auth/login", json={"email": email, "password": USER_PASSWORD}
            )
        finally:
            ctx.hasher = real_hasher
        assert boom.status_code == 500

    captured = capsys.readouterr()
    records = "\n".join(
        f"{r.name} {r.getMessage()} {r.args!r} {r.__dict__!r}" for r in caplog.records
    )
    output = "\n".join([captured.out, captured.err, caplog.text, records])

    # The capture really holds the flow's logs, errors included...
    for expected in (
        "login_failed",
        "security_refresh_token_reuse",
        "security_csrf_refused",
        "unhandled_exception",
        "hasher pool is gone",
        "/v1/auth/token/refresh",
    ):
        assert expected in output, f"{expected!r} was not logged: the capture is broken"
    # ...and not one secret.
    assert leaks(output, secrets) == {}

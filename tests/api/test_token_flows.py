"""Token sign-in end to end: refresh rotation, reuse detection, expiry on the injected
clock, logout and revocation, disabling and role changes, the browser variant with the
`__Host-refresh` cookie, and JWT signing-key rotation by `kid`."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
import structlog
from sqlalchemy import text

from shelfwise.clock import FixedClock
from shelfwise.context import AppContext
from shelfwise.identity.tokens import TokenIssuer
from tests.security_support import (
    FOREIGN_ORIGIN,
    PROBLEM,
    SAME_ORIGIN,
    bearer,
    build_settings,
    client_for,
    login,
    metric,
    running_app,
    set_cookies,
    use_cookie,
)
from tests.support import PASSWORD

REFRESH_COOKIE = "__Host-refresh"


async def token_login(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await login(client, email)
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert body["refresh_token"], body
    return body


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/v1/auth/token/refresh", json={"refresh_token": token})


async def me(client: httpx.AsyncClient, access: str) -> httpx.Response:
    return await client.get("/v1/auth/me", headers=bearer(access))


def assert_refused(response: httpx.Response, code: str = "invalid_refresh_token") -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code
    assert "refresh_token" not in response.json()


async def sign_ins(client: httpx.AsyncClient, access: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/auth/sessions", headers=bearer(access))
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    return list(response.json())


# -- token mode: rotation and reuse ------------------------------------------------------


async def test_login_without_origin_returns_both_tokens_in_the_body(
    client: httpx.AsyncClient, customer: dict[str, Any], ctx: AppContext
) -> None:
    response = await login(client, customer["email"])
    assert response.status_code == 200, response.text
    assert "set-cookie" not in response.headers  # an API client keeps the token itself
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "expires_at",
        "refresh_token",
    }
    assert body["token_type"] == "Bearer"
    assert len(body["refresh_token"]) >= 40  # 256 random bits, url-safe
    assert (await me(client, body["access_token"])).json()["id"] == str(customer["id"])

    # The refresh token is stored only as a hash.
    async with ctx.db.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT token_hash FROM refresh_tokens"))).scalars()
        hashes = list(stored)
    assert len(hashes) == 1
    assert body["refresh_token"] not in hashes[0]
    assert len(hashes[0]) == 64


async def test_refresh_rotates_and_the_old_token_stops_working(
    client: httpx.AsyncClient, customer: dict[str, Any]
) -> None:
    first = await token_login(client, customer["email"])

    rotated = await refresh(client, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    assert "no-store" in rotated.headers["cache-control"]
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (await me(client, second["access_token"])).status_code == 200

    third = await refresh(client, second["refresh_token"])
    assert third.status_code == 200, third.text
    assert third.json()["refresh_token"] not in {first["refresh_token"], second["refresh_token"]}

    for garbage in ("x" * 43, str(uuid.uuid4()) + "-not-a-token"):
        assert_refused(await refresh(client, garbage))


async def test_reuse_of_a_used_refresh_token_revokes_the_whole_family(
    client: httpx.AsyncClient, customer: dict[str, Any]
) -> None:
    email = customer["email"]
    first = await token_login(client, email)
    other_device = await token_login(client, email)  # another family: not affected
    second = (await refresh(client, first["refresh_token"])).json()
    newest = (await refresh(client, second["refresh_token"])).json()
    before = metric("shelfwise_security_events_total", kind="refresh_token_reuse")

    with structlog.testing.capture_logs() as events:
        reused = await refresh(client, first["refresh_token"])  # a copy was kept: theft
    assert_refused(reused)

    warnings = [e for e in events if e["event"] == "security_refresh_token_reuse"]
    assert len(warnings) == 1, events
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["user_id"] == str(customer["id"])
    assert first["refresh_token"] not in str(events)  # the token itself is never logged
    assert metric("shelfwise_security_events_total", kind="refresh_token_reuse") == before + 1

    # The newest token of the family — the one the legitimate client holds — is dead too.
    assert_refused(await refresh(client, newest["refresh_token"]))
    # The other login on another device keeps working.
    assert (await refresh(client, other_device["refresh_token"])).status_code == 200
    # Reusing again stays refused.
    assert_refused(await refresh(client, second["refresh_token"]))


# -- expiry on the injected clock --------------------------------------------------------


async def test_refresh_token_expires_when_idle(
    client: httpx.AsyncClient, customer: dict[str, Any], ctx: AppContext, clock: FixedClock
) -> None:
    idle = ctx.refresh_policy.idle
    assert idle == timedelta(days=ctx.settings.refresh_idle_days)
    kept = await token_login(client, customer["email"])
    left = await token_login(client, customer["email"])

    clock.advance(idle - timedelta(seconds=1))
    assert (await refresh(client, kept["refresh_token"])).status_code == 200

    clock.advance(timedelta(seconds=1))
    assert_refused(await refresh(client, left["refresh_token"]))


async def test_refresh_family_ends_at_its_absolute_lifetime(
    client: httpx.AsyncClient, customer: dict[str, Any], ctx: AppContext, clock: FixedClock
) -> None:
    absolute, idle = ctx.refresh_policy.absolute, ctx.refresh_policy.idle
    token = (await token_login(client, customer["email"]))["refresh_token"]
    step = idle - timedelta(days=1)  # never idle long enough to expire that way
    elapsed = timedelta(0)
    while elapsed + step < absolute:
        clock.advance(step)
        elapsed += step
        response = await refresh(client, token)
        assert response.status_code == 200, (elapsed, response.text)
        token = response.json()["refresh_token"]

    clock.advance(absolute - elapsed)  # the last token is fresh, but the family is over
    assert_refused(await refresh(client, token))


async def test_access_token_from_a_refresh_lives_ten_minutes(
    client: httpx.AsyncClient, customer: dict[str, Any], clock: FixedClock
) -> None:
    first = await token_login(client, customer["email"])
    clock.advance(timedelta(minutes=9))
    rotated = (await refresh(client, first["refresh_token"])).json()
    assert rotated["expires_in"] == 600
    assert datetime.fromisoformat(rotated["expires_at"]) == clock.now() + timedelta(minutes=10)

    clock.advance(timedelta(minutes=1))
    assert (await me(client, first["access_token"])).status_code == 401  # 10 min after login
    assert (await me(client, rotated["access_token"])).status_code == 200

    clock.advance(timedelta(minutes=8, seconds=59))  # 9:59 after the refresh
    assert (await me(client, rotated["access_token"])).status_code == 200
    clock.advance(timedelta(seconds=1))
    expired = await me(client, rotated["access_token"])
    assert expired.status_code == 401
    assert expired.headers["www-authenticate"] == "Bearer"


# -- logout, listing and revocation ------------------------------------------------------


async def test_logout_revokes_the_family(
    client: httpx.AsyncClient, customer: dict[str, Any]
) -> None:
    tokens = await token_login(client, customer["email"])
    rotated = (await refresh(client, tokens["refresh_token"])).json()
    out = await client.post("/v1/auth/logout", json={"refresh_token": rotated["refresh_token"]})
    assert out.status_code == 204
    assert_refused(await refresh(client, rotated["refresh_token"]))
    assert await sign_ins(client, rotated["access_token"]) == []
    # Logging out with an unknown or already revoked token reveals nothing.
    again = await client.post("/v1/auth/logout", json={"refresh_token": rotated["refresh_token"]})
    assert again.status_code == 204


async def test_sessions_lists_refresh_families_and_one_can_be_revoked(
    client: httpx.AsyncClient,
    customer: dict[str, Any],
    staff: dict[str, Any],
    clock: FixedClock,
) -> None:
    phone = await token_login(client, customer["email"])
    clock.advance(timedelta(minutes=1))
    laptop = await token_login(client, customer["email"])
    others = await token_login(client, staff["email"])

    listed = await sign_ins(client, laptop["access_token"])
    assert [s["kind"] for s in listed] == ["refresh_family", "refresh_family"]
    assert all(s["current"] is False for s in listed)
    assert all(s["ip"] == "127.0.0.1" for s in listed)
    assert listed[0]["created_at"] < listed[1]["created_at"]
    assert set(listed[0]) == {
        "id",
        "kind",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "ip",
        "current",
    }
    phone_family = listed[0]["id"]

    # Another user's family is not theirs to revoke, and looks like it does not exist.
    staff_family = (await sign_ins(client, others["access_token"]))[0]["id"]
    foreign = await client.delete(
        f"/v1/auth/sessions/{staff_family}", headers=bearer(laptop["access_token"])
    )
    assert foreign.status_code == 404
    assert (await refresh(client, others["refresh_token"])).status_code == 200

    revoked = await client.delete(
        f"/v1/auth/sessions/{phone_family}", headers=bearer(laptop["access_token"])
    )
    assert revoked.status_code == 204
    assert_refused(await refresh(client, phone["refresh_token"]))
    remaining = await sign_ins(client, laptop["access_token"])
    assert [s["id"] for s in remaining] == [listed[1]["id"]]
    assert (await refresh(client, laptop["refresh_token"])).status_code == 200
    again = await client.delete(
        f"/v1/auth/sessions/{phone_family}", headers=bearer(laptop["access_token"])
    )
    assert again.status_code == 404


async def test_admin_revokes_all_of_a_users_sign_ins(
    client: httpx.AsyncClient, customer: dict[str, Any], admin: dict[str, Any]
) -> None:
    first = await token_login(client, customer["email"])
    second = await token_login(client, customer["email"])
    session = await client.post(
        "/v1/auth/session", json={"email": customer["email"], "password": PASSWORD}
    )
    assert session.status_code == 200
    client.cookies.clear()

    response = await client.delete(f"/v1/users/{customer['id']}/sessions", headers=admin["headers"])
    assert response.status_code == 200, response.text
    assert response.json() == {"sessions": 1, "refresh_families": 2}
    assert_refused(await refresh(client, first["refresh_token"]))
    assert_refused(await refresh(client, second["refresh_token"]))
    use_cookie(client, "__Host-session", set_cookies(session)["__Host-session"].value)
    assert (await client.get("/v1/auth/me")).status_code == 401
    client.cookies.clear()

    # Only admins may do it.
    refused = await client.delete(
        f"/v1/users/{admin['id']}/sessions", headers=bearer(second["access_token"])
    )
    assert refused.status_code == 403


async def test_disabling_a_user_ends_access_and_refresh_at_once(
    client: httpx.AsyncClient, customer: dict[str, Any], admin: dict[str, Any]
) -> None:
    tokens = await token_login(client, customer["email"])
    assert (await me(client, tokens["access_token"])).status_code == 200

    disabled = await client.patch(
        f"/v1/users/{customer['id']}", json={"is_active": False}, headers=admin["headers"]
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["is_active"] is False
    assert "password_hash" not in disabled.json()

    denied = await me(client, tokens["access_token"])  # well before the token's expiry
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == "Bearer"
    assert_refused(await refresh(client, tokens["refresh_token"]))
    assert (await login(client, customer["email"])).status_code == 401

    # Re-enabling does not resurrect the revoked family: the user must sign in again.
    enabled = await client.patch(
        f"/v1/users/{customer['id']}", json={"is_active": True}, headers=admin["headers"]
    )
    assert enabled.status_code == 200
    assert_refused(await refresh(client, tokens["refresh_token"]))
    assert (await login(client, customer["email"])).status_code == 200


async def test_role_change_ends_sign_ins(
    client: httpx.AsyncClient, staff: dict[str, Any], admin: dict[str, Any]
) -> None:
    tokens = await token_login(client, staff["email"])
    changed = await client.patch(
        f"/v1/users/{staff['id']}", json={"role": "customer"}, headers=admin["headers"]
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["role"] == "customer"
    assert_refused(await refresh(client, tokens["refresh_token"]))
    # The access token still identifies the user, but the role comes from the database:
    # the demoted user has lost the staff scopes immediately.
    body = (await me(client, tokens["access_token"])).json()
    assert "catalog:write" not in body["scopes"]
    write = await client.post(
        "/v1/locations",
        json={"code": "DEMOTED", "name": "x"},
        headers=bearer(tokens["access_token"]),
    )
    assert write.status_code == 403

    # Re-sending the same role is not a privilege change: sign-ins survive it.
    fresh = await token_login(client, staff["email"])
    same = await client.patch(
        f"/v1/users/{staff['id']}", json={"role": "customer"}, headers=admin["headers"]
    )
    assert same.status_code == 200
    assert (await refresh(client, fresh["refresh_token"])).status_code == 200


async def test_admin_cannot_disable_or_demote_themselves(
    client: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    for change in ({"is_active": False}, {"role": "customer"}):
        response = await client.patch(
            f"/v1/users/{admin['id']}", json=change, headers=admin["headers"]
        )
        assert response.status_code == 409
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "cannot_modify_self"
    assert (await client.get("/v1/auth/me", headers=admin["headers"])).json()["user"][
        "role"
    ] == "admin"


# -- browser token mode: the refresh token lives in a __Host- cookie ---------------------


async def test_browser_login_puts_the_refresh_token_only_in_a_host_cookie(
    client: httpx.AsyncClient, customer: dict[str, Any], ctx: AppContext
) -> None:
    response = await login(client, customer["email"], headers={"Origin": SAME_ORIGIN})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("refresh_token") is None
    assert body["access_token"]

    cookies = set_cookies(response)
    assert list(cookies) == [REFRESH_COOKIE]
    cookie = cookies[REFRESH_COOKIE]
    assert len(cookie.value) >= 40
    assert cookie.value not in response.text  # not in the body
    attrs = cookie.attributes
    assert "secure" in attrs
    assert "httponly" in attrs
    assert attrs["samesite"].lower() == "strict"
    assert attrs["path"] == "/"
    assert "domain" not in attrs  # __Host-: bound to this exact host
    assert int(attrs["max-age"]) == int(ctx.refresh_policy.absolute.total_seconds())

    # The cookie refreshes (the jar sends it back, as a browser would) and is rotated.
    client.cookies.clear()
    use_cookie(client, REFRESH_COOKIE, cookie.value)
    rotated = await client.post("/v1/auth/token/refresh", headers={"Origin": SAME_ORIGIN})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json().get("refresh_token") is None
    new_cookie = set_cookies(rotated)[REFRESH_COOKIE]
    assert new_cookie.value != cookie.value
    assert new_cookie.attributes["samesite"].lower() == "strict"
    assert (await me(client, rotated.json()["access_token"])).status_code == 200

    # The old cookie value is now a reused token: refused, and the family is revoked.
    use_cookie(client, REFRESH_COOKIE, cookie.value)
    assert_refused(await client.post("/v1/auth/token/refresh", headers={"Origin": SAME_ORIGIN}))
    use_cookie(client, REFRESH_COOKIE, new_cookie.value)
    assert_refused(await client.post("/v1/auth/token/refresh", headers={"Origin": SAME_ORIGIN}))


async def test_browser_refresh_from_a_foreign_origin_is_refused(
    client: httpx.AsyncClient, customer: dict[str, Any]
) -> None:
    response = await login(client, customer["email"], headers={"Origin": SAME_ORIGIN})
    cookie = set_cookies(response)[REFRESH_COOKIE].value
    use_cookie(client, REFRESH_COOKIE, cookie)

    refused = await client.post("/v1/auth/token/refresh", headers={"Origin": FOREIGN_ORIGIN})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json()["code"] == "csrf_failed"
    assert "set-cookie" not in refused.headers

    # Refused before rotating: the cookie was not consumed and still works same-origin.
    fine = await client.post("/v1/auth/token/refresh", headers={"Origin": SAME_ORIGIN})
    assert fine.status_code == 200, fine.text


async def test_browser_login_from_a_foreign_origin_is_refused_without_side_effects(
    client: httpx.AsyncClient, customer: dict[str, Any]
) -> None:
    refused = await login(client, customer["email"], headers={"Origin": FOREIGN_ORIGIN})
    assert refused.status_code == 403
    assert refused.json()["code"] == "csrf_failed"
    assert "set-cookie" not in refused.headers
    assert "access_token" not in refused.text

    tokens = await token_login(client, customer["email"])
    # Only the one real login shows up as a sign-in; the refused one left nothing behind.
    assert len(await sign_ins(client, tokens["access_token"])) == 1


async def test_browser_logout_clears_the_cookie_and_ends_the_family(
    client: httpx.AsyncClient, customer: dict[str, Any]
) -> None:
    response = await login(client, customer["email"], headers={"Origin": SAME_ORIGIN})
    cookie = set_cookies(response)[REFRESH_COOKIE].value
    use_cookie(client, REFRESH_COOKIE, cookie)
    out = await client.post("/v1/auth/logout", headers={"Origin": SAME_ORIGIN})
    assert out.status_code == 204
    cleared = set_cookies(out)[REFRESH_COOKIE]
    assert cleared.value == ""
    assert cleared.attributes["max-age"] == "0"
    use_cookie(client, REFRESH_COOKIE, cookie)
    assert_refused(await client.post("/v1/auth/token/refresh", headers={"Origin": SAME_ORIGIN}))


# -- JWT: kid header and signing-key rotation --------------------------------------------


async def test_access_token_names_its_signing_key(
    client: httpx.AsyncClient, customer: dict[str, Any], ctx: AppContext
) -> None:
    token = (await token_login(client, customer["email"]))["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["kid"] == ctx.settings.jwt_key_id
    assert header["alg"] == "HS256"


async def test_previous_key_still_verifies_after_rotation_and_unknown_kid_fails(
    database_url: str, clock: FixedClock, customer: dict[str, Any], ctx: AppContext
) -> None:
    # A token issued by the app as it was, signed with key "k1".
    old_token, _ = ctx.tokens.issue(user_id=customer["id"], role="customer", now=clock.now())
    old_secret = ctx.settings.jwt_secret.get_secret_value()
    new_secret = "rotated-signing-key-" + "n" * 40

    rotated = build_settings(
        database_url,
        jwt_key_id="k2",
        jwt_secret=new_secret,
        jwt_previous_keys={"k1": old_secret},
    )
    async with running_app(rotated, clock) as app, client_for(app) as c:
        new_token = (await token_login(c, customer["email"]))["access_token"]
        assert jwt.get_unverified_header(new_token)["kid"] == "k2"  # the new key signs
        assert (await me(c, new_token)).status_code == 200
        assert (await me(c, old_token)).status_code == 200  # the old key still verifies

        # Same key material under an unknown kid: refused before any signature check.
        unknown = TokenIssuer(
            keys={"k9": new_secret.encode()},
            signing_kid="k9",
            issuer=rotated.jwt_issuer,
            ttl=timedelta(minutes=10),
        ).issue(user_id=customer["id"], role="customer", now=clock.now())[0]
        assert (await me(c, unknown)).status_code == 401
        # A known kid with the wrong key: the signature fails.
        forged = jwt.encode(
            jwt.decode(new_token, options={"verify_signature": False}),
            "attacker-key-" + "a" * 40,
            algorithm="HS256",
            headers={"kid": "k2"},
        )
        assert (await me(c, forged)).status_code == 401
        # alg=none is never accepted.
        unsigned = jwt.encode(
            jwt.decode(new_token, options={"verify_signature": False}),
            None,
            algorithm="none",
            headers={"kid": "k2"},
        )
        assert (await me(c, unsigned)).status_code == 401

    # Once the old key is retired, its tokens stop verifying.
    retired = build_settings(database_url, jwt_key_id="k2", jwt_secret=new_secret)
    async with running_app(retired, clock) as app, client_for(app) as c:
        assert (await me(c, old_token)).status_code == 401
        assert (await me(c, new_token)).status_code == 200

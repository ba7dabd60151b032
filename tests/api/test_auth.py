"""Registration, login, tokens, disabled users, API keys and password rehashing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from shelfwise.clock import FixedClock
from shelfwise.context import AppContext
from shelfwise.identity.models import Role
from shelfwise.identity.passwords import PasswordHasher
from shelfwise.identity.scopes import ROLE_SCOPES, Scope
from tests.support import PASSWORD

PROBLEM = "application/problem+json"
ALL_SCOPES = sorted(scope.value for scope in Scope)
CUSTOMER_SCOPES = sorted(scope.value for scope in ROLE_SCOPES[Role.CUSTOMER])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@example.com"


async def register(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **extra: Any
) -> httpx.Response:
    return await client.post(
        "/v1/auth/register", json={"email": email, "password": password, **extra}
    )


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"email": email, "password": password})


async def token_for(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    response = await login(client, email, password)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def stored_hash(ctx: AppContext, email: str) -> str:
    async with ctx.db.engine.connect() as conn:
        value = await conn.scalar(
            text("SELECT password_hash FROM users WHERE email = :email"), {"email": email}
        )
    assert isinstance(value, str)
    return value


async def set_active(ctx: AppContext, user_id: Any, active: bool) -> None:
    async with ctx.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE users SET is_active = :active WHERE id = :id"),
            {"active": active, "id": user_id},
        )


def without_request_id(response: httpx.Response) -> dict[str, Any]:
    body = dict(response.json())
    body.pop("request_id")
    return body


# -- registration ------------------------------------------------------------------------


async def test_register_creates_a_customer_without_exposing_the_hash(
    client: httpx.AsyncClient,
) -> None:
    response = await register(client, "New.Person@Example.com", full_name="New Person")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "email", "full_name", "role", "is_active", "created_at"}
    assert body["email"] == "new.person@example.com"  # normalised
    assert body["role"] == "customer"
    assert body["is_active"] is True
    assert body["full_name"] == "New Person"
    assert "password" not in response.text
    assert "argon2" not in response.text
    assert "no-store" in response.headers["cache-control"]


async def test_register_cannot_choose_a_role(client: httpx.AsyncClient) -> None:
    response = await register(client, new_email(), role="admin")
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.role"]


async def test_duplicate_email_is_a_409_problem(client: httpx.AsyncClient) -> None:
    email = new_email()
    assert (await register(client, email)).status_code == 201
    for again in (email, email.upper()):
        response = await register(client, again)
        assert response.status_code == 409
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "email_unavailable"


@pytest.mark.parametrize("length", [1, 11])
async def test_weak_password_is_a_422_on_the_password_field(
    client: httpx.AsyncClient, length: int
) -> None:
    response = await register(client, new_email(), password="p" * length)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert [e["field"] for e in response.json()["errors"]] == ["body.password"]


async def test_password_over_the_maximum_is_refused(client: httpx.AsyncClient) -> None:
    response = await register(client, new_email(), password="p" * 129)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.password"]


async def test_invalid_email_is_refused(client: httpx.AsyncClient) -> None:
    response = await register(client, "not-an-email")
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.email"]


# -- login and tokens --------------------------------------------------------------------


async def test_login_returns_a_token_and_me_shows_the_user(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    email = new_email()
    user_id = (await register(client, email)).json()["id"]
    response = await login(client, "  " + email.upper() + " ", PASSWORD)
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    token = response.json()
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == int(ctx.tokens.ttl.total_seconds())
    assert datetime.fromisoformat(token["expires_at"]) == clock.now() + ctx.tokens.ttl

    me = await client.get("/v1/auth/me", headers=bearer(token["access_token"]))
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["kind"] == "user"
    assert body["id"] == user_id
    assert body["user"]["email"] == email
    assert body["user"]["role"] == "customer"
    assert "password_hash" not in body["user"]
    assert body["scopes"] == CUSTOMER_SCOPES
    assert {"catalog:read", "stock:read"} <= set(body["scopes"])
    assert "catalog:write" not in body["scopes"]


async def test_staff_has_every_scope(client: httpx.AsyncClient, staff: dict[str, Any]) -> None:
    body = (await client.get("/v1/auth/me", headers=staff["headers"])).json()
    assert body["user"]["role"] == "staff"
    assert body["scopes"] == ALL_SCOPES


async def test_wrong_password_and_unknown_email_are_indistinguishable(
    client: httpx.AsyncClient,
) -> None:
    email = new_email()
    assert (await register(client, email)).status_code == 201
    wrong_password = await login(client, email, "not-the-right-password")
    unknown_email = await login(client, new_email(), "not-the-right-password")

    assert wrong_password.status_code == unknown_email.status_code == 401
    assert without_request_id(wrong_password) == without_request_id(unknown_email)
    assert wrong_password.json()["code"] == "invalid_credentials"
    for header in ("content-type", "www-authenticate", "cache-control"):
        assert wrong_password.headers.get(header) == unknown_email.headers.get(header)


async def test_disabled_user_cannot_log_in_and_loses_their_token(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    email = new_email()
    user_id = (await register(client, email)).json()["id"]
    token = await token_for(client, email)
    assert (await client.get("/v1/auth/me", headers=bearer(token))).status_code == 200

    await set_active(ctx, user_id, False)

    refused = await login(client, email)
    assert refused.status_code == 401
    # Same answer as a wrong password: a disabled account is not revealed either.
    wrong = await login(client, new_email())
    assert without_request_id(refused) == without_request_id(wrong)

    me = await client.get("/v1/auth/me", headers=bearer(token))
    assert me.status_code == 401
    assert me.headers["www-authenticate"] == "Bearer"

    await set_active(ctx, user_id, True)
    assert (await client.get("/v1/auth/me", headers=bearer(token))).status_code == 200


async def test_token_expires_with_the_injected_clock(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    email = new_email()
    await register(client, email)
    token = await token_for(client, email)

    clock.advance(ctx.tokens.ttl - timedelta(seconds=1))
    assert (await client.get("/v1/auth/me", headers=bearer(token))).status_code == 200

    clock.advance(timedelta(seconds=1))
    expired = await client.get("/v1/auth/me", headers=bearer(token))
    assert expired.status_code == 401
    assert expired.headers["content-type"] == PROBLEM
    assert expired.headers["www-authenticate"] == "Bearer"


async def test_token_of_a_deleted_user_is_refused(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    email = new_email()
    user_id = (await register(client, email)).json()["id"]
    token = await token_for(client, email)
    async with ctx.db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})
    assert (await client.get("/v1/auth/me", headers=bearer(token))).status_code == 401


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "bearer-but-not-really",
        "Bearer sw_",
        "Bearer sw_nounderscore",
        "Bearer sw_deadbeef0000_wrong-secret",
    ],
)
async def test_malformed_bearer_is_a_401(client: httpx.AsyncClient, authorization: str) -> None:
    response = await client.get("/v1/auth/me", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == "Bearer"


# -- API keys ----------------------------------------------------------------------------


async def create_key(
    client: httpx.AsyncClient, headers: dict[str, str], scopes: list[str], name: str = "ci"
) -> httpx.Response:
    return await client.post("/v1/api-keys", json={"name": name, "scopes": scopes}, headers=headers)


async def test_api_key_lifecycle(
    client: httpx.AsyncClient, admin: dict[str, Any], clock: FixedClock
) -> None:
    created = await create_key(client, admin["headers"], ["catalog:read", "stock:read"])
    assert created.status_code == 201, created.text
    assert "no-store" in created.headers["cache-control"]
    key = created.json()
    secret = key["secret"]
    assert secret.startswith("sw_")
    assert secret.startswith(f"sw_{key['prefix']}_")
    assert key["scopes"] == ["catalog:read", "stock:read"]
    assert key["revoked_at"] is None

    listed = await client.get("/v1/api-keys", headers=admin["headers"])
    assert listed.status_code == 200
    assert [k["id"] for k in listed.json()] == [key["id"]]
    assert "secret" not in listed.json()[0]
    assert secret.split("_", 2)[2] not in listed.text

    me = await client.get("/v1/auth/me", headers=bearer(secret))
    assert me.status_code == 200, me.text
    assert me.json() == {
        "kind": "api_key",
        "id": key["id"],
        "scopes": ["catalog:read", "stock:read"],
        "user": None,
    }
    used = (await client.get("/v1/api-keys", headers=admin["headers"])).json()[0]
    assert datetime.fromisoformat(used["last_used_at"]) == clock.now()

    revoked = await client.delete(f"/v1/api-keys/{key['id']}", headers=admin["headers"])
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None

    after = await client.get("/v1/auth/me", headers=bearer(secret))
    assert after.status_code == 401
    assert after.headers["www-authenticate"] == "Bearer"


async def test_api_key_with_a_tampered_secret_is_refused(
    client: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    secret = (await create_key(client, admin["headers"], ["catalog:read"])).json()["secret"]
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert (await client.get("/v1/auth/me", headers=bearer(tampered))).status_code == 401


async def test_api_key_scopes_limit_what_it_may_do(
    client: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    secret = (await create_key(client, admin["headers"], ["catalog:read"])).json()["secret"]
    response = await client.post(
        "/v1/products",
        json={"sku": "KEY-1", "name": "Mug", "price_minor": 1, "currency": "EUR"},
        headers=bearer(secret),
    )
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    stock = await client.get("/v1/stock", headers=bearer(secret))
    assert stock.status_code == 403


async def test_revoking_an_unknown_key_is_a_404(
    client: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    response = await client.delete(f"/v1/api-keys/{uuid.uuid4()}", headers=admin["headers"])
    assert response.status_code == 404


@pytest.mark.parametrize("role", ["customer", "staff"])
async def test_non_admins_cannot_manage_keys(
    client: httpx.AsyncClient, customer: dict[str, Any], staff: dict[str, Any], role: str
) -> None:
    headers = {"customer": customer, "staff": staff}[role]["headers"]
    assert (await create_key(client, headers, ["catalog:read"])).status_code == 403
    assert (await client.get("/v1/api-keys", headers=headers)).status_code == 403
    assert (await client.delete(f"/v1/api-keys/{uuid.uuid4()}", headers=headers)).status_code == 403


async def test_api_key_cannot_create_keys_even_with_every_scope(
    client: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    secret = (await create_key(client, admin["headers"], ALL_SCOPES)).json()["secret"]
    response = await create_key(client, bearer(secret), ["catalog:read"])
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert (await client.get("/v1/api-keys", headers=bearer(secret))).status_code == 403


async def test_api_key_request_validation(client: httpx.AsyncClient, admin: dict[str, Any]) -> None:
    response = await create_key(client, admin["headers"], [])
    assert response.status_code == 422
    response = await create_key(client, admin["headers"], ["root"])
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].startswith("body.scopes")


async def test_anonymous_cannot_manage_keys(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/api-keys")
    assert response.status_code == 401


# -- password rehash ---------------------------------------------------------------------


async def test_login_rehashes_when_argon2_parameters_change(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    email = new_email()
    assert (await register(client, email)).status_code == 201
    original = await stored_hash(ctx, email)
    assert ctx.hasher.needs_rehash(original) is False

    old_hasher = ctx.hasher
    stronger = PasswordHasher(
        memory_kib=ctx.settings.argon2_memory_kib,
        time_cost=ctx.settings.argon2_time_cost + 1,
        parallelism=ctx.settings.argon2_parallelism,
    )
    ctx.hasher = stronger  # the app's lifespan closes whatever hasher is current
    old_hasher.close()

    assert stronger.needs_rehash(original) is True
    await token_for(client, email)  # the old hash still verifies...
    upgraded = await stored_hash(ctx, email)
    assert upgraded != original  # ...and is replaced on the way
    assert f"t={ctx.settings.argon2_time_cost + 1}" in upgraded
    assert stronger.needs_rehash(upgraded) is False

    await token_for(client, email)  # the new hash verifies and is left alone
    assert await stored_hash(ctx, email) == upgraded


async def test_failed_login_does_not_rehash(client: httpx.AsyncClient, ctx: AppContext) -> None:
    email = new_email()
    await register(client, email)
    original = await stored_hash(ctx, email)
    old_hasher = ctx.hasher
    ctx.hasher = PasswordHasher(
        memory_kib=ctx.settings.argon2_memory_kib,
        time_cost=ctx.settings.argon2_time_cost + 1,
        parallelism=ctx.settings.argon2_parallelism,
    )
    old_hasher.close()
    assert (await login(client, email, "not-the-right-password")).status_code == 401
    assert await stored_hash(ctx, email) == original

"""The authorization matrix: every route and every kind of caller, with the exact status.

The table below is the single statement of who may call what. The first assertion ties it
to the OpenAPI document, so a new route without a row fails here until someone decides
who may call it. Every request is otherwise valid (real ids, valid bodies, the current
ETag in `If-Match`), so the status reflects authorization alone; mutating requests get
fresh objects so the order of the loop does not matter. A refused request (401/403) must
also leave the database exactly as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from shelfwise.app import create_app
from shelfwise.clock import FixedClock
from shelfwise.config import Environment, Settings
from shelfwise.context import AppContext
from shelfwise.identity.models import Role
from shelfwise.identity.scopes import Scope
from tests.support import (
    PASSWORD,
    create_location,
    create_product,
    make_user,
    product_body,
    receive_stock,
)

ANON, CUSTOMER, STAFF, ADMIN, KEY_ALL, KEY_READ = (
    "anonymous",
    "customer",
    "staff",
    "admin",
    "api_key_all_scopes",
    "api_key_catalog_read",
)
ROLES = (ANON, CUSTOMER, STAFF, ADMIN, KEY_ALL, KEY_READ)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The loop calls each debug route once per caller from one address: more than the
    # default per-IP debug limit (10/minute), which is not what this matrix is about.
    return settings.model_copy(update={"rate_limit_debug": "1000/minute"})


def expect(
    anon: int, customer: int, staff: int, admin: int, key_all: int, key_read: int
) -> dict[str, int]:
    return dict(zip(ROLES, (anon, customer, staff, admin, key_all, key_read), strict=True))


def public(status: int) -> dict[str, int]:
    return expect(status, status, status, status, status, status)


def authenticated(status: int) -> dict[str, int]:
    """Any principal (user of any role, API key of any scope)."""
    return expect(401, status, status, status, status, status)


def catalog_reader(status: int) -> dict[str, int]:
    """`catalog:read`: every role, and keys that carry it."""
    return expect(401, status, status, status, status, status)


def catalog_writer(status: int) -> dict[str, int]:
    return expect(401, 403, status, status, status, 403)


def stock_reader(status: int) -> dict[str, int]:
    return expect(401, status, status, status, status, 403)


def stock_writer(status: int) -> dict[str, int]:
    return expect(401, 403, status, status, status, 403)


def ledger_reader(status: int) -> dict[str, int]:
    return expect(401, 403, status, status, status, 403)


def order_reader(status: int) -> dict[str, int]:
    """`orders:read`: customers see their own orders, staff and admins every order."""
    return expect(401, status, status, status, status, 403)


def order_writer(status: int) -> dict[str, int]:
    return expect(401, status, status, status, status, 403)


def order_manager(status: int) -> dict[str, int]:
    """`orders:manage` (fulfilment, every order): staff, admins, fully scoped keys."""
    return expect(401, 403, status, status, status, 403)


def admin_role(status: int) -> dict[str, int]:
    """The admin *role*: API keys never pass, whatever their scopes."""
    return expect(401, 403, 403, status, 403, 403)


@dataclass
class Call:
    path: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    drain_hub: bool = False
    content: bytes | None = None  # a raw body (uploads) instead of JSON


@dataclass
class World:
    client: httpx.AsyncClient
    credentials: dict[str, dict[str, str]]
    login_email: str
    product: dict[str, Any]
    location: dict[str, Any]
    other_location: dict[str, Any]
    ctx: AppContext | None = None

    @property
    def admin_headers(self) -> dict[str, str]:
        return self.credentials[ADMIN]

    async def fresh_product(self) -> dict[str, Any]:
        return await create_product(self.client, self.admin_headers)

    async def fresh_api_key(self) -> str:
        response = await self.client.post(
            "/v1/api-keys",
            json={"name": "to revoke", "scopes": ["catalog:read"]},
            headers=self.admin_headers,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def fresh_order(self, role: str, *, confirmed: bool = False) -> str:
        """An order the caller may see: their own, or (for callers who cannot place one) a
        customer's, so the refusal they get is about authorization, not about the object."""
        placer = role if role in (CUSTOMER, STAFF, ADMIN, KEY_ALL) else CUSTOMER
        headers = self.credentials[placer]
        response = await self.client.post(
            "/v1/orders",
            json=order_body(self),
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text
        order_id = str(response.json()["id"])
        if confirmed:
            response = await self.client.post(f"/v1/orders/{order_id}/confirm", headers=headers)
            assert response.status_code == 200, response.text
        return order_id


Builder = Callable[[World, str], Awaitable[Call]]


def order_body(w: World) -> dict[str, Any]:
    return {"lines": [{"product_id": w.product["id"], "quantity": 1}]}


async def _register(w: World, role: str) -> Call:
    return Call(
        "/v1/auth/register",
        json={"email": f"new-{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD},
    )


async def _login(w: World, role: str) -> Call:
    return Call("/v1/auth/login", json={"email": w.login_email, "password": PASSWORD})


async def _me(w: World, role: str) -> Call:
    return Call("/v1/auth/me")


async def _create_key(w: World, role: str) -> Call:
    return Call("/v1/api-keys", json={"name": "integration", "scopes": ["stock:read"]})


async def _list_keys(w: World, role: str) -> Call:
    return Call("/v1/api-keys")


async def _revoke_key(w: World, role: str) -> Call:
    return Call(f"/v1/api-keys/{await w.fresh_api_key()}")


async def _list_products(w: World, role: str) -> Call:
    return Call("/v1/products", params={"sort": "name", "limit": "5"})


async def _create_product(w: World, role: str) -> Call:
    return Call("/v1/products", json=product_body())


async def _get_product(w: World, role: str) -> Call:
    return Call(f"/v1/products/{w.product['id']}")


async def _patch_product(w: World, role: str) -> Call:
    product = await w.fresh_product()
    return Call(
        f"/v1/products/{product['id']}",
        json={"name": "Renamed mug", "price_minor": 1499},
        headers={"If-Match": f'"v{product["version"]}"'},
    )


async def _delete_product(w: World, role: str) -> Call:
    product = await w.fresh_product()
    return Call(f"/v1/products/{product['id']}", headers={"If-Match": f'"v{product["version"]}"'})


async def _create_location(w: World, role: str) -> Call:
    return Call("/v1/locations", json={"code": f"L-{uuid.uuid4().hex[:8]}", "name": "Back room"})


async def _list_locations(w: World, role: str) -> Call:
    return Call("/v1/locations")


async def _get_location(w: World, role: str) -> Call:
    return Call(f"/v1/locations/{w.location['id']}")


async def _list_stock(w: World, role: str) -> Call:
    return Call("/v1/stock", params={"product_id": w.product["id"]})


async def _stock_overview(w: World, role: str) -> Call:
    return Call("/v1/stock/overview", params={"q": "mug", "low": "true"})


async def _user_contacts(w: World, role: str) -> Call:
    return Call("/v1/users/contacts", params={"id": str(uuid.uuid4())})


async def _adjust_stock(w: World, role: str) -> Call:
    return Call(
        "/v1/stock/adjustments",
        json={
            "product_id": w.product["id"],
            "location_id": w.location["id"],
            "kind": "receipt",
            "quantity": 2,
            "reason": "authz matrix",
        },
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )


async def _transfer_stock(w: World, role: str) -> Call:
    return Call(
        "/v1/stock/transfers",
        json={
            "product_id": w.product["id"],
            "from_location_id": w.location["id"],
            "to_location_id": w.other_location["id"],
            "quantity": 1,
            "reason": "authz matrix",
        },
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )


async def _list_movements(w: World, role: str) -> Call:
    return Call("/v1/stock/movements", params={"product_id": w.product["id"]})


async def _place_order(w: World, role: str) -> Call:
    return Call("/v1/orders", json=order_body(w), headers={"Idempotency-Key": uuid.uuid4().hex})


async def _list_orders(w: World, role: str) -> Call:
    return Call("/v1/orders")


async def _get_order(w: World, role: str) -> Call:
    return Call(f"/v1/orders/{await w.fresh_order(role)}")


async def _confirm_order(w: World, role: str) -> Call:
    return Call(f"/v1/orders/{await w.fresh_order(role)}/confirm")


async def _cancel_order(w: World, role: str) -> Call:
    return Call(f"/v1/orders/{await w.fresh_order(role)}/cancel")


async def _fulfil_order(w: World, role: str) -> Call:
    return Call(f"/v1/orders/{await w.fresh_order(role, confirmed=True)}/fulfil")


async def _fresh_refresh_token(w: World) -> str:
    response = await w.client.post(
        "/v1/auth/login", json={"email": w.login_email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["refresh_token"])


async def _refresh(w: World, role: str) -> Call:
    return Call("/v1/auth/token/refresh", json={"refresh_token": await _fresh_refresh_token(w)})


async def _logout(w: World, role: str) -> Call:
    return Call("/v1/auth/logout", json={"refresh_token": await _fresh_refresh_token(w)})


async def _session_sign_in(w: World, role: str) -> Call:
    return Call("/v1/auth/session", json={"email": w.login_email, "password": PASSWORD})


async def _session_sign_out(w: World, role: str) -> Call:
    return Call("/v1/auth/session")


async def _csrf(w: World, role: str) -> Call:
    return Call("/v1/auth/csrf")


async def _list_sign_ins(w: World, role: str) -> Call:
    return Call("/v1/auth/sessions")


async def _revoke_sign_in(w: World, role: str) -> Call:
    # Nobody's sign-in: authorization passes for any principal, the object does not exist.
    return Call(f"/v1/auth/sessions/{uuid.uuid4()}")


async def _fresh_user_id(w: World) -> str:
    response = await w.client.post(
        "/v1/auth/register",
        json={"email": f"target-{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _list_users(w: World, role: str) -> Call:
    return Call("/v1/users")


async def _patch_user(w: World, role: str) -> Call:
    return Call(f"/v1/users/{await _fresh_user_id(w)}", json={"role": "staff"})


async def _end_user_sign_ins(w: World, role: str) -> Call:
    return Call(f"/v1/users/{await _fresh_user_id(w)}/sessions")


def session_only(status: int) -> dict[str, int]:
    """Authenticated, but only meaningful for a browser session: Bearer callers get 404."""
    return expect(401, status, status, status, status, status)


def staff_role(status: int) -> dict[str, int]:
    """The staff or admin *role* (job status): API keys never pass."""
    return expect(401, 403, status, status, 403, 403)


async def _list_jobs(w: World, role: str) -> Call:
    return Call("/v1/admin/jobs", params={"status": "failed"})


async def _retry_job(w: World, role: str) -> Call:
    # No such job: authorization is decided before the object is looked up.
    return Call("/v1/admin/jobs/987654321/retry")


async def _get_job(w: World, role: str) -> Call:
    return Call("/v1/jobs/987654321")


async def _poll(w: World, role: str) -> Call:
    # Without `since` the long-poll answers at once with the current position.
    return Call("/v1/poll", params={"channels": "stock"})


async def _stream(w: World, role: str) -> Call:
    # A stream never ends, and the in-process transport waits for the end of a response.
    # So the hub is marked draining for this call: whoever passes authorization then gets
    # 503 `draining` at once instead of an endless 200 (see the loop).
    return Call("/v1/stream", params={"channels": "stock"}, drain_hub=True)


WEBHOOK_URL = "https://93.184.215.14/hook"  # a public address: passes the SSRF check


async def _fresh_webhook(w: World) -> str:
    response = await w.client.post(
        "/v1/webhooks",
        json={"url": WEBHOOK_URL, "event_types": ["product.created"]},
        headers=w.admin_headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _create_webhook(w: World, role: str) -> Call:
    return Call("/v1/webhooks", json={"url": WEBHOOK_URL, "event_types": ["*"]})


async def _list_webhooks(w: World, role: str) -> Call:
    return Call("/v1/webhooks")


async def _get_webhook(w: World, role: str) -> Call:
    return Call(f"/v1/webhooks/{await _fresh_webhook(w)}")


async def _patch_webhook(w: World, role: str) -> Call:
    return Call(f"/v1/webhooks/{await _fresh_webhook(w)}", json={"paused": True})


async def _delete_webhook(w: World, role: str) -> Call:
    return Call(f"/v1/webhooks/{await _fresh_webhook(w)}")


async def _list_deliveries(w: World, role: str) -> Call:
    return Call(f"/v1/webhooks/{await _fresh_webhook(w)}/deliveries")


async def _redeliver(w: World, role: str) -> Call:
    # No such delivery: authorization is decided before the object is looked up.
    return Call(f"/v1/webhooks/{await _fresh_webhook(w)}/deliveries/987654321/redeliver")


async def _rotate_secret(w: World, role: str) -> Call:
    return Call(f"/v1/webhooks/{await _fresh_webhook(w)}/rotate-secret")


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def _put_image(w: World, role: str) -> Call:
    return Call(f"/v1/products/{w.product['id']}/image", content=PNG)


async def _get_image(w: World, role: str) -> Call:
    product = await w.fresh_product()
    path = f"/v1/products/{product['id']}/image"
    response = await w.client.put(path, content=PNG, headers=w.admin_headers)
    assert response.status_code == 200, response.text
    return Call(path)


async def _start_import(w: World, role: str) -> Call:
    return Call(
        "/v1/imports",
        content=b"sku,name,price_minor,currency\nM-1,Mug,1,EUR\n",
        headers={"Content-Type": "text/csv"},
    )


async def _debug_tasks(w: World, role: str) -> Call:
    return Call("/v1/admin/debug/tasks")


async def _debug_profile(w: World, role: str) -> Call:
    # The shortest profile there is: the matrix is about who may take one, not about it.
    return Call("/v1/admin/debug/profile", params={"seconds": "0.01", "format": "speedscope"})


DEBUG_ROUTES = {
    ("GET", "/v1/admin/debug/tasks"): _debug_tasks,
    ("GET", "/v1/admin/debug/profile"): _debug_profile,
}


# (method, path template) -> (expected status per caller, how to build a valid request)
MATRIX: dict[tuple[str, str], tuple[dict[str, int], Builder]] = {
    ("POST", "/v1/auth/register"): (public(201), _register),
    ("POST", "/v1/auth/login"): (public(200), _login),
    ("GET", "/v1/auth/me"): (authenticated(200), _me),
    ("POST", "/v1/api-keys"): (admin_role(201), _create_key),
    ("GET", "/v1/api-keys"): (admin_role(200), _list_keys),
    ("DELETE", "/v1/api-keys/{key_id}"): (admin_role(200), _revoke_key),
    ("GET", "/v1/products"): (public(200), _list_products),
    ("POST", "/v1/products"): (catalog_writer(201), _create_product),
    ("GET", "/v1/products/{product_id}"): (public(200), _get_product),
    ("PATCH", "/v1/products/{product_id}"): (catalog_writer(200), _patch_product),
    ("DELETE", "/v1/products/{product_id}"): (catalog_writer(204), _delete_product),
    ("PUT", "/v1/products/{product_id}/image"): (catalog_writer(200), _put_image),
    ("POST", "/v1/imports"): (catalog_writer(202), _start_import),
    ("GET", "/v1/products/{product_id}/image"): (public(200), _get_image),
    ("POST", "/v1/locations"): (catalog_writer(201), _create_location),
    ("GET", "/v1/locations"): (catalog_reader(200), _list_locations),
    ("GET", "/v1/locations/{location_id}"): (catalog_reader(200), _get_location),
    ("GET", "/v1/stock"): (stock_reader(200), _list_stock),
    ("GET", "/v1/stock/overview"): (stock_reader(200), _stock_overview),
    ("POST", "/v1/stock/adjustments"): (stock_writer(201), _adjust_stock),
    ("POST", "/v1/stock/transfers"): (stock_writer(201), _transfer_stock),
    ("GET", "/v1/stock/movements"): (ledger_reader(200), _list_movements),
    ("POST", "/v1/orders"): (order_writer(201), _place_order),
    ("GET", "/v1/orders"): (order_reader(200), _list_orders),
    ("GET", "/v1/orders/{order_id}"): (order_reader(200), _get_order),
    ("POST", "/v1/orders/{order_id}/confirm"): (order_writer(200), _confirm_order),
    ("POST", "/v1/orders/{order_id}/cancel"): (order_writer(200), _cancel_order),
    ("POST", "/v1/orders/{order_id}/fulfil"): (order_manager(200), _fulfil_order),
    ("POST", "/v1/auth/token/refresh"): (public(200), _refresh),
    ("POST", "/v1/auth/logout"): (public(204), _logout),
    ("POST", "/v1/auth/session"): (public(200), _session_sign_in),
    ("DELETE", "/v1/auth/session"): (authenticated(204), _session_sign_out),
    ("GET", "/v1/auth/csrf"): (session_only(404), _csrf),
    ("GET", "/v1/auth/sessions"): (authenticated(200), _list_sign_ins),
    ("DELETE", "/v1/auth/sessions/{sign_in_id}"): (authenticated(404), _revoke_sign_in),
    ("GET", "/v1/users"): (admin_role(200), _list_users),
    ("GET", "/v1/users/contacts"): (staff_role(200), _user_contacts),
    ("PATCH", "/v1/users/{user_id}"): (admin_role(200), _patch_user),
    ("DELETE", "/v1/users/{user_id}/sessions"): (admin_role(200), _end_user_sign_ins),
    ("GET", "/v1/admin/jobs"): (admin_role(200), _list_jobs),
    ("POST", "/v1/admin/jobs/{job_id}/retry"): (admin_role(404), _retry_job),
    ("GET", "/v1/jobs/{job_id}"): (staff_role(404), _get_job),
    # Debug endpoints are on in tests (outside production by default); when turned off
    # they are 404 for every caller, before authentication (test_debug_routes_when_off).
    ("GET", "/v1/admin/debug/tasks"): (admin_role(200), _debug_tasks),
    ("GET", "/v1/admin/debug/profile"): (admin_role(200), _debug_profile),
    # `stock` needs stock:read; 503 = authorized, then refused because the hub drains.
    ("GET", "/v1/poll"): (stock_reader(200), _poll),
    ("GET", "/v1/stream"): (stock_reader(503), _stream),
    ("POST", "/v1/webhooks"): (admin_role(201), _create_webhook),
    ("GET", "/v1/webhooks"): (admin_role(200), _list_webhooks),
    ("GET", "/v1/webhooks/{webhook_id}"): (admin_role(200), _get_webhook),
    ("PATCH", "/v1/webhooks/{webhook_id}"): (admin_role(200), _patch_webhook),
    ("DELETE", "/v1/webhooks/{webhook_id}"): (admin_role(204), _delete_webhook),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): (admin_role(200), _list_deliveries),
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): (admin_role(200), _rotate_secret),
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): (
        admin_role(404),
        _redeliver,
    ),
}


def openapi_routes(app: Any) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    }


def test_matrix_covers_every_route() -> None:
    # The schema needs no database: an app that is never started will do.
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env=Environment.TEST,
        database_url="postgresql://unused@localhost/unused",
    )
    documented = openapi_routes(create_app(settings))
    table = set(MATRIX)
    assert documented == table, (
        f"routes without a row in the authz matrix: {sorted(documented - table)}; "
        f"rows for routes that no longer exist: {sorted(table - documented)}"
    )


async def _issue_key(
    client: httpx.AsyncClient, admin_headers: dict[str, str], scopes: list[str]
) -> dict[str, str]:
    response = await client.post(
        "/v1/api-keys",
        json={"name": f"matrix {len(scopes)} scopes", "scopes": scopes},
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['secret']}"}


async def _database_state(ctx: AppContext) -> tuple[Any, ...]:
    """Everything a refused request could have changed."""
    async with ctx.db.engine.connect() as conn:
        row = (
            await conn.execute(
                text("""
                SELECT (SELECT count(*) FROM users),
                       (SELECT count(*) FROM api_keys),
                       (SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL),
                       (SELECT count(*) FROM products),
                       (SELECT coalesce(sum(version), 0) FROM products),
                       (SELECT count(*) FROM locations),
                       (SELECT coalesce(sum(on_hand), 0) FROM stock_levels),
                       (SELECT count(*) FROM stock_movements),
                       (SELECT count(*) FROM idempotency_keys),
                       (SELECT count(*) FROM orders),
                       (SELECT coalesce(sum(version), 0) FROM orders),
                       (SELECT count(*) FROM users WHERE role <> 'customer'),
                       (SELECT count(*) FROM user_sessions WHERE revoked_at IS NULL),
                       (SELECT count(*) FROM refresh_families WHERE revoked_at IS NULL),
                       (SELECT count(*) FROM webhook_subscriptions),
                       (SELECT count(*) FROM webhook_subscriptions WHERE status = 'active'),
                       (SELECT count(*) FROM product_images)
                """)
            )
        ).one()
    return tuple(row)


async def test_every_route_for_every_caller(
    app: Any,
    client: httpx.AsyncClient,
    ctx: AppContext,
    customer: dict[str, Any],
    staff: dict[str, Any],
    admin: dict[str, Any],
) -> None:
    assert openapi_routes(app) == set(MATRIX), "see test_matrix_covers_every_route"
    credentials: dict[str, dict[str, str]] = {
        ANON: {},
        CUSTOMER: customer["headers"],
        STAFF: staff["headers"],
        ADMIN: admin["headers"],
        KEY_ALL: await _issue_key(client, admin["headers"], sorted(s.value for s in Scope)),
        KEY_READ: await _issue_key(client, admin["headers"], [Scope.CATALOG_READ.value]),
    }
    world = World(
        client=client,
        credentials=credentials,
        login_email=customer["email"],
        product=await create_product(client, admin["headers"]),
        location=await create_location(client, admin["headers"]),
        other_location=await create_location(client, admin["headers"]),
        ctx=ctx,
    )
    # Enough stock for every order and transfer the loop makes.
    stocked = await receive_stock(
        client, admin["headers"], world.product["id"], world.location["id"], 10_000
    )
    assert stocked.status_code == 201, stocked.text

    mismatches: list[str] = []
    calls = 0
    for (method, path), (expected, build) in sorted(MATRIX.items()):
        assert set(expected) == set(ROLES), f"{method} {path}: every caller needs a status"
        for role in ROLES:
            call = await build(world, role)
            before = await _database_state(ctx)
            client.cookies.clear()  # a session sign-in earlier in the loop set a cookie
            if call.drain_hub:
                assert ctx.hub is not None
                ctx.hub.draining = True
            try:
                response = await client.request(
                    method,
                    call.path,
                    json=call.json,
                    content=call.content,
                    params=call.params,
                    headers={**call.headers, **credentials[role]},
                )
            finally:
                if ctx.hub is not None:
                    ctx.hub.draining = False
            calls += 1
            label = f"{method} {path} as {role}"
            want = expected[role]
            if response.status_code != want:
                mismatches.append(
                    f"{label}: expected {want}, got {response.status_code} {response.text[:200]}"
                )
                continue
            if want in (401, 403):
                body = response.json()
                code = "unauthenticated" if want == 401 else "forbidden"
                if body.get("code") != code or not response.headers["content-type"].startswith(
                    "application/problem+json"
                ):
                    mismatches.append(f"{label}: not a '{code}' problem: {response.text[:200]}")
                if want == 401 and response.headers.get("www-authenticate") != "Bearer":
                    mismatches.append(f"{label}: 401 without 'WWW-Authenticate: Bearer'")
                if await _database_state(ctx) != before:
                    mismatches.append(f"{label}: refused, yet the database changed")

    assert calls == len(MATRIX) * len(ROLES)
    assert not mismatches, f"{len(mismatches)} authz mismatches:\n" + "\n".join(mismatches)


async def test_bad_credentials_are_401_even_on_routes_a_valid_key_may_call(
    client: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    response = await client.post(
        "/v1/api-keys",
        json={"name": "soon revoked", "scopes": ["stock:read"]},
        headers=admin["headers"],
    )
    assert response.status_code == 201, response.text
    key = response.json()
    key_headers = {"Authorization": f"Bearer {key['secret']}"}
    assert (await client.get("/v1/stock", headers=key_headers)).status_code == 200

    revoked = await client.delete(f"/v1/api-keys/{key['id']}", headers=admin["headers"])
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None

    _, prefix, secret = key["secret"].split("_", 2)  # sw_<hex prefix>_<secret>
    for headers in (
        key_headers,  # revoked
        {"Authorization": f"Bearer sw_{prefix}_{'x' * len(secret)}"},  # right prefix, wrong secret
        {"Authorization": "Bearer sw_nounderscore"},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        response = await client.get("/v1/stock", headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["code"] == "unauthenticated"


async def test_debug_routes_when_off_are_404_for_every_caller(
    settings: Settings, clock: FixedClock
) -> None:
    """Turned off (production's default), the debug routes are absent for everyone, the
    admin included: 404 before any credential is looked at, so no 401/403 reveals them."""
    application = create_app(
        settings.model_copy(update={"debug_endpoints_enabled": False}), clock=clock
    )
    async with application.router.lifespan_context(application):
        ctx: AppContext = application.state.ctx
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://shelfwise.test") as c:
            users = {role: await make_user(ctx, Role(role)) for role in (CUSTOMER, STAFF, ADMIN)}
            admin_headers = users[ADMIN]["headers"]
            credentials: dict[str, dict[str, str]] = {
                ANON: {},
                **{role: user["headers"] for role, user in users.items()},
                KEY_ALL: await _issue_key(c, admin_headers, sorted(s.value for s in Scope)),
                KEY_READ: await _issue_key(c, admin_headers, [Scope.CATALOG_READ.value]),
            }
            world = World(c, credentials, users[CUSTOMER]["email"], {}, {}, {})
            seen = {}
            for (method, path), build in sorted(DEBUG_ROUTES.items()):
                for role in ROLES:
                    call = await build(world, role)
                    response = await c.request(
                        method, call.path, params=call.params, headers=credentials[role]
                    )
                    seen[(path, role)] = (
                        response.status_code,
                        response.headers["content-type"],
                        response.json()["code"],
                    )
    assert len(seen) == len(DEBUG_ROUTES) * len(ROLES)
    assert set(seen.values()) == {(404, "application/problem+json", "not_found")}, seen

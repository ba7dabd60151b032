"""Helpers shared by the test suites: skipping on missing binaries, polling, factories."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from shelfwise.context import AppContext
from shelfwise.identity import service as identity
from shelfwise.identity.models import Role

PASSWORD = "correct-horse-battery-staple"


def require_binary(name: str) -> str:
    """Path of `name`, or skip — unless SHELFWISE_TEST_REQUIRE=all, where missing fails."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed (apt-get install {name})"
    if os.environ.get("SHELFWISE_TEST_REQUIRE") == "all":
        pytest.fail(reason + " and SHELFWISE_TEST_REQUIRE=all")
    pytest.skip(reason)


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll `check` until true; fail after `timeout` seconds. Never a bare sleep."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def make_user(ctx: AppContext, role: Role, email: str | None = None) -> dict[str, Any]:
    """A user of `role` and Authorization headers for it."""
    email = email or f"{role.value}-{uuid.uuid4().hex[:8]}@example.test"
    async with ctx.db.sessions() as session:
        user = await identity.create_user(
            session, ctx.hasher, email=email, password=PASSWORD, role=role
        )
    token, _ = ctx.tokens.issue(user_id=user.id, role=user.role, now=ctx.clock.now())
    return {"id": user.id, "email": email, "headers": {"Authorization": f"Bearer {token}"}}


def product_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sku": f"T-{uuid.uuid4().hex[:10]}",
        "name": "Test mug",
        "category": "kitchen",
        "price_minor": 1299,
        "currency": "EUR",
    }
    body.update(overrides)
    return body


async def create_product(
    client: httpx.AsyncClient, headers: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    response = await client.post("/v1/products", json=product_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def create_location(
    client: httpx.AsyncClient, headers: dict[str, str], code: str | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/v1/locations",
        json={"code": code or f"L-{uuid.uuid4().hex[:8]}", "name": "Test location"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def receive_stock(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    product_id: str,
    location_id: str,
    quantity: int,
) -> httpx.Response:
    return await client.post(
        "/v1/stock/adjustments",
        json={
            "product_id": product_id,
            "location_id": location_id,
            "kind": "receipt",
            "quantity": quantity,
            "reason": "test receipt",
        },
        headers=headers,
    )

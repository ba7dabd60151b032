"""Helpers for the security tests: apps with their own settings, cookies, metrics, sign-in.

The conftest `settings` fixture relaxes every rate limit; tests about limits, headers in
production, Redis or key rotation build their own app with `running_app`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY

from shelfwise.app import create_app
from shelfwise.clock import FixedClock
from shelfwise.config import Environment, Settings
from shelfwise.context import AppContext
from tests.support import PASSWORD

ROOT = Path(__file__).resolve().parents[1]
BASE_URL = "https://shelfwise.test"
SAME_ORIGIN = BASE_URL
FOREIGN_ORIGIN = "https://evil.example"
PROBLEM = "application/problem+json"


def build_settings(database_url: str, **overrides: Any) -> Settings:
    """The conftest `settings`, with the same relaxed limits unless overridden."""
    values: dict[str, Any] = {
        "env": Environment.TEST,
        "database_url": database_url,
        "data_dir": ROOT / "var" / "test",
        "access_log": True,
        "rate_limit_login": "1000/minute",
        "rate_limit_register": "1000/minute",
        "rate_limit_refresh": "1000/minute",
        "rate_limit_anonymous": "10000/minute",
        "max_concurrent_requests_per_client": 1000,
        "db_pool_size": 10,
        "db_max_overflow": 15,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running_app(settings: Settings, clock: FixedClock) -> AsyncIterator[FastAPI]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


def context_of(app: FastAPI) -> AppContext:
    ctx: AppContext = app.state.ctx
    return ctx


def client_for(
    app: FastAPI, *, peer: str = "127.0.0.1", base_url: str = BASE_URL
) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass(frozen=True)
class SetCookie:
    name: str
    value: str
    attributes: dict[str, str]  # lower-cased attribute name -> value ("" for flags)


def parse_set_cookie(header: str) -> SetCookie:
    first, *rest = (part.strip() for part in header.split(";"))
    name, _, value = first.partition("=")
    attributes: dict[str, str] = {}
    for part in rest:
        if part:
            key, _, val = part.partition("=")
            attributes[key.strip().lower()] = val.strip()
    return SetCookie(name, value.strip('"'), attributes)


def set_cookies(response: httpx.Response) -> dict[str, SetCookie]:
    parsed = (parse_set_cookie(h) for h in response.headers.get_list("set-cookie"))
    return {c.name: c for c in parsed}


def use_cookie(client: httpx.AsyncClient, name: str, value: str) -> None:
    """Make the client's jar hold exactly this cookie (as a browser would send it)."""
    client.cookies.clear()
    client.cookies.set(name, value, domain="shelfwise.test", path="/")


async def login(
    client: httpx.AsyncClient,
    email: str,
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        "/v1/auth/login", json={"email": email, "password": password}, headers=headers
    )


async def sign_in(
    client: httpx.AsyncClient,
    email: str,
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        "/v1/auth/session", json={"email": email, "password": password}, headers=headers
    )

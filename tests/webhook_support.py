"""Webhook test helpers: a verifying receiver on 127.0.0.1, publishing, draining jobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import uvicorn
from procrastinate import App
from prometheus_client import REGISTRY
from sqlalchemy import text

from shelfwise.context import AppContext
from shelfwise.db import libpq_url
from shelfwise.events.relay import Relay
from shelfwise.jobs.runtime import JobRuntime
from shelfwise.jobs.worker import worker_options
from shelfwise.webhooks import service
from shelfwise.webhooks.signing import verify
from tests.support import wait_until


class Receiver:
    """A receiver that verifies signatures and deduplicates on `Shelfwise-Event-Id`."""

    def __init__(self) -> None:
        self.secret = ""
        self.status = 200
        self.fail_first_time = False  # process, then answer 500 (a lost acknowledgement)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.processed: dict[str, int] = {}
        self.bad_signatures = 0
        self.now = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append((headers, body))
        status = self.status
        if status == 200:
            if not verify(headers["shelfwise-signature"], self.secret, body, now=self.now):
                self.bad_signatures += 1
                status = 400
            else:
                event_id = headers["shelfwise-event-id"]
                first = event_id not in self.processed
                if first:
                    self.processed[event_id] = 1  # the side effect, once per event id
                if first and self.fail_first_time:
                    status = 500
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"r" * 5000})


@contextlib.asynccontextmanager
async def serve_on(app: Any, port: int) -> AsyncIterator[str]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return bool(server.started)

    await wait_until(started, what="receiver to start")
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def publish_and_fan_out(ctx: AppContext, database_url: str) -> int:
    """The relay's stamping pass, then the worker's fan-out pass."""
    url = libpq_url(database_url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await Relay(url).publish_batch(conn)
    async with ctx.db.sessions() as session:
        return await service.fan_out(session)


async def drain(app: App, runtime: JobRuntime) -> None:
    options = worker_options(runtime, "drain")
    await app.run_worker_async(**{**options, "wait": False, "listen_notify": False})


async def time_passes(ctx: AppContext) -> None:
    """Every scheduled retry becomes due (instead of waiting for it)."""
    async with ctx.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'")
        )


async def subscribe(
    client: httpx.AsyncClient, admin: dict[str, Any], url: str, types: list[str]
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhooks", json={"url": url, "event_types": types}, headers=admin["headers"]
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def deliveries(
    client: httpx.AsyncClient, admin: dict[str, Any], webhook_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=admin["headers"])
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0

"""A running Shelfwise a drill breaks over HTTP (`shelfwise drill NAME --url ...`): the
`make run` server or any local `shelfwise serve`.

The drill signs in as an admin (the development seed's demo admin unless told), makes the
failure happen through the admin-only drill routes or ordinary requests, and reads the
signal where an operator would: `/metrics` (deltas, scraped before and after) and the
server's log file when it is given one (`--log-file`; `make run` logs to its terminal).
Only loopback addresses are accepted: a drill never breaks a shared or remote system.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shelfwise.drills.base import DrillRefused

REQUEST_TIMEOUT_SECONDS = 90.0  # a hold-connections call lasts up to 65 s


@dataclass(slots=True)
class ServedSystem:
    base_url: str
    client: httpx.AsyncClient
    admin_headers: dict[str, str]
    log_file: Path | None = None
    _log_offset: int = field(default=0)

    async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample `/metrics` exposes now, by (name, labels)."""
        response = await self.client.get("/metrics")
        response.raise_for_status()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    @staticmethod
    def value(
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
    ) -> float:
        """The sum of `name`'s samples whose labels include `labels` (0 when absent)."""
        wanted = set(labels.items())
        return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)

    def mark_log(self) -> None:
        """Later `log_lines` return only what the server writes from now on."""
        if self.log_file is not None and self.log_file.exists():
            self._log_offset = self.log_file.stat().st_size

    def log_lines(self, *needles: str) -> list[str]:
        """Lines written since `mark_log` that contain every needle (JSON or console logs)."""
        if self.log_file is None or not self.log_file.exists():
            return []
        with self.log_file.open("rb") as handle:
            handle.seek(self._log_offset)
            written = handle.read().decode(errors="replace")
        return [line for line in written.splitlines() if all(n in line for n in needles)]

    def log_hint(self, event: str) -> str:
        where = self.log_file or "the server's terminal (pass --log-file to check it here)"
        return f"log {event} in {where}"


def refuse_remote(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise DrillRefused(f"drills break the system on purpose: only loopback URLs ({host!r})")


@asynccontextmanager
async def open_served(
    url: str, *, email: str, password: str, log_file: Path | None = None
) -> AsyncIterator[ServedSystem]:
    """Signed in as the admin on the server at `url` (loopback only)."""
    refuse_remote(url)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        try:
            login = await client.post("/v1/auth/login", json={"email": email, "password": password})
        except httpx.TransportError as exc:
            raise DrillRefused(f"nothing answers at {url} ({exc!r}): is `make run` up?") from exc
        if login.status_code != 200:
            raise DrillRefused(
                f"cannot sign in as {email} on {url} ({login.status_code}): pass "
                "--admin-email/--admin-password of an admin of that server"
            )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        system = ServedSystem(url, client, headers, log_file)
        system.mark_log()
        yield system

"""The broker publisher: the outbox stream, in position order, to RabbitMQ with confirms.

- Exactly one publisher is active across all workers, elected like the relay and by the
  same code (`election.py`, docs/decisions/0011): a session-level `pg_try_advisory_lock`
  on a dedicated connection; the others retry every `standby_retry` seconds and take
  over when the leader's connection closes.
- Its position (the last stream position the broker *confirmed*) is a row of
  `broker_publisher_positions`, written on that same connection, and only after the
  confirms for every event up to it have arrived. A crash, a kill -9 or a broker restart
  therefore loses nothing: the next active publisher starts after the stored position and
  sends again whatever was in flight (at least once; consumers deduplicate on
  `message_id`).
- Throughput: a batch of up to `batch_size` events is sent with at most `window`
  unconfirmed messages in flight on one channel (one channel keeps them in order), then
  the position moves to the last event of the unbroken confirmed prefix.
- `mandatory`: an event no queue is bound for comes back (basic.return). It is counted
  (`shelfwise_broker_returned_total{type}`), logged with its id and position, and alerted
  once per type per process; the stream goes on (the event stays in the outbox).
- A nack or a lost connection ends the broker session: backoff with jitter (doubling up
  to `backoff_max`, `reconnect.py`), `shelfwise_broker_connected` 0, the error stored
  next to the position for `/readyz` to show, then a new connection resumes from the
  stored position.

It wakes on the relay's `shelfwise_stream` NOTIFY and polls every `poll_interval`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import psycopg
import structlog
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import AMQPError, DeliveryError
from opentelemetry.trace import SpanKind

from shelfwise.broker import metrics
from shelfwise.broker.envelope import OutboxRow, to_properties
from shelfwise.broker.topology import DEFAULT_EXCHANGE, declare_events_exchange
from shelfwise.election import ElectedSession, wait_or_stop
from shelfwise.events.outbox import STREAM_CHANNEL
from shelfwise.jobs.alerts import Alerts
from shelfwise.observability.tracing import EVENT_TYPE, linked_span, links_from
from shelfwise.reconnect import ReconnectBackoff

log = structlog.get_logger("shelfwise.broker.publisher")

# Any fixed 64-bit key, distinct from the relay's.
PUBLISHER_LOCK_KEY = 0x5348454C46_0002

# Failures that mean "the broker, or the way to it": back off and reconnect.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,  # a RuntimeError: "channel closed"
    OSError,
    TimeoutError,
)

# `trace_context`: the W3C carrier of the writing request, NULL when it had none.
FETCH_SQL = """
SELECT e.position, e.id, e.type, e.aggregate_type, e.aggregate_id, e.version,
       e.payload::text, e.created_at, e.published_at, e.trace_context
  FROM outbox_events AS e
 WHERE e.position > %(after)s
 ORDER BY e.position
 LIMIT %(limit)s
"""
ENSURE_SQL = """
INSERT INTO broker_publisher_positions (exchange) VALUES (%s) ON CONFLICT DO NOTHING
"""
POSITION_SQL = "SELECT position FROM broker_publisher_positions WHERE exchange = %s"
STORE_SQL = """
UPDATE broker_publisher_positions
   SET position = %(position)s, updated_at = clock_timestamp()
 WHERE exchange = %(exchange)s AND position < %(position)s
"""
STATUS_SQL = """
UPDATE broker_publisher_positions
   SET connected = %(connected)s, last_error = %(error)s,
       status_at = CASE WHEN connected = %(connected)s THEN status_at ELSE clock_timestamp() END
 WHERE exchange = %(exchange)s
"""
LAG_SQL = """
SELECT coalesce((SELECT max(position) FROM outbox_events), 0),
       (SELECT extract(epoch FROM clock_timestamp() - published_at)::float8
          FROM outbox_events WHERE position = %(after)s + 1)
"""


class BrokerNacked(AMQPError):
    """The broker refused an event (basic.nack): publish again after a backoff."""


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    exchange: str = DEFAULT_EXCHANGE
    batch_size: int = 500
    window: int = 200  # unconfirmed messages in flight, at most
    poll_interval: float = 0.5
    # After a wake-up, before fetching: the relay's next commits join this batch. At the
    # order path's rate the relay commits every few ms, a handful of events each; one
    # fetch + publish + position update per commit cost the worker more CPU per event
    # than the publishing itself (docs/events.md, "Measured").
    linger: float = 0.02
    standby_retry: float = 1.0
    # After a lost database connection: 0.5 s doubling to 5 s, jittered, as the relay.
    reconnect_first: float = 0.5
    reconnect_cap: float = 5.0
    # After a lost or refused broker connection (reconnect.py: doubling, capped, half of
    # it random; short again after a connection that stayed up 30 s).
    backoff_initial: float = 0.2
    backoff_max: float = 30.0
    confirm_timeout: float = 10.0
    connect_timeout: float = 5.0


class BrokerPublisher:
    def __init__(
        self,
        database_url: str,
        broker_url: str,
        config: PublisherConfig | None = None,
        *,
        name: str = "publisher",
        alerts: Alerts | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._db_url = database_url
        self._broker_url = broker_url
        self._config = config or PublisherConfig()
        self._name = name
        self._alerts = alerts or Alerts(None)
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._alerted_types: set[str] = set()
        self.active = False  # holds the advisory lock right now
        self.position = 0  # last confirmed position (while active)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; survives database and broker outages."""
        election = ElectedSession(
            self._db_url,
            lock_key=PUBLISHER_LOCK_KEY,
            application_name="shelfwise-broker-publisher",
            standby_retry=self._config.standby_retry,
            backoff=ReconnectBackoff(
                self._config.reconnect_first, self._config.reconnect_cap, rng=self._rng
            ),
            on_active=self._set_active,
            lost_event="broker_publisher_db_lost",
            log_fields={"publisher": self._name},
        )
        await election.run(stop, self._lead)

    async def _lead(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        """The active publisher's session on the lock's connection: broker connections,
        one after another, each resuming from the stored position."""
        await conn.execute(ENSURE_SQL, (self._config.exchange,))
        await conn.execute(f"LISTEN {STREAM_CHANNEL}")
        # The position is a resume point, not a fact: a PostgreSQL crash losing its
        # last updates means re-sending a few confirmed events (at least once, the
        # inbox drops them), never losing one. So the publish loop does not wait for a
        # WAL flush per batch (visible to others at once; durable within ~3 x 200 ms).
        await conn.execute("SET synchronous_commit = off")
        log.info("broker_publisher_active", publisher=self._name)
        backoff = self.broker_backoff()
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await self._connected(conn, stop)
                    return
                except BROKER_ERRORS as exc:
                    delay = backoff.after(time.monotonic() - started)
                    await self._broker_failed(conn, exc, delay, stop)
        finally:
            metrics.CONNECTED.set(0)

    def broker_backoff(self) -> ReconnectBackoff:
        """Doubling from `backoff_initial`, capped at `backoff_max`, with half of it random:
        workers that lost the same broker do not come back in lockstep."""
        return ReconnectBackoff(
            self._config.backoff_initial, self._config.backoff_max, rng=self._rng
        )

    async def _connected(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        """One broker connection: resume from the stored position, publish until stopped."""
        amqp = await aio_pika.connect(self._broker_url, timeout=self._config.connect_timeout)
        async with amqp:
            channel = await amqp.channel(publisher_confirms=True, on_return_raises=False)
            await declare_events_exchange(channel, self._config.exchange)
            # aiormq's channel, under aio-pika's: basic.publish with properties built
            # straight from the row (envelope.to_properties), no Message in between.
            wire = await channel.get_underlay_channel()
            assert isinstance(wire, aiormq.Channel)  # for `wait` (not in the abc)
            self.position = await self._stored_position(conn)
            await self._set_status(conn, connected=True, error=None)
            metrics.CONNECTED.set(1)
            log.info("broker_connected", publisher=self._name, resume_after=self.position)
            loop, lag_due = asyncio.get_running_loop(), 0.0
            while not stop.is_set():
                rows = await self._fetch(conn)
                if rows:
                    await self._publish(conn, wire, rows)
                if loop.time() >= lag_due:  # a gauge: twice a second is plenty
                    await self._update_lag(conn)
                    lag_due = loop.time() + 0.5
                if len(rows) < self._config.batch_size:
                    await self._wait_for_work(conn, amqp, stop)

    async def _broker_failed(
        self,
        conn: psycopg.AsyncConnection[Any],
        exc: BaseException,
        delay: float,
        stop: asyncio.Event,
    ) -> None:
        metrics.CONNECTED.set(0)
        metrics.CONNECTION_FAILURES.labels("publisher").inc()
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.warning(
            "broker_unavailable", publisher=self._name, error=error, retry_in=round(delay, 2)
        )
        await self._set_status(conn, connected=False, error=error)
        await wait_or_stop(stop, delay)

    async def _fetch(self, conn: psycopg.AsyncConnection[Any]) -> list[OutboxRow]:
        cur = await conn.execute(
            FETCH_SQL, {"after": self.position, "limit": self._config.batch_size}
        )
        rows = [OutboxRow(*row) for row in await cur.fetchall()]
        if rows and self.position and rows[0].position != self.position + 1:
            # Pruned before they were published (broker down longer than the retention).
            # Position 0 is a first start: beginning at the oldest retained event is normal.
            log.error(
                "broker_stream_gap",
                alert=True,
                after=self.position,
                next_position=rows[0].position,
            )
        return rows

    async def _publish(
        self,
        conn: psycopg.AsyncConnection[Any],
        wire: aiormq.Channel,
        rows: Sequence[OutboxRow],
    ) -> None:
        """Send `rows` in order, at most `window` unconfirmed; store the confirmed prefix."""
        links = links_from((row.trace, {EVENT_TYPE: row.type}) for row in rows)
        with linked_span("broker publish", links, kind=SpanKind.PRODUCER, attributes=_span(rows)):
            results = await self._send_all(wire, rows)
        confirmed, returned, failure = _tally(rows, results)
        for row in returned:
            await self._report_unroutable(row)
        if confirmed:
            await conn.execute(
                STORE_SQL, {"position": confirmed[-1].position, "exchange": self._config.exchange}
            )
            self.position = confirmed[-1].position
        if failure is not None:
            raise failure

    async def _send_all(self, wire: aiormq.Channel, rows: Sequence[OutboxRow]) -> list[object]:
        """The confirm (or the error) of each row, in order. Each publish is its own task
        (confirms come back asynchronously); `wait=False`: no per-message drain of the
        socket, the confirm is what is awaited."""
        window = asyncio.Semaphore(self._config.window)
        exchange, timeout = self._config.exchange, self._config.confirm_timeout

        async def send(row: OutboxRow) -> object:
            try:
                return await wire.basic_publish(
                    row.payload_json.encode(),
                    exchange=exchange,
                    routing_key=row.type,
                    properties=to_properties(row),
                    mandatory=True,
                    timeout=timeout,
                    wait=False,
                )
            finally:
                window.release()

        pending: list[asyncio.Future[object]] = []
        try:
            for row in rows:
                await window.acquire()
                pending.append(asyncio.ensure_future(send(row)))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            metrics.PUBLISHED.inc(len(pending))
        return list(await asyncio.gather(*pending, return_exceptions=True))

    async def _report_unroutable(self, row: OutboxRow) -> None:
        fields = {"event_id": row.id, "position": row.position, "type": row.type}
        log.warning("broker_event_unroutable", **fields)
        if row.type not in self._alerted_types:
            self._alerted_types.add(row.type)
            await self._alerts.raise_alert(
                "broker_event_unroutable", exchange=self._config.exchange, **fields
            )

    async def _stored_position(self, conn: psycopg.AsyncConnection[Any]) -> int:
        cur = await conn.execute(POSITION_SQL, (self._config.exchange,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _set_status(
        self, conn: psycopg.AsyncConnection[Any], *, connected: bool, error: str | None
    ) -> None:
        await conn.execute(
            STATUS_SQL, {"connected": connected, "error": error, "exchange": self._config.exchange}
        )

    async def _update_lag(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute(LAG_SQL, {"after": self.position})
        row = await cur.fetchone()
        if row is not None:
            metrics.LAG_POSITIONS.set(max(int(row[0]) - self.position, 0))
            metrics.LAG_SECONDS.set(float(row[1] or 0.0))

    async def _wait_for_work(
        self, conn: psycopg.AsyncConnection[Any], amqp: AbstractConnection, stop: asyncio.Event
    ) -> None:
        """Until the relay publishes (NOTIFY) or `poll_interval` passes, then `linger`; the
        generators run to their end (a suspended `notifies()` holds the connection's lock)."""
        woken = False
        async for _ in conn.notifies(timeout=self._config.poll_interval, stop_after=1):
            woken = True
        if woken and self._config.linger > 0:
            await wait_or_stop(stop, self._config.linger)
        async for _ in conn.notifies(timeout=0):  # what arrived meanwhile: this batch
            pass
        if amqp.is_closed:
            raise aiormq.exceptions.AMQPConnectionError("broker connection closed")

    def _set_active(self, active: bool) -> None:
        if active != self.active:
            self.active = active
            metrics.PUBLISHER_ACTIVE.set(1 if active else 0)


def _tally(
    rows: Sequence[OutboxRow], results: Sequence[object]
) -> tuple[list[OutboxRow], list[OutboxRow], BaseException | None]:
    """The unbroken prefix of confirmed (acked or returned) events, the returned ones
    among them, and what broke the prefix (None when every event was confirmed)."""
    confirmed: list[OutboxRow] = []
    returned: list[OutboxRow] = []
    for row, result in zip(rows, results, strict=True):
        if isinstance(result, DeliveryError):
            metrics.NACKED.inc()
            return confirmed, returned, BrokerNacked(f"nack for position {row.position}")
        if isinstance(result, BaseException):
            return confirmed, returned, result
        if isinstance(result, aiormq.abc.DeliveredMessage):
            metrics.RETURNED.labels(row.type).inc()
            returned.append(row)
        else:
            metrics.CONFIRMED.inc()
        confirmed.append(row)
    return confirmed, returned, None


def _span(rows: Sequence[OutboxRow]) -> dict[str, int]:
    return {"shelfwise.stream.first": rows[0].position, "shelfwise.stream.last": rows[-1].position}

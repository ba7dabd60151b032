"""Open-loop clients for bench.issues, in their own process: raw asyncio sockets, uvloop.

    python -m bench.rate fixed --port N --requests FILE --rate 20 --duration 10
    python -m bench.rate sse --port N --requests FILE --subscribers 1000 --duration 10
    python -m bench.rate ws --port N --requests FILE --subscribers 1000 --channels stock

`fixed` sends requests at a fixed rate whatever the server's latency (open loop: a stalled
event loop shows up as latency, not as fewer requests), over a pool of keep-alive
connections that grows when all are busy. `sse` holds N Server-Sent-Events streams open
and measures, for every event received, now - the event's `created_at` (same machine, same
clock); `ws` does the same over `/v1/ws` (FILE holds the upgrade request, with the bearer
token; the client subscribes once `ready`, answers pings, and counts a stream as open at
`subscribed`). FILE is a JSON list of raw HTTP/1.1 requests to pick from at random. Each
prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import resource
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.loadgen import _read_response, percentile

TIMEOUT_S = 5.0
# `shelfwise serve` closes a keep-alive connection idle for 5 s (uvicorn's
# timeout_keep_alive). A request sent on a connection the server has closed, or is closing
# at that moment, reads EOF (`IncompleteReadError`): a lost request the server never saw.
# So, like nginx's upstream `keepalive_timeout 4s` (deploy/nginx/upstreams.conf), a
# connection idle this long is closed here instead of reused.
REUSE_IDLE_S = 4.0
# Streams connecting (no response headers yet) at a time, per subscriber process: well
# below a server's listen backlog (`server_backlog`, 2048).
MAX_PENDING = 200


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 2),
        "p90_ms": round(percentile(ordered, 0.90) * 1000, 2),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round((ordered[-1] if ordered else 0.0) * 1000, 2),
    }


async def fixed(
    port: int,
    requests: list[bytes],
    rate: float,
    duration: float,
    stop_file: str | None = None,
    reuse_idle_s: float = REUSE_IDLE_S,
) -> dict[str, Any]:
    """Until `duration` passes, or `stop_file` exists (checked at every send). A pooled
    connection idle for `reuse_idle_s` or closed by the server is not reused."""
    # (reader, writer, idle since): the most recently used on top
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    retired = 0  # idle connections closed instead of reused
    failed_idle: list[float] = []  # how long a reused connection that failed had been idle
    rng = random.Random(1)

    def reusable() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float] | None:
        nonlocal retired
        while idle:
            conn = idle.pop()
            if time.perf_counter() - conn[2] < reuse_idle_s and not conn[0].at_eof():
                return conn
            conn[1].close()
            retired += 1
        return None

    async def one(scheduled: float) -> None:
        since: float | None = None  # when the pooled connection used was last used
        try:
            async with asyncio.timeout(TIMEOUT_S):
                conn = reusable()
                if conn is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    conn = (reader, writer, time.perf_counter())
                else:
                    since = conn[2]
                conn[1].write(rng.choice(requests))
                status, close = await _read_response(conn[0])
            latencies.append(time.perf_counter() - scheduled)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if close:
                conn[1].close()
            else:
                idle.append((conn[0], conn[1], time.perf_counter()))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
            if since is not None:
                failed_idle.append(round(scheduled - since, 2))

    tasks = []
    started = time.perf_counter()
    n = 0
    while (scheduled := started + n / rate) < started + duration:
        if stop_file and os.path.exists(stop_file):
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
        n += 1
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    return {
        "sent": n,
        "rate": round(n / elapsed, 1),
        "elapsed_s": round(elapsed, 2),
        "statuses": statuses,
        "connections_retired_idle": retired,
        "failed_after_idle_s": failed_idle[:50],
        **_summary(latencies),
    }


class _Subscriber(asyncio.Protocol):
    """One SSE stream: for every complete event frame, its `id:` (the stream position)
    and its `"created_at":"..."`: the delivery lag, and the order check — each position
    must be above the last one this stream received (a repeat or a reordering is
    counted in `out_of_order`); `seen` collects every position for the gap check."""

    MARK = b'"created_at":"'

    def __init__(self, state: dict[str, Any], request: bytes) -> None:
        self.state, self.request, self.buffer, self.head = state, request, b"", True
        self.opened = False
        self.first = self.last = 0  # positions: the first and last received
        self.received = 0
        self.started = time.perf_counter()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def _status(self, head: bytes) -> str:
        status = head.split(b" ", 2)[1].decode()
        self.state["statuses"][status] = self.state["statuses"].get(status, 0) + 1
        return status

    def _opened(self) -> None:
        self.opened = True
        self.state["open"] += 1
        self.state["connect_s"].append(time.perf_counter() - self.started)
        self.state["streams"].append(self)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.state["measuring"]:
            self.state["reads"] += 1
        buf = self.buffer + data if self.buffer else data
        if self.head:
            if b"\r\n\r\n" not in buf:
                self.buffer = buf
                return
            head, _, buf = buf.partition(b"\r\n\r\n")
            self.head = False
            if self._status(head) == "200":
                self._opened()
        self.buffer = self.scan(buf, now)

    def scan(self, buf: bytes, now: float) -> bytes:
        """Check and record every complete event frame in `buf`; returns the unread
        tail. (The chunked transfer coding's size lines fall between frames, before an
        `id:`; `created_at` is the last field of an event's data.) `record`, inlined:
        this runs for every event on every stream, on the same two cores as the server."""
        state = self.state
        parsed = state["parsed"]
        lags = state["lags"] if state["measuring"] else None
        seen = state["seen"]
        mark, size = self.MARK, len(self.MARK)
        first, last, received, disorder = self.first, self.last, 0, 0
        frames = buf.split(b"\n\n")
        tail = frames.pop()  # "" after a complete frame, else the start of the next one
        for frame in frames:
            i = frame.find(b"id: ")
            m = frame.rfind(mark)
            if i < 0 or m < 0:
                continue  # retry, ping, close, or an event without a timestamp (reset)
            raw = frame[m + size : -2]  # ...,"created_at":"<raw>"}
            created = parsed.get(raw)
            if created is None:
                created = parsed[raw] = datetime.fromisoformat(raw.decode()).timestamp()
            if lags is not None:
                lags.append(now - created)
            position = int(frame[i + 4 : frame.find(b"\n", i)])
            if position > last:
                last = position
            else:
                disorder += 1
            first = first or position
            seen.add(position)
            received += 1
        if received:
            self.first, self.last = first, last
            self.received += received
            state["events"] += received
            state["out_of_order"] += disorder
        return tail

    def record(self, position: int, created_at: bytes, now: float) -> None:
        """One event delivered: its lag while measuring, and the order check."""
        state = self.state
        created = state["parsed"].get(created_at)
        if created is None:
            created = state["parsed"][created_at] = datetime.fromisoformat(
                created_at.decode()
            ).timestamp()
        if state["measuring"]:
            state["lags"].append(now - created)
        if position <= self.last:
            state["out_of_order"] += 1
        else:
            self.last = position
        if not self.first:
            self.first = position
        self.received += 1
        state["seen"].add(position)
        state["events"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.state["lost"] += 1  # refused ones (503) included
        if self.opened:
            self.state["lost_open"] += 1


def _missing(state: dict[str, Any]) -> int:
    """Events a stream did not receive although this process saw them on another stream
    between the first and the last position it did receive (a gap in its sequence)."""
    union = sorted(state["seen"])
    missing = 0
    for stream in state["streams"]:
        if stream.received:
            expected = bisect.bisect_right(union, stream.last) - bisect.bisect_left(
                union, stream.first
            )
            missing += max(expected - stream.received, 0)
    return missing


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask; the key may be anything, zeros keep it cheap)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class _WsSubscriber(_Subscriber):
    """One `/v1/ws` connection (bearer token on the upgrade request): subscribes to
    `channels` in batch mode once ready, answers server pings, records the lag of each
    event."""

    def __init__(self, state: dict[str, Any], request: bytes, channels: list[str]) -> None:
        super().__init__(state, request)
        message = {"type": "subscribe", "channels": channels, "batch": True}
        self.subscribe = _ws_frame(0x1, json.dumps(message).encode())
        self.frames = b""

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.frames + data
        if self.head:
            if b"\r\n\r\n" not in buf:
                self.frames = buf
                return
            head, _, buf = buf.partition(b"\r\n\r\n")
            self.head = False
            if self._status(head) != "101":
                return
        text: list[bytes] = []
        while len(buf) >= 2:
            opcode, size, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if size == 126:
                size, offset = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                size, offset = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < offset + size:
                break
            payload, buf = buf[offset : offset + size], buf[offset + size :]
            if opcode == 0x9:  # ping: answer, or the server closes the connection
                self.transport.write(_ws_frame(0xA, payload))  # type: ignore[attr-defined]
            elif opcode == 0x1:
                text.append(payload)
        self.frames = buf
        for payload in text:
            if payload.startswith(b'{"type":"ready"'):
                self.transport.write(self.subscribe)  # type: ignore[attr-defined]
            elif payload.startswith(b'{"type":"subscribed"'):
                self._opened()
        for payload in text:
            self.scan_messages(payload, now)

    EVENT = b'{"type":"event","position":'

    def scan_messages(self, payload: bytes, now: float) -> None:
        """Every event message in one text message (one, or a batch of them)."""
        mark = self.MARK
        start = 0
        while (i := payload.find(self.EVENT, start)) >= 0:
            i += len(self.EVENT)
            m = payload.find(mark, i) + len(mark)
            start = payload.find(b'"', m)
            self.record(int(payload[i : payload.find(b",", i)]), payload[m:start], now)


async def subscribers(
    mode: str,
    port: int,
    request: bytes,
    subscribers: int,
    duration: float,
    ramp_per_s: float,
    channels: list[str],
    settle_s: float = 15.0,
    ready_file: str | None = None,
    go_file: str | None = None,
    max_pending: int = MAX_PENDING,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {
        "statuses": {},
        "open": 0,
        "lost": 0,
        "lost_open": 0,
        "events": 0,
        "lags": [],
        "parsed": {},
        "measuring": False,
        "connect_errors": 0,
        "connect_s": [],  # connect -> response headers, per opened stream
        "streams": [],
        "seen": set(),
        "out_of_order": 0,
        "reads": 0,  # socket reads of SSE streams while measuring (~ the server's writes)
    }

    def protocol() -> asyncio.Protocol:
        if mode == "ws":
            return _WsSubscriber(state, request, channels)
        return _Subscriber(state, request)

    transports = []

    def resolved() -> int:  # opened, or refused
        return int(state["open"] + state["lost"] - state["lost_open"])

    started = time.perf_counter()
    for n in range(subscribers):
        # At most `max_pending` streams connecting at a time: a server that answers
        # slower than the ramp fills its listen backlog, the kernel drops SYNs, and each
        # dropped one costs this loop a retransmission (1 s, 3 s, 7 s, ...): the ramp
        # would measure TCP's backoff, not the server. Browsers do not connect in step.
        while len(transports) - resolved() >= max_pending:
            await asyncio.sleep(0.01)
        try:
            t, _ = await loop.create_connection(protocol, "127.0.0.1", port)
            transports.append(t)
        except OSError:
            state["connect_errors"] += 1
        delay = started + (n + 1) / ramp_per_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    ramp = time.perf_counter() - started
    wait_until = time.perf_counter() + settle_s  # let the last streams open

    while resolved() < len(transports) and time.perf_counter() < wait_until:
        await asyncio.sleep(0.2)
    opened = state["open"]
    settle = time.perf_counter() - started
    if ready_file and go_file:  # measure in the same window as the other processes
        Path(ready_file).touch()
        give_up = time.perf_counter() + 600.0
        while not os.path.exists(go_file) and time.perf_counter() < give_up:
            await asyncio.sleep(0.05)
    state["measuring"] = True
    events0 = state["events"]
    lost0 = state["lost_open"]
    await asyncio.sleep(duration)
    state["measuring"] = False
    events = state["events"] - events0
    open_at_end = state["open"] - state["lost_open"]
    for t in transports:
        t.close()
    return {
        "mode": mode,
        "subscribers": subscribers,
        "open": opened,
        "ramp_s": round(ramp, 1),
        "settle_s": round(settle, 1),
        "open_at_end": open_at_end,
        "statuses": state["statuses"],
        "lost_during_run": state["lost_open"] - lost0,
        "lost_total": state["lost_open"],
        "closed_unopened": state["lost"] - state["lost_open"],
        "connect_errors": state["connect_errors"],
        "events_received": events,
        "events_per_s": round(events / duration, 1),
        "reads": state["reads"],
        "out_of_order": state["out_of_order"],
        "missing": _missing(state),
        "connect": _summary(state["connect_s"]),
        **_summary(state["lags"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("fixed", "sse", "ws"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", required=True)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--ramp", type=float, default=500.0, help="stream connects per second")
    parser.add_argument("--channels", default="stock", help="ws: channels to subscribe to")
    parser.add_argument(
        "--settle", type=float, default=15.0, help="seconds to wait for the last streams to open"
    )
    parser.add_argument(
        "--max-pending",
        "--max_pending",
        type=int,
        default=MAX_PENDING,
        help="sse/ws: streams connecting at a time (the ramp waits above it)",
    )
    parser.add_argument("--ready-file", "--ready_file", help="touched once the streams are open")
    parser.add_argument("--go-file", "--go_file", help="measure once this file exists")
    # (`--stop_file` is how bench.issues.rate_client spells options.)
    parser.add_argument(
        "--stop-file", "--stop_file", help="fixed: stop early once this file exists"
    )
    parser.add_argument(
        "--reuse-idle",
        "--reuse_idle",
        type=float,
        default=REUSE_IDLE_S,
        help="fixed: reuse a pooled connection only if idle for less than this (s)",
    )
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(args.requests, encoding="utf-8") as fh:
        requests = [r.encode() for r in json.load(fh)]
    import uvloop

    if args.mode == "fixed":
        out = uvloop.run(
            fixed(args.port, requests, args.rate, args.duration, args.stop_file, args.reuse_idle)
        )
    else:
        out = uvloop.run(
            subscribers(
                args.mode,
                args.port,
                requests[0],
                args.subscribers,
                args.duration,
                args.ramp,
                args.channels.split(","),
                args.settle,
                args.ready_file,
                args.go_file,
                args.max_pending,
            )
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()

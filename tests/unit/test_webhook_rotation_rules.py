"""Which secrets sign a delivery around a rotation, and the fan-out's wake-up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from shelfwise.webhooks.models import WebhookSubscription
from shelfwise.webhooks.service import signing_secrets
from shelfwise.webhooks.signing import signature_header, verify
from shelfwise.webhooks.tasks import FanoutWake

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def subscription(previous: str | None, expires: datetime | None) -> WebhookSubscription:
    return WebhookSubscription(
        secret="whsec_new", previous_secret=previous, previous_secret_expires_at=expires
    )


def test_both_secrets_sign_until_the_window_ends_new_first() -> None:
    sub = subscription("whsec_old", NOW + timedelta(hours=1))
    assert signing_secrets(sub, NOW) == ("whsec_new", "whsec_old")
    assert signing_secrets(sub, NOW + timedelta(minutes=59, seconds=59)) == (
        "whsec_new",
        "whsec_old",
    )
    assert signing_secrets(sub, NOW + timedelta(hours=1)) == ("whsec_new",)
    assert signing_secrets(subscription(None, None), NOW) == ("whsec_new",)


def test_a_header_with_two_v1_verifies_with_either_secret_only() -> None:
    body, stamp = b'{"id":"1"}', int(NOW.timestamp())
    header = signature_header(("whsec_new", "whsec_old"), stamp, body)
    assert header.count("v1=") == 2
    assert verify(header, "whsec_new", body, now=stamp)
    assert verify(header, "whsec_old", body, now=stamp)
    assert not verify(header, "whsec_other", body, now=stamp)


async def test_a_publish_wakes_the_fanout_before_its_poll() -> None:
    wake, stop = FanoutWake(), asyncio.Event()
    waiting = asyncio.create_task(wake.wait(stop, poll_seconds=60.0))
    await wake.after_publish()(42)
    await asyncio.wait_for(waiting, 5.0)  # TimeoutError: still waiting for its 60 s poll


async def test_a_publish_before_the_wait_is_not_lost_and_stop_ends_it() -> None:
    wake, stop = FanoutWake(), asyncio.Event()
    seen: list[int] = []

    async def then(position: int) -> None:
        seen.append(position)

    await wake.after_publish(then)(7)  # during a pass: the next wait returns at once
    await asyncio.wait_for(wake.wait(stop, poll_seconds=60.0), 5.0)
    assert seen == [7]
    wake.clear()
    stop.set()
    await asyncio.wait_for(wake.wait(stop, poll_seconds=60.0), 5.0)

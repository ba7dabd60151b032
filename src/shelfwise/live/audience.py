"""Subscriptions that see the same events, and the batch of one flush they share.

Which events a subscription gets depends on its channels and, for `orders` without
`orders:manage`, on who it is (`live/channels.py`). Every subscription with the same
answer is one *audience*: the hub matches each event once per audience, not once per
subscription, and at a flush hands every member the same `Batch`, whose frames are
joined once per wire format for all of them. With 5,000 streams on `stock` that is one
match per event and one encoding per flush, instead of 5,000 of each (docs/live.md,
"Fan-out cost").
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from shelfwise.events.outbox import PublishedEvent
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import Scope
from shelfwise.live.channels import ChannelSet, matches

# A member: the hub's `Subscription`. Generic, so this module needs no import of the
# subscription (which holds its audience): no cycle, not even a TYPE_CHECKING one.
M = TypeVar("M")


def audience_key(channels: ChannelSet, principal: Principal) -> Hashable:
    """Equal for two subscriptions exactly when `matches` gives them the same events:
    the channels, plus the principal where an event's owner decides (`orders` without
    `orders:manage`)."""
    owner: tuple[PrincipalKind, uuid.UUID] | None = None
    if channels.orders and Scope.ORDERS_MANAGE not in principal.scopes:
        owner = (principal.kind, principal.id)
    return (channels, owner)


class Batch(tuple[PublishedEvent, ...]):
    """The events of one flush for one audience, in position order, shared by its
    members; `encodings` caches their frames joined, per wire format."""

    encodings: dict[str, Any]

    def __new__(cls, events: list[PublishedEvent]) -> Batch:
        batch = super().__new__(cls, events)
        batch.encodings = {}
        return batch


class Audience(Generic[M]):
    def __init__(self, channels: ChannelSet, principal: Principal) -> None:
        self.channels = channels
        self.principal = principal  # any member's: they match alike (audience_key)
        self.members: set[M] = set()
        self.pending: list[PublishedEvent] = []  # matched since the last flush

    def wants(self, event: PublishedEvent) -> bool:
        return matches(self.channels, event, self.principal)

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from shelfwise.identity.models import Role
from shelfwise.identity.scopes import Scope


class PrincipalKind(StrEnum):
    USER = "user"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a signed-in user or an integration's API key."""

    kind: PrincipalKind
    id: uuid.UUID
    scopes: frozenset[Scope]
    role: Role | None = None  # API keys have no role, so admin-only functions refuse them
    session_id: uuid.UUID | None = None  # set when authenticated by the session cookie

    @property
    def user_id(self) -> uuid.UUID | None:
        return self.id if self.kind is PrincipalKind.USER else None

    @property
    def key(self) -> str:
        """A stable string identifying the caller, e.g. for idempotency-key scoping."""
        return f"{self.kind.value}:{self.id}"

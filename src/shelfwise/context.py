"""The process-wide objects the application builds in its lifespan.

Kept on `app.state.ctx`; request handlers reach them through the dependencies in
`shelfwise.http.deps`, never through module globals.
"""

from __future__ import annotations

from dataclasses import dataclass

from shelfwise.clock import Clock
from shelfwise.config import Settings
from shelfwise.db import Database
from shelfwise.http.pagination import CursorCodec
from shelfwise.identity.passwords import PasswordHasher
from shelfwise.identity.tokens import TokenIssuer


@dataclass(slots=True)
class AppContext:
    settings: Settings
    db: Database
    clock: Clock
    hasher: PasswordHasher
    tokens: TokenIssuer
    cursors: CursorCodec

"""Short-lived JWT access tokens (HS256) with a `kid` header.

Verification looks the key up by `kid` in a key ring, so a new signing key can be
introduced while tokens signed by the previous one still verify until they expire.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from shelfwise.errors import Unauthenticated

ALGORITHM = "HS256"
VERIFIED_TOKENS = 4096  # tokens whose signature is remembered (~1 KB each)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    role: str
    expires_at: datetime


class TokenIssuer:
    def __init__(self, *, keys: dict[str, bytes], signing_kid: str, issuer: str, ttl: timedelta):
        if signing_kid not in keys:
            raise ValueError("the signing key id must be in the key ring")
        self._keys = keys
        self._kid = signing_kid
        self._issuer = issuer
        self.ttl = ttl
        # A client sends one access token with every request for its lifetime, and checking
        # its signature (base64, JSON, HMAC in PyJWT) was ~10 % of an order's CPU
        # (docs/performance.md, issue 14). Only a token that verified is remembered (an
        # exception is not cached); expiry is checked against `now` on every use, and
        # the key ring is fixed for the issuer's life, so the answer cannot go stale.
        self._verified = functools.lru_cache(maxsize=VERIFIED_TOKENS)(self._verify_signature)

    def issue(self, *, user_id: uuid.UUID, role: str, now: datetime) -> tuple[str, datetime]:
        expires = now + self.ttl
        claims = {
            "sub": str(user_id),
            "role": role,
            "iss": self._issuer,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(
            claims, self._keys[self._kid], algorithm=ALGORITHM, headers={"kid": self._kid}
        )
        return token, expires

    def verify(self, token: str, *, now: datetime) -> AccessClaims:
        try:
            claims = self._verified(token)
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthenticated("Invalid access token", reason="invalid_token") from exc
        if claims.expires_at.timestamp() <= now.timestamp():
            raise Unauthenticated("Access token expired", reason="expired")
        return claims

    def _verify_signature(self, token: str) -> AccessClaims:
        """The claims of a token whose signature, issuer and required claims check out;
        its expiry is `verify`'s to judge at every use (this result is remembered)."""
        kid = jwt.get_unverified_header(token).get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated("Unknown signing key", reason="unknown_kid")
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=self._issuer,
            options={"require": ["exp", "iat", "sub", "iss"], "verify_exp": False},
        )
        return AccessClaims(
            user_id=uuid.UUID(claims["sub"]),
            role=str(claims.get("role")),
            expires_at=datetime.fromtimestamp(claims["exp"], tz=UTC),
        )

    def subject(self, token: str) -> uuid.UUID | None:
        """Whose token this is, by signature alone (expiry not checked, nothing read from
        the database): cheap enough (~20 µs) to key per-client caps on before a request
        is authenticated (`http/ratelimit.py`). Never a substitute for `verify`."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                return None
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                # Who, not whether still valid: times are `verify`'s to judge.
                options={
                    "require": ["sub", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
            return uuid.UUID(claims["sub"])
        except (jwt.PyJWTError, ValueError, TypeError):
            return None

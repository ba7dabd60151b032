"""TokenIssuer: short-lived HS256 JWTs with a key ring keyed by `kid`."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from shelfwise.clock import FixedClock
from shelfwise.errors import Unauthenticated
from shelfwise.identity.tokens import TokenIssuer

START = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
OLD_KEY = b"old-signing-key-" + b"o" * 48  # 64 bytes: long enough for HS512 too
NEW_KEY = b"new-signing-key-" + b"n" * 48
TTL = timedelta(minutes=10)
USER = uuid.UUID("0b7e2c0e-8b1c-4a4e-9f3e-2d1c5b6a7f80")


def issuer_with(
    keys: dict[str, bytes] | None = None, kid: str = "k1", iss: str = "shelfwise"
) -> TokenIssuer:
    return TokenIssuer(keys=keys or {"k1": OLD_KEY}, signing_kid=kid, issuer=iss, ttl=TTL)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(token: str) -> list[str]:
    return token.split(".")


def test_issue_and_verify(clock: FixedClock) -> None:
    issuer = issuer_with()
    token, expires = issuer.issue(user_id=USER, role="staff", now=clock.now())
    assert expires == START + TTL
    claims = issuer.verify(token, now=clock.now())
    assert claims.user_id == USER
    assert claims.role == "staff"
    assert claims.expires_at == START + TTL


def test_token_header_names_the_signing_key(clock: FixedClock) -> None:
    token, _ = issuer_with().issue(user_id=USER, role="staff", now=clock.now())
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    assert header["kid"] == "k1"


def test_each_token_is_unique(clock: FixedClock) -> None:
    issuer = issuer_with()
    first, _ = issuer.issue(user_id=USER, role="staff", now=clock.now())
    second, _ = issuer.issue(user_id=USER, role="staff", now=clock.now())
    assert first != second  # jti differs


def test_valid_until_just_before_expiry(clock: FixedClock) -> None:
    issuer = issuer_with()
    token, _ = issuer.issue(user_id=USER, role="staff", now=clock.now())
    clock.advance(TTL - timedelta(seconds=1))
    assert issuer.verify(token, now=clock.now()).user_id == USER


def test_expired_exactly_at_exp(clock: FixedClock) -> None:
    issuer = issuer_with()
    token, _ = issuer.issue(user_id=USER, role="staff", now=clock.now())
    clock.advance(TTL)
    with pytest.raises(Unauthenticated) as caught:
        issuer.verify(token, now=clock.now())
    assert caught.value.extra["reason"] == "expired"


def test_expired_after_exp(clock: FixedClock) -> None:
    issuer = issuer_with()
    token, _ = issuer.issue(user_id=USER, role="staff", now=clock.now())
    clock.advance(TTL + timedelta(hours=1))
    with pytest.raises(Unauthenticated):
        issuer.verify(token, now=clock.now())


def test_unknown_kid_is_refused(clock: FixedClock) -> None:
    token, _ = issuer_with({"k9": NEW_KEY}, kid="k9").issue(
        user_id=USER, role="staff", now=clock.now()
    )
    with pytest.raises(Unauthenticated) as caught:
        issuer_with({"k1": OLD_KEY}).verify(token, now=clock.now())
    assert caught.value.extra["reason"] == "unknown_kid"


def test_missing_kid_is_refused(clock: FixedClock) -> None:
    claims = {
        "sub": str(USER),
        "iss": "shelfwise",
        "iat": int(START.timestamp()),
        "exp": int((START + TTL).timestamp()),
    }
    token = jwt.encode(claims, OLD_KEY, algorithm="HS256")
    with pytest.raises(Unauthenticated):
        issuer_with().verify(token, now=clock.now())


def test_rotation_old_kid_still_verifies(clock: FixedClock) -> None:
    before = issuer_with({"k1": OLD_KEY}, kid="k1")
    old_token, _ = before.issue(user_id=USER, role="staff", now=clock.now())

    after = issuer_with({"k1": OLD_KEY, "k2": NEW_KEY}, kid="k2")
    new_token, _ = after.issue(user_id=USER, role="admin", now=clock.now())

    assert jwt.get_unverified_header(new_token)["kid"] == "k2"
    assert after.verify(old_token, now=clock.now()).role == "staff"
    assert after.verify(new_token, now=clock.now()).role == "admin"
    # Once k1 leaves the ring, its tokens stop verifying.
    retired = issuer_with({"k2": NEW_KEY}, kid="k2")
    with pytest.raises(Unauthenticated):
        retired.verify(old_token, now=clock.now())


def test_kid_pointing_at_the_wrong_key_is_refused(clock: FixedClock) -> None:
    # Signed with the new key but claiming to be k1: the k1 key must not verify it.
    token, _ = issuer_with({"k1": NEW_KEY}).issue(user_id=USER, role="staff", now=clock.now())
    with pytest.raises(Unauthenticated):
        issuer_with({"k1": OLD_KEY, "k2": NEW_KEY}).verify(token, now=clock.now())


def test_signing_kid_must_be_in_the_ring() -> None:
    with pytest.raises(ValueError, match="key ring"):
        TokenIssuer(keys={"k1": OLD_KEY}, signing_kid="k2", issuer="shelfwise", ttl=TTL)


def test_tampered_claims_are_refused(clock: FixedClock) -> None:
    issuer = issuer_with()
    token, _ = issuer.issue(user_id=USER, role="customer", now=clock.now())
    header, payload, signature = _segments(token)
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged_payload = _b64(json.dumps(claims).encode())
    with pytest.raises(Unauthenticated):
        issuer.verify(f"{header}.{forged_payload}.{signature}", now=clock.now())


def test_tampered_signature_is_refused(clock: FixedClock) -> None:
    issuer = issuer_with()
    token, _ = issuer.issue(user_id=USER, role="staff", now=clock.now())
    header, payload, signature = _segments(token)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(Unauthenticated):
        issuer.verify(f"{header}.{payload}.{flipped}", now=clock.now())


def test_wrong_issuer_is_refused(clock: FixedClock) -> None:
    keys = {"k1": OLD_KEY}
    token, _ = issuer_with(keys, iss="someone-else").issue(
        user_id=USER, role="staff", now=clock.now()
    )
    with pytest.raises(Unauthenticated):
        issuer_with(keys, iss="shelfwise").verify(token, now=clock.now())


def test_none_algorithm_is_refused(clock: FixedClock) -> None:
    claims = {
        "sub": str(USER),
        "role": "admin",
        "iss": "shelfwise",
        "iat": int(START.timestamp()),
        "exp": int((START + TTL).timestamp()),
    }
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "k1"}).encode())
    payload = _b64(json.dumps(claims).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        with pytest.raises(Unauthenticated):
            issuer_with().verify(token, now=clock.now())


def test_other_hmac_algorithm_is_refused(clock: FixedClock) -> None:
    claims = {
        "sub": str(USER),
        "iss": "shelfwise",
        "iat": int(START.timestamp()),
        "exp": int((START + TTL).timestamp()),
    }
    token = jwt.encode(claims, OLD_KEY, algorithm="HS512", headers={"kid": "k1"})
    with pytest.raises(Unauthenticated):
        issuer_with().verify(token, now=clock.now())


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "iss"])
def test_required_claims(clock: FixedClock, missing: str) -> None:
    claims: dict[str, object] = {
        "sub": str(USER),
        "iss": "shelfwise",
        "iat": int(START.timestamp()),
        "exp": int((START + TTL).timestamp()),
    }
    del claims[missing]
    token = jwt.encode(claims, OLD_KEY, algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(Unauthenticated):
        issuer_with().verify(token, now=clock.now())


def test_subject_must_be_a_uuid(clock: FixedClock) -> None:
    claims = {
        "sub": "not-a-uuid",
        "iss": "shelfwise",
        "iat": int(START.timestamp()),
        "exp": int((START + TTL).timestamp()),
    }
    token = jwt.encode(claims, OLD_KEY, algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(Unauthenticated):
        issuer_with().verify(token, now=clock.now())


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "sw_looks_like_a_key", "...."])
def test_garbage_is_refused(clock: FixedClock, garbage: str) -> None:
    with pytest.raises(Unauthenticated):
        issuer_with().verify(garbage, now=clock.now())


def test_a_remembered_token_still_expires_and_a_forged_one_is_never_remembered(
    clock: FixedClock,
) -> None:
    """Verified signatures are remembered (issue 14: ~10 % of an order's CPU); expiry is
    judged at every use, and a refusal is not remembered as anything."""
    issuer = issuer_with()
    token, _ = issuer.issue(user_id=USER, role="staff", now=clock.now())
    assert issuer.verify(token, now=clock.now()).user_id == USER
    assert issuer.verify(token, now=clock.now()).user_id == USER  # from memory
    clock.advance(TTL)
    with pytest.raises(Unauthenticated) as expired:
        issuer.verify(token, now=clock.now())
    assert expired.value.extra["reason"] == "expired"

    header, payload, _ = _segments(token)
    forged = ".".join([header, payload, _b64(b"x" * 32)])
    for _ in range(2):
        with pytest.raises(Unauthenticated) as refused:
            issuer.verify(forged, now=START)
        assert refused.value.extra["reason"] == "invalid_token"

"""argon2id hashing (the real library, at its cheapest allowed settings) and the policy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shelfwise.errors import InvalidInput
from shelfwise.identity.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PasswordHasher,
)
from shelfwise.identity.service import check_password_policy

MIN_MEMORY_KIB = 8 * 1024  # the lowest value Settings accepts
PASSWORD = "correct-horse-battery-staple"


def make_hasher(*, time_cost: int = 1, memory_kib: int = MIN_MEMORY_KIB) -> PasswordHasher:
    return PasswordHasher(memory_kib=memory_kib, time_cost=time_cost, parallelism=1)


@pytest.fixture
def hasher() -> Iterator[PasswordHasher]:
    h = make_hasher()
    yield h
    h.close()


async def test_hash_is_argon2id_and_verifies(hasher: PasswordHasher) -> None:
    stored = await hasher.hash(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert f"m={MIN_MEMORY_KIB},t=1,p=1" in stored
    assert await hasher.verify(stored, PASSWORD) is True


async def test_hashes_are_salted(hasher: PasswordHasher) -> None:
    assert await hasher.hash(PASSWORD) != await hasher.hash(PASSWORD)


async def test_wrong_password_does_not_verify(hasher: PasswordHasher) -> None:
    stored = await hasher.hash(PASSWORD)
    assert await hasher.verify(stored, PASSWORD + "!") is False
    assert await hasher.verify(stored, PASSWORD.upper()) is False
    assert await hasher.verify(stored, "") is False


async def test_verify_without_stored_hash_is_false(hasher: PasswordHasher) -> None:
    # Unknown user: the dummy hash is checked for timing, but the answer is always False,
    # even for the dummy's own password.
    assert await hasher.verify(None, PASSWORD) is False
    assert await hasher.verify(None, "shelfwise-timing-equaliser") is False


@pytest.mark.parametrize("stored", ["", "not-a-hash", "$argon2id$v=19$garbage", "$2b$12$abc"])
async def test_malformed_stored_hash_is_false_not_an_error(
    hasher: PasswordHasher, stored: str
) -> None:
    assert await hasher.verify(stored, PASSWORD) is False


async def test_needs_rehash_only_when_parameters_change(hasher: PasswordHasher) -> None:
    stored = await hasher.hash(PASSWORD)
    assert hasher.needs_rehash(stored) is False

    stronger = make_hasher(time_cost=2)
    more_memory = make_hasher(memory_kib=MIN_MEMORY_KIB * 2)
    try:
        assert stronger.needs_rehash(stored) is True
        assert more_memory.needs_rehash(stored) is True
        # Old hashes still verify under the new parameters; they are upgraded on login.
        assert await stronger.verify(stored, PASSWORD) is True
        rehashed = await stronger.hash(PASSWORD)
        assert stronger.needs_rehash(rehashed) is False
        assert hasher.needs_rehash(rehashed) is True
    finally:
        stronger.close()
        more_memory.close()


def test_policy_bounds_are_the_documented_ones() -> None:
    assert (MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH) == (12, 128)


@pytest.mark.parametrize("length", [12, 13, 64, 128])
def test_policy_accepts(length: int) -> None:
    check_password_policy("x" * length)


@pytest.mark.parametrize("length", [0, 1, 11, 129, 1000])
def test_policy_refuses(length: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_password_policy("x" * length)
    assert caught.value.extra["errors"][0]["field"] == "body.password"


def test_policy_has_no_composition_rules() -> None:
    check_password_policy("aaaaaaaaaaaa")  # twelve of one letter: length is what counts
    check_password_policy("пароль-пароль")  # non-ASCII is fine

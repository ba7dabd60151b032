"""CursorCodec: opaque, tamper-evident, scoped pagination cursors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from shelfwise.errors import InvalidCursor
from shelfwise.http.pagination import CursorCodec

SECRET = b"unit-test-cursor-secret-0123456789"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signed(payload: object, secret: bytes = SECRET) -> str:
    """A correctly signed cursor around an arbitrary JSON payload."""
    raw = json.dumps(payload, separators=(",", ":")).encode()
    signature = hmac.new(secret, raw, hashlib.sha256).digest()[:16]
    return f"{_b64(raw)}.{_b64(signature)}"


@pytest.fixture
def codec() -> CursorCodec:
    return CursorCodec(SECRET)


@pytest.mark.parametrize(
    "key",
    [
        ("2026-01-15T09:00:00+00:00", "6f1c6b8e-3a43-4c55-9a8e-0c1f6ad5c0b1"),
        ("42",),
        ("naïve ☕ name", "with.dots_and/slashes"),
        ("",),
    ],
)
def test_round_trip(codec: CursorCodec, key: tuple[str, ...]) -> None:
    cursor = codec.encode("products:name::", key)
    assert codec.decode("products:name::", cursor) == key


def test_cursor_is_url_safe_and_opaque(codec: CursorCodec) -> None:
    cursor = codec.encode("products:name::", ("Mug", "id-1"))
    assert all(c.isalnum() or c in "-_." for c in cursor)
    assert "Mug" not in cursor


def test_tampered_payload_is_refused(codec: CursorCodec) -> None:
    cursor = codec.encode("locations", ("A-01",))
    _, signature = cursor.split(".")
    forged = _b64(json.dumps(["locations", "Z-99"], separators=(",", ":")).encode())
    with pytest.raises(InvalidCursor):
        codec.decode("locations", f"{forged}.{signature}")


def test_tampered_signature_is_refused(codec: CursorCodec) -> None:
    cursor = codec.encode("locations", ("A-01",))
    body, signature = cursor.split(".")
    raw = bytearray(_unb64(signature))
    raw[0] ^= 0x01
    with pytest.raises(InvalidCursor):
        codec.decode("locations", f"{body}.{_b64(bytes(raw))}")


def test_cursor_signed_with_another_secret_is_refused(codec: CursorCodec) -> None:
    other = CursorCodec(b"some-other-secret-0123456789abcdef")
    with pytest.raises(InvalidCursor):
        codec.decode("locations", other.encode("locations", ("A-01",)))


def test_cursor_of_another_scope_is_refused(codec: CursorCodec) -> None:
    cursor = codec.encode("products:name::", ("Mug", "id-1"))
    with pytest.raises(InvalidCursor):
        codec.decode("products:-name::", cursor)
    with pytest.raises(InvalidCursor):
        codec.decode("locations", cursor)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "no-dot-at-all",
        "a.b",
        "!!!.???",
        "....",
        "\x00.\x00",
        "é.é",
        "YQ",  # valid base64, no signature part
    ],
)
def test_garbage_is_refused(codec: CursorCodec, garbage: str) -> None:
    with pytest.raises(InvalidCursor):
        codec.decode("locations", garbage)


@pytest.mark.parametrize(
    "payload",
    [
        {"scope": "locations"},  # not a list
        [],  # empty
        "locations",  # a bare string
        None,
        [None, "A-01"],  # scope missing
    ],
)
def test_signed_but_malformed_payload_is_refused(codec: CursorCodec, payload: object) -> None:
    with pytest.raises(InvalidCursor):
        codec.decode("locations", _signed(payload))


@pytest.mark.parametrize(
    "parts",
    [
        ["locations", 1],
        ["locations", None],
        ["locations", ["A-01"]],
        ["locations", {"code": "A-01"}],
        ["locations", "A-01", 3.5],
        ["locations", True],
    ],
)
def test_non_string_parts_are_refused(codec: CursorCodec, parts: list[object]) -> None:
    with pytest.raises(InvalidCursor):
        codec.decode("locations", _signed(parts))


def test_signed_payload_with_string_parts_is_accepted(codec: CursorCodec) -> None:
    # Sanity check of the helper above: a well-formed signed payload does decode.
    assert codec.decode("locations", _signed(["locations", "A-01"])) == ("A-01",)

"""A rendered model's pre-encoded body is byte for byte what `JSONResponse` sends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from shelfwise.http.idempotency import RenderedResponse, json_response, render_model
from shelfwise.idempotency.service import StoredResponse
from shelfwise.orders.models import OrderStatus
from shelfwise.orders.schemas import OrderLineOut, OrderOut

# Strings JSON escapes (quote, backslash, control characters), and ones it may or may
# not escape (non-ASCII, U+2028, an astral character, DEL).
AWKWARD = ['é"\\\n\t\x01\x1f', "\u2028\u2029", "\U0001f6d2 \x7f", "", "EUR"]


def _order(currency: str, lines: int) -> OrderOut:
    now = datetime(2026, 12, 6, 15, 59, 1, 123456, tzinfo=UTC)
    return OrderOut(
        id=uuid.uuid4(),
        status=OrderStatus.RESERVED,
        placed_by_user_id=uuid.uuid4(),
        placed_by_api_key_id=None,
        currency=currency,
        total_minor=-(2**40),
        expires_at=now.astimezone(timezone(timedelta(hours=-3, minutes=-30))),
        lines=[
            OrderLineOut(
                product_id=uuid.uuid4(),
                location_id=uuid.uuid4(),
                quantity=n + 1,
                unit_price_minor=0,
                currency=currency,
            )
            for n in range(lines)
        ],
        version=1,
        created_at=now,
        updated_at=now.replace(microsecond=0),
    )


@pytest.mark.parametrize("currency", AWKWARD)
@pytest.mark.parametrize("lines", [0, 1, 3])
def test_an_order_is_encoded_as_json_response_encodes_it(currency: str, lines: int) -> None:
    model = _order(currency, lines)
    stored = render_model(201)(model)
    assert isinstance(stored, RenderedResponse)
    assert stored.body == model.model_dump(mode="json")
    plain = JSONResponse(stored.body, status_code=201, headers={"X-A": "1"})
    encoded = json_response(stored, replayed=False, headers={"X-A": "1"})
    assert encoded.body == plain.body
    assert isinstance(encoded, JSONResponse)
    assert encoded.status_code == 201
    assert encoded.headers["content-length"] == plain.headers["content-length"]
    assert encoded.headers["content-type"] == plain.headers["content-type"]
    assert encoded.headers["idempotent-replayed"] == "false"


class _Other(BaseModel):
    name: str
    tags: list[str]
    nested: dict[str, int | None]


@pytest.mark.parametrize("text", AWKWARD)
def test_any_model_is_encoded_as_json_response_encodes_it(text: str) -> None:
    model = _Other(name=text, tags=[text, "b"], nested={text: None, "n": 7})
    stored = render_model(200)(model)
    assert json_response(stored, replayed=False).body == JSONResponse(stored.body).body


def test_a_stored_response_read_back_is_encoded_from_its_body() -> None:
    stored = StoredResponse(status=201, body={"id": "x", "lines": []})
    response = json_response(stored, replayed=True)
    assert response.body == b'{"id":"x","lines":[]}'
    assert response.headers["idempotent-replayed"] == "true"

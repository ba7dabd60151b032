"""Products: CRUD with ETags and preconditions, filters, search, sorting, permissions."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.support import create_location, create_product, product_body, receive_stock

PROBLEM = "application/problem+json"


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == PROBLEM, response.text
    return str(response.json()["code"])


async def list_all(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every page of a product listing, following `next_cursor`."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/products", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["data"])
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            return items


# -- create / read -----------------------------------------------------------------------


async def test_create_returns_201_location_and_etag(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    body = product_body(name="  Enamel mug  ", description="Blue rim")
    response = await client.post("/v1/products", json=body, headers=staff["headers"])
    assert response.status_code == 201, response.text
    product = response.json()
    assert product["version"] == 1
    assert product["name"] == "Enamel mug"  # trimmed
    assert {k: product[k] for k in ("sku", "category", "price_minor", "currency")} == {
        k: body[k] for k in ("sku", "category", "price_minor", "currency")
    }
    assert response.headers["etag"] == '"v1"'
    location = response.headers["location"]
    assert location.endswith(f"/v1/products/{product['id']}")

    fetched = await client.get(location)
    assert fetched.status_code == 200
    assert fetched.json() == product


async def test_create_duplicate_sku_is_409(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"])
    response = await client.post(
        "/v1/products", json=product_body(sku=product["sku"]), headers=staff["headers"]
    )
    assert response.status_code == 409
    assert problem_code(response) == "sku_taken"


async def test_get_has_etag_and_public_cache_control(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"])
    response = await client.get(f"/v1/products/{product['id']}")
    assert response.status_code == 200
    assert response.headers["etag"] == '"v1"'
    assert response.headers["cache-control"] == "public, max-age=60"
    assert "Accept-Encoding" in response.headers["vary"]


@pytest.mark.parametrize("if_none_match", ['"v1"', 'W/"v1"', '"v0", "v1"', "*"])
async def test_if_none_match_gives_304_without_body(
    client: httpx.AsyncClient, staff: dict[str, Any], if_none_match: str
) -> None:
    product = await create_product(client, staff["headers"])
    response = await client.get(
        f"/v1/products/{product['id']}", headers={"If-None-Match": if_none_match}
    )
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == '"v1"'
    assert response.headers["cache-control"] == "public, max-age=60"


async def test_if_none_match_with_a_stale_etag_gives_200(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"])
    response = await client.get(f"/v1/products/{product['id']}", headers={"If-None-Match": '"v7"'})
    assert response.status_code == 200
    assert response.json()["id"] == product["id"]


async def test_get_unknown_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/products/{uuid.uuid4()}")
    assert response.status_code == 404
    assert problem_code(response) == "product_not_found"


# -- update ------------------------------------------------------------------------------


async def test_patch_requires_if_match(client: httpx.AsyncClient, staff: dict[str, Any]) -> None:
    product = await create_product(client, staff["headers"])
    response = await client.patch(
        f"/v1/products/{product['id']}", json={"name": "Renamed"}, headers=staff["headers"]
    )
    assert response.status_code == 428
    assert problem_code(response) == "precondition_required"


async def test_patch_with_current_etag_updates_and_bumps_version(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"], price_minor=500)
    url = f"/v1/products/{product['id']}"
    etag = (await client.get(url)).headers["etag"]

    response = await client.patch(
        url,
        json={"name": "Renamed mug", "price_minor": 750},
        headers={**staff["headers"], "If-Match": etag},
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["version"] == product["version"] + 1
    assert response.headers["etag"] == f'"v{updated["version"]}"' != etag
    assert (updated["name"], updated["price_minor"]) == ("Renamed mug", 750)
    assert updated["sku"] == product["sku"]  # untouched fields stay
    assert updated["created_at"] == product["created_at"]

    fetched = await client.get(url)
    assert fetched.json() == updated
    assert fetched.headers["etag"] == response.headers["etag"]


async def test_patch_with_stale_etag_is_412_and_changes_nothing(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"])
    url = f"/v1/products/{product['id']}"
    first = await client.patch(
        url, json={"name": "First writer"}, headers={**staff["headers"], "If-Match": '"v1"'}
    )
    assert first.status_code == 200

    lost_update = await client.patch(
        url, json={"name": "Second writer"}, headers={**staff["headers"], "If-Match": '"v1"'}
    )
    assert lost_update.status_code == 412
    assert problem_code(lost_update) == "precondition_failed"
    assert (await client.get(url)).json()["name"] == "First writer"


@pytest.mark.parametrize("if_match", ['W/"v1"', "v1", "garbage"])
async def test_patch_with_weak_or_malformed_if_match_is_412(
    client: httpx.AsyncClient, staff: dict[str, Any], if_match: str
) -> None:
    product = await create_product(client, staff["headers"])
    response = await client.patch(
        f"/v1/products/{product['id']}",
        json={"name": "Renamed"},
        headers={**staff["headers"], "If-Match": if_match},
    )
    assert response.status_code == 412


async def test_patch_with_if_match_star_updates_any_current_version(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"])
    url = f"/v1/products/{product['id']}"
    for name in ("First", "Second"):  # `*` matches v1, then v2 (RFC 9110 §13.1.1)
        response = await client.patch(
            url, json={"name": name}, headers={**staff["headers"], "If-Match": "*"}
        )
        assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"v3"'
    assert (await client.get(url)).json()["name"] == "Second"


async def test_patch_unknown_product_is_404(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    response = await client.patch(
        f"/v1/products/{uuid.uuid4()}",
        json={"name": "Ghost"},
        headers={**staff["headers"], "If-Match": '"v1"'},
    )
    assert response.status_code == 404
    assert problem_code(response) == "product_not_found"


async def test_patch_sku_to_an_existing_one_is_409(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    taken = await create_product(client, staff["headers"])
    product = await create_product(client, staff["headers"])
    url = f"/v1/products/{product['id']}"
    response = await client.patch(
        url, json={"sku": taken["sku"]}, headers={**staff["headers"], "If-Match": '"v1"'}
    )
    assert response.status_code == 409
    assert problem_code(response) == "sku_taken"
    after = (await client.get(url)).json()
    assert (after["sku"], after["version"]) == (product["sku"], 1)


@pytest.mark.parametrize(
    ("body", "field_hint"),
    [
        ({"name": None}, "name"),
        ({"price_minor": None}, "price_minor"),
        ({}, "at least one field"),
        ({"price_minor": -5}, "price_minor"),
        ({"version": 9}, "version"),
    ],
)
async def test_patch_invalid_body_is_422(
    client: httpx.AsyncClient, staff: dict[str, Any], body: dict[str, Any], field_hint: str
) -> None:
    product = await create_product(client, staff["headers"])
    response = await client.patch(
        f"/v1/products/{product['id']}",
        json=body,
        headers={**staff["headers"], "If-Match": '"v1"'},
    )
    assert response.status_code == 422
    assert problem_code(response) == "validation_failed"
    assert field_hint in response.text
    assert (await client.get(f"/v1/products/{product['id']}")).json()["version"] == 1


# -- delete ------------------------------------------------------------------------------


async def test_delete_then_404(client: httpx.AsyncClient, staff: dict[str, Any]) -> None:
    product = await create_product(client, staff["headers"])
    url = f"/v1/products/{product['id']}"
    response = await client.delete(url, headers=staff["headers"])
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(url)).status_code == 404
    again = await client.delete(url, headers=staff["headers"])
    assert again.status_code == 404
    assert problem_code(again) == "product_not_found"


async def test_delete_honours_if_match(client: httpx.AsyncClient, staff: dict[str, Any]) -> None:
    product = await create_product(client, staff["headers"])
    url = f"/v1/products/{product['id']}"
    stale = await client.delete(url, headers={**staff["headers"], "If-Match": '"v2"'})
    assert stale.status_code == 412
    assert (await client.get(url)).status_code == 200
    current = await client.delete(url, headers={**staff["headers"], "If-Match": '"v1"'})
    assert current.status_code == 204


async def test_delete_of_a_product_with_stock_history_is_409(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"])
    location = await create_location(client, staff["headers"])
    received = await receive_stock(client, staff["headers"], product["id"], location["id"], 3)
    assert received.status_code == 201
    response = await client.delete(f"/v1/products/{product['id']}", headers=staff["headers"])
    assert response.status_code == 409
    assert problem_code(response) == "product_in_use"
    assert (await client.get(f"/v1/products/{product['id']}")).status_code == 200


# -- listing -----------------------------------------------------------------------------


async def test_list_filters_by_category(client: httpx.AsyncClient, staff: dict[str, Any]) -> None:
    mugs = [await create_product(client, staff["headers"], category="mugs") for _ in range(3)]
    await create_product(client, staff["headers"], category="teapots")
    listed = await list_all(client, category="mugs")
    assert sorted(p["id"] for p in listed) == sorted(p["id"] for p in mugs)
    assert await list_all(client, category="nothing-here") == []


async def test_invalid_category_filter_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/products", params={"category": "Not Valid!"})
    assert response.status_code == 422


@pytest.fixture
async def searchable(client: httpx.AsyncClient, staff: dict[str, Any]) -> dict[str, str]:
    specs = {
        "red_mug": ("MUG-RED-01", "Red enamel mug"),
        "blue_teapot": ("TEA-BLUE-02", "Blue teapot"),
        "red_kettle": ("KET-03", "Red kettle"),
        "saucer": ("SAU-04", "Saucer"),
        "lamp": ("A1-23", "Lamp"),
    }
    ids = {}
    for key, (sku, name) in specs.items():
        ids[key] = (await create_product(client, staff["headers"], sku=sku, name=name))["id"]
    return ids


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("red", {"red_mug", "red_kettle"}),
        ("re", {"red_mug", "red_kettle"}),  # prefix of a word
        ("RED MUG", {"red_mug"}),  # every word must match
        ("enam", {"red_mug"}),
        ("tea", {"blue_teapot"}),  # prefix of the name word and of the SKU
        ("ket-03", {"red_kettle"}),  # the whole SKU (indexed as `ket` and `-03`)
        ("KET-0", {"red_kettle"}),
        ("a1-23", {"lamp"}),  # the whole SKU (indexed as `a1-23`, `a1` and `23`)
        ("mug-red", {"red_mug"}),  # SKU parts
        ("sau", {"saucer"}),
        ("green", set()),
        ("ug", set()),  # not a prefix of any word
        ("'); drop table products; --", set()),
        ("red & !mug", {"red_mug"}),  # operators are not tsquery syntax, just noise
    ],
)
async def test_text_search_prefix_matches_words_and_sku(
    client: httpx.AsyncClient, searchable: dict[str, str], q: str, expected: set[str]
) -> None:
    found = {p["id"] for p in await list_all(client, q=q)}
    assert found == {searchable[key] for key in expected}


async def test_search_with_no_words_lists_everything(
    client: httpx.AsyncClient, searchable: dict[str, str]
) -> None:
    found = {p["id"] for p in await list_all(client, q="&&& !!!")}
    assert found == set(searchable.values())


async def test_search_combines_with_category(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    kitchen = await create_product(client, staff["headers"], name="Red mug", category="kitchen")
    await create_product(client, staff["headers"], name="Red mug", category="garden")
    found = await list_all(client, q="red", category="kitchen")
    assert [p["id"] for p in found] == [kitchen["id"]]


@pytest.fixture
async def sortable(client: httpx.AsyncClient, staff: dict[str, Any]) -> list[dict[str, Any]]:
    specs = [("Doormat", 900), ("Anvil", 4500), ("Candle", 300), ("Bucket", 1200), ("Easel", 300)]
    return [
        await create_product(client, staff["headers"], name=name, price_minor=price)
        for name, price in specs
    ]


@pytest.mark.parametrize("limit", [2, 100])
@pytest.mark.parametrize(
    ("sort", "key", "reverse"),
    [
        ("name", "name", False),
        ("-name", "name", True),
        ("price", "price_minor", False),
        ("-price", "price_minor", True),
        ("sku", "sku", False),
        ("created_at", "created_at", False),
        ("-created_at", "created_at", True),
    ],
)
async def test_sorting_is_correct_across_pages(
    client: httpx.AsyncClient,
    sortable: list[dict[str, Any]],
    sort: str,
    key: str,
    reverse: bool,
    limit: int,
) -> None:
    listed = await list_all(client, sort=sort, limit=limit)
    # Ties (two products at 300) are broken by id, in the direction of the sort.
    expected = sorted(sortable, key=lambda p: (p[key], p["id"]), reverse=reverse)
    assert [p["id"] for p in listed] == [p["id"] for p in expected]


async def test_cursor_is_bound_to_its_sort(
    client: httpx.AsyncClient, sortable: list[dict[str, Any]]
) -> None:
    page = (await client.get("/v1/products", params={"sort": "name", "limit": 2})).json()
    assert page["has_more"] is True
    response = await client.get(
        "/v1/products", params={"sort": "-name", "limit": 2, "cursor": page["next_cursor"]}
    )
    assert response.status_code == 422
    assert problem_code(response) == "invalid_cursor"


@pytest.mark.parametrize("sort", ["colour", "NAME", "+name", "price_minor", ""])
async def test_invalid_sort_is_422(client: httpx.AsyncClient, sort: str) -> None:
    response = await client.get("/v1/products", params={"sort": sort})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.sort"


async def test_list_page_size_is_capped(
    client: httpx.AsyncClient, sortable: list[dict[str, Any]]
) -> None:
    response = await client.get("/v1/products", params={"limit": 10_000})
    assert response.status_code == 200
    assert len(response.json()["data"]) == len(sortable)


# -- permissions -------------------------------------------------------------------------


async def test_customer_cannot_write(
    client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    response = await client.post("/v1/products", json=product_body(), headers=customer["headers"])
    assert response.status_code == 403
    assert problem_code(response) == "forbidden"

    product = await create_product(client, staff["headers"])
    url = f"/v1/products/{product['id']}"
    patch = await client.patch(
        url, json={"name": "Hacked"}, headers={**customer["headers"], "If-Match": '"v1"'}
    )
    assert patch.status_code == 403
    assert (await client.delete(url, headers=customer["headers"])).status_code == 403
    assert (await client.get(url)).json()["name"] == product["name"]


async def test_anonymous_can_read_but_not_write(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"])
    assert (await client.get("/v1/products")).status_code == 200
    assert (await client.get(f"/v1/products/{product['id']}")).status_code == 200
    response = await client.post("/v1/products", json=product_body())
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"

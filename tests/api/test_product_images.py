"""Product images: streamed upload with its own size limit, type from the bytes, atomic
placement, no partial file after any failure; served with ETag and long-lived caching."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shelfwise.catalog.service import ProductNotFound
from shelfwise.config import Settings
from shelfwise.context import AppContext
from shelfwise.uploads import service as images
from shelfwise.uploads.storage import ImageStore
from tests.support import create_location, create_product, receive_stock

LIMIT = 2 * 1024 * 1024  # above the global 1 MiB body limit: the route has its own
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"p" * 200
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"j" * 200
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"w" * 200


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path, "image_max_bytes": LIMIT})


def stored_files(settings: Settings) -> list[Path]:
    root = settings.data_dir / "images"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("body", "kind"), [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp")]
)
async def test_upload_and_serve_with_etag_and_caching(
    client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings, body: bytes, kind: str
) -> None:
    product = await create_product(client, staff["headers"])
    path = f"/v1/products/{product['id']}/image"
    # No (or a generic) Content-Type: the type comes from the bytes.
    put = await client.put(
        path, content=body, headers={**staff["headers"], "Content-Type": "application/octet-stream"}
    )
    assert put.status_code == 200, put.text
    sha = hashlib.sha256(body).hexdigest()
    assert put.json() | {"url": None} == {
        "product_id": product["id"],
        "content_type": kind,
        "size": len(body),
        "sha256": sha,
        "url": None,
    }
    got = await client.get(path)  # public
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["content-type"] == kind
    assert got.headers["etag"] == f'"{sha}"'
    assert got.headers["cache-control"] == "public, max-age=60, must-revalidate"
    versioned = await client.get(put.json()["url"])
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
    not_modified = await client.get(path, headers={"If-None-Match": f'"{sha}"'})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == f'"{sha}"'
    assert [p.name for p in stored_files(settings)] == [sha]


async def test_replacing_an_image_removes_the_old_file_and_changes_the_etag(
    client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings
) -> None:
    product = await create_product(client, staff["headers"])
    path = f"/v1/products/{product['id']}/image"
    first = await client.put(path, content=PNG, headers=staff["headers"])
    second = await client.put(path, content=JPEG, headers=staff["headers"])
    assert first.status_code == second.status_code == 200
    got = await client.get(path, headers={"If-None-Match": f'"{first.json()["sha256"]}"'})
    assert got.status_code == 200
    assert got.content == JPEG
    assert [p.name for p in stored_files(settings)] == [second.json()["sha256"]]


async def test_bigger_than_the_global_body_limit_but_within_the_image_limit(
    client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings
) -> None:
    product = await create_product(client, staff["headers"])
    body = PNG + b"x" * (LIMIT - len(PNG))  # exactly the limit, 2 MiB > 1 MiB
    put = await client.put(
        f"/v1/products/{product['id']}/image", content=chunks(body), headers=staff["headers"]
    )
    assert put.status_code == 200, put.text
    assert put.json()["size"] == LIMIT


@pytest.mark.parametrize("chunked", [False, True])
async def test_too_large_is_413_and_leaves_no_file(
    client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings, chunked: bool
) -> None:
    product = await create_product(client, staff["headers"])
    body = PNG + b"x" * LIMIT
    put = await client.put(
        f"/v1/products/{product['id']}/image",
        content=chunks(body) if chunked else body,  # chunked: no Content-Length to refuse on
        headers=staff["headers"],
    )
    assert put.status_code == 413, put.text
    assert put.json()["code"] == "payload_too_large"
    assert stored_files(settings) == []
    assert (await client.get(f"/v1/products/{product['id']}/image")).status_code == 404


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"GIF89a" + b"g" * 100, "image/gif"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/png"),  # lies about its type
        (PNG, "image/jpeg"),  # a PNG declared as JPEG
        (b"\x89PN", "image/png"),  # too short to be anything
    ],
)
async def test_wrong_type_is_415_and_leaves_no_file(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    settings: Settings,
    body: bytes,
    content_type: str,
) -> None:
    product = await create_product(client, staff["headers"])
    put = await client.put(
        f"/v1/products/{product['id']}/image",
        content=body,
        headers={**staff["headers"], "Content-Type": content_type},
    )
    assert put.status_code == 415, put.text
    assert put.json()["code"] == "unsupported_media_type"
    assert stored_files(settings) == []


async def raw_put(
    app: Any, path: str, headers: dict[str, str], messages: list[dict[str, Any]]
) -> tuple[int, bytes]:
    """Drive the ASGI app directly, to send what a real client can: a body that stops
    short of its Content-Length, or a disconnect in the middle of the body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"shelfwise.test")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("shelfwise.test", 443),
    }
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


async def test_truncated_upload_is_400_and_leaves_no_file(
    app: Any, client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings
) -> None:
    product = await create_product(client, staff["headers"])
    status, body = await raw_put(
        app,
        f"/v1/products/{product['id']}/image",
        {**staff["headers"], "Content-Length": str(len(PNG) + 1000)},
        [{"type": "http.request", "body": PNG, "more_body": False}],
    )
    assert status == 400, body
    assert b"truncated" in body
    assert stored_files(settings) == []


async def test_interrupted_upload_leaves_no_file(
    app: Any, client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings
) -> None:
    product = await create_product(client, staff["headers"])
    status, _ = await raw_put(
        app,
        f"/v1/products/{product['id']}/image",
        staff["headers"],
        [
            {"type": "http.request", "body": PNG, "more_body": True},
            {"type": "http.request", "body": b"x" * 70_000, "more_body": True},
            {"type": "http.disconnect"},
        ],
    )
    assert status == 400
    assert stored_files(settings) == []
    assert (await client.get(f"/v1/products/{product['id']}/image")).status_code == 404


async def test_unknown_product_and_missing_image_are_404(
    client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings
) -> None:
    missing = "/v1/products/00000000-0000-0000-0000-000000000000/image"
    assert (await client.put(missing, content=PNG, headers=staff["headers"])).status_code == 404
    product = await create_product(client, staff["headers"])
    assert (await client.get(f"/v1/products/{product['id']}/image")).status_code == 404
    assert stored_files(settings) == []


async def put_image(client: httpx.AsyncClient, staff: dict[str, Any], body: bytes) -> str:
    product = await create_product(client, staff["headers"])
    put = await client.put(
        f"/v1/products/{product['id']}/image", content=body, headers=staff["headers"]
    )
    assert put.status_code == 200, put.text
    return str(product["id"])


async def test_an_image_whose_file_is_gone_is_404_not_500(
    client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings
) -> None:
    product_id = await put_image(client, staff, PNG)
    (stored,) = stored_files(settings)
    stored.unlink()  # lost outside the application
    response = await client.get(f"/v1/products/{product_id}/image")
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_deleting_a_product_deletes_its_image_file(
    client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings
) -> None:
    product_id = await put_image(client, staff, PNG)
    assert len(stored_files(settings)) == 1
    deleted = await client.delete(f"/v1/products/{product_id}", headers=staff["headers"])
    assert deleted.status_code == 204, deleted.text
    assert stored_files(settings) == []
    assert (await client.get(f"/v1/products/{product_id}/image")).status_code == 404


async def test_a_file_shared_by_two_products_goes_with_the_last_one(
    client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings
) -> None:
    first = await put_image(client, staff, PNG)
    second = await put_image(client, staff, PNG)  # same bytes, same file
    png = [p.name for p in stored_files(settings)]
    assert png == [hashlib.sha256(PNG).hexdigest()]

    gone = await client.delete(f"/v1/products/{first}", headers=staff["headers"])
    assert gone.status_code == 204
    assert [p.name for p in stored_files(settings)] == png  # still used by the second
    assert (await client.get(f"/v1/products/{second}/image")).content == PNG

    replaced = await client.put(
        f"/v1/products/{second}/image", content=JPEG, headers=staff["headers"]
    )
    assert replaced.status_code == 200
    assert [p.name for p in stored_files(settings)] == [hashlib.sha256(JPEG).hexdigest()]
    gone = await client.delete(f"/v1/products/{second}", headers=staff["headers"])
    assert gone.status_code == 204
    assert stored_files(settings) == []


async def test_a_delete_that_fails_keeps_the_file_and_a_missing_file_is_no_error(
    client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings
) -> None:
    product_id = await put_image(client, staff, PNG)
    location = await create_location(client, staff["headers"])
    assert (await receive_stock(client, staff["headers"], product_id, location["id"], 3)).is_success
    refused = await client.delete(f"/v1/products/{product_id}", headers=staff["headers"])
    assert refused.status_code == 409, refused.text  # stock history: rolled back
    assert (await client.get(f"/v1/products/{product_id}/image")).content == PNG

    other = await put_image(client, staff, JPEG)
    ImageStore(settings.data_dir / "images").path_of(hashlib.sha256(JPEG).hexdigest()).unlink()
    deleted = await client.delete(f"/v1/products/{other}", headers=staff["headers"])
    assert deleted.status_code == 204, deleted.text
    assert [p.name for p in stored_files(settings)] == [hashlib.sha256(PNG).hexdigest()]


async def test_upload_for_a_product_deleted_meanwhile_leaves_no_file(
    ctx: AppContext, client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings
) -> None:
    product = await create_product(client, staff["headers"])
    store = ImageStore(settings.data_dir / "images")
    staged = await store.stage(chunks(WEBP), max_bytes=LIMIT)  # the body has arrived...
    deleted = await client.delete(f"/v1/products/{product['id']}", headers=staff["headers"])
    assert deleted.status_code == 204  # ...but the product went in the meantime
    async with ctx.db.sessions() as session:
        with pytest.raises(ProductNotFound):
            await images.attach_image(session, store, uuid.UUID(product["id"]), staged)
    assert stored_files(settings) == []

"""`/docs` works offline: Swagger UI's files come from the pinned `swagger-ui-bundle`
wheel, served under `/docs/assets/`, and the page's inline script runs by nonce."""

from __future__ import annotations

import re

import httpx
import pytest

from shelfwise.http.docs import swagger_assets


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


async def test_docs_need_no_cdn(client: httpx.AsyncClient) -> None:
    if swagger_assets() is None:
        pytest.skip("swagger-ui-bundle is not installed: /docs falls back to the CDN")
    page = await client.get("/docs")
    assert "cdn.jsdelivr" not in page.text
    assert "https://" not in page.text.replace("https://shelfwise.test", "")
    nonce = re.search(r"'nonce-([^']+)'", page.headers["content-security-policy"])
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}">' in page.text
    assert "'unsafe-inline'" not in page.headers["content-security-policy"].split("style-src")[0]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        served = await client.get(f"/docs/assets/{asset}")
        assert served.status_code == 200, asset
        assert len(served.content) > 1000

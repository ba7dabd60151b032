"""The dashboard page: served at `/`, its scripts allowed by a per-request nonce CSP."""

from __future__ import annotations

import re

import httpx

from tests.api.test_security_headers import csp_directives


async def test_dashboard_page_carries_a_fresh_nonce_its_scripts_use(
    client: httpx.AsyncClient,
) -> None:
    first, second = await client.get("/"), await client.get("/")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/html")
    assert first.headers["cache-control"] == "no-store"
    csp = csp_directives(first)
    nonce = re.search(r"'nonce-([^']+)'", csp["script-src"])
    assert nonce is not None
    assert csp["script-src"] == f"'self' 'nonce-{nonce.group(1)}'"
    assert "'unsafe-inline'" not in first.headers["content-security-policy"]
    assert "'unsafe-eval'" not in first.headers["content-security-policy"]
    assert csp["frame-ancestors"] == "'none'"
    # Every script and stylesheet carries this response's nonce; no inline handlers.
    scripts = re.findall(r"<script[^>]*>", first.text)
    assert scripts
    assert all(f'nonce="{nonce.group(1)}"' in tag for tag in scripts)
    assert not re.search(r"\son[a-z]+=", first.text)
    assert csp_directives(second)["script-src"] != csp["script-src"]


async def test_dashboard_modules_are_served_as_javascript(client: httpx.AsyncClient) -> None:
    for path in ("/static/dashboard.js", "/static/live.js", "/static/dashboard.css"):
        response = await client.get(path)
        assert response.status_code == 200, path
    js = await client.get("/static/live.js")
    assert "javascript" in js.headers["content-type"]
    assert "eval(" not in js.text
    missing = await client.get("/static/nope.js")
    assert missing.status_code == 404


async def test_the_import_page_is_part_of_the_dashboard(client: httpx.AsyncClient) -> None:
    page = (await client.get("/")).text
    assert 'id="import-form"' in page
    assert 'id="import-progress"' in page
    module = await client.get("/static/imports.js")
    assert module.status_code == 200
    assert "/v1/imports" in module.text

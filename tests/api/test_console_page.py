"""The staff console page: served at `/`, its scripts allowed by a per-request nonce CSP,
and who is signed in rendered into it (so it asks for nothing its user may not read)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from shelfwise.web.router import _script_json
from tests.api.test_security_headers import csp_directives
from tests.support import PASSWORD


def bootstrap(page: str) -> Any:
    block = re.search(r'<script type="application/json" id="bootstrap"[^>]*>(.*?)</script>', page)
    assert block is not None
    return json.loads(block.group(1))


async def test_console_page_carries_a_fresh_nonce_its_scripts_use(
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


async def test_console_modules_are_served_as_javascript(client: httpx.AsyncClient) -> None:
    for path in (
        "/static/console.js",
        "/static/live.js",
        "/static/stock.js",
        "/static/orders.js",
        "/static/console.css",
        "/static/favicon.svg",
    ):
        response = await client.get(path)
        assert response.status_code == 200, path
    js = await client.get("/static/live.js")
    assert "javascript" in js.headers["content-type"]
    assert "eval(" not in js.text
    missing = await client.get("/static/nope.js")
    assert missing.status_code == 404


async def test_the_import_panel_is_part_of_the_console(client: httpx.AsyncClient) -> None:
    page = (await client.get("/")).text
    assert 'id="import-form"' in page
    assert 'id="import-progress"' in page
    module = await client.get("/static/imports.js")
    assert module.status_code == 200
    assert "/v1/imports" in module.text


async def test_signed_out_the_page_says_nobody(client: httpx.AsyncClient) -> None:
    assert bootstrap((await client.get("/")).text) is None
    # A cookie that names no live session is the same as none.
    client.cookies.set("__Host-session", "not-a-session")
    assert bootstrap((await client.get("/")).text) is None


async def test_signed_in_the_page_carries_role_scopes_and_csrf_token(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    signed_in = await client.post(
        "/v1/auth/session", json={"email": staff["email"], "password": PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    me = bootstrap((await client.get("/")).text)
    assert me["email"] == staff["email"]
    assert me["id"] == str(staff["id"])
    assert me["role"] == "staff"
    assert "stock:write" in me["scopes"]
    assert me["csrf_token"] == signed_in.json()["csrf_token"]
    assert isinstance(me["low_stock_threshold"], int)


def test_page_data_cannot_close_its_script_element() -> None:
    text = _script_json({"email": "</script><script>alert(1)</script>"})
    assert "</" not in text
    assert json.loads(text) == {"email": "</script><script>alert(1)</script>"}


async def test_favicon_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")

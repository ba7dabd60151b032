"""`/docs` without the internet: Swagger UI served from a pinned package.

FastAPI's default page loads Swagger UI's script and stylesheet from a CDN, so without a
network (a laptop on a train, an air-gapped staging system) the page is blank. The
`swagger-ui-bundle` wheel ships those files; they are served under `/docs/assets/` and
the page points there. Its one inline bootstrap script carries the request's CSP nonce,
so `/docs` runs under a policy as strict as the console's (`script-src 'self'
'nonce-…'`); Swagger UI sets inline styles, hence `style-src 'unsafe-inline'`.

Without the package the page falls back to FastAPI's CDN version (and says so in the
log), so a missing wheel degrades the docs, never the API. The app is created with
`docs_url=None` and this module owns `/docs`.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from shelfwise.http.security_headers import csp_nonce

log = structlog.get_logger("shelfwise.docs")
DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"


def docs_csp(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'self' "
        "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    )


def swagger_assets() -> Path | None:
    """The directory of the pinned Swagger UI files, or None when not installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(swagger_ui_path)
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def offline_docs_page(request: Request, openapi_url: str, title: str) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} — API",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url="/favicon.ico",
    )
    nonce = csp_nonce(request.scope)
    html = bytes(page.body).decode().replace("<script>", f'<script nonce="{nonce}">')
    return HTMLResponse(html, headers={"Content-Security-Policy": docs_csp(nonce)})


def install_docs(app: FastAPI) -> bool:
    """Serve `/docs` from local assets; True when they are installed. Call on an app
    created with `docs_url=None`."""
    assets = swagger_assets()
    openapi_url = app.openapi_url or "/openapi.json"
    if assets is None:
        log.warning("swagger_ui_assets_missing", fallback="cdn", package="swagger-ui-bundle")

        @app.get(DOCS_URL, include_in_schema=False)
        async def docs_from_cdn() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} — API")

        return False

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        return offline_docs_page(request, openapi_url, app.title)

    app.mount(ASSETS_URL, StaticFiles(directory=assets), name="docs-assets")
    return True

"""Serves the dashboard page at `/` and its static modules under `/static/`.

The page is a tiny `string.Template`: the only substitution is the per-request CSP nonce
(`http/security_headers.py`), carried by the page's module script and stylesheet. Scripts
are ES modules from 'self'; there are no inline handlers and nothing is evaluated.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from shelfwise.http.security_headers import csp_nonce

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
PAGE = Template((WEB_DIR / "templates" / "dashboard.html").read_text(encoding="utf-8"))

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    """The dashboard. It carries no data itself: it signs in and loads everything by API."""
    html = PAGE.substitute(nonce=csp_nonce(request.scope))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def install_dashboard(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

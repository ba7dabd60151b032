"""Serves the staff console at `/` and its static modules under `/static/`.

The page is a small `string.Template` with two substitutions: the per-request CSP nonce
(`http/security_headers.py`), carried by the page's module script, stylesheet and data
block, and that data block itself — who is signed in (email, role, scopes) and the CSRF
token, when the request carries a live session cookie. So the page knows at once which
panels to show and asks for nothing its user may not read: a signed-out visitor costs no
401, a staff member no 403. Scripts are ES modules from 'self'; nothing is inline or
evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from starlette.staticfiles import StaticFiles

from shelfwise.context import AppContext
from shelfwise.http.security_headers import csp_nonce
from shelfwise.identity import authenticate, service
from shelfwise.identity.authenticate import Refused
from shelfwise.identity.csrf import csrf_token
from shelfwise.identity.dependencies import SESSION_COOKIE

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
PAGE = Template((WEB_DIR / "templates" / "console.html").read_text(encoding="utf-8"))

router = APIRouter(include_in_schema=False)


async def signed_in(request: Request) -> dict[str, Any] | None:
    """The session behind the request's cookie, as the page needs it; None if none."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    ctx: AppContext = request.app.state.ctx
    record = await authenticate.session_of(ctx, token)
    if isinstance(record, Refused):
        return None
    principal = await authenticate.user_principal(ctx, record.user_id, session_id=record.id)
    if isinstance(principal, Refused) or principal.role is None:
        return None
    async with ctx.db.sessions() as session:
        user = await service.get_active_user(session, record.user_id)
    if user is None:
        return None
    secret = ctx.settings.session_secret.get_secret_value().encode()
    return {
        "id": str(user.id),
        "email": user.email,
        "role": principal.role.value,
        "scopes": sorted(scope.value for scope in principal.scopes),
        "csrf_token": csrf_token(secret, record.id),
        "low_stock_threshold": ctx.settings.low_stock_threshold,
    }


def _script_json(value: object) -> str:
    # Inside <script> only "</" could end the element early; escape every "<".
    return json.dumps(value).replace("<", "\\u003c")


@router.get("/", response_class=HTMLResponse)
async def console(request: Request) -> HTMLResponse:
    """The console page; its data comes from the API, signed in by session cookie."""
    html = PAGE.substitute(
        nonce=csp_nonce(request.scope), bootstrap=_script_json(await signed_in(request))
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    """Browsers ask for it whatever the page says; answer with the console's icon."""
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


def install_dashboard(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

"""Sign-in for both modes — tokens (API clients) and sessions (browsers) — and API keys."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Request, Response, status

from shelfwise.context import AppContext
from shelfwise.errors import NotFound
from shelfwise.http.deps import ClockDep, ContextDep, HasherDep, SessionDep
from shelfwise.http.ratelimit import client_ip
from shelfwise.identity import refresh, service, signin
from shelfwise.identity.csrf import CsrfFailed, csrf_token
from shelfwise.identity.dependencies import (
    REFRESH_COOKIE,
    SESSION_COOKIE,
    Admin,
    CurrentPrincipal,
    LoginLimit,
    RefreshLimit,
    RegisterLimit,
)
from shelfwise.identity.principal import PrincipalKind
from shelfwise.identity.schemas import (
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyOut,
    CsrfOut,
    LoginIn,
    PrincipalOut,
    RefreshIn,
    RegisterIn,
    SessionOut,
    SignInOut,
    TokenPairOut,
    UserOut,
)
from shelfwise.identity.throttle import LoginThrottle

router = APIRouter(tags=["auth"])
NO_STORE = "private, no-store"


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = NO_STORE


def _is_browser(request: Request) -> bool:
    # Browsers send Origin on every POST from a page; curl, SDKs and mobile apps do not.
    return "origin" in request.headers


def _check_origin(request: Request, ctx: AppContext) -> None:
    """Cookie-carrying auth endpoints refuse cross-site callers (login CSRF)."""
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin is not None and origin != own and origin not in ctx.settings.cors_origins:
        raise CsrfFailed("Cross-site sign-in refused")


def _set_cookie(
    response: Response,
    name: str,
    value: str,
    *,
    max_age: int,
    same_site: Literal["lax", "strict"],
    ctx: AppContext,
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=ctx.settings.cookie_secure,
        samesite=same_site,
    )


def _meta(request: Request) -> tuple[str, str]:
    return request.headers.get("user-agent", ""), client_ip(request.scope)


def _throttle(ctx: AppContext) -> LoginThrottle:
    return LoginThrottle(
        ctx.limiter, ctx.policies.login_failures, enabled=ctx.settings.rate_limit_enabled
    )


def _client(request: Request) -> signin.Client:
    agent, ip = _meta(request)
    return signin.Client(user_agent=agent, ip=ip)


# -- registration and token sign-in ------------------------------------------------------


@router.post("/v1/auth/register", status_code=status.HTTP_201_CREATED, dependencies=[RegisterLimit])
async def register(
    body: RegisterIn, session: SessionDep, hasher: HasherDep, response: Response
) -> UserOut:
    user = await service.create_user(
        session, hasher, email=body.email, password=body.password, full_name=body.full_name
    )
    _no_store(response)
    return UserOut.model_validate(user)


@router.post("/v1/auth/login", dependencies=[LoginLimit])
async def login(
    body: LoginIn, request: Request, session: SessionDep, ctx: ContextDep, response: Response
) -> TokenPairOut:
    """Token sign-in: a short-lived access token and a rotating refresh token."""
    _check_origin(request, ctx)  # before any work: a refused login leaves no family behind
    signed_in = await signin.sign_in_with_tokens(
        session,
        email=body.email,
        password=body.password,
        client=_client(request),
        now=ctx.clock.now(),
        hasher=ctx.hasher,
        throttle=_throttle(ctx),
        tokens=ctx.tokens,
        refresh_policy=ctx.refresh_policy,
    )
    access, expires_at = signed_in.access_token, signed_in.access_expires_at
    refresh_token = signed_in.refresh_token
    _no_store(response)
    out = TokenPairOut(
        access_token=access, expires_in=int(ctx.tokens.ttl.total_seconds()), expires_at=expires_at
    )
    if _is_browser(request):
        _set_cookie(
            response,
            REFRESH_COOKIE,
            refresh_token,
            same_site="strict",
            ctx=ctx,
            max_age=int(ctx.refresh_policy.absolute.total_seconds()),
        )
    else:
        out.refresh_token = refresh_token
    return out


@router.post("/v1/auth/token/refresh", dependencies=[RefreshLimit])
async def refresh_tokens(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    response: Response,
    body: RefreshIn | None = None,
) -> TokenPairOut:
    """Rotate: the refresh token works once and is replaced. A reused one revokes its
    whole family."""
    from_body = body is not None and body.refresh_token is not None
    presented = (
        body.refresh_token if body and body.refresh_token else request.cookies.get(REFRESH_COOKIE)
    )
    if not presented:
        raise refresh.InvalidRefreshToken("Send refresh_token, or the refresh cookie")
    if not from_body:
        _check_origin(request, ctx)
    now = ctx.clock.now()
    rotation = await refresh.rotate(session, presented, now=now, policy=ctx.refresh_policy)
    access, expires_at = ctx.tokens.issue(user_id=rotation.user_id, role=rotation.role, now=now)
    _no_store(response)
    out = TokenPairOut(
        access_token=access, expires_in=int(ctx.tokens.ttl.total_seconds()), expires_at=expires_at
    )
    if from_body:
        out.refresh_token = rotation.token
    else:
        _set_cookie(
            response,
            REFRESH_COOKIE,
            rotation.token,
            same_site="strict",
            ctx=ctx,
            max_age=int(ctx.refresh_policy.absolute.total_seconds()),
        )
    return out


@router.post("/v1/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    response: Response,
    body: RefreshIn | None = None,
) -> None:
    """Ends the refresh-token family (token from the body or the cookie)."""
    presented = (
        body.refresh_token if body and body.refresh_token else request.cookies.get(REFRESH_COOKIE)
    )
    if presented:
        await refresh.revoke_by_token(session, presented, now=ctx.clock.now(), reason="logout")
    response.delete_cookie(
        REFRESH_COOKIE,
        path="/",
        secure=ctx.settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )


# -- browser sessions --------------------------------------------------------------------


@router.post("/v1/auth/session", dependencies=[LoginLimit])
async def sign_in(
    body: LoginIn, request: Request, session: SessionDep, ctx: ContextDep, response: Response
) -> SessionOut:
    """Session sign-in for the dashboard: sets the `__Host-session` cookie. A session the
    browser already had is ended first (the id is never reused: no session fixation)."""
    _check_origin(request, ctx)
    now = ctx.clock.now()
    signed_in = await signin.sign_in_with_session(
        session,
        email=body.email,
        password=body.password,
        previous_token=request.cookies.get(SESSION_COOKIE),
        client=_client(request),
        now=now,
        hasher=ctx.hasher,
        throttle=_throttle(ctx),
        sessions=ctx.session_store,
        csrf_secret=ctx.settings.session_secret.get_secret_value().encode(),
    )
    record = signed_in.record
    _set_cookie(
        response,
        SESSION_COOKIE,
        signed_in.session_token,
        same_site="lax",
        ctx=ctx,
        max_age=int((record.absolute_expires_at - now).total_seconds()),
    )
    _no_store(response)
    return SessionOut(
        user=UserOut.model_validate(signed_in.user),
        csrf_token=signed_in.csrf_token,
        expires_at=record.absolute_expires_at,
    )


@router.delete("/v1/auth/session", status_code=status.HTTP_204_NO_CONTENT)
async def sign_out(principal: CurrentPrincipal, ctx: ContextDep, response: Response) -> None:
    if principal.session_id is not None:
        await ctx.session_store.revoke(
            principal.session_id, user_id=principal.id, reason="logout", now=ctx.clock.now()
        )
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=ctx.settings.cookie_secure, httponly=True, samesite="lax"
    )


@router.get("/v1/auth/csrf")
async def get_csrf(principal: CurrentPrincipal, ctx: ContextDep, response: Response) -> CsrfOut:
    if principal.session_id is None:
        raise NotFound("Only browser sessions use CSRF tokens")
    _no_store(response)
    secret = ctx.settings.session_secret.get_secret_value().encode()
    return CsrfOut(csrf_token=csrf_token(secret, principal.session_id))


@router.get("/v1/auth/me")
async def me(principal: CurrentPrincipal, session: SessionDep, response: Response) -> PrincipalOut:
    _no_store(response)
    user = None
    if principal.kind is PrincipalKind.USER:
        found = await service.get_active_user(session, principal.id)
        user = UserOut.model_validate(found) if found else None
    return PrincipalOut(
        kind=principal.kind.value, id=principal.id, scopes=sorted(principal.scopes), user=user
    )


@router.get("/v1/auth/sessions")
async def list_sign_ins(
    principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep, response: Response
) -> list[SignInOut]:
    """The caller's active browser sessions and refresh-token families."""
    _no_store(response)
    if principal.kind is not PrincipalKind.USER:
        return []
    now = ctx.clock.now()
    sessions = [
        SignInOut(
            id=r.id,
            kind="session",
            created_at=r.created_at,
            last_used_at=r.last_seen_at,
            expires_at=r.absolute_expires_at,
            user_agent=r.user_agent,
            ip=r.ip,
            current=r.id == principal.session_id,
        )
        for r in await ctx.session_store.list_user(principal.id, now=now)
    ]
    families = [
        SignInOut(
            id=f.id,
            kind="refresh_family",
            created_at=f.created_at,
            last_used_at=f.last_used_at,
            expires_at=f.absolute_expires_at,
            user_agent=f.user_agent,
            ip=f.ip,
            current=False,
        )
        for f in await refresh.active_families(session, principal.id, now=now)
    ]
    return sessions + families


@router.delete("/v1/auth/sessions/{sign_in_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_sign_in(
    sign_in_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep
) -> None:
    now = ctx.clock.now()
    revoked = await ctx.session_store.revoke(
        sign_in_id, user_id=principal.id, reason="revoked", now=now
    ) or await refresh.revoke_family(
        session, sign_in_id, user_id=principal.id, now=now, reason="revoked"
    )
    if not revoked:
        raise NotFound("No such active session of yours")


# -- API keys ----------------------------------------------------------------------------


@router.post("/v1/api-keys", status_code=status.HTTP_201_CREATED, tags=["api-keys"])
async def create_api_key(
    body: ApiKeyIn, admin: Admin, session: SessionDep, response: Response
) -> ApiKeyCreatedOut:
    assert admin.user_id is not None  # require_role admits users only
    issued = await service.create_api_key(
        session, name=body.name, scopes=set(body.scopes), created_by=admin.user_id
    )
    _no_store(response)
    return ApiKeyCreatedOut(
        **ApiKeyOut.model_validate(issued.key).model_dump(), secret=issued.plaintext
    )


@router.get("/v1/api-keys", tags=["api-keys"])
async def list_api_keys(_: Admin, session: SessionDep, response: Response) -> list[ApiKeyOut]:
    _no_store(response)
    return [ApiKeyOut.model_validate(k) for k in await service.list_api_keys(session)]


@router.delete("/v1/api-keys/{key_id}", tags=["api-keys"])
async def revoke_api_key(
    key_id: uuid.UUID, _: Admin, session: SessionDep, clock: ClockDep
) -> ApiKeyOut:
    return ApiKeyOut.model_validate(
        await service.revoke_api_key(session, key_id=key_id, now=clock.now())
    )

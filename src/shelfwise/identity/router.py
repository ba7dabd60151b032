from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from shelfwise.http.deps import ClockDep, HasherDep, SessionDep, TokensDep
from shelfwise.identity import service
from shelfwise.identity.dependencies import Admin, CurrentPrincipal
from shelfwise.identity.principal import PrincipalKind
from shelfwise.identity.schemas import (
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyOut,
    LoginIn,
    PrincipalOut,
    RegisterIn,
    TokenOut,
    UserOut,
)

router = APIRouter(tags=["auth"])
NO_STORE = "private, no-store"


@router.post("/v1/auth/register", status_code=status.HTTP_201_CREATED)
async def register(
    body: RegisterIn, session: SessionDep, hasher: HasherDep, response: Response
) -> UserOut:
    user = await service.create_user(
        session, hasher, email=body.email, password=body.password, full_name=body.full_name
    )
    response.headers["Cache-Control"] = NO_STORE
    return UserOut.model_validate(user)


@router.post("/v1/auth/login")
async def login(
    body: LoginIn,
    session: SessionDep,
    hasher: HasherDep,
    tokens: TokensDep,
    clock: ClockDep,
    response: Response,
) -> TokenOut:
    user = await service.authenticate(session, hasher, email=body.email, password=body.password)
    token, expires_at = tokens.issue(user_id=user.id, role=user.role, now=clock.now())
    response.headers["Cache-Control"] = NO_STORE
    return TokenOut(
        access_token=token, expires_in=int(tokens.ttl.total_seconds()), expires_at=expires_at
    )


@router.get("/v1/auth/me")
async def me(principal: CurrentPrincipal, session: SessionDep, response: Response) -> PrincipalOut:
    response.headers["Cache-Control"] = NO_STORE
    user = None
    if principal.kind is PrincipalKind.USER:
        found = await service.get_active_user(session, principal.id)
        user = UserOut.model_validate(found) if found else None
    return PrincipalOut(
        kind=principal.kind.value, id=principal.id, scopes=sorted(principal.scopes), user=user
    )


@router.post("/v1/api-keys", status_code=status.HTTP_201_CREATED, tags=["api-keys"])
async def create_api_key(
    body: ApiKeyIn, admin: Admin, session: SessionDep, response: Response
) -> ApiKeyCreatedOut:
    assert admin.user_id is not None  # require_role admits users only
    issued = await service.create_api_key(
        session, name=body.name, scopes=set(body.scopes), created_by=admin.user_id
    )
    response.headers["Cache-Control"] = NO_STORE
    return ApiKeyCreatedOut(
        **ApiKeyOut.model_validate(issued.key).model_dump(), secret=issued.plaintext
    )


@router.get("/v1/api-keys", tags=["api-keys"])
async def list_api_keys(_: Admin, session: SessionDep, response: Response) -> list[ApiKeyOut]:
    response.headers["Cache-Control"] = NO_STORE
    return [ApiKeyOut.model_validate(k) for k in await service.list_api_keys(session)]


@router.delete("/v1/api-keys/{key_id}", tags=["api-keys"])
async def revoke_api_key(
    key_id: uuid.UUID, _: Admin, session: SessionDep, clock: ClockDep
) -> ApiKeyOut:
    return ApiKeyOut.model_validate(
        await service.revoke_api_key(session, key_id=key_id, now=clock.now())
    )

"""User administration (admin role only): list, change role, disable, end sign-ins; and
the contacts of given users for shop staff (who placed an order).

A role change or a disable is a privilege change: every session and refresh-token family
of that user ends at once. Their access tokens die with them, because every request
reloads the user.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from shelfwise.http.deps import ContextDep, PagingDep, SessionDep
from shelfwise.http.pagination import CursorParam, LimitParam, Page, paged
from shelfwise.identity import refresh, service
from shelfwise.identity.dependencies import Admin, require_role
from shelfwise.identity.models import Role, User
from shelfwise.identity.principal import Principal
from shelfwise.identity.schemas import RevokedOut, UserContactOut, UserOut, UserPatch
from shelfwise.pagination import PageRequest, PageResult, page_from_rows

router = APIRouter(prefix="/v1/users", tags=["users"])
ShopStaff = Annotated[Principal, Depends(require_role(Role.ADMIN, Role.STAFF))]
MAX_LOOKUP = 100


async def _end_sign_ins(
    user_id: uuid.UUID, session: SessionDep, ctx: ContextDep, reason: str
) -> RevokedOut:
    now = ctx.clock.now()
    sessions = await ctx.session_store.revoke_user(user_id, reason=reason, now=now)
    families = await refresh.revoke_user_families(session, user_id, now=now, reason=reason)
    return RevokedOut(sessions=sessions, refresh_families=families)


@router.get("")
async def list_users(
    _: Admin,
    request: Request,
    response: Response,
    session: SessionDep,
    paging: PagingDep,
    limit: LimitParam = None,
    cursor: CursorParam = None,
    role: Role | None = None,
) -> Page[UserOut]:
    async def fetch(page: PageRequest) -> PageResult[User]:
        rows = await service.list_users(
            session,
            after_email=page.after[0] if page.after else None,
            limit=page.limit,
            role=role,
        )
        return page_from_rows(rows, page.limit, lambda u: (u.email,))

    return await paged(
        request,
        response,
        paging,
        f"users:{role or ''}",
        limit,
        cursor,
        fetch,
        UserOut.model_validate,
    )


@router.get("/contacts")
async def user_contacts(
    _: ShopStaff,
    session: SessionDep,
    response: Response,
    user_id: Annotated[
        list[uuid.UUID],
        Query(alias="id", min_length=1, max_length=MAX_LOOKUP, description="Repeat for each user"),
    ],
) -> list[UserContactOut]:
    """Email and name of the given users (staff and admins): who placed the orders on a
    page of `GET /v1/orders`. Unknown ids are left out."""
    response.headers["Cache-Control"] = "private, no-store"
    users = await service.users_by_id(session, list(dict.fromkeys(user_id)))
    return [UserContactOut.model_validate(user) for user in users]


@router.patch("/{user_id}")
async def update_user(
    user_id: uuid.UUID, body: UserPatch, admin: Admin, session: SessionDep, ctx: ContextDep
) -> UserOut:
    change = await service.update_user(
        session,
        user_id,
        actor_id=admin.id,
        role=body.role,
        is_active=body.is_active,
        now=ctx.clock.now(),
    )
    if change.privileges_changed:
        await _end_sign_ins(user_id, session, ctx, reason="privileges_changed")
    return UserOut.model_validate(change.user)


@router.delete("/{user_id}/sessions", status_code=status.HTTP_200_OK)
async def end_user_sign_ins(
    user_id: uuid.UUID, _: Admin, session: SessionDep, ctx: ContextDep
) -> RevokedOut:
    return await _end_sign_ins(user_id, session, ctx, reason="admin_revoked")

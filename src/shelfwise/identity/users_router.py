"""User administration (admin role only): list, change role, disable, end sign-ins.

A role change or a disable is a privilege change: every session and refresh-token family
of that user ends at once. Their access tokens die with them, because every request
reloads the user.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response, status

from shelfwise.http.deps import ContextDep, PagingDep, SessionDep
from shelfwise.http.pagination import CursorParam, LimitParam, Page, paged
from shelfwise.identity import refresh, service
from shelfwise.identity.dependencies import Admin
from shelfwise.identity.models import Role, User
from shelfwise.identity.schemas import RevokedOut, UserOut, UserPatch
from shelfwise.pagination import PageRequest, PageResult, page_from_rows

router = APIRouter(prefix="/v1/users", tags=["users"])


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

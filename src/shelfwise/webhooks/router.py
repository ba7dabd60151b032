"""`/v1/webhooks`: subscriptions (admin role only), their delivery log, redelivery."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, Response, status

from shelfwise.http.deps import ClockDep, CursorsDep, SessionDep, SettingsDep
from shelfwise.http.pagination import CursorParam, LimitParam, Page, page_request, page_response
from shelfwise.identity.dependencies import Admin
from shelfwise.webhooks import service
from shelfwise.webhooks.schemas import (
    DeliveryOut,
    RotateSecretIn,
    WebhookCreated,
    WebhookIn,
    WebhookList,
    WebhookOut,
    WebhookPatch,
)
from shelfwise.webhooks.ssrf import parse_networks, resolve_target

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
PRIVATE = "private, no-store"
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post("", status_code=status.HTTP_201_CREATED, responses={422: {}})
async def create_webhook(
    body: WebhookIn, admin: Admin, session: SessionDep, settings: SettingsDep, response: Response
) -> WebhookCreated:
    """Subscribe a URL to event types (`*` for all). The secret is in this answer only."""
    await resolve_target(body.url, parse_networks(settings.webhook_allowed_networks))
    sub = await service.create_subscription(
        session, url=body.url, event_types=body.event_types, description=body.description
    )
    response.headers["Cache-Control"] = PRIVATE
    response.headers["Location"] = f"/v1/webhooks/{sub.id}"
    return WebhookCreated.model_validate(sub)


@router.get("")
async def list_webhooks(admin: Admin, session: SessionDep, response: Response) -> WebhookList:
    response.headers["Cache-Control"] = PRIVATE
    subs = await service.list_subscriptions(session)
    return WebhookList(data=[WebhookOut.model_validate(s) for s in subs])


@router.get("/{webhook_id}", responses={404: {}})
async def get_webhook(
    webhook_id: uuid.UUID, admin: Admin, session: SessionDep, response: Response
) -> WebhookOut:
    response.headers["Cache-Control"] = PRIVATE
    return WebhookOut.model_validate(await service.get_subscription(session, webhook_id))


@router.patch("/{webhook_id}", responses={404: {}, 422: {}})
async def update_webhook(
    webhook_id: uuid.UUID,
    body: WebhookPatch,
    admin: Admin,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> WebhookOut:
    """Change the URL or event types, pause (`paused: true`) or resume."""
    if body.url is not None:
        await resolve_target(body.url, parse_networks(settings.webhook_allowed_networks))
    sub = await service.update_subscription(
        session,
        webhook_id,
        url=body.url,
        event_types=body.event_types,
        description=body.description,
        paused=body.paused,
    )
    response.headers["Cache-Control"] = PRIVATE
    return WebhookOut.model_validate(sub)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {}})
async def delete_webhook(webhook_id: uuid.UUID, admin: Admin, session: SessionDep) -> Response:
    await service.delete_subscription(session, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/rotate-secret", responses={404: {}, 422: {}})
async def rotate_secret(
    webhook_id: uuid.UUID,
    admin: Admin,
    session: SessionDep,
    clock: ClockDep,
    response: Response,
    body: Annotated[RotateSecretIn | None, Body()] = None,
) -> WebhookCreated:
    """A new secret, in this answer only. The old one keeps signing (a second `v1`) for
    `grace_seconds` (default 24 h), so receivers can switch without losing deliveries."""
    grace = timedelta(seconds=(body or RotateSecretIn()).grace_seconds)
    sub = await service.rotate_secret(session, webhook_id, grace=grace, now=clock.now())
    response.headers["Cache-Control"] = PRIVATE
    return WebhookCreated.model_validate(sub)


@router.get("/{webhook_id}/deliveries", responses={404: {}})
async def list_deliveries(
    webhook_id: uuid.UUID,
    admin: Admin,
    request: Request,
    response: Response,
    session: SessionDep,
    cursors: CursorsDep,
    settings: SettingsDep,
    limit: LimitParam = None,
    cursor: CursorParam = None,
) -> Page[DeliveryOut]:
    """The delivery log, newest first."""
    scope = f"webhook-deliveries:{webhook_id}"
    page = page_request(
        cursors,
        scope,
        limit,
        cursor,
        default=settings.page_limit_default,
        cap=settings.page_limit_max,
    )
    result = await service.list_deliveries(session, webhook_id, page=page)
    items, next_cursor = page_response(request, response, cursors, scope, result)
    response.headers["Cache-Control"] = PRIVATE
    return Page(
        data=[DeliveryOut.model_validate(d) for d in items],
        next_cursor=next_cursor,
        has_more=result.has_more,
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {}, 409: {}},
)
async def redeliver(
    webhook_id: uuid.UUID, delivery_id: DeliveryId, admin: Admin, session: SessionDep
) -> DeliveryOut:
    """Queue the same event (same body, same event id) again."""
    return DeliveryOut.model_validate(await service.redeliver(session, webhook_id, delivery_id))

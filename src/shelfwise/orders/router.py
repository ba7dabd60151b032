"""Orders. Placing requires an `Idempotency-Key`; object access is checked in the service."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from shelfwise.http.deps import ClockDep, ContextDep, PagingDep, SessionDep, get_context
from shelfwise.http.direct_route import direct_route
from shelfwise.http.idempotency import (
    HEADER,
    RequiredIdempotencyKeyHeader,
    idempotent_request,
    parse_key,
    render_model,
    respond,
)
from shelfwise.http.pagination import CursorParam, LimitParam, Page, paged
from shelfwise.http.request_urls import base_url
from shelfwise.idempotency.service import StoredResponse
from shelfwise.identity.dependencies import bearer, get_principal, require_scope, session_cookie
from shelfwise.identity.principal import Principal
from shelfwise.identity.scopes import Scope
from shelfwise.orders import service
from shelfwise.orders.models import Order, OrderStatus
from shelfwise.orders.schemas import OrderIn, OrderOut
from shelfwise.orders.service import OrderRow, PlacedOrder

router = APIRouter(prefix="/v1/orders", tags=["orders"])
PRIVATE = "private, no-store"

OrderReader = Annotated[Principal, Depends(require_scope(Scope.ORDERS_READ))]
may_place = require_scope(Scope.ORDERS_WRITE)
OrderWriter = Annotated[Principal, Depends(may_place)]
OrderManager = Annotated[Principal, Depends(require_scope(Scope.ORDERS_MANAGE))]


def _out(order: Order | OrderRow | PlacedOrder) -> OrderOut:
    return OrderOut.model_validate(order)


_render_created = render_model(status.HTTP_201_CREATED)


def _render(order: PlacedOrder) -> StoredResponse:
    return _render_created(_out(order))


def _location(request: Request, order_id: object) -> dict[str, str]:
    # Formatted, not `request.url_for`: that walks every route of the app per call.
    return {"Location": f"{base_url(request)}v1/orders/{order_id}", "Cache-Control": PRIVATE}


async def place_order(
    body: OrderIn,
    principal: OrderWriter,
    request: Request,
    ctx: ContextDep,
    idempotency_key: RequiredIdempotencyKeyHeader = None,
) -> JSONResponse:
    idem = idempotent_request(request, principal, idempotency_key, body, _render, required=True)
    command = service.PlaceOrder(
        quantities={line.product_id: line.quantity for line in body.lines},
        location_id=body.location_id,
    )
    # A hot stock level admits a few placements at a time and answers "sold out" itself
    # (orders/admission.py): a flash sale queues here, not for pool connections.
    async with ctx.admission.admit(command.quantities, command.location_id, idem):
        outcome = await service.place_order(
            ctx.driver,
            ctx.db.doorbell,
            command,
            placer=principal,
            now=ctx.clock.now(),
            reservation_ttl=timedelta(seconds=ctx.settings.reservation_ttl_seconds),
            idempotency=idem,
        )
    return respond(outcome, _render, headers=lambda stored: _location(request, stored.body["id"]))


async def place_order_directly(request: Request, payload: Any) -> JSONResponse | None:
    """`place_order` for a well-formed request, its dependencies called in FastAPI's
    order without FastAPI's solver (http/direct_route.py, decision 0040). None, before
    anything is counted or looked up: FastAPI's handler answers (400, 422 and their
    documents). A dependency added to `place_order` must be called here too (and named
    in the route's `calls`, or the app refuses to build)."""
    key = request.headers.get(HEADER)
    if key is None or parse_key(key) is None:
        return None
    try:
        body = OrderIn.model_validate(payload)
    except ValidationError:
        return None
    ctx = await get_context(request)
    principal = await may_place(await get_principal(request, None, None, ctx))
    return await place_order(body, principal, request, ctx, key)


router.add_api_route(
    "",
    place_order,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut,
    responses={400: {}, 409: {}, 422: {}},
    route_class_override=direct_route(
        place_order_directly, calls=(may_place, get_principal, bearer, session_cookie, get_context)
    ),
)


@router.get("")
async def list_orders(
    viewer: OrderReader,
    request: Request,
    response: Response,
    session: SessionDep,
    paging: PagingDep,
    limit: LimitParam = None,
    cursor: CursorParam = None,
    status_filter: Annotated[OrderStatus | None, Query(alias="status")] = None,
) -> Page[OrderOut]:
    return await paged(
        request,
        response,
        paging,
        f"orders:{viewer.key}:{status_filter or ''}",
        limit,
        cursor,
        lambda page: service.list_orders(session, viewer=viewer, page=page, status=status_filter),
        _out,
    )


@router.get("/{order_id}")
async def get_order(
    order_id: uuid.UUID, viewer: OrderReader, session: SessionDep, response: Response
) -> OrderOut:
    response.headers["Cache-Control"] = PRIVATE
    return _out(await service.get_order(session, order_id, viewer=viewer))


@router.post("/{order_id}/confirm", responses={404: {}, 409: {}})
async def confirm_order(
    order_id: uuid.UUID, actor: OrderWriter, session: SessionDep, clock: ClockDep
) -> OrderOut:
    return _out(await service.confirm_order(session, order_id, actor=actor, now=clock.now()))


@router.post("/{order_id}/cancel", responses={404: {}, 409: {}})
async def cancel_order(
    order_id: uuid.UUID, actor: OrderWriter, session: SessionDep, clock: ClockDep
) -> OrderOut:
    return _out(await service.cancel_order(session, order_id, actor=actor, now=clock.now()))


@router.post("/{order_id}/fulfil", responses={404: {}, 409: {}})
async def fulfil_order(
    order_id: uuid.UUID, actor: OrderManager, session: SessionDep, clock: ClockDep
) -> OrderOut:
    return _out(await service.fulfil_order(session, order_id, actor=actor, now=clock.now()))

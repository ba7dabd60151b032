"""Locations, stock levels, adjustments and the ledger."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse

from shelfwise.context import AppContext
from shelfwise.http.deps import PagingDep, SessionDep
from shelfwise.http.idempotency import (
    IdempotencyKeyHeader,
    idempotent_request,
    render_model,
    respond,
)
from shelfwise.http.pagination import CursorParam, LimitParam, Page, paged
from shelfwise.idempotency.service import StoredResponse
from shelfwise.identity.dependencies import (
    CatalogReader,
    CatalogWriter,
    LedgerReader,
    StockReader,
    StockWriter,
)
from shelfwise.inventory import service
from shelfwise.inventory.models import MovementKind
from shelfwise.inventory.overview import OverviewFilter, stock_overview
from shelfwise.inventory.schemas import (
    AdjustmentIn,
    AdjustmentOut,
    LocationIn,
    LocationOut,
    MovementOut,
    StockLevelOut,
    StockOverviewOut,
    TransferIn,
    TransferOut,
)
from shelfwise.inventory.transfers import Transfer, TransferResult, transfer_stock
from shelfwise.types import Text

router = APIRouter(prefix="/v1")
PRIVATE = "private, no-store"


@router.post("/locations", status_code=status.HTTP_201_CREATED, tags=["locations"])
async def create_location(
    body: LocationIn, _: CatalogWriter, session: SessionDep, request: Request, response: Response
) -> LocationOut:
    location = await service.create_location(
        session, code=body.code, name=body.name, kind=body.kind.value
    )
    response.headers["Location"] = str(request.url_for("get_location", location_id=location.id))
    return LocationOut.model_validate(location)


@router.get("/locations", tags=["locations"])
async def list_locations(
    _: CatalogReader,
    request: Request,
    response: Response,
    session: SessionDep,
    paging: PagingDep,
    limit: LimitParam = None,
    cursor: CursorParam = None,
) -> Page[LocationOut]:
    return await paged(
        request,
        response,
        paging,
        "locations",
        limit,
        cursor,
        lambda page: service.list_locations(session, page=page),
        LocationOut.model_validate,
    )


@router.get("/locations/{location_id}", tags=["locations"])
async def get_location(
    location_id: uuid.UUID, _: CatalogReader, session: SessionDep, response: Response
) -> LocationOut:
    response.headers["Cache-Control"] = PRIVATE
    return LocationOut.model_validate(await service.get_location(session, location_id))


@router.get("/stock", tags=["stock"])
async def list_stock(
    _: StockReader,
    request: Request,
    response: Response,
    session: SessionDep,
    paging: PagingDep,
    limit: LimitParam = None,
    cursor: CursorParam = None,
    product_id: uuid.UUID | None = None,
    location_id: uuid.UUID | None = None,
) -> Page[StockLevelOut]:
    """A snapshot of levels. `X-Stream-Position` is the live-stream position to continue
    from: it is read *before* the levels, so no later change can fall between the two
    (some may arrive twice; `stock.changed` carries absolute values, so re-applying is
    harmless)."""
    ctx: AppContext = request.app.state.ctx
    response.headers["X-Stream-Position"] = str(ctx.hub.head if ctx.hub else 0)
    return await paged(
        request,
        response,
        paging,
        f"stock:{product_id or ''}:{location_id or ''}",
        limit,
        cursor,
        lambda page: service.list_stock_levels(
            session, page=page, product_id=product_id, location_id=location_id
        ),
        StockLevelOut.model_validate,
    )


@router.get("/stock/overview", tags=["stock"])
async def stock_overview_page(
    _: StockReader,
    request: Request,
    response: Response,
    session: SessionDep,
    paging: PagingDep,
    limit: LimitParam = None,
    cursor: CursorParam = None,
    q: Annotated[
        Text | None, Query(max_length=200, description="Words of the SKU or name (prefix match)")
    ] = None,
    location_id: uuid.UUID | None = None,
    low: Annotated[bool, Query(description="Only levels under the low-stock threshold")] = False,
) -> Page[StockOverviewOut]:
    """Stock levels with product SKU and name and location code and name, sorted by SKU
    then location code (the staff console's table). `X-Stream-Position` as for
    `GET /v1/stock`: continue the live stream from it."""
    ctx: AppContext = request.app.state.ctx
    response.headers["X-Stream-Position"] = str(ctx.hub.head if ctx.hub else 0)
    where = OverviewFilter(q=q, location_id=location_id, low_only=low)
    return await paged(
        request,
        response,
        paging,
        f"stock-overview:{q or ''}:{location_id or ''}:{int(low)}",
        limit,
        cursor,
        lambda page: stock_overview(
            session, page=page, where=where, low_threshold=ctx.settings.low_stock_threshold
        ),
        StockOverviewOut.model_validate,
    )


def _render_adjustment(result: service.AdjustmentResult) -> StoredResponse:
    out = AdjustmentOut(
        movement=MovementOut.model_validate(result.movement),
        level=StockLevelOut.model_validate(result.level),
    )
    return render_model(status.HTTP_201_CREATED)(out)


@router.post(
    "/stock/adjustments",
    status_code=status.HTTP_201_CREATED,
    tags=["stock"],
    response_model=AdjustmentOut,
    responses={409: {}, 422: {}},
)
async def adjust_stock(
    body: AdjustmentIn,
    principal: StockWriter,
    request: Request,
    session: SessionDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    idem = idempotent_request(request, principal, idempotency_key, body, _render_adjustment)
    change = service.Adjustment(
        product_id=body.product_id,
        location_id=body.location_id,
        kind=MovementKind(body.kind),
        quantity=body.quantity,
        reason=body.reason,
        reference=body.reference,
    )
    outcome = await service.adjust_stock(
        session, change, actor_id=principal.user_id, idempotency=idem
    )
    return respond(outcome, _render_adjustment)


def _render_transfer(result: TransferResult) -> StoredResponse:
    out = TransferOut(
        transfer_id=result.transfer_id,
        source=StockLevelOut.model_validate(result.source),
        destination=StockLevelOut.model_validate(result.destination),
    )
    return render_model(status.HTTP_201_CREATED)(out)


@router.post(
    "/stock/transfers",
    status_code=status.HTTP_201_CREATED,
    tags=["stock"],
    response_model=TransferOut,
    responses={409: {}, 422: {}},
)
async def transfer(
    body: TransferIn,
    principal: StockWriter,
    request: Request,
    session: SessionDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    idem = idempotent_request(request, principal, idempotency_key, body, _render_transfer)
    move = Transfer(
        product_id=body.product_id,
        from_location_id=body.from_location_id,
        to_location_id=body.to_location_id,
        quantity=body.quantity,
        reason=body.reason,
    )
    outcome = await transfer_stock(session, move, actor_id=principal.user_id, idempotency=idem)
    return respond(outcome, _render_transfer)


@router.get("/stock/movements", tags=["stock"])
async def list_movements(
    _: LedgerReader,
    request: Request,
    response: Response,
    session: SessionDep,
    paging: PagingDep,
    limit: LimitParam = None,
    cursor: CursorParam = None,
    product_id: uuid.UUID | None = None,
    location_id: uuid.UUID | None = None,
    kind: Annotated[MovementKind | None, Query()] = None,
) -> Page[MovementOut]:
    return await paged(
        request,
        response,
        paging,
        f"movements:{product_id or ''}:{location_id or ''}:{kind or ''}",
        limit,
        cursor,
        lambda page: service.list_movements(
            session, page=page, product_id=product_id, location_id=location_id, kind=kind
        ),
        MovementOut.model_validate,
    )

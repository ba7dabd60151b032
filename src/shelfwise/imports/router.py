"""`POST /v1/imports`: a products-and-stock CSV, streamed to disk; answered 202 with the job."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import anyio
from fastapi import APIRouter, Request, Response, status
from starlette.requests import ClientDisconnect

from shelfwise.http.deps import ContextDep
from shelfwise.identity.dependencies import CatalogWriter
from shelfwise.identity.scopes import Scope
from shelfwise.imports import start
from shelfwise.imports.upload import EmptyImport, check_import_request
from shelfwise.jobs.schemas import JobOut
from shelfwise.uploads.storage import IncompleteUpload, UploadTooLarge

router = APIRouter(prefix="/v1/imports", tags=["imports"])


async def stream_to_file(request: Request, directory: Path, max_bytes: int) -> Path:
    """The body, chunk by chunk, to a temp file renamed into place when complete."""
    length = request.headers.get("content-length")
    declared = int(length) if length and length.isdigit() else None
    if declared is not None and declared > max_bytes:
        raise UploadTooLarge(max_bytes)
    tmp = directory / ".tmp"
    await anyio.Path(tmp).mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    temp, final = tmp / f"{name}.part", directory / f"{name}.csv"
    size = 0
    try:
        async with await anyio.open_file(temp, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise UploadTooLarge(max_bytes)
                await out.write(chunk)
        if size == 0:
            raise EmptyImport("The request has no CSV body")
        if declared is not None and size != declared:
            raise IncompleteUpload(f"Received {size} of {declared} bytes: truncated upload")
        await anyio.to_thread.run_sync(os.replace, temp, final)
        return final
    except ClientDisconnect as exc:
        raise IncompleteUpload("The client disconnected before the upload finished") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            await anyio.Path(temp).unlink()


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={400: {}, 413: {}, 415: {}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {
                    "schema": {"type": "string", "minLength": 1, "description": "UTF-8 CSV"}
                }
            },
        }
    },
)
async def start_import(
    request: Request, writer: CatalogWriter, ctx: ContextDep, response: Response
) -> JobOut:
    """Products CSV (UTF-8; header `sku,name,price_minor,currency[,category,description]`,
    plus `location,on_hand` to set absolute stock, which needs `stock:write`). Rows are
    upserted by SKU (stock through the ledger) in batches; bad rows are reported with their
    line numbers in the job's progress (`GET /v1/jobs/{id}`) and good rows are kept.
    Another media type is 415 and an empty body 400, before anything is stored."""
    check_import_request(request.headers)
    path = await stream_to_file(
        request, ctx.settings.data_dir / "imports", ctx.settings.import_max_bytes
    )
    job = await start.start_import(
        ctx.db.sessions,
        path,
        stock_allowed=Scope.STOCK_WRITE in writer.scopes,
        actor_id=writer.user_id,
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    response.headers["Cache-Control"] = "private, no-store"
    return JobOut.of(job)

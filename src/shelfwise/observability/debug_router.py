"""Live-process debugging for admins: running asyncio tasks, and a sampling profile.

Off in production unless `debug_endpoints_enabled` is set (then 404, as if absent);
admin-only; limited per IP by `rate_limit_debug`. A profile samples *this* process's
event-loop thread with pyinstrument for `seconds`, whatever requests it serves
meanwhile, and answers as pyinstrument's HTML page or as speedscope JSON
(https://www.speedscope.app). One profile at a time per process: a second is a 409.
The drills' routes (`drill/...`, drill_routes.py) hang here too, never in production.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pyinstrument import Profiler
from pyinstrument.renderers import SpeedscopeRenderer

from shelfwise.context import AppContext
from shelfwise.errors import Conflict, NotFound
from shelfwise.http.deps import ContextDep
from shelfwise.http.ratelimit import Policy
from shelfwise.identity.dependencies import Admin, route_limit
from shelfwise.observability.drill_routes import router as drill_router

TASK_STACK_LIMIT = 12
TASKS_CAP = 5000
PRIVATE = {"Cache-Control": "private, no-store"}
_profiling = asyncio.Lock()


@lru_cache(maxsize=8)
def _policy(spec: str) -> Policy:
    return Policy.parse("debug", spec)


async def _enabled(ctx: ContextDep) -> None:
    settings = ctx.settings
    enabled = settings.debug_endpoints_enabled
    if enabled is None:
        enabled = not settings.is_production
    if not enabled:
        raise NotFound("Debug endpoints are turned off (debug_endpoints_enabled)")


def _debug_limit(ctx: AppContext) -> Policy:
    return _policy(ctx.settings.rate_limit_debug)


router = APIRouter(
    prefix="/v1/admin/debug",
    tags=["debug"],
    # Order matters: a disabled endpoint is a 404 for everyone, before auth is spent.
    dependencies=[Depends(_enabled)],
)
DebugLimit = Depends(route_limit(_debug_limit))


class ProfileFormat(StrEnum):
    HTML = "html"
    SPEEDSCOPE = "speedscope"


def _describe(task: asyncio.Task[Any]) -> dict[str, Any]:
    frames = task.get_stack(limit=TASK_STACK_LIMIT)
    return {
        "name": task.get_name(),
        "coroutine": getattr(task.get_coro(), "__qualname__", repr(task.get_coro())),
        "done": task.done(),
        "stack": [
            f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_qualname}"
            for frame in frames
        ],
    }


@router.get(
    "/tasks",
    dependencies=[DebugLimit],
    responses={404: {"description": "Debug endpoints are turned off"}},
)
async def running_tasks(admin: Admin) -> JSONResponse:
    """Every asyncio task of this process with where it is suspended (innermost last).

    Answers what the process is waiting on: a stuck job, a stream that never ends, a
    connection held across an `await`."""
    tasks = sorted(asyncio.all_tasks(), key=lambda task: task.get_name())
    return JSONResponse(
        {
            "count": len(tasks),
            "tasks": [_describe(task) for task in tasks[:TASKS_CAP]],
        },
        headers=PRIVATE,
    )


@router.get(
    "/profile",
    dependencies=[DebugLimit],
    responses={
        200: {
            "description": "The profile (HTML page or speedscope JSON)",
            "content": {"text/html": {}, "application/json": {}},
        },
        404: {"description": "Debug endpoints are turned off"},
        409: {"description": "A profile is already being taken in this process"},
    },
    response_class=Response,
)
async def profile(
    admin: Admin,
    ctx: ContextDep,
    seconds: Annotated[float, Query(gt=0, le=300, description="How long to sample")] = 5.0,
    output: Annotated[ProfileFormat, Query(alias="format")] = ProfileFormat.HTML,
) -> Response:
    """A pyinstrument sampling profile of this process's event loop for `seconds`
    (at most `debug_profile_max_seconds`; the `X-Profile-Seconds` header says how long)."""
    # Cut to the configured maximum rather than refused: the schema cannot know the setting.
    seconds = min(seconds, float(ctx.settings.debug_profile_max_seconds))
    if _profiling.locked():
        raise Conflict("A profile is already being taken in this process")
    async with _profiling:
        # async_mode="disabled": sample the whole thread, every task the loop runs, not
        # only this request's coroutine.
        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
        try:
            await asyncio.sleep(seconds)
        finally:
            profiler.stop()
    headers = {**PRIVATE, "X-Profile-Seconds": f"{seconds:g}"}
    if output is ProfileFormat.SPEEDSCOPE:
        return Response(
            profiler.output(SpeedscopeRenderer()),
            media_type="application/json",
            headers=headers,
        )
    return HTMLResponse(profiler.output_html(), headers=headers)


# After the debug routes' own dependency: a disabled debug surface hides the drills too.
router.include_router(drill_router)

"""Which tasks exist, on which queue, with which retry policy and schedule.

Task modules register plain async functions here at import time; `build_job_app` turns
them into Procrastinate tasks. Keeping the declarations apart from the Procrastinate
`App` lets the API process defer jobs (in its own transactions) without a worker
connector, and lets later features (webhook delivery, CSV import) add their tasks by
adding a module to `TASK_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from procrastinate import JobContext

from shelfwise.jobs.retry import Backoff

TaskFunction = Callable[..., Awaitable[Any]]

# Modules whose import registers tasks. Later: "shelfwise.events.webhook_tasks", ...
TASK_MODULES: tuple[str, ...] = (
    "shelfwise.jobs.tasks",
    "shelfwise.webhooks.tasks",
    "shelfwise.imports.tasks",
)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    function: TaskFunction
    queue: str
    backoff: Backoff
    # Periodic tasks: a cron expression, or the name of the Settings field holding one.
    cron: str | None = None
    cron_setting: str | None = None
    # At most one job of this task waiting (queueing lock) and, if `exclusive`, running
    # (lock) at a time: periodic tasks.
    singleton: bool = False
    exclusive: bool = True


TASKS: dict[str, TaskSpec] = {}


def task(
    name: str,
    *,
    queue: str,
    backoff: Backoff | None = None,
    cron: str | None = None,
    cron_setting: str | None = None,
    singleton: bool = False,
    exclusive: bool = True,
) -> Callable[[TaskFunction], TaskFunction]:
    """Declare `function(context: JobContext, **args)` as the task `name`."""

    def register(function: TaskFunction) -> TaskFunction:
        if name in TASKS and TASKS[name].function is not function:
            raise ValueError(f"task {name!r} is declared twice")
        TASKS[name] = TaskSpec(
            name, function, queue, backoff or Backoff(), cron, cron_setting, singleton, exclusive
        )
        return function

    return register


def load_tasks(extra_modules: tuple[str, ...] | list[str] = ()) -> dict[str, TaskSpec]:
    for module in (*TASK_MODULES, *extra_modules):
        importlib.import_module(module)
    return TASKS


def spec(name: str) -> TaskSpec:
    tasks = TASKS if name in TASKS else load_tasks()
    try:
        return tasks[name]
    except KeyError:
        raise LookupError(f"unknown task {name!r}") from None


__all__ = ["JobContext", "TaskSpec", "load_tasks", "spec", "task"]

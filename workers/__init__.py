"""The data plane and user SDK: `@task` and the `Worker` runtime.

from workers import task        # declares tasks; loads no networking
from workers import Worker      # the runtime (nats-py), loaded on first use
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.context import TaskContext, current
from workers.errors import NonRetryableError, TaskDefinitionError
from workers.task import Task, task

if TYPE_CHECKING:
    from workers.runtime import Worker

__all__ = [
    "NonRetryableError",
    "Task",
    "TaskContext",
    "TaskDefinitionError",
    "Worker",
    "current",
    "task",
]


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from workers.runtime import Worker

        return Worker
    raise AttributeError(f"module 'workers' has no attribute {name!r}")

"""The data plane and user SDK: `@task` and the `Worker` runtime."""

from workers.context import TaskContext, current
from workers.errors import NonRetryableError, TaskDefinitionError
from workers.runtime import Worker
from workers.task import Task, task

__all__ = [
    "NonRetryableError",
    "Task",
    "TaskContext",
    "TaskDefinitionError",
    "Worker",
    "current",
    "task",
]

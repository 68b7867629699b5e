"""Errors of the worker SDK.

    events.errors.ConveyorError
    └── TaskDefinitionError     @task used on something it cannot serve (e.g. *args)

    Exception
    └── NonRetryableError       raise it (or a subclass) from a task to fail without retries

A task's own exceptions are reported as they are: their class name becomes the error type
(which a workflow's retry policy can list as non-retryable), with message and traceback.
"""

from __future__ import annotations

from events.errors import ConveyorError


class TaskDefinitionError(ConveyorError):
    pass


class NonRetryableError(Exception):
    """A failure that retrying cannot fix (bad data, a missing resource, a refused request)."""

"""Errors of the control plane.

events.errors.ConveyorError
├── SpecError                 a workflow spec is invalid; `problems` lists each with its place
├── WorkflowDefinitionError   the @workflow DSL was used in a way it cannot trace
│   └── ModuleLoadError       a user module cannot be loaded (a syntax error): file, line
├── UnknownWorkflow           no workflow (or version) registered under that name
├── UnknownRun                no run by that id (or not applied yet): the client's cancel, retry
├── RunRefused                a run cannot take that action (cancel an ended run, retry one that
│                             did not fail); `reason` says why
├── InvalidInput              a run's input does not fit the workflow's parameters
├── EventRejected             an event is well-formed but breaks the contract for its run
│                             (unknown run or node); parked on the DLQ, never applied
├── IllegalTransition         the machine tried a status move its graph does not have: a bug
├── ConfigError               a setting or secret is missing or invalid (found at start-up)
└── StoreError                the sqlite store failed (a transient fault: the batch is retried)
"""

from __future__ import annotations

from events.errors import ConveyorError


class SpecError(ConveyorError):
    def __init__(self, workflow: str, problems: list[str]) -> None:
        self.workflow = workflow
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"workflow {workflow!r} is invalid:\n{listed}")


class WorkflowDefinitionError(ConveyorError):
    """Raised while tracing a @workflow body: says what was done and what to use instead."""


class ModuleLoadError(WorkflowDefinitionError):
    """A module of workflows and tasks cannot be loaded: `path` and `line` say where, `detail`
    what is wrong there. A WorkflowDefinitionError, so that every surface treats it as one."""

    def __init__(self, path: str, line: int | None, detail: str) -> None:
        self.path = path
        self.line = line
        self.detail = detail
        where = path if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {detail}")


class UnknownWorkflow(ConveyorError):
    def __init__(
        self, name: str, version: int | None = None, known: list[str] | None = None
    ) -> None:
        self.name = name
        self.version = version
        what = f"workflow {name!r}" + (f" version {version}" if version is not None else "")
        hint = f" (registered: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"unknown {what}{hint}")


class InvalidInput(ConveyorError):
    def __init__(self, workflow: str, problems: list[str]) -> None:
        self.workflow = workflow
        self.problems = problems
        super().__init__(f"input of workflow {workflow!r} is invalid: " + "; ".join(problems))


class UnknownRun(ConveyorError):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id!r} (unknown, or not yet applied)")


class RunRefused(ConveyorError):
    """The run exists but cannot take the action asked (`action`: cancel, retry)."""

    def __init__(self, run_id: str, action: str, reason: str) -> None:
        self.run_id = run_id
        self.action = action
        self.reason = reason
        super().__init__(f"run {run_id!r} cannot be {_PAST[action]}: {reason}")


_PAST = {"cancel": "cancelled", "retry": "retried"}


class EventRejected(ConveyorError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreError(ConveyorError):
    pass


class IllegalTransition(ConveyorError):
    """A status move the graph of `core/statuses.py` does not have, or an (event, status) pair
    the machine's tables do not cover: a programming error, never a business outcome."""


class ConfigError(ConveyorError):
    """A setting or a secret that is missing or invalid; says which and where it was read."""

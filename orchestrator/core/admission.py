"""What a new workflow version must pass to be registered, beyond compiling: each schedule's
input fits the workflow's input schema (else every run it starts would fail on its input).

Kept apart from `compile_spec` on purpose: a stored version is compiled as it was accepted, so
a run in flight never stops over a rule added later."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.core.compiler import CompiledSpec, compile_spec
from orchestrator.core.rules import input_problems
from orchestrator.core.spec import WorkflowSpec
from orchestrator.errors import SpecError


def admit_version(data: WorkflowSpec | Mapping[str, Any]) -> CompiledSpec:
    """`compile_spec`, then the admission checks; SpecError lists every problem found."""
    compiled = compile_spec(data)
    problems = [
        f"schedules[{index}] ({schedule.cron!r}).input: {problem}"
        for index, schedule in enumerate(compiled.spec.schedules)
        for problem in input_problems(compiled, dict(schedule.input))
    ]
    if problems:
        raise SpecError(compiled.name, problems)
    return compiled

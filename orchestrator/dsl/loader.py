"""Load a user module (a file path or a dotted name) and find its workflows and tasks.

Used by the CLI, the composition root: the engine itself never loads user code. Tasks are
recognised by their `declaration` (a `TaskDeclaration`), so this module needs no import of the
worker SDK.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from events.tasks import TaskDeclaration
from orchestrator.dsl import Workflow
from orchestrator.errors import WorkflowDefinitionError


@dataclass
class LoadedModule:
    module: ModuleType
    workflows: dict[str, Workflow] = field(default_factory=dict)
    tasks: dict[str, Any] = field(default_factory=dict)  # name -> workers.Task


def load_module(target: str) -> LoadedModule:
    """Import `target` (`path/to/flows.py` or `package.flows`) and collect what it defines."""
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {target}")
        name = f"conveyor_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path.resolve())
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {target} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))  # let it import its siblings
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except WorkflowDefinitionError:
            raise
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        module = importlib.import_module(target)
    loaded = LoadedModule(module)
    for value in vars(module).values():
        if isinstance(value, Workflow):
            loaded.workflows[value.name] = value
        elif isinstance(getattr(value, "declaration", None), TaskDeclaration):
            loaded.tasks[value.declaration.name] = value
    for wf in loaded.workflows.values():
        wf.spec  # trace now, so a broken workflow fails at load with its message  # noqa: B018
        for name in wf.tasks:
            if name not in loaded.tasks:
                # A workflow may use tasks imported from elsewhere; the worker still needs them.
                loaded.tasks.setdefault(name, _find_task(wf, name))
    return loaded


def _find_task(wf: Workflow, name: str) -> Any:
    for value in wf.fn.__globals__.values():
        if getattr(getattr(value, "declaration", None), "name", None) == name:
            return value
    raise WorkflowDefinitionError(f"workflow {wf.name!r} uses task {name!r}, which cannot be found")

"""Load a user module (a file path or a dotted name) and find its workflows and tasks.

Used by the CLI, the composition root: the engine itself never loads user code. Tasks are
recognised by their `declaration` (a `TaskDeclaration`), so this module needs no import of the
worker SDK. A module that does not parse is a `ModuleLoadError` naming the file and line, not a
traceback.
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
from orchestrator.dsl.workflow import Workflow
from orchestrator.errors import ModuleLoadError, WorkflowDefinitionError


@dataclass
class LoadedModule:
    module: ModuleType
    workflows: dict[str, Workflow] = field(default_factory=dict)
    tasks: dict[str, Any] = field(default_factory=dict)  # name -> workers.Task


def load_module(target: str) -> LoadedModule:
    """Import `target` (`path/to/flows.py` or `package.flows`) and collect what it defines."""
    loaded = LoadedModule(_import(target))
    for value in vars(loaded.module).values():
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


def _import(target: str) -> ModuleType:
    path = Path(target)
    try:
        if target.endswith(".py") or path.is_file():
            return _import_file(target, path)
        return importlib.import_module(target)
    except SyntaxError as exc:  # in the module, or in one it imports: exc names which
        raise _syntax_error(exc, target, path) from None


def _import_file(target: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {target}")
    name = f"conveyor_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {target} as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # let it import its siblings
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)  # as the import system does: no half-run module stays behind
        raise
    finally:
        sys.path.remove(folder)
    return module


def _syntax_error(exc: SyntaxError, target: str, path: Path) -> ModuleLoadError:
    """The file as the user named it when it is the target itself; the line with a caret."""
    failing = exc.filename or target
    if path.is_file() and Path(failing).resolve() == path.resolve():
        failing = target
    detail = f"syntax error: {exc.msg}"
    if exc.text and exc.text.strip():
        text = exc.text.rstrip("\n")
        indent = len(text) - len(text.lstrip())
        detail += f"\n    {text.strip()}"
        if exc.offset is not None and exc.offset > indent:
            detail += "\n    " + " " * (exc.offset - 1 - indent) + "^"
    return ModuleLoadError(failing, exc.lineno, detail)


def _find_task(wf: Workflow, name: str) -> Any:
    for value in wf.fn.__globals__.values():
        if getattr(getattr(value, "declaration", None), "name", None) == name:
            return value
    raise WorkflowDefinitionError(f"workflow {wf.name!r} uses task {name!r}, which cannot be found")

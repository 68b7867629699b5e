"""The layers, held by their imports (each checked in a fresh interpreter, reading `sys.modules`).

- the core (`orchestrator/core/`) does no I/O: importing every one of its modules loads no
  networking, no database, no logging framework, no metrics library, no event loop;
- what users import to *write* workflows and tasks loads neither nats-py nor aiosqlite;
- the event models (the wire contract) load without nats-py;
- imports point one way: orchestrator -> events <- workers (the CLI and the composition root,
  which start workers, excepted), and the core imports nothing from the layers above it.
"""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
IO_MODULES = {
    "nats",
    "aiosqlite",
    "sqlite3",
    "asyncio",
    "structlog",
    "prometheus_client",
    "httpx",
    "uvicorn",
    "fastapi",
    "starlette",
    "rich",
}


def _loaded_after(code: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after running `code`."""
    report = "import json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}\n{report}"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def _core_modules() -> list[str]:
    return sorted(
        f"orchestrator.core.{p.stem}"
        for p in (ROOT / "orchestrator" / "core").glob("*.py")
        if p.stem != "__init__"
    )


def test_the_core_imports_nothing_that_does_io() -> None:
    modules = _core_modules()
    assert "orchestrator.core.machine" in modules
    loaded = _loaded_after("\n".join(f"import {m}" for m in modules))
    assert loaded & IO_MODULES == set()


@pytest.mark.parametrize(
    "code",
    [
        "from orchestrator import workflow, when, sleep, wait_for_event, subworkflow",
        "from workers import task, current",
        "import events.models",
        "from events import CloudEvent, Topology, decode, encode",
    ],
)
def test_writing_workflows_loads_no_networking(code: str) -> None:
    assert _loaded_after(code) & {"nats", "aiosqlite", "sqlite3", "prometheus_client"} == set()


def test_the_lazy_names_still_resolve() -> None:
    loaded = _loaded_after("from orchestrator import Client\nfrom workers import Worker")
    assert "nats" in loaded  # the client and the runtime do need it, once asked for


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _package_files(package: str) -> list[pathlib.Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_imports_point_one_way() -> None:
    """DESIGN §1: orchestrator -> events <- workers; only the composition root and the CLI
    (which start worker processes) may import the worker runtime."""
    offenders = []
    for path in _package_files("orchestrator"):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith("orchestrator/cli/") or relative == "orchestrator/roles.py":
            continue
        if any(name.split(".")[0] == "workers" for name in _imports(path)):
            offenders.append(relative)
    for path in _package_files("workers"):
        if any(name.split(".")[0] == "orchestrator" for name in _imports(path)):
            offenders.append(path.relative_to(ROOT).as_posix())
    for path in _package_files("events"):
        if any(name.split(".")[0] in {"orchestrator", "workers"} for name in _imports(path)):
            offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []


def test_the_core_imports_only_the_core_and_the_contract() -> None:
    allowed = ("orchestrator.core", "orchestrator.errors", "events")
    offenders = {
        path.relative_to(ROOT).as_posix(): sorted(
            name
            for name in _imports(path)
            if name.startswith(("orchestrator", "events", "workers"))
            and not name.startswith(allowed)
        )
        for path in _package_files("orchestrator/core")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_bus_imports_nats() -> None:
    """STYLE: one place imports the client library; everything else goes through `Bus`."""
    importers = [
        path.relative_to(ROOT).as_posix()
        for package in ("events", "orchestrator", "workers")
        for path in _package_files(package)
        if any(name.split(".")[0] == "nats" for name in _imports(path))
    ]
    assert importers
    assert [p for p in importers if not p.startswith("events/bus/")] == []

"""Bad values are refused with a message that says what is wrong and where.

Each file in bad-values/ is laid over ci/minimal-values.yaml (which renders) and names, on its
first line, what the error must say: the schema (values.schema.json) catches what JSON Schema
can express; the templates `fail` on the rest (duplicates, cross-field rules).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .chart import CHART, run_helm

BAD = sorted((Path(__file__).parent / "bad-values").glob("*.yaml"))
MINIMAL = CHART / "ci" / "minimal-values.yaml"


def expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: REGEX'"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_values_are_refused(path: Path) -> None:
    result = run_helm("template", "conveyor", str(CHART), "-f", str(MINIMAL), "-f", str(path))
    assert result.returncode != 0, f"{path.name} rendered:\n{result.stdout[:2000]}"
    assert re.search(expectation(path), result.stderr), result.stderr


def test_lint_refuses_what_the_schema_refuses() -> None:
    """`helm lint --strict` applies the schema. (A template's `fail` is only an INFO line to
    lint, which is why cross-field rules are tested above through `helm template`, the path
    `helm install` takes.)"""
    unknown = Path(__file__).parent / "bad-values" / "unknown-key.yaml"
    result = run_helm("lint", "--strict", str(CHART), "-f", str(MINIMAL), "-f", str(unknown))
    assert result.returncode != 0
    assert re.search(expectation(unknown), result.stdout + result.stderr)


def test_there_is_a_bad_file_for_each_kind_of_check() -> None:
    names = {p.stem for p in BAD}
    assert len(names) >= 20
    assert {"unknown-key", "duplicate-pool", "task-in-two-pools", "auth-without-secret"} <= names

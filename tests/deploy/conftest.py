"""The chart's values matrix (deploy/helm/conveyor/ci/*-values.yaml), rendered once a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from .chart import VALUES_FILES, Manifest, template


@pytest.fixture(
    scope="session",
    params=VALUES_FILES,
    ids=[p.name.removesuffix("-values.yaml") for p in VALUES_FILES],
)
def values_file(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture(scope="session")
def rendered(values_file: Path) -> list[Manifest]:
    return template(values_file)

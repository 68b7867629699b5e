"""Rendering the Helm chart and the schemas it is checked against (helpers of test_chart*.py).

helm and KEDA's models come from deploy/tools/install.sh (.ci/run runs it); without them the
chart tests are skipped with that instruction, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "conveyor"
VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
# The oldest Kubernetes the chart supports (its kubeVersion: the pod-index label came in 1.28)
# and the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.28.0", "1.32.0", "1.37.0")
# What KEDA's nats-jetstream scaler reads (keda.sh/docs/scalers/nats-jetstream).
NATS_JETSTREAM_REQUIRED = {"natsServerMonitoringEndpoint", "account", "stream", "consumer"}
NATS_JETSTREAM_KEYS = NATS_JETSTREAM_REQUIRED | {
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
}

Manifest = dict[str, Any]


def helm() -> str:
    """The helm binary: $HELM, deploy/.tools/bin/helm, or helm on PATH."""
    candidates = [os.environ.get("HELM"), str(ROOT / "deploy" / ".tools" / "bin" / "helm")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("helm")
    if found:
        return found
    _missing("helm is not installed: run deploy/tools/install.sh")


def _missing(message: str) -> NoReturn:
    """A missing tool skips the test on a developer's machine and fails it in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (.ci/run does)")
    pytest.skip(message)


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def template(*values: Path, kube_version: str = KUBE_VERSIONS[0]) -> list[Manifest]:
    """Every manifest `helm template` renders (hooks included) for these values files."""
    args = ["template", "conveyor", str(CHART), "--namespace", "apps"]
    args += ["--kube-version", kube_version]
    for path in values:
        args += ["-f", str(path)]
    result = run_helm(*args)
    assert result.returncode == 0, f"helm template {values} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def pod_spec(manifest: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def values_of(path: Path) -> dict[str, Any]:
    """The chart's defaults overlaid with one values file, as helm merges them."""
    merged: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    _overlay(merged, yaml.safe_load(path.read_text()) or {})
    return merged


def _overlay(base: dict[str, Any], top: dict[str, Any]) -> None:
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _overlay(base[key], value)
        else:
            base[key] = value


KEDA_PYTHON = ROOT / "deploy" / ".tools" / "keda" / "bin" / "python"
# Run in deploy/.tools/keda (deploy/tools/install.sh): KEDA's models as published.
_DUMP_KEDA_SCHEMA = (
    "import json; from cloudcoil.models.keda.v1alpha1 import ScaledObject; "
    "print(json.dumps(ScaledObject.model_json_schema(by_alias=True, mode='validation')))"
)


@functools.cache
def strict_scaledobject_schema() -> dict[str, Any]:
    """KEDA's ScaledObject schema (cloudcoil.models.keda), with nothing left open.

    The models accept any extra field and null for every optional one; here every object with
    declared properties refuses unknown keys and no field may be null, so a misspelt or
    misplaced key in a rendered ScaledObject fails instead of being silently ignored by KEDA.
    """
    if not os.access(KEDA_PYTHON, os.X_OK):
        _missing("cloudcoil.models.keda is not installed: run deploy/tools/install.sh")
    result = subprocess.run(
        [str(KEDA_PYTHON), "-c", _DUMP_KEDA_SCHEMA],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    schema: dict[str, Any] = json.loads(result.stdout)
    _close(schema)
    return schema


def _close(node: Any) -> None:
    if isinstance(node, dict):
        if "properties" in node:
            node.setdefault("additionalProperties", False)
        if "anyOf" in node:
            node["anyOf"] = [alt for alt in node["anyOf"] if alt != {"type": "null"}]
            node.pop("default", None)
        for value in node.values():
            _close(value)
    elif isinstance(node, list):
        for item in node:
            _close(item)

"""The chart's lease mode (orchestrator.lease.enabled): the orchestrators as a Deployment of
identical replicas instead of a StatefulSet of partitions — valid for every Kubernetes version the
chart supports, with the flags this checkout's CLI accepts, and nothing of static mode left."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from .chart import CHART, KUBE_VERSIONS, Manifest, by_kind, pod_spec, run_helm, template
from .cli import refusal

HA = CHART / "ci" / "ha-values.yaml"
LEASE = Path(__file__).with_name("lease-values.yaml")


@pytest.fixture(scope="module")
def leased() -> list[Manifest]:
    return template(HA, LEASE)


def _orchestrators(manifests: list[Manifest]) -> list[Manifest]:
    return [
        m
        for m in manifests
        if m["kind"] in ("Deployment", "StatefulSet")
        and m["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        == "orchestrator"
    ]


def test_lease_mode_lints_strictly() -> None:
    result = run_helm("lint", "--strict", str(CHART), "-f", str(HA), "-f", str(LEASE))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_lease_mode_is_valid_kubernetes(kube_version: str) -> None:
    for manifest in template(HA, LEASE, kube_version=kube_version):
        if manifest["kind"] == "ScaledObject":
            continue  # a custom resource: test_chart.py checks it against KEDA's schema
        kubernetes_validate.validate(manifest, kube_version, strict=True)


def test_the_orchestrators_are_one_deployment_of_identical_replicas(
    leased: list[Manifest],
) -> None:
    [deployment] = _orchestrators(leased)
    assert deployment["kind"] == "Deployment" and deployment["spec"]["replicas"] == 3
    assert by_kind(leased, "StatefulSet") == []  # no partition-per-pod, no volume claim
    # A new pod joins before an old one leaves (and hands its partitions over).
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    spec = pod_spec(deployment)
    [container] = spec["containers"]
    args = container["args"]
    assert refusal(args) is None  # this checkout's CLI parses the rendered command line
    assert "--lease" in args and "--lease-seconds=3" in args and "--snapshot-interval=15" in args
    assert not any(a.startswith(("--db", "--partition")) for a in args)
    env = {e["name"]: e for e in container["env"]}
    # Each replica names itself by its pod name in the leases: unique among live pods.
    assert env["CONVEYOR_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["state"] and "persistentVolumeClaim" not in str(volumes)
    pdbs = [
        p for p in by_kind(leased, "PodDisruptionBudget") if "orchestrator" in p["metadata"]["name"]
    ]
    assert len(pdbs) == 1


def test_static_mode_is_the_default_and_unchanged() -> None:
    [static] = _orchestrators(template(HA))
    assert static["kind"] == "StatefulSet"
    assert "--lease" not in pod_spec(static)["containers"][0]["args"]

"""The Helm chart is valid: lint, strict Kubernetes schemas, a strict KEDA schema, and the
stream and consumer names its ScaledObjects watch are the ones Conveyor creates.

No Kubernetes API server can run here (deploy/README.md says what is tested for real and what is
only validated), so every check is against schemas and against Conveyor's own code.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from events.ids import is_token
from events.topology import Topology

from .chart import (
    CHART,
    KUBE_VERSIONS,
    NATS_JETSTREAM_KEYS,
    NATS_JETSTREAM_REQUIRED,
    VALUES_FILES,
    Manifest,
    by_kind,
    run_helm,
    strict_scaledobject_schema,
    template,
    values_of,
)

# Kinds Kubernetes itself defines; anything else must be a custom resource we validate otherwise.
CUSTOM_KINDS = {"ScaledObject"}


def test_the_matrix_covers_what_the_chart_offers() -> None:
    """minimal, HA, several pools, and every NATS credential mode each have a values file."""
    modes = {values_of(p)["nats"]["auth"]["mode"] for p in VALUES_FILES}
    assert modes == {"none", "userPassword", "token", "nkey", "creds"}
    names = {p.name for p in VALUES_FILES}
    assert {"minimal-values.yaml", "ha-values.yaml", "pools-values.yaml"} <= names


def test_lint_strict(values_file: Path) -> None:
    result = run_helm("lint", "--strict", str(CHART), "-f", str(values_file))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_is_valid_kubernetes(
    rendered: list[Manifest], kube_version: str, values_file: Path
) -> None:
    """kubernetes-validate --strict: valid for that version, and no field it does not know."""
    validated = set()
    for manifest in rendered:
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert manifest["kind"] in CUSTOM_KINDS, f"{name}: no Kubernetes schema for it"
            continue
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{values_file.name}: {name} is invalid for Kubernetes {kube_version} at "
                f"{'/'.join(map(str, exc.caught.absolute_path))}: {exc.caught.message}"
            )
        validated.add(manifest["kind"])
    assert {"ConfigMap", "Job", "StatefulSet", "Service", "PodDisruptionBudget"} <= validated


def test_the_kubernetes_validator_rejects_an_unknown_field() -> None:
    """The check above can fail: a misspelt field in a rendered container is caught."""
    deployment = copy.deepcopy(by_kind(template(VALUES_FILES[0]), "Deployment")[0])
    kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


def _keda_errors(manifest: Manifest) -> list[str]:
    validator = jsonschema.Draft202012Validator(strict_scaledobject_schema())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(manifest)
    ]
    for index, trigger in enumerate(manifest["spec"]["triggers"]):
        where = f"spec/triggers/{index}/metadata"
        if trigger["type"] != "nats-jetstream":
            errors.append(f"spec/triggers/{index}/type: {trigger['type']!r}")
            continue
        keys = set(trigger["metadata"])
        if missing := NATS_JETSTREAM_REQUIRED - keys:
            errors.append(f"{where}: missing {sorted(missing)}")
        if unknown := keys - NATS_JETSTREAM_KEYS:
            errors.append(f"{where}: unknown to the nats-jetstream scaler: {sorted(unknown)}")
    return errors


def test_scaled_objects_match_the_strict_keda_schema(rendered: list[Manifest]) -> None:
    jsonschema.Draft202012Validator.check_schema(strict_scaledobject_schema())
    for scaled in by_kind(rendered, "ScaledObject"):
        assert _keda_errors(scaled) == [], scaled["metadata"]["name"]


def test_the_keda_schema_rejects_what_keda_would_ignore() -> None:
    """Strict where the published models are loose: unknown keys, nulls, non-string metadata."""
    scaled = by_kind(template(VALUES_FILES[0]), "ScaledObject")[0]
    assert _keda_errors(scaled) == []
    broken: list[Manifest] = []
    for path, value in [
        (("spec", "minReplicas"), 0),  # the field is minReplicaCount
        (("spec", "cooldownPeriod"), None),
        (("spec", "triggers", 0, "metadata", "lagThreshold"), 10),  # KEDA wants strings
        (("spec", "triggers", 0, "metadata", "natsServerMonitoringEndPoint"), "x:8222"),
    ]:
        copy_ = copy.deepcopy(scaled)
        node: Any = copy_
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        broken.append(copy_)
    for manifest in broken:
        assert _keda_errors(manifest), manifest["spec"]


def test_scaled_objects_scale_their_own_worker_deployment_from_zero(
    rendered: list[Manifest], values_file: Path
) -> None:
    values = values_of(values_file)
    deployments = {d["metadata"]["name"]: d for d in by_kind(rendered, "Deployment")}
    scaled_objects = by_kind(rendered, "ScaledObject")
    if not values["workers"]["keda"]["enabled"]:
        assert scaled_objects == []
        return
    pools = {p["name"]: p for p in values["workers"]["pools"]}
    assert len(scaled_objects) == len(pools)
    for scaled in scaled_objects:
        target = deployments[scaled["spec"]["scaleTargetRef"]["name"]]
        pool = pools[target["metadata"]["name"].rsplit("-worker-", 1)[1]]
        assert scaled["spec"]["minReplicaCount"] == pool["minReplicas"]
        assert scaled["spec"]["maxReplicaCount"] == pool["maxReplicas"]
        # KEDA owns the replica count: a rendered one would be reset by every upgrade.
        assert "replicas" not in target["spec"]
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["metadata"]["lagThreshold"] == str(pool["lagThreshold"])
    assert values_of(VALUES_FILES[0])["workers"]["pools"][0]["minReplicas"] == 0


def test_scaled_objects_watch_the_consumers_conveyor_creates(
    rendered: list[Manifest], values_file: Path
) -> None:
    """Stream and consumer names computed by events.topology, not retyped here.

    A wrong consumer name does not fail in KEDA: the scaler falls back to the stream's last
    sequence and scales the pool to its maximum (deploy/README.md), so this is the check.
    """
    values = values_of(values_file)
    topology = Topology(namespace=values["conveyor"]["namespace"])
    monitoring = values["nats"]["monitoring"]
    by_target = {s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind(rendered, "ScaledObject")}
    for pool in values["workers"]["pools"] if values["workers"]["keda"]["enabled"] else []:
        [scaled] = [s for name, s in by_target.items() if name.endswith(f"-worker-{pool['name']}")]
        triggers = [t["metadata"] for t in scaled["spec"]["triggers"]]
        assert {t["stream"] for t in triggers} == {topology.tasks_stream}
        expected = sorted(
            topology.task_consumer(queue["name"], task)
            for queue in pool["queues"]
            for task in queue["tasks"]
        )
        assert sorted(t["consumer"] for t in triggers) == expected
        for trigger in triggers:
            assert trigger["natsServerMonitoringEndpoint"] == monitoring["endpoint"]
            assert trigger["account"] == monitoring["account"]
            assert trigger["useHttps"] == str(monitoring["useHttps"]).lower()


def test_the_default_monitoring_endpoint_is_the_nats_charts_headless_service() -> None:
    """KEDA asks the consumer's leader as <pod>.<endpoint>: only a headless Service resolves so."""
    endpoint = values_of(VALUES_FILES[0])["nats"]["monitoring"]["endpoint"]
    assert endpoint.split(".")[0].endswith("-headless"), endpoint
    assert endpoint.endswith(":8222"), endpoint


@pytest.mark.parametrize(
    "name", ["default", "gpu_2", "a-b", "x" * 128, "", "a.b", "a b", "a*", "a>", "x" * 129, "é"]
)
def test_the_schema_accepts_exactly_the_queue_and_task_names_conveyor_does(name: str) -> None:
    schema = jsonschema.Draft7Validator(
        {"$ref": "#/definitions/token", **_chart_schema_definitions()}
    )
    assert schema.is_valid(name) == is_token(name)


def _chart_schema_definitions() -> dict[str, Any]:
    import json

    return {"definitions": json.loads((CHART / "values.schema.json").read_text())["definitions"]}


def test_the_chart_refuses_a_kubernetes_without_the_pod_index_label() -> None:
    result = run_helm(
        "template", "conveyor", str(CHART), "-f", str(VALUES_FILES[0]), "--kube-version", "1.27.9"
    )
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr, result.stderr

"""What the chart's workloads do: partitions from the pod index, the topology hook, the settings
every process shares, credentials per role, locked-down pods, probes and disruption budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .chart import CHART, Manifest, by_kind, pod_spec, template, values_of
from .cli import refusal

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in WORKLOAD_KINDS]


def component(manifest: Manifest) -> str:
    labels: dict[str, str] = manifest["spec"]["template"]["metadata"]["labels"]
    return labels["app.kubernetes.io/component"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def settings(manifests: list[Manifest]) -> dict[str, str]:
    [config] = [
        m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-settings")
    ]
    data: dict[str, str] = config["data"]
    return data


def test_the_settings_every_process_shares(rendered: list[Manifest], values_file: Path) -> None:
    values = values_of(values_file)
    data = settings(rendered)
    assert data["CONVEYOR_NATS_URL"] == values["nats"]["url"]
    assert data["CONVEYOR_NAMESPACE"] == values["conveyor"]["namespace"]
    assert data["CONVEYOR_PARTITIONS"] == str(values["conveyor"]["partitions"])
    assert data["CONVEYOR_REPLICAS"] == str(values["conveyor"]["replicas"])
    assert data["CONVEYOR_STARTUP_TIMEOUT"] == str(values["conveyor"]["startupTimeoutSeconds"])
    config_name = next(m for m in by_kind(rendered, "ConfigMap") if m["data"] is data)
    for workload in workloads(rendered):
        if workload["kind"] == "Job":
            continue
        for container in pod_spec(workload)["containers"]:
            refs = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
            assert refs == [config_name["metadata"]["name"]], workload["metadata"]["name"]


def test_a_cluster_seed_list_reaches_every_process() -> None:
    data = settings(template(CHART / "ci" / "ha-values.yaml"))
    seeds = data["CONVEYOR_NATS_URL"].split(",")
    assert len(seeds) == 3 and all(s.startswith("nats://nats-") for s in seeds), seeds
    assert data["CONVEYOR_REPLICAS"] == "3"


def test_the_topology_is_applied_by_a_hook_before_install_and_upgrade(
    rendered: list[Manifest],
) -> None:
    [job] = by_kind(rendered, "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    [container] = pod_spec(job)["containers"]
    assert container["args"] == ["topology", "apply"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # A pre-install hook runs before the ConfigMap exists: the same settings, inline.
    inline = {n: e["value"] for n, e in env_of(container).items() if "value" in e}
    assert {k: inline.get(k) for k in settings(rendered)} == settings(rendered)
    assert "envFrom" not in container


def test_one_orchestrator_per_partition_with_its_own_volume() -> None:
    rendered = template(CHART / "ci" / "ha-values.yaml")
    [stateful] = by_kind(rendered, "StatefulSet")
    assert stateful["spec"]["replicas"] == 3 == int(settings(rendered)["CONVEYOR_PARTITIONS"])
    assert stateful["spec"]["podManagementPolicy"] == "Parallel"
    [claim] = stateful["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    [container] = pod_spec(stateful)["containers"]
    partition = env_of(container)["CONVEYOR_PARTITION"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert partition == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert "--partition=$(CONVEYOR_PARTITION)" in container["args"]
    assert {"name": "data", "mountPath": "/var/lib/conveyor"} in container["volumeMounts"]
    services = {s["metadata"]["name"]: s for s in by_kind(rendered, "Service")}
    assert services[stateful["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"


def test_every_pod_runs_locked_down(rendered: list[Manifest]) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, no capabilities, no
    Kubernetes API token; /tmp is the one writable path besides declared state."""
    for workload in workloads(rendered):
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_long_running_processes_have_health_probes(rendered: list[Manifest]) -> None:
    for workload in workloads(rendered):
        if workload["kind"] == "Job":
            continue
        for container in pod_spec(workload)["containers"]:
            ports = {p["name"] for p in container["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = container[probe]["httpGet"]
                assert get["path"] == "/healthz" and get["port"] in ports, (
                    workload["metadata"]["name"],
                    probe,
                )


def _selects(selector: dict[str, str], workload: Manifest) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def test_disruption_budgets_and_services_select_exactly_their_pods(
    rendered: list[Manifest],
) -> None:
    running = [w for w in workloads(rendered) if w["kind"] != "Job"]
    budgets = by_kind(rendered, "PodDisruptionBudget")
    for workload in running:
        matching = [b for b in budgets if _selects(b["spec"]["selector"]["matchLabels"], workload)]
        assert len(matching) == 1, workload["metadata"]["name"]
    for budget in budgets:
        assert sum(_selects(budget["spec"]["selector"]["matchLabels"], w) for w in running) == 1
    for service in by_kind(rendered, "Service"):
        selected = [w for w in running if _selects(service["spec"]["selector"], w)]
        assert len(selected) == 1, service["metadata"]["name"]


def test_each_pool_is_a_deployment_serving_its_queues(
    rendered: list[Manifest], values_file: Path
) -> None:
    values = values_of(values_file)
    deployments = {d["metadata"]["name"]: d for d in by_kind(rendered, "Deployment")}
    for pool in values["workers"]["pools"]:
        [name] = [n for n in deployments if n.endswith(f"-worker-{pool['name']}")]
        [container] = pod_spec(deployments[name])["containers"]
        args = container["args"]
        assert args[:2] == ["worker", pool["module"]]
        assert [a.removeprefix("--queue=") for a in args if a.startswith("--queue=")] == [
            q["name"] for q in pool["queues"]
        ]
        assert f"--concurrency={pool['concurrency']}" in args
        assert f"--grace={pool['graceSeconds']}" in args
        grace = pod_spec(deployments[name])["terminationGracePeriodSeconds"]
        assert grace > pool["graceSeconds"], "the kubelet must not kill a worker still draining"
        image = pool.get("image") or {}
        assert container["image"].startswith(image.get("repository", values["image"]["repository"]))
        if not values["workers"]["keda"]["enabled"]:
            assert deployments[name]["spec"]["replicas"] == max(pool["minReplicas"], 1)


# Per credential mode: the env each role gets, and the Secret key or file behind it.
MODE_ENV = {
    "none": {},
    "userPassword": {"CONVEYOR_NATS_USER": "user", "CONVEYOR_NATS_PASSWORD": "password"},
    "token": {"CONVEYOR_NATS_TOKEN": "token"},
    "nkey": {"CONVEYOR_NATS_NKEY_SEED": "nkey.seed"},
    "creds": {"CONVEYOR_NATS_CREDS": "user.creds"},
}


def _role_secret(workload: Manifest, values: dict[str, Any]) -> str:
    role = component(workload)
    secrets = values["nats"]["auth"]["secrets"]
    if role.startswith("worker-"):
        pool = next(p for p in values["workers"]["pools"] if f"worker-{p['name']}" == role)
        return str(pool.get("natsSecret") or secrets["worker"])
    return str(secrets[role])


def test_each_role_reads_its_own_nats_credentials(
    rendered: list[Manifest], values_file: Path
) -> None:
    """The env a role gets points at its own Secret (a key, or a file mounted from it)."""
    values = values_of(values_file)
    mode = values["nats"]["auth"]["mode"]
    for workload in workloads(rendered):
        spec = pod_spec(workload)
        [container] = spec["containers"]
        env = env_of(container)
        nats_env = {n for n in env if n.startswith("CONVEYOR_NATS_") and n != "CONVEYOR_NATS_URL"}
        tls = values["nats"]["tls"]
        expected_tls = set()
        if tls["enabled"]:
            expected_tls = {"CONVEYOR_NATS_TLS_CA"}
            if tls.get("clientCert"):
                expected_tls |= {"CONVEYOR_NATS_TLS_CERT", "CONVEYOR_NATS_TLS_KEY"}
        assert nats_env == set(MODE_ENV[mode]) | expected_tls, workload["metadata"]["name"]
        if mode == "none":
            continue
        secret = _role_secret(workload, values)
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        for name, key in MODE_ENV[mode].items():
            if "valueFrom" in env[name]:
                ref = env[name]["valueFrom"]["secretKeyRef"]
                assert (ref["name"], ref["key"]) == (secret, key), (workload["metadata"], name)
                continue
            # A file: the path in the env is the Secret's key mounted from the role's Secret.
            volume = volumes["nats-auth"]["secret"]
            assert volume["secretName"] == secret
            assert [i["key"] for i in volume["items"]] == [key]
            assert env[name]["value"] == f"{mounts['nats-auth']}/{key}"
        for name in expected_tls:
            volume = volumes["nats-tls"]["secret"]
            assert volume["secretName"] == tls["secret"]
            path = env[name]["value"]
            assert path.rsplit("/", 1)[0] == mounts["nats-tls"]
            assert path.rsplit("/", 1)[1] in [i["key"] for i in volume["items"]]


def test_a_pool_may_have_its_own_nats_user() -> None:
    rendered = template(CHART / "ci" / "credentials-values.yaml")
    [payments] = [d for d in by_kind(rendered, "Deployment") if component(d) == "worker-payments"]
    volume = next(v for v in pod_spec(payments)["volumes"] if v["name"] == "nats-auth")
    assert volume["secret"]["secretName"] == "conveyor-nats-worker-payments"


def test_the_api_token_comes_from_a_secret_unless_dev() -> None:
    def api_container(path: Path) -> dict[str, Any]:
        [api] = [d for d in by_kind(template(path), "Deployment") if component(d) == "api"]
        container: dict[str, Any] = pod_spec(api)["containers"][0]
        return container

    secured = api_container(CHART / "ci" / "userpassword-values.yaml")
    ref = env_of(secured)["CONVEYOR_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "conveyor-api", "key": "api-token"}
    assert "--dev" not in secured["args"]
    open_ = api_container(CHART / "ci" / "token-values.yaml")
    assert "CONVEYOR_API_TOKEN" not in env_of(open_) and "--dev" in open_["args"]


def test_every_rendered_command_line_is_one_conveyor_accepts(rendered: list[Manifest]) -> None:
    for workload in workloads(rendered):
        for container in pod_spec(workload)["containers"]:
            # What Kubernetes makes of $(VAR) references: the variable's value.
            args = [a.replace("$(CONVEYOR_PARTITION)", "0") for a in container["args"]]
            assert refusal(args) is None

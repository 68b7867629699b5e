"""Conveyor in real containers: the images built offline, deploy/compose.yaml up with a 3-node
NATS JetStream cluster, a workflow end to end, the loss of the node leading the event stream,
and a worker service scaled from zero while a run waits for it.

Slow by nature (images are built from scratch: a Debian base by mmdebstrap, then the wheelhouse
and three images); the steps' times are written to tests/artifacts/deploy-timings.json. Skipped,
loudly, only when podman cannot start any container on this machine.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from events.topology import Topology

from . import chart
from .containers import (
    NATS_NODES,
    ROOT,
    Images,
    Stack,
    Timings,
    podman,
    wait_for,
    why_no_container_can_start,
)

pytestmark = pytest.mark.timeout(1500)

TOPOLOGY = Topology()  # compose.yaml keeps the default namespace
ORDER = {"items": [{"sku": "tea", "qty": 2, "cents": 450}], "customer": "Ada"}
RECEIPT = "Ada: 9.00 EUR"
LONG_RUNNING = ("orchestrator", "worker", "api", "webhooks")


@pytest.fixture(scope="module")
def timings() -> Iterator[Timings]:
    timings = Timings()
    yield timings
    artifacts = ROOT / "tests" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "deploy-timings.json").write_text(json.dumps(timings.steps, indent=2) + "\n")
    print(f"\ncontainer test timings (s): {timings.steps}")


@pytest.fixture(scope="module")
def stack(timings: Timings) -> Iterator[Stack]:
    project = f"cvt{secrets.token_hex(4)}"
    reason = why_no_container_can_start(project)
    if reason:
        pytest.skip(f"NO CONTAINER TESTS: no container can start on this machine: {reason}")
    images = Images(tag=project)
    stack = Stack(project=project, images=images)
    started = time.monotonic()
    try:
        images.build(timings)
        for name in (images.conveyor, images.nats, images.worker):
            size = podman("image", "inspect", "--format", "{{.Size}}", name).stdout
            timings.steps[f"size MB {name.split(':')[0]}"] = round(int(size) / 1e6, 1)
        with timings.measure("compose up"):
            stack.compose("up", "-d")
            # The one-shot job first: every other role waits for what it creates, so its
            # failure would otherwise surface only as their time-outs.
            wait_for(
                "the topology job to finish",
                lambda: True if stack.state("topology") == "exited" else None,
                timeout=180,
                every=1,
                explain=lambda: f"topology logs:\n{stack.logs('topology')}",
            )
            exit_code = stack.inspect("topology", "{{.State.ExitCode}}")
            assert exit_code == "0", f"topology exited {exit_code}:\n{stack.logs('topology')}"
            for service in LONG_RUNNING:
                stack.wait_healthy(service, timeout=180)
        yield stack
    finally:
        with timings.measure("teardown"):
            stack.down()
            if not os.environ.get("CONVEYOR_KEEP_IMAGES"):
                images.remove()
        timings.steps["container tests in all"] = round(time.monotonic() - started, 1)


def run_workflow(stack: Stack, timeout: float = 120) -> dict[str, Any]:
    """`conveyor run --wait` from inside the compose network (the API container's CLI).

    The CLI reports a connection it cannot make at once (a person decides whether to retry);
    the network's DNS can miss a name for a moment while podman adds a container to it (seen
    right after `kube play`), so a refused connection is tried again for a bounded while:
    what is tested is the run, not the resolver."""
    deadline = time.monotonic() + 60
    while True:
        result = stack.exec(
            "api",
            *("conveyor", "run", "receipt", "--input", json.dumps(ORDER)),
            *("--wait", "--json", "--timeout", str(timeout)),
            timeout=timeout + 30,
        )
        unreachable = result.returncode == 3 and "cannot connect to NATS" in result.stderr
        if not unreachable or time.monotonic() > deadline:
            break
        time.sleep(1)  # polling the network's state: nothing to await from outside it
    assert result.returncode == 0, f"conveyor run failed:\n{result.stdout}\n{result.stderr}"
    status: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return status


def test_every_role_runs_non_root_on_a_read_only_root(stack: Stack) -> None:
    for service in (*LONG_RUNNING, "nats1"):
        user, read_only = stack.inspect(
            service, "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}"
        ).split()
        assert user == "10001:10001", (service, user)
        if service != "nats1":
            assert read_only == "true", service
    # The flag above, seen from inside: the image's own files cannot be written.
    denied = stack.exec("worker", "python3", "-c", "open('/opt/conveyor/x', 'w')")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr


def test_the_topology_job_made_every_stream_replicated(stack: Stack) -> None:
    exit_code = stack.inspect("topology", "{{.State.ExitCode}}")
    assert exit_code == "0", stack.logs("topology")
    expected = {plan.name for plan in TOPOLOGY.streams()}
    expected |= {f"KV_{TOPOLOGY.workflows_bucket}", f"OBJ_{TOPOLOGY.artifacts_bucket}"}
    details = {d["name"]: d for d in stack.streams("n1")}
    assert expected <= set(details), sorted(details)
    for name in expected:
        cluster = details[name]["cluster"]
        replicas = 1 + len(cluster.get("replicas") or [])
        assert replicas == 3, f"{name} has {replicas} replica(s): {cluster}"


def test_a_workflow_runs_end_to_end(stack: Stack) -> None:
    status = run_workflow(stack)
    assert status["status"] == "succeeded", status
    assert status["output"] == RECEIPT


def http(url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    """(status, decoded JSON body) of one request; error statuses are answers, not raises."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:  # closes the response it holds
            return error.code, None


def test_the_api_and_the_gateway_answer_on_their_published_ports(stack: Stack) -> None:
    api = f"http://{stack.published('api', 8080)}"
    assert http(f"{api}/healthz")[0] == 200
    assert http(f"{api}/api/runs")[0] == 401

    def runs_listed() -> list[Any] | None:
        status, page = http(f"{api}/api/runs?workflow=receipt", token=stack.api_token)
        assert status == 200, status
        runs: list[Any] = page.get("runs") or []
        return runs or None

    # The API reads its own projection of the event stream: wait for it to catch up.
    wait_for("the API listing the run", runs_listed, timeout=30)

    hook = f"http://{stack.published('webhooks', 8090)}/hooks/orders"
    assert http(hook, body={"order": 42})[0] == 401
    assert http(hook, token=stack.hook_token, body={"order": 42})[0] == 202


def test_a_workflow_succeeds_after_the_event_stream_leader_is_killed(
    stack: Stack, timings: Timings
) -> None:
    nodes = list(NATS_NODES)
    leader = wait_for(
        "a leader for the events stream",
        lambda: stack.stream_leader(TOPOLOGY.events_stream, nodes),
        timeout=30,
    )
    survivors = [n for n in nodes if n != leader]
    killed_at = time.monotonic()
    stack.kill(NATS_NODES[leader])
    stack.killed.append(leader)
    # The survivors go on naming the dead node as leader until they notice it is gone.
    wait_for(
        f"a new events stream leader after {leader} was killed",
        lambda: (
            leader_now
            if (leader_now := stack.stream_leader(TOPOLOGY.events_stream, survivors)) in survivors
            else None
        ),
        timeout=60,
    )
    timings.steps["events leader re-elected after kill -9"] = round(time.monotonic() - killed_at, 1)
    with timings.measure("workflow after kill -9 of the events leader"):
        status = run_workflow(stack)
    assert status["status"] == "succeeded", status
    assert status["output"] == RECEIPT
    assert stack.state(NATS_NODES[leader]) == "exited", "the node must still be down"


def test_a_waiting_run_finishes_when_the_worker_scales_from_zero(
    stack: Stack, timings: Timings
) -> None:
    alive = [n for n in NATS_NODES if n not in stack.killed]
    # The consumer KEDA would watch for the first task of the workflow.
    consumer = TOPOLOGY.task_consumer("default", "price")
    pulled = {entry[1] for entry in stack.consumers(TOPOLOGY.tasks_stream, alive)}
    assert consumer in pulled, f"workers pull one durable consumer per task: {sorted(pulled)}"
    # Scale to zero: SIGTERM, the worker drains and exits within its grace period.
    stack.remove("worker", grace=40)
    waiting = stack.exec_background(
        "api",
        *("conveyor", "run", "receipt", "--input", json.dumps(ORDER)),
        *("--wait", "--json", "--timeout", "240"),
    )
    try:
        lag = wait_for(
            f"a queued task on {consumer} (the lag KEDA reads from the consumer's leader)",
            lambda: stack.consumer_lag(TOPOLOGY.tasks_stream, consumer, alive) or None,
            timeout=60,
            explain=lambda: (
                f"consumers: {stack.consumers(TOPOLOGY.tasks_stream, alive)}\n"
                f"orchestrator logs:\n{stack.logs('orchestrator')}"
            ),
        )
        assert lag >= 1
        assert waiting.poll() is None, "the run finished with no worker running"
        scaled_at = time.monotonic()
        stack.compose("up", "-d", "--no-deps", "worker")
        stdout, stderr = waiting.communicate(timeout=240)
        timings.steps["run finished after worker 0 -> 1"] = round(time.monotonic() - scaled_at, 1)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            print("the waiting run's CLI said:", *waiting.communicate(), sep="\n")
    assert waiting.returncode == 0, f"{stdout}\n{stderr}"
    status = json.loads(stdout.strip().splitlines()[-1])
    assert status["status"] == "succeeded" and status["output"] == RECEIPT, status
    wait_for(
        f"{consumer} drained",
        lambda: True if stack.consumer_lag(TOPOLOGY.tasks_stream, consumer, alive) == 0 else None,
        timeout=30,
    )


def test_the_charts_worker_deployment_serves_tasks_under_podman_kube_play(
    stack: Stack, tmp_path: Path
) -> None:
    """Kubernetes cannot run here, but podman runs a Deployment: the chart's settings ConfigMap
    and worker Deployment, rendered by helm and played on the compose network, serve a run
    alone (the compose worker is stopped): args, env, read-only root and /tmp as rendered."""
    values = tmp_path / "kube-play-values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "image": {"repository": "localhost/conveyor", "tag": stack.project},
                "nats": {"url": "nats://nats1:4222,nats://nats2:4222,nats://nats3:4222"},
                "api": {"dev": True},
                "workers": {
                    "keda": {"enabled": False, "pollingInterval": 15, "cooldownPeriod": 300},
                    "pools": [
                        {
                            "name": "receipts",
                            "image": {
                                "repository": "localhost/conveyor-example-worker",
                                "tag": stack.project,
                                "pullPolicy": "Never",
                            },
                            "module": "/app/flows.py",
                            "queues": [{"name": "default", "tasks": ["price", "receipt_line"]}],
                            "concurrency": 4,
                            "minReplicas": 1,
                            "maxReplicas": 1,
                            "lagThreshold": 5,
                            "graceSeconds": 10,
                        }
                    ],
                },
            }
        )
    )
    rendered = chart.template(values)
    playable = [
        m
        for m in rendered
        if m["kind"] == "ConfigMap"
        or (m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-worker-receipts"))
    ]
    stack.remove("worker", grace=40)
    [container] = stack.kube_play(playable, tmp_path)
    user, read_only = podman(
        "inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}", container
    ).stdout.split()
    assert (user, read_only) == ("10001:10001", "true")
    status = run_workflow(stack)
    assert status["status"] == "succeeded" and status["output"] == RECEIPT, status
    workers = {a["worker"] for node in status["nodes"].values() for a in node["attempt_history"]}
    pod = container.removesuffix("-worker")
    assert workers and all(w.startswith(pod) for w in workers), workers

"""Subjects, stream names and ids: what Conveyor keeps in NATS, as pure data."""

import re
import time
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.ids import derived_id, is_token, new_run_id, partition_of, run_id_for_key
from events.models import (
    RUN_CANCEL_REQUESTED,
    RUN_REQUESTED,
    RUN_SUCCEEDED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_STARTED,
    TIMER_FIRED,
)
from events.topology import Topology

RUN = "018f2a3b4c5d6e7f8091a2b3c4"

# ---- subjects -------------------------------------------------------------------------------


def test_event_subject_carries_partition_type_suffix_and_run_id():
    assert Topology().event_subject(TASK_COMPLETED, RUN) == f"conveyor.evt.0.task.completed.{RUN}"
    assert Topology(namespace="t1").event_subject(RUN_CANCEL_REQUESTED, "r") == (
        "t1.evt.0.run.cancel-requested.r"
    )


def test_partition_is_crc32_of_the_run_id_modulo_the_partition_count():
    topology = Topology(partitions=7)
    for run_id in ("a", "b", RUN, "run-42"):
        expected = zlib.crc32(run_id.encode()) % 7
        assert topology.partition(run_id) == expected
        assert topology.event_subject(RUN_REQUESTED, run_id).split(".")[2] == str(expected)
    assert {topology.partition(f"r{i}") for i in range(200)} == set(range(7))


@given(st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True), st.integers(1, 64))
def test_partition_is_in_range_and_stable(run_id, partitions):
    assert 0 <= partition_of(run_id, partitions) < partitions
    assert partition_of(run_id, partitions) == partition_of(run_id, partitions)
    assert partition_of(run_id, 1) == 0


@pytest.mark.parametrize(
    "run_id", ["a.b", "a b", "*", ">", "", "x" * 129, "r\u00e9", "a\nb", "run\n"]
)
def test_event_subject_refuses_run_ids_that_are_not_one_subject_token(run_id):
    with pytest.raises(ValueError, match=r"is not subject-safe"):
        Topology().event_subject(TASK_STARTED, run_id)


def test_event_subject_refuses_foreign_event_types():
    with pytest.raises(ValueError, match=r"not a Conveyor event type: 'com.example.x'"):
        Topology().event_subject("com.example.x", RUN)


def test_filters_follow_one_run_or_one_partition():
    topology = Topology(namespace="ns", partitions=4)
    assert topology.run_events_filter(RUN) == f"ns.evt.*.*.*.{RUN}"
    filters = topology.orchestrator_filters(3)
    assert len(filters) == 9
    assert "ns.evt.3.task.completed.*" in filters
    assert "ns.evt.3.timer.fired.*" in filters
    assert "ns.evt.3.run.retry-requested.*" in filters
    assert "ns.evt.3.run.succeeded.*" not in filters  # the orchestrator's own output
    for event_type in (RUN_REQUESTED, TASK_FAILED, TIMER_FIRED):
        subject = topology.event_subject(event_type, RUN)
        partition = int(subject.split(".")[2])
        assert _matches(topology.orchestrator_filters(partition), subject)
        assert _matches([topology.run_events_filter(RUN)], subject)
    assert not _matches(
        topology.orchestrator_filters(0), topology.event_subject(RUN_SUCCEEDED, RUN)
    )


def _matches(filters: list[str], subject: str) -> bool:
    """NATS subject matching with `*` (one token); enough for these filters."""
    tokens = subject.split(".")
    for pattern in filters:
        parts = pattern.split(".")
        if len(parts) == len(tokens) and all(
            p in ("*", t) for p, t in zip(parts, tokens, strict=True)
        ):
            return True
    return False


def test_task_log_dlq_api_and_cancel_subjects():
    topology = Topology(namespace="ns")
    assert topology.task_subject("gpu-large", "train") == "ns.task.gpu-large.train"
    assert topology.legacy_task_subject("gpu-large") == "ns.task.gpu-large"
    assert topology.worker_subject("host-12-ab") == "ns.worker.host-12-ab"
    assert topology.workers_filter() == "ns.worker.*"
    assert topology.log_subject(RUN, "train_2") == f"ns.log.{RUN}.train_2"
    assert topology.dlq_subject("events") == "ns.dlq.events"
    assert topology.api_subject("status") == "ns.api.0.status"
    assert topology.api_subject("cancel", 2) == "ns.api.2.cancel"
    assert topology.cancel_subject_filter() == "ns.evt.*.task.cancel-requested.*"


@pytest.mark.parametrize("queue", ["gpu.large", "a b", ">", "", "gpu\n"])
def test_task_subject_refuses_unsafe_queue_names(queue):
    with pytest.raises(ValueError, match=re.escape(f"queue name {queue!r} is not subject-safe")):
        Topology().task_subject(queue, "train")
    with pytest.raises(ValueError, match=re.escape(f"queue name {queue!r} is not subject-safe")):
        Topology().task_consumer(queue, "train")


@pytest.mark.parametrize("task", ["etl.load", "a b", "*", "", "x" * 129, "caf\u00e9"])
def test_task_subject_and_consumer_refuse_unsafe_task_names(task):
    with pytest.raises(ValueError, match=re.escape(f"task name {task!r} is not subject-safe")):
        Topology().task_subject("default", task)
    with pytest.raises(ValueError, match=re.escape(f"task name {task!r} is not subject-safe")):
        Topology().task_consumer("default", task)


def test_one_subject_and_one_consumer_per_task_and_queue():
    topology = Topology(namespace="ns")
    assert topology.task_consumer("gpu", "train") == "task:gpu:train"
    assert topology.parse_task_consumer("task:gpu:train") == ("gpu", "train")
    assert topology.parse_task_consumer("queue-gpu") is None
    assert topology.parse_task_consumer("task:gpu:a.b") is None
    # Distinct tasks never share a subject, and no task subject is the old whole-queue one.
    subjects = {topology.task_subject(q, t) for q in ("a", "b") for t in ("x", "y")}
    assert len(subjects) == 4
    assert topology.legacy_task_subject("a") not in subjects


@pytest.mark.parametrize("worker", ["host.example.com-1", "a b", "", "x" * 129])
def test_worker_subject_refuses_unsafe_ids(worker):
    with pytest.raises(ValueError, match="is not subject-safe"):
        Topology().worker_subject(worker)


# ---- names of streams, consumers, buckets ---------------------------------------------------


def test_names_derive_from_the_namespace():
    topology = Topology(namespace="team_a")
    assert topology.events_stream == "TEAM_A_EVENTS"
    assert topology.tasks_stream == "TEAM_A_TASKS"
    assert topology.logs_stream == "TEAM_A_LOGS"
    assert topology.dlq_stream == "TEAM_A_DLQ"
    assert topology.workflows_bucket == "team_a-workflows"
    assert topology.artifacts_bucket == "team_a-artifacts"
    assert topology.leases_bucket == "team_a-leases"
    assert topology.snapshots_bucket == "team_a-snapshots"
    assert topology.fence_subject(3) == "team_a.fence.3"
    assert topology.orchestrator_consumer(1) == "orchestrator-p1"
    assert topology.queue_consumer("gpu") == "queue-gpu"


def test_stream_plans_cover_every_subject_family():
    topology = Topology(namespace="ns", duplicate_window_s=60.0, event_max_age_s=3600.0)
    plans = {plan.name: plan for plan in topology.streams()}
    assert set(plans) == {"NS_EVENTS", "NS_TASKS", "NS_LOGS", "NS_DLQ", "NS_INGEST", "NS_WORKERS"}
    assert plans["NS_INGEST"].subjects == ("ns.ingest.>",)
    assert plans["NS_EVENTS"].subjects == ("ns.evt.>", "ns.fence.>")
    assert plans["NS_EVENTS"].max_age_s == 3600.0
    assert plans["NS_EVENTS"].duplicate_window_s == 60.0
    assert plans["NS_TASKS"].work_queue and plans["NS_TASKS"].subjects == ("ns.task.>",)
    assert not any(plans[name].work_queue for name in ("NS_EVENTS", "NS_LOGS", "NS_DLQ"))
    assert plans["NS_LOGS"].subjects == ("ns.log.>",)
    assert plans["NS_DLQ"].subjects == ("ns.dlq.>",)
    # Heartbeats: the last one of each worker, read by direct get, gone after a while.
    workers = plans["NS_WORKERS"]
    assert workers.subjects == ("ns.worker.*",) and not workers.work_queue
    assert workers.max_msgs_per_subject == 1 and workers.allow_direct
    assert workers.max_age_s == topology.worker_max_age_s
    assert all(plans[n].max_msgs_per_subject == -1 for n in plans if n != "NS_WORKERS")


# ---- validation and environment -------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["a", "conveyor", "test_1x", "z" * 32])
def test_valid_namespaces(namespace):
    assert Topology(namespace=namespace).namespace == namespace


@pytest.mark.parametrize(
    "namespace", ["", "Conveyor", "1abc", "-a", "team-a", "a.b", "a b", "a*", "a\n", "z" * 33]
)
def test_invalid_namespace(namespace):
    message = re.escape(f"namespace {namespace!r} must be 1-32 of a-z")
    with pytest.raises(ValueError, match=message):
        Topology(namespace=namespace)


@pytest.mark.parametrize("interval", [0, -1.0, float("nan")])
def test_worker_heartbeat_must_be_positive(interval):
    with pytest.raises(ValueError, match="worker_heartbeat_s must be > 0"):
        Topology(worker_heartbeat_s=interval)


@pytest.mark.parametrize("partitions", [0, -1])
def test_partitions_must_be_positive(partitions):
    with pytest.raises(ValueError, match=rf"partitions must be >= 1, got {partitions}"):
        Topology(partitions=partitions)


ENV = (
    "CONVEYOR_NAMESPACE",
    "CONVEYOR_PARTITIONS",
    "CONVEYOR_TASK_ACK_WAIT",
    "CONVEYOR_TASK_MAX_DELIVERIES",
    "CONVEYOR_WORKER_HEARTBEAT",
)


def test_from_env_defaults(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    assert Topology.from_env() == Topology()


def test_from_env_reads_every_setting(monkeypatch):
    monkeypatch.setenv("CONVEYOR_NAMESPACE", "staging")
    monkeypatch.setenv("CONVEYOR_PARTITIONS", "8")
    monkeypatch.setenv("CONVEYOR_TASK_ACK_WAIT", "12.5")
    monkeypatch.setenv("CONVEYOR_TASK_MAX_DELIVERIES", "3")
    monkeypatch.setenv("CONVEYOR_WORKER_HEARTBEAT", "2.5")
    topology = Topology.from_env()
    assert topology.worker_heartbeat_s == 2.5
    assert topology.namespace == "staging"
    assert topology.partitions == 8
    assert topology.task_ack_wait_s == 12.5
    assert topology.task_max_deliveries == 3
    assert Topology.from_env(namespace="explicit").namespace == "explicit"  # the argument wins


def test_from_env_validates_like_the_constructor(monkeypatch):
    monkeypatch.setenv("CONVEYOR_NAMESPACE", "Bad.Name")
    with pytest.raises(ValueError, match=r"namespace 'Bad.Name' must be"):
        Topology.from_env()
    monkeypatch.setenv("CONVEYOR_NAMESPACE", "ok")
    monkeypatch.setenv("CONVEYOR_PARTITIONS", "0")
    with pytest.raises(ValueError, match=r"partitions must be >= 1"):
        Topology.from_env()


# ---- ids ------------------------------------------------------------------------------------


def test_new_run_id_is_a_subject_token_prefixed_by_creation_time():
    before = int(time.time() * 1000)
    run_id = new_run_id()
    after = int(time.time() * 1000)
    assert is_token(run_id) and len(run_id) == 28
    assert before <= int(run_id[:12], 16) <= after
    assert new_run_id() != new_run_id()


def test_derived_id_is_deterministic_and_unambiguous():
    assert derived_id("a", "b") == derived_id("a", "b")
    assert derived_id("a", "bc") != derived_id("ab", "c")  # parts are separated
    assert derived_id("a") != derived_id("a", "")
    assert derived_id("x").startswith("d") and len(derived_id("x")) == 32
    assert is_token(derived_id("run", "with.dots and spaces"))


def test_run_id_for_key_is_stable_per_workflow_and_key():
    assert run_id_for_key("etl", "2024-01-01") == run_id_for_key("etl", "2024-01-01")
    assert run_id_for_key("etl", "2024-01-01") != run_id_for_key("etl", "2024-01-02")
    assert run_id_for_key("etl", "k") != run_id_for_key("report", "k")
    assert is_token(run_id_for_key("etl", "any key / with * symbols"))


@pytest.mark.parametrize(
    ("value", "ok"),
    [("abc", True), ("A-b_9", True), ("x" * 128, True), ("", False), ("x" * 129, False)]
    + [(bad, False) for bad in ("a.b", "a b", "a*", "a>", "a\n", "\na", "caf\u00e9")],
)
def test_is_token(value, ok):
    assert is_token(value) is ok


def test_from_env_names_the_variable_that_is_not_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_TASK_ACK_WAIT", "soon")
    with pytest.raises(ValueError, match="CONVEYOR_TASK_ACK_WAIT='soon' is not a valid float"):
        Topology.from_env()

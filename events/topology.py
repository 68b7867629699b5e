"""Names and shapes of everything Conveyor keeps in NATS: subjects, streams, consumers, buckets.

Pure data: `bus.py` is what creates these on a server (idempotently, at start-up). A namespace
prefixes every name so that several deployments, or the tests, share one server without
seeing each other's messages.

Subjects
    <ns>.evt.<partition>.<noun>.<verb>.<run_id>   the event log (CONVEYOR_EVENTS)
    <ns>.task.<queue>.<task>                      one work queue per task and queue
                                                  (CONVEYOR_TASKS); consumer task:<queue>:<task>
    <ns>.worker.<worker_id>                       worker heartbeats, the last one of each worker
                                                  (CONVEYOR_WORKERS)
    <ns>.log.<run_id>.<node_id>                   task log lines (CONVEYOR_LOGS)
    <ns>.dlq.<origin>                             dead letters with their reason (CONVEYOR_DLQ)
    <ns>.api.<partition>.<verb>                   request/reply to the orchestrator (core NATS)
    <ns>.fence.<partition>                        lease mode: each owner's epoch marker, in the
                                                  event stream (see `events.fencing`)

Putting the run id last in event subjects lets a reader follow one run with a subject filter
(`<ns>.evt.*.*.*.<run_id>`) instead of reading every event. A task is dispatched on its own
subject, so that only the workers that serve it ever receive it: pools with different tasks on
one queue never take each other's work. (Before that, tasks were dispatched on `<ns>.task.<queue>`
and read through the consumer `queue-<queue>`: `legacy_task_subject` / `queue_consumer` name
them for the upgrade path, see `workers.forwarding`.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from events.ids import derived_id, is_token, partition_of
from events.models import (
    FLOW_TIMER_FIRED,
    LIMIT_GRANTED,
    LIMIT_REFUSED,
    LIMIT_RELEASED,
    LIMIT_REQUESTED,
    RUN_CANCEL_REQUESTED,
    RUN_REQUESTED,
    RUN_RETRY_REQUESTED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_STARTED,
    TIMER_FIRED,
    TRIGGER_COLLECTED,
    WAIT_MATCHED,
    WEBHOOK_ATTEMPTED,
    type_suffix,
)

_MAX_TYPE_TOKEN = 128
# No '-': stream names upper-case the namespace, and 'a-b' and 'a_b' must not collide.
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")  # \Z, not `$`: no trailing "\n"
# What the orchestrator consumes; its own outputs (run.succeeded, ...) are for everyone else.
ORCHESTRATOR_INPUTS = (
    RUN_REQUESTED,
    RUN_CANCEL_REQUESTED,
    RUN_RETRY_REQUESTED,
    TASK_STARTED,
    TASK_COMPLETED,
    TASK_FAILED,
    TIMER_FIRED,
    WAIT_MATCHED,
    WEBHOOK_ATTEMPTED,
    # Flow control: limiters and collectors are applied by the orchestrator of their partition.
    LIMIT_REQUESTED,
    LIMIT_GRANTED,
    LIMIT_REFUSED,
    LIMIT_RELEASED,
    TRIGGER_COLLECTED,
    FLOW_TIMER_FIRED,
)


@dataclass(frozen=True, slots=True)
class StreamPlan:
    name: str
    subjects: tuple[str, ...]
    work_queue: bool
    max_age_s: float
    duplicate_window_s: float
    replicas: int = 1
    # 1: keep only the last message of each subject (heartbeats); -1: no such limit.
    max_msgs_per_subject: int = -1
    # Answer direct gets (any replica reads the last message of a subject, no consumer).
    allow_direct: bool = False


@dataclass(frozen=True, slots=True)
class Topology:
    namespace: str = "conveyor"
    partitions: int = 1
    # How long a worker may be silent before its task is redelivered elsewhere; workers
    # heartbeat at a third of it.
    task_ack_wait_s: float = 30.0
    # Deliveries of one task message after which it is failed as "kills its worker".
    task_max_deliveries: int = 5
    # How often a worker announces itself (it counts as gone once it misses a few: see
    # `orchestrator.runtime.workers`). The last heartbeat of each worker is kept this long, so
    # that a worker that went away is still listed for a while.
    worker_heartbeat_s: float = 5.0
    worker_max_age_s: float = 3600.0
    # A crash-restarted publisher must fall inside this window to be deduplicated.
    duplicate_window_s: float = 600.0
    event_max_age_s: float = 7 * 24 * 3600.0
    log_max_age_s: float = 7 * 24 * 3600.0
    dlq_max_age_s: float = 30 * 24 * 3600.0
    # Copies of every stream, the KV bucket and the object store: 1 on one server, 3 on a
    # 3-node cluster (one node may then be lost without losing or stalling anything).
    replicas: int = 1

    def __post_init__(self) -> None:
        if not _NAMESPACE.match(self.namespace):
            raise ValueError(
                f"namespace {self.namespace!r} must be 1-32 of a-z, 0-9 or '_', "
                "starting with a letter"
            )
        if not self.worker_heartbeat_s > 0:
            raise ValueError(f"worker_heartbeat_s must be > 0, got {self.worker_heartbeat_s}")
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        if not 1 <= self.replicas <= 5:
            raise ValueError(f"replicas must be 1-5 (JetStream's limit), got {self.replicas}")

    @classmethod
    def from_env(
        cls, namespace: str | None = None, env: Mapping[str, str] | None = None
    ) -> Topology:
        """Settings from CONVEYOR_* environment variables over the configuration file
        (events.config; every process must agree on them)."""
        from events.config import environment

        env = environment() if env is None else env
        defaults = cls()

        def number(name: str, kind: type[int] | type[float], default: float) -> Any:
            raw = env.get(name)
            if raw is None:
                return default
            try:
                return kind(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None

        return cls(
            namespace=namespace or env.get("CONVEYOR_NAMESPACE", defaults.namespace),
            partitions=number("CONVEYOR_PARTITIONS", int, defaults.partitions),
            task_ack_wait_s=number("CONVEYOR_TASK_ACK_WAIT", float, defaults.task_ack_wait_s),
            task_max_deliveries=number(
                "CONVEYOR_TASK_MAX_DELIVERIES", int, defaults.task_max_deliveries
            ),
            worker_heartbeat_s=number(
                "CONVEYOR_WORKER_HEARTBEAT", float, defaults.worker_heartbeat_s
            ),
            replicas=number("CONVEYOR_REPLICAS", int, defaults.replicas),
        )

    # ---- names -------------------------------------------------------------------------
    @property
    def _upper(self) -> str:
        return self.namespace.upper()

    @property
    def events_stream(self) -> str:
        return f"{self._upper}_EVENTS"

    @property
    def tasks_stream(self) -> str:
        return f"{self._upper}_TASKS"

    @property
    def logs_stream(self) -> str:
        return f"{self._upper}_LOGS"

    @property
    def ingest_stream(self) -> str:
        return f"{self._upper}_INGEST"

    @property
    def dlq_stream(self) -> str:
        return f"{self._upper}_DLQ"

    @property
    def workers_stream(self) -> str:
        return f"{self._upper}_WORKERS"

    @property
    def workflows_bucket(self) -> str:
        return f"{self.namespace}-workflows"

    @property
    def artifacts_bucket(self) -> str:
        return f"{self.namespace}-artifacts"

    @property
    def leases_bucket(self) -> str:
        """Lease mode: who owns which partition under which epoch, and who is alive."""
        return f"{self.namespace}-leases"

    @property
    def snapshots_bucket(self) -> str:
        """Lease mode: each partition's store, snapshotted (an object store)."""
        return f"{self.namespace}-snapshots"

    def fence_subject(self, partition: int) -> str:
        """Where a partition's owners publish their epoch markers: in the event stream (a fence
        is checked against a subject of the stream written to) but outside `<ns>.evt.>`, so
        that no reader of events ever sees one."""
        return f"{self.namespace}.fence.{partition}"

    def orchestrator_consumer(self, partition: int) -> str:
        return f"orchestrator-p{partition}"

    def router_consumer(self, partition: int, source: str) -> str:
        return f"router-{source}-p{partition}"

    def notifier_consumer(self, partition: int) -> str:
        return f"notifier-p{partition}"

    def ingest_subject(self, event_type: str) -> str:
        """Where anyone publishes a CloudEvent for triggers and waits (any `<ns>.ingest.>`).
        The last token is the type made subject-safe, and bounded: a type of any length is a
        valid CloudEvent, but a subject over the server's control-line limit closes the
        connection. A long type keeps its first 96 characters and a hash of the whole."""
        token = "".join(c if c.isalnum() or c in "-_" else "_" for c in event_type) or "event"
        if len(token) > _MAX_TYPE_TOKEN:
            token = f"{token[:96]}_{derived_id('ingest', event_type)[1:17]}"
        return f"{self.namespace}.ingest.{token}"

    def outcome_filters(self, partition: int) -> list[str]:
        """Run outcomes of one partition: upstream events for workflows chained on them."""
        return [
            f"{self.namespace}.evt.{partition}.run.{verb}.*"
            for verb in ("succeeded", "failed", "cancelled")
        ]

    def queue_consumer(self, queue: str) -> str:
        """The consumer of a whole queue in versions that dispatched on `<ns>.task.<queue>`:
        read only to forward what is left there (see `legacy_task_subject`)."""
        return f"queue-{queue}"

    def task_consumer(self, queue: str, task: str) -> str:
        """The durable consumer shared by every worker that serves `task` on `queue` (what KEDA
        scales a worker pool on). Queue and task names are subject tokens ([A-Za-z0-9_-]), so
        ':' separates them unambiguously."""
        _check_tokens(queue, task)
        return f"task:{queue}:{task}"

    @staticmethod
    def parse_task_consumer(name: str) -> tuple[str, str] | None:
        """(queue, task) of a consumer named by `task_consumer`, else None."""
        kind, _, rest = name.partition(":")
        queue, _, task = rest.partition(":")
        if kind != "task" or not is_token(queue) or not is_token(task):
            return None
        return queue, task

    # ---- subjects ----------------------------------------------------------------------
    def partition(self, run_id: str) -> int:
        return partition_of(run_id, self.partitions)

    def event_subject(self, event_type: str, run_id: str) -> str:
        if not is_token(run_id):
            raise ValueError(f"run id {run_id!r} is not subject-safe ([A-Za-z0-9_-], 1-128)")
        return f"{self.namespace}.evt.{self.partition(run_id)}.{type_suffix(event_type)}.{run_id}"

    def run_events_filter(self, run_id: str) -> str:
        return f"{self.namespace}.evt.*.*.*.{run_id}"

    def orchestrator_filters(self, partition: int) -> list[str]:
        return [f"{self.namespace}.evt.{partition}.{type_suffix(t)}.*" for t in ORCHESTRATOR_INPUTS]

    def task_subject(self, queue: str, task: str) -> str:
        """Where attempts of `task` on `queue` are dispatched: only its consumer reads them."""
        _check_tokens(queue, task)
        return f"{self.namespace}.task.{queue}.{task}"

    def legacy_task_subject(self, queue: str) -> str:
        """Where versions before per-task routing dispatched every task of `queue`."""
        _check_tokens(queue)
        return f"{self.namespace}.task.{queue}"

    def worker_subject(self, worker_id: str) -> str:
        if not is_token(worker_id):
            raise ValueError(f"worker id {worker_id!r} is not subject-safe ([A-Za-z0-9_-], 1-128)")
        return f"{self.namespace}.worker.{worker_id}"

    def workers_filter(self) -> str:
        return f"{self.namespace}.worker.*"

    def log_subject(self, run_id: str, node_id: str) -> str:
        return f"{self.namespace}.log.{run_id}.{node_id}"

    def dlq_subject(self, origin: str) -> str:
        return f"{self.namespace}.dlq.{origin}"

    def api_subject(self, verb: str, partition: int = 0) -> str:
        return f"{self.namespace}.api.{partition}.{verb}"

    def cancel_subject_filter(self) -> str:
        return f"{self.namespace}.evt.*.{type_suffix('io.conveyor.task.cancel-requested')}.*"

    # ---- streams -----------------------------------------------------------------------
    def streams(self) -> tuple[StreamPlan, ...]:
        ns, window, r = self.namespace, self.duplicate_window_s, self.replicas
        return (
            StreamPlan(
                self.events_stream,
                (f"{ns}.evt.>", f"{ns}.fence.>"),
                False,
                self.event_max_age_s,
                window,
                r,
            ),
            StreamPlan(self.tasks_stream, (f"{ns}.task.>",), True, 0.0, window, r),
            StreamPlan(self.logs_stream, (f"{ns}.log.>",), False, self.log_max_age_s, 120.0, r),
            StreamPlan(self.dlq_stream, (f"{ns}.dlq.>",), False, self.dlq_max_age_s, window, r),
            StreamPlan(
                self.ingest_stream, (f"{ns}.ingest.>",), False, self.event_max_age_s, window, r
            ),
            StreamPlan(
                self.workers_stream,
                (f"{ns}.worker.*",),
                False,
                self.worker_max_age_s,
                min(window, 60.0),
                r,
                max_msgs_per_subject=1,
                allow_direct=True,
            ),
        )


def _check_tokens(queue: str, task: str | None = None) -> None:
    for what, name in (("queue", queue), ("task", task)):
        if name is not None and not is_token(name):
            raise ValueError(f"{what} name {name!r} is not subject-safe ([A-Za-z0-9_-], 1-128)")

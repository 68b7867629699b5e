"""The contract: CloudEvents on NATS JetStream (envelope, codec, types, subjects, topology).

Everything here is pure data and pure functions except `Bus` (and the `Delivery`, `KvEntry`,
`Puller` it hands out), the only place that imports nats-py, and `EmbeddedServer`, which starts
a process: those load on first use, so `import events.models` costs no networking import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from events.acks import Ack, Decision, Nak, Outcome, Term, settle
from events.codec import decode, encode
from events.envelope import CloudEvent, utc_now_iso
from events.errors import BusError, BusUnavailable, ConveyorError, MalformedEvent, ServerError
from events.ids import derived_id, new_run_id, partition_of, run_id_for_key
from events.models import (
    DATA_MODELS,
    RUN_CANCEL_REQUESTED,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_REQUESTED,
    RUN_RETRY_REQUESTED,
    RUN_SUCCEEDED,
    TASK_CANCEL_REQUESTED,
    TASK_COMPLETED,
    TASK_DISPATCHED,
    TASK_FAILED,
    TASK_STARTED,
    TIMER_FIRED,
    ErrorInfo,
    LogLine,
    ParentRef,
    RunCancelled,
    RunCancelRequested,
    RunFailed,
    RunRequested,
    RunRetryRequested,
    RunSucceeded,
    TaskCancelRequested,
    TaskCompleted,
    TaskDispatched,
    TaskFailed,
    TaskRef,
    TaskStarted,
    TimerFired,
)
from events.tasks import TaskDeclaration, Tracer, current_tracer, tracing
from events.topology import Topology

if TYPE_CHECKING:
    from events.bus import Bus, Delivery, KvEntry, Puller
    from events.server import EmbeddedServer, find_nats_server

_LAZY = {
    "Bus": "events.bus",
    "Delivery": "events.bus",
    "KvEntry": "events.bus",
    "Puller": "events.bus",
    "EmbeddedServer": "events.server",
    "find_nats_server": "events.server",
}

__all__ = [
    "DATA_MODELS",
    "RUN_CANCELLED",
    "RUN_CANCEL_REQUESTED",
    "RUN_FAILED",
    "RUN_REQUESTED",
    "RUN_RETRY_REQUESTED",
    "RUN_SUCCEEDED",
    "TASK_CANCEL_REQUESTED",
    "TASK_COMPLETED",
    "TASK_DISPATCHED",
    "TASK_FAILED",
    "TASK_STARTED",
    "TIMER_FIRED",
    "Ack",
    "Bus",
    "BusError",
    "BusUnavailable",
    "CloudEvent",
    "ConveyorError",
    "Decision",
    "Delivery",
    "EmbeddedServer",
    "ErrorInfo",
    "KvEntry",
    "LogLine",
    "MalformedEvent",
    "Nak",
    "Outcome",
    "ParentRef",
    "Puller",
    "RunCancelRequested",
    "RunCancelled",
    "RunFailed",
    "RunRequested",
    "RunRetryRequested",
    "RunSucceeded",
    "ServerError",
    "TaskCancelRequested",
    "TaskCompleted",
    "TaskDeclaration",
    "TaskDispatched",
    "TaskFailed",
    "TaskRef",
    "TaskStarted",
    "Term",
    "TimerFired",
    "Topology",
    "Tracer",
    "current_tracer",
    "decode",
    "derived_id",
    "encode",
    "find_nats_server",
    "new_run_id",
    "partition_of",
    "run_id_for_key",
    "settle",
    "tracing",
    "utc_now_iso",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'events' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

"""The public API of each package, pinned: internals may move, these names may not silently."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "events": {
        "DATA_MODELS",
        "RUN_CANCELLED",
        "RUN_CANCEL_REQUESTED",
        "RUN_FAILED",
        "RUN_REQUESTED",
        "RUN_RETRY_REQUESTED",
        "LogLine",
        "RunRetryRequested",
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
        "MalformedEvent",
        "Nak",
        "Outcome",
        "ParentRef",
        "Puller",
        "RunCancelRequested",
        "RunCancelled",
        "RunFailed",
        "RunRequested",
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
    },
    "orchestrator": {
        "BusError",
        "BusUnavailable",
        "Client",
        "ConveyorError",
        "InvalidInput",
        "Published",
        "RunRefused",
        "SpecError",
        "SyncClient",
        "UnknownRun",
        "UnknownWorkflow",
        "Workflow",
        "WorkflowDefinitionError",
        "sleep",
        "subworkflow",
        "wait_for_event",
        "when",
        "workflow",
    },
    "workers": {
        "NonRetryableError",
        "Task",
        "TaskContext",
        "TaskDefinitionError",
        "Worker",
        "current",
        "task",
    },
}


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_exported_names_are_pinned(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == EXPECTED[package]
    for name in module.__all__:
        assert getattr(module, name) is not None

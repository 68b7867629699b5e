"""`conveyor replay RUN_ID`: a run's events, read from the event stream, folded through the pure
machine one by one — each transition and the commands it produced — then the replayed state
compared with the one the orchestrator stored. Exit 0 when they agree, 1 when they differ."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Any

from events.codec import decode
from events.envelope import CloudEvent
from events.errors import MalformedEvent
from orchestrator.cli.common import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    Connection,
    UsageError,
    connected_client,
    existing_run,
    typed,
)
from orchestrator.client import Client
from orchestrator.core.replay import differences, fold

_PAGE = 1000


@dataclass(frozen=True, slots=True)
class ReplayArgs:
    run_id: str
    json: bool


async def read_events(client: Client, run_id: str) -> list[CloudEvent]:
    """Every event of the run still in the event stream, in stream order."""
    topo = client.topology
    events: list[CloudEvent] = []
    start = 1
    while True:
        page = await client.bus.read_stream(
            topo.events_stream, topo.run_events_filter(run_id), start_seq=start, limit=_PAGE
        )
        for delivery in page:
            try:
                events.append(decode(delivery.headers, delivery.data))
            except MalformedEvent:
                continue  # never applied by the orchestrator either (it parks such messages)
        if len(page) < _PAGE:
            return events
        start = page[-1].stream_seq + 1


async def cmd_replay(ns: argparse.Namespace) -> int:
    args = typed(ReplayArgs, ns)
    async with connected_client(typed(Connection, ns)) as client:
        stored = await existing_run(client, args.run_id)
        spec = await client.registry.get(stored["workflow"], stored["version"])
        events = await read_events(client, args.run_id)
    if not events:
        raise UsageError(f"no events of run {args.run_id} are left in the event stream")
    replay = fold(spec, args.run_id, events)
    problems = differences(replay.run, stored) if replay.run is not None else ["no run.requested"]
    if args.json:
        report: dict[str, Any] = {
            "run_id": args.run_id,
            "steps": [asdict(s) for s in replay.steps],
            "equal": not problems,
            "differences": problems,
        }
        print(json.dumps(report, default=str))
    else:
        for index, step in enumerate(replay.steps, 1):
            short = step.type.removeprefix("io.conveyor.")
            mark = (
                "applied" if step.applied else f"no change{': ' + step.note if step.note else ''}"
            )
            print(f"{index:>4} {(step.time or '')[11:23]:<12} {short:<22} {mark}")
            for command in step.commands:
                print(f"{'':>18}-> {command}")
        verdict = "equals the stored state" if not problems else "DIFFERS from the stored state:"
        print(f"replayed {len(replay.steps)} events: the run {verdict}")
        for problem in problems[:50]:
            print(f"  {problem}")
    return EXIT_OK if not problems else EXIT_RUN_FAILED


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay",
        help="fold a run's events through the machine and compare with the stored state",
        description=__doc__,
        epilog="example:\n  conveyor replay 0192f3a1c2b4d5e6f7a8b9c0",
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=cmd_replay)
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")

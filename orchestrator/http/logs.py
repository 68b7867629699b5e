"""Task log lines from the log stream (`<ns>.log.<run_id>.<node_id>`), paged by sequence.

A page reads the run's whole log subject (`<ns>.log.<run_id>.*`) and keeps the lines of the
asked nodes (any number: the run page's filter): a mapped node's children log under their own
keys (`train[3]`), which no subject wildcard can select by prefix, so the filter is on the
line's `node_id`. Each page scans a bounded number of messages and says where it stopped
(`next_after`), so a noisy sibling can make a page short but never slow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from events.bus import Bus
from events.models import LogLine

from .models import LogEntry

READ_CHUNK = 500


@dataclass(slots=True)
class LogRead:
    lines: list[LogEntry] = field(default_factory=list)
    next_after: int = 0
    more: bool = False


def node_matches(wanted: str | Sequence[str] | None, node_id: str) -> bool:
    """`train` selects `train` and its children `train[i]`; `train[3]` only that child; several
    select what any of them selects; none selects every line."""
    if not wanted:
        return True
    if not isinstance(wanted, str):
        return any(node_matches(one, node_id) for one in wanted)
    return node_id == wanted or ("[" not in wanted and node_id.startswith(f"{wanted}["))


async def read_logs(
    bus: Bus,
    run_id: str,
    *,
    node: str | Sequence[str] | None = None,
    attempt: int | None = None,
    after: int = 0,
    limit: int = 200,
    scan_limit: int = 5_000,
) -> LogRead:
    topology = bus.topology
    subject = topology.log_subject(run_id, "*")
    out = LogRead(next_after=after)
    scanned = 0
    while len(out.lines) < limit and scanned < scan_limit:
        want = min(READ_CHUNK, scan_limit - scanned)
        chunk = await bus.read_stream(
            topology.logs_stream, subject, start_seq=out.next_after + 1, limit=want
        )
        for delivery in chunk:
            scanned += 1
            out.next_after = delivery.stream_seq
            try:
                line = LogLine.model_validate_json(delivery.data)
            except ValidationError:
                continue  # not ours to show, and not worth failing a page over
            if not node_matches(node, line.node_id):
                continue
            if attempt is not None and line.attempt != attempt:
                continue
            out.lines.append(
                LogEntry(
                    seq=delivery.stream_seq,
                    run_id=line.run_id,
                    node_id=line.node_id,
                    attempt=line.attempt,
                    time=line.time,
                    level=line.level,
                    message=line.message,
                    logger=line.logger,
                )
            )
            if len(out.lines) >= limit:
                out.more = True
                break
        if len(chunk) < want:
            return out  # caught up with the stream
    out.more = True
    return out

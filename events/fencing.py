"""A partition owner's tenure in lease mode, and the fence that ends it (pure).

When a replica takes a partition over (`orchestrator.runtime.ownership`), it publishes a
marker on the partition's fence subject, `<ns>.fence.<p>` (in the event stream). From then on
every message it publishes into the event stream carries

    Nats-Expected-Last-Subject-Sequence: <its marker's sequence>
    Nats-Expected-Last-Subject-Sequence-Subject: <ns>.fence.<p>

and JetStream refuses it (error 10071, "wrong last sequence") as soon as a successor's marker is
the last one there: a deposed owner cannot write into the event stream, whatever it still
believes. Its durable consumers are named per epoch (`orchestrator-p0-e7`) and deleted by the
successor, so it can neither fetch nor ack either. The partition's lease (a KV entry) says who
owns it under which epoch; the fence makes that true on the stream itself, where no clock and no
slow process can get it wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
# JetStream's error code for a publish whose expected last sequence does not hold.
WRONG_LAST_SEQUENCE = 10071
# ...and, on a clustered stream, for one whose check could not be made because another message
# with an expectation on the same subject was still being replicated (it may well hold).
FENCE_CHECK_IN_FLIGHT = 10164
_EPOCH_SUFFIX = re.compile(r"-e([0-9]{1,18})\Z")


@dataclass(frozen=True, slots=True)
class Tenure:
    """What a partition owner reads and writes under: its epoch, its fence marker, and where
    each of its consumers starts (base consumer name -> first stream sequence to read)."""

    partition: int
    epoch: int
    fence_subject: str
    fence_seq: int
    starts: Mapping[str, int] = field(default_factory=dict)

    def consumer(self, durable: str) -> str:
        """This epoch's name for a durable consumer (`orchestrator-p0` -> `orchestrator-p0-e7`)."""
        return f"{durable}-e{self.epoch}"

    def fence_headers(self) -> dict[str, str]:
        return {
            EXPECTED_LAST_SUBJECT_SEQUENCE: str(self.fence_seq),
            EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: self.fence_subject,
        }

    def with_fence(self, fence_seq: int) -> Tenure:
        """The same tenure after its owner renewed its own marker (same epoch, newer sequence)."""
        return replace(self, fence_seq=fence_seq)


def epoch_of(consumer: str, durable: str) -> int | None:
    """The epoch a consumer of the family `durable` was made under: 0 for the static mode's
    un-suffixed name, N for `<durable>-eN`, None for a consumer of another family."""
    if consumer == durable:
        return 0
    if not consumer.startswith(durable):
        return None
    match = _EPOCH_SUFFIX.fullmatch(consumer[len(durable) :])
    return int(match.group(1)) if match else None


def marker(replica: str, epoch: int) -> bytes:
    """A fence marker's body: which replica took the partition under which epoch. The epoch is
    read back (`marker_epoch`): a claimant never puts its marker over a later epoch's."""
    return json.dumps({"replica": replica, "epoch": epoch}, separators=(",", ":")).encode()


def marker_epoch(body: bytes) -> int:
    """The epoch a marker names (0 for no marker, or a body that is not one)."""
    try:
        epoch = json.loads(body)["epoch"] if body else 0
    except (ValueError, TypeError, KeyError):
        return 0
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0

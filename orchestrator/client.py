"""The client API the CLI is built on (and that Python code can use directly).

    async with await Client.connect("nats://127.0.0.1:4222") as client:
        run_id = await client.trigger("hello", {"name": "Ada"})
        final = await client.wait(run_id)

`trigger` checks the workflow exists and the input fits its parameters before publishing (bad
input changes nothing), and returns only once JetStream acknowledged the request (nothing
accepted is lost). `cancel` and `retry` refuse what the CLI refuses (an unknown run, a run that
already ended, a run that did not fail) with the same typed errors. For threads and web
frameworks, `orchestrator.SyncClient` offers the same methods without `await`.

Errors: UnknownWorkflow, InvalidInput (nothing sent); UnknownRun, RunRefused (nothing sent);
BusUnavailable (NATS did not answer: nothing accepted, safe to retry); TimeoutError (`wait`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from events.bus import Bus
from events.bus.readiness import ELECTION_WAIT_S
from events.codec import decode
from events.envelope import CloudEvent
from events.errors import BusUnavailable, MalformedEvent, NoResponders
from events.ids import derived_id, is_token, new_run_id, run_id_for_key
from events.models import (
    RUN_CANCEL_REQUESTED,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_REQUESTED,
    RUN_RETRY_REQUESTED,
    RUN_SUCCEEDED,
    RunCancelRequested,
    RunRequested,
    RunRetryRequested,
)
from events.settings import NatsSettings
from events.topology import Topology
from orchestrator.core.flowcheck import priority_problem
from orchestrator.core.rules import input_problems, retry_refusal
from orchestrator.core.statuses import RUN_TERMINAL
from orchestrator.core.trigger import ACTOR_EXTENSION, CLIENT_SOURCE
from orchestrator.errors import InvalidInput, RunRefused, UnknownRun
from orchestrator.runtime.registry import Registry

SOURCE = CLIENT_SOURCE
T = TypeVar("T")
_TERMINAL_TYPES = {RUN_SUCCEEDED, RUN_FAILED, RUN_CANCELLED}


@dataclass(frozen=True, slots=True)
class Published:
    """A CloudEvent durably in JetStream: its id, the NATS subject, and whether JetStream
    dropped it as a repeat of an id it had already stored (inside its duplicate window)."""

    id: str
    subject: str
    duplicate: bool


class Client:
    """`source` is the CloudEvents source of what this client publishes (it tells a run's
    trigger: the CLI and the HTTP API use their own); `actor` says who asks (a user@host),
    recorded with the runs it starts."""

    def __init__(
        self,
        bus: Bus,
        *,
        source: str = SOURCE,
        actor: str | None = None,
        unserved_wait_s: float = 10.0,
        unavailable_wait_s: float = ELECTION_WAIT_S,
    ) -> None:
        self.bus = bus
        self.topology = bus.topology
        self.registry = Registry(bus)
        self.source = source
        self.actor = actor
        # How long a status request waits for its partition to be served again (a lease-mode
        # replica taking it over, an orchestrator restarting) before it gives up.
        self.unserved_wait_s = unserved_wait_s
        # How long a publish or a lookup rides out a JetStream that cannot answer yet (a
        # stream electing a leader after a node is lost, a reconnect) before it gives up.
        self.unavailable_wait_s = unavailable_wait_s

    @classmethod
    async def connect(
        cls,
        nats: NatsSettings | str | None = None,
        topology: Topology | None = None,
        *,
        source: str = SOURCE,
        actor: str | None = None,
    ) -> Client:
        """Connect to NATS (`nats`: settings, a URL or a seed list; default: the
        `CONVEYOR_NATS_*` environment and `conveyor.toml`). The client never creates streams:
        the orchestrator (or `conveyor topology apply`) does."""
        settings = nats if isinstance(nats, NatsSettings) else NatsSettings.from_env(servers=nats)
        bus = await Bus.connect(settings, topology or Topology.from_env(), name="conveyor-client")
        return cls(bus, source=source, actor=actor)

    async def close(self) -> None:
        await self.bus.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def trigger(
        self,
        workflow: str,
        input: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        version: int | None = None,
        run_id: str | None = None,
        traceparent: str | None = None,
        priority: int | None = None,
        source: str | None = None,
        actor: str | None = None,
    ) -> str:
        """Start a run; returns its id once JetStream holds the request. UnknownWorkflow /
        InvalidInput before anything is sent. `priority` (1-10, higher first; default: the
        workflow's, else 5) orders the run and its tasks where they wait behind a limit
        (docs/flow-control.md). `source` and `actor` override the client's for this request
        (the HTTP API names the caller's address)."""
        spec = await self._patiently(
            f"workflow {workflow}", lambda: self.registry.get(workflow, version)
        )
        payload = dict(input or {})
        # The machine's own check (on a copy: the run stores the input as given, and the
        # machine fills the defaults in when it starts the run).
        problems = input_problems(spec, dict(payload))
        if priority is not None:
            priority_problem(priority, problems)
        if problems:
            raise InvalidInput(workflow, problems)
        if run_id is not None and not is_token(run_id):
            raise InvalidInput(workflow, [f"run id {run_id!r} must be 1-128 of [A-Za-z0-9_-]"])
        if run_id is None:
            run_id = run_id_for_key(workflow, idempotency_key) if idempotency_key else new_run_id()
        request = RunRequested(
            workflow=workflow,
            # Pinned to the version the input was checked against (the latest one, unless
            # asked): the orchestrator then needs no lookup of its own, and the run is the one
            # whose input was validated.
            version=spec.version,
            input=payload,
            idempotency_key=idempotency_key,
            run_id=run_id,
            priority=priority,
        )
        extensions = {"runid": run_id}
        if traceparent:  # the caller's trace, which the run continues (else it starts one)
            extensions["traceparent"] = traceparent
        if actor or self.actor:
            extensions[ACTOR_EXTENSION] = _ascii(actor or self.actor or "")
        event = CloudEvent.create(
            RUN_REQUESTED,
            source or self.source,
            request,
            # The same key gives the same event id: JetStream drops the repeat publish too.
            id=derived_id("requested", run_id) if idempotency_key else None,
            extensions=extensions,
        )
        await self._publish(self.topology.event_subject(RUN_REQUESTED, run_id), event)
        return run_id

    async def cancel(self, run_id: str, reason: str = "cancelled by request") -> None:
        """Ask a running run to stop: its in-flight tasks are told, nothing new is dispatched.
        UnknownRun, or RunRefused when it already ended."""
        status = await self._existing(run_id)
        if status["status"] in RUN_TERMINAL:
            raise RunRefused(run_id, "cancel", f"it already {status['status']}")
        event = CloudEvent.create(
            RUN_CANCEL_REQUESTED,
            self.source,
            RunCancelRequested(run_id=run_id, reason=reason),
            extensions={"runid": run_id},
        )
        await self._publish(self.topology.event_subject(RUN_CANCEL_REQUESTED, run_id), event)

    async def retry(self, run_id: str, reason: str = "retried by request") -> None:
        """Resume a failed or cancelled run from the nodes that did not succeed (same run id).
        UnknownRun, or RunRefused (with the machine's reason) when it cannot be retried."""
        status = await self._existing(run_id)
        refusal = retry_refusal(status["status"], status.get("error"))
        if refusal is not None:
            raise RunRefused(run_id, "retry", refusal)
        event = CloudEvent.create(
            RUN_RETRY_REQUESTED,
            self.source,
            RunRetryRequested(run_id=run_id, reason=reason),
            extensions={"runid": run_id},
        )
        await self._publish(self.topology.event_subject(RUN_RETRY_REQUESTED, run_id), event)

    async def publish(
        self,
        type: str,
        data: Any = None,
        *,
        source: str | None = None,
        id: str | None = None,
        subject: str | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> Published:
        """Publish any CloudEvent (JSON data) where triggers and waits see it (the ingest
        stream); returns once JetStream holds it. The same `source` and `id` twice (a CloudEvent's
        identity) is stored once.
        MalformedEvent (nothing sent) for an attribute CloudEvents or NATS cannot carry."""
        event = CloudEvent.create(
            type,
            source or self.source,
            data,
            id=id,
            subject=subject,
            extensions=dict(extensions or {}),
        )
        nats_subject = self.topology.ingest_subject(type)
        duplicate = await self._publish(nats_subject, event)
        return Published(event.id, nats_subject, duplicate)

    async def _publish(self, subject: str, event: CloudEvent) -> bool:
        """Publish, through an election: the event keeps its id, so a repeat of one that was
        stored after all is dropped as a duplicate."""
        return await self._patiently(
            f"publish to {subject}", lambda: self.bus.publish(subject, event)
        )

    async def _patiently(self, what: str, ask: Callable[[], Awaitable[T]]) -> T:
        return await self.bus.through_elections(what, ask, self.unavailable_wait_s)

    async def _existing(self, run_id: str) -> dict[str, Any]:
        if not is_token(run_id):
            raise UnknownRun(run_id)
        status = await self.status(run_id)
        if status is None:
            raise UnknownRun(run_id)
        return status

    async def status(self, run_id: str) -> dict[str, Any] | None:
        """The run's committed state, or None when the orchestrator does not know it (yet)."""
        subject = self.topology.api_subject("status", self.topology.partition(run_id))
        reply = await self._ask(subject, json.dumps({"run_id": run_id}).encode())
        if reply.get("ok"):
            return reply["run"]  # type: ignore[no-any-return]
        if reply.get("not_found"):
            return None
        raise BusUnavailable(f"status request failed: {reply.get('error')}")

    async def runs(
        self, workflow: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for partition in range(self.topology.partitions):
            body = json.dumps({"workflow": workflow, "status": status, "limit": limit}).encode()
            reply = await self._ask(self.topology.api_subject("runs", partition), body)
            out.extend(reply.get("runs", []))
        return sorted(out, key=lambda r: r["created_at"], reverse=True)[:limit]

    async def _ask(self, subject: str, body: bytes) -> dict[str, Any]:
        """A request to the orchestrator serving `subject`'s partition; while nothing serves it
        (a takeover, a restart), asked again for up to `unserved_wait_s`."""
        deadline = time.monotonic() + self.unserved_wait_s
        while True:
            try:
                reply: dict[str, Any] = json.loads(await self.bus.request(subject, body))
                return reply
            except NoResponders:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.25)

    async def flows(self) -> list[dict[str, Any]]:
        """Every partition's limiters and collectors with work in hand (docs/flow-control.md):
        per limit and key, how many hold it and wait; per debounced or batched workflow and
        key, the events held."""
        out: list[dict[str, Any]] = []
        for partition in range(self.topology.partitions):
            reply = await self._ask(self.topology.api_subject("flow", partition), b"{}")
            out.extend(reply.get("flows", []))
        return out

    async def wait(
        self,
        run_id: str,
        on_update: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None,
        timeout: float | None = None,
        newer_than: float | None = None,
    ) -> dict[str, Any]:
        """Follow the run live until it ends; `on_update` gets each new status. Returns the last.

        `newer_than` (an `updated_at`) ignores an end state from before it: after a retry, the
        run's old failure must not count as the end.

        The run's events are followed on their subjects; its status is asked of the
        orchestrator only when that can change the answer — at once when an outcome event
        arrives, at most every `progress_s` while someone watches (`on_update`), and every
        `backstop_s` in case an event was missed (or the orchestrator restarted). A status
        request costs the orchestrator a read and a reply: a waiter must not add one per event
        of a 1,000-task run."""
        ended = asyncio.Event()
        changed = asyncio.Event()

        async def on_event(subject: str, headers: Mapping[str, str], body: bytes) -> None:
            try:
                event = decode(headers, body)
            except MalformedEvent:
                return
            changed.set()
            if event.type in _TERMINAL_TYPES:
                ended.set()

        sub = await self.bus.subscribe(self.topology.run_events_filter(run_id), on_event)
        try:
            async with asyncio.timeout(timeout):
                last: dict[str, Any] | None = None
                while True:
                    ended.clear()
                    changed.clear()
                    try:
                        status = await self.status(run_id)
                    except BusUnavailable:
                        # The orchestrator is restarting: the run is durable, keep following.
                        status = None
                    if status is not None and status != last:
                        last = status
                        if on_update is not None:
                            result = on_update(status)
                            if asyncio.iscoroutine(result):
                                await result
                    if (
                        status is not None
                        and status["status"] in RUN_TERMINAL
                        and (newer_than is None or status["updated_at"] > newer_than)
                    ):
                        return status
                    await self._until_worth_asking(ended, changed, watched=on_update is not None)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    progress_s = 0.25
    backstop_s = 2.0

    async def _until_worth_asking(
        self, ended: asyncio.Event, changed: asyncio.Event, *, watched: bool
    ) -> None:
        waits = {asyncio.ensure_future(ended.wait())}
        if watched:
            waits.add(asyncio.ensure_future(changed.wait()))
        try:
            await asyncio.wait(waits, timeout=self.backstop_s, return_when="FIRST_COMPLETED")
        finally:
            for waiting in waits:
                waiting.cancel()
        if watched and not ended.is_set():
            # Coalesce a burst of events into one refresh; an outcome still ends it at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), self.progress_s)


def _ascii(text: str) -> str:
    """Header values travel as printable ASCII (see events.codec)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:200]


__all__ = ["Client", "Published"]

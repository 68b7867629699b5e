"""Outbound webhooks: POST a run's outcome to the URLs its workflow names in `notify`.

Reads the partition's run.succeeded / failed / cancelled events through its own durable
consumer, so a slow or dead endpoint delays nothing but its own deliveries (never the engine).
Each delivery is the outcome CloudEvent in structured mode, with Standard Webhooks headers
(`webhook-id` stable across retries so receivers can deduplicate, `webhook-timestamp`,
`webhook-signature` when the workflow gives a secret). A delivery that fails (an error, a
timeout, a status other than 2xx) is retried with exponential backoff up to `max_attempts`;
every attempt is recorded on the run as an `io.conveyor.webhook.attempted` event, which
`conveyor status` shows. The outcome event is acked once every delivery has ended.

Anyone can publish on the outcome subjects: a message that is no outcome (not a CloudEvent,
data that does not fit, a run id that is not one, a workflow that does not exist) is parked on
the dead-letter stream with the reason (`<ns>.dlq.notifier`), never retried in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from typing import Any

import httpx
import structlog

from events.acks import Outcome
from events.bus import Bus, Delivery, keep_alive, settle_quietly
from events.codec import decode
from events.consuming import Fetcher
from events.dlq import park
from events.envelope import CloudEvent
from events.errors import BusClosed, BusError, MalformedEvent
from events.models import (
    DATA_MODELS,
    WEBHOOK_ATTEMPTED,
    RunCancelled,
    RunFailed,
    RunSucceeded,
    WebhookAttempted,
)
from orchestrator.core.spec import Notify
from orchestrator.errors import ConfigError, UnknownWorkflow
from orchestrator.runtime.registry import Registry
from orchestrator.triggers.webhooks.secrets import resolve_secret
from orchestrator.triggers.webhooks.signatures import standard_signature

log = structlog.get_logger("conveyor.notifier")
SOURCE = "conveyor/notifier"
_OUTCOMES = {
    "io.conveyor.run.succeeded": "succeeded",
    "io.conveyor.run.failed": "failed",
    "io.conveyor.run.cancelled": "cancelled",
}


class Notifier:
    def __init__(
        self,
        bus: Bus,
        *,
        partition: int = 0,
        backoff_s: float = 1.0,
        backoff_max_s: float = 300.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.bus = bus
        self.topology = bus.topology
        self.partition = partition
        self.registry = Registry(bus)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._client = client or httpx.AsyncClient(follow_redirects=False)
        self.name = f"notifier-p{partition}"
        self._fetcher: Fetcher | None = None
        self._stopping = asyncio.Event()
        self._jobs: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    # ---- lifecycle (runtime.supervisor.Component) -----------------------------------------
    async def start(self) -> None:
        """Refuse to start while a registered workflow names a secret the environment does not
        hold: its webhooks would otherwise go out unsigned, or not at all, without a word."""
        problems = []
        for spec in await self.registry.specs():
            for target in spec.notify:
                if target.secret is not None:
                    try:
                        _secret(target, spec.name)
                    except ConfigError as exc:
                        problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))
        self._fetcher = Fetcher(await self.bus.notifier_puller(self.partition), self.name)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        if self._fetcher is None:
            await self.start()
        assert self._fetcher is not None
        while not self._stopping.is_set():
            if self._failure is not None:
                raise self._failure  # a job found the connection closed for good
            for delivery in await self._fetcher.fetch(32, timeout=1.0):
                job = asyncio.create_task(self.handle(delivery))
                self._jobs.add(job)
                job.add_done_callback(self._job_done)

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        if not job.cancelled() and job.exception() is not None:
            self._failure = job.exception()

    async def drain(self) -> None:
        for job in list(self._jobs):
            job.cancel()  # unacked: redelivered to the next notifier
        if self._fetcher is not None:
            await self._fetcher.close()
            self._fetcher = None
        await self._client.aclose()

    async def handle(self, delivery: Delivery) -> None:
        """Deliver one outcome to its workflow's `notify` URLs, then ack it. An outcome that is
        malformed, or names a workflow that does not exist, is parked with the reason; a broker
        that fails hands it back (nak with backoff). Never raises but BusClosed."""
        try:
            await self._handle(delivery)
        except BusClosed:
            raise  # the process ends (its connection watch sees the same)
        except BusError as exc:
            log.warning("outcome event handed back; will retry", error=str(exc))
            await settle_quietly(delivery, Outcome.TRANSIENT)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            event, outcome = _outcome_of(delivery)
            spec = (await self.registry.get(outcome.workflow, outcome.version)).spec
        except (MalformedEvent, UnknownWorkflow) as exc:
            reason = exc.reason if isinstance(exc, MalformedEvent) else str(exc)
            await park(self.bus, delivery, "notifier", reason)
            await delivery.settle(Outcome.PARKED)
            return
        verb = _OUTCOMES[event.type]
        targets = [n for n in spec.notify if verb in n.on]
        if targets:
            heartbeat = asyncio.create_task(keep_alive([delivery], 20.0))
            try:
                await asyncio.gather(*(self.deliver(event, outcome.run_id, n) for n in targets))
            finally:
                heartbeat.cancel()
        await delivery.settle(Outcome.DONE)

    async def deliver(self, event: CloudEvent, run_id: str, target: Notify) -> None:
        body = json.dumps(_structured(event), separators=(",", ":")).encode()
        webhook_id = f"{event.id}:{target.url}"
        try:
            secret = _secret(target, str(event.subject or "?"))
        except ConfigError as exc:
            # Never sent unsigned: the attempt is recorded as failed, with the reason.
            log.error("webhook not sent: its secret is missing", url=target.url, error=str(exc))
            await self._record(run_id, event, target, 1, False, True, None, str(exc))
            return
        for attempt in range(1, target.max_attempts + 1):
            timestamp = int(time.time())
            headers = {
                "content-type": "application/cloudevents+json",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(timestamp),
            }
            if secret:
                headers["webhook-signature"] = standard_signature(
                    secret, webhook_id, timestamp, body
                )
            status, error = None, None
            try:
                response = await self._client.post(
                    target.url, content=body, headers=headers, timeout=target.timeout_s
                )
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            delivered = error is None
            final = delivered or attempt == target.max_attempts
            await self._record(run_id, event, target, attempt, delivered, final, status, error)
            if delivered:
                return
            if not final:
                delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay)
        log.warning("webhook delivery gave up", url=target.url, run_id=run_id)

    async def _record(
        self,
        run_id: str,
        event: CloudEvent,
        target: Notify,
        attempt: int,
        delivered: bool,
        final: bool,
        status: int | None,
        error: str | None,
    ) -> None:
        record = WebhookAttempted(
            run_id=run_id,
            url=target.url,
            outcome_event=event.id,
            attempt=attempt,
            delivered=delivered,
            final=final,
            status_code=status,
            error=error,
            at=dt.datetime.now(dt.UTC).isoformat(),
        )
        out = CloudEvent.create(
            WEBHOOK_ATTEMPTED,
            SOURCE,
            record,
            id=f"{event.id}:{target.url}:{attempt}:webhook",
            extensions={"runid": run_id},
        )
        with contextlib.suppress(BusError):  # the record is for people; the delivery happened
            await self.bus.publish(self.topology.event_subject(WEBHOOK_ATTEMPTED, run_id), out)


def _outcome_of(delivery: Delivery) -> tuple[CloudEvent, RunSucceeded | RunFailed | RunCancelled]:
    """The outcome event a delivery holds, checked: MalformedEvent says what is wrong."""
    event = decode(delivery.headers, delivery.data)
    if event.type not in _OUTCOMES:
        raise MalformedEvent(f"event {event.id!r} of type {event.type!r} is not a run outcome")
    outcome = event.data_as(DATA_MODELS[event.type])  # a run id that is not one is refused here
    assert isinstance(outcome, RunSucceeded | RunFailed | RunCancelled)
    return event, outcome


def _secret(target: Notify, workflow: str) -> str | None:
    if target.secret is None:
        return None
    return resolve_secret(target.secret, f"the notify secret of workflow {workflow!r}")


def _structured(event: CloudEvent) -> dict[str, Any]:
    document: dict[str, Any] = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    for name in ("subject", "time", "datacontenttype"):
        if getattr(event, name) is not None:
            document[name] = getattr(event, name)
    document.update(event.extensions)
    document["data"] = event.json_data()
    return document

"""The connection itself: connect (a seed list, credentials, TLS), watch for a close that is for
good, publish (durable, pipelined, core), request/reply and plain subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from events.bus.confirming import AckCountdown, Then
from events.bus.readiness import ELECTION_WAIT_S, ask_until_ready, jetstream_not_ready
from events.codec import encode, header_block_size
from events.envelope import CloudEvent
from events.errors import (
    BadSubject,
    BusClosed,
    BusError,
    BusUnavailable,
    Deposed,
    MessageTooLarge,
    NoResponders,
)
from events.fencing import FENCE_CHECK_IN_FLIGHT, WRONG_LAST_SEQUENCE, Tenure
from events.settings import NatsSettings, SettingsError
from events.topology import Topology

PublishItem = tuple[str, Mapping[str, str], bytes]
T = TypeVar("T")
_FENCE_BUSY_RETRIES = 20
_RECONNECT_WAIT_S = 0.5  # between two tries of the same server, once connected
log = structlog.get_logger("conveyor.bus")
# The server reads `HPUB <subject> <reply> <sizes>` as one control line of at most 4 KiB by
# default, and closes the connection over a longer one: a subject keeps well under that.
MAX_SUBJECT_BYTES = 2048
# A subject one can publish to: tokens that are not empty, hold no whitespace or control
# character, and are not a lone `*` or `>` (wildcards are for subscriptions).
_NOT_IN_TOKEN = re.compile(r"[\x00-\x20\x7f]")


class _CloseWatch:
    """Set when the connection is closed; knows whether we closed it ourselves."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.closing = False
        self.nc: Client | None = None

    async def on_closed(self) -> None:  # nats-py's closed_cb
        if not self.closing:
            error = self.nc.last_error if self.nc is not None else None
            log.error("the NATS connection was closed for good", error=str(error))
        self.closed.set()


class _FenceBusy(BusUnavailable):
    """A fenced publish refused only because another check of the same fence was in flight."""


class Connection:
    """A connection to NATS bound to one `Topology`."""

    def __init__(self, nc: Client, topology: Topology, watch: _CloseWatch | None = None) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.topology = topology
        # Lease mode: the partition this connection writes and reads for, under which epoch.
        # Its publishes into the event stream carry the fence; its consumers are per epoch.
        self.tenure: Tenure | None = None
        self._fence_lock = asyncio.Lock()
        self._confirming: set[asyncio.Task[None]] = set()  # fenced batches' acks, awaited
        self._watch = watch or _CloseWatch()
        self._watch.nc = nc

    @staticmethod
    async def _connect(
        settings: NatsSettings | str, name: str, connect_timeout_s: float
    ) -> tuple[Client, _CloseWatch]:
        """Connect, retrying the seed list for `connect_timeout_s` (0: one pass over the seed
        list, so a refused connection is reported at once) and then failing with
        BusUnavailable; once connected, the client reconnects forever (a server restart is an
        outage, not an exit)."""
        if isinstance(settings, str):
            settings = NatsSettings.from_env(servers=settings)
        try:
            options = settings.connect_options()
        except SettingsError as exc:
            raise BusUnavailable(str(exc)) from exc
        watch = _CloseWatch()
        # nats-py tries each server of the seed list once more than `max_reconnect_attempts`
        # (at least once more: 0 would mean forever), waiting `reconnect_time_wait` before it
        # tries a server again. Short waits for a short window: connect_timeout_s=0 gives two
        # quick tries per server, ~10 ms in all when they refuse.
        retry_wait_s = min(_RECONNECT_WAIT_S, max(connect_timeout_s, 0.01))
        nc = Client()
        first_connection = True

        async def on_error(exc: Exception) -> None:
            # Credentials the server refuses will be refused again: the first connection
            # stops trying at once (nats-py reads `allow_reconnect` right after this call)
            # rather than spend the whole start-up deadline on them. Later, a refusal is an
            # outage like any other (credentials rotated while a server restarts).
            if first_connection and _credentials_refused(exc):
                nc.options["allow_reconnect"] = False

        arguments: dict[str, Any] = {
            **options,
            "name": name,
            "connect_timeout": 2,
            # Finite for the first connection, so a wrong URL fails fast...
            "max_reconnect_attempts": max(1, int(connect_timeout_s / retry_wait_s)),
            # (seconds as a float: nats-py's hint says int, its sleep takes either)
            "reconnect_time_wait": retry_wait_s,
            "allow_reconnect": True,
            "error_cb": on_error,
            "disconnected_cb": _noop,
            "closed_cb": watch.on_closed,
        }
        try:
            await nc.connect(**arguments)
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            # nats-py leaves the socket of an attempt it gave up on mid-handshake open (the
            # refused credentials above): closed here, as ours, not as a connection lost.
            watch.closing = True
            with contextlib.suppress(Exception):
                await nc.close()
            detail = str(exc) or type(exc).__name__
            raise BusUnavailable(f"cannot connect to NATS at {settings.url}: {detail}") from exc
        # ...and unlimited afterwards, at a steady pace. nats-py reads both at each reconnect.
        first_connection = False
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = _RECONNECT_WAIT_S
        return nc, watch

    @property
    def is_closed(self) -> bool:
        return self._watch.closed.is_set() or self.nc.is_closed

    async def wait_closed(self) -> None:
        """Until the connection is closed: by `close()` (returns), or for good by the server or
        the client (raises BusClosed) — a protocol error such as a message over the server's
        payload limit ends a nats-py connection without a reconnect."""
        await self._watch.closed.wait()
        if not self._watch.closing:
            raise BusClosed(
                f"the NATS connection closed: {self.nc.last_error or 'no reason given'}"
            )

    async def close(self) -> None:
        self._watch.closing = True
        with contextlib.suppress(Exception):
            await self.nc.drain()
        if not self.nc.is_closed:
            # nats-py refuses to drain a connection that is reconnecting (or gives up on a
            # drain): its socket is closed all the same, never left to the garbage collector.
            with contextlib.suppress(Exception):
                await self.nc.close()
        self._watch.closed.set()

    @property
    def max_payload(self) -> int:
        """The server's limit for one message (headers and body together)."""
        return int(self.nc.max_payload)

    def _check_size(self, subject: str, headers: Mapping[str, str], body: bytes) -> None:
        size = header_block_size(headers) + len(body)
        if size > self.max_payload:
            raise MessageTooLarge(
                f"message for {subject} is {size} bytes with its headers, over the server's "
                f"max payload of {self.max_payload}"
            )

    def _check(self, subject: str, headers: Mapping[str, str], body: bytes) -> None:
        """Refuse, before sending, what the server would close the connection over: no single
        message may end a connection that every other message shares."""
        _check_subject(subject)
        self._check_size(subject, headers, body)

    def _is_fenced(self, subject: str) -> bool:
        """A tenured owner's publishes into the event stream carry its fence (`events.fencing`),
        so that JetStream refuses them once it is deposed."""
        return self.tenure is not None and subject.startswith(f"{self.topology.namespace}.evt.")

    def _refused(self, what: str, exc: nats.js.errors.APIError) -> BusError:
        if self.tenure is not None and exc.err_code == WRONG_LAST_SEQUENCE:
            return Deposed(
                f"{what}: refused by the fence of partition {self.tenure.partition} (epoch "
                f"{self.tenure.epoch}): another replica owns it now"
            )
        if self.tenure is not None and exc.err_code == FENCE_CHECK_IN_FLIGHT:
            return _FenceBusy(f"{what}: another fenced message is in flight")
        return self._closed_error(what, exc)

    async def through_elections(
        self, what: str, ask: Callable[[], Awaitable[T]], timeout_s: float = ELECTION_WAIT_S
    ) -> T:
        """`ask()` asked again while it fails with BusUnavailable — JetStream's "not yet" (a
        stream or the meta group electing a leader, no answer in time, a reconnect; see
        `_closed_error`) — for up to `timeout_s`, unless the connection is closed for good."""

        def not_yet(exc: BaseException) -> bool:
            return isinstance(exc, BusUnavailable) and not self.is_closed

        return await ask_until_ready(what, ask, timeout_s, not_yet)

    def _closed_error(self, what: str, exc: BaseException) -> BusError:
        """nats-py's failure as ours: closed for good (the process ends), "not yet" (a leader
        being elected, no answer in time: BusUnavailable, which callers try again later — a
        task is never failed for it), or a refusal (BusError)."""
        if isinstance(exc, nats.errors.ConnectionClosedError) or self.nc.is_closed:
            return BusClosed(f"{what}: the NATS connection is closed")
        if jetstream_not_ready(exc):
            return BusUnavailable(f"{what}: {exc or type(exc).__name__}")
        return BusError(f"{what}: {exc}")

    # ---- publish -----------------------------------------------------------------------
    async def publish(self, subject: str, event: CloudEvent, timeout: float = 5.0) -> bool:
        """Publish durably; returns True when JetStream dropped it as a duplicate."""
        headers, body = encode(event)
        return await self.publish_raw(subject, headers, body, timeout)

    async def publish_raw(
        self, subject: str, headers: Mapping[str, str], body: bytes, timeout: float = 5.0
    ) -> bool:
        if self.nc.is_closed:
            raise BusClosed(f"the NATS connection is closed; {subject} not published")
        if not self.nc.is_connected:
            # Fail now rather than after the timeout: a caller such as the webhook gateway
            # answers 503 at once, and the sender retries.
            raise BusUnavailable(f"not connected to NATS (reconnecting); {subject} not published")
        if self._is_fenced(subject):
            return await self._publish_fenced(subject, headers, body, timeout)
        return await self._publish_once(subject, dict(headers), body, timeout)

    async def _publish_once(
        self, subject: str, headers: dict[str, str], body: bytes, timeout: float
    ) -> bool:
        self._check(subject, headers, body)
        try:
            ack = await self.js.publish(subject, body, timeout=timeout, headers=headers)
        except (
            nats.js.errors.NoStreamResponseError,
            nats.errors.TimeoutError,
            TimeoutError,
        ) as exc:
            raise BusUnavailable(f"no stream acknowledged {subject}: {exc!r}") from exc
        except nats.js.errors.APIError as exc:
            raise self._refused(f"publish to {subject} failed", exc) from exc
        except nats.errors.Error as exc:
            raise self._closed_error(f"publish to {subject} failed", exc) from exc
        return bool(ack.duplicate)

    async def _publish_fenced(
        self, subject: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> bool:
        """One fenced message at a time per connection: a clustered stream refuses a message
        whose fence it is asked to check while another check of the same fence is in flight
        (error 10164, measured: 299 of 300 pipelined messages refused), so fenced messages
        cannot be pipelined. That one may be another replica's (a deposed owner's last
        attempt): wait a moment and ask again."""
        assert self.tenure is not None
        async with self._fence_lock:
            for attempt in range(_FENCE_BUSY_RETRIES):
                fenced = {**headers, **self.tenure.fence_headers()}
                try:
                    return await self._publish_once(subject, fenced, body, timeout)
                except _FenceBusy:
                    await asyncio.sleep(0.01 * (attempt + 1))
        raise BusUnavailable(f"the fence of {subject} stayed busy; not published")

    async def publish_pipelined(
        self, subject: str, event: CloudEvent, timeout: float = 5.0
    ) -> Callable[[], Awaitable[bool]]:
        """Send now, wait for JetStream's ack later: returns the waiter (True = duplicate).

        For publishes nobody needs to wait for before doing the next thing (task.started)."""
        encoded, body = encode(event)
        if self._is_fenced(subject):
            duplicate = await self._publish_fenced(subject, encoded, body, timeout)

            async def done() -> bool:
                return duplicate

            return done
        headers = dict(encoded)
        self._check(subject, headers, body)
        try:
            future = await self.js.publish_async(
                subject, body, headers=headers, wait_stall=self._stall(timeout)
            )
        except nats.errors.Error as exc:
            raise self._closed_error(f"publish to {subject} failed", exc) from exc

        async def acked() -> bool:
            try:
                ack = await asyncio.wait_for(future, timeout)
            except (nats.js.errors.NoStreamResponseError, TimeoutError) as exc:
                raise BusUnavailable(f"no stream acknowledged {subject}: {exc!r}") from exc
            except nats.errors.Error as exc:
                raise self._closed_error(f"publish to {subject} failed", exc) from exc
            return bool(ack.duplicate)

        return acked

    def _stall(self, timeout: float) -> float | None:
        """How long `publish_async` may wait for room among its pending acks: `timeout` when
        there is none (it then raises TooManyStalledMsgsError after it), None when there is —
        nats-py then takes its slot at once, where with a timeout it wraps the take in
        `asyncio.wait_for` (a task and a timer per message: 2.5% of the orchestrator's time
        under load). Nothing else runs between this check and that take (but for a
        connection's very first publish, which sets up the reply subscription first: then
        thousands of publishes would have to fill the window meanwhile)."""
        pending = getattr(self.js, "_publish_async_pending_semaphore", None)
        return None if isinstance(pending, asyncio.Semaphore) and not pending.locked() else timeout

    async def send_many(
        self, items: Sequence[PublishItem], timeout: float = 10.0
    ) -> Callable[[], Awaitable[None]]:
        """Send every message now (pipelined) and return a waiter for all their acks, so the
        caller can get on with its next step while JetStream acknowledges. Fenced messages
        (a tenured owner's events) go out one at a time, by the waiter."""
        fenced = [item for item in items if self._is_fenced(item[0])]
        plain = [item for item in items if not self._is_fenced(item[0])]
        fence = self.tenure.fence_headers() if self.tenure is not None else {}
        for subject, headers, body in fenced:
            self._check(subject, {**headers, **fence}, body)
        futures = await self._send_plain(plain, timeout)

        async def acked() -> None:
            try:
                for subject, headers, body in fenced:
                    await self._publish_fenced(subject, headers, body, timeout)
                await self._acks(futures, timeout)
            finally:
                for fut in futures:
                    if not fut.done():
                        fut.cancel()

        return acked

    async def send_many_then(
        self, items: Sequence[PublishItem], then: Then, timeout: float = 10.0
    ) -> None:
        """`send_many` for a caller that will not wait: `then(None)` once JetStream acked every
        message, `then(error)` if one failed or `timeout` passed — counted down by callbacks,
        without a task per call (`events.bus.confirming`). Fenced messages go by `send_many`."""
        if any(self._is_fenced(item[0]) for item in items):
            acked = await self.send_many(items, timeout)
            confirming = asyncio.create_task(_confirm(acked, then))
            self._confirming.add(confirming)
            confirming.add_done_callback(self._confirming.discard)
            return
        futures = await self._send_plain(items, timeout)
        what = "pipelined publish failed"
        AckCountdown(
            futures,
            then,
            timeout,
            refused=lambda exc: self._refused(what, exc),
            closed=lambda exc: self._closed_error(what, exc),
        )

    async def _send_plain(
        self, items: Sequence[PublishItem], timeout: float
    ) -> list[asyncio.Future[api.PubAck]]:
        for subject, headers, body in items:
            self._check(subject, headers, body)
        futures: list[asyncio.Future[api.PubAck]] = []
        try:
            for subject, headers, body in items:
                futures.append(
                    await self.js.publish_async(
                        subject, body, headers=dict(headers), wait_stall=self._stall(timeout)
                    )
                )
        except nats.errors.Error as exc:
            for fut in futures:
                fut.cancel()
            raise self._closed_error("pipelined publish failed", exc) from exc
        return futures

    async def _acks(self, futures: list[asyncio.Future[api.PubAck]], timeout: float) -> None:
        what = f"JetStream did not ack {len(futures)} messages"
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout)
        except (nats.js.errors.NoStreamResponseError, TimeoutError) as exc:
            # (nats-py 2.16 never completes the future of a pipelined publish JetStream
            # refused: its reply handler raises instead. A refusal shows as a timeout.)
            raise BusUnavailable(f"{what}: {exc!r}") from exc
        except nats.js.errors.APIError as exc:
            raise self._refused("pipelined publish failed", exc) from exc
        except nats.errors.Error as exc:
            raise self._closed_error("pipelined publish failed", exc) from exc

    async def publish_many(self, items: Sequence[PublishItem], timeout: float = 10.0) -> None:
        """Publish pipelined and wait until JetStream acked every message (or raise)."""
        if not items:
            return
        if len(items) == 1:
            subject, headers, body = items[0]
            await self.publish_raw(subject, headers, body, timeout)
            return
        acked = await self.send_many(items, timeout)
        await acked()

    async def publish_core(
        self, subject: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Fire-and-forget core NATS publish (notifications nobody must rely on): what cannot be
        sent (a bad subject, too large, no connection) is dropped."""
        try:
            self._check(subject, headers or {}, body)
        except BusError as exc:
            log.warning("core message dropped", subject=subject[:200], error=str(exc))
            return
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(subject, body, headers=dict(headers) if headers else None)

    # ---- request / reply and plain subscriptions ---------------------------------------
    async def request(self, subject: str, payload: bytes, timeout: float = 5.0) -> bytes:
        self._check(subject, {}, payload)
        try:
            msg = await self.nc.request(subject, payload, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise NoResponders(
                f"nothing is serving {subject} (is the orchestrator running?)"
            ) from exc
        except (nats.errors.TimeoutError, TimeoutError) as exc:
            raise BusUnavailable(f"no answer on {subject} within {timeout}s") from exc
        except nats.errors.Error as exc:
            raise self._closed_error(f"request on {subject} failed", exc) from exc
        return msg.data

    async def serve(
        self,
        subject: str,
        handler: Callable[[bytes], Awaitable[bytes]],
        queue: str = "",
    ) -> Subscription:
        async def on_request(msg: Msg) -> None:
            reply = await handler(msg.data)
            if msg.reply:
                with contextlib.suppress(nats.errors.Error):
                    await msg.respond(reply)

        return await self.nc.subscribe(subject, queue=queue, cb=on_request)

    async def subscribe(
        self, subject: str, handler: Callable[[str, Mapping[str, str], bytes], Awaitable[None]]
    ) -> Subscription:
        async def on_message(msg: Msg) -> None:
            await handler(
                msg.subject, {k: str(v) for k, v in (msg.headers or {}).items()}, msg.data
            )

        return await self.nc.subscribe(subject, cb=on_message)

    async def flush(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.nc.flush(timeout=5)


def _check_subject(subject: str) -> None:
    try:
        size = len(subject.encode())
    except UnicodeEncodeError:
        raise BadSubject(f"subject {subject[:80]!r} is not UTF-8 (a lone surrogate)") from None
    if size > MAX_SUBJECT_BYTES:
        raise BadSubject(
            f"subject {subject[:80]!r}... is {size} bytes long, over the {MAX_SUBJECT_BYTES} "
            "a NATS protocol line can carry"
        )
    # Whole-subject string tests rather than a match per token: every publish asks this.
    dotted = f".{subject}."
    if (
        _NOT_IN_TOKEN.search(subject) is not None
        or ".." in dotted
        or ".*." in dotted
        or ".>." in dotted
    ):
        raise BadSubject(
            f"subject {subject[:200]!r} cannot be published to: it has an empty token, "
            "whitespace, a control character or a wildcard"
        )


async def _confirm(acked: Callable[[], Awaitable[None]], then: Then) -> None:
    try:
        await acked()
    except BusError as exc:
        then(exc)
        return
    then(None)


def _credentials_refused(exc: BaseException) -> bool:
    """The server's answer to credentials it does not accept (nats-py raises it as a bare
    error carrying the server's words)."""
    text = str(exc).lower()
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in text


async def _noop() -> None:
    pass

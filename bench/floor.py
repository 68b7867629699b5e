"""The raw JetStream floor: what one Conveyor hop would cost with nothing but nats-py.

Two OS processes on the same server, the same layout as orchestrator + worker:

    A (the benchmark process)                   B (`python -m bench.floor`, a child process)
    publish floor.req (await PubAck) ───────▶   fetch(1) from a pull consumer
                                                publish floor.rep (await PubAck), ack the request
    fetch(1) from a pull consumer, ack  ◀─────

One round trip A -> stream -> B -> stream -> A is one "hop" (DESIGN §11). Like Conveyor, the
request goes through a work-queue stream (its task queue) and the reply through a limits stream
(its event log), both on file storage, with durable pull consumers and explicit acks.

Then a pipelined throughput floor: A `publish_async`es M messages to a third stream (timed until
the last PubAck), and B drains them with `fetch(100)` + `ack()` (timed from its first fetch to
its last ack) and reports its rate on stdout.

B's stdout protocol: one line `ready` once its consumer exists, then (after A's control message
`tput` on floor.req) one JSON line with its throughput result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

REQ_STREAM, REQ_SUBJECT = "FLOOR_REQ", "floor.req"
REP_STREAM, REP_SUBJECT = "FLOOR_REP", "floor.rep"
TPUT_STREAM, TPUT_SUBJECT = "FLOOR_TPUT", "floor.tput"
CONTROL_TPUT = b"tput"
# About the size of a Conveyor event body (its CloudEvents attributes travel as headers).
PAYLOAD = b"x" * 256
WARMUP_ROUND_TRIPS = 50
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class FloorResult:
    round_trips_s: list[float]
    publish_async_msgs_per_s: float
    fetch_ack_msgs_per_s: float


async def _connect(url: str, name: str) -> tuple[NatsClient, JetStreamContext]:
    nc = await nats.connect(url, name=name, connect_timeout=5)
    return nc, nc.jetstream(timeout=10.0)


async def _ensure_streams(js: JetStreamContext) -> None:
    plans = (
        (REQ_STREAM, REQ_SUBJECT, api.RetentionPolicy.WORK_QUEUE),
        (REP_STREAM, REP_SUBJECT, api.RetentionPolicy.LIMITS),
        (TPUT_STREAM, TPUT_SUBJECT, api.RetentionPolicy.LIMITS),
    )
    for name, subject, retention in plans:
        config = api.StreamConfig(
            name=name, subjects=[subject], retention=retention, storage=api.StorageType.FILE
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.update_stream(config)


async def _pull(
    js: JetStreamContext, stream: str, subject: str, durable: str
) -> JetStreamContext.PullSubscription:
    config = api.ConsumerConfig(
        durable_name=durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        filter_subject=subject,
        ack_wait=30.0,
        max_ack_pending=20_000,
    )
    await js.add_consumer(stream, config)
    return await js.pull_subscribe_bind(durable, stream=stream)


async def _fetch(sub: JetStreamContext.PullSubscription, batch: int) -> list[Msg]:
    """Wait as long as it takes for at least one message (each long poll lasts 5 s)."""
    while True:
        try:
            return await sub.fetch(batch, timeout=5.0)
        except TimeoutError:  # nats.errors.TimeoutError derives from it too
            continue


# ---- A: the benchmark side -------------------------------------------------------------------


async def measure(url: str, round_trips: int, tput_messages: int) -> FloorResult:
    """Start B, time `round_trips` hops and the pipelined throughput, stop B."""
    nc, js = await _connect(url, "bench-floor-a")
    peer: asyncio.subprocess.Process | None = None
    try:
        await _ensure_streams(js)
        replies = await _pull(js, REP_STREAM, REP_SUBJECT, "floor-a")
        peer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.floor",
            "--url",
            url,
            "--tput-n",
            str(tput_messages),
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        assert peer.stdout is not None
        line = await asyncio.wait_for(peer.stdout.readline(), timeout=60)
        if line.strip() != b"ready":
            raise RuntimeError(f"floor peer did not start: {line!r} (exit {peer.returncode})")

        async def round_trip() -> float:
            started = time.perf_counter()
            await js.publish(REQ_SUBJECT, PAYLOAD)
            (msg,) = await _fetch(replies, 1)
            await msg.ack()
            return time.perf_counter() - started

        for _ in range(WARMUP_ROUND_TRIPS):
            await round_trip()
        samples = [await round_trip() for _ in range(round_trips)]

        started = time.perf_counter()
        futures = [await js.publish_async(TPUT_SUBJECT, PAYLOAD) for _ in range(tput_messages)]
        await asyncio.gather(*futures)
        publish_rate = tput_messages / (time.perf_counter() - started)

        await js.publish(REQ_SUBJECT, CONTROL_TPUT)
        line = await asyncio.wait_for(peer.stdout.readline(), timeout=300)
        consumed = json.loads(line)
        await asyncio.wait_for(peer.wait(), timeout=30)
        return FloorResult(samples, publish_rate, float(consumed["fetch_ack_msgs_per_s"]))
    finally:
        if peer is not None and peer.returncode is None:
            peer.terminate()
            try:
                await asyncio.wait_for(peer.wait(), timeout=10)
            except TimeoutError:
                peer.kill()
                await peer.wait()
        with contextlib.suppress(Exception):
            for name in (REQ_STREAM, REP_STREAM, TPUT_STREAM):
                await js.delete_stream(name)
        await nc.close()


# ---- B: the peer process ---------------------------------------------------------------------


async def serve(url: str, tput_messages: int) -> None:
    nc, js = await _connect(url, "bench-floor-b")
    try:
        await _ensure_streams(js)
        requests = await _pull(js, REQ_STREAM, REQ_SUBJECT, "floor-b")
        print("ready", flush=True)
        while True:
            (msg,) = await _fetch(requests, 1)
            if msg.data == CONTROL_TPUT:
                await msg.ack()
                break
            await js.publish(REP_SUBJECT, msg.data)
            await msg.ack()

        drain = await _pull(js, TPUT_STREAM, TPUT_SUBJECT, "floor-tput")
        received = 0
        started = time.perf_counter()  # every message is already stored: A awaited its PubAcks
        while received < tput_messages:
            msgs = await _fetch(drain, 100)
            for msg in msgs:
                await msg.ack()
            received += len(msgs)
        await nc.flush()  # the acks are on the wire
        elapsed = time.perf_counter() - started
        print(json.dumps({"fetch_ack_msgs_per_s": received / elapsed}), flush=True)
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the floor's peer process (B); see bench.floor")
    parser.add_argument("--url", required=True)
    parser.add_argument("--tput-n", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.url, args.tput_n))


if __name__ == "__main__":
    main()

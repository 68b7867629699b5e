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

The pipeline floor (`measure_pipeline`, the throughput workload's) has the layout of one
orchestrator and N workers: A keeps a window of tasks in flight on a work-queue stream, N
worker processes (`python -m bench.floor --role pipeline`) share one durable pull consumer,
`fetch` up to 64, publish one result each to a limits stream (pipelined: `publish_async`, then
their PubAcks awaited together) and ack; A `fetch(256)`es the results, acks them and publishes
as many new tasks (pipelined). Its rate is results per second over a fixed window after a
warm-up: the most round trips A -> stream -> B -> stream -> A nats-py moves with these processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
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
PTASK_STREAM, PTASK_SUBJECT = "FLOOR_PTASK", "floor.ptask"
PRES_STREAM, PRES_SUBJECT = "FLOOR_PRES", "floor.pres"
PIPELINE_DURABLE = "floor-pworkers"
PIPELINE_WORKER_BATCH = 64
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


# ---- the pipeline floor (the throughput workload's) ----------------------------------------


@dataclass(frozen=True, slots=True)
class PipelineResult:
    workers: int
    window: int
    seconds: float
    results: int
    results_per_s: float


async def _ensure_pipeline_streams(js: JetStreamContext) -> None:
    for name, subject, retention in (
        (PTASK_STREAM, PTASK_SUBJECT, api.RetentionPolicy.WORK_QUEUE),
        (PRES_STREAM, PRES_SUBJECT, api.RetentionPolicy.LIMITS),
    ):
        config = api.StreamConfig(
            name=name, subjects=[subject], retention=retention, storage=api.StorageType.FILE
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.update_stream(config)


async def measure_pipeline(
    url: str, workers: int, seconds: float, *, window: int = 2000, warmup_s: float = 2.0
) -> PipelineResult:
    """Start `workers` B processes, keep `window` tasks in flight for warm-up + `seconds`,
    count the results that arrive in the last `seconds`."""
    nc, js = await _connect(url, "bench-floor-pipeline-a")
    peers: list[asyncio.subprocess.Process] = []
    try:
        await _ensure_pipeline_streams(js)
        results = await _pull(js, PRES_STREAM, PRES_SUBJECT, "floor-presults")
        await js.add_consumer(
            PTASK_STREAM,
            api.ConsumerConfig(
                durable_name=PIPELINE_DURABLE,
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                filter_subject=PTASK_SUBJECT,
                ack_wait=30.0,
                max_ack_pending=20_000,
                max_waiting=512,
            ),
        )
        for _ in range(workers):
            peer = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.floor",
                "--role",
                "pipeline",
                "--url",
                url,
                cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
            )
            peers.append(peer)
        for peer in peers:
            assert peer.stdout is not None
            line = await asyncio.wait_for(peer.stdout.readline(), timeout=60)
            if line.strip() != b"ready":
                raise RuntimeError(f"pipeline floor worker did not start: {line!r}")

        pending: list[asyncio.Future[api.PubAck]] = []

        async def send(count: int) -> None:
            for _ in range(count):
                pending.append(await js.publish_async(PTASK_SUBJECT, PAYLOAD, wait_stall=10.0))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()

        await send(window)
        started = time.perf_counter()
        window_start = started + warmup_s
        window_end = window_start + seconds
        counted = 0
        while True:
            now = time.perf_counter()
            if now >= window_end:
                break
            try:
                msgs = await results.fetch(256, timeout=1.0)
            except TimeoutError:
                continue
            arrived = time.perf_counter()
            for msg in msgs:
                await msg.ack()
            if window_start <= arrived < window_end:
                counted += len(msgs)
            await send(len(msgs))
        return PipelineResult(workers, window, seconds, counted, counted / seconds)
    finally:
        for peer in peers:
            if peer.returncode is None:
                peer.terminate()
        for peer in peers:
            try:
                await asyncio.wait_for(peer.wait(), timeout=10)
            except TimeoutError:
                peer.kill()
                await peer.wait()
        with contextlib.suppress(Exception):
            for name in (PTASK_STREAM, PRES_STREAM):
                await js.delete_stream(name)
        await nc.close()


async def serve_pipeline(url: str) -> None:
    """One pipeline worker (B): fetch tasks, publish a result each (pipelined), ack; until
    SIGTERM."""
    nc, js = await _connect(url, "bench-floor-pipeline-b")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        tasks = await js.pull_subscribe_bind(PIPELINE_DURABLE, stream=PTASK_STREAM)
        print("ready", flush=True)
        while not stop.is_set():
            try:
                msgs = await tasks.fetch(PIPELINE_WORKER_BATCH, timeout=0.5)
            except TimeoutError:
                continue
            acks = [await js.publish_async(PRES_SUBJECT, msg.data, wait_stall=10.0) for msg in msgs]
            await asyncio.gather(*acks)
            for msg in msgs:
                await msg.ack()
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the floor's peer process (B); see bench.floor")
    parser.add_argument("--url", required=True)
    parser.add_argument("--role", choices=["hop", "pipeline"], default="hop")
    parser.add_argument("--tput-n", type=int, default=0)
    args = parser.parse_args(argv)
    if args.role == "pipeline":
        asyncio.run(serve_pipeline(args.url))
    else:
        asyncio.run(serve(args.url, args.tput_n))


if __name__ == "__main__":
    main()

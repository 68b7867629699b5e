"""Reproduce the ~1 s stall of a batched pull `fetch` shared by two subscribers (plain nats-py).

    .venv/bin/python -m bench.repro_fetch_stall

What Conveyor's workers do (workers/runtime.py `_fetch_loop` -> events/bus.py `Puller.fetch`):
each worker process loops `fetch(batch=<free slots>, timeout=1.0)` on the queue's one durable
pull consumer. With two or more subscribers on that consumer and messages arriving a few at a
time, some messages are held inside a `fetch` call until its timeout — the task waits ~1 s
between dispatch and start (seen in the throughput workload with 2 and 4 worker processes). One
subscriber, or `batch=1`, does not show it; nor does the variant below (long-poll for one
message, then drain the rest with a second, short fetch).

Prints, for each case, the publish -> received latency p50 and max and how many of the
messages waited more than 500 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time

import nats
from nats.js import api

from events import EmbeddedServer

BURSTS, GAP_S = 60, 0.05


async def _case(url: str, subscribers: int, batch: int, burst: int, split: bool) -> str:
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = f"STALL{subscribers}{batch}{burst}{int(split)}"
    await js.add_stream(
        api.StreamConfig(
            name=stream, subjects=[f"{stream}.x"], retention=api.RetentionPolicy.WORK_QUEUE
        )
    )
    await js.add_consumer(
        stream,
        api.ConsumerConfig(durable_name="c", ack_policy=api.AckPolicy.EXPLICIT, max_waiting=512),
    )
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    stop = asyncio.Event()

    async def subscriber() -> None:
        own = await nats.connect(url)
        sub = await own.jetstream().pull_subscribe_bind("c", stream=stream)
        while not stop.is_set():
            try:
                if split:
                    msgs = await sub.fetch(1, timeout=1.0)
                    with contextlib.suppress(TimeoutError):
                        msgs += await sub.fetch(batch - 1, timeout=0.002)
                else:
                    msgs = await sub.fetch(batch, timeout=1.0)
            except TimeoutError:
                continue
            now = time.perf_counter()
            for msg in msgs:
                latencies.append(now - sent[msg.data])
                await msg.ack()
        await own.close()

    tasks = [asyncio.create_task(subscriber()) for _ in range(subscribers)]
    await asyncio.sleep(0.5)
    for i in range(BURSTS):
        for j in range(burst):
            key = f"{i}.{j}".encode()
            sent[key] = time.perf_counter()
            await js.publish(f"{stream}.x", key)
        await asyncio.sleep(GAP_S)
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.gather(*tasks)
    await js.delete_stream(stream)
    await nc.close()
    latencies.sort()
    how = "fetch(1) then fetch(n-1, 2 ms)" if split else f"fetch({batch}, timeout=1.0)"
    return (
        f"{subscribers} subscriber(s), {how}, bursts of {burst}: "
        f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.0f} ms, "
        f"{sum(1 for v in latencies if v > 0.5)} of {len(latencies)} waited > 500 ms"
    )


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fetch-stall-") as tmp:
        server = EmbeddedServer(store_dir=tmp)
        await asyncio.to_thread(server.start)
        try:
            for case in ((1, 64, 5, False), (2, 1, 5, False), (2, 64, 5, False),
                         (2, 64, 20, False), (2, 64, 5, True), (2, 64, 20, True)):  # fmt: skip
                print(await _case(server.url, *case), flush=True)
        finally:
            await asyncio.to_thread(server.stop)


if __name__ == "__main__":
    asyncio.run(main())

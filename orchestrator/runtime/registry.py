"""Registered workflow specs in the NATS KV bucket, versioned.

    wf.<name>.v<N>    the spec of version N (immutable once written)
    wf.<name>.latest  {"version": N, "digest": sha256 of the spec without its version}

Registering the same spec again is a no-op that returns its version; a changed spec becomes
version N+1 (compare-and-set, so two processes registering at once cannot both take N+1). A
run pins the version it started with; a new version affects new runs only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from events.bus import Bus
from orchestrator.core.admission import admit_version
from orchestrator.core.compiler import CompiledSpec, compile_spec
from orchestrator.core.spec import WorkflowSpec
from orchestrator.errors import SpecError, UnknownWorkflow


def spec_digest(spec: WorkflowSpec) -> str:
    body = spec.model_dump(mode="json", exclude={"version"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Registry:
    def __init__(self, bus: Bus, *, latest_ttl_s: float = 0.5) -> None:
        self.bus = bus
        self.bucket = bus.topology.workflows_bucket
        self._compiled: dict[tuple[str, int], CompiledSpec] = {}
        self.latest_ttl_s = latest_ttl_s
        self._latest: dict[str, tuple[float, int]] = {}  # name -> (read at, version)
        self._reading: dict[str, asyncio.Future[int | None]] = {}

    async def register(self, spec: WorkflowSpec | Mapping[str, Any]) -> WorkflowSpec:
        """Validate and store; returns the spec with its (new or existing) version.

        Asked again while JetStream cannot answer yet (a worker starting as a node is lost):
        storing the same spec twice gives the same version, so a write that landed after all
        is found, not repeated."""
        compiled = admit_version(spec)  # raises SpecError: nothing is stored on error

        return await self.bus.through_elections(
            f"workflow {compiled.spec.name}", lambda: self._register(compiled)
        )

    async def _register(self, compiled: CompiledSpec) -> WorkflowSpec:
        digest = spec_digest(compiled.spec)
        name = compiled.spec.name
        missing = [
            f"node {n.id!r}: sub-workflow {n.workflow.name!r} is not registered"
            for n in compiled.spec.nodes
            if n.workflow is not None
            and n.workflow.name != name
            and await self.latest_version(n.workflow.name) is None
        ]
        if missing:
            raise SpecError(name, missing)
        # Its tasks' consumers first: a task's backlog can then be measured (and a pool
        # scaled from zero on it) before any worker that serves it has ever run.
        for queue, task in sorted({(n.queue, n.task) for n in compiled.spec.nodes if n.task}):
            await self.bus.ensure_task_consumer(queue, task)
        for _ in range(20):
            latest = await self.bus.kv_get(self.bucket, f"wf.{name}.latest")
            pointer: dict[str, Any] = (
                json.loads(latest.value) if latest else {"version": 0, "digest": None}
            )
            if pointer["digest"] == digest:
                self._latest[name] = (time.monotonic(), int(pointer["version"]))
                return compiled.spec.model_copy(update={"version": pointer["version"]})
            version = int(pointer["version"]) + 1
            versioned = compiled.spec.model_copy(update={"version": version})
            await self.bus.kv_create(
                self.bucket, f"wf.{name}.v{version}", versioned.model_dump_json().encode()
            )
            stored = await self.bus.kv_get(self.bucket, f"wf.{name}.v{version}")
            if stored is None or json.loads(stored.value) != json.loads(
                versioned.model_dump_json()
            ):
                continue  # another process wrote a different v{version}: go round again
            new_pointer = json.dumps({"version": version, "digest": digest}).encode()
            if latest is None:
                ok = await self.bus.kv_create(self.bucket, f"wf.{name}.latest", new_pointer)
            else:
                ok = await self.bus.kv_update(
                    self.bucket, f"wf.{name}.latest", new_pointer, latest.revision
                )
            if ok is not None:
                self._latest[name] = (time.monotonic(), version)
                return versioned
        raise RuntimeError(f"could not register {name!r}: too much contention")

    async def register_all(self, specs: list[WorkflowSpec]) -> list[WorkflowSpec]:
        """Register several, children before the parents that run them as sub-workflows."""
        by_name = {s.name: s for s in specs}
        done: dict[str, WorkflowSpec] = {}

        async def visit(name: str, path: tuple[str, ...]) -> None:
            if name in done or name not in by_name:
                return
            if name in path:
                raise SpecError(name, [f"sub-workflow cycle: {' -> '.join((*path, name))}"])
            for child in sorted(by_name[name].child_workflows):
                await visit(child, (*path, name))
            done[name] = await self.register(by_name[name])

        for name in by_name:
            await visit(name, ())
        return list(done.values())

    async def is_paused(self, name: str) -> bool:
        entry = await self.bus.kv_get(self.bucket, f"paused.{name}")
        return entry is not None and entry.value == b"1"

    async def set_paused(self, name: str, paused: bool) -> None:
        if await self.latest_version(name) is None:
            raise UnknownWorkflow(name, known=await self.names())
        await self.bus.kv_put(self.bucket, f"paused.{name}", b"1" if paused else b"0")

    async def revision(self) -> int:
        """The registry bucket's last sequence: it moves with every registration (and pause),
        so an unchanged revision means nothing registered since it was read."""
        return await self.bus.last_sequence(f"KV_{self.bucket}")

    def forget_latest(self) -> None:
        """Drop the cached latest versions: the next reads go to the bucket."""
        self._latest.clear()

    async def latest_version(self, name: str) -> int | None:
        """The latest version of `name` (None: not registered). Read at most every
        `latest_ttl_s` per name, and once for any number of concurrent callers: a burst of
        1,000 triggers is one KV read, not 1,000 (which timed out on a loaded server). A run
        pins the version it resolved, so a cached answer only delays when a new version starts
        being used, by at most the TTL; `register` updates the cache at once."""
        now = time.monotonic()
        cached = self._latest.get(name)
        if cached is not None and now - cached[0] < self.latest_ttl_s:
            return cached[1]
        pending = self._reading.get(name)
        if pending is None:
            pending = asyncio.ensure_future(self._read_latest(name))
            self._reading[name] = pending
            pending.add_done_callback(lambda _: self._reading.pop(name, None))
        return await asyncio.shield(pending)

    async def _read_latest(self, name: str) -> int | None:
        key = f"wf.{name}.latest"
        # A miss is asked again of the leader: a lagging replica must not make a workflow
        # registered a moment ago (through another node) "unknown".
        latest = await self.bus.kv_get(self.bucket, key) or await self.bus.kv_get_from_leader(
            self.bucket, key
        )
        version = int(json.loads(latest.value)["version"]) if latest else None
        if version is not None:  # an unknown name is asked again next time: it may appear
            self._latest[name] = (time.monotonic(), version)
        return version

    async def get(self, name: str, version: int | None = None) -> CompiledSpec:
        """The compiled spec of `name` at `version` (latest when None); UnknownWorkflow if none."""
        if version is None:
            version = await self.latest_version(name)
            if version is None:
                raise UnknownWorkflow(name, known=await self.names())
        cached = self._compiled.get((name, version))
        if cached is not None:
            return cached
        key = f"wf.{name}.v{version}"
        entry = await self.bus.kv_get(self.bucket, key) or await self.bus.kv_get_from_leader(
            self.bucket, key
        )
        if entry is None:
            raise UnknownWorkflow(name, version)
        compiled = compile_spec(json.loads(entry.value))
        self._compiled[(name, version)] = compiled
        return compiled

    async def versions(self, name: str) -> list[int]:
        """Every stored version of `name`, ascending."""
        prefix = f"wf.{name}.v"
        return sorted(
            int(key[len(prefix) :])
            for key in await self.bus.kv_keys(self.bucket)
            if key.startswith(prefix) and key[len(prefix) :].isdigit()
        )

    async def specs(self) -> list[WorkflowSpec]:
        """The latest spec of every registered workflow."""
        found = []
        for name in await self.names():
            try:
                found.append((await self.get(name)).spec)
            except UnknownWorkflow:  # removed between the listing and the read
                continue
        return found

    async def names(self) -> list[str]:
        keys = await self.bus.kv_keys(self.bucket)
        return sorted({k.split(".")[1] for k in keys if k.endswith(".latest")})

"""The run's side of flow control, as rules of `Step` (a mixin; docs/flow-control.md).

A run asks limiters for slots with `limit.requested` events and waits, durably, for
`limit.granted`:
- a run of a workflow with a concurrency limit starts `queued` and asks for a run slot; the
  grant moves it to `running` (`admitted`); a refusal (`on_limit: cancel_newest`) cancels it;
- a node whose task has limits opens its attempt `queued` and asks its gates one after the other
  (concurrency, then rate); after the last grant it is dispatched (`node_granted`).

Every slot a run holds is released when what held it ends: a node's attempt (completed, failed,
timed out, cancelled), the run itself. A slot asked for and no longer wanted is *abandoned*:
kept on the run and released the moment its grant arrives, so that a release always follows its
grant (a limiter never sees them the other way round). A request emitted in the same transition
that abandons it is simply withdrawn.

A mapped node's `max_parallel` lives here too (`fill_map`): it needs no limiter, only the run.
"""

from __future__ import annotations

import abc
from typing import Any

from events.models import (
    LIMIT_RELEASED,
    LIMIT_REQUESTED,
    ErrorInfo,
    LimitGranted,
    LimitRefused,
    LimitReleased,
    LimitRequested,
)
from orchestrator.core.commands import Emit
from orchestrator.core.compiler import CompiledNode, CompiledSpec
from orchestrator.core.expressions import ExpressionError
from orchestrator.core.flowcheck import key_value
from orchestrator.core.limits import limiter_id
from orchestrator.core.rules import expression_error
from orchestrator.core.state import Attempt, Gate, NodeState, RunState, Transition, child_key
from orchestrator.core.statuses import NodeStatus, RunStatus

REQUESTED, HELD, USED, RELEASED = "requested", "held", "used", "released"


class FlowGates(abc.ABC):
    """Flow-control rules. `Step` and `RunOutcomes` provide the state and the other rules."""

    __slots__ = ()
    spec: CompiledSpec
    run: RunState
    now: float
    out: Transition
    withdrawn: set[str]  # requests of this transition taken back (see `drop_withdrawn`)

    @abc.abstractmethod
    def compiled(self, node: NodeState) -> CompiledNode: ...

    @abc.abstractmethod
    def touch(self, node: NodeState) -> None: ...

    @abc.abstractmethod
    def move_node(self, node: NodeState, status: NodeStatus, *, retry: bool = False) -> None: ...

    @abc.abstractmethod
    def move_run(self, status: RunStatus, *, retry: bool = False) -> None: ...

    @abc.abstractmethod
    def schedule_ready(self) -> None: ...

    @abc.abstractmethod
    def send(self, node: NodeState) -> None: ...

    @abc.abstractmethod
    def dispatch(
        self, node: NodeState, attempt: int, node_input: Any, *, retry: bool = False
    ) -> None: ...

    @abc.abstractmethod
    def fail_for_good(self, node: NodeState, error: ErrorInfo) -> None: ...

    @abc.abstractmethod
    def fail_run(self, error: ErrorInfo, node: str | None) -> None: ...

    @abc.abstractmethod
    def cancel_run(self, reason: str) -> None: ...

    # ---- the run's own slot ----------------------------------------------------------------
    def ask_run_slot(self) -> None:
        """A run of a limited workflow (queued) asks for its slot; a key that cannot be
        evaluated fails the run."""
        flow = self.spec.flow
        assert flow.limit is not None
        try:
            key = key_value(flow.key, self.run.input)
        except ExpressionError as exc:
            self.fail_run(expression_error(exc, None), None)
            return
        run = self.run
        run.admissions += 1
        gate = Gate("run", limiter_id("run", run.workflow, key), "", key, flow.limit, self.now)
        gate.request = f"{run.run_id}:run:{run.admissions}"
        run.gate = gate
        self.request(gate, None, 0, on_limit=flow.on_limit)

    def admitted(self, event: LimitGranted) -> bool:
        gate = self.run.gate
        if gate is None or gate.request != event.request or gate.state != REQUESTED:
            return False
        gate.state, gate.granted_at = HELD, self.now
        self.move_run(RunStatus.RUNNING)
        self.resume()
        return True

    def refused(self, event: LimitRefused) -> bool:
        gate = self.run.gate
        if gate is None or gate.request != event.request or gate.state != REQUESTED:
            return False
        gate.state = RELEASED  # never held: nothing to give back
        self.cancel_run(event.reason)
        return True

    def resume(self) -> None:
        """A running run schedules what is ready and starts the children its maps allow."""
        self.schedule_ready()
        for node_id in self.spec.order:
            node = self.run.nodes[node_id]
            if node.status == NodeStatus.RUNNING and node.children:
                self.fill_map(node)

    def release_run_gate(self) -> None:
        if self.run.gate is not None:
            self.let_go(self.run.gate)

    # ---- a node's gates --------------------------------------------------------------------
    def queue_attempt(self, node: NodeState, attempt: int, node_input: Any, retry: bool) -> None:
        """Open attempt `attempt` of a limited node, queued behind its first gate."""
        node.attempt = attempt
        node.input = node_input
        self.move_node(node, NodeStatus.QUEUED, retry=retry)
        node.attempts.append(Attempt(attempt, NodeStatus.QUEUED, self.now, queued_at=self.now))
        node.gates = []
        self.ask_gate(node)

    def ask_gate(self, node: NodeState) -> None:
        limit = self.compiled(node).limits[len(node.gates)]
        try:
            key = key_value(limit.key, node.input)
        except ExpressionError as exc:
            self.fail_for_good(node, expression_error(exc, node.key))
            return
        name = self.compiled(node).spec.task or node.node_id
        gate = Gate(
            limit.scope,
            limiter_id(limit.scope, name, key),
            f"{self.run.run_id}:{node.key}:{node.attempt}:{limit.scope}",
            key,
            limit.limit,
            self.now,
            limit.per_s,
        )
        node.gates.append(gate)
        self.touch(node)
        self.request(gate, node.key, node.attempt, name=name)

    def node_granted(self, node: NodeState, event: LimitGranted) -> bool:
        gate = node.gates[-1] if node.gates else None
        if gate is None or gate.request != event.request or gate.state != REQUESTED:
            return False
        gate.state, gate.granted_at = HELD, self.now
        self.touch(node)
        if len(node.gates) < len(self.compiled(node).limits):
            self.ask_gate(node)
            return True
        self.move_node(node, NodeStatus.DISPATCHED)
        current = node.attempts[-1]
        current.status = NodeStatus.DISPATCHED
        current.dispatched_at = self.now
        for held in node.gates:
            if held.scope == "rate":
                held.state = USED  # the token is spent: it ages out of the window on its own
        self.send(node)
        return True

    def release_gates(self, node: NodeState, fresh: set[str] | None = None) -> None:
        """The attempt ended (or never will start): give back what it holds, abandon what it
        still waits for (`fresh`: requests this transition emitted, to withdraw instead)."""
        for gate in node.gates:
            self.let_go(gate, fresh)
        if node.gates:
            self.touch(node)

    def let_go(self, gate: Gate, fresh: set[str] | None = None) -> None:
        if gate.state == HELD:
            self.release(gate)
        elif gate.state == REQUESTED:
            if fresh is not None and gate.request in fresh:
                fresh.discard(gate.request)
                self.withdraw(gate.request)
            else:
                self.run.abandoned[gate.request] = gate
        if gate.state in (HELD, REQUESTED):
            gate.state = RELEASED

    def abandoned_answer(self, event: LimitGranted | LimitRefused) -> bool:
        """The answer to a request the run no longer wants: a grant is given back at once."""
        gate = self.run.abandoned.pop(event.request, None)
        if gate is None:
            return False
        if isinstance(event, LimitGranted):
            self.release(gate)
        return True

    # ---- map parallelism -------------------------------------------------------------------
    def fill_map(self, parent: NodeState) -> None:
        """Start waiting children in index order while fewer than `max_parallel` are started
        and not ended."""
        children = parent.children or 0
        most = self.compiled(parent).max_parallel or children
        nodes = self.run.nodes
        while parent.children_active < most and parent.next_child < children:
            child = nodes[child_key(parent.node_id, parent.next_child)]
            parent.next_child += 1
            if child.status != NodeStatus.WAITING:
                continue
            parent.children_active += 1
            self.dispatch(child, child.attempt + 1, child.input)
        self.touch(parent)

    # ---- the events ------------------------------------------------------------------------
    def request(
        self,
        gate: Gate,
        node_key: str | None,
        attempt: int,
        *,
        name: str | None = None,
        on_limit: str = "queue",
    ) -> None:
        data = LimitRequested(
            limiter=gate.limiter,
            request=gate.request,
            scope=gate.scope,
            name=name or self.run.workflow,
            key=gate.key,
            limit=gate.limit,
            per_s=gate.per_s,
            on_limit=on_limit,
            priority=self.run.priority,
            run_id=self.run.run_id,
            node_id=node_key,
            attempt=attempt,
        )
        self.out.commands.append(
            Emit(LIMIT_REQUESTED, gate.limiter, data, f"requested:{gate.request}")
        )

    def release(self, gate: Gate) -> None:
        data = LimitReleased(limiter=gate.limiter, request=gate.request, run_id=self.run.run_id)
        self.out.commands.append(
            Emit(LIMIT_RELEASED, gate.limiter, data, f"released:{gate.request}")
        )

    def fresh_requests(self) -> set[str]:
        """The requests this transition emitted so far (not gone out: they can be withdrawn)."""
        return {
            c.data.request
            for c in self.out.commands
            if isinstance(c, Emit) and isinstance(c.data, LimitRequested)
        }

    def withdraw(self, request: str) -> None:
        self.withdrawn.add(request)

    def drop_withdrawn(self) -> None:
        """Remove the withdrawn requests' events from this transition's commands, in one pass."""
        if self.withdrawn:
            gone = self.withdrawn
            self.out.commands[:] = [
                c
                for c in self.out.commands
                if not (isinstance(c, Emit) and isinstance(c.data, LimitRequested))
                or c.data.request not in gone
            ]
            gone.clear()

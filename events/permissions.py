"""Least-privilege NATS permissions for each role of a deployment, as a nats-server
`authorization` block (pure: the topology in, the config text out).

    conveyor nats-config > auth.conf        # then `include auth.conf` in the server config

One user per role, its password a `$CONVEYOR_<ROLE>_PASSWORD` environment reference that
nats-server resolves when it loads the file (the secret never sits in the file):

    admin         `conveyor topology apply`: the whole JetStream API (streams, buckets)
    orchestrator  its consumers on the event stream, publish events and dispatches, the KV
                  bucket and the object store, serve the status API
    worker        pull its tasks' consumers and ack them, publish only task events
                  (started, completed, failed), log lines, its heartbeats and dead letters;
                  read and write the workflow bucket (it registers its module's workflows)
                  and the artifacts; it cannot publish run outcomes or dispatches (so it
                  cannot forward what an older version dispatched on a whole-queue subject
                  either: in a locked-down deployment, drain old queues before upgrading)
    api           the projection (its own consumers on the event stream), read logs and the
                  catalog, publish run requests, cancels and retries, ask the status API
    gateway       publish on the ingest subjects only (and read the catalog)
    client        what the CLI and `Client` do: request, cancel and retry runs, publish on the
                  ingest subjects, ask the status API, read logs and the catalog

Request/reply answers travel on `_INBOX.>`; JetStream acks on `$JS.ACK.<stream>.<consumer>.>`.
"""

from __future__ import annotations

from collections.abc import Iterable

from events.models import (
    RUN_CANCEL_REQUESTED,
    RUN_REQUESTED,
    RUN_RETRY_REQUESTED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_STARTED,
    type_suffix,
)
from events.topology import Topology

ROLES = ("admin", "orchestrator", "worker", "api", "gateway", "client")
Permissions = dict[str, list[str]]


def _js_stream(api: str, *streams: str) -> list[str]:
    return [f"$JS.API.{api}.{stream}" for stream in streams]


def _consumers_of(*streams: str, delete: bool = False) -> list[str]:
    """Create/bind, inspect, pull and ack consumers of these streams (and delete them)."""
    out = []
    for stream in streams:
        out += [
            f"$JS.API.CONSUMER.CREATE.{stream}",  # an unnamed (ordered) consumer
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
            f"$JS.API.CONSUMER.LIST.{stream}",
            f"$JS.API.CONSUMER.NAMES.{stream}",
            f"$JS.ACK.{stream}.>",
            f"$JS.FC.{stream}.>",  # flow control answers of ordered consumers
        ]
        if delete:
            out.append(f"$JS.API.CONSUMER.DELETE.{stream}.>")
    return out


def _kv(topology: Topology, *, write: bool, bucket: str | None = None) -> list[str]:
    """Read (and write) a KV bucket: the workflows bucket unless another is named."""
    bucket = bucket or topology.workflows_bucket
    stream = f"KV_{bucket}"
    read = [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        *_consumers_of(stream),  # key listing and watches use a consumer
    ]
    return read + ([f"$KV.{bucket}.>"] if write else [])


def _objects(topology: Topology, bucket: str | None = None) -> list[str]:
    """Read and write an object store: the artifacts unless another is named."""
    bucket = bucket or topology.artifacts_bucket
    stream = f"OBJ_{bucket}"
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$O.{bucket}.>",
        *_consumers_of(stream),
    ]


def _events(topology: Topology, *event_types: str) -> list[str]:
    return [f"{topology.namespace}.evt.*.{type_suffix(t)}.*" for t in event_types]


def role_permissions(topology: Topology) -> dict[str, Permissions]:
    """`{"publish": [...], "subscribe": [...]}` allow-lists for each role."""
    ns, t = topology.namespace, topology
    streams = [p.name for p in t.streams()]
    check_topology = [
        "$JS.API.INFO",
        *_js_stream(
            "STREAM.INFO",
            *streams,
            f"KV_{t.workflows_bucket}",
            f"KV_{t.leases_bucket}",
            f"OBJ_{t.artifacts_bucket}",
            f"OBJ_{t.snapshots_bucket}",
        ),
    ]
    inbox = ["_INBOX.>"]
    # Who serves what: workers' heartbeats, read back in one batched direct get.
    workers = [f"$JS.API.DIRECT.GET.{t.workers_stream}"]
    reads = [*_consumers_of(t.logs_stream), *_kv(t, write=False)]
    run_control = _events(t, RUN_REQUESTED, RUN_CANCEL_REQUESTED, RUN_RETRY_REQUESTED)
    return {
        "admin": {"publish": ["$JS.API.>", "$KV.>", "$O.>"], "subscribe": inbox},
        "orchestrator": {
            "publish": [
                *check_topology,
                f"{ns}.evt.>",
                f"{ns}.task.>",
                f"{ns}.dlq.>",
                # Lease mode deletes a deposed owner's per-epoch consumers.
                *_consumers_of(t.events_stream, t.ingest_stream, delete=True),
                f"$JS.API.CONSUMER.LIST.{t.tasks_stream}",  # queue depth gauges
                f"$JS.API.CONSUMER.INFO.{t.tasks_stream}.>",
                *workers,
                *_kv(t, write=True),
                *_objects(t),
                # Lease mode: the leases, the fences (their last marker read back), snapshots.
                *_kv(t, write=True, bucket=t.leases_bucket),
                f"{ns}.fence.>",
                f"$JS.API.STREAM.MSG.GET.{t.events_stream}",
                *_objects(t, t.snapshots_bucket),
                # Deleting a snapshot purges its chunks and its meta from the object store.
                f"$JS.API.STREAM.PURGE.OBJ_{t.snapshots_bucket}",
            ],
            "subscribe": [*inbox, f"{ns}.api.>"],
        },
        "worker": {
            "publish": [
                *check_topology,
                *_events(t, TASK_STARTED, TASK_COMPLETED, TASK_FAILED),
                f"{ns}.log.>",
                f"{ns}.worker.>",
                t.dlq_subject("worker"),
                *_consumers_of(t.tasks_stream),
                *_kv(t, write=True),
                *_objects(t),
            ],
            "subscribe": [*inbox, t.cancel_subject_filter()],
        },
        "api": {
            "publish": [
                *check_topology,
                *run_control,
                f"{ns}.api.>",
                *_consumers_of(t.events_stream, delete=True),  # a projection's rebuild
                *reads,
                *workers,
                *_objects(t),
            ],
            "subscribe": [*inbox, f"{ns}.evt.>", f"{ns}.log.>"],
        },
        "gateway": {
            "publish": [*check_topology, f"{ns}.ingest.>", *_kv(t, write=False)],
            "subscribe": inbox,
        },
        "client": {
            "publish": [
                *check_topology,
                *run_control,
                # `conveyor register`: specs in the bucket, and their tasks' consumers.
                f"$KV.{t.workflows_bucket}.>",
                f"$JS.API.CONSUMER.CREATE.{t.tasks_stream}.>",
                f"$JS.API.CONSUMER.INFO.{t.tasks_stream}.>",
                f"{ns}.ingest.>",
                f"{ns}.api.>",
                *_consumers_of(t.events_stream),
                *reads,
                *_objects(t),
            ],
            "subscribe": [*inbox, f"{ns}.evt.>", f"{ns}.log.>"],
        },
    }


def password_variable(role: str) -> str:
    return f"CONVEYOR_{role.upper()}_PASSWORD"


def authorization_block(topology: Topology, roles: Iterable[str] = ROLES) -> str:
    """A nats-server `authorization { users = [...] }` block, one user per role (named
    `<namespace>-<role>`), passwords as `$CONVEYOR_<ROLE>_PASSWORD` references."""
    permissions = role_permissions(topology)
    users = []
    for role in roles:
        if role not in permissions:
            raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        allowed = permissions[role]
        publish = ", ".join(f'"{s}"' for s in allowed["publish"])
        subscribe = ", ".join(f'"{s}"' for s in allowed["subscribe"])
        # Only the orchestrator answers requests (its status API on <ns>.api.>).
        responses = "        allow_responses: true\n" if role == "orchestrator" else ""
        users.append(
            f"    {{\n"
            f'      user: "{topology.namespace}-{role}"\n'
            f"      password: ${password_variable(role)}\n"
            f"      permissions: {{\n"
            f"        publish: {{ allow: [{publish}] }}\n"
            f"        subscribe: {{ allow: [{subscribe}] }}\n"
            f"{responses}"
            f"      }}\n"
            f"    }}"
        )
    header = (
        f"# Conveyor roles for namespace {topology.namespace!r}: one user each, least privilege.\n"
        f"# Passwords come from the server's environment: "
        f"{', '.join('$' + password_variable(r) for r in roles)}\n"
    )
    return header + "authorization {\n  users = [\n" + ",\n".join(users) + "\n  ]\n}\n"

"""Shared fixtures: one real nats-server per session (see events.testing)."""

from events.testing import bus, nats_server, topology  # noqa: F401  (pytest fixtures)

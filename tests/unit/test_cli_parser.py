"""The command line's parser: every command explains itself with an example, and the options
every command shares are taken before or after the command's name."""

from __future__ import annotations

import argparse

import pytest

from orchestrator.cli.main import build_parser, parse_args


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, str]:
    """Every command and sub-command, with its help text."""
    found: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub.format_help()
                found.update(_commands(sub, f"{prefix}{name} "))
    return found


def test_there_is_a_command_for_each_job() -> None:
    assert set(_commands(build_parser())) >= {
        "dev",
        "orchestrator",
        "worker",
        "register",
        "run",
        "status",
        "cancel",
        "retry",
        "logs",
        "runs",
        "workflows",
        "publish",
        "schedules",
        "replay",
    }


@pytest.mark.parametrize("command", sorted(_commands(build_parser())))
def test_every_command_help_ends_with_an_example(command: str) -> None:
    text = _commands(build_parser())[command]
    assert "example:\n  conveyor " in text or "example:\n  CONVEYOR_" in text, text


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-json", "--log-level", "debug", "--nats", "nats://h:1", "runs"],
        ["runs", "--log-json", "--log-level", "debug", "--nats", "nats://h:1"],
        ["--log-json", "runs", "--log-level", "debug", "--nats", "nats://h:1"],
        ["--log-level", "debug", "runs", "--log-json", "--nats", "nats://h:1"],
    ],
)
def test_shared_options_go_before_or_after_the_command(argv: list[str]) -> None:
    parsed = parse_args(argv)
    assert (parsed.log_json, parsed.log_level, parsed.nats) == (True, "debug", "nats://h:1")


def test_shared_options_have_their_defaults_when_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_LOG_LEVEL", "error")
    parsed = parse_args(["runs"])
    assert (parsed.log_json, parsed.log_level) == (False, "error")

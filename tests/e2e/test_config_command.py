"""`conveyor config` and `conveyor completion`, run as a user runs them: a real process in a
directory with a conveyor.toml; the completion scripts loaded into a real bash (and zsh, where
it is installed) and asked to complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from events.config import SETTINGS
from tests.unit.test_config import CONFIG


@pytest.fixture
def here(tmp_path: Path) -> Path:
    return tmp_path


def _conveyor(here: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=here,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_conveyor_config_shows_values_sources_and_masks_secrets(here: Path) -> None:
    (here / "conveyor.toml").write_text(CONFIG)
    done = _conveyor(
        here,
        "config",
        "--json",
        "--namespace",
        "flagged",
        env={
            "CONVEYOR_NATS_URL": "nats://me:hunter2@env:4222",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=abc",
        },
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {row["key"]: row for row in report["settings"]}
    assert report["file"] == str(here / "conveyor.toml")
    assert (rows["namespace"]["value"], rows["namespace"]["source"]) == ("flagged", "flag")
    assert rows["nats.url"]["value"] == ["nats://me:***@env:4222"]
    assert rows["nats.url"]["source"] == "env"
    assert rows["nats.password"]["value"] == "***"
    assert rows["api.token"]["value"] == "***"
    assert rows["worker.concurrency"]["source"].startswith("file ")
    assert rows["api.port"] == {
        "key": "api.port",
        "value": 8080,
        "source": "default",
        "env": "CONVEYOR_API_PORT",
    }
    assert report["otel"]["export"] is True
    assert report["otel"]["environment"]["OTEL_EXPORTER_OTLP_HEADERS"] == "***"
    assert "hunter2" not in done.stdout and "file-secret" not in done.stdout
    assert len(rows) == len(SETTINGS) and report["problems"] == []

    table = _conveyor(here, "config")
    assert table.returncode == 0
    assert "worker.concurrency" in table.stdout and "api-secret" not in table.stdout


def test_conveyor_config_says_what_cannot_work(here: Path) -> None:
    (here / "conveyor.toml").write_text('[nats]\nuser = "lonely"\n')
    done = _conveyor(here, "config")
    assert done.returncode == 2
    assert "problem: NATS user and password go together" in done.stdout
    (here / "conveyor.toml").write_text("[nats]\nurll = 1\n")
    broken = _conveyor(here, "status", "some-run")
    assert broken.returncode == 2
    assert "unknown setting 'nats.urll'" in broken.stderr


# ---- shell completion --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("completion")
    out = {}
    for shell in ("bash", "zsh"):
        done = _conveyor(folder, "completion", shell)
        assert done.returncode == 0, done.stderr
        out[shell] = folder / f"conveyor.{shell}"
        out[shell].write_text(done.stdout)
    return out


def _complete(shell: str, script: Path, words: list[str]) -> list[str]:
    quoted = " ".join(f"'{w}'" for w in words)
    setup = "setopt ksharrays; " if shell == "zsh" else ""
    program = (
        f"source '{script}'; {setup}COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
        '_conveyor_complete; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    argv = ["bash", "--norc", "-c", program] if shell == "bash" else ["zsh", "-f", "-c", program]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["conveyor", "wor"], ["worker", "workflows"]),
        (["conveyor", "topology", ""], ["apply", "check"]),
        (["conveyor", "schedules", ""], ["list", "pause", "resume"]),
        (["conveyor", "worker", "--con"], ["--concurrency"]),
        (["conveyor", "--log-level", ""], ["debug", "info", "warning", "error"]),
        (["conveyor", "orchestrator", "--topology", "a"], ["apply", "auto"]),
        # The value of a flag is not taken for the command.
        (["conveyor", "--nats", "nats://n1:4222", "sta"], ["status"]),
        (["conveyor", "conf"], ["config"]),
        (["conveyor", "completion", ""], ["bash", "zsh"]),
    ],
)
def test_bash_completes_commands_flags_and_choices(
    scripts: dict[str, Path], words: list[str], expected: list[str]
) -> None:
    assert sorted(_complete("bash", scripts["bash"], words)) == sorted(expected)


def test_bash_completes_file_names_for_a_module(scripts: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text("")
    got = _complete("bash", scripts["bash"], ["conveyor", "worker", str(tmp_path / "fl")])
    assert got == [str(tmp_path / "flows.py")]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed here")
def test_zsh_loads_the_completion_and_completes(scripts: dict[str, Path]) -> None:
    program = f"source '{scripts['zsh']}'; print -r -- $_comps[conveyor]"
    done = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "_conveyor_complete" in done.stdout  # registered through bashcompinit
    assert _complete("zsh", scripts["zsh"], ["conveyor", "topology", ""]) == ["apply", "check"]


def test_every_command_has_an_example_in_its_help(here: Path) -> None:
    from orchestrator.cli.main import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = [name for name, sub in subs.choices.items() if "example" not in (sub.epilog or "")]
    assert missing == []
    shown = _conveyor(here, "config", "--help")
    assert shown.returncode == 0 and "example:" in shown.stdout

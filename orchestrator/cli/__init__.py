"""`conveyor`: the command line (see `main.py`)."""

from orchestrator.cli.main import main

__all__ = ["main"]

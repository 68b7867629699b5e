"""Whether this checkout's `conveyor` accepts a command line, without running it: the chart
and the compose file spell out flags, and a renamed or removed flag must fail a test here
rather than a pod in a crash loop."""

from __future__ import annotations

import contextlib
import io

from orchestrator.cli.main import build_parser


def refusal(args: list[str]) -> str | None:
    """None when `conveyor ARGS` parses; else what argparse said."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(args)
    except SystemExit as exc:
        return f"conveyor {' '.join(args)}: exit {exc.code}: {stderr.getvalue().strip()}"
    return None

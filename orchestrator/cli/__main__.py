"""`python -m orchestrator.cli ...` is `conveyor ...`."""

from orchestrator.cli.main import main

main()

"""`python -m bench`: see bench/suite.py and docs/performance.md."""

from bench.suite import main

main()

"""Peers side by side with Conveyor. Their code runs in a side virtualenv (bench/.venv-peers,
made by `bench.peers.run`), never in the project's: nothing here imports Conveyor, and
`bench.peers.run` is the only module the main virtualenv imports."""

"""The fleet: the device registry (devices.yml), SSH/local connections, and rollouts.

Nothing here imports the compression code; the on-device agent (``kedro_edge.bench.agent``)
imports nothing of ours at all.
"""

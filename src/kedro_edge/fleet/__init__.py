"""The fleet: the device registry, connections, and releases onto devices.

    inventory.py   devices.yml, validated once
    ssh.py         connections (host keys verified, retries), remote commands quoted
    known_hosts.py trusting a new host key: one appended line under a lock
    candidate.py   the model bytes, manifest and parity batch to ship
    device.py      one device: ship (lease, stream, verify, install, measure), activate, refuse, rollback
    lease.py       rollout ids and the thread that renews their device leases
    pool.py        a bounded pool over devices, one outcome each
    rollout.py     the staged rollout: waves, gates, verdicts
    records.py     decisions and verdicts (enums); device entries, waves, release.json as records
    spec.py        a release spec: the model, its parity batch and reference outputs, the targets
    shard.py       one release as batches of tasks: the plan, each task's result, the state between
    device_gates.py per-device budgets, parity and the no-regression gate
    commands.py    outside a rollout: survey, trust, rollback
    report.py      release.json, device_benchmarks.json, release.md

Nothing here imports the compression code; the on-device agent (``kedro_edge.bench.agent``)
imports nothing of ours at all.
"""

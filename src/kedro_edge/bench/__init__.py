"""On-device benchmarking: ``agent.py`` runs on the device, ``stats`` summarises on the host."""

"""What runs on the device alone: ``agent.py``, one self-contained file (stdlib, numpy and the
device's runtime; nothing of ours, which import-linter checks). Host-side statistics live in
``kedro_edge.evaluation``."""

"""Where a model came from, and what could make a reproduction stale.

deps.py   the code each DVC stage runs, from its ``kedro run`` command, checked against dvc.yaml
"""

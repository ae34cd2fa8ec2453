"""The budgeted search: the fastest model within the user's accuracy budget, timed on their target.

    params.py     its parameters, and the ``compression`` section's model built from the registry
    space.py      what a trial may change (per-stage channels, width, low-rank, clustering, float ends)
    trial.py      one trial's model: built, timed, fine-tuned, scored as INT8 on the validation split
    target.py     where candidates are timed: this host or a device of a devices.yml group (the agent)
    study.py      Optuna's multi-objective TPE in a storage URL: ask in batches, time, train, tell
    record.py     search.json (every trial, the choice, its test report) and search.png (the front)

``driver.search`` runs it all; the chosen trial's recipe (``compression.*`` parameters) is what the
rest of the compression pipeline then runs in full.
"""

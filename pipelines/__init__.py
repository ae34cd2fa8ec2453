"""The reference Kedro project: thin wiring of kedro_edge nodes into pipelines."""

"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from kedro_edge.hooks import EdgeHooks

HOOKS = (EdgeHooks(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
# soft: conf/local and --params change single keys (compression.prune.ratio) and keep the rest of
# their section. Kedro's default (destructive) would drop every other key of the section, and once
# conf/local has any parameters file, a `--params training.epochs=1` would drop the rest of `training`.
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
}

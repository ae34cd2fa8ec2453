"""Dagster definitions.

Written by `kedro dagster init` (kedro-dagster 0.8.1), which puts it in src/<package>/ whatever
[tool.kedro] source_dir says: moved here, beside settings.py (README, "Orchestrator: Dagster").
Edited: the Kedro env comes from KEDRO_ENV, and the project is this file's parent's parent, so
step processes and code servers find it whatever their working directory.
"""

import os
from pathlib import Path

import dagster as dg
from kedro_dagster import KedroProjectTranslator

from pipelines import sharded_release

translator = KedroProjectTranslator(
    env=os.environ.get("KEDRO_ENV", "local"), project_path=Path(__file__).resolve().parents[1]
)
dagster_code_location = translator.to_dagster()

resources = dagster_code_location.named_resources
# The "io_manager" key handles how Kedro MemoryDatasets are handled by Dagster
resources |= {
    "io_manager": dg.fs_io_manager,
}

# Define the default executor for Dagster jobs
default_executor = dg.multiprocess_executor.configured({"max_concurrent": 2})
# It could also come from the Kedro-Dagster config if a "default_executor" is defined
# default_executor = {
#   "default": dagster_code_location.named_executors["default_executor"]
# }

# Define default loggers for Dagster jobs
default_loggers = {
    "console": dg.colored_console_logger,
}
# They could also come from the Kedro-Dagster config if "default_loggers" are defined
# default_loggers = {
#   "default": dagster_code_location.named_loggers["default_logger"]
# }

defs = dg.Definitions(
    assets=list(dagster_code_location.named_assets.values()),
    resources=resources,
    # the pipelines' jobs, and the deployment as a release sharded into batches (sharded_release.py)
    jobs=[*dagster_code_location.named_jobs.values(), sharded_release.job()],
    schedules=list(dagster_code_location.named_schedules.values()),
    sensors=list(dagster_code_location.named_sensors.values()),
    loggers=default_loggers,
    executor=default_executor,
)

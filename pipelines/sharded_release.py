"""The deployment as a sharded release: each wave's batches of devices as Dagster steps.

``<env>__sharded_release`` does what the ``deployment`` pipeline does, with the rollout cut as
``kedro_edge.fleet.shard`` describes: every wave's batches (``deployment.shard_size`` devices,
at most 1,000) are prepared in parallel steps, one step decides the wave, its batches are
activated in parallel steps, and after the last wave the closing steps (leases given back, or
an aborted release rolled back) run before one step merges the record into
``data/08_reporting/release.json`` (with ``release.md``, ``device_benchmarks.json`` and the
plot), exactly as ``kedro run --pipelines deployment`` writes them. Each step is its own process
under the multiprocess executor, or its own pod under Dagster's Kubernetes or Celery executors:
the steps exchange small records (device names, ``kedro_edge.fleet.shard.BatchResult``,
``kedro_edge.fleet.shard.ShardState``) through the IO manager.

The steps hold the devices under one rollout id, the run's root run id: re-executing a failed
run from its failure resumes under the same leases. The number of waves is read from the
parameters when the code location loads.
"""

import functools
import os
from pathlib import Path

import dagster as dg
from kedro.framework.context import KedroContext
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from kedro_edge import config
from kedro_edge.errors import GateError
from kedro_edge.fleet import shard
from kedro_edge.nodes import deployment as nodes

PROJECT = Path(__file__).resolve().parents[1]
ENV = os.environ.get("KEDRO_ENV", "local")


@functools.cache
def kedro_context() -> KedroContext:
    """This process's Kedro context (the catalog and the parameters of ``KEDRO_ENV``)."""
    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT, env=ENV) as session:
        return session.load_context()


@dg.op(out={"plan": dg.Out(), "state": dg.Out()})
def shard_plan(context: dg.OpExecutionContext):
    """The release's inputs from the catalog, its waves cut into batches, and an empty state."""
    kedro = kedro_context()
    catalog, params = kedro.catalog, kedro.params
    rollout_id = (context.run.root_run_id or context.run_id).replace("-", "")[:16]
    inputs = [catalog.load(name) for name in ("model_file", "validated_model", "fleet", "model_input")]
    plan = nodes.sharded_release_plan(*inputs, params["deployment"], rollout_id)
    if plan is None:
        raise dg.Failure("deployment.enabled is false: nothing to release")
    sizes = [[len(b) for b in wave] for wave in plan.batches]
    context.log.info(f"rollout {rollout_id}: devices per batch, per wave: {sizes}")
    return plan, shard.start()


def wave_ops(number: int) -> tuple[dg.OpDefinition, ...]:
    """Wave ``number``'s steps: its batches, prepare one, decide, activate one, done."""

    @dg.op(name=f"wave{number}_batches", out=dg.DynamicOut())
    def batches(plan: shard.ShardPlan, state: shard.ShardState):
        for i, names in enumerate(shard.wave_batches(state, plan.batches, number)):
            yield dg.DynamicOutput(names, mapping_key=f"batch{i}")

    @dg.op(name=f"wave{number}_prepare")
    def prepare(plan: shard.ShardPlan, names: list) -> shard.BatchResult:
        with plan.release() as release:
            return shard.prepare_batch(release, number, names)

    @dg.op(name=f"wave{number}_decide", out={"state": dg.Out(), "ready": dg.DynamicOut()})
    def decide(
        context: dg.OpExecutionContext, plan: shard.ShardPlan, state: shard.ShardState, prepared: list
    ):
        state, ready = shard.after_prepare(state, number, prepared, plan.cfg)
        if prepared:
            wave = state.waves[-1]
            context.log.info(f"wave {number}: {wave.outcome}, failed {wave.failed}")
        yield dg.Output(state, "state")
        for i, names in enumerate(ready):
            yield dg.DynamicOutput(names, output_name="ready", mapping_key=f"batch{i}")

    @dg.op(name=f"wave{number}_activate")
    def activate(plan: shard.ShardPlan, names: list) -> shard.BatchResult:
        with plan.release() as release:
            return shard.activate_batch(release, number, names, last=number == len(plan.batches))

    @dg.op(name=f"wave{number}_done")
    def done(state: shard.ShardState, activated: list) -> shard.ShardState:
        return shard.after_activate(state, activated)

    return batches, prepare, decide, activate, done


@dg.op(out=dg.DynamicOut())
def shard_closing(plan: shard.ShardPlan, state: shard.ShardState):
    tasks = shard.closing(state, plan.batches, plan.cfg.shard_size)
    for i, task in enumerate(tasks):
        yield dg.DynamicOutput(task, mapping_key=f"{task[0]}{i}")


@dg.op
def shard_close(plan: shard.ShardPlan, task: tuple) -> shard.BatchResult:
    with plan.release() as release:
        return shard.close_batch(release, task)


@dg.op
def shard_record(plan: shard.ShardPlan, state: shard.ShardState, closed: list) -> str:
    """One release record from every step's results, saved as the deployment pipeline saves it;
    the run fails, after saving, unless the release went out everywhere."""
    record, benchmarks = nodes.sharded_release_reports(plan, state, closed)
    catalog = kedro_context().catalog
    catalog.save("release_record", record)
    catalog.save("device_benchmarks", benchmarks)
    catalog.save("device_latency_plot", nodes.plot_device_latency(benchmarks))
    catalog.save("release_report", nodes.release_markdown(record))
    try:
        nodes.enforce_release(record)
    except GateError as exc:
        raise dg.Failure(str(exc)) from None
    return record["verdict"]


def sharded_release_job(waves: int) -> dg.JobDefinition:
    """The job for a release of ``waves`` waves (steps of waves a release does not reach skip)."""

    @dg.job(name=f"{ENV}__sharded_release", description=__doc__.split("\n\n")[0])
    def sharded_release():
        plan, state = shard_plan()
        for number in range(1, waves + 1):
            batches, prepare, decide, activate, done = wave_ops(number)
            prepared = batches(plan, state).map(lambda names, op=prepare: op(plan, names)).collect()
            state, ready = decide(plan, state, prepared)
            activated = ready.map(lambda names, op=activate: op(plan, names)).collect()
            state = done(state, activated)
        closed = shard_closing(plan, state).map(lambda task: shard_close(plan, task)).collect()
        shard_record(plan, state, closed)

    return sharded_release


def job() -> dg.JobDefinition:
    """The job for the waves in this env's parameters."""
    cfg = config.parse(config.DeploymentParams, kedro_context().params.get("deployment"), "deployment")
    return sharded_release_job(len(cfg.waves))

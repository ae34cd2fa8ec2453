"""The study: Optuna's multi-objective TPE over the space, kept in a storage URL.

Two objectives, validation accuracy (up) and latency ratio on the target (down), with the
budget as a constraint (``val_drop_points - max_accuracy_drop <= 0``), so the sampler learns
where the feasible region is. Trials are asked for in batches: a batch is built, timed on the
target together (one connection), then trained one by one. A trial ends early (PRUNED, with
its reason) when its graph is no faster than the fastest candidate already within budget, or
when after one epoch of fine-tuning its accuracy is hopeless. ``constant_liar`` keeps workers
(and the trials of one batch) from all drawing the same point.

The storage is any Optuna URL: SQLite by default, an RDB or ``journal:<file>`` (Optuna's
journal file, safe for several processes on one machine or a shared file system) when several
workers share a study. Every trial's figures live in its user attributes and the INT8 graphs of
candidates within budget in an artifact store beside it, so a resumed, extended or shared search
loses nothing and times nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from kedro_edge import data
from kedro_edge.evaluation.metrics import Metric
from kedro_edge.models.training import TrainParams
from kedro_edge.progress import progress_bar
from kedro_edge.search import trial as cand
from kedro_edge.search.params import CompressionParams
from kedro_edge.search.space import recipe_params, sample, stages
from kedro_edge.search.target import Target, sha256

log = logging.getLogger(__name__)
JOURNAL = "journal:"


@dataclass(frozen=True)
class Storage:
    """An Optuna storage and the artifact folder beside it."""

    url: str
    artifacts: Path

    def open(self) -> optuna.storages.BaseStorage | str:
        if self.url.startswith(JOURNAL):
            path = Path(self.url[len(JOURNAL) :])
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if self.url.startswith("sqlite:///"):
            Path(self.url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        return self.url

    @property
    def shown(self) -> str:
        """The URL without a password (RDB URLs may hold one: it is never printed or recorded)."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))


def storage_of(url: str) -> Storage:
    """The study's storage; its artifacts go to ``<file>.artifacts/`` (``search-artifacts/`` for an RDB)."""
    for prefix in (JOURNAL, "sqlite:///"):
        if url.startswith(prefix):
            path = Path(url[len(prefix) :])
            return Storage(url, path.with_name(path.name + ".artifacts"))
    return Storage(url, Path("data/07_model_output/search-artifacts"))


def study_name(cfg: CompressionParams, train: TrainParams, teacher_sha: str, stage_names: list[str]) -> str:
    """A name that changes with everything that changes what a trial measures (not with the
    budget or the number of trials: raising those extends the same study)."""
    s = cfg.search
    if s.study:
        return s.study
    what = {
        "teacher": teacher_sha,
        "target": s.target,
        "space": s.space.model_dump(mode="json"),
        "latency": s.latency.model_dump(mode="json"),
        "epochs": s.finetune_epochs,
        "stages": stage_names,
        "recipe": cfg.model_dump(mode="json", exclude={"search"}),
        "training": train.model_dump(mode="json"),
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]
    return f"kedro-edge-{s.target}-{digest}"


def open_study(cfg: CompressionParams, storage: Storage, name: str) -> optuna.Study:
    budget = cfg.search.budget.limit

    def constraints(trial: FrozenTrial) -> list[float]:
        drop = trial.user_attrs.get("val_drop_points")
        return [float("inf") if drop is None else drop - budget]

    # multivariate, group, constant_liar and constraints are "experimental" in Optuna 4: they are
    # what a multi-objective, conditional, batched and constrained search needs
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sampler = optuna.samplers.TPESampler(
        seed=cfg.search.seed,
        multivariate=True,
        group=True,  # low-rank energy only exists when low-rank is on
        constant_liar=True,
        n_startup_trials=8,
        constraints_func=constraints,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=name,
        storage=storage.open(),
        directions=["maximize", "minimize"],
        sampler=sampler,
        load_if_exists=True,
    )


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]


def feasible(trials: list[FrozenTrial], budget: float) -> list[FrozenTrial]:
    """Complete trials within the budget, fastest first (more accurate first on a tie)."""
    ok = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs["val_drop_points"] <= budget]
    return sorted(ok, key=lambda t: (t.user_attrs["latency"]["ratio"], -t.user_attrs["val_accuracy"]))


@dataclass
class Context:
    """What every trial of one search needs."""

    teacher: nn.Module
    splits: data.Splits
    cfg: CompressionParams
    train: TrainParams
    target: Target
    teacher_val_accuracy: float
    teacher_logits: np.ndarray | None  # the training split's, for the trials' distillation fine-tune
    storage: Storage
    stage_names: list[str]
    metric: Metric  # validation.metric: trials' scores and drops are in its units


def _status(best: FrozenTrial | None) -> str:
    if best is None:
        return "no candidate within budget yet"
    a = best.user_attrs
    return f"best #{best.number}: {a['latency']['ratio']:.3f}x FP32, val drop {a['val_drop_points']:+.2f} pts"


def _seed_cache(study: optuna.Study, target: Target) -> None:
    """Figures the study already holds for this target: a resumed search re-times nothing."""
    for t in study.get_trials(deepcopy=False):
        latency = t.user_attrs.get("latency")
        if latency and latency.get("where") == target.where:
            target.cache.setdefault(
                latency["sha256"], {k: latency[k] for k in ("ratio", "p50_ms", "reference_p50_ms", "where")}
            )


def run(ctx: Context, study: optuna.Study) -> dict[str, Any]:
    """Ask, build, time, train and tell until ``trials`` are in the study or time is up; a summary."""
    s = ctx.cfg.search
    budget = s.budget.limit
    if not study.get_trials(deepcopy=False) and not study.user_attrs.get("recipe_enqueued"):
        study.set_user_attr("recipe_enqueued", True)
        study.enqueue_trial(
            recipe_params(ctx.cfg, s.space, ctx.stage_names), user_attrs={"fixed_recipe": True}
        )
    _seed_cache(study, ctx.target)
    start, ran = time.monotonic(), 0

    def left() -> int:
        by_count = s.trials - len(finished(study)) if s.trials is not None else s.batch
        by_time = s.time_budget_s is None or time.monotonic() - start < s.time_budget_s
        return max(0, by_count) if by_time else 0

    with progress_bar(refresh_per_second=2) as bar:
        best = next(iter(feasible(finished(study), budget)), None)
        task = bar.add_task(f"search on {ctx.target.where}", total=left() or None, status=_status(best))
        while (n := min(s.batch, left())) > 0:
            pending: list[optuna.Trial] = []
            try:
                for trial, c, latency in _built(ctx, study, n, pending):
                    outcome = _train(ctx, trial, c, latency, best)
                    if outcome is not None:
                        study.tell(trial, outcome)
                    else:
                        study.tell(trial, state=TrialState.PRUNED)
                    pending.remove(trial)
                    ran += 1
                    best = next(iter(feasible(finished(study), budget)), None)
                    bar.update(task, advance=1, status=_status(best))
            finally:  # an error (an unreachable target, Ctrl-C) leaves no trial RUNNING in the study
                for trial in pending:
                    study.tell(trial, state=TrialState.FAIL)
    return {"trials_run": ran, "seconds": round(time.monotonic() - start, 1)}


def _built(
    ctx: Context, study: optuna.Study, n: int, pending: list[optuna.Trial]
) -> list[tuple[optuna.Trial, cand.TrialModel, dict[str, Any]]]:
    """Ask for ``n`` trials (appended to ``pending``), build each, and time them on the target in one call."""
    built = []
    for _ in range(n):
        trial = study.ask()
        pending.append(trial)
        settings = sample(trial, ctx.cfg.search.space, ctx.stage_names, ctx.cfg)
        trial.set_user_attr("settings", settings.to_dict())
        built.append((trial, cand.build(ctx.teacher, ctx.splits, settings, ctx.cfg)))
    figures = ctx.target.measure([c.onnx for _, c in built])
    for (trial, c), latency in zip(built, figures, strict=True):
        trial.set_user_attr("latency", dict(latency, timed="graph before fine-tuning"))
        trial.set_user_attr("macs", c.macs)
        trial.set_user_attr("params", c.params)
    return [(trial, c, latency) for (trial, c), latency in zip(built, figures, strict=True)]


def _train(
    ctx: Context, trial: optuna.Trial, c: cand.TrialModel, latency: dict, best: FrozenTrial | None
) -> list[float] | None:
    """Fine-tune, cluster, export and score one built candidate; None (with ``reason``) if it ended early."""
    s = ctx.cfg.search
    if best is not None and latency["ratio"] >= best.user_attrs["latency"]["ratio"]:
        trial.set_user_attr(
            "reason",
            f"no faster than trial #{best.number} ({latency['ratio']:.3f}x vs "
            f"{best.user_attrs['latency']['ratio']:.3f}x FP32), which is within budget: not trained",
        )
        return None
    # hopeless after one epoch: judged on top-1 (the float model's score is the metric's only for top-1)
    floor = ctx.teacher_val_accuracy - (s.budget.limit + s.hopeless_margin) / 100
    if ctx.metric.name != "top1":
        floor = float("-inf")
    if not cand.finetune(c, ctx.splits, ctx.cfg, ctx.train, s.finetune_epochs, floor, ctx.teacher_logits):
        trial.set_user_attr(
            "reason",
            f"hopeless: validation accuracy {100 * c.notes['val_accuracy_after_1_epoch']:.2f}% after one "
            f"epoch, below teacher - budget - margin ({100 * floor:.2f}%)",
        )
        return None
    cand.finish(c, ctx.splits, ctx.cfg, ctx.train, clustered=s.space.cluster_k is not None)
    accuracy = float(cand.scores(c.onnx, ctx.splits, "val", ctx.metric).mean())
    m = ctx.metric
    drop = m.scale * (ctx.teacher_val_accuracy - accuracy) * (1 if m.higher_is_better else -1)
    trial.set_user_attr("val_accuracy", accuracy)
    trial.set_user_attr("val_drop_points", drop)
    trial.set_user_attr("recipe", c.recipe.model_dump(mode="json"))
    trial.set_user_attr("graph_sha256", sha256(c.onnx))
    trial.set_user_attr("sizes", cand.sizes(c.onnx))
    if drop > s.budget.limit:
        trial.set_user_attr("reason", f"over budget: validation drop {drop:.3g} > {s.budget.limit} {m.unit}")
    else:
        trial.set_user_attr("graph_artifact", _keep_graph(ctx.storage, trial, c.onnx))
    return [accuracy, latency["ratio"]]


def _keep_graph(storage: Storage, trial: optuna.Trial, graph: bytes) -> str:
    """Upload a within-budget candidate's INT8 graph to the study's artifact store; its id."""
    storage.artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{trial.number}.onnx"
        path.write_bytes(graph)
        return upload_artifact(
            artifact_store=FileSystemArtifactStore(str(storage.artifacts)),
            file_path=str(path),
            study_or_trial=trial,
        )


def load_graph(storage: Storage, trial: FrozenTrial) -> bytes:
    """The INT8 graph kept for ``trial``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.onnx"
        download_artifact(
            artifact_store=FileSystemArtifactStore(str(storage.artifacts)),
            file_path=str(path),
            artifact_id=trial.user_attrs["graph_artifact"],
        )
        return path.read_bytes()


def stage_names_of(teacher: nn.Module, splits: data.Splits) -> list[str]:
    return [st.name for st in stages(teacher, splits.example())]

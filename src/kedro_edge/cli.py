"""``kedro edge ...``: thin commands over the functions the pipelines and tests call too.

Registered through the ``kedro.project_commands`` entry point, so they appear in every
Kedro project that has kedro-edge installed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from kedro_edge.errors import KedroEdgeError
from kedro_edge.fleet.commands import rollback_devices, survey, trust_host_keys
from kedro_edge.fleet.inventory import load_fleet
from kedro_edge.fleet.records import Status

DEVICES_FILE = click.option(
    "--devices-file", default="devices.yml", show_default=True, help="Fleet registry."
)
SELECT = [
    click.option("--devices", "names", default=None, help="Comma-separated device names (default: all)."),
    click.option("--group", default=None, help="Only devices of this group."),
]


def _select(f):
    for option in reversed(SELECT):
        f = option(f)
    return DEVICES_FILE(f)


def _on_devices(metadata, devices_file: str, names: str | None, group: str | None, action: Callable):
    """Load and select the fleet, run ``action(fleet, chosen)``; a user error becomes one CLI line."""
    root = Path(metadata.project_path) if metadata is not None else Path.cwd()
    try:
        fleet = load_fleet(root / devices_file)
        chosen = fleet.select(names.split(",") if names else None, group)
        return fleet, chosen, action(fleet, chosen)
    except KedroEdgeError as exc:
        raise click.ClickException(str(exc)) from None


def _exit_if_any_failed(outcomes) -> None:
    if any(o.status == Status.FAILED for o in outcomes):
        raise SystemExit(1)


def _short(sha: str | None, none: str = "none") -> str:
    return sha[:12] if sha else none


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f} GiB"


@click.group(name="kedro-edge")
def commands() -> None:
    """kedro-edge project commands."""


@commands.group()
def edge() -> None:
    """The fleet: see devices, trust host keys."""


@edge.command()
@_select
@click.option("--max-parallel", default=16, show_default=True, help="Devices contacted at once.")
@click.pass_obj
def devices(metadata, devices_file: str, names: str | None, group: str | None, max_parallel: int) -> None:
    """One row per device: reachable or why not, and what it is."""
    _, chosen, outcomes = _on_devices(
        metadata, devices_file, names, group, lambda fleet, chosen: survey(fleet, chosen, max_parallel)
    )
    table = Table(title=f"{len(chosen)} devices in {devices_file}")
    for column in (
        "device",
        "group",
        "reachable",
        "arch",
        "CPUs",
        "memory",
        "free disk",
        "python",
        "onnxruntime",
    ):
        table.add_column(column)
    by_name = {d.name: d for d in chosen}
    for o in outcomes:
        f = o.data
        if o.status == Status.OK:
            row = [
                "yes",
                f["arch"],
                str(f["cpu_count"]),
                _size(f["memory_bytes"]),
                _size(f["disk_free_bytes"]),
                f["python"],
                f["onnxruntime"],
            ]
        else:
            row = [f"[red]no: {o.error}[/red]"] + [""] * 6
        table.add_row(o.device, by_name[o.device].group, *row)
    Console().print(table)
    _exit_if_any_failed(outcomes)


@edge.command()
@_select
@click.pass_obj
def trust(metadata, devices_file: str, names: str | None, group: str | None) -> None:
    """Accept the devices' current host keys and record them in their known_hosts (explicit opt-in).

    Prints the SHA256 fingerprint accepted for each device: compare it with the device's own
    (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on its console).
    """
    _, _, outcomes = _on_devices(metadata, devices_file, names, group, trust_host_keys)
    for o in outcomes:
        click.echo(f"{o.device}: {_trusted(o.data) if o.status == Status.OK else o.error}")
    _exit_if_any_failed(outcomes)


def _trusted(key: dict) -> str:
    if key["fingerprint"] is None:
        return "local device, no host key"
    if key["pinned"]:
        return f"{key['fingerprint']} matches the fingerprint pinned in devices.yml (nothing recorded)"
    if key["recorded"]:
        return f"{key['fingerprint']} trusted and recorded in {key['known_hosts']}"
    return f"{key['fingerprint']} already trusted in {key['known_hosts']}"


def _last_figures(root: Path) -> dict[tuple[str, str], dict]:
    """(device, model sha256) -> the figures of the last deployment report, if any."""
    path = root / "data" / "08_reporting" / "device_benchmarks.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    return {
        (d["device"], d["model_sha256"]): d for d in report.get("devices", []) if d["status"] == Status.OK
    }


@edge.command()
@_select
@click.pass_obj
def status(metadata, devices_file: str, names: str | None, group: str | None) -> None:
    """Per device: reachable or not, active and previous versions, last benchmark figures."""
    fleet, chosen, outcomes = _on_devices(metadata, devices_file, names, group, survey)
    figures = _last_figures(Path(fleet.root))
    table = Table(title=f"{len(chosen)} devices in {devices_file}")
    for column in ("device", "reachable", "active", "previous", "p50 ms", "p90 ms", "top-1 parity"):
        table.add_column(column)
    for o in outcomes:
        if o.status != Status.OK:
            table.add_row(o.device, f"[red]no: {o.error}[/red]", "", "", "", "", "")
            continue
        current, previous = o.data["current"], o.data["previous"]
        last = figures.get((o.device, current), {})
        cells = [f"{last[k]:.3g}" if k in last else "-" for k in ("p50_ms", "p90_ms")]
        agreement = last.get("parity", {}).get("top1_agreement")
        table.add_row(o.device, "yes", _short(current), _short(previous), *cells,
                      "-" if agreement is None else f"{agreement:.3f}")  # fmt: skip
    Console().print(table)
    _exit_if_any_failed(outcomes)


@edge.command()
@_select
@click.option(
    "--to", "to", default=None, help="Roll back to this sha256 (released on the device, still there)."
)
@click.option("--force", is_flag=True, help="With --to: activate it even if it was never released there.")
@click.pass_obj
def rollback(
    metadata, devices_file: str, names: str | None, group: str | None, to: str | None, force: bool
) -> None:
    """Return devices to the release before their current one (repeat to walk further back).

    Never to a refused or rolled-back version; --to names an earlier release. A device in the
    middle of a rollout answers busy.
    """
    if force and not to:
        raise click.UsageError("--force needs --to SHA256")
    _, _, outcomes = _on_devices(
        metadata, devices_file, names, group, lambda fleet, chosen: rollback_devices(fleet, chosen, to, force)
    )
    for o in outcomes:
        if o.status == Status.OK:
            now, before = o.data["current"], o.data.get("rolled_back_from")
            forced = " (forced: recorded in its history)" if force else ""
            click.echo(f"{o.device}: {_short(before)} -> {_short(now, 'nothing active')}{forced}")
        else:
            click.echo(f"{o.device}: {o.error}")
    _exit_if_any_failed(outcomes)


@edge.command()
@click.option("--env", "-e", default=None, help="Kedro run environment (default: local).")
@click.pass_obj
def check(metadata, env: str | None) -> None:
    """Per compression stage: does it apply to the configured model, what would it touch, and the
    parameters and MACs after it. Seconds, no training, nothing written.

    Uses data/05_model_input (or makes the splits from raw_images in memory) and the configured
    teacher: model.checkpoint / model.onnx if given, else model.class_path untrained.
    """
    from kedro.framework.session import KedroSession

    from kedro_edge.nodes import split_dataset
    from kedro_edge.nodes.check import check_stages

    root = Path(metadata.project_path) if metadata is not None else Path.cwd()
    try:
        with KedroSession.create(project_path=root, env=env) as session:
            context = session.load_context()
            params, catalog = context.params, context.catalog
            splits = catalog.get("model_input")
            arrays = (
                splits.load()
                if splits.exists()
                else split_dataset(catalog.load("raw_images"), params["data"])
            )
            rows = check_stages(arrays, params["model"], params["training"], params["compression"])
    except KedroEdgeError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(
        title="kedro edge check: the configured model through each stage (untrained, a slice of the data)"
    )
    for column in ("stage", "applies", "params", "MACs", "what it does"):
        table.add_column(column, justify="right" if column in ("params", "MACs") else "left")
    for row in rows:
        table.add_row(
            row.stage, "yes" if row.applies else "no",
            "-" if row.params is None else f"{row.params:,}", "-" if row.macs is None else f"{row.macs:,}",
            row.detail,
        )  # fmt: skip
    Console(width=200).print(table)


@edge.command()
@click.option("--stage", "only", default=None, help="Only this dvc.yaml stage.")
@click.pass_obj
def deps(metadata, only: str | None) -> None:
    """The project files each DVC stage's `kedro run` runs; exits 1 naming any dvc.yaml misses.

    Found from the stage's cmd (its nodes, their imports, the catalog datasets and model classes it
    uses), so an edit to any of them makes `dvc status` list the stage.
    """
    from kedro.framework.project import pipelines

    from kedro_edge.lineage.deps import check

    root = Path(metadata.project_path) if metadata is not None else Path.cwd()
    found = check(root, pipelines)
    if only is not None:
        if only not in found:
            raise click.ClickException(f"dvc.yaml has no kedro stage {only!r} (it has: {', '.join(found)})")
        found = {only: found[only]}
    missing = False
    for stage, figures in found.items():
        click.echo(f"{stage}: {len(figures['code'])} files")
        for path in figures["code"]:
            flag = "  MISSING from dvc.yaml deps" if path in figures["missing"] else ""
            click.echo(f"  {path}{flag}")
        missing = missing or bool(figures["missing"])
    if missing:
        stale = {s: f["missing"] for s, f in found.items() if f["missing"]}
        raise click.ClickException(f"dvc.yaml: stage deps miss code the stage runs: {stale}")


@edge.command()
@click.argument("sha")
@click.option(
    "--restore", is_flag=True, help="Check its revision out into a worktree, restore and verify it."
)
@click.option("--into", type=click.Path(path_type=Path), default=None, help="With --restore: the folder.")
@click.option("--rebuild", is_flag=True, help="With --restore: dvc repro --force instead of the cache.")
@click.option("--offline", is_flag=True, help="Ask no device (the repository's records only).")
@click.option("--json", "as_json", is_flag=True, help="The lineage as JSON.")
@_select
@click.pass_obj
def lineage(
    metadata, sha: str, restore: bool, into: Path | None, rebuild: bool, offline: bool, as_json: bool,
    devices_file: str, names: str | None, group: str | None,
) -> None:  # fmt: skip
    """Where the model whose sha256 starts with SHA came from, and where it went.

    Its git revision and dirty flag, the dvc.lock entry and commit that pin it, that revision's
    parameters, metrics and search trial (or recipe), every release record naming it, and what
    each device says of it. From git, DVC and the release records; no server.
    """
    from kedro_edge.lineage import lineage as find
    from kedro_edge.lineage.restore import restore as restore_model
    from kedro_edge.lineage.show import render

    root = Path(metadata.project_path) if metadata is not None else Path.cwd()
    try:
        if restore:
            done = restore_model(root, sha, into, rebuild)
            click.echo(
                f"{done['sha256'][:12]}: {done['how']} at {done['commit'][:12]} -> {done['model']} "
                "(sha256 verified)"
            )
            return
        fleet = chosen = None
        if not offline and (root / devices_file).is_file():
            fleet = load_fleet(root / devices_file)
            chosen = fleet.select(names.split(",") if names else None, group)
        found = find(root, sha, fleet, chosen)
    except KedroEdgeError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
    else:
        render(found, Console())

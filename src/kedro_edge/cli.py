"""``kedro edge ...``: thin commands over the functions the pipelines and tests call too.

Registered through the ``kedro.project_commands`` entry point, so they appear in every
Kedro project that has kedro-edge installed.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from kedro_edge.errors import KedroEdgeError
from kedro_edge.fleet.deploy import survey
from kedro_edge.fleet.inventory import Fleet, load_fleet

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


def _fleet(metadata, devices_file: str, names: str | None, group: str | None) -> tuple[Fleet, list]:
    root = Path(metadata.project_path) if metadata is not None else Path.cwd()
    fleet = load_fleet(root / devices_file)
    chosen = fleet.select(names.split(",") if names else None, group)
    return fleet, chosen


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
    try:
        fleet, chosen = _fleet(metadata, devices_file, names, group)
        outcomes = survey(fleet, chosen, max_parallel)
    except KedroEdgeError as exc:
        raise click.ClickException(str(exc)) from None
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
        if o.status == "ok":
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
    if any(o.status == "failed" for o in outcomes):
        raise SystemExit(1)


@edge.command()
@_select
@click.pass_obj
def trust(metadata, devices_file: str, names: str | None, group: str | None) -> None:
    """Accept the devices' current host keys and record them in their known_hosts (explicit opt-in)."""
    try:
        fleet, chosen = _fleet(metadata, devices_file, names, group)
        outcomes = survey(fleet, chosen, trust_new_host_keys=True)
    except KedroEdgeError as exc:
        raise click.ClickException(str(exc)) from None
    for o in outcomes:
        click.echo(f"{o.device}: {'trusted and recorded' if o.status == 'ok' else o.error}")
    if any(o.status == "failed" for o in outcomes):
        raise SystemExit(1)

"""``kedro edge lineage``'s printout: one section per question a user asks of a model."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(found: dict[str, Any], console: Console) -> None:
    sha, version, locked = found["sha256"], found["version"] or {}, found["locked_in"]
    console.print(f"[bold]model {sha}[/]")
    if version:
        dirty = "yes (uncommitted changes)" if version.get("git_dirty") else "no"
        console.print(
            f"  built at git {_short(version.get('git_rev'))}, dirty: {dirty}; md5 {version.get('md5')}"
        )
        teacher = version.get("teacher")
        if teacher:
            where = f" {teacher['path']} sha256 {teacher['sha256']}" if teacher.get("path") else ""
            console.print(f"  teacher: {teacher['kind']}{where}")
        overrides = version.get("local_overrides") or []
        console.print(f"  conf/local overrides in force: {', '.join(overrides) if overrides else 'none'}")
    else:
        console.print(
            "  no validation or release record of this repository names it (known from the fleet only)"
        )
    if locked:
        console.print(
            f"  pinned by dvc.lock at {_short(locked['commit'])} ({locked['date']}, {locked['subject']!r}): "
            f"stage {locked['stage']} `{locked['cmd']}`, size {locked['out'].get('size')} bytes"
        )
        console.print(
            f"  restore: kedro edge lineage --restore {sha[:12]}  "
            f"(git checkout {_short(locked['commit'])} && dvc checkout)"
        )
        _revision(found["revision"], locked, console)
    else:
        console.print("  [yellow]no commit's dvc.lock pins it: it cannot be restored from this repository[/]")
    _releases(found["releases"], console)
    if found["fleet"] is not None:
        _fleet(found["fleet"], console)


def _revision(revision: dict[str, Any], locked: dict[str, Any], console: Console) -> None:
    if "search" in revision:
        s = revision["search"]
        console.print(
            f"  produced by: search {s['study']} on {s['target']}, trial #{s['trial']}: {s['settings']}"
        )
    else:
        console.print(f"  produced by: {revision['recipe']}")
    figures = revision.get("figures")
    if figures:
        ci = figures.get("accuracy_ci") or [None, None]
        console.print(
            f"  metrics at that revision: test accuracy {100 * figures['accuracy']:.2f}% "
            f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}] n={figures.get('n')}, "
            f"{figures.get('size_bytes')} bytes, "
            f"p50 {_ms(figures.get('latency_p50_ms'))} ms on the host"
        )
    table = Table(title=f"parameters in dvc.lock at {_short(locked['commit'])}", show_lines=False)
    table.add_column("parameter")
    table.add_column("value")
    for key, value in sorted(locked["params"].items()):
        table.add_row(key, str(value))
    console.print(table)


def _releases(releases: list[dict[str, Any]], console: Console) -> None:
    if not releases:
        console.print("  no release record names it")
        return
    table = Table(title="releases naming it")
    for col in ("created (UTC)", "verdict", "role", "device", "decision", "p50 ms", "p90 ms", "top-1 parity"):
        table.add_column(col)
    for r in releases:
        rows = r["devices"] or [{}]
        for d in rows:
            own = r["role"] == "candidate"  # a replaced model's row shows the candidate's figures: hidden
            agreement = d.get("top1_agreement") if own else None
            table.add_row(
                r["created_utc"] or "-", r["verdict"] or "-", r["role"], d.get("device") or "-",
                d.get("decision") or "-", _ms(d.get("p50_ms") if own else None),
                _ms(d.get("p90_ms") if own else None), "-" if agreement is None else f"{agreement:.3f}",
            )  # fmt: skip
    console.print(table)


def _fleet(devices: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="on the fleet now")
    for col in ("device", "holds", "active", "previous", "standing release", "history"):
        table.add_column(col)
    for d in devices:
        if "error" in d:
            table.add_row(d["device"], f"[red]unreachable: {d['error']}[/]", "", "", "", "")
            continue
        history = "; ".join(
            f"{e.get('at')} {e.get('event')}" + (f" -> {_short(e['to'])}" if e.get("to") else "")
            for e in d["events"]
        )
        yes = {True: "yes", False: "no"}
        table.add_row(
            d["device"],
            yes[d["holds"]],
            yes[d["active"]],
            yes[d["previous"]],
            yes[d["standing_release"]],
            history or "-",
        )
    console.print(table)

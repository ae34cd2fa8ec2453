"""Rich progress bars for long work (training epochs, pruning steps, latency runs)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(refresh_per_second: float = 10) -> Progress:
    """A progress display: description, bar, n/total, elapsed, remaining, and a status field.

    Each redraw renders the whole display in this process: work that counts its own CPU (a
    rollout to hundreds of devices) asks for fewer.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        refresh_per_second=refresh_per_second,
    )

"""A model's history from git and DVC alone: the revision whose ``dvc.lock`` pins it, that
revision's parameters, metrics and search record, and every release record that names it.

Records are read from the work tree and from every commit that changed them (``git log``,
``git show``), so nothing beyond the repository is needed: the validation record and the
release record name the model by sha256 and carry its version (DVC md5, git revision at build,
dirty flag, ``conf/local`` overrides); ``dvc.lock`` maps the md5 to the commit that can restore it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from kedro_edge.errors import DataError
from kedro_edge.lineage.versioning import git
from kedro_edge.param_sources import leaves

MODEL = "data/06_models/model.onnx"
VALIDATED = "data/08_reporting/validated_model.json"
RELEASE = "data/08_reporting/release.json"
SEARCH = "data/08_reporting/search.json"
LOCK = "dvc.lock"
WORK_TREE = "work tree"  # a record not committed yet


def text_at(root: Path, rev: str, path: str) -> str | None:
    """``path`` as ``rev`` has it (``WORK_TREE``: the file on disk); None if it has none."""
    if rev == WORK_TREE:
        file = root / path
        return file.read_text() if file.is_file() else None
    return _committed(root, rev, path)


@functools.lru_cache(maxsize=1024)
def _committed(root: Path, rev: str, path: str) -> str | None:
    """``git show rev:path``, once per commit: a commit's files never change (the release
    records are read by both ``known_models`` and ``releases``)."""
    return git(root, "show", f"{rev}:{path}")


def commits(root: Path, *paths: str) -> list[str]:
    """Commits that changed ``paths``, newest first (none outside git)."""
    out = git(root, "log", "--format=%H", "--", *paths)
    return out.split() if out else []


def _json(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _records(root: Path, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(revision, record)`` for the work tree's ``path`` and each commit's, newest first."""
    for rev in (WORK_TREE, *commits(root, path)):
        record = _json(text_at(root, rev, path))
        if record is not None:
            yield rev, record


def known_models(root: Path) -> dict[str, dict[str, Any]]:
    """Every model a validation or release record names: sha256 -> its version record (newest)."""
    found: dict[str, dict[str, Any]] = {}
    for _, record in _records(root, VALIDATED):
        model = record.get("model") or {}
        if model.get("sha256"):
            found.setdefault(model["sha256"], model)
    for _, record in _records(root, RELEASE):
        model = record.get("candidate") or {}
        if model.get("sha256"):
            found.setdefault(model["sha256"], model)
    return found


def resolve(prefix: str, shas: Iterable[str]) -> str:
    """The one sha256 in ``shas`` that starts with ``prefix``; a clear error otherwise."""
    prefix = prefix.strip().lower()
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise DataError(f"sha256 prefix {prefix!r}: give at least 4 hex digits")
    matches = sorted({s for s in shas if s.startswith(prefix)})
    if not matches:
        raise DataError(f"no model with sha256 {prefix}… in this repository's records or on the fleet")
    if len(matches) > 1:
        raise DataError(f"sha256 {prefix}… is ambiguous: {', '.join(m[:16] for m in matches)}")
    return matches[0]


def locked_in(root: Path, md5: str | None) -> dict[str, Any] | None:
    """The first commit whose ``dvc.lock`` pins ``MODEL`` at ``md5``: the stage's entry, the params
    of every stage of that lock, and the commit's date and subject. None if no commit does."""
    if not md5:
        return None
    for rev in reversed(commits(root, LOCK)):  # oldest first: the commit that made it
        lock = yaml.safe_load(text_at(root, rev, LOCK) or "") or {}
        for name, stage in (lock.get("stages") or {}).items():
            out = next((o for o in stage.get("outs", []) if o.get("path") == MODEL), None)
            if out is None or out.get("md5") != md5:
                continue
            date, _, subject = (git(root, "show", "-s", "--format=%cI %s", rev) or "").partition(" ")
            params = {
                ".".join(path): value
                for st in lock["stages"].values()
                for values in (st.get("params") or {}).values()
                for path, value in leaves(values)
            }
            return {
                "commit": rev,
                "date": date,
                "subject": subject,
                "stage": name,
                "cmd": stage.get("cmd"),
                "out": out,
                "params": params,
            }
    return None


def at_revision(root: Path, rev: str, sha: str) -> dict[str, Any]:
    """The validation figures and the search record of ``rev``, as far as they are this model's."""
    validated = _json(text_at(root, rev, VALIDATED)) or {}
    figures = None
    if (validated.get("model") or {}).get("sha256") == sha:
        figures = validated.get("figures")
    search = _json(text_at(root, rev, SEARCH)) or {}
    if not search:
        produced = {"recipe": "no search record at this revision"}
    elif not search.get("enabled"):
        produced = {"recipe": "conf/base's compression parameters (the search was off)"}
    else:
        chosen = search.get("chosen") or {}
        produced = {
            "search": {
                "study": search.get("study"),
                "target": search.get("target"),
                "trial": chosen.get("trial"),
                "settings": chosen.get("settings"),
                "outcome": search.get("outcome"),
            }
        }
    return {"figures": figures, **produced}


def releases(root: Path, sha: str) -> list[dict[str, Any]]:
    """Every release record that shipped ``sha`` or replaced it, oldest first, once each."""
    seen, out = set(), []
    for rev, record in _records(root, RELEASE):
        candidate = (record.get("candidate") or {}).get("sha256")
        if sha not in (candidate, record.get("previous_sha256")):
            continue
        key = (record.get("created_utc"), candidate)
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "created_utc": record.get("created_utc"),
                "recorded_in": rev,
                "verdict": record.get("verdict"),
                "role": "candidate" if candidate == sha else "replaced",
                "candidate": candidate,
                "devices": [
                    {
                        "device": d.get("device"),
                        "decision": d.get("decision"),
                        "reason": d.get("reason"),
                        "p50_ms": (d.get("figures") or {}).get("p50_ms"),
                        "p90_ms": (d.get("figures") or {}).get("p90_ms"),
                        "top1_agreement": ((d.get("figures") or {}).get("parity") or {}).get(
                            "top1_agreement"
                        ),
                    }
                    for d in record.get("devices", [])
                ],
            }
        )
    return sorted(out, key=lambda r: r["created_utc"] or "")

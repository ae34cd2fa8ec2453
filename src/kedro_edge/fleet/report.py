"""What a rollout leaves behind: the release record, the benchmark report, a readable summary."""

from __future__ import annotations

from typing import Any

from kedro_edge.fleet.params import DeploymentParams
from kedro_edge.fleet.records import (
    COSTS,
    WENT_WRONG,
    BenchmarkReport,
    Decision,
    DeviceBenchmark,
    DeviceEntry,
    DeviceRelease,
    ReleaseRecord,
    RolloutOutcome,
    Status,
)

FIGURES = (
    "runs",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "min_ms",
    "max_ms",
    "load_ms",
    "peak_rss_mb",
)


def release_record(
    outcome: RolloutOutcome, candidate: dict[str, Any], created: str, cfg: DeploymentParams
) -> ReleaseRecord:
    """release.json: verdict, candidate (sha256, DVC md5, git revision), waves, every decision."""
    devices = []
    for entry in outcome.devices:
        m = entry.measurement or {}
        figures = {k: m[k] for k in FIGURES if k in m}
        if m.get("baseline"):
            figures["current_p50_ms"] = m["baseline"]["p50_ms"]
            figures["current_p90_ms"] = m["baseline"]["p90_ms"]
        if m.get("parity"):
            figures["parity"] = m["parity"]
        devices.append(DeviceRelease(
            device=entry.device, group=entry.group, wave=entry.wave, decision=entry.decision,
            reason=entry.reason or entry.error, failure=entry.failure,
            previous_sha256=entry.before, active_after=entry.active_after,
            gates=entry.gates or [], figures=figures, bytes_sent=entry.bytes_sent,
        ))  # fmt: skip
    previous = sorted({d.previous_sha256 for d in devices if d.previous_sha256})
    return ReleaseRecord(
        verdict=outcome.verdict, rollout_id=outcome.rollout_id, resumed=bool(outcome.resumed),
        candidate=candidate, shipping={**outcome.shipping, "codec": cfg.codec},
        previous_sha256=previous[0] if len(previous) == 1 else (previous or None),  # None: first release
        created_utc=created,
        policy={"waves": cfg.waves, "max_failure_percentage": cfg.max_failure_percentage,
                "unreachable_is_failure": cfg.unreachable_is_failure,
                "regression": cfg.regression.model_dump()},
        waves=outcome.waves, devices=devices,
    )  # fmt: skip


def benchmarks(candidate: dict[str, Any], entries: list[DeviceEntry]) -> BenchmarkReport:
    """device_benchmarks.json: per device ``ok``/``failed``, latency figures, parity, device facts."""
    devices = []
    for entry in entries:
        m = entry.measurement
        failed = m is None and entry.decision != Decision.ALREADY_ACTIVE
        row = DeviceBenchmark(
            device=entry.device, group=entry.group, status=Status.FAILED if failed else Status.OK,
            error=entry.error if failed else None, model_sha256=candidate["sha256"],
        )  # fmt: skip
        if m:
            row.update(**{k: m[k] for k in FIGURES}, parity=m["parity"], facts=m["facts"],
                       samples_ms=m["samples_ms"], providers=m["providers"])  # fmt: skip
            if m.get("baseline"):
                base = m["baseline"]
                row.baseline = {k: base[k] for k in (*FIGURES[:-1], "samples_ms") if k in base}
        row.update(**{key: getattr(entry, key) for key in COSTS if key in entry.model_fields_set})
        devices.append(row)
    failed = sum(d.status == Status.FAILED for d in devices)
    summary = {"devices": len(devices), "ok": len(devices) - failed, "failed": failed}
    return BenchmarkReport(model=candidate, devices=devices, summary=summary)


def one_line(record: dict[str, Any]) -> str:
    """Why the release did not go out, in one line naming the devices."""
    bad = [d for d in record["devices"] if d["decision"] in WENT_WRONG]
    first = "; ".join(f"{d['device']}: {d['reason']}" for d in bad[:2]) + (" ..." if len(bad) > 2 else "")
    return (
        f"release {record['verdict']} ({record['candidate']['sha256'][:12]}): {first or 'see release.json'}"
    )


def _shipping_line(shipping: dict[str, Any]) -> list[str]:
    if not shipping.get("model_bytes"):
        return []
    model = f"{shipping['model_bytes']:,} bytes as {shipping['model_shipped_bytes']:,} ({shipping['codec']})"
    return [f"- shipped: {shipping['shipped_bytes']:,} bytes to each device that lacked it: model.onnx "
            f"{model}, manifest and parity batch"]  # fmt: skip


def markdown(record: dict[str, Any], plot: str) -> str:
    """A readable release report: verdict, waves, and per device the gate table."""
    lines = [
        f"# Release {record['candidate']['sha256'][:12]}: **{record['verdict']}**", "",
        f"- candidate: `{record['candidate']['sha256']}` (git `{record['candidate'].get('git_rev')}`, "
        f"DVC md5 `{record['candidate'].get('dvc_md5')}`)",
        f"- previous: `{record['previous_sha256'] or 'none (first release)'}`",
        *_shipping_line(record.get("shipping") or {}),
        f"- at: {record['created_utc']}", "",
        "| wave | devices | failed | outcome |", "| --- | --- | --- | --- |",
    ]  # fmt: skip
    for w in record["waves"]:
        lines.append(
            f"| {w['wave']} | {', '.join(w['devices'])} | {', '.join(w['failed']) or '-'} | {w['outcome']} |"
        )
    lines += ["", f"![candidate vs current latency per device]({plot})", ""]
    for d in record["devices"]:
        f = d["figures"]
        lines += [f"## {d['device']} ({d['group']}): {d['decision']}", ""]
        if "p50_ms" in f:
            current = (
                f" (current {f['current_p50_ms']:.4g} / {f['current_p90_ms']:.4g})"
                if "current_p50_ms" in f
                else ""
            )
            lines.append(f"p50 / p90: {f['p50_ms']:.4g} / {f['p90_ms']:.4g} ms{current}; "
                         f"load {f['load_ms']:.3g} ms; peak RSS {f['peak_rss_mb']:.0f} MB")  # fmt: skip
        if d["gates"]:
            lines += ["", "| gate | passed | value | limit | reason |", "| --- | --- | --- | --- | --- |"]
            for g in d["gates"]:
                ok = "yes" if g["passed"] else "**no**"
                lines.append(f"| {g['gate']} | {ok} | {g['value']:.4g} | {g['limit']:.4g} | {g['reason']} |")
        elif d["reason"]:
            lines.append(f"{d['reason']}")
        lines.append("")
    return "\n".join(lines)

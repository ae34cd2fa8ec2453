"""The on-device agent, run as a separate process with this interpreter (as a device would)."""

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kedro_edge.bench import agent
from kedro_edge.export import to_onnx

AGENT = Path(agent.__file__)


def call(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, text=True, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (done.returncode == 0) == result["ok"]
    return result


def stage(workdir: Path, name: str, content: bytes) -> tuple[str, Path]:
    staging = workdir / "versions" / f".incoming-{name}"
    staging.mkdir(parents=True)
    (staging / "model.onnx").write_bytes(content)
    return hashlib.sha256(content).hexdigest(), staging


def test_agent_is_self_contained_python_3_8():
    tree = ast.parse(AGENT.read_text(), feature_version=(3, 8))  # devices may run Python 3.8
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported <= set(sys.stdlib_module_names) | {"numpy", "onnxruntime"}


def test_install_verifies_renames_and_swaps_current_and_previous(tmp_path):
    wd = tmp_path / "work dir; 'quoted'"
    sha1, staged1 = stage(wd, "a", b"model one")
    first = call("install", str(wd), sha1, str(staged1), "--activate")
    assert (first["status"], first["current"], first["previous"]) == ("installed", sha1, None)
    assert (wd / "current" / "model.onnx").read_bytes() == b"model one"
    assert not staged1.exists()

    sha2, staged2 = stage(wd, "b", b"model two")
    second = call("install", str(wd), sha2, str(staged2), "--activate")
    assert (second["current"], second["previous"]) == (sha2, sha1)
    assert os.readlink(wd / "current") == f"versions/{sha2}"  # relative: the workdir can move
    assert (wd / "previous" / "model.onnx").read_bytes() == b"model one"

    again = call("install", str(wd), sha2, "-", "--activate")
    assert again["status"] == "present" and again["previous"] == sha1


def test_a_corrupt_transfer_is_refused_and_nothing_points_at_it(tmp_path):
    wd = tmp_path / "wd"
    good_sha, staged = stage(wd, "good", b"good")
    call("install", str(wd), good_sha, str(staged), "--activate")
    sha, staged = stage(wd, "bad", b"the bytes that were sent")
    (staged / "model.onnx").write_bytes(b"the bytes that arri")  # truncated on the way
    result = call("install", str(wd), sha, str(staged), "--activate")
    assert not result["ok"] and "sha256 mismatch on device" in result["error"]
    assert not (wd / "versions" / sha).exists()
    assert os.readlink(wd / "current") == f"versions/{good_sha}"


def test_leftovers_of_an_interrupted_transfer_are_cleaned_by_the_next_install(tmp_path):
    wd = tmp_path / "wd"
    sha, staged = stage(wd, "x", b"model")
    leftover = wd / "versions" / f".incoming-{sha}-dead"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"mod")  # half of it
    staged.rename(wd / "versions" / f".incoming-{sha}-live")
    call("install", str(wd), sha, str(wd / "versions" / f".incoming-{sha}-live"), "--activate")
    assert sorted(p.name for p in (wd / "versions").iterdir()) == [sha]


def test_facts_describe_the_machine_and_create_nothing(tmp_path):
    facts = call("facts", str(tmp_path / "new workdir" / "nested"))
    assert facts["cpu_count"] >= 1 and facts["python"].startswith("3.")
    assert facts["disk_free_bytes"] > 0 and facts["current"] is None
    assert list(tmp_path.iterdir()) == []  # a workdir that isn't there stays so


def test_facts_run_from_the_command_line_source_as_status_does(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", AGENT.read_text(), "facts", "relative workdir"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    facts = json.loads(done.stdout)
    assert done.returncode == 0 and facts["ok"] and facts["workdir"] == str(tmp_path / "relative workdir")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("threads", [1])
def test_bench_reports_single_stream_latency_and_parity_outputs(tmp_path, teacher, splits, threads):
    model = tmp_path / "versions" / "abc" / "model.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(to_onnx(teacher, splits.input_shape).SerializeToString())
    parity = tmp_path / "versions" / "abc" / "parity.npy"
    np.save(parity, splits.x("test")[:5])
    result = call(
        "bench",
        str(model),
        str(parity),
        "--threads",
        str(threads),
        "--warmup",
        "3",
        "--min-runs",
        "40",
        "--min-seconds",
        "0",
    )
    assert result["runs"] >= 40 and len(result["samples_ms"]) == result["runs"]
    assert (
        0 < result["min_ms"] <= result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"] <= result["max_ms"]
    )
    assert result["load_ms"] > 0 and 10 < result["peak_rss_mb"] < 2000
    assert np.asarray(result["parity_outputs"]).shape == (5, 10)

"""The on-device agent, run as a separate process with this interpreter (as a device would)."""

import ast
import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kedro_edge.bench import agent
from kedro_edge.runtimes.onnx_export import to_onnx

AGENT = Path(agent.__file__)


def call(*args: str, stdin: bytes = b"") -> dict:
    done = subprocess.run([sys.executable, str(AGENT), *args], input=stdin, capture_output=True, timeout=120)
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert (done.returncode == 0) == result["ok"]
    return result


def receive(wd: Path, sha: str, sent: bytes, lease: str, size: int | None = None) -> tuple[dict, list[dict]]:
    """``begin --files`` with the model on stdin (the controller sends it after the first line)."""
    files = f"model.onnx:{len(sent) if size is None else size}"
    done = subprocess.run(
        [sys.executable, str(AGENT), "begin", str(wd), sha, "--lease", lease, "--files", files],
        input=sent, capture_output=True, timeout=120,
    )  # fmt: skip
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert (done.returncode == 0) == lines[-1]["ok"]
    return lines[-1], lines[:-1]


def stage(workdir: Path, name: str, content: bytes) -> tuple[str, Path]:
    """What a transfer that died half-way leaves: a staging folder."""
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


def release(wd: Path, content: bytes, lease: str = "r1") -> dict:
    """begin (receiving the model) -> activate, as a rollout does."""
    sha = hashlib.sha256(content).hexdigest()
    done, first = receive(wd, sha, content, lease)
    assert [f["model"] for f in first] == ["no"] and done["install"] == "installed"
    assert not list((wd / "versions").glob(".incoming-*"))
    return call("activate", str(wd), sha, "--lease", lease, "--release")


def test_install_verifies_renames_and_activation_swaps_current_and_previous(tmp_path):
    wd = tmp_path / "work dir; 'quoted'"
    first = release(wd, b"model one")
    sha1 = hashlib.sha256(b"model one").hexdigest()
    assert (first["current"], first["previous"]) == (sha1, None)
    assert (wd / "current" / "model.onnx").read_bytes() == b"model one"
    second = release(wd, b"model two")
    sha2 = hashlib.sha256(b"model two").hexdigest()
    assert (second["current"], second["previous"]) == (sha2, sha1)
    assert os.readlink(wd / "current") == f"versions/{sha2}"  # relative: the workdir can move
    assert (wd / "previous" / "model.onnx").read_bytes() == b"model one"
    assert call("begin", str(wd), sha2, "--lease", "r3")["model"] == "yes"
    assert not (wd / ".rollout").exists() or call("release", str(wd), "--lease", "r3")["ok"]


def test_a_corrupt_or_short_transfer_is_refused_and_nothing_is_left_or_points_at_it(tmp_path):
    wd = tmp_path / "wd"
    release(wd, b"good")
    good = f"versions/{hashlib.sha256(b'good').hexdigest()}"
    sha = hashlib.sha256(b"the bytes that were sent").hexdigest()
    corrupt, _ = receive(wd, sha, b"the bytes that WERE sent", "r2")  # same size, other bytes
    assert not corrupt["ok"] and "sha256 mismatch on device" in corrupt["error"]
    short, _ = receive(wd, sha, b"the bytes that", "r2", size=len(b"the bytes that were sent"))
    assert not short["ok"] and short["error"] == "upload incomplete: model.onnx ended after 14 of 24 bytes"
    assert not (wd / "versions" / sha).exists() and not list((wd / "versions").glob(".incoming-*"))
    assert os.readlink(wd / "current") == good and not (wd / ".rollout").exists()  # lease given up


def test_leftovers_of_an_interrupted_transfer_are_cleaned_when_a_rollout_begins(tmp_path):
    wd = tmp_path / "wd"
    sha, _ = stage(wd, "dead", b"mod")  # half of an upload whose connection died
    begun = call("begin", str(wd), hashlib.sha256(b"model").hexdigest(), "--lease", "r1")
    assert begun["cleaned"] == 1 and not list((wd / "versions").glob(".incoming-*"))


def test_a_lease_excludes_other_rollouts_until_released_or_lapsed(tmp_path):
    wd = tmp_path / "wd"
    release(wd, b"one")
    assert call("renew", str(wd), "--lease", "mine", "--ttl", "2")["ok"]
    busy = call("rollback", str(wd), "--lease", "theirs", "--lock-timeout", "0.5")
    assert not busy["ok"] and busy["error"].startswith("busy: rollout mine")
    assert call("release", str(wd), "--lease", "theirs")["ok"]  # not theirs to give up
    assert (wd / ".rollout").exists()
    assert call("begin", str(wd), "0" * 64, "--lease", "theirs", "--lock-timeout", "5")["ok"]  # lapsed


def test_rollback_walks_back_through_releases_and_never_to_a_refused_one(tmp_path):
    wd = tmp_path / "wd"
    shas = [hashlib.sha256(m).hexdigest() for m in (b"a", b"b", b"c")]
    for m in (b"a", b"b", b"c"):
        release(wd, m)
    refused = hashlib.sha256(b"refused one").hexdigest()
    receive(wd, refused, b"refused one", "x")
    call("refuse", str(wd), refused, "--lease", "x", "--reason", "p90 too high")
    assert call("rollback", str(wd), "--lease", "u", "--release")["current"] == shas[1]
    assert call("rollback", str(wd), "--lease", "u", "--release")["current"] == shas[0]
    nothing = call("rollback", str(wd), "--lease", "u", "--release")
    assert not nothing["ok"] and "nothing older" in nothing["error"]
    no = call("rollback", str(wd), "--lease", "u", "--release", "--to", refused)
    assert not no["ok"] and "was refused on this device" in no["error"]
    no = call("rollback", str(wd), "--lease", "u", "--release", "--to", shas[2])
    assert not no["ok"] and "was not released" in no["error"]  # it was rolled back
    assert os.readlink(wd / "current") == f"versions/{shas[0]}" and not (wd / ".rollout").exists()
    events = [json.loads(line)["event"] for line in (wd / "history").read_text().splitlines()]
    assert events == ["released"] * 3 + ["refused", "rolled back", "rolled back"]


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


def test_a_compressed_model_is_decompressed_and_its_sha256_checked_on_the_device(tmp_path):
    import lzma

    wd = tmp_path / "wd"
    content = bytes(range(256)) * 400  # compresses well
    sha, packed = hashlib.sha256(content).hexdigest(), lzma.compress(content)
    assert len(packed) < len(content) / 20
    argv = ["begin", str(wd), sha, "--lease", "c", "--files", f"model.onnx.xz:{len(packed)}"]
    done = subprocess.run([sys.executable, str(AGENT), *argv], input=packed, capture_output=True, timeout=60)
    answer = json.loads(done.stdout.decode().splitlines()[-1])
    assert answer["install"] == "installed"
    assert (wd / "versions" / sha / "model.onnx").read_bytes() == content  # stored decompressed
    assert not (wd / "versions" / sha / "model.onnx.xz").exists()
    call("release", str(wd), "--lease", "c")
    other = hashlib.sha256(b"x" + content).hexdigest()
    for sent, why in ((packed[:-40], "is truncated"), (packed[:100] + b"\0" * 50 + packed[150:], "corrupt")):
        argv = ["begin", str(wd), other, "--lease", "c", "--files", f"model.onnx.xz:{len(sent)}"]
        done = subprocess.run(
            [sys.executable, str(AGENT), *argv], input=sent, capture_output=True, timeout=60
        )
        answer = json.loads(done.stdout.decode().splitlines()[-1])
        assert not answer["ok"] and why in answer["error"], answer
        assert not list((wd / "versions").glob(".incoming-*")) and not (wd / "versions" / other).exists()


# -- measure: a search's batch against a reference, in-process ------------------------------------
FAST = {"providers": ["CPUExecutionProvider"], "threads": 1, "warmup": 2, "min_runs": 4}
FAST.update(min_seconds=0.0, max_samples=1, blocks=3)


@pytest.fixture(scope="module")
def onnx_models() -> list[bytes]:
    """A reference and two candidates: tiny conv nets of different widths."""
    from kedro_edge.models import ResidualCNN

    return [
        to_onnx(ResidualCNN(widths=w).eval(), (1, 1, 8, 8)).SerializeToString()
        for w in ((8, 16), (4, 8), (16, 16))
    ]


def batch(models: list[bytes], sent: dict[str, bytes] | None = None) -> tuple[list, dict[str, bytes]]:
    """``--files`` and the bytes of each file: the models lzma'd under their sha256, then inputs.npy.
    ``sent`` replaces what goes on the wire for some names (a model whose bytes lie)."""
    wire = {f"{hashlib.sha256(m).hexdigest()}.onnx.xz": lzma.compress(m) for m in models}
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32))
    wire["inputs.npy"] = buffer.getvalue()
    wire.update(sent or {})
    return [(name, len(data)) for name, data in wire.items()], wire


def measure(wd: Path, reference: bytes, files: list, wire: dict[str, bytes]) -> tuple[dict, list[dict]]:
    """The agent's ``measure`` as the controller drives it: the files it asks for, in order."""
    said = []

    class Stream:  # stdin: what the first line asked for, sent once it was said
        def __init__(self):
            self.data = None

        def read(self, n):
            if self.data is None:
                self.data = io.BytesIO(b"".join(wire[name] for name, _ in files if name in said[0]["need"]))
            return self.data.read(n)

    answer = agent.measure(
        wd, hashlib.sha256(reference).hexdigest(), files, Stream(), said.append, dict(FAST)
    )
    return answer, said


def test_measure_gives_each_candidate_a_ratio_to_the_reference_and_caches_models_by_sha256(
    tmp_path, onnx_models
):
    reference, *candidates = onnx_models
    files, wire = batch(onnx_models)
    answer, said = measure(tmp_path, reference, files, wire)
    assert said == [{"ok": True, "need": [name for name, _ in files]}]
    shas = [hashlib.sha256(m).hexdigest() for m in candidates]
    assert sorted(answer["results"]) == sorted(shas)  # the reference is no key
    for result in answer["results"].values():
        assert len(result["block_ratios"]) == FAST["blocks"]
        assert result["ratio"] == float(np.median(result["block_ratios"]))
        assert result["p50_ms"] > 0 and result["reference_p50_ms"] > 0
        assert set(result) == {"ratio", "p50_ms", "reference_p50_ms", "block_ratios"}
    assert answer["received_bytes"] == sum(size for _, size in files)
    assert answer["facts"]["workdir"] == str(tmp_path) and "arch" in answer["facts"]
    cache = tmp_path / "search-cache"
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [".lock"] + [f"{hashlib.sha256(m).hexdigest()}.onnx" for m in onnx_models]
    )
    assert (cache / f"{shas[0]}.onnx").read_bytes() == candidates[0]  # stored decompressed
    again, said = measure(tmp_path, reference, files, wire)  # a cache hit: only the inputs move
    assert said[0]["need"] == ["inputs.npy"] and again["received_bytes"] == len(wire["inputs.npy"])
    assert sorted(again["results"]) == sorted(shas)
    assert not (tmp_path / "versions").exists() and not (tmp_path / ".rollout").exists()  # no rollout state


def test_measure_refuses_a_model_whose_bytes_are_not_its_name_and_caches_nothing_of_it(tmp_path, onnx_models):
    reference, candidate, other = onnx_models
    name = f"{hashlib.sha256(candidate).hexdigest()}.onnx.xz"
    files, wire = batch([reference, candidate], sent={name: lzma.compress(other)})  # same name, other bytes
    with pytest.raises(agent.Refused, match=f"sha256 mismatch on device: {name} decompresses to sha256 "):
        measure(tmp_path, reference, files, wire)
    cached = sorted(p.name for p in (tmp_path / "search-cache").iterdir())
    assert cached == [".lock", f"{hashlib.sha256(reference).hexdigest()}.onnx"]  # no temporary left either


def test_measure_refuses_a_batch_without_its_reference_or_inputs_before_asking_for_bytes(
    tmp_path, onnx_models
):
    reference, candidate, _ = onnx_models
    files, wire = batch([candidate])
    with pytest.raises(agent.Refused, match="the reference .* is not among the models"):
        measure(tmp_path, reference, files, wire)
    files, wire = batch([reference, candidate])
    with pytest.raises(agent.Refused, match="one inputs.npy in --files, got 0"):
        measure(tmp_path, reference, files[:-1], wire)


def test_the_cache_keeps_the_most_recently_used_models(tmp_path):
    cache = tmp_path / "search-cache"
    cache.mkdir()
    names = [f"{hashlib.sha256(bytes([i])).hexdigest()}.onnx" for i in range(5)]
    for age, name in enumerate(names):
        (cache / name).write_bytes(b"m")
        os.utime(cache / name, (1000 - age, 1000 - age))  # names[0] used last
    (cache / ".tmp-1-inputs.npy").write_bytes(b"")  # no model: never evicted here
    fd = os.open(cache / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        agent._evict(str(cache), fd, 2)
    finally:
        os.close(fd)
    assert sorted(p.name for p in cache.iterdir()) == sorted([".lock", ".tmp-1-inputs.npy", *names[:2]])

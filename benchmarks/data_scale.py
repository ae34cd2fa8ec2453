"""Benchmark: data at its real size (issue 23): peak memory flat in N, streamed throughput.

A user's folder of RGB JPEG files at 224x224 (the default task's glyphs drawn at 56x56, each
coloured with a seeded ink and paper colour and upscaled, written once under ``--work-dir``) of
10,000, 50,000 and 100,000 images (``--sizes``; the smaller folders are hard links to the first
files of the largest). Per size, each stage runs in a fresh process that samples its own
anonymous memory (``RssAnon``, plus its children's: ``kedro_edge.testing.memory``) and times
itself:

- ``decode``      ``ImageFolderDataset`` (parallel PIL decode into the uint8 store);
- ``split``       the ``split_dataset`` node and ``ModelInputDataset.save`` (index lists + store);
- ``train``       one epoch of ``fit`` over the streamed training split (a small CNN, plus its
                  validation pass);
- ``calibrate``   256 calibration samples and ONNX Runtime static INT8 of the trained model;
- ``evaluate``    ``ort_predict`` of the INT8 model over the streamed test split (2 threads);
- ``peer_train``  / ``peer_evaluate``: the same epoch and the same evaluation through a plain
                  PyTorch ``DataLoader`` over the same JPEG files (a torchvision ``ImageFolder``
                  + ``ToTensor``-style dataset: PIL decode per item, 2 worker processes).

Targets: peak anonymous memory flat in N and at most 3 GB at 100,000 images; evaluation
throughput within 1.2x of the plain ``DataLoader`` (ours / theirs >= 1/1.2). Writes
``benchmarks/results/data_scale.json`` and ``data_scale.png``. Run from the project root on an
otherwise idle machine; needs ~35 GB free under ``--work-dir`` for 100,000 images:

    .venv/bin/python benchmarks/data_scale.py [--sizes 10000,50000,100000] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224
CLASSES = 10
STAGES = ("decode", "split", "train", "calibrate", "evaluate", "peer_train", "peer_evaluate")
TARGET_PEAK_GB = 3.0
TARGET_EVAL_RATIO = 1 / 1.2
PARAMS = {"seed": 42, "val_fraction": 0.1, "test_fraction": 0.26, "image_size": SIZE}


# --- the folder ----------------------------------------------------------------------------------
def _write_chunk(args: tuple[Path, int, int]) -> None:
    from PIL import Image

    from kedro_edge.data.glyphs import GlyphSpec, render

    folder, start, stop = args
    spec = GlyphSpec(n_per_class=1, size=56, seed=0)
    for i in range(start, stop):
        label = i % CLASSES
        gray = render(i, label, spec).astype(np.float32) / 255
        rng = np.random.default_rng([1, i])
        ink, paper = rng.uniform(0, 0.5, 3), rng.uniform(0.5, 1, 3)
        rgb = (gray[..., None] * paper + (1 - gray[..., None]) * ink) * 255
        img = Image.fromarray(rgb.astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR)
        img.save(folder / "ABCDEFGHIJ"[label] / f"{i:06d}.jpg", quality=90)


def _empty_folder(work: Path, n: int) -> Path:
    """``work/jpeg_<n>`` with empty class folders, unless a finished one (``.done``) is there."""
    folder = work / f"jpeg_{n}"
    if not (folder / ".done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        for c in "ABCDEFGHIJ":
            (folder / c).mkdir(parents=True)
    return folder


def make_folder(work: Path, n: int) -> Path:
    """``n`` JPEG files in class folders, written once (``.done`` marks a finished folder)."""
    folder = _empty_folder(work, n)
    if (folder / ".done").exists():
        return folder
    from concurrent.futures import ProcessPoolExecutor

    chunks = [(folder, s, min(n, s + 1000)) for s in range(0, n, 1000)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_write_chunk, chunks))
    (folder / ".done").write_text(str(n))
    return folder


def linked_subset(work: Path, source: Path, n: int) -> Path:
    """The first ``n`` files of ``source`` as hard links (no new bytes on disk)."""
    folder = _empty_folder(work, n)
    if (folder / ".done").exists():
        return folder
    for i in range(n):
        name = f"{'ABCDEFGHIJ'[i % CLASSES]}/{i:06d}.jpg"
        os.link(source / name, folder / name)
    (folder / ".done").write_text(str(n))
    return folder


# --- the stages (each in its own process) ------------------------------------------------------
def small_cnn():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 8, stride=8),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, CLASSES),
    )


class PlainFolder:
    """A torchvision ``ImageFolder`` + ``ToTensor``-style dataset: PIL decode per item."""

    def __init__(self, files: list[str], labels: np.ndarray) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        with Image.open(self.files[i]) as img:
            x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
        return x.float().div_(255), int(self.labels[i])


def run_stage(stage: str, folder: Path, work: Path) -> dict[str, Any]:
    import torch

    from kedro_edge import data
    from kedro_edge.io import ImageFolderDataset, ModelInputDataset
    from kedro_edge.testing.memory import PeakAnon

    torch.set_num_threads(2)
    store, splits_path = work / "raw_store.npy", work / "splits.npz"
    model_path, int8_path = work / "model.pt", work / "int8.onnx"
    with PeakAnon(children=True) as peak:
        t0 = time.perf_counter()
        if stage == "decode":
            images = len(
                ImageFolderDataset(str(folder), size=SIZE, mode="RGB", store=str(store)).load()["labels"]
            )
        elif stage == "split":
            from kedro_edge.nodes import split_dataset

            raw = ImageFolderDataset(str(folder), size=SIZE, mode="RGB", store=str(store)).load()
            ModelInputDataset(str(splits_path)).save(split_dataset(raw, PARAMS))
            images = len(raw["labels"])
        else:
            splits = data.Splits(ModelInputDataset(str(splits_path)).load())
            images = _model_stage(stage, splits, folder, model_path, int8_path)
        seconds = time.perf_counter() - t0
    return {"stage": stage, "images": images, "seconds": seconds, "images_per_s": images / seconds,
            "peak_anon_mb": peak.bytes / 2**20}  # fmt: skip


def _model_stage(stage: str, splits, folder: Path, model_path: Path, int8_path: Path) -> int:
    import onnx
    import torch
    import torch.nn.functional as F

    from kedro_edge.compress.ptq import quantize_int8
    from kedro_edge.compress.quantize import QuantizeParams
    from kedro_edge.data import calibration_samples
    from kedro_edge.models.training import fit
    from kedro_edge.runtimes.onnx_export import to_onnx
    from kedro_edge.runtimes.onnxruntime import ort_predict, session

    if stage == "train":
        torch.manual_seed(0)
        model = small_cnn()
        fit(model, splits, epochs=1, batch_size=64, lr=3e-3, description="train 1 epoch")
        torch.save(model, model_path)
        return len(splits.y("train"))
    if stage == "calibrate":
        model = torch.load(model_path, weights_only=False)
        int8 = quantize_int8(
            to_onnx(model, splits.input_shape), calibration_samples(splits, 256), QuantizeParams()
        )
        onnx.save(int8, int8_path)
        return 256
    sess = session(onnx.load(int8_path), threads=2)
    if stage == "evaluate":
        right = ort_predict(sess, splits.x("test"), 64).argmax(1) == splits.y("test")
        print(f"streamed test accuracy {right.mean():.4f}", file=sys.stderr)
        return len(right)
    from torch.utils.data import DataLoader

    split = "train" if stage == "peer_train" else "test"
    # the class folders' files in the order ImageFolderDataset lists them (folder, then name)
    files = sorted(
        (str(p) for p in folder.glob("*/*.jpg")), key=lambda f: (Path(f).parent.name, Path(f).name)
    )
    index = splits.arrays[f"index_{split}"]
    loader = DataLoader(
        PlainFolder([files[i] for i in index], splits.y(split)),
        batch_size=64,
        shuffle=split == "train",
        num_workers=2,
        persistent_workers=False,
    )
    if stage == "peer_train":
        torch.manual_seed(0)
        model = small_cnn()
        opt = torch.optim.AdamW(model.parameters(), 3e-3)
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        return len(index)
    right = [sess.run(None, {"input": xb.numpy()})[0].argmax(1) == yb.numpy() for xb, yb in loader]
    print(f"DataLoader test accuracy {np.concatenate(right).mean():.4f}", file=sys.stderr)
    return len(index)


# --- driver ----------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/kedro-edge-data-scale"))
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.folder, args.work_dir)))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    largest = make_folder(args.work_dir, sizes[-1])
    console.print(f"folder of {sizes[-1]:,} JPEG files: {time.perf_counter() - t0:.0f} s")
    rows: list[dict[str, Any]] = []
    for n in sizes:
        folder = largest if n == sizes[-1] else linked_subset(args.work_dir, largest, n)
        work = args.work_dir / f"run_{n}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        for stage in STAGES:
            cmd = [
                sys.executable,
                __file__,
                "--stage",
                stage,
                "--folder",
                str(folder),
                "--work-dir",
                str(work),
            ]
            done = subprocess.run(
                cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
            )
            if done.returncode:
                console.print(done.stderr[-3000:])
                raise SystemExit(f"stage {stage} at n={n} failed")
            row = {"n": n, **json.loads(done.stdout.strip().splitlines()[-1])}
            notes = [line for line in done.stderr.splitlines() if "accuracy" in line]
            row["note"] = notes[-1] if notes else ""
            rows.append(row)
            console.print(
                f"n={n:,} {stage:14s} {row['images_per_s']:8.0f} img/s  "
                f"peak anon {row['peak_anon_mb']:7.0f} MB  {row['note']}"
            )
        shutil.rmtree(work, ignore_errors=True)  # the stores (~15 GB at 100,000)
    summary = _summary(rows, sizes)
    table = Table(title="data at scale: peak anonymous memory (MB) and images/s per stage")
    table.add_column("stage")
    for n in sizes:
        table.add_column(f"{n:,} MB", justify="right")
        table.add_column(f"{n:,} img/s", justify="right")
    for stage in STAGES:
        cells = []
        for n in sizes:
            r = next(r for r in rows if r["n"] == n and r["stage"] == stage)
            cells += [f"{r['peak_anon_mb']:.0f}", f"{r['images_per_s']:.0f}"]
        table.add_row(stage, *cells)
    console.print(table)
    console.print(json.dumps(summary, indent=1))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = {"rows": rows, "summary": summary, "cpu_count": os.cpu_count(), "image_size": SIZE}
    (args.out_dir / "data_scale.json").write_text(json.dumps(out, indent=1))
    _plot(rows, sizes, args.out_dir / "data_scale.png")
    return 0


def _summary(rows: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    ours = [s for s in STAGES if not s.startswith("peer")]
    peak = {n: max(r["peak_anon_mb"] for r in rows if r["n"] == n and r["stage"] in ours) for n in sizes}
    ratio = {}
    for n in sizes:
        ev = next(r for r in rows if r["n"] == n and r["stage"] == "evaluate")
        peer = next(r for r in rows if r["n"] == n and r["stage"] == "peer_evaluate")
        ratio[n] = ev["images_per_s"] / peer["images_per_s"]
    return {
        "peak_anon_mb_per_n": peak,
        "peak_flat": max(peak.values()) <= 1.25 * min(peak.values()),
        "peak_at_largest_gb": peak[sizes[-1]] / 1024,
        "peak_target_met": peak[sizes[-1]] / 1024 <= TARGET_PEAK_GB,
        "evaluate_vs_dataloader": ratio,
        "evaluate_target_met": all(v >= TARGET_EVAL_RATIO for v in ratio.values()),
    }


def _plot(rows: list[dict[str, Any]], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, speed) = plt.subplots(1, 2, figsize=(12, 4.5))
    for stage in STAGES:
        r = [next(x for x in rows if x["n"] == n and x["stage"] == stage) for n in sizes]
        style = "--" if stage.startswith("peer") else "-"
        mem.plot(sizes, [x["peak_anon_mb"] for x in r], style, marker="o", label=stage)
        speed.plot(sizes, [x["images_per_s"] for x in r], style, marker="o", label=stage)
    mem.axhline(TARGET_PEAK_GB * 1024, color="red", lw=0.8, label="3 GB target")
    mem.set(xlabel="images", ylabel="peak anonymous memory (MB)", title="memory per stage")
    speed.set(xlabel="images", ylabel="images / s", title="throughput per stage", yscale="log")
    mem.legend(fontsize=7)
    speed.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())

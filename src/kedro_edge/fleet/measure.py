"""Measure a search's candidate models on a target: a device over SSH, or this machine.

Each candidate's figure is a ratio: its latency over a fixed reference model's, timed by the
agent's ``measure`` in A B / B A blocks with fresh sessions per pair, so drift and heat hit both
sides. A device keeps what it was sent in ``<workdir>/search-cache`` by sha256: a model measured
again (the reference, every batch) moves 0 bytes, only the inputs go each time. One batch is one
connection and one agent command; it takes no lease, as it changes nothing a rollout uses.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge.bench import agent
from kedro_edge.errors import ConfigError
from kedro_edge.fleet import ssh
from kedro_edge.fleet.device import CHUNK, call, first_answer
from kedro_edge.fleet.inventory import Device
from kedro_edge.fleet.ssh import DeviceError
from kedro_edge.runtimes import codec as codecs
from kedro_edge.runtimes.timing import CPU, InterleavedTiming

Model = Path | bytes  # an ONNX file, or its bytes


class MeasureOptions(InterleavedTiming):
    """How each candidate is timed against the reference (the agent's ``measure``): the timing,
    and the ONNX Runtime providers it runs on."""

    providers: tuple[str, ...] = CPU

    def args(self) -> list[str]:
        """As the agent's command line takes them."""
        return self.agent_args(self.blocks, self.providers)


def measure_on_device(
    device: Device,
    root: Path,
    reference: Model,
    candidates: Sequence[Model],
    inputs: np.ndarray,
    options: MeasureOptions,
    codec: str = "lzma",
    trust_new_key: bool = False,
) -> dict[str, Any]:
    """Time ``candidates`` (ONNX files or bytes) against ``reference`` on ``device``, in one connection.

    Host key checked as a rollout does (``ssh.connect``); the agent shipped on first contact;
    one ``measure`` command receives, compressed with ``codec``, only the files the device's
    cache lacks. ``results``: per candidate sha256 (the reference's is no key), ``ratio``,
    ``p50_ms``, ``reference_p50_ms``, ``block_ratios``; ``sent_bytes``: the batch's bytes on the
    wire (the agent's first-contact upload not counted). Any failure: a one-line ``DeviceError``
    naming the device. The device's ``command_timeout`` bounds the whole batch.
    """
    ref, models = _models(reference, candidates)
    wire = _wire(models, inputs, codec)
    files = _announce(wire)

    def feed(first_line: str) -> Iterator[bytes] | None:
        state = first_answer(first_line)
        return None if state is None else _chunks(wire, set(state.get("need", ())))

    endpoint = ssh.connect(device, root, trust_new_key)
    try:
        answer = call(endpoint, "measure", "--reference", ref, "--files", files, *options.args(), feed=feed)
    except DeviceError as exc:
        raise DeviceError(" ".join(str(exc).split("\n")), exc.kind) from None
    finally:
        endpoint.close()
    return _answer(device.name, answer, answer["received_bytes"])


def measure_on_host(
    reference: Model, candidates: Sequence[Model], inputs: np.ndarray, options: MeasureOptions
) -> dict[str, Any]:
    """``measure_on_device``'s answer for this machine: the agent's own ``measure``, run in this
    process in a temporary workdir (``where``: ``host``; ``sent_bytes``: 0). A failure is a
    ``DeviceError`` naming ``host``, as on a device."""
    ref, models = _models(reference, candidates)
    wire = _wire(models, inputs, "none")
    files = _announce(wire)
    stream = io.BytesIO(b"".join(wire.values()))
    with tempfile.TemporaryDirectory(prefix="kedro-edge-measure-") as workdir:
        # the agent's own parser reads the flags a device would get: the settings are the same
        argv = ["measure", workdir, "--reference", ref, "--files", files, *options.args()]
        a = agent._parser().parse_args(argv)
        try:
            answer = agent.measure(a.workdir, ref, a.files, stream, lambda _: None, agent._bench_settings(a))
        except Exception as exc:  # the agent's errors, as a device would report them
            message = str(exc) if isinstance(exc, agent.Refused) else f"{type(exc).__name__}: {exc}"
            raise DeviceError("host: measure: " + " ".join(message.split("\n"))) from exc
    return _answer("host", answer, 0)


def _answer(where: str, answer: dict[str, Any], sent_bytes: int) -> dict[str, Any]:
    return {"where": where, "facts": answer["facts"], "results": answer["results"], "sent_bytes": sent_bytes}


def _models(reference: Model, candidates: Sequence[Model]) -> tuple[str, dict[str, bytes]]:
    """The reference's sha256, and every model by sha256 (the reference first, each model once)."""
    data = _bytes(reference)
    ref = hashlib.sha256(data).hexdigest()
    models = {ref: data}
    for model in candidates:
        data = _bytes(model)
        models.setdefault(hashlib.sha256(data).hexdigest(), data)
    return ref, models


def _bytes(model: Model) -> bytes:
    return model if isinstance(model, bytes) else Path(model).read_bytes()


def _wire(models: dict[str, bytes], inputs: np.ndarray, codec: str) -> dict[str, bytes]:
    """The batch as it goes on the wire: ``<sha256>.onnx<suffix>`` per model, then ``inputs.npy<suffix>``."""
    if codec not in codecs.CODECS:
        raise ConfigError(f"codec: unknown '{codec}' (one of {', '.join(codecs.CODECS)})")
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(inputs, dtype=np.float32), allow_pickle=False)
    wire = {}
    for name, data in [*((f"{sha}.onnx", b) for sha, b in models.items()), (agent.INPUTS, buffer.getvalue())]:
        suffix, packed = codecs.encode(data, codec)
        wire[name + suffix] = packed
    return wire


def _announce(wire: dict[str, bytes]) -> str:
    """The batch as the agent's ``--files`` takes it: ``NAME:SIZE,...``."""
    return ",".join(f"{name}:{len(data)}" for name, data in wire.items())


def _chunks(wire: dict[str, bytes], need: set[str]) -> Iterator[bytes]:
    """The files the device asked for, in the order announced, in chunks."""
    for name, data in wire.items():
        if name in need:
            for start in range(0, len(data), CHUNK):
                yield data[start : start + CHUNK]

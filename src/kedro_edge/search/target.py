"""Where candidates are timed: this host, or a device of a devices.yml group, through the agent.

Each candidate runs interleaved with a fixed reference (the FP32 teacher's ONNX) on the same
device, so its figure is a ratio (candidate p50 / reference p50) that drift and heat cancel.
A batch of candidates goes to a device over one connection. Figures are cached by the ONNX
sha256 of the candidate; the study keeps them too, so a resumed search measures nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge.errors import ConfigError
from kedro_edge.fleet.inventory import Fleet
from kedro_edge.fleet.measure import MeasureOptions, measure_on_device, measure_on_host
from kedro_edge.fleet.ssh import DeviceError
from kedro_edge.search.params import SearchLatency

Measurer = Callable[[bytes, Sequence[bytes]], dict[str, Any]]


def sha256(graph: bytes) -> str:
    return hashlib.sha256(graph).hexdigest()


@dataclass
class Target:
    """Times ONNX graphs against ``reference`` on one place (``where``)."""

    where: str
    reference: bytes
    measurer: Measurer
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)

    def measure(self, graphs: Sequence[bytes]) -> list[dict[str, Any]]:
        """One figure per graph (``ratio``, ``p50_ms``, ``reference_p50_ms``, ``where``, ``cached``);
        the graphs not in the cache are measured together, in one call."""
        shas = [sha256(g) for g in graphs]
        todo = {s: g for s, g in zip(shas, graphs, strict=True) if s not in self.cache}
        if todo:
            answer = self.measurer(self.reference, list(todo.values()))
            for sha in todo:
                figure = answer["results"][sha]
                self.cache[sha] = {
                    "ratio": float(figure["ratio"]),
                    "p50_ms": float(figure["p50_ms"]),
                    "reference_p50_ms": float(figure["reference_p50_ms"]),
                    "where": answer["where"],
                }
        return [dict(self.cache[s], sha256=s, cached=s not in todo) for s in shas]


def options_of(cfg: SearchLatency) -> MeasureOptions:
    return MeasureOptions(**cfg.model_dump())


def resolve(
    name: str, fleet: Fleet | None, reference: bytes, inputs: np.ndarray, cfg: SearchLatency
) -> Target:
    """``host``, or the first device of group ``name`` in ``fleet``; a one-line error otherwise."""
    options = options_of(cfg)
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if name == "host":
        return Target("host", reference, lambda ref, graphs: measure_on_host(ref, graphs, inputs, options))
    key = "parameter 'compression.search.target'"
    if fleet is None:
        raise ConfigError(f"{key}: {name!r} is a device group, but there is no devices.yml")
    if name not in fleet.groups:
        known = ", ".join(["host", *fleet.groups])
        raise ConfigError(f"{key}: no group {name!r} in devices.yml (known: {known})")
    devices = fleet.select(group=name)
    if not devices:
        raise ConfigError(f"{key}: group {name!r} of devices.yml has no devices")
    device, root = devices[0], Path(fleet.root)

    def on_device(ref: bytes, graphs: Sequence[bytes]) -> dict[str, Any]:
        try:
            return measure_on_device(device, root, ref, graphs, inputs, options)
        except DeviceError as exc:
            raise DeviceError(f"search target {name!r}: {exc}", exc.kind) from None

    return Target(device.name, reference, on_device)

"""devices.yml: the fleet registry, validated once with errors that name the device and key.

    defaults:   values every device inherits (a device's own keys win)
    groups:     name -> benchmark settings, ONNX Runtime providers/threads, budgets (gates)
    devices:    a list of devices, each in one group

Keys left unset (``user``, ``port``, ``key_filename``) fall back to ``~/.ssh/config`` and
then to ssh's own defaults, as with ``ssh`` and Fabric.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kedro_edge.errors import ConfigError
from kedro_edge.runtimes.timing import TimingSpec

NAME = re.compile(r"^[^\x00-\x1f/]{1,128}$")  # printable, no slash: names become file names


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budgets(_Strict):
    """Per-group limits the release gates check (each off unless set)."""

    p90_ms: float | None = Field(None, gt=0)
    peak_rss_mb: float | None = Field(None, gt=0)
    load_ms: float | None = Field(None, gt=0)
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    max_abs_diff: float | None = Field(None, ge=0)


class Group(TimingSpec):
    """How devices of a group run and measure a model (``agent_args`` with ``providers``)."""

    warmup: int = Field(50, ge=0)
    min_runs: int = Field(200, ge=1)
    min_seconds: float = Field(2.0, ge=0)
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    budgets: Budgets = Budgets()


class DeviceSettings(_Strict):
    """What a device may set, and ``defaults:`` may set for all of them."""

    transport: Literal["ssh", "local"] = "ssh"
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = None
    key_filename: str | None = None
    python: str | None = None  # the device's interpreter with onnxruntime; ssh: python3, local: this one
    workdir: str = "kedro-edge"  # relative: to the login directory (ssh) or the project (local)
    group: str = "default"
    known_hosts: str | None = "~/.ssh/known_hosts"  # on this machine; null: only a pinned key
    host_key_fingerprint: str | None = None  # "SHA256:..." as `ssh-keygen -lf` prints it
    connect_timeout: float = Field(10.0, gt=0)
    connect_attempts: int = Field(3, ge=1)  # refused/timed-out connects retried with backoff
    command_timeout: float = Field(300.0, gt=0)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("host_key_fingerprint")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("SHA256:"):
            raise ValueError("must be 'SHA256:<base64>' as `ssh-keygen -lf` prints it")
        return value


class Device(DeviceSettings):
    name: str

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("must be 1-128 printable characters without '/'")
        return value

    @model_validator(mode="after")
    def _needs_host(self) -> Device:
        if self.transport == "ssh" and not self.host:
            raise ValueError("'host' is required for transport 'ssh'")
        return self

    @property
    def target(self) -> str:
        """How people refer to it in messages: ``name (user@host:port)``."""
        if self.transport == "local":
            return f"{self.name} (local)"
        where = (
            f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"
        )
        return f"{self.name} ({where})"


class Fleet(_Strict):
    root: str = "."  # devices.yml's folder: a local device's relative workdir is under it
    defaults: DeviceSettings = DeviceSettings()
    groups: dict[str, Group] = Field(default_factory=lambda: {"default": Group()})
    devices: list[Device]

    def select(self, names: list[str] | None = None, group: str | None = None) -> list[Device]:
        """Devices by name and/or group; an unknown name is an error."""
        chosen = self.devices
        if names:
            known = {d.name for d in self.devices}
            missing = [n for n in names if n not in known]
            if missing:
                raise ConfigError(f"devices.yml: no device named '{missing[0]}'")
            wanted = set(names)
            chosen = [d for d in chosen if d.name in wanted]
        if group:
            if group not in self.groups:
                raise ConfigError(f"devices.yml: no group named '{group}'")
            chosen = [d for d in chosen if d.group == group]
        return chosen


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate ``path``; ``ConfigError`` naming the file, device and key on any problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_fleet(raw, str(path), root=str(path.resolve().parent))


def parse_fleet(raw: Any, source: str = "devices.yml", root: str = ".") -> Fleet:
    """Validate an already-parsed devices.yml (defaults merged into each device)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("devices"), list) or not raw["devices"]:
        raise ConfigError(f"{source}: needs a non-empty 'devices:' list")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: 'defaults' must be a mapping")
    try:
        base = DeviceSettings.model_validate(defaults)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_where(exc, 'defaults')}") from None
    devices, seen = [], set()
    for i, entry in enumerate(raw["devices"]):
        label = f"device #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: {label} must be a mapping")
        label = f"device '{entry['name']}'" if isinstance(entry.get("name"), str) else label
        try:
            device = Device.model_validate({**base.model_dump(exclude_unset=True), **entry})
        except ValidationError as exc:
            raise ConfigError(f"{source}: {_where(exc, label)}") from None
        if device.name in seen:
            raise ConfigError(f"{source}: duplicate device name '{device.name}'")
        seen.add(device.name)
        devices.append(device)
    try:
        groups = {
            name: Group.model_validate(g or {}) for name, g in (raw.get("groups") or {"default": {}}).items()
        }
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_where(exc, 'groups')}") from None
    for device in devices:
        if device.group not in groups:
            raise ConfigError(
                f"{source}: device '{device.name}': group '{device.group}' is not defined in 'groups'"
            )
    unknown = set(raw) - {"defaults", "groups", "devices"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key '{sorted(unknown)[0]}'")
    return Fleet(root=root, defaults=base, groups=groups, devices=devices)


def _where(exc: ValidationError, label: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{label}: unknown key '{key}'"
    got = f" (got {err['input']!r})" if err["type"] not in ("missing", "value_error") else ""
    msg = err["msg"].removeprefix("Value error, ")
    return f"{label}: {'key ' + repr(key) + ': ' if key else ''}{msg}{got}"

"""Run configuration: YAML files validated by pydantic models.

Every section forbids unknown keys, so a typo (``voltge_kv``) fails loudly with the key
path and the file name instead of being silently ignored.  Each run writes the fully
resolved configuration (defaults filled in) next to its outputs with
:func:`write_resolved_config`, so the exact parameters of every result are on record.

Example ``crystalscope.yaml``::

    beam:
      voltage_kv: 200
    detector:
      geometry: detector.geom
    compute:
      scheduler: threads
      n_workers: 2
    output:
      directory: processed
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crystalscope.errors import ConfigError
from crystalscope.io.atomic import atomic_write
from crystalscope.model.beam import Beam

__all__ = [
    "RESOLVED_CONFIG_NAME",
    "BeamConfig",
    "ComputeConfig",
    "DetectorConfig",
    "OutputConfig",
    "RunConfig",
    "StrictModel",
    "load_config",
    "load_yaml_mapping",
    "merge_settings",
    "parse_config",
    "relative_to_config",
    "write_resolved_config",
]

RESOLVED_CONFIG_NAME = "config.resolved.yaml"


def relative_to_config(path: str | os.PathLike[str], base: Path | None) -> Path:
    """A path from a configuration file: ``~`` expanded, and relative paths taken from the
    configuration file's folder ``base`` (from the working directory without one)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or base is None else base / p


class StrictModel(BaseModel):
    """Base of all configuration sections: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


M = TypeVar("M", bound=StrictModel)


class BeamConfig(StrictModel):
    """The incident beam; give exactly one of the four quantities."""

    voltage_kv: float | None = Field(None, gt=0, description="electron accelerating voltage")
    energy_ev: float | None = Field(None, gt=0, description="photon energy in eV")
    energy_kev: float | None = Field(None, gt=0, description="photon energy in keV")
    wavelength_a: float | None = Field(None, gt=0, description="wavelength in Angstrom")
    radiation: Literal["xray", "electron"] | None = Field(
        None, description="needed with wavelength_a only (default xray)"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> BeamConfig:
        given = [
            k for k in ("voltage_kv", "energy_ev", "energy_kev", "wavelength_a") if getattr(self, k)
        ]
        if len(given) > 1:
            raise ValueError(f"give only one of {', '.join(given)}")
        return self

    def to_beam(self) -> Beam | None:
        """The :class:`~crystalscope.model.beam.Beam`, or None where nothing was given."""
        if self.voltage_kv:
            return Beam.from_voltage_kv(self.voltage_kv)
        if self.energy_ev:
            return Beam.from_energy_ev(self.energy_ev)
        if self.energy_kev:
            return Beam.from_energy_kev(self.energy_kev)
        if self.wavelength_a:
            return Beam.from_wavelength(self.wavelength_a, self.radiation or "xray")
        return None


class DetectorConfig(StrictModel):
    """Detector geometry: a CrystFEL geometry file, optionally with overrides."""

    geometry: Path | None = Field(None, description="CrystFEL .geom file")
    distance_mm: float | None = Field(None, gt=0, description="overrides clen")


class ComputeConfig(StrictModel):
    """Where per-frame work runs (dask)."""

    scheduler: Literal["threads", "processes", "synchronous", "distributed"] = "threads"
    address: str | None = Field(None, description="dask.distributed scheduler address")
    n_workers: int | None = Field(None, ge=1, description="local workers (default: all cores)")
    progress: bool = True


class OutputConfig(StrictModel):
    """Where results go."""

    directory: Path = Path("crystalscope-output")
    overwrite: bool = False


class RunConfig(StrictModel):
    """Top-level configuration of a run; pipelines add their own sections."""

    input: list[str] = Field(default_factory=list, description="files, globs or .lst files")
    beam: BeamConfig = Field(default_factory=BeamConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)


def _format_validation_error(err: ValidationError, source: str | None) -> ConfigError:
    problems = []
    first_key = None
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        first_key = first_key or key
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{key}: {msg}")
    text = "; ".join(problems)
    return ConfigError(f"invalid configuration: {text}", path=source, field=first_key)


def parse_config(
    data: dict[str, Any] | None, model: type[M], *, source: str | os.PathLike[str] | None = None
) -> M:
    """Validate a mapping against ``model``; errors name the key path and the file."""
    src = str(source) if source is not None else None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of sections", path=src)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise _format_validation_error(err, src) from None


def load_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (empty file: empty mapping).

    Raises
    ------
    ConfigError
        Missing or unreadable file, malformed YAML (with its line), or a top level that
        is not a mapping.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("configuration file not found", path=p) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration ({exc})", path=p) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"not valid YAML: {problem}", path=p, line=line) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of sections", path=p)
    return data


def load_config(path: str | os.PathLike[str], model: type[M] = RunConfig) -> M:  # type: ignore[assignment]
    """Read and validate a YAML configuration file.

    Raises
    ------
    ConfigError
        Unreadable YAML (with its line), unknown keys or invalid values (with the key path).
    """
    return parse_config(load_yaml_mapping(path), model, source=path)


def write_resolved_config(
    config: BaseModel, directory: str | os.PathLike[str], name: str = RESOLVED_CONFIG_NAME
) -> Path:
    """Write the resolved configuration (all defaults filled in) as YAML into ``directory``."""
    out = Path(directory) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    data = config.model_dump(mode="json")
    with atomic_write(out) as fh:
        fh.write("# crystalscope resolved configuration: the exact parameters of this run\n")
        yaml.safe_dump(data, fh, sort_keys=False)
    return out


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"'{key}' is a value, not a section", field=dotted)
        node = child
    node[keys[-1]] = value


def merge_settings(
    config_file: str | os.PathLike[str] | None, sets: list[str] | None, shortcuts: dict[str, Any]
) -> dict[str, Any]:
    """Settings from a YAML file, ``--set`` overrides and shortcut options, in that order."""
    data: dict[str, Any] = {}
    if config_file is not None:
        data = load_yaml_mapping(config_file)
    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected section.key=value, got {item!r}", field="--set")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"cannot read the value {raw!r}", field=key) from None
        _set_path(data, key.strip(), value)
    for dotted, value in shortcuts.items():
        if value is not None:
            _set_path(data, dotted, value)
    return data

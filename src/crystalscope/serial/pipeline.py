"""``crystalscope serial run``: raw frames to merged data in one resumable job.

:func:`run_serial` takes a :class:`~crystalscope.serial.run_config.SerialRunConfig` and
runs, into one numbered run directory (:mod:`crystalscope.serial.rundir`):

0. ``inputs``: the input files are listed and checked (an unreadable or truncated file
   is skipped with its reason, the others go on), written as ``inputs.lst``;
1. ``preprocessed``: corrections, aggregation, centre, peaks, ellipticity, background
   (:func:`~crystalscope.serial.output.run_preprocess`);
2. ``indexed``: cell refinement, indexing, ambiguity
   (:func:`~crystalscope.serial.index_output.run_index`);
3. ``integrated``: prediction and integration, and the dose series when asked
   (:func:`~crystalscope.serial.integrate_output.run_integrate`);
4. ``merged``: scaling, merging, statistics and export
   (:func:`~crystalscope.merge.run.run_merge`), and ``dose-series`` when there is one;
5. ``report.html``: the run's report (:mod:`crystalscope.serial.report`).

Each step is skipped when its configuration and inputs have not changed, and an
interrupted run (Ctrl-C, SIGKILL, a power cut) finishes with the same command: steps
complete on disk are kept, the interrupted one starts again.  Per-frame work runs
through dask on the client given (local threads without one).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import crystalscope
from crystalscope.config import merge_settings, parse_config
from crystalscope.dataset.sources import Request
from crystalscope.errors import CrystalscopeError, FormatError
from crystalscope.io.atomic import atomic_write
from crystalscope.serial.input_check import check_inputs
from crystalscope.serial.run_config import SerialRunConfig, resolve_paths
from crystalscope.serial.rundir import (
    RUN_RECORD_NAME,
    StepOutcome,
    choose_run_directory,
    file_identity,
    fingerprint,
    run_step,
    write_record,
)

__all__ = [
    "MIN_CRYSTALS_TO_MERGE",
    "SerialRun",
    "StepContext",
    "checked_inputs",
    "config_fingerprint",
    "load_run_config",
    "merge_step",
    "run_serial",
    "run_steps",
    "write_run_config",
    "write_run_report",
]

#: Fewer indexed crystals than this are not merged.
MIN_CRYSTALS_TO_MERGE = 10

_PREPROCESS_KEYS = (
    "beam", "corrections", "aggregate", "centre", "peaks", "background", "hits", "ellipticity",
)  # fmt: skip
_INDEX_KEYS = ("cell", "indexing", "ambiguity")
_INTEGRATE_KEYS = ("integration", "dose", "space_group")
_MERGE_KEYS = ("merging", "statistics", "space_group")


@dataclass
class SerialRun:
    """What :func:`run_serial` did: the run directory, each step's outcome, the files
    (``lists``: per-file step directories of the on-line mode)."""

    directory: Path
    config: SerialRunConfig
    steps: list[StepOutcome] = field(default_factory=list)
    skipped_files: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    lists: dict[str, list[Path]] = field(default_factory=dict)

    def summary(self) -> str:
        """Each step's status and time, then the merging statistics (terminal text)."""
        out = [f"run directory: {self.directory}"]
        for s in self.steps:
            out.append(f"  {s.name:<12} {s.status:<10} {s.seconds:7.1f} s")
        for name, reason in self.skipped_files.items():
            out.append(f"  skipped file {name}: {reason}")
        return "\n".join(out + self.lines)


def _sections(cfg: SerialRunConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    data = cfg.model_dump(mode="json")
    return {k: data[k] for k in keys}


def config_fingerprint(cfg: SerialRunConfig) -> str:
    """Fingerprint of everything in ``cfg`` that changes results (not ``compute``,
    ``watch``, ``report`` or ``output.directory``)."""
    data = cfg.model_dump(mode="json")
    for key in ("compute", "watch", "report"):
        data.pop(key)
    data["output"].pop("directory")
    return fingerprint(data, crystalscope.__version__)


@dataclass
class StepContext:
    """What the steps of one run share: configuration, client, run directory, log."""

    cfg: SerialRunConfig
    run_dir: Path
    client: Any = None
    force: bool = False
    say: Callable[[str], None] = print
    outcomes: list[StepOutcome] = field(default_factory=list)
    inputs: tuple[list[Request], dict[str, str]] | None = None

    def step(self, name: str, fp: str, compute: Callable[[Path], dict[str, Any]]) -> StepOutcome:
        """Run (or skip, or reuse) one step and report it."""
        outcome = run_step(
            self.run_dir, name, fp, compute, force=self.force,
            on_compute=lambda: self.say(f"{name}: running"),
        )  # fmt: skip
        self.say(f"{name}: {outcome.status} ({outcome.seconds:.1f} s)")
        self.outcomes.append(outcome)
        return outcome


def _beam(cfg: SerialRunConfig) -> dict[str, Any]:
    """The ``beam`` section for later steps when the run's configuration gives one (else
    they take the wavelength from the pre-processed geometry)."""
    if cfg.beam.to_beam() is None:
        return {}
    return {"beam": cfg.beam.model_dump(mode="json")}


def _compute_settings(cfg: SerialRunConfig) -> dict[str, Any]:
    return cfg.compute.model_dump()


def _preprocess(ctx: StepContext, inputs_lst: Path, fp_inputs: str) -> StepOutcome:
    from crystalscope.serial.config import PreprocessConfig
    from crystalscope.serial.output import run_preprocess

    cfg = ctx.cfg
    data = _sections(cfg, _PREPROCESS_KEYS)
    fp = fingerprint("preprocess", data, cfg.input.model_dump(mode="json"), fp_inputs,
                     cfg.output.frames, file_identity([cfg.input.geometry,
                     cfg.corrections.mask_file, cfg.corrections.flat_field]))  # fmt: skip

    def compute(directory: Path) -> dict[str, Any]:
        one = PreprocessConfig.model_validate(
            {**data, "input": {**cfg.input.model_dump(mode="json"), "files": [str(inputs_lst)]},
             "compute": _compute_settings(cfg),
             "output": {"directory": str(directory), "frames": cfg.output.frames}}
        )  # fmt: skip
        result, _ = run_preprocess(one, client=ctx.client)
        shots = result.dataset.shots
        return {
            "frames": len(shots) + len(result.rejected),
            "skipped_frames": len(result.rejected),
            "hits": int(shots["hit"].sum()),
            "summary": result.summary(),
        }

    return ctx.step("preprocessed", fp, compute)


def _index(ctx: StepContext, upstream: StepOutcome) -> StepOutcome:
    from crystalscope.serial.index_config import IndexConfig
    from crystalscope.serial.index_output import run_index

    cfg = ctx.cfg
    data = {**_sections(cfg, _INDEX_KEYS), **_beam(cfg)}
    fp = fingerprint("index", data, upstream.record["fingerprint"], file_identity([cfg.cell.file]))

    def compute(directory: Path) -> dict[str, Any]:
        one = IndexConfig.model_validate(
            {**data, "input": str(upstream.directory / "preprocessed.h5"),
             "compute": _compute_settings(cfg), "output": {"directory": str(directory)}}
        )  # fmt: skip
        result, _ = run_index(one, client=ctx.client)
        return {"crystals": len(result.crystals), "summary": result.summary()}

    return ctx.step("indexed", fp, compute)


def _integrate(ctx: StepContext, pre: StepOutcome, idx: StepOutcome) -> StepOutcome:
    from crystalscope.serial.integrate_config import IntegrateConfig
    from crystalscope.serial.integrate_output import run_integrate

    cfg = ctx.cfg
    data = {**_sections(cfg, _INTEGRATE_KEYS), **_beam(cfg)}
    if cfg.dose.enabled and cfg.dose.input is None:
        data["dose"]["input"] = cfg.input.files[0] if len(cfg.input.files) == 1 else None
    if "by" not in cfg.dose.model_fields_set:  # crystals are named as aggregation named them
        data["dose"]["by"] = list(cfg.aggregate.by)
    fp = fingerprint("integrate", data, idx.record["fingerprint"], cfg.output.stream,
                     file_identity([data["dose"]["input"]]))  # fmt: skip

    def compute(directory: Path) -> dict[str, Any]:
        one = IntegrateConfig.model_validate(
            {**data, "input": str(pre.directory / "preprocessed.h5"),
             "indexed": str(idx.directory), "compute": _compute_settings(cfg),
             "output": {"directory": str(directory), "stream": cfg.output.stream}}
        )  # fmt: skip
        result, paths = run_integrate(one, client=ctx.client)
        return {
            "observations": len(result.observations),
            "dose_series": "dose_series" in paths,
            "summary": result.summary(),
        }

    return ctx.step("integrated", fp, compute)


def merge_step(ctx: StepContext, obs: Path, upstream_fp: str, name: str = "merged") -> StepOutcome:
    from crystalscope.merge.config import MergeConfig
    from crystalscope.merge.run import run_merge

    data = _sections(ctx.cfg, _MERGE_KEYS)
    fp = fingerprint("merge", data, upstream_fp)

    def compute(directory: Path) -> dict[str, Any]:
        one = MergeConfig.model_validate(
            {**data, "input": str(obs), "output": {"directory": str(directory)}}
        )
        run = run_merge(one)
        crystals = run.result.crystals
        return {
            "crystals_merged": int((~crystals["rejected"]).sum()),
            "crystals_rejected": int(crystals["rejected"].sum()),
            "unique_reflections": len(run.result.merged),
            "summary": run.summary(),
        }

    return ctx.step(name, fp, compute)


def _merge_dose(ctx: StepContext, integrated: StepOutcome) -> StepOutcome:
    from crystalscope.merge.config import MergeConfig
    from crystalscope.merge.series import merge_series

    data = _sections(ctx.cfg, _MERGE_KEYS)
    fp = fingerprint("dose-series", data, integrated.record["fingerprint"])

    def compute(directory: Path) -> dict[str, Any]:
        one = MergeConfig.model_validate({**data, "output": {"directory": str(directory)}})
        result = merge_series(integrated.directory / "dose", one)
        return {"summary": result.summary()}

    return ctx.step("dose-series", fp, compute)


def checked_inputs(
    cfg: SerialRunConfig, say: Callable[[str], None]
) -> tuple[list[Request], dict[str, str]]:
    """The usable input frames and ``{file: reason}`` of the unusable files.

    Raises
    ------
    FormatError
        No readable file at all, or a geometry that fits no file.
    """
    good, skipped = check_inputs(cfg.input.files, cfg.input)
    for name, reason in skipped.items():
        say(f"skipping {name}: {reason}")
    if not good:
        raise FormatError("no readable input file", path=cfg.input.files[0], field="input.files")
    return good, skipped


def _write_inputs(ctx: StepContext) -> tuple[Path, str, dict[str, str]]:
    """Check the input files (unless done), write the usable ones as ``inputs.lst``."""
    good, skipped = ctx.inputs or checked_inputs(ctx.cfg, ctx.say)
    lst = ctx.run_dir / "inputs.lst"
    lines = [r.file if r.event is None else f"{r.file} //{r.event}" for r in good]
    with atomic_write(lst, overwrite=True) as fh:
        fh.write("\n".join(lines) + "\n")
    return lst, fingerprint(file_identity(dict.fromkeys(r.file for r in good)), lines), skipped


def run_steps(ctx: StepContext, *, merge: bool = True) -> SerialRun:
    """The pipeline's steps in the run directory of ``ctx`` (module doc); without
    ``merge`` only up to the integrated observations."""
    cfg = ctx.cfg
    run = SerialRun(ctx.run_dir, cfg, ctx.outcomes)
    lst, fp_inputs, run.skipped_files = _write_inputs(ctx)
    pre = _preprocess(ctx, lst, fp_inputs)
    run.paths["preprocessed"] = pre.directory
    if pre.record.get("hits", 0) == 0:
        run.lines.append("no hits: nothing to index")
        return run
    idx = _index(ctx, pre)
    run.paths["indexed"] = idx.directory
    if idx.record.get("crystals", 0) == 0:
        run.lines.append("no crystal indexed: nothing to integrate")
        return run
    integ = _integrate(ctx, pre, idx)
    run.paths["integrated"] = integ.directory
    run.lines.append(integ.record.get("summary", "").split("\n")[0])
    if not merge:
        return run
    n = idx.record["crystals"]
    if n < MIN_CRYSTALS_TO_MERGE:
        run.lines.append(f"{n} crystals indexed: too few to merge (need {MIN_CRYSTALS_TO_MERGE})")
        return run
    merged = merge_step(ctx, integ.directory / "observations.h5", integ.record["fingerprint"])
    run.paths["merged"] = merged.directory
    run.paths["merged_mtz"] = merged.directory / "merged.mtz"
    run.lines.append(merged.record.get("summary", ""))
    if integ.record.get("dose_series"):
        dose = _merge_dose(ctx, integ)
        run.paths["dose_series"] = dose.directory
    return run


def load_run_config(
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    sets: list[str] | None = None,
) -> SerialRunConfig:
    """The configuration of a run from a YAML file, ``sets`` (``"section.key=value"``
    strings, the value read as YAML) and ``overrides`` (``{"section.key": value}``; later
    ones win), with every path made absolute.

    Raises
    ------
    ConfigError
        Unreadable YAML, an unknown key or an invalid value (names the file and key).
    """
    data = merge_settings(path, sets, overrides or {})
    cfg = parse_config(data, SerialRunConfig, source=path or "arguments")
    return resolve_paths(cfg, path)


def write_run_config(cfg: SerialRunConfig, run_dir: Path) -> Path:
    path = run_dir / "config.yaml"
    with atomic_write(path, overwrite=True) as fh:
        yaml.safe_dump(cfg.model_dump(mode="json"), fh, sort_keys=False)
    return path


def run_serial(
    cfg: SerialRunConfig,
    *,
    client: Any = None,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> SerialRun:
    """Run the whole SerialED pipeline (module doc); return what was done.

    ``cfg`` must have absolute paths (:func:`~crystalscope.serial.run_config.resolve_paths`).

    Raises
    ------
    CrystalscopeError
        Bad configuration or input that stops the whole run (a wrong geometry, no
        readable file); per-frame problems only skip frames.
    """
    if not cfg.input.files:
        raise CrystalscopeError("no input files", field="input.files")
    if client is None and cfg.compute.scheduler == "distributed":
        from crystalscope.parallel import open_client

        with open_client(cfg.compute) as own:
            return run_serial(cfg, client=own, force=force, say=say)
    inputs = checked_inputs(cfg, say)  # before a run directory exists: nothing left behind
    root = Path(cfg.output.directory)
    cfp = config_fingerprint(cfg)
    run_dir = choose_run_directory(root, cfp, force=force)
    say(f"run directory: {run_dir}")
    write_record(run_dir / RUN_RECORD_NAME, {"fingerprint": cfp, "complete": False})
    config_path = write_run_config(cfg, run_dir)
    ctx = StepContext(cfg, run_dir, client=client, force=force, say=say, inputs=inputs)
    run = run_steps(ctx)
    run.paths["config"] = config_path
    if cfg.report.enabled:
        run.paths["report"] = write_run_report(run)
    write_record(
        run_dir / RUN_RECORD_NAME,
        {"fingerprint": cfp, "complete": True, "steps": [s.name for s in run.steps]},
    )
    return run


def write_run_report(run: SerialRun) -> Path:
    """Write ``report.html`` of a run (batch layout: one directory per step)."""
    from crystalscope.serial.report import ReportInputs, write_report

    p = run.paths

    def dirs(key: str) -> list[Path]:
        return run.lists.get(key) or ([p[key]] if key in p else [])

    inputs = ReportInputs(
        title=run.config.report.title or f"crystalscope serial run: {run.directory.name}",
        config_yaml=(run.directory / "config.yaml").read_text(encoding="utf-8"),
        preprocessed=dirs("preprocessed"),
        indexed=dirs("indexed"),
        integrated=dirs("integrated"),
        merged=p.get("merged"),
        dose_series=p.get("dose_series"),
        steps=[{"step": s.name, "status": s.status, "seconds": s.seconds} for s in run.steps],
        skipped_files=run.skipped_files,
        notes=[line for line in run.lines if line and "\n" not in line],
    )
    return write_report(inputs, run.directory / "report.html")

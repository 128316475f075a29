"""``crystalscope serial run --watch DIR``: the whole pipeline on-line, while data arrive.

Files matching ``watch.pattern`` in the watched directory are taken once they are
completely written (size and modification time unchanged for ``watch.settle_s`` and the
frames readable; :mod:`crystalscope.serial.online`).  Each file is pre-processed,
indexed and integrated once, into ``<run>/files/<file stem>/`` (the steps and records of
:mod:`crystalscope.serial.pipeline`, so a restarted watcher skips what is done and
redoes only an interrupted file).  After each new file the observations of all files are
combined (``<run>/combined/observations.h5``), merged again into ``<run>/merged/`` and
the report rewritten, so the merged data and ``report.html`` follow the collection.

Differences to a batch run over the same files: the ellipticity is fitted per file, the
cell is refined on the first file with enough indexed crystals and then kept, and the
indexing ambiguity is resolved within each file.  Run
``crystalscope serial run`` on the collected files afterwards for the final data.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crystalscope.errors import ConfigError, CrystalscopeError
from crystalscope.io.observations import concat_observations, read_observations, write_observations
from crystalscope.serial.online import STATE_NAME, WatchState, _Seen, _stable
from crystalscope.serial.pipeline import (
    MIN_CRYSTALS_TO_MERGE,
    SerialRun,
    StepContext,
    config_fingerprint,
    merge_step,
    run_steps,
    write_run_config,
    write_run_report,
)
from crystalscope.serial.run_config import SerialRunConfig
from crystalscope.serial.rundir import (
    RUN_RECORD_NAME,
    choose_run_directory,
    file_identity,
    fingerprint,
    read_record,
    write_record,
)

__all__ = ["CELL_RECORD_NAME", "watch_serial"]

#: Record of the cell that on-line indexing uses after the first well-indexed file.
CELL_RECORD_NAME = "watch-cell.json"


def _reference_cell(run_dir: Path) -> Path | None:
    record = read_record(run_dir / CELL_RECORD_NAME)
    return Path(record["cell"]) if record is not None else None


def _process_file(path: Path, ctx: StepContext) -> SerialRun:
    """Pre-process, index and integrate one complete file into ``files/<stem>``.

    The first file with at least :data:`MIN_CRYSTALS_TO_MERGE` indexed crystals refines
    the cell; later files are indexed with that cell, unrefined (a few frames refine a
    cell poorly, and one cell keeps the merged data consistent).
    """
    cfg = ctx.cfg.model_copy(deep=True)
    cfg.input.files = [str(path)]
    reference = _reference_cell(ctx.run_dir)
    if reference is not None:
        cfg.cell = cfg.cell.model_copy(
            update={"file": reference, "parameters": None, "lattice": None, "refine": False}
        )
    folder = ctx.run_dir / "files" / path.stem
    folder.mkdir(parents=True, exist_ok=True)
    one = StepContext(cfg, folder, client=ctx.client, force=False, say=ctx.say)
    try:
        run = run_steps(one, merge=False)
    except CrystalscopeError:
        if not any(folder.iterdir()):
            folder.rmdir()
        raise
    indexed = read_record(folder / "indexed" / "step.json") or {}
    if reference is None and indexed.get("crystals", 0) >= MIN_CRYSTALS_TO_MERGE:
        cell = folder / "indexed" / "cell.cell"
        write_record(ctx.run_dir / CELL_RECORD_NAME, {"cell": str(cell), "from": path.name})
    return run


def _combine(run_dir: Path, done: dict[str, dict[str, Any]]) -> tuple[Path, str, int] | None:
    """All files' observations as one file; its path, fingerprint and crystal count."""
    files = [run_dir / "files" / Path(n).stem / "integrated" / "observations.h5" for n in done]
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    parts = [read_observations(f) for f in files]
    data = concat_observations(parts)
    target = run_dir / "combined" / "observations.h5"
    target.parent.mkdir(exist_ok=True)
    write_observations(data, target, overwrite=True)
    n = int(data.table["crystal_id"].nunique()) if len(data.table) else 0
    return target, fingerprint(file_identity(files)), n


def _update(ctx: StepContext, state: WatchState) -> SerialRun:
    """Merge everything so far and rewrite the report."""
    run = SerialRun(ctx.run_dir, ctx.cfg, [])
    run.skipped_files = dict(state.failed)
    stems = [Path(n).stem for n in state.done]
    for key in ("preprocessed", "indexed", "integrated"):
        dirs = [ctx.run_dir / "files" / s / key for s in stems]
        run.lists[key] = [d for d in dirs if (d / "step.json").is_file()]
    combined = _combine(ctx.run_dir, state.done)
    if combined is not None and combined[2] >= MIN_CRYSTALS_TO_MERGE:
        path, fp, _ = combined
        merged = merge_step(ctx, path, fp)
        run.steps.append(merged)
        run.paths["merged"] = merged.directory
        run.paths["merged_mtz"] = merged.directory / "merged.mtz"
        run.lines.append(merged.record.get("summary", ""))
    else:
        run.lines.append("too few crystals to merge yet")
    run.paths["config"] = ctx.run_dir / "config.yaml"
    if ctx.cfg.report.enabled:
        run.paths["report"] = write_run_report(run)
    return run


def _new_files(folder: Path, cfg: SerialRunConfig, state: WatchState,
               seen: dict[str, _Seen]) -> tuple[list[tuple[Path, float]], bool]:  # fmt: skip
    """Complete files not yet processed with their ages (seconds unchanged), and whether
    any file is still changing."""
    w = cfg.watch
    now = time.monotonic()
    ready, busy = [], False
    for path in sorted(folder.glob(w.pattern)):
        if path.name in state.done or path.name in state.failed or not path.is_file():
            continue
        age = _stable(path, seen, w.settle_s, now)
        if age is None or age < w.settle_s:
            busy = True
        else:
            ready.append((path, age))
    return ready, busy


def _take(path: Path, age: float, ctx: StepContext, state: WatchState) -> bool:
    """Process one file; False when it failed but may still be being written."""
    w = ctx.cfg.watch
    try:
        result = _process_file(path, ctx)
    except CrystalscopeError as exc:
        if age < 10 * max(w.settle_s, w.poll_s):
            return False  # perhaps still being written: try again later
        state.failed[path.name] = str(exc)
        ctx.say(f"{path.name}: skipped ({exc})")
        return True
    state.done[path.name] = {"lines": result.lines}
    state.failed.update(result.skipped_files)
    return True


def watch_serial(
    cfg: SerialRunConfig,
    directory: str | os.PathLike[str],
    *,
    client: Any = None,
    force: bool = False,
    say: Callable[[str], None] = print,
    stop: Callable[[], bool] | None = None,
) -> SerialRun:
    """Follow ``directory`` and keep the merged data and report up to date (module doc).

    Stops after ``watch.idle_timeout_s`` seconds without a new file, when ``stop()``
    returns True, or on Ctrl-C (between files).
    """
    folder = Path(directory).absolute()
    if not folder.is_dir():
        raise ConfigError("watched directory does not exist", path=folder, field="--watch")
    cfp = fingerprint(config_fingerprint(cfg), str(folder), cfg.watch.pattern)
    run_dir = choose_run_directory(Path(cfg.output.directory), cfp, force=force)
    if force:
        shutil.rmtree(run_dir / "files", ignore_errors=True)
        (run_dir / STATE_NAME).unlink(missing_ok=True)
        (run_dir / CELL_RECORD_NAME).unlink(missing_ok=True)
    say(f"run directory: {run_dir}; watching {folder} for {cfg.watch.pattern}")
    write_record(run_dir / RUN_RECORD_NAME, {"fingerprint": cfp, "complete": False})
    write_run_config(cfg, run_dir)
    ctx = StepContext(cfg, run_dir, client=client, say=say)
    state_path = run_dir / STATE_NAME
    state = WatchState.load(state_path)
    run = _update(ctx, state)
    seen: dict[str, _Seen] = {}
    last_new = time.monotonic()
    while not (stop is not None and stop()):
        ready, busy = _new_files(folder, cfg, state, seen)
        taken = [path for path, age in ready if _take(path, age, ctx, state)]
        if taken:
            state.save(state_path)
            run = _update(ctx, state)
            say(f"{len(state.done)} files processed; report {run.paths.get('report')}")
        if busy or ready:  # idle time counts from the end of the work, not its start
            last_new = time.monotonic()
        idle = cfg.watch.idle_timeout_s
        if idle is not None and time.monotonic() - last_new > idle:
            break
        time.sleep(cfg.watch.poll_s)
    return run

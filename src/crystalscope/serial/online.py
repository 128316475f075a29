"""On-line pre-processing: follow a directory while a data collection writes into it.

:func:`watch` looks for files matching ``watch.pattern`` every ``watch.poll_s`` seconds.
A file counts as completely written when its size and modification time have not
changed for ``watch.settle_s`` seconds *and* its frames can be opened; each such file is
pre-processed once, into ``<output>/<file stem>/`` (the layout of
:func:`crystalscope.serial.output.write_preprocessed`), and its hits are appended to
``<output>/<watch.list_name>`` (a CrystFEL ``.lst`` rewritten atomically, so a reader
never sees half a line).

The record of processed files (``<output>/watch-state.json``, also rewritten
atomically) makes a restarted watcher continue where it stopped.  A file that never
becomes readable is reported and skipped once it has been stable for ten settle periods.
The watcher stops after ``watch.idle_timeout_s`` seconds without a new file, when
``stop()`` returns True, or on Ctrl-C (between files: nothing is left half-written).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystalscope.errors import ConfigError, CrystalscopeError
from crystalscope.io.atomic import atomic_write
from crystalscope.serial.config import PreprocessConfig
from crystalscope.serial.inputs import open_input
from crystalscope.serial.output import write_preprocessed
from crystalscope.serial.preprocess import PreprocessResult, preprocess

__all__ = ["WatchState", "watch"]

STATE_NAME = "watch-state.json"


@dataclass
class WatchState:
    """Processed and failed files (names relative to the watched directory)."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> WatchState:
        """Read a state file (a missing file is an empty state)."""
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(dict(data["done"]), dict(data.get("failed", {})))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CrystalscopeError(f"unreadable watch state ({exc})", path=path) from None

    def save(self, path: Path) -> None:
        """Write atomically."""
        with atomic_write(path, overwrite=True) as fh:
            json.dump({"done": self.done, "failed": self.failed}, fh, indent=1)


@dataclass
class _Seen:
    stamp: tuple[int, int]
    since: float


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _stable(path: Path, seen: dict[str, _Seen], settle_s: float, now: float) -> float | None:
    """Seconds ``path`` has been unchanged, or None if it just changed."""
    stamp = _stamp(path)
    if stamp is None or stamp[0] == 0:
        seen.pop(path.name, None)
        return None
    prev = seen.get(path.name)
    if prev is None or prev.stamp != stamp:
        seen[path.name] = _Seen(stamp, now)
        return 0.0 if settle_s == 0 else None
    return now - prev.since


def _append_hits(list_path: Path, result: PreprocessResult, prefix: str) -> int:
    shots = result.dataset.shots
    positions = [i for i, hit in enumerate(shots["hit"]) if hit]
    old = list_path.read_text(encoding="utf-8") if list_path.exists() else ""
    lines = [f"{prefix}/preprocessed.h5 //{i}\n" for i in positions]
    with atomic_write(list_path, overwrite=True) as fh:
        fh.write(old + "".join(lines))
    return len(lines)


def _process(
    path: Path, cfg: PreprocessConfig, out: Path, config_path: str | None, client: Any
) -> PreprocessResult:
    one = cfg.model_copy(deep=True)
    one.input.files = [str(path)]
    raw = open_input(one.input, config_path=config_path)
    result = preprocess(raw, one, client=client, config_path=config_path)
    write_preprocessed(result, out / path.stem, frames=cfg.output.frames, overwrite=True,
                       progress=False)  # fmt: skip
    return result


def watch(
    cfg: PreprocessConfig,
    directory: str | os.PathLike[str],
    *,
    config_path: str | os.PathLike[str] | None = None,
    client: Any = None,
    stop: Callable[[], bool] | None = None,
    report: Callable[[str], None] | None = None,
) -> WatchState:
    """Pre-process files as they appear in ``directory`` (see the module documentation).

    Returns
    -------
    WatchState
        What was processed and what failed.
    """
    src = os.fspath(config_path) if config_path is not None else None
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError("watched directory does not exist", path=folder, field="--watch")
    w = cfg.watch
    out = Path(cfg.output.directory)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_NAME
    state = WatchState.load(state_path)
    seen: dict[str, _Seen] = {}
    last_new = time.monotonic()
    say = report or (lambda _msg: None)
    while not (stop is not None and stop()):
        now = time.monotonic()
        for path in sorted(folder.glob(w.pattern)):
            if path.name in state.done or path.name in state.failed or not path.is_file():
                continue
            age = _stable(path, seen, w.settle_s, now)
            if age is None or age < w.settle_s:
                last_new = now
                continue
            try:
                result = _process(path, cfg, out, src, client)
            except CrystalscopeError as exc:
                if age < 10 * max(w.settle_s, w.poll_s):
                    continue  # perhaps still being written: try again later
                state.failed[path.name] = str(exc)
                state.save(state_path)
                say(f"{path.name}: skipped ({exc})")
                continue
            n_hits = _append_hits(out / w.list_name, result, path.stem)
            state.done[path.name] = {"frames": len(result.dataset.shots), "hits": n_hits}
            state.save(state_path)
            say(f"{path.name}: {len(result.dataset.shots)} frames, {n_hits} hits")
            last_new = time.monotonic()
        if w.idle_timeout_s is not None and time.monotonic() - last_new > w.idle_timeout_s:
            break
        time.sleep(w.poll_s)
    return state

"""Run DIALS or XDS on hand-off files and collect cell, symmetry and merging statistics.

:func:`run_dials` runs the commands of a ``dials_process.sh`` written by
:mod:`~crystalscope.rotation.dials_script` one by one (so that it reports progress and
stops at the first failing step with its log), then reads:

* the spots found (``Saved N reflections to strong.refl`` in ``dials.find_spots.log``)
  and indexed (the last ``# indexed | # unindexed`` table of ``dials.index.log``);
* the cell and space group of the last experiment file written (``scaled.expt``, else
  ``symmetrized.expt``, ``refined.expt``, ``indexed.expt``: JSON with the real-space
  vectors and the Hall symbol), the Laue group through gemmi;
* the merging statistics of ``dials.scale.log`` (the "Summary of merging statistics");
* the MTZ and SHELX files.

:func:`run_xds` runs ``xds_par`` (or ``xds``) where ``XDS.INP`` is, then ``xdsconv``
for a SHELX ``.hkl`` when it is installed, and reads ``IDXREF.LP`` (``N OUT OF M SPOTS
INDEXED``), ``CORRECT.LP`` (the ``total`` row of the last "SUBSET OF INTENSITY DATA WITH
SIGNAL/NOISE >= -3.0" table, the refined ``UNIT CELL PARAMETERS`` and ``SPACE GROUP
NUMBER``) and the header of ``XDS_ASCII.HKL``.

A program that is not installed raises :class:`ProgramMissing` naming it and how to
install it; a failing step raises :class:`ProcessingFailed` with the step, its exit
status, the end of its log and the log's path.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crystalscope.errors import CrystalscopeError
from crystalscope.io.atomic import atomic_write
from crystalscope.rotation.dials_script import DIALS_SCRIPT, read_dials_script

__all__ = [
    "DIALS_INSTALL_HINT",
    "XDS_INSTALL_HINT",
    "DialsGeometry",
    "MergingStats",
    "ProcessingFailed",
    "ProcessingResult",
    "ProgramMissing",
    "StepRecord",
    "dials_show",
    "parse_dials_results",
    "parse_xds_results",
    "require_program",
    "run_dials",
    "run_xds",
]

DIALS_INSTALL_HINT = (
    "install DIALS: Debian/Ubuntu 'apt-get install dials', or see "
    "https://dials.github.io/installation.html"
)
XDS_INSTALL_HINT = (
    "install XDS (free for academic use) from https://xds.mr.mpg.de and put xds_par on PATH"
)
RESULT_FILE = "crystalscope_processing.json"


class ProgramMissing(CrystalscopeError):
    """A processing program is not installed (not found on PATH)."""


class ProcessingFailed(CrystalscopeError):
    """A processing step exited with an error."""


@dataclass
class StepRecord:
    """One command that was run."""

    command: list[str]
    seconds: float
    returncode: int
    log: str


@dataclass
class MergingStats:
    """Overall merging statistics (NaN where the program does not report a value)."""

    d_max: float = math.nan
    d_min: float = math.nan
    n_observations: int = 0
    n_unique: int = 0
    completeness_percent: float = math.nan
    multiplicity: float = math.nan
    i_over_sigma: float = math.nan
    r_merge: float = math.nan
    r_meas: float = math.nan
    r_pim: float = math.nan
    cc_half: float = math.nan


@dataclass
class ProcessingResult:
    """What DIALS or XDS found."""

    program: str
    directory: Path
    cell: tuple[float, float, float, float, float, float] | None = None
    space_group: str | None = None
    laue_group: str | None = None
    n_spots: int | None = None
    n_indexed: int | None = None
    merging: MergingStats | None = None
    mtz: Path | None = None
    shelx: list[Path] = field(default_factory=list)
    reflections: Path | None = None
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def indexed_fraction(self) -> float | None:
        """Spots indexed / spots found."""
        if not self.n_spots or self.n_indexed is None:
            return None
        return self.n_indexed / self.n_spots

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"{self.program} results in {self.directory}"]
        if self.n_spots is not None:
            frac = self.indexed_fraction
            lines.append(f"  spots: {self.n_spots} found, {self.n_indexed} indexed"
                         + (f" ({100 * frac:.1f} %)" if frac is not None else ""))  # fmt: skip
        if self.cell is not None:
            a, b, c, al, be, ga = self.cell
            lines.append(f"  cell: {a:.4f} {b:.4f} {c:.4f} A, {al:.3f} {be:.3f} {ga:.3f} deg")
        if self.space_group:
            lines.append(f"  space group: {self.space_group} (Laue group {self.laue_group})")
        m = self.merging
        if m is not None:
            lines.append(
                f"  merging: {m.d_max:.2f}-{m.d_min:.2f} A, {m.n_observations} obs, "
                f"{m.n_unique} unique, completeness {m.completeness_percent:.1f} %, "
                f"multiplicity {m.multiplicity:.2f}, I/sigma {m.i_over_sigma:.2f}, "
                f"Rmeas {m.r_meas:.3f}, CC1/2 {m.cc_half:.3f}"
            )
        for p in [self.mtz, self.reflections, *self.shelx]:
            if p is not None:
                lines.append(f"  -> {p}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary."""
        out = asdict(self)
        for key in ("directory", "mtz", "reflections"):
            out[key] = None if out[key] is None else str(out[key])
        out["shelx"] = [str(p) for p in self.shelx]
        out["indexed_fraction"] = self.indexed_fraction
        return out


# ----------------------------------------------------------------------- running


def require_program(names: list[str], hint: str, what: str) -> str:
    """The first of ``names`` found on PATH; ProgramMissing naming them and ``hint``."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise ProgramMissing(f"{what} is not installed ({' / '.join(names)} not found on PATH); "
                         f"{hint}", field=names[0])  # fmt: skip


def _tail(path: Path, n: int = 12) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _run_step(
    cmd: list[str], cwd: Path, log: Path, timeout: float | None, label: str,
    say: Callable[[str], None],
) -> StepRecord:  # fmt: skip
    say(f"{label} {' '.join(cmd[:3])}{' ...' if len(cmd) > 3 else ''}")
    start = time.perf_counter()
    try:
        with open(log, "w", encoding="utf-8") as fh:
            proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ProcessingFailed(f"{cmd[0]} did not finish within {timeout} s; log: {log}",
                               path=log, field=cmd[0]) from None  # fmt: skip
    except OSError as exc:
        raise ProcessingFailed(f"cannot run {cmd[0]}: {exc.strerror}", field=cmd[0]) from None
    seconds = time.perf_counter() - start
    record = StepRecord(cmd, seconds, proc.returncode, str(log))
    if proc.returncode != 0:
        raise ProcessingFailed(f"{cmd[0]} failed (exit status {proc.returncode}) after "
                               f"{seconds:.1f} s; end of its log:\n{_tail(log)}", path=log,
                               field=cmd[0])  # fmt: skip
    say(f"{label} {cmd[0]} done in {seconds:.1f} s")
    return record


def _find_script(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / "SMV" / name, directory / "NXmx" / name):
        if candidate.is_file():
            return candidate
    raise CrystalscopeError(
        f"no {name} in the directory, SMV/ or NXmx/ (write the hand-off files first: "
        "cred_import or write_handoff)",
        path=directory,
    )


def run_dials(
    directory: str | os.PathLike[str],
    *,
    script: str = DIALS_SCRIPT,
    timeout: float | None = None,
    say: Callable[[str], None] = print,
) -> ProcessingResult:
    """Run the DIALS chain of a hand-off directory and parse the results.

    Parameters
    ----------
    directory : str or os.PathLike
        A folder holding ``dials_process.sh``, or a hand-off directory whose ``SMV/``
        (else ``NXmx/``) folder holds it.
    script : str
        Name of the script.
    timeout : float, optional
        Seconds allowed per step.
    say : callable
        Receives progress lines.

    Raises
    ------
    ProgramMissing
        If a DIALS program is not on PATH (with installation instructions).
    ProcessingFailed
        If a step fails (with the end of its log).
    """
    path = _find_script(Path(directory), script)
    folder = path.parent
    commands = read_dials_script(path)
    for program in sorted({cmd[0] for cmd in commands}):
        require_program([program], DIALS_INSTALL_HINT, "DIALS")
    result = ProcessingResult(program="DIALS", directory=folder)
    for k, cmd in enumerate(commands, start=1):
        label = f"[{k}/{len(commands)}]"
        log = folder / f"{cmd[0]}.{k:02d}.stdout"
        result.steps.append(_run_step(cmd, folder, log, timeout, label, say))
    parse_dials_results(folder, result)
    _save(result)
    return result


def _save(result: ProcessingResult) -> None:
    with atomic_write(result.directory / RESULT_FILE) as fh:
        json.dump(result.to_dict(), fh, indent=1, default=str)


# ------------------------------------------------------------- DIALS geometry


@dataclass
class DialsGeometry:
    """The geometry ``dials.show`` reports for the first experiment (DIALS's frame and
    conventions: beam centre in pixels from the corner of the first pixel)."""

    wavelength_a: float
    distance_mm: float
    pixel_size_mm: tuple[float, float]
    image_size: tuple[int, int]
    fast_axis: tuple[float, float, float]
    slow_axis: tuple[float, float, float]
    beam_centre_px: tuple[float, float]
    rotation_axis: tuple[float, float, float] | None
    image_range: tuple[int, int] | None
    oscillation: tuple[float, float] | None


_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _values(text: str, label: str, n: int) -> tuple[float, ...] | None:
    pattern = re.escape(label) + r"\s*[:]?\s*[{(]?\s*" + r"\s*,\s*".join([f"({_FLOAT})"] * n)
    match = re.search(pattern, text)
    return None if match is None else tuple(float(v) for v in match.groups())


def dials_show(expt: str | os.PathLike[str], *, timeout: float = 120.0) -> DialsGeometry:
    """Run ``dials.show`` on an experiment file and parse its geometry.

    Raises
    ------
    ProgramMissing
        If ``dials.show`` is not on PATH.
    ProcessingFailed
        If it fails or its output lacks an item.
    """
    exe = require_program(["dials.show"], DIALS_INSTALL_HINT, "DIALS")
    path = Path(expt)
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=path.parent if path.parent.name else None)  # fmt: skip
    text = proc.stdout
    if proc.returncode != 0:
        raise ProcessingFailed(f"dials.show failed: {proc.stderr.strip()[-500:]}", path=path)
    items = {
        "wavelength_a": _values(text, "wavelength:", 1),
        "distance_mm": _values(text, "distance:", 1),
        "pixel_size_mm": _values(text, "pixel_size:", 2),
        "image_size": _values(text, "image_size:", 2),
        "fast_axis": _values(text, "fast_axis:", 3),
        "slow_axis": _values(text, "slow_axis:", 3),
        "beam_centre_px": _values(text, "px:", 2),
    }
    missing = [k for k, v in items.items() if v is None]
    if missing:
        raise ProcessingFailed("dials.show output lacks an item", path=path, field=missing[0])
    rng = _values(text, "image range:", 2)
    axis = _values(text, "Rotation axis:", 3)
    osc = _values(text, "oscillation:", 2)
    v = {k: val for k, val in items.items() if val is not None}
    return DialsGeometry(
        wavelength_a=v["wavelength_a"][0], distance_mm=v["distance_mm"][0],
        pixel_size_mm=(v["pixel_size_mm"][0], v["pixel_size_mm"][1]),
        image_size=(int(v["image_size"][0]), int(v["image_size"][1])),
        fast_axis=(v["fast_axis"][0], v["fast_axis"][1], v["fast_axis"][2]),
        slow_axis=(v["slow_axis"][0], v["slow_axis"][1], v["slow_axis"][2]),
        beam_centre_px=(v["beam_centre_px"][0], v["beam_centre_px"][1]),
        rotation_axis=None if axis is None else (axis[0], axis[1], axis[2]),
        image_range=None if rng is None else (int(rng[0]), int(rng[1])),
        oscillation=None if osc is None else (osc[0], osc[1]),
    )  # fmt: skip


# ----------------------------------------------------------------- DIALS results


_SAVED = re.compile(r"Saved\s+(\d+)\s+reflections\s+to\s+strong\.refl")
_INDEXED_HEAD = re.compile(r"#\s*indexed\s*\|\s*#\s*unindexed")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def dials_spot_counts(folder: Path) -> tuple[int | None, int | None]:
    """``(found, indexed)`` from ``dials.find_spots.log`` and ``dials.index.log``."""
    found = indexed = None
    text = _read(folder / "dials.find_spots.log")
    if text:
        hits = _SAVED.findall(text)
        found = int(hits[-1]) if hits else None
    text = _read(folder / "dials.index.log")
    if text:
        lines = text.splitlines()
        heads = [i for i, line in enumerate(lines) if _INDEXED_HEAD.search(line)]
        if heads:
            indexed = 0
            for line in lines[heads[-1] + 2 :]:
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) < 3 or not cells[0].isdigit():
                    break
                indexed += int(cells[1])
    return found, indexed


def cell_from_vectors(a: Any, b: Any, c: Any) -> tuple[float, float, float, float, float, float]:
    """Cell parameters (A, degrees) of three real-space vectors."""
    va, vb, vc = (np.asarray(v, dtype=float) for v in (a, b, c))

    def angle(u: np.ndarray, v: np.ndarray) -> float:
        cos = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
        return math.degrees(math.acos(max(-1.0, min(1.0, cos))))

    return (float(np.linalg.norm(va)), float(np.linalg.norm(vb)), float(np.linalg.norm(vc)),
            angle(vb, vc), angle(va, vc), angle(va, vb))  # fmt: skip


def _symmetry_from_hall(hall: str) -> tuple[str, str]:
    import gemmi

    sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(hall.strip()))
    if sg is None:
        return hall.strip(), "?"
    return sg.xhm(), sg.laue_str()


def _dials_crystal(folder: Path, result: ProcessingResult) -> None:
    for name in ("scaled.expt", "symmetrized.expt", "refined.expt", "indexed.expt"):
        text = _read(folder / name)
        if not text:
            continue
        try:
            crystal = json.loads(text)["crystal"][0]
            result.cell = cell_from_vectors(crystal["real_space_a"], crystal["real_space_b"],
                                            crystal["real_space_c"])  # fmt: skip
            result.space_group, result.laue_group = _symmetry_from_hall(
                crystal["space_group_hall_symbol"]
            )
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        return


_SUMMARY_ROWS = {
    "High resolution limit": "d_min",
    "Low resolution limit": "d_max",
    "Completeness": "completeness_percent",
    "Multiplicity": "multiplicity",
    "I/sigma": "i_over_sigma",
    "Rmerge(I)": "r_merge",
    "Rmeas(I)": "r_meas",
    "Rpim(I)": "r_pim",
    "CC half": "cc_half",
    "Total observations": "n_observations",
    "Total unique": "n_unique",
}


def parse_dials_merging(text: str) -> MergingStats | None:
    """The "Overall" column of the last "Summary of merging statistics" of a
    ``dials.scale.log`` (or ``dials.merge.log``)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if "Summary of merging statistics" in line]
    if not starts:
        return None
    stats = MergingStats()
    column = rows = 0
    for line in lines[starts[-1] + 1 :]:
        if not column:
            words = line.split()
            column = len(words) if words and words[-1] == "Overall" else 0
            continue
        if not line.strip():
            if rows:
                break
            continue
        rows += 1
        for label, name in _SUMMARY_ROWS.items():
            if line.startswith(label + " "):
                value = float(line[len(label) :].split()[-1])
                setattr(stats, name, int(value) if name.startswith("n_") else value)
    return stats if rows else None


def parse_dials_results(
    directory: str | os.PathLike[str], result: ProcessingResult | None = None
) -> ProcessingResult:
    """Read the results of a DIALS run in ``directory`` (module docstring)."""
    folder = Path(directory)
    out = result or ProcessingResult(program="DIALS", directory=folder)
    out.n_spots, out.n_indexed = dials_spot_counts(folder)
    _dials_crystal(folder, out)
    text = _read(folder / "dials.scale.log")
    out.merging = parse_dials_merging(text) if text else None
    mtz = folder / "scaled.mtz"
    out.mtz = mtz if mtz.is_file() else None
    out.shelx = [p for p in (folder / "scaled.hkl", folder / "scaled.ins") if p.is_file()]
    refl = folder / "scaled.refl"
    out.reflections = refl if refl.is_file() else None
    return out


# -------------------------------------------------------------------- XDS results


_OUT_OF = re.compile(r"^\s*(\d+)\s+OUT OF\s+(\d+)\s+SPOTS INDEXED", re.MULTILINE)
_TABLE = "SUBSET OF INTENSITY DATA WITH SIGNAL/NOISE >= -3.0 AS FUNCTION OF RESOLUTION"


def _percent(word: str) -> float:
    return float(word.rstrip("%*"))


def parse_xds_correct(text: str) -> MergingStats | None:
    """Merging statistics from the ``total`` row of the last resolution table of
    ``CORRECT.LP`` (R-factors as fractions, completeness in percent)."""
    at = text.rfind(_TABLE)
    if at < 0:
        return None
    lines = text[at:].splitlines()
    header = lines[1] if len(lines) > 1 else ""
    limits: list[float] = []
    for line in lines[2:]:
        words = line.split()
        if not words:
            continue
        if words[0] == "total":
            return _xds_total(words, header, limits)
        try:
            limits.append(float(words[0]))
        except ValueError:
            continue
    return None


def _xds_total(words: list[str], header: str, limits: list[float]) -> MergingStats | None:
    try:
        obs, unique = int(words[1]), int(words[2])
        stats = MergingStats(
            d_min=min(limits) if limits else math.nan,
            n_observations=obs,
            n_unique=unique,
            completeness_percent=_percent(words[4]),
            multiplicity=obs / unique if unique else math.nan,
            i_over_sigma=float(words[8]),
            r_merge=_percent(words[5]) / 100.0,
            r_meas=_percent(words[9]) / 100.0,
        )
        if "CC(1/2)" in header:
            stats.cc_half = _percent(words[10]) / 100.0
    except (IndexError, ValueError):
        return None
    return stats


def _xds_symmetry(text: str) -> tuple[tuple[float, ...] | None, int | None]:
    cell = sg = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(("UNIT CELL PARAMETERS", "!UNIT_CELL_CONSTANTS=")):
            try:
                cell = tuple(float(v) for v in s.split()[-6:])
            except ValueError:
                continue
        elif s.startswith(("SPACE GROUP NUMBER", "!SPACE_GROUP_NUMBER=")):
            try:
                sg = int(s.split()[-1])
            except ValueError:
                continue
    return cell, sg


def parse_xds_results(
    directory: str | os.PathLike[str], result: ProcessingResult | None = None
) -> ProcessingResult:
    """Read the results of an XDS run in ``directory`` (module docstring)."""
    import gemmi

    folder = Path(directory)
    out = result or ProcessingResult(program="XDS", directory=folder)
    text = _read(folder / "IDXREF.LP")
    hits = _OUT_OF.findall(text or "")
    if hits:
        out.n_indexed, out.n_spots = int(hits[-1][0]), int(hits[-1][1])
    correct = _read(folder / "CORRECT.LP") or ""
    out.merging = parse_xds_correct(correct)
    cell, number = _xds_symmetry(correct)
    header = _read(folder / "XDS_ASCII.HKL")
    if header:
        head = header[: header.find("!END_OF_HEADER")] if "!END_OF_HEADER" in header else ""
        cell2, number2 = _xds_symmetry(head)
        cell, number = cell2 or cell, number2 or number
    if cell is not None and len(cell) == 6:
        a, b, c, al, be, ga = cell
        out.cell = (a, b, c, al, be, ga)
    if number:
        sg = gemmi.find_spacegroup_by_number(number)
        out.space_group, out.laue_group = sg.xhm(), sg.laue_str()
    hkl = folder / "XDS_ASCII.HKL"
    out.reflections = hkl if hkl.is_file() else None
    out.shelx = [p for p in (folder / "shelx.hkl",) if p.is_file()]
    return out


def run_xds(
    directory: str | os.PathLike[str],
    *,
    timeout: float | None = None,
    say: Callable[[str], None] = print,
) -> ProcessingResult:
    """Run XDS where ``XDS.INP`` is (the directory or its ``SMV/``) and parse the results.

    Raises
    ------
    ProgramMissing
        If neither ``xds_par`` nor ``xds`` is on PATH.
    ProcessingFailed
        If XDS fails or writes no ``CORRECT.LP``.
    """
    base = Path(directory)
    folder = base if (base / "XDS.INP").is_file() else base / "SMV"
    if not (folder / "XDS.INP").is_file():
        raise CrystalscopeError("no XDS.INP in the directory or its SMV/ folder", path=base)
    xds = require_program(["xds_par", "xds"], XDS_INSTALL_HINT, "XDS")
    result = ProcessingResult(program="XDS", directory=folder)
    result.steps.append(_run_step([xds], folder, folder / "xds.stdout", timeout, "[1/2]", say))
    if not (folder / "CORRECT.LP").is_file():
        raise ProcessingFailed(f"XDS wrote no CORRECT.LP; end of its output:\n"
                               f"{_tail(folder / 'xds.stdout')}", path=folder)  # fmt: skip
    if shutil.which("xdsconv") and (folder / "XDS_ASCII.HKL").is_file():
        with atomic_write(folder / "XDSCONV.INP") as fh:
            fh.write("INPUT_FILE=XDS_ASCII.HKL\nOUTPUT_FILE=shelx.hkl SHELX\n"
                     "FRIEDEL'S_LAW=TRUE\n")  # fmt: skip
        result.steps.append(
            _run_step(["xdsconv"], folder, folder / "xdsconv.stdout", timeout, "[2/2]", say)
        )
    parse_xds_results(folder, result)
    _save(result)
    return result

"""The self-contained HTML report of a SerialED run (issue 7).

:func:`write_report` reads the output directories of the steps of a run (``serial
preprocess``, ``serial index``, ``serial integrate``, ``crystalscope merge`` and
optionally ``crystalscope merge --series``) and writes one HTML file that needs no
server and no external resource: plots are embedded PNG ``data:`` URIs, the style sheet
is a ``<style>`` block, there is no script.  The page has eight sections:

1. summary numbers (frames read and skipped, hits, indexing, merging, statistics) and
   the table of steps;
2. the pattern centre and the number of peaks per frame over the run;
3. the virtual powder pattern of all hits' peaks with the refined cell's lines;
4. the elliptical distortion fitted in pre-processing;
5. histograms of the per-crystal scale factors and B factors;
6. CC1/2, completeness, multiplicity, I/sigma against resolution and the Wilson plot;
7. the dose-fraction comparison and the recommended exposure;
8. the exact configuration.

Several pre-processed, indexed and integrated directories (on-line mode: one per input
file) are concatenated in the given order.  A section whose inputs do not exist yet says
"not available yet" instead of failing, so that the report can be written at any time
during a run; a section whose files exist but cannot be read says why.
"""

from __future__ import annotations

import datetime
import html
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import gemmi
import numpy as np
import pandas as pd

from crystalscope import __version__
from crystalscope.dataset import Dataset
from crystalscope.errors import CrystalscopeError
from crystalscope.io.atomic import atomic_write
from crystalscope.io.crystfel_cell import read_cell
from crystalscope.io.observations import read_observations
from crystalscope.merge.plots import plot_statistics
from crystalscope.merge.run import merge_output_paths, plot_scales
from crystalscope.merge.series import recommend
from crystalscope.merge.stats import (
    CC_HALF_CUTOFF,
    MergeStatistics,
    WilsonFit,
    _cutoff,
    wilson_fit,
)
from crystalscope.merge.stats_run import load_merged
from crystalscope.serial.index_output import index_output_paths
from crystalscope.serial.integrate_output import integrate_output_paths
from crystalscope.serial.preprocess import output_paths
from crystalscope.serial.report_plots import (
    PolarPeaks,
    figure_data_uri,
    file_data_uri,
    plot_ellipse_series,
    plot_frames,
    plot_polar,
    plot_powder,
    powder_histograms,
    powder_vectors,
    written_png_uri,
)

__all__ = ["NOT_AVAILABLE", "SECTIONS", "ReportInputs", "render_report", "write_report"]

#: What a section says when the step that makes its inputs has not run (yet).
NOT_AVAILABLE = "not available yet"
#: ``(id, heading)`` of the report's sections, in order.
SECTIONS = (
    ("summary", "1. Summary"),
    ("frames", "2. Pattern centre and peaks per frame"),
    ("powder", "3. Virtual powder pattern"),
    ("ellipticity", "4. Ellipticity"),
    ("scales", "5. Per-crystal scale and B factors"),
    ("statistics", "6. Merging statistics against resolution"),
    ("dose", "7. Dose fractions"),
    ("configuration", "8. Configuration"),
)
_MERGED_STEM = "merged"  # crystalscope merge writes merged.mtz, merged.hkl (+ .hkl1/.hkl2)
_SHOWN_REJECTED = 200  # skipped frames listed one by one at most
#: Column headings of the statistics table (as the terminal table of ``crystalscope merge``).
_SHELL_NAMES = {
    "d_max": "d_max (A)", "d_min": "d_min (A)", "n_possible": "possible",
    "n_measured": "unique", "completeness": "compl. %", "n_obs": "observations",
    "multiplicity": "mult.", "mean_i": "<I>", "mean_i_over_sigma": "<I>/<sigma>",
    "snr": "<I/sigma>", "cc_half": "CC1/2", "cc_star": "CC*", "r_split": "Rsplit %",
    "n_common": "pairs",
}  # fmt: skip
_CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222;
       padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #bbb; padding-bottom: 0.2em;
     margin-top: 2em; }
h3 { font-size: 1.05em; }
nav a { margin-right: 0.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f0f0f0; }
td.text, th.text { text-align: left; }
tr.recommended td { background: #e3f4e3; font-weight: bold; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; overflow-x: auto;
      font-size: 0.85em; }
.wide { overflow-x: auto; }
.na { color: #777; font-style: italic; }
.error { color: #a00; }
.meta { color: #666; font-size: 0.9em; }
"""


@dataclass
class ReportInputs:
    """What a report is made of.

    Attributes
    ----------
    title : str
        Heading and page title.
    config_yaml : str
        The exact resolved configuration (YAML text), shown verbatim.
    preprocessed, indexed, integrated : list of Path
        Output directories of ``serial preprocess``, ``serial index`` and ``serial
        integrate`` (on-line mode: one per input file, in the same order).
    merged : Path or None
        Output directory of ``crystalscope merge`` (None: not merged yet).
    dose_series : Path or None
        Output directory of ``crystalscope merge --series`` (``dose_series.csv``).
    steps : list of dict
        Rows ``{"step": str, "status": "computed" | "reused" | "up to date",
        "seconds": float}``.
    skipped_files : dict
        Unreadable input file -> reason.
    notes : list of str
        Free text shown near the top.
    """

    title: str
    config_yaml: str
    preprocessed: list[Path]
    indexed: list[Path]
    integrated: list[Path]
    merged: Path | None
    dose_series: Path | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    skipped_files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class _Unavailable(Exception):
    """A section's inputs do not exist (yet)."""


#: Errors of reading outputs that exist but are unusable (shown in the section instead).
_READ_ERRORS = (CrystalscopeError, OSError, ValueError, KeyError)


# --------------------------------------------------------------------------- reading


@dataclass
class _Preprocessed:
    shots: pd.DataFrame  # concatenated; ``position`` runs over all directories
    rejected: pd.DataFrame  # file, event, frame, reason, directory
    ellipses: pd.DataFrame  # directory, ratio, angle_deg (NaN when not fitted)
    boundaries: list[int]
    datasets: list[Dataset]
    missing: list[Path]


@dataclass
class _Indexed:
    crystals: pd.DataFrame
    n_hits: int
    n_indexed_frames: int
    datasets: list[tuple[Path, Dataset]]
    cell: gemmi.UnitCell | None
    lattice: str | None
    missing: list[Path]


@dataclass
class _Merged:
    shells: pd.DataFrame
    crystals: pd.DataFrame
    statistics: MergeStatistics
    paths: dict[str, Path]

    def plot_uri(self, key: str, draw: Callable[[Path], Any]) -> str:
        """The merge step's PNG ``key`` when it is as new as its statistics, else drawn."""
        png, csv = self.paths[key], self.paths["statistics_csv"]
        if png.is_file() and png.stat().st_mtime_ns >= csv.stat().st_mtime_ns:
            return file_data_uri(png)
        return written_png_uri(draw)


def _existing(dirs: Sequence[Path], name: Callable[[Path], Path]) -> tuple[list[Path], list[Path]]:
    """Directories whose file ``name(dir)`` exists, and those where it does not."""
    found = [Path(d) for d in dirs if name(Path(d)).is_file()]
    return found, [Path(d) for d in dirs if not name(Path(d)).is_file()]


def _read_preprocessed(dirs: Sequence[Path]) -> _Preprocessed:
    found, missing = _existing(dirs, lambda d: output_paths(d)["dataset"])
    if not found:
        raise _Unavailable("nothing pre-processed")
    shots, rejected, ellipses, boundaries, datasets = [], [], [], [], []
    offset = 0
    for i, d in enumerate(found):
        paths = output_paths(d)
        ds = Dataset.open(paths["dataset"])
        table = ds.shots.copy()
        table["directory"] = i
        table["position"] = offset + np.arange(len(table))
        if i:
            boundaries.append(offset)
        offset += len(table)
        shots.append(table)
        datasets.append(ds)
        if paths["rejected"].is_file():
            skipped = pd.read_csv(paths["rejected"])
            skipped["directory"] = str(d)
            rejected.append(skipped)
        meta = ds.meta.get("preprocess", {})
        ellipses.append(
            {
                "directory": str(d), "ratio": float(meta.get("ellipse_ratio", math.nan)),
                "angle_deg": float(meta.get("ellipse_angle_deg", math.nan)),
            }
        )  # fmt: skip
    columns = ["file", "event", "frame", "reason", "directory"]
    return _Preprocessed(
        pd.concat(shots, ignore_index=True),
        pd.concat(rejected, ignore_index=True) if rejected else pd.DataFrame(columns=columns),
        pd.DataFrame(ellipses), boundaries, datasets, missing,
    )  # fmt: skip


def _read_indexed(dirs: Sequence[Path]) -> _Indexed:
    found, missing = _existing(dirs, lambda d: index_output_paths(d)["crystals"])
    if not found:
        raise _Unavailable("nothing indexed")
    crystals, datasets = [], []
    n_hits = n_frames = 0
    cell: gemmi.UnitCell | None = None
    lattice: str | None = None
    for d in found:
        paths = index_output_paths(d)
        table = pd.read_csv(paths["crystals"])
        crystals.append(table.assign(directory=str(d)))
        n_frames += int(table["frame"].nunique()) if len(table) else 0
        if cell is None and paths["cell"].is_file():
            cell_file = read_cell(paths["cell"])
            cell = cell_file.cell if cell_file.parameters is not None else None
        if paths["dataset"].is_file():
            ds = Dataset.open(paths["dataset"])
            datasets.append((d, ds))
            hit = ds.shots["hit"] if "hit" in ds.shots else pd.Series(True, index=ds.shots.index)
            n_hits += int(hit.sum())
            meta = ds.meta.get("index", {})
            lattice = lattice or str(meta.get("space_group") or meta.get("lattice") or "") or None
    return _Indexed(
        pd.concat(crystals, ignore_index=True), n_hits, n_frames, datasets, cell, lattice, missing
    )


def _read_wilson(directory: Path, cell_files: Sequence[Path]) -> WilsonFit | None:
    """The Wilson plot of the merged intensities: the merged MTZ, else the CrystFEL
    ``.hkl`` with the indexing's cell file (as ``crystalscope stats`` reads them)."""
    mtz, hkl = directory / f"{_MERGED_STEM}.mtz", directory / f"{_MERGED_STEM}.hkl"
    cells = [c for c in cell_files if c.is_file()]
    if mtz.is_file():
        data = load_merged(mtz)
    elif hkl.is_file() and cells:
        data = load_merged(hkl, cell=cells[0])
    else:
        return None
    # as crystalscope merge computes it (merge_statistics: Friedel mates together)
    return wilson_fit(data.merged, data.cell, space_group=data.space_group)


def _read_merged(directory: Path | None, cell_files: Sequence[Path]) -> _Merged:
    if directory is None:
        raise _Unavailable("not merged")
    paths = merge_output_paths(directory)
    if not paths["statistics_csv"].is_file():
        raise _Unavailable(f"no {paths['statistics_csv'].name} in {directory}")
    shells = pd.read_csv(paths["statistics_csv"], dtype={"shell": str}).set_index("shell")
    crystals = pd.read_csv(paths["crystals"]) if paths["crystals"].is_file() else None
    if crystals is None:
        raise _Unavailable(f"no {paths['crystals'].name} in {directory}")
    per_shell = shells.drop(index="overall")
    edges = np.append(1.0 / per_shell["d_max"].to_numpy(float), 1.0 / per_shell["d_min"].iloc[-1])
    cutoff = _cutoff(edges, per_shell["cc_half"].to_numpy(float))
    notes = []
    try:
        wilson = _read_wilson(directory, cell_files)
    except _READ_ERRORS as exc:
        wilson = None
        notes.append(f"no Wilson plot: {exc}")
    stats = MergeStatistics(shells, wilson, cutoff, notes=notes)
    return _Merged(shells, crystals, stats, paths)


class _Run:
    """The outputs of a run, read when first needed."""

    def __init__(self, inputs: ReportInputs) -> None:
        self.inputs = inputs

    @cached_property
    def preprocessed(self) -> _Preprocessed:
        return _read_preprocessed(self.inputs.preprocessed)

    @cached_property
    def indexed(self) -> _Indexed:
        return _read_indexed(self.inputs.indexed)

    @cached_property
    def merged(self) -> _Merged:
        cells = [index_output_paths(d)["cell"] for d in self.inputs.indexed]
        return _read_merged(self.inputs.merged, cells)

    @cached_property
    def observations(self) -> tuple[int, int]:
        """Integrated observations and crystals with observations."""
        dirs = self.inputs.integrated
        found, _ = _existing(dirs, lambda d: integrate_output_paths(d)["observations"])
        if not found:
            raise _Unavailable("nothing integrated")
        n_obs = n_crystals = 0
        for d in found:
            table = read_observations(integrate_output_paths(d)["observations"]).table
            n_obs += len(table)
            if "crystal_id" in table:
                n_crystals += int(table["crystal_id"].nunique())
        return n_obs, n_crystals


def _get(read: Callable[[], Any]) -> Any:
    """``read()``, or None when its inputs are not available."""
    try:
        return read()
    except _Unavailable:
        return None


# --------------------------------------------------------------------------- HTML pieces


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, spec: str = "") -> str:
    """A number formatted with ``spec``; "-" for NaN or None."""
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    if not math.isfinite(number):
        return "-"
    return format(int(number), "d") if spec == "d" else format(number, spec)


def _unavailable(reason: str) -> str:
    return f'<p class="na">{NOT_AVAILABLE} ({_esc(reason)})</p>'


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_esc(alt)}">'


def _table(
    frame: pd.DataFrame,
    formats: dict[str, str] | None = None,
    *,
    row_class: Callable[[pd.Series], str] | None = None,
    css_class: str = "",
) -> str:
    """An HTML table of ``frame`` (text columns left-aligned, numbers formatted)."""
    formats = formats or {}
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    head = "".join(
        f'<th class="text">{_esc(c)}</th>' if c in text else f"<th>{_esc(c)}</th>"
        for c in frame.columns
    )
    rows = []
    for _, row in frame.iterrows():
        cells = "".join(
            f'<td class="text">{_esc(row[c])}</td>' if c in text
            else f"<td>{_num(row[c], formats.get(str(c), '.4g'))}</td>"
            for c in frame.columns
        )  # fmt: skip
        cls = row_class(row) if row_class is not None else ""
        rows.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    attr = f' class="{css_class}"' if css_class else ""
    return (
        f'<div class="wide"><table{attr}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _key_row(key: str, label: str, value: Any, text: str) -> str:
    """One summary row; ``data-value`` holds the number itself (empty when unknown)."""
    data = "" if value is None else _esc(value)
    return (
        f'<tr data-key="{_esc(key)}"><th class="text">{_esc(label)}</th>'
        f'<td class="text" data-value="{data}">{text}</td></tr>'
    )


def _percent(part: float, whole: float) -> float | None:
    return 100.0 * part / whole if whole else None


# --------------------------------------------------------------------------- 1. summary


def _frame_rows(run: _Run) -> list[str]:
    na = f'<span class="na">{NOT_AVAILABLE}</span>'
    pre = _get(lambda: run.preprocessed)
    n_files = len(run.inputs.skipped_files)
    if pre is None:
        return [
            _key_row("frames_read", "frames read", None, na),
            _key_row("frames_skipped", "frames skipped", None, na),
            _key_row("files_skipped", "input files skipped", n_files, str(n_files)),
            _key_row("hits", "hits", None, na),
            _key_row("hit_rate", "hit rate (%)", None, na),
        ]
    shots, rejected = pre.shots, pre.rejected
    n_read = len(shots) + len(rejected)
    read_text = f"{n_read} ({len(shots)} usable)"
    if "frame_count" in shots:
        read_text += f"; the usable ones sum {int(shots['frame_count'].sum())} raw frames"
    reasons = rejected["reason"].astype(str).value_counts()
    why = ", ".join(f"{n} {_esc(r)}" for r, n in reasons.items())
    hits = int(shots["hit"].sum())
    rate = _percent(hits, len(shots))
    return [
        _key_row("frames_read", "frames read", n_read, read_text),
        _key_row("frames_skipped", "frames skipped (bad frames)", len(rejected),
                 f"{len(rejected)}" + (f" ({why})" if why else "")),
        _key_row("files_skipped", "input files skipped", n_files, str(n_files)),
        _key_row("hits", "hits", hits, f"{hits} of {len(shots)} usable frames"),
        _key_row("hit_rate", "hit rate (%)", rate, _num(rate, ".1f")),
    ]  # fmt: skip


def _index_rows(run: _Run) -> list[str]:
    na = f'<span class="na">{NOT_AVAILABLE}</span>'
    idx = _get(lambda: run.indexed)
    obs = _get(lambda: run.observations)
    if idx is None:
        rows = [
            _key_row("indexed_crystals", "indexed crystals", None, na),
            _key_row("indexing_rate", "indexing rate (% of hits)", None, na),
        ]
    else:
        n = len(idx.crystals)
        rate = _percent(idx.n_indexed_frames, idx.n_hits)
        rows = [
            _key_row("indexed_crystals", "indexed crystals", n,
                     f"{n} on {idx.n_indexed_frames} frames"),
            _key_row("indexing_rate", "indexing rate (% of hits)", rate,
                     f"{_num(rate, '.1f')} ({idx.n_indexed_frames} of {idx.n_hits} hits)"),
        ]  # fmt: skip
    if obs is None:
        rows.append(_key_row("observations", "integrated observations", None, na))
    else:
        rows.append(
            _key_row("observations", "integrated observations", obs[0],
                     f"{obs[0]} from {obs[1]} crystals")
        )  # fmt: skip
    return rows


def _merge_rows(run: _Run) -> list[str]:
    keys = (
        ("crystals_merged", "crystals merged"), ("crystals_rejected", "crystals rejected"),
        ("unique_reflections", "unique reflections"), ("cc_half", "overall CC1/2"),
        ("completeness", "completeness (%)"), ("resolution", "resolution range (A)"),
        ("cc_cutoff", f"CC1/2 = {CC_HALF_CUTOFF} at d (A)"), ("wilson_b", "Wilson B (A^2)"),
    )  # fmt: skip
    merged = _get(lambda: run.merged)
    if merged is None:
        na = f'<span class="na">{NOT_AVAILABLE}</span>'
        return [_key_row(k, label, None, na) for k, label in keys]
    rejected = merged.crystals["rejected"].to_numpy(bool)
    reasons = merged.crystals.loc[rejected, "reason"].astype(str).str.split(" [(]").str[0]
    why = ", ".join(f"{n} {_esc(r)}" for r, n in reasons.value_counts().items())
    overall = merged.shells.loc["overall"]
    cutoff = merged.statistics.cutoff_d
    wilson = merged.statistics.wilson
    b = wilson.b_factor if wilson is not None and math.isfinite(wilson.b_factor) else None
    values: list[tuple[Any, str]] = [
        (int((~rejected).sum()), f"{int((~rejected).sum())} of {len(rejected)}"),
        (int(rejected.sum()), f"{int(rejected.sum())}" + (f" ({why})" if why else "")),
        (int(overall["n_measured"]), str(int(overall["n_measured"]))),
        (float(overall["cc_half"]), _num(overall["cc_half"], ".4f")),
        (float(overall["completeness"]), _num(overall["completeness"], ".2f")),
        (float(overall["d_min"]),
         f"{_num(overall['d_max'], '.2f')} - {_num(overall['d_min'], '.2f')}"),
        (cutoff, _num(cutoff, ".2f") if cutoff is not None else "not reached"),
        (b, _num(b, ".1f")),
    ]  # fmt: skip
    return [_key_row(k, label, v, t) for (k, label), (v, t) in zip(keys, values, strict=True)]


def _steps_table(steps: Sequence[dict[str, Any]]) -> str:
    if not steps:
        return '<p class="na">no steps recorded</p>'
    table = pd.DataFrame(
        {
            "step": [str(s.get("step", "")) for s in steps],
            "status": [str(s.get("status", "")) for s in steps],
            "seconds": [float(s.get("seconds", math.nan)) for s in steps],
        }
    )
    total = float(np.nansum(table["seconds"].to_numpy()))
    return _table(table, {"seconds": ".1f"}, css_class="steps") + (f"<p>total {total:.1f} s</p>")


def _skipped_tables(run: _Run) -> str:
    parts = []
    if run.inputs.skipped_files:
        files = pd.DataFrame(
            {
                "file": list(run.inputs.skipped_files),
                "reason": list(run.inputs.skipped_files.values()),
            }
        )
        parts.append("<h3>Skipped input files</h3>" + _table(files, css_class="skipped-files"))
    pre = _get(lambda: run.preprocessed)
    if pre is not None and len(pre.rejected):
        shown = pre.rejected[["file", "event", "frame", "reason"]].head(_SHOWN_REJECTED)
        more = len(pre.rejected) - len(shown)
        parts.append(
            "<h3>Skipped frames</h3>"
            + _table(shown.astype({"file": str, "reason": str}), {"event": "d", "frame": "d"},
                     css_class="skipped-frames")
            + (f"<p>... and {more} more (rejected_frames.csv)</p>" if more > 0 else "")
        )  # fmt: skip
    return "".join(parts)


def _guarded(build: Callable[[_Run], list[str]], run: _Run, key: str) -> list[str]:
    """Summary rows, or one row saying why they could not be read."""
    try:
        return build(run)
    except _READ_ERRORS as exc:
        text = f'<span class="error">could not be shown: {_esc(exc)}</span>'
        return [_key_row(key, key.replace("_", " "), None, text)]


def _summary(run: _Run) -> str:
    rows = (
        _guarded(_frame_rows, run, "pre-processing")
        + _guarded(_index_rows, run, "indexing")
        + _guarded(_merge_rows, run, "merging")
    )
    return (
        f'<table class="summary"><tbody>{"".join(rows)}</tbody></table>'
        + "<h3>Steps</h3>"
        + _steps_table(run.inputs.steps)
        + _skipped_tables(run)
    )


# --------------------------------------------------------------------------- 2.-4.


def _missing_note(missing: Sequence[Path], what: str) -> str:
    if not missing:
        return ""
    names = ", ".join(_esc(m) for m in missing)
    return f'<p class="na">{what} {NOT_AVAILABLE}: {names}</p>'


def _frames(run: _Run) -> str:
    pre = run.preprocessed
    fig = plot_frames(pre.shots, pre.boundaries)
    shots = pre.shots
    n_dirs = len(pre.datasets)
    hit = shots["hit"].to_numpy(bool)
    peaks = shots["num_peaks"].to_numpy(float)
    text = (
        f"<p>{len(shots)} usable frames from {n_dirs} pre-processed "
        f"director{'y' if n_dirs == 1 else 'ies'}; median peaks per frame "
        f"{_num(np.median(peaks[hit]) if hit.any() else math.nan, '.0f')} in hits, "
        f"{_num(np.median(peaks[~hit]) if (~hit).any() else math.nan, '.0f')} in non-hits.</p>"
    )
    methods = shots["centre_method"].astype(str).value_counts() if "centre_method" in shots else {}
    if len(methods):
        text += (
            "<p>centre from: " + ", ".join(f"{_esc(m)} {n}" for m, n in methods.items()) + "</p>"
        )
    return (
        text + _img(figure_data_uri(fig), "pattern centre and peaks per frame")
        + _missing_note(pre.missing, "pre-processed output")
    )  # fmt: skip


def _powder(run: _Run) -> str:
    idx = run.indexed
    if not idx.datasets:
        raise _Unavailable("no indexed.h5 with peaks")
    hist = powder_histograms(powder_vectors(idx.datasets), idx.cell, idx.lattice)
    fig = plot_powder(hist, idx.cell, idx.lattice)
    if idx.cell is not None:
        c = idx.cell
        cell_text = (
            f"Cell of the index step ({_esc(idx.lattice or 'aP')}): {c.a:.3f} {c.b:.3f} "
            f"{c.c:.3f} A, {c.alpha:.2f} {c.beta:.2f} {c.gamma:.2f} deg; grey lines: its "
            "allowed reflections, dotted: lattice vectors only the pair histogram shows"
        )
    else:
        cell_text = "No cell file in the indexed directory: no lines drawn"
    return (
        f"<p>{hist.n_peaks} peaks of {hist.n_frames} hits (blue: |q| of every peak; red: "
        f"distances between the peaks of one frame). {cell_text}.</p>"
        + _img(figure_data_uri(fig), "virtual powder pattern")
        + _missing_note(idx.missing, "indexed output")
    )


def _ellipticity(run: _Run) -> str:
    pre = run.preprocessed
    table = pre.ellipses.copy()
    table.insert(2, "ellipticity_%", 100.0 * (table["ratio"] - 1.0))
    out = (
        "<p>Area-preserving elliptical distortion fitted to the hits' peaks in "
        "pre-processing (ratio of the axes and angle of the major axis, panel 0 frame).</p>"
        + _table(table, {"ratio": ".5f", "ellipticity_%": ".3f", "angle_deg": ".1f"},
                 css_class="ellipses")
    )  # fmt: skip
    if len(table) > 1:
        out += _img(figure_data_uri(plot_ellipse_series(table)), "ellipticity per directory")
    parts = [PolarPeaks.from_dataset(ds) for ds in pre.datasets]
    if sum(p.dx.size for p in parts):
        out += _img(figure_data_uri(plot_polar(parts)), "polar peak histograms")
    else:
        out += '<p class="na">no peaks in hits: no polar histogram</p>'
    return out + _missing_note(pre.missing, "pre-processed output")


# --------------------------------------------------------------------------- 5.-8.


def _scales(run: _Run) -> str:
    crystals = run.merged.crystals
    kept = crystals[~crystals["rejected"].to_numpy(bool)]
    uri = run.merged.plot_uri("scales_plot", lambda p: plot_scales(crystals, p))
    summary = pd.DataFrame(
        {
            "quantity": ["scale G", "relative B (A^2)"],
            "median": [np.nanmedian(kept["scale"]), np.nanmedian(kept["b_factor"])]
            if len(kept) else [math.nan, math.nan],
            "min": [kept["scale"].min(), kept["b_factor"].min()],
            "max": [kept["scale"].max(), kept["b_factor"].max()],
        }
    )  # fmt: skip
    return (
        f"<p>{len(kept)} merged crystals (rejected ones left out).</p>"
        + _table(summary, css_class="scales")
        + _img(uri, "per-crystal scale and B factor histograms")
    )


def _statistics(run: _Run) -> str:
    merged = run.merged
    stats = merged.statistics
    uri = merged.plot_uri("statistics_plot", lambda p: plot_statistics(stats, p))
    shown = merged.shells.reset_index().astype({"shell": str}).rename(columns=_SHELL_NAMES)
    formats = {
        "d_max (A)": ".2f", "d_min (A)": ".2f", "possible": "d", "unique": "d",
        "compl. %": ".1f", "observations": "d", "mult.": ".2f", "<I>": ".4g",
        "<I>/<sigma>": ".2f", "<I/sigma>": ".2f", "CC1/2": ".4f", "CC*": ".4f",
        "Rsplit %": ".2f", "pairs": "d",
    }  # fmt: skip
    wilson = stats.wilson
    note = (
        f"<p>Wilson B = {wilson.b_factor:.1f} A^2 from {int(wilson.used.sum())} bins.</p>"
        if wilson is not None and math.isfinite(wilson.b_factor)
        else '<p class="na">no Wilson B (no merged intensities to fit)</p>'
    )
    note += "".join(f'<p class="na">{_esc(n)}</p>' for n in stats.notes)
    return (
        _table(shown, formats, css_class="shells")
        + note
        + _img(uri, "merging statistics against resolution and Wilson plot")
    )


def _dose(run: _Run) -> str:
    folder = run.inputs.dose_series
    path = folder / "dose_series.csv" if folder is not None else None
    if path is None or not path.is_file():
        return '<p class="na">no dose series</p>'
    table = pd.read_csv(path)
    best = recommend(table)
    row = table.set_index("n_fractions").loc[best]
    out = (
        f'<p class="recommendation" data-value="{best}">recommended exposure: <b>{best} '
        f"fraction(s)</b> ({_num(row['dose_e_per_a2'], '.3g')} e/A^2): the highest resolution "
        f"where CC1/2 falls to {CC_HALF_CUTOFF} ({_num(row['cutoff_d'], '.2f')} A), ties within "
        "0.05 A broken by the overall CC1/2.</p>"
        + _table(
            table, {"n_fractions": "d", "crystals": "d", "reflections": "d", "cutoff_d": ".2f"},
            row_class=lambda r: "recommended" if int(r["n_fractions"]) == best else "",
            css_class="dose",
        )
    )  # fmt: skip
    plot = folder / "dose_series.png" if folder is not None else None
    if plot is not None and plot.is_file():
        out += _img(file_data_uri(plot), "CC1/2 per exposure and against dose")
    return out


def _configuration(run: _Run) -> str:
    text = run.inputs.config_yaml
    if not text.strip():
        return '<p class="na">no configuration given</p>'
    return f'<pre class="config">{_esc(text)}</pre>'


_BUILDERS: dict[str, Callable[[_Run], str]] = {
    "summary": _summary, "frames": _frames, "powder": _powder, "ellipticity": _ellipticity,
    "scales": _scales, "statistics": _statistics, "dose": _dose, "configuration": _configuration,
}  # fmt: skip


def _section(run: _Run, key: str, heading: str) -> str:
    """One ``<section>``: its content, "not available yet", or why it could not be read."""
    try:
        body = _BUILDERS[key](run)
    except _Unavailable as exc:
        body = _unavailable(str(exc))
    except _READ_ERRORS as exc:
        body = f'<p class="error">could not be shown: {_esc(exc)}</p>'
    return f'<section id="{key}">\n<h2>{_esc(heading)}</h2>\n{body}\n</section>\n'


def render_report(inputs: ReportInputs) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    run = _Run(inputs)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    nav = "".join(f'<a href="#{key}">{_esc(title)}</a>' for key, title in SECTIONS)
    notes = "".join(f"<li>{_esc(n)}</li>" for n in inputs.notes)
    body = "".join(_section(run, key, title) for key, title in SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(inputs.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{_esc(inputs.title)}</h1>\n"
        f'<p class="meta">crystalscope {_esc(__version__)}, written {_esc(stamp)}</p>\n'
        f"<nav>{nav}</nav>\n"
        + (f'<ul class="notes">{notes}</ul>\n' if notes else "")
        + f"</header>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )


def write_report(inputs: ReportInputs, path: str | os.PathLike[str]) -> Path:
    """Write the run's report as one self-contained HTML file.

    Parameters
    ----------
    inputs : ReportInputs
        Output directories of the run's steps, configuration, step table and notes.
        Directories and files that do not exist yet give sections that say
        :data:`NOT_AVAILABLE`.
    path : str or os.PathLike
        The HTML file (written atomically; an existing file is replaced).

    Returns
    -------
    Path
        ``path``.
    """
    text = render_report(inputs)
    target = Path(path)
    with atomic_write(target, overwrite=True) as fh:
        fh.write(text)
    return target

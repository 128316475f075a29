"""The built-in end-to-end job run by ``make demo`` / ``crystalscope demo``.

Until the serial pipeline lands, the demo exercises the whole foundation on built-in
data with known truth:

1. a 200 kV electron beam, a 512 x 512 hybrid-pixel camera (55 um pixels) at an
   effective camera length of 1100 mm, and a lysozyme crystal (P 43 21 2);
2. ``n_frames`` random crystal orientations (Haar-uniform, seeded);
3. for each, the reflections to ``d_min`` are enumerated with gemmi (systematic absences
   removed) and the excited ones predicted on the detector: a reflection is excited
   when its excitation error ``s`` is within the shape-transform width of a plate of
   thickness ``t`` (``|s| < 1/t``), with kinematic partiality ``sinc^2(t s)``;
4. a :class:`~crystalscope.dataset.Dataset` holds the predicted spot positions as CXI
   peak lists, a per-frame table and a per-crystal table with the true UB matrices; a
   per-frame reduction runs through dask; frames with enough spots are selected;
5. everything is written atomically: geometry (.geom), cell (.cell), the dataset (HDF5),
   a CrystFEL stream with peaks and crystals, a .lst, and the resolved configuration;
   every output is read back and summarised.

These are *geometric predictions* (where Bragg spots fall and how strongly each is
excited), not simulated diffraction images: intensities need structure factors, which
the simulator adds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crystalscope.config import RunConfig, write_resolved_config
from crystalscope.dataset import Dataset
from crystalscope.errors import CrystalscopeError
from crystalscope.io.crystfel_cell import UnitCellFile, write_cell
from crystalscope.io.crystfel_geom import format_geom, write_geom
from crystalscope.io.crystfel_stream import Stream, write_stream
from crystalscope.model.beam import Beam
from crystalscope.model.crystal import Crystal, crystfel_lattice
from crystalscope.model.detector import Detector
from crystalscope.model.orientation import random_rotations
from crystalscope.parallel import compute

__all__ = ["DemoSettings", "predict_frame", "run_demo"]


@dataclass(frozen=True)
class DemoSettings:
    """Parameters of the demo job."""

    n_frames: int = 40
    voltage_kv: float = 200.0
    camera_length_mm: float = 1100.0
    d_min: float = 2.0
    thickness_a: float = 1000.0
    min_spots: int = 370
    seed: int = 2026


def demo_detector(settings: DemoSettings) -> Detector:
    """A 512 x 512 single-panel camera with 55 um pixels, beam at the centre."""
    beam = Beam.from_voltage_kv(settings.voltage_kv)
    return Detector.single_panel(
        512, 512, 0.055, settings.camera_length_mm, (255.5, 255.5),
        wavelength=beam.wavelength,
    )  # fmt: skip


def demo_crystal() -> Crystal:
    """Hen egg-white lysozyme, tetragonal form."""
    return Crystal.from_parameters(79.1, 79.1, 37.9, 90, 90, 90, space_group="P 43 21 2")


def predict_frame(
    crystal: Crystal, hkl: np.ndarray, detector: Detector, beam: Beam, thickness_a: float
) -> pd.DataFrame:
    """Excited reflections of ``crystal`` and where they hit ``detector``.

    Returns a table ``h, k, l, s, partiality, fs, ss`` (pixel-centre) of the reflections
    with ``|s| < 1/t`` that land on a panel.
    """
    s = crystal.excitation_error(hkl, beam.wavelength)
    keep = np.abs(s) < 1.0 / thickness_a
    q = crystal.q_lab(hkl[keep])
    hits = detector.q_to_pixel(q, wavelength=beam.wavelength)
    on = np.asarray(hits.panel) >= 0
    sel = hkl[keep][on]
    table = pd.DataFrame({"h": sel[:, 0], "k": sel[:, 1], "l": sel[:, 2]})
    table["s"] = s[keep][on]
    table["partiality"] = np.sinc(thickness_a * table["s"].to_numpy()) ** 2
    table["fs"] = np.asarray(hits.fs)[on]
    table["ss"] = np.asarray(hits.ss)[on]
    return table


def _predict_all(
    settings: DemoSettings, detector: Detector, beam: Beam, say: Callable[[str], None]
) -> tuple[list[Crystal], list[pd.DataFrame]]:
    base = demo_crystal()
    refl = base.enumerate_reflections(settings.d_min)
    hkl = refl[["h", "k", "l"]].to_numpy()
    say(f"enumerated {len(hkl)} reflections to {settings.d_min} A ({base.space_group.hm})")
    rng = np.random.default_rng(settings.seed)
    crystals = [base.with_orientation(u) for u in random_rotations(settings.n_frames, rng)]
    tables = [predict_frame(c, hkl, detector, beam, settings.thickness_a) for c in crystals]
    counts = [len(t) for t in tables]
    say(
        f"predicted spots for {len(crystals)} random orientations: "
        f"{min(counts)}-{max(counts)} per frame (median {int(np.median(counts))})"
    )
    return crystals, tables


def _build_dataset(
    crystals: list[Crystal], tables: list[pd.DataFrame], settings: DemoSettings
) -> Dataset:
    n = len(crystals)
    shots = pd.DataFrame({"file": "demo", "event": np.arange(n), "frame": np.arange(n)})
    shots["n_predicted"] = [len(t) for t in tables]
    shots["sample"] = "lysozyme"
    ub = np.stack([c.UB for c in crystals])
    xtal = pd.DataFrame({"frame": np.arange(n), "crystal": 0})
    for i, name in enumerate(("astar", "bstar", "cstar")):
        for j, axis in enumerate("xyz"):
            xtal[f"{name}_{axis}"] = ub[:, j, i]
    meta = {
        "instrument": {
            "voltage_kv": settings.voltage_kv,
            "camera_length_mm": settings.camera_length_mm,
        },
        "sample": {
            "name": "lysozyme",
            "space_group": "P 43 21 2",
            "thickness_a": settings.thickness_a,
        },
    }
    ds = Dataset.from_arrays(None, shots=shots, crystals=xtal, meta=meta)
    peaks = pd.concat(
        [t.assign(frame=i, intensity=t["partiality"]) for i, t in enumerate(tables)],
        ignore_index=True,
    )
    ds.add_peaks(peaks[["frame", "fs", "ss", "intensity"]])
    return ds


def _stream_for(ds: Dataset, detector: Detector, beam: Beam) -> Stream:
    shots = ds.shots
    chunks = pd.DataFrame(
        {
            "file": "predictions.h5",
            "event": [f"//{e}" for e in shots["event"]],
            "serial": np.arange(1, len(shots) + 1),
            "hit": 1,
            "indexed_by": "none",
            "photon_energy_eV": beam.energy_ev,
        }
    )
    peaks = ds.peaks().rename(columns={"frame": "chunk"})
    peaks["chunk"] = np.searchsorted(shots["frame"].to_numpy(), peaks["chunk"].to_numpy())
    peaks["panel"] = detector.panels[0].name
    cell = demo_crystal().cell.parameters
    xt = ds.crystals.copy()
    xt["chunk"] = np.searchsorted(shots["frame"].to_numpy(), xt["frame"].to_numpy())
    for name, value in zip(("a", "b", "c", "alpha", "beta", "gamma"), cell, strict=True):
        xt[name] = value
    xt["crystal"] = np.arange(len(xt))  # streams number crystals globally
    lattice, centering, unique = crystfel_lattice(demo_crystal().space_group)
    xt["lattice_type"], xt["centering"], xt["unique_axis"] = lattice, centering, unique
    return Stream.from_tables(
        chunks, peaks, xt.drop(columns=["frame"]), None, geometry_text=format_geom(detector)
    )


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Run the demo job; write its outputs into ``out``; return them by name."""
    settings = settings or DemoSettings()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CrystalscopeError("output directory is not empty; use --overwrite", path=out)
    out.mkdir(parents=True, exist_ok=True)
    beam = Beam.from_voltage_kv(settings.voltage_kv)
    detector = demo_detector(settings)
    say(f"beam: {beam}")
    say(f"detector: 512 x 512 px, 55 um, camera length {settings.camera_length_mm:g} mm")
    crystals, tables = _predict_all(settings, detector, beam, say)
    ds = _build_dataset(crystals, tables, settings)
    mean_p = ds.map_frames(lambda x: np.nanmean(x, axis=-1), stack="peakTotalIntensity")
    ds.shots["mean_partiality"] = np.asarray(compute(mean_p)[0])
    say("per-frame mean partiality computed through dask")
    good = ds.select(f"n_predicted >= {settings.min_spots}")
    say(f"selected {good.n_frames}/{ds.n_frames} frames with >= {settings.min_spots} spots")
    files = {
        "geometry": out / "detector.geom",
        "cell": out / "lysozyme.cell",
        "dataset": out / "predictions.h5",
        "stream": out / "predictions.stream",
        "list": out / "predictions.lst",
    }
    write_geom(detector, files["geometry"], overwrite=overwrite)
    cell_file = UnitCellFile.from_cell(demo_crystal().cell, "tetragonal", "P", "c")
    write_cell(cell_file, files["cell"], overwrite=overwrite)
    good.write(files["dataset"], overwrite=overwrite)
    write_stream(_stream_for(good, detector, beam), files["stream"], overwrite=overwrite)
    good.write_lst(files["list"], overwrite=overwrite)
    config = RunConfig.model_validate(
        {"beam": {"voltage_kv": settings.voltage_kv}, "output": {"directory": str(out)}}
    )
    files["config"] = write_resolved_config(config, out)
    return files

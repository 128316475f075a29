"""Serial (still) data sets: many crystals, one or several frames each, with truth.

The plan of a data set (:func:`plan_serial`) draws, deterministically from the seed, which
shots hit a crystal, the orientations (one or two lattices per shot), the per-shot
beam-centre jitter and the accumulated dose of every dose fraction.  Frames are then
simulated independently (:func:`simulate_frame`) through dask, one task per frame, and
streamed into a :class:`~crystalscope.dataset.Dataset` file together with

* the per-frame table: shot, fraction, accumulated dose, hit, number of crystals, the
  true beam centre (``true_centre_fs/ss``, pixel-centre, panel 0) and shift;
* the per-crystal table: the true UB (``astar_x ... cstar_z``, 1/A) and cell;
* the truth reflection table (``truth.h5``): every excited reflection of every crystal
  with ideal ``F2``, excitation error, partiality, expected counts and predicted
  position;
* the detector geometry (``detector.geom``) and the resolved configuration.

Radiation damage in dose-fractionation movies follows the linear B-factor model: the
fraction ``k`` (accumulated dose ``D_k = (k + 1/2) * dose_per_frame``) has its |F|^2
multiplied by ``exp(-b_per_dose * D_k * s^2 / 2)`` with ``s = 1/d``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd

from crystalscope.config import write_resolved_config
from crystalscope.errors import ConfigError, CrystalscopeError, FormatError
from crystalscope.model.beam import Beam
from crystalscope.model.crystal import Crystal
from crystalscope.model.detector import Detector
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.model.orientation import check_rotation, random_rotations
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.kinematics import centre_px, predict_still
from crystalscope.simulate.presets import simulation_beam, simulation_detector
from crystalscope.simulate.render import DetectorState, make_detector_state, render_frame
from crystalscope.simulate.structure_factors import StructureFactors, load_structure_factors

__all__ = ["SerialResult", "SerialSimulation", "plan_serial", "simulate_serial"]

_UB_COLUMNS = [f"{v}star_{x}" for v in "abc" for x in "xyz"]


def load_orientations(path: str | os.PathLike[str]) -> np.ndarray:
    """Orientation matrices U from a text file: one crystal per line, 9 numbers row by row.

    Raises
    ------
    FormatError
        Unreadable file, a line without 9 numbers, or a matrix that is not a proper
        rotation (the message names the file and the line).
    """
    from crystalscope.io.textfile import read_text

    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        text = line.split("#", 1)[0].replace(",", " ").split()
        if not text:
            continue
        try:
            values = np.array([float(v) for v in text])
        except ValueError:
            raise FormatError("expected 9 numbers", path=path, field="U", line=number) from None
        if values.size != 9:
            raise FormatError(f"expected 9 numbers, got {values.size}", path=path, line=number)
        try:
            rows.append(check_rotation(values.reshape(3, 3)))
        except CrystalscopeError as err:
            raise FormatError(err.message, path=path, field="U", line=number) from None
    if not rows:
        raise FormatError("no orientation matrices in the file", path=path, field="U")
    return np.stack(rows)


def _orientations(config: SerialConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` orientations: from ``crystal.orientations`` in order, else Haar-random."""
    if config.crystal.orientations is None:
        return random_rotations(n, rng)
    given = load_orientations(config.crystal.orientations)
    if len(given) < n:
        raise ConfigError(
            f"the data set needs {n} crystal orientations, the file has {len(given)}",
            path=config.crystal.orientations,
            field="crystal.orientations",
        )
    return given[:n]


def plan_serial(config: SerialConfig, pixel_size_mm: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw the shots, crystals, orientations, jitter and doses of a data set.

    Returns
    -------
    shots : DataFrame
        One row per frame: ``frame, shot, fraction, hit, n_crystals, dose_e_per_a2``
        (accumulated, at the middle of the fraction), ``shift_x_mm, shift_y_mm``.
    crystals : DataFrame
        One row per crystal per frame: ``frame, crystal, crystal_id`` and the 9 ``U``
        matrix elements ``u00 ... u22``.
    """
    rng = np.random.default_rng(config.seed)
    fpc = config.dose.frames_per_crystal
    n_hits = config.n_crystals
    n_shots = max(n_hits, round(n_hits / config.hit_fraction)) if config.hit_fraction else n_hits
    hit = np.zeros(n_shots, bool)
    hit[rng.permutation(n_shots)[:n_hits]] = True
    two = hit & (rng.random(n_shots) < config.two_lattice_fraction)
    n_lattices = hit.astype(int) + two.astype(int)
    jitter = rng.normal(0.0, config.beam_effects.centre_jitter_px, size=(n_shots, 2))
    rotations = _orientations(config, int(n_lattices.sum()), rng)
    frame = np.arange(n_shots * fpc)
    shot = frame // fpc
    fraction = frame % fpc
    dose = config.beam_effects.dose_e_per_a2
    shots = pd.DataFrame(
        {
            "frame": frame,
            "shot": shot,
            "fraction": fraction,
            "hit": hit[shot],
            "n_crystals": n_lattices[shot],
            "dose_e_per_a2": (fraction + 0.5) * dose,
            "shift_x_mm": jitter[shot, 0] * pixel_size_mm,
            "shift_y_mm": jitter[shot, 1] * pixel_size_mm,
        }
    )
    first = np.concatenate([[0], np.cumsum(n_lattices)[:-1]])
    rows = []
    for s in np.flatnonzero(n_lattices):
        for c in range(n_lattices[s]):
            u = rotations[first[s] + c]
            for f in range(fpc):
                rows.append((s * fpc + f, c, first[s] + c, *u.ravel()))
    cols = ["frame", "crystal", "crystal_id"] + [f"u{i}{j}" for i in range(3) for j in range(3)]
    return shots, pd.DataFrame(rows, columns=cols)


@dataclass
class SerialSimulation:
    """Everything fixed for a whole data set; :meth:`frame` simulates one frame."""

    config: SerialConfig
    beam: Beam
    detector: Detector
    sf: StructureFactors
    state: DetectorState
    base: Crystal
    shots: pd.DataFrame
    crystals: pd.DataFrame

    @classmethod
    def build(cls, config: SerialConfig) -> SerialSimulation:
        """Resolve beam, detector, structure factors and the plan from ``config``."""
        beam = simulation_beam(config.beam)
        detector = simulation_detector(config.detector, beam)
        sf = load_structure_factors(config.source, beam.radiation)
        base = Crystal(sf.cell, sf.space_group)
        shots, crystals = plan_serial(config, detector.panels[0].pixel_size_mm)
        state_rng = np.random.default_rng([config.seed, 1])
        state = make_detector_state(detector, config.detector_effects, state_rng)
        return cls(config, beam, detector, sf, state, base, shots, crystals)

    @cached_property
    def distortion(self) -> EllipticalDistortion | None:
        fx = self.config.beam_effects
        if fx.ellipticity == 0:
            return None
        return EllipticalDistortion(1.0 + fx.ellipticity, fx.ellipticity_angle_deg)

    @property
    def n_incident(self) -> float:
        """Electrons (photons) per frame in the beam."""
        fx = self.config.beam_effects
        return fx.dose_e_per_a2 * np.pi * (fx.beam_diameter_a / 2) ** 2

    @property
    def n_on_crystal(self) -> float:
        """Electrons (photons) per frame hitting one crystal."""
        fx = self.config.beam_effects
        area = min(self.config.crystal.lateral_size_a**2, np.pi * (fx.beam_diameter_a / 2) ** 2)
        return fx.dose_e_per_a2 * area

    def _shift(self, frame: int) -> tuple[float, float]:
        row = self.shots.iloc[frame]
        return float(row["shift_x_mm"]), float(row["shift_y_mm"])

    def reflections(self, frame: int) -> pd.DataFrame:
        """Truth: excited reflections of every crystal in ``frame`` (empty for non-hits)."""
        tables = []
        dose = float(self.shots["dose_e_per_a2"].iat[frame])
        b = self.config.dose.b_per_dose * dose
        for _, xt in self.crystals[self.crystals["frame"] == frame].iterrows():
            u = xt[[f"u{i}{j}" for i in range(3) for j in range(3)]].to_numpy(float)
            crystal = self.base.with_orientation(u.reshape(3, 3))
            damage = None
            if b > 0:
                damage = np.exp(-b / (2 * self.sf.table["d"].to_numpy() ** 2))
            table = predict_still(
                crystal, self.sf, self.beam, self.detector, self.config.crystal,
                self.config.beam_effects, n_on_crystal=self.n_on_crystal,
                shift_mm=self._shift(frame), distortion=self.distortion, dose_factor=damage,
            )  # fmt: skip
            tables.append(table.assign(frame=frame, crystal=int(xt["crystal"])))
        if not tables:
            return pd.DataFrame()
        return pd.concat(tables, ignore_index=True)

    def inelastic_counts(self, frame: int) -> float:
        """Inelastically scattered electrons in ``frame`` (0 without a crystal or when off)."""
        fx = self.config.beam_effects
        n = int(self.shots["n_crystals"].iat[frame])
        if not fx.inelastic or n == 0:
            return 0.0
        t = self.config.crystal.thickness_a
        return n * self.n_on_crystal * (1.0 - np.exp(-t / fx.inelastic_mfp_a))

    def frame(self, frame: int, *, expected_only: bool = False) -> np.ndarray:
        """Simulate ``frame`` (deterministic: its random stream depends on seed and index)."""
        spots = self.reflections(frame)
        inelastic = self.inelastic_counts(frame)
        bragg = float(spots["counts"].sum()) if len(spots) else 0.0
        zero = self.n_incident - bragg - inelastic if self.config.beam_effects.zero_order else 0.0
        rng = np.random.default_rng([self.config.seed, 2, frame])
        if not len(spots):
            spots = pd.DataFrame({"panel": [], "fs": [], "ss": [], "counts": []})
        return render_frame(
            spots, self.detector, self.config.beam_effects, self.config.detector_effects,
            self.state, shift_mm=self._shift(frame), zero_order_counts=max(zero, 0.0),
            inelastic_counts=inelastic, distortion=self.distortion, rng=rng,
            expected_only=expected_only,
        )  # fmt: skip

    def frames(self) -> da.Array:
        """All frames as a lazy dask array, one frame per chunk."""
        shape = self.detector.raw_shape
        n = len(self.shots)

        def block(block_id: tuple[int, ...] | None = None) -> np.ndarray:
            assert block_id is not None
            return self.frame(block_id[0])[np.newaxis].astype(np.float32)

        return da.map_blocks(
            block,
            dtype=np.float32,
            chunks=((1,) * n, (shape[0],), (shape[1],)),
            meta=np.empty((0, 0, 0), np.float32),
        )

    def truth_centres(self) -> np.ndarray:
        """True beam centre (fs, ss) of every frame on panel 0, pixel-centre convention."""
        return np.array(
            [centre_px(self.detector, self.beam, self._shift(i)) for i in range(len(self.shots))]
        )


@dataclass
class SerialResult:
    """Files written by :func:`simulate_serial` and a summary."""

    dataset: Path
    truth: Path
    geometry: Path
    config: Path
    n_frames: int
    n_hits: int
    n_reflections: int

    def summary(self) -> str:
        """One line per output."""
        return (
            f"{self.n_frames} frames ({self.n_hits} with crystals) -> {self.dataset}\n"
            f"{self.n_reflections} true reflections -> {self.truth}\n"
            f"geometry -> {self.geometry}; configuration -> {self.config}"
        )


def _crystals_table(sim: SerialSimulation) -> pd.DataFrame:
    xt = sim.crystals[["frame", "crystal", "crystal_id"]].copy()
    u = sim.crystals[[f"u{i}{j}" for i in range(3) for j in range(3)]].to_numpy(float)
    ub = u.reshape(-1, 3, 3) @ sim.base.B  # columns a*, b*, c* in the lab frame
    for k, name in enumerate(_UB_COLUMNS):
        xt[name] = ub[:, k % 3, k // 3]
    cell = sim.sf.cell.parameters
    for name, value in zip(("a", "b", "c", "alpha", "beta", "gamma"), cell, strict=True):
        xt[name] = value
    return xt


def _write_truth(table: pd.DataFrame, path: Path, *, overwrite: bool) -> None:
    import h5py

    from crystalscope.dataset.tables import encode_table, write_table
    from crystalscope.io.atomic import atomic_path

    with atomic_path(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        group = f.create_group("truth/reflections")
        write_table(group, encode_table(table))


def simulate_serial(
    config: SerialConfig,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> SerialResult:
    """Simulate a serial data set into ``out_dir`` (frames.h5, truth.h5, detector.geom).

    Frames are computed per frame through dask on local threads while they are written,
    so memory stays bounded whatever the number of frames.
    """
    from crystalscope.dataset import Dataset
    from crystalscope.io.crystfel_geom import write_geom

    out = Path(out_dir)
    files = {n: out / n for n in ("frames.h5", "truth.h5", "detector.geom")}
    if not overwrite and any(p.exists() for p in files.values()):
        raise CrystalscopeError("output exists; use --overwrite to replace it", path=out)
    out.mkdir(parents=True, exist_ok=True)
    sim = SerialSimulation.build(config)
    source = config.source.mtz or config.source.structure
    say(f"{sim.beam}; {len(sim.sf.table)} reflections (P1) to {sim.sf.d_min} A from {source}")
    truth = pd.concat([sim.reflections(i) for i in range(len(sim.shots))], ignore_index=True)
    shots = sim.shots.copy()
    centres = sim.truth_centres()
    shots["true_centre_fs"], shots["true_centre_ss"] = centres[:, 0], centres[:, 1]
    meta = {
        "instrument": {
            "wavelength_a": sim.beam.wavelength,
            "radiation": sim.beam.radiation,
            "distance_mm": config.detector.distance_mm,
            "pixel_size_mm": sim.detector.panels[0].pixel_size_mm,
        },
        "sample": {
            "space_group": sim.sf.space_group.hm,
            "cell": list(sim.sf.cell.parameters),
            "source": str(config.source.structure or config.source.mtz),
        },
    }
    ds = Dataset.from_arrays(sim.frames(), shots=shots, crystals=_crystals_table(sim), meta=meta)
    say(f"simulating {len(shots)} frames of {sim.detector.raw_shape} through dask")
    ds.write(files["frames.h5"], overwrite=overwrite, progress=progress)
    _write_truth(truth, files["truth.h5"], overwrite=overwrite)
    write_geom(sim.detector, files["detector.geom"], overwrite=overwrite)
    cfg_path = write_resolved_config(config, out)
    return SerialResult(
        files["frames.h5"], files["truth.h5"], files["detector.geom"], cfg_path,
        len(shots), int(shots["hit"].sum()), len(truth),
    )  # fmt: skip


def read_truth(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read the truth reflection table written by :func:`simulate_serial`."""
    import h5py

    from crystalscope.dataset.tables import read_table

    with h5py.File(path, "r") as f:
        table = read_table(f, "truth/reflections", str(path))
    return table if table is not None else pd.DataFrame()

"""CBXD rotation-series simulator: Bragg streaks from a lens pupil and a voxel crystal.

Forward model (seed 000, section 2; details in ``docs/cbxd.md``): for every exposure the
crystal is rotated by ``R_omega`` about the scan axis (``substeps`` still orientations per
frame, each with ``1/substeps`` of the photons).  For each reciprocal lattice point
``G = R_omega U B h`` whose Kossel circle (Eqs. 1-3) passes through the lens pupil, the
deficiency line ``k_in(chi)`` is sampled finely in ``chi``; each sample

* starts from the focus (``z = -Delta-f``) along ``k_in`` and is traced through the rotated
  voxel shape to give ``P_S`` (Eq. 6; with absorption ``P_S T`` of Eq. 11);
* carries ``dN = c P L |F|^2 |A|^2 P_S cos(theta_B) d(chi) D`` photons (Eqs. 5, 9; see
  :mod:`crystalscope.cbxd.intensity` for ``c``);
* leaves the crystal where ``k_in`` crosses ``z = 0`` along ``k_out = k_in + G`` and is
  deposited bilinearly at its detector position.

The rocking width (Eq. 4, micro-radians) is far below a pixel and is integrated
analytically (the streak is one sample wide).  With lens efficiencies below 1, the two
line foci of the MLL pair (``k_in(phi_x, 0)`` and ``k_in(0, phi_y)``, collimated along the
other axis) add a bright spot where a deficiency line crosses their axis (seed 5.1,
Fig. 8a; ``component`` 1 and 2 in the truth); the zero order, a collimated beam, is not
rendered.  ``detector.direct_beam`` adds the transmitted 2-D focus (the projected pupil
with the crystal's absorption shadow).  Then background, Poisson noise, dead and hot
pixels and saturation are applied; noise of frame ``j`` comes from
``numpy.random.default_rng([seed, j])`` so frames are reproducible in any order.

Outputs of :func:`simulate_cbxd` in ``out_dir``: ``cbxd.h5`` (project Dataset: frames,
per-frame ``shots`` table, metadata), ``truth.h5`` (``truth/streaks``: one row per frame and
reflection and beam component with its noise-free counts, detector centroid and ``k_in``
centroid, read back with :func:`read_cbxd_truth`;
``truth/shape``: the voxel model; ``truth/dead``, ``truth/hot`` pixel masks) and the
resolved configuration.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crystalscope.cbxd.geometry import (
    Detector,
    LensPupil,
    MLLPair,
    crystal_position,
    direction_to_angles,
    kossel_circle,
    rotation_matrix,
)
from crystalscope.cbxd.intensity import (
    b12_like_structure_factors,
    detector_efficiency,
    lorentz_factor,
    polarisation_factor,
    scattering_constant,
    silicon_structure_factors,
)
from crystalscope.cbxd.shapes import VoxelShape, builtin_shape, project_rays
from crystalscope.model.beam import photon_wavelength
from crystalscope.simulate.cbxd_config import CbxdConfig
from crystalscope.simulate.structure_factors import StructureFactors

__all__ = [
    "COMPONENTS",
    "STREAK_COLUMNS",
    "CbxdResult",
    "CbxdSimulation",
    "read_cbxd_truth",
    "simulate_cbxd",
]

#: Columns of the truth table of streaks (one row per frame and reflection).
STREAK_COLUMNS = (
    "frame", "h", "k", "l", "component", "counts", "n_samples", "fs", "ss", "phi_x", "phi_y",
    "two_theta_deg", "lorentz", "polarisation", "F2", "projection_um",
)  # fmt: skip
_COARSE = 3600  # coarse azimuth samples that find the arcs inside the pupil
_SAMPLES_PER_PIXEL = 4.0  # fine samples per pixel along a streak
_LINE_HEIGHTS = 9  # samples across the collimated width of a line focus
_MIN_SIN_BETA = 0.05  # deficiency lines nearly parallel to a line focus: capped
#: Beam components in ``truth/streaks.component``.
COMPONENTS = {0: "focus", 1: "line_x", 2: "line_y"}


def _orientation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.radians(angles_deg)
    return (
        rotation_matrix((0, 0, 1), az)
        @ rotation_matrix((0, 1, 0), ay)
        @ rotation_matrix((1, 0, 0), ax)
    )


@dataclass
class CbxdSimulation:
    """Everything a frame needs: geometry, shape, reflections (see the module docstring)."""

    config: CbxdConfig
    wavelength: float
    pupil: LensPupil
    detector: Detector
    lens: MLLPair
    shape: VoxelShape
    sf: StructureFactors
    hkl: np.ndarray
    f2: np.ndarray
    ub: np.ndarray
    c: float
    kinematic: float
    dead: np.ndarray = field(repr=False)
    hot: np.ndarray = field(repr=False)

    @classmethod
    def build(cls, config: CbxdConfig) -> CbxdSimulation:
        """Set up geometry, structure factors, shape and pixel defects from ``config``."""
        lens, smp, det = config.lens, config.sample, config.detector
        wavelength = photon_wavelength(config.energy_kev * 1e3)
        if lens.kind == "on_axis":
            pupil = LensPupil.on_axis(lens.na_x, lens.na_y)
        else:
            pupil = LensPupil.off_axis(lens.na_x, lens.na_y, lens.inner_na_x, lens.inner_na_y)
        n_ss, n_fs = det.shape
        detector = Detector(
            det.distance_mm, (n_ss, n_fs), det.pixel_mm,
            (n_fs - 1) / 2 if det.centre_fs is None else det.centre_fs,
            (n_ss - 1) / 2 if det.centre_ss is None else det.centre_ss,
        )  # fmt: skip
        if smp.structure == "silicon":
            sf = silicon_structure_factors(smp.d_min, smp.b_factor)
        else:
            sf = b12_like_structure_factors(smp.d_min).with_b_factor(smp.b_factor)
        table = sf.table[sf.table["F2"] > 0]
        hkl = table[["h", "k", "l"]].to_numpy(dtype=float)
        b = np.asarray(sf.cell.frac.mat, dtype=float).T
        ub = _orientation(smp.orientation_deg) @ b
        mll = MLLPair(pupil, lens.focal_x_mm, lens.focal_y_mm, lens.efficiency_x,
                      lens.efficiency_y)  # fmt: skip
        kinematic = scattering_constant(1.0, 1.0, wavelength, sf.cell.volume)
        focus = lens.photons_per_frame * lens.efficiency_x * lens.efficiency_y
        c = focus / pupil.solid_angle * kinematic
        rng = np.random.default_rng([config.seed, 2**31 - 1])
        u = rng.random((n_ss, n_fs))
        dead = u < det.dead_fraction
        hot = (u >= det.dead_fraction) & (u < det.dead_fraction + det.hot_fraction)
        shape = builtin_shape(smp.shape, smp.voxel_um)
        return cls(config, wavelength, pupil, detector, mll, shape, sf, hkl,
                   table["F2"].to_numpy(), ub, c, kinematic, dead, hot)  # fmt: skip

    # ------------------------------------------------------------------ one still

    @property
    def rotation_centre_mm(self) -> np.ndarray:
        """Lab position of the rotation centre: the origin, or with
        ``sample.centre_on_beam`` where the pupil's central ray crosses ``z = 0``."""
        smp = self.config.sample
        if not smp.centre_on_beam:
            return np.zeros(3)
        return crystal_position(*self.pupil.centre, smp.defocus_mm)

    def rotation(self, omega_deg: float) -> np.ndarray:
        """``R_omega`` about the scan axis (lab frame)."""
        return rotation_matrix(self.config.scan.axis, np.radians(omega_deg))

    def _candidates(self, g: np.ndarray) -> tuple[np.ndarray, Any]:
        circle = kossel_circle(g, self.wavelength)
        margin = 2 * np.pi / _COARSE
        ok = np.isfinite(circle.radius) & (
            circle.max_cos_to_axis() >= np.cos(min(self.pupil.max_angle + margin, np.pi))
        )
        idx = np.nonzero(ok)[0]
        return idx, kossel_circle(g[idx], self.wavelength)

    def _samples(self, g: np.ndarray) -> dict[str, np.ndarray]:
        """Fine ``chi`` samples of all deficiency lines inside the pupil."""
        idx, circle = self._candidates(g)
        dc = 2 * np.pi / _COARSE
        chi_c = (np.arange(_COARSE) + 0.5) * dc
        px, py = direction_to_angles(circle.k_in(chi_c[:, None]))
        inside = self.pupil.contains(px, py, margin=dc).T  # (n_refl, n_coarse)
        r_i, c_i = np.nonzero(inside)
        theta = circle.theta[r_i]
        det = self.config.detector
        n_fine = np.ceil(
            dc * det.distance_mm * np.cos(theta) * _SAMPLES_PER_PIXEL / det.pixel_mm
        ).astype(int)
        n_fine = np.maximum(n_fine, 1)
        rep = np.repeat(np.arange(len(r_i)), n_fine)
        start = np.cumsum(n_fine) - n_fine
        pos = np.arange(len(rep)) - start[rep]
        dchi = dc / n_fine[rep]
        chi = chi_c[c_i[rep]] - dc / 2 + (pos + 0.5) * dchi
        row = r_i[rep]
        kc = kossel_circle(circle.g[row], self.wavelength)
        k_out = kc.k_out(chi)
        k_in = k_out - kc.g
        phx, phy = direction_to_angles(k_in)
        frac = self._inside_fraction(kc, chi, dchi)
        keep = frac > 0
        return {
            "refl": idx[row][keep], "chi": chi[keep], "dchi": (dchi * frac)[keep],
            "k_in": k_in[keep],
            "k_out": k_out[keep], "phi_x": phx[keep], "phi_y": phy[keep],
            "theta": kc.theta[keep],
        }  # fmt: skip

    def _inside_fraction(self, kc: Any, chi: np.ndarray, dchi: np.ndarray) -> np.ndarray:
        """Fraction of each sample's interval ``chi +- dchi/2`` inside the pupil, from the
        pupil margin at both ends taken as linear in between (exact integrals at edges)."""
        lo = self.pupil.margin(*direction_to_angles(kc.k_in(chi - dchi / 2)))
        hi = self.pupil.margin(*direction_to_angles(kc.k_in(chi + dchi / 2)))
        span = np.abs(hi - lo)
        part = np.maximum(lo, hi) / np.where(span > 0, span, 1.0)
        return np.where((lo >= 0) & (hi >= 0), 1.0, np.where((lo < 0) & (hi < 0), 0.0, part))

    def still(
        self, omega_deg: float, photons_fraction: float = 1.0
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Noise-free image (counts) and streak table (:data:`STREAK_COLUMNS` without
        ``frame``) of the crystal held at ``omega_deg`` with ``photons_fraction`` of the
        photons of a frame."""
        image, raw = self._still_raw(omega_deg, photons_fraction)
        return image, _merge_streaks(raw)

    def _still_raw(
        self, omega_deg: float, photons_fraction: float
    ) -> tuple[np.ndarray, pd.DataFrame]:
        rot = self.rotation(omega_deg)
        g = (rot @ self.ub @ self.hkl.T).T
        parts = [self._focus_samples(g, rot, photons_fraction)]
        for axis in (0, 1):
            parts.append(self._line_samples(g, rot, photons_fraction, axis))
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        image = _deposit(self.detector.shape, cols["fs"], cols["ss"], cols["dn"])
        return image, _streak_table(cols, self.hkl, self.f2)

    def _project(
        self, origins: np.ndarray, k_in: np.ndarray, k_out: np.ndarray, rot: np.ndarray
    ) -> np.ndarray:
        smp = self.config.sample
        return project_rays(
            self.shape, origins - self.rotation_centre_mm, k_in, rotation=rot,
            offset_mm=np.asarray(smp.offset_um) * 1e-3, out_directions=k_out,
            mu_per_mm=smp.mu_per_mm,
        )  # fmt: skip

    def _focus_samples(
        self, g: np.ndarray, rot: np.ndarray, fraction: float
    ) -> dict[str, np.ndarray]:
        """Samples of the 2-D focus: Eq. 5 along every deficiency line in the pupil."""
        s = self._samples(g)
        dz = self.config.sample.defocus_mm
        origin = np.broadcast_to(np.array([0.0, 0.0, -dz]), s["k_in"].shape)
        proj_mm = self._project(origin, s["k_in"], s["k_out"], rot)
        start = crystal_position(s["phi_x"], s["phi_y"], dz)
        weight = self.c * fraction * np.cos(s["theta"]) * s["dchi"]
        return self._finish(s["refl"], 0, s["k_in"], s["k_out"], start, weight, proj_mm)

    def _finish(
        self, refl: np.ndarray, component: int, k_in: np.ndarray, k_out: np.ndarray,
        start: np.ndarray, weight: np.ndarray, proj_mm: np.ndarray,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """Photons of samples: ``weight P L |F|^2 P_S D`` (Eq. 5, Eq. 9), detector hits."""
        det = self.config.detector
        lam_g = self.wavelength * np.linalg.norm(k_out - k_in, axis=-1) / 2
        theta = np.arcsin(np.clip(lam_g, 0.0, 1.0))
        lor = lorentz_factor(theta)
        pol = polarisation_factor(k_out) if len(refl) else np.zeros(0)
        eff = detector_efficiency(2 * theta, det.sensor_mu_per_mm, det.sensor_thickness_mm)
        dn = weight * pol * lor * self.f2[refl] * proj_mm * 1e7 * eff
        hit = self.detector.hit(start, k_out, self.config.sample.defocus_mm)
        fs, ss = self.detector.to_pixels(hit)
        phx, phy = direction_to_angles(k_in)
        return {"refl": refl, "component": np.full(len(refl), component), "dn": dn, "fs": fs,
                "ss": ss, "phi_x": phx, "phi_y": phy, "theta": theta, "lor": lor, "pol": pol,
                "proj": proj_mm}  # fmt: skip

    def _line_samples(
        self, g: np.ndarray, rot: np.ndarray, fraction: float, axis: int
    ) -> dict[str, np.ndarray]:
        """Diffraction of a line focus where the deficiency line crosses its axis.

        ``axis = 0``: the vertical line focus ``k_in(phi_x, 0)`` (lens x diffracts, lens y
        zero order), collimated in ``y`` over the y lens's aperture heights; ``axis = 1``:
        the horizontal one, ``k_in(0, phi_y)``.  Where the deficiency line crosses the
        focus's axis at ``phi_0`` with angle ``beta``, the fan integrates the rocking
        curve and gives ``N_l / (Delta phi |sin beta|) r_e^2 lambda^3 P L |F|^2 / V^2``
        times the mean ``P_S`` over the collimated heights (seed 5.1, Fig. 8a).
        """
        comp = self.lens.components(self.config.sample.defocus_mm)[1 + axis]
        if comp.weight <= 0 or not len(g):
            return self._finish(np.zeros(0, int), 1 + axis, *(np.zeros((0, 3)),) * 3,
                                np.zeros(0), np.zeros(0))  # fmt: skip
        other = 1 - axis
        circle = kossel_circle(g, self.wavelength)
        a_o, b_o = circle.a[:, other], circle.b[:, other]
        ratio = circle.g[:, other] / 2 / np.hypot(a_o, b_o)
        rows = np.nonzero(np.isfinite(ratio) & (np.abs(ratio) <= 1))[0]
        delta, half = np.arctan2(b_o[rows], a_o[rows]), np.arccos(ratio[rows])
        rows, chi = np.concatenate([rows, rows]), np.concatenate([delta + half, delta - half])
        a, b = circle.a[rows], circle.b[rows]
        k_in = circle.g[rows] / -2 + np.cos(chi)[:, None] * a + np.sin(chi)[:, None] * b
        angles = direction_to_angles(k_in)
        lo, hi = (self.pupil.phi_x, self.pupil.phi_y)[axis]
        keep = (k_in[:, 2] > 0) & (angles[axis] >= lo) & (angles[axis] <= hi)
        rows, chi, k_in, a, b = rows[keep], chi[keep], k_in[keep], a[keep], b[keep]
        dk = -np.sin(chi)[:, None] * a + np.cos(chi)[:, None] * b
        kz = k_in[:, 2]
        d_phi = [
            (kz * dk[:, i] - k_in[:, i] * dk[:, 2]) / (k_in[:, i] ** 2 + kz**2) for i in (0, 1)
        ]
        sin_beta = np.maximum(np.abs(d_phi[other]) / np.hypot(*d_phi), _MIN_SIN_BETA)
        n_h = _LINE_HEIGHTS
        ext = (comp.y_mm, comp.x_mm)[axis]
        h = ext[0] + (np.arange(n_h) + 0.5) / n_h * (ext[1] - ext[0])
        rows_h, k_in_h = np.repeat(rows, n_h), np.repeat(k_in, n_h, axis=0)
        hh = np.tile(h, len(rows))
        k_out_h = k_in_h + circle.g[rows_h]
        dz = self.config.sample.defocus_mm
        origin = np.zeros((len(hh), 3))
        origin[:, other], origin[:, 2] = hh, -dz
        start = origin + k_in_h * (dz / k_in_h[:, 2])[:, None]
        proj_mm = self._project(origin, k_in_h, k_out_h, rot)
        photons = self.config.lens.photons_per_frame * comp.weight * fraction
        weight = photons * self.kinematic / ((hi - lo) * np.repeat(sin_beta, n_h) * n_h)
        return self._finish(rows_h, 1 + axis, k_in_h, k_out_h, start, weight, proj_mm)

    # ------------------------------------------------------------------ frames

    def omega_deg(self, frame: int) -> float:
        """Rotation angle at the start of ``frame``."""
        return self.config.scan.start_deg + frame * self.config.scan.step_deg

    def expected_frame(self, frame: int) -> tuple[np.ndarray, pd.DataFrame]:
        """Noise-free frame (streak counts only) and its streak table."""
        scan = self.config.scan
        image = np.zeros(self.detector.shape)
        tables = []
        for sub in range(scan.substeps):
            omega = self.omega_deg(frame) + (sub + 0.5) / scan.substeps * scan.step_deg
            img, tab = self._still_raw(omega, 1.0 / scan.substeps)
            image += img
            tables.append(tab)
        table = _merge_streaks(pd.concat(tables, ignore_index=True))
        table.insert(0, "frame", frame)
        return image, table[list(STREAK_COLUMNS)]

    def direct_beam(self, omega_deg: float) -> np.ndarray:
        """Transmitted 2-D focus on the detector (photons per pixel): the projected pupil
        with the crystal's absorption shadow ``exp(-mu P_S)``; pixel solid angles exact."""
        det, dz = self.detector, self.config.sample.defocus_mm
        ss, fs = np.indices(det.shape, dtype=float)
        v = det.to_lab(fs, ss, dz) + np.array([0.0, 0.0, dz])  # from the focus
        inside = self.pupil.contains(*direction_to_angles(v))
        r = np.linalg.norm(v, axis=-1)
        solid = det.pixel_mm**2 * v[..., 2] / r**3
        image = np.where(inside, self.c / self.kinematic * solid, 0.0)
        mu = self.config.sample.mu_per_mm
        if mu > 0 and inside.any():
            rays = v[inside]
            origin = np.broadcast_to(np.array([0.0, 0.0, -dz]), rays.shape)
            smp = self.config.sample
            p = project_rays(self.shape, origin - self.rotation_centre_mm, rays,
                             rotation=self.rotation(omega_deg),
                             offset_mm=np.asarray(smp.offset_um) * 1e-3)  # fmt: skip
            image[inside] *= np.exp(-mu * p)
        return image

    def frame(self, frame: int) -> tuple[np.ndarray, pd.DataFrame]:
        """Recorded frame (uint32: background, noise, defects, saturation) and truth."""
        det = self.config.detector
        expected, table = self.expected_frame(frame)
        mean = expected + det.background
        if det.direct_beam:
            mid = self.omega_deg(frame) + self.config.scan.step_deg / 2
            mean = mean + self.direct_beam(mid)
        rng = np.random.default_rng([self.config.seed, frame])
        counts = rng.poisson(mean).astype(np.float64) if det.noise else np.rint(mean)
        counts[self.dead] = 0
        counts[self.hot] = det.saturation
        counts = np.minimum(counts, det.saturation)
        return counts.astype(np.uint32), table


def _deposit(shape: tuple[int, int], fs: np.ndarray, ss: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Bilinear deposition of weights ``w`` at pixel-centre coordinates ``(fs, ss)``."""
    image = np.zeros(shape)
    ok = np.isfinite(fs) & np.isfinite(ss) & (w > 0)
    f, s, w = fs[ok], ss[ok], w[ok]
    f0, s0 = np.floor(f).astype(int), np.floor(s).astype(int)
    tf, ts = f - f0, s - s0
    for df, ds, wt in ((0, 0, (1 - tf) * (1 - ts)), (1, 0, tf * (1 - ts)),
                       (0, 1, (1 - tf) * ts), (1, 1, tf * ts)):  # fmt: skip
        fi, si = f0 + df, s0 + ds
        m = (fi >= 0) & (fi < shape[1]) & (si >= 0) & (si < shape[0])
        np.add.at(image, (si[m], fi[m]), (w * wt)[m])
    return image


def _streak_table(cols: dict[str, np.ndarray], hkl: np.ndarray, f2: np.ndarray) -> pd.DataFrame:
    """Per reflection and beam component: sums (counts) and count-weighted sums."""
    df = pd.DataFrame(cols)
    df = df[df["dn"] > 0]
    for c in ("fs", "ss", "phi_x", "phi_y", "proj"):
        df[c + "_w"] = df[c] * df["dn"]
    agg = df.groupby(["refl", "component"]).agg(
        counts=("dn", "sum"), n_samples=("dn", "size"), fs_w=("fs_w", "sum"),
        ss_w=("ss_w", "sum"), phi_x_w=("phi_x_w", "sum"), phi_y_w=("phi_y_w", "sum"),
        proj_w=("proj_w", "sum"), theta=("theta", "mean"), lorentz=("lor", "mean"),
        polarisation=("pol", "mean"),
    ).reset_index()  # fmt: skip
    idx = agg["refl"].to_numpy(dtype=int)
    out = pd.DataFrame({"h": hkl[idx, 0].astype(int), "k": hkl[idx, 1].astype(int),
                        "l": hkl[idx, 2].astype(int),
                        "component": agg["component"].to_numpy(dtype=np.int64),
                        "counts": agg["counts"].to_numpy(),
                        "n_samples": agg["n_samples"].to_numpy()})  # fmt: skip
    for c in ("fs", "ss", "phi_x", "phi_y", "proj"):
        out[c + "_w"] = agg[c + "_w"].to_numpy()
    out["two_theta_deg"] = np.degrees(2 * agg["theta"].to_numpy())
    out["lorentz"] = agg["lorentz"].to_numpy()
    out["polarisation"] = agg["polarisation"].to_numpy()
    out["F2"] = f2[idx]
    return out


def _merge_streaks(table: pd.DataFrame) -> pd.DataFrame:
    """Combine the stills of one frame: sums of counts, count-weighted centroids."""
    if table.empty:
        ints = ("h", "k", "l", "component", "n_samples")
        return pd.DataFrame(
            {c: pd.Series(dtype=np.int64 if c in ints else float) for c in STREAK_COLUMNS[1:]}
        )
    g = table.groupby(["h", "k", "l", "component"], sort=True)
    sums = g[["counts", "n_samples", "fs_w", "ss_w", "phi_x_w", "phi_y_w", "proj_w"]].sum()
    means = g[["two_theta_deg", "lorentz", "polarisation", "F2"]].mean()
    out = pd.concat([sums, means], axis=1).reset_index()
    for c, name in (("fs", "fs"), ("ss", "ss"), ("phi_x", "phi_x"), ("phi_y", "phi_y")):
        out[name] = out.pop(c + "_w") / out["counts"]
    out["projection_um"] = out.pop("proj_w") / out["counts"] * 1e3
    out["n_samples"] = out["n_samples"].astype(np.int64)
    return out


@dataclass(frozen=True)
class CbxdResult:
    """Files and numbers of a simulated series."""

    dataset: Path
    truth: Path
    config: Path
    n_frames: int
    n_streaks: int


def _write_truth(sim: CbxdSimulation, streaks: pd.DataFrame, path: Path, overwrite: bool) -> None:
    import h5py

    from crystalscope.dataset.tables import encode_table, write_table
    from crystalscope.io.atomic import atomic_path

    encoded = encode_table(streaks.reset_index(drop=True))
    with atomic_path(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        write_table(f.create_group("truth/streaks"), encoded)
        d = f.create_dataset("truth/shape", data=sim.shape.values, compression="gzip")
        d.attrs["voxel_um"] = sim.shape.voxel_um
        d.attrs["name"] = sim.shape.name
        d.attrs["axes"] = "x, y, z (crystal frame; grid centred on the origin)"
        f.create_dataset("truth/dead", data=sim.dead)
        f.create_dataset("truth/hot", data=sim.hot)
        f["truth"].attrs["ub"] = sim.ub
        f["truth"].attrs["wavelength_a"] = sim.wavelength
        f["truth"].attrs["scattering_constant"] = sim.c


def read_cbxd_truth(
    path: str | os.PathLike[str],
) -> tuple[pd.DataFrame, VoxelShape, dict[str, Any]]:
    """The truth of a simulated series: the streak table (:data:`STREAK_COLUMNS`), the
    voxel shape and a dict with ``ub`` (3 x 3, 1/A, crystal at ``omega = 0``),
    ``wavelength_a``, ``scattering_constant``, ``dead`` and ``hot`` pixel masks.

    Raises
    ------
    FormatError
        The file is not a CBXD truth file.
    """
    import h5py

    from crystalscope.dataset.tables import read_table
    from crystalscope.errors import FormatError

    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            streaks = read_table(f, "truth/streaks", str(p))
            shape_ds = f.get("truth/shape")
            if streaks is None or not isinstance(shape_ds, h5py.Dataset):
                raise FormatError("not a CBXD truth file (no truth/streaks, truth/shape)",
                                  path=p, field="truth")  # fmt: skip
            shape = VoxelShape(shape_ds[()], float(shape_ds.attrs["voxel_um"]),
                               str(shape_ds.attrs.get("name", "")))  # fmt: skip
            attrs = f["truth"].attrs
            extra = {"ub": np.asarray(attrs["ub"]), "wavelength_a": float(attrs["wavelength_a"]),
                     "scattering_constant": float(attrs["scattering_constant"]),
                     "dead": f["truth/dead"][()], "hot": f["truth/hot"][()]}  # fmt: skip
    except OSError as exc:
        raise FormatError(f"cannot read HDF5 ({exc})", path=p) from None
    return streaks, shape, extra


def _meta(sim: CbxdSimulation) -> dict[str, Any]:
    cfg = sim.config
    return {
        "instrument": {
            "wavelength_a": sim.wavelength, "radiation": "xray",
            "distance_mm": cfg.detector.distance_mm, "pixel_size_mm": cfg.detector.pixel_mm,
            "defocus_mm": cfg.sample.defocus_mm,
            "pupil_phi_x_rad": list(sim.pupil.phi_x), "pupil_phi_y_rad": list(sim.pupil.phi_y),
        },
        "goniometer": {"rotation_axis": list(cfg.scan.axis), "start_deg": cfg.scan.start_deg,
                       "oscillation_deg": cfg.scan.step_deg},
        "sample": {"space_group": sim.sf.space_group.hm,
                   "cell": [float(v) for v in sim.sf.cell.parameters],
                   "shape": cfg.sample.shape},
    }  # fmt: skip


def simulate_cbxd(
    config: CbxdConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = False,
    say: Callable[[str], None] = lambda message: None,
) -> CbxdResult:
    """Simulate a CBXD rotation series into ``out_dir`` (see the module docstring).

    Frames are computed through dask (one task per frame) while the project's Dataset
    streams them into ``cbxd.h5`` with bounded memory.

    Raises
    ------
    CrystalscopeError
        If an output exists and ``config.overwrite`` is false.
    """
    import dask
    import dask.array as da

    from crystalscope.config import write_resolved_config
    from crystalscope.dataset import Dataset
    from crystalscope.io.atomic import check_outputs_free
    from crystalscope.parallel import byte_progress

    out = Path(out_dir)
    paths = [out / "cbxd.h5", out / "truth.h5"]
    check_outputs_free(paths, overwrite=config.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    sim = CbxdSimulation.build(config)
    say(f"{len(sim.hkl)} reflections to {sim.sf.d_min} A; lambda = {sim.wavelength:.4f} A")
    n = config.scan.n_frames
    tables: dict[int, pd.DataFrame] = {}

    def image(j: int) -> np.ndarray:
        frame, tables[j] = sim.frame(j)  # truth kept aside (dask's local threads)
        return frame[None]

    shape = (1, *sim.detector.shape)
    frames = da.concatenate(
        [da.from_delayed(dask.delayed(image, pure=False)(j), shape, np.uint32) for j in range(n)]
    )
    shots = pd.DataFrame({"omega_deg": [sim.omega_deg(j) for j in range(n)]})
    ds = Dataset.from_arrays(frames, shots=shots, meta=_meta(sim))
    say(f"simulating {n} frames of {sim.detector.shape} through dask")
    with byte_progress("CBXD frames", enabled=progress) as bar:
        ds.write(paths[0], overwrite=config.overwrite, progress=bar)
    missing = [j for j in range(n) if j not in tables]
    for j in missing:  # only if a scheduler ran the frames elsewhere
        tables[j] = sim.expected_frame(j)[1]
    streaks = pd.concat([tables[j] for j in range(n)], ignore_index=True)
    _write_truth(sim, streaks, paths[1], config.overwrite)
    cfg_path = write_resolved_config(config, out)
    say(f"{n} frames, {len(streaks)} streaks -> {out}")
    return CbxdResult(paths[0], paths[1], cfg_path, n, len(streaks))

"""Still patterns in kinematic theory: which reflections diffract, where, how strongly.

Everything follows ``docs/conventions.md``: reciprocal vectors in 1/A without 2 pi, lab
frame NeXus/McStas (beam along +z), pixel-centre pixel coordinates.

Geometry (exact Ewald sphere, no paraxial shortcut)
---------------------------------------------------
For a crystal with orientation matrix ``UB`` and a beam of wavelength ``lambda`` (A),
reflection ``h`` has the scattering vector ``q = UB h`` (1/A), ``d = 1/|q|``, and the
excitation error (:meth:`~crystalscope.model.crystal.Crystal.excitation_error`)

.. math::

    s = \\frac{1}{\\lambda} - |\\mathbf{q} + \\mathbf{k}_0|, \\qquad
    \\mathbf{k}_0 = (0, 0, 1/\\lambda),

positive inside the sphere.  The diffracted ray leaves the sample along
``q + k0`` (the radial projection of the reciprocal-lattice point onto the sphere, the
peak of the isotropic rel-point profile on the sphere) and is intersected with the
panels (the semantics of :meth:`~crystalscope.model.detector.Detector.q_to_pixel`,
evaluated for all panels at once).  For ``s = 0`` the
position obeys Bragg's law ``2 d sin(theta) = lambda`` exactly.  The scattering angle is
that of the ray, ``2 theta = atan2(|(q + k0)_xy|, (q + k0)_z)``.

A lateral detector shift ``(dx, dy)`` (mm) moves every panel; an elliptical distortion
(:class:`~crystalscope.model.distortion.EllipticalDistortion`) acts on the positions in
the plane of panel 0, in its pixel-centre ``(fs, ss)`` coordinates (extended beyond the
panel), about the point where the direct beam crosses that plane (:func:`centre_px`);
the distorted point is then mapped back to whichever panel it lies on.  On single-panel
and coplanar multi-module cameras this is the distortion of the raw ``(fs, ss)``
positions around the beam centre.

Absolute scale (Born approximation, plate of thickness ``t``)
-------------------------------------------------------------
The fraction of the electrons (photons) hitting the crystal that end up in reflection
``g`` at ``s = 0`` is

.. math::

    \\text{electrons:}\\ \\left(\\frac{\\lambda \\gamma |F_g| t}{V_c}\\right)^2,
    \\qquad
    \\text{X-rays:}\\ \\left(\\frac{r_e \\lambda |F_g| t}{V_c}\\right)^2 P,

with ``F`` in A (electron form factors) or electrons (X-ray form factors), ``V_c`` the
cell volume (A^3), ``gamma = 1 + e U / (m_0 c^2)`` the relativistic mass factor,
``r_e = 2.8179403e-5 A`` and ``P = (1 + cos^2 2theta) / 2`` the polarisation factor of an
unpolarised beam (``P = 1`` for electrons).  :func:`reflection_scale` returns the factor
multiplying ``|F|^2`` (without ``P``).  Measured (MTZ) intensities carry no absolute
scale: they are used as ``|F|^2`` in arbitrary units with the same formula.

Partiality (rel-point profile)
------------------------------
The fraction is multiplied by the partiality ``p(s)``, normalised so that
``p(0) = 1`` for a perfect crystal and ``integral p(s) ds = 1/t`` for every profile:

* ``shape``: the shape transform of the plate, ``p = sinc^2(t s)`` (numpy's
  ``sinc(x) = sin(pi x) / (pi x)``);
* ``gaussian``: ``p = sigma_0 / sigma * exp(-s^2 / (2 sigma^2))`` with
  ``sigma_0 = 1 / (t sqrt(2 pi))`` and ``sigma^2 = sigma_0^2 + sigma_b^2``.

Mosaicity ``eta`` and beam divergence ``delta`` (full widths at half maximum, radians)
broaden the profile by a Gaussian of ``sigma_b^2 = (|q| eta / 2.3548)^2 +
(|q| delta / 2.3548)^2``, which conserves the integral: for ``gaussian`` in quadrature
as above, for ``shape`` by the exact convolution of ``sinc^2(t s)`` with that Gaussian,
written through its Fourier transform (a triangle times a Gaussian)

.. math::

    p(s) = 2 \\int_0^1 (1 - y)\\, e^{-2 \\pi^2 \\sigma_b^2 t^2 y^2}
           \\cos(2 \\pi s t y)\\, dy ,

evaluated in closed form with the Faddeeva function (see ``_broadened_shape``).

Expected counts of a reflection in a frame are therefore

.. math::

    N_g = N_x \\cdot \\mathrm{scale} \\cdot |F_g|^2 \\cdot p(s_g) \\cdot P \\cdot f_g,

with ``N_x`` the electrons (photons) hitting the crystal and ``f_g`` an optional
per-reflection factor (radiation damage).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import constants as const
from scipy.special import wofz

from crystalscope.errors import DataError
from crystalscope.model.beam import Beam
from crystalscope.model.crystal import Crystal
from crystalscope.model.detector import Detector
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.model.projection import (
    check_shift_mm,
    panel_planes,
    plane_hit,
    project_rays,
)
from crystalscope.simulate.config import BeamEffects, CrystalConfig

if TYPE_CHECKING:
    from crystalscope.simulate.structure_factors import StructureFactors

__all__ = [
    "PREDICTION_COLUMNS",
    "R_E_A",
    "centre_px",
    "partiality",
    "polarisation_factor",
    "predict_still",
    "reflection_scale",
    "relativistic_gamma",
]

#: Classical electron radius in Angstrom (CODATA via scipy).
R_E_A: float = const.physical_constants["classical electron radius"][0] * 1e10

#: Columns and dtypes of the table returned by :func:`predict_still`.
PREDICTION_COLUMNS: dict[str, str] = {
    "h": "int32",
    "k": "int32",
    "l": "int32",
    "d": "float64",
    "s": "float64",
    "partiality": "float64",
    "F2": "float64",
    "counts": "float64",
    "panel": "int32",
    "fs": "float64",
    "ss": "float64",
    "two_theta_deg": "float64",
}

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548
_M0C2_EV = const.m_e * const.c**2 / const.e
_CACHE_SIZE = 4
_CLOSED_FORM_MIN_BT = 0.05  # sigma_b t above which the closed form is used
_HERMITE_8 = np.polynomial.hermite.hermgauss(8)


# --------------------------------------------------------------------------- scale


def relativistic_gamma(beam: Beam) -> float:
    """``gamma = 1 + e U / (m_0 c^2)`` of an electron beam (1 for X-rays)."""
    if beam.radiation != "electron":
        return 1.0
    return 1.0 + beam.energy_ev / _M0C2_EV


def reflection_scale(beam: Beam, sf: StructureFactors, crystal_cfg: CrystalConfig) -> float:
    """Fraction of the particles hitting the crystal scattered per unit ``|F|^2`` at p = 1.

    Electrons: ``(lambda gamma t / V_c)^2`` (``F`` in A); X-rays:
    ``(r_e lambda t / V_c)^2`` (``F`` in electrons), without the polarisation factor.
    Lengths in A, so the result has units 1/|F|^2.

    Parameters
    ----------
    beam : Beam
        Wavelength and radiation.
    sf : StructureFactors
        Supplies the unit cell (``sf.cell.volume``, A^3).
    crystal_cfg : CrystalConfig
        Supplies the thickness ``thickness_a`` (A).
    """
    lam = beam.wavelength
    t = crystal_cfg.thickness_a
    volume = float(sf.cell.volume)
    if beam.radiation == "electron":
        return (lam * relativistic_gamma(beam) * t / volume) ** 2
    return (R_E_A * lam * t / volume) ** 2


def polarisation_factor(two_theta_rad: ArrayLike, radiation: str) -> np.ndarray:
    """Intensity polarisation factor: ``(1 + cos^2 2theta) / 2`` for X-rays, 1 for electrons."""
    tt = np.asarray(two_theta_rad, dtype=float)
    if radiation == "electron":
        return np.ones_like(tt)
    return 0.5 * (1.0 + np.cos(tt) ** 2)


# ----------------------------------------------------------------------- partiality


def _broadening(q_abs: np.ndarray, beam_fx: BeamEffects, crystal_cfg: CrystalConfig) -> np.ndarray:
    """``sigma_b`` (1/A) of mosaicity and divergence at ``|q|``, in quadrature."""
    eta = math.radians(crystal_cfg.mosaicity_deg)
    div = beam_fx.divergence_mrad * 1e-3
    return np.abs(q_abs) * (math.hypot(eta, div) / _FWHM_PER_SIGMA)


def partiality(
    s: ArrayLike, q_abs: ArrayLike, crystal_cfg: CrystalConfig, beam_fx: BeamEffects
) -> np.ndarray:
    """Partiality ``p(s)`` of reflections (see the module docstring for the equations).

    Parameters
    ----------
    s : array_like
        Excitation errors in 1/A.
    q_abs : array_like
        ``|q| = 1/d`` in 1/A (sets the mosaic and divergence broadening); broadcast
        with ``s``.
    crystal_cfg : CrystalConfig
        Thickness ``t`` (A), profile and mosaicity (FWHM, degrees).
    beam_fx : BeamEffects
        Divergence (FWHM, mrad).

    Returns
    -------
    numpy.ndarray
        ``p``, 1 at ``s = 0`` for a perfect crystal; ``integral p ds = 1/t``.
    """
    s_arr, q_arr = np.broadcast_arrays(np.asarray(s, float), np.asarray(q_abs, float))
    t = crystal_cfg.thickness_a
    sigma_b = _broadening(q_arr, beam_fx, crystal_cfg)
    if crystal_cfg.profile == "gaussian":
        sigma0 = 1.0 / (t * math.sqrt(2.0 * math.pi))
        var = sigma0**2 + sigma_b**2
        return np.asarray(sigma0 / np.sqrt(var) * np.exp(-0.5 * s_arr**2 / var))
    if not np.any(sigma_b > 0):
        return np.asarray(np.sinc(t * s_arr), dtype=float) ** 2
    return _broadened_shape(s_arr * t, sigma_b * t)


def _broadened_shape(st: np.ndarray, bt: np.ndarray) -> np.ndarray:
    """``sinc^2`` convolved with a Gaussian; ``st = s t``, ``bt = sigma_b t`` (dimensionless).

    With ``omega = 2 pi |s t|``, ``beta = 2 pi^2 (sigma_b t)^2`` and Faddeeva's ``w``
    (:func:`scipy.special.wofz`) the Fourier integral of the module docstring is

    ``p = 2 Re[J (1 - i omega / (2 beta)) + (exp(-beta + i omega) - 1) / (2 beta)]``,
    ``J = sqrt(pi) / (2 sqrt(beta)) [w(x) - exp(-beta + i omega) w(x + i sqrt(beta))]``,
    ``x = omega / (2 sqrt(beta))``,

    accurate to ~1e-13 for ``sigma_b t >= 0.05``.  Narrower broadening (where the
    ``1/beta`` terms cancel) uses 8-point Gauss-Hermite quadrature of the convolution,
    exact to rounding there because ``sinc^2`` is entire of exponential type ``2 pi``.
    """
    st, bt = np.broadcast_arrays(np.abs(st), bt)
    out = np.empty(st.shape)
    wide = bt >= _CLOSED_FORM_MIN_BT
    if np.any(wide):
        omega = 2.0 * math.pi * st[wide]
        beta = 2.0 * math.pi**2 * bt[wide] ** 2
        root = np.sqrt(beta)
        x = omega / (2.0 * root)
        phase = np.exp(-beta + 1j * omega)
        j0 = math.sqrt(math.pi) / (2.0 * root) * (wofz(x + 0j) - phase * wofz(x + 1j * root))
        out[wide] = 2.0 * np.real(j0 * (1.0 - 0.5j * omega / beta) + (phase - 1.0) / (2.0 * beta))
    narrow = ~wide
    if np.any(narrow):
        nodes, weights = _HERMITE_8
        arg = st[narrow, None] - math.sqrt(2.0) * bt[narrow, None] * nodes
        out[narrow] = np.sinc(arg) ** 2 @ weights / math.sqrt(math.pi)
    return out


def _s_cutoff(
    q_abs: np.ndarray, crystal_cfg: CrystalConfig, beam_fx: BeamEffects, p_min: float
) -> np.ndarray:
    """``|s|`` (1/A) beyond which ``p(s) < p_min`` for every ``|q| <= q_abs`` (elementwise)."""
    t = crystal_cfg.thickness_a
    sigma_max = _broadening(np.asarray(q_abs, dtype=float), beam_fx, crystal_cfg)
    if crystal_cfg.profile == "gaussian":
        sigma0 = 1.0 / (t * math.sqrt(2.0 * math.pi))
        # f(sigma) = sigma sqrt(2 ln(sigma0 / (sigma p_min))) peaks at sigma0 / (p_min sqrt(e))
        peak = max(sigma0, sigma0 / (p_min * math.sqrt(math.e)))
        best = np.minimum(peak, np.hypot(sigma0, sigma_max))
        return np.asarray(best * np.sqrt(2.0 * np.maximum(np.log(sigma0 / (best * p_min)), 0.0)))
    # p <= 1 / (pi t (|s| - a))^2 + N(a; sigma) / t; make each term <= p_min / 2
    k = 2.0 / (p_min * t * math.sqrt(2.0 * math.pi))
    sigma = np.minimum(sigma_max, k / math.sqrt(math.e))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(sigma > 0, sigma * np.sqrt(2.0 * np.maximum(np.log(k / sigma), 0.0)), 0.0)
    side = np.where(sigma_max > 0, math.sqrt(0.5 * p_min), math.sqrt(p_min))
    return np.asarray(a + 1.0 / (math.pi * t * side))


# ------------------------------------------------------------------ reflection cache

_cache: OrderedDict[tuple[int, bytes], tuple[pd.DataFrame, np.ndarray, np.ndarray]] = OrderedDict()
_cache_lock = threading.Lock()


def _indices(table: pd.DataFrame, b_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(H, |q|^2)``: Fortran-ordered float Miller indices and ``|B h|^2``, cached.

    Keyed by the identity of the table (held, so the id cannot be reused) and ``B``.
    """
    key = (id(table), np.ascontiguousarray(b_matrix, dtype=float).tobytes())
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] is table:
            _cache.move_to_end(key)
            return hit[1], hit[2]
    try:
        hkl = np.column_stack([table[c].to_numpy() for c in ("h", "k", "l")])
    except KeyError as exc:
        raise DataError(f"structure-factor table has no column {exc}", field="table") from None
    h = np.asfortranarray(hkl, dtype=float)
    q2 = np.einsum("ij,ij->i", h @ b_matrix.T, h @ b_matrix.T)
    with _cache_lock:
        _cache[key] = (table, h, q2)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return h, q2


# ------------------------------------------------------------------------ geometry


def centre_px(
    detector: Detector,
    beam: Beam,
    shift_mm: ArrayLike = (0.0, 0.0),
    panel: int | str = 0,
) -> tuple[float, float]:
    """Where the direct beam crosses the plane of ``panel``: raw pixel-centre ``(fs, ss)``.

    Parameters
    ----------
    detector : Detector
        Geometry with a resolved camera length.
    beam : Beam
        The incident beam (along ``+z``).
    shift_mm : (dx, dy)
        Lateral detector translation of the frame in mm, as in
        :meth:`~crystalscope.model.detector.Detector.pixel_to_lab`.
    panel : int or str
        Panel (index or name) whose plane is used; the point may lie outside the panel
        (e.g. in a central hole).

    Returns
    -------
    (fs, ss) : tuple of float
        Raw-array pixel-centre coordinates (panel-relative plus the panel's ``min_fs``,
        ``min_ss``).

    Raises
    ------
    DataError
        If the beam does not cross the panel's plane downstream of the sample.
    """
    shift = check_shift_mm(shift_mm)
    index = detector.panel_index(panel) if isinstance(panel, str) else int(panel)
    if not 0 <= index < len(detector.panels):
        raise DataError(f"panel index out of range 0..{len(detector.panels) - 1}", field="panel")
    fs, ss, ok = plane_hit(panel_planes(detector), index, beam.k_vector[None, :], shift)
    if not ok[0]:
        raise DataError(
            f"the direct beam does not cross the plane of panel {detector.panels[index].name}",
            field="panel",
        )
    fs_raw, ss_raw = detector.panel_to_raw(index, fs[0], ss[0])
    return float(fs_raw), float(ss_raw)


# ---------------------------------------------------------------------- prediction


def _check_inputs(n_on_crystal: float, min_partiality: float) -> None:
    if not (math.isfinite(n_on_crystal) and n_on_crystal >= 0):
        raise DataError(
            f"n_on_crystal must be a non-negative number, got {n_on_crystal}", field="n_on_crystal"
        )
    if not 0 < min_partiality <= 1:
        raise DataError(
            f"min_partiality must be in (0, 1], got {min_partiality}", field="min_partiality"
        )


def _dose_factor(dose_factor: ArrayLike | None, n: int) -> np.ndarray | None:
    if dose_factor is None:
        return None
    factor = np.asarray(dose_factor, dtype=float)
    if factor.shape != (n,):
        raise DataError(
            f"dose_factor needs one value per table row ({n}), got shape {factor.shape}",
            field="dose_factor",
        )
    if not np.all(np.isfinite(factor) & (factor >= 0)):
        raise DataError("dose_factor must be finite and non-negative", field="dose_factor")
    return factor


def _excited(
    crystal: Crystal,
    table: pd.DataFrame,
    wavelength: float,
    crystal_cfg: CrystalConfig,
    beam_fx: BeamEffects,
    min_partiality: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Table rows with ``p >= min_partiality``: ``(rows, q (N, 3), s, p)``.

    A cheap pre-selection on ``A = |q|^2 + 2 k q_z`` (``s = -A / (k + |q + k0|)``, so
    ``|s| >= |A| / (2k + q_max)``) and a per-reflection bound on ``|s|`` avoid computing
    ``q`` and ``p`` for all rows.
    """
    h, q2 = _indices(table, crystal.B)
    if len(q2) == 0:
        empty = np.zeros(0)
        return np.zeros(0, dtype=np.intp), np.zeros((0, 3)), empty, empty
    k = 1.0 / wavelength
    ub = crystal.UB
    q_max = math.sqrt(float(q2.max()))
    cut = float(_s_cutoff(np.array(q_max), crystal_cfg, beam_fx, min_partiality))
    a = h @ ub[2]
    a *= 2.0 * k
    a += q2
    np.abs(a, out=a)
    rows = np.flatnonzero(a <= cut * (2.0 * k + q_max) * (1.0 + 1e-9))
    q = h[rows] @ ub.T
    q_sq = np.einsum("ij,ij->i", q, q)
    along = q_sq + 2.0 * k * q[:, 2]
    s = -along / (k + np.sqrt(along + k * k))
    q_abs = np.sqrt(q_sq)
    near = np.abs(s) <= _s_cutoff(q_abs, crystal_cfg, beam_fx, min_partiality) * (1.0 + 1e-9)
    near &= q_sq > 0
    rows, q, s = rows[near], q[near], s[near]
    p = partiality(s, q_abs[near], crystal_cfg, beam_fx)
    keep = p >= min_partiality
    return rows[keep], q[keep], s[keep], p[keep]


def predict_still(
    crystal: Crystal,
    sf: StructureFactors,
    beam: Beam,
    detector: Detector,
    crystal_cfg: CrystalConfig,
    beam_fx: BeamEffects,
    *,
    n_on_crystal: float,
    shift_mm: ArrayLike = (0.0, 0.0),
    distortion: EllipticalDistortion | None = None,
    dose_factor: ArrayLike | None = None,
    min_partiality: float = 1e-3,
) -> pd.DataFrame:
    """Reflections excited in a still, their detector positions and expected counts.

    Parameters
    ----------
    crystal : Crystal
        Cell and orientation (``q = UB h``).
    sf : StructureFactors
        Reflections (``table`` with ``h, k, l, F2``) and the cell volume for the scale.
    beam : Beam
        Wavelength and radiation (electrons: ``P = 1``; X-rays: unpolarised).
    detector : Detector
        Geometry with a resolved camera length.
    crystal_cfg : CrystalConfig
        Thickness, profile and mosaicity.
    beam_fx : BeamEffects
        Divergence (the other beam effects are the renderer's).
    n_on_crystal : float
        Electrons (photons) hitting the crystal in this frame.
    shift_mm : (dx, dy)
        Lateral detector translation of this frame, mm.
    distortion : EllipticalDistortion, optional
        Elliptical distortion of the positions about the beam centre (module docstring).
    dose_factor : array_like, shape (len(sf.table),), optional
        Per-row multiplier of the counts (e.g. radiation damage); ``F2`` stays the
        table's value.
    min_partiality : float
        Reflections with a smaller partiality are left out.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`PREDICTION_COLUMNS`, one row per excited reflection that lands
        on a panel, in table order: ``h, k, l``; ``d = 1/|q|`` (A); ``s`` (1/A);
        ``partiality``; ``F2``; ``counts`` (expected, see the module docstring);
        ``panel``; raw-array pixel-centre ``fs, ss`` (after shift and distortion);
        ``two_theta_deg`` (of the undistorted ray).

    Raises
    ------
    DataError
        For invalid ``n_on_crystal``, ``min_partiality``, ``shift_mm`` or ``dose_factor``.
    """
    _check_inputs(n_on_crystal, min_partiality)
    shift = check_shift_mm(shift_mm)
    table = sf.table
    factor = _dose_factor(dose_factor, len(table))
    rows, q, s, p = _excited(crystal, table, beam.wavelength, crystal_cfg, beam_fx, min_partiality)
    dirs = q * beam.wavelength
    dirs[:, 2] += 1.0  # lambda (q + k0)
    panel, fs, ss = project_rays(dirs, detector, shift, distortion)
    on = panel >= 0
    rows, q, s, p, dirs, panel = rows[on], q[on], s[on], p[on], dirs[on], panel[on]
    fs_raw, ss_raw = detector.panel_to_raw(panel, fs[on], ss[on])
    two_theta = np.arctan2(np.hypot(dirs[:, 0], dirs[:, 1]), dirs[:, 2])
    f2 = np.asarray(table["F2"].to_numpy(), dtype=float)[rows]
    counts = n_on_crystal * reflection_scale(beam, sf, crystal_cfg) * f2 * p
    counts *= polarisation_factor(two_theta, beam.radiation)
    if factor is not None:
        counts *= factor[rows]
    hkl = np.column_stack([table[c].to_numpy()[rows] for c in ("h", "k", "l")])
    columns: dict[str, Any] = {
        "h": hkl[:, 0],
        "k": hkl[:, 1],
        "l": hkl[:, 2],
        "d": 1.0 / np.linalg.norm(q, axis=1),
        "s": s,
        "partiality": p,
        "F2": f2,
        "counts": counts,
        "panel": panel,
        "fs": fs_raw,
        "ss": ss_raw,
        "two_theta_deg": np.degrees(two_theta),
    }
    return pd.DataFrame(
        {name: np.asarray(columns[name], dtype=t) for name, t in PREDICTION_COLUMNS.items()}
    )

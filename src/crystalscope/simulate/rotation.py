"""Continuous-rotation series: frame angles, Ewald crossings, rocking curves, partials.

The crystal turns continuously about a lab-frame axis ``e`` (unit vector, right-handed,
NeXus); ``U`` is its orientation at goniometer angle ``phi = 0``, so at angle ``phi`` the
scattering vector of reflection ``h`` is ``q(phi) = R(e, phi) q0`` with ``q0 = U B h``
(1/A, no 2 pi) and, by Rodrigues' formula,

.. math::

    \\mathbf{q}(\\varphi) = (\\mathbf{e}\\cdot\\mathbf{q}_0)\\,\\mathbf{e}
        + \\cos\\varphi\\,[\\mathbf{q}_0 - (\\mathbf{e}\\cdot\\mathbf{q}_0)\\mathbf{e}]
        + \\sin\\varphi\\,(\\mathbf{e}\\times\\mathbf{q}_0).

**Ewald crossings.**  With ``k0 = (0, 0, k)``, ``k = 1/lambda``, the reflection is on
the sphere when ``|q + k0|^2 = k^2``, i.e. ``|q|^2 + 2 k q_z = 0``.  ``|q|`` does not
change with ``phi``, so this is ``A + B cos(phi) + C sin(phi) = 0`` with
``A = |q0|^2 + 2k (e.q0) e_z``, ``B = 2k [q0 - (e.q0)e]_z``, ``C = 2k (e x q0)_z``.  With
``rho = sqrt(B^2 + C^2)`` and ``delta = atan2(C, B)`` the two crossings per turn are

.. math::

    \\varphi_\\pm = \\delta \\pm \\arccos(-A/\\rho) \\qquad (|A| \\le \\rho),

and they repeat every 360 degrees.

**Rocking curve and Lorentz factor.**  Near a crossing the excitation error
``s = k - |q + k0|`` (1/A, :meth:`~crystalscope.model.crystal.Crystal.excitation_error`)
is linear in the angle, ``s(phi) = g (phi - phi0)`` with (``phi`` in radians)

.. math::

    g = \\frac{ds}{d\\varphi} = -\\frac{(\\mathbf{q}+\\mathbf{k}_0)\\cdot
        (\\mathbf{e}\\times\\mathbf{q})}{|\\mathbf{q}+\\mathbf{k}_0|}
        = -(\\mathbf{e}\\times\\mathbf{q})_z \\quad\\text{at the crossing},

and the Lorentz factor is ``L = 1/|g|`` (A rad).  ``zeta = -g / (k sin 2theta)`` is
DIALS's ``zeta`` (``e . (s1 x s0) / |s1 x s0|``); reflections near the rotation axis have
small ``|zeta|`` and wide rocking curves.

**Partial intensities.**  The crystal receives ``n_x`` electrons (photons) per frame,
spread evenly over the frame's ``oscillation_deg``: ``n_rad = n_x / osc_rad`` per radian.
A reflection collects, while the crystal turns through ``[phi_a, phi_b]``,

.. math::

    I_{ab} = n_\\mathrm{rad}\\, c\\, |F|^2 P \\int_{\\varphi_a}^{\\varphi_b}
             p(s(\\varphi))\\, d\\varphi
           = n_\\mathrm{rad}\\, c\\, |F|^2 P\\, L \\int_{|g|(\\varphi_a-\\varphi_0)}
             ^{|g|(\\varphi_b-\\varphi_0)} p(s)\\, ds,

with ``c`` the scale of :func:`~crystalscope.simulate.kinematics.reflection_scale`,
``P`` the X-ray polarisation factor ``(1 + cos^2 2theta)/2`` (1 for electrons) and
``p(s)`` the profile (``p`` is even, so the sign of ``g`` drops out).  Both profiles
integrate to ``1/t`` (``t`` = thickness):

* ``gaussian``: ``p = sigma0/sigma exp(-s^2 / 2 sigma^2)``, ``sigma0 = 1/(t sqrt(2 pi))``,
  ``sigma^2 = sigma0^2 + sigma_b^2``, ``sigma_b^2 = (|q| eta / 2.3548)^2 +
  (|q| div / 2.3548)^2`` (mosaicity ``eta`` and divergence ``div`` as FWHM in radians), so
  ``int_{-inf}^{s} p = Phi(s / sigma) / t`` with ``Phi`` the normal CDF: the partial of a
  frame is an erf difference with ``sigma_phi = sigma / |g|`` in the angle;
* ``shape``: ``p = sinc^2(t s)`` (numpy's ``sinc``), with
  ``int_0^{s} p = [Si(2u) - sin^2(u)/u] / (pi t)``, ``u = pi t s`` (``Si`` the sine
  integral); with mosaicity or divergence ``sinc^2`` is convolved with the Gaussian of
  ``sigma_b`` (as in :mod:`~crystalscope.simulate.kinematics`) and integrated through its
  Fourier form, ``int_0^{s} p = (1 / pi t) int_0^1 (1 - y) exp(-2 pi^2 sigma_b^2 t^2 y^2)
  sin(2 pi s t y) / y dy``.

The full intensity of a crossing, summed over an unbroken series, is therefore
``n_rad c |F|^2 P L / t``; exposure gaps (dead time, defocused frames and the rotation
a defocus costs) lose exactly the part of the rocking curve that falls into them.  The
linear model holds to first order in the angle: crossings whose core
(:data:`GAUSS_WINDOW_SIGMA` times ``sqrt(sigma0^2 + sigma_b^2) / |g|`` each side) is wider
than :data:`MAX_WINDOW_DEG` or reaches the other crossing of the same reflection (near
the rotation axis, where ``|zeta|`` is small) are flagged ``simulated = False`` and left
out.  A crossing's partials cover the frames within ``window_deg`` of it: the core for
the Gaussian profile (the tails beyond hold 2e-11 of it), for ``sinc^2`` the range
outside which its tails hold :data:`SHAPE_TAIL` of the integral, at most
:data:`MAX_WINDOW_DEG` (or the core); what lies beyond is not recorded
(``recorded_fraction`` in the truth tells).

The crystal's drift through the selected-area aperture, the series as a whole and its
files are in :mod:`~crystalscope.simulate.rotation_sim` and
:mod:`~crystalscope.simulate.rotation_output`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.special import ndtr, sici

from crystalscope.errors import ConfigError, DataError
from crystalscope.simulate.config import BeamEffects, CrystalConfig, RotationConfig
from crystalscope.simulate.kinematics import polarisation_factor

__all__ = [
    "FWHM_TO_SIGMA",
    "MAX_WINDOW_DEG",
    "RotationScan",
    "check_orientation",
    "crossing_table",
    "ewald_crossings",
    "excitation_slope",
    "frame_partials",
    "profile_cdf",
    "profile_half_width",
    "rocking_broadening",
    "rotate",
    "unit_axis",
]

#: FWHM of a Gaussian in units of its standard deviation, ``2 sqrt(2 ln 2)``.
FWHM_TO_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Widest rocking-curve core (each side of a crossing) the linear model is used for, and
#: the widest window of sinc^2 tails, degrees.
MAX_WINDOW_DEG = 20.0
#: Gaussian rocking windows reach this many sigma each side (tail lost: 2e-11).
GAUSS_WINDOW_SIGMA = 6.7
#: The sinc^2 window keeps all but this fraction of the profile's integral.
SHAPE_TAIL = 5e-3


def unit_axis(axis: ArrayLike) -> np.ndarray:
    """The rotation axis as a unit 3-vector.

    Raises
    ------
    ConfigError
        If the axis is not a finite non-zero 3-vector.
    """
    vec = np.asarray(axis, dtype=float)
    if vec.shape != (3,) or not np.all(np.isfinite(vec)):
        raise ConfigError(f"rotation axis must be a finite 3-vector, got {axis!r}", field="axis")
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:
        raise ConfigError("rotation axis must not be the zero vector", field="axis")
    return vec / norm


def rotate(vectors: ArrayLike, axis: ArrayLike, phi_rad: ArrayLike) -> np.ndarray:
    """Rotate vectors (..., 3) right-handedly by ``phi_rad`` (broadcast) about ``axis``.

    Rodrigues' formula (module docstring); ``axis`` must be a unit vector.
    """
    v = np.asarray(vectors, dtype=float)
    e = np.asarray(axis, dtype=float)
    phi = np.asarray(phi_rad, dtype=float)[..., None]
    par = (v @ e)[..., None] * e
    return par + np.cos(phi) * (v - par) + np.sin(phi) * np.cross(e, v)


def ewald_crossings(
    q0: ArrayLike, axis: ArrayLike, wavelength: float
) -> tuple[np.ndarray, np.ndarray]:
    """Angles where reciprocal-lattice points cross the Ewald sphere, both per turn.

    Parameters
    ----------
    q0 : array_like, shape (N, 3)
        Scattering vectors at ``phi = 0`` in the lab frame, 1/A.
    axis : array_like, shape (3,)
        Unit rotation axis (lab frame).
    wavelength : float
        Wavelength in A.

    Returns
    -------
    phi_rad : numpy.ndarray, shape (N, 2)
        The two crossing angles in radians, in ``[0, 2 pi)`` (NaN where none).
    crosses : numpy.ndarray of bool, shape (N, 2)
        Whether the reflection reaches the sphere during a turn.
    """
    q = np.asarray(q0, dtype=float).reshape(-1, 3)
    e = np.asarray(axis, dtype=float)
    k = 1.0 / float(wavelength)
    along = q @ e
    a = np.einsum("ij,ij->i", q, q) + 2.0 * k * along * e[2]
    b = 2.0 * k * (q[:, 2] - along * e[2])
    c = 2.0 * k * np.cross(e, q)[:, 2]
    rho = np.hypot(b, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_arg = -a / rho
    crosses = (rho > 0) & (np.abs(cos_arg) <= 1.0)
    half = np.arccos(np.clip(cos_arg, -1.0, 1.0))
    delta = np.arctan2(c, b)
    phi = np.stack([delta - half, delta + half], axis=1) % (2.0 * math.pi)
    phi[~crosses] = np.nan
    return phi, np.repeat(crosses[:, None], 2, axis=1)


def excitation_slope(q: ArrayLike, axis: ArrayLike, wavelength: float) -> np.ndarray:
    """``ds/dphi`` (1/A per radian) at scattering vectors ``q`` (N, 3), exact form.

    ``-(q + k0) . (e x q) / |q + k0|`` with ``s = 1/lambda - |q + k0|``.
    """
    q = np.asarray(q, dtype=float).reshape(-1, 3)
    k_out = q + np.array([0.0, 0.0, 1.0 / float(wavelength)])
    dq = np.cross(np.asarray(axis, dtype=float), q)
    return np.asarray(
        -np.einsum("ij,ij->i", k_out, dq) / np.linalg.norm(k_out, axis=1), dtype=float
    )


def rocking_broadening(
    q_norm: ArrayLike, crystal: CrystalConfig, beam_fx: BeamEffects
) -> np.ndarray:
    """``sigma_b`` (1/A): Gaussian broadening of the profile by mosaicity and divergence.

    ``sigma_b^2 = (|q| eta / 2.3548)^2 + (|q| div / 2.3548)^2`` with ``eta`` and ``div``
    the FWHM mosaic spread and divergence in radians.
    """
    qn = np.asarray(q_norm, dtype=float)
    eta = math.radians(crystal.mosaicity_deg)
    div = beam_fx.divergence_mrad * 1e-3
    return np.asarray(qn * math.hypot(eta, div) / FWHM_TO_SIGMA, dtype=float)


def profile_cdf(s: ArrayLike, sigma_b: ArrayLike, thickness_a: float, profile: str) -> np.ndarray:
    """``int_{-inf}^{s} p(s') ds'`` of the rel-point profile (A; total ``1/t``).

    Parameters
    ----------
    s : array_like
        Excitation errors, 1/A.
    sigma_b : array_like
        Broadening (:func:`rocking_broadening`, 1/A), broadcast with ``s``.
    thickness_a : float
        Crystal thickness ``t`` in A.
    profile : {"gaussian", "shape"}
        Rel-point profile (module docstring).
    """
    s_arr, b_arr = np.broadcast_arrays(np.asarray(s, float), np.asarray(sigma_b, float))
    t = float(thickness_a)
    if profile == "gaussian":
        sigma = np.sqrt(1.0 / (2.0 * math.pi * t**2) + b_arr**2)
        return np.asarray(ndtr(s_arr / sigma) / t, dtype=float)
    if profile != "shape":
        raise ConfigError(f"unknown profile {profile!r}", field="crystal.profile")
    if not np.any(b_arr > 0):
        u = math.pi * t * s_arr
        si, _ = sici(2.0 * u)
        with np.errstate(divide="ignore", invalid="ignore"):
            tail = np.where(u == 0.0, 0.0, np.sin(u) ** 2 / u)
        return np.asarray(0.5 / t + (si - tail) / (math.pi * t), dtype=float)
    return np.asarray(0.5 / t + _broadened_shape_integral(s_arr, b_arr, t), dtype=float)


def _broadened_shape_integral(s: np.ndarray, sigma_b: np.ndarray, t: float) -> np.ndarray:
    """``int_0^s`` of ``sinc^2(t s)`` convolved with a Gaussian of ``sigma_b`` (A).

    From the Fourier form of the convolved profile,
    ``p(s) = 2 int_0^1 (1 - y) exp(-2 pi^2 sigma_b^2 t^2 y^2) cos(2 pi s t y) dy``:
    ``int_0^s p = (1 / (pi t)) int_0^1 (1 - y) exp(-2 pi^2 sigma_b^2 t^2 y^2)
    sin(2 pi s t y) / y dy``, by Gauss-Legendre quadrature (no node at ``y = 0``) with
    enough nodes for the highest frequency.
    """
    flat_s, flat_b = (s * t).ravel(), (sigma_b * t).ravel()
    out = np.empty(flat_s.shape)
    top = float(np.max(np.abs(flat_s), initial=0.0))
    n_nodes = 16 * math.ceil((math.pi * top + 24.0) / 16.0)
    y, w = np.polynomial.legendre.leggauss(n_nodes)
    y, w = 0.5 * (y + 1.0), 0.5 * w
    weight = w * (1.0 - y) / y
    step = max(1, 1_000_000 // n_nodes)
    for i in range(0, len(flat_s), step):
        st, bt = flat_s[i : i + step, None], flat_b[i : i + step, None]
        kernel = np.sin((2.0 * math.pi * y) * st)
        kernel *= np.exp((-2.0 * math.pi**2 * y**2) * bt**2)
        out[i : i + step] = kernel @ weight
    return out.reshape(s.shape) / (math.pi * t)


def profile_half_width(sigma_b: ArrayLike, thickness_a: float, profile: str) -> np.ndarray:
    """Half width in ``s`` (1/A) outside which the profile is neglected.

    Gaussian: :data:`GAUSS_WINDOW_SIGMA` standard deviations; sinc^2: the ``|s|`` beyond
    which the tails hold :data:`SHAPE_TAIL` of the integral (``~ 1 / (pi^2 t |s|)``),
    plus :data:`GAUSS_WINDOW_SIGMA` ``sigma_b`` for the broadening.
    """
    b = np.asarray(sigma_b, dtype=float)
    t = float(thickness_a)
    if profile == "shape":
        return np.asarray(1.0 / (math.pi**2 * t * SHAPE_TAIL) + GAUSS_WINDOW_SIGMA * b)
    return np.asarray(GAUSS_WINDOW_SIGMA * np.sqrt(1.0 / (2.0 * math.pi * t**2) + b**2))


# ---------------------------------------------------------------------- frame timing


@dataclass(frozen=True)
class RotationScan:
    """Timing of a series: which angles every frame covers.

    Frame ``j`` exposes from ``phi_start_deg[j]`` to ``phi_end_deg[j] = phi_start_deg[j]
    + oscillation_deg``; the stage keeps turning through ``dead_time_deg`` of readout,
    and after a defocused frame through ``defocus_cost_deg`` more, before frame ``j+1``
    starts.  Defocused frames are frames ``n-1, 2n-1, ...`` (every ``n``-th,
    ``n = defocus_every``); they record an image of the crystal, not diffraction.

    Attributes
    ----------
    axis : numpy.ndarray, shape (3,)
        Unit rotation axis, lab frame.
    phi_start_deg, phi_end_deg : numpy.ndarray, shape (n_frames,)
        Goniometer angle at the start and end of each exposure, degrees.
    defocused : numpy.ndarray of bool, shape (n_frames,)
        Frames replaced by a defocused image.
    """

    axis: np.ndarray
    phi_start_deg: np.ndarray
    phi_end_deg: np.ndarray
    defocused: np.ndarray

    @classmethod
    def from_config(cls, config: RotationConfig) -> RotationScan:
        """Frame angles from a :class:`~crystalscope.simulate.config.RotationConfig`."""
        n = config.n_frames
        index = np.arange(n)
        every = config.defocus_every
        defocused = (index + 1) % every == 0 if every > 0 else np.zeros(n, dtype=bool)
        step = config.oscillation_deg + config.dead_time_deg + config.defocus_cost_deg * defocused
        start = config.start_deg + np.concatenate([[0.0], np.cumsum(step[:-1])])
        return cls(unit_axis(config.axis), start, start + config.oscillation_deg, defocused)

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return len(self.phi_start_deg)

    @property
    def oscillation_deg(self) -> float:
        """Rotation during one exposure, degrees."""
        return float(self.phi_end_deg[0] - self.phi_start_deg[0])

    def exposed_intervals_deg(self) -> np.ndarray:
        """``(n, 2)`` angle ranges that record diffraction (defocused frames left out)."""
        keep = ~self.defocused
        return np.column_stack([self.phi_start_deg[keep], self.phi_end_deg[keep]])

    def table(self) -> pd.DataFrame:
        """Per-frame table: ``frame, phi_start_deg, phi_end_deg, defocused``."""
        return pd.DataFrame(
            {
                "frame": np.arange(self.n_frames, dtype=np.int64),
                "phi_start_deg": self.phi_start_deg,
                "phi_end_deg": self.phi_end_deg,
                "defocused": self.defocused.astype(bool),
            }
        )


# ---------------------------------------------------------------------- crossings


def crossing_table(
    hkl: np.ndarray,
    ub: np.ndarray,
    scan: RotationScan,
    wavelength: float,
    radiation: str,
    crystal: CrystalConfig,
    beam_fx: BeamEffects,
) -> pd.DataFrame:
    """Every Ewald crossing whose rocking curve reaches the series' angle range.

    Parameters
    ----------
    hkl : numpy.ndarray, shape (N, 3)
        Miller indices (row ``i`` of the structure-factor table is ``ref = i``).
    ub : numpy.ndarray, shape (3, 3)
        ``U B`` at ``phi = 0`` (columns a*, b*, c* in the lab frame, 1/A).
    scan : RotationScan
        Frame timing.
    wavelength : float
        Wavelength in A.
    radiation : {"xray", "electron"}
        Selects the polarisation factor.
    crystal, beam_fx
        Thickness, profile, mosaicity and divergence.

    Returns
    -------
    pandas.DataFrame
        One row per crossing: ``ref`` (row of ``hkl``), ``h, k, l``, ``branch`` (0/1:
        which root), ``turn`` (whole turns added), ``phi0_deg`` (in the series' frame of
        angles), ``qx, qy, qz`` at ``phi0`` (1/A), ``ds_dphi`` (1/A per rad),
        ``lorentz`` (``1/|ds/dphi|``, A rad), ``zeta``, ``sigma_b`` (1/A, broadening),
        ``window_deg`` (half width of the rocking window), ``two_theta_deg``,
        ``polarisation`` and ``simulated`` (False where the linear model does not hold).
    """
    hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    q0 = hkl @ np.asarray(ub, dtype=float).T
    phi, crosses = ewald_crossings(q0, scan.axis, wavelength)
    ref, branch = np.nonzero(crosses)
    phi_c = phi[ref, branch]
    q = rotate(q0[ref], scan.axis, phi_c)
    slope = excitation_slope(q, scan.axis, wavelength)
    qn = np.linalg.norm(q0[ref], axis=1)
    sigma_b = rocking_broadening(qn, crystal, beam_fx)
    t = crystal.thickness_a
    with np.errstate(divide="ignore"):
        lorentz = 1.0 / np.abs(slope)
        core = profile_half_width(sigma_b, t, "gaussian") * lorentz
        tails = profile_half_width(sigma_b, t, crystal.profile) * lorentz
    window = np.minimum(tails, np.maximum(core, math.radians(MAX_WINDOW_DEG)))
    other = phi[ref, 1 - branch]
    gap = np.abs((phi_c - other + math.pi) % (2 * math.pi) - math.pi)  # angle to partner
    ok = (core < math.radians(MAX_WINDOW_DEG)) & (core < 0.5 * gap)
    two_theta = 2.0 * np.arcsin(np.clip(0.5 * wavelength * qn, 0.0, 1.0))
    base = pd.DataFrame(
        {
            "ref": ref.astype(np.int64),
            "h": hkl[ref, 0].astype(np.int32),
            "k": hkl[ref, 1].astype(np.int32),
            "l": hkl[ref, 2].astype(np.int32),
            "branch": branch.astype(np.int8),
            "phi0_rad": phi_c,
            "qx": q[:, 0],
            "qy": q[:, 1],
            "qz": q[:, 2],
            "ds_dphi": slope,
            "lorentz": lorentz,
            "zeta": -slope * wavelength / np.maximum(np.sin(two_theta), 1e-300),
            "sigma_b": sigma_b,
            "window_rad": np.where(np.isfinite(window), window, np.inf),
            "two_theta_deg": np.degrees(two_theta),
            "polarisation": polarisation_factor(two_theta, radiation),
            "simulated": ok,
        }
    )
    return _unroll(base, scan)


def _unroll(base: pd.DataFrame, scan: RotationScan) -> pd.DataFrame:
    """Repeat crossings every turn so that each window reaching the series is listed."""
    lo = math.radians(float(scan.phi_start_deg.min()))
    hi = math.radians(float(scan.phi_end_deg.max()))
    window = np.minimum(base["window_rad"].to_numpy(), math.radians(MAX_WINDOW_DEG))
    phi = base["phi0_rad"].to_numpy()
    first = np.ceil((lo - window - phi) / (2 * math.pi)).astype(np.int64)
    last = np.floor((hi + window - phi) / (2 * math.pi)).astype(np.int64)
    count = np.maximum(last - first + 1, 0)
    rows = np.repeat(np.arange(len(base)), count)
    offset = np.arange(len(rows)) - np.repeat(np.cumsum(count) - count, count)
    turn = first[rows] + offset
    out = base.iloc[rows].reset_index(drop=True)
    out.insert(5, "turn", turn.astype(np.int64))
    phi0 = out["phi0_rad"].to_numpy() + 2 * math.pi * turn
    out["phi0_deg"] = np.degrees(phi0)
    out["window_deg"] = np.degrees(out["window_rad"].to_numpy())
    out = out.drop(columns=["phi0_rad", "window_rad"])
    order = np.lexsort((out["branch"].to_numpy(), out["phi0_deg"].to_numpy()))
    return out.iloc[order].reset_index(drop=True)


def frame_partials(
    crossings: pd.DataFrame,
    scan: RotationScan,
    thickness_a: float,
    profile: str,
    full_counts: np.ndarray,
    frame_scale: np.ndarray,
) -> pd.DataFrame:
    """Counts of every simulated crossing on every frame its rocking window reaches.

    Parameters
    ----------
    crossings : DataFrame
        From :func:`crossing_table` (only rows with ``simulated`` are used).
    scan : RotationScan
        Frame timing; defocused frames receive no diffraction.
    thickness_a : float
        Crystal thickness, A.
    profile : {"gaussian", "shape"}
        Rel-point profile.
    full_counts : numpy.ndarray, shape (n_crossings,)
        ``n_rad c |F|^2 P L / t``: the counts of the whole rocking curve at scale 1.
    frame_scale : numpy.ndarray, shape (n_frames,)
        Per-frame multiplier (the aperture scale).

    Returns
    -------
    pandas.DataFrame
        One row per (crossing, frame) with counts > 0: ``crossing`` (row of
        ``crossings``), ``frame``, ``fraction`` (part of the whole rocking curve in the
        frame's exposure) and ``counts`` (``full_counts * fraction * frame_scale``).
    """
    sim = np.flatnonzero(crossings["simulated"].to_numpy())
    phi0 = crossings["phi0_deg"].to_numpy()[sim]
    window = crossings["window_deg"].to_numpy()[sim]
    first = np.searchsorted(scan.phi_end_deg, phi0 - window, side="right")
    last = np.searchsorted(scan.phi_start_deg, phi0 + window, side="left")
    count = np.maximum(last - first, 0)
    rows = np.repeat(np.arange(len(sim)), count)
    frame = first[rows] + np.arange(len(rows)) - np.repeat(np.cumsum(count) - count, count)
    keep = ~scan.defocused[frame]
    rows, frame = rows[keep], frame[keep]
    idx = sim[rows]
    g = np.abs(crossings["ds_dphi"].to_numpy()[idx])
    sigma_b = crossings["sigma_b"].to_numpy()[idx]
    centre = phi0[rows]
    s_a = g * np.radians(scan.phi_start_deg[frame] - centre)
    s_b = g * np.radians(scan.phi_end_deg[frame] - centre)
    cdf_b = profile_cdf(s_b, sigma_b, thickness_a, profile)
    cdf_a = profile_cdf(s_a, sigma_b, thickness_a, profile)
    fraction = (cdf_b - cdf_a) * thickness_a
    counts = full_counts[idx] * fraction * frame_scale[frame]
    out = pd.DataFrame(
        {
            "crossing": idx.astype(np.int64),
            "frame": frame.astype(np.int64),
            "fraction": fraction,
            "counts": counts,
        }
    )
    return out[out["counts"] > 0].reset_index(drop=True)


def check_orientation(values: ArrayLike | None) -> np.ndarray | None:
    """``orientation_u`` (9 numbers, row by row) as a proper rotation, or None."""
    if values is None:
        return None
    from crystalscope.model.orientation import check_rotation

    try:
        return check_rotation(np.asarray(values, dtype=float).reshape(3, 3), field="orientation_u")
    except (DataError, ValueError) as exc:
        raise ConfigError(
            f"orientation_u is not a rotation: {exc}", field="orientation_u"
        ) from None

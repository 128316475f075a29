"""Simulated CDI data with known truth: objects, far-field patterns, noise, masks.

Physics
-------
In plane-wave CDI the far-field intensity is the squared modulus of the Fourier
transform of the (projected, for 2-D) electron density ``rho`` (first Born
approximation, Fraunhofer regime; seed 002 section 2).  On a detector sampled at the
linear oversampling ratio ``sigma = D lambda / (p S)``, the object of extent ``S``
occupies ``n / sigma`` pixels of the ``n``-pixel inverse-FFT grid, which is how the
objects here are sized: ``size_px = n / oversampling``.

The pattern is ``I = N_ph |F[rho]|^2 / sum |F[rho]|^2`` (``N_ph`` the total number of
scattered photons reaching the detector) with Poisson counting noise.  The direct beam
is blocked by a beamstop (a disc of ``beamstop_radius_px`` pixels around the zero
frequency) and the detector has module gaps (bands of ``gap_px`` pixels every
``module_px`` pixels); these pixels are returned masked (unknown), with intensity 0.

Test objects are real and positive (a weak-phase / absorption-free object: electron
density).  :func:`resolution_target` is *band-limited*: it is ``|g|^2`` with ``g`` a binary
pattern low-passed at half the cut-off, so its spectrum is exactly zero beyond
``q_cut`` (cycles per pixel), which gives the resolution a reconstruction should reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crystalscope.errors import ConfigError

__all__ = [
    "SimulatedPattern",
    "band_limit",
    "octahedral_cluster",
    "oversampling_ratio",
    "porous_particle",
    "resolution_target",
    "simulate_pattern",
]


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Pixel coordinates relative to the array centre ``n // 2`` (open grids)."""
    return list(np.ogrid[tuple(slice(-(n // 2), n - n // 2) for n in shape)])


def _check(shape: tuple[int, ...], size_px: float) -> None:
    if len(shape) not in (2, 3):
        raise ConfigError(f"shape must be 2-D or 3-D, got {shape}", field="shape")
    if not 2 <= size_px <= min(shape):
        raise ConfigError(f"object size {size_px} px does not fit {shape}", field="size_px")


def band_limit(a: np.ndarray, q_cut: float) -> np.ndarray:
    """Zero the spectrum of ``a`` beyond ``|q| = q_cut`` (cycles per pixel)."""
    f = np.fft.fftn(a)
    q2 = sum(
        np.fft.fftfreq(n).reshape([-1 if i == ax else 1 for i in range(a.ndim)]) ** 2
        for ax, n in enumerate(a.shape)
    )
    f[q2 > q_cut**2] = 0
    return np.fft.ifftn(f).real


def resolution_target(shape: tuple[int, ...], size_px: float, *, q_cut: float = 0.4) -> np.ndarray:
    """A resolution-test object: disc frame, bars and squares of decreasing size.

    Parameters
    ----------
    shape : tuple of int
        Array shape (2-D, or 3-D for a slab of the 2-D pattern of thickness size/4).
    size_px : float
        Extent of the object, pixels.
    q_cut : float
        Spectral cut-off, cycles per pixel (<= 0.5 * sqrt(ndim)).

    Returns
    -------
    ndarray
        Real, non-negative float64 density, maximum 1, centred at ``n // 2``.
    """
    _check(shape, size_px)
    c = _grid(shape[-2:])
    y, x = c[0] / (size_px / 2), c[1] / (size_px / 2)
    # an irregular, non-centrosymmetric body: a triangle with a notch (fill 1)
    body = (y > -0.7) & (y < -0.7 + 1.833 * (x + 0.9)) & (y < -0.7 - 1.737 * (x - 0.95))
    body &= ~((np.abs(x + 0.05) < 0.12) & (y < -0.45))
    g = body * 1.0
    # bars and squares of decreasing size (resolution targets, +0.8)
    for k, w in enumerate((0.1, 0.07, 0.045, 0.03)):
        g += body * ((np.abs(y + 0.55 - 0.3 * k) < 0.12) & (np.abs(x - 0.05 - 0.08 * k) < w)) * 0.8
        g += body * ((np.abs(x + 0.35 + 0.08 * k) < w) & (np.abs(y + 0.6 - 0.25 * k) < w)) * 0.8
    if len(shape) == 3:
        zc = _grid(shape)[0] / (size_px / 2)
        g = g[None, :, :] * (np.abs(zc) < 0.25)
    obj = band_limit(g, q_cut / 2) ** 2
    return obj / obj.max()


def porous_particle(
    shape: tuple[int, ...],
    size_px: float,
    *,
    porosity: float = 0.3,
    pore_px: float = 3.0,
    seed: int | None = 0,
) -> np.ndarray:
    """A sphere (disc in 2-D) of ``size_px`` diameter with random interconnected pores.

    The pores are where a Gaussian random field of correlation length ``pore_px``
    falls below its ``porosity`` quantile; the result is smoothed by 0.7 px.
    """
    _check(shape, size_px)
    rng = np.random.default_rng(seed)
    r = np.sqrt(sum(c.astype(float) ** 2 for c in _grid(shape)))
    field = band_limit(rng.standard_normal(shape), 1.0 / (2 * np.pi * pore_px) * 2)
    inside = r < size_px / 2
    pores = field < np.quantile(field[inside], porosity)
    solid = (inside & ~pores).astype(float)
    return np.clip(_smooth(solid, 0.7), 0, None)


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.asarray(gaussian_filter(a, sigma, mode="wrap"))


def _octahedron(shape: tuple[int, ...], centre: np.ndarray, radius: float, rot: np.ndarray):
    coords = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij"), -1)
    local = (coords - centre) @ rot
    return (np.abs(local).sum(-1) <= radius).astype(float)


def octahedral_cluster(
    shape: tuple[int, ...], size_px: float, *, n_particles: int = 6, seed: int | None = 0
) -> np.ndarray:
    """A cluster of randomly oriented octahedral nanoparticles (seed 002, Fig. 2b).

    In 3-D the volume; in 2-D its projection along the beam (sum over ``z``).
    Particles of "radius" (centre-to-vertex) ``size_px / 6`` are placed at random inside
    a sphere of ``size_px / 2 - radius``.
    """
    _check(shape, size_px)
    if n_particles < 1:
        raise ConfigError("n_particles must be >= 1", field="n_particles")
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    radius = size_px / 6
    vol_shape = shape if len(shape) == 3 else (int(np.ceil(size_px)) + 2, *shape)
    vol = np.zeros(vol_shape)
    for _ in range(n_particles):
        direction = rng.standard_normal(3)
        centre = direction / np.linalg.norm(direction) * rng.random() ** (1 / 3)
        centre *= size_px / 2 - radius
        rot = Rotation.random(random_state=rng).as_matrix()
        vol = np.maximum(vol, _octahedron(vol_shape, centre, radius, rot))
    vol = _smooth(vol, 0.7)
    return vol if len(shape) == 3 else vol.sum(axis=0) / vol.sum(axis=0).max()


def oversampling_ratio(obj: np.ndarray, *, level: float = 1e-3) -> float:
    """Linear oversampling ratio: array size over object extent, worst axis.

    The extent along each axis is that of the pixels above ``level`` times the maximum.
    """
    inside = np.abs(obj) > level * np.abs(obj).max()
    ratios = []
    for axis, n in enumerate(obj.shape):
        other = tuple(i for i in range(obj.ndim) if i != axis)
        idx = np.flatnonzero(inside.any(axis=other))
        ratios.append(n / (idx[-1] - idx[0] + 1))
    return float(min(ratios))


@dataclass(frozen=True)
class SimulatedPattern:
    """A simulated pattern (centred), its mask (True = unknown) and the truth."""

    intensity: np.ndarray
    mask: np.ndarray
    truth: np.ndarray
    photons: float


def detector_mask(
    shape: tuple[int, ...], beamstop_radius_px: float = 0.0, gap_px: int = 0, module_px: int = 0
) -> np.ndarray:
    """Beamstop disc around ``n // 2`` and module gaps (bands along the last two axes)."""
    r2 = sum(c.astype(float) ** 2 for c in _grid(shape))
    mask = r2 <= beamstop_radius_px**2 if beamstop_radius_px > 0 else np.zeros(shape, bool)
    if gap_px > 0 and module_px > 0:
        for axis in (-1, -2):
            n = shape[axis]
            band = (np.arange(n) - n // 2 + gap_px // 2) % module_px < gap_px
            idx = [None] * len(shape)
            idx[axis] = slice(None)  # type: ignore[call-overload]
            mask = mask | band[tuple(idx)]
    return np.asarray(mask, dtype=bool)


def simulate_pattern(
    obj: np.ndarray,
    photons: float = 1e8,
    *,
    beamstop_radius_px: float = 0.0,
    gap_px: int = 0,
    module_px: int = 0,
    seed: int | None = 0,
    noise: bool = True,
) -> SimulatedPattern:
    """Far-field pattern of ``obj`` (centred) with Poisson noise, beamstop and gaps.

    Parameters
    ----------
    obj : ndarray
        Object (2-D or 3-D) centred at ``n // 2``.
    photons : float
        Expected total number of photons on the detector (masked pixels included).
    beamstop_radius_px, gap_px, module_px : float, int, int
        Beamstop radius, module-gap width and module period, pixels.
    seed : int, optional
        Random seed of the noise.
    noise : bool
        Draw Poisson counts (else the expected intensities).

    Returns
    -------
    SimulatedPattern
    """
    if photons <= 0:
        raise ConfigError("photons must be > 0", field="photons")
    f = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj)))
    expected = np.abs(f) ** 2
    expected *= photons / expected.sum()
    rng = np.random.default_rng(seed)
    counts = rng.poisson(expected).astype(np.float32) if noise else expected.astype(np.float32)
    mask = detector_mask(obj.shape, beamstop_radius_px, gap_px, module_px)
    counts[mask] = 0
    return SimulatedPattern(counts, mask, np.asarray(obj, dtype=np.float64), float(photons))

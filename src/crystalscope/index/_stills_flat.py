"""Flat Ewald spheres (electrons): the 180-degree twin and tilted neighbours of a fit.

On an almost flat Ewald sphere the peak positions fix a lattice's orientation in the
detector plane but hardly its tilt, and the lattice turned by 180 degrees about the beam
puts a lattice point on every peak too, only about ``lambda |q|^2`` off the sphere.
These helpers refine those look-alikes explicitly so that
:func:`~crystalscope.index._stills_judge.choose_fit` sees them, and discard the member
of each twin pair whose excitation errors bend the wrong way (see
``docs/algorithms/indexing.md``).
"""

from __future__ import annotations

import numpy as np

from crystalscope.index._stills_judge import choose_fit, distinct_fits
from crystalscope.index._stills_refine import Fit, FitOptions, refine_lattice
from crystalscope.index._stills_search import SearchOptions, distinct, tilt_scan
from crystalscope.index._stills_setup import FrameGeometry, cell_b_matrix, lattice_rotations

__all__ = ["bowl_twin", "flat_sphere_fits", "is_flat", "tilted_fits", "twin_loser"]

N_TILTED = 2  # tilted starts refined per fit


def flat_sphere_fits(
    fits: list[Fit],
    geom: FrameGeometry,
    cell0: np.ndarray,
    hall: str,
    opts: FitOptions,
    search: SearchOptions,
    log_bg: float,
) -> list[Fit]:
    """``fits`` plus the twins and tilted neighbours of the best two, minus the member
    of each twin pair that bends the wrong way (:func:`twin_loser`); repeated once for
    a new best."""
    sym = lattice_rotations(tuple(cell0), hall)
    best, _ = choose_fit(distinct_fits(fits, sym, 1.0), log_bg)
    starts = sorted(distinct_fits(fits, sym, 1.0), key=lambda f: f is not best)[:2]
    losers: list[Fit] = []
    for round_ in range(2):
        for start in starts:
            turned, tilted = tilted_fits(start, geom, cell0, hall, opts, search, scan=round_ == 0)
            fits = fits + tilted + ([turned] if turned is not None else [])
            loser = twin_loser(start, turned) if turned is not None else None
            losers += [loser] if loser is not None else []
        lost = [x.model.rot for x in losers]  # and their copies from other starts
        remaining = [f for f in fits if distinct(f.model.rot, lost, sym, 1.0)]
        if not remaining:  # every candidate lost a twin contest: leave them to the judge
            break
        fits = remaining
        new, _ = choose_fit(distinct_fits(fits, sym, 1.0), log_bg)
        if any(new is start for start in starts):
            break
        starts = [new]  # a new best: resolve its twin too
    return fits


def twin_loser(a: Fit, b: Fit) -> Fit | None:
    """Of a lattice and its copy turned by 180 degrees about the beam, the one whose
    excitation errors bend the wrong way, when both index comparably many peaks.

    Their bowl slopes add up to about -1 (:func:`bowl_twin`); the crystal's is the larger.
    """
    if min(a.n_indexed, b.n_indexed) < 0.8 * max(a.n_indexed, b.n_indexed):
        return None
    if abs(a.bowl - b.bowl) < 2.0 * float(np.hypot(a.bowl_error, b.bowl_error)):
        return None
    return a if a.bowl < b.bowl else b


def is_flat(geom: FrameGeometry) -> bool:
    """Whether the Ewald sphere is nearly flat over the peaks (``lambda |q|_max < 0.05``)."""
    q = geom.q(np.zeros(2))
    return bool(len(q)) and geom.wavelength * float(np.max(np.linalg.norm(q, axis=1))) < 0.05


def tilted_fits(
    best: Fit,
    geom: FrameGeometry,
    cell0: np.ndarray,
    hall: str,
    opts: FitOptions,
    search: SearchOptions,
    scan: bool = True,
) -> tuple[Fit | None, list[Fit]]:
    """Refined lattices from starts near ``best`` that a flat Ewald sphere confuses
    with it: ``best`` turned by 180 degrees about the beam (its twin; when ``best`` is
    itself the twin, this is the crystal), and with ``scan`` the two best tilted starts
    (distinct from it, indexing at least 90 % as many peaks at its profile radius).
    Returns the turned fit (None when it failed) and the tilted ones."""
    turned = np.diag([-1.0, -1.0, 1.0]) @ best.model.rot
    twin = refine_lattice(turned, cell0, geom, opts, best.model.shift)
    if not scan:
        return twin, []
    q = geom.q(best.model.shift)
    b_mat = cell_b_matrix(best.model.cell)
    r_p = best.model.profile_radius
    tilted = tilt_scan(best.model.rot, q, geom.px_q, geom.wavelength, b_mat, r_p, search)
    sym = lattice_rotations(tuple(cell0), hall)
    tilted = [c for c in tilted if distinct(c.rot, [best.model.rot], sym, 1.0)]
    out = []
    for cand in tilted[:N_TILTED]:
        if cand.n_indexed < 0.9 * best.n_indexed:
            break
        shift0 = best.model.shift + geom.shift_for_offset(cand.offset)
        fit = refine_lattice(cand.rot, cell0, geom, opts, shift0)
        if fit is not None and not bowl_twin(fit):
            out.append(fit)
    return twin, out


def bowl_twin(fit: Fit) -> bool:
    """True when the excitation errors bend with ``|q|^2`` the wrong way.

    For the right lattice the slope ``b`` of ``s`` against ``lambda |q|^2``
    (``_stills_refine._bowl``) lies between -1/2 (exactly on a zone axis: the flat
    zero-order Laue zone against the curved sphere) and 0 (general orientation); the
    lattice turned by 180 degrees about a flat Ewald sphere's axis puts the same peaks
    on points with ``b' = -1 - b``.  Fits with ``b`` significantly below -1/2 (by 0.1
    and three standard errors) or above 0.3 are rejected.
    """
    b, err = fit.bowl, fit.bowl_error
    return (b < -0.6 and b + 0.5 < -3.0 * err) or (b > 0.3 and b > 4.0 * err)

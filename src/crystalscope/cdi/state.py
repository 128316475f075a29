"""The state that phase-retrieval operators act on.

A :class:`CDIState` holds, on one backend (NumPy or CuPy):

* ``iobs``: the observed far-field intensities in photons, float32;
* ``mask``: True where the intensity is unknown (beamstop, module gaps, missing wedge);
  these pixels are left free by the Fourier-magnitude projection;
* ``free``: a reserved random set of measured pixels (with their Friedel mates), also
  left free during the iterations, on which the *free* Poisson log-likelihood is
  computed (the analogue of R-free, used to rank runs);
* ``obj``: the current complex object estimate, complex64;
* ``support``: the current real-space support, bool.

Layout: all arrays are stored in *FFT layout* (zero frequency and real-space origin at
index 0 of every axis), so that no shift is needed per iteration.  Patterns are given
and returned *centred* (zero frequency at index ``n // 2`` of each axis, as on a
detector after centring; :func:`numpy.fft.fftshift` convention).  Shapes may be 2-D
(``(ss, fs)``) or 3-D (``(z, y, x)``) alike.  Pixels are pixel-centre indexed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crystalscope.cdi.backend import Backend, get_backend, to_numpy
from crystalscope.errors import DataError

__all__ = ["CDIState", "friedel_mate", "make_free_set"]


def friedel_mate(a: np.ndarray) -> np.ndarray:
    """Return ``a`` at ``-q`` for an FFT-layout array (index ``k`` -> ``(-k) mod n``)."""
    out = np.flip(a)
    for axis in range(a.ndim):
        out = np.roll(out, 1, axis=axis)
    return out


def make_free_set(
    known: np.ndarray, fraction: float, rng: np.random.Generator, *, fft_layout: bool = True
) -> np.ndarray:
    """Pick a random set of measured pixels (with their Friedel mates) to reserve.

    Parameters
    ----------
    known : ndarray of bool
        True where the intensity was measured.
    fraction : float
        Wanted fraction of the measured pixels, 0 <= fraction < 0.5.
    rng : numpy.random.Generator
        Random numbers.
    fft_layout : bool
        Whether ``known`` is in FFT layout (else centred, as stored on disk).

    Returns
    -------
    ndarray of bool
        The free set (a subset of ``known``).
    """
    if not 0.0 <= fraction < 0.5:
        raise DataError(f"free fraction must be in [0, 0.5), got {fraction}", field="free")
    pick = rng.random(known.shape) < fraction / 2.0
    lay = pick if fft_layout else np.fft.ifftshift(pick)
    lay = lay | friedel_mate(lay)
    if not fft_layout:
        lay = np.fft.fftshift(lay)
    return lay & known


@dataclass
class CDIState:
    """Object, support and data of one phase-retrieval run (see module docstring).

    Create with :meth:`from_pattern`; operators modify the state in place and return it.
    """

    backend: Backend
    iobs: Any
    amp: Any
    mask: Any
    free: Any
    known: Any
    obj: Any
    support: Any
    positivity: bool = False
    real: bool = False
    zero_mask: bool = False
    sup_sigma: float | None = None
    iteration: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    @classmethod
    def from_pattern(
        cls,
        iobs: np.ndarray,
        mask: np.ndarray | None = None,
        *,
        free_fraction: float = 0.05,
        backend: str | Backend = "auto",
        seed: int | None = None,
        workers: int | None = None,
    ) -> CDIState:
        """Build a state from a *centred* pattern.

        Parameters
        ----------
        iobs : ndarray
            Observed intensities (photons), 2-D or 3-D, zero frequency at ``n // 2``.
        mask : ndarray of bool, optional
            True where the intensity is unknown.  NaN or negative intensities are
            masked too.
        free_fraction : float
            Fraction of the measured pixels reserved for the free log-likelihood.
        backend : str or Backend
            ``"auto"``, ``"numpy"``, ``"cupy"`` or a :class:`Backend`.
        seed : int, optional
            Seed of this run's random numbers (free set, random start).
        workers : int, optional
            CPU FFT threads.

        Raises
        ------
        DataError
            Not 2-D or 3-D, or the mask's shape differs from the pattern's.
        """
        data = np.asarray(iobs, dtype=np.float64)
        if data.ndim not in (2, 3):
            raise DataError(f"a pattern must be 2-D or 3-D, got shape {data.shape}", field="iobs")
        bad = ~np.isfinite(data) | (data < 0)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != data.shape:
                raise DataError(
                    f"mask shape {mask.shape} differs from pattern shape {data.shape}",
                    field="mask",
                )
            bad |= mask
        rng = np.random.default_rng(seed)
        bad = np.fft.ifftshift(bad)
        data = np.where(bad, 0.0, np.fft.ifftshift(np.nan_to_num(data)))
        free = make_free_set(~bad, free_fraction, rng)
        be = backend if isinstance(backend, Backend) else get_backend(backend, workers=workers)
        xp = be.xp
        known = ~bad & ~free
        return cls(
            backend=be,
            iobs=be.asarray(data.astype(np.float32)),
            amp=be.asarray(np.sqrt(data).astype(np.float32)),
            mask=be.asarray(bad),
            free=be.asarray(free),
            known=be.asarray(known),
            obj=xp.zeros(data.shape, dtype=np.complex64),
            support=xp.ones(data.shape, dtype=bool),
            rng=rng,
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape."""
        return tuple(self.obj.shape)

    def object_centred(self) -> np.ndarray:
        """The object as a NumPy array with the real-space origin at ``n // 2``."""
        return np.fft.fftshift(to_numpy(self.obj))

    def support_centred(self) -> np.ndarray:
        """The support as a NumPy bool array, origin at ``n // 2``."""
        return np.fft.fftshift(to_numpy(self.support))

    def support_fraction(self) -> float:
        """Fraction of the array inside the support."""
        return float(self.backend.xp.count_nonzero(self.support)) / float(self.support.size)

    def calc_intensity(self) -> Any:
        """Model intensities ``|F(obj)|^2`` in FFT layout (on the backend)."""
        f = self.backend.fftn(self.obj)
        return (f.real**2 + f.imag**2).astype(np.float32)

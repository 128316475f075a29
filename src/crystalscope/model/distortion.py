"""Elliptical distortion of diffraction patterns (electron-microscope projection lenses).

Imperfect projector lenses scale a pattern differently along two perpendicular axes,
so that powder rings become ellipses.  The model is diffractem's: a pattern is
stretched by ``sqrt(ratio)`` along one axis and compressed by ``1/sqrt(ratio)`` along
the other, around the beam centre, so areas are kept.  Parameters transfer one to one
from diffractem's ``ellipse_ratio`` and ``ellipse_angle``.

Equations
---------
With ``a`` the angle in degrees, ``R = [[cos a, -sin a], [sin a, cos a]]`` and
``S = diag(ratio**-0.5, ratio**0.5)``, positions ``p = (fs, ss)`` in pixels relative to
the beam centre ``c`` are corrected (observed -> true) by the *correction matrix*

.. math::

    C = R^T S R, \\qquad p_\\mathrm{true} = c + C (p_\\mathrm{obs} - c)

and distorted (true -> observed) by its inverse

.. math::

    D = C^{-1} = R^T S^{-1} R, \\qquad p_\\mathrm{obs} = c + D (p_\\mathrm{true} - c).

``det C = det D = 1``.  The observed pattern is stretched by ``sqrt(ratio)`` along the
unit vector ``(cos a, -sin a)`` of the ``(fs, ss)`` plane and compressed by
``1/sqrt(ratio)`` along ``(sin a, cos a)``.  ``ratio = 1`` is no distortion.

Apply the correction to measured peak positions (panel-relative pixel-centre
positions) before mapping them with :class:`~crystalscope.model.detector.Detector`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["EllipticalDistortion"]


@dataclass(frozen=True)
class EllipticalDistortion:
    """Area-preserving elliptical distortion around the beam centre (diffractem model).

    Attributes
    ----------
    ratio : float
        Axis ratio of the ellipse a circle becomes (> 0; 1 = no distortion).
    angle_deg : float
        Orientation angle ``a`` in degrees (see the module doc for the equations).
    """

    ratio: float = 1.0
    angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ratio) and self.ratio > 0):
            raise ValueError(f"ellipse ratio must be positive, got {self.ratio}")
        if not math.isfinite(self.angle_deg):
            raise ValueError(f"ellipse angle must be finite, got {self.angle_deg}")

    def _matrix(self, power: float) -> np.ndarray:
        a = math.radians(self.angle_deg)
        c, s = math.cos(a), math.sin(a)
        rot = np.array([[c, -s], [s, c]])
        scale = np.diag([self.ratio ** (-0.5 * power), self.ratio ** (0.5 * power)])
        return rot.T @ scale @ rot

    @property
    def correction_matrix(self) -> np.ndarray:
        """``C = R^T S R``: maps observed offsets from the centre to true offsets."""
        return self._matrix(1.0)

    @property
    def distortion_matrix(self) -> np.ndarray:
        """``D = C^-1 = R^T S^-1 R``: maps true offsets from the centre to observed ones."""
        return self._matrix(-1.0)

    def apply(
        self, fs: ArrayLike, ss: ArrayLike, centre: ArrayLike
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distort true positions: returns the observed ``(fs, ss)``.

        Parameters
        ----------
        fs, ss : array_like
            Pixel positions (any shape, broadcast together).
        centre : array_like, shape (2,) or (..., 2)
            Beam centre ``(fs, ss)`` in the same pixel coordinates; per-shot centres
            broadcast against ``fs``/``ss``.
        """
        return _transform(self.distortion_matrix, fs, ss, centre)

    def correct(
        self, fs: ArrayLike, ss: ArrayLike, centre: ArrayLike
    ) -> tuple[np.ndarray, np.ndarray]:
        """Undo the distortion: observed ``(fs, ss)`` -> true positions (inverts :meth:`apply`)."""
        return _transform(self.correction_matrix, fs, ss, centre)


def _transform(
    m: np.ndarray, fs: ArrayLike, ss: ArrayLike, centre: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(centre, dtype=float)
    if c.shape[-1:] != (2,):
        raise ValueError(f"centre must have shape (..., 2), got {c.shape}")
    dx = np.asarray(fs, dtype=float) - c[..., 0]
    dy = np.asarray(ss, dtype=float) - c[..., 1]
    return c[..., 0] + m[0, 0] * dx + m[0, 1] * dy, c[..., 1] + m[1, 0] * dx + m[1, 1] * dy

"""PNG figures of CDI results: object (amplitude and phase), support, PRTF/FRC.

3-D arrays are shown as their three central orthogonal slices.  Drawn with matplotlib's
object interface on the Agg canvas (no pyplot state, the backend of the caller is left
alone) and written atomically (:func:`crystalscope.io.atomic.save_png`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crystalscope.io.atomic import save_png

__all__ = ["plot_object", "plot_resolution"]


def _slices(a: np.ndarray) -> list[tuple[str, np.ndarray]]:
    if a.ndim == 2:
        return [("", a)]
    c = [n // 2 for n in a.shape]
    return [("z", a[c[0]]), ("y", a[:, c[1]]), ("x", a[:, :, c[2]])]


def plot_object(
    path: str | os.PathLike[str],
    obj: np.ndarray,
    support: np.ndarray | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Amplitude, phase (where the amplitude exceeds 5 % of its maximum) and support."""
    rows = _slices(np.asarray(obj))
    sups = _slices(np.asarray(support)) if support is not None else [None] * len(rows)
    ncol = 3 if support is not None else 2
    fig = Figure(figsize=(4 * ncol, 3.6 * len(rows)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), ncol, squeeze=False)
    for i, ((label, a), s) in enumerate(zip(rows, sups, strict=True)):
        amp = np.abs(a)
        phase = np.where(amp > 0.05 * amp.max(), np.angle(a), np.nan)
        axes[i, 0].imshow(amp, cmap="gray")
        axes[i, 0].set_title(f"amplitude {label}")
        im = axes[i, 1].imshow(phase, cmap="twilight", vmin=-np.pi, vmax=np.pi)
        axes[i, 1].set_title(f"phase {label} (rad)")
        fig.colorbar(im, ax=axes[i, 1])
        if s is not None:
            axes[i, 2].imshow(s[1], cmap="gray")
            axes[i, 2].set_title(f"support {label}")
    return save_png(fig, path, overwrite=overwrite)


def plot_resolution(
    path: str | os.PathLike[str],
    q: np.ndarray,
    curves: dict[str, np.ndarray],
    *,
    resolution: float | None = None,
    pixel_size_nm: float | None = None,
    overwrite: bool = False,
) -> Path:
    """PRTF / FRC curves against ``q`` (cycles per pixel, or 1/nm with a pixel size)."""
    scale = 1.0 / pixel_size_nm if pixel_size_nm else 1.0
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, c in curves.items():
        ax.plot(q * scale, c, label=name)
    ax.axhline(1 / math.e, color="gray", ls="--", label="1/e")
    if resolution is not None:
        ax.axvline(resolution * scale, color="red", ls=":", label="resolution")
    ax.set_xlabel("q (1/nm)" if pixel_size_nm else "q (cycles/pixel)")
    ax.set_ylim(0, 1.1)
    ax.legend()
    return save_png(fig, path, overwrite=overwrite)

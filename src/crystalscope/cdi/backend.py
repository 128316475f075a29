"""Array backends for phase retrieval: NumPy + scipy.fft on the CPU, CuPy on a GPU.

A :class:`Backend` bundles the array module ``xp`` (``numpy`` or ``cupy``) with forward
and inverse *orthonormal* n-dimensional FFTs (``norm="ortho"``, so that Parseval holds:
``sum |obj|^2 == sum |F|^2``).  The CPU FFTs are multi-threaded through scipy's
``workers=`` argument.  :func:`get_backend` picks CuPy when it is importable and a GPU
is visible (``"auto"``), or the backend named explicitly.  All operators of
:mod:`crystalscope.cdi.operators` only use ``backend.xp`` and these two FFTs, so the
same code runs on either device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from crystalscope.errors import ConfigError

__all__ = ["Backend", "get_backend", "to_numpy"]


@dataclass(frozen=True)
class Backend:
    """An array module with its FFTs.

    Attributes
    ----------
    name : str
        ``"numpy"`` or ``"cupy"``.
    xp : module
        The array module.
    workers : int
        Threads of the CPU FFT (ignored on the GPU).
    """

    name: str
    xp: Any
    workers: int = 1

    def fftn(self, a: Any) -> Any:
        """Orthonormal forward FFT over all axes (origin at index 0)."""
        if self.name == "cupy":
            return self.xp.fft.fftn(a, norm="ortho")
        import scipy.fft

        return scipy.fft.fftn(a, norm="ortho", workers=self.workers, overwrite_x=False)

    def ifftn(self, a: Any) -> Any:
        """Orthonormal inverse FFT over all axes."""
        if self.name == "cupy":
            return self.xp.fft.ifftn(a, norm="ortho")
        import scipy.fft

        return scipy.fft.ifftn(a, norm="ortho", workers=self.workers, overwrite_x=False)

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Move ``a`` to this backend's device (a no-op for NumPy arrays on NumPy)."""
        return self.xp.asarray(a, dtype=dtype)


def _cupy_usable() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # ImportError, CUDA driver errors
        return False


def get_backend(name: str = "auto", *, workers: int | None = None) -> Backend:
    """Return the backend called ``name``.

    Parameters
    ----------
    name : {"auto", "numpy", "cupy"}
        ``"auto"`` takes CuPy when it is installed and sees a GPU, NumPy otherwise.
    workers : int, optional
        CPU FFT threads; default: the number of CPUs of this process.

    Raises
    ------
    ConfigError
        Unknown name, or ``"cupy"`` requested where CuPy cannot run.
    """
    if name not in ("auto", "numpy", "cupy"):
        raise ConfigError(f"unknown backend {name!r}; use auto, numpy or cupy", field="backend")
    if name == "cupy" or (name == "auto" and _cupy_usable()):
        if not _cupy_usable():
            raise ConfigError("backend 'cupy' requested but no GPU/CuPy found", field="backend")
        import cupy

        return Backend("cupy", cupy, 1)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return Backend("numpy", np, max(1, int(workers)))


def to_numpy(a: Any) -> np.ndarray:
    """Return ``a`` as a NumPy array (copies from the GPU when needed)."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        return np.asarray(a.get())
    return np.asarray(a)

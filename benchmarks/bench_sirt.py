"""SIRT for CBXD crystal tomography: 64^3 volume, 36 views, 100 iterations (target <= 5 s).

Reference: the same voxel-driven projector and its transpose written with numpy
(``np.bincount`` splatting, gathers by fancy indexing), timed over 5 iterations and
scaled to 100; ours: ``crystalscope.cbxd.tomography.sirt`` (numba, parallel) for the full
100.  Both in one process, on the machine's cores.  Prints seconds and the ratio.
"""

from __future__ import annotations

import time

import numpy as np

from crystalscope.cbxd.tomography import project, sirt, view_axes

N, VIEWS, ITERATIONS, DET = 64, 36, 100, 120  # DET > 64 sqrt(3): every voxel lands


def _directions(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    z = k / n
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _weights(axes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    c = np.arange(N) - (N - 1) / 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    pts = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    out = []
    for m in axes:
        fu, fv = pts @ m[0] + (DET - 1) / 2, pts @ m[1] + (DET - 1) / 2
        iu, iv = np.floor(fu).astype(int), np.floor(fv).astype(int)
        wu, wv = fu - iu, fv - iv
        idx = np.stack([iv * DET + iu, iv * DET + iu + 1, (iv + 1) * DET + iu,
                        (iv + 1) * DET + iu + 1], axis=1)  # fmt: skip
        w = np.stack([(1 - wu) * (1 - wv), wu * (1 - wv), (1 - wu) * wv, wu * wv], axis=1)
        out.append((idx, w))
    return out


def _numpy_sirt(images: np.ndarray, axes: np.ndarray, iterations: int) -> np.ndarray:
    weights = _weights(axes)

    def fwd(x: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(i.ravel(), (w * x[:, None]).ravel(), DET * DET)
                         for i, w in weights])  # fmt: skip

    def back(b: np.ndarray) -> np.ndarray:
        return sum((b[k][i] * w).sum(axis=1) for k, (i, w) in enumerate(weights))

    flat = images.reshape(len(axes), -1)
    row, col = fwd(np.ones(N**3)), back(np.ones_like(flat))
    r, c = np.where(row > 1e-6, 1 / np.maximum(row, 1e-6), 0), 1 / np.maximum(col, 1e-6)
    x = np.zeros(N**3)
    for _ in range(iterations):
        x = np.maximum(x + c * back((flat - fwd(x)) * r), 0)
    return x.reshape(N, N, N)


def main() -> None:
    truth = np.zeros((N, N, N), np.float32)
    truth[16:48, 8:56, 16:48] = 1.0
    dirs = _directions(VIEWS)
    images = project(truth, dirs, (DET, DET))
    sirt(images, dirs, truth.shape, iterations=2)  # compile
    start = time.perf_counter()
    ours = sirt(images, dirs, truth.shape, iterations=ITERATIONS)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    _numpy_sirt(images, view_axes(dirs), 5)
    t_ref = (time.perf_counter() - start) * ITERATIONS / 5
    cc = np.corrcoef(ours.ravel(), truth.ravel())[0, 1]
    print(f"SIRT {N}^3, {VIEWS} views, {ITERATIONS} iterations (CC with the truth {cc:.3f})")
    print(f"  numpy reference (scaled from 5 iterations): {t_ref:7.2f} s")
    print(f"  crystalscope:                               {t_ours:7.2f} s   "
          f"ratio {t_ref / t_ours:.1f}x  (target <= 5 s)")  # fmt: skip


if __name__ == "__main__":
    main()

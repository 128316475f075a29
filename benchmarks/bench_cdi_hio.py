"""Time per HIO iteration against the FFT + inverse-FFT floor (issue 10).

Prints, for a 512 x 512 complex64 pattern (and a 256^3 volume unless ``--size3d 0``),
the milliseconds per HIO iteration and per ER iteration next to the time of one
forward plus one inverse FFT measured in the same process on the same backend, and
their ratio (target <= 1.5).  Uses the GPU through CuPy when available
(``--backend``).  Run: ``python benchmarks/bench_cdi_hio.py``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from crystalscope.cdi import operators as ops
from crystalscope.cdi.simulate import porous_particle, resolution_target, simulate_pattern
from crystalscope.cdi.state import CDIState


def _best_ms(fn: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def bench(shape: tuple[int, ...], backend: str, repeat: int, workers: int | None) -> None:
    """Print the timings for one array shape."""
    n = shape[0]
    if len(shape) == 2:
        obj = resolution_target(shape, n / 3.4)
    else:
        obj = porous_particle(shape, n / 3.4, pore_px=n / 20)
    sim = simulate_pattern(obj, 1e9, beamstop_radius_px=2.5)
    st = CDIState.from_pattern(sim.intensity, sim.mask, backend=backend, workers=workers)
    st = ops.InitObj * ops.AutoSupport * st
    be = st.backend
    sync = (lambda: be.xp.cuda.Stream.null.synchronize()) if be.name == "cupy" else (lambda: None)
    floor = _best_ms(lambda: be.ifftn(be.fftn(st.obj)), repeat, sync)
    hio = _best_ms(lambda: ops.HIO.apply(st), repeat, sync)
    er = _best_ms(lambda: ops.ER.apply(st), repeat, sync)
    label = "x".join(map(str, shape))
    print(
        f"{label:>12} {be.name:>6} workers={be.workers}: FFT+iFFT {floor:8.2f} ms | "
        f"HIO {hio:8.2f} ms ({hio / floor:.2f}x) | ER {er:8.2f} ms ({er / floor:.2f}x)"
    )


def main() -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512, help="2-D size (0: skip)")
    parser.add_argument("--size3d", type=int, default=256, help="3-D size (0: skip)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    if args.size:
        bench((args.size, args.size), args.backend, args.repeat, args.workers)
    if args.size3d:
        bench((args.size3d,) * 3, args.backend, max(3, args.repeat // 5), args.workers)


if __name__ == "__main__":
    main()

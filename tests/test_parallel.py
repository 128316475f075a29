import dask.array as da
import numpy as np
import pytest

from crystalscope.config import ComputeConfig
from crystalscope.parallel import compute


def _frames() -> da.Array:
    rng = np.random.default_rng(0)
    data = rng.poisson(3.0, size=(8, 32, 32)).astype(np.float32)
    return da.from_array(data, chunks=(1, 32, 32)), data


@pytest.mark.parametrize("scheduler", ["threads", "synchronous", "processes"])
def test_local_schedulers(scheduler: str) -> None:
    stack, data = _frames()
    (sums,) = compute(stack.sum(axis=(1, 2)), config=ComputeConfig(scheduler=scheduler))
    np.testing.assert_allclose(sums, data.sum(axis=(1, 2)))


@pytest.mark.slow
def test_distributed_local_cluster() -> None:
    stack, data = _frames()
    cfg = ComputeConfig(scheduler="distributed", n_workers=1)
    (maxes,) = compute(stack.max(axis=(1, 2)), config=cfg)
    np.testing.assert_allclose(maxes, data.max(axis=(1, 2)))


def test_explicit_client() -> None:
    from distributed import Client

    stack, data = _frames()
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
        (sums,) = compute(stack.sum(axis=(1, 2)), client=c)
    np.testing.assert_allclose(sums, data.sum(axis=(1, 2)))

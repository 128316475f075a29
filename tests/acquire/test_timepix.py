"""Timepix quad: 512 x 512 raw frames <-> the physical 516 x 516 grid."""

from __future__ import annotations

import numpy as np
import pytest

from crystalscope.acquire import timepix as tp
from crystalscope.errors import DataError


def _uniform_raw(level: float = 1.0) -> np.ndarray:
    """Raw frame of uniform illumination: wide pixels collect 3x, crossings 9x."""
    raw = np.full(tp.RAW_SHAPE, level)
    wide = np.zeros(512, dtype=bool)
    wide[[255, 256]] = True
    raw[wide, :] *= 3
    raw[:, wide] *= 3
    return raw


def test_uniform_illumination_stays_uniform() -> None:
    out = tp.expand_quad(_uniform_raw(2.0))
    assert out.shape == tp.EXPANDED_SHAPE
    np.testing.assert_allclose(out, 2.0)
    ints = tp.expand_quad(_uniform_raw(7.0).astype(np.int64), integer=True)
    assert ints.dtype == np.int64
    assert np.all(ints == 7)


@pytest.mark.parametrize("integer", [False, True])
def test_counts_are_conserved_and_compress_inverts(integer: bool) -> None:
    rng = np.random.default_rng(4)
    raw = rng.poisson(30.0, size=(3, *tp.RAW_SHAPE))
    out = tp.expand_quad(raw, integer=integer)
    assert out.shape == (3, *tp.EXPANDED_SHAPE)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), raw.sum(axis=(1, 2)))
    np.testing.assert_allclose(tp.compress_quad(out), raw, atol=1e-9)


def test_integer_split_is_even() -> None:
    raw = np.zeros(tp.RAW_SHAPE, dtype=np.int64)
    raw[255, 100] = 7  # a wide row: strip of 3 along ss
    raw[255, 256] = 20  # a crossing: 3 x 3 block
    out = tp.expand_quad(raw, integer=True)
    np.testing.assert_array_equal(out[255:258, 100], [3, 2, 2])
    block = out[255:258, 258:261]
    assert block.sum() == 20 and block.max() - block.min() <= 1


def test_factor_divides_wide_pixels_only() -> None:
    raw = np.full(tp.RAW_SHAPE, 6.0)
    out = tp.expand_quad(raw, factor=2.0)
    assert out[0, 0] == 6.0 and out[300, 400] == 6.0
    assert out[256, 0] == 3.0  # wide row: 6 / 2
    assert out[256, 259] == 1.5  # crossing: 6 / 2**2
    np.testing.assert_allclose(tp.compress_quad(out, factor=2.0), raw)


def test_chip_pixels_land_in_place() -> None:
    raw = np.zeros(tp.RAW_SHAPE)
    raw[10, 300] = 5.0  # chip (0, 1)
    raw[400, 20] = 9.0  # chip (1, 0)
    out = tp.expand_quad(raw)
    assert out[10, 304] == 5.0 and out[404, 20] == 9.0
    assert out.sum() == 14.0


def test_compress_is_the_simulators_fold() -> None:
    """Folding a physical 516 x 516 image as the renderer does (each wide pixel collects
    its whole area) equals compress_quad; expanding the fold averages each strip."""
    from crystalscope.model.beam import Beam
    from crystalscope.simulate._render_layout import layout
    from crystalscope.simulate.presets import detector_preset

    det = detector_preset("timepix-quad", 500.0, Beam.from_voltage_kv(200.0))
    ss_map, fs_map = layout(det).fold[True]  # type: ignore[index]
    rng = np.random.default_rng(0)
    physical = rng.uniform(0, 10, size=tp.EXPANDED_SHAPE)
    folded = np.zeros(tp.RAW_SHAPE)
    np.add.at(folded, (ss_map[:, None], fs_map[None, :]), physical)
    np.testing.assert_allclose(tp.compress_quad(physical), folded)
    back = tp.expand_quad(folded)
    keep = ~tp.cross_mask()
    np.testing.assert_allclose(back[keep], physical[keep])
    np.testing.assert_allclose(back[300, 255:258], physical[300, 255:258].mean())


def test_cross_mask_and_rectangles_agree() -> None:
    mask = tp.cross_mask()
    assert mask.sum() == 2 * 6 * 516 - 36
    from_rects = np.zeros(tp.EXPANDED_SHAPE, dtype=bool)
    for f0, f1, s0, s1 in tp.cross_rectangles():
        from_rects[s0 : s1 + 1, f0 : f1 + 1] = True
    np.testing.assert_array_equal(mask, from_rects)
    assert tp.raw_cross_mask().sum() == 2 * 2 * 512 - 4
    expanded = tp.expand_quad(tp.raw_cross_mask().astype(float))
    np.testing.assert_array_equal(expanded > 0, mask)


def test_positions_map_piecewise_linearly() -> None:
    fs, ss = tp.raw_to_expanded([0.0, 254.0, 255.0, 256.0, 257.0, 511.0], 100.0)
    np.testing.assert_allclose(fs, [0.0, 254.0, 256.0, 259.0, 261.0, 515.0])
    np.testing.assert_allclose(ss, 100.0)
    # edges of the wide pixels land on the edges of their strips
    edges, _ = tp.raw_to_expanded([254.5, 255.5, 256.5], 0.0)
    np.testing.assert_allclose(edges, [254.5, 257.5, 260.5])
    u = np.linspace(-0.5, 511.5, 2001)
    back, _ = tp.expanded_to_raw(*tp.raw_to_expanded(u, u))
    np.testing.assert_allclose(back, u, atol=1e-12)


def test_bad_input_is_a_data_error() -> None:
    with pytest.raises(DataError, match="shape"):
        tp.expand_quad(np.zeros((516, 516)))
    with pytest.raises(DataError, match="positive"):
        tp.expand_quad(np.zeros(tp.RAW_SHAPE), factor=0.0)
    with pytest.raises(DataError, match="shape"):
        tp.compress_quad(np.zeros((512, 512)))
    with pytest.raises(DataError):
        tp.cross_mask((512, 512))

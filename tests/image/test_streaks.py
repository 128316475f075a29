"""Streak detection: connected regions and their shape against exact cases and skimage."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import measure

from crystalscope.errors import DataError
from crystalscope.image.streaks import find_streaks, label_regions, region_table


def _bar(shape: tuple[int, int], centre: tuple[float, float], length: float, width: float,
         angle_deg: float, value: float = 10.0) -> np.ndarray:  # fmt: skip
    """A uniform bar, supersampled 5x5 per pixel."""
    sub = 5
    ss, fs = np.mgrid[0 : shape[0] * sub, 0 : shape[1] * sub]
    x = (fs + 0.5) / sub - 0.5 - centre[0]
    y = (ss + 0.5) / sub - 0.5 - centre[1]
    a = np.radians(angle_deg)
    along, across = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
    inside = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
    return value * inside.reshape(shape[0], sub, shape[1], sub).mean(axis=(1, 3))


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, -45.0, 71.0])
def test_bar_shape_is_recovered(angle: float) -> None:
    frame = _bar((120, 140), (70.3, 58.6), 60.0, 4.0, angle)
    table = find_streaks(frame, 0.0, min_pixels=5)
    assert len(table) == 1
    s = table.iloc[0]
    assert (s["fs"], s["ss"]) == pytest.approx((70.3, 58.6), abs=0.02)
    assert s["length"] == pytest.approx(60.0, rel=0.02)
    assert s["width"] == pytest.approx(4.0, rel=0.15)
    assert s["aspect"] == pytest.approx(15.0, rel=0.2)
    diff = (s["orientation_deg"] - angle + 90.0) % 180.0 - 90.0
    assert abs(diff) < 0.5
    assert s["intensity"] == pytest.approx(frame.sum(), rel=1e-12)


def test_eight_connectivity_threshold_mask_and_sizes() -> None:
    frame = np.zeros((10, 10))
    frame[2, 2] = frame[3, 3] = frame[4, 4] = 5.0  # diagonal: one region (corners)
    frame[8, 1:4] = 5.0
    frame[0, 9] = 1.0  # at the threshold: not above it
    labels, n = label_regions(frame, 1.0)
    assert n == 2 and labels[0, 9] == 0
    mask = np.zeros_like(frame, dtype=bool)
    mask[3, 3] = True  # breaks the diagonal
    assert label_regions(frame, 1.0, mask)[1] == 3
    kept = find_streaks(frame, 1.0, min_pixels=3)
    assert sorted(kept["n_pixels"]) == [3, 3]
    assert len(find_streaks(frame, 1.0, min_pixels=1, max_pixels=2)) == 0
    with pytest.raises(DataError, match="2-D"):
        find_streaks(np.zeros(4), 0.0)
    with pytest.raises(DataError, match="mask shape"):
        find_streaks(frame, 0.0, mask=np.zeros((3, 3), bool))
    with pytest.raises(DataError, match="min_pixels"):
        find_streaks(frame, 0.0, min_pixels=0)


def test_regions_agree_with_skimage() -> None:
    rng = np.random.default_rng(4)
    frame = np.zeros((256, 256))
    for _ in range(40):
        frame += _bar((256, 256), tuple(rng.uniform(20, 236, 2)), rng.uniform(4, 40),
                      rng.uniform(1.5, 5), rng.uniform(-90, 90), rng.uniform(2, 50))  # fmt: skip
    frame += rng.normal(0, 0.1, frame.shape)
    labels, n = label_regions(frame, 0.5)
    ours = region_table(frame, labels, n).set_index("label")
    props = measure.regionprops(labels, intensity_image=np.clip(frame, 0, None))
    assert len(props) == n > 20
    for p in props:
        row = ours.loc[p.label]
        assert row["n_pixels"] == p.area
        assert (row["ss"], row["fs"]) == pytest.approx(tuple(p.centroid_weighted), abs=1e-9)
        assert (row["ss_min"], row["fs_min"], row["ss_max"] + 1, row["fs_max"] + 1) == p.bbox
        assert row["intensity"] == pytest.approx(p.image_intensity.sum(), rel=1e-9)

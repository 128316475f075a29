"""RotationScanInfo: validation, frame bookkeeping and conversions to other programs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from credtools import make_scan

from crystalscope.errors import DataError
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.model.orientation import rotation_matrix
from crystalscope.rotation.scan import RotationScanInfo, axis_from_instamatic, contiguous_ranges


def test_frames_and_ranges(scan: RotationScanInfo) -> None:
    assert scan.rotation_axis == pytest.approx((0.6, -0.8, 0.0))
    assert len(scan.data_frames) == 27 and 10 not in scan.data_frames
    assert scan.data_ranges() == [(1, 9), (11, 19), (21, 29)]
    assert scan.data_range == (1, 29)
    assert scan.inner_excluded_frames == (10, 20)
    assert scan.excluded_ranges() == [(10, 10), (20, 20), (30, 30)]
    assert scan.excluded_ranges(inner=True) == [(10, 10), (20, 20)]
    assert scan.frame_start_deg(1) == -20.0
    assert scan.frame_start_deg(11) == pytest.approx(-15.0)
    assert scan.end_angle_deg == pytest.approx(-5.0)
    assert contiguous_ranges([7, 1, 2, 3, 8, 3]) == [(1, 3), (7, 8)]


def test_axis_is_normalised() -> None:
    scan = make_scan(rotation_axis=(0.0, 3.0, 4.0))
    assert scan.rotation_axis == pytest.approx((0.0, 0.6, 0.8))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"wavelength_a": 0.0}, "wavelength_a"),
        ({"oscillation_deg": -0.5}, "oscillation_deg"),
        ({"camera_length_mm": float("nan")}, "camera_length_mm"),
        ({"rotation_axis": (0.0, 0.0, 0.0)}, "rotation_axis"),
        ({"detector_shape": (0, 516)}, "detector_shape"),
        ({"excluded_frames": (0,)}, "excluded_frames"),
        ({"excluded_frames": tuple(range(1, 31))}, "excluded_frames"),
        ({"untrusted_rectangles": ((0, 600, 0, 10),)}, "untrusted_rectangles"),
        ({"n_frames": 2.5}, "n_frames"),
        ({"exposure_s": -1.0}, "exposure_s"),
        ({"beam_centre_px": (1.0, float("inf"))}, "beam_centre_px"),
    ],
)
def test_invalid_values_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(DataError) as info:
        make_scan(**changes)
    assert info.value.field == field


def test_xds_origin_is_one_based_pixel_centre(scan: RotationScanInfo) -> None:
    assert scan.xds_origin() == pytest.approx((242.3, 237.8))
    assert scan.beam_centre_mm() == pytest.approx((241.8 * 0.055, 237.3 * 0.055))


def test_dials_frames_are_proper_rotations_of_ours() -> None:
    """Both dxtbx frames are 180 degree turns of the lab frame: right-handed rotations
    about our axis stay right-handed rotations about the converted axis."""
    scan = make_scan(rotation_axis=(0.3, -0.5, 0.81))
    e = np.array(scan.rotation_axis)
    for converted, flip in (
        (scan.dials_smv_axis(), np.diag([1.0, -1.0, -1.0])),
        (scan.dials_nxmx_axis(), np.diag([-1.0, 1.0, -1.0])),
    ):
        assert np.linalg.det(flip) == pytest.approx(1.0)
        np.testing.assert_allclose(converted, flip @ e)
        r_ours = rotation_matrix(e, 40.0)
        r_theirs = rotation_matrix(np.array(converted), 40.0)
        np.testing.assert_allclose(flip @ r_ours @ flip.T, r_theirs, atol=1e-12)


def test_instamatic_axis_angle_round_trip() -> None:
    for angle in (-2.24, 0.0, 0.9273, 3.0):
        scan = make_scan(rotation_axis=axis_from_instamatic(angle))
        assert scan.instamatic_axis_angle_rad() == pytest.approx(angle)
    assert axis_from_instamatic(0.9272952180016122) == pytest.approx((0.6, -0.8, 0.0))
    with pytest.raises(DataError, match="perpendicular"):
        make_scan(rotation_axis=(0.0, 0.6, 0.8)).instamatic_axis_angle_rad()


def test_reciprocal_pixel_size(scan: RotationScanInfo) -> None:
    # 1/d at one pixel from the centre: 2 sin(theta) / lambda ~ (p / L) / lambda
    theta = 0.5 * math.atan(0.055 / 530.0)
    assert scan.reciprocal_pixel_size == pytest.approx(2 * math.sin(theta) / 0.025079, rel=1e-6)


def test_dictionary_round_trip() -> None:
    scan = make_scan(distortion=EllipticalDistortion(1.02, 35.0), radiation="electron")
    again = RotationScanInfo.from_dict(scan.to_dict())
    assert again == scan
    with pytest.raises(DataError, match="unknown key") as info:
        RotationScanInfo.from_dict({**scan.to_dict(), "voltage": 200}, source="scan.yaml")
    assert info.value.path == "scan.yaml"
    data = scan.to_dict()
    del data["n_frames"]
    with pytest.raises(DataError) as missing:
        RotationScanInfo.from_dict(data)
    assert missing.value.field == "n_frames"

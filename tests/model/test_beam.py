import math
import pickle

import pytest

from crystalscope.model.beam import (
    Beam,
    electron_wavelength,
    photon_energy_from_wavelength,
    photon_wavelength,
    voltage_from_electron_wavelength,
)


@pytest.mark.parametrize(("kv", "expected"), [(200, 0.025079), (300, 0.019687), (120, 0.033492)])
def test_relativistic_electron_wavelength(kv: float, expected: float) -> None:
    assert electron_wavelength(kv) == pytest.approx(expected, abs=5e-7)


def test_relativistic_correction_matters() -> None:
    # Non-relativistic wavelength at 200 kV is ~0.02741 A; the correction is ~9 %.
    nonrel = 12.2643 / math.sqrt(200e3)
    assert nonrel == pytest.approx(0.027424, abs=1e-5)
    assert electron_wavelength(200) < 0.95 * nonrel


def test_photon_wavelength_and_inverse() -> None:
    assert photon_wavelength(12398.42) == pytest.approx(1.0, abs=1e-5)
    assert photon_energy_from_wavelength(photon_wavelength(9000.0)) == pytest.approx(9000.0)


@pytest.mark.parametrize("kv", [60, 200, 300, 1000])
def test_voltage_round_trip(kv: float) -> None:
    assert voltage_from_electron_wavelength(electron_wavelength(kv)) == pytest.approx(kv)


def test_beam_constructors() -> None:
    e = Beam.from_voltage_kv(300)
    assert e.radiation == "electron"
    assert e.wavelength == pytest.approx(0.019687, abs=1e-6)
    assert e.voltage_kv == pytest.approx(300)
    assert e.k == pytest.approx(1 / e.wavelength)
    assert e.k_vector[2] == pytest.approx(e.k) and e.k_vector[0] == 0
    x = Beam.from_energy_kev(12.398419843)
    assert x.radiation == "xray"
    assert x.wavelength == pytest.approx(1.0, abs=1e-8)
    assert x.energy_ev == pytest.approx(12398.419843)
    assert Beam.from_energy_ev(9000).wavelength == pytest.approx(1.37760, abs=1e-5)
    assert "kV" in str(e) and "keV" in str(x)
    assert pickle.loads(pickle.dumps(e)) == e


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_beam_rejects_bad_values(bad: float) -> None:
    with pytest.raises(ValueError):
        Beam(bad)
    with pytest.raises(ValueError):
        electron_wavelength(bad)
    with pytest.raises(ValueError):
        photon_wavelength(bad)


def test_xray_beam_has_no_voltage() -> None:
    with pytest.raises(ValueError, match="no accelerating voltage"):
        _ = Beam.from_energy_kev(10).voltage_kv

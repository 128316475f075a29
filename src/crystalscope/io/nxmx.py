"""NeXus/NXmx files of a continuous-rotation series, as DIALS (dxtbx) reads them.

:func:`write_nxmx` writes one HDF5 file holding every frame slot of a
:class:`~crystalscope.rotation.scan.RotationScanInfo` (excluded frames as all-zero
frames, so that frame ``i`` keeps the angle ``start + (i - 1) * osc``) and the geometry
in the NeXus/McStas lab frame, which is crystalscope's.  :func:`read_nxmx` reads such a
file back into a scan description and the frames.

Layout
------
::

    /entry                     NXentry    definition = "NXmx", start_time
      data                     NXdata     signal = "data"; data (n, ny, nx) compressed
      instrument               NXinstrument
        source                 NXsource   name, probe = "electron" (or "x-ray")
        beam                   NXbeam     incident_wavelength [angstrom]
        detector               NXdetector data (link), depends_on, distance [mm],
                                          beam_center_x/y [pixel, from the corner of the
                                          first pixel], x/y_pixel_size [mm], count_time and
                                          frame_time [s], saturation_value,
                                          underload_value = 0, sensor_material = "Si",
                                          sensor_thickness [mm], pixel_mask (uint32),
                                          pixel_mask_applied = false
          transformations      NXtransformations  translation = camera length along +z
          module               NXdetector_module  data_origin, data_size (slow, fast),
                                          module_offset, fast_pixel_direction (+x),
                                          slow_pixel_direction (+y)
      sample                   NXsample   name, depends_on -> transformations/omega
        transformations        NXtransformations  omega [deg] per frame about the rotation
                                          axis (vector, right-handed), omega_end,
                                          omega_increment_set
      crystalscope             NXcollection  excluded_frames (1-based), distortion_ratio,
                                          distortion_angle [deg], radiation

``module_offset`` puts the outer corner of pixel ``(0, 0)`` at
``(-(fs_c + 0.5) p, -(ss_c + 0.5) p, 0)`` relative to the detector's translation
(``(fs_c, ss_c)`` the pixel-centre beam centre, ``p`` the pixel size): dxtbx takes the
module offset as the corner of the first pixel, so DIALS reports the beam centre at
``(fs_c + 0.5, ss_c + 0.5)`` pixels from that corner, as for every other format.  dxtbx
converts McStas to its imgCIF frame with ``diag(-1, 1, -1)``: DIALS shows the rotation
axis ``(-ex, ey, -ez)`` and the fast axis ``(-1, 0, 0)``.

``pixel_mask`` follows NXmx: 0 = good; the untrusted rectangles of the scan (e.g. the
spread Timepix cross) set bit 8 (user-defined mask), pixels flagged in ``mask`` bit 1
(dead).  NXsource/probe may be "electron": NXmx allows any probe; dxtbx only reads the
wavelength.

Compression: ``"bslz4"`` (bitshuffle + LZ4 through hdf5plugin, the EIGER/DIALS standard;
Debian's DIALS reads it with the ``bitshuffle`` package's HDF5 plugin installed),
``"gzip"`` (readable everywhere) or ``"none"``; one chunk per frame.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_path
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.rotation.scan import RotationScanInfo

__all__ = ["MASK_DEAD", "MASK_USER", "Compression", "NXmxSeries", "read_nxmx", "write_nxmx"]

Compression = Literal["bslz4", "gzip", "none"]
MASK_DEAD = np.uint32(1 << 1)
"""NXmx pixel_mask bit for dead pixels."""
MASK_USER = np.uint32(1 << 8)
"""NXmx pixel_mask bit for user-defined (untrusted) regions."""

_DET = "/entry/instrument/detector"
_OMEGA = "/entry/sample/transformations/omega"
_TRANSLATION = f"{_DET}/transformations/translation"
_MODULE = f"{_DET}/module"


@dataclass
class NXmxSeries:
    """What :func:`read_nxmx` returns."""

    scan: RotationScanInfo
    frames: np.ndarray | None
    pixel_mask: np.ndarray | None
    probe: str | None


# --------------------------------------------------------------------------- writing


def _nx(group: Any, nx_class: str) -> Any:
    group.attrs["NX_class"] = nx_class
    return group


def _text(group: Any, name: str, value: str) -> Any:
    return group.create_dataset(name, data=np.bytes_(value.encode("utf-8")))


def _number(group: Any, name: str, value: Any, units: str | None = None, **attrs: Any) -> Any:
    ds = group.create_dataset(name, data=value)
    if units is not None:
        ds.attrs["units"] = units
    for key, val in attrs.items():
        ds.attrs[key] = val
    return ds


def _compression(kind: str) -> dict[str, Any]:
    if kind == "bslz4":
        import hdf5plugin

        return dict(hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    if kind == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if kind == "none":
        return {}
    raise DataError(f"compression must be bslz4, gzip or none, got {kind!r}", field="compression")


def _frame_source(
    frames: np.ndarray | Mapping[int, ArrayLike], scan: RotationScanInfo
) -> tuple[Any, np.dtype[Any]]:
    """A function frame number -> 2-D array (zeros where missing), and the stored dtype."""
    shape = scan.detector_shape
    if isinstance(frames, Mapping):
        present = {int(k) for k in frames}  # keys only: a lazy mapping loads on access
        bad = sorted(k for k in present if not 1 <= k <= scan.n_frames)
        if bad:
            raise DataError(f"frame numbers must lie in 1..{scan.n_frames}, got {bad[:5]}",
                            field="frames")  # fmt: skip
        first = min(present, default=None)
        sample = np.asarray(frames[first]) if first is not None else np.zeros(1, np.int32)

        def get(i: int) -> np.ndarray:
            return np.asarray(frames[i]) if i in present else np.zeros(shape, sample.dtype)

    else:
        stack = np.asarray(frames)
        if stack.shape != (scan.n_frames, *shape):
            raise DataError(f"frames must have shape {(scan.n_frames, *shape)}, got "
                            f"{stack.shape}", field="frames")  # fmt: skip
        sample = stack

        def get(i: int) -> np.ndarray:
            return np.asarray(stack[i - 1])

    kind = np.asarray(sample).dtype.kind
    if kind not in "biuf":
        raise DataError(f"frames must be numeric, got {sample.dtype}", field="frames")
    return get, np.dtype(np.float32 if kind == "f" else np.int32)


def _as_stored(frame: np.ndarray, dtype: np.dtype[Any], shape: tuple[int, int], i: int) -> Any:
    if frame.shape != shape:
        raise DataError(f"frame {i} has shape {frame.shape}, expected {shape}", field="frames")
    if dtype.kind == "i" and frame.size:
        lo, hi = float(frame.min()), float(frame.max())
        if lo < np.iinfo(np.int32).min or hi > np.iinfo(np.int32).max:
            raise DataError(f"frame {i} does not fit int32 ({lo} .. {hi})", field="frames")
    return frame.astype(dtype, copy=False)


def nxmx_pixel_mask(scan: RotationScanInfo, mask: ArrayLike | None = None) -> np.ndarray:
    """NXmx ``pixel_mask`` (uint32, 0 = good) of the scan's untrusted rectangles (bit 8)
    and of ``mask`` (True = dead, bit 1)."""
    out = np.zeros(scan.detector_shape, dtype=np.uint32)
    for f0, f1, s0, s1 in scan.untrusted_rectangles:
        out[s0 : s1 + 1, f0 : f1 + 1] |= MASK_USER
    if mask is not None:
        bad = np.asarray(mask, dtype=bool)
        if bad.shape != scan.detector_shape:
            raise DataError(f"mask must have shape {scan.detector_shape}, got {bad.shape}",
                            field="mask")  # fmt: skip
        out[bad] |= MASK_DEAD
    return out


def _write_sample(entry: Any, scan: RotationScanInfo, name: str) -> None:
    sample = _nx(entry.create_group("sample"), "NXsample")
    _text(sample, "name", name)
    _text(sample, "depends_on", _OMEGA)
    trans = _nx(sample.create_group("transformations"), "NXtransformations")
    starts = scan.start_angle_deg + scan.oscillation_deg * np.arange(scan.n_frames)
    attrs = {"transformation_type": "rotation", "vector": np.asarray(scan.rotation_axis),
             "depends_on": "."}  # fmt: skip
    _number(trans, "omega", starts, "deg", **attrs)
    _number(trans, "omega_end", starts + scan.oscillation_deg, "deg")
    _number(trans, "omega_increment_set", scan.oscillation_deg, "deg")


def _write_module(det: Any, scan: RotationScanInfo) -> None:
    module = _nx(det.create_group("module"), "NXdetector_module")
    ny, nx = scan.detector_shape
    module.create_dataset("data_origin", data=np.array([0, 0], dtype=np.int64))
    module.create_dataset("data_size", data=np.array([ny, nx], dtype=np.int64))
    p = scan.pixel_size_mm
    corner = np.array([-(scan.beam_centre_px[0] + 0.5) * p, -(scan.beam_centre_px[1] + 0.5) * p,
                       0.0])  # fmt: skip
    _number(module, "module_offset", 0.0, "mm", transformation_type="translation",
            vector=np.array([1.0, 0.0, 0.0]), offset=corner, offset_units="mm",
            depends_on=_TRANSLATION)  # fmt: skip
    for name, vector in (("fast_pixel_direction", (1.0, 0.0, 0.0)),
                         ("slow_pixel_direction", (0.0, 1.0, 0.0))):  # fmt: skip
        _number(module, name, p, "mm", transformation_type="translation",
                vector=np.array(vector), offset=np.zeros(3), offset_units="mm",
                depends_on=f"{_MODULE}/module_offset")  # fmt: skip


def _write_detector(instrument: Any, scan: RotationScanInfo, pixel_mask: np.ndarray) -> Any:
    det = _nx(instrument.create_group("detector"), "NXdetector")
    _text(det, "depends_on", _TRANSLATION)
    _text(det, "description", "flat single-panel detector, counting")
    _text(det, "type", "pixel")
    _number(det, "distance", scan.camera_length_mm, "mm")
    _number(det, "beam_center_x", scan.beam_centre_px[0] + 0.5, "pixel")
    _number(det, "beam_center_y", scan.beam_centre_px[1] + 0.5, "pixel")
    _number(det, "x_pixel_size", scan.pixel_size_mm, "mm")
    _number(det, "y_pixel_size", scan.pixel_size_mm, "mm")
    if scan.exposure_s > 0:
        _number(det, "count_time", scan.exposure_s, "s")
        _number(det, "frame_time", scan.exposure_s, "s")
    _number(det, "saturation_value", np.int64(scan.saturation))
    _number(det, "underload_value", np.int64(0))
    _text(det, "sensor_material", "Si")
    _number(det, "sensor_thickness", 0.3, "mm")
    det.create_dataset("pixel_mask", data=pixel_mask, **_compression("gzip"))
    det.create_dataset("pixel_mask_applied", data=False)
    trans = _nx(det.create_group("transformations"), "NXtransformations")
    _number(trans, "translation", scan.camera_length_mm, "mm", transformation_type="translation",
            vector=np.array([0.0, 0.0, 1.0]), depends_on=".")  # fmt: skip
    _write_module(det, scan)
    return det


def _write_extras(entry: Any, scan: RotationScanInfo) -> None:
    extra = _nx(entry.create_group("crystalscope"), "NXcollection")
    extra.create_dataset("excluded_frames", data=np.asarray(scan.excluded_frames, dtype=np.int64))
    _text(extra, "radiation", scan.radiation)
    if scan.distortion is not None:
        _number(extra, "distortion_ratio", scan.distortion.ratio)
        _number(extra, "distortion_angle", scan.distortion.angle_deg, "deg")
    rects = np.asarray(scan.untrusted_rectangles, dtype=np.int64).reshape(-1, 4)
    extra.create_dataset("untrusted_rectangles", data=rects)


def write_nxmx(
    path: str | os.PathLike[str],
    frames: np.ndarray | Mapping[int, ArrayLike],
    scan: RotationScanInfo,
    *,
    mask: ArrayLike | None = None,
    compression: Compression = "bslz4",
    sample_name: str = "crystal",
    start_time: _dt.datetime | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a rotation series as one NXmx file (module docstring for the layout).

    Parameters
    ----------
    path : str or os.PathLike
        Output ``.nxs``/``.h5`` file, written atomically.
    frames : ndarray (n_frames, ny, nx) or mapping of int to 2-D array
        All frame slots, or the diffraction frames by 1-based number (missing and
        excluded slots are written as zeros).  Integer counts are stored as int32,
        floating-point values as float32.
    scan : RotationScanInfo
        The geometry and frame angles.
    mask : array_like of bool, optional
        Dead pixels (True), added to ``pixel_mask``.
    compression : {"bslz4", "gzip", "none"}
        Frame compression.
    sample_name : str
        NXsample/name.
    start_time : datetime, optional
        NXentry/start_time (now, UTC, by default).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    DataError
        If the frames do not match the scan or cannot be stored.
    """
    import h5py

    options = _compression(compression)
    get, dtype = _frame_source(frames, scan)
    pixel_mask = nxmx_pixel_mask(scan, mask)
    when = start_time or _dt.datetime.now(_dt.UTC)
    target = Path(path)
    with atomic_path(target, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["default"] = "entry"
        f.attrs["creator"] = "crystalscope"
        entry = _nx(f.create_group("entry"), "NXentry")
        entry.attrs["default"] = "data"
        _text(entry, "definition", "NXmx")
        _text(entry, "start_time", when.isoformat())
        data = _nx(entry.create_group("data"), "NXdata")
        data.attrs["signal"] = "data"
        ny, nx = scan.detector_shape
        ds = data.create_dataset("data", shape=(scan.n_frames, ny, nx), dtype=dtype,
                                 chunks=(1, ny, nx), **options)  # fmt: skip
        for i in range(1, scan.n_frames + 1):
            frame = get(i) if i not in scan.excluded_frames else np.zeros((ny, nx), dtype)
            ds[i - 1] = _as_stored(np.asarray(frame), dtype, (ny, nx), i)
        instrument = _nx(entry.create_group("instrument"), "NXinstrument")
        _text(instrument, "name", "transmission electron microscope")
        source = _nx(instrument.create_group("source"), "NXsource")
        probe = "electron" if scan.radiation == "electron" else "x-ray"
        _text(source, "name", "electron gun" if probe == "electron" else "X-ray source")
        _text(source, "probe", probe)
        beam = _nx(instrument.create_group("beam"), "NXbeam")
        _number(beam, "incident_wavelength", scan.wavelength_a, "angstrom")
        det = _write_detector(instrument, scan, pixel_mask)
        det["data"] = ds
        _write_sample(entry, scan, sample_name)
        _write_extras(entry, scan)
    return target


# --------------------------------------------------------------------------- reading


def _open(path: Path) -> Any:
    import h5py
    import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filter)

    if not path.is_file():
        raise FormatError("file not found", path=path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"cannot open as HDF5: {exc}", path=path) from None


def _get(f: Any, name: str, path: Path) -> Any:
    if name not in f:
        raise FormatError("missing in the NXmx file", path=path, field=name)
    return f[name]


def _str(value: Any) -> str:
    if not isinstance(value, (bytes, str, np.ndarray)) and hasattr(value, "shape"):
        value = value[()]  # an h5py dataset
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


_MM = {"mm": 1.0, "m": 1e3, "um": 1e-3, "cm": 10.0}


def _length_mm(ds: Any, path: Path) -> float:
    unit = _str(ds.attrs.get("units", "m"))
    if unit not in _MM:
        raise FormatError(f"unsupported length unit {unit!r}", path=path, field=ds.name)
    return float(np.asarray(ds[()]).reshape(-1)[0]) * _MM[unit]


def _vector(ds: Any, path: Path) -> np.ndarray:
    vec = np.asarray(ds.attrs.get("vector", []), dtype=float).reshape(-1)
    if vec.shape != (3,):
        raise FormatError("transformation has no 3-vector 'vector' attribute", path=path,
                          field=ds.name)  # fmt: skip
    return vec


def _geometry(f: Any, path: Path) -> dict[str, Any]:
    module = _get(f, _MODULE, path)
    fast, slow = module["fast_pixel_direction"], module["slow_pixel_direction"]
    if not (np.allclose(_vector(fast, path), [1, 0, 0]) and
            np.allclose(_vector(slow, path), [0, 1, 0])):  # fmt: skip
        raise FormatError("only detectors with the fast axis along +x and the slow axis along "
                          "+y are supported", path=path, field=fast.name)  # fmt: skip
    pixel = _length_mm(fast, path)
    offset_ds = module["module_offset"]
    units = _str(offset_ds.attrs.get("offset_units", offset_ds.attrs.get("units", "mm")))
    offset = np.asarray(offset_ds.attrs.get("offset", np.zeros(3)), dtype=float) * _MM[units]
    offset = offset + _length_mm(offset_ds, path) * _vector(offset_ds, path)
    distance = _length_mm(_get(f, _TRANSLATION, path), path)
    size = np.asarray(module["data_size"][()]).reshape(-1)
    return {
        "pixel_size_mm": pixel,
        "camera_length_mm": distance,
        "beam_centre_px": (-offset[0] / pixel - 0.5, -offset[1] / pixel - 0.5),
        "detector_shape": (int(size[0]), int(size[1])),
    }


def _scan_angles(f: Any, path: Path) -> dict[str, Any]:
    omega = _get(f, _OMEGA, path)
    angles = np.asarray(omega[()], dtype=float).reshape(-1)
    inc = f.get(_OMEGA + "_increment_set")
    if inc is not None:
        osc = float(np.asarray(inc[()]).reshape(-1)[0])
    elif angles.size > 1:
        osc = float(np.median(np.diff(angles)))
    else:
        raise FormatError("cannot tell the oscillation of a one-frame series", path=path,
                          field=_OMEGA + "_increment_set")  # fmt: skip
    return {
        "rotation_axis": tuple(_vector(omega, path)),
        "start_angle_deg": float(angles[0]),
        "oscillation_deg": osc,
        "n_frames": int(angles.size),
    }


def _extras(f: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    extra = f.get("/entry/crystalscope")
    if extra is None:
        return out
    if "excluded_frames" in extra:
        out["excluded_frames"] = tuple(int(v) for v in np.asarray(extra["excluded_frames"][()]))
    if "radiation" in extra:
        out["radiation"] = _str(extra["radiation"])
    if "distortion_ratio" in extra:
        out["distortion"] = EllipticalDistortion(float(extra["distortion_ratio"][()]),
                                                 float(extra["distortion_angle"][()]))  # fmt: skip
    if "untrusted_rectangles" in extra:
        rects = np.asarray(extra["untrusted_rectangles"][()], dtype=int).reshape(-1, 4)
        out["untrusted_rectangles"] = tuple(tuple(int(v) for v in r) for r in rects)
    return out


def read_nxmx(path: str | os.PathLike[str], *, frames: bool = True) -> NXmxSeries:
    """Read an NXmx rotation series written by :func:`write_nxmx`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    frames : bool
        Also load all frames into memory.

    Raises
    ------
    FormatError
        If the file is missing, not HDF5, not NXmx, or lacks a field (named).
    """
    p = Path(path)
    with _open(p) as f:
        if _str(_get(f, "/entry/definition", p)) != "NXmx":
            raise FormatError("not an NXmx file", path=p, field="/entry/definition")
        wavelength = _get(f, "/entry/instrument/beam/incident_wavelength", p)
        unit = _str(wavelength.attrs.get("units", "angstrom")).lower()
        factor = {"angstrom": 1.0, "a": 1.0, "nm": 10.0, "m": 1e10}.get(unit)
        if factor is None:
            raise FormatError(f"unsupported wavelength unit {unit!r}", path=p,
                              field=wavelength.name)  # fmt: skip
        det = _get(f, _DET, p)
        values: dict[str, Any] = {
            "wavelength_a": float(np.asarray(wavelength[()]).reshape(-1)[0]) * factor,
            **_geometry(f, p),
            **_scan_angles(f, p),
            **_extras(f),
        }
        if "count_time" in det:
            values["exposure_s"] = float(det["count_time"][()])
        if "saturation_value" in det:
            values["saturation"] = float(det["saturation_value"][()])
        probe = _str(f["/entry/instrument/source/probe"]) if "source/probe" in f[
            "/entry/instrument"] else None  # fmt: skip
        mask = np.asarray(det["pixel_mask"][()]) if "pixel_mask" in det else None
        stack = np.asarray(_get(f, "/entry/data/data", p)[()]) if frames else None
    try:
        scan = RotationScanInfo(**values)
    except DataError as exc:
        raise FormatError(exc.message, path=p, field=exc.field) from None
    return NXmxSeries(scan=scan, frames=stack, pixel_mask=mask, probe=probe)

"""Multi-panel detector geometry with CrystFEL semantics, and pixel <-> lab <-> q mapping.

A :class:`Detector` is a tuple of flat :class:`~crystalscope.model.panel.Panel` objects
plus the detector-wide values of a CrystFEL geometry file (camera length, wavelength,
bad regions, panel groups...).  Read and write it with
:mod:`crystalscope.io.crystfel_geom`; build a simple camera with
:meth:`Detector.single_panel`.

Coordinates
-----------
* Pixel positions ``(fs, ss)`` are **pixel-centre** positions relative to the panel's
  first pixel (its centre is ``(0, 0)``), as everywhere in crystalscope.  CrystFEL's
  corner convention (``corner_x/y`` and the ``.geom`` geometry) is handled here: the lab
  position of ``(fs, ss)`` on a panel is, in mm,

  .. math::

      \\mathbf{r} = p \\left[ \\mathbf{c} + (f_s + \\tfrac12)\\,\\mathbf{f}
                    + (s_s + \\tfrac12)\\,\\mathbf{s} \\right]
                    + (0, 0, L + \\Delta z) + (d_x, d_y, 0)

  with ``p`` the pixel size (mm), ``c = (corner_x, corner_y, 0)``, ``f``/``s`` the
  fs/ss direction vectors (``Panel.fs``/``Panel.ss``), ``L`` the camera length (mm),
  ``Delta z`` the panel's ``coffset`` (mm) and ``(d_x, d_y)`` the detector shift (mm).
* The lab frame is NeXus/McStas (and CrystFEL's): ``+z`` along the beam, ``+y`` up; the
  sample is at the origin.
* The scattering vector of a lab position is ``q = (r / |r| - z) / lambda`` in 1/A (no
  ``2 pi``), so ``|q| = 1/d = 2 sin(theta) / lambda``.
* "Raw" positions are positions in the raw data array (CrystFEL's ``min_fs``... index
  it), also pixel-centre.

Values that CrystFEL reads per file or event (``clen = /LCLS/detectorPosition``) are
:class:`~crystalscope.model.panel.MetadataRef` objects; :meth:`Detector.resolve` fills
them in.  Geometry methods raise :class:`~crystalscope.errors.DataError` naming the
field while one is still missing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import DataError
from crystalscope.model.detector_geometry import (
    Frame,
    PixelHits,
    build_frame,
    close,
    detector_problems,
    floats,
    lab_to_q,
    plane_coords,
    raw_box,
    raw_frame_shape,
    ray_cast,
    resolve_detector,
    shift3,
)
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.model.panel import (
    BadRegion,
    MetadataRef,
    Panel,
    PanelGroup,
    WavelengthSource,
)

__all__ = ["Detector", "PixelHits"]

PanelArg = int | str | ArrayLike


@dataclass(frozen=True)
class Detector:
    """A detector made of flat panels, with CrystFEL's geometry semantics.

    Attributes
    ----------
    panels : tuple of Panel
        The panels, in file order.
    clen : float, MetadataRef or None
        Camera length (sample to detector along z) in mm, or where to read it.
    wavelength_source : WavelengthSource or None
        Photon energy, wavelength or electron voltage (value or metadata location).
    bandwidth : float, MetadataRef or None
        Relative bandwidth (standard deviation of a Gaussian spectrum, fraction of lambda).
    detector_shift_x, detector_shift_y : float, MetadataRef or None
        Lateral translation of the whole detector in mm (CrystFEL ``detector_shift_x/y``).
    bad_regions : tuple of BadRegion
        Regions to ignore.
    groups : tuple of PanelGroup
        CrystFEL 0.10 panel hierarchy (``group_<name> = members``).
    rigid_groups, rigid_group_collections : tuple of PanelGroup
        CrystFEL <= 0.9 ``rigid_group_<name>`` and ``rigid_group_collection_<name>``.
    peak_list, peak_list_type : str or None
        Location and layout (``auto``, ``cxi``, ``list3``) of peak lists in data files.
    extra : tuple of (key, value)
        Top-level keys the reader did not know, kept for writing.
    distortion : EllipticalDistortion or None
        Elliptical distortion of the pattern about the direct beam (electron lenses),
        acting in panel 0's ``(fs, ss)`` plane.  :meth:`pixel_to_lab` (and everything
        built on it: q, 2-theta, resolution) undoes it, :meth:`lab_to_pixel` applies it.
        Fitted from the data by :func:`crystalscope.serial.ellipticity.fit_ellipticity`;
        CrystFEL geometry files cannot hold it (it is kept in our Dataset metadata).
    """

    panels: tuple[Panel, ...]
    clen: float | MetadataRef | None = None
    wavelength_source: WavelengthSource | None = None
    bandwidth: float | MetadataRef | None = None
    detector_shift_x: float | MetadataRef | None = None
    detector_shift_y: float | MetadataRef | None = None
    bad_regions: tuple[BadRegion, ...] = ()
    groups: tuple[PanelGroup, ...] = ()
    rigid_groups: tuple[PanelGroup, ...] = ()
    rigid_group_collections: tuple[PanelGroup, ...] = ()
    peak_list: str | None = None
    peak_list_type: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    distortion: EllipticalDistortion | None = None

    def __post_init__(self) -> None:
        for problem in detector_problems(self):
            raise ValueError(problem)

    # ------------------------------------------------------------------ construction

    @classmethod
    def single_panel(
        cls,
        n_fs: int,
        n_ss: int,
        pixel_size_mm: float,
        distance_mm: float,
        beam_centre_px: tuple[float, float],
        *,
        wavelength: float | None = None,
        photon_energy_ev: float | None = None,
        electron_voltage_kv: float | None = None,
        adu_per_photon: float = 1.0,
        name: str = "p0",
        data: str = "/data/data",
    ) -> Detector:
        """A flat camera perpendicular to the beam, fs along +x and ss along +y.

        Parameters
        ----------
        n_fs, n_ss : int
            Number of pixels along the fast-scan (columns) and slow-scan (rows) axes.
        pixel_size_mm : float
            Pixel size in mm.
        distance_mm : float
            Sample-to-detector distance along the beam, mm.
        beam_centre_px : (fs, ss)
            Pixel-centre position where the direct beam hits the detector.
        wavelength, photon_energy_ev, electron_voltage_kv : float, optional
            At most one: the wavelength (A), photon energy (eV) or voltage (kV).
        adu_per_photon : float
            Detector gain.
        name, data : str
            Panel name and data location used when written as a ``.geom``.
        """
        bc_fs, bc_ss = (float(v) for v in beam_centre_px)
        panel = Panel(
            name=name,
            min_fs=0,
            max_fs=int(n_fs) - 1,
            min_ss=0,
            max_ss=int(n_ss) - 1,
            corner_x=-(bc_fs + 0.5),
            corner_y=-(bc_ss + 0.5),
            fs=(1.0, 0.0, 0.0),
            ss=(0.0, 1.0, 0.0),
            pixel_size_mm=float(pixel_size_mm),
            adu_per_photon=float(adu_per_photon),
            data=data,
        )
        given = [
            (k, v)
            for k, v in (
                ("wavelength", wavelength),
                ("photon_energy", photon_energy_ev),
                ("electron_voltage", electron_voltage_kv),
            )
            if v is not None
        ]
        if len(given) > 1:
            raise ValueError(
                "give at most one of wavelength, photon_energy_ev, electron_voltage_kv"
            )
        source = WavelengthSource(given[0][0], float(given[0][1])) if given else None  # type: ignore[arg-type]
        return cls((panel,), clen=float(distance_mm), wavelength_source=source)

    # ------------------------------------------------------------------ panels

    @property
    def panel_names(self) -> tuple[str, ...]:
        """Names of the panels, in order."""
        return tuple(p.name for p in self.panels)

    def panel_index(self, name: str) -> int:
        """Index of the panel called ``name``.

        Raises
        ------
        DataError
            If there is no such panel.
        """
        try:
            return self._name_to_index[name]
        except KeyError:
            raise DataError(f"no panel named {name!r}", field="panel") from None

    def panel(self, key: int | str) -> Panel:
        """The panel with index or name ``key``."""
        return self.panels[self._one_index(key)]

    def _one_index(self, key: int | str) -> int:
        if isinstance(key, str):
            return self.panel_index(key)
        if not 0 <= int(key) < len(self.panels):
            raise DataError(f"panel index out of range 0..{len(self.panels) - 1}", field="panel")
        return int(key)

    @cached_property
    def _name_to_index(self) -> dict[str, int]:
        return {p.name: i for i, p in enumerate(self.panels)}

    @property
    def n_pixels(self) -> int:
        """Total number of pixels of all panels."""
        return sum(p.n_fs * p.n_ss for p in self.panels)

    def group_panels(self, name: str) -> tuple[str, ...]:
        """Names of the panels in group, rigid group or collection ``name``.

        A panel name returns itself; ``"all"`` returns every panel unless the file
        defines a group of that name.
        """
        table = {g.name: g.members for g in self.groups}
        table.update({g.name: g.members for g in self.rigid_groups})
        table.update({g.name: g.members for g in self.rigid_group_collections})
        if name in self._name_to_index:
            return (name,)
        if name not in table:
            if name == "all":
                return self.panel_names
            raise DataError(f"no panel or group named {name!r}", field="group")
        out: list[str] = []
        for member in table[name]:
            out.extend(m for m in self.group_panels(member) if m not in out)
        return tuple(out)

    # ------------------------------------------------------------------ metadata

    def metadata_refs(self) -> dict[str, MetadataRef]:
        """Values still to be read per file/event, keyed by geometry field."""
        refs: dict[str, MetadataRef] = {}
        for key, value in self._scalar_fields():
            if isinstance(value, MetadataRef):
                refs[key] = value
        for p in self.panels:
            if isinstance(p.clen, MetadataRef):
                refs[f"{p.name}/clen"] = p.clen
        return refs

    def _scalar_fields(self) -> Iterator[tuple[str, Any]]:
        src = self.wavelength_source
        yield ("clen", self.clen)
        yield (src.kind if src else "wavelength", src.value if src else None)
        yield ("bandwidth", self.bandwidth)
        yield ("detector_shift_x", self.detector_shift_x)
        yield ("detector_shift_y", self.detector_shift_y)

    @property
    def is_resolved(self) -> bool:
        """True when no value is waiting to be read from the data files."""
        return not self.metadata_refs()

    def resolve(self, values: Mapping[str, Any]) -> Detector:
        """A copy with every metadata location replaced by its value.

        Parameters
        ----------
        values : mapping
            Metadata values keyed by location (``{"/LCLS/detectorPosition": 123.0}``),
            in the units the geometry gives for them (CrystFEL's defaults: mm for a
            camera length read from a file, eV for photon energies, m for shifts).

        Raises
        ------
        DataError
            If a location the geometry needs is not in ``values`` or is not a number;
            the error names the geometry field.
        """
        return resolve_detector(self, values)

    @property
    def wavelength(self) -> float:
        """Wavelength in Angstrom from the geometry (photon energy, wavelength or voltage).

        Raises
        ------
        DataError
            If the geometry gives no wavelength or it must still be resolved.
        """
        src = self.wavelength_source
        if src is None:
            raise DataError(
                "the geometry gives no wavelength; pass wavelength=...", field="wavelength"
            )
        if isinstance(src.value, MetadataRef):
            raise DataError(
                f"{src.kind} is read per file from {src.value.path}; call resolve() first",
                field=src.kind,
            )
        return src.wavelength()

    def _wavelength(self, wavelength: float | None) -> float:
        if wavelength is None:
            return self.wavelength
        if not (math.isfinite(wavelength) and wavelength > 0):
            raise DataError(f"wavelength must be positive, got {wavelength}", field="wavelength")
        return float(wavelength)

    # ------------------------------------------------------------------ lab geometry

    @cached_property
    def _frame(self) -> Frame:
        return build_frame(self)

    def _indices(self, panel: PanelArg) -> np.ndarray:
        arr = np.asarray(panel)
        if arr.dtype.kind in "USO":
            return np.vectorize(self.panel_index, otypes=[np.intp])(arr)
        if arr.dtype.kind not in "iu":
            raise DataError(
                f"panel indices must be integers or names, got {arr.dtype}", field="panel"
            )
        if arr.size and (arr.min() < 0 or arr.max() >= len(self.panels)):
            raise DataError(f"panel index out of range 0..{len(self.panels) - 1}", field="panel")
        return arr.astype(np.intp)

    def pixel_to_lab(
        self,
        panel: PanelArg,
        fs: ArrayLike,
        ss: ArrayLike,
        *,
        shift_mm: ArrayLike | None = None,
    ) -> np.ndarray:
        """Lab positions in mm of pixel-centre positions on panels.

        Parameters
        ----------
        panel : int, str or array_like
            Panel index or name, or an array of them (broadcast with ``fs``, ``ss``).
        fs, ss : array_like
            Pixel-centre positions relative to the panel's first pixel (sub-pixel allowed).
        shift_mm : array_like, shape (..., 2), optional
            Per-shot lateral detector translation ``(dx, dy)`` in mm, added to x and y.

        Returns
        -------
        numpy.ndarray, shape (..., 3)
            Positions ``(x, y, z)`` in mm.
        """
        frame = self._frame
        idx = self._indices(panel)
        u, v = np.broadcast_arrays(floats(fs), floats(ss))
        r = (
            frame.origin[idx]
            + (u + 0.5)[..., None] * frame.fs_vec[idx]
            + (v + 0.5)[..., None] * frame.ss_vec[idx]
        )
        if shift_mm is not None:
            r = r + shift3(shift_mm)
        if self.distortion is not None:
            r = self._distort_xy(r, self.distortion.correction_matrix)
        return r

    def _distort_xy(self, r: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Apply a 2x2 distortion ``matrix`` (panel-0 ``(fs, ss)`` frame) to lab x, y."""
        p = self.panels[0]
        basis = np.array([p.fs[:2], p.ss[:2]], dtype=float).T
        m = basis @ matrix @ np.linalg.inv(basis)
        out = np.array(r, dtype=float, copy=True)
        out[..., 0] = m[0, 0] * r[..., 0] + m[0, 1] * r[..., 1]
        out[..., 1] = m[1, 0] * r[..., 0] + m[1, 1] * r[..., 1]
        return out

    def lab_to_pixel(self, xyz: ArrayLike, *, shift_mm: ArrayLike | None = None) -> PixelHits:
        """Panel and pixel-centre position where the ray from the sample through ``xyz`` lands.

        Parameters
        ----------
        xyz : array_like, shape (..., 3)
            Lab positions (mm) or any vectors along the rays.
        shift_mm : array_like, shape (..., 2), optional
            Per-shot lateral detector translation, as in :meth:`pixel_to_lab`.

        Returns
        -------
        PixelHits
            Arrays of shape ``(...)``: panel index (-1 where no panel is hit, then fs and
            ss are NaN) and pixel-centre ``fs``, ``ss`` on that panel.  Where panels
            overlap, the one nearest to the sample wins.
        """
        d = floats(xyz)
        if d.shape[-1:] != (3,):
            raise DataError(f"lab positions need shape (..., 3), got {d.shape}", field="xyz")
        if self.distortion is not None:
            d = self._distort_xy(d, self.distortion.distortion_matrix)
        shift = None
        if shift_mm is not None:
            d, shift = np.broadcast_arrays(d, shift3(shift_mm))
        return ray_cast(self._frame, d, shift)

    def pixel_to_q(
        self,
        panel: PanelArg,
        fs: ArrayLike,
        ss: ArrayLike,
        *,
        wavelength: float | None = None,
        shift_mm: ArrayLike | None = None,
    ) -> np.ndarray:
        """Scattering vectors ``q = (r/|r| - z) / lambda`` (1/A) of pixel positions.

        ``wavelength`` (A) defaults to the geometry's; other arguments as in
        :meth:`pixel_to_lab`.  Returns an array of shape ``(..., 3)``.
        """
        lam = self._wavelength(wavelength)
        return lab_to_q(self.pixel_to_lab(panel, fs, ss, shift_mm=shift_mm), lam)

    def q_to_pixel(
        self,
        q: ArrayLike,
        *,
        wavelength: float | None = None,
        shift_mm: ArrayLike | None = None,
    ) -> PixelHits:
        """Where scattering vectors ``q`` (1/A, shape (..., 3)) hit the detector.

        The diffracted ray is along ``lambda q + z``; for ``q`` on the Ewald sphere this
        inverts :meth:`pixel_to_q` exactly, otherwise the ray direction is still used.
        """
        lam = self._wavelength(wavelength)
        q = floats(q)
        if q.shape[-1:] != (3,):
            raise DataError(f"q vectors need shape (..., 3), got {q.shape}", field="q")
        return self.lab_to_pixel(lam * q + np.array([0.0, 0.0, 1.0]), shift_mm=shift_mm)

    def two_theta_deg(
        self, panel: PanelArg, fs: ArrayLike, ss: ArrayLike, *, shift_mm: ArrayLike | None = None
    ) -> np.ndarray:
        """Scattering angle 2-theta in degrees of pixel positions."""
        r = self.pixel_to_lab(panel, fs, ss, shift_mm=shift_mm)
        return np.degrees(np.arctan2(np.hypot(r[..., 0], r[..., 1]), r[..., 2]))

    def resolution(
        self,
        panel: PanelArg,
        fs: ArrayLike,
        ss: ArrayLike,
        *,
        wavelength: float | None = None,
        shift_mm: ArrayLike | None = None,
    ) -> np.ndarray:
        """Resolution ``d = 1/|q|`` in Angstrom of pixel positions (``inf`` on the beam)."""
        q = self.pixel_to_q(panel, fs, ss, wavelength=wavelength, shift_mm=shift_mm)
        with np.errstate(divide="ignore"):
            return 1.0 / np.linalg.norm(q, axis=-1)

    def beam_centre(self, panel: int | str = 0) -> tuple[float, float]:
        """Pixel-centre ``(fs, ss)`` where the beam axis crosses the plane of ``panel``.

        The point may lie outside the panel (e.g. in the central hole of a CSPAD).
        """
        f = self._frame
        i = self._one_index(panel)
        o, a, b = f.origin[i], f.fs_vec[i], f.ss_vec[i]
        n = np.cross(a, b)
        if abs(n[2]) < 1e-12 * np.linalg.norm(n):
            raise DataError(f"panel {self.panels[i].name} is parallel to the beam", field="panel")
        t = (o @ n) / n[2]
        u, v = plane_coords(a, b, np.array([0.0, 0.0, t]) - o)
        return (float(u) - 0.5, float(v) - 0.5)

    # ------------------------------------------------------------------ raw data layout

    @cached_property
    def raw_shape(self) -> tuple[int, ...]:
        """Shape of one event's raw data array that holds all panels.

        Placeholder axes (``%``) are left out; fixed-index axes (``dimN = 3``) count.
        Usually ``(n_ss, n_fs)``.

        Raises
        ------
        DataError
            If panels live in different data blocks or have different layouts.
        """
        return raw_frame_shape(self.panels)

    def raw_slices(self, panel: int | str) -> tuple[int | slice, ...]:
        """Index of ``panel``'s pixels in a raw frame: ``frame[det.raw_slices(p)]``."""
        p = self.panel(panel)
        return raw_box(p, p.min_fs, p.max_fs, p.min_ss, p.max_ss)

    def panel_to_raw(
        self, panel: PanelArg, fs: ArrayLike, ss: ArrayLike
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw-array positions (pixel-centre) of panel positions."""
        idx = self._indices(panel)
        min_fs = np.array([p.min_fs for p in self.panels])[idx]
        min_ss = np.array([p.min_ss for p in self.panels])[idx]
        return floats(fs) + min_fs, floats(ss) + min_ss

    def raw_to_panel(
        self, fs_raw: ArrayLike, ss_raw: ArrayLike, panel: PanelArg | None = None
    ) -> PixelHits:
        """Panel and panel-relative positions of raw-array positions (pixel-centre).

        With ``panel`` given (as CrystFEL 0.10 streams do) the positions are only
        made relative to it; otherwise the panel whose raw rectangle contains the
        position is looked up (-1 and NaN where none does; stacked layouts with fixed
        indices need ``panel``).
        """
        fs_raw, ss_raw = np.broadcast_arrays(floats(fs_raw), floats(ss_raw))
        if panel is not None:
            idx = np.broadcast_to(self._indices(panel), fs_raw.shape)
            fs0, ss0 = self.panel_to_raw(idx, 0.0, 0.0)
            return PixelHits(idx, fs_raw - fs0, ss_raw - ss0)
        idx = np.full(fs_raw.shape, -1, dtype=np.intp)
        for i, p in reversed(list(enumerate(self.panels))):
            inside = (fs_raw >= p.min_fs - 0.5) & (fs_raw < p.max_fs + 0.5)
            inside &= (ss_raw >= p.min_ss - 0.5) & (ss_raw < p.max_ss + 0.5)
            idx[inside] = i
        hit = idx >= 0
        fs = np.full(fs_raw.shape, np.nan)
        ss = np.full(fs_raw.shape, np.nan)
        if hit.any():
            f, s = self.panel_to_raw(idx[hit], 0.0, 0.0)
            fs[hit] = fs_raw[hit] - f
            ss[hit] = ss_raw[hit] - s
        return PixelHits(idx, fs, ss)

    def frame_shape(self, shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """``shape`` checked to hold the raw frame (``raw_shape`` when None).

        Raises
        ------
        DataError
            If ``shape`` has the wrong number of axes or is too small for the panels.
        """
        raw = self.raw_shape
        out = raw if shape is None else tuple(int(n) for n in shape)
        if len(out) != len(raw) or any(n < r for n, r in zip(out, raw, strict=True)):
            raise DataError(f"frame shape {out} cannot hold the raw frame {raw}", field="shape")
        return out

    def _raw_map(
        self, per_panel: Any, n_out: int, fill: float, shape: tuple[int, ...] | None
    ) -> np.ndarray:
        """Raw-frame array of ``per_panel(i, fs_grid, ss_grid)`` values (``n_out`` per pixel)."""
        out = np.full((*self.frame_shape(shape), n_out), fill)
        for i, p in enumerate(self.panels):
            ss, fs = np.mgrid[0 : p.n_ss, 0 : p.n_fs].astype(float)
            out[self.raw_slices(i)] = np.reshape(per_panel(i, fs, ss), (p.n_ss, p.n_fs, n_out))
        return out

    def panel_map(self, *, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Raw-frame array of panel indices (-1 where no panel covers the pixel).

        ``shape`` (default :attr:`raw_shape`) may be larger than the raw frame; so in
        all ``*_map`` methods.
        """
        values = self._raw_map(lambda i, fs, ss: np.full(fs.shape, i), 1, -1, shape)
        return values[..., 0].astype(np.intp)

    def lab_map(
        self, *, shape: tuple[int, ...] | None = None, shift_mm: ArrayLike | None = None
    ) -> np.ndarray:
        """Raw-frame array ``shape + (3,)`` of pixel-centre lab positions in mm (NaN in gaps).

        ``shift_mm`` is one lateral detector shift ``(dx, dy)`` in mm.
        """
        return self._raw_map(
            lambda i, fs, ss: self.pixel_to_lab(i, fs, ss, shift_mm=shift_mm), 3, np.nan, shape
        )

    def q_map(
        self,
        *,
        wavelength: float | None = None,
        shape: tuple[int, ...] | None = None,
        shift_mm: ArrayLike | None = None,
    ) -> np.ndarray:
        """Raw-frame array ``shape + (3,)`` of q vectors in 1/A (NaN in gaps)."""
        lam = self._wavelength(wavelength)
        return lab_to_q(self.lab_map(shape=shape, shift_mm=shift_mm), lam)

    def two_theta_map(
        self, *, shape: tuple[int, ...] | None = None, shift_mm: ArrayLike | None = None
    ) -> np.ndarray:
        """Raw-frame array of 2-theta in degrees (NaN in gaps)."""
        r = self.lab_map(shape=shape, shift_mm=shift_mm)
        return np.degrees(np.arctan2(np.hypot(r[..., 0], r[..., 1]), r[..., 2]))

    def resolution_map(
        self,
        *,
        wavelength: float | None = None,
        shape: tuple[int, ...] | None = None,
        shift_mm: ArrayLike | None = None,
    ) -> np.ndarray:
        """Raw-frame array of resolution ``d`` in Angstrom (NaN in gaps, inf on the beam)."""
        q = self.q_map(wavelength=wavelength, shape=shape, shift_mm=shift_mm)
        with np.errstate(divide="ignore"):
            return 1.0 / np.linalg.norm(q, axis=-1)

    def bad_pixel_mask(
        self,
        shape: tuple[int, ...] | None = None,
        *,
        data: ArrayLike | None = None,
        masks: Mapping[int, ArrayLike] | None = None,
    ) -> np.ndarray:
        """Boolean raw-frame array, True for pixels to ignore.

        See :func:`crystalscope.model.detector_mask.bad_pixel_mask` for the rules.
        """
        from crystalscope.model.detector_mask import bad_pixel_mask

        return bad_pixel_mask(self, shape, data=data, masks=masks)

    # ------------------------------------------------------------------ transformations

    def shifted(self, dx: float, dy: float, *, unit: Literal["mm", "px"] = "mm") -> Detector:
        """A copy translated laterally by ``(dx, dy)`` in the lab frame.

        This moves every panel (and hence moves the beam centre on the panels by
        ``(-dx, -dy)``).  With ``unit="px"`` the shift is in pixels of each panel, as
        CrystFEL's ``corner_x``/``corner_y``.
        """
        if unit not in ("mm", "px"):
            raise ValueError(f"unit must be 'mm' or 'px', got {unit!r}")
        panels = []
        for p in self.panels:
            scale = 1.0 if unit == "px" else 1.0 / p.pixel_size_mm
            panels.append(
                dataclasses.replace(
                    p, corner_x=p.corner_x + dx * scale, corner_y=p.corner_y + dy * scale
                )
            )
        return dataclasses.replace(self, panels=tuple(panels))

    def with_beam_centre(self, fs: float, ss: float, panel: int | str = 0) -> Detector:
        """A copy moved laterally so that the beam hits pixel-centre ``(fs, ss)`` of ``panel``."""
        r = self.pixel_to_lab(panel, fs, ss)
        return self.shifted(-float(r[0]), -float(r[1]), unit="mm")

    def isclose(self, other: Detector, *, rel_tol: float = 1e-12, abs_tol: float = 1e-12) -> bool:
        """True if ``other`` equals this detector up to float rounding (``math.isclose``)."""
        return close(self, other, rel_tol, abs_tol)

    def __str__(self) -> str:
        try:
            raw = "x".join(str(n) for n in self.raw_shape)
        except DataError:
            raw = "several data blocks"
        return (
            f"Detector: {len(self.panels)} panel(s), {self.n_pixels} pixels, raw {raw}, "
            f"clen {self.clen} mm, {self.wavelength_source}"
        )

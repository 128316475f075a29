"""``crystalscope info FILE``: a summary of any supported file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from crystalscope.io.detect import FORMATS, detect_format

__all__ = ["info", "print_summary", "summarize"]

Summary = dict[str, Any]


def _cell_text(params: Any) -> str:
    a, b, c, al, be, ga = (float(x) for x in params)
    return f"{a:.3f} {b:.3f} {c:.3f} A, {al:.2f} {be:.2f} {ga:.2f} deg"


def _dataset(path: Path) -> Summary:
    from crystalscope.dataset import Dataset

    ds = Dataset.open(path)
    try:
        out: Summary = {"frames": ds.n_frames}
        for name, stack in ds.stacks.items():
            out[f"stack {name}"] = f"{tuple(stack.shape)} {stack.dtype}"
        out["per-frame columns"] = ", ".join(map(str, ds.shots.columns))
        out["crystals"] = len(ds.crystals)
        if "nPeaks" in ds.stacks:
            n = np.asarray(ds.stacks["nPeaks"].compute())
            out["peaks"] = f"{int(n.sum())} in all, {np.median(n):.0f} per frame (median)"
        if ds.meta:
            out["metadata"] = ", ".join(sorted(ds.meta))
        return out
    finally:
        ds.close()


def _hdf5(path: Path) -> Summary:
    from crystalscope.io.nexus import find_frames_dataset, read_nexus_metadata

    out: Summary = {}
    candidates = find_frames_dataset(path)
    out["frame datasets"] = ", ".join(candidates) if candidates else "none found"
    if candidates:
        import h5py

        with h5py.File(path, "r") as f:
            d = f[candidates[0]]
            out["frames shape"] = f"{d.shape} {d.dtype}"
        for key, value in read_nexus_metadata(path, candidates[0]).items():
            if np.ndim(value) == 0:
                out[key] = value
    return out


def _clen_text(clen: Any) -> str:
    if clen is None:
        return "per panel"
    if isinstance(clen, int | float):
        return f"{clen:g} mm"
    return f"from data files: {clen}"


def _geom(path: Path) -> Summary:
    from crystalscope.io.crystfel_geom import read_geom

    det = read_geom(path)
    pixel_mm = sorted({round(p.pixel_size_mm, 6) for p in det.panels})
    n_pixels = sum(p.n_fs * p.n_ss for p in det.panels)
    return {
        "panels": len(det.panels),
        "pixels": n_pixels,
        "raw data shape": det.raw_shape,
        "pixel size": ", ".join(f"{p * 1e3:.4g} um" for p in pixel_mm),
        "camera length": _clen_text(det.clen),
        "bad regions": len(det.bad_regions),
        "rigid groups": len(det.rigid_groups),
        "needs values from data files": ", ".join(map(str, det.metadata_refs())) or "no",
    }


def _stream(path: Path) -> Summary:
    from crystalscope.io.crystfel_stream import read_stream

    s = read_stream(path)
    out: Summary = {
        "written by": s.header.generator,
        "indexing methods": ", ".join(s.header.indexing_methods) or "-",
        "chunks": len(s.chunks),
        "hits": int(s.chunks["hit"].fillna(0).astype(bool).sum()) if "hit" in s.chunks else "?",
        "crystals": len(s.crystals),
        "peaks": len(s.peaks),
        "reflections": len(s.reflections),
        "geometry": f"{len(s.detector.panels)} panels" if s.geometry_text else "none embedded",
    }
    if len(s.crystals):
        med = s.crystals[["a", "b", "c", "alpha", "beta", "gamma"]].median()
        out["median cell"] = _cell_text(med.to_numpy())
    return out


def _cell(path: Path) -> Summary:
    from crystalscope.io.crystfel_cell import read_cell

    c = read_cell(path)
    out: Summary = {
        "lattice": f"{c.lattice_type} {c.centering}",
        "unique axis": c.unique_axis,
    }
    out["cell"] = _cell_text(c.parameters) if c.parameters is not None else "not given"
    return out


def _reflections_summary(table: Any) -> Summary:
    out: Summary = {"reflections": len(table)}
    if len(table):
        sig = table["sigma"].to_numpy()
        good = sig > 0
        if good.any():
            out["mean I/sigma"] = f"{np.mean(table['I'].to_numpy()[good] / sig[good]):.2f}"
    out["columns"] = ", ".join(map(str, table.columns))
    return out


def _reflection_data(data: Any) -> Summary:
    out: Summary = {"merged": "yes" if data.merged else "no (individual observations)"}
    if data.space_group is not None:
        out["space group"] = f"{data.space_group.hm} (No. {data.space_group.number})"
    if data.cell is not None:
        out["cell"] = _cell_text(data.cell.parameters)
        if len(data.table):
            hkl = data.table[["h", "k", "l"]].to_numpy()
            d = np.asarray(data.cell.calculate_d_array(hkl))
            d = d[np.isfinite(d)]
            if d.size:
                out["resolution"] = f"{d.max():.2f} - {d.min():.2f} A"
    if data.wavelength:
        out["wavelength"] = f"{data.wavelength:.5f} A"
    out.update(_reflections_summary(data.table))
    return out


def _mtz(path: Path) -> Summary:
    from crystalscope.io.mtz import read_mtz

    return _reflection_data(read_mtz(path))


def _shelx(path: Path) -> Summary:
    from crystalscope.io.shelx import read_shelx_hkl

    return _reflection_data(read_shelx_hkl(path))


def _xds(path: Path) -> Summary:
    from crystalscope.io.xds import read_xds_integrate

    return _reflection_data(read_xds_integrate(path))


def _crystfel_hkl(path: Path) -> Summary:
    from crystalscope.io.crystfel_hkl import read_hkl

    table = read_hkl(path)
    return {"symmetry": table.attrs.get("symmetry", "?"), **_reflections_summary(table)}


def _lst(path: Path) -> Summary:
    from crystalscope.io.lst import read_lst

    table = read_lst(path)
    return {
        "entries": len(table),
        "files": table["file"].nunique(),
        "with events": int(table["event"].notna().sum()),
    }


def _image(path: Path) -> Summary:
    from crystalscope.io.images import read_image

    img = read_image(path)
    data = img.data
    out: Summary = {
        "frames": img.n_frames,
        "frame shape": tuple(data.shape[-2:]),
        "dtype": str(data.dtype),
        "min / mean / max": f"{data.min():g} / {data.mean():.4g} / {data.max():g}",
    }
    for key, value in img.metadata.items():
        if np.ndim(value) == 0 and not isinstance(value, dict):
            out[key] = value
    return out


def _structure(path: Path) -> Summary:
    import gemmi

    from crystalscope.errors import FormatError

    try:
        if path.suffix.lower() == ".cif" and "_atom_site_fract_x" in path.read_text(
            errors="replace"
        ):
            small = gemmi.read_small_structure(str(path))
            return {
                "kind": "small molecule",
                "name": small.name,
                "space group": small.spacegroup_hm,
                "cell": _cell_text(small.cell.parameters),
                "atoms in asymmetric unit": len(small.sites),
            }
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError) as exc:
        raise FormatError(f"cannot read structure ({exc})", path=path) from None
    return {
        "kind": "macromolecule",
        "name": st.name,
        "space group": st.spacegroup_hm,
        "cell": _cell_text(st.cell.parameters),
        "models": len(st),
        "atoms": st[0].count_atom_sites() if len(st) else 0,
        "resolution": f"{st.resolution:.2f} A" if st.resolution else "-",
    }


def _config(path: Path) -> Summary:
    from crystalscope.config import (
        ConfigError,
        RunConfig,
        StrictModel,
        load_yaml_mapping,
        parse_config,
    )
    from crystalscope.simulate.config import RotationConfig, SerialConfig

    data = load_yaml_mapping(path)
    kinds: dict[str, type[StrictModel]] = {
        "run": RunConfig,
        "serial simulation": SerialConfig,
        "rotation simulation": RotationConfig,
    }
    first_error: ConfigError | None = None
    for kind, model in kinds.items():
        try:
            cfg: Any = parse_config(data, model, source=path)
        except ConfigError as err:
            first_error = first_error or err
            continue
        beam = cfg.beam.to_beam()
        out: Summary = {"valid": f"yes ({kind} configuration)"}
        out["beam"] = str(beam) if beam else "not given"
        for key in ("n_crystals", "n_frames", "seed", "input"):
            if key in type(cfg).model_fields:
                value = getattr(cfg, key)
                out[key] = len(value) if isinstance(value, list) else value
        return out
    assert first_error is not None
    raise first_error


_SUMMARIES: dict[str, Callable[[Path], Summary]] = {
    "dataset": _dataset,
    "hdf5": _hdf5,
    "geom": _geom,
    "stream": _stream,
    "cell": _cell,
    "crystfel-hkl": _crystfel_hkl,
    "shelx-hkl": _shelx,
    "xds-integrate": _xds,
    "mtz": _mtz,
    "lst": _lst,
    "tiff": _image,
    "mrc": _image,
    "smv": _image,
    "cbf": _image,
    "config": _config,
    "structure": _structure,
}


def summarize(path: str | Path, kind: str | None = None) -> tuple[str, Summary]:
    """Detect the format of ``path`` (unless ``kind`` is given) and summarise it."""
    p = Path(path)
    kind = kind or detect_format(p)
    return kind, _SUMMARIES[kind](p)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value if isinstance(value, int | float | str | bool | list | None) else str(value)


def info(
    file: Annotated[Path, typer.Argument(help="Any supported file.", show_default=False)],
    format: Annotated[
        str | None,
        typer.Option("--format", "-f", help="Force the format: " + ", ".join(FORMATS)),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Summarise a dataset, geometry, stream, reflection file, image or configuration."""
    if format is not None and format not in FORMATS:
        raise typer.BadParameter(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    kind, summary = summarize(file, format)
    if as_json:
        record = {"file": str(file), "format": kind}
        record.update({k: _jsonable(v) for k, v in summary.items()})
        typer.echo(json.dumps(record, indent=2))
        return
    print_summary(Console(), f"{file}  [dim]({FORMATS[kind]})[/]", summary)


def print_summary(console: Console, heading: str, summary: Summary) -> None:
    """Print a heading line and a two-column table of ``summary``."""
    console.print(heading, soft_wrap=True)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)

"""``crystalscope convert SRC DST``: convert between supported formats.

Conversions within a family only: reflection files (MTZ, CrystFEL .hkl, SHELX HKLF 4,
XDS INTEGRATE.HKL as a source), images and frame stacks (TIFF, MRC, SMV, CBF, HDF5,
crystalscope datasets, .lst lists of files), geometries, cells and streams (rewritten in
canonical form).  Outputs are written atomically and never replace an existing file
unless ``--overwrite`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import gemmi
import typer

from crystalscope.errors import CrystalscopeError
from crystalscope.io.atomic import check_writable
from crystalscope.io.detect import detect_format
from crystalscope.io.reflection_data import ReflectionData

__all__ = ["DESTINATIONS", "convert", "convert_file"]

REFLECTION_KINDS = {"mtz", "crystfel-hkl", "shelx-hkl", "xds-integrate"}
IMAGE_KINDS = {"tiff", "mrc", "smv", "cbf"}
FRAME_KINDS = IMAGE_KINDS | {"hdf5", "dataset", "lst"}

#: destination kinds by extension; ``--to`` overrides.
DESTINATIONS = {
    ".mtz": "mtz",
    ".hkl": "crystfel-hkl",
    ".h5": "dataset",
    ".hdf5": "dataset",
    ".cxi": "dataset",
    ".nxs": "dataset",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".mrc": "mrc",
    ".mrcs": "mrc",
    ".img": "smv",
    ".smv": "smv",
    ".cbf": "cbf",
    ".geom": "geom",
    ".cell": "cell",
    ".stream": "stream",
}


def _read_reflections(src: Path, kind: str) -> ReflectionData:
    if kind == "mtz":
        from crystalscope.io.mtz import read_mtz

        return read_mtz(src)
    if kind == "shelx-hkl":
        from crystalscope.io.shelx import read_shelx_hkl

        return read_shelx_hkl(src)
    if kind == "xds-integrate":
        from crystalscope.io.xds import read_xds_integrate

        return read_xds_integrate(src)
    from crystalscope.io.crystfel_hkl import read_hkl

    table = read_hkl(src)
    return ReflectionData(table=table, merged=True, source=str(src))


def _apply_overrides(data: ReflectionData, cell: str | None, space_group: str | None) -> None:
    if cell:
        try:
            params = [float(x) for x in cell.replace(",", " ").split()]
            data.cell = gemmi.UnitCell(*params)
        except (TypeError, ValueError):
            raise CrystalscopeError(
                "give the cell as six numbers 'a b c alpha beta gamma'", field="--cell"
            ) from None
    if space_group:
        found = gemmi.find_spacegroup_by_name(space_group)
        if found is None:
            raise CrystalscopeError(f"unknown space group {space_group!r}", field="--space-group")
        data.space_group = found


def _write_reflections(data: ReflectionData, dst: Path, kind: str, args: dict[str, Any]) -> str:
    overwrite = args["overwrite"]
    if kind == "mtz":
        from crystalscope.io.mtz import write_mtz

        if data.cell is None or data.space_group is None:
            raise CrystalscopeError(
                "MTZ needs a cell and a space group: give --cell and --space-group",
                path=data.source,
                field="cell" if data.cell is None else "space_group",
            )
        write_mtz(data, dst, overwrite=overwrite)
    elif kind == "shelx-hkl":
        from crystalscope.io.shelx import write_shelx_hkl

        scale = write_shelx_hkl(data, dst, overwrite=overwrite)
        return f"{len(data)} reflections (intensities scaled by {scale:g})"
    elif kind == "crystfel-hkl":
        from crystalscope.io.crystfel_hkl import write_hkl

        symmetry = args.get("symmetry")
        if symmetry is None and data.space_group is not None:
            symmetry = data.space_group.point_group_hm().replace(" ", "")
        write_hkl(data.table, dst, symmetry=symmetry, overwrite=overwrite)
    else:
        raise CrystalscopeError(f"cannot write reflections as {kind}", path=dst)
    return f"{len(data)} reflections"


def _convert_frames(src: Path, src_kind: str, dst: Path, dst_kind: str, overwrite: bool) -> str:
    if dst_kind == "dataset":
        from crystalscope.dataset import Dataset

        if src_kind in IMAGE_KINDS:
            from crystalscope.io.images import open_frames

            frames, meta = open_frames(src)
            flat = {k: v for k, v in meta.items() if isinstance(v, int | float | str)}
            ds = Dataset.from_arrays(frames, meta={"source": flat})
        elif src_kind == "hdf5":
            from crystalscope.io.nexus import find_frames_dataset

            ds = Dataset.open(src, data_path=find_frames_dataset(src)[0])
        else:
            ds = Dataset.open(src)
        from crystalscope.parallel import byte_progress

        with byte_progress(f"writing {dst.name}") as progress:
            ds.write(dst, overwrite=overwrite, progress=progress)
        return f"{ds.n_frames} frames"
    if dst_kind not in IMAGE_KINDS:
        raise CrystalscopeError(f"cannot convert frames to {dst_kind}", path=dst)
    from crystalscope.io.images import read_image, write_image

    if src_kind in ("dataset", "lst"):
        from crystalscope.dataset import Dataset

        data = Dataset.open(src).data.compute()
        image_meta: dict[str, Any] = {}
    else:
        image = read_image(src)
        data, image_meta = image.data, image.metadata
    write_image(dst, data, image_meta, format=dst_kind, overwrite=overwrite)
    return f"{1 if data.ndim == 2 else data.shape[0]} frame(s) of {data.shape[-2:]}"


def _convert_same(src: Path, kind: str, dst: Path, overwrite: bool) -> str:
    if kind == "geom":
        from crystalscope.io.crystfel_geom import read_geom, write_geom

        det = read_geom(src)
        write_geom(det, dst, overwrite=overwrite)
        return f"{len(det.panels)} panels"
    if kind == "cell":
        from crystalscope.io.crystfel_cell import read_cell, write_cell

        write_cell(read_cell(src), dst, overwrite=overwrite)
        return "unit cell"
    from crystalscope.io.crystfel_stream import read_stream, write_stream

    stream = read_stream(src)
    write_stream(stream, dst, overwrite=overwrite)
    return f"{len(stream.chunks)} chunks, {len(stream.crystals)} crystals"


def convert_file(
    src: Path,
    dst: Path,
    *,
    to: str | None = None,
    overwrite: bool = False,
    cell: str | None = None,
    space_group: str | None = None,
    symmetry: str | None = None,
) -> str:
    """Convert ``src`` into ``dst``; return a one-line description of what was written."""
    src_kind = detect_format(src)
    dst_kind = to or DESTINATIONS.get(dst.suffix.lower())
    if dst_kind is None:
        raise CrystalscopeError(
            "cannot tell the output format from the extension; give --to", path=dst
        )
    check_writable(dst, overwrite=overwrite)
    if src_kind in REFLECTION_KINDS and dst_kind in REFLECTION_KINDS:
        data = _read_reflections(src, src_kind)
        _apply_overrides(data, cell, space_group)
        args = {"overwrite": overwrite, "symmetry": symmetry}
        return _write_reflections(data, dst, dst_kind, args)
    if src_kind in FRAME_KINDS and dst_kind in FRAME_KINDS - {"hdf5", "lst"}:
        return _convert_frames(src, src_kind, dst, dst_kind, overwrite)
    if src_kind == dst_kind and src_kind in ("geom", "cell", "stream"):
        return _convert_same(src, src_kind, dst, overwrite)
    raise CrystalscopeError(f"no conversion from {src_kind} to {dst_kind}", path=src)


def convert(
    src: Annotated[Path, typer.Argument(help="Input file.", show_default=False)],
    dst: Annotated[Path, typer.Argument(help="Output file.", show_default=False)],
    to: Annotated[
        str | None,
        typer.Option(help="Output format (default: from the extension; .hkl is CrystFEL)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    cell: Annotated[
        str | None, typer.Option(help="Unit cell 'a b c alpha beta gamma' (A, degrees).")
    ] = None,
    space_group: Annotated[str | None, typer.Option(help="Space group, e.g. 'P 43 21 2'.")] = None,
    symmetry: Annotated[
        str | None, typer.Option(help="CrystFEL point group for .hkl output, e.g. 422.")
    ] = None,
) -> None:
    """Convert reflection files, images/frame stacks, geometries, cells or streams."""
    what = convert_file(
        src, dst, to=to, overwrite=overwrite, cell=cell, space_group=space_group,
        symmetry=symmetry,
    )  # fmt: skip
    typer.echo(f"wrote {dst}: {what}")

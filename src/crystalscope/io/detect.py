"""Tell which supported format a file is in, from its magic bytes, first line and name."""

from __future__ import annotations

import os
from pathlib import Path

from crystalscope.errors import FormatError

__all__ = ["FORMATS", "detect_format"]

#: Format kinds and what they are, as shown by ``crystalscope info --help``.
FORMATS: dict[str, str] = {
    "dataset": "crystalscope Dataset (HDF5, NeXus/CXI layout)",
    "hdf5": "other HDF5 / NeXus / CXI file",
    "geom": "CrystFEL detector geometry (.geom)",
    "stream": "CrystFEL stream (.stream)",
    "cell": "CrystFEL unit cell file (.cell)",
    "crystfel-hkl": "CrystFEL reflection list (.hkl, .hkl1, .hkl2)",
    "shelx-hkl": "SHELX HKLF 4 reflection file (.hkl)",
    "xds-integrate": "XDS INTEGRATE.HKL / XDS_ASCII.HKL",
    "mtz": "MTZ reflection file (merged or unmerged)",
    "lst": "CrystFEL-style list of files (.lst)",
    "tiff": "TIFF image or stack",
    "mrc": "MRC image or stack",
    "smv": "SMV (ADSC) image",
    "cbf": "CBF image",
    "config": "crystalscope YAML configuration",
    "structure": "atomic model (PDB, mmCIF, small-molecule CIF)",
}

_MAGIC = [
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"MTZ ", "mtz"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"###CBF", "cbf"),
    (b"{\nHEADER_BYTES", "smv"),
    (b"{\r\nHEADER_BYTES", "smv"),
]

_FIRST_LINE = [
    ("CrystFEL stream format", "stream"),
    ("CrystFEL unit cell file", "cell"),
    ("CrystFEL reflection list", "crystfel-hkl"),
    ("!FORMAT=XDS_ASCII", "xds-integrate"),
    ("!OUTPUT_FILE=INTEGRATE.HKL", "xds-integrate"),
]

_EXTENSIONS = {
    ".geom": "geom",
    ".stream": "stream",
    ".cell": "cell",
    ".lst": "lst",
    ".mtz": "mtz",
    ".mrc": "mrc",
    ".mrcs": "mrc",
    ".st": "mrc",
    ".map": "mrc",
    ".img": "smv",
    ".smv": "smv",
    ".cbf": "cbf",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".yaml": "config",
    ".yml": "config",
    ".hkl1": "crystfel-hkl",
    ".hkl2": "crystfel-hkl",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".cxi": "hdf5",
    ".nxs": "hdf5",
    ".pdb": "structure",
    ".ent": "structure",
    ".cif": "structure",
    ".mmcif": "structure",
}


def _is_dataset(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "entry/shots" in f
    except OSError:
        return False


def detect_format(path: str | os.PathLike[str]) -> str:
    """Return the format kind of ``path`` (a key of :data:`FORMATS`).

    Raises
    ------
    FormatError
        If the file does not exist, cannot be read, or is of no supported format.
    """
    p = Path(path)
    if p.is_dir():
        raise FormatError("is a directory, not a file", path=p)
    try:
        with open(p, "rb") as fh:
            head = fh.read(512)
    except FileNotFoundError:
        raise FormatError("file not found", path=p) from None
    except OSError as exc:
        raise FormatError(f"cannot read file ({exc.strerror})", path=p) from None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return "dataset" if kind == "hdf5" and _is_dataset(p) else kind
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    for prefix, kind in _FIRST_LINE:
        if first.startswith(prefix):
            return kind
    suffix = p.suffix.lower()
    if suffix == ".gz":
        suffix = Path(p.stem).suffix.lower()
    if p.name.upper().endswith(("INTEGRATE.HKL", "XDS_ASCII.HKL")):
        return "xds-integrate"
    if suffix == ".hkl":
        return "shelx-hkl"
    if suffix in _EXTENSIONS:
        kind = _EXTENSIONS[suffix]
        if kind in ("hdf5", "mtz", "tiff", "cbf", "smv"):
            raise FormatError(f"extension says {kind} but the content does not match", path=p)
        return kind
    raise FormatError("unknown file format (supported: " + ", ".join(sorted(FORMATS)) + ")", path=p)

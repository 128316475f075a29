"""Read and write CrystFEL detector geometry files (``.geom``, ``crystfel_geometry(5)``).

Both the CrystFEL 0.10 dialect (``group_*``, ``maskN_*``, units after values, z
components in ``fs``/``ss``) and older files (``rigid_group_*``, per-panel ``clen``,
fs/ss bad regions without a panel) are read.  Values are converted to crystalscope's
units on reading (``res`` -> ``pixel_size_mm``, ``coffset``/``clen`` m -> mm) and back
on writing; see ``docs/formats/crystfel-geom.md`` for the field map.

CrystFEL's rule for global values is kept: a value given without a panel name applies
to every panel *first mentioned after it*.  Unknown keys are kept (and written back)
and reported with :class:`GeometryWarning`; malformed values raise
:class:`~crystalscope.errors.FormatError` naming the file, line and key.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from crystalscope.io.atomic import atomic_write
from crystalscope.io.crystfel_geom_parse import GeomParser
from crystalscope.io.crystfel_geom_write import format_geom
from crystalscope.io.textfile import read_text
from crystalscope.model.detector import Detector

__all__ = ["GeometryWarning", "format_geom", "parse_geom", "read_geom", "write_geom"]


class GeometryWarning(UserWarning):
    """A geometry file has keys crystalscope does not know or lines without effect."""


def parse_geom(
    text: str, path: str | os.PathLike[str] | None = None, *, line_offset: int = 0
) -> Detector:
    """Parse the text of a CrystFEL geometry file.

    Parameters
    ----------
    text : str
        The geometry (e.g. the part of a stream between ``----- Begin geometry file
        -----`` and ``----- End geometry file -----``).
    path : str or path-like, optional
        File the text comes from, named in errors and warnings.
    line_offset : int
        Added to line numbers in errors (the line before the geometry's first line
        when it is embedded in a larger file).

    Returns
    -------
    Detector

    Raises
    ------
    FormatError
        If a line or value is malformed or the geometry is incomplete or inconsistent.
    """
    parser = GeomParser(path, line_offset)
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        parser.feed(line, number)
    detector = parser.finish()
    for message in parser.notes:
        warnings.warn(message, GeometryWarning, stacklevel=2)
    return detector


def read_geom(path: str | os.PathLike[str]) -> Detector:
    """Read a CrystFEL geometry file (UTF-8, or Latin-1 if it is not valid UTF-8).

    Raises
    ------
    FormatError
        If the file cannot be read or is malformed (see :func:`parse_geom`).
    """
    p = Path(path)
    return parse_geom(read_text(p, fallback="latin-1"), p)


def write_geom(detector: Detector, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """Write ``detector`` as a CrystFEL geometry file, atomically.

    The text (see :func:`format_geom`) goes to a temporary file in the same directory
    that replaces ``path`` only when complete.

    Raises
    ------
    FormatError
        If a name or string of the detector cannot be written in a ``.geom``.
    CrystalscopeError
        If ``path`` exists and ``overwrite`` is false, or its directory does not exist.
    """
    text = format_geom(detector, path=path)
    with atomic_write(path, overwrite=overwrite) as fh:
        fh.write(text)

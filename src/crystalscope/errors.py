"""The project's own exception types.

Every error caused by the user's input (a malformed file, a wrong configuration key,
NaN frames, missing metadata) is a :class:`CrystalscopeError`.  It carries the file,
the field (a key, an HDF5 path, a column) and, for text formats, the line number, so
that the command line can print one self-explanatory line and exit with status 2.
Anything else escaping the library is a bug.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ConfigError", "CrystalscopeError", "DataError", "FormatError"]


class CrystalscopeError(Exception):
    """Base class of all user-facing errors.

    Parameters
    ----------
    message : str
        What is wrong, in words a crystallographer understands.
    path : str or os.PathLike, optional
        The file the problem was found in.
    field : str, optional
        The field, key, HDF5 dataset or column that is wrong.
    line : int, optional
        1-based line number for text formats.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.path = str(Path(path)) if path is not None else None
        self.field = field
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
        elif self.line is not None:
            where = f"line {self.line}"
        parts = [p for p in (where, f"field '{self.field}'" if self.field else "") if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class FormatError(CrystalscopeError):
    """A file could not be read because its content is malformed or incomplete."""


class ConfigError(CrystalscopeError):
    """A configuration file or option is invalid (unknown key, wrong type, bad value)."""


class DataError(CrystalscopeError):
    """Data are present but unusable: NaN frames, wrong shape, missing metadata."""

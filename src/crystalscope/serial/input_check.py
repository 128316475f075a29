"""Checking input files before a long run, so that one bad file does not stop it.

:func:`check_inputs` expands files, globs and ``.lst`` lists and tries each file on its
own: it must open as frames (our Dataset layout, a CrystFEL geometry's data path, or a
supported image format) and, for HDF5, every stored chunk of every dataset must lie
inside the file (a file truncated while being written or copied fails this without
reading any pixel).  Unusable files are returned with their reasons; the run goes on
with the others.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py

from crystalscope.dataset.sources import Request, expand_sources
from crystalscope.errors import CrystalscopeError
from crystalscope.io.detect import detect_format
from crystalscope.serial.config import InputConfig

__all__ = ["check_inputs", "hdf5_truncation"]


def _dataset_end(dset: h5py.Dataset) -> int:
    """Byte just past the last stored byte of ``dset`` (0 when nothing is stored)."""
    dsid = dset.id
    if dset.chunks is None:
        offset = dsid.get_offset()
        return 0 if offset is None else int(offset) + int(dsid.get_storage_size())
    end = 0
    for i in range(dsid.get_num_chunks()):
        info = dsid.get_chunk_info(i)
        end = max(end, int(info.byte_offset) + int(info.size))
    return end


def hdf5_truncation(path: str | os.PathLike[str]) -> str | None:
    """Why the HDF5 file at ``path`` is unusable (truncated, unreadable), or None."""
    size = os.path.getsize(path)
    found: list[str] = []

    def visit(name: str, node: object) -> None:
        if found or not isinstance(node, h5py.Dataset):
            return
        end = _dataset_end(node)
        if end > size:
            found.append(f"truncated: dataset {name} needs {end} bytes, the file has {size}")

    try:
        with h5py.File(path, "r") as fh:
            fh.visititems(visit)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        return f"not a readable HDF5 file ({exc})"
    return found[0] if found else None


def _check_one(name: str, cfg: InputConfig) -> str | None:
    from crystalscope.serial.inputs import open_input

    try:
        detect_format(name)
        if h5py.is_hdf5(name):
            reason = hdf5_truncation(name)
            if reason is not None:
                return reason
        one = cfg.model_copy(update={"files": [name]})
        open_input(one)
    except CrystalscopeError as exc:
        if cfg.geometry is not None and exc.path == str(Path(cfg.geometry)):
            raise  # the geometry, not this file, is wrong: stop the run
        return exc.message
    except OSError as exc:
        return f"cannot read ({exc})"
    return None


def check_inputs(
    files: Sequence[str], cfg: InputConfig | None = None
) -> tuple[list[Request], dict[str, str]]:
    """The frame requests of the usable files, and ``{file: reason}`` of the others.

    Raises
    ------
    FormatError
        A name that matches no file or a malformed ``.lst`` (nothing to check), or a
        geometry file that does not fit the frames (a problem of every file).
    """
    cfg = cfg or InputConfig()
    requests = expand_sources(list(files))
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(r.file for r in requests):
        reason = _check_one(name, cfg)
        if reason is not None:
            skipped[str(Path(name))] = reason
    return [r for r in requests if r.file not in skipped], skipped

"""The :class:`Dataset`: frames and other stacks, per-frame and per-crystal tables, metadata.

A dataset holds

* **stacks**: N-d dask arrays whose first axis runs over the frames; the frame stack
  itself is ``data`` (one frame per chunk), CXI peak lists are the stacks ``nPeaks``,
  ``peakXPosRaw``, ``peakYPosRaw`` and ``peakTotalIntensity``;
* **shots**: a pandas table with one row per frame (key columns ``file``, ``event``,
  ``frame``; see :mod:`crystalscope.dataset.tables`);
* **crystals**: a pandas table with one row per crystal in a frame (keys ``frame``,
  ``crystal``);
* **meta**: nested dict of run metadata (``instrument``, ``sample``, ...).

Operations that change which frames there are (:meth:`Dataset.select`,
:meth:`Dataset.aggregate`) return a new dataset with every stack and table kept
consistent; the original is unchanged.  Stacks and columns can be added in place.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import dask.array as da
import numpy as np
import pandas as pd

from crystalscope.dataset import frames as _frames
from crystalscope.dataset import hdf5, sources
from crystalscope.dataset.aggregate import aggregate as _aggregate
from crystalscope.dataset.reader import close_files
from crystalscope.dataset.stacks import (
    FRAME_STACK,
    PEAK_STACKS,
    as_stack,
    peak_arrays,
    peak_table,
    take_frames,
)
from crystalscope.dataset.tables import check_name, normalize_crystals, normalize_shots
from crystalscope.errors import DataError
from crystalscope.io.lst import write_lst
from crystalscope.parallel import compute

__all__ = ["Dataset"]


class Dataset:
    """Frames, per-frame and per-crystal tables and run metadata, lazily backed by HDF5.

    Build one with :meth:`open` (files, glob patterns, CrystFEL ``.lst`` files) or
    :meth:`from_arrays`; the constructor takes already-prepared parts.

    Parameters
    ----------
    stacks : mapping of str to array, optional
        Stacks by name; numpy or dask arrays whose first axis has one entry per frame.
    shots : DataFrame, optional
        One row per frame; missing key columns are filled in.
    crystals : DataFrame, optional
        One row per crystal; needs a ``frame`` column.
    meta : mapping, optional
        Nested run metadata.
    file_meta : mapping, optional
        Metadata of each source file (by ``shots.file``), see :meth:`merge_meta`.
    frames_path : str, optional
        HDF5 path of the unchanged frames inside the files named by ``shots.file``
        (set by :meth:`open`; needed to write peaks-only files).

    Examples
    --------
    >>> ds = Dataset.open("runs/*.h5")  # doctest: +SKIP
    >>> hits = ds.select("num_peaks >= 15 and sample == 'lyso'")  # doctest: +SKIP
    >>> hits.write("hits.h5")  # doctest: +SKIP
    """

    def __init__(
        self,
        stacks: Mapping[str, Any] | None = None,
        shots: pd.DataFrame | None = None,
        crystals: pd.DataFrame | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        file_meta: Mapping[str, Mapping[str, Any]] | None = None,
        frames_path: str | None = None,
    ) -> None:
        stacks = dict(stacks or {})
        if shots is not None:
            n = len(shots)
        elif stacks:
            n = int(next(iter(stacks.values())).shape[0])
        else:
            n = 0
        self._stacks: dict[str, da.Array] = {
            check_name(name, "stack"): as_stack(name, arr, n) for name, arr in stacks.items()
        }
        self._shots = normalize_shots(shots, n)
        self._crystals = normalize_crystals(crystals, self._shots["frame"])
        if meta is not None and not isinstance(meta, Mapping):
            raise DataError("meta must be a dict", field="meta")
        self.meta: dict[str, Any] = copy.deepcopy(dict(meta or {}))
        self.file_meta: dict[str, dict[str, Any]] = {
            str(k): dict(v) for k, v in (file_meta or {}).items()
        }
        self.frames_path = frames_path if FRAME_STACK in self._stacks else None

    # ------------------------------------------------------------------ construction

    @classmethod
    def open(
        cls,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        data_path: str | None = None,
        peaks_path: str | None = None,
    ) -> Dataset:
        """Open one or many files as one dataset; frames stay on disk until used.

        Parameters
        ----------
        source : path, glob pattern, ``.lst`` file, or a sequence of them
            Files are concatenated in order (glob matches sorted by name).  In a ``.lst``
            a line ``file //N`` selects frame ``N`` of ``file``, a line ``file`` all its
            frames; relative names are looked up relative to the current directory,
            then to the list file's directory.
        data_path : str, optional
            Read frames from this HDF5 dataset of files in any layout (e.g. Cheetah or
            CXI files: ``/entry_1/data_1/data``) instead of crystalscope datasets.
        peaks_path : str, optional
            With ``data_path``: group holding CXI peak lists (``nPeaks`` ...).

        Returns
        -------
        Dataset
            ``shots.file``/``shots.event`` name the file and index each frame is read
            from; frame identifiers that collide between files are offset per file.
            ``meta`` holds the metadata common to all files, ``file_meta`` each file's.

        Raises
        ------
        FormatError
            A file is missing, truncated or corrupt, lacks a dataset, or its tables and
            stacks disagree in length; the message names the file and the HDF5 path.
        """
        requests = sources.expand_sources(source)
        stacks, shots, crystals, file_meta, frames_path = sources.assemble(
            requests, data_path=data_path, peaks_path=peaks_path
        )
        from crystalscope.dataset.tables import common_meta

        meta = common_meta(list(file_meta.values()))
        return cls(stacks, shots, crystals, meta, file_meta=file_meta, frames_path=frames_path)

    @classmethod
    def from_arrays(
        cls,
        frames: Any = None,
        shots: pd.DataFrame | None = None,
        crystals: pd.DataFrame | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        stacks: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """Dataset from in-memory or dask arrays.

        Parameters
        ----------
        frames : array, optional
            Frame stack ``(n_frames, ss, fs)`` (numpy or dask); becomes stack ``data``.
        shots, crystals, meta
            Tables and metadata as for the constructor.
        stacks : mapping, optional
            Further stacks by name.
        """
        all_stacks = dict(stacks or {})
        if frames is not None:
            if FRAME_STACK in all_stacks:
                raise DataError("frames given twice (frames= and stacks['data'])", field="data")
            all_stacks = {FRAME_STACK: frames, **all_stacks}
        return cls(all_stacks, shots, crystals, meta)

    # ------------------------------------------------------------------ access

    @property
    def n_frames(self) -> int:
        """Number of frames (rows of :attr:`shots`)."""
        return len(self._shots)

    def __len__(self) -> int:
        return self.n_frames

    @property
    def shots(self) -> pd.DataFrame:
        """Per-frame table; add or change columns in place (``ds.shots["x"] = ...``)."""
        return self._shots

    @shots.setter
    def shots(self, table: pd.DataFrame) -> None:
        new = normalize_shots(table, self.n_frames)
        normalize_crystals(self._crystals, new["frame"])
        self._shots = new

    @property
    def crystals(self) -> pd.DataFrame:
        """Per-crystal table (keys ``frame``, ``crystal``)."""
        return self._crystals

    @crystals.setter
    def crystals(self, table: pd.DataFrame | None) -> None:
        self._crystals = normalize_crystals(table, self._shots["frame"])

    @property
    def stacks(self) -> Mapping[str, da.Array]:
        """Read-only mapping of stack names to dask arrays."""
        return MappingProxyType(self._stacks)

    @property
    def data(self) -> da.Array:
        """The frame stack (``self["data"]``)."""
        return self[FRAME_STACK]

    def __getitem__(self, name: str) -> da.Array:
        try:
            return self._stacks[name]
        except KeyError:
            raise DataError(
                f"no such stack (stacks: {', '.join(self._stacks) or 'none'})", field=name
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._stacks

    def __repr__(self) -> str:
        stacks = ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in self._stacks.items())
        return (
            f"<Dataset: {self.n_frames} frames; stacks: {stacks or 'none'}; "
            f"shots: {self._shots.shape[1]} columns; crystals: {len(self._crystals)}>"
        )

    # ------------------------------------------------------------------ stacks

    def add_stack(self, name: str, array: Any, *, overwrite: bool = False) -> None:
        """Add a stack (numpy or dask, first axis = frames); replace only if ``overwrite``."""
        check_name(name, "stack")
        if name in self._stacks and not overwrite:
            raise DataError("stack exists; pass overwrite=True to replace it", field=name)
        self._stacks[name] = as_stack(name, array, self.n_frames)
        if name == FRAME_STACK:
            self.frames_path = None

    def replace_stack(self, name: str, array: Any) -> None:
        """Replace an existing stack (DataError if there is none of that name)."""
        self[name]
        self.add_stack(name, array, overwrite=True)

    def remove_stack(self, name: str) -> None:
        """Remove a stack."""
        self[name]
        del self._stacks[name]
        if name == FRAME_STACK:
            self.frames_path = None

    # ------------------------------------------------------------------ selection

    def _positions(self, where: Any) -> np.ndarray:
        n = self.n_frames
        if isinstance(where, str):
            try:
                hit = self._shots.query(where)
            except Exception as exc:  # pandas raises many types for a bad query
                raise DataError(f"invalid query: {exc}", field=where) from None
            return hit.index.to_numpy(dtype=np.int64)
        if isinstance(where, slice):
            return np.arange(n)[where]
        values = np.asarray(where.to_numpy() if isinstance(where, pd.Series) else where)
        if values.dtype == bool:
            if values.shape != (n,):
                raise DataError(
                    f"boolean mask has shape {values.shape}, expected ({n},)", field="where"
                )
            return np.flatnonzero(values)
        if values.size == 0:
            return np.zeros(0, dtype=np.int64)
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise DataError(
                "select takes a query string, a boolean mask or frame positions", field="where"
            )
        if values.min() < 0 or values.max() >= n:
            raise DataError(f"frame positions must lie in 0..{n - 1}", field="where")
        return values.astype(np.int64)

    def select(self, where: str | Sequence[bool] | Sequence[int] | np.ndarray | slice) -> Dataset:
        """New dataset with the frames chosen by ``where``, all stacks and tables sliced.

        Parameters
        ----------
        where : str, boolean mask, integer positions or slice
            A :meth:`pandas.DataFrame.query` string on the shots table
            (``"num_peaks >= 15 and sample == 'lyso'"``), a boolean mask with one entry
            per frame, or frame positions (0-based, in the order wanted).

        Returns
        -------
        Dataset
            Crystals follow their frames; stacks stay lazy.
        """
        idx = self._positions(where)
        stacks = {name: take_frames(arr, idx) for name, arr in self._stacks.items()}
        shots = self._shots.iloc[idx].reset_index(drop=True)
        crystals = self._crystals[self._crystals["frame"].isin(shots["frame"])]
        files = set(shots["file"])
        file_meta = {f: m for f, m in self.file_meta.items() if f in files}
        return Dataset(
            stacks, shots, crystals, self.meta, file_meta=file_meta, frames_path=self.frames_path
        )

    def aggregate(
        self,
        by: str | Sequence[str],
        how: Literal["sum", "mean"] = "sum",
        *,
        query: str | None = None,
        stacks: Sequence[str] | None = None,
        columns: Literal["first", "mean"] = "first",
        count_column: str = "frame_count",
        dtype: Any = None,
    ) -> Dataset:
        """Sum or average groups of frames, e.g. the dose fractions of each crystal.

        Parameters
        ----------
        by : str or list of str
            Shots columns whose values define the groups (frames with a missing key
            are dropped).
        how : {"sum", "mean"}
            Reduction applied to each stack within each group (lazily).
        query : str, optional
            Select frames first (as :meth:`select`).
        stacks : list of str, optional
            Stacks to reduce; default all except the CXI peak lists (which cannot be
            summed and are dropped).  Stacks not listed are dropped.
        columns : {"first", "mean"}
            Non-key numeric shots columns of a group: the first frame's value, or the
            mean.  Other columns always take the first frame's value.
        count_column : str
            Name of the new column holding the number of frames in each group.
        dtype : dtype, optional
            Accumulator/output dtype (default NumPy's: ``sum`` of uint16 is uint64).

        Returns
        -------
        Dataset
            One frame per group, in sorted key order; ``frame`` is the group's first
            frame identifier.
        """
        return _aggregate(
            self,
            by,
            how,
            query=query,
            stacks=stacks,
            columns=columns,
            count_column=count_column,
            dtype=dtype,
        )

    # ------------------------------------------------------------------ per-frame work

    def map_frames(
        self,
        func: Callable[..., Any],
        *,
        stack: str = "data",
        out_shape: tuple[int, ...] | None = None,
        out_dtype: Any = None,
        allow_nan: bool = True,
        compute: bool = False,
        client: Any = None,
        **kwargs: Any,
    ) -> da.Array | np.ndarray | pd.DataFrame:
        """Apply ``func(frame, **kwargs)`` to each frame of a stack through dask.

        Parameters
        ----------
        func : callable
            Takes one frame (ndarray without the frame axis) and returns an array of
            fixed shape (or a scalar), or a dict of numbers (then the result is a table).
        stack : str
            Stack to map over (default the frames).
        out_shape, out_dtype : optional
            Shape and dtype of one result; when omitted, ``func`` is called once on the
            first frame to find them.
        allow_nan : bool
            If False, a frame with NaN or infinite values raises DataError naming its
            file and HDF5 path instead of being passed to ``func``.
        compute : bool
            Return a NumPy array instead of a lazy dask array.
        client : distributed.Client, optional
            Compute on this client; by default dask's default scheduler is used (local
            threads, or an active distributed client).
        **kwargs
            Passed to ``func``.

        Returns
        -------
        dask.array.Array, ndarray or DataFrame
            ``(n_frames, *out_shape)`` results, or, for dict results, a DataFrame with
            one row per frame (same row order as :attr:`shots`), always computed.
        """
        return _frames.map_frames(
            self,
            func,
            stack=stack,
            out_shape=out_shape,
            out_dtype=out_dtype,
            allow_nan=allow_nan,
            compute_now=compute,
            client=client,
            **kwargs,
        )

    def check_finite(self, stack: str = "data", *, client: Any = None) -> None:
        """Raise DataError (naming file and HDF5 path) if any frame has NaN or inf values."""
        _frames.check_finite(self, stack, client=client)

    # ------------------------------------------------------------------ peaks and metadata

    def add_peaks(self, peaks: pd.DataFrame, *, max_peaks: int | None = None) -> None:
        """Store a peak table as CXI peak lists and the shots column ``num_peaks``.

        Parameters
        ----------
        peaks : DataFrame
            Columns ``frame`` (identifier), ``fs``, ``ss`` (pixels, pixel-centre origin,
            raw-array coordinates) and ``intensity``.
        max_peaks : int, optional
            Peaks kept per frame (the most intense); default the largest count.
        """
        arrays = peak_arrays(peaks, self._shots["frame"].to_numpy(), max_peaks=max_peaks)
        for name in PEAK_STACKS:
            self.add_stack(name, arrays[name], overwrite=True)
        self._shots["num_peaks"] = arrays["nPeaks"].astype(np.int64)

    def peaks(self, *, client: Any = None) -> pd.DataFrame:
        """The CXI peak lists as a table ``frame, fs, ss, intensity`` (pixel-centre)."""
        for name in PEAK_STACKS:
            self[name]
        values = compute(*(self._stacks[n] for n in PEAK_STACKS), client=client)
        return peak_table(
            dict(zip(PEAK_STACKS, values, strict=True)), self._shots["frame"].to_numpy()
        )

    def merge_meta(self, key: str, column: str | None = None) -> None:
        """Copy a per-file metadata value into a shots column.

        Parameters
        ----------
        key : str
            Slash-separated path into the metadata, e.g. ``"instrument/detector/distance_mm"``.
        column : str, optional
            Column name (default ``key`` with ``/`` replaced by ``_``).
        """
        values = []
        for file in self._shots["file"]:
            node: Any = self.file_meta.get(file, self.meta)
            for part in key.split("/"):
                node = node.get(part, np.nan) if isinstance(node, Mapping) else np.nan
            if isinstance(node, Mapping | np.ndarray | list):
                raise DataError("only single values can become a column", field=key)
            values.append(node)
        self._shots[column or key.replace("/", "_")] = values

    # ------------------------------------------------------------------ output

    def write(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        frames: bool = True,
        compression: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> Path:
        """Write the dataset to one HDF5 file, atomically and with bounded memory.

        Stacks are streamed chunk by chunk through dask (local threads) into a temporary
        file beside ``path``, which replaces ``path`` only when everything is written.

        Parameters
        ----------
        path : str or os.PathLike
            Target file.
        overwrite : bool
            Replace an existing file (otherwise CrystalscopeError).
        frames : bool
            False writes tables, metadata and all stacks except the frames, whose
            ``shots.file``/``shots.event`` (made relative to the new file's directory)
            then reference the frames in their source files ("peaks-only" file).
        compression : bool
            Compress stacks with bitshuffle/LZ4 (readers need the hdf5plugin filters).
        progress : callable, optional
            Called as ``progress(bytes_done, bytes_total)`` as stack data are written.

        Returns
        -------
        Path
            ``path``.
        """
        return hdf5.write_dataset(
            self,
            path,
            overwrite=overwrite,
            frames=frames,
            compression=compression,
            progress=progress,
        )

    def close(self) -> None:
        """Close this process's cached read handles of the files the frames come from.

        Frames are read through a small cache of open read-only HDF5 handles; close them
        before modifying those files with h5py in the same process.  Reading the dataset
        again re-opens them.
        """
        close_files({f for f in self._shots["file"] if f})

    def write_lst(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a CrystFEL ``.lst`` with one ``file //event`` line per frame."""
        if (self._shots["file"] == "").any():
            raise DataError(
                "frames without a file cannot be listed (write the dataset first)", field="file"
            )
        return write_lst(path, self._shots[["file", "event"]], overwrite=overwrite)

"""Datasets: frames as lazy dask stacks, per-frame and per-crystal tables, run metadata.

See :class:`Dataset` and ``docs/formats/dataset-hdf5.md`` for the file layout.
"""

from crystalscope.dataset.core import Dataset
from crystalscope.dataset.stacks import FRAME_STACK, PEAK_DTYPES, PEAK_STACKS
from crystalscope.dataset.tables import CRYSTAL_KEYS, SHOT_KEYS

__all__ = ["CRYSTAL_KEYS", "FRAME_STACK", "PEAK_DTYPES", "PEAK_STACKS", "SHOT_KEYS", "Dataset"]

"""Decode whole-frame HDF5 chunks outside the HDF5 library's lock.

The HDF5 library is not thread-safe, so h5py serialises every call into it, and with it
the decompression that the filter pipeline does inside ``H5Dread``.  For detector frames
stored one frame per chunk (what Dectris, Jungfrau and our own writers do) the compressed
bytes of a chunk can be fetched with ``H5Dread_chunk`` (h5py's ``read_direct_chunk``,
a fraction of a millisecond, under the lock) and decompressed afterwards by code that
releases the GIL, so that two threads decompress two frames at the same time.

Supported filter pipelines (anything else is read through h5py as before):

* no filter;
* bitshuffle (HDF5 filter 32008) with LZ4 (``cd_values[4] == 2``) or without
  compression, decoded by the ``bitshuffle`` package, the filter's reference
  implementation;
* deflate (filter 1), optionally after the byte shuffle (filter 2), decoded with
  :mod:`zlib`.

The result is bit-for-bit what ``h5py`` returns (tested for each pipeline).  A chunk
whose filter mask says a filter was skipped, or whose bytes do not decode, is left to
h5py, which raises the library's own error for a corrupt chunk.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import bitshuffle
import h5py
import numpy as np

__all__ = ["ChunkPlan", "can_encode", "chunk_plan", "decode_chunk", "encode_chunk"]

FILTER_DEFLATE = 1
FILTER_SHUFFLE = 2
FILTER_BITSHUFFLE = 32008
BSHUF_LZ4 = 2


@dataclass(frozen=True)
class ChunkPlan:
    """How to decode one chunk of a dataset stored one frame (axis-0 entry) per chunk.

    Attributes
    ----------
    filters : tuple of (int, tuple of int)
        The filter pipeline in the order HDF5 applied it when writing (filter id, client
        data values).
    frame_shape : tuple of int
        Shape of one frame (the chunk shape without its leading 1).
    dtype : numpy.dtype
        The stored element type (byte order included).
    """

    filters: tuple[tuple[int, tuple[int, ...]], ...]
    frame_shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def frame_bytes(self) -> int:
        """Uncompressed size of one frame in bytes."""
        return int(np.prod(self.frame_shape)) * self.dtype.itemsize


def _supported(code: int, values: tuple[int, ...]) -> bool:
    if code in (FILTER_DEFLATE, FILTER_SHUFFLE):
        return True
    if code == FILTER_BITSHUFFLE:
        return len(values) < 5 or values[4] in (0, BSHUF_LZ4)
    return False


def chunk_plan(node: h5py.Dataset) -> ChunkPlan | None:
    """A :class:`ChunkPlan` for ``node``, or None when its chunks cannot be decoded here.

    Decodable means: chunked with chunk shape ``(1, *node.shape[1:])``, a fixed-size
    numeric element type, and only the filters listed in the module documentation.
    """
    if node.chunks is None or node.ndim < 2 or node.dtype.kind not in "iufb":
        return None
    if tuple(node.chunks) != (1, *node.shape[1:]):
        return None
    plist = node.id.get_create_plist()
    filters = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, _name = plist.get_filter(i)
        if not _supported(int(code), tuple(int(v) for v in values)):
            return None
        filters.append((int(code), tuple(int(v) for v in values)))
    return ChunkPlan(tuple(filters), tuple(int(n) for n in node.shape[1:]), node.dtype)


def _unbitshuffle(buf: np.ndarray, plan: ChunkPlan, values: tuple[int, ...]) -> np.ndarray:
    """Undo the bitshuffle filter.  With LZ4 the filter writes an 8-byte big-endian size
    and a 4-byte block size in bytes, then the compressed blocks; without compression,
    only the shuffled bits (block size from the filter's client data, 0 = default)."""
    item = plan.dtype.itemsize
    if item not in (1, 2, 4, 8):
        raise ValueError(f"bitshuffle of {item}-byte elements is not decoded here")
    dtype = np.dtype(f"u{item}")
    if len(values) >= 5 and values[4] == BSHUF_LZ4:
        total, block_bytes = struct.unpack(">QI", buf[:12].tobytes())
        if total != plan.frame_bytes or block_bytes % item:
            raise ValueError("bitshuffle header does not match the frame")
        try:
            out = bitshuffle.decompress_lz4(buf[12:], (total // item,), dtype, block_bytes // item)
        except RuntimeError as exc:  # the library reports a corrupt stream this way
            raise ValueError(f"bitshuffle/LZ4: {exc}") from None
    else:
        if buf.size != plan.frame_bytes:
            raise ValueError("bitshuffled chunk does not match the frame size")
        block = values[3] if len(values) >= 4 else 0
        out = bitshuffle.bitunshuffle(buf.view(dtype), block)
    return np.ascontiguousarray(out).view(np.uint8).reshape(-1)


def _unshuffle(buf: np.ndarray, item: int) -> np.ndarray:
    """Undo HDF5's byte shuffle (all first bytes, then all second bytes, ...)."""
    n = buf.size // item
    out = np.empty(buf.size, np.uint8)
    out[: n * item] = buf[: n * item].reshape(item, n).T.ravel()
    out[n * item :] = buf[n * item :]  # HDF5 leaves a remainder unshuffled
    return out


def decode_chunk(buf: bytes, plan: ChunkPlan) -> np.ndarray:
    """Decode the stored bytes of one chunk into a native-endian ``plan.frame_shape`` array.

    Raises
    ------
    ValueError
        If the bytes do not decode to exactly one frame.
    """
    data = np.frombuffer(buf, np.uint8)
    for code, values in reversed(plan.filters):
        if code == FILTER_BITSHUFFLE:
            data = _unbitshuffle(data, plan, values)
        elif code == FILTER_DEFLATE:
            try:
                data = np.frombuffer(zlib.decompress(data.data), np.uint8)
            except zlib.error as exc:
                raise ValueError(f"deflate: {exc}") from None
        elif code == FILTER_SHUFFLE:
            data = _unshuffle(data, plan.dtype.itemsize)
    if data.size != plan.frame_bytes:
        raise ValueError(f"chunk decodes to {data.size} bytes, expected {plan.frame_bytes}")
    frame = data.view(plan.dtype).reshape(plan.frame_shape)
    native = plan.dtype.newbyteorder("=")
    if frame.dtype != native or not frame.flags.writeable:
        return frame.astype(native)
    return frame


def _default_block(item: int) -> int:
    """bitshuffle's default block size in elements (``bshuf_default_block_size``)."""
    return max(128, (8192 // item) // 8 * 8)


def can_encode(plan: ChunkPlan) -> bool:
    """Whether :func:`encode_chunk` writes chunks of ``plan`` (no filter, or bitshuffle
    with LZ4 alone: what crystalscope writes)."""
    if not plan.filters:
        return True
    if len(plan.filters) != 1:
        return False
    code, values = plan.filters[0]
    return (
        code == FILTER_BITSHUFFLE
        and len(values) >= 5
        and values[4] == BSHUF_LZ4
        and plan.dtype.itemsize in (1, 2, 4, 8)
    )


def encode_chunk(frame: np.ndarray, plan: ChunkPlan) -> bytes:
    """The bytes HDF5 stores for ``frame`` as one chunk of ``plan`` (see :func:`can_encode`),
    compressed without holding HDF5's lock, to be written with ``write_direct_chunk``."""
    values = np.ascontiguousarray(frame, dtype=plan.dtype).reshape(-1)
    if values.size * plan.dtype.itemsize != plan.frame_bytes:
        raise ValueError(f"frame of shape {frame.shape} is not a chunk of {plan.frame_shape}")
    if not plan.filters:
        return values.tobytes()
    item = plan.dtype.itemsize
    block = plan.filters[0][1][3] or _default_block(item)
    body = bitshuffle.compress_lz4(values.view(f"u{item}"), block)
    return struct.pack(">QI", plan.frame_bytes, block * item) + body.tobytes()

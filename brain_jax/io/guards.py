"""Checks made before any decoder runs on a file that may be corrupt or hostile.

Decoders allocate what a header declares (a 1 KB HDF5 file can declare 10^10 pixels; a zlib stream
inflates ~1000x), and scipy's MATLAB v5 reader indexes a C table with the element type code read from
the file, so a flipped byte there crashes the process instead of raising (scipy documents that reader
as not hardened for untrusted input). Every reader of user files (``brain_jax.io.slices`` and the
dataset builders in ``input_pipeline``) goes through these checks, so that a bad file gives one
ValueError naming it, never a crash, a hang or a memory blow-up.
"""
from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

MAX_PIXELS = 1 << 24  # one 2-D slice: 4096 x 4096 (MRI slices are at most ~1024 x 1024)
MAX_VOXELS = 1 << 27  # a whole volume read at once (NIfTI, multi-frame DICOM): 512 x 512 x 512
MAX_INFLATED_BYTES = 1 << 28  # 256 MiB: what one file's compressed streams may inflate to
MAX_FILE_BYTES = 1 << 28  # a file (or zip member) read whole into memory

# MATLAB v5 element type codes (miINT8 .. miUTF32); 8, 10 and 11 are reserved, 0 and >= 19 unused.
_MI_TYPES = {1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 14, 15, 16, 17, 18}
_MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 5, 6, 14, 15
_MAX_NESTING = 32  # cells / structs inside each other


def one_line(e: BaseException, limit: int = 300) -> str:
    """``Type: message`` of a library's exception on one line (CLI errors are one line), shortened."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_size(shape, where: str, what: str, limit: int = MAX_PIXELS) -> None:
    """Refuse a declared array ``shape`` with more than ``limit`` elements (before anything is read)."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ValueError(f"{where}: {what} declares a negative size {tuple(dims)}")
    n = int(np.prod(dims, dtype=object)) if dims else 1
    if n > limit:
        raise ValueError(f"{where}: {what} declares shape {tuple(dims)} = {n:,} elements, over the limit of "
                         f"{limit:,}; a corrupt header, or not an MRI slice")


def check_file_size(path: Path, where: str, limit: int = MAX_FILE_BYTES) -> None:
    """Refuse a file larger than ``limit`` bytes before it is read whole into memory."""
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{where}: {size:,} bytes, over the limit of {limit:,} for a file read into memory")


def inflate(data: bytes, where: str, limit: int = MAX_INFLATED_BYTES, wbits: int = zlib.MAX_WBITS) -> bytes:
    """Decompress a zlib (``wbits=15``) or raw deflate (``wbits=-15``) stream, refusing to produce more
    than ``limit`` bytes (decompression bombs)."""
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise ValueError(f"{where}: corrupt compressed data ({e})") from None
    if len(out) > limit:
        raise ValueError(f"{where}: compressed data inflates to more than {limit:,} bytes (a decompression bomb?)")
    return out


# ------------------------------------------------------------------------------------ MATLAB v5


def check_mat5(data: bytes, where: str, limit: int = MAX_INFLATED_BYTES) -> None:
    """Walk every element of a MATLAB v5 file before scipy reads it: valid type codes, lengths inside
    the file, array dimensions within ``MAX_VOXELS``, compressed elements inflating to at most ``limit``
    bytes in all. Raises ValueError naming ``where`` and the byte offset at fault."""
    if len(data) < 128:
        raise ValueError(f"{where}: MATLAB v5 header cut short ({len(data)} of 128 bytes)")
    endian = {b"IM": "<", b"MI": ">"}.get(bytes(data[126:128]))
    if endian is None:
        raise ValueError(f"{where}: not a MATLAB v5 file (no IM/MI endian mark at byte 126)")
    budget = [limit]
    _walk_mat5(memoryview(data), 128, len(data), endian, where, budget, depth=0, in_matrix=False)


def _walk_mat5(buf: memoryview, pos: int, end: int, e: str, where: str, budget: list[int], depth: int,
               in_matrix: bool) -> None:
    if depth > _MAX_NESTING:
        raise ValueError(f"{where}: MATLAB arrays nested more than {_MAX_NESTING} deep")
    index = 0
    while pos < end:
        if end - pos < 8:
            raise ValueError(f"{where}: MATLAB element tag cut short at byte {pos}")
        (word,) = struct.unpack_from(e + "I", buf, pos)
        if word >> 16:  # small element: type and size share the first 4 bytes, data in the next 4
            mtype, nbytes, body, step = word & 0xFFFF, word >> 16, pos + 4, 8
            if nbytes > 4:
                raise ValueError(f"{where}: MATLAB small element at byte {pos} claims {nbytes} bytes (at most 4)")
        else:
            mtype, (nbytes,) = word, struct.unpack_from(e + "I", buf, pos + 4)
            body = pos + 8
            # data elements are padded to 8 bytes; matrices are multiples of 8, compressed ones unpadded
            step = 8 + nbytes + (0 if mtype in (_MI_MATRIX, _MI_COMPRESSED) else -nbytes % 8)
            if body + nbytes > end:
                raise ValueError(f"{where}: MATLAB element at byte {pos} needs {nbytes} bytes, "
                                 f"{end - body} left (truncated file?)")
        if mtype not in _MI_TYPES:
            raise ValueError(f"{where}: invalid MATLAB data type code {mtype} at byte {pos} (corrupt file)")
        if in_matrix and index == 1:
            _check_mat5_dims(buf[body:body + nbytes], mtype, e, where, pos)
        if mtype == _MI_COMPRESSED:
            compressed = bytes(buf[body:body + nbytes])
            _peek_compressed_dims(compressed, e, where, pos)
            inner = inflate(compressed, where, budget[0])
            budget[0] -= len(inner)
            _walk_mat5(memoryview(inner), 0, len(inner), e, where, budget, depth + 1, in_matrix=False)
        elif mtype == _MI_MATRIX:
            _walk_mat5(buf, body, body + nbytes, e, where, budget, depth + 1, in_matrix=True)
        pos += step
        index += 1


def _peek_compressed_dims(compressed: bytes, e: str, where: str, pos: int) -> None:
    """Refuse a compressed array that declares too many elements from its first bytes, before
    inflating the rest: tag (8 bytes), array flags (16), then the dimensions' tag and values."""
    try:
        head = zlib.decompressobj().decompress(compressed, 64)
    except zlib.error as err:
        raise ValueError(f"{where}: corrupt compressed data at byte {pos} ({err})") from None
    if len(head) < 40 or struct.unpack_from(e + "I", head, 0)[0] != _MI_MATRIX:
        return  # not the usual layout: the full walk after a bounded inflate checks it
    mtype, nbytes = struct.unpack_from(e + "II", head, 24)
    if mtype in (_MI_INT32, _MI_UINT32) and 32 + nbytes <= len(head):
        _check_mat5_dims(memoryview(head)[32:32 + nbytes], mtype, e, where, pos)


def _check_mat5_dims(body: memoryview, mtype: int, e: str, where: str, pos: int) -> None:
    """The second element of a matrix is its dimensions: int32 (uint32 from some writers), >= 2 of them."""
    if mtype not in (_MI_INT32, _MI_UINT32) or len(body) < 8 or len(body) % 4:
        raise ValueError(f"{where}: MATLAB array dimensions at byte {pos} are malformed")
    dims = struct.unpack_from(f"{e}{len(body) // 4}{'i' if mtype == _MI_INT32 else 'I'}", body)
    check_size(dims, where, f"MATLAB array at byte {pos}", MAX_VOXELS)


# ----------------------------------------------------------------------------------- HDF5 (v7.3)


def h5_array(group, name: str, where: str, what: str, limit: int = MAX_PIXELS) -> np.ndarray:
    """Read dataset ``name`` of an open h5py group after checking that it is a plain numeric dataset
    stored in this file (no external link, external raw storage or virtual mapping to other files) of
    at most ``limit`` elements."""
    import h5py

    link = group.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise ValueError(f"{where}: {what} is a link to another file ({link.filename}); refused")
    ds = group[name]
    if not isinstance(ds, h5py.Dataset):
        raise ValueError(f"{where}: {what} is a {type(ds).__name__}, expected a numeric array")
    if ds.external or ds.is_virtual:
        raise ValueError(f"{where}: {what} stores its data in other files; refused")
    if ds.dtype.kind not in "biuf":
        raise ValueError(f"{where}: {what} has dtype {ds.dtype}; expected a numeric array")
    check_size(ds.shape, where, what, limit)
    return np.asarray(ds[()])


# ---------------------------------------------------------------------------------------- images


# Pillow identifies a file by its content, not its name: only these decoders are tried, so that, say, an
# EPS file named .png is refused instead of handed to Ghostscript.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")


def open_image(path: Path, where: str):
    """A PIL image opened lazily (header only) with one of ``IMAGE_FORMATS``, its size checked against
    ``MAX_PIXELS``; PIL's own decompression-bomb warning becomes this error instead of a line on stderr."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(path, formats=IMAGE_FORMATS)
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise ValueError(f"{where}: image of size {w} x {h}; expected a non-empty picture")
    try:
        check_size((h, w), where, "image")
    except ValueError:
        im.close()
        raise
    return im

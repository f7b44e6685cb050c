"""Read one 2-D MRI slice from an image, MATLAB, DICOM or NIfTI file, in its original intensities.

Used by ``brain-jax predict`` so a user can point the trained model at whatever file they hold, and by the
``unlabelled_mri`` builder, which reads every slice of a file at once (``read_slices``: the volume or the
multi-frame pixel data is decoded once).
Every reader returns a :class:`Slice` whose ``image`` is a float32 (rows, cols) array in the file's own
intensity units (no normalisation: the predictor applies the loader's transform), with row 0 at the top
of the picture as a viewer would show it, and ``pixel_spacing_mm`` = (row spacing, col spacing), i.e.
(distance between adjacent rows, distance between adjacent columns), or ``None`` when the file does
not say.

Format notes (conventions chosen here, documented because they change numbers downstream):

- PNG / JPEG / BMP / TIFF (Pillow): gray images are read as-is (8/16-bit or float). RGB(A) and palette
  images are turned into gray with ITU-R BT.601 luma, ``0.299 R + 0.587 G + 0.114 B`` in float (no
  rounding; a gray picture stored as RGB keeps its values exactly); alpha is dropped. Other modes
  (CMYK, multi-band) and multi-page TIFFs are refused. No spacing (DPI is not a scanner spacing).
- MATLAB .mat in the Figshare layout (group/struct ``cjdata`` with ``image`` and optionally
  ``tumorMask``): v7.3 files are HDF5 and read with h5py, whose arrays come out transposed relative to
  MATLAB, so ``.T`` is applied; older v5 files are read with ``scipy.io.loadmat`` (already in MATLAB
  order). Spacing is the dataset's documented 0.49 mm at 512 pixels, i.e. ``0.49 * 512 / n`` per axis
  for an ``n``-pixel axis. A top-level ``image`` variable is accepted too (spacing unknown).
- DICOM (pydicom): ``RescaleSlope`` / ``RescaleIntercept`` are applied; ``PixelSpacing`` is
  (row, col) by the standard; MONOCHROME1 is inverted so that bright means high signal. Multi-frame
  files need an explicit frame index. Files without an extension are recognised by the ``DICM`` magic.
- NIfTI (.nii / .nii.gz, nibabel, scaling applied): the volume is first reoriented to the closest
  RAS+ axes, then axial slice ``k`` (default: the middle one) is returned in the radiological display
  used by DICOM axial scans: rows run anterior -> posterior (top to bottom) and columns run patient
  right -> left, so the patient's left is on the right of the picture. Spacing is (zoom along the
  A-P axis, zoom along the R-L axis). 2-D files are treated as a single axial slice.

Corrupt or hostile files: sizes declared in headers are checked before anything is decoded
(``brain_jax.io.guards``: at most ``MAX_PIXELS`` per slice and ``MAX_VOXELS`` per volume read whole,
zlib streams bounded, MATLAB v5 element codes checked before scipy sees them, no HDF5 links or
storage in other files). Any failure is one ValueError that starts with the file's path; warnings and
log lines the libraries emit while reading become the slice's ``notes`` instead of lines on stderr.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brain_jax.io.guards import (MAX_VOXELS, check_file_size, check_mat5, check_size, h5_array, inflate, one_line,
                                 open_image)

# Figshare brain tumour dataset: 0.49 mm pixels at 512 x 512 (the dataset's stated in-plane spacing).
FIGSHARE_SPACING_MM = 0.49
FIGSHARE_NATIVE_SIZE = 512

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAT_EXTS = (".mat",)
DICOM_EXTS = (".dcm", ".dicom")
NIFTI_EXTS = (".nii", ".nii.gz")
SUPPORTED = IMAGE_EXTS + MAT_EXTS + DICOM_EXTS + NIFTI_EXTS

# BT.601 luma weights for RGB -> gray.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Slice:
    """One 2-D slice as read from disk.

    image: float32 (rows, cols), original intensities.
    pixel_spacing_mm: (row, col) spacing in mm, or None when the file does not carry it.
    source_format: "png", "jpeg", "bmp", "tiff", "mat-v7.3", "mat-v5", "dicom" or "nifti".
    path: the file it came from.
    mask: uint8 (rows, cols) 0/1 ground truth when the file carries one (Figshare ``tumorMask``).
    notes: human-readable remarks on conversions applied (e.g. "RGB converted to gray").
    """

    image: np.ndarray
    pixel_spacing_mm: tuple[float, float] | None
    source_format: str
    path: str
    mask: np.ndarray | None = None
    notes: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]


def detect_format(path: str | os.PathLike) -> str:
    """The reader family for ``path``: "image", "mat", "dicom" or "nifti"; ValueError if unknown."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(NIFTI_EXTS):
        return "nifti"
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTS:
        return "image"
    if suffix in MAT_EXTS:
        return "mat"
    if suffix in DICOM_EXTS:
        return "dicom"
    if suffix == "" and _has_dicom_magic(p):
        return "dicom"
    raise ValueError(
        f"{p}: unknown file type {suffix or '(no extension)'!r}; expected one of "
        f"{', '.join(SUPPORTED)} (or an extension-less DICOM file)"
    )


def read_slice(path: str | os.PathLike, slice_index: int | None = None) -> Slice:
    """Read one 2-D slice from ``path``.

    ``slice_index`` picks the axial slice of a NIfTI volume (default: the middle one) or the frame of
    a multi-frame DICOM (required there); it is refused for formats that hold a single slice.
    Raises FileNotFoundError for a missing file and ValueError (naming the file and what was
    expected) for anything unreadable, of the wrong shape, or empty.
    """
    p, kind = _checked_path(path)
    if slice_index is not None and kind not in ("nifti", "dicom"):
        raise ValueError(f"{p}: a slice index was given but a {kind} file holds a single slice")
    reader = {"image": _read_pil, "mat": _read_mat, "dicom": _read_dicom, "nifti": _read_nifti}[kind]
    sl, notes = _reading(p, kind, lambda: reader(p, slice_index) if kind in ("nifti", "dicom") else reader(p))
    return _validated(dataclasses.replace(sl, notes=sl.notes + notes))


def read_slices(path: str | os.PathLike) -> Iterator[Slice]:
    """Every 2-D slice of ``path``, the file read once: each axial slice of a NIfTI volume (``k`` = 0 .. n-1),
    each frame of a multi-frame DICOM, the one slice of the other formats.

    Slice ``k`` is what ``read_slice(path, k)`` returns (``read_slice(path)`` for single-slice files): the
    same conversions, spacing, notes and checks. The file is opened and decoded before this returns, so an
    unreadable file raises here (the errors of ``read_slice``); a slice failing the checks (NaN values, ...)
    raises when the iteration reaches it.
    """
    p, kind = _checked_path(path)
    makers: list[Callable[[], Slice]]
    if kind == "nifti":
        (data, zooms), notes = _reading(p, kind, lambda: _load_nifti(p))
        makers = [functools.partial(_nifti_slice, p, data, zooms, k) for k in range(data.shape[2])]
    elif kind == "dicom":
        (ds, frames, spp), notes = _reading(p, kind, lambda: _load_dicom_frames(p))
        makers = [functools.partial(_dicom_slice, p, ds, frame, spp) for frame in frames]
    else:
        reader = _read_mat if kind == "mat" else _read_pil
        one, notes = _reading(p, kind, lambda: reader(p))
        makers = [lambda: one]

    def slices() -> Iterator[Slice]:
        for make in makers:
            sl = make()
            yield _validated(dataclasses.replace(sl, notes=sl.notes + notes))

    return slices()


# ----------------------------------------------------------------------------------------- helpers


def _checked_path(path: str | os.PathLike) -> tuple[Path, str]:
    """(path, reader family) of an existing file; FileNotFoundError / ValueError naming it otherwise."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise ValueError(f"{p}: is a folder; expected an image, .mat, DICOM or NIfTI file")
    return p, detect_format(p)


def _reading(p: Path, kind: str, read: Callable[[], Any]) -> tuple[Any, tuple[str, ...]]:
    """``read()`` with the libraries' messages collected as notes: (its result, the notes). Any failure is one
    ValueError starting with the file's path."""
    notes: list[str] = []
    try:
        with _library_messages(notes):
            out = read()
    except Exception as e:  # noqa: BLE001  (h5py, pydicom, nibabel, PIL raise many types on corrupt files)
        if isinstance(e, (ValueError, FileNotFoundError)) and str(e).startswith(f"{p}:"):
            raise  # ours: already names the file and what was expected
        raise ValueError(f"{p}: cannot read as {kind} ({one_line(e)})") from e
    return out, tuple(dict.fromkeys(notes))


class _NoteHandler(logging.Handler):
    """Log records -> one-line notes."""

    def __init__(self, notes: list[str]):
        super().__init__()
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.append(" ".join(f"{record.name}: {record.getMessage()}".split()))


@contextlib.contextmanager
def _library_messages(notes: list[str]) -> Iterator[None]:
    """Collect the warnings and log lines (nibabel logs header fixes to stderr) of one read into
    ``notes``; deprecation warnings pass through to the caller's filters."""
    loggers = [logging.getLogger(n) for n in ("nibabel", "pydicom")]
    saved = [(lg.handlers, lg.propagate) for lg in loggers]
    handler = _NoteHandler(notes)
    for lg in loggers:
        lg.handlers, lg.propagate = [handler], False
    # nibabel's own StreamHandler sits on "nibabel.global": removed meanwhile, its records go to `handler`
    glob = logging.getLogger("nibabel.global")
    glob_saved = (glob.handlers, glob.propagate)
    glob.handlers, glob.propagate = [], True
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved):
            lg.handlers, lg.propagate = handlers, propagate
        glob.handlers, glob.propagate = glob_saved
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        else:
            notes.append(" ".join(f"{w.category.__name__}: {w.message}".split()))


def _has_dicom_magic(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _validated(sl: Slice) -> Slice:
    """Check the common post-conditions every reader must meet."""
    img = sl.image
    if img.ndim != 2:
        raise ValueError(f"{sl.path}: expected a 2-D slice, got an array of shape {img.shape}")
    if img.size == 0 or min(img.shape) == 0:
        raise ValueError(f"{sl.path}: the image is empty (shape {img.shape})")
    if not np.all(np.isfinite(img)):
        raise ValueError(f"{sl.path}: the image contains NaN or infinite values")
    if sl.mask is not None and sl.mask.shape != img.shape:
        raise ValueError(
            f"{sl.path}: the ground-truth mask has shape {sl.mask.shape} but the image has {img.shape}"
        )
    sp = sl.pixel_spacing_mm
    if sp is not None and (len(sp) != 2 or not all(np.isfinite(s) and s > 0 for s in sp)):
        raise ValueError(f"{sl.path}: invalid pixel spacing {sp}; expected two positive numbers (mm)")
    return dataclasses.replace(sl, image=np.ascontiguousarray(img, dtype=np.float32))


def _to_gray(arr: np.ndarray, p: Path, mode: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """(H,W) as-is; (H,W,3|4) -> BT.601 luma, alpha dropped; (H,W,2) gray+alpha -> gray."""
    if arr.ndim == 2:
        return arr.astype(np.float32), ()
    if arr.ndim == 3 and arr.shape[-1] == 2:
        return arr[..., 0].astype(np.float32), ("alpha channel dropped",)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        gray = arr[..., :3].astype(np.float64) @ _LUMA
        notes = ("RGB converted to gray (BT.601 luma)",)
        if arr.shape[-1] == 4:
            notes += ("alpha channel dropped",)
        return gray.astype(np.float32), notes
    raise ValueError(
        f"{p}: unsupported channel layout {arr.shape} (mode {mode}); expected gray, RGB or RGBA"
    )


def _read_pil(p: Path) -> Slice:
    from PIL import UnidentifiedImageError

    try:
        im = open_image(p, str(p))
    except UnidentifiedImageError:
        raise ValueError(f"{p}: not a readable image file (PIL cannot identify it)") from None
    with im:
        if getattr(im, "n_frames", 1) > 1:
            raise ValueError(f"{p}: has {im.n_frames} frames/pages; expected a single 2-D image")
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode == "1":
            im = im.convert("L")
        elif mode not in ("L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"):
            raise ValueError(f"{p}: unsupported image mode {mode!r}; expected gray, RGB or RGBA")
        im.load()
        arr = np.asarray(im)
    gray, notes = _to_gray(arr, p, mode)
    fmt = {".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}.get(
        p.suffix.lower(), p.suffix.lower().lstrip(".")
    )
    return Slice(gray, None, fmt, str(p), None, notes)


def _figshare_spacing(shape: tuple[int, ...]) -> tuple[float, float]:
    s = FIGSHARE_SPACING_MM * FIGSHARE_NATIVE_SIZE
    return (s / shape[0], s / shape[1])


def _binary_mask(m: np.ndarray, p: Path, key: str) -> np.ndarray:
    m = np.asarray(m)
    vals = np.unique(m)
    if not np.all(np.isin(vals, (0, 1))):
        raise ValueError(f"{p}: {key} should hold 0/1 values, found {vals[:8].tolist()}")
    return m.astype(np.uint8)


def _read_mat(p: Path) -> Slice:
    import h5py

    if h5py.is_hdf5(p):
        return _read_mat73(p)
    return _read_mat5(p)


def _read_mat73(p: Path) -> Slice:
    import h5py

    where = str(p)
    with h5py.File(p, "r") as f:
        link = f.get("cjdata", getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise ValueError(f"{p}: cjdata is a link to another file ({link.filename!r}); refused")
        if link is not None and isinstance(f["cjdata"], h5py.Group) and "image" in f["cjdata"]:
            g = f["cjdata"]
            # h5py sees MATLAB's column-major arrays transposed.
            image = h5_array(g, "image", where, "cjdata/image").T
            _check_numeric_2d(image, p, "cjdata/image")
            mask = None
            if "tumorMask" in g:
                mask = _binary_mask(h5_array(g, "tumorMask", where, "cjdata/tumorMask").T, p, "cjdata/tumorMask")
            return Slice(image.astype(np.float32), _figshare_spacing(image.shape), "mat-v7.3", str(p), mask)
        if "image" in f and isinstance(f.get("image", getlink=True), h5py.HardLink):
            image = h5_array(f, "image", where, "image").T
            _check_numeric_2d(image, p, "image")
            return Slice(image.astype(np.float32), None, "mat-v7.3", str(p))
        keys = ", ".join(sorted(f.keys())) or "(none)"
    raise ValueError(f"{p}: MATLAB v7.3 file without cjdata/image or image; found keys: {keys}")


def _read_mat5(p: Path) -> Slice:
    import scipy.io

    check_file_size(p, str(p))
    data = p.read_bytes()
    check_mat5(data, str(p))
    try:
        d = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=False)
    except Exception as e:  # noqa: BLE001  (scipy raises many types on corrupt files)
        raise ValueError(f"{p}: not a readable MATLAB file ({one_line(e)})") from e
    if "cjdata" in d and hasattr(d["cjdata"], "image"):
        cj = d["cjdata"]
        image = np.asarray(cj.image)
        _check_numeric_2d(image, p, "cjdata.image")
        mask = None
        if hasattr(cj, "tumorMask"):
            mask = _binary_mask(cj.tumorMask, p, "cjdata.tumorMask")
        return Slice(image.astype(np.float32), _figshare_spacing(image.shape), "mat-v5", str(p), mask)
    if "image" in d:
        image = np.asarray(d["image"])
        _check_numeric_2d(image, p, "image")
        return Slice(image.astype(np.float32), None, "mat-v5", str(p))
    keys = ", ".join(k for k in sorted(d) if not k.startswith("__")) or "(none)"
    raise ValueError(f"{p}: MATLAB file without cjdata.image or image; found variables: {keys}")


def _check_numeric_2d(a: np.ndarray, p: Path, key: str) -> None:
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{p}: {key} has dtype {a.dtype}; expected a numeric 2-D array")
    if a.ndim != 2:
        raise ValueError(f"{p}: {key} has shape {a.shape}; expected a 2-D array")
    if a.size == 0:
        raise ValueError(f"{p}: {key} is empty (shape {a.shape}); expected a 2-D image")


def _open_dicom(p: Path):
    """The dataset, its samples per pixel and its number of frames, checked before any pixel is decoded."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    _check_deflated_dicom(p)
    try:
        # Large values (the pixel data) are read only when used, i.e. after the size checks below.
        ds = pydicom.dcmread(p, defer_size="1 MB")
    except InvalidDicomError as e:
        raise ValueError(f"{p}: not a DICOM file ({one_line(e)})") from e
    if "PixelData" not in ds:
        raise ValueError(f"{p}: DICOM file has no pixel data")
    spp, nframes = _check_dicom_pixels(ds, p)
    return ds, spp, nframes


def _read_dicom(p: Path, frame: int | None) -> Slice:
    ds, spp, nframes = _open_dicom(p)
    if nframes > 1 and frame is None:
        raise ValueError(f"{p}: multi-frame DICOM with {nframes} frames; pass a frame index (--slice)")
    if nframes > 1 and not 0 <= frame < nframes:
        raise ValueError(f"{p}: frame {frame} out of range; the file has {nframes} frames (0..{nframes - 1})")
    if nframes == 1 and frame not in (None, 0):
        raise ValueError(f"{p}: single-frame DICOM; slice index {frame} out of range")
    arr = np.asarray(ds.pixel_array)
    if nframes > 1:
        arr = arr[frame]
    return _dicom_slice(p, ds, arr, spp)


def _load_dicom_frames(p: Path):
    """(dataset, every frame's pixels as decoded, samples per pixel): the pixel data decoded once."""
    ds, spp, nframes = _open_dicom(p)
    arr = np.asarray(ds.pixel_array)
    return ds, (arr if nframes > 1 else arr[None]), spp


def _dicom_slice(p: Path, ds, arr: np.ndarray, spp: int) -> Slice:
    """One decoded frame -> its Slice: rescale, MONOCHROME1 inverted, colour to gray, ``PixelSpacing``."""
    notes: tuple[str, ...] = ()
    if spp == 1:
        img = arr.astype(np.float64)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        img = img * slope + intercept
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            img = img.max() + img.min() - img  # MONOCHROME1: low values are bright
            notes += ("MONOCHROME1 inverted",)
    else:
        img, n2 = _to_gray(arr, p, str(ds.get("PhotometricInterpretation", "")))
        notes += n2
    spacing = None
    if ds.get("PixelSpacing") is not None:
        values = ds.PixelSpacing if isinstance(ds.PixelSpacing, Sequence) else [ds.PixelSpacing]
        if len(values) == 2:
            spacing = (float(values[0]), float(values[1]))  # (row, col) per the standard
        else:
            notes += (f"PixelSpacing with {len(values)} value(s) ignored: expected (row, column)",)
    return Slice(np.asarray(img, np.float32), spacing, "dicom", str(p), None, notes)


def _check_deflated_dicom(p: Path) -> None:
    """A deflated DICOM dataset is inflated whole by pydicom: bound what it inflates to first."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        meta = pydicom.filereader.read_file_meta_info(p)
    except Exception:  # noqa: BLE001  (not DICOM, or a broken meta group: dcmread reports it)
        return
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    check_file_size(p, str(p))
    # The dataset follows the meta group: 128-byte preamble, "DICM", the 12-byte group length element.
    start = 132 + 12 + int(meta.get("FileMetaInformationGroupLength", 0))
    inflate(p.read_bytes()[start:], str(p), wbits=-15)


def _check_dicom_pixels(ds, p: Path) -> tuple[int, int]:
    """Before decoding: a decoder for the transfer syntax is installed and the declared frame and
    volume sizes are within the limits. Returns (samples per pixel, number of frames)."""
    from pydicom.pixels import get_decoder

    tsuid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsuid is None:
        raise ValueError(f"{p}: DICOM file without a transfer syntax (0002,0010); cannot decode its pixels")
    # The UID is file content: a damaged one may hold control characters, so it is shown as repr().
    name, uid = repr(str(tsuid.name)), repr(str(tsuid))
    try:
        decoder = get_decoder(tsuid)
    except NotImplementedError:
        raise ValueError(f"{p}: pixel data in transfer syntax {name}, which pydicom cannot decode") from None
    if not decoder.is_available:
        raise ValueError(
            f"{p}: pixel data compressed as {name} ({uid}) and no decoder for it is installed; "
            f"install one of: {'; '.join(decoder.missing_dependencies)}, or decompress the file (e.g. dcmdjpeg)")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    if rows <= 0 or cols <= 0 or nframes <= 0 or spp not in (1, 3, 4):
        raise ValueError(f"{p}: DICOM declares {nframes} frame(s) of {rows} x {cols} x {spp} samples; "
                         "expected positive sizes and 1, 3 or 4 samples per pixel")
    check_size((rows, cols), str(p), "DICOM frame")
    check_size((nframes, rows, cols, spp), str(p), "DICOM pixel data", MAX_VOXELS)
    return spp, nframes


def _read_nifti(p: Path, index: int | None) -> Slice:
    data, zooms = _load_nifti(p)
    return _nifti_slice(p, data, zooms, data.shape[2] // 2 if index is None else index)


def _load_nifti(p: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """The volume reoriented to the closest RAS+ axes (x, y, axial slice), read once, and its (x, y) zooms."""
    import nibabel as nib

    try:
        img = nib.load(str(p))  # reads the header only
    except Exception as e:  # noqa: BLE001  (nibabel raises many types on corrupt headers)
        raise ValueError(f"{p}: not a readable NIfTI file ({one_line(e)})") from e
    shape = tuple(img.shape)
    check_size(shape, str(p), "NIfTI volume", MAX_VOXELS)
    if 0 in shape:
        raise ValueError(f"{p}: NIfTI volume of shape {shape} is empty")
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) not in (2, 3):
        raise ValueError(f"{p}: NIfTI array of shape {img.shape}; expected a 2-D slice or a 3-D volume")
    if tuple(img.shape) != shape + (1,) * (3 - len(shape)):
        # 2-D slice or trailing singleton time axis -> a 3-D volume; voxel sizes come from the affine.
        data3 = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape + (1,) * (3 - len(shape)))
        img = nib.Nifti1Image(data3, img.affine)
    can = nib.as_closest_canonical(img)
    data = np.asarray(can.get_fdata(dtype=np.float32))
    zx, zy = (float(z) for z in can.header.get_zooms()[:2])
    return data, (zx, zy)


def _nifti_slice(p: Path, data: np.ndarray, zooms: tuple[float, float], k: int) -> Slice:
    """Axial slice ``k`` of a volume from ``_load_nifti`` in radiological display."""
    zx, zy = zooms
    n = data.shape[2]
    if not 0 <= k < n:
        raise ValueError(f"{p}: axial slice {k} out of range; the volume has {n} axial slices (0..{n - 1})")
    # RAS+ voxel axes: x grows toward the patient's right, y toward anterior. Radiological display:
    # rows = anterior->posterior (reverse y), cols = patient right->left (reverse x).
    image = data[::-1, ::-1, k].T
    notes = (f"axial slice {k} of {n}",) if n > 1 else ()
    return Slice(image, (zy, zx), "nifti", str(p), None, notes)

"""Small valid files in the formats the readers take, written the way the real tools write them.

Tests, benchmarks and the fuzz suite's seeds all use these, so there is one idea of what a valid
Figshare ``.mat``, DICOM or NIfTI file looks like:

- Figshare ``N.mat``: MATLAB -v7.3 is HDF5 behind a 512-byte text header; MATLAB stores arrays
  column-major, so h5py sees every matrix transposed (written here as ``.T``); ``label`` is a double,
  ``PID`` uint16 character codes. ``version="5"`` writes the older format with scipy (MATLAB order).
- ``cvind.mat``: one row of fold ids (doubles), as shipped.
- DICOM: an MR image with explicit-VR little-endian 16-bit signed pixels, rescale slope/intercept and
  ``PixelSpacing`` (row, column); optionally re-encoded with a compressed transfer syntax pydicom can
  encode without extra packages (RLE Lossless).
- NIfTI-1 through nibabel, with the affine given.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Fri Nov 27 05:00:00 2026 HDF5 schema 1.00 ."


def _stamp_matlab_header(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.write(MATLAB_HEADER.ljust(512, b" "))


def write_figshare_mat(path: str | os.PathLike, image: np.ndarray, mask: np.ndarray | None = None,
                       label: float = 1.0, pid: str = "P0", *, version: str = "7.3") -> Path:
    """A ``cjdata`` slice file (image, tumorMask, label, PID, tumorBorder) as MATLAB writes it.

    ``image`` keeps its dtype (the public files hold int16); ``mask`` defaults to all zeros.
    ``version``: "7.3" (HDF5, the public files), "7" (v5 layout, zlib-compressed: MATLAB's default
    ``-v7``) or "5" (v5 layout, uncompressed: ``-v6``).
    """
    path = Path(path)
    image = np.asarray(image)
    mask = np.zeros(image.shape, np.uint8) if mask is None else np.asarray(mask, np.uint8)
    if version in ("5", "7"):
        from scipy import io as sio

        sio.savemat(path, {"cjdata": {"image": image, "tumorMask": mask, "label": float(label), "PID": pid,
                                      "tumorBorder": np.zeros((1, 4))}}, do_compression=version == "7")
        return path
    if version != "7.3":
        raise ValueError(f"version {version!r}: expected '7.3', '7' or '5'")
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        g = f.create_group("cjdata")
        g.create_dataset("image", data=image.T)
        g.create_dataset("tumorMask", data=mask.T)
        g.create_dataset("label", data=np.array([[label]], np.float64))
        g.create_dataset("PID", data=np.array([[ord(c) for c in pid]], np.uint16).T)
        g.create_dataset("tumorBorder", data=np.zeros((1, 4)))
        g["PID"].attrs["MATLAB_class"] = np.bytes_("char")
    _stamp_matlab_header(path)
    return path


def write_cvind(path: str | os.PathLike, folds) -> Path:
    """``cvind.mat`` (v7.3): the fold id (1..5) of image ``n`` at position ``n - 1``."""
    import h5py

    path = Path(path)
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("cvind", data=np.asarray(folds, np.float64)[None, :])
    _stamp_matlab_header(path)
    return path


def write_dicom(path: str | os.PathLike, pixels: np.ndarray, *, spacing: tuple[float, float] | None = (0.5, 0.8),
                slope: float = 1.0, intercept: float = 0.0, photometric: str = "MONOCHROME2",
                rle: bool = False) -> Path:
    """An MR DICOM file of int16 ``pixels`` (rows, cols), or (frames, rows, cols) for a multi-frame file.

    ``spacing=None`` leaves ``PixelSpacing`` out; ``rle=True`` stores the pixels RLE Lossless compressed.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, RLELossless, generate_uid

    path = Path(path)
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = pixels.astype("<i2").tobytes()
    if rle:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: str | os.PathLike, volume: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """A NIfTI-1 file (``.nii`` or ``.nii.gz``) of ``volume`` with ``affine`` (default: 1 mm RAS)."""
    import nibabel as nib

    path = Path(path)
    nib.save(nib.Nifti1Image(np.asarray(volume), np.eye(4) if affine is None else np.asarray(affine)), path)
    return path

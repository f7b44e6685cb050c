"""Readers for single image slices given to ``brain-jax predict`` (PNG/JPEG/BMP/TIFF, .mat, DICOM, NIfTI), and
for every slice of a file (``read_slices``: all axial slices of a volume, all frames of a multi-frame DICOM)."""
from brain_jax.io.slices import SUPPORTED, Slice, detect_format, read_slice, read_slices

__all__ = ["SUPPORTED", "Slice", "detect_format", "read_slice", "read_slices"]

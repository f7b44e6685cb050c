"""Readers for single image slices given to ``brain-jax predict`` (PNG/JPEG/BMP/TIFF, .mat, DICOM, NIfTI)."""
from brain_jax.io.slices import SUPPORTED, Slice, detect_format, read_slice

__all__ = ["SUPPORTED", "Slice", "detect_format", "read_slice"]

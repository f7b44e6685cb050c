"""``figshare_brain_tumor``: Jun Cheng's 3,064 T1-CE slices (233 patients) with tumour masks.

Reads the files exactly as shipped: MATLAB v7.3 (HDF5) ``N.mat`` files, either inside the four
``brainTumorDataPublic_*.zip`` archives or extracted, each holding group ``cjdata`` with ``image``,
``tumorMask``, ``label`` (1 meningioma, 2 glioma, 3 pituitary) and ``PID`` (uint16 character codes).
h5py returns MATLAB's column-major arrays transposed, so ``image`` and ``tumorMask`` get ``.T``.
A v5 ``.mat`` is read with scipy (already in MATLAB orientation). Splits ``fold1``..``fold5`` come
from ``cvind.mat`` (the authors' patient-disjoint folds), checked at build time: a patient in two
folds fails the build. Pixel spacing is 0.49 mm at 512 px, so 0.98 mm for the 256 px slices, kept at
their own size. Negative intensities (none in the public files) are clipped to 0 and counted.

Files are untrusted input: zip members are read into memory (never extracted) after their declared
size is checked, members whose names escape the archive's folder are refused, and every .mat goes
through ``brain_jax.io.guards`` (array sizes before reading, MATLAB v5 element codes and zlib streams
before scipy). Every failure is a bad input listed with its file, never a crash or a half-built dataset.
"""
from __future__ import annotations

import collections
import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np

from brain_jax.io.guards import MAX_FILE_BYTES, check_file_size, check_mat5, h5_array, one_line
from input_pipeline.builders import DATASET_CLASSES
from input_pipeline.features import BadInputs, make_example
from input_pipeline.manual import ManualBuilder

NUM_FOLDS = 5
SPACING_AT_512_MM = 0.49
# Figshare label -> index in CLASS_NAMES (glioma, meningioma, notumor, pituitary).
LABEL_MAP = {1: 1, 2: 0, 3: 3}
_MAT_NAME = re.compile(r"(?:^|[/\\])(\d+)\.mat$")  # zips made on Windows may use backslashes

_INSTRUCTIONS = """\
Download the Figshare brain tumour dataset (Jun Cheng, doi:10.6084/m9.figshare.1512427) by hand:
the four zips brainTumorDataPublic_1-766.zip, _767-1532.zip, _1533-2298.zip, _2299-3064.zip and
cvind.mat. Put them (or the extracted N.mat files) plus cvind.mat in one folder and pass it as
--manual-dir (tfds: DownloadConfig(manual_dir=...)).
"""


class MatRecord(dict):
    """image (H, W) int, mask (H, W) 0/1, label (1..3), pid (str)."""


def _read_h5(data: bytes, where: str) -> MatRecord:
    import h5py

    with h5py.File(io.BytesIO(data), "r") as f:
        if "cjdata" not in f:
            raise KeyError(f"no 'cjdata' group (found {sorted(f.keys())})")
        if not isinstance(f.get("cjdata", getlink=True), h5py.HardLink) or not isinstance(f["cjdata"], h5py.Group):
            raise KeyError("'cjdata' is not a group stored in this file")
        g = f["cjdata"]
        missing = [k for k in ("image", "tumorMask", "label", "PID") if k not in g]
        if missing:
            raise KeyError(f"cjdata lacks {missing}")
        codes = h5_array(g, "PID", where, "cjdata/PID", limit=256).ravel()
        return MatRecord(
            image=h5_array(g, "image", where, "cjdata/image").T,
            mask=h5_array(g, "tumorMask", where, "cjdata/tumorMask").T,
            label=float(h5_array(g, "label", where, "cjdata/label", limit=16).ravel()[0]),
            pid="".join(chr(int(c)) for c in codes if int(c) != 0),
        )


def _read_v5(data: bytes, where: str) -> MatRecord:
    from scipy import io as sio

    check_mat5(data, where)
    m = sio.loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=False)
    if "cjdata" not in m:
        raise KeyError(f"no 'cjdata' variable (found {sorted(k for k in m if not k.startswith('__'))})")
    c = m["cjdata"]
    missing = [k for k in ("image", "tumorMask", "label", "PID") if not hasattr(c, k)]
    if missing:
        raise KeyError(f"cjdata lacks {missing}")
    pid = c.PID
    if not isinstance(pid, str):  # char codes saved as numbers
        pid = "".join(chr(int(x)) for x in np.ravel(pid) if int(x) != 0)
    return MatRecord(image=np.asarray(c.image), mask=np.asarray(c.tumorMask),
                     label=float(np.ravel(c.label)[0]), pid=pid)


def _is_h5(data: bytes) -> bool:
    return data[512:520] == b"\x89HDF\r\n\x1a\n" or data[:8] == b"\x89HDF\r\n\x1a\n"


def read_mat(data: bytes, where: str = "N.mat") -> MatRecord:
    """Decode one N.mat (v7.3 via h5py, else v5 via scipy) and validate it; raises ValueError starting
    with ``where`` (the file or zip member it came from)."""
    is_h5 = _is_h5(data)
    try:
        rec = _read_h5(data, where) if is_h5 else _read_v5(data, where)
    except KeyError as e:
        raise ValueError(f"{where}: unexpected contents: {e.args[0]}") from None
    except Exception as e:  # noqa: BLE001  (h5py / scipy raise many types on corrupt files)
        if isinstance(e, ValueError) and str(e).startswith(f"{where}:"):
            raise  # a size or structure check: already says what is wrong
        kind = "MATLAB v7.3 (HDF5)" if is_h5 else "MATLAB v5"
        raise ValueError(f"{where}: unreadable {kind} file (truncated or corrupt?): {one_line(e)}") from None
    _check_record(rec, where)
    return rec


def _check_record(rec: MatRecord, where: str) -> None:
    """What the stored record needs: a 2-D image of whole numbers up to 65535 (the uint16 container;
    negatives are clipped and counted), a 0/1 mask of the same shape, a label 1-3 and a PID."""
    img, mask = rec["image"], rec["mask"]
    if img.dtype.kind not in "biuf" or img.ndim != 2 or img.size == 0:
        raise ValueError(f"{where}: image has dtype {img.dtype} and shape {img.shape}, expected a non-empty "
                         "2-D numeric slice")
    if not np.isfinite(img).all():
        raise ValueError(f"{where}: image contains NaN or infinite values")
    if img.max() > 65535 or (img.dtype.kind == "f" and not np.array_equal(img, np.round(img))):
        raise ValueError(f"{where}: image values must be whole numbers up to 65535 (stored as uint16), "
                         f"found maximum {img.max():g}")
    if mask.shape != img.shape:
        raise ValueError(f"{where}: tumorMask shape {mask.shape} differs from image shape {img.shape}")
    if mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"{where}: tumorMask should hold 0/1 values")
    if rec["label"] not in (1.0, 2.0, 3.0):
        raise ValueError(f"{where}: label {rec['label']:g} outside 1-3 (1 meningioma, 2 glioma, 3 pituitary)")
    if not rec["pid"]:
        raise ValueError(f"{where}: empty PID")


def read_cvind(data: bytes, where: str = "cvind.mat") -> np.ndarray:
    """Fold ids (1..5) per image from cvind.mat (v7.3 or v5); ValueError starting with ``where``."""
    try:
        if _is_h5(data):
            import h5py

            with h5py.File(io.BytesIO(data), "r") as f:
                folds = h5_array(f, "cvind", where, "cvind", limit=1 << 20).ravel()
        else:
            from scipy import io as sio

            check_mat5(data, where)
            folds = np.ravel(sio.loadmat(io.BytesIO(data))["cvind"])
    except Exception as e:  # noqa: BLE001  (h5py / scipy raise many types on corrupt files)
        if isinstance(e, ValueError) and str(e).startswith(f"{where}:"):
            raise
        raise ValueError(f"{where}: unreadable cvind.mat: {one_line(e)}") from None
    if folds.dtype.kind not in "biuf" or folds.size == 0 or not np.isfinite(folds).all():
        raise ValueError(f"{where}: expected numeric fold ids 1..{NUM_FOLDS}")
    if folds.min() < 1 or folds.max() > NUM_FOLDS or not np.array_equal(folds, np.round(folds)):
        raise ValueError(f"{where}: fold ids must be whole numbers 1..{NUM_FOLDS}, got range "
                         f"{folds.min():g}..{folds.max():g}")
    return folds.astype(np.int64)


def escapes(member: str) -> bool:
    """Whether a zip member name would land outside the archive's folder if extracted (zip slip):
    absolute, drive-qualified or with a ``..`` part."""
    parts = re.split(r"[\\/]", member)
    return member.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", member)) or ".." in parts


def find_inputs(manual_dir: Path, bad: BadInputs) -> dict[int, tuple[str, str | None]]:
    """Image number -> (path, zip member or None); extracted files win over zip members."""
    found: dict[int, tuple[str, str | None]] = {}
    for z in sorted(manual_dir.rglob("*.zip")):
        try:
            with zipfile.ZipFile(z) as zf:
                members = zf.namelist()
        except Exception as e:  # noqa: BLE001  (zipfile raises many types on corrupt archives)
            bad.add(z, f"unreadable zip: {one_line(e)}")
            continue
        for member in members:
            m = _MAT_NAME.search(member)
            if not m or member.startswith("__MACOSX"):
                continue
            if escapes(member):
                bad.add(_where(str(z), member), "member name escapes the archive's folder (zip slip); refused")
                continue
            found.setdefault(int(m.group(1)), (str(z), member))
    for p in sorted(manual_dir.rglob("*.mat")):
        m = _MAT_NAME.search(p.name)
        if m:
            found[int(m.group(1))] = (str(p), None)
    return found


def _load_bytes(path: str, member: str | None) -> bytes:
    """A file's or zip member's bytes, after checking its (declared) size; ValueError naming it."""
    where = _where(path, member)
    if member is None:
        check_file_size(Path(path), where)
        return Path(path).read_bytes()
    try:
        with zipfile.ZipFile(path) as zf:
            size = zf.getinfo(member).file_size
            if size > MAX_FILE_BYTES:
                raise ValueError(f"{where}: zip member of {size:,} bytes, over the limit of {MAX_FILE_BYTES:,}")
            with zf.open(member) as f:  # reads at most the declared size, checking its CRC
                return f.read()
    except Exception as e:  # noqa: BLE001  (zipfile / zlib raise many types on corrupt members)
        if isinstance(e, ValueError) and str(e).startswith(f"{where}:"):
            raise
        raise ValueError(f"{where}: unreadable zip member: {one_line(e)}") from None


def _where(path: str, member: str | None) -> str:
    return f"{path}:{member}" if member else path


class FigshareBrainTumor(ManualBuilder):
    """Figshare brain tumour dataset (Cheng et al.), patient-disjoint folds fold1..fold5."""

    HOMEPAGE = "https://doi.org/10.6084/m9.figshare.1512427"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    CLASSES = DATASET_CLASSES["figshare_brain_tumor"]

    def _split_generators(self, dl_manager):
        manual = Path(dl_manager.manual_dir)
        self.bad_inputs = bad = BadInputs("figshare_brain_tumor", self._skip_bad)
        inputs = find_inputs(manual, bad)
        if not inputs:
            raise FileNotFoundError(f"figshare_brain_tumor: no N.mat files or zips of them in {manual}\n"
                                    + _INSTRUCTIONS)
        folds = self._folds(manual, bad)
        records: dict[int, dict] = {}
        for num in sorted(inputs):
            where = _where(*inputs[num])
            try:
                rec = read_mat(_load_bytes(*inputs[num]), where)
            except (ValueError, OSError) as e:
                bad.add(where, str(e))
                continue
            if folds is not None and num > len(folds):
                bad.add(where, f"image number {num} has no entry in cvind.mat ({len(folds)} entries)")
                continue
            records[num] = {"pid": rec["pid"], "fold": None if folds is None else int(folds[num - 1])}
        bad.check()
        if folds is None:  # only reachable with skip_bad: derive patient-disjoint folds from the PIDs
            print("figshare_brain_tumor: cvind.mat missing; folds derived from a hash of each PID")
            for r in records.values():
                r["fold"] = 1 + int(hashlib.sha256(r["pid"].encode()).hexdigest(), 16) % NUM_FOLDS
        check_patient_disjoint(records)
        per_fold = {k: [(n, inputs[n]) for n in sorted(records) if records[n]["fold"] == k]
                    for k in range(1, NUM_FOLDS + 1)}
        empty = [f"fold{k}" for k, items in per_fold.items() if not items]
        if empty:  # TFDS cannot write empty splits; only happens with partial inputs
            print(f"figshare_brain_tumor: no images in {empty}; those splits are left out")
        return {f"fold{k}": self._generate_examples(items) for k, items in per_fold.items() if items}

    def _folds(self, manual: Path, bad: BadInputs) -> np.ndarray | None:
        paths = sorted(manual.rglob("cvind.mat"))
        if not paths:
            bad.add(manual / "cvind.mat", "missing: cvind.mat defines the patient-disjoint folds "
                    "(with --skip-bad, folds are derived from a hash of the PIDs instead)")
            return None
        try:
            return read_cvind(_load_bytes(str(paths[0]), None), str(paths[0]))
        except (ValueError, OSError) as e:
            bad.add(paths[0], str(e))
            return None

    def _generate_examples(self, items):
        clipped = 0
        for num, (path, member) in items:
            rec = read_mat(_load_bytes(path, member), _where(path, member))
            img = rec["image"]
            clipped += int((img < 0).sum())
            h, w = img.shape
            yield str(num), make_example(
                np.clip(img, 0, 65535), rec["mask"], LABEL_MAP[int(rec["label"])],
                patient_id=rec["pid"], source="figshare_brain_tumor",
                spacing_mm=(SPACING_AT_512_MM * 512 / h, SPACING_AT_512_MM * 512 / w),
                file_name=_where(Path(path).name, member) if member else Path(path).name,
            )
        if clipped:
            print(f"figshare_brain_tumor: clipped {clipped} negative pixel values to 0")


def check_patient_disjoint(records: dict[int, dict]) -> None:
    """Raise ValueError if any PID appears in two folds."""
    folds = collections.defaultdict(set)
    for r in records.values():
        folds[r["pid"]].add(r["fold"])
    bad = {p: sorted(f) for p, f in folds.items() if len(f) > 1}
    if bad:
        raise ValueError("figshare_brain_tumor: patients in more than one fold (cvind.mat does not "
                         f"match the files): {dict(sorted(bad.items()))}")

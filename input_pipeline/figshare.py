"""``figshare_brain_tumor``: Jun Cheng's 3,064 T1-CE slices (233 patients) with tumour masks.

Reads the files exactly as shipped: MATLAB v7.3 (HDF5) ``N.mat`` files, either inside the four
``brainTumorDataPublic_*.zip`` archives or extracted, each holding group ``cjdata`` with ``image``,
``tumorMask``, ``label`` (1 meningioma, 2 glioma, 3 pituitary) and ``PID`` (uint16 character codes).
h5py returns MATLAB's column-major arrays transposed, so ``image`` and ``tumorMask`` get ``.T``.
A v5 ``.mat`` is read with scipy (already in MATLAB orientation). Splits ``fold1``..``fold5`` come
from ``cvind.mat`` (the authors' patient-disjoint folds), checked at build time: a patient in two
folds fails the build. Pixel spacing is 0.49 mm at 512 px, so 0.98 mm for the 256 px slices, kept at
their own size. Negative intensities (none in the public files) are clipped to 0 and counted.
"""
from __future__ import annotations

import collections
import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np

from input_pipeline.builders import DATASET_CLASSES
from input_pipeline.features import BadInputs, make_example
from input_pipeline.manual import ManualBuilder

NUM_FOLDS = 5
SPACING_AT_512_MM = 0.49
# Figshare label -> index in CLASS_NAMES (glioma, meningioma, notumor, pituitary).
LABEL_MAP = {1: 1, 2: 0, 3: 3}
_MAT_NAME = re.compile(r"(?:^|/)(\d+)\.mat$")

_INSTRUCTIONS = """\
Download the Figshare brain tumour dataset (Jun Cheng, doi:10.6084/m9.figshare.1512427) by hand:
the four zips brainTumorDataPublic_1-766.zip, _767-1532.zip, _1533-2298.zip, _2299-3064.zip and
cvind.mat. Put them (or the extracted N.mat files) plus cvind.mat in one folder and pass it as
--manual-dir (tfds: DownloadConfig(manual_dir=...)).
"""


class MatRecord(dict):
    """image (H, W) int, mask (H, W) 0/1, label (1..3), pid (str)."""


def _read_h5(data: bytes) -> MatRecord:
    import h5py

    with h5py.File(io.BytesIO(data), "r") as f:
        if "cjdata" not in f:
            raise KeyError(f"no 'cjdata' group (found {sorted(f.keys())})")
        g = f["cjdata"]
        missing = [k for k in ("image", "tumorMask", "label", "PID") if k not in g]
        if missing:
            raise KeyError(f"cjdata lacks {missing}")
        codes = np.asarray(g["PID"]).ravel()
        return MatRecord(
            image=np.asarray(g["image"]).T,
            mask=np.asarray(g["tumorMask"]).T,
            label=float(np.asarray(g["label"]).ravel()[0]),
            pid="".join(chr(int(c)) for c in codes if int(c) != 0),
        )


def _read_v5(data: bytes) -> MatRecord:
    from scipy import io as sio

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


def read_mat(data: bytes) -> MatRecord:
    """Decode one N.mat (v7.3 via h5py, else v5 via scipy) and validate it; raises ValueError."""
    is_h5 = data[512:520] == b"\x89HDF\r\n\x1a\n" or data[:8] == b"\x89HDF\r\n\x1a\n"
    try:
        rec = _read_h5(data) if is_h5 else _read_v5(data)
    except KeyError as e:
        raise ValueError(f"unexpected contents: {e.args[0]}") from None
    except Exception as e:  # noqa: BLE001  (h5py / scipy raise many types on corrupt files)
        kind = "MATLAB v7.3 (HDF5)" if is_h5 else "MATLAB v5"
        raise ValueError(f"unreadable {kind} file (truncated or corrupt?): {type(e).__name__}: {e}") from None
    img, mask = rec["image"], rec["mask"]
    if img.ndim != 2:
        raise ValueError(f"image has shape {img.shape}, expected a 2-D slice")
    if mask.shape != img.shape:
        raise ValueError(f"tumorMask shape {mask.shape} differs from image shape {img.shape}")
    if rec["label"] not in (1.0, 2.0, 3.0):
        raise ValueError(f"label {rec['label']:g} outside 1-3 (1 meningioma, 2 glioma, 3 pituitary)")
    if not rec["pid"]:
        raise ValueError("empty PID")
    return rec


def read_cvind(data: bytes) -> np.ndarray:
    """Fold ids (1..5) per image from cvind.mat (v7.3 or v5)."""
    if data[512:520] == b"\x89HDF\r\n\x1a\n":
        import h5py

        with h5py.File(io.BytesIO(data), "r") as f:
            folds = np.asarray(f["cvind"]).ravel()
    else:
        from scipy import io as sio

        folds = np.ravel(sio.loadmat(io.BytesIO(data))["cvind"])
    folds = folds.astype(np.int64)
    if folds.size == 0 or folds.min() < 1 or folds.max() > NUM_FOLDS:
        raise ValueError(f"fold ids must be 1..{NUM_FOLDS}, got range {folds.min()}..{folds.max()}")
    return folds


def find_inputs(manual_dir: Path, bad: BadInputs) -> dict[int, tuple[str, str | None]]:
    """Image number -> (path, zip member or None); extracted files win over zip members."""
    found: dict[int, tuple[str, str | None]] = {}
    for z in sorted(manual_dir.rglob("*.zip")):
        try:
            with zipfile.ZipFile(z) as zf:
                for member in zf.namelist():
                    m = _MAT_NAME.search(member)
                    if m and not member.startswith("__MACOSX"):
                        found.setdefault(int(m.group(1)), (str(z), member))
        except (zipfile.BadZipFile, OSError) as e:
            bad.add(z, f"unreadable zip: {e}")
    for p in sorted(manual_dir.rglob("*.mat")):
        m = _MAT_NAME.search(p.name)
        if m:
            found[int(m.group(1))] = (str(p), None)
    return found


def _load_bytes(path: str, member: str | None) -> bytes:
    if member is None:
        return Path(path).read_bytes()
    with zipfile.ZipFile(path) as zf:
        return zf.read(member)


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
                rec = read_mat(_load_bytes(*inputs[num]))
            except (ValueError, OSError, KeyError) as e:
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
            return read_cvind(paths[0].read_bytes())
        except Exception as e:  # noqa: BLE001
            bad.add(paths[0], f"unreadable cvind.mat: {type(e).__name__}: {e}")
            return None

    def _generate_examples(self, items):
        clipped = 0
        for num, (path, member) in items:
            rec = read_mat(_load_bytes(path, member))
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

"""``brain-jax explain`` and ``eval --explain`` end to end, on the small trained workdirs kept as fixtures
(tests/fixtures/workdir_v0: a ConvNeXt V2 classifier and a SegFormer, 32 px) and Figshare-format files
with a ``tumorMask`` drawn from the phantoms."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from brain_jax import cli, workdir
from input_pipeline import phantoms
from input_pipeline.synthetic import write_figshare_mat

OLD = Path(__file__).parent / "fixtures" / "workdir_v0"


@pytest.fixture(autouse=True)
def _grouped_depthwise(monkeypatch):
    monkeypatch.setenv("BRAIN_JAX_DEPTHWISE", "grouped")  # same numbers, faster compiles under autodiff


def _mat_files(folder: Path) -> list[Path]:
    """Two Figshare-format slices with their tumour masks (a glioma and a pituitary phantom, 64 px)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for patient in (1000, 1003):  # patient % 4: 0 glioma, 3 pituitary
        image, mask, label = phantoms.render_slice(0, patient, 0, 64)
        assert mask.any() and label in (0, 3)
        out.append(write_figshare_mat(folder / f"{patient}.mat", image.astype(np.int16), mask, label=label + 1))
    return out


def _hit(raw: np.ndarray, method: str, mask_64: np.ndarray, tolerance: int = 1) -> bool:
    """The pointing game from the definition: the heat map's top cell centre, in the mask grown by a disk
    of ``tolerance`` px at the model's 32 px input."""
    heat = np.maximum(raw.sum(-1) if method.startswith("ig") else raw, 0)
    i, j = np.unravel_index(np.argmax(heat), heat.shape)
    row, col = int((i + 0.5) * 32 / heat.shape[0]), int((j + 0.5) * 32 / heat.shape[1])
    mask = np.asarray(Image.fromarray(mask_64).resize((32, 32), Image.NEAREST)) > 0
    disk = np.add.outer(np.arange(-tolerance, tolerance + 1) ** 2, np.arange(-tolerance, tolerance + 1) ** 2)
    return bool(ndimage.binary_dilation(mask, structure=disk <= tolerance**2)[row, col]) and heat.max() > 0


def test_explain_writes_maps_overlays_and_localisation(tmp_path, capsys, spec_builds):
    mats = _mat_files(tmp_path / "in")
    png = tmp_path / "in" / "plain.png"
    Image.fromarray(phantoms.render_slice(0, 7, 0, 48)[0].astype(np.float32) / 1000 * 255).convert("L").save(png)
    out = tmp_path / "out"
    rc = cli.main(["explain", "--workdir", str(OLD / "cls"), "--method", "gradcam,ig,ig@blur", "--layer", "0",
                   "--steps", "8", "--out", str(out), *map(str, mats), str(png)])
    assert rc == 0
    assert spec_builds == [str(OLD / "cls" / "config.json")]  # explain resolves the run once
    printed = capsys.readouterr().out
    assert "pointing" in printed and "wrote" in printed
    doc = json.loads((out / "explain.json").read_text())
    assert doc["task"] == "classification" and set(doc["methods"]) == {"gradcam", "ig", "ig@blur"}
    assert "stage 0 output" in doc["methods"]["gradcam"] and "8 steps, zeros baseline" in doc["methods"]["ig"]
    assert "blurred-image baseline, Gaussian sigma = side/16" in doc["methods"]["ig@blur"]
    images = {Path(r["file"]).name: r for r in doc["images"]}
    assert set(images) == {"1000.mat", "1003.mat", "plain.png"}
    names = ["glioma", "meningioma", "notumor", "pituitary"]
    hits = []
    for name, rec in images.items():
        assert rec["target_class"] == rec["predicted_class"] and rec["predicted_class"] in names
        assert abs(sum(rec["probabilities"].values()) - 1) < 1e-5
        stem = Path(name).stem
        for method, shape in (("gradcam", (8, 8)), ("ig", (32, 32, 3)), ("ig@blur", (32, 32, 3))):
            entry = rec["maps"][method]
            raw = np.load(out / entry["raw_npy"])
            assert raw.shape == shape and tuple(entry["raw_shape"]) == shape and np.isfinite(raw).all()
            overlay = np.asarray(Image.open(out / entry["overlay_png"]))
            assert overlay.shape == ((64, 64, 3) if name.endswith(".mat") else (48, 48, 3))
            assert entry["overlay_png"] == f"{stem}_{method.replace('@', '-')}.png"
            if name.endswith(".mat"):
                mask = phantoms.render_slice(0, int(stem), 0, 64)[1]
                assert entry["pointing_hit"] == _hit(raw, method, mask)
                assert 0.0 <= entry["mass_inside"] <= 1.0
                assert (overlay == [38, 229, 63]).all(axis=-1).sum() > 10  # the mask's green outline
                hits.append(entry["pointing_hit"])
            else:
                assert "pointing_hit" not in entry and "mass_inside" not in entry
        # the other baseline gives other attributions (the override reached the computation)
        ig, ig_blur = (np.load(out / rec["maps"][m]["raw_npy"]) for m in ("ig", "ig@blur"))
        assert not np.allclose(ig, ig_blur)
    loc = doc["localisation"]
    assert set(loc) == {"gradcam", "ig", "ig@blur"}
    for method in ("gradcam", "ig", "ig@blur"):
        assert loc[method]["all"]["n"] == 2 and loc[method]["tolerance_px"] == 1
        got = [images[f"{p}.mat"]["maps"][method]["pointing_hit"] for p in (1000, 1003)]
        assert loc[method]["all"]["pointing_game"] == pytest.approx(np.mean(got))
    with open(out / "explain.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and {r["method"] for r in rows} == {"gradcam", "ig", "ig@blur"}
    assert [r["pointing_hit"] for r in rows if r["file"].endswith(".png")] == ["", "", ""]


def test_explain_segmentation_workdir_maps_the_tumour(tmp_path):
    mats = _mat_files(tmp_path / "in")
    out = tmp_path / "out"
    assert cli.main(["explain", "--workdir", str(OLD / "seg"), "--method", "gradcam", "--layer", "1",
                     "--out", str(out), str(mats[0])]) == 0
    rec = json.loads((out / "explain.json").read_text())["images"][0]
    assert rec["target_class"] == "tumour" and isinstance(rec["tumour_predicted"], bool)
    raw = np.load(out / rec["maps"]["gradcam"]["raw_npy"])
    assert raw.shape == (4, 4)  # 32 px input, SegFormer stage 1 at stride 8
    # no tumour pixel predicted: the target is empty and so is the map
    assert rec["tumour_predicted"] or not raw.any()


@pytest.mark.parametrize("wd,args,message", [
    ("cls", ["--class", "astrocytoma"], "--class 'astrocytoma': workdir .* knows the classes glioma, meningioma, "
                                        "notumor, pituitary"),
    ("cls", ["--method", "rollout"], "saliency method 'rollout' needs a ViT; a convnextv2 .* supports gradcam, ig"),
    ("cls", ["--method", "shap"], "unknown saliency method 'shap'"),
    ("cls", ["--layer", "7"], "layer 7 is out of range for 4 ConvNeXt stages"),
    ("cls", ["--method", "ig@grey"], "--method 'ig@grey': only integrated gradients take a baseline after '@' "
                                     "\\(ig@zeros, ig@black, ig@blur\\)"),
    ("cls", ["--method", "gradcam@blur"], "--method 'gradcam@blur': only integrated gradients take a baseline"),
    ("seg", ["--method", "gradcam,rollout"], "'rollout' is classification-only; a segformer \\(segmentation\\) "
                                             "model supports gradcam, ig"),
])
def test_explain_bad_input_is_one_clear_error(tmp_path, capsys, wd, args, message):
    import re

    out = tmp_path / "out"
    rc = cli.main(["explain", "--workdir", str(OLD / wd), *args, "--out", str(out), str(OLD / "scan.png")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()  # nothing written


def test_eval_explain_adds_a_panel_and_localisation_to_the_report(tmp_path, tiny_phantoms):
    wd = tmp_path / "cls"
    shutil.copytree(OLD / "cls", wd)
    args = ["eval", "--config", "configs/convnextv2_cls.py:runlocal", "--workdir", str(wd), "--split", "test",
            f"--config.data.data_dir={tiny_phantoms}", "--config.data.builder_config=tiny",
            "--config.data.image_size=32", "--config.eval_batch_size=8", "--explain", "1", "--explain-layer", "0",
            "--explain-baseline", "blur"]
    assert cli.main(args) == 0
    sal = workdir.read_metrics(wd)["saliency"]
    assert sal["split"] == "test" and sal["n_per_class"] == 1 and set(sal["methods"]) == {"gradcam", "ig"}
    assert sal["map_shape"] == {"gradcam": [8, 8], "ig": [32, 32]}
    assert "blurred-image baseline" in sal["methods"]["ig"]
    loc = sal["localisation"]["ig"]
    assert set(loc["per_class"]) == {"glioma", "meningioma", "pituitary"}  # notumor has no mask
    assert all(r["n"] == 1 and r["pointing_game"] in (0.0, 1.0) for r in loc["per_class"].values())
    panel = Image.open(wd / "figures" / "saliency.png")
    assert panel.size[1] > 4 * 100  # one row per class
    assert cli.main(["report", "--workdir", str(wd)]) == 0
    report = (wd / "report.md").read_text()
    assert "## Saliency" in report and "figures/saliency.png" in report
    assert "| ig | glioma | 1 |" in report and "pointing game (chance)" in report
    assert "What the maps show" in report

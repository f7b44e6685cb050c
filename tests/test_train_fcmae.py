"""FCMAE pretraining through the one engine (issue 23, parts 3-5): the ``fcmae`` task's step and held-out
eval, SIGTERM + bit-exact resume, config errors, the fine-tuning hand-off, ``convert --to-hf``, the
reconstruction panel in ``eval`` / ``report``, and ``data.label_fraction``.

One CLI pretraining run on the tiny phantoms (64 px, variant "test", 4 steps) is shared by the tests that
read a finished pretraining workdir.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import input_pipeline
from brain_jax import cli, workdir
from brain_jax.models import fcmae
from brain_jax.train import checkpoints, engine, model_factory, optim
from brain_jax.train.config import load_config
from brain_jax.train.spec import RunSpec
from input_pipeline.augment import StepInputs
from tests.train_helpers import compilation_cache, params_of

SIZE = 64


def _data_args(data_dir: Path) -> list[str]:
    return [f"--config.data.data_dir={data_dir}", "--config.data.builder_config=tiny", "--config.batch_size=8",
            "--config.eval_batch_size=8", "--config.progress_bar=false", "--config.log_every_steps=1"]


def _pretrain_args(data_dir: Path) -> list[str]:
    return [*_data_args(data_dir), "--config.eval_batch_size=6", "--config.num_train_steps=4",
            "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2", "--config.keep_checkpoints=3"]


@pytest.fixture(scope="module")
def pretrained(tiny_phantoms, tmp_path_factory) -> Path:
    """`brain-jax train --config configs/fcmae_pretrain.py:runlocal` on the tiny phantoms for 4 steps,
    evaluated and checkpointed at 2 and 4 (the end also writes the reconstruction panel)."""
    wd = tmp_path_factory.mktemp("fcmae") / "pre"
    rc = cli.main(["train", "--config", "configs/fcmae_pretrain.py:runlocal", "--workdir", str(wd),
                   *_pretrain_args(tiny_phantoms)])
    assert rc == 0
    return wd


# ------------------------------------------------------------------------------------------ the run


def test_pretraining_run_logs_loss_writes_panel_and_report(pretrained, capsys):
    rows = workdir.read_log(pretrained)
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in train)
    assert [r["step"] for r in evals] == [2, 4] and "accuracy" not in evals[0]
    assert workdir.read_model_json(pretrained)["model_type"] == "fcmae"
    # the app's eval (the best checkpoint by held-out loss) reproduces the trainer's eval: the same fixed masks
    held_out = json.loads((pretrained / workdir.METRICS).read_text())["fcmae"]["validation"]
    assert held_out["loss"] == pytest.approx(min(r["loss"] for r in evals), rel=1e-5)
    assert held_out["hidden_patches"] == held_out["num_examples"] * 3  # 64 px: 4 patches, 1 visible
    panel = pretrained / workdir.FIGURES / workdir.RECONSTRUCTION_PNG
    assert panel.stat().st_size > 5000
    assert cli.main(["report", "--workdir", str(pretrained)]) == 0
    text = (pretrained / workdir.REPORT).read_text()
    assert "## FCMAE pretraining" in text and workdir.RECONSTRUCTION_PNG in text
    assert workdir.TRAINING_CURVES_PNG in text
    assert (pretrained / workdir.FIGURES / workdir.TRAINING_CURVES_PNG).is_file()


def test_panel_reconstruction_keeps_visible_patches_and_matches_the_held_out_loss(pretrained, tiny_phantoms):
    from brain_jax.train.data import PipelineData
    from brain_jax.train.evaluate import reconstructions

    held_out = json.loads((pretrained / workdir.METRICS).read_text())["fcmae"]["validation"]
    # equal hidden counts per image: the panel's per-image errors average to the loss when it holds every
    # slice, which also shows that the eval step's padded rows (a partial last batch) are not counted
    assert len(held_out["panel_mse"]) == held_out["num_examples"] == 8  # batches of 6: the second one padded
    assert np.mean(held_out["panel_mse"]) == pytest.approx(held_out["loss"], rel=1e-4)
    config = workdir.read_config(pretrained)
    config.data.data_dir = str(tiny_phantoms)
    model = model_factory.load_model_from_workdir(pretrained)
    inputs = StepInputs.from_data_config(config.data, int(config.seed), train=False)
    rec = reconstructions(model, PipelineData(config).eval_batches("validation"), inputs, seed=0, limit=2)
    cells = np.kron(rec["hidden"], np.ones((1, 32, 32))).astype(bool)
    np.testing.assert_allclose(rec["reconstruction"][~cells], rec["image"][~cells], atol=1e-5)
    assert np.abs(rec["reconstruction"][cells] - rec["image"][cells]).max() > 1e-3  # predicted, not copied
    np.testing.assert_allclose(rec["mse"], held_out["panel_mse"][:2], rtol=1e-5)


# ------------------------------------------------------------------------------------------ the step


# The serial phase (`pytest -m cluster`, with the other stop / resume runs): the main suite already checks the
# trainer's SIGTERM and kill -9 resumes bit for bit (tests/test_train_faults.py); this one adds the masks.
@pytest.mark.slow
@pytest.mark.cluster
def test_sigterm_stop_then_resume_is_bit_exact(pretrained, tiny_phantoms, tmp_path):
    """The shared run, again: stopped by SIGTERM after step 1 (so at step 2), then resumed to step 4: the
    weights equal the uninterrupted run's bit for bit (the masks and augmentation follow the step)."""
    from brain_jax.train import trainer

    def sigterm_after_1(step, state, metrics):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    config = lambda: load_config("configs/fcmae_pretrain.py:runlocal", _pretrain_args(tiny_phantoms))  # noqa: E731
    with compilation_cache(tmp_path / "xla"):
        first = trainer.train_and_evaluate(config(), tmp_path / "run", hooks=[sigterm_after_1])
        assert first["status"] == "preempted" and first["step"] == 2
        second = trainer.train_and_evaluate(config(), tmp_path / "run")
    assert second["status"] == "done" and second["step"] == 4
    flat, step, _ = checkpoints.load_weights(pretrained, which="latest")
    want = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("params.")}
    got = params_of(second)
    assert step == 4 and got.keys() == want.keys() and "mask_token" in got
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert [r["step"] for r in workdir.read_log(tmp_path / "run") if r["split"] == "train"] == [1, 2, 3, 4]


def test_masks_are_a_function_of_seed_step_and_global_index():
    idx = {"image": jnp.zeros((8, SIZE, SIZE, 3)), "index": jnp.arange(8)}
    m0, m1 = engine.fcmae_mask(idx, 3, 0, 0.6), engine.fcmae_mask(idx, 3, 1, 0.6)
    assert not np.array_equal(m0, m1) and len({np.asarray(m).tobytes() for m in m0}) > 1
    np.testing.assert_array_equal(engine.fcmae_mask(idx, 3, 0, 0.6), m0)
    assert not np.array_equal(engine.fcmae_mask(idx, 4, 0, 0.6), m0)
    shifted = {"image": idx["image"][:4], "index": jnp.arange(4, 8)}  # another process's rows of the batch
    np.testing.assert_array_equal(engine.fcmae_mask(shifted, 3, 0, 0.6), m0[4:])
    assert set(np.asarray(m0).reshape(8, -1).sum(1)) == {3}


def test_train_step_ignores_padded_rows():
    """The engine's fcmae train step on 2 real rows + 2 padded rows (valid=False, as the loader pads a short
    batch): what the padded rows hold changes neither the loss nor the updated weights; marked valid, it changes
    both (so the comparison can fail). One compiled step serves the three batches."""
    import optax

    parts = engine.split_model(fcmae.create("test", image_size=SIZE))
    tx = optax.sgd(0.5)
    step = jax.jit(engine.make_train_step(parts, tx, optax.constant_schedule(0.5),
                                          engine.LossConfig("fcmae", mask_ratio=0.6), seed=3,
                                          inputs=StepInputs(mean=(0.5,) * 3, std=(0.25,) * 3)))
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8)
    other = img.copy()
    other[2:] = rng.integers(0, 256, (2, SIZE, SIZE), dtype=np.uint8)
    pad = np.array([True, True, False, False])
    batches = {"padded": (img, pad), "other padding": (other, pad), "all valid": (other, np.ones(4, bool))}
    runs = {}
    for name, (x, valid) in batches.items():
        state, metrics = step(engine.init_train_state(parts, tx, ema=False),
                              {"image": x, "index": np.arange(4), "valid": valid}, parts.rest)
        runs[name] = float(metrics["loss"]), jax.tree.leaves(state["params"])
    assert runs["padded"][0] == runs["other padding"][0]
    for a, b in zip(runs["padded"][1], runs["other padding"][1], strict=True):
        np.testing.assert_array_equal(a, b)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(runs["all valid"][1], runs["padded"][1], strict=True))
    assert runs["all valid"][0] != runs["padded"][0] and moved > 1e-4, moved


def test_pretraining_recipe_decays_only_kernels():
    c = load_config("configs/fcmae_pretrain.py:batch=512")
    assert (c.optimizer.b1, c.optimizer.b2, c.optimizer.weight_decay) == (0.9, 0.95, 0.05)
    assert c.optimizer.lr == pytest.approx(1.5e-4 * 2) and c.data.augment.crop_min == 0.2
    model = fcmae.create("test", image_size=SIZE)
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    tx, _ = optim.make_optimizer(dict_view(c.optimizer), 100)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zero, tx.init(params), params)  # zero gradient: only weight decay moves
    moved = dict(zip(engine.tree_paths(updates), (bool(np.any(np.asarray(u) != 0)) for u in jax.tree.leaves(updates))))
    assert moved["encoder.stages.0.layers.0.pwconv1.kernel"] and moved["pred.kernel"]
    for path in ("encoder.stages.0.layers.0.grn.weight", "encoder.stages.0.layers.0.grn.bias", "mask_token",
                 "encoder.stages.0.layers.0.pwconv1.bias", "embeddings.layernorm.scale"):
        assert not moved[next(p for p in moved if p.startswith(path))], path


def dict_view(opt):
    import ml_collections

    return ml_collections.ConfigDict(dict(opt.to_dict(), warmup_steps=0))


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("override, field", [
    ("--config.fcmae.patch_size=16", "fcmae.patch_size"),
    ("--config.fcmae.mask_ratio=0.9", "fcmae.mask_ratio"),
    ("--config.data.image_size=48", "data.image_size"),
    ("--config.data.eval_split=test", "data.eval_split"),
])
def test_bad_pretraining_settings_are_one_line_exit_2(tmp_path, capsys, override, field):
    wd = tmp_path / "w"
    rc = cli.main(["train", "--config", "configs/fcmae_pretrain.py:runlocal", "--workdir", str(wd), override,
                   f"--config.data.data_dir={tmp_path / 'nodata'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and field in err and len(err.splitlines()) == 1, err
    assert not wd.exists()


# ------------------------------------------------------------------------------------------ fine-tuning


def _finetune_spec(pre: Path, *args: str) -> RunSpec:
    return RunSpec.from_config(load_config("configs/convnextv2_cls.py:runlocal,finetune",
                                           [f"--config.init_from={pre}", *args]))


def test_finetune_loads_the_encoder_and_starts_head_and_final_norm_fresh(pretrained, capsys):
    spec = _finetune_spec(pretrained)
    model = model_factory.create_model(spec)
    out = capsys.readouterr().out
    assert "encoder" in out and "step 4" in out
    dropped = [line for line in out.splitlines() if "decoder dropped" in line]
    assert len(dropped) == 1 and all(p in dropped[0] for p in fcmae.DECODER_PATHS)
    flat, step, _ = checkpoints.load_weights(pretrained, which="latest")
    assert step == 4
    fresh = model_factory.fresh_model(spec)
    ours = {p: np.asarray(v.get_value()) for p, v in model_factory.models.weights.model_variables(model).items()}
    init = {p: np.asarray(v.get_value()) for p, v in model_factory.models.weights.model_variables(fresh).items()}
    for path, arr in ours.items():
        if fcmae.is_encoder_path(path):
            np.testing.assert_array_equal(arr, flat["params." + path], err_msg=path)
        else:
            assert path.startswith(("layernorm.", "classifier.")), path
            np.testing.assert_array_equal(arr, init[path], err_msg=path)
    assert not np.array_equal(ours["embeddings.patch_embeddings.kernel"], init["embeddings.patch_embeddings.kernel"])


def test_finetune_from_the_cli_trains_and_evaluates(pretrained, tiny_phantoms, capsys):
    """The README's hand-off, end to end: `brain-jax train --config configs/convnextv2_cls.py:runlocal,finetune
    --config.init_from=PRETRAINING_WORKDIR` trains, says where its encoder came from and writes test metrics."""
    wd = pretrained.parent / "ft_cli"
    rc = cli.main(["train", "--config", "configs/convnextv2_cls.py:runlocal,finetune", "--workdir", str(wd),
                   f"--config.init_from={pretrained}", *_data_args(tiny_phantoms), "--config.num_train_steps=2",
                   "--config.checkpoint_every_steps=2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "encoder" in out and "step 4" in out and "decoder dropped" in out
    train = [r for r in workdir.read_log(wd) if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(np.isfinite(r["loss"]) for r in train)
    flat, step, _ = checkpoints.load_weights(wd, which="latest")
    assert step == 2 and "params.classifier.kernel" in flat and not any("decoder" in k for k in flat)


def test_finetune_into_another_architecture_is_one_line_exit_2(pretrained, tiny_phantoms, capsys):
    with pytest.raises(ValueError, match="model.variant"):
        model_factory.create_model(_finetune_spec(pretrained, "--config.model.variant=atto"))
    rc = cli.main(["train", "--config", "configs/swin_cls.py:runlocal", "--workdir", str(pretrained.parent / "sw"),
                   f"--config.init_from={pretrained}", *_data_args(tiny_phantoms), "--config.data.image_size=64"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "model.name" in err and "FCMAE" in err and len(err.splitlines()) == 1, err


@pytest.mark.torch
def test_convert_to_hf_writes_a_convnextv2model_transformers_loads_cleanly(pretrained, tmp_path, capsys):
    import torch
    import transformers

    out = tmp_path / "hf"
    assert cli.main(["convert", "--to-hf", "--from", str(pretrained), "--out", str(out)]) == 0
    assert "identity" in capsys.readouterr().out
    hf, info = transformers.ConvNextV2Model.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    model = model_factory.load_model_from_workdir(pretrained, which="latest")
    x = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    from brain_jax.models import convnext

    last = np.asarray(convnext.encode(model.embeddings, model.encoder, jnp.asarray(x))[-1])
    with torch.no_grad():
        got = hf(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(got.last_hidden_state.numpy().transpose(0, 2, 3, 1), last, atol=1e-4)
    pooled = last.mean(axis=(1, 2))  # the final LayerNorm with its identity affine: normalisation only
    eps = hf.config.layer_norm_eps
    pooled = (pooled - pooled.mean(-1, keepdims=True)) / np.sqrt(pooled.var(-1, keepdims=True) + eps)
    np.testing.assert_allclose(got.pooler_output.numpy(), pooled, atol=1e-4)


# ------------------------------------------------------------------------------------------ label fraction


def test_label_fraction_keeps_whole_patients_per_class_nested_and_deterministic(tiny_phantoms):
    from input_pipeline import splits

    def train_meta(frac: float, seed: int = 0):
        cfg = input_pipeline.default_data_config()
        cfg.data_dir, cfg.builder_config, cfg.image_size = str(tiny_phantoms), "tiny", SIZE
        cfg.label_fraction, cfg.seed = frac, seed
        meta = splits.index_metadata(cfg, splits.resolve(cfg, "train"))
        return meta, splits.clusters(meta, int(cfg.near_dup_bits))[0]

    full, full_c = train_meta(1.0)
    small, small_c = train_meta(0.3)
    assert 0 < len(small["label"]) < len(full["label"])
    assert set(small["label"]) == set(full["label"])  # every class keeps at least one patient
    chosen = set(small_c.tolist())
    whole = {c: int(np.sum(full_c == c)) for c in chosen}
    assert all(int(np.sum(small_c == c)) == n for c, n in whole.items())  # patients are kept whole
    mid, mid_c = train_meta(0.6)
    assert chosen <= set(mid_c.tolist())  # nested
    assert train_meta(0.3)[1].tolist() == small_c.tolist()
    assert set(train_meta(0.3, seed=1)[1].tolist()) != chosen

"""Fields shared by every experiment config, and the ``get_config(arg)`` argument parser.

Experiment files (``convnextv2_cls.py`` ...) start from ``base_config()`` and set what differs; the
result is locked by the loader, so a misspelt ``--config.x=y`` is an error listing the valid keys.
"""
from __future__ import annotations

import ml_collections

from input_pipeline import default_data_config


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """``"variant=tiny,runlocal"`` -> {variant: "tiny", runlocal: True, ...defaults}; unknown keys rejected.

    A bare word sets a boolean default to True; values take the type of their default.
    """
    out = dict(defaults)
    for item in (arg or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"config argument {key!r} is not known; valid: {', '.join(sorted(defaults))}")
        default = defaults[key]
        if not sep:
            if not isinstance(default, bool):
                raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
            out[key] = True
        elif isinstance(default, bool):
            out[key] = value.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            out[key] = int(value)
        elif isinstance(default, float):
            out[key] = float(value)
        else:
            out[key] = value.strip()
    return ml_collections.ConfigDict(out)


def base_config() -> ml_collections.ConfigDict:
    """Every field the trainer reads, with defaults for fine-tuning a classifier."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = ml_collections.ConfigDict(dict(
        name="convnextv2",
        variant="tiny",
        dtype="float32",  # compute dtype: "bfloat16" for mixed precision (params stay float32)
        # Architecture overrides passed to the model (drop_path_rate, dropout, image_size...).
        kwargs=ml_collections.ConfigDict(dict(drop_path_rate=0.1)),
    ))
    # HF Hub id / save_pretrained folder, brain-jax converted folder, or a training workdir; "" = random init.
    c.init_from = ""
    c.data = default_data_config()
    c.batch_size = 32  # global, over all hosts and devices
    c.eval_batch_size = 64
    c.num_epochs = 30.0
    c.num_train_steps = -1  # > 0 overrides num_epochs
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw",  # "adam" | "adamw" | "sgd"
        lr=1e-4,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.05,
        schedule="cosine",  # "cosine" | "constant" (after warmup)
        warmup_steps=-1,  # >= 0 overrides warmup_epochs
        warmup_epochs=1.0,
        min_lr_ratio=0.0,
        layer_decay=1.0,  # layer-wise lr decay for fine-tuning (< 1 turns it on, e.g. 0.8)
        grad_clip_norm=1.0,  # 0 = off
        ema_decay=0.0,  # > 0 keeps an EMA of the weights, used for evaluation
    ))
    c.loss = ml_collections.ConfigDict(dict(
        label_smoothing=0.0,
        class_weights=(),  # one weight per class, () = uniform
        dice_weight=0.0,  # segmentation: + dice_weight * soft Dice loss
    ))
    c.log_every_steps = 50
    c.prefetch_batches = 2  # training batches put on the devices ahead of the step (a host thread)
    c.eval_every_steps = -1  # -1 = once per epoch, 0 = never (the end-of-training eval still runs)
    c.checkpoint_every_steps = -1  # -1 = once per epoch
    c.keep_checkpoints = 2
    c.best_metric = "accuracy"  # eval metric that picks the best checkpoint ("" = none)
    c.best_mode = "max"
    c.async_checkpoint = True
    c.progress_bar = True
    c.mesh = ml_collections.ConfigDict(dict(num_devices=0))  # 0 = all devices
    c.distributed = ml_collections.ConfigDict(dict(
        # num_processes > 1 calls jax.distributed.initialize(coordinator_address, num_processes,
        # process_id); auto=True calls it with no arguments (TPU pods, SLURM detect themselves).
        coordinator_address="",
        num_processes=1,
        process_id=-1,
        local_device_ids="",
        auto=False,
    ))
    c.runlocal = False
    return c


def fcmae_defaults() -> ml_collections.ConfigDict:
    """``config.fcmae`` of a pretraining run (official ``main_pretrain.py`` defaults); read with data.task="fcmae"."""
    return ml_collections.ConfigDict(dict(
        mask_ratio=0.6,  # share of 32-px patches hidden; each image keeps int(L * (1 - ratio)) visible
        patch_size=32,  # the mask cell: must be the encoder's total stride, 32
        decoder_embed_dim=512,
        decoder_depth=1,
        norm_pix_loss=True,  # regress per-patch normalised pixels
    ))


DATASETS = ("merged", "figshare", "kaggle", "phantoms")
# Pretraining (configs/fcmae_pretrain.py) also takes a folder of unlabelled images.
PRETRAIN_DATASETS = (*DATASETS, "unlabelled")


def set_dataset(c: ml_collections.ConfigDict, dataset: str, *, pretraining: bool = False) -> None:
    """Point ``c.data`` at one of DATASETS (PRETRAIN_DATASETS with ``pretraining``), with splits that keep
    patients / duplicates apart.

    - merged: the paper's pool (Figshare + Kaggle), near-duplicates removed, split by duplicate group;
    - figshare: the authors' patient-disjoint folds (train 1-3, validation 4, test 5);
    - kaggle: its Training/Testing folders (no patient ids: exact duplicates removed);
    - phantoms: the synthetic set (``brain-jax data build brain_phantoms``), patient-disjoint splits;
    - unlabelled (pretraining only): a folder of unlabelled images (``brain-jax data build unlabelled_mri``),
      exact copies removed, split by patient group (its first-level sub-folders): 90 % train, 10 % validation,
      no test split (pretraining never reads one).
    """
    d = c.data
    d.dedup = "none"
    d.train_split, d.eval_split, d.test_split = "train", "validation", "test"
    if dataset == "merged":
        d.name = "figshare_brain_tumor+brain_tumor_mri"
        d.dedup = "near"
        d.split_by = "group"
    elif dataset == "figshare":
        d.name = "figshare_brain_tumor"
        d.train_split, d.eval_split, d.test_split = "fold1+fold2+fold3", "fold4", "fold5"
        d.split_by = "builder"
    elif dataset == "kaggle":
        d.name = "brain_tumor_mri"
        d.train_split, d.eval_split, d.test_split = "train[:90%]", "train[90%:]", "test"
        d.dedup = "exact"
        d.split_by = "builder"
    elif dataset == "phantoms":
        d.name = "brain_phantoms"
        d.builder_config = "small"
        d.split_by = "builder"
    elif dataset == "unlabelled" and pretraining:
        d.name = "unlabelled_mri"
        d.builder_config = ""
        d.dedup = "exact"
        d.split_by = "group"
        d.group_split_fractions = ml_collections.ConfigDict(dict(train=0.9, validation=0.1))
        d.test_split = ""  # pretraining never reads one
    elif dataset == "unlabelled":
        raise ValueError("config argument dataset='unlabelled' has no labels: only pretraining reads it "
                         "(configs/fcmae_pretrain.py:dataset=unlabelled)")
    else:
        allowed = PRETRAIN_DATASETS if pretraining else DATASETS
        raise ValueError(f"config argument dataset={dataset!r}; expected one of {', '.join(allowed)}")


def set_runlocal(c: ml_collections.ConfigDict, *, image_size: int = 64) -> None:
    """Shrink to a CPU smoke run: synthetic data, the tiny ``test`` model, random init, a few steps."""
    set_dataset(c, "phantoms")
    c.data.image_size = image_size
    c.data.augment.rotate_deg = 0.0
    c.model.variant = "test"
    c.model.dtype = "float32"
    c.init_from = ""
    c.batch_size = 16
    c.eval_batch_size = 32
    c.num_train_steps = 20
    c.optimizer.warmup_steps = 2
    c.log_every_steps = 5
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 10
    c.runlocal = True

"""Fields shared by every experiment config, and the ``get_config(arg)`` argument parser.

Experiment files (``convnextv2_cls.py`` ...) start from ``base_config()`` and set what differs; the
result is locked by the loader, so a misspelt ``--config.x=y`` is an error listing the valid keys.
"""
from __future__ import annotations

import ml_collections


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


def data_config() -> ml_collections.ConfigDict:
    """The input pipeline's defaults (``input_pipeline.default_data_config``)."""
    from input_pipeline import default_data_config

    return default_data_config()


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
    c.data = data_config()
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

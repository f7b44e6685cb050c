r"""FCMAE: ConvNeXt V2's own masked-autoencoder pretraining, on the train split with labels ignored.

    brain-jax train --config configs/fcmae_pretrain.py:variant=tiny --workdir workdirs/fcmae_tiny
    brain-jax train --config configs/fcmae_pretrain.py:runlocal --workdir /tmp/fcmae        # CPU smoke run
    # a folder of unlabelled images (brain-jax data build unlabelled_mri --manual-dir DIR --data-dir D):
    brain-jax train --config configs/fcmae_pretrain.py:variant=tiny,dataset=unlabelled --workdir workdirs/fcmae_u
    # then fine-tune the encoder (the same variant and image size; runlocal matches convnextv2_cls's runlocal):
    brain-jax train --config configs/convnextv2_cls.py:runlocal,finetune \
        --config.init_from=/tmp/fcmae --workdir /tmp/fcmae_ft

Arguments: variant (test atto ... huge, as convnextv2_cls), dataset (merged figshare kaggle phantoms, or
unlabelled: the ``unlabelled_mri`` folder builder, split by patient sub-folder, 90 % train / 10 % validation;
default merged), batch (global batch; the learning rate follows it), runlocal (phantoms, unless a dataset is
named). The official recipe (facebookresearch/ConvNeXt-V2
``main_pretrain.py`` and ``TRAINING.md``): mask ratio 0.6 of 32-px patches, decoder of one block of width 512,
``norm_pix_loss``; AdamW β = (0.9, 0.95), weight decay 0.05 (none on 1-D parameters: biases, norms, GRN's
gamma / beta, the mask token), lr = 1.5e-4 × batch / 256, 40 warm-up epochs then cosine to 0, 1600 epochs,
no gradient clipping; random resized crop (area 0.2–1, aspect 3/4–4/3) and horizontal flip only, on the
device (input_pipeline.augment). The held-out loss (fixed masks) picks the best checkpoint; the test split is
never read.
"""
from configs import common

BLR = 1.5e-4  # official --blr: lr = blr * global batch / 256


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, variant="tiny", dataset="", batch=256, runlocal=False)
    c = common.base_config()
    c.model.name = "convnextv2"
    c.model.variant = a.variant
    c.model.dtype = "bfloat16"
    c.model.kwargs.drop_path_rate = 0.0  # the official FCMAE encoder has no drop path
    c.init_from = ""
    common.set_dataset(c, a.dataset or "merged", pretraining=True)
    c.data.task = "fcmae"
    c.data.image_size = 224
    aug = c.data.augment
    aug.enabled, aug.hflip, aug.vflip = True, True, False
    aug.rotate_deg, aug.scale_min, aug.scale_max, aug.brightness, aug.contrast = 0.0, 1.0, 1.0, 0.0, 0.0
    aug.crop_min, aug.crop_max = 0.2, 1.0
    c.fcmae = common.fcmae_defaults()
    c.batch_size = a.batch
    c.num_epochs = 1600.0
    o = c.optimizer
    o.name, o.b1, o.b2, o.weight_decay = "adamw", 0.9, 0.95, 0.05
    o.lr = BLR * a.batch / 256
    o.schedule, o.warmup_epochs, o.warmup_steps, o.min_lr_ratio = "cosine", 40.0, -1, 0.0
    o.grad_clip_norm = 0.0
    o.layer_decay, o.ema_decay = 1.0, 0.0
    c.best_metric, c.best_mode = "loss", "min"
    c.eval_every_steps = -1
    if a.runlocal:
        common.set_runlocal(c)  # phantoms, variant "test", 64 px: as convnextv2_cls.py:runlocal
        if a.dataset:  # a dataset named beside runlocal is kept
            common.set_dataset(c, a.dataset, pretraining=True)
        aug.rotate_deg = 0.0
        c.model.dtype = "float32"
        c.batch_size = 16
        c.optimizer.lr = 1.5e-3  # 10x the recipe's rule at batch 16: a 20-step smoke run moves
        c.eval_every_steps = 10
        c.best_metric, c.best_mode = "loss", "min"
    return c

r"""ConvNeXt V2, 4-class brain MRI classification (the paper's main model, its Table I / Fig. 8).

    brain-jax train --config configs/convnextv2_cls.py:variant=tiny --workdir workdirs/convnextv2_tiny
    brain-jax train --config configs/convnextv2_cls.py:variant=base,dataset=figshare --workdir workdirs/cnv2b
    brain-jax train --config configs/convnextv2_cls.py:runlocal --workdir /tmp/cnv2   # CPU smoke run
    # fine-tune an FCMAE pretraining workdir (configs/fcmae_pretrain.py, same variant and image size):
    brain-jax train --config configs/convnextv2_cls.py:runlocal,finetune --config.init_from=/tmp/fcmae \
        --workdir /tmp/fcmae_ft

Arguments: variant (atto femto pico nano tiny base large huge), dataset (merged figshare kaggle
phantoms), runlocal, finetune, label_fraction. Starts from ``facebook/convnextv2-{variant}-22k-224``
(``-1k-224`` for the sizes below tiny, which have no 22k checkpoint); the 4-class head is fresh.

``finetune``: the official fine-tuning recipe after FCMAE (facebookresearch/ConvNeXt-V2 ``TRAINING.md``,
"single" layer-wise lr decay 0.9, EMA of the weights evaluated; atto-nano: weight decay 0.3, drop path 0.1,
label smoothing 0.2; tiny and up: 0.05, 0.2, 0.1), from random init unless ``--config.init_from`` names a
pretraining workdir (so the same command with and without it is the from-scratch control).
``label_fraction=F``: train on a share F of the training patients / duplicate groups (drawn per class,
deterministic from data.seed): a low-label fine-tune.
"""
from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, variant="tiny", dataset="merged", runlocal=False, finetune=False, label_fraction=1.0)
    c = common.base_config()
    c.model.name = "convnextv2"
    c.model.variant = a.variant
    c.model.dtype = "bfloat16"
    c.model.kwargs.drop_path_rate = 0.1
    tag = "1k" if a.variant in ("atto", "femto", "pico", "nano") else "22k"
    c.init_from = f"facebook/convnextv2-{a.variant}-{tag}-224"
    common.set_dataset(c, a.dataset)
    c.data.task = "classification"
    c.data.image_size = 224
    c.batch_size = 32
    c.num_epochs = 30.0
    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-4
    c.optimizer.weight_decay = 0.05
    c.optimizer.layer_decay = 0.9
    c.loss.label_smoothing = 0.1
    c.best_metric = "accuracy"
    c.data.label_fraction = a.label_fraction
    if a.finetune:
        small = a.variant in ("atto", "femto", "pico", "nano")
        c.init_from = ""
        c.optimizer.layer_decay = 0.9
        c.optimizer.weight_decay = 0.3 if small else 0.05
        c.model.kwargs.drop_path_rate = 0.1 if small else 0.2
        c.loss.label_smoothing = 0.2 if small else 0.1
        c.optimizer.ema_decay = 0.9999
    if a.runlocal:
        common.set_runlocal(c)
        c.optimizer.lr = 2e-3
        c.optimizer.layer_decay = 0.9 if a.finetune else 1.0
        c.loss.label_smoothing = 0.0
        if a.finetune:
            c.optimizer.ema_decay = 0.9  # a 20-step smoke run: the official 0.9999 would evaluate the init
    return c

r"""ConvNeXt V2, 4-class brain MRI classification (the paper's main model, its Table I / Fig. 8).

    brain-jax train --config configs/convnextv2_cls.py:variant=tiny --workdir workdirs/convnextv2_tiny
    brain-jax train --config configs/convnextv2_cls.py:variant=base,dataset=figshare --workdir workdirs/cnv2b
    brain-jax train --config configs/convnextv2_cls.py:runlocal --workdir /tmp/cnv2   # CPU smoke run

Arguments: variant (atto femto pico nano tiny base large huge), dataset (merged figshare kaggle
phantoms), runlocal. Starts from ``facebook/convnextv2-{variant}-22k-224`` (``-1k-224`` for the sizes
below tiny, which have no 22k checkpoint); the 4-class head is fresh.
"""
from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, variant="tiny", dataset="merged", runlocal=False)
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
    if a.runlocal:
        common.set_runlocal(c)
        c.optimizer.lr = 2e-3
        c.optimizer.layer_decay = 1.0
        c.loss.label_smoothing = 0.0
    return c

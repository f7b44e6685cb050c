r"""ConvNeXt V1, 4-class classification (the paper's comparison, its Fig. 9).

    brain-jax train --config configs/convnext_cls.py:variant=tiny --workdir workdirs/convnext_tiny
    brain-jax train --config configs/convnext_cls.py:runlocal --workdir /tmp/convnext   # CPU smoke run

Arguments: variant (tiny small base large xlarge), dataset (merged figshare kaggle phantoms),
runlocal. Starts from ``facebook/convnext-{variant}-224`` (ImageNet-1k), fresh 4-class head.
"""
from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, variant="tiny", dataset="merged", runlocal=False)
    c = common.base_config()
    c.model.name = "convnext"
    c.model.variant = a.variant
    c.model.dtype = "bfloat16"
    c.model.kwargs.drop_path_rate = 0.1
    c.init_from = f"facebook/convnext-{a.variant}-224"
    common.set_dataset(c, a.dataset)
    c.data.task = "classification"
    c.data.image_size = 224
    c.optimizer.lr = 1e-4
    c.optimizer.layer_decay = 0.9
    c.loss.label_smoothing = 0.1
    c.best_metric = "accuracy"
    if a.runlocal:
        common.set_runlocal(c)
        c.optimizer.lr = 2e-3
        c.optimizer.layer_decay = 1.0
        c.loss.label_smoothing = 0.0
    return c

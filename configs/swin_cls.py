r"""Swin Transformer, 4-class classification (the paper's comparison, its Fig. 9).

    brain-jax train --config configs/swin_cls.py:variant=tiny --workdir workdirs/swin_tiny
    brain-jax train --config configs/swin_cls.py:runlocal --workdir /tmp/swin   # CPU smoke run

Arguments: variant (tiny small base large), dataset (merged figshare kaggle phantoms), runlocal.
Starts from ``microsoft/swin-{variant}-patch4-window7-224`` (model variant ``{variant}_w7``).
"""
from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, variant="tiny", dataset="merged", runlocal=False)
    c = common.base_config()
    c.model.name = "swin"
    c.model.variant = f"{a.variant}_w7"
    c.model.dtype = "bfloat16"
    c.model.kwargs.drop_path_rate = 0.2
    c.init_from = f"microsoft/swin-{a.variant}-patch4-window7-224"
    common.set_dataset(c, a.dataset)
    c.data.task = "classification"
    c.data.image_size = 224
    c.optimizer.lr = 1e-4
    c.optimizer.layer_decay = 0.9
    c.loss.label_smoothing = 0.1
    c.best_metric = "accuracy"
    if a.runlocal:
        common.set_runlocal(c)
        c.model.kwargs.drop_path_rate = 0.0
        c.optimizer.lr = 1e-3
        c.optimizer.layer_decay = 1.0
        c.loss.label_smoothing = 0.0
    return c

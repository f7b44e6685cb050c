r"""ViT, 4-class classification (the paper's comparison, its Fig. 9).

    brain-jax train --config configs/vit_cls.py:variant=base_16 --workdir workdirs/vit_b16
    brain-jax train --config configs/vit_cls.py:runlocal --workdir /tmp/vit   # CPU smoke run

Arguments: variant (small_16 base_16 base_32 large_16 large_32 huge_14), dataset (merged figshare kaggle
phantoms), runlocal. Starts from ``google/vit-{size}-patch{p}-224``-style ids: base_16 ->
``google/vit-base-patch16-224``, pre-trained with mean = std = 0.5, set here. small_16 is DeiT-S
(``facebook/deit-small-patch16-224``, no distillation token), trained with the ImageNet mean / std.
"""
from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, variant="base_16", dataset="merged", runlocal=False)
    c = common.base_config()
    c.model.name = "vit"
    c.model.variant = a.variant
    c.model.dtype = "bfloat16"
    c.model.kwargs = common.ml_collections.ConfigDict(dict(drop_path_rate=0.1, hidden_dropout_prob=0.0))
    size, _, patch = a.variant.partition("_")
    deit = a.variant == "small_16"  # Google published no ViT-S/16 at 224; DeiT-S is the small ViT on the Hub
    c.init_from = "facebook/deit-small-patch16-224" if deit else f"google/vit-{size}-patch{patch}-224"
    common.set_dataset(c, a.dataset)
    c.data.task = "classification"
    c.data.image_size = 224
    if not deit:  # DeiT keeps base_config's ImageNet mean / std
        c.data.mean = (0.5, 0.5, 0.5)
        c.data.std = (0.5, 0.5, 0.5)
    c.optimizer.lr = 5e-5
    c.optimizer.layer_decay = 0.75
    c.loss.label_smoothing = 0.1
    c.best_metric = "accuracy"
    if a.runlocal:
        c.model.kwargs.image_size = 0
        common.set_runlocal(c)
        c.model.kwargs.image_size = c.data.image_size  # random init: position embeddings for this size
        c.optimizer.lr = 1e-3
        c.optimizer.layer_decay = 1.0
        c.loss.label_smoothing = 0.0
    return c

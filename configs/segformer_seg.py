r"""SegFormer, binary tumour segmentation (background 0 / tumour 1) on Figshare (the paper's Fig. 10).

    brain-jax train --config configs/segformer_seg.py:variant=b0 --workdir workdirs/segformer_b0
    brain-jax train --config configs/segformer_seg.py:runlocal --workdir /tmp/segformer   # CPU smoke run

Arguments: variant (b0 ... b5), dataset (figshare phantoms), runlocal. Starts from ``nvidia/mit-{variant}``
(ImageNet encoder; the decode head is fresh). The paper's hyper-parameters: Adam, lr 6e-4,
batch 10, 15 epochs; validated with mIoU.
"""
from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, variant="b0", dataset="figshare", runlocal=False)
    c = common.base_config()
    c.model.name = "segformer"
    c.model.variant = a.variant
    c.model.dtype = "bfloat16"
    c.model.kwargs = common.ml_collections.ConfigDict(dict(drop_path_rate=0.1, classifier_dropout=0.1))
    c.init_from = f"nvidia/mit-{a.variant}"
    if a.dataset not in ("figshare", "phantoms"):
        raise ValueError(f"config argument dataset={a.dataset!r}: segmentation needs masks (figshare or phantoms)")
    common.set_dataset(c, a.dataset)
    c.data.task = "segmentation"
    c.data.image_size = 512
    # The paper: "lr 6e-4, batch 10, 15 epochs, Adam".
    c.optimizer.name = "adam"
    c.optimizer.lr = 6e-4
    c.optimizer.weight_decay = 0.0
    c.batch_size = 10
    c.eval_batch_size = 10
    c.num_epochs = 15.0
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 0
    c.optimizer.grad_clip_norm = 0.0
    c.loss.dice_weight = 0.0
    c.best_metric = "miou"
    if a.runlocal:
        common.set_runlocal(c)
        c.model.kwargs.drop_path_rate = 0.0
        c.model.kwargs.classifier_dropout = 0.0
        c.optimizer.lr = 3e-3
        c.loss.dice_weight = 1.0
    return c

r"""The paper's segmentation recipe: SegFormer, background 0 / tumour 1, on the Figshare set (Table II, Fig. 10).

    brain-jax train --config configs/paper/segformer.py --workdir workdirs/paper/segformer
    brain-jax eval --workdir workdirs/paper/segformer --split fold5
    brain-jax train --config configs/paper/segformer.py:runlocal --workdir /tmp/seg   # CPU smoke run

Arguments: variant (b0 ... b5), dataset (figshare phantoms), runlocal.

Stated by the paper (Rahman et al.): SegFormer fine-tuned from pre-trained weights for binary tumour
segmentation (labels background / tumour) of the Figshare slices; Adam; learning rate 0.0006; batch size
10; 15 epochs; validated with mIoU (the best checkpoint is picked by it here).

Ours, because the paper does not state them: the MiT-B0 encoder (``nvidia/mit-b0``, ImageNet) with a
fresh decode head; image size 512 (Figshare's native size); a constant learning rate with no warm-up;
no weight decay; no gradient clipping; cross-entropy loss alone; drop path 0.1 and classifier dropout
0.1 (the checkpoint's defaults); bfloat16 compute; the authors' patient-disjoint folds (train folds 1-3,
validate on fold 4, test on fold 5).
"""
from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, variant="b0", dataset="figshare", runlocal=False)
    if a.dataset not in ("figshare", "phantoms"):
        raise ValueError(f"config argument dataset={a.dataset!r}: segmentation needs masks (figshare or phantoms)")
    c = common.base_config()
    c.model.name = "segformer"
    c.model.variant = a.variant
    c.model.dtype = "bfloat16"
    c.model.kwargs = common.ml_collections.ConfigDict(dict(drop_path_rate=0.1, classifier_dropout=0.1))
    c.init_from = f"nvidia/mit-{a.variant}"
    common.set_dataset(c, a.dataset)
    c.data.task = "segmentation"
    c.data.image_size = 512
    c.optimizer.name = "adam"
    c.optimizer.lr = 6e-4
    c.optimizer.weight_decay = 0.0
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 0
    c.optimizer.grad_clip_norm = 0.0
    c.batch_size = 10
    c.eval_batch_size = 10
    c.num_epochs = 15.0
    c.loss.dice_weight = 0.0
    c.best_metric = "miou"
    if a.runlocal:
        common.set_runlocal(c)
        c.model.kwargs.drop_path_rate = 0.0
        c.model.kwargs.classifier_dropout = 0.0
        c.optimizer.lr = 3e-3
        c.loss.dice_weight = 1.0
    return c

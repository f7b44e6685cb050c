r"""Does FCMAE pretraining help? The phantom experiment of docs/fcmae.md (issue 23, part 6), as configs.

    export BRAIN_JAX_DATA=workdirs/rank
    brain-jax data build brain_phantoms --config rank --data-dir $BRAIN_JAX_DATA
    brain-jax train --config configs/fcmae_effect.py:stage=pretrain --workdir workdirs/fcmae_effect/pre
    brain-jax suite --config configs/fcmae_effect.py:label_fraction=0.05 --seeds 5 \
        --models configs/fcmae_effect.py:label_fraction=0.05,pretrained=workdirs/fcmae_effect/pre \
        --out workdirs/fcmae_effect/frac005          # likewise label_fraction=1.0 -> frac100

Arguments: stage (pretrain | finetune), pretrained (a pretraining workdir; "" = from scratch, the control),
label_fraction (share of the training patients with labels, drawn per class from data.seed), steps
(fine-tuning steps).

The ``rank`` phantoms (``configs/controls.py``: 728 training patients, 156 test patients, faint small
tumours, where a tiny model is not perfect), resized to 96 px: the smallest size with a 3 x 3 grid of
32-px mask cells (64 px leaves 2 x 2, of which ratio 0.6 keeps one). ConvNeXt V2 ``test`` (dims 8-64),
float32, so that a 2-core CPU runs the whole experiment in about 40 minutes.

- ``stage=pretrain``: ``configs/fcmae_pretrain.py``'s recipe (AdamW β (0.9, 0.95), weight decay 0.05 on
  kernels, random resized crop 0.2-1 + flip, mask ratio 0.6, norm_pix_loss) for 1500 steps of 64 on the
  train split only (labels unused; ~66 epochs of the 1456 training slices), lr 1e-3 with 100 warm-up steps:
  the recipe's rule (1.5e-4 x 64 / 256) is for 1600 epochs, far too slow for a run this short.
- ``stage=finetune``: ``convnextv2_cls.py:finetune``'s recipe for small variants (layer-wise decay 0.9,
  drop path 0.1, weight decay 0.3, label smoothing 0.2), shortened: 300 steps of 32, lr 2e-3 cosine, EMA
  0.99 evaluated; the same flips / rotation / scale / intensity augmentation in both arms. With
  ``pretrained`` the encoder comes from the pretraining workdir's latest checkpoint (the classifier head and
  final LayerNorm start fresh); without it every weight is random. Evaluated once, on the test split.
  ``suite --seeds`` varies ``seed`` (initialisation, batch order, augmentation, masks); ``data.seed`` stays, so
  every seed fine-tunes on the same labelled patients and is tested on the same patients.
"""
from configs import common, fcmae_pretrain

IMAGE_SIZE = 96
STAGES = ("pretrain", "finetune")


def _data(c) -> None:
    common.set_dataset(c, "phantoms")
    c.data.builder_config = "rank"
    c.data.image_size = IMAGE_SIZE
    c.model.variant = "test"
    c.model.dtype = "float32"
    c.mesh.num_devices = 1
    c.async_checkpoint = False
    c.log_every_steps = 50


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, stage="finetune", pretrained="", label_fraction=1.0, steps=300)
    if a.stage not in STAGES:
        raise ValueError(f"config argument stage={a.stage!r}; expected one of {', '.join(STAGES)}")
    if a.stage == "pretrain":
        if a.pretrained or a.label_fraction != 1.0:
            raise ValueError("config arguments pretrained / label_fraction are for stage=finetune")
        c = fcmae_pretrain.get_config("variant=test,dataset=phantoms,batch=64")
        _data(c)
        c.num_train_steps = 1500
        c.optimizer.lr = 1e-3
        c.optimizer.warmup_steps = 100
        c.eval_every_steps = 500
        c.checkpoint_every_steps = 500
        return c
    c = common.base_config()
    _data(c)
    c.model.name = "convnextv2"
    c.model.kwargs.drop_path_rate = 0.1
    c.data.task = "classification"
    c.data.label_fraction = a.label_fraction
    c.data.eval_split = ""  # evaluated once, on the test patients, after training
    c.init_from = a.pretrained
    c.batch_size = 32
    c.eval_batch_size = 128
    c.num_train_steps = a.steps
    o = c.optimizer
    o.name, o.lr, o.schedule, o.warmup_steps = "adamw", 2e-3, "cosine", 20
    o.weight_decay, o.layer_decay, o.ema_decay, o.grad_clip_norm = 0.3, 0.9, 0.99, 1.0
    c.loss.label_smoothing = 0.2
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0  # the last step only
    c.best_metric = ""
    return c

r"""The CPU demo: a small ConvNeXt V2 classifier and a small SegFormer on the synthetic phantoms.

    brain-jax demo --workdir workdirs/demo          # builds the data, trains both, writes report.md
    brain-jax train --config configs/demo.py:task=classification --workdir workdirs/demo/classification \
        --config.data.data_dir=workdirs/demo/data

Arguments: task (classification | segmentation). Sizes and step counts are tuned so the whole demo
runs in a few minutes on a 2-core laptop while reaching accuracy >= 0.95 and Dice >= 0.85 on the
held-out synthetic patients (random init: no pretrained weights are downloaded).
"""
from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, task="classification")
    c = common.base_config()
    common.set_dataset(c, "phantoms")
    c.init_from = ""
    c.model.dtype = "float32"
    c.data.eval_split = ""  # the demo evaluates once, on the test patients, after training
    c.log_every_steps = 10
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0
    c.best_metric = ""
    c.optimizer.name = "adamw"
    c.optimizer.weight_decay = 0.01
    c.optimizer.grad_clip_norm = 1.0
    c.optimizer.warmup_steps = 10
    c.batch_size = 32
    c.eval_batch_size = 64
    # one device: the two models train at once, in two processes (brain_jax.app.demo), each on one core
    c.mesh.num_devices = 1
    if a.task == "classification":
        c.model.name = "convnextv2"
        c.model.variant = "test"
        c.model.kwargs.drop_path_rate = 0.1
        c.data.task = "classification"
        c.data.image_size = 64
        # From scratch on 64 training patients the net memorises patients unless the augmentation is
        # strong and the run long; EMA weights generalise better than the last step's.
        c.data.augment.rotate_deg = 20.0
        c.data.augment.scale_min = 0.8
        c.data.augment.scale_max = 1.2
        c.loss.label_smoothing = 0.1
        c.optimizer.weight_decay = 0.05
        c.optimizer.ema_decay = 0.98
        c.num_train_steps = 600
        c.optimizer.lr = 4e-3
    elif a.task == "segmentation":
        c.model.name = "segformer"
        c.model.variant = "test"
        # First stage at stride 2 (not 4): logits at half resolution keep small tumours' borders.
        c.model.kwargs = common.ml_collections.ConfigDict(dict(
            drop_path_rate=0.0, classifier_dropout=0.0, strides=(2, 2, 2, 2)))
        c.data.task = "segmentation"
        c.data.image_size = 96
        c.data.augment.rotate_deg = 0.0
        c.data.augment.scale_min = 1.0
        c.data.augment.scale_max = 1.0
        c.num_train_steps = 120
        c.optimizer.lr = 4e-3
        c.loss.dice_weight = 1.0
        # Tumour is ~2.5 % of the pixels: from HF's small head init (std 0.02) unweighted CE settles on
        # "all background" within 120 steps (Dice 0 on the test patients); weighting tumour 4x avoids it.
        c.loss.class_weights = (1.0, 4.0)
    else:
        raise ValueError(f"config argument task={a.task!r}; expected classification or segmentation")
    return c

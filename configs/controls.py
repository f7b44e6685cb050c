r"""The controls of ``compare``: one tiny ConvNeXt V2 on the ``rank`` phantoms, trained briefly or for longer.

    brain-jax data build brain_phantoms --config rank --data-dir workdirs/rank
    brain-jax train --config configs/controls.py:budget=short --workdir workdirs/controls/short \
        --config.data.data_dir=workdirs/rank    # likewise budget=long -> long0, budget=long,seed=1 -> long1
    brain-jax eval --workdir workdirs/controls/short --split test    # each of the three
    brain-jax compare workdirs/controls/short workdirs/controls/long0 --out workdirs/controls/positive
    brain-jax compare workdirs/controls/long0 workdirs/controls/long1 --out workdirs/controls/negative

Arguments: budget (short | long), seed. The positive control compares ``budget=short`` with
``budget=long`` (the longer budget must win by the primary test: about 0.8 against 0.98 test accuracy on
156 test patients); the negative control compares ``budget=long`` under two seeds (one config: "no
difference shown" is expected). ``seed`` sets the initialisation and the order of the training batches.

Both budgets decay the learning rate to 0 (cosine), so each run ends on settled weights. At a constant rate
(300 steps) the long budget's seeds scattered from 0.91 to 0.97 and one pair in six was called different;
annealed over 300 steps, 1 pair in 20 was; over 600 steps, 20 pairs of seeds scored 0.971-0.987 and disagreed on
3-8 of the 156 test patients, none called different (benchmarks/negative_control.py). No augmentation:
1456 training slices of 728 patients suffice at 32 px. On 2 CPU cores a long run with its evaluation takes
~20 s, plus ~30 s the first time a budget's training step is compiled (the cosine schedule is part of it).
"""
from configs import common

BUDGETS = {"short": 20, "long": 600}  # training steps of 32 slices (45 steps are one epoch)


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, budget="long", seed=0)
    if a.budget not in BUDGETS:
        raise ValueError(f"config argument budget={a.budget!r}; expected one of {', '.join(BUDGETS)}")
    c = common.base_config()
    common.set_dataset(c, "phantoms")
    c.data.builder_config = "rank"
    c.data.task = "classification"
    c.data.image_size = 32
    c.data.eval_split = ""  # evaluated once, on the test patients, after training
    c.data.augment.enabled = False
    c.seed = a.seed
    c.init_from = ""
    c.model.name = "convnextv2"
    c.model.variant = "test"
    c.model.dtype = "float32"
    c.model.kwargs.drop_path_rate = 0.0
    c.batch_size = 32
    c.eval_batch_size = 128
    c.num_train_steps = BUDGETS[a.budget]
    c.optimizer.name = "adamw"
    c.optimizer.lr = 4e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 10
    c.optimizer.weight_decay = 0.05
    c.optimizer.grad_clip_norm = 1.0
    c.log_every_steps = 20
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0  # the last step only
    c.best_metric = ""
    c.async_checkpoint = False
    c.mesh.num_devices = 1
    return c

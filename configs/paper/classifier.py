r"""The paper's classification recipe, one for its four classifiers (Table I, Fig. 8, Fig. 9).

    brain-jax train --config configs/paper/classifier.py:model=convnextv2 --workdir workdirs/paper/convnextv2
    brain-jax train --config configs/paper/classifier.py:model=convnext --workdir workdirs/paper/convnext
    brain-jax train --config configs/paper/classifier.py:model=swin --workdir workdirs/paper/swin
    brain-jax train --config configs/paper/classifier.py:model=vit --workdir workdirs/paper/vit
    brain-jax train --config configs/paper/classifier.py:model=vit,split=group --workdir workdirs/honest/vit
    brain-jax train --config configs/paper/classifier.py:model=vit,weights=matched --workdir workdirs/matched/vit
    brain-jax train --config configs/paper/classifier.py:model=convnextv2,runlocal --workdir /tmp/p  # CPU smoke run

Arguments: model (convnextv2 convnext swin vit), dataset (merged figshare kaggle phantoms), split (for the
merged pool: random, the paper's slice-level split; group, whole patients and copies kept together; the
other datasets keep the splits of ``configs/common.py``), weights (paper, the checkpoints below; matched,
see "Matched weights"), runlocal.

Stated by the paper (Rahman et al.): ConvNeXt V2 fine-tuned from a Hugging Face checkpoint, compared with
ConvNeXt V1, Swin and ViT, for 4-class classification (glioma, meningioma, no tumour, pituitary); Adam;
a pool of about 15,000 images merged from the Figshare set and Kaggle sets, split at random (the split
is not described further; slice level is our reading, and every copy of a slice stays in the pool).

Ours, because the paper does not state them, the same for all four models so that a comparison is not
confounded by per-model choices: the checkpoints (ConvNeXt V2-T 22k-224, ConvNeXt-T 224, Swin-T
window 7 224, ViT-B/16 224); image size 224; batch 32; 10 epochs; lr 1e-4 (peak) with a 1-epoch linear
warm-up then cosine decay to 0; no weight decay (plain Adam); gradient clipping at norm 1; no
layer-wise lr decay; drop path 0.1; no label smoothing; augmentation (horizontal flip, rotation up to
10 degrees, scale 0.9-1.1, brightness and contrast 0.1); bfloat16 compute; split fractions 70 / 15 / 15
with seed 0; the best checkpoint by validation accuracy. Input normalisation follows each checkpoint's
pre-training (ImageNet mean / std; 0.5 / 0.5 for Google's ViT): a property of the weights, not of the recipe.

Matched weights (``weights=matched``, ours): the paper's four starting points differ in more than the
architecture. ConvNeXt V2-T comes from FCMAE pre-training then ImageNet-22k and ImageNet-1k fine-tuning,
ViT-B/16 from ImageNet-21k then ImageNet-1k, ConvNeXt-T and Swin-T from ImageNet-1k alone; and ViT-B has
about 86M backbone parameters against 28M for the other three (``brain_jax.models.provenance``). With
``weights=matched`` every model starts from an ImageNet-1k classifier whose only labels were ImageNet-1k's,
with 22-28M backbone parameters: ConvNeXt V2-T ``facebook/convnextv2-tiny-1k-224``, ConvNeXt-T
``facebook/convnext-tiny-224``, Swin-T ``microsoft/swin-tiny-patch4-window7-224``, and DeiT-S
``facebook/deit-small-patch16-224`` (model variant ``small_16``, ImageNet mean / std) in place of ViT-B.
Matched means the same labelled data, not the same training method: the ConvNeXt V2-T checkpoint was
still FCMAE-pre-trained (self-supervised, on ImageNet-1k images) before its ImageNet-1k fine-tuning, and
DeiT-S was trained with DeiT's recipe. The recipe above is unchanged.
"""
from configs import common

MODELS = {  # model -> (brain-jax model name, variant, Hugging Face checkpoint): what the paper ran
    "convnextv2": ("convnextv2", "tiny", "facebook/convnextv2-tiny-22k-224"),
    "convnext": ("convnext", "tiny", "facebook/convnext-tiny-224"),
    "swin": ("swin", "tiny_w7", "microsoft/swin-tiny-patch4-window7-224"),
    "vit": ("vit", "base_16", "google/vit-base-patch16-224"),
}
# weights=matched: ImageNet-1k classifiers of similar size (see the docstring)
MATCHED = {
    **MODELS,
    "convnextv2": ("convnextv2", "tiny", "facebook/convnextv2-tiny-1k-224"),
    "vit": ("vit", "small_16", "facebook/deit-small-patch16-224"),
}
WEIGHTS = {"paper": MODELS, "matched": MATCHED}


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, model="convnextv2", split="random", dataset="merged", weights="paper", runlocal=False)
    if a.model not in MODELS:
        raise ValueError(f"config argument model={a.model!r}; expected one of {', '.join(MODELS)}")
    if a.split not in ("random", "group"):
        raise ValueError(f"config argument split={a.split!r}; expected random (the paper's) or group")
    if a.weights not in WEIGHTS:
        raise ValueError(f"config argument weights={a.weights!r}; expected paper (the paper's checkpoints) or matched")
    c = common.base_config()
    c.model.name, c.model.variant, c.init_from = WEIGHTS[a.weights][a.model]
    c.model.dtype = "bfloat16"
    c.model.kwargs.drop_path_rate = 0.1
    if c.init_from.startswith("google/vit-"):  # trained on inputs scaled to [-1, 1]; the rest keep ImageNet's
        c.data.mean = c.data.std = (0.5, 0.5, 0.5)
    common.set_dataset(c, a.dataset)
    if a.dataset == "merged":
        c.data.dedup = "none"
        c.data.split_by = a.split
    c.data.task = "classification"
    c.data.image_size = 224
    c.batch_size = 32
    c.num_epochs = 10.0
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-4
    c.optimizer.weight_decay = 0.0
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_epochs = 1.0
    c.optimizer.layer_decay = 1.0
    c.optimizer.grad_clip_norm = 1.0
    c.loss.label_smoothing = 0.0
    c.best_metric = "accuracy"
    if a.runlocal:
        common.set_runlocal(c)
        if a.model == "vit":
            c.model.kwargs.image_size = c.data.image_size  # random init: position embeddings for this size
        c.optimizer.lr = 1e-3
    return c

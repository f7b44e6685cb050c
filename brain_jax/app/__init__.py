"""The verbs above the engine (``brain_jax.train``): each makes or reads finished runs and writes results,
tables and figures. Three groups, in this order; a module imports only from its own group, the groups
before it, and the helpers below them all:

1. Single-workdir verbs, one run each: ``evaluate`` (``brain-jax eval``), ``predict``, ``explain`` (with
   ``saliency_panel``, the panel of ``eval --explain`` and the demo) and ``report``. ``report`` also
   renders what the experiment verbs wrote, through ``tables``, so it loads none of them, and neither JAX
   nor the training loop.
2. Experiment verbs across workdirs: ``compare`` (models scored on the same examples), ``suite`` (configs
   over K folds or N seeds: train, evaluate, compare) and ``study`` (``study leakage``: one config trained
   under two split protocols). ``suite`` and ``study`` train: the only verbs of groups 1 and 2 that
   import the training loop (``brain_jax.train.trainer``).
3. Composers, which chain verbs: ``demo`` (train, eval, explain and report on synthetic phantoms),
   ``reproduce`` (the paper's experiments from the downloads to ``paper_report.md``) and ``commands``
   (every CLI verb's handler, ``brain-jax train`` included; each imports its verb inside it, so a verb
   loads only what it runs).

Helpers under all three: ``tables`` (interval text and every markdown table), ``figures`` (matplotlib
figures), ``inputs`` (the image files of ``predict`` and ``explain``, and the workdir's model),
``results`` (the bootstrap's resampling unit and Fig. 10's cases, from per-example results), ``paper``
(the paper's numbers) and ``compile_cache`` (the persistent XLA compilation cache). File names, and how
each file is read and written, belong to ``brain_jax.workdir``.
"""

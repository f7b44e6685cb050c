"""Exact surface distances between binary masks in millimetres (Hausdorff distance, HD95).

Everything is jit-able on static shapes and batched over the leading axis, so a batch sharded over
devices is reduced by the same code that runs on one device.

Border pixels are the mask minus its erosion by the 4-connected cross, with pixels outside the image
counted as background (scipy ``binary_erosion`` with ``border_value=0``, as medpy.metric.binary and
MONAI use): a foreground pixel on the image edge is always a border pixel.

Distances come from an exact Euclidean distance transform of the border set with anisotropic
spacing. Pass 1 finds, for every pixel, the column offset g to the nearest border pixel in its own
row. Pass 2 minimises ``(dy * (r - r'))**2 + (dx * g(r', c))**2`` over rows ``r'``: O(H^2 W) per
image but perfectly parallel, with bounded memory. Only rows and columns that hold border pixels
can matter, so ``hausdorff_distances`` runs both passes and the order statistics on those rows and
columns, compacted to a batch-wide budget (H/8, H/4, H/2 or everything, via ``lax.switch``): the
same float operations, the same bits. No sampling or approximation is involved.
"""
from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

# Budget for the (cases, row block, H, W) intermediate of pass 2 if XLA does not fuse it away.
_BLOCK_ELEMENTS = 1 << 24


def border(mask: jax.Array) -> jax.Array:
    """Border pixels of binary masks (..., H, W): the mask minus its 4-connected erosion.

    Outside the image counts as background, so foreground on the image edge is border (medpy).
    """
    m = jnp.asarray(mask).astype(bool)
    pad = [(0, 0)] * (m.ndim - 2) + [(1, 1), (1, 1)]
    p = jnp.pad(m, pad, constant_values=False)
    eroded = (
        p[..., 1:-1, 1:-1]
        & p[..., :-2, 1:-1]
        & p[..., 2:, 1:-1]
        & p[..., 1:-1, :-2]
        & p[..., 1:-1, 2:]
    )
    return m & ~eroded


def _row_offsets(b: jax.Array) -> jax.Array:
    """Pass 1: |c - c'| to the nearest True pixel in the same row of ``b`` (N, H, W); -1 if none."""
    w = b.shape[-1]
    cols = jnp.arange(w, dtype=jnp.int32)
    big = jnp.int32(4 * w + 4)
    # associative_scan: log2(W) vectorised steps (XLA:CPU lowers lax.cummax to a slow reduce_window)
    left = lax.associative_scan(jnp.maximum, jnp.where(b, cols, -big), axis=b.ndim - 1)
    right = lax.associative_scan(jnp.minimum, jnp.where(b, cols, 2 * big), axis=b.ndim - 1, reverse=True)
    g = jnp.minimum(cols - left, right - cols)
    return jnp.where(g <= w, g, -1)


def _column_term(b: jax.Array, sp: jax.Array) -> jax.Array:
    """(dx * g)^2 from pass 1, ``inf`` in rows without any True pixel."""
    g = _row_offsets(b)
    return jnp.where(g >= 0, jnp.square(sp[:, 1, None, None] * g.astype(jnp.float32)), jnp.inf)


def _pass2(
    col_term: jax.Array, sp: jax.Array, src: jax.Array | None, dst: jax.Array | None, impl: str | None = None
) -> jax.Array:
    """Pass 2: min over source rows r' of (dy * (r - r'))^2 + col_term[r'], for destination rows r.

    ``col_term`` (N, R, W) holds the rows ``src`` (N, R) and ``dst`` (N, Q) are destination row
    indices (None: all H rows). Result (N, Q, W). On CPU a
    running minimum over source rows (XLA:CPU streams it ~8x faster than a fused reduction); on
    accelerators a reduction over blocks of destination rows (``impl`` "loop" / "blocks" forces
    one). Same float operations, same bits.
    """
    col_term, sp = jnp.asarray(col_term), jnp.asarray(sp)
    n, h, w = col_term.shape
    rows = jnp.broadcast_to(jnp.arange(h, dtype=jnp.int32), (n, h))
    src = rows if src is None else jnp.asarray(src)
    dst = rows if dst is None else jnp.asarray(dst)
    ct = col_term  # row j of ct belongs to row src[:, j]
    r_src, q = src.shape[1], dst.shape[1]
    if impl is None:
        impl = "loop" if jax.default_backend() == "cpu" else "blocks"
    if impl == "loop":

        def step(j, best):
            dy = (dst - src[:, j, None]).astype(jnp.float32)  # (N, Q)
            return jnp.minimum(best, jnp.square(sp[:, 0, None] * dy)[:, :, None] + ct[:, j, None, :])

        init = jnp.full((n, q, w), jnp.inf, jnp.float32)
        return lax.fori_loop(0, r_src, step, init, unroll=min(4, r_src))

    block = max(1, min(q, _BLOCK_ELEMENTS // max(1, n * r_src * w)))
    while q % block:
        block -= 1
    dst_blocks = jnp.moveaxis(dst.reshape(n, q // block, block), 1, 0)  # (q // block, N, block)

    def one_block(d: jax.Array) -> jax.Array:
        dy = (d[:, :, None] - src[:, None, :]).astype(jnp.float32)  # (N, block, R)
        dy2 = jnp.square(sp[:, 0, None, None] * dy)
        return jnp.min(dy2[..., None] + ct[:, None, :, :], axis=2)  # (N, block, W)

    out = lax.map(one_block, dst_blocks)  # (q // block, N, block, W)
    return jnp.moveaxis(out, 0, 1).reshape(n, q, w)


def squared_distance_map(b: jax.Array, spacing_mm: jax.Array) -> jax.Array:
    """Exact squared Euclidean distance (mm²) from every pixel to the nearest True pixel of ``b``.

    ``b``: (N, H, W) bool; ``spacing_mm``: (N, 2) as (row, column). Returns float32 (N, H, W),
    ``inf`` where ``b`` has no True pixel. O(H^2 W) per image.
    """
    sp = jnp.broadcast_to(jnp.asarray(spacing_mm, jnp.float32), (b.shape[0], 2))
    return _pass2(_column_term(b, sp), sp, None, None)


def _compaction(used: jax.Array, budget: int) -> tuple[jax.Array, jax.Array]:
    """Flagged indices first: ``(take, where)``, ``take`` (N, budget) the kept indices in order and
    ``where`` (N, L) each index's slot in ``take`` (>= budget when it was not kept)."""
    perm = jnp.argsort(~used, axis=1, stable=True).astype(jnp.int32)
    return perm[:, :budget], jnp.argsort(perm, axis=1).astype(jnp.int32)


def _query_distances(b: jax.Array, query: jax.Array, sp: jax.Array, r: int | None, c: int | None) -> jax.Array:
    """Distances (mm) to the nearest True pixel of ``b``, exact at every ``query`` pixel; (N, H, W).

    With budgets ``r`` / ``c`` set, pass 2 only sees the first ``r`` rows holding True pixels of
    ``b`` (sources) and the first ``r`` rows / ``c`` columns holding ``query`` pixels
    (destinations): exact at every query pixel when no image needs more (the caller checks), at
    O(r^2 c) instead of O(H^2 W). Pixels outside the destination grid are ``inf``.
    """
    if r is None:
        return jnp.sqrt(_pass2(_column_term(b, sp), sp, None, None))
    cols, col_slot = _compaction(jnp.any(query, axis=1), c)  # destination columns
    src_cols, _ = _compaction(jnp.any(b, axis=1), c)
    src, _ = _compaction(jnp.any(b, axis=2), r)
    dst, row_slot = _compaction(jnp.any(query, axis=2), r)
    d = jnp.sqrt(_pass2(_compact_column_term(b, sp, src, src_cols, cols), sp, src, dst))  # (N, r, c)
    # Back to (N, H, W) with gathers (a scatter here trips sharding propagation inside lax.switch).
    d = jnp.take_along_axis(d, jnp.minimum(row_slot, r - 1)[:, :, None], axis=1)
    d = jnp.take_along_axis(d, jnp.minimum(col_slot, c - 1)[:, None, :], axis=2)
    inside = (row_slot < r)[:, :, None] & (col_slot < c)[:, None, :]
    return jnp.where(inside, d, jnp.inf)


def _compact_column_term(
    b: jax.Array, sp: jax.Array, src: jax.Array, src_cols: jax.Array, dst_cols: jax.Array
) -> jax.Array:
    """Pass 1 on a compacted grid: (dx * g)^2 for source rows ``src`` at destination columns.

    g is the column distance to the nearest True pixel of ``b`` in the same row, searched over
    ``src_cols`` (which must hold every column with a True pixel). A running minimum over those
    columns: small, cache-resident arrays instead of scans over the whole (N, H, W) image.
    """
    sub = jnp.take_along_axis(b, src[:, :, None], axis=1)
    sub = jnp.take_along_axis(sub, src_cols[:, None, :], axis=2)  # (N, r, c_src)
    dx = jnp.abs(dst_cols[:, :, None] - src_cols[:, None, :]).astype(jnp.float32)  # (N, c_dst, c_src)
    dx2 = jnp.square(sp[:, 1, None, None] * dx)

    def step(j, best):
        return jnp.minimum(best, jnp.where(sub[:, :, j, None], dx2[:, None, :, j], jnp.inf))

    n, r, c_src = sub.shape
    init = jnp.full((n, r, dst_cols.shape[1]), jnp.inf, jnp.float32)
    return lax.fori_loop(0, c_src, step, init, unroll=min(4, c_src))


def _as_batch(pred: jax.Array, target: jax.Array, spacing_mm) -> tuple[jax.Array, jax.Array, jax.Array]:
    pred = jnp.asarray(pred).astype(bool)
    target = jnp.asarray(target).astype(bool)
    if pred.shape != target.shape or pred.ndim not in (2, 3):
        raise ValueError(
            f"pred and target must be binary masks of equal shape (H, W) or (B, H, W); got {pred.shape} "
            f"and {target.shape}"
        )
    if pred.ndim == 2:
        pred, target = pred[None], target[None]
    sp = jnp.asarray(spacing_mm, jnp.float32)
    if sp.shape not in ((2,), (pred.shape[0], 2)):
        raise ValueError(f"spacing_mm must have shape (2,) or (B, 2) = (row, column) mm; got {sp.shape}")
    return pred, target, jnp.broadcast_to(sp, (pred.shape[0], 2))


@jax.jit
def directed_surface_distances(
    pred: jax.Array, target: jax.Array, spacing_mm
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-pixel directed surface distances (mm) of a batch, as dense maps with masks.

    Returns ``(d_pred, pred_border, d_target, target_border)``, each (B, H, W): ``d_pred`` holds, at
    every pixel, the distance to the nearest *target* border pixel (used where ``pred_border``);
    ``d_target`` the distance to the nearest *pred* border pixel (used where ``target_border``).
    Dense O(H^2 W) maps, for inspection and tests; ``hausdorff_distance`` takes a faster exact path.
    These are medpy's ``__surface_distances(pred, target)`` and ``(target, pred)`` sets.
    """
    pred, target, sp = _as_batch(pred, target, spacing_mm)
    bp, bt = border(pred), border(target)
    d2 = squared_distance_map(jnp.concatenate([bt, bp]), jnp.concatenate([sp, sp]))
    n = pred.shape[0]
    return jnp.sqrt(d2[:n]), bp, jnp.sqrt(d2[n:]), bt


def _lerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
    """numpy's percentile interpolation, including its switch of formula at t >= 0.5."""
    diff = b - a
    return jnp.where(t >= 0.5, b - diff * (1.0 - t), a + diff * t)


def _kth_smallest_pair(values: jax.Array, valid: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact k-th and (k+1)-th smallest (0-based) valid non-negative values of each row of (N, M).

    Bisection on the float32 bit pattern (monotone for non-negative floats) finds the k-th in 31
    counting passes, exact and cheaper than sorting; the next one is a count and a masked min.
    The (k+1)-th is clamped to the last valid value.
    """
    bits = lax.bitcast_convert_type(values.astype(jnp.float32), jnp.int32)
    inf_bits = jnp.int32(0x7F800000)
    bits = jnp.where(valid, bits, inf_bits)
    lo = jnp.zeros(k.shape, jnp.int32)
    hi = jnp.full(k.shape, 0x7F800000, jnp.int32)

    def body(_, carry):
        lo, hi = carry
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(bits <= mid[:, None], axis=-1, dtype=jnp.int32) >= k + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    a, _ = lax.fori_loop(0, 31, body, (lo, hi))
    n = jnp.sum(valid, axis=-1, dtype=jnp.int32)
    at_or_below = jnp.sum(bits <= a[:, None], axis=-1, dtype=jnp.int32)
    above = jnp.min(jnp.where(bits > a[:, None], bits, inf_bits), axis=-1)
    b = jnp.where((at_or_below >= jnp.minimum(k + 2, n)) | (above == inf_bits), a, above)
    as_float = lambda x: lax.bitcast_convert_type(x, jnp.float32)  # noqa: E731
    return as_float(a), as_float(b)


@functools.partial(jax.jit, static_argnames=("q",))
def masked_percentile(values: jax.Array, valid: jax.Array, q: float) -> jax.Array:
    """numpy.percentile(values[valid], q) (linear method) per row of (N, M) arrays; NaN if none valid.

    ``values`` must be non-negative (distances).
    """
    n = jnp.sum(valid, axis=-1)
    pos = (jnp.maximum(n, 1) - 1).astype(jnp.float32) * (jnp.float32(q) / 100.0)
    lo_idx = jnp.floor(pos).astype(jnp.int32)
    t = pos - lo_idx.astype(jnp.float32)
    a, b = _kth_smallest_pair(values, valid, lo_idx)
    return jnp.where(n > 0, _lerp(a, b, t), jnp.nan)


def image_diagonal_mm(shape: tuple[int, int], spacing_mm) -> jax.Array:
    """Diagonal of the field of view, sqrt((H*dy)^2 + (W*dx)^2), the penalty for a missed case."""
    sp = jnp.asarray(spacing_mm, jnp.float32)
    return jnp.sqrt(jnp.square(shape[0] * sp[..., 0]) + jnp.square(shape[1] * sp[..., 1]))


def _reduce_maps(maps, percentile: float | None, symmetric: str) -> jax.Array:
    """HD (percentile None) or a percentile HD from ``directed_surface_distances`` output."""
    d_p, b_p, d_t, b_t = maps
    b = d_p.shape[0]
    if percentile is None:
        neg = jnp.float32(-1.0)
        m_p = jnp.max(jnp.where(b_p, d_p, neg).reshape(b, -1), axis=-1)
        m_t = jnp.max(jnp.where(b_t, d_t, neg).reshape(b, -1), axis=-1)
        return jnp.maximum(m_p, m_t)
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100] or None; got {percentile}")
    if symmetric == "union":
        vals = jnp.concatenate([d_p.reshape(b, -1), d_t.reshape(b, -1)], axis=-1)
        ok = jnp.concatenate([b_p.reshape(b, -1), b_t.reshape(b, -1)], axis=-1)
        return masked_percentile(vals, ok, percentile)
    if symmetric == "max":
        vals = jnp.concatenate([d_p.reshape(b, -1), d_t.reshape(b, -1)])
        ok = jnp.concatenate([b_p.reshape(b, -1), b_t.reshape(b, -1)])
        per = masked_percentile(vals, ok, percentile)
        return jnp.maximum(per[:b], per[b:])
    raise ValueError(f"symmetric must be 'union' or 'max'; got {symmetric!r}")


@functools.partial(jax.jit, static_argnames=("percentiles", "symmetric"))
def hausdorff_distances(
    pred: jax.Array,
    target: jax.Array,
    spacing_mm,
    percentiles: tuple[float | None, ...] = (None, 95.0),
    *,
    symmetric: Literal["union", "max"] = "union",
) -> tuple[jax.Array, ...]:
    """Several Hausdorff variants (e.g. HD and HD95) from one distance transform; see ``hausdorff_distance``.

    Only rows and columns holding border pixels matter, so the distance transform runs on them,
    compacted to the smallest budget (H/8 x W/8, H/4 x W/4, H/2 x W/2) that holds every image
    of the batch (all pixels otherwise): the same numbers as the full O(H^2 W) transform, much
    faster for lesion-sized masks.
    """
    pred, target, sp = _as_batch(pred, target, spacing_mm)
    n, h, w = pred.shape
    bp, bt = border(pred), border(target)
    srcs, queries, sp2 = jnp.concatenate([bt, bp]), jnp.concatenate([bp, bt]), jnp.concatenate([sp, sp])
    fractions = [f for f in (8, 4, 2) if h // f > 0 and w // f > 0]
    # most rows / columns holding border pixels in one image (sources and queries are the same sets)
    need_r = jnp.max(jnp.sum(jnp.any(srcs, axis=2), axis=1))
    need_c = jnp.max(jnp.sum(jnp.any(srcs, axis=1), axis=1))

    def branch(f: int | None):
        r, c = (None, None) if f is None else (h // f, w // f)
        return lambda: _query_distances(srcs, queries, sp2, r, c)

    fits = [(need_r <= h // f) & (need_c <= w // f) for f in fractions]
    index = len(fractions) - sum(fits) if fractions else 0  # fits are nested: budgets grow
    d = lax.switch(jnp.int32(index), [branch(f) for f in fractions] + [branch(None)])

    def reduce_on(f: int | None):
        def run():
            dd, qq = d, queries
            if f is not None:  # the order statistics only need the border pixels' grid
                rows, _ = _compaction(jnp.any(queries, axis=2), h // f)
                cols, _ = _compaction(jnp.any(queries, axis=1), w // f)
                take = lambda x: jnp.take_along_axis(  # noqa: E731
                    jnp.take_along_axis(x, rows[:, :, None], axis=1), cols[:, None, :], axis=2
                )
                dd, qq = take(d), take(queries)
            maps = (dd[:n], qq[:n], dd[n:], qq[n:])
            return tuple(_reduce_maps(maps, q, symmetric) for q in percentiles)

        return run

    if fractions:
        dists = lax.switch(jnp.int32(~fits[-1]), [reduce_on(fractions[-1]), reduce_on(None)])
    else:
        dists = reduce_on(None)()
    flags = empty_case_flags(pred, target)
    diag = image_diagonal_mm((h, pred.shape[2]), sp)
    return tuple(jnp.where(flags["both_empty"], 0.0, jnp.where(flags["miss"], diag, d)) for d in dists)


def hausdorff_distance(
    pred: jax.Array,
    target: jax.Array,
    spacing_mm,
    percentile: float | None = None,
    *,
    symmetric: Literal["union", "max"] = "union",
) -> jax.Array:
    """Symmetric Hausdorff distance between mask borders, per case, in mm (float32 (B,)).

    Args:
      pred, target: binary masks (B, H, W) (or a single (H, W) case; the result is then (1,)).
      spacing_mm: (2,) or (B, 2) pixel spacing as (row, column), the array-axis order of medpy,
        MONAI and DICOM PixelSpacing; may differ per case.
      percentile: None for the maximum (HD); e.g. 95 for HD95.
      symmetric: "union" (medpy ``hd95``, the default): the percentile of the union of both directed
        distance sets; "max" (MONAI ``HausdorffDistanceMetric(directed=False)``): the larger of the
        two directed percentiles. Both give the same HD when ``percentile`` is None.

    Empty masks (a convention, since medpy raises and MONAI returns inf/NaN): both empty -> 0;
    exactly one empty -> the image diagonal in mm (``image_diagonal_mm``), flagged as a miss by
    ``empty_case_flags`` so that reports count misses beside the mean.
    """
    return hausdorff_distances(pred, target, spacing_mm, (percentile,), symmetric=symmetric)[0]


def empty_case_flags(pred: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
    """Per-case flags: ``both_empty`` (no foreground anywhere), ``miss`` (exactly one mask empty) and its
    two kinds, ``missed_tumour`` (prediction empty, ground truth not) and ``false_alarm`` (the reverse)."""
    pred = jnp.asarray(pred).astype(bool)
    target = jnp.asarray(target).astype(bool)
    if pred.ndim == 2:
        pred, target = pred[None], target[None]
    p_empty = ~jnp.any(pred, axis=(-2, -1))
    t_empty = ~jnp.any(target, axis=(-2, -1))
    return {"both_empty": p_empty & t_empty, "miss": p_empty ^ t_empty,
            "missed_tumour": p_empty & ~t_empty, "false_alarm": ~p_empty & t_empty}

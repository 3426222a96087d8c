"""PRM step-reward ops: score / train process reward models at reasoning-step positions only.

PRMs read a score at each step tag. Computing ``lm_head(h)`` over the whole vocabulary and gathering
two columns costs ``N × V`` memory (16k tokens × 152k vocab = 10 GB fp32); these ops read the
``S`` step rows of ``hidden`` and the one or two head rows they need, nothing vocabulary-sized.

Layouts
-------
* ``hidden``: batched ``(B, T, H)`` or packed ``(N, H)``.
* step positions, exactly one of

  - ``step_mask``: bool, ``hidden.shape[:-1]`` (``(B, T)`` or ``(N,)``); steps are taken in row-major
    order, so sequence ``b`` owns the next ``step_mask[b].sum()`` scores;
  - ``step_index``: int ``(S,)`` flat row indices into ``hidden.reshape(-1, H)`` (``b·T + t``), or
    ``(S, 2)`` ``(b, t)`` pairs for batched ``hidden``. Any order; a sequence may have no step.

  Per-step outputs are ``(S,)`` in that order (:func:`step_positions` gives the flat rows).
* per-step targets (``labels`` / ``targets``): ``(S,)``, or shaped like ``hidden.shape[:-1]`` (read
  at the step positions). ``-100`` marks a step to ignore.
* segments (per-sequence step lists) for :func:`segment_reduce`, :func:`first_below`,
  :func:`refine_process_rewards`: packed ``values (S,)`` with ``lengths (B,)`` or ``offsets (B + 1,)``,
  or padded ``values (B, K)`` with ``mask (B, K)`` (``None``: all valid). :func:`pack_steps` /
  :func:`unpack_steps` convert between them.

Two-token scoring (Math-Shepherd "+"/"−", Qwen-PRM classes): pass the LM-head rows of the good and
bad label tokens, e.g. ``lm_head.weight[good_id]`` / ``lm_head.weight[bad_id]``. For training, keep
them as their own parameters (a 2-row head initialised from the LM head): indexing the full
``(V, H)`` weight makes autograd build a ``(V, H)`` gradient. ``p_good = σ(h·(w_g − w_b) + b_g − b_b)``
equals the 2-class softmax over the two label logits.

Accumulation is fp32 for fp32 / bf16 / fp16 (fp64 for fp64), and float outputs (scores, logits,
losses, reductions, refined rewards) come back in that accumulation dtype, as in the pairwise
family; gradients have their inputs' dtypes.

Bad values: NaN / inf in ``hidden`` or the head rows are not searched for; they make the affected
steps' logits non-finite, so their scores and pair losses are NaN (the BCE and MSE losses NaN or +inf;
never a finite number). Step indices,
labels / targets (range, NaN) and segment lengths / offsets are checked and raise ``ValueError``
(these checks read the values: one host read each, skipped for meta tensors), and so are NaN / inf
per-step scores given to :func:`segment_reduce`, :func:`first_below` and
:func:`refine_process_rewards` (switch off with :func:`mmreward.ops.set_check_finite`).
"""
from __future__ import annotations

import numbers
from typing import Optional, Union

import torch

from . import _dispatch
from . import _validate as V
from .library import acc_dtype
from .library import step_reward as ref

__all__ = [
    "step_scores",
    "step_logits",
    "step_bce_loss",
    "step_values",
    "step_value_loss",
    "step_pair_loss",
    "pairs_from_groups",
    "segment_reduce",
    "first_below",
    "refine_process_rewards",
    "step_positions",
    "pack_steps",
    "unpack_steps",
]

IGNORE_INDEX = ref.IGNORE_INDEX
SEGMENT_REDUCTIONS = tuple(ref.SEG_OPS)
_KIND_LOGIT, _KIND_BCE, _KIND_MSE = ref.KIND_LOGIT, ref.KIND_BCE, ref.KIND_MSE

Bias = Union[torch.Tensor, float, None]


# ----------------------------------------------------------------------------------------------
# input normalisation


def _check_hidden(op: str, hidden) -> int:
    V.check_tensor(op, "hidden", hidden, ndim=(2, 3))
    if hidden.shape[-1] == 0:
        raise ValueError(f"{op}: `hidden` has hidden size 0 (shape {tuple(hidden.shape)})")
    return hidden.shape[-1]


def step_positions(
    hidden_shape, step_mask: Optional[torch.Tensor] = None, step_index: Optional[torch.Tensor] = None, *, op: str = "step_positions"
) -> torch.Tensor:
    """Flat row indices ``(S,)`` int64 into ``hidden.reshape(-1, H)`` from a step mask or index list.

    ``hidden_shape``: ``(B, T, H)`` or ``(N, H)``; ``step_mask``: bool ``hidden_shape[:-1]``;
    ``step_index``: ``(S,)`` flat rows or ``(S, 2)`` ``(b, t)`` pairs (batched only)."""
    dims = hidden_shape
    try:
        dims = tuple(hidden_shape)
        # symbolic sizes (torch.export / torch.compile with dynamic shapes) stay symbolic: int() of one
        # specialised the batch size to a constant ("You marked B as dynamic but your code specialized it")
        hidden_shape = tuple(d if isinstance(d, torch.SymInt) else int(d) for d in dims)
        if any(not isinstance(d, torch.SymInt) and (d != h or d < 0)
               for d, h in zip(hidden_shape, dims)):  # 2.5 silently became 2
            raise ValueError
    except (TypeError, ValueError):
        raise TypeError(f"{op}: `hidden_shape` must be a shape such as (B, T, H) or (N, H) (non-negative integers), "
                        f"got {dims!r}") from None
    if len(hidden_shape) not in (2, 3):
        raise ValueError(f"{op}: `hidden_shape` must be (B, T, H) or (N, H), got {hidden_shape}")
    lead = hidden_shape[:-1]
    N = 1
    for d in lead:
        N *= d
    if (step_mask is None) == (step_index is None):
        raise ValueError(f"{op}: pass exactly one of `step_mask` and `step_index`")
    if step_mask is not None:
        if not isinstance(step_mask, torch.Tensor):
            raise TypeError(f"{op}: `step_mask` must be a torch.Tensor, got {type(step_mask).__name__}")
        if step_mask.dtype != torch.bool:
            raise TypeError(f"{op}: `step_mask` must be a bool tensor, got {step_mask.dtype}")
        if tuple(step_mask.shape) != lead:
            raise ValueError(f"{op}: `step_mask` has shape {tuple(step_mask.shape)} but hidden's leading shape is {lead}")
        if step_mask.device.type == "meta":
            raise ValueError(f"{op}: the number of steps depends on the values of `step_mask`, which a meta tensor "
                             "does not have; pass `step_index` instead")
        return step_mask.reshape(-1).nonzero().squeeze(1)
    V.check_int_tensor(op, "step_index", step_index, ndim=(1, 2))
    idx = step_index.long()
    if idx.dim() == 2:
        if len(lead) != 2 or idx.shape[1] != 2:
            raise ValueError(
                f"{op}: `step_index` of shape {tuple(idx.shape)}: (S, 2) (b, t) pairs need batched (B, T, H) hidden"
            )
        B, T = lead
        if idx.numel() and V.readable(op, "step_index", idx):
            (b_lo, t_lo), (b_hi, t_hi) = (v.tolist() for v in torch.aminmax(idx, dim=0))  # one host read
            if b_lo < 0 or b_hi >= B:
                raise ValueError(f"{op}: `step_index` batch index out of range [0, {B})")
            if t_lo < 0 or t_hi >= T:
                raise ValueError(f"{op}: `step_index` position out of range [0, {T})")
        idx = idx[:, 0] * T + idx[:, 1]
    elif idx.numel() and V.readable(op, "step_index", idx):
        lo, hi = (int(v) for v in torch.aminmax(idx))
        if lo < 0 or hi >= N:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{op}: `step_index` value {bad} out of range [0, {N}) (flat rows of hidden)")
    return idx.contiguous()


def _prepare_head(op, hidden, w, w_neg, b, b_neg, step_mask, step_index):
    H = _check_hidden(op, hidden)
    for name, t in (("w_good" if w_neg is not None else "weight", w), ("w_bad", w_neg)):
        if t is None:
            continue
        V.check_tensor(op, name, t)
        if tuple(t.shape) != (H,):
            raise ValueError(f"{op}: `{name}` must have shape ({H},) (hidden size), got {tuple(t.shape)}")
    V.check_same_device(op, hidden=hidden, w=w, w_neg=w_neg)
    index = step_positions(hidden.shape, step_mask, step_index, op=op)
    if index.device != hidden.device:
        which = "step_mask" if step_mask is not None else "step_index"
        raise ValueError(f"{op}: `{which}` is on {index.device} but `hidden` is on {hidden.device}")
    acc = acc_dtype(hidden.dtype)
    bias = None
    for name, bb, sign in (("b_good" if w_neg is not None else "bias", b, 1.0), ("b_bad", b_neg, -1.0)):
        if bb is None:
            continue
        if isinstance(bb, bool) or (not isinstance(bb, torch.Tensor) and not V.is_real(bb)):
            raise TypeError(f"{op}: `{name}` must be a tensor, float or None, got {type(bb).__name__}")
        if not isinstance(bb, torch.Tensor):
            bb = torch.tensor(float(bb), dtype=acc, device=hidden.device)
        elif bb.is_complex():
            raise TypeError(f"{op}: `{name}` must be a real tensor, got {bb.dtype}")
        elif bb.numel() != 1:
            raise ValueError(f"{op}: `{name}` must hold one value, got shape {tuple(bb.shape)}")
        else:
            V.check_movable(op, name, bb, hidden.device, "hidden")
        bb = bb.reshape(()).to(device=hidden.device, dtype=acc)
        bias = sign * bb if bias is None else bias + sign * bb
    h2 = hidden.reshape(-1, H)
    if not h2.is_contiguous():
        h2 = h2.contiguous()
    w = w.to(hidden.dtype).contiguous()
    if w_neg is not None:
        w_neg = w_neg.to(hidden.dtype).contiguous()
    return h2, index, w, w_neg, bias


def _prepare_targets(op, name, targets, hidden, index, *, unit_interval: bool):
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(targets).__name__}")
    if targets.is_complex():
        raise TypeError(f"{op}: `{name}` must be a real float, integer or bool tensor, got {targets.dtype}")
    S = index.shape[0]
    lead = tuple(hidden.shape[:-1])
    if tuple(targets.shape) == (S,):
        y = targets
    elif tuple(targets.shape) == lead:
        if targets.device != hidden.device:
            raise ValueError(f"{op}: `{name}` is on {targets.device} but `hidden` is on {hidden.device}")
        y = targets.reshape(-1).index_select(0, index)
    else:
        raise ValueError(
            f"{op}: `{name}` has shape {tuple(targets.shape)}; expected ({S},) (one per step) or {lead} (per position)"
        )
    if y.device != hidden.device:
        raise ValueError(f"{op}: `{name}` is on {y.device} but `hidden` is on {hidden.device}")
    y = y.to(acc_dtype(hidden.dtype)).contiguous()
    if y.numel() and V.readable(op, name, y):
        # one host read on the common path; the details only for the error message
        ok = ((y >= 0) & (y <= 1)) if unit_interval else torch.isfinite(y)
        bad = ~ok & (y != IGNORE_INDEX)
        if bool(bad.any()):
            if bool(torch.isnan(y).any()):
                raise ValueError(f"{op}: `{name}` has {int(torch.isnan(y).sum())} NaN values")
            if not unit_interval:
                raise ValueError(f"{op}: `{name}` has inf values")
            v = float(y[bad][0])
            raise ValueError(f"{op}: `{name}` must be in [0, 1] (hard or soft labels) or {IGNORE_INDEX} (ignore), got {v}")
    return y


def _real_option(op: str, name: str, value) -> float:
    """A float option given as a number or a one-element tensor (not a bool / str / None)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        return float(value)
    if not V.is_real(value):
        raise ValueError(f"{op}: `{name}` must be a number, got {value!r}")
    return float(value)


def _need_steps(op, index):
    if index.shape[0] == 0:
        raise ValueError(f"{op}: no step positions (`step_mask` / `step_index` is empty); nothing to compute a loss over")


# ----------------------------------------------------------------------------------------------
# 1. two-token step scoring


def step_logits(
    hidden: torch.Tensor,  # (B, T, H) | (N, H)
    w_good: torch.Tensor,  # (H,)
    w_bad: Optional[torch.Tensor],  # (H,) | None
    *,
    b_good: Bias = None,
    b_bad: Bias = None,
    step_mask: Optional[torch.Tensor] = None,  # (B, T) | (N,) bool
    step_index: Optional[torch.Tensor] = None,  # (S,) | (S, 2) int
) -> torch.Tensor:  # (S,)
    """Per-step logit ``z = h·(w_good − w_bad) + (b_good − b_bad)`` (``w_bad=None``: ``h·w + b``),
    differentiable w.r.t. hidden, both rows and the biases."""
    op = "step_logits"
    h2, index, w, wn, bias = _prepare_head(op, hidden, w_good, w_bad, b_good, b_bad, step_mask, step_index)
    return _dispatch.call("step_head", hidden.device, h2, index, w, wn, bias, None, _KIND_LOGIT, 0)[0]


def step_scores(
    hidden: torch.Tensor,  # (B, T, H) | (N, H)
    w_good: torch.Tensor,  # (H,)  LM-head row of the good-label token
    w_bad: torch.Tensor,  # (H,)  LM-head row of the bad-label token
    *,
    b_good: Bias = None,
    b_bad: Bias = None,
    step_mask: Optional[torch.Tensor] = None,  # (B, T) | (N,) bool
    step_index: Optional[torch.Tensor] = None,  # (S,) | (S, 2) int
) -> torch.Tensor:  # (S,)
    """``p_good = σ(h·(w_good − w_bad) + (b_good − b_bad))`` at the step positions, which equals
    ``softmax(logits[..., [good, bad]])[..., 0]`` of the full-vocabulary path. Differentiable."""
    op = "step_scores"
    h2, index, w, wn, bias = _prepare_head(op, hidden, w_good, w_bad, b_good, b_bad, step_mask, step_index)
    z = _dispatch.call("step_head", hidden.device, h2, index, w, wn, bias, None, _KIND_LOGIT, 0)[0]
    return torch.sigmoid(z) + (z - z)  # NaN, not σ(±inf) = 1 / 0, for a non-finite logit


def step_bce_loss(
    hidden: torch.Tensor,  # (B, T, H) | (N, H)
    w_good: torch.Tensor,  # (H,)
    w_bad: torch.Tensor,  # (H,)
    labels: torch.Tensor,  # (S,) | hidden.shape[:-1]; in [0, 1] (hard/bool or soft) or -100
    *,
    b_good: Bias = None,
    b_bad: Bias = None,
    step_mask: Optional[torch.Tensor] = None,
    step_index: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> torch.Tensor:  # () | (S,)
    """Binary cross-entropy of ``p_good`` against per-step labels (1 = good step; soft Monte-Carlo
    estimates allowed), steps labelled ``-100`` ignored. ``reduction``: ``"mean"`` over non-ignored
    steps (0 when all are ignored), ``"sum"``, or ``"none"`` → ``(S,)`` with 0 at ignored steps.
    Gradients flow to ``hidden``, ``w_good``, ``w_bad`` and the biases. Raises if there is no step."""
    op = "step_bce_loss"
    red = V.reduction_code(op, reduction)
    V.check_tensor(op, "w_bad", w_bad)
    h2, index, w, wn, bias = _prepare_head(op, hidden, w_good, w_bad, b_good, b_bad, step_mask, step_index)
    _need_steps(op, index)
    y = _prepare_targets(op, "labels", labels, hidden, index, unit_interval=True)
    return _dispatch.call("step_head", hidden.device, h2, index, w, wn, bias, y, _KIND_BCE, red)[0]


# ----------------------------------------------------------------------------------------------
# 2. scalar step heads (value / PPM)


def step_values(
    hidden: torch.Tensor,  # (B, T, H) | (N, H)
    weight: torch.Tensor,  # (H,)
    bias: Bias = None,
    *,
    step_mask: Optional[torch.Tensor] = None,
    step_index: Optional[torch.Tensor] = None,
) -> torch.Tensor:  # (S,)
    """Per-step value ``h·weight + bias`` at the step positions (differentiable)."""
    return step_logits(hidden, weight, None, b_good=bias, step_mask=step_mask, step_index=step_index)


def step_value_loss(
    hidden: torch.Tensor,  # (B, T, H) | (N, H)
    weight: torch.Tensor,  # (H,)
    targets: torch.Tensor,  # (S,) | hidden.shape[:-1]; -100 = ignore
    bias: Bias = None,
    *,
    step_mask: Optional[torch.Tensor] = None,
    step_index: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> torch.Tensor:  # () | (S,)
    """MSE ``(h·weight + bias − target)²`` per step (ReST-MCTS* value targets), ``-100`` ignored;
    reductions as in :func:`step_bce_loss`."""
    op = "step_value_loss"
    red = V.reduction_code(op, reduction)
    h2, index, w, _, b = _prepare_head(op, hidden, weight, None, bias, None, step_mask, step_index)
    _need_steps(op, index)
    y = _prepare_targets(op, "targets", targets, hidden, index, unit_interval=False)
    return _dispatch.call("step_head", hidden.device, h2, index, w, None, b, y, _KIND_MSE, red)[0]


def pairs_from_groups(
    group: torch.Tensor,  # (S,) int; steps with group < 0 take no part
    polarity: torch.Tensor,  # (S,) bool (True = positive / correct step)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # pos (P,), neg (P,), pair_group (P,)
    """Every (positive, negative) step pair within each group, as step indices, plus each pair's
    group id. Groups with no positive or no negative step give no pair."""
    op = "pairs_from_groups"
    V.check_int_tensor(op, "group", group, ndim=(1,))
    if not isinstance(polarity, torch.Tensor) or polarity.dtype != torch.bool:
        raise TypeError(f"{op}: `polarity` must be a bool tensor")
    V.check_same_shape(op, group=group, polarity=polarity)
    for name, t in (("group", group), ("polarity", polarity)):
        if not V.has_data(t) or V.is_vmapped(t):
            raise ValueError(f"{op}: the pairs depend on the values of `{name}`, which a meta tensor (or a tensor "
                             "batched by vmap / traced by torch.compile) does not have")
    if polarity.device != group.device:
        raise ValueError(f"{op}: `polarity` is on {polarity.device} but `group` is on {group.device}")
    group = group.long()
    dev = group.device
    ar = torch.arange(group.shape[0], device=dev)
    pos_l, neg_l, grp_l = [], [], []
    for g in torch.unique(group[group >= 0]).tolist():
        m = group == g
        p, n = ar[m & polarity], ar[m & ~polarity]
        if p.numel() == 0 or n.numel() == 0:
            continue
        pos_l.append(p.repeat_interleave(n.numel()))
        neg_l.append(n.repeat(p.numel()))
        grp_l.append(torch.full((p.numel() * n.numel(),), g, dtype=torch.long, device=dev))
    if not pos_l:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return e, e.clone(), e.clone()
    return torch.cat(pos_l), torch.cat(neg_l), torch.cat(grp_l)


def step_pair_loss(
    hidden: torch.Tensor,  # (B, T, H) | (N, H)
    weight: torch.Tensor,  # (H,)
    bias: Bias = None,
    *,
    step_mask: Optional[torch.Tensor] = None,
    step_index: Optional[torch.Tensor] = None,
    pos_index: Optional[torch.Tensor] = None,  # (P,) int, indices into the S steps
    neg_index: Optional[torch.Tensor] = None,  # (P,) int
    pair_group: Optional[torch.Tensor] = None,  # (P,) int; None: one group
    step_group: Optional[torch.Tensor] = None,  # (S,) int, alternative to explicit pairs
    step_polarity: Optional[torch.Tensor] = None,  # (S,) bool
    reduction: str = "mean",
) -> torch.Tensor:  # () | (P,)
    """rStar PPM pairwise step loss on per-step values ``r = h·weight + bias``.

    Pairs are either explicit (``pos_index``, ``neg_index`` into the ``S`` steps, with optional
    ``pair_group``) or all pos × neg pairs within each ``step_group`` (``step_polarity`` True =
    positive; see :func:`pairs_from_groups`). Per pair ``l = −log σ(r_pos − r_neg)``; each group's
    pairs are averaged (weight ``1/(n_pos·n_neg)`` when all its pairs are present).
    ``reduction``: ``"mean"`` over groups, ``"sum"`` over groups, ``"none"`` → ``(P,)`` per pair."""
    op = "step_pair_loss"
    red = V.reduction_code(op, reduction)
    h2, index, w, _, b = _prepare_head(op, hidden, weight, None, bias, None, step_mask, step_index)
    S = index.shape[0]
    if step_group is not None or step_polarity is not None:
        if pos_index is not None or neg_index is not None or pair_group is not None:
            raise ValueError(f"{op}: pass either `step_group`/`step_polarity` or `pos_index`/`neg_index`, not both")
        if step_group is None or step_polarity is None:
            raise ValueError(f"{op}: `step_group` and `step_polarity` go together")
        V.check_int_tensor(op, "step_group", step_group, ndim=(1,))  # named as passed here (was `group`)
        if not isinstance(step_polarity, torch.Tensor) or step_polarity.dtype != torch.bool:
            got = step_polarity.dtype if isinstance(step_polarity, torch.Tensor) else type(step_polarity).__name__
            raise TypeError(f"{op}: `step_polarity` must be a bool tensor, got {got}")
        for name, t in (("step_group", step_group), ("step_polarity", step_polarity)):
            if tuple(t.shape) != (S,):
                raise ValueError(f"{op}: `{name}` must have shape ({S},) (one per step), got {tuple(t.shape)}")
        pos, neg, grp = pairs_from_groups(step_group, step_polarity)
    else:
        if pos_index is None or neg_index is None:
            raise ValueError(f"{op}: pass `pos_index` and `neg_index` (or `step_group` and `step_polarity`)")
        V.check_int_tensor(op, "pos_index", pos_index, ndim=(1,))
        V.check_int_tensor(op, "neg_index", neg_index, ndim=(1,))
        V.check_same_shape(op, pos_index=pos_index, neg_index=neg_index)
        pos, neg = pos_index.long().contiguous(), neg_index.long().contiguous()
        for name, t in (("pos_index", pos), ("neg_index", neg)):
            if t.numel() and V.readable(op, name, t) and not 0 <= int(t.min()) <= int(t.max()) < S:
                raise ValueError(f"{op}: `{name}` has values outside [0, {S}) (indices into the {S} steps)")
        if pair_group is not None:
            V.check_int_tensor(op, "pair_group", pair_group, ndim=(1,))
            V.check_same_shape(op, pos_index=pos, pair_group=pair_group)
            grp = pair_group.long()
        else:
            grp = torch.zeros_like(pos)
    if pos.numel() == 0:
        raise ValueError(f"{op}: no (positive, negative) step pairs; nothing to compute a loss over")
    # pairs / groups often come from a CPU data loader while hidden is on the GPU: the kernels index
    # on hidden's device
    for name, t in (("pos_index", pos), ("neg_index", neg), ("pair_group", grp)):
        V.check_movable(op, name, t, hidden.device, "hidden")
    pos, neg, grp = pos.to(hidden.device), neg.to(hidden.device), grp.to(hidden.device)
    acc = acc_dtype(hidden.dtype)
    weights = None
    if red != 0 and grp.device.type == "meta":  # shapes only: the group sizes are values
        weights = torch.empty(pos.shape, dtype=acc, device=grp.device)
    elif red != 0:
        _, inv, counts = torch.unique(grp, return_inverse=True, return_counts=True)
        weights = 1.0 / counts.to(acc)[inv]
        if red == 1:
            weights = weights / counts.numel()
        weights = weights.contiguous()
    r = _dispatch.call("step_head", hidden.device, h2, index, w, None, b, None, _KIND_LOGIT, 0)[0]  # (S,) acc dtype
    # a +inf positive (or -inf negative) value gave −log σ(+inf) = 0 and zero gradients: a finite loss
    # from a non-finite hidden state / head. r − r is NaN exactly there (0 elsewhere, exact; gradient 1),
    # so such a pair's loss and gradients are NaN, as everywhere else in the ops (no host read)
    r = r + (r - r)
    return _dispatch.call("step_pair_loss", hidden.device, r, pos, neg, weights, red != 0)


# ----------------------------------------------------------------------------------------------
# 3. segment reductions / 4. reward refinement


def _prepare_segments(op, values, lengths, offsets, mask, *, name="scores"):
    V.check_tensor(op, name, values, ndim=(1, 2))
    if values.dim() == 2:
        if lengths is not None or offsets is not None:
            raise ValueError(f"{op}: padded (B, K) `{name}` take `mask`, not `lengths`/`offsets`")
        if mask is None:  # every step valid: row-major, nothing to pack (also on meta)
            values, lengths = values.reshape(-1), torch.full((values.shape[0],), values.shape[1], device=values.device)
        else:
            values, lengths = pack_steps(values, mask)
    elif mask is not None:
        raise ValueError(f"{op}: `mask` goes with padded (B, K) `{name}`; packed (S,) `{name}` take `lengths`/`offsets`")
    S = values.shape[0]
    if (lengths is None) == (offsets is None):
        raise ValueError(f"{op}: pass exactly one of `lengths` and `offsets`")
    if lengths is not None:
        lengths = _check_lengths(op, lengths, S, name)
        V.check_movable(op, "lengths", lengths, values.device, name)
        lengths = lengths.to(values.device)
        offsets = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])
    else:
        V.check_int_tensor(op, "offsets", offsets, ndim=(1,))
        _check_layout_not_vmapped(op, "offsets", offsets)
        V.check_movable(op, "offsets", offsets, values.device, name)
        offsets = offsets.long().to(values.device)
        if offsets.numel() == 0:
            raise ValueError(f"{op}: `offsets` must have B + 1 >= 1 entries")
        if V.has_data(offsets) and (int(offsets[0]) != 0 or int(offsets[-1]) != S
                                    or bool((offsets[1:] < offsets[:-1]).any())):
            raise ValueError(f"{op}: `offsets` must start at 0, be non-decreasing and end at {S} (len of `{name}`)")
    V.check_finite(op, [(name, values)])
    return values.contiguous(), offsets.contiguous()


def _check_layout_not_vmapped(op: str, name: str, t: torch.Tensor) -> None:
    if V.is_vmapped(t):
        raise ValueError(f"{op}: `{name}` is batched by torch.func.vmap, but the segment layout sets the output "
                         f"shape and must be the same for every vmapped call: vmap over the values only "
                         f"(in_dims=None for `{name}`)")


def _check_lengths(op: str, lengths, S: int, name: str) -> torch.Tensor:
    """``lengths`` as int64 [B], checked: non-negative, summing to the S packed steps of `name`."""
    V.check_int_tensor(op, "lengths", lengths, ndim=(1,))
    _check_layout_not_vmapped(op, "lengths", lengths)
    lengths = lengths.long()
    if lengths.numel() and V.has_data(lengths):
        lo, total = (int(v) for v in torch.stack([lengths.min(), lengths.sum()]))  # one host read
        if lo < 0:
            raise ValueError(f"{op}: `lengths` has negative values")
        if total != S:
            raise ValueError(f"{op}: `lengths` sum to {total} but `{name}` has {S} steps")
    elif not lengths.numel() and S:
        raise ValueError(f"{op}: `lengths` is empty but `{name}` has {S} steps")
    return lengths


def pack_steps(
    values: torch.Tensor,  # (B, K)
    mask: torch.Tensor,  # (B, K) bool
) -> tuple[torch.Tensor, torch.Tensor]:  # packed (S,), lengths (B,)
    """Padded per-step values → packed ``(S,)`` (row-major over ``mask``) and ``lengths (B,)``."""
    V.check_tensor("pack_steps", "values", values, ndim=(2,), floating=False)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError("pack_steps: `mask` must be a bool tensor")
    V.check_same_shape("pack_steps", values=values, mask=mask)
    if mask.device.type == "meta":
        raise ValueError("pack_steps: the number of steps depends on the values of `mask`, which a meta tensor does "
                         "not have; pass packed values with `lengths` / `offsets` instead")
    _check_layout_not_vmapped("pack_steps", "mask", mask)
    V.check_movable("pack_steps", "mask", mask, values.device, "values")
    if values.device.type == "meta":  # shapes only, the count from the mask's values
        return values.new_empty((int(mask.sum()),)), mask.sum(dim=1).to(values.device)
    return values[mask.to(values.device)], mask.sum(dim=1).to(values.device)


def unpack_steps(
    packed: torch.Tensor,  # (S,)
    lengths: torch.Tensor,  # (B,)
    fill: float = 0.0,
) -> torch.Tensor:  # (B, max(lengths))
    """Packed per-step values → padded ``(B, Kmax)`` with ``fill`` after each sequence's steps."""
    op = "unpack_steps"
    V.check_tensor(op, "packed", packed, ndim=(1,), floating=False)
    if isinstance(fill, torch.Tensor) and fill.numel() == 1 and not fill.is_complex():
        fill = fill.item()
    if not (isinstance(fill, numbers.Real) or (packed.dtype == torch.bool and isinstance(fill, bool))):
        raise TypeError(f"{op}: `fill` must be a number, got {fill!r}")
    if not (packed.is_floating_point() or packed.is_complex()) and not (
            V.is_finite_real(fill) and float(fill) == int(fill)):
        # new_full would silently truncate 0.5 to 0 in an integer tensor
        raise ValueError(f"{op}: `fill` {fill!r} cannot be stored in `packed` of dtype {packed.dtype} "
                         "(pass a float `packed` or an integer `fill`)")
    lengths = _check_lengths(op, lengths, packed.shape[0], "packed")
    if lengths.numel() and lengths.device.type == "meta":
        raise ValueError(f"{op}: the padded width is max(`lengths`), which a meta tensor does not have; "
                         "pass `lengths` with its values")
    K = int(lengths.max()) if lengths.numel() else 0  # read before lengths goes to packed's device (maybe meta)
    lengths = lengths.to(packed.device)
    mask = torch.arange(K, device=packed.device).unsqueeze(0) < lengths.unsqueeze(1)
    out = packed.new_full((lengths.numel(), K), fill)
    return out.masked_scatter(mask, packed)


def segment_reduce(
    scores: torch.Tensor,  # (S,) packed | (B, K) padded
    lengths: Optional[torch.Tensor] = None,  # (B,)
    *,
    offsets: Optional[torch.Tensor] = None,  # (B + 1,)
    mask: Optional[torch.Tensor] = None,  # (B, K) bool, with padded scores
    reduce: str = "min",
    empty_value: float = 1.0,
) -> torch.Tensor:  # (B,)
    """Aggregate per-step scores of each sequence: ``reduce`` is ``"min"``, ``"prod"`` (computed in log
    space), ``"logprod"`` (``Σ log p``, no underflow), ``"last"``, ``"mean"``, ``"max"`` or ``"sum"``.
    A sequence with no steps gets ``empty_value`` (default 1.0: "no step is wrong"; ``logprod``
    gives ``log(empty_value)``). ``prod``/``logprod`` need scores ≥ 0. Differentiable (min/max: the
    first arg-extremum gets the gradient)."""
    op = "segment_reduce"
    if not isinstance(reduce, str) or reduce not in ref.SEG_OPS:
        raise ValueError(f"{op}: `reduce` must be one of {SEGMENT_REDUCTIONS}, got {reduce!r}")
    empty_value = _real_option(op, "empty_value", empty_value)
    values, offs = _prepare_segments(op, scores, lengths, offsets, mask)
    if reduce in ("prod", "logprod"):
        if V.check_finite_enabled() and values.numel() and V.has_data(values) and not V.is_vmapped(values) and bool(
                (values < 0).any()):
            raise ValueError(f"{op}: `scores` must be >= 0 for reduce={reduce!r} (probabilities)")
        if reduce == "logprod" and empty_value <= 0:
            raise ValueError(f"{op}: `empty_value` must be > 0 for reduce='logprod' (its log is used)")
    return _dispatch.call("step_segment_reduce", values.device, values, offs, ref.SEG_OPS[reduce], float(empty_value))


def first_below(
    scores: torch.Tensor,  # (S,) packed | (B, K) padded
    lengths: Optional[torch.Tensor] = None,  # (B,)
    *,
    offsets: Optional[torch.Tensor] = None,  # (B + 1,)
    mask: Optional[torch.Tensor] = None,  # (B, K) bool
    threshold: float = 0.5,
) -> torch.Tensor:  # (B,) int64
    """Index (within its sequence) of the first step with ``score < threshold`` — the ProcessBench
    prediction of the earliest wrong step; ``-1`` when there is none (also for zero-step sequences)."""
    op = "first_below"
    if isinstance(threshold, torch.Tensor) and threshold.numel() == 1 and threshold.dtype != torch.bool \
            and not threshold.is_complex():
        threshold = float(threshold)  # e.g. a quantile computed with torch (was refused)
    if not V.is_real(threshold) or V.is_nan_real(threshold):
        raise ValueError(f"{op}: `threshold` must be a number (not NaN), got {threshold!r}")
    values, offs = _prepare_segments(op, scores, lengths, offsets, mask)
    with torch.no_grad():
        return _dispatch.call("step_first_below", values.device, values, offs, float(threshold))


def refine_process_rewards(
    rewards: torch.Tensor,  # (S,) packed | (B, K) padded
    lengths: Optional[torch.Tensor] = None,  # (B,)
    *,
    offsets: Optional[torch.Tensor] = None,  # (B + 1,)
    mask: Optional[torch.Tensor] = None,  # (B, K) bool
    clip: Optional[float] = None,
    delta: bool = False,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:  # refined (S,), returns (S,)
    """PRM reward refinement for RL (Gao et al. 2024). Per sequence of K steps:
    ``clip=η``: ``r̃_k = min(r_k − η, 0)``; ``delta=True``: ``r̃_k = r_k − r_{k+1}`` for k < K and
    ``r̃_K = r_K`` (clip is applied first when both are set). Returns the per-step rewards and the
    discounted returns-to-go ``G_k = Σ_{j ≥ k} γ^{j−k} r̃_j`` (within the sequence), packed ``(S,)`` (padded input is packed row-major; :func:`unpack_steps` pads back).
    Outputs carry no gradient (rewards are RL targets)."""
    op = "refine_process_rewards"
    values, offs = _prepare_segments(op, rewards, lengths, offsets, mask, name="rewards")
    clip, gamma = (float(x) if isinstance(x, torch.Tensor) and x.numel() == 1 and x.dtype != torch.bool
                   and not x.is_complex() else x for x in (clip, gamma))  # one-element tensors, as empty_value
    if clip is not None and not V.is_finite_real(clip):
        raise ValueError(f"{op}: `clip` must be a finite float (η) or None, got {clip!r}")
    if not (V.is_real(gamma) and 0.0 <= float(gamma) <= 1.0):
        raise ValueError(f"{op}: `gamma` must be a number in [0, 1], got {gamma!r}")
    if not (isinstance(delta, bool) or (type(delta).__module__ == "numpy" and type(delta).__name__ in ("bool", "bool_"))
            or (isinstance(delta, numbers.Integral) and delta in (0, 1))):
        # a string such as "false" would otherwise count as True
        raise TypeError(f"{op}: `delta` must be True or False, got {delta!r}")
    with torch.no_grad():
        return _dispatch.call("step_refine", values.device, values.detach(), offs, clip is not None, float(clip or 0.0),
                              bool(delta), float(gamma))

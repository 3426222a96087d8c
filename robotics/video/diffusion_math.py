"""Discrete-diffusion arithmetic of VQ-Diffusion (Gu et al., CVPR 2022) over codebook tokens.

All distributions are log-probabilities in channel-last layout ``[B, L, C]``: ``B`` frames, ``L``
tokens per frame, ``C = K + 1`` classes (the ``K`` codebook entries, then the mask class at index
``K``). Log-probabilities are clamped to ``[-70, 0]`` as VQ-Diffusion does, so ``exp`` never
underflows to an exact zero that would turn a KL into ``0 * -inf``.

**Noise levels.** Level ``0`` is clean data and level ``n`` in ``1..T`` is the n-th forward step
(VQ-Diffusion's timestep index ``t = n - 1``). The forward process of one token from level 0 to
level ``n`` keeps it with prob. ``ᾱ_n + β̄_n``, replaces it by each other code with prob. ``β̄_n``
and masks it with prob. ``γ̄_n`` (the mask is absorbing). The schedule is VQ-Diffusion's
``alpha1`` schedule, the one Diffusion Reward's configs use: ``ᾱ`` falls linearly from ``att_1``
to ``att_T`` and ``γ̄`` rises linearly from ``ctt_1`` to ``ctt_T`` over the T levels, and
``β̄ = (1 − ᾱ − γ̄) / K``. With the official values (0.99999 → 0.000009, 0.000009 → 0.99999)
``ᾱ + γ̄ ≈ 1 − 1e-6`` at every level, so the process is the absorbing (mask-only) one with a
1e-6 uniform-replacement floor.

**Skip steps.** The transition between any two levels ``m < n`` is again of this form with
``α_mn = ᾱ_n/ᾱ_m``, ``γ_mn = 1 − (1 − γ̄_n)/(1 − γ̄_m)``, ``β_mn = (1 − α_mn − γ_mn)/K``, so
:func:`posterior` computes the exact ``q(x_m | x_n, x_0)`` for any pair, which is what a fast
chain with skipped steps needs. (The official fast chain instead reuses the one-step posterior at
a shifted timestep; see ``DESIGN`` notes in :mod:`.vq_diffusion`.)

The per-token reductions go through :mod:`mmreward.ops` (fused C++/CUDA/Triton kernels):
:func:`kl`, :func:`decoder_log_likelihood`, :func:`entropy`, :func:`cross_entropy` are the only
places that touch them.
"""
from __future__ import annotations

from typing import Optional

import torch

from mmreward.ops import categorical_kl, codebook_entropy, codebook_nll, log_categorical

LOG_MIN = -70.0


class DiffusionSchedule(torch.nn.Module):
    """Cumulative (ᾱ, β̄, γ̄) per level and the log-coefficients of every level-to-level transition.

    Buffers (float32, computed in float64): ``log_cum_a/b/c``, ``log_1m_cum_c`` ``[T+1]`` (index =
    level, 0 = clean), ``log_tr_a/b/c`` ``[T+1, T+1]`` with ``[m, n]`` = transition from level
    ``m`` to level ``n > m``, and ``cum_c`` (γ̄ itself, for weights).
    """

    def __init__(self, num_codes: int, num_steps: int = 100, att_1: float = 0.99999, att_T: float = 0.000009,
                 ctt_1: float = 0.000009, ctt_T: float = 0.99999):
        super().__init__()
        if num_steps < 2:
            raise ValueError(f"num_steps must be >= 2, got {num_steps}")
        if not (0 < att_T < att_1 <= 1 and 0 <= ctt_1 < ctt_T < 1 and att_1 + ctt_1 <= 1 and att_T + ctt_T <= 1):
            raise ValueError("schedule needs 0 < att_T < att_1 <= 1, 0 <= ctt_1 < ctt_T < 1 and att + ctt <= 1")
        self.num_codes = K = int(num_codes)
        self.num_steps = T = int(num_steps)
        d = torch.float64
        frac = torch.arange(T, dtype=d) / (T - 1)
        a = torch.cat([torch.ones(1, dtype=d), att_1 + frac * (att_T - att_1)])  # [T+1], level 0 = clean
        c = torch.cat([torch.zeros(1, dtype=d), ctt_1 + frac * (ctt_T - ctt_1)])
        b = ((1 - a - c) / K).clamp_min(0)
        # pairwise transitions m -> n (only n > m is used; others are set to identity)
        am, an = a[:, None], a[None, :]
        cm, cn = c[:, None], c[None, :]
        ta = (an / am).clamp(max=1.0)
        tc = (1 - (1 - cn) / (1 - cm)).clamp(0.0, 1.0)
        tb = ((1 - ta - tc) / K).clamp_min(0)
        eye = torch.eye(T + 1, dtype=torch.bool)
        ta = torch.where(eye, torch.ones_like(ta), ta)
        tb = torch.where(eye, torch.zeros_like(tb), tb)
        tc = torch.where(eye, torch.zeros_like(tc), tc)

        def lg(x):
            return torch.log(x.clamp_min(1e-40)).clamp_min(-1e4).float()

        self.register_buffer("log_cum_a", lg(a), persistent=False)
        self.register_buffer("log_cum_b", lg(b), persistent=False)
        self.register_buffer("log_cum_c", lg(c), persistent=False)
        self.register_buffer("log_1m_cum_c", lg(1 - c), persistent=False)
        self.register_buffer("cum_c", c.float(), persistent=False)
        self.register_buffer("log_tr_a", lg(ta), persistent=False)
        self.register_buffer("log_tr_b", lg(tb), persistent=False)
        self.register_buffer("log_tr_c", lg(tc), persistent=False)

    @property
    def mask_id(self) -> int:
        return self.num_codes

    def fast_levels(self, skip_step: int) -> list[int]:
        """Levels visited by the fast chain: ``T, T−1−skip, …`` down to level 1, plus level 1 if the
        stride misses it; each is followed by the next one and the last by level 0 (clean). With
        T = 100 and skip 9: 100, 90, …, 10, 1 — 11 denoising calls (the official chain's timesteps
        99, 89, …, 9, 0)."""
        if skip_step < 0:
            raise ValueError(f"skip_step must be >= 0, got {skip_step}")
        levels = list(range(self.num_steps, 0, -(skip_step + 1)))
        if levels[-1] != 1:
            levels.append(1)
        return levels


def _coef(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return table[idx].view(-1, 1, 1)


def _levels(n, B: int, device) -> torch.Tensor:
    if isinstance(n, torch.Tensor):
        n = n.to(device=device, dtype=torch.long)
        return n.expand(B) if n.dim() == 0 else n
    return torch.full((B,), int(n), device=device, dtype=torch.long)


def log_onehot(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Token indices ``[B, L]`` → log one-hot ``[B, L, C]`` with ``LOG_MIN`` off the index."""
    out = torch.full((*x.shape, num_classes), LOG_MIN, device=x.device)
    return out.scatter_(-1, x.long().unsqueeze(-1), 0.0)


def q_sample(sched: DiffusionSchedule, x0: torch.Tensor, n,
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw ``x_n ~ q(x_n | x_0)`` for token indices ``x0`` ``[B, L]`` at levels ``n`` (int or ``[B]``)."""
    B, L = x0.shape
    n = _levels(n, B, x0.device)
    c = sched.log_cum_c[n].exp().view(B, 1)
    b = sched.log_cum_b[n].exp().view(B, 1) * sched.num_codes
    b = torch.where(n.view(B, 1) == 0, torch.zeros_like(b), b)
    c = torch.where(n.view(B, 1) == 0, torch.zeros_like(c), c)
    u = torch.rand(B, L, device=x0.device, generator=generator)
    rnd = torch.randint(0, sched.num_codes, (B, L), device=x0.device, generator=generator)
    out = torch.where(u < c + b, rnd, x0.long())
    return torch.where(u < c, torch.full_like(out, sched.mask_id), out)


def posterior(sched: DiffusionSchedule, log_x0: torch.Tensor, x_t: torch.Tensor, n, m) -> torch.Tensor:
    """``log p(x_m | x_n) = log Σ_{x0} q(x_m | x_n, x0) p(x0)`` for levels ``m < n``.

    ``log_x0``: ``[B, L, C]`` log-distribution over x0 (the model's prediction, or a log one-hot
    for the true posterior; its mask-class entry is ignored). ``x_t``: token indices ``[B, L]`` at
    level ``n``. ``n``, ``m``: ints or ``[B]`` tensors. Returns ``[B, L, C]`` clamped to
    ``[-70, 0]``. Masked ``x_t`` tokens: ``p(x_m = j) = γ_mn/γ̄_n · (ᾱ_m p_j + β̄_m)`` for codes,
    ``γ̄_m/γ̄_n`` for the mask. Unmasked ``x_t = v``: with ``w = p / q(x_n = v | x0)``,
    ``p(x_m = j) = (α_mn [j = v] + β_mn) (ᾱ_m w_j + β̄_m Σ w)``, 0 for the mask.

    Computed in probability space with per-token scalars: every code entry is
    ``c + log(p_j · g + h)`` (one fused multiply-add and one log per entry; ``g``, ``h``, ``c`` depend
    on the token only), then the one entry ``j = v`` of each unmasked token is corrected. Same
    values as :func:`posterior_reference` (the ``logaddexp`` form) to float32 rounding wherever
    they exceed the clamp floor, at a fraction of the memory passes.
    """
    B, L, C = log_x0.shape
    K = C - 1
    if K != sched.num_codes:
        raise ValueError(f"log_x0 has {C} classes, expected K + 1 = {sched.num_codes + 1}")
    dev = log_x0.device
    n = _levels(n, B, dev)
    m = _levels(m, B, dev)
    if bool((m >= n).any()) or bool((m < 0).any()):
        raise ValueError("posterior needs 0 <= m < n")
    p = log_x0[..., :K].float().exp()  # [B, L, K]
    is_mask = x_t == K  # [B, L]
    v = torch.where(is_mask, torch.zeros_like(x_t), x_t).long().unsqueeze(-1)  # [B, L, 1]
    # per-level scalars [B, 1] (float64 where they are combined, then float32)
    d = torch.float64
    a_m, b_m = sched.log_cum_a[m].double().exp(), sched.log_cum_b[m].double().exp()
    a_n, b_n = sched.log_cum_a[n].double().exp(), sched.log_cum_b[n].double().exp()
    lc_m, lc_n = sched.log_cum_c[m].double(), sched.log_cum_c[n].double()
    ta, tb, tc = sched.log_tr_a[m, n].double(), sched.log_tr_b[m, n].double(), sched.log_tr_c[m, n].double()
    b_n_safe = b_n.clamp_min(1e-300)
    # unmasked tokens: w_j = p_j / b_n (j != v), p_v / (a_n + b_n) at v; S = Σ w
    p_v = p.gather(-1, v).squeeze(-1).double()  # [B, L]
    sum_p = p.sum(-1, dtype=d)
    S = (sum_p - p_v) / b_n_safe[:, None] + p_v / (a_n + b_n)[:, None]
    col = lambda x: x.view(B, 1).to(d)
    # dense part: c + log(p * g + h) = log(p * g e^c + h e^c), per-token g, h, c (float64 scalars)
    g = torch.where(is_mask, col(a_m), col(a_m / b_n_safe))
    h = torch.where(is_mask, col(b_m), col(b_m) * S)
    c = torch.where(is_mask, col(tc - lc_n), col(tb))
    ec = c.exp()
    codes = torch.addcmul((h * ec).float().unsqueeze(-1), p, (g * ec).float().unsqueeze(-1))
    inplace = not (torch.is_grad_enabled() and log_x0.requires_grad)
    codes = codes.log_() if inplace else codes.log()
    # the entry j = v of unmasked tokens: (α_mn + β_mn)(ᾱ_m w_v + β̄_m S)
    log_tr_v = torch.logaddexp(ta, tb)
    at_v = (col(log_tr_v) + torch.log(col(a_m) * p_v / col(a_n + b_n) + col(b_m) * S)).float()
    src = torch.where(is_mask, codes.gather(-1, v).squeeze(-1), at_v).unsqueeze(-1)
    codes = codes.scatter_(-1, v, src) if inplace else codes.scatter(-1, v, src)
    mask = torch.where(is_mask, col(lc_m - lc_n), torch.full_like(S, LOG_MIN)).float().unsqueeze(-1)
    out = torch.cat([codes, mask], dim=-1)
    return out.clamp_(LOG_MIN, 0.0) if inplace else out.clamp(LOG_MIN, 0.0)


def posterior_reference(sched: DiffusionSchedule, log_x0: torch.Tensor, x_t: torch.Tensor, n, m) -> torch.Tensor:
    """Log-space implementation of :func:`posterior` (the straightforward ``logaddexp`` form; kept
    as the reference the faster probability-space version is tested against).

    ``log p(x_m | x_n) = log Σ_{x0} q(x_m | x_n, x0) p(x0)`` for levels ``m < n``.

    ``log_x0``: ``[B, L, C]`` log-distribution over x0 (the model's prediction, or a log one-hot
    for the true posterior; its mask-class entry is ignored). ``x_t``: token indices ``[B, L]`` at
    level ``n``. ``n``, ``m``: ints or ``[B]`` tensors. Returns ``[B, L, C]`` clamped to
    ``[-70, 0]``. Masked ``x_t`` tokens: ``p(x_m = j) = γ_mn/γ̄_n · (ᾱ_m p_j + β̄_m)`` for codes,
    ``γ̄_m/γ̄_n`` for the mask. Unmasked ``x_t = v``: with ``w = p / q(x_n = v | x0)``,
    ``p(x_m = j) = (α_mn [j = v] + β_mn) (ᾱ_m w_j + β̄_m Σ w)``, 0 for the mask.
    """
    B, L, C = log_x0.shape
    K = C - 1
    if K != sched.num_codes:
        raise ValueError(f"log_x0 has {C} classes, expected K + 1 = {sched.num_codes + 1}")
    dev = log_x0.device
    n = _levels(n, B, dev)
    m = _levels(m, B, dev)
    if bool((m >= n).any()) or bool((m < 0).any()):
        raise ValueError("posterior needs 0 <= m < n")
    lp = log_x0[..., :K].float()
    is_mask = (x_t == K).unsqueeze(-1)  # [B, L, 1]
    la_m, lb_m = _coef(sched.log_cum_a, m), _coef(sched.log_cum_b, m)
    la_n, lb_n = _coef(sched.log_cum_a, n), _coef(sched.log_cum_b, n)
    lc_m, lc_n = _coef(sched.log_cum_c, m), _coef(sched.log_cum_c, n)
    ta = sched.log_tr_a[m, n].view(-1, 1, 1)
    tb = sched.log_tr_b[m, n].view(-1, 1, 1)
    tc = sched.log_tr_c[m, n].view(-1, 1, 1)

    # masked x_t: depends on x_t only through "is mask"
    codes_masked = tc - lc_n + torch.logaddexp(la_m + lp, lb_m.expand_as(lp))
    mask_masked = (lc_m - lc_n).expand(B, L, 1)

    # unmasked x_t = v
    v = torch.where(is_mask.squeeze(-1), torch.zeros_like(x_t), x_t).long().unsqueeze(-1)  # [B, L, 1]
    onehot_v = torch.zeros_like(lp, dtype=torch.bool).scatter_(-1, v, True)
    log_q_xt = torch.where(onehot_v, torch.logaddexp(la_n, lb_n).expand_as(lp), lb_n.expand_as(lp))
    log_w = lp - log_q_xt
    log_S = torch.logsumexp(log_w, dim=-1, keepdim=True)
    inner = torch.logaddexp(la_m + log_w, lb_m + log_S)
    log_tr_v = torch.where(onehot_v, torch.logaddexp(ta, tb).expand_as(lp), tb.expand_as(lp))
    codes_unmasked = log_tr_v + inner
    mask_unmasked = torch.full((B, L, 1), LOG_MIN, device=dev)

    codes = torch.where(is_mask, codes_masked, codes_unmasked)
    mask = torch.where(is_mask, mask_masked, mask_unmasked)
    return torch.cat([codes, mask], dim=-1).clamp(LOG_MIN, 0.0)


def log_sample(log_probs: torch.Tensor, noise: bool = True, noise_scale: float = 1.0,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Token indices ``[B, L]`` drawn from ``[B, L, C]`` log-probs with the Gumbel-max trick
    (``noise_scale`` scales the Gumbel noise as the official code does; ``noise=False`` → argmax)."""
    if not noise:
        return log_probs.argmax(-1)
    g = torch.rand(log_probs.shape, device=log_probs.device, generator=generator)
    g = g.add_(1e-30).log_().neg_().add_(1e-30).log_().neg_()  # −log(−log(u + 1e-30) + 1e-30), in place
    if noise_scale != 1.0:
        g = g.mul_(noise_scale)
    return g.add_(log_probs).argmax(-1)


# ------------------------------------------------------------------ reductions (fused ops)
def kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ p) per token ``[B, L]`` of two ``[B, L, C]`` log-distributions."""
    return categorical_kl(log_q.contiguous(), log_p.contiguous(), reduction="none")


def decoder_log_likelihood(x0: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``Σ_c onehot(x0)_c · log p_c`` per token ``[B, L]`` (VQ-Diffusion's ``log_categorical``)."""
    return log_categorical(log_onehot(x0, log_p.shape[-1]), log_p.contiguous(), reduction="none")


def entropy(logits: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` per token ``[B, L]`` (0 where ``mask`` is False)."""
    return codebook_entropy(logits, mask=mask, reduction="none")


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``−log softmax(logits)[target]`` per token ``[B, L]``."""
    return codebook_nll(logits, target, reduction="none")


def log_x0_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Network logits over the K codes ``[B, L, K]`` → ``[B, L, K+1]`` log p(x0) with the mask
    class at ``LOG_MIN`` (x0 is never the mask), clamped to ``[-70, 0]``."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    pad = torch.full((*lp.shape[:-1], 1), LOG_MIN, device=lp.device)
    return torch.cat([lp, pad], dim=-1).clamp(LOG_MIN, 0.0)


def reveal_weight(sched: DiffusionSchedule, n, m) -> torch.Tensor:
    """Probability that a token masked at level ``n`` is unmasked at level ``m < n``:
    ``(γ̄_n − γ̄_m)/γ̄_n`` (1 when ``m`` = 0)."""
    cn, cm = sched.cum_c[n], sched.cum_c[m]
    return (cn - cm) / cn.clamp_min(1e-12)


__all__ = [
    "LOG_MIN", "DiffusionSchedule", "log_onehot", "q_sample", "posterior", "posterior_reference", "log_sample", "kl",
    "decoder_log_likelihood", "entropy", "cross_entropy", "log_x0_from_logits", "reveal_weight",
]

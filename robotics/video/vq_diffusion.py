"""Conditional VQ-Diffusion over VQGAN tokens: the video model of Diffusion Reward.

The model predicts the tokens of the next frame (``L`` = 64 tokens, ``K`` codes + a mask class)
given the tokens of the ``num_history`` previous frames. Its pieces:

* **Forward process** (:mod:`.diffusion_math`): VQ-Diffusion's ``alpha1`` mask-and-replace schedule
  with the official values, which is absorbing (mask-only) up to a 1e-6 uniform floor; ``T`` = 100.
* **Denoiser**: a transformer over the L content tokens (token + learned position embeddings);
  each block = AdaLN(timestep) → self-attention, AdaLN(timestep) → cross-attention to the history
  tokens, LayerNorm → MLP. The network outputs logits over the K codes for x0 (x0-parametrisation).
  Two layouts (:class:`VQDiffusionConfig`):

  - ``embedding="mmreward"`` (default): one learned position vector per token, a shared
    sinusoidal → MLP timestep embedding, and history tokens with learned **spatial** (token
    position) and **temporal** (which history frame) embeddings and a LayerNorm;
    ``embedding="official"`` (VQ-Diffusion / Diffusion Reward): row + column position
    embeddings, a learned table of T timestep vectors in every AdaLN, history tokens embedded by a
    plain token table (no position, no norm), and VQ-Diffusion's N(0, 0.02) initialisation.
  - ``mlp_type="linear"`` (default): two Linear layers per token; ``"conv"``: two 3×3
    convolutions over the token grid (VQ-Diffusion's ``Conv_MLP``, 9× the MLP FLOPs and
    parameters); ``activation="gelu2"`` is the official ``x·σ(1.702x)``.

  :meth:`VQDiffusionConfig.paper` is the official Meta-World model (18 011 520 parameters).
* **Context cache**: :meth:`ConditionalVQDiffusion.encode_context` embeds the history once and
  projects every block's cross-attention keys / values; all denoising calls of a chain reuse them.
* **Loss**: variational-bound KL between ``q(x_{t-1} | x_t, x0)`` and ``p_θ(x_{t-1} | x_t)``
  (log space, log-probs clamped to [−70, 0]), decoder NLL at t = 0, timesteps importance-sampled
  from the history of squared losses (uniform until every t was seen 10 times), plus an auxiliary
  x0 cross-entropy (weight ``aux_weight``, optionally ``(2 − t/T)``-scaled as VQ-Diffusion does).
* **Chains**: full ancestral sampling (``skip_step=0``, T calls) or the fast chain (levels
  T, T−1−s, …, 1, then clean; skip 9 → 11 calls). Every transition uses the exact multi-step
  posterior ``q(x_m | x_n, x0)``; the official code approximates a skip by the one-step posterior
  at a shifted timestep.

Reward estimators (used by :mod:`mmreward.robotics.reward.diffusion_reward`):

* :meth:`~ConditionalVQDiffusion.entropy_reward` — ``estimator="vlb"`` is the official one: run the
  fast chain from all-mask with Gumbel sampling, take the final sample x̂0, and return its
  one-sample variational bound along that same chain, ``Σ −KL(q(x_m|x_n, x̂0) ‖ p_θ(x_m|x_n)) +
  log p_θ(x̂0 | x_1)`` (≈ log p(x̂0) ≈ −H). ``estimator="x0_entropy"`` is a lower-variance
  alternative: ``−Σ_steps Σ_{masked tokens} w · H(p_θ(x0 | x_n))`` with ``w = (γ̄_n − γ̄_m)/γ̄_n``
  the chance a masked token is revealed at that step (a chain-rule decomposition of the entropy).
* :meth:`~ConditionalVQDiffusion.elbo` — likelihood of an observed frame: the same bound with the
  observed x0, the chain sampled from the true posterior ``q(x_m | x_n, x0)`` (a proper bound; the
  official likelihood mode samples from p_θ instead and averages the terms instead of summing).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from mmreward.core.model import Pretrained, check_ranges
from mmreward.core.train import seed_everything, warmup_cosine
from mmreward.core.trainer import Trainer

from ..training import EMA, capped_batch, config_to_dict, loop_config, resume_settings
from . import diffusion_math as dm

MODEL_TYPE = "vq_diffusion"


@dataclass
class VQDiffusionConfig:
    """Sizes of the conditional VQ-Diffusion model. Defaults are small (CPU); see :meth:`paper`."""

    num_codes: int = 128  # K: codebook size of the VQGAN whose tokens are modelled
    token_shape: tuple = (8, 8)  # token grid of one frame (L = h * w tokens)
    num_history: int = 2  # history frames the next frame is conditioned on
    frame_skip: int = 1  # stride between history frames (and to the predicted frame)
    num_steps: int = 100  # T: diffusion steps
    att_1: float = 0.99999  # ᾱ at the first level (schedule 'alpha1')
    att_T: float = 0.000009  # ᾱ at the last level
    ctt_1: float = 0.000009  # γ̄ (mask probability) at the first level
    ctt_T: float = 0.99999  # γ̄ at the last level
    dim: int = 64  # transformer width
    depth: int = 2  # transformer blocks
    heads: int = 4  # attention heads (dim must divide by it)
    mlp_ratio: int = 2  # MLP hidden width = mlp_ratio * dim
    context_dim: int = 64  # width of the history-token embeddings (keys / values input)
    dropout: float = 0.0  # attention / residual dropout
    aux_weight: float = 1e-3  # weight of the auxiliary x0 cross-entropy
    adaptive_aux: bool = True  # scale the auxiliary term by (2 - t/T) as VQ-Diffusion does
    mask_weight: tuple = (1.0, 1.0)  # loss weights of masked / unmasked tokens
    mlp_type: str = "linear"  # 'linear' (two Linear layers per token) | 'conv' (two 3x3 convs over the token grid)
    activation: str = "gelu"  # MLP activation: 'gelu' | 'gelu2' (x * sigmoid(1.702 x), the official one)
    embedding: str = "mmreward"  # 'mmreward' | 'official' position / timestep / history embeddings (module doc)
    # VQGAN.token_digest() of the codec whose tokens it was trained on ("" = unknown: trained on tokens, or
    # saved before it was recorded); a DiffusionReward refuses another codec
    codec_digest: str = ""

    @classmethod
    def paper(cls, **overrides) -> "VQDiffusionConfig":
        """The official Meta-World / Adroit model: K = 1024, 16 blocks of width 128, 16 heads, conv
        MLP of width 256 with GELU2, history embedding width 1024, official embeddings, aux weight
        1e-3 adaptive (18 011 520 parameters, as the official config builds)."""
        base = dict(num_codes=1024, dim=128, depth=16, heads=16, mlp_ratio=2, context_dim=1024, mlp_type="conv",
                    activation="gelu2", embedding="official")
        base.update(overrides)
        return cls(**base)

    @property
    def tokens_per_frame(self) -> int:
        return int(self.token_shape[0]) * int(self.token_shape[1])

    def validate(self) -> None:
        for name in ("dim", "heads", "context_dim", "mlp_ratio"):  # 0 built an empty network that "trains"
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        shape = self.token_shape
        if not isinstance(shape, (tuple, list)) or len(shape) != 2 or \
                any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in shape):
            raise ValueError(f"token_shape must be two integers >= 1 (h, w), got {shape!r}")
        if not isinstance(self.codec_digest, str):
            raise ValueError(f"codec_digest must be a string (VQGAN.token_digest()), got {self.codec_digest!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.num_codes < 2 or self.num_history < 1 or self.frame_skip < 1 or self.depth < 1:
            raise ValueError("num_codes >= 2, num_history >= 1, frame_skip >= 1 and depth >= 1 are required")
        for name, allowed in (("mlp_type", ("linear", "conv")), ("activation", ("gelu", "gelu2")),
                              ("embedding", ("mmreward", "official"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")


# ------------------------------------------------------------------ network
def _official_init(module: nn.Module) -> None:
    """VQ-Diffusion's initialisation: Linear / Embedding weights N(0, 0.02), zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


def sinusoidal(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = t.float()[:, None] * freqs[None]
    emb = torch.cat([ang.sin(), ang.cos()], -1)
    return F.pad(emb, (0, dim % 2))


class AdaLayerNorm(nn.Module):
    """LayerNorm whose scale / shift come from the timestep: from the shared timestep embedding
    ``[B, dim]``, or (``num_steps`` given, official) from this norm's own table of ``num_steps``
    learned vectors, indexed by the levels ``[B]`` (1..T)."""

    def __init__(self, dim: int, num_steps: Optional[int] = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.table = nn.Embedding(num_steps, dim) if num_steps else None
        self.proj = nn.Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.table(t - 1) if self.table is not None else t  # (B, dim)
        scale, shift = self.proj(F.silu(emb)).unsqueeze(1).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class GELU2(nn.Module):
    """``x·σ(1.702x)``, the sigmoid approximation of GELU that VQ-Diffusion's blocks use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ConvMLP(nn.Module):
    """Two 3×3 convolutions over the ``h × w`` token grid (VQ-Diffusion's ``Conv_MLP``)."""

    def __init__(self, dim: int, hidden: int, grid: tuple, act: nn.Module):
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.conv1 = nn.Conv2d(dim, hidden, 3, padding=1)
        self.act = act
        self.conv2 = nn.Conv2d(hidden, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        # (B, L, D) seen as (B, D, h, w) in channels-last memory: no copy on the way in or out
        g = x.transpose(1, 2).reshape(B, D, *self.grid)
        return self.conv2(self.act(self.conv1(g))).flatten(2).transpose(1, 2)  # (B, L, D)


class Block(nn.Module):
    def __init__(self, cfg: VQDiffusionConfig):
        super().__init__()
        d, self.heads = cfg.dim, cfg.heads
        table = cfg.num_steps if cfg.embedding == "official" else None
        self.ln1 = AdaLayerNorm(d, table)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj1 = nn.Linear(d, d)
        self.ln2 = AdaLayerNorm(d, table)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(cfg.context_dim, 2 * d)
        self.proj2 = nn.Linear(d, d)
        self.ln3 = nn.LayerNorm(d)
        act = GELU2() if cfg.activation == "gelu2" else nn.GELU()
        hidden = cfg.mlp_ratio * d
        if cfg.mlp_type == "conv":
            self.mlp = ConvMLP(d, hidden, cfg.token_shape, act)
        else:
            self.mlp = nn.Sequential(nn.Linear(d, hidden), act, nn.Linear(hidden, d))
        self.drop = nn.Dropout(cfg.dropout)
        self.p = cfg.dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        return x.view(B, N, self.heads, D // self.heads).transpose(1, 2)

    def context_kv(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(ctx).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x, t, kv):
        """``x`` (B, L, D); ``t`` the shared timestep embedding (B, D) or the levels (B,) (official)."""
        B, N, D = x.shape
        p = self.p if self.training else 0.0
        q, k, v = (self._split(t_) for t_ in self.qkv(self.ln1(x, t)).chunk(3, dim=-1))
        x = x + self.drop(self.proj1(_attend(q, k, v, p).reshape(B, N, D)))
        q = self._split(self.q(self.ln2(x, t)))
        x = x + self.drop(self.proj2(_attend(q, kv[0], kv[1], p).reshape(B, N, D)))
        return x + self.drop(self.mlp(self.ln3(x)))


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Multi-head attention of (B, heads, L, d) inputs as (B, L, heads, d). Scoring on the CPU (no
    gradient, no dropout) runs mmreward's small-head kernel (``mmreward.ops.attention``: 2–2.5×
    PyTorch's CPU attention at the official 16 heads of width 8); training keeps PyTorch's."""
    if dropout_p == 0.0 and q.device.type == "cpu" and not torch.is_grad_enabled():
        from mmreward.ops import attention

        return attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p).transpose(1, 2)


@dataclass
class ContextCache:
    """Per-block cross-attention keys / values of a batch of histories (``[B, heads, H*L, d]``).
    Build with :meth:`ConditionalVQDiffusion.encode_context`; reuse across denoising calls."""

    kv: list = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return self.kv[0][0].shape[0]

    def select(self, idx: Union[torch.Tensor, slice]) -> "ContextCache":
        return ContextCache([(k[idx], v[idx]) for k, v in self.kv])

    def repeat(self, n: int) -> "ContextCache":
        return ContextCache([(k.repeat(n, 1, 1, 1), v.repeat(n, 1, 1, 1)) for k, v in self.kv])


class ConditionalVQDiffusion(Pretrained, nn.Module):
    """Discrete diffusion over the next frame's tokens, conditioned on history-frame tokens."""
    model_type = MODEL_TYPE
    config_class = VQDiffusionConfig

    def __init__(self, config: Optional[VQDiffusionConfig] = None):
        super().__init__()
        cfg = config or VQDiffusionConfig()
        cfg.validate()
        self.config = cfg
        K, L, H = cfg.num_codes, cfg.tokens_per_frame, cfg.num_history
        self.schedule = dm.DiffusionSchedule(K, cfg.num_steps, cfg.att_1, cfg.att_T, cfg.ctt_1, cfg.ctt_T)
        # creation order = the order initial weights are drawn in: a seed rebuilds a model bit for bit
        official = cfg.embedding == "official"
        self.tok_emb = nn.Embedding(K + 1, cfg.dim)
        if official:  # row + column positions; the timestep tables live in the AdaLNs
            self.row_emb = nn.Parameter(torch.randn(cfg.token_shape[0], cfg.dim) * 0.02)
            self.col_emb = nn.Parameter(torch.randn(cfg.token_shape[1], cfg.dim) * 0.02)
        else:
            self.pos_emb = nn.Parameter(torch.randn(L, cfg.dim) * 0.02)
            self.t_emb = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.ctx_tok = nn.Embedding(K, cfg.context_dim)
        if not official:
            self.ctx_pos = nn.Parameter(torch.randn(L, cfg.context_dim) * 0.02)
            self.ctx_time = nn.Parameter(torch.randn(H, cfg.context_dim) * 0.02)
            self.ctx_norm = nn.LayerNorm(cfg.context_dim)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.out_norm = nn.LayerNorm(cfg.dim)
        self.to_logits = nn.Linear(cfg.dim, K)
        if official:
            self.apply(_official_init)
            nn.init.normal_(self.ctx_tok.weight)  # the official history table sits outside that init: N(0, 1)
        # importance sampling of t (VQ-Diffusion): EMA of squared per-t losses and visit counts
        self.register_buffer("Lt_history", torch.zeros(cfg.num_steps))
        self.register_buffer("Lt_count", torch.zeros(cfg.num_steps))

    # -------------------------------------------------------------- inputs
    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    @property
    def mask_id(self) -> int:
        return self.config.num_codes

    @property
    def device(self) -> torch.device:
        return self.to_logits.weight.device

    def flatten_tokens(self, x: torch.Tensor, name: str, lead: int) -> torch.Tensor:
        """``[*lead_dims, h, w]`` or ``[*lead_dims, L]`` integer tokens → ``[*lead_dims, L]``."""
        if not isinstance(x, torch.Tensor) or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer token tensor, got "
                            f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        L = self.config.tokens_per_frame
        if x.dim() == lead + 2 and tuple(x.shape[-2:]) == tuple(self.config.token_shape):
            x = x.flatten(-2)
        if x.dim() != lead + 1 or x.shape[-1] != L:
            raise ValueError(f"{name} must have shape [..., {L}] or [..., {self.config.token_shape[0]}, "
                             f"{self.config.token_shape[1]}] with {lead} leading dims, got {list(x.shape)}")
        return x.long().to(self.device)

    def check_token_range(self, x: torch.Tensor, name: str, allow_mask: bool = False) -> None:
        hi = self.num_codes + (1 if allow_mask else 0)
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= hi):
            raise ValueError(f"{name} has token ids outside [0, {hi})")

    # -------------------------------------------------------------- network
    def encode_context(self, history: torch.Tensor) -> ContextCache:
        """Embed history tokens ``[B, H, L]`` (or ``[B, H, h, w]``) once and return every block's
        cross-attention keys / values."""
        h = self.flatten_tokens(history, "history", 2)
        if h.shape[1] != self.config.num_history:
            raise ValueError(f"history must hold {self.config.num_history} frames, got {h.shape[1]}")
        self.check_token_range(h, "history")
        B, H, L = h.shape
        e = self.ctx_tok(h)  # (B, H, L, C)
        if self.config.embedding == "mmreward":
            e = self.ctx_norm(e + self.ctx_pos[None, None] + self.ctx_time[None, :, None])
        e = e.reshape(B, H * L, -1)
        return ContextCache([blk.context_kv(e) for blk in self.blocks])

    def content_positions(self) -> torch.Tensor:
        """Position embeddings of the L content tokens, ``[L, dim]`` (row-major grid)."""
        if self.config.embedding == "official":
            return (self.row_emb[:, None] + self.col_emb[None]).flatten(0, 1)
        return self.pos_emb

    def timestep_input(self, level: torch.Tensor) -> torch.Tensor:
        """What the AdaLNs take for levels ``[B]``: the shared embedding ``[B, dim]``, or the
        levels themselves (official: each AdaLN looks up its own table)."""
        if self.config.embedding == "official":
            return level
        return self.t_emb(sinusoidal(level, self.config.dim))

    def forward(self, x_t: torch.Tensor, level: Union[torch.Tensor, int],
                context: Union[ContextCache, torch.Tensor]) -> torch.Tensor:
        """Logits over the K codes of x0, ``[B, L, K]``, for tokens ``x_t`` ``[B, L]`` (mask id = K)
        at noise levels ``level`` (``[B]`` or int, 1..T) given a :class:`ContextCache` or history tokens."""
        x = self.flatten_tokens(x_t, "x_t", 1)
        if not isinstance(context, ContextCache):
            context = self.encode_context(context)
        B = x.shape[0]
        if context.batch_size != B:
            raise ValueError(f"context has batch {context.batch_size} but x_t has {B}")
        level = dm._levels(level, B, x.device)
        t = self.timestep_input(level)
        hdn = self.tok_emb(x) + self.content_positions()[None]  # (B, L, dim)
        for blk, kv in zip(self.blocks, context.kv):
            hdn = blk(hdn, t, kv)
        return self.to_logits(self.out_norm(hdn)).float()

    def step(self, x_t: torch.Tensor, n, m, context: ContextCache) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step: ``(log p_θ(x_m | x_n) [B, L, K+1], x0 logits [B, L, K])``."""
        logits = self(x_t, n, context)
        return dm.posterior(self.schedule, dm.log_x0_from_logits(logits), x_t, n, m), logits

    # -------------------------------------------------------------- training
    def sample_time(self, B: int, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Timestep indices ``t`` in ``[0, T)`` and their probabilities: importance sampling with
        ``p_t ∝ sqrt(E[L_t²])`` once every t was seen more than 10 times, uniform before."""
        T = self.config.num_steps
        if bool((self.Lt_count > 10).all()):
            w = torch.sqrt(self.Lt_history + 1e-10) + 1e-4
            w[0] = w[1]
            pt_all = w / w.sum()
            t = torch.multinomial(pt_all, B, replacement=True, generator=generator)
            return t, pt_all[t]
        t = torch.randint(0, T, (B,), device=self.Lt_history.device, generator=generator)
        return t, torch.full((B,), 1.0 / T, device=t.device)

    def loss(self, target: torch.Tensor, history: torch.Tensor, generator: Optional[torch.Generator] = None,
             update_history: bool = True) -> dict[str, torch.Tensor]:
        """Training loss on next-frame tokens ``target`` ``[B, L]`` given ``history`` ``[B, H, L]``.
        Returns ``loss`` (scalar, to minimise), ``vb`` (mean per-token variational term) and ``aux``."""
        cfg = self.config
        x0 = self.flatten_tokens(target, "target", 1)
        self.check_token_range(x0, "target")
        ctx = self.encode_context(history)
        B, L = x0.shape
        t, pt = self.sample_time(B, generator)
        t, pt = t.to(x0.device), pt.to(x0.device)
        n = t + 1
        x_t = dm.q_sample(self.schedule, x0, n, generator)
        logits = self(x_t, n, ctx)
        log_x0 = dm.log_x0_from_logits(logits)
        log_model = dm.posterior(self.schedule, log_x0, x_t, n, n - 1)
        log_true = dm.posterior(self.schedule, dm.log_onehot(x0, cfg.num_codes + 1), x_t, n, n - 1)
        masked = (x_t == self.mask_id).float()
        wtok = masked * cfg.mask_weight[0] + (1 - masked) * cfg.mask_weight[1]
        kl = (dm.kl(log_true, log_model) * wtok).sum(1)
        dec_nll = -dm.decoder_log_likelihood(x0, log_model).sum(1)
        first = (t == 0).float()
        vb = first * dec_nll + (1 - first) * kl
        if update_history and self.training:
            with torch.no_grad():
                lt2 = vb.detach().pow(2)
                new = 0.1 * lt2 + 0.9 * self.Lt_history.gather(0, t)
                self.Lt_history.scatter_(0, t, new)
                self.Lt_count.scatter_add_(0, t, torch.ones_like(lt2))
        loss = vb / pt
        aux = (dm.cross_entropy(logits, x0) * wtok).sum(1)
        if cfg.aux_weight:
            aux_t = first * dec_nll + (1 - first) * aux
            scale = (1 - t.float() / cfg.num_steps) + 1.0 if cfg.adaptive_aux else 1.0
            loss = loss + scale * cfg.aux_weight * aux_t / pt
        return {"loss": loss.sum() / (B * L), "vb": vb.mean() / L, "aux": aux.mean() / L}

    # -------------------------------------------------------------- chains
    def _all_mask(self, B: int) -> torch.Tensor:
        return torch.full((B, self.config.tokens_per_frame), self.mask_id, dtype=torch.long, device=self.device)

    def _pairs(self, skip_step: int) -> list[tuple[int, int]]:
        lv = self.schedule.fast_levels(skip_step)
        return list(zip(lv, lv[1:] + [0]))

    @torch.no_grad()
    def sample(self, history: Union[torch.Tensor, ContextCache], skip_step: int = 0, noise: bool = True,
               noise_scale: float = 1.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Sample next-frame tokens ``[B, L]``: ``skip_step=0`` runs all T steps, ``skip_step=s``
        the fast chain (T, T−1−s, …, 1, clean)."""
        ctx = history if isinstance(history, ContextCache) else self.encode_context(history)
        x = self._all_mask(ctx.batch_size)
        for n, m in self._pairs(skip_step):
            lp, _ = self.step(x, n, m, ctx)
            x = dm.log_sample(lp, noise, noise_scale, generator)
        return x

    @torch.no_grad()
    def entropy_reward(self, history: Union[torch.Tensor, ContextCache], skip_step: int = 9,
                       estimator: str = "vlb", num_samples: int = 1, noise: bool = True, noise_scale: float = 1.0,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Negative conditional entropy of the next frame (nats, summed over its L tokens), ``[B]``.
        See the module docstring for the ``"vlb"`` (official) and ``"x0_entropy"`` estimators."""
        if estimator not in ("vlb", "x0_entropy"):
            raise ValueError(f"estimator must be 'vlb' or 'x0_entropy', got {estimator!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        ctx = history if isinstance(history, ContextCache) else self.encode_context(history)
        B = ctx.batch_size
        pairs = self._pairs(skip_step)
        total = torch.zeros(B, device=self.device)
        for _ in range(num_samples):
            x = self._all_mask(B)
            if estimator == "x0_entropy":
                for n, m in pairs:
                    lp, logits = self.step(x, n, m, ctx)
                    w = float(dm.reveal_weight(self.schedule, n, m))
                    total -= w * dm.entropy(logits, mask=x == self.mask_id).sum(1)
                    x = dm.log_sample(lp, noise, noise_scale, generator)
                continue
            xs, lps = [], []
            for n, m in pairs:
                lp, _ = self.step(x, n, m, ctx)
                xs.append(x)
                lps.append(lp)
                x = dm.log_sample(lp, noise, noise_scale, generator)
            x0 = x
            log_x0 = dm.log_onehot(x0, self.num_codes + 1)
            r = dm.decoder_log_likelihood(x0, lps[-1]).sum(1)
            for (n, m), xt, lp in zip(pairs[:-1], xs[:-1], lps[:-1]):
                r -= dm.kl(dm.posterior(self.schedule, log_x0, xt, n, m), lp).sum(1)
            total += r
        return total / num_samples

    @torch.no_grad()
    def elbo(self, target: torch.Tensor, history: Union[torch.Tensor, ContextCache], skip_step: int = 9,
             num_samples: int = 1, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Variational lower bound on ``log p(target | history)`` (nats per frame) along the fast
        chain, ``[B]``: ``−Σ KL(q(x_m|x_n, x0) ‖ p_θ(x_m|x_n)) + log p_θ(x0 | x_1)``, with the chain
        drawn from the true posterior (the prior term KL(q(x_T|x0) ‖ all-mask) ≈ 0 is dropped)."""
        x0 = self.flatten_tokens(target, "target", 1)
        self.check_token_range(x0, "target")
        ctx = history if isinstance(history, ContextCache) else self.encode_context(history)
        if ctx.batch_size != x0.shape[0]:
            raise ValueError(f"target has batch {x0.shape[0]} but history has {ctx.batch_size}")
        log_x0 = dm.log_onehot(x0, self.num_codes + 1)
        total = torch.zeros(x0.shape[0], device=self.device)
        for _ in range(num_samples):
            x = self._all_mask(x0.shape[0])
            for n, m in self._pairs(skip_step):
                lp, _ = self.step(x, n, m, ctx)
                if m == 0:
                    total += dm.decoder_log_likelihood(x0, lp).sum(1)
                else:
                    lq = dm.posterior(self.schedule, log_x0, x, n, m)
                    total -= dm.kl(lq, lp).sum(1)
                    x = dm.log_sample(lq, True, 1.0, generator)
        return total / num_samples


# ------------------------------------------------------------------ windows + training
def window_indices(num_frames: int, ends: torch.Tensor, num_history: int, frame_skip: int = 1) -> torch.Tensor:
    """History frame indices ``[len(ends), H]`` of windows whose last history frame is ``ends``:
    ``end − (H−1−h)·skip`` for h = 0..H−1, clamped at 0 (frames before the episode repeat frame 0)."""
    offs = torch.arange(num_history - 1, -1, -1, device=ends.device) * frame_skip
    return (ends[:, None] - offs[None]).clamp(0, num_frames - 1)


def token_windows(episodes: Sequence[torch.Tensor], num_history: int = 2, frame_skip: int = 1,
                  pad_start: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs from token episodes (each ``[T, h, w]`` or ``[T, L]``): ``history [N, H, L]``
    and ``target [N, L]``. Target frame j's history is frames ``j − skip·(H..1)``; with
    ``pad_start`` frames before the episode start repeat frame 0 (as at reward time) and every
    j ≥ 1 is a target, otherwise only j ≥ H·skip."""
    hs, ts, lengths = [], [], []
    for i, ep in enumerate(episodes):
        ep = torch.as_tensor(ep)
        ep = ep.flatten(1) if ep.dim() == 3 else ep
        if ep.dim() != 2:
            raise ValueError(f"token episode {i} must be [T, h, w] or [T, L], got {list(ep.shape)}")
        T = ep.shape[0]
        lengths.append(T)
        first = 1 if pad_start else num_history * frame_skip
        if T <= first:
            continue
        j = torch.arange(first, T)
        idx = window_indices(T, j - frame_skip, num_history, frame_skip)
        hs.append(ep[idx])
        ts.append(ep[j])
    if not hs:
        # a folder of 1-frame demos (stills) said not how long an episode must be
        first = 1 if pad_start else num_history * frame_skip
        raise ValueError(f"no episode is long enough to make a training window: each of the {len(lengths)} has at "
                         f"most {max(lengths, default=0)} frame(s), a window needs {first + 1} (a history and a next "
                         "frame); give longer episodes")
    return torch.cat(hs).long(), torch.cat(ts).long()


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class VideoTrainConfig:
    """Optimisation settings of :func:`train_video_model` (official: AdamW β=(0.9, 0.96), wd 4.5e-2,
    peak lr 4.5e-4 after 5000 warmup steps, grad-norm clip 0.5, EMA 0.99 every 25 steps)."""

    steps: int = _help("optimizer steps", 1000)
    batch_size: int = _help("windows per step (drawn with replacement)", 32)
    lr: float = _help("peak learning rate", 4.5e-4)
    warmup_steps: int = _help("linear warmup steps, then cosine decay to min_lr_ratio * lr", 100)
    min_lr_ratio: float = _help("final lr / peak lr", 0.1)
    weight_decay: float = _help("AdamW weight decay", 4.5e-2)
    betas: tuple = _help("AdamW betas", (0.9, 0.96))
    grad_clip: float = _help("max grad norm (0 = off)", 0.5)
    ema_decay: float = _help("EMA decay of the saved weights", 0.99)
    ema_every: int = _help("EMA update interval in steps", 25)
    seed: int = _help("seed of the initial weights, batches and noise", 0)
    log_every: int = _help("progress-bar / console interval in steps (metrics.csv gets every step)", 10)
    ckpt_every: int = _help("snapshot interval in steps (0 = only at the end)", 200)

    def __post_init__(self) -> None:
        # ema_every 0 / negative was read as 1 and a negative or NaN grad_clip as "off": refused here
        check_ranges(self, counts=("steps", "batch_size", "ema_every"),
                     naturals=("warmup_steps", "seed", "log_every", "ckpt_every"),
                     weights=("lr", "weight_decay", "grad_clip"), fractions=("min_lr_ratio",))
        if self.lr == 0:
            raise ValueError(f"VideoTrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        if isinstance(self.ema_decay, bool) or not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ValueError(f"VideoTrainConfig.ema_decay must be a number in [0, 1), got {self.ema_decay!r}")
        b = self.betas
        if not (isinstance(b, (tuple, list)) and len(b) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1 for x in b)):
            raise ValueError(f"VideoTrainConfig.betas must be two numbers in [0, 1), got {b!r}")


def _check_windows(history: torch.Tensor, target: torch.Tensor, cfg: VQDiffusionConfig) -> None:
    """The whole training set checked once, before the run folder is made: a bad window otherwise fails
    (or, with no window, reads as a batch-size error) at whichever step first draws it."""
    N, L, H = target.shape[0], cfg.tokens_per_frame, cfg.num_history
    if N == 0:
        raise ValueError("the training data holds no (history, target) window: give token windows with N >= 1")
    for name, x, shape in (("target", target, (N, L)), ("history", history, (N, H, L))):
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"training data: {name} must be integer token ids, got {x.dtype}")
        if tuple(x.shape) != shape:
            raise ValueError(f"training data: {name} must have shape {list(shape)} (num_history={H}, "
                             f"token_shape={tuple(cfg.token_shape)}), got {list(x.shape)}")
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= cfg.num_codes:
            raise ValueError(f"training data: {name} has token ids in [{lo}, {hi}], outside [0, {cfg.num_codes}) "
                             f"(num_codes={cfg.num_codes}: does it match the codec's?)")


def train_video_model(data: Any, config: Optional[VQDiffusionConfig] = None, out_dir: str = "vq_diffusion",
                      train: Optional[VideoTrainConfig] = None, *, codec: Any = None, resume: bool = True,
                      overwrite: bool = False, stop_at: Optional[int] = None, progress_bar: bool = True,
                      device: str = "cpu", quiet: bool = True, **overrides: Any) -> ConditionalVQDiffusion:
    """Train the conditional VQ-Diffusion model on the core training loop; returns it with EMA
    weights (saved in ``out_dir/model`` when training reaches ``steps``). ``data``: ``(history [N, H,
    L], target [N, L])`` token windows, a list of token episodes, or uint8 frame episodes together
    with ``codec`` (a VQGAN, used to tokenise). ``overrides`` set :class:`VideoTrainConfig` fields
    (e.g. ``steps=50``). ``out_dir`` gets ``metrics.csv`` (every step), TensorBoard events and
    snapshots (model, optimizer, scheduler, EMA, RNGs) every ``ckpt_every`` steps; a run continues
    exactly from its newest snapshot (``resume``), a folder holding a run is refused without
    ``resume`` unless ``overwrite``; ``stop_at`` ends this call after that many total steps (a
    time-limited job: call again with the same arguments to continue the same run)."""
    cfg = config or VQDiffusionConfig()
    tc = dataclasses.replace(train or VideoTrainConfig(), **overrides)
    digest_of = None  # what identifies the training data for a resume (default: the token windows)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(d, torch.Tensor) for d in data):
        history, target = data
    else:
        if codec is not None:
            from ..training import episodes_from

            frame_eps = episodes_from(data)
            # the codec these tokens come from: a DiffusionReward pairing the model with another codec (one
            # retrained since into the same folder) scored every frame with unrelated tokens, without a word
            cfg = dataclasses.replace(cfg, codec_digest=codec.token_digest())
            # the frames and the codec's weights, not the tokens: a GPU encoder need not give bit-identical
            # tokens on every call, and a resume must not be refused for that
            digest_of = [*frame_eps, *codec.state_dict().values()]
            from ..training import check_frames_uint8

            for i, ep in enumerate(frame_eps):  # was "frames must be 32x32 pixels, got 48x48": which episode?
                check_frames_uint8(ep, f"episode {i}", codec.config.image_size)
            episodes = [codec.encode(ep) for ep in frame_eps]
        else:
            episodes = list(data)
        history, target = token_windows(episodes, cfg.num_history, cfg.frame_skip)
    history = history.flatten(2) if history.dim() == 4 else history  # (N, H, L)
    target = target.flatten(1) if target.dim() == 3 else target  # (N, L)
    N = target.shape[0]
    if history.shape[0] != N:
        raise ValueError(f"history has {history.shape[0]} windows but target has {N}")
    _check_windows(history, target, cfg)
    seed_everything(tc.seed)  # before the model: its initial weights come from the seed
    model = ConditionalVQDiffusion(cfg).to(device)
    ema = EMA(model, tc.ema_decay, tc.ema_every)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(
        s, warmup_steps=tc.warmup_steps, total_steps=tc.steps, min_ratio=tc.min_lr_ratio))
    batch_size = capped_batch(tc.batch_size, N, "(history, target) windows", "train_video_model")

    def sample_batch() -> tuple[torch.Tensor, torch.Tensor]:  # target (B, L), history (B, H, L)
        idx = torch.randint(0, N, (batch_size,))
        return target[idx].to(device), history[idx].to(device)

    def step_fn(trainer: Trainer, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        out = model.loss(*batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        opt.step()
        sched.step()
        ema.update(model)
        return {"loss": float(out["loss"].detach()), "vb": float(out["vb"].detach()),
                "aux": float(out["aux"].detach()), "grad_norm": float(gn), "lr": sched.get_last_lr()[0]}

    def ema_weights() -> Optional[dict[str, torch.Tensor]]:
        return ema.shadow if ema.calls >= ema.update_every else None  # no EMA update yet: the live weights

    loop = loop_config(out_dir, steps=tc.steps, batch_size=batch_size, seed=tc.seed, log_every=tc.log_every,
                       save_every=tc.ckpt_every, resume=resume, overwrite=overwrite, progress_bar=progress_bar,
                       quiet=quiet)
    must_match = resume_settings(tc, cfg, digest_of or (history, target))
    # the codec's digest is not a setting a resume checks: the data digest already covers the codec's weights,
    # and runs saved before it was recorded lack the key (they could no longer be resumed)
    must_match["model"].pop("codec_digest", None)
    trainer = Trainer(model, loop, step_fn=step_fn, sample_batch=sample_batch, reseed=False,
                      save_model=lambda folder: model.save_pretrained(folder, state_dict=ema_weights()),
                      settings={"video_train": config_to_dict(tc)}, resume_settings=must_match)
    for name, obj in (("optimizer", opt), ("scheduler", sched), ("ema", ema)):
        trainer.register_state(name, obj)
    trainer.fit(stop_at)
    model.eval()
    if ema_weights() is not None:
        ema.copy_to(model)
    return model


__all__ = ["VQDiffusionConfig", "VideoTrainConfig", "ConditionalVQDiffusion", "ContextCache", "token_windows",
           "window_indices", "train_video_model"]

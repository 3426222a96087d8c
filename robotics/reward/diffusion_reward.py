"""Diffusion Reward (Huang et al., ECCV 2024): rewards from the conditional entropy of the next
frame under a conditional VQ-Diffusion model of expert videos.

``DiffusionReward(frames) -> rewards [T]`` for one episode (uint8 ``[T, H, W, 3]``):

1. every frame is tokenised once by the VQGAN (``[T, L]`` tokens);
2. reward ``i`` belongs to frame ``i``. In ``"entropy"`` mode it is the negative conditional
   entropy of the **next** frame given the history ending at frame ``i``: frames
   ``i − skip·(H−1), …, i`` (official: H = 2, skip = 1, so frames i−1 and i). In ``"likelihood"``
   mode it is the variational bound on ``log p(frame i | frames i − skip·H, …, i − skip)``. History
   frames before the episode start repeat frame 0 (so frame 0's entropy window is [0, 0]; in
   likelihood mode frames 0 and 1 are both scored with the history [0, 0]). ``"relative_likelihood"``
   is the likelihood bound of frame i minus its expectation under the model, i.e. plus the model's
   entropy for that same window (``entropy_estimator``): ``log p(x_i) + H(p(· | history))``. It asks
   "is this frame likelier than what the expert model expects here?", so moments that are inherently
   hard to predict (fast expert motion) are not penalised for being hard. It costs two chains per
   frame. The windows only index the token tensor: nothing is encoded twice;
3. windows go through the video model in batches of ``batch_size``; each batch's history is
   embedded once (:class:`~mmreward.robotics.video.ContextCache`) and reused by the 11 denoising
   calls of the fast chain (T = 100, ``skip_step`` = 9);
4. the raw reward is z-scored with the mean / std measured on expert episodes
   (:meth:`DiffusionReward.fit_statistics`, saved with the model together with the ``reward_type``,
   ``entropy_estimator`` and ``skip_step`` they were fitted for: scoring with others is refused), and mixed:
   ``r = (1 − α)·z(r_ce) + α·r_RND + r_sparse`` with α = ``expl_scale`` (official 0.95), the RND
   novelty of frame i normalised by its running std, and ``r_sparse`` the success indicator the
   caller passes (``success=``). Without an RND module, ``r = z(r_ce) + r_sparse``.

   Optional (not in the paper): a :class:`~mmreward.robotics.reward.progress.ProgressModel`, a
   ranker of expert frame order, adds ``β·z(progress)`` to the learned term (β = ``progress_scale``):
   ``r = (1 − α)·(z(r_ce) + β·z(progress)) + α·r_RND + r_sparse``. The likelihood terms score
   plausibility, so holding still is paid like progress; the ranker pays for getting further.

   Optional (not in the paper): the **motion deficit** ``D_i = max(0, E_i − O_i) / max(E_i, 1)``
   (the share of the expected change that did not happen) subtracts ``λ·D_i / s_D`` from the learned
   term (λ = ``motion_scale``). ``E_i`` is the number of tokens the video model expects frame i to
   change against its last history frame (from its all-mask prediction ``p_θ(x0 | history)``:
   ``Σ_l 1 − p_l(h_l)``), ``O_i`` the number that did change, ``s_D`` the std of
   ``(E − O) / max(E, 1)`` on expert frames. Where the expert moves, a robot that stays put pays; where
   the expert holds still (a finished task), it does not; moving more than expected costs nothing here.

   Optional (not in the paper): the **goal distance** ``G_i``, the share of frame i's tokens that
   differ from those of the nearest goal frame (:meth:`DiffusionReward.set_goal`, e.g. the last frames
   of a few demonstrations of the task, which need not be a training task), subtracts ``γ·G_i / s_G``
   (γ = ``goal_scale``, ``s_G`` its std on expert frames against their task's goals). The video model's
   terms do not transfer to unseen tasks; a goal frame tells the reward what the task is.

   Optional (not in the paper): the **displacement** ``P_i``, the share of frame i's tokens that differ
   from those of the episode's first frame, adds ``δ·P_i / s_P`` (δ = ``displacement_scale``, ``s_P``
   its std on expert frames). Every task changes the scene; a robot that freezes or jitters around its
   start pose (P ≈ 0) earns less than one that explores, which the likelihood terms alone do not ensure.

   Optional (not in the paper): the **motion consistency** ``C_i``, whether frame i's change goes on
   in the direction of the change before it, adds ``κ·C_i / s_C`` (κ = ``consistency_scale``, ``s_C``
   its std on expert frames; :meth:`DiffusionReward.motion_consistency`). Needs no model and no
   training: it scores purposeful motion (an expert's smooth reach) above jitter (action noise,
   random flailing, hovering) on any task, seen in training or not.

The model contract (:class:`~mmreward.robotics.reward.base.EpisodeScorer`): ``score_parts`` on
:class:`~mmreward.core.inputs.Episode` inputs gives exactly these per-frame rewards, ``score`` their
sum per episode. A saved folder holds ``codec/``, ``video/`` and, when present, ``rnd/`` and
``progress/`` (each a sub-model's ``config.json`` + ``model.safetensors``), the top-level
``config.json`` + ``model.safetensors`` (the statistics) and one ``manifest.json``; it is written as
one unit. Folders of mmreward 0.1 (no manifest; the shipped ``metaworld-64`` / ``-v1``) load as they are.

For RL, pass the frames observed *after* each action (next observations), so reward i belongs to
transition i. The chains' Gumbel noise comes from a generator seeded with ``seed`` per call, so the
same frames always get the same rewards (``seed=None`` draws from the global RNG instead).
"""
from __future__ import annotations

import functools
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from mmreward.core.folders import CheckpointError
from mmreward.core.model import FORMAT_VERSION, Pretrained, config_from_dict, load_weights, save_weights, write_config

from ..codec.vqgan import VQGAN
from ..data.inputs import as_success
from ..training import as_frame_tensor, check_frames_uint8, episodes_from, frames_hint
from ..video.vq_diffusion import ConditionalVQDiffusion, window_indices
from .base import EpisodeScorer, help_field
from .progress import ProgressModel
from .rnd import RND

MODEL_TYPE = "diffusion_reward"
REWARD_TYPES = ("entropy", "likelihood", "relative_likelihood")
# [std, frames] of the terms added after the first release; folders saved before a term lack its entry
_OPTIONAL_STATISTICS = ("motion_statistics", "goal_statistics", "displacement_statistics", "consistency_statistics")
# the config fields that define the raw reward the expert mean / std were fitted on (entropy_estimator only
# where an entropy is computed): with another value the z-score reads a different estimate on the old scale.
# compute_dtype is not one: bfloat16 is documented as a switch on a fitted model (the same estimate, rounded)
FITTED_FIELDS = ("reward_type", "entropy_estimator", "skip_step")


@dataclass
class DiffusionRewardConfig:
    """How rewards are computed from the codec + video model (official values as defaults)."""

    reward_type: str = help_field("entropy (−H of the next frame) | likelihood (log p bound of the frame) | "
                                  "relative_likelihood (the bound + H of the same prediction)", default="entropy")
    entropy_estimator: str = help_field("vlb (official one-sample bound of a model sample) | x0_entropy",
                                        default="vlb")
    skip_step: int = help_field("fast-chain stride: T=100, skip 9 → 11 denoising calls", default=9)
    num_samples: int = help_field("chains averaged per window", default=1)
    noise: bool = help_field("Gumbel noise when sampling the chain (off: argmax)", default=True)
    noise_scale: float = help_field("scale of the Gumbel noise", default=1.0)
    use_std: bool = help_field("z-score the raw reward with the expert statistics", default=True)
    clip_min: Optional[float] = help_field("lower bound on the learned term z(raw) [+ β·z(progress)]", default=None)
    expl_scale: float = help_field("α: weight of the RND bonus, (1 − α) for the diffusion reward", default=0.95)
    progress_scale: float = help_field("β: weight of the progress ranker's z-score (with a ranker only)",
                                       default=1.0)
    motion_scale: float = help_field("λ: weight of the motion deficit (tokens the video model expects to change "
                                     "that did not, in expert std units; 0: off)", default=0.0)
    goal_scale: float = help_field("γ: weight of the goal distance (share of the frame's tokens that differ from "
                                   "the nearest goal frame's, set_goal; in expert std units; 0: off)", default=0.0)
    displacement_scale: float = help_field("δ: weight of the displacement (share of the frame's tokens that differ "
                                           "from the episode's first frame's, in expert std units; 0: off)",
                                           default=0.0)
    displacement_cap: Optional[float] = help_field("upper bound on the displacement in expert std units (P/s_P) "
                                                   "before δ: change beyond it pays no more (none: unbounded)",
                                                   default=None)
    consistency_scale: float = help_field("κ: weight of the motion consistency (whether each frame's change goes on "
                                          "in the direction of the one before; in expert std units; 0: off)",
                                          default=0.0)
    consistency_grid: int = help_field("side of the grey-level grid the frames are averaged to for the motion "
                                       "consistency", default=16)
    use_sparse: bool = help_field("add the per-frame success reward given with the frames", default=True)
    success_scale: float = help_field("weight of that success reward (official 1)", default=1.0)
    batch_size: int = help_field("windows per video-model batch (the chain noise is drawn per batch)", default=64)
    seed: Optional[int] = help_field("seed of the chain noise per call (none: the global RNG)", default=0)
    compute_dtype: str = help_field("float32 | bfloat16: the VQGAN encoder's and the video model's matmuls / convs "
                                    "in bfloat16 (autocast): ≈2× faster on CPUs with AVX512-BF16 / AMX, not "
                                    "bit-identical (docs/diffusion_reward.md, Speed)", default="float32")

    def validate(self) -> None:
        # kinds first: "4" / None where a number belongs failed in math.isfinite naming no field, and a flag
        # set to "false" (a truthy string) or 1.0 was taken as on without a word
        for name in ("use_std", "noise", "use_sparse"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("expl_scale", "progress_scale", "motion_scale", "goal_scale", "displacement_scale",
                     "consistency_scale", "success_scale", "clip_min", "displacement_cap"):
            value = getattr(self, name)
            if (value is None and name in ("clip_min", "displacement_cap")) or (
                    isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))):
                continue
            none = " or None" if name in ("clip_min", "displacement_cap") else ""
            raise ValueError(f"{name} must be a number{none}, got {value!r}")
        for name in ("reward_type", "entropy_estimator", "compute_dtype"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.reward_type not in REWARD_TYPES:
            raise ValueError(f"reward_type must be one of {', '.join(REWARD_TYPES)}, got {self.reward_type!r}")
        if self.entropy_estimator not in ("vlb", "x0_entropy"):
            raise ValueError(f"entropy_estimator must be 'vlb' or 'x0_entropy', got {self.entropy_estimator!r}")
        if not 0.0 <= self.expl_scale <= 1.0:
            raise ValueError(f"expl_scale must be in [0, 1], got {self.expl_scale}")
        if not math.isfinite(self.progress_scale):
            raise ValueError(f"progress_scale must be a finite number, got {self.progress_scale}")
        if not (math.isfinite(self.motion_scale) and self.motion_scale >= 0):
            raise ValueError(f"motion_scale must be a finite number >= 0, got {self.motion_scale}")
        if not (math.isfinite(self.goal_scale) and self.goal_scale >= 0):
            raise ValueError(f"goal_scale must be a finite number >= 0, got {self.goal_scale}")
        if not (math.isfinite(self.displacement_scale) and self.displacement_scale >= 0):
            raise ValueError(f"displacement_scale must be a finite number >= 0, got {self.displacement_scale}")
        if self.displacement_cap is not None and not (math.isfinite(self.displacement_cap) and self.displacement_cap > 0):
            raise ValueError(f"displacement_cap must be a finite number > 0 or None, got {self.displacement_cap}")
        if not (math.isfinite(self.consistency_scale) and self.consistency_scale >= 0):
            raise ValueError(f"consistency_scale must be a finite number >= 0, got {self.consistency_scale}")
        if isinstance(self.consistency_grid, bool) or not isinstance(self.consistency_grid, numbers.Integral) \
                or self.consistency_grid < 1:  # a numpy integer as batch_size / skip_step take it
            raise ValueError(f"consistency_grid must be an integer >= 1, got {self.consistency_grid!r}")
        if not (math.isfinite(self.success_scale) and self.success_scale >= 0):
            raise ValueError(f"success_scale must be a finite number >= 0, got {self.success_scale}")
        if self.clip_min is not None and not math.isfinite(self.clip_min):
            raise ValueError(f"clip_min must be a finite number or None, got {self.clip_min}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}")
        for name, low in (("batch_size", 1), ("skip_step", 0), ("num_samples", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.noise_scale, numbers.Real) and math.isfinite(self.noise_scale)
                and self.noise_scale >= 0):  # NaN noise made every chain an argmax over NaN scores
            raise ValueError(f"noise_scale must be a finite number >= 0, got {self.noise_scale!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
                                      or not -2 ** 63 <= self.seed < 2 ** 64):
            raise ValueError(f"seed must be an integer (a 64-bit generator seed) or None, got {self.seed!r}")


def _in_compute_dtype(method):
    """Run a :class:`DiffusionReward` method under its ``compute_dtype`` (a bfloat16 autocast when set)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.compute_dtype == "bfloat16"):
            return method(self, *args, **kwargs)
    return wrapper


class DiffusionReward(EpisodeScorer, nn.Module):
    """VQGAN + conditional VQ-Diffusion (+ optional RND) → per-frame rewards. The codec and video
    model are put in eval mode and frozen (``requires_grad=False``); the RND predictor stays trainable.
    ``progress`` (optional) is a trained :class:`ProgressModel` with fitted statistics, frozen too."""

    model_type = MODEL_TYPE
    config_class = DiffusionRewardConfig

    def __init__(self, codec: VQGAN, video: ConditionalVQDiffusion, config: Optional[DiffusionRewardConfig] = None,
                 rnd: Optional[RND] = None, progress: Optional[ProgressModel] = None):
        super().__init__()
        cfg = config or DiffusionRewardConfig()
        cfg.validate()
        if codec.config.num_codes != video.config.num_codes:
            raise ValueError(f"codec has {codec.config.num_codes} codes but the video model expects "
                             f"{video.config.num_codes}")
        s = codec.config.latent_size
        if tuple(video.config.token_shape) != (s, s):
            raise ValueError(f"codec makes {s}x{s} tokens but the video model expects "
                             f"{tuple(video.config.token_shape)}")
        trained_on = getattr(video.config, "codec_digest", "")
        if trained_on and not codec.made_tokens_of(trained_on):
            # a codec retrained into the same folder after train-video (same sizes, other tokens) gave rewards
            # of unrelated token sequences, fitted statistics and all, without a word
            raise ValueError(f"the video model was trained on the tokens of another codec (codec digest {trained_on}, "
                             f"this codec's {codec.token_digest()}): pair it with the codec it was trained with, or "
                             "train the video model again on this codec (train-video --codec ...)")
        if rnd is not None and rnd.config.image_size != codec.config.image_size:
            # built with RNDConfig()'s 64 px next to a 32 px codec: every score failed later ("frames must be
            # 64x64 pixels, got 32x32"), a model saved that way included
            raise ValueError(f"the RND takes {rnd.config.image_size}px frames, the codec "
                             f"{codec.config.image_size}px: build it with RNDConfig(image_size="
                             f"{codec.config.image_size})")
        self.config = cfg
        self.codec = codec.eval()
        self.video = video.eval()
        self.rnd = rnd
        self.progress = None
        self.set_progress(progress)
        for p in list(codec.parameters()) + list(video.parameters()):
            p.requires_grad_(False)
        # expert statistics of the raw reward: mean, std, number of frames (0 = not fitted)
        self.register_buffer("statistics", torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
        # expert std of the unrealised share of the expected change (E − O) / max(E, 1), frames (0 = not fitted)
        self.register_buffer("motion_statistics", torch.tensor([1.0, 0.0], dtype=torch.float64))
        # expert std of the goal distance, frames (0 = not fitted); goal tokens (G, L): a run-time input, not saved
        self.register_buffer("goal_statistics", torch.tensor([1.0, 0.0], dtype=torch.float64))
        self.register_buffer("goal_tokens", torch.zeros(0, codec.config.latent_size ** 2, dtype=torch.long),
                             persistent=False)
        # expert std of the displacement from the episode's first frame, frames (0 = not fitted)
        self.register_buffer("displacement_statistics", torch.tensor([1.0, 0.0], dtype=torch.float64))
        # expert std of the motion consistency, frames (0 = not fitted)
        self.register_buffer("consistency_statistics", torch.tensor([1.0, 0.0], dtype=torch.float64))
        # FITTED_FIELDS as they were when the statistics were fitted (None: unknown, e.g. copied in by hand)
        self.fitted_with: Optional[dict] = None
        # consistency_grid when the consistency std was fitted (None: unknown): C of another grid has another spread
        self.consistency_fitted_grid: Optional[int] = None

    @property
    def device(self) -> torch.device:
        return self.video.device

    @property
    def image_size(self) -> int:
        return self.codec.config.image_size

    @property
    def default_batch_size(self) -> int:  # the chain noise is drawn per batch: the saved size keeps rewards as fitted
        return self.config.batch_size

    def set_progress(self, progress: Optional[ProgressModel]) -> None:
        """Attach (or with ``None`` detach) a progress ranker; it must have expert statistics."""
        if progress is not None:
            if not isinstance(progress, ProgressModel):
                raise TypeError(f"progress must be a ProgressModel, got {type(progress).__name__}")
            if progress.config.image_size != self.codec.config.image_size:
                raise ValueError(f"the progress model takes {progress.config.image_size}px frames, the codec "
                                 f"{self.codec.config.image_size}px")
            if int(progress.statistics[2]) == 0:
                raise ValueError("the progress model has no expert statistics: call its fit_statistics first")
            progress.eval().requires_grad_(False)
        self.progress = progress

    # -------------------------------------------------------------- raw reward
    def _checked_config(self) -> DiffusionRewardConfig:
        """The config, validated again at use: the documented way to change a term is to set its field
        (``dr.config.motion_scale = 4.0``), so a bad value set that way must be an error, not a reward
        computed with it (an unknown ``reward_type`` would be scored as a likelihood)."""
        try:
            self.config.validate()
        except ValueError as e:
            raise ValueError(f"DiffusionReward.config: {e}") from None
        return self.config

    def _batch(self, batch_size: Optional[int]) -> int:
        """Windows per video-model batch: ``batch_size`` (an integer >= 1) or the config's."""
        if batch_size is None:
            return self.config.batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1 (or None: the config's {self.config.batch_size}), "
                             f"got {batch_size!r}")
        return int(batch_size)

    def _generator(self) -> Optional[torch.Generator]:
        if self.config.seed is None:
            return None
        return torch.Generator(self.device).manual_seed(int(self.config.seed))

    @_in_compute_dtype
    def tokenize(self, frames: torch.Tensor) -> torch.Tensor:
        """Tokens ``[T, L]`` of uint8 frames ``[T, H, W, 3]`` (each frame encoded once; a tensor, a
        numpy array or a list of ``[H, W, 3]`` frames)."""
        frames = as_frame_tensor(frames)
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8 [T, H, W, 3] (0..255), got {frames.dtype}{frames_hint(frames)}")
        check_frames_uint8(frames, "frames", self.codec.config.image_size)
        return self.codec.encode(frames).flatten(1)

    @torch.no_grad()
    def raw_reward(self, frames: torch.Tensor, batch_size: Optional[int] = None) -> torch.Tensor:
        """Un-normalised reward ``[T]`` (nats per frame): −conditional entropy of the next frame
        (``"entropy"``), the bound on the frame's log-likelihood (``"likelihood"``), or that bound
        plus the entropy of the same prediction (``"relative_likelihood"``)."""
        return self.raw_reward_windows(self.tokenize(frames), batch_size=batch_size)

    @torch.no_grad()
    def raw_reward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`raw_reward` of an already tokenised episode ``[T, L]`` or ``[T, h, w]``."""
        return self.raw_reward_windows(tokens)

    @_in_compute_dtype
    @torch.no_grad()
    def raw_reward_windows(self, tokens: torch.Tensor, frame_ids: Optional[torch.Tensor] = None, *,
                           batch_size: Optional[int] = None) -> torch.Tensor:
        """Raw rewards of the frames ``frame_ids`` (default: all) of a tokenised episode ``[T, L]``.
        Reward i only looks at frames <= i in ``"likelihood"`` mode and at frames <= i in
        ``"entropy"`` mode too (history i−1, i), so an online caller can score the newest frame
        from the frames seen so far (:class:`~mmreward.robotics.wrappers.DiffusionRewardWrapper`).
        ``batch_size``: windows per video-model batch (default ``config.batch_size``)."""
        cfg = self._checked_config()
        step = self._batch(batch_size)
        tok, frame_ids = self._check_windows(tokens, frame_ids)
        hist, target = self._windows(tok, frame_ids, cfg.reward_type == "entropy")
        gen = self._generator()
        out = []
        for i in range(0, frame_ids.numel(), step):
            ctx = self.video.encode_context(hist[i:i + step])
            if cfg.reward_type == "entropy":
                r = self.video.entropy_reward(ctx, cfg.skip_step, cfg.entropy_estimator, cfg.num_samples,
                                              cfg.noise, cfg.noise_scale, gen)
            else:
                r = self.video.elbo(target[i:i + step], ctx, cfg.skip_step, cfg.num_samples, gen)
                if cfg.reward_type == "relative_likelihood":  # log p(x) − E_p[log p] = log p(x) + H
                    r = r - self.video.entropy_reward(ctx, cfg.skip_step, cfg.entropy_estimator, cfg.num_samples,
                                                      cfg.noise, cfg.noise_scale, gen)
            out.append(r)
        if not out:
            return torch.zeros(0, device=tok.device)
        return torch.cat(out).float()

    def _check_windows(self, tokens: torch.Tensor, frame_ids: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated tokens ``[T, L]`` and frame ids ``[N]`` (default: all frames)."""
        tok = self.video.flatten_tokens(tokens, "tokens", 1)
        self.video.check_token_range(tok, "tokens")
        if tok.shape[0] == 0:
            raise ValueError("tokens is empty (T = 0)")
        T = tok.shape[0]
        frame_ids = (torch.arange(T, device=tok.device) if frame_ids is None
                     else torch.as_tensor(frame_ids, device=tok.device).long().flatten())
        if frame_ids.numel() and (int(frame_ids.min()) < 0 or int(frame_ids.max()) >= T):
            raise ValueError(f"frame_ids must be in [0, {T})")
        return tok, frame_ids

    def _windows(self, tok: torch.Tensor, frame_ids: torch.Tensor, next_frame: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """History ``[N, H, L]`` and target ``[N, L]`` tokens of the windows of ``frame_ids``: the
        history ends at frame i (``next_frame``: entropy of frame i + 1) or at i − skip (frame i itself)."""
        vcfg = self.video.config
        ends = frame_ids if next_frame else frame_ids - vcfg.frame_skip
        return tok[window_indices(tok.shape[0], ends, vcfg.num_history, vcfg.frame_skip)], tok[frame_ids]

    @_in_compute_dtype
    @torch.no_grad()
    def change_windows(self, tokens: torch.Tensor, frame_ids: Optional[torch.Tensor] = None, *,
                       batch_size: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E, O)``, each ``[N]`` (tokens), for the frames ``frame_ids`` of a tokenised episode
        ``[T, L]``: E the number of tokens of frame i the video model expects to differ from its last
        history frame (i − skip), from its all-mask prediction ``Σ_l 1 − p_l(h_l)``; O the number
        that do. One denoising call per window."""
        tok, frame_ids = self._check_windows(tokens, frame_ids)
        hist, target = self._windows(tok, frame_ids, next_frame=False)
        step = self._batch(batch_size)
        last = hist[:, -1]  # (N, L)
        expected, observed = [], []
        for i in range(0, frame_ids.numel(), step):
            ctx = self.video.encode_context(hist[i:i + step])
            logits = self.video(self.video._all_mask(ctx.batch_size), self.video.config.num_steps, ctx)  # (B, L, K)
            p_same = logits.softmax(-1).gather(-1, last[i:i + step, :, None])[..., 0]  # (B, L)
            expected.append((1 - p_same).sum(1))
            observed.append((target[i:i + step] != last[i:i + step]).sum(1).float())
        if not expected:
            return torch.zeros(0, device=tok.device), torch.zeros(0, device=tok.device)
        return torch.cat(expected).float(), torch.cat(observed)

    @staticmethod
    def unrealised_motion(expected: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``(E − O) / max(E, 1)``: the share of the expected token changes that did not happen
        (negative where the frame changed more than expected)."""
        return (expected - observed) / expected.clamp_min(1.0)

    def motion_deficit(self, expected: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``max(0, (E − O) / max(E, 1)) / s_D``: the motion deficit in expert std units."""
        std = self._fitted_std("motion", "fit_statistics(expert_episodes)")
        return self.unrealised_motion(expected, observed).clamp_min(0) / std

    # -------------------------------------------------------------- goal distance
    def set_goal(self, frames: Optional[torch.Tensor]) -> None:
        """Goal frames uint8 ``[G, H, W, 3]`` (e.g. the last frames of demonstrations of the task) for
        the goal distance and, when it is goal-conditioned, the progress ranker; ``None`` clears them."""
        ranker = self.progress if self.progress is not None and self.progress.config.goal_conditioned else None
        if frames is None:
            self.goal_tokens = self.goal_tokens[:0]
        else:
            frames = self._goal_frames(frames, "goal frames")
            self.goal_tokens = self.tokenize(frames)
        if ranker is not None:
            ranker.set_goal(frames)

    def _goal_frames(self, frames: Any, what: str) -> torch.Tensor:
        """Goal frames as uint8 ``[G, H, W, 3]`` of the model's size, or an error naming ``what`` (the checks of
        :meth:`tokenize` said "frames must be 64x64 pixels": not that the goal frames were meant)."""
        frames = _frame_batch(frames, what)
        if frames.dtype != torch.uint8:
            raise TypeError(f"{what} must be uint8 [G, H, W, 3] (0..255), got {frames.dtype}{frames_hint(frames)}")
        check_frames_uint8(frames, what, self.image_size)
        return frames

    def goal_distance(self, tokens: torch.Tensor, goal_tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Share ``[T]`` of each frame's tokens (``tokens [T, L]``) that differ from those of the nearest
        goal frame (:meth:`set_goal`, or ``goal_tokens [G, L]``): 0 at a goal frame, near 1 far from it."""
        goal = self.goal_tokens if goal_tokens is None else goal_tokens
        if goal.shape[0] == 0:
            raise RuntimeError("the goal distance needs goal frames: call set_goal(frames) (e.g. the last frames of "
                               "demonstrations of the task) or set goal_scale=0")
        if goal.dim() != 2 or tokens.dim() != 2 or goal.shape[1] != tokens.shape[1]:
            raise ValueError(f"goal tokens {list(goal.shape)} and frame tokens {list(tokens.shape)} must be [G, L] "
                             "and [T, L] of the same codec")
        goal = goal.to(tokens.device)
        return torch.stack([(tokens != g).float().mean(1) for g in goal]).min(0).values  # (G, T) → (T,)

    @torch.no_grad()
    def fit_goal_statistics(self, episodes: Any, goals: list) -> dict[str, float]:
        """Std of the goal distance over expert episodes, each against its own goal frames ``goals[k]``
        (uint8 ``[G, H, W, 3]``, e.g. the last frames of other episodes of its task:
        :func:`~mmreward.robotics.reward.progress.group_goals`); stored (and saved) with the model."""
        eps = episodes_from(episodes)
        if goals is None or isinstance(goals, (str, bytes)) or not hasattr(goals, "__len__"):
            raise TypeError(f"goals must be a list of goal frame sets, one per episode, got {type(goals).__name__}")
        if len(goals) != len(eps):
            raise ValueError(f"{len(goals)} goals for {len(eps)} episodes: give one goal set per episode")
        goals = [self._goal_frames(g, f"goals[{k}]") for k, g in enumerate(goals)]  # all checked before any work,
        for k, ep in enumerate(eps):  # naming the goal set / episode ("frames must be 64x64 pixels" said not which)
            check_frames_uint8(ep, f"episode {k}", self.image_size)
        return self._store_std("goal", torch.cat([self.goal_distance(self.tokenize(ep), self.tokenize(g))
                                                  for ep, g in zip(eps, goals)]))

    # -------------------------------------------------------------- displacement
    @staticmethod
    def displacement(tokens: torch.Tensor, start_tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Share ``[T]`` of each frame's tokens (``tokens [T, L]``) that differ from the episode's first
        frame's (``start_tokens [L]``, default ``tokens[0]``): 0 for a robot that has not moved."""
        start = tokens[0] if start_tokens is None else start_tokens.to(tokens.device)
        if tokens.dim() != 2 or tokens.shape[0] == 0 or start.shape != tokens.shape[1:]:
            raise ValueError(f"displacement takes frame tokens [T, L] (T >= 1) and start tokens [L], got "
                             f"{list(tokens.shape)} and {list(start.shape)}")
        return (tokens != start).float().mean(1)

    @torch.no_grad()
    def fit_displacement_statistics(self, episodes: Any) -> dict[str, float]:
        """Std of the displacement over expert episodes (tokens only, no video-model call); stored (and
        saved) with the model. :meth:`fit_statistics` fits it too."""
        return self._store_std("displacement", torch.cat([self.displacement(self.tokenize(ep))
                                                          for ep in episodes_from(episodes)]))

    # -------------------------------------------------------------- motion consistency
    @staticmethod
    def motion_consistency(frames: torch.Tensor, frame_skip: int = 1, grid: int = 16) -> torch.Tensor:
        """Per-frame motion consistency ``[T]`` of one episode's uint8 frames ``[T, H, W, 3]``.

        Frames are averaged to grey ``grid × grid`` images ``g``; frame i's change is
        ``d_i = g_i − g_{i−s}`` (s = ``frame_skip``) and
        ``C_i = d_i·d_{i−s} / (max(|d_i|, |d_{i−s}|)·w̄) = cos(d_i, d_{i−s})·min(|d_i|, |d_{i−s}|) / w̄``
        with ``w̄`` the episode's mean of ``min(|d_i|, |d_{i−s}|)``: the episode's mean of C is the
        motion-weighted mean cosine between successive changes (its number of scored frames over T).
        Positive where motion goes on in one direction, negative where it turns back (jitter), 0 for the
        first 2s frames and for a robot that never moves. Dividing by the episode's own motion makes it
        scale-free: a robot jittering around its start pose scores like one jittering widely."""
        if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.dim() != 4 \
                or frames.shape[-1] != 3:
            raise TypeError("frames must be a uint8 torch.Tensor [T, H, W, 3]")
        if frame_skip < 1 or grid < 1:
            raise ValueError(f"frame_skip and grid must be >= 1, got {frame_skip}, {grid}")
        T, s = frames.shape[0], frame_skip
        out = torch.zeros(T, dtype=torch.float64)
        if T <= 2 * s:
            return out
        grey = frames.sum(-1, dtype=torch.int32).to(torch.float64).div_(3 * 255.0)[:, None]  # (T, 1, H, W)
        g = torch.nn.functional.adaptive_avg_pool2d(grey, grid).flatten(1)  # (T, grid²)
        d = g[s:] - g[:-s]  # (T−s, grid²): d_i for i ≥ s
        cur, prev = d[s:], d[:-s]  # d_i and d_{i−s} for i ≥ 2s
        n_cur, n_prev = cur.norm(dim=1), prev.norm(dim=1)
        w_mean = torch.minimum(n_cur, n_prev).mean()
        if w_mean <= 1e-9:  # no motion in the episode: nothing to be consistent about
            return out
        out[2 * s:] = (cur * prev).sum(1) / (torch.maximum(n_cur, n_prev).clamp_min(1e-12) * w_mean)
        return out

    def frame_consistency(self, frames: torch.Tensor) -> torch.Tensor:
        """:meth:`motion_consistency` at the video model's frame skip and the configured grid."""
        return self.motion_consistency(torch.as_tensor(frames).cpu(), self.video.config.frame_skip,
                                       self.config.consistency_grid)

    def fit_consistency_statistics(self, episodes: Any) -> dict[str, float]:
        """Std of the motion consistency over expert episodes' frames (pixels only: no model call); stored
        (and saved) with the model. :meth:`fit_statistics` fits it too."""
        return self._store_std("consistency",
                               torch.cat([self.frame_consistency(ep) for ep in episodes_from(episodes)]))

    # -------------------------------------------------------------- statistics of the optional terms
    def _store_std(self, term: str, values: torch.Tensor) -> dict[str, float]:
        """The expert std of a term's values into ``<term>_statistics`` ([std, frames]; saved)."""
        _check_spread(values, term)
        std = _std(values.double())
        getattr(self, f"{term}_statistics").copy_(torch.tensor([std, float(values.numel())], dtype=torch.float64))
        if term == "consistency":
            self.consistency_fitted_grid = int(self.config.consistency_grid)
        return {f"{term}_std": std, f"{term}_frames": values.numel()}

    def _fitted_std(self, term: str, fit_call: str) -> float:
        """A term's expert std; a clear error when the model was saved before the term (not fitted)."""
        std, n = getattr(self, f"{term}_statistics").tolist()
        if n == 0:
            raise RuntimeError(f"DiffusionReward has no {term} statistics: call {fit_call}, or set {term}_scale=0")
        fitted, grid = self.consistency_fitted_grid, int(self.config.consistency_grid)
        if term == "consistency" and fitted is not None and fitted != grid:
            # the std of a 4 × 4 grid's consistency is not that of a 16 × 16 one: another spread
            raise ValueError(f"DiffusionReward.config.consistency_grid {grid}: the consistency statistics were fitted "
                             f"on a {fitted} × {fitted} grid; call {fit_call} again, or set the grid back")
        return std

    def _check_fitted_with(self) -> None:
        """The raw-reward settings must be those the expert statistics were fitted with: the documented way
        to change a field is ``dr.config.skip_step = 19``, and the shipped relative-likelihood mean / std
        then z-scored an entropy or a coarser chain's bound as if it were the fitted reward, without a word."""
        if not self.config.use_std or self.fitted_with is None or int(self.statistics[2]) == 0:
            return
        wanted = _fitted_fields(self.config)
        changed = [f"{k} {v!r} (fitted with {self.fitted_with[k]!r})" for k, v in wanted.items()
                   if k in self.fitted_with and self.fitted_with[k] != v]  # no estimator: reward_type differs
        if changed:
            flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in wanted.items())
            if self.config.compute_dtype != "float32":
                flags += f" --compute-dtype {self.config.compute_dtype}"
            raise ValueError(f"DiffusionReward.config: {', '.join(changed)}: the expert statistics z-score the reward "
                             f"they were fitted on; refit them with fit_statistics(expert_episodes) (mmreward robotics "
                             f"fit-stats {flags}), set the field back, or set use_std=False")

    def _check_terms_ready(self) -> None:
        """The optional terms' statistics (and goal frames) are there before any work: a missing one was
        found only after the video model had scored every window of the episode."""
        cfg = self.config
        if cfg.use_std and int(self.statistics[2]) == 0:
            self.standardize(torch.zeros(0))  # the error of the missing expert statistics
        if cfg.motion_scale > 0:
            self._fitted_std("motion", "fit_statistics(expert_episodes)")
        if cfg.goal_scale > 0:
            if self.goal_tokens.shape[0] == 0:
                self.goal_distance(self.goal_tokens)  # the error of the missing goal frames
            self._fitted_std("goal", "fit_goal_statistics(expert_episodes, goals)")
        if cfg.displacement_scale > 0:
            self._fitted_std("displacement", "fit_statistics or fit_displacement_statistics(expert_episodes)")
        if cfg.consistency_scale > 0:
            self._fitted_std("consistency", "fit_statistics or fit_consistency_statistics(expert_episodes)")
        ranker = self.progress
        if ranker is not None and ranker.config.goal_conditioned and ranker.goal.shape[0] == 0:
            raise RuntimeError("the progress ranker is goal-conditioned: call set_goal(goal_frames) first (e.g. the "
                               "last frames of demonstrations of the task), or set_progress(None)")

    def standardize(self, raw: torch.Tensor) -> torch.Tensor:
        if not self.config.use_std:
            return raw
        self._check_fitted_with()
        mean, std, n = self.statistics.tolist()
        if n == 0:
            raise RuntimeError("DiffusionReward has no expert statistics: call fit_statistics(expert_episodes) "
                               "or set use_std=False")
        return (raw - mean) / std

    @torch.no_grad()
    def fit_statistics(self, episodes: Any) -> dict[str, float]:
        """Mean / std of the raw reward and std of the unrealised motion and of the displacement over
        expert episodes (any input :func:`~mmreward.robotics.training.episodes_from` takes); stored (and
        saved) with the model."""
        raws, unrealised, displaced, consistent = [], [], [], []
        episodes = episodes_from(episodes)
        for i, ep in enumerate(episodes):  # all checked before any work, naming the episode ("frames must be
            check_frames_uint8(ep, f"episode {i}", self.image_size)  # 32x32 pixels, got 48x48" said not which)
        for ep in episodes:
            tok = self.tokenize(ep)
            raws.append(self.raw_reward_windows(tok))
            unrealised.append(self.unrealised_motion(*self.change_windows(tok)))
            displaced.append(self.displacement(tok))
            consistent.append(self.frame_consistency(ep))
        raws = torch.cat(raws).double()
        _check_spread(raws, "reward")
        mean, std = float(raws.mean()), _std(raws)
        self.statistics.copy_(torch.tensor([mean, std, float(raws.numel())], dtype=torch.float64))
        self.fitted_with = _fitted_fields(self.config)
        return ({"mean": mean, "std": std, "frames": raws.numel()} | self._store_std("motion", torch.cat(unrealised))
                | self._store_std("displacement", torch.cat(displaced))
                | self._store_std("consistency", torch.cat(consistent)))

    # -------------------------------------------------------------- mixed reward
    @torch.no_grad()
    def forward(self, frames: torch.Tensor, success: Optional[torch.Tensor] = None, *,
                batch_size: Optional[int] = None, with_rnd: bool = True) -> torch.Tensor:
        """Rewards ``[T]``: ``(1 − α)·z(r_ce) + α·r_RND + r_sparse`` (see the module docstring).
        ``frames``: uint8 ``[T, H, W, 3]``, a tensor, a numpy array or a list of ``[H, W, 3]`` frames (as
        :meth:`score` and :func:`~mmreward.robotics.wrappers.relabel_episode` take them); ``success``
        likewise a tensor, an array or a list. ``with_rnd=False`` leaves out the ``α·r_RND`` term (the
        official RL loop adds it when a transition is sampled: :meth:`exploration_bonus`)."""
        self._checked_config()
        self._batch(batch_size)  # before any work
        self._check_fitted_with()
        self._check_terms_ready()
        if not isinstance(frames, torch.Tensor):
            frames = as_frame_tensor(frames).to(self.device)
        tok = self.tokenize(frames)
        raw = self.raw_reward_windows(tok, batch_size=batch_size)
        change = self.change_windows(tok, batch_size=batch_size) if self.config.motion_scale > 0 else None
        goal = self.goal_distance(tok) if self.config.goal_scale > 0 else None
        moved = self.displacement(tok) if self.config.displacement_scale > 0 else None
        consistent = self.frame_consistency(frames) if self.config.consistency_scale > 0 else None
        return self.combine(raw, frames, success, change, goal, moved, consistent, with_rnd=with_rnd)

    def frame_rewards(self, frames: torch.Tensor, success: Optional[torch.Tensor], batch_size: int) -> torch.Tensor:
        return self(frames.to(self.device), success, batch_size=batch_size)

    @torch.no_grad()
    def combine(self, raw: torch.Tensor, frames: torch.Tensor, success: Optional[torch.Tensor] = None,
                change: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                goal_distance: Optional[torch.Tensor] = None,
                displacement: Optional[torch.Tensor] = None,
                consistency: Optional[torch.Tensor] = None, *, with_rnd: bool = True) -> torch.Tensor:
        """The mixing rule on raw rewards ``[N]`` of the frames ``frames`` (uint8 ``[N, H, W, 3]``,
        used by RND and the progress ranker): ``(1 − α)·z(raw) + α·r_RND + r_sparse`` (``z(raw) +
        r_sparse`` without RND), with ``β·z(progress)`` added to z(raw) when a progress model is
        attached and bounded below by ``clip_min`` when set, then ``λ·deficit`` subtracted when
        ``motion_scale`` > 0 (``change``: the frames' expected and observed token changes,
        :meth:`change_windows`) and ``γ·goal_distance / s_G`` when ``goal_scale`` > 0 (``goal_distance``:
        :meth:`goal_distance` of the frames), and ``δ·min(displacement / s_P, displacement_cap)`` added
        when ``displacement_scale`` > 0 (``displacement``: :meth:`displacement` of the frames), and
        ``κ·consistency / s_C`` when ``consistency_scale`` > 0 (``consistency``: :meth:`frame_consistency`
        of the whole episode). ``with_rnd=False``: ``(1 − α)·z(raw) + r_sparse``, the part the official
        code stores when it relabels an episode (its RL loop adds :meth:`exploration_bonus` per sampled
        batch)."""
        self._checked_config()
        z = self.standardize(raw)
        if self.progress is not None:
            z = z + self.config.progress_scale * self.progress(frames).to(z.device).float()
        if self.config.clip_min is not None:  # after the progress term: far-off frames cannot profit from it
            z = z.clamp_min(self.config.clip_min)
        if self.config.motion_scale > 0:
            # after the clip: the deficit is bounded (≤ λ / s_D), and a robot that stands still far from the
            # experts must still earn less than one that moves there (clipped alike, the two would tie)
            if change is None:
                raise ValueError("motion_scale > 0 needs the frames' expected and observed changes (change_windows)")
            deficit = self.motion_deficit(change[0].to(z.device), change[1].to(z.device))
            z = z - self.config.motion_scale * deficit.float()
        if self.config.goal_scale > 0:
            if goal_distance is None:
                raise ValueError("goal_scale > 0 needs the frames' goal distance (goal_distance)")
            std = self._fitted_std("goal", "fit_goal_statistics(expert_episodes, goals)")
            z = z - self.config.goal_scale * goal_distance.to(z.device).float() / std
        if self.config.displacement_scale > 0:
            if displacement is None:
                raise ValueError("displacement_scale > 0 needs the frames' displacement (displacement)")
            std = self._fitted_std("displacement", "fit_statistics or fit_displacement_statistics(expert_episodes)")
            moved = displacement.to(z.device).float() / std
            if self.config.displacement_cap is not None:
                moved = moved.clamp(max=self.config.displacement_cap)
            z = z + self.config.displacement_scale * moved
        if self.config.consistency_scale > 0:
            if consistency is None:
                raise ValueError("consistency_scale > 0 needs the episode's motion consistency (frame_consistency)")
            std = self._fitted_std("consistency", "fit_statistics or fit_consistency_statistics(expert_episodes)")
            z = z + self.config.consistency_scale * consistency.to(z.device).float() / std
        if self.rnd is not None:
            a = self.config.expl_scale
            r = (1 - a) * z
            if with_rnd:
                r = r + a * self.rnd(frames).to(z.device).float()
        else:
            r = z
        if success is not None and self.config.use_sparse:
            s = as_success(success, r.shape[0], "success")  # NaN / strings / wrong length: a named error
            r = r + self.config.success_scale * s.to(r.device)
        return r

    @torch.no_grad()
    def exploration_bonus(self, frames: torch.Tensor) -> torch.Tensor:
        """``α·r_RND`` of each frame (uint8 ``[B, H, W, 3]``) with the RND predictor as it is now: what
        the official Diffusion Reward loop adds to every sampled batch's reward, on the batch's next
        observations (zeros without an RND module)."""
        if self.rnd is None:
            return torch.zeros(len(frames), device=self.device)
        return self.config.expl_scale * self.rnd(frames).float()

    def update_rnd(self, frames: torch.Tensor) -> dict[str, float]:
        """One online RND predictor update on a batch of frames (no-op without an RND module)."""
        return self.rnd.update(frames) if self.rnd is not None else {}

    # -------------------------------------------------------------- persistence
    def parts(self) -> dict[str, Pretrained]:
        """The sub-models by subfolder name: ``codec``, ``video`` and, when present, ``rnd``, ``progress``."""
        found = {"codec": self.codec, "video": self.video, "rnd": self.rnd, "progress": self.progress}
        return {name: part for name, part in found.items() if part is not None}

    def _save(self, folder: str, state_dict: Optional[dict[str, torch.Tensor]] = None) -> dict:
        if state_dict is not None:
            raise TypeError("DiffusionReward saves each sub-model's own weights: state_dict= is not supported")
        for name, part in self.parts().items():
            _write_part(part, os.path.join(folder, name))
        buffers = ("statistics",) + _OPTIONAL_STATISTICS
        save_weights(folder, {name: getattr(self, name).detach().cpu().clone() for name in buffers})
        mean, std, n = self.statistics.tolist()
        stats = {"mean": mean, "std": std, "frames": int(n)}
        for name in _OPTIONAL_STATISTICS:  # [std, frames] each, as motion_std / motion_frames, …
            term_std, term_n = getattr(self, name).tolist()
            term = name.removesuffix("_statistics")
            stats |= {f"{term}_std": term_std, f"{term}_frames": int(term_n)}
        if self.fitted_with is not None:
            stats["fitted_with"] = dict(self.fitted_with)
        if self.consistency_fitted_grid is not None:
            stats["consistency_grid"] = self.consistency_fitted_grid
        return {"has_rnd": self.rnd is not None, "has_progress": self.progress is not None, "statistics": stats}

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device) -> "DiffusionReward":
        weights = load_weights(folder, "cpu")
        stats = weights.get("statistics")
        if stats is None or tuple(stats.shape) != (3,):
            raise CheckpointError(f"{folder}/model.safetensors lacks the reward statistics (a 3-vector 'statistics')")
        for name in _OPTIONAL_STATISTICS:
            if name in weights and tuple(weights[name].shape) != (2,):
                raise CheckpointError(f"{folder}/model.safetensors: '{name}' must be a 2-vector, "
                                      f"got shape {list(weights[name].shape)}")
        config = config_from_dict(DiffusionRewardConfig, body.get("config", {}), MODEL_TYPE)
        try:
            config.validate()
        except ValueError as e:
            raise CheckpointError(f"{folder}/config.json: {e}") from None

        def part(name: str, kind: type) -> Any:  # float32, as every episode scorer loads (a bf16 save too)
            return kind.from_pretrained(os.path.join(folder, name), device, dtype=torch.float32)

        model = cls(part("codec", VQGAN), part("video", ConditionalVQDiffusion), config,
                    part("rnd", RND) if body.get("has_rnd") else None,
                    part("progress", ProgressModel) if body.get("has_progress") else None)
        model.statistics.copy_(stats.double())
        saved = body.get("statistics") if isinstance(body.get("statistics"), dict) else {}
        fitted_with = saved.get("fitted_with")
        if fitted_with is None:  # saved before mmreward recorded it (the shipped folders): fitted with their config
            model.fitted_with = _fitted_fields(config) if int(model.statistics[2]) > 0 else None
        else:
            if not (isinstance(fitted_with, dict) and set(fitted_with) <= set(FITTED_FIELDS)
                    and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in fitted_with.values())):
                raise CheckpointError(f"{folder}/config.json: statistics.fitted_with must map some of "
                                      f"{', '.join(FITTED_FIELDS)} to their values, got {fitted_with!r}")
            model.fitted_with = dict(fitted_with)
        for name in _OPTIONAL_STATISTICS:  # folders saved before these terms have none (not fitted)
            if name in weights:
                getattr(model, name).copy_(weights[name].double())
        grid = saved.get("consistency_grid", config.consistency_grid)  # unrecorded: fitted on the saved grid
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise CheckpointError(f"{folder}/config.json: statistics.consistency_grid must be an integer >= 1, "
                                  f"got {grid!r}")
        model.consistency_fitted_grid = grid if int(model.consistency_statistics[1]) > 0 else None
        for name in ("statistics",) + _OPTIONAL_STATISTICS:
            problem = _statistics_problem(getattr(model, name).tolist())
            if problem:  # a std of 0 / inf / < 0 would z-score every reward to inf / 0 / its negative, silently
                layout = "[mean, std, frames]" if name == "statistics" else "[std, frames]"
                raise CheckpointError(f"{folder}/model.safetensors: '{name}' {layout} {problem}: refit the "
                                      "statistics (fit_statistics / mmreward robotics fit-stats) and save again")
        return model


def _frame_batch(frames: Any, what: str = "goal frames") -> torch.Tensor:
    """uint8 frames as ``[N, H, W, 3]`` (one frame ``[H, W, 3]`` becomes a batch of one; a list of
    frames is stacked, and frames of different shapes are a named error)."""
    if isinstance(frames, (list, tuple)) and not frames:
        raise ValueError(f"{what} is empty (T = 0)")
    if isinstance(frames, (list, tuple)) and all(isinstance(f, (torch.Tensor, np.ndarray)) for f in frames):
        parts = [torch.as_tensor(f) for f in frames]
        shapes = sorted({tuple(f.shape) for f in parts})
        if len(shapes) > 1:
            raise ValueError(f"{what} have different shapes: {[list(x) for x in shapes]}")
        frames = torch.stack(parts)
    elif not isinstance(frames, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{what} must be uint8 frames [G, H, W, 3] (a tensor / array or a list of frames), "
                        f"got {type(frames).__name__}")
    frames = torch.as_tensor(frames)
    return frames[None] if frames.dim() == 3 else frames


def _fitted_fields(config: DiffusionRewardConfig) -> dict:
    """The :data:`FITTED_FIELDS` of ``config`` that shape its raw reward (no estimator in likelihood mode)."""
    out = {name: getattr(config, name) for name in FITTED_FIELDS}
    out["skip_step"] = int(out["skip_step"])
    if config.reward_type == "likelihood":
        del out["entropy_estimator"]
    return out


def _statistics_problem(stats: list) -> Optional[str]:
    """What is wrong with a loaded ``[mean, std, frames]`` / ``[std, frames]`` (None: usable; frames 0
    means not fitted, the other values then unused)."""
    *head, n = stats
    if not (math.isfinite(n) and n >= 0 and n == int(n)):
        return f"has frames = {n!r} (a frame count >= 0; 0: not fitted)"
    if n == 0:
        return None
    std = head[-1]
    if len(head) == 2 and not math.isfinite(head[0]):
        return f"has mean = {head[0]!r} (must be finite)"
    if not (math.isfinite(std) and std > 0):
        return f"has std = {std!r} (must be finite and > 0)"
    return None


def _check_spread(values: torch.Tensor, term: str) -> None:
    """Refuse to fit a std on fewer than 2 frames: one value has no spread, and storing 1 would read
    as a measured std."""
    if values.numel() < 2:
        raise ValueError(f"the expert {term} statistics need at least 2 frames in all, got {values.numel()}: "
                         "give longer or more expert episodes")


def _std(x: torch.Tensor) -> float:
    """Sample std, 1 where it is undefined or ~0 (a z-score then only shifts)."""
    std = float(x.std()) if x.numel() > 1 else 1.0
    return std if std > 1e-8 and math.isfinite(std) else 1.0


def _write_part(part: Pretrained, folder: str) -> None:
    """A sub-model's ``config.json`` + weights inside the parent's folder (the parent's save is the
    atomic unit and holds the one manifest)."""
    os.makedirs(folder)
    body = {"model_type": part.model_type, "format_version": FORMAT_VERSION, "config": part.config_dict()}
    body.update(part._save(folder) or {})
    write_config(folder, body)


__all__ = ["DiffusionReward", "DiffusionRewardConfig", "FITTED_FIELDS", "REWARD_TYPES"]

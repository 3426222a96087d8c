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
   (:meth:`DiffusionReward.fit_statistics`, saved with the model), and mixed:
   ``r = (1 − α)·z(r_ce) + α·r_RND + r_sparse`` with α = ``expl_scale`` (official 0.95), the RND
   novelty of frame i normalised by its running std, and ``r_sparse`` the success indicator the
   caller passes (``success=``). Without an RND module, ``r = z(r_ce) + r_sparse``.

   Optional (not in the paper): a :class:`~mmreward.robotics.reward.progress.ProgressModel`, a
   ranker of expert frame order, adds ``β·z(progress)`` to the learned term (β = ``progress_scale``):
   ``r = (1 − α)·(z(r_ce) + β·z(progress)) + α·r_RND + r_sparse``. The likelihood terms score
   plausibility, so holding still is paid like progress; the ranker pays for getting further.

For RL, pass the frames observed *after* each action (next observations), so reward i belongs to
transition i. The chains' Gumbel noise comes from a generator seeded with ``seed`` per call, so the
same frames always get the same rewards (``seed=None`` draws from the global RNG instead).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from mmreward.core.checkpoint import CheckpointError, load_model, save_model

from ..codec.vqgan import VQGAN
from ..training import check_frames_uint8, config_from_dict, config_to_dict, episodes_from
from ..video.vq_diffusion import ConditionalVQDiffusion, window_indices
from .progress import ProgressModel
from .rnd import RND

MODEL_TYPE = "diffusion_reward"
REWARD_TYPES = ("entropy", "likelihood", "relative_likelihood")


@dataclass
class DiffusionRewardConfig:
    """How rewards are computed from the codec + video model (official values as defaults)."""

    reward_type: str = "entropy"  # 'entropy' (−H of next frame), 'likelihood' (log p bound), 'relative_likelihood' (+H)
    entropy_estimator: str = "vlb"  # 'vlb' (official one-sample bound of a model sample) or 'x0_entropy'
    skip_step: int = 9  # fast chain stride: T=100, skip 9 → 11 denoising calls
    num_samples: int = 1  # chains averaged per window
    noise: bool = True  # Gumbel noise when sampling the chain (False: argmax)
    noise_scale: float = 1.0  # scale of the Gumbel noise
    use_std: bool = True  # z-score the raw reward with the expert statistics
    clip_min: Optional[float] = None  # lower bound on the learned term z(raw) [+ β·z(progress)] (None: unbounded)
    expl_scale: float = 0.95  # α: weight of the RND bonus, (1 − α) for the diffusion reward
    progress_scale: float = 1.0  # β: weight of the progress ranker's z-score (only with a progress model)
    use_sparse: bool = True  # add the success reward passed as `success=`
    success_scale: float = 1.0  # weight of that success reward (official 1)
    batch_size: int = 64  # windows per video-model batch
    seed: Optional[int] = 0  # seed of the chain noise per call (None: global RNG)

    def validate(self) -> None:
        if self.reward_type not in REWARD_TYPES:
            raise ValueError(f"reward_type must be one of {', '.join(REWARD_TYPES)}, got {self.reward_type!r}")
        if self.entropy_estimator not in ("vlb", "x0_entropy"):
            raise ValueError(f"entropy_estimator must be 'vlb' or 'x0_entropy', got {self.entropy_estimator!r}")
        if not 0.0 <= self.expl_scale <= 1.0:
            raise ValueError(f"expl_scale must be in [0, 1], got {self.expl_scale}")
        if not math.isfinite(self.progress_scale):
            raise ValueError(f"progress_scale must be a finite number, got {self.progress_scale}")
        if not (math.isfinite(self.success_scale) and self.success_scale >= 0):
            raise ValueError(f"success_scale must be a finite number >= 0, got {self.success_scale}")
        if self.clip_min is not None and not math.isfinite(self.clip_min):
            raise ValueError(f"clip_min must be a finite number or None, got {self.clip_min}")
        if self.batch_size < 1 or self.skip_step < 0 or self.num_samples < 1:
            raise ValueError("batch_size >= 1, skip_step >= 0 and num_samples >= 1 are required")


class DiffusionReward(nn.Module):
    """VQGAN + conditional VQ-Diffusion (+ optional RND) → per-frame rewards. The codec and video
    model are put in eval mode and frozen (``requires_grad=False``); the RND predictor stays trainable.
    ``progress`` (optional) is a trained :class:`ProgressModel` with fitted statistics, frozen too."""

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

    @property
    def device(self) -> torch.device:
        return self.video.device

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
    def _generator(self) -> Optional[torch.Generator]:
        if self.config.seed is None:
            return None
        return torch.Generator(self.device).manual_seed(int(self.config.seed))

    def tokenize(self, frames: torch.Tensor) -> torch.Tensor:
        """Tokens ``[T, L]`` of uint8 frames ``[T, H, W, 3]`` (each frame encoded once)."""
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a uint8 torch.Tensor [T, H, W, 3], got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8 [T, H, W, 3] (0..255), got {frames.dtype}")
        check_frames_uint8(frames, "frames", self.codec.config.image_size)
        return self.codec.encode(frames).flatten(1)

    @torch.no_grad()
    def raw_reward(self, frames: torch.Tensor) -> torch.Tensor:
        """Un-normalised reward ``[T]`` (nats per frame): −conditional entropy of the next frame
        (``"entropy"``), the bound on the frame's log-likelihood (``"likelihood"``), or that bound
        plus the entropy of the same prediction (``"relative_likelihood"``)."""
        return self.raw_reward_tokens(self.tokenize(frames))

    @torch.no_grad()
    def raw_reward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`raw_reward` of an already tokenised episode ``[T, L]`` or ``[T, h, w]``."""
        return self.raw_reward_windows(tokens)

    @torch.no_grad()
    def raw_reward_windows(self, tokens: torch.Tensor, frame_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Raw rewards of the frames ``frame_ids`` (default: all) of a tokenised episode ``[T, L]``.
        Reward i only looks at frames <= i in ``"likelihood"`` mode and at frames <= i in
        ``"entropy"`` mode too (history i−1, i), so an online caller can score the newest frame
        from the frames seen so far (:class:`~mmreward.robotics.wrappers.DiffusionRewardWrapper`)."""
        cfg, vcfg = self.config, self.video.config
        tok = self.video.flatten_tokens(tokens, "tokens", 1)
        self.video.check_token_range(tok, "tokens")
        if tok.shape[0] == 0:
            raise ValueError("tokens is empty (T = 0)")
        T = tok.shape[0]
        frame_ids = (torch.arange(T, device=tok.device) if frame_ids is None
                     else torch.as_tensor(frame_ids, device=tok.device).long().flatten())
        if frame_ids.numel() and (int(frame_ids.min()) < 0 or int(frame_ids.max()) >= T):
            raise ValueError(f"frame_ids must be in [0, {T})")
        ends = frame_ids if cfg.reward_type == "entropy" else frame_ids - vcfg.frame_skip
        hist = tok[window_indices(T, ends, vcfg.num_history, vcfg.frame_skip)]  # [N, H, L]
        target = tok[frame_ids]
        gen = self._generator()
        out = []
        for i in range(0, frame_ids.numel(), cfg.batch_size):
            ctx = self.video.encode_context(hist[i:i + cfg.batch_size])
            if cfg.reward_type == "entropy":
                r = self.video.entropy_reward(ctx, cfg.skip_step, cfg.entropy_estimator, cfg.num_samples,
                                              cfg.noise, cfg.noise_scale, gen)
            else:
                r = self.video.elbo(target[i:i + cfg.batch_size], ctx, cfg.skip_step, cfg.num_samples, gen)
                if cfg.reward_type == "relative_likelihood":  # log p(x) − E_p[log p] = log p(x) + H
                    r = r - self.video.entropy_reward(ctx, cfg.skip_step, cfg.entropy_estimator, cfg.num_samples,
                                                      cfg.noise, cfg.noise_scale, gen)
            out.append(r)
        if not out:
            return torch.zeros(0, device=tok.device)
        return torch.cat(out).float()

    def standardize(self, raw: torch.Tensor) -> torch.Tensor:
        if not self.config.use_std:
            return raw
        mean, std, n = self.statistics.tolist()
        if n == 0:
            raise RuntimeError("DiffusionReward has no expert statistics: call fit_statistics(expert_episodes) "
                               "or set use_std=False")
        return (raw - mean) / std

    @torch.no_grad()
    def fit_statistics(self, episodes: Any) -> dict[str, float]:
        """Mean / std of the raw reward over expert episodes (any input
        :func:`~mmreward.robotics.training.episodes_from` takes); stored (and saved) with the model."""
        raws = torch.cat([self.raw_reward(ep) for ep in episodes_from(episodes)]).double()
        mean = float(raws.mean())
        std = float(raws.std()) if raws.numel() > 1 else 1.0
        std = std if std > 1e-8 and math.isfinite(std) else 1.0
        self.statistics.copy_(torch.tensor([mean, std, float(raws.numel())], dtype=torch.float64))
        return {"mean": mean, "std": std, "frames": raws.numel()}

    # -------------------------------------------------------------- mixed reward
    @torch.no_grad()
    def forward(self, frames: torch.Tensor, success: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rewards ``[T]``: ``(1 − α)·z(r_ce) + α·r_RND + r_sparse`` (see the module docstring)."""
        return self.combine(self.raw_reward(frames), frames, success)

    @torch.no_grad()
    def combine(self, raw: torch.Tensor, frames: torch.Tensor, success: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The mixing rule on raw rewards ``[N]`` of the frames ``frames`` (uint8 ``[N, H, W, 3]``,
        used by RND and the progress ranker): ``(1 − α)·z(raw) + α·r_RND + r_sparse`` (``z(raw) +
        r_sparse`` without RND), with ``β·z(progress)`` added to z(raw) when a progress model is
        attached, and that learned term bounded below by ``clip_min`` when set."""
        z = self.standardize(raw)
        if self.progress is not None:
            z = z + self.config.progress_scale * self.progress(frames).to(z.device).float()
        if self.config.clip_min is not None:  # after the progress term: far-off frames cannot profit from it
            z = z.clamp_min(self.config.clip_min)
        if self.rnd is not None:
            a = self.config.expl_scale
            r = (1 - a) * z + a * self.rnd(frames).to(z.device).float()
        else:
            r = z
        if success is not None and self.config.use_sparse:
            s = torch.as_tensor(success, device=r.device).float().flatten()
            if s.shape != r.shape:
                raise ValueError(f"success must have one value per frame ({r.shape[0]}), got {list(s.shape)}")
            r = r + self.config.success_scale * s
        return r

    score = forward

    def update_rnd(self, frames: torch.Tensor) -> dict[str, float]:
        """One online RND predictor update on a batch of frames (no-op without an RND module)."""
        return self.rnd.update(frames) if self.rnd is not None else {}

    # -------------------------------------------------------------- persistence
    def save_pretrained(self, folder: str) -> None:
        """``codec/``, ``video/``, ``rnd/`` (each ``config.json`` + ``model.safetensors``) and a
        top-level ``config.json`` + ``model.safetensors`` with the reward config and statistics."""
        self.codec.save_pretrained(os.path.join(folder, "codec"))
        self.video.save_pretrained(os.path.join(folder, "video"))
        if self.rnd is not None:
            self.rnd.save_pretrained(os.path.join(folder, "rnd"))
        if self.progress is not None:
            self.progress.save_pretrained(os.path.join(folder, "progress"))
        mean, std, n = self.statistics.tolist()
        save_model(folder, {"statistics": self.statistics.clone()},
                   {"model_type": MODEL_TYPE, "config": config_to_dict(self.config), "has_rnd": self.rnd is not None,
                    "has_progress": self.progress is not None,
                    "statistics": {"mean": mean, "std": std, "frames": int(n)}})

    @classmethod
    def from_pretrained(cls, folder: str, device: str = "cpu") -> "DiffusionReward":
        sd, cfg = load_model(folder, device)
        if cfg.get("model_type") != MODEL_TYPE:
            raise CheckpointError(f"{folder} holds a {cfg.get('model_type')!r} model, not {MODEL_TYPE!r}")
        if "statistics" not in sd or sd["statistics"].shape != (3,):
            raise CheckpointError(f"{folder}/model.safetensors lacks the reward statistics")
        codec = VQGAN.from_pretrained(os.path.join(folder, "codec"), device)
        video = ConditionalVQDiffusion.from_pretrained(os.path.join(folder, "video"), device)
        rnd = RND.from_pretrained(os.path.join(folder, "rnd"), device) if cfg.get("has_rnd") else None
        prog = ProgressModel.from_pretrained(os.path.join(folder, "progress"), device) if cfg.get("has_progress") else None
        model = cls(codec, video, config_from_dict(DiffusionRewardConfig, cfg["config"], MODEL_TYPE), rnd, prog)
        model.statistics.copy_(sd["statistics"].double())
        return model.to(device)


__all__ = ["DiffusionReward", "DiffusionRewardConfig", "REWARD_TYPES"]

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

import math
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from mmreward.core.folders import CheckpointError
from mmreward.core.model import FORMAT_VERSION, Pretrained, config_from_dict, load_weights, save_weights, write_config

from ..codec.vqgan import VQGAN
from ..training import check_frames_uint8, episodes_from
from ..video.vq_diffusion import ConditionalVQDiffusion, window_indices
from .base import EpisodeScorer, help_field
from .progress import ProgressModel
from .rnd import RND

MODEL_TYPE = "diffusion_reward"
REWARD_TYPES = ("entropy", "likelihood", "relative_likelihood")


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
    use_sparse: bool = help_field("add the per-frame success reward given with the frames", default=True)
    success_scale: float = help_field("weight of that success reward (official 1)", default=1.0)
    batch_size: int = help_field("windows per video-model batch (the chain noise is drawn per batch)", default=64)
    seed: Optional[int] = help_field("seed of the chain noise per call (none: the global RNG)", default=0)

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
    def raw_reward(self, frames: torch.Tensor, batch_size: Optional[int] = None) -> torch.Tensor:
        """Un-normalised reward ``[T]`` (nats per frame): −conditional entropy of the next frame
        (``"entropy"``), the bound on the frame's log-likelihood (``"likelihood"``), or that bound
        plus the entropy of the same prediction (``"relative_likelihood"``)."""
        return self.raw_reward_windows(self.tokenize(frames), batch_size=batch_size)

    @torch.no_grad()
    def raw_reward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`raw_reward` of an already tokenised episode ``[T, L]`` or ``[T, h, w]``."""
        return self.raw_reward_windows(tokens)

    @torch.no_grad()
    def raw_reward_windows(self, tokens: torch.Tensor, frame_ids: Optional[torch.Tensor] = None, *,
                           batch_size: Optional[int] = None) -> torch.Tensor:
        """Raw rewards of the frames ``frame_ids`` (default: all) of a tokenised episode ``[T, L]``.
        Reward i only looks at frames <= i in ``"likelihood"`` mode and at frames <= i in
        ``"entropy"`` mode too (history i−1, i), so an online caller can score the newest frame
        from the frames seen so far (:class:`~mmreward.robotics.wrappers.DiffusionRewardWrapper`).
        ``batch_size``: windows per video-model batch (default ``config.batch_size``)."""
        cfg, vcfg = self.config, self.video.config
        step = batch_size or cfg.batch_size
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
    def forward(self, frames: torch.Tensor, success: Optional[torch.Tensor] = None, *,
                batch_size: Optional[int] = None) -> torch.Tensor:
        """Rewards ``[T]``: ``(1 − α)·z(r_ce) + α·r_RND + r_sparse`` (see the module docstring)."""
        return self.combine(self.raw_reward(frames, batch_size), frames, success)

    def frame_rewards(self, frames: torch.Tensor, success: Optional[torch.Tensor], batch_size: int) -> torch.Tensor:
        return self(frames.to(self.device), success, batch_size=batch_size)

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
        save_weights(folder, {"statistics": self.statistics.detach().cpu().clone()})
        mean, std, n = self.statistics.tolist()
        return {"has_rnd": self.rnd is not None, "has_progress": self.progress is not None,
                "statistics": {"mean": mean, "std": std, "frames": int(n)}}

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device) -> "DiffusionReward":
        stats = load_weights(folder, "cpu").get("statistics")
        if stats is None or tuple(stats.shape) != (3,):
            raise CheckpointError(f"{folder}/model.safetensors lacks the reward statistics (a 3-vector 'statistics')")
        config = config_from_dict(DiffusionRewardConfig, body.get("config", {}), MODEL_TYPE)
        try:
            config.validate()
        except ValueError as e:
            raise CheckpointError(f"{folder}/config.json: {e}") from None

        def part(name: str, kind: type) -> Any:
            return kind.from_pretrained(os.path.join(folder, name), device)

        model = cls(part("codec", VQGAN), part("video", ConditionalVQDiffusion), config,
                    part("rnd", RND) if body.get("has_rnd") else None,
                    part("progress", ProgressModel) if body.get("has_progress") else None)
        model.statistics.copy_(stats.double())
        return model


def _write_part(part: Pretrained, folder: str) -> None:
    """A sub-model's ``config.json`` + weights inside the parent's folder (the parent's save is the
    atomic unit and holds the one manifest)."""
    os.makedirs(folder)
    body = {"model_type": part.model_type, "format_version": FORMAT_VERSION, "config": part.config_dict()}
    body.update(part._save(folder) or {})
    write_config(folder, body)


__all__ = ["DiffusionReward", "DiffusionRewardConfig", "REWARD_TYPES"]

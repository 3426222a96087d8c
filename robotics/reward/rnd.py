"""Random Network Distillation (Burda et al., 2019) novelty bonus on frames, as Diffusion Reward
mixes it in: a frozen random conv net (target) and a trained one (predictor); the novelty of a frame
is ``½‖target(x) − predictor(x)‖²`` (the official reward), divided by a running standard deviation
of the novelties seen by :meth:`RND.update` so its scale stays comparable to the z-scored
conditional-entropy reward.

Layout (official, for 64 or 84 px): conv 6×6/3 → conv 4×4/2 → conv 3×3/1 (LeakyReLU), then linear
layers (predictor: 3 with ReLU, target: 1); orthogonal init with gain √2; input ``x/255 − 0.5``.

As a reward model (:class:`~mmreward.robotics.reward.base.EpisodeScorer`), ``score_parts`` gives the
normalised novelty of every frame of an episode and ``score`` its sum; ``success`` flags play no part.
A loaded RND stays trainable (``update`` continues the online predictor training).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..training import as_frame_tensor, check_frames_uint8, frames_hint
from .base import EpisodeScorer, help_field

MODEL_TYPE = "rnd"


@dataclass
class RNDConfig:
    """Sizes of the RND nets. Defaults are small; :meth:`paper` gives the official widths."""

    image_size: int = help_field("frame height = width in pixels", default=64)
    channels: tuple = help_field("widths of the three conv layers", default=(16, 32, 32))
    feature_dim: int = help_field("output feature size of both nets", default=128)
    hidden_dim: int = help_field("hidden width of the predictor's MLP head", default=128)
    lr: float = help_field("Adam learning rate of the predictor", default=1e-4)
    normalize: bool = help_field("divide the novelty by its running std", default=True)

    def validate(self) -> None:
        """Field checks naming the field (lr -1 / NaN trained the predictor away from the target without a
        word, feature_dim 0 scored every frame 0, two channel widths failed in tuple unpacking)."""
        from mmreward.core.model import check_ranges

        check_ranges(self, counts=("image_size", "feature_dim", "hidden_dim"), weights=("lr",))
        if not self.lr > 0:
            raise ValueError(f"RNDConfig.lr must be a finite number > 0, got {self.lr!r}")
        c = self.channels
        if not (isinstance(c, (tuple, list)) and len(c) == 3
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in c)):
            raise ValueError(f"RNDConfig.channels must be three conv widths >= 1, got {c!r}")
        if not isinstance(self.normalize, bool):
            raise ValueError(f"RNDConfig.normalize must be true or false, got {self.normalize!r}")

    @classmethod
    def paper(cls, **overrides) -> "RNDConfig":
        base = dict(channels=(32, 64, 64), feature_dim=512, hidden_dim=512)
        base.update(overrides)
        return cls(**base)


def _trunk(cfg: RNDConfig) -> tuple[nn.Sequential, int]:
    c1, c2, c3 = cfg.channels
    net = nn.Sequential(nn.Conv2d(3, c1, 6, 3), nn.LeakyReLU(), nn.Conv2d(c1, c2, 4, 2), nn.LeakyReLU(),
                        nn.Conv2d(c2, c3, 3, 1), nn.LeakyReLU(), nn.Flatten())
    try:
        with torch.no_grad():
            n = net(torch.zeros(1, 3, cfg.image_size, cfg.image_size)).shape[1]
    except RuntimeError as e:
        raise ValueError(f"RND needs frames of at least 30x30 pixels, got image_size={cfg.image_size}") from e
    return net, n


class RND(EpisodeScorer, nn.Module):
    """``RND(frames) -> novelty [T]`` (normalised); :meth:`update` trains the predictor online."""

    model_type = MODEL_TYPE
    config_class = RNDConfig
    eval_after_load = False

    def __init__(self, config: Optional[RNDConfig] = None):
        super().__init__()
        cfg = config or RNDConfig()
        cfg.validate()
        self.config = cfg
        trunk, n = _trunk(cfg)
        self.predictor = nn.Sequential(trunk, nn.Linear(n, cfg.hidden_dim), nn.ReLU(),
                                       nn.Linear(cfg.hidden_dim, cfg.hidden_dim), nn.ReLU(),
                                       nn.Linear(cfg.hidden_dim, cfg.feature_dim))
        trunk_t, _ = _trunk(cfg)
        self.target = nn.Sequential(trunk_t, nn.Linear(n, cfg.feature_dim))
        for mod in self.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(mod.weight, math.sqrt(2))
                nn.init.zeros_(mod.bias)
        self.target.requires_grad_(False)
        # running statistics of the raw novelty (parallel Welford): count, mean, M2
        self.register_buffer("stat", torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64))
        self._opt: Optional[torch.optim.Optimizer] = None

    @property
    def device(self) -> torch.device:
        return self.predictor[-1].weight.device

    def _input(self, frames: torch.Tensor) -> torch.Tensor:
        frames = as_frame_tensor(frames)  # a tensor, a numpy array or a list of frames, as DiffusionReward takes
        if frames.dtype != torch.uint8:
            raise TypeError(f"RND takes uint8 frames [T, H, W, 3], got {frames.dtype}{frames_hint(frames)}")
        check_frames_uint8(frames, "frames", self.config.image_size)
        return frames.to(self.device).permute(0, 3, 1, 2).float() / 255.0 - 0.5

    def raw_novelty(self, frames: torch.Tensor) -> torch.Tensor:
        """``½‖target − predictor‖²`` per frame, ``[T]`` (differentiable w.r.t. the predictor)."""
        x = self._input(frames)
        with torch.no_grad():
            t = self.target(x)
        return 0.5 * (t - self.predictor(x)).pow(2).sum(1)

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device, **kwargs):
        model = super()._load(folder, body, device, **kwargs)
        n, mean, m2 = model.stat.tolist()
        if not (math.isfinite(n) and n >= 0 and n == int(n) and math.isfinite(mean) and math.isfinite(m2) and m2 >= 0):
            # a negative M2 failed in sqrt at the first reward ("math domain error"), inf scored every frame 0
            from mmreward.core.checkpoint import CheckpointError

            raise CheckpointError(f"{folder}/model.safetensors: the RND novelty statistics 'stat' [count, mean, M2] "
                                  f"must be a count >= 0, a finite mean and a finite M2 >= 0, got {[n, mean, m2]}")
        return model

    @property
    def running_std(self) -> float:
        n, _, m2 = self.stat.tolist()
        return math.sqrt(m2 / n) if n > 1 else 1.0

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Novelty per frame ``[T]``, divided by the running std when ``normalize``."""
        r = self.raw_novelty(frames)
        return r / (self.running_std + 1e-8) if self.config.normalize else r

    def frame_rewards(self, frames: torch.Tensor, success: Optional[torch.Tensor], batch_size: int) -> torch.Tensor:
        return torch.cat([self(frames[i:i + batch_size]) for i in range(0, frames.shape[0], batch_size)])

    def _update_stats(self, r: torch.Tensor) -> None:
        x = r.detach().double().cpu()
        n_b, mean_b = x.numel(), float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n, mean, m2 = self.stat.tolist()
        tot = n + n_b
        delta = mean_b - mean
        self.stat.copy_(torch.tensor([tot, mean + delta * n_b / tot, m2 + m2_b + delta ** 2 * n * n_b / tot],
                                     dtype=torch.float64))

    def update(self, frames: torch.Tensor) -> dict[str, float]:
        """One predictor step (MSE to the target features) on a batch of frames; updates the
        novelty statistics with the batch's pre-update novelties."""
        if self._opt is None:
            self._opt = torch.optim.Adam(self.predictor.parameters(), lr=self.config.lr)
        x = self._input(frames)
        with torch.no_grad():
            t = self.target(x)
        p = self.predictor(x)
        self._update_stats(0.5 * (t - p).detach().pow(2).sum(1))
        loss = F.mse_loss(p, t)
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        self._opt.step()
        return {"rnd_loss": float(loss.detach()), "rnd_std": self.running_std}


__all__ = ["RND", "RNDConfig"]

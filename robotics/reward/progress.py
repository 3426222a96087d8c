"""A progress reward learned from the *order* of expert frames (a Rank2Reward-style ranker).

Why: the Diffusion Reward term scores how plausible a frame is as the continuation of an expert
video, not how far the task has got. Holding still is plausible, so an RL agent that hovers near
the start pose is paid about as much as one that finishes (the "progress probe" of
``benchmarks/bench_diffusion_reward_quality.py`` measures this). Within an expert episode, later
frames are closer to the goal, so a frame scorer trained to rank the later of two frames of the same
expert video above the earlier one (a Bradley–Terry loss on score differences, through the fused
:func:`mmreward.ops.pairwise_loss`) pays for getting further. Only expert videos are needed, the same
data as the video model.

``ProgressModel(frames uint8 [T, H, W, 3]) -> [T]``: the raw score z-scored with its mean / std on
expert frames (:meth:`ProgressModel.fit_statistics`, saved with the model), so it mixes with the
z-scored Diffusion Reward term on the same scale (:class:`~mmreward.robotics.reward.DiffusionReward`
``progress_scale``). :meth:`ProgressModel.progress` maps the raw score to "fraction of an expert
episode": 0 at the mean score of expert first frames, 1 at the mean of their last frames.

A ranker only sees expert frames, so frames far from every expert state (arm out of view) get
arbitrary scores; Rank2Reward multiplies by an expert-vs-policy discriminator for that. Here the
Diffusion Reward term, which is low on such frames, plays that part.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from ..training import check_frames_uint8, config_to_dict, episodes_from
from .base import EpisodeScorer

MODEL_TYPE = "progress_ranker"


@dataclass
class ProgressConfig:
    """Sizes and training settings of the progress ranker (small: it trains in ~2 min on a CPU)."""

    image_size: int = 64  # frame height = width in pixels
    channels: tuple = (32, 64, 64, 128)  # widths of the stride-2 conv layers
    hidden_dim: int = 128  # width of the MLP head
    min_gap: int = 3  # training pairs are at least this many frames apart
    augment_pad: int = 4  # random-shift augmentation (pixels, DrQ-style); 0 disables it
    lr: float = 3e-4  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    batch_size: int = 64  # pairs per step

    def validate(self) -> None:
        if self.image_size < 16 or self.image_size % 2 ** len(self.channels):
            raise ValueError(f"image_size must be >= 16 and divisible by {2 ** len(self.channels)}, got {self.image_size}")
        if self.min_gap < 1 or self.batch_size < 1 or self.augment_pad < 0:
            raise ValueError("min_gap >= 1, batch_size >= 1 and augment_pad >= 0 are required")


class ProgressModel(EpisodeScorer, nn.Module):
    """Conv net: frame → scalar progress score (higher = later in an expert episode). As a reward
    model, ``score_parts`` gives the z-scored score of every frame and ``score`` their sum."""

    model_type = MODEL_TYPE
    config_class = ProgressConfig

    def __init__(self, config: Optional[ProgressConfig] = None):
        super().__init__()
        cfg = config or ProgressConfig()
        cfg.validate()
        self.config = cfg
        layers, c_in = [], 3
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.GroupNorm(1, c), nn.SiLU()]
            c_in = c
        side = cfg.image_size // 2 ** len(cfg.channels)
        self.trunk = nn.Sequential(*layers, nn.Flatten())  # (B, C·s·s): keeps where the arm is
        self.head = nn.Sequential(nn.Linear(c_in * side * side, cfg.hidden_dim), nn.SiLU(), nn.Linear(cfg.hidden_dim, 1))
        # raw-score statistics on expert frames: mean, std, frames (0 = not fitted), first-frame mean, last-frame mean
        self.register_buffer("statistics", torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64))

    @property
    def device(self) -> torch.device:
        return self.head[-1].weight.device

    def score_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores ``[B]`` of float frames ``[B, 3, H, W]`` in 0..1."""
        return self.head(self.trunk(x - 0.5)).squeeze(1)

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
            raise TypeError("ProgressModel takes uint8 frames [T, H, W, 3] (a torch.Tensor)")
        check_frames_uint8(frames, "frames", self.config.image_size)
        return frames.to(self.device).permute(0, 3, 1, 2).float() / 255.0

    @torch.no_grad()
    def raw_score(self, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Un-normalised scores ``[T]`` of uint8 frames ``[T, H, W, 3]``."""
        x = self._pixels(frames)
        return torch.cat([self.score_pixels(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]).float()

    def _fitted(self) -> list[float]:
        st = self.statistics.tolist()
        if st[2] == 0:
            raise RuntimeError("ProgressModel has no expert statistics: call fit_statistics(expert_episodes)")
        return st

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Scores ``[T]`` z-scored with the expert statistics (expert frames: mean 0, std 1)."""
        return self.frame_rewards(frames, None, self.default_batch_size)

    @torch.no_grad()
    def progress(self, frames: torch.Tensor) -> torch.Tensor:
        """Scores ``[T]`` on the expert-episode scale: 0 = a typical first frame, 1 = a typical last one."""
        first, last = self._fitted()[3:]
        return (self.raw_score(frames) - first) / (last - first)

    @torch.no_grad()
    def fit_statistics(self, episodes: Any) -> dict[str, float]:
        """Mean / std of the raw score over expert episodes, and the mean of their first and last
        frames' scores; stored (and saved) with the model."""
        scores = [self.raw_score(ep).double() for ep in episodes_from(episodes)]
        allr = torch.cat(scores)
        std = float(allr.std()) if allr.numel() > 1 else 1.0
        std = std if std > 1e-8 and math.isfinite(std) else 1.0
        first = float(torch.stack([s[0] for s in scores]).mean())
        last = float(torch.stack([s[-1] for s in scores]).mean())
        if last - first <= 1e-8:
            raise ValueError("expert last frames do not score above first frames: the ranker has not learned "
                             "(train longer, or check that the episodes are in time order)")
        self.statistics.copy_(torch.tensor([float(allr.mean()), std, float(allr.numel()), first, last],
                                           dtype=torch.float64))
        return {"mean": float(allr.mean()), "std": std, "frames": allr.numel(), "first": first, "last": last}

    def frame_rewards(self, frames: torch.Tensor, success: Optional[torch.Tensor], batch_size: int) -> torch.Tensor:
        mean, std = self._fitted()[:2]
        return (self.raw_score(frames, batch_size) - mean) / std

    def _save(self, folder: str, state_dict: Optional[dict[str, torch.Tensor]] = None) -> dict:
        super()._save(folder, state_dict)
        mean, std, n, first, last = self.statistics.tolist()
        return {"statistics": {"mean": mean, "std": std, "frames": int(n), "first": first, "last": last}}


# ----------------------------------------------------------------------------- training
def _sample_pairs(lengths: np.ndarray, n: int, min_gap: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` pairs ``(episode, earlier, later)`` with ``later − earlier >= min_gap`` ([n, 3] int64)."""
    ok = np.flatnonzero(lengths > min_gap)
    ep = ok[rng.integers(0, len(ok), n)]
    L = lengths[ep]
    gap = min_gap + (rng.random(n) * (L - min_gap)).astype(np.int64)  # min_gap .. L−1
    i = (rng.random(n) * (L - gap)).astype(np.int64)
    return np.stack([ep, i, i + gap], 1)


def pair_accuracy(model: ProgressModel, episodes: list[torch.Tensor], min_gap: int, n: int = 512,
                  seed: int = 1) -> float:
    """Fraction of random (earlier, later ≥ ``min_gap`` apart) frame pairs of ``episodes`` ranked right."""
    lengths = np.array([len(e) for e in episodes])
    if not (lengths > min_gap).any():
        raise ValueError(f"no episode is longer than min_gap={min_gap} frames: no pairs to rank")
    pairs = _sample_pairs(lengths, n, min_gap, np.random.default_rng(seed))
    scores = [model.raw_score(e) for e in episodes]
    early = torch.stack([scores[e][i] for e, i, _ in pairs])
    late = torch.stack([scores[e][j] for e, _, j in pairs])
    return float((late > early).float().mean())


def train_progress(episodes: Any, config: Optional[ProgressConfig] = None, out_dir: Optional[str] = None, *,
                   steps: int = 2000, seed: int = 0, val_fraction: float = 0.1, log_every: int = 100,
                   show_progress: bool = True, resume: bool = True, overwrite: bool = False,
                   stop_at: Optional[int] = None) -> tuple[ProgressModel, dict[str, float]]:
    """Trains a :class:`ProgressModel` on expert ``episodes`` (frames in time order) on the core
    training loop and fits its statistics. ``val_fraction`` of the episodes (at least 1 when there
    are 2+) are held out to report pair accuracy and the Spearman ρ of score vs time; the statistics
    use every episode. With ``out_dir``: ``metrics.csv`` (loss and pair accuracy of every step),
    TensorBoard events, snapshots (every 500 steps and at the end; a run continues exactly from its
    newest one, ``resume`` / ``overwrite`` as in :class:`~mmreward.core.trainer.Trainer`), and once
    training reaches ``steps`` the ranker in ``out_dir/model`` and ``metrics.json``. ``stop_at`` ends
    this call after that many total steps (statistics and metrics are then not computed yet)."""
    from mmreward.core.checkpoint import atomic_write_text
    from mmreward.core.train import seed_everything
    from mmreward.core.trainer import Trainer
    from mmreward.ops import pairwise_loss_and_accuracy

    from ..rl.drqv2 import random_shift
    from ..training import loop_config

    cfg = config or ProgressConfig()
    eps = episodes_from(episodes)
    for k, e in enumerate(eps):
        check_frames_uint8(e, f"episode {k}", cfg.image_size)
    lengths_all = np.array([len(e) for e in eps])
    if not (lengths_all > cfg.min_gap).any():
        raise ValueError(f"no episode is longer than min_gap={cfg.min_gap} frames: nothing to rank")
    rng = np.random.default_rng(seed)  # held-out split, then training pairs
    seed_everything(seed)  # before the model: its initial weights come from the seed
    n_val = int(round(val_fraction * len(eps))) if len(eps) > 1 else 0
    n_val = max(n_val, 1) if len(eps) > 1 and val_fraction > 0 else n_val
    order = rng.permutation(len(eps))
    val = [eps[k] for k in order[:n_val]]
    train = [eps[k] for k in order[n_val:]]
    lengths = np.array([len(e) for e in train])
    if not (lengths > cfg.min_gap).any():
        raise ValueError(f"no training episode is longer than min_gap={cfg.min_gap} frames")
    model = ProgressModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)  # random shifts
    stats: dict[str, float] = {}

    def sample_batch() -> torch.Tensor:  # (2B, H, W, 3): (earlier, later) frame pairs
        pairs = _sample_pairs(lengths, cfg.batch_size, cfg.min_gap, rng)
        return torch.stack([train[e][t] for e, i, j in pairs for t in (i, j)])

    def step_fn(trainer: Trainer, frames: torch.Tensor) -> dict[str, float]:
        x = random_shift(frames.permute(0, 3, 1, 2).float() / 255.0, cfg.augment_pad, gen)
        s = model.score_pixels(x).view(-1, 2)  # (B, 2)
        loss, acc = pairwise_loss_and_accuracy(s[:, 1], s[:, 0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach()), "pair_acc": float(acc)}

    def finish(folder: str) -> None:  # statistics first: the saved ranker needs them to score
        stats.update(model.fit_statistics(eps))
        if out_dir:
            model.save_pretrained(folder)

    t0 = time.perf_counter()
    with _run_folder(out_dir) as folder:
        loop = loop_config(folder, steps=steps, batch_size=cfg.batch_size, seed=seed, log_every=log_every,
                           save_every=500, resume=resume, overwrite=overwrite, progress_bar=show_progress,
                           quiet=True)
        trainer = Trainer(model, loop, step_fn=step_fn, sample_batch=sample_batch, reseed=False, save_model=finish,
                          settings={"progress": config_to_dict(cfg), "val_fraction": val_fraction})
        for name, obj in (("optimizer", opt), ("pair_rng", rng), ("shift_rng", gen)):
            trainer.register_state(name, obj)
        hist = trainer.fit(stop_at)
    model.eval()
    last = hist[-min(len(hist), 100):]
    metrics = {"steps": trainer.step, "train_loss": float(np.mean([r["loss"] for r in last])) if last else float("nan"),
               "train_pair_acc": float(np.mean([r["pair_acc"] for r in last])) if last else float("nan"),
               "seconds": time.perf_counter() - t0, "train_episodes": len(train), "val_episodes": len(val)}
    if not stats:  # stopped before the end
        return model, metrics
    if any(len(e) > cfg.min_gap for e in val):
        metrics["val_pair_acc"] = pair_accuracy(model, val, cfg.min_gap)
        metrics["val_time_spearman"] = float(np.mean([_spearman_time(model.raw_score(e)) for e in val]))
    metrics.update({f"stat_{k}": v for k, v in stats.items()})
    if out_dir:
        atomic_write_text(os.path.join(out_dir, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
    return model, metrics


@contextlib.contextmanager
def _run_folder(out_dir: Optional[str]) -> Iterator[str]:
    """``out_dir``, or a temporary folder for the run's logs and snapshots when there is none."""
    if out_dir:
        yield out_dir
        return
    with tempfile.TemporaryDirectory(prefix="progress-run-") as tmp:
        yield tmp


def _spearman_time(scores: torch.Tensor) -> float:
    """Spearman ρ between a score sequence and its time index (no ties among the times)."""
    s = scores.double().cpu().numpy()
    if len(s) < 2 or np.ptp(s) == 0:
        return float("nan")
    rs = np.argsort(np.argsort(s, kind="mergesort"), kind="mergesort").astype(np.float64)
    return float(np.corrcoef(rs, np.arange(len(s)))[0, 1])


__all__ = ["ProgressConfig", "ProgressModel", "train_progress", "pair_accuracy"]

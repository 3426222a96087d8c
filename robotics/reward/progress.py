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

**Goal-conditioned** (``ProgressConfig(goal_conditioned=True)``): the score also sees a goal frame
(6 input channels), and :meth:`ProgressModel.set_goal` names the goal at scoring time, e.g. the last
frames of one or a few demonstrations of a task no model was trained on. An unconditioned ranker
learns one direction per scene (on Meta-World ML10 it ranks drawer-*open* backwards after training on
drawer-close). Training plays a share (``reverse_prob``) of the expert videos backwards with their
first frame as the goal, so the same scene is seen with both goals and the score has to read the
goal frame. The goal frames of training pairs come from episodes of the same ``groups`` label (a task
name), so scene details of the goal differ from the scored episode as they do at test time.
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

from ..training import as_frame_tensor, check_frames_uint8, frames_hint, config_to_dict, episodes_from
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
    goal_conditioned: bool = False  # the score also sees a goal frame (set_goal): goals of unseen tasks from demos
    reverse_prob: float = 0.5  # goal-conditioned training: share of pairs played backwards, goal = first frame

    def validate(self) -> None:
        from mmreward.core.model import check_ranges

        # lr 0 / -1e-3 trained nothing or against the ranking, hidden_dim 0 failed deep in nn.Linear, 2.5 / "3"
        # failed in a comparison naming nothing: refused here, naming the field
        check_ranges(self, counts=("image_size", "hidden_dim", "min_gap", "batch_size"), naturals=("augment_pad",),
                     weights=("lr", "weight_decay"), fractions=("reverse_prob",))
        if not self.lr > 0:
            raise ValueError(f"ProgressConfig.lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.channels, (tuple, list)) and self.channels and all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in self.channels)):
            raise ValueError(f"ProgressConfig.channels must be a non-empty list of widths >= 1, got {self.channels!r}")
        if not isinstance(self.goal_conditioned, bool):
            raise ValueError(f"ProgressConfig.goal_conditioned must be true or false, got {self.goal_conditioned!r}")
        if self.image_size < 16 or self.image_size % 2 ** len(self.channels):
            raise ValueError(f"image_size must be >= 16 and divisible by {2 ** len(self.channels)}, got {self.image_size}")
        if self.min_gap < 1 or self.batch_size < 1 or self.augment_pad < 0:
            raise ValueError("min_gap >= 1, batch_size >= 1 and augment_pad >= 0 are required")
        if not 0.0 <= self.reverse_prob <= 1.0:
            raise ValueError(f"reverse_prob must be in [0, 1], got {self.reverse_prob}")


class ProgressModel(EpisodeScorer, nn.Module):
    """Conv net: frame (and, goal-conditioned, a goal frame) → scalar progress score (higher = later
    in an expert episode). As a reward model, ``score_parts`` gives the z-scored score of every frame
    and ``score`` their sum; a goal-conditioned model scores against the goal frames of
    :meth:`set_goal` (the mean over them)."""

    model_type = MODEL_TYPE
    config_class = ProgressConfig

    def __init__(self, config: Optional[ProgressConfig] = None):
        super().__init__()
        cfg = config or ProgressConfig()
        cfg.validate()
        self.config = cfg
        layers, c_in = [], 6 if cfg.goal_conditioned else 3  # goal-conditioned: frame and goal stacked
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.GroupNorm(1, c), nn.SiLU()]
            c_in = c
        side = cfg.image_size // 2 ** len(cfg.channels)
        self.trunk = nn.Sequential(*layers, nn.Flatten())  # (B, C·s·s): keeps where the arm is
        self.head = nn.Sequential(nn.Linear(c_in * side * side, cfg.hidden_dim), nn.SiLU(), nn.Linear(cfg.hidden_dim, 1))
        # raw-score statistics on expert frames: mean, std, frames (0 = not fitted), first-frame mean, last-frame mean
        self.register_buffer("statistics", torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64))
        # goal frames (G, 3, H, W) in 0..1 of a goal-conditioned model: a run-time input, not saved
        self.register_buffer("goal", torch.zeros(0, 3, cfg.image_size, cfg.image_size), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.head[-1].weight.device

    def score_pixels(self, x: torch.Tensor, goal: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Raw scores ``[B]`` of float frames ``[B, 3, H, W]`` in 0..1 (goal-conditioned: against the
        goal frames ``goal [B, 3, H, W]``, one per frame)."""
        if self.config.goal_conditioned:
            if goal is None or goal.shape != x.shape:
                raise ValueError(f"a goal-conditioned ranker needs one goal frame per frame ({tuple(x.shape)}), "
                                 f"got {None if goal is None else tuple(goal.shape)}")
            x = torch.cat([x, goal], 1)  # (B, 6, H, W)
        elif goal is not None:
            raise ValueError("this ranker is not goal-conditioned (ProgressConfig.goal_conditioned): pass no goal")
        return self.head(self.trunk(x - 0.5)).squeeze(1)

    def set_goal(self, frames: Optional[torch.Tensor], what: str = "goal frames") -> None:
        """Goal frames uint8 ``[G, H, W, 3]`` (e.g. the last frames of demonstrations of the task) the
        score of a goal-conditioned ranker is computed against (the mean over the G goals); ``None``
        clears them."""
        if not self.config.goal_conditioned:
            raise ValueError("set_goal needs a goal-conditioned ranker (ProgressConfig(goal_conditioned=True))")
        if frames is None:
            self.goal = self.goal[:0]
            return
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(frames)
        if isinstance(frames, torch.Tensor) and frames.dim() == 3:
            frames = frames[None]
        x = self._pixels(frames, what)  # "frames must be 64x64 pixels" did not say the goal frames were meant
        if x.shape[0] == 0:
            raise ValueError("set_goal needs at least one goal frame")
        self.goal = x

    def _pixels(self, frames: torch.Tensor, what: str = "frames") -> torch.Tensor:
        frames = as_frame_tensor(frames, what)  # a tensor, a numpy array or a list of frames, as DiffusionReward takes
        if frames.dtype != torch.uint8:
            raise TypeError(f"ProgressModel takes uint8 {what} [T, H, W, 3], got {frames.dtype}{frames_hint(frames)}")
        check_frames_uint8(frames, what, self.config.image_size)
        return frames.to(self.device).permute(0, 3, 1, 2).float() / 255.0

    @torch.no_grad()
    def raw_score(self, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Un-normalised scores ``[T]`` of uint8 frames ``[T, H, W, 3]`` (goal-conditioned: the mean
        over the goal frames of :meth:`set_goal`)."""
        x = self._pixels(frames)
        if not self.config.goal_conditioned:
            return torch.cat([self.score_pixels(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]).float()
        g = self.goal
        if g.shape[0] == 0:
            raise RuntimeError("this ranker is goal-conditioned: call set_goal(goal_frames) first (e.g. the last "
                               "frames of demonstrations of the task)")
        G, step, out = g.shape[0], max(1, batch_size // g.shape[0]), []
        for i in range(0, x.shape[0], step):
            xb = x[i:i + step]  # (b, 3, H, W) against every goal: (b·G, 3, H, W)
            b = xb.shape[0]
            s = self.score_pixels(xb[:, None].expand(b, G, *xb.shape[1:]).reshape(b * G, *xb.shape[1:]),
                                  g[None].expand(b, *g.shape).reshape(b * G, *g.shape[1:]))
            out.append(s.view(b, G).mean(1))
        return torch.cat(out).float()

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
    def fit_statistics(self, episodes: Any, goals: Optional[list] = None) -> dict[str, float]:
        """Mean / std of the raw score over expert episodes, and the mean of their first and last
        frames' scores; stored (and saved) with the model. A goal-conditioned ranker scores each
        episode against its own ``goals[k]`` (uint8 ``[G, H, W, 3]``), or all against the goal set now."""
        eps = episodes_from(episodes)
        short = [k for k, ep in enumerate(eps) if ep.shape[0] < 2]
        if short:  # its first frame is its last: no progress to measure, and a std of one frame is not one
            raise ValueError(f"episode {short[0]} has {eps[short[0]].shape[0]} frame: the progress statistics need "
                             "expert episodes of at least 2 frames (a first and a last)")
        scores = self._scores_with_goals(eps, goals)
        allr = torch.cat(scores)
        std = float(allr.std()) if allr.numel() > 1 else 1.0
        std = std if std > 1e-8 and math.isfinite(std) else 1.0
        first = float(torch.stack([s[0] for s in scores]).mean())
        last = float(torch.stack([s[-1] for s in scores]).mean())
        # float32 convolutions may score identical frames differently in the last bits (their place in
        # the batch): a margin below that noise is no margin
        if last - first <= 1e-6 * max(1.0, float(allr.abs().max())):
            raise ValueError("expert last frames do not score above first frames: the ranker has not learned "
                             "(train longer, or check that the episodes are in time order)")
        self.statistics.copy_(torch.tensor([float(allr.mean()), std, float(allr.numel()), first, last],
                                           dtype=torch.float64))
        return {"mean": float(allr.mean()), "std": std, "frames": allr.numel(), "first": first, "last": last}

    def _scores_with_goals(self, episodes: list, goals: Optional[list]) -> list[torch.Tensor]:
        """Raw scores of each episode (float64), against ``goals[k]`` for episode k when given."""
        if goals is None:
            return [self.raw_score(ep).double() for ep in episodes]
        if len(goals) != len(episodes):
            raise ValueError(f"{len(goals)} goals for {len(episodes)} episodes: give one goal set per episode")
        kept = self.goal
        try:
            out = []
            for k, (ep, g) in enumerate(zip(episodes, goals)):
                self.set_goal(g, f"goals[{k}]")
                out.append(self.raw_score(ep).double())
            return out
        finally:
            self.goal = kept

    def frame_rewards(self, frames: torch.Tensor, success: Optional[torch.Tensor], batch_size: int) -> torch.Tensor:
        mean, std = self._fitted()[:2]
        return (self.raw_score(frames, batch_size) - mean) / std

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device, **kwargs: Any) -> "ProgressModel":
        model = super()._load(folder, body, device, **kwargs)
        problem = statistics_problem(model.statistics.tolist())
        if problem:  # a std of 0 / inf, a negative frame count or first = last would score inf / 0 / -inf silently
            from mmreward.core.checkpoint import CheckpointError

            raise CheckpointError(f"{os.path.join(folder, 'model.safetensors')}: the ranker's 'statistics' "
                                  f"[mean, std, frames, first, last] {problem}: refit them "
                                  "(ProgressModel.fit_statistics) and save again")
        return model

    def _save(self, folder: str, state_dict: Optional[dict[str, torch.Tensor]] = None) -> dict:
        super()._save(folder, state_dict)
        mean, std, n, first, last = self.statistics.tolist()
        return {"statistics": {"mean": mean, "std": std, "frames": int(n), "first": first, "last": last}}


def statistics_problem(stats: list) -> Optional[str]:
    """What is wrong with a ranker's ``[mean, std, frames, first, last]`` (None: usable). ``frames`` 0
    means not fitted, and the other values are then unused."""
    if len(stats) != 5:
        return f"must hold 5 values, got {len(stats)}"
    mean, std, n, first, last = stats
    if not (math.isfinite(n) and n >= 0 and n == int(n)):
        return f"has frames = {n!r} (a frame count >= 0; 0: not fitted)"
    if n == 0:
        return None
    for name, v in (("mean", mean), ("std", std), ("first", first), ("last", last)):
        if not math.isfinite(v):
            return f"has {name} = {v!r} (must be finite)"
    if std <= 0:
        return f"has std = {std!r} (must be > 0)"
    if last <= first:
        return f"has last = {last!r} <= first = {first!r} (expert last frames must score above first frames)"
    return None


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
                  seed: int = 1, goals: Optional[list] = None) -> float:
    """Fraction of random (earlier, later ≥ ``min_gap`` apart) frame pairs of ``episodes`` ranked right
    (a goal-conditioned ranker: against ``goals[k]`` for episode k, or the goal set now)."""
    lengths = np.array([len(e) for e in episodes])
    if not (lengths > min_gap).any():
        raise ValueError(f"no episode is longer than min_gap={min_gap} frames: no pairs to rank")
    pairs = _sample_pairs(lengths, n, min_gap, np.random.default_rng(seed))
    scores = model._scores_with_goals(episodes, goals)
    early = torch.stack([scores[e][i] for e, i, _ in pairs])
    late = torch.stack([scores[e][j] for e, _, j in pairs])
    return float((late > early).float().mean())


def group_goals(episodes: list, groups: list, k: int, limit: int = 5) -> torch.Tensor:
    """Goal frames for episode ``k``: the last frames of up to ``limit`` other episodes of its group,
    in order (its own when it is alone), uint8 ``[G, H, W, 3]``."""
    same = [i for i in range(len(episodes)) if groups[i] == groups[k] and i != k][:limit] or [k]
    return torch.stack([torch.as_tensor(episodes[i][-1]) for i in same])


def train_progress(episodes: Any, config: Optional[ProgressConfig] = None, out_dir: Optional[str] = None, *,
                   steps: int = 2000, seed: int = 0, val_fraction: float = 0.1, log_every: int = 100,
                   show_progress: bool = True, resume: bool = True, overwrite: bool = False,
                   stop_at: Optional[int] = None, groups: Optional[list] = None,
                   save_every: int = 500) -> tuple[ProgressModel, dict[str, float]]:
    """Trains a :class:`ProgressModel` on expert ``episodes`` (frames in time order) on the core
    training loop and fits its statistics. ``val_fraction`` of the episodes (at least 1 when there
    are 2+) are held out to report pair accuracy and the Spearman ρ of score vs time; the statistics
    use every episode. A goal-conditioned ranker draws each pair's goal frame from an episode of the
    same ``groups`` label (one per episode, e.g. its task; default: every episode its own group):
    its last frame, or for the ``reverse_prob`` share of pairs played backwards its first frame; its
    statistics score each episode against the last frames of up to 5 others of its group, and
    ``val_reversed_pair_acc`` reports the backwards ranking against first frames. With ``out_dir``:
    ``metrics.csv`` (loss and pair accuracy of every step), TensorBoard events, snapshots (every
    ``save_every`` steps and at the end; 0: at the end only; a run continues exactly from its newest
    one, ``resume`` / ``overwrite`` as in :class:`~mmreward.core.trainer.Trainer`), and once
    training reaches ``steps`` the ranker in ``out_dir/model`` and ``metrics.json``. ``stop_at`` ends
    this call after that many total steps (statistics and metrics are then not computed yet)."""
    from mmreward.core.checkpoint import atomic_write_text
    from mmreward.core.train import seed_everything
    from mmreward.core.trainer import Trainer
    from mmreward.ops import pairwise_loss_and_accuracy

    from ..rl.drqv2 import random_shift
    from ..training import loop_config, resume_settings

    cfg = config or ProgressConfig()
    for name, value, least in (("steps", steps, 1), ("seed", seed, 0), ("log_every", log_every, 0),
                               ("save_every", save_every, 0)):
        # seed -1 failed in numpy ("expected non-negative integer"), naming no argument
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"train_progress: {name} must be an integer >= {least}, got {value!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        # a negative share held out len + round(share·len) episodes (order[:-k]); 1 or more left none to train on
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    eps = episodes_from(episodes)
    for k, e in enumerate(eps):
        check_frames_uint8(e, f"episode {k}", cfg.image_size)
    short = [k for k, e in enumerate(eps) if e.shape[0] < 2]
    if short:  # the statistics fitted after training refuse them: say so before the training, not after it
        raise ValueError(f"episode {short[0]} has 1 frame ({len(short)} such episode{'s' if len(short) > 1 else ''}): "
                         "the progress ranker needs expert episodes of at least 2 frames (a first and a last); "
                         "leave the 1-frame ones out")
    lengths_all = np.array([len(e) for e in eps])
    if not (lengths_all > cfg.min_gap).any():
        raise ValueError(f"no episode is longer than min_gap={cfg.min_gap} frames: nothing to rank")
    groups = list(range(len(eps))) if groups is None else list(groups)
    if len(groups) != len(eps):
        raise ValueError(f"groups has {len(groups)} labels for {len(eps)} episodes: give one per episode")
    rng = np.random.default_rng(seed)  # held-out split, then training pairs
    seed_everything(seed)  # before the model: its initial weights come from the seed
    n_val = int(round(val_fraction * len(eps))) if len(eps) > 1 else 0
    n_val = max(n_val, 1) if len(eps) > 1 and val_fraction > 0 else n_val
    order = rng.permutation(len(eps))
    val = [eps[k] for k in order[:n_val]]
    train = [eps[k] for k in order[n_val:]]
    val_groups, train_groups = [groups[k] for k in order[:n_val]], [groups[k] for k in order[n_val:]]
    members: dict = {}  # training episodes of each group: where pair goals come from
    for k, gname in enumerate(train_groups):
        members.setdefault(gname, []).append(k)
    lengths = np.array([len(e) for e in train])
    if not (lengths > cfg.min_gap).any():
        raise ValueError(f"no training episode is longer than min_gap={cfg.min_gap} frames")
    model = ProgressModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)  # random shifts
    stats: dict[str, float] = {}

    def sample_batch() -> torch.Tensor:  # (2B, H, W, 3): (earlier, later) pairs; goal-conditioned (3B, ...)
        pairs = _sample_pairs(lengths, cfg.batch_size, cfg.min_gap, rng)
        if not cfg.goal_conditioned:
            return torch.stack([train[e][t] for e, i, j in pairs for t in (i, j)])
        backwards = rng.random(len(pairs)) < cfg.reverse_prob
        out = []  # (worse, better, goal) per pair
        for (e, i, j), back in zip(pairs, backwards):
            mates = members[train_groups[e]]
            src = train[mates[int(rng.integers(0, len(mates)))]]
            out += [train[e][j], train[e][i], src[0]] if back else [train[e][i], train[e][j], src[-1]]
        return torch.stack(out)

    def step_fn(trainer: Trainer, frames: torch.Tensor) -> dict[str, float]:
        x = random_shift(frames.permute(0, 3, 1, 2).float() / 255.0, cfg.augment_pad, gen)
        if cfg.goal_conditioned:
            x = x.view(-1, 3, *x.shape[1:])  # (B, worse / better / goal, 3, H, W)
            s = model.score_pixels(x[:, :2].flatten(0, 1), x[:, 2:].expand_as(x[:, :2]).flatten(0, 1)).view(-1, 2)
        else:
            s = model.score_pixels(x).view(-1, 2)  # (B, 2)
        loss, acc = pairwise_loss_and_accuracy(s[:, 1], s[:, 0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach()), "pair_acc": float(acc)}

    def goals_of(episodes: list, labels: list) -> Optional[list]:
        if not cfg.goal_conditioned:
            return None
        return [group_goals(episodes, labels, k) for k in range(len(episodes))]

    def finish(folder: str) -> None:  # statistics first: the saved ranker needs them to score
        stats.update(model.fit_statistics(eps, goals_of(eps, groups)))
        if out_dir:
            model.save_pretrained(folder)

    t0 = time.perf_counter()
    with _run_folder(out_dir) as folder:
        loop = loop_config(folder, steps=steps, batch_size=cfg.batch_size, seed=seed, log_every=log_every,
                           save_every=int(save_every), resume=resume, overwrite=overwrite, progress_bar=show_progress,
                           quiet=True)
        trainer = Trainer(model, loop, step_fn=step_fn, sample_batch=sample_batch, reseed=False, save_model=finish,
                          settings={"progress": config_to_dict(cfg), "val_fraction": val_fraction},
                          resume_settings=resume_settings(None, cfg, eps, val_fraction=val_fraction,
                                                          groups=_groups_digest(groups)))
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
        # goals of a validation episode: other validation episodes of its group (itself when alone)
        val_goals = goals_of(val, val_groups)
        metrics["val_pair_acc"] = pair_accuracy(model, val, cfg.min_gap, goals=val_goals)
        metrics["val_time_spearman"] = float(np.mean([_spearman_time(s) for s in model._scores_with_goals(val, val_goals)]))
        if cfg.goal_conditioned:
            backwards = [e.flip(0) for e in val]
            metrics["val_reversed_pair_acc"] = pair_accuracy(model, backwards, cfg.min_gap,
                                                             goals=goals_of(backwards, val_groups))
    metrics.update({f"stat_{k}": v for k, v in stats.items()})
    if out_dir:
        atomic_write_text(os.path.join(out_dir, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
    return model, metrics


def _groups_digest(groups: list) -> str:
    """The episodes' group labels (which episodes share goal frames) as a short hash."""
    import hashlib

    return hashlib.sha256(repr([str(g) for g in groups]).encode()).hexdigest()[:16]


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


__all__ = ["ProgressConfig", "ProgressModel", "train_progress", "pair_accuracy", "group_goals"]

"""Episode replay buffer for pixel RL.

Each finished episode is stored once: its frames ``[T+1, H, W, 3]`` uint8 (the reset frame, then one
per step), actions ``[T, A]``, rewards ``[T]`` (relabelled by the reward source when the episode
ends, the paper's way), the environment's reward and success flags. Stacked observations are built
when a batch is sampled, so a frame stack of k does not store each frame k times. Episodes are
dropped oldest first when the buffer holds more than ``capacity`` transitions.

A sampled item is the DrQ-v2 n-step transition at step t: ``obs`` = frames t−k+1 … t stacked
(frames before the episode start repeat frame 0), ``action`` a_t, ``reward`` = Σ_{i<n} γ^i r_{t+i},
``discount`` = γ^n (Meta-World / Adroit episodes end by time limit only, so no terminal masking),
``next_obs`` = the stack ending at frame t+n. Only t ≤ T−n is sampled.

With ``store_dir`` set, each episode is also written once, when it is added, to
``store_dir/episode_<serial>.npz`` (the collected-episode format of ``mmreward.robotics.data``, plus
the training rewards). A snapshot then records only which serials are live, not the frames: at the
paper's 1M-transition buffer a snapshot that carried the buffer would rewrite ~12 GB each time.
Evicted episodes' files are deleted by :meth:`ReplayBuffer.prune_store`, which the workspace calls
only after the snapshots that no longer list them are safely on disk (the newest two are kept, so
the episodes of the older one stay until it goes).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from mmreward.core.checkpoint import CheckpointError


@dataclass
class EpisodeRecord:
    frames: np.ndarray  # (T+1, H, W, 3) uint8
    actions: np.ndarray  # (T, A) float32
    rewards: np.ndarray  # (T,) float32, the training reward (relabelled)
    env_rewards: np.ndarray  # (T,) float32
    success: np.ndarray  # (T,) bool

    def __len__(self) -> int:
        return len(self.actions)

    def validate(self) -> None:
        t = len(self.actions)
        f = self.frames
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] != t + 1:
            raise ValueError(f"episode frames must be uint8 [T+1, H, W, 3] with T={t}, got {f.dtype} {list(f.shape)}")
        for name in ("rewards", "env_rewards", "success"):
            if getattr(self, name).shape != (t,):
                raise ValueError(f"episode {name} must have shape [{t}], got {list(getattr(self, name).shape)}")
        if not np.all(np.isfinite(self.rewards)):
            raise ValueError("episode rewards contain NaN / inf (check the reward source)")

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.frames, self.actions, self.rewards, self.env_rewards, self.success))


class ReplayBuffer:
    def __init__(self, capacity: int, *, frame_stack: int = 1, nstep: int = 3, discount: float = 0.99,
                 seed: int = 0, store_dir: Optional[str] = None):
        if capacity < 1 or frame_stack < 1 or nstep < 1 or not 0.0 <= discount <= 1.0:
            raise ValueError("capacity, frame_stack, nstep must be >= 1 and discount in [0, 1]")
        self.capacity, self.frame_stack, self.nstep, self.discount = int(capacity), int(frame_stack), int(nstep), discount
        self.episodes: list[EpisodeRecord] = []
        self.num_transitions = 0
        self.rng = np.random.default_rng(seed)
        self.store_dir = store_dir
        # episodes[i] has serial first_serial + i: serials grow by one per add and eviction drops the oldest
        self.first_serial = self.next_serial = 0

    def __len__(self) -> int:
        return self.num_transitions

    def add(self, episode: EpisodeRecord) -> None:
        episode.validate()
        # a reward source may hand back the env's own array (the dense reward does): keep each field
        # in its own memory, so snapshots (safetensors refuses shared tensors) and later edits stay separate
        if np.shares_memory(episode.rewards, episode.env_rewards):
            episode.rewards = episode.rewards.copy()
        if self.episodes and episode.frames.shape[1:] != self.episodes[0].frames.shape[1:]:
            raise ValueError(f"frame size {episode.frames.shape[1:]} differs from the buffer's "
                             f"{self.episodes[0].frames.shape[1:]}")
        if self.store_dir is not None:
            save_replay_episode(self.episode_path(self.next_serial), episode)
        self._append(episode)

    def _append(self, episode: EpisodeRecord) -> None:
        self.episodes.append(episode)
        self.next_serial += 1
        self.num_transitions += len(episode)
        while self.num_transitions > self.capacity and len(self.episodes) > 1:
            self.num_transitions -= len(self.episodes.pop(0))
            self.first_serial += 1

    def episode_path(self, serial: int) -> str:
        if self.store_dir is None:
            raise RuntimeError("this replay buffer has no store_dir")
        return os.path.join(self.store_dir, f"episode_{serial:07d}.npz")

    def nbytes(self) -> int:
        """Bytes held by the stored episodes (frames dominate)."""
        return sum(e.nbytes() for e in self.episodes)

    def can_sample(self) -> bool:
        return any(len(e) >= self.nstep for e in self.episodes)

    def _stack(self, frames: np.ndarray, t: int) -> np.ndarray:  # -> (3·k, H, W)
        return stack_frames(frames, t, self.frame_stack)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        if not self.can_sample():
            raise RuntimeError(f"the replay buffer holds no episode of at least nstep={self.nstep} steps yet")
        # Episodes are drawn in proportion to their number of valid start steps: uniform over transitions.
        valid = np.array([max(len(e) - self.nstep + 1, 0) for e in self.episodes], dtype=np.float64)
        ep_ids = self.rng.choice(len(self.episodes), size=batch_size, p=valid / valid.sum())
        gammas = self.discount ** np.arange(self.nstep)
        obs, next_obs, actions, rewards = [], [], [], []
        for i in ep_ids:
            e = self.episodes[i]
            t = int(self.rng.integers(0, len(e) - self.nstep + 1))
            obs.append(self._stack(e.frames, t))
            next_obs.append(self._stack(e.frames, t + self.nstep))
            actions.append(e.actions[t])
            rewards.append(float(np.dot(gammas, e.rewards[t:t + self.nstep])))
        return {
            "obs": torch.from_numpy(np.stack(obs)),
            "action": torch.from_numpy(np.stack(actions).astype(np.float32)),
            "reward": torch.tensor(rewards, dtype=torch.float32),
            "discount": torch.full((batch_size,), self.discount ** self.nstep, dtype=torch.float32),
            "next_obs": torch.from_numpy(np.stack(next_obs)),
        }

    def sample_frames(self, n: int) -> torch.Tensor:
        """``n`` random stored frames, uint8 ``[n, H, W, 3]`` (for online updates of RND)."""
        ep_ids = self.rng.integers(0, len(self.episodes), size=n)
        return torch.from_numpy(np.stack([self.episodes[i].frames[self.rng.integers(1, len(self.episodes[i].frames))]
                                          for i in ep_ids]))

    # ------------------------------------------------------------------ snapshots
    def state(self) -> dict:
        """The buffer for a snapshot: with a store, the live serials only (the episode files hold the
        data); without one, every episode's arrays."""
        if self.store_dir is not None:
            return {"store": {"first_serial": self.first_serial, "next_serial": self.next_serial},
                    "rng": self.rng.bit_generator.state}
        return {
            "episodes": [{"frames": e.frames, "actions": e.actions, "rewards": e.rewards,
                          "env_rewards": e.env_rewards, "success": e.success} for e in self.episodes],
            "rng": self.rng.bit_generator.state,
        }

    def load(self, state: dict) -> None:
        self.episodes, self.num_transitions = [], 0
        if "store" in state:
            if self.store_dir is None:
                raise CheckpointError("this snapshot keeps its replay episodes in a store folder; "
                                      "give the buffer a store_dir")
            first, nxt = int(state["store"]["first_serial"]), int(state["store"]["next_serial"])
            self.first_serial = self.next_serial = first
            for serial in range(first, nxt):
                self._append(load_replay_episode(self.episode_path(serial)))
        else:
            self.first_serial = self.next_serial = 0
            for e in state["episodes"]:
                self.add(EpisodeRecord(**{k: np.asarray(v) for k, v in e.items()}))
        self.rng.bit_generator.state = state["rng"]

    def prune_store(self, keep_from: Optional[int] = None) -> int:
        """Delete store files of episodes that are not live (evicted ones, and any written after the
        snapshot a run resumed from); ``keep_from`` keeps the files from that serial on (episodes an
        older kept snapshot still lists). Returns how many were deleted. Call after saving a snapshot."""
        if self.store_dir is None or not os.path.isdir(self.store_dir):
            return 0
        first = self.first_serial if keep_from is None else min(keep_from, self.first_serial)
        removed = 0
        for name in os.listdir(self.store_dir):
            m = _EPISODE_FILE.fullmatch(name)
            if m and not first <= int(m.group(1)) < self.next_serial:
                os.unlink(os.path.join(self.store_dir, name))
                removed += 1
        return removed


_EPISODE_FILE = re.compile(r"episode_(\d+)\.npz")


def save_replay_episode(path: str, episode: EpisodeRecord) -> None:
    """One replay episode as a collected-episode file (``load_episode`` reads it: frames, actions, the
    env's rewards, success) plus ``train_rewards``, the relabelled rewards the agent learns from."""
    from ..data.episodes import Episode, save_episode

    save_episode(path, Episode(frames=episode.frames, actions=episode.actions, rewards=episode.env_rewards,
                               success=episode.success, labelled=True),
                 extra={"train_rewards": episode.rewards})


def load_replay_episode(path: str) -> EpisodeRecord:
    from ..data.episodes import EpisodeFileError, load_episode

    try:
        ep, extra = load_episode(path, extra=("train_rewards",))
    except EpisodeFileError as e:
        raise CheckpointError(f"replay store: {e}") from e
    record = EpisodeRecord(frames=ep.frames, actions=ep.actions.astype(np.float32),
                           rewards=extra["train_rewards"].astype(np.float32),
                           env_rewards=ep.rewards.astype(np.float32), success=ep.success.astype(bool))
    try:
        record.validate()
    except ValueError as e:
        raise CheckpointError(f"replay store: malformed episode file {path}: {e}") from e
    return record


def stack_frames(frames: np.ndarray, t: int, k: int) -> np.ndarray:
    """The agent's observation at step ``t`` of an episode in progress: frames t−k+1 … t as
    ``[3·k, H, W]`` (frames before the start repeat frame 0)."""
    idx = np.clip(np.arange(t - k + 1, t + 1), 0, None)
    return np.asarray(frames)[idx].transpose(0, 3, 1, 2).reshape(-1, *np.asarray(frames).shape[1:3])


__all__ = ["EpisodeRecord", "ReplayBuffer", "stack_frames"]

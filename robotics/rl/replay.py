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
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch


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
                 seed: int = 0):
        if capacity < 1 or frame_stack < 1 or nstep < 1 or not 0.0 <= discount <= 1.0:
            raise ValueError("capacity, frame_stack, nstep must be >= 1 and discount in [0, 1]")
        self.capacity, self.frame_stack, self.nstep, self.discount = int(capacity), int(frame_stack), int(nstep), discount
        self.episodes: list[EpisodeRecord] = []
        self.num_transitions = 0
        self.rng = np.random.default_rng(seed)

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
        self.episodes.append(episode)
        self.num_transitions += len(episode)
        while self.num_transitions > self.capacity and len(self.episodes) > 1:
            self.num_transitions -= len(self.episodes.pop(0))

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
        return {
            "episodes": [{"frames": e.frames, "actions": e.actions, "rewards": e.rewards,
                          "env_rewards": e.env_rewards, "success": e.success} for e in self.episodes],
            "rng": self.rng.bit_generator.state,
        }

    def load(self, state: dict) -> None:
        self.episodes, self.num_transitions = [], 0
        for e in state["episodes"]:
            self.add(EpisodeRecord(**{k: np.asarray(v) for k, v in e.items()}))
        self.rng.bit_generator.state = state["rng"]


def stack_frames(frames: np.ndarray, t: int, k: int) -> np.ndarray:
    """The agent's observation at step ``t`` of an episode in progress: frames t−k+1 … t as
    ``[3·k, H, W]`` (frames before the start repeat frame 0)."""
    idx = np.clip(np.arange(t - k + 1, t + 1), 0, None)
    return np.asarray(frames)[idx].transpose(0, 3, 1, 2).reshape(-1, *np.asarray(frames).shape[1:3])


__all__ = ["EpisodeRecord", "ReplayBuffer", "stack_frames"]

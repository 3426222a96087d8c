"""The model contract of the robotics reward models (Diffusion Reward, the progress ranker, RND).

Each is a :class:`mmreward.core.model.RewardScorer` on :class:`mmreward.core.inputs.Episode` inputs
and implements one method, ``frame_rewards(frames, success, batch_size) -> [T]``:

    model.score_parts([Episode(frames), ...])   # one Tensor[T] per episode: the per-frame rewards
    model.score([Episode("ep.npz"), ...])       # Tensor[N]: each episode's summed reward

The models compute in float32 (``from_pretrained(dtype=...)`` accepts float32 only).
"""
from __future__ import annotations

import os
from dataclasses import field
from typing import Any, Optional, Union

import torch

from mmreward.core.device import DeviceError, resolve_dtype
from mmreward.core.inputs import Episode
from mmreward.core.model import RewardScorer

from ..data.inputs import episode_tensors


def help_field(text: str, **kw: Any) -> Any:
    """A dataclass field with its one-line help (the CLI's ``--flag`` help)."""
    return field(metadata={"help": text}, **kw)


class EpisodeScorer(RewardScorer):
    """A reward model of robot episodes: per-frame rewards, summed per episode by ``score``."""

    input_types = (Episode,)
    default_batch_size = 256  # frames per forward batch
    batch_size_counts_inputs = False  # frames / windows of one episode: a server leaves it at the model's own
    # built and run in float32 (bfloat16 is an autocast setting, compute_dtype): a copy saved after .half()
    # loads back in float32 rather than as a half model whose float32 frame pipeline cannot run
    keep_saved_dtype = False

    @property
    def image_size(self) -> int:
        """Frame height = width the model takes (videos are resized to it)."""
        return self.config.image_size

    def frame_rewards(self, frames: torch.Tensor, success: Optional[torch.Tensor], batch_size: int) -> torch.Tensor:
        """Rewards ``[T]`` of one episode's uint8 frames ``[T, H, W, 3]`` (``success``: float ``[T]`` or None)."""
        raise NotImplementedError

    def _score_parts(self, items: list, batch_size: int) -> list[torch.Tensor]:
        out = []
        for i, item in enumerate(items):
            frames, success = episode_tensors(item, self.image_size, f"input {i}")
            out.append(self.frame_rewards(frames, success, batch_size).detach().float().cpu())
        return out

    def _score(self, items: list, batch_size: int) -> torch.Tensor:
        return self.aggregate_parts(self._score_parts(items, batch_size))

    def aggregate_parts(self, parts: list) -> torch.Tensor:
        return torch.stack([r.sum() for r in parts])

    @classmethod
    def from_pretrained(cls, folder: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu", *,
                        dtype: Union[None, str, torch.dtype] = None, **kwargs: Any):
        if resolve_dtype(dtype) not in (None, torch.float32):
            # the documented bfloat16 option is an autocast setting of the config: say so rather than only "no"
            hint = ("; for bfloat16 matmuls and convolutions set model.config.compute_dtype = 'bfloat16' after "
                    "loading (an autocast: docs/diffusion_reward.md, Speed)"
                    if "compute_dtype" in getattr(cls.config_class, "__dataclass_fields__", {}) else "")
            raise DeviceError(f"{cls.__name__} computes in float32 (its statistics and log-probabilities need it), "
                              f"not {dtype}: leave dtype unset{hint}")
        if isinstance(folder, (str, os.PathLike)) and not os.path.exists(os.path.expanduser(os.fspath(folder))):
            from mmreward.registry import resolve_folder

            # a shipped name ("metaworld-64") or a hub id, read as mmreward.load reads it (it said "does not exist")
            folder = resolve_folder(folder)
        return super().from_pretrained(folder, device, dtype=None, **kwargs)


__all__ = ["EpisodeScorer", "help_field"]

"""Pieces shared by the Diffusion Reward trainers (VQGAN, VQ-Diffusion, progress ranker): input
coercion of frame data, dataclass-config round trips, EMA weights, and the settings of the core
training loop (:class:`mmreward.core.trainer.Trainer`) they all run on.

Frame data is accepted in the shapes users already have, so the trainers do not depend on the data
layer's API: a uint8 tensor / array ``[N, T, H, W, 3]`` (episodes) or ``[M, H, W, 3]`` (frames),
or a list of episodes (each ``[T, H, W, 3]`` uint8, or an object with a ``.frames`` attribute).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from mmreward.core.checkpoint import data_digest  # noqa: F401  (re-exported: training tensors in order)
from mmreward.core.data import describe
from mmreward.core.model import config_from_dict, config_to_dict  # noqa: F401  (re-exported)
from mmreward.core.trainer import TrainConfig

FrameData = Union[torch.Tensor, np.ndarray, Sequence[Any]]


def frames_hint(frames: Any) -> str:
    """How to turn the frames a caller gave into uint8 ``[T, H, W, 3]`` ("" when no common mistake
    fits): float images (never cast here, as a [0, 1] image cast to uint8 is all 0 / 1), channels-first
    ``[T, 3, H, W]`` (DrQ-style observations) and a single ``[H, W, 3]`` frame."""
    dtype, shape = getattr(frames, "dtype", None), tuple(getattr(frames, "shape", ()))
    if dtype is not None and (getattr(dtype, "is_floating_point", False)
                              or (isinstance(dtype, np.dtype) and dtype.kind == "f")):
        return ("; convert float images first: (x * 255).round() for values in [0, 1], x.round() for 0..255, "
                "then clip to 0..255 and cast to uint8 (NaN frames have no such value)")
    # np.array(list of frames) of Python ints is int64, a 16-bit PNG uint16: "got torch.int64" said nothing more
    if (dtype is not None and dtype not in (np.uint8, torch.uint8)
            and ((isinstance(dtype, torch.dtype) and not dtype.is_floating_point and not dtype.is_complex
                  and dtype != torch.bool) or (isinstance(dtype, np.dtype) and dtype.kind in "iu"))):
        return ("; integer frames? values 0..255: x.astype(np.uint8) (torch: x.to(torch.uint8)); 16-bit images "
                "(0..65535): (x // 257).astype(np.uint8)")
    if len(shape) == 4 and shape[1] == 3 and shape[-1] != 3:
        return "; channels-first [T, 3, H, W]? make them channels-last: x.permute(0, 2, 3, 1) (numpy: transpose)"
    if len(shape) == 3 and shape[-1] == 3:
        return "; one frame [H, W, 3]? pass x[None], an episode of 1 frame"
    # frames are never recoloured here: say how to make grayscale / RGBA frames RGB
    if len(shape) == 3:
        return "; grayscale frames [T, H, W]? make them RGB: np.repeat(x[..., None], 3, axis=-1)"
    if len(shape) == 4 and shape[-1] == 1:
        return "; grayscale frames [T, H, W, 1]? make them RGB: np.repeat(x, 3, axis=-1)"
    if len(shape) == 4 and shape[-1] == 4:
        return "; RGBA frames? drop (or composite) the alpha channel: x[..., :3]"
    return ""


def pil_hint(x: Any) -> str:
    """How to pass PIL images (a list of them, or one) as frames ("" for anything else)."""
    items = x if isinstance(x, (list, tuple)) and x else [x]
    if all(type(i).__module__.startswith("PIL.") for i in items):
        return "; PIL images? np.stack([np.asarray(im.convert('RGB')) for im in images])"
    return ""


def _as_uint8_tensor(x: Any, what: str) -> torch.Tensor:
    if hasattr(x, "frames") and not isinstance(x, (torch.Tensor, np.ndarray)):
        x = x.frames
    if isinstance(x, (list, tuple)) and x and all(isinstance(f, (torch.Tensor, np.ndarray)) for f in x):
        # the frames an RL loop collects, which the scorers take: "episode 0 must be a uint8 tensor / array, got list"
        x = as_frame_tensor(x, what)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a uint8 tensor / array (or a list of [H, W, 3] frames), got "
                        f"{type(x).__name__}{pil_hint(x)}")
    if x.dtype != torch.uint8:
        raise TypeError(f"{what} must be uint8 (pixel values 0..255), got {x.dtype}{frames_hint(x)}")
    return x


def check_frames_uint8(frames: torch.Tensor, what: str = "frames", size: Optional[int] = None) -> None:
    """Raise a clear error unless ``frames`` is uint8 ``[T, H, W, 3]`` (H = W = ``size`` if given)."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what} must be uint8 [T, H, W, 3], got shape {list(frames.shape)}{frames_hint(frames)}")
    if size is not None and (frames.shape[1] != size or frames.shape[2] != size):
        raise ValueError(f"{what} must be {size}x{size} pixels, got {frames.shape[1]}x{frames.shape[2]}; resize each "
                         f"frame with mmreward.robotics.data.video.resize_frame(frame, {size}) (or read videos with "
                         f"read_video(path, size={size}))")
    if frames.shape[0] == 0:
        raise ValueError(f"{what} is empty (T = 0)")


def as_frame_tensor(frames: Any, what: str = "frames") -> torch.Tensor:
    """An episode's frames as a tensor: a tensor as it is, a numpy array (any strides) or a list /
    tuple of ``[H, W, 3]`` frames of one shape stacked; anything else a TypeError naming it."""
    if isinstance(frames, torch.Tensor):
        return frames
    if isinstance(frames, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(frames))
    if isinstance(frames, (list, tuple)) and not frames:
        raise ValueError(f"{what} is empty (T = 0)")
    if isinstance(frames, (list, tuple)) and all(isinstance(f, (torch.Tensor, np.ndarray)) for f in frames):
        parts = [as_frame_tensor(f) for f in frames]
        for i, f in enumerate(parts):
            if f.shape != parts[0].shape or f.dtype != parts[0].dtype:
                raise ValueError(f"{what}: frame {i} is {f.dtype} {list(f.shape)}, frame 0 {parts[0].dtype} "
                                 f"{list(parts[0].shape)}: every frame must have one shape and dtype")
        return torch.stack(parts)
    raise TypeError(f"{what} must be uint8 [T, H, W, 3] (a tensor, a numpy array or a list of [H, W, 3] frames), "
                    f"got {type(frames).__name__}")


_LOAD_HINT = ("load the frames first: mmreward.robotics.data.episodes.load_episode_folder(folder) gives an episode "
              "folder's (entry, Episode) pairs, as the CLI's --data reads them")


def episodes_from(data: FrameData) -> list[torch.Tensor]:
    """A list of uint8 ``[T, H, W, 3]`` episodes from any accepted input."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        t = _as_uint8_tensor(data, "frames")
        if t.dim() == 5:
            eps = list(t.unbind(0))
        elif t.dim() == 4:
            eps = [t]
        else:
            raise ValueError(f"frames must be [N, T, H, W, 3] or [T, H, W, 3], got shape {list(t.shape)}")
    elif isinstance(data, (str, bytes, os.PathLike, dict)):  # a path: its characters were read as "episodes"
        raise TypeError(f"expected frames (a uint8 tensor / array or a list of episodes), got {type(data).__name__} "
                        f"{describe(data)}; " + _LOAD_HINT)
    elif isinstance(data, Iterable):
        eps = []
        for i, e in enumerate(data):
            frames = getattr(e, "frames", e)  # an Episode: its frames
            if isinstance(frames, (str, bytes, os.PathLike)):  # a file the scorers read, but not its frames here
                raise TypeError(f"episode {i} is a path ({describe(frames)}), not frames; " + _LOAD_HINT)
            eps.append(_as_uint8_tensor(e, f"episode {i}"))
    else:
        raise TypeError(f"expected frames (tensor / array / list of episodes), got {type(data).__name__}")
    if not eps:
        raise ValueError("no episodes given")
    for i, e in enumerate(eps):
        check_frames_uint8(e, f"episode {i}")
    return eps


def frame_pool(data: FrameData) -> torch.Tensor:
    """All frames of ``data`` as one uint8 ``[M, H, W, 3]`` tensor."""
    eps = episodes_from(data)
    for i, e in enumerate(eps):  # name the episode: "different frame shapes: [(16, 16, 3), (24, 24, 3)]" did not
        if e.shape[1:] != eps[0].shape[1:]:
            raise ValueError(f"episodes have different frame shapes: episode {i} has {e.shape[1]}x{e.shape[2]} frames, "
                             f"episode 0 {eps[0].shape[1]}x{eps[0].shape[2]}; give frames of one size")
    return torch.cat([e.contiguous() for e in eps], 0)


def capped_batch(batch_size: int, available: int, unit: str, trainer: str) -> int:
    """``min(batch_size, available)``, with a warning naming both numbers when it caps: a step never
    draws more items than the training data holds (drawn with replacement, the rest would repeat)."""
    if batch_size > available:
        import warnings

        warnings.warn(f"{trainer}: batch_size {batch_size} is more than the {available} {unit} of the training data; "
                      f"each step draws {available} (give more data or a batch_size <= {available})", UserWarning,
                      stacklevel=3)
        return int(available)
    return int(batch_size)


# ------------------------------------------------------------------ EMA
class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers,
    updated every ``update_every`` calls of :meth:`update` (VQ-Diffusion: decay 0.99 every 25).
    The k-th update uses ``min(decay, (1 + k) / (10 + k))`` so short runs are not stuck near the
    initial weights."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.99, update_every: int = 1):
        # 2.5 was truncated to 2, "3" read as 3 and 0 / -4 as 1: refused, as VideoTrainConfig refuses them
        if isinstance(decay, bool) or not isinstance(decay, (int, float, np.floating)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be a number in [0, 1), got {decay!r}")
        if isinstance(update_every, bool) or not isinstance(update_every, (int, np.integer)) or update_every < 1:
            raise ValueError(f"EMA update_every must be an integer >= 1 (updates every that many calls), "
                             f"got {update_every!r}")
        self.decay = float(decay)
        self.update_every = int(update_every)
        self.calls = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.calls += 1
        if self.calls % self.update_every:
            return
        k_upd = self.calls // self.update_every - 1
        decay = min(self.decay, (1.0 + k_upd) / (10.0 + k_upd))
        for k, v in module.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.mul_(decay).add_(v.detach(), alpha=1.0 - decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict:
        return {"calls": self.calls, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state["calls"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)

    def copy_to(self, module: torch.nn.Module) -> None:
        module.load_state_dict(self.shadow)


# ------------------------------------------------------------------ the core loop's settings
# settings a run may change when it is continued: how long it runs and how often it logs / snapshots
RUN_LENGTH_FIELDS = ("steps", "log_every", "ckpt_every")


def resume_settings(train_config: Any, model_config: Any, data: Iterable[torch.Tensor], **more: Any) -> dict:
    """What a continued robotics run must share with the run it continues, beyond the core loop's own
    fingerprint: the model's config, the optimisation settings (all of the trainer's config but
    :data:`RUN_LENGTH_FIELDS`) and the training data. Otherwise another ``lr`` would be silently
    replaced by the snapshot's optimizer state, another model size would fail with a state-dict dump,
    and other data would go on from weights trained on something else."""
    train = {} if train_config is None else {k: v for k, v in config_to_dict(train_config).items()
                                             if k not in RUN_LENGTH_FIELDS}
    return {"train": train, "model": config_to_dict(model_config), "data": data_digest(data), **more}


def loop_config(out_dir: str, *, steps: int, batch_size: int, seed: int, log_every: int, save_every: int,
                resume: bool, overwrite: bool, progress_bar: bool, quiet: bool) -> TrainConfig:
    """The :class:`TrainConfig` of a robotics trainer's run (its own config keeps the optimisation
    settings; the core loop owns logging, snapshots, resume and the final ``model/``)."""
    console = progress_bar or not quiet
    return TrainConfig(output_dir=out_dir, max_steps=steps, batch_size=batch_size, seed=seed, save_every=save_every,
                       log_every=log_every if console else 0, progress=progress_bar, resume=resume,
                       overwrite=overwrite, tensorboard=True, plot=True)

"""Score a video against a prompt, frame by frame: per-frame scores, temporal aggregates and a plot.

Videos are read with OpenCV (mp4 / avi / mov / webm …), PIL (gif) or as a folder of image files in
natural order (frame2 before frame10). Frames are uint8 ``[T, H, W, 3]`` RGB at the boundary and
float ``[T, 3, H, W]`` in [0, 1] for the scorer; :func:`video_frames` accepts a video in any of
these forms (a float tensor stays differentiable). Aggregates: ``mean``, ``min``, ``max`` and
``trend`` — the slope of a least-squares line through (frame index, score), in score units per frame
(``trend_per_second`` too when the source frame rate is known); with ``stride`` the frame
indices are those of the source video: > 0 means the video matches the prompt
better as it goes on.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from mmreward.core.data import DataError

from .images import list_image_files, load_image, to_tensor
from .scoring import as_pixel_scorer


class VideoReadError(DataError):
    """A video is missing, corrupt, empty or in a format that cannot be decoded."""


def read_frames(path: str, stride: int = 1, max_frames: Optional[int] = None) -> tuple[np.ndarray, Optional[float]]:
    """``(frames uint8 [T, H, W, 3] RGB, source fps or None)``; every ``stride``-th frame, at most ``max_frames``."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not os.path.exists(path):
        raise VideoReadError(f"video {path!r} does not exist")
    limit = max_frames if max_frames is not None else 1 << 62
    frames, fps = [], None
    if os.path.isdir(path):
        files = list_image_files(path)
        if not files:
            raise VideoReadError(f"frame folder {path!r} holds no image files")
        frames = [np.asarray(load_image(f)) for f in files[::stride][:limit]]
        if len({f.shape for f in frames}) > 1:
            raise VideoReadError(f"frames in {path!r} have different sizes")
    elif path.lower().endswith(".gif"):
        from PIL import Image, ImageSequence

        try:
            with Image.open(path) as im:
                dur = im.info.get("duration")
                fps = 1000.0 / dur if dur else None
                for i, fr in enumerate(ImageSequence.Iterator(im)):
                    if i % stride == 0:
                        frames.append(np.asarray(fr.convert("RGB")))
                    if len(frames) >= limit:
                        break
        except (OSError, SyntaxError) as e:
            raise VideoReadError(f"cannot decode gif {path!r}: {e}") from e
    else:
        import cv2

        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # our VideoReadError reports decoder failures once
        cap = cv2.VideoCapture(path)
        try:
            if not cap.isOpened():
                raise VideoReadError(f"cannot open video {path!r} (corrupt or unsupported format)")
            fps = cap.get(cv2.CAP_PROP_FPS) or None
            i = 0
            while len(frames) < limit:
                ok, bgr = cap.read()
                if not ok:
                    break
                if i % stride == 0:
                    frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                i += 1
        finally:
            cap.release()
    if not frames:
        raise VideoReadError(f"no frames could be decoded from {path!r} (empty or corrupt video)")
    return np.stack(frames), fps


def video_frames(video: Any, where: str = "video", stride: int = 1,
                 max_frames: Optional[int] = None) -> tuple[Sequence, Optional[float]]:
    """``(frames, source fps or None)`` of a video given as a file / frame folder path, a uint8
    array ``[T, H, W, 3]``, a float tensor ``[T, 3, H, W]`` in [0, 1] (its frames stay views, so
    gradients flow) or a list of images; every ``stride``-th frame, at most ``max_frames``."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if isinstance(video, (str, os.PathLike)):
        return read_frames(os.fspath(video), stride, max_frames)
    if isinstance(video, torch.Tensor):
        if video.dim() != 4 or video.shape[1] != 3 or not video.is_floating_point():
            raise ValueError(f"{where}: a video tensor must be float [T, 3, H, W] in [0, 1], got "
                             f"{video.dtype} {tuple(video.shape)}")
        frames: Sequence = list(video.unbind(0))
    elif isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(f"{where}: a video array must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
        frames = video
    elif isinstance(video, (list, tuple)):
        frames = list(video)
    else:
        raise TypeError(f"{where}: a video must be a file or frame folder path, a uint8 array [T, H, W, 3], a float "
                        f"tensor [T, 3, H, W] or a list of frames, got {type(video).__name__}")
    frames = frames[::stride][:max_frames]
    if len(frames) == 0:
        raise ValueError(f"{where}: the video has no frames")
    return frames, None


@dataclass
class VideoScore:
    prompt: str
    scores: list = field(default_factory=list)  # per sampled frame
    frame_indices: list = field(default_factory=list)  # index of each scored frame in the source
    mean: float = 0.0
    min: float = 0.0
    max: float = 0.0
    trend: float = 0.0  # slope of the least-squares fit, score per frame
    trend_per_second: Optional[float] = None
    fps: Optional[float] = None

    def to_dict(self) -> dict:
        return asdict(self)


def aggregate(prompt: str, scores: np.ndarray, frame_indices: np.ndarray, fps: Optional[float]) -> VideoScore:
    """Per-frame scores -> :class:`VideoScore` (trend 0 for a single frame)."""
    s = np.asarray(scores, np.float64)
    x = np.asarray(frame_indices, np.float64)
    slope = float(np.polyfit(x, s, 1)[0]) if len(s) > 1 else 0.0
    return VideoScore(prompt, s.tolist(), [int(i) for i in x], float(s.mean()), float(s.min()), float(s.max()),
                      slope, slope * fps if fps else None, fps)


@torch.no_grad()
def score_video(scorer: Any, prompt: str, video: Any, *, batch_size: int = 16, stride: int = 1,
                max_frames: Optional[int] = None) -> VideoScore:
    """Score every ``stride``-th frame of ``video`` (see :func:`video_frames`) against ``prompt``.
    ``scorer``: a reward model that scores :class:`~mmreward.core.inputs.ImagePrompt` (e.g. an
    :class:`~mmreward.vision.ImageRewardModel`) or any callable ``(prompts, images[B, 3, H, W] in
    [0, 1]) -> Tensor[B]``."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    score = as_pixel_scorer(scorer)
    frames, fps = video_frames(video, "video", stride, max_frames)
    out = []
    for s in range(0, len(frames), batch_size):
        x = torch.stack([to_tensor(f, f"video frame {s + k}") for k, f in enumerate(frames[s:s + batch_size])])
        out.append(score([prompt] * len(x), x).float().cpu())  # x: (b, 3, H, W)
    scores = torch.cat(out).numpy()
    return aggregate(prompt, scores, np.arange(len(frames)) * stride, fps)


def plot_video_score(result: VideoScore, path: str, title: str = "") -> str:
    """PNG of the score over time with the mean and the trend line; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmreward.core.folders import atomic_write

    x = np.asarray(result.frame_indices, np.float64)
    use_t = bool(result.fps)
    xs = x / result.fps if use_t else x
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(xs, result.scores, marker="o", ms=3, lw=1.2, label="score")
    ax.axhline(result.mean, color="gray", ls="--", lw=1, label=f"mean {result.mean:.3g}")
    if len(x) > 1:
        b = np.polyfit(x, result.scores, 1)
        ax.plot(xs, np.polyval(b, x), color="C3", lw=1, label=f"trend {result.trend:+.3g}/frame")
    ax.set_xlabel("time (s)" if use_t else "frame")
    ax.set_ylabel("score")
    ax.set_title(title or result.prompt[:80])
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    ext = os.path.splitext(path)[1] or ".png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=ext[1:], dpi=110))
    plt.close(fig)
    return path

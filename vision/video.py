"""Score a video against a prompt, frame by frame: per-frame scores, temporal aggregates and a plot.

Videos are read with OpenCV (mp4 / avi / mov / webm …), PIL (gif) or as a folder of image files in
natural order (frame2 before frame10); a still image is one frame without a frame rate. Files are
decoded frame by frame while they are scored (:func:`open_frames`), so memory holds one batch of
frames, not the video; a file that decodes to fewer frames than its header declares warns. Frames
are uint8 ``[T, H, W, 3]`` RGB at the boundary and float ``[T, 3, H, W]`` in [0, 1] for the scorer;
:func:`video_frames` accepts a video in any of these forms (a float tensor stays differentiable). Aggregates: ``mean``, ``min``, ``max`` and
``trend`` — the slope of a least-squares line through (frame index, score), in score units per frame
(``trend_per_second`` too when the source frame rate is known); with ``stride`` the frame
indices are those of the source video: > 0 means the video matches the prompt
better as it goes on.
"""
from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from mmreward.core.data import DataError, data_path
from mmreward.core.model import check_batch_size

from .images import IMAGE_EXTENSIONS, _remote_kind, list_image_files, load_image, local_path, to_tensor
from .scoring import as_pixel_scorer


class VideoReadError(DataError):
    """A video is missing, corrupt, empty or in a format that cannot be decoded."""


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_sampling(stride: Any, max_frames: Any) -> None:
    """ValueError naming ``stride`` / ``max_frames`` unless each is an integer >= 1 (``max_frames``
    None: every frame). Checked before any decoding: a slice would read 0 or -1 as "all but the last"."""
    if not _is_int(stride) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if max_frames is not None and (not _is_int(max_frames) or max_frames < 1):
        raise ValueError(f"max_frames must be an integer >= 1 (or None: no limit), got {max_frames!r}")


def check_plot_path(path: str) -> str:
    """``path`` when a plot can be written there (a file name whose extension matplotlib writes, not a
    folder); checked before scoring, so a bad name does not cost a whole video's scoring."""
    if os.path.isdir(path):
        raise ValueError(f"plot path {path!r} is a folder; give a file name such as score.png")
    ext = os.path.splitext(path)[1].lower()
    from matplotlib.backend_bases import FigureCanvasBase

    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if ext and ext[1:] not in formats:
        raise ValueError(f"plot path {path!r}: cannot write a {ext} plot "
                         f"(use one of {', '.join('.' + f for f in formats)})")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # atomic_write creates missing folders, but not through a file
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"plot path {path!r}: {parent!r} is a file, not a folder")
    return path


def _still_image(path: str) -> bool:
    """A single-frame image file: read as one frame without a frame rate (OpenCV would report a
    made-up 25 fps). Animated PNG / WebP are videos and go through OpenCV."""
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return False
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return not getattr(im, "is_animated", False)
    except Image.DecompressionBombError:
        return True  # load_image refuses it by name
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False  # not readable as an image: OpenCV reports it


def _gif_frames(path: str, stride: int, limit: int) -> Iterator[np.ndarray]:
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as im:
            n = 0
            for i, fr in enumerate(ImageSequence.Iterator(im)):
                if n >= limit:
                    return
                if i % stride == 0:
                    n += 1
                    yield np.asarray(fr.convert("RGB"))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise VideoReadError(f"cannot decode gif {path!r}: {e}") from e


def _opencv_frames(cap: Any, path: str, stride: int, limit: int) -> Iterator[np.ndarray]:
    import cv2

    try:
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        read = sampled = 0
        while sampled < limit:
            ok, bgr = cap.read()
            if not ok:
                # one frame of slack: containers often declare a frame the decoder never returns
                if declared > 0 and read < declared - 1:
                    warnings.warn(f"{path}: decoded {read} of the {declared} frames its header declares (truncated "
                                  f"or corrupt file?); scoring the decoded frames only", UserWarning, stacklevel=2)
                return
            if read % stride == 0:
                sampled += 1
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            read += 1
    finally:
        cap.release()


def _checked(frames: Iterator[np.ndarray], path: str) -> Iterator[np.ndarray]:
    n = 0
    for f in frames:
        n += 1
        yield f
    if n == 0:
        raise VideoReadError(f"no frames could be decoded from {path!r} (empty or corrupt video)")


def open_frames(path: str, stride: int = 1,
                max_frames: Optional[int] = None) -> tuple[Iterator[np.ndarray], Optional[float]]:
    """``(frames, source fps or None)`` of a video file, frame folder or still image, where ``frames``
    yields uint8 ``[H, W, 3]`` RGB frames one at a time as they are decoded (every ``stride``-th, at
    most ``max_frames``), so a long video never sits in memory whole. A missing or unopenable file
    fails here; a file whose frames cannot be decoded fails while iterating. A file that decodes
    to fewer frames than its header declares warns (UserWarning) and yields the decoded ones."""
    check_sampling(stride, max_frames)
    path = data_path(local_path(path))  # "~/clip.mp4": the home folder's, as images, data files and model folders
    if not os.path.exists(path):
        if _remote_kind(path):
            raise VideoReadError(f"video {path[:80]!r} is {_remote_kind(path)}; videos are read from local files "
                                 "or frame folders only (download it first)")
        raise VideoReadError(f"video {path!r} does not exist")
    limit = max_frames if max_frames is not None else 1 << 62
    if os.path.isdir(path):
        files = list_image_files(path)
        if not files:
            raise VideoReadError(f"frame folder {path!r} holds no image files")

        def folder_frames() -> Iterator[np.ndarray]:
            shape = None
            for f in files[::stride][:limit]:
                frame = np.asarray(load_image(f))
                if shape is not None and frame.shape != shape:
                    raise VideoReadError(f"frames in {path!r} have different sizes ({f}: {frame.shape}, "
                                         f"the first: {shape})")
                shape = frame.shape
                yield frame

        return folder_frames(), None
    if os.path.getsize(path) == 0:  # an interrupted download / copy: say so, not "corrupt or unsupported"
        raise VideoReadError(f"video file {path!r} is empty (0 bytes)")
    if path.lower().endswith(".gif"):
        from PIL import Image

        try:
            with Image.open(path) as im:
                dur = im.info.get("duration")
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            raise VideoReadError(f"cannot decode gif {path!r}: {e}") from e
        return _checked(_gif_frames(path, stride, limit), path), (1000.0 / dur if dur else None)
    if _still_image(path):
        return iter([np.asarray(load_image(path))]), None
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # our VideoReadError reports decoder failures once
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoReadError(f"cannot open video {path!r} (corrupt, unsupported format or no video stream)")
    fps = cap.get(cv2.CAP_PROP_FPS) or None
    return _checked(_opencv_frames(cap, path, stride, limit), path), fps


def read_frames(path: str, stride: int = 1, max_frames: Optional[int] = None) -> tuple[np.ndarray, Optional[float]]:
    """``(frames uint8 [T, H, W, 3] RGB, source fps or None)``; every ``stride``-th frame, at most
    ``max_frames`` (all decoded at once: :func:`open_frames` streams them)."""
    frames, fps = open_frames(path, stride, max_frames)
    return np.stack(list(frames)), fps


def video_frames(video: Any, where: str = "video", stride: int = 1,
                 max_frames: Optional[int] = None) -> tuple[Sequence, Optional[float]]:
    """``(frames, source fps or None)`` of a video given as a file / frame folder path, a uint8
    array ``[T, H, W, 3]``, a float tensor ``[T, 3, H, W]`` in [0, 1] (its frames stay views, so
    gradients flow) or a list of images; every ``stride``-th frame, at most ``max_frames``."""
    check_sampling(stride, max_frames)
    if isinstance(video, (str, os.PathLike)):
        return read_frames(os.fspath(video), stride, max_frames)
    return _in_memory_frames(video, where, stride, max_frames), None


def _in_memory_frames(video: Any, where: str, stride: int, max_frames: Optional[int]) -> Sequence:
    if isinstance(video, torch.Tensor):
        # float [T, 3, H, W] in [0, 1] (its frames stay views: gradients flow), or uint8 [T, 3, H, W] /
        # [T, H, W, 3] (torchvision.io.read_video's layout), each frame read as a uint8 image is
        if video.dim() == 4 and video.dtype == torch.uint8 and video.shape[1] != 3 and video.shape[-1] == 3:
            video = video.permute(0, 3, 1, 2)
        if video.dim() != 4 or video.shape[1] != 3 or not (video.is_floating_point() or video.dtype == torch.uint8):
            raise ValueError(f"{where}: a video tensor must be float [T, 3, H, W] in [0, 1] (or uint8 [T, 3, H, W] / "
                             f"[T, H, W, 3]), got {video.dtype} {tuple(video.shape)}")
        frames: Sequence = list(video.unbind(0))
    elif isinstance(video, np.ndarray):
        # uint8 [T, H, W, 3], or float in [0, 1] as a float image array is (each frame's range is checked)
        if video.ndim != 4 or video.shape[-1] != 3 or not (video.dtype == np.uint8
                                                           or np.issubdtype(video.dtype, np.floating)):
            raise ValueError(f"{where}: a video array must be uint8 [T, H, W, 3] (or float in [0, 1]), got "
                             f"{video.dtype} {video.shape}")
        frames = video
    elif isinstance(video, (list, tuple)):
        frames = list(video)
    else:
        raise TypeError(f"{where}: a video must be a file or frame folder path, a uint8 array [T, H, W, 3], a float "
                        f"tensor [T, 3, H, W] or a list of frames, got {type(video).__name__}")
    frames = frames[::stride][:max_frames]
    if len(frames) == 0:
        raise ValueError(f"{where}: the video has no frames")
    return frames


def stream_video_frames(video: Any, where: str = "video", stride: int = 1,
                        max_frames: Optional[int] = None) -> tuple[Iterator[Any], Optional[float]]:
    """:func:`video_frames` as an iterator: a file or frame folder is decoded frame by frame while the
    caller consumes it (:func:`open_frames`); an array, tensor or list is sliced as there."""
    check_sampling(stride, max_frames)
    if isinstance(video, (str, os.PathLike)):
        return open_frames(os.fspath(video), stride, max_frames)
    return iter(_in_memory_frames(video, where, stride, max_frames)), None


def batches(items: Iterable[Any], size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter), drawn from ``items`` lazily."""
    check_batch_size(size)
    it = iter(items)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


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
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip() and getattr(scorer, "uses_prompt", True):  # an aesthetic predictor scores frames alone
        raise ValueError("prompt must be a non-empty string: the scorer scores each frame against it")
    check_batch_size(batch_size)
    check_sampling(stride, max_frames)
    score = as_pixel_scorer(scorer)
    frames, fps = stream_video_frames(video, "video", stride, max_frames)
    out, n, size = [], 0, None
    for chunk in batches(frames, batch_size):  # a file is decoded one batch ahead of the scorer, not whole
        x = [to_tensor(f, f"video frame {(n + k) * stride}") for k, f in enumerate(chunk)]
        for k, t in enumerate(x):  # frames are scored as one [B, 3, H, W] batch: one size for the video
            size = size or tuple(t.shape[-2:])
            if tuple(t.shape[-2:]) != size:
                raise ValueError(f"video frame {(n + k) * stride} is {t.shape[-2]}x{t.shape[-1]} pixels, frame 0 "
                                 f"{size[0]}x{size[1]}: the frames of a video must have one size")
        x = torch.stack(x)
        n += len(chunk)
        out.append(score([prompt] * len(x), x).float().cpu())  # x: (b, 3, H, W)
    scores = torch.cat(out).numpy()
    return aggregate(prompt, scores, np.arange(n) * stride, fps)


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

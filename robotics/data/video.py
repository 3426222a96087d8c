"""User videos and frame folders <-> uint8 ``[T, H, W, 3]`` RGB frame arrays (OpenCV).

Readable sources:

* video files: ``.mp4``, ``.m4v``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``, ``.mpg``, ``.mpeg``, ``.gif``
  (OpenCV's decoders);
* frame folders: ``.png`` / ``.jpg`` / ``.jpeg`` / ``.bmp`` files, ordered by name with digit runs
  compared as numbers (``f2.png`` < ``f10.png``); other files are ignored.

Hidden names (starting with ``.``) and ``__MACOSX`` are left out wherever a folder is listed: macOS writes
``._clip.mp4`` metadata files and ``.DS_Store`` next to copied videos (``__MACOSX/`` in a zip), notebooks
``.ipynb_checkpoints/``; none is an episode. A hidden file named as a source itself is read.

With ``size`` set, each frame is center-cropped to the target aspect ratio and resized (area
interpolation when shrinking). Unreadable or empty sources raise :class:`VideoError` naming the path.
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional, Sequence

import numpy as np

from mmreward.core.data import DataError

# .m4v (a phone / ffmpeg export) and MPEG files were skipped in a folder without a word (or it "held no videos")
VIDEO_EXTS = (".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".gif")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


class VideoError(DataError):
    """A video or frame folder that cannot be read (the message names it)."""


def _cv2():
    # FFmpeg inside OpenCV prints its own decoder errors ("moov atom not found") to stderr; the
    # VideoError raised below says it once, so keep FFmpeg to fatal messages unless the user set a level
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
    from mmreward.core.extras import needs_extra

    # cv2 itself missing: the extra to install; a module missing inside an installed cv2 (a numpy ABI mismatch)
    # is that error, as it is
    with needs_extra("robotics", what="video I/O"):
        import cv2
    return cv2


def natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def _target(size: Any) -> Optional[tuple[int, int]]:
    if size is None:
        return None
    from ..envs.base import parse_size

    return parse_size(size)


def resize_frame(frame: np.ndarray, size: Any) -> np.ndarray:
    """Center-crop ``frame`` [H, W, 3] to the aspect ratio of ``size`` and resize to it."""
    cv2 = _cv2()
    th, tw = _target(size)
    h, w = frame.shape[:2]
    if (h, w) == (th, tw):
        return frame
    # crop the longer side so that h / w == th / tw
    if h * tw > w * th:
        ch = max(1, round(w * th / tw))
        top = (h - ch) // 2
        frame = frame[top:top + ch]
    elif h * tw < w * th:
        cw = max(1, round(h * tw / th))
        left = (w - cw) // 2
        frame = frame[:, left:left + cw]
    shrink = frame.shape[0] > th or frame.shape[1] > tw
    out = cv2.resize(np.ascontiguousarray(frame), (tw, th), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out


def _finish(frames: list, size: Any, stride: int, what: str) -> np.ndarray:
    if not frames:
        raise VideoError(f"{what}: no frames could be decoded (empty, corrupt or unsupported)")
    frames = frames[::stride]
    if size is not None:
        frames = [resize_frame(f, size) for f in frames]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise VideoError(f"{what}: frames have different sizes {sorted(shapes)}; pass size= to resize them")
    return np.ascontiguousarray(np.stack(frames), dtype=np.uint8)


def _quiet(cv2: Any, call: Any) -> Any:
    """``call()`` with OpenCV's own log silenced (a corrupt file is reported once, by our VideoError)."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:  # pragma: no cover - depends on the OpenCV build
        return call()
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        return call()
    except cv2.error:
        return False, []
    finally:
        logging.setLogLevel(level)


def read_video(path: str, size: Any = None, stride: int = 1) -> np.ndarray:
    """All frames of a video file as uint8 RGB ``[T, H, W, 3]`` (every ``stride``-th frame)."""
    cv2 = _cv2()
    check_stride(stride)
    if not os.path.isfile(path):
        raise VideoError(f"missing video file {path}")
    if path.lower().endswith(".gif"):
        # OpenCV >= 4.11 decodes a GIF through its image codec, and VideoCapture then returns only the first
        # frame of an animated GIF (an 8-frame episode was scored as 1 frame, silently): read every frame
        ok, images = _quiet(cv2, lambda: cv2.imreadmulti(path, flags=cv2.IMREAD_COLOR))
        if ok and images:
            return _finish([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in images], size, stride, f"video {path}")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise VideoError(f"cannot open video {path} (corrupt, truncated or an unsupported format)")
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
            elif frame.shape[2] == 4:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
            else:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            frames.append(frame)
    finally:
        cap.release()
    return _finish(frames, size, stride, f"video {path}")


def listing(folder: str) -> list[str]:
    """The names in ``folder`` a listing of episodes considers, in natural order: hidden ones (``._clip.mp4``
    that macOS copies carry, ``.ipynb_checkpoints/``) and the ``__MACOSX/`` folder of an unzipped macOS archive
    failed the whole folder as unreadable videos / empty frame folders."""
    return sorted((n for n in os.listdir(folder) if not n.startswith(".") and n != "__MACOSX"), key=natural_key)


def frame_files(folder: str) -> list[str]:
    return [os.path.join(folder, n) for n in listing(folder) if n.lower().endswith(IMAGE_EXTS)]


def read_frame_folder(folder: str, size: Any = None, stride: int = 1) -> np.ndarray:
    """Image files of ``folder`` in natural name order as uint8 RGB ``[T, H, W, 3]``."""
    cv2 = _cv2()
    check_stride(stride)
    if not os.path.isdir(folder):
        raise VideoError(f"missing frame folder {folder}")
    files = frame_files(folder)
    if not files:
        if any(n.lower().endswith(VIDEO_EXTS + (".npz",)) or os.path.isdir(os.path.join(folder, n))
               for n in listing(folder)):  # a folder of episodes: "holds no images" did not say what it is
            raise VideoError(f"{folder} holds no {'/'.join(IMAGE_EXTS)} images but videos, .npz files or folders: "
                             "it is a folder of episodes, not one frame folder; give it as a source of its own "
                             "(import-videos, score), or list its episodes with expand_sources([folder])")
        raise VideoError(f"frame folder {folder} holds no {'/'.join(IMAGE_EXTS)} images")
    frames = []
    for path in files[::stride]:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise VideoError(f"cannot read image {path} (corrupt or unsupported)")
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return _finish(frames, size, 1, f"frame folder {folder}")


def check_stride(stride: Any) -> int:
    """``stride`` as an integer >= 1 (2.5 was a TypeError deep in list slicing, True a stride of 1)."""
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1 (keep every n-th frame), got {stride!r}")
    return int(stride)


def load_frames(source: str, size: Any = None, stride: int = 1) -> np.ndarray:
    """A video file or a frame folder -> uint8 RGB ``[T, H, W, 3]``."""
    check_stride(stride)
    if os.path.isdir(source):
        return read_frame_folder(source, size, stride)
    if not os.path.exists(source):
        raise VideoError(f"missing video or frame folder {source}")
    if not source.lower().endswith(VIDEO_EXTS):
        raise VideoError(f"{source} is neither a frame folder nor a video ({', '.join(VIDEO_EXTS)})"
                         + format_hint(source))
    return read_video(source, size, stride)


def format_hint(path: str) -> str:
    """How to bring a file of another format in ("" when none fits): HDF5 demos (robomimic, LIBERO) are read
    by no mmreward command, but an ``.npz`` of their frames is."""
    if path.lower().endswith((".h5", ".hdf5", ".hdf")):
        return ("; HDF5 is not read: save each demo's uint8 frames [T, H, W, 3] as an .npz, e.g. with h5py: "
                "np.savez('demo_0.npz', frames=f['data/demo_0/obs/agentview_image'][:])")
    return ""


def expand_sources(sources: Sequence[str], npz: bool = False, skip: Sequence[str] = ()) -> list[str]:
    """Videos and frame folders named in ``sources``; a folder holding no images itself stands for
    its videos and sub-folders (each one episode, in natural name order), and with ``npz`` also for
    its ``.npz`` files (arrays of frames, as ``import-videos`` takes them). A sub-folder holding no images
    is such a folder in turn (``demos/robot_a/clip.mp4``), at any depth; hidden names and the folders
    ``skip`` (an output folder inside a source) are left out of a folder's contents."""
    exts = VIDEO_EXTS + ((".npz",) if npz else ())
    if isinstance(sources, (str, os.PathLike)):  # one folder / file: its characters were read as sources
        sources = [sources]

    skipped = {os.path.realpath(f) for f in skip}

    def contents(folder: str) -> list[str]:
        found = []
        for k in listing(folder):
            path = os.path.join(folder, k)
            if os.path.realpath(path) in skipped:
                continue
            episode_folder = os.path.isfile(os.path.join(path, "manifest.json"))
            if os.path.isdir(path) and not frame_files(path) and not episode_folder:
                # demos/robot_a/clip.mp4: import-videos read robot_a as a frame folder ("holds no images") while
                # score took its videos; an empty sub-folder is named below. An episode folder is kept whole (score
                # reads it by its manifest)
                found.extend(contents(path))
            elif k.lower().endswith(exts) or os.path.isdir(path):
                found.append(path)
        if not found:
            hints = [format_hint(n) for n in listing(folder) if format_hint(n)]
            raise VideoError(f"{folder} holds no videos, {'.npz frame arrays, ' if npz else ''}frame folders "
                             f"or images{hints[0] if hints else ''}")
        return found

    out: list[str] = []
    for src in map(os.fspath, sources):
        if os.path.isdir(src) and not frame_files(src):
            out.extend(contents(src))
        elif os.path.exists(src):
            out.append(src)
        else:  # checked up front, so a typo fails before any work (and before a progress bar) starts
            raise VideoError(f"video source {src!r} does not exist")
    return out


def write_video(path: str, frames: np.ndarray, fps: float = 10.0) -> None:
    """Write uint8 RGB ``[T, H, W, 3]`` frames as an mp4 (``mp4v``) / avi (``MJPG``) file, atomically
    (to a temporary name in the same folder, then renamed)."""
    cv2 = _cv2()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be non-empty uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    ext = os.path.splitext(path)[1].lower()
    fourcc = {".mp4": "mp4v", ".avi": "MJPG", ".mov": "mp4v", ".mkv": "mp4v"}.get(ext)
    if fourcc is None:
        raise ValueError(f"write_video writes .mp4 / .avi / .mov / .mkv, not {path}")
    # fps 0 / NaN (a recording's unknown rate) failed as "codec mp4v unavailable", under FFmpeg's own error lines
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) or not 0 < float(fps) <= 65535:
        raise ValueError(f"fps must be a number in (0, 65535], got {fps!r} (the rate is metadata only: mmreward reads "
                         "every frame as one step)")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp{ext}")
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
    try:
        if not writer.isOpened():
            raise VideoError(f"OpenCV cannot write {ext} video here (codec {fourcc} unavailable)")
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
        os.replace(tmp, path)
    finally:
        writer.release()
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_frame_folder(folder: str, frames: np.ndarray, ext: str = "png") -> list[str]:
    """Write frames as ``000000.png``, ``000001.png`` … (lossless for png)."""
    cv2 = _cv2()
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, f in enumerate(np.asarray(frames)):
        path = os.path.join(folder, f"{i:06d}.{ext}")
        if not cv2.imwrite(path, cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR)):
            raise VideoError(f"cannot write {path}")
        paths.append(path)
    return paths

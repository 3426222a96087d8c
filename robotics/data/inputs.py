"""Robot episodes as score inputs.

Every robotics reward model scores :class:`mmreward.core.inputs.Episode` inputs: ``frames`` is a
uint8 ``[T, H, W, 3]`` tensor / array (or a list of uint8 ``[H, W, 3]`` frames) or a path (an
episode ``.npz`` file, a video or a frame folder, resized to the model's frame size), ``success``
optional per-frame flags. This module turns
such an input into tensors (:func:`episode_tensors`, errors name the input and field) and episode
sources on disk into inputs (:func:`find_episodes`: episode files, episode folders, videos, frame
folders — what ``mmreward robotics score`` reads).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from mmreward.core.data import DataError, describe
from mmreward.core.inputs import Episode as EpisodeInput

from ..training import frames_hint, pil_hint
from .episodes import Episode, holds_tasks, load_episode_folder, load_frames_npz, manifest_path


def read_frames(path: str, size: int) -> np.ndarray:
    """Frames of an ``.npz`` (an episode file, or any archive with uint8 ``frames`` [T, H, W, 3]), a
    video or a frame folder, resized to ``size`` x ``size`` (center-cropped to a square first)."""
    from .video import load_frames, resize_frame

    if not path.lower().endswith(".npz"):
        from .video import VideoError, frame_files

        if os.path.isdir(path) and not frame_files(path):
            # an episode folder (or a folder of videos) is many episodes, not one: "frame folder data/mw holds no
            # .png/.jpg/.jpeg/.bmp images" did not say what to do (the CLI's score takes such folders)
            what = "an episode folder (manifest.json)" if os.path.isfile(manifest_path(path)) else "a folder"
            raise VideoError(f"{path} is {what} without frame images, not one episode: give one episode per input "
                             "(an .npz, a video or a frame folder), or mmreward.robotics.find_episodes([folder]) "
                             "for the inputs of every episode in it (as `mmreward robotics score` reads it)")
        return load_frames(path, size=(size, size))
    frames = load_frames_npz(path)[0]
    if (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
            and frames.shape[1:3] != (size, size)):  # anything else is left to as_frames' error
        frames = np.stack([resize_frame(f, (size, size)) for f in frames]) if len(frames) else frames
    return frames


def as_frames(frames: Any, where: str, size: Optional[int] = None) -> torch.Tensor:
    """``frames`` (uint8 tensor / array ``[T, H, W, 3]``, or a list of uint8 frames ``[H, W, 3]`` of one
    shape, H = W = ``size`` if given) as a tensor; :class:`DataError` naming ``where`` otherwise."""
    if isinstance(frames, (list, tuple)) and frames and all(isinstance(f, (np.ndarray, torch.Tensor)) for f in frames):
        # a list of frames [H, W, 3] (what an RL loop collects) is stacked; frames of different shapes are named
        parts = [torch.from_numpy(np.ascontiguousarray(f)) if isinstance(f, np.ndarray) else f for f in frames]
        shapes = {(str(f.dtype), tuple(f.shape)) for f in parts}
        if len(shapes) > 1:
            first = (str(parts[0].dtype), tuple(parts[0].shape))
            k = next(i for i, f in enumerate(parts) if (str(f.dtype), tuple(f.shape)) != first)
            raise DataError(f"{where}: frame {k} is {parts[k].dtype} {list(parts[k].shape)} but frame 0 is "
                            f"{parts[0].dtype} {list(parts[0].shape)}: a list of frames must hold uint8 [H, W, 3] "
                            "frames of one shape")
        if parts[0].dim() != 3:
            raise DataError(f"{where} must be uint8 frames [T, H, W, 3] or a list of frames [H, W, 3], got a list of "
                            f"{parts[0].dtype} {list(parts[0].shape)}")
        frames = torch.stack([f.detach().cpu() for f in parts])
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise DataError(f"{where} must be uint8 frames [T, H, W, 3] (tensor / array) or a path, got {describe(frames)}"
                        f"{pil_hint(frames)}")
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise DataError(f"{where} must be uint8 frames [T, H, W, 3] with T >= 1, got {frames.dtype} "
                        f"{list(frames.shape)}{frames_hint(frames)}")
    if size is not None and tuple(frames.shape[1:3]) != (size, size):
        # the conversion, as the trainers and the wrappers say it (never applied to arrays: files are resized)
        raise DataError(f"{where} has {frames.shape[1]}x{frames.shape[2]} frames; the model takes {size}x{size}: "
                        f"resize each frame with mmreward.robotics.data.video.resize_frame(frame, {size}) (center crop "
                        "to a square, then resize), or pass the video / .npz path, which is resized when read")
    return frames


def as_success(success: Any, frames: int, where: str) -> torch.Tensor:
    """Per-frame success flags (booleans or finite numbers, one per frame) as a float tensor ``[T]``."""
    arr = np.asarray(success.detach().cpu() if isinstance(success, torch.Tensor) else success)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where} must be per-frame booleans or numbers, got {describe(success)}")
    if arr.ndim != 1:  # a [T, k] table is not T flags: never flattened into a list of another length
        raise DataError(f"{where} must be a flat list of per-frame flags [T], got shape {list(arr.shape)}")
    s = torch.from_numpy(arr.astype(np.float32))
    if s.shape != (frames,):
        raise DataError(f"{where} must have one value per frame ({frames}), got {s.numel()}")
    if not torch.isfinite(s).all():
        raise DataError(f"{where} has NaN / inf values")
    return s


def episode_tensors(item: EpisodeInput, size: int, where: str) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(frames uint8 [T, size, size, 3], success float [T] or None)`` of one score input."""
    frames = item.frames
    success_where = f"{where}: field 'success'"
    if isinstance(frames, (str, os.PathLike)):
        path = os.fspath(frames)
        frames = as_frames(read_frames(path, size), f"{where}: {path}", size)
        success_where = f"{where}: {path}: field 'success'"  # the file's own flags, or the caller's: name the episode
    else:
        frames = as_frames(frames, f"{where}: field 'frames'", size)
    success = None if item.success is None else as_success(item.success, frames.shape[0], success_where)
    return frames, success


@dataclass
class EpisodeSource:
    """One episode found on disk: its score input and what is known about it."""

    name: str  # file / folder name without extension
    path: str
    input: EpisodeInput
    meta: dict = field(default_factory=dict)  # task, policy, noise, seed, success (from the manifest / file)
    # listed by an episode folder's manifest: the only episodes --tasks / --policies select; the rest are scored whole
    from_folder: bool = False


def find_episodes(sources: Sequence[str], *, tasks: Optional[Sequence[str]] = None,
                  policies: Optional[Sequence[str]] = None, with_success: bool = False) -> list[EpisodeSource]:
    """Score inputs for episode ``.npz`` files, episode folders (``manifest.json``; filtered by
    ``tasks`` / ``policies``), videos and frame folders (decoded when scored, at the model's size).
    ``with_success`` passes labelled episodes' success flags (per frame: the reset frame has none)."""
    from .video import VIDEO_EXTS, expand_sources, frame_files, listing

    if isinstance(sources, (str, os.PathLike)):  # one folder / file: its characters were read as sources
        sources = [sources]
    sources = [os.fspath(s) for s in sources]
    found = []
    several = len(sources) > 1

    def add(src: str, top: bool) -> None:
        # episode files are checked here without decompressing their frames (check_episode_file), and read
        # once, when scored
        if os.path.isdir(src) and os.path.isfile(manifest_path(src)):
            if (several or not top) and tasks and not holds_tasks(src, tasks):
                # --tasks select from all the sources together (`score mw mine --tasks reach-v3`); a folder that
                # holds a task but none of it with --policies is refused below, not dropped
                return
            for entry, ep in load_episode_folder(src, tasks, policies, frames=False):
                found.append(_stored(os.path.join(src, entry["file"]), ep, entry, with_success, from_folder=True))
        elif src.lower().endswith(".npz") and (top or os.path.isfile(src)):
            success, episode = _npz_source(src)
            if episode is not None:
                found.append(_stored(src, episode, {}, with_success))
            else:  # frames saved elsewhere: read (and resized) when scored
                found.append(EpisodeSource(os.path.splitext(os.path.basename(src))[0], src,
                                           EpisodeInput(src, success if with_success else None)))
        elif top and os.path.isdir(src) and not frame_files(src):
            # a plain folder stands for its episode .npz files, videos, frame folders and episode folders
            # (.npz files were skipped without a word, and a folder of them was "no videos")
            kids = [os.path.join(src, k) for k in listing(src)
                    if k.lower().endswith((".npz", *VIDEO_EXTS)) or os.path.isdir(os.path.join(src, k))]
            if not kids:
                raise DataError(f"{src} holds no episode .npz files, videos, frame folders or images")
            for kid in kids:
                add(kid, False)
        elif not top and os.path.isdir(src) and not frame_files(src) and any(
                k.lower().endswith(".npz") for k in listing(src)):
            # a plain sub-folder of episode .npz files (data/a/ep.npz, data/b/ep.npz): its .npz files and
            # videos (was "holds no videos, frame folders or images"); deeper folders are not searched
            for k in listing(src):
                if k.lower().endswith((".npz", *VIDEO_EXTS)) and os.path.isfile(os.path.join(src, k)):
                    add(os.path.join(src, k), False)
        else:
            for path in expand_sources([src]):
                if os.path.isfile(manifest_path(path)):  # an episode folder deeper in (demos/robot_a/episodes/)
                    add(path, False)
                else:
                    found.append(EpisodeSource(os.path.basename(os.path.normpath(path)), path, EpisodeInput(path)))

    for src in sources:
        add(src, True)
    if not found and (tasks or (policies and "all" not in policies)):
        raise DataError(f"no episodes in {', '.join(sources)} match tasks={list(tasks) if tasks else 'all'} "
                        f"policies={list(policies) if policies else 'all'}")
    if not found:
        raise DataError("no episodes, videos or frame folders given")
    return found


def _npz_source(path: str) -> tuple[Optional[np.ndarray], Optional[Episode]]:
    """``(success, episode)`` of an ``.npz`` score source as :func:`load_frames_npz` gives them, without
    decompressing the frames: a full episode file checked by :func:`check_episode_file`, else the
    stored per-frame ``success`` (if any) of an archive with a ``frames`` array."""
    import zipfile
    import zlib

    from .episodes import KEYS, EpisodeFileError, _need_archive, check_episode_file

    _need_archive(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            if all(k in keys for k in KEYS):
                full, success = True, None
            elif "frames" not in keys:
                raise EpisodeFileError(f"{path} has no 'frames' array (it holds {', '.join(keys) or 'none'}); "
                                       f"save uint8 frames [T, H, W, 3] under 'frames'")
            else:
                full, success = False, (z["success"] if "success" in keys else None)
    except EpisodeFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise EpisodeFileError(f"corrupt or unreadable episode file {path}: {type(e).__name__}: {e}") from e
    return (None, check_episode_file(path)) if full else (success, None)


def _stored(path: str, ep: Episode, entry: dict, with_success: bool, from_folder: bool = False) -> EpisodeSource:
    meta = {k: entry[k] for k in ("task", "policy", "noise", "seed") if k in entry}
    success = None
    if ep.labelled:
        meta["success"] = ep.succeeded
        if with_success:
            success = np.concatenate([[False], ep.success])
    # the path, not the frames: read when scored (resized to the model's frame size), not all held at once
    return EpisodeSource(os.path.splitext(os.path.basename(path))[0], path, EpisodeInput(path, success), meta,
                         from_folder)


__all__ = ["EpisodeSource", "as_frames", "as_success", "episode_tensors", "find_episodes", "read_frames"]

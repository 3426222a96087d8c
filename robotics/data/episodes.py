"""Episodes on disk: one compressed ``.npz`` per episode plus a JSON manifest per folder.

Episode file (``np.savez_compressed``, written atomically, loaded with ``allow_pickle=False``):

=============  ==================  =====================================================
key            dtype / shape       meaning
=============  ==================  =====================================================
``frames``     uint8 [T, H, W, 3]  frame after reset, then one after every agent step
``actions``    float32 [T-1, A]    action of each step (A = 0 for imported videos)
``rewards``    float32 [T-1]       environment reward summed over the action repeat
                                   (NaN for imported videos)
``success``    bool [T-1]          the task's success flag during each step
``labelled``   bool []             False when actions / rewards / success are unknown
=============  ==================  =====================================================

Loading checks every field: actions finite, rewards finite (NaN only in unlabelled episodes),
success flags booleans (or 0 / 1 integers), ``labelled`` one boolean. A bad file raises
:class:`EpisodeFileError` naming the file and the field.

Manifest (``manifest.json``): ``{"format_version": 1, "episodes": [entry, ...]}`` with one entry
per file: ``file, task, suite, policy, noise, seed, camera, size [H, W], action_repeat, length
(steps), frames, success, return, labelled`` (and ``source`` for imported videos). Entries are
keyed by ``file``: collecting into the same folder again replaces entries of rewritten files and
keeps the others.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from mmreward.core.data import DataError
from mmreward.core.folders import atomic_write, atomic_write_text

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
KEYS = ("frames", "actions", "rewards", "success", "labelled")


class EpisodeFileError(DataError):
    """An episode file or manifest is missing, truncated, corrupt or malformed (the message names it)."""


@dataclass
class Episode:
    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    success: np.ndarray
    labelled: bool = True
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.frames = np.asarray(self.frames)
        problem = episode_problem(self.frames, self.actions, self.rewards, self.success, self.labelled)
        if problem:
            raise DataError(f"invalid episode: {problem}")
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        self.success = np.asarray(self.success).astype(bool)
        self.labelled = bool(self.labelled)

    @property
    def length(self) -> int:
        """Number of agent steps (``T - 1``)."""
        return int(self.frames.shape[0]) - 1

    @property
    def succeeded(self) -> bool:
        return bool(self.success.any())

    @property
    def total_reward(self) -> float:
        return float(self.rewards.sum()) if self.labelled else float("nan")


def episode_problem(frames: Any, actions: Any, rewards: Any, success: Any, labelled: Any = True) -> Optional[str]:
    """The first thing wrong with an episode's arrays (naming the field), or None."""
    frames, actions, rewards, success = (np.asarray(x) for x in (frames, actions, rewards, success))
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        return f"frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {list(frames.shape)}"
    flag = np.asarray(labelled)
    if flag.shape != () or flag.dtype != np.bool_:
        return f"labelled must be one boolean, got {flag.dtype} of shape {list(flag.shape)}"
    steps = frames.shape[0] - 1
    if actions.dtype.kind not in "fiu" or actions.ndim != 2 or actions.shape[0] != steps:
        return f"actions must be numbers [T-1={steps}, A], got {actions.dtype} {list(actions.shape)}"
    if rewards.dtype.kind not in "fiu" or rewards.shape != (steps,):
        return f"rewards must be numbers [T-1={steps}], got {rewards.dtype} {list(rewards.shape)}"
    if success.shape != (steps,):
        return f"success must be [T-1={steps}], got {list(success.shape)}"
    if success.dtype != np.bool_ and not (success.dtype.kind in "iu" and np.isin(success, (0, 1)).all()):
        return f"success must be booleans (or 0 / 1 integers), got {success.dtype}"
    bad = _first_bad(~np.isfinite(actions).all(1))
    if bad is not None:
        return f"actions has NaN / inf values (first at step {bad})"
    # imported videos have no rewards: NaN marks them, and only in unlabelled episodes
    unknown = np.isnan(rewards) if not bool(flag) else np.zeros(steps, bool)
    bad = _first_bad(~(np.isfinite(rewards) | unknown))
    if bad is not None:
        return f"rewards has {'NaN / ' if bool(flag) else ''}inf values (first at step {bad})"
    return None


def _first_bad(mask: np.ndarray) -> Optional[int]:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def save_episode(path: str, episode: Episode, extra: Optional[dict[str, np.ndarray]] = None) -> int:
    """Write ``episode`` to ``path`` atomically; returns the file size in bytes. ``extra`` arrays are
    stored under their own keys (e.g. the replay buffer's training rewards); readers that do not ask
    for them ignore them."""
    arrays = dict(frames=episode.frames, actions=episode.actions, rewards=episode.rewards,
                  success=episode.success, labelled=np.asarray(episode.labelled))
    clash = set(extra or ()) & set(arrays)
    if clash:
        raise ValueError(f"extra arrays may not reuse the episode keys {sorted(clash)}")
    arrays.update({k: np.asarray(v) for k, v in (extra or {}).items()})

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: savez would append ".npz" to a path
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)
    return os.path.getsize(path)


def load_episode(path: str, extra: Sequence[str] = ()):
    """Read an episode file; never unpickles. Missing / corrupt / malformed files raise
    :class:`EpisodeFileError` naming the file. With ``extra`` keys, returns ``(episode, {key: array})``
    and a missing extra key is an error too."""
    _need_archive(path)
    keys = KEYS + tuple(extra)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise EpisodeFileError(f"episode file {path} lacks {', '.join(missing)} (not an mmreward episode?)")
            data = {k: z[k] for k in keys}
    except EpisodeFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise EpisodeFileError(f"corrupt or unreadable episode file {path}: {type(e).__name__}: {e}") from e
    try:
        episode = Episode(frames=data["frames"], actions=data["actions"], rewards=data["rewards"],
                          success=data["success"], labelled=data["labelled"])
    except DataError as e:
        raise EpisodeFileError(f"malformed episode file {path}: {str(e).removeprefix('invalid episode: ')}") from None
    if not extra:
        return episode
    for k in extra:
        if data[k].shape[:1] != (episode.length,):
            raise EpisodeFileError(f"malformed episode file {path}: {k} must have {episode.length} rows, "
                                   f"got shape {list(data[k].shape)}")
    return episode, {k: data[k] for k in extra}


def check_episode_file(path: str) -> Episode:
    """An episode file checked as :func:`load_episode` checks it, without decompressing its frames: every
    field but the frames' pixels is read and checked, the frames by their stored dtype and shape. Returns
    an :class:`Episode` whose ``frames`` is a zero-memory stand-in of that dtype and shape (pixels not
    read: load the file to use them). A corrupt frames member is found when the file is loaded."""
    _need_archive(path)
    try:
        with zipfile.ZipFile(path) as zf, np.load(path, allow_pickle=False) as z:
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise EpisodeFileError(f"episode file {path} lacks {', '.join(missing)} (not an mmreward episode?)")
            with zf.open("frames.npy") as f:  # the .npy header only: the pixels stay compressed
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                         else np.lib.format.read_array_header_2_0(f))
            data = {k: z[k] for k in KEYS if k != "frames"}
    except EpisodeFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise EpisodeFileError(f"corrupt or unreadable episode file {path}: {type(e).__name__}: {e}") from e
    frames = np.broadcast_to(np.zeros((), dtype=dtype), shape)  # no memory: dtype and shape only
    try:
        return Episode(frames=frames, actions=data["actions"], rewards=data["rewards"], success=data["success"],
                       labelled=data["labelled"])
    except DataError as e:
        raise EpisodeFileError(f"malformed episode file {path}: {str(e).removeprefix('invalid episode: ')}") from None


def _need_archive(path: str) -> None:
    if not os.path.isfile(path):
        raise EpisodeFileError(f"missing episode file {path}")
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle and say so
        raise EpisodeFileError(f"episode file {path} is not an .npz archive (truncated, or another format)")


def load_frames_npz(path: str) -> tuple[np.ndarray, Optional[np.ndarray], Optional[Episode]]:
    """``(frames, success, episode)`` of any ``.npz`` with a ``frames`` array: a full episode file
    (checked by :func:`load_episode`, returned as ``episode``; ``success`` None), or frames saved
    elsewhere (``frames`` as stored, checked where they are scored; ``success`` the stored per-frame
    flags, if any; ``episode`` None). Never unpickles."""
    _need_archive(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            if all(k in keys for k in KEYS):
                full = True
            elif "frames" not in keys:
                raise EpisodeFileError(f"{path} has no 'frames' array (it holds {', '.join(keys) or 'none'}); "
                                       f"save uint8 frames [T, H, W, 3] under 'frames'")
            else:
                full = False
                frames, success = z["frames"], (z["success"] if "success" in keys else None)
    except EpisodeFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise EpisodeFileError(f"corrupt or unreadable episode file {path}: {type(e).__name__}: {e}") from e
    if full:
        episode = load_episode(path)
        return episode.frames, None, episode
    return frames, success, None


# --------------------------------------------------------------------------- manifest
def manifest_path(folder: str) -> str:
    return os.path.join(folder, MANIFEST_NAME)


def _import_hint(folder: str) -> str:
    """What the user's ``folder`` is instead of an episode folder, and how to make one of it."""
    if not os.path.exists(folder):
        return f": {folder} does not exist"
    tip = ("mmreward robotics import-videos {src} --task <label> --out <episode folder> stores videos, frame folders and "
           ".npz frame arrays as an episode folder")
    if not os.path.isdir(folder):
        return f": {folder} is a file, not a folder; " + tip.format(src=folder)
    from .video import IMAGE_EXTS, VIDEO_EXTS

    demos = (".npz", *VIDEO_EXTS, *IMAGE_EXTS)
    try:
        names = os.listdir(folder)
    except OSError:
        return ""
    if "config.json" in names or "train_config.json" in names or any(n.startswith("checkpoint-") for n in names):
        return f": {folder} is a model or training-run folder, not an episode folder"
    if any(n.lower().endswith(demos) or os.path.isdir(os.path.join(folder, n)) for n in names):
        return "; for your own demos: " + tip.format(src=folder)
    return ""


def read_manifest(folder: str) -> list[dict]:
    """The manifest's episode entries (a folder without a manifest raises EpisodeFileError)."""
    path = manifest_path(folder)
    if not os.path.isfile(path):
        raise EpisodeFileError(f"no {MANIFEST_NAME} in {folder} (not an episode folder?){_import_hint(folder)}")
    try:
        with open(path, encoding="utf-8") as f:
            body = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EpisodeFileError(f"corrupt manifest {path}: {e}") from e
    if not isinstance(body, dict) or not isinstance(body.get("episodes"), list):
        raise EpisodeFileError(f"manifest {path} must be an object with an 'episodes' list")
    version = body.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise EpisodeFileError(f"manifest {path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise EpisodeFileError(f"manifest {path} has format_version {body['format_version']}; "
                               f"this mmreward reads up to {FORMAT_VERSION}")
    seen: dict[str, int] = {}
    for i, entry in enumerate(body["episodes"]):
        if not isinstance(entry, dict) or "file" not in entry or "task" not in entry or "frames" not in entry:
            raise EpisodeFileError(f"manifest {path}: episode entry {i} lacks file / task / frames")
        problem = _entry_problem(entry)
        if problem:
            raise EpisodeFileError(f"manifest {path}: episode entry {i}: {problem}")
        key = os.path.normpath(entry["file"])
        if key in seen:
            raise EpisodeFileError(f"manifest {path}: episode entries {seen[key]} and {i} both name "
                                   f"{entry['file']!r}")
        seen[key] = i
    return body["episodes"]


def _entry_problem(entry: dict) -> Optional[str]:
    """What is wrong with a manifest entry's fields that readers use (``file`` a relative path inside
    the folder, ``task`` a string, ``frames`` a count >= 1, ``size`` [H, W] when given), or None."""
    file = entry["file"]
    if not isinstance(file, str) or not file.strip():
        return f"'file' must be a file name, got {file!r}"
    inside = os.path.normpath(file.replace("\\", "/")).split(os.sep)[0] != ".."  # sub/../a.npz is inside
    if os.path.isabs(file) or os.path.splitdrive(file)[0] or file.startswith(("/", "\\")) or not inside:
        return (f"'file' {file!r} is outside the episode folder: entries name files inside it, by a path "
                "relative to it")
    if not isinstance(entry["task"], str):
        return f"'task' must be a string, got {entry['task']!r}"
    frames = entry["frames"]
    if isinstance(frames, bool) or not isinstance(frames, (int, float)) or not 1 <= frames < float("inf") \
            or frames != int(frames):
        return f"'frames' must be a frame count >= 1, got {frames!r}"
    size = entry.get("size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        return f"'size' must be [H, W] (two pixel counts), got {size!r}"
    return None


def write_manifest(folder: str, entries: Sequence[dict]) -> None:
    body = {"format_version": FORMAT_VERSION, "episodes": list(entries)}
    atomic_write_text(manifest_path(folder), json.dumps(body, indent=1, sort_keys=True) + "\n")


def update_manifest(folder: str, entries: Iterable[dict]) -> list[dict]:
    """Add ``entries`` to the folder's manifest, replacing entries with the same ``file``."""
    merged: "OrderedDict[str, dict]" = OrderedDict()
    if os.path.isfile(manifest_path(folder)):
        for e in read_manifest(folder):
            merged[e["file"]] = e
    for e in entries:
        merged[e["file"]] = e
    out = list(merged.values())
    write_manifest(folder, out)
    return out


def _looks_like_task_id(label: str) -> bool:
    """Whether a stored label has the form of a canonical task id (``door-open-v3``, ``adroit-door``), as
    ``collect`` and ``import-videos`` store known tasks: only then can a spelling of it select it."""
    return bool(re.search(r"-v\d+$", label)) or label.startswith("adroit-")


def match_tasks(tasks: Iterable[str], have: Iterable[str]) -> set:
    """The labels of ``have`` that ``tasks`` select: each label as written and the task id it names
    (``door-open`` / ``DoorOpen`` select ``door-open-v3`` episodes, as ``collect`` and ``import-videos`` store
    them); free-form labels are kept whole. Both, not the first found: a folder with ``PickPlace`` episodes
    imported as typed and ``pick-place-v3`` ones imported since holds the one task under two labels."""
    have = set(have)
    out = set()
    for task in tasks:
        if task in have:
            out.add(task)
        # resolving imports the simulators (seconds, and sets MUJOCO_GL): only when a stored label it could
        # name is there, and not for a stored task id (a canonical id resolves to itself)
        if not (task in have and _looks_like_task_id(task)) and any(h != task and _looks_like_task_id(h) for h in have):
            from ..envs import resolve_task

            try:
                out.add(resolve_task(task))
            except (ValueError, ImportError):
                pass  # a free-form label: itself or nothing
    return out & have


def holds_tasks(folder: str, tasks: Sequence[str]) -> bool:
    """Whether the episode folder holds any of ``tasks`` (whatever their policies): with several folders
    the labels select from all of them together, so one that holds none of them adds nothing."""
    return bool(match_tasks(tasks, (e["task"] for e in read_manifest(folder))))


def select_entries(folder: str, tasks: Optional[Sequence[str]] = None,
                   policies: Optional[Sequence[str]] = None) -> list[dict]:
    """The manifest entries of ``folder`` that ``tasks`` / ``policies`` select (``None`` or ``["all"]``: every
    episode), read from the manifest alone; an empty selection is an error naming what the folder has."""
    everything = read_manifest(folder)
    if tasks:
        wanted = match_tasks(tasks, (e["task"] for e in everything))
        entries = [e for e in everything if e["task"] in wanted]
    else:
        entries = list(everything)
    if policies and "all" not in policies:
        entries = [e for e in entries if e.get("policy") in set(policies)]
    if not entries:
        have = sorted({(e["task"], e.get("policy")) for e in everything}, key=str)
        raise DataError(f"no episodes in {folder} match tasks={list(tasks) if tasks else 'all'} "
                        f"policies={list(policies) if policies else 'all'} (the folder has {have}; "
                        "--policies all uses every episode)")
    return entries


def load_episode_folder(folder: str, tasks: Optional[Sequence[str]] = None,
                        policies: Optional[Sequence[str]] = None, *, frames: bool = True) -> list[tuple[dict, Episode]]:
    """``[(manifest entry, episode)]`` of an episode folder, keeping the listed tasks / policy kinds
    (``None`` or ``["all"]``: every episode); an empty selection is an error naming what the folder has.
    ``frames=False``: each file checked by :func:`check_episode_file` (pixels not read)."""
    entries = select_entries(folder, tasks, policies)
    read = load_episode if frames else check_episode_file
    return [(e, read(os.path.join(folder, e["file"]))) for e in entries]


def episode_entry(file: str, episode: Episode, **meta: Any) -> dict:
    """A manifest entry for ``episode`` stored as ``file`` (relative to the folder)."""
    entry = dict(meta)
    entry.update(
        file=file,
        length=episode.length,
        frames=int(episode.frames.shape[0]),
        size=[int(episode.frames.shape[1]), int(episode.frames.shape[2])],
        success=episode.succeeded if episode.labelled else None,
        labelled=episode.labelled,
    )
    entry["return"] = round(episode.total_reward, 6) if episode.labelled else None
    return entry


# --------------------------------------------------------------------------- dataset
class EpisodeDataset:
    """Frame windows from an episode folder, for video-model training.

    Item ``i`` is a dict with ``frames`` uint8 ``[n_history + 1, H, W, 3]`` (``n_history`` context
    frames followed by the target frame, ``skip`` frames apart), ``task`` (str), ``episode`` (its
    index in :attr:`entries`) and ``start`` (the first frame's index in that episode).

    ``tasks`` / ``policies`` keep only episodes whose task / policy kind is listed. Episodes load
    lazily on first use and the ``cache_size`` most recently used stay in memory. Windows come from
    the manifest's frame counts, so building the index reads no episode file. Works as a
    ``torch.utils.data.Dataset`` (it has ``__len__`` / ``__getitem__``).
    """

    def __init__(self, folder: str, *, n_history: int = 1, skip: int = 1, tasks: Optional[Sequence[str]] = None,
                 policies: Optional[Sequence[str]] = None, cache_size: int = 16):
        for name, value, least in (("n_history", n_history, 0), ("skip", skip, 1), ("cache_size", cache_size, 0)):
            # 1.5 was truncated to 1 and "2" failed in a comparison: refused, naming the argument
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"EpisodeDataset: {name} must be an integer >= {least}, got {value!r}")
        self.folder = folder
        self.n_history, self.skip, self.cache_size = int(n_history), int(skip), int(cache_size)
        entries = read_manifest(folder)
        if tasks is not None:
            wanted = match_tasks(tasks, (e["task"] for e in entries))
            entries = [e for e in entries if e["task"] in wanted]
        if policies is not None:
            policies = set(policies)
            entries = [e for e in entries if e.get("policy") in policies]
        sizes = {tuple(e.get("size") or ()) for e in entries}
        if len(sizes) > 1:
            raise ValueError(f"episodes in {folder} have different frame sizes {sorted(sizes)}; filter by task "
                             "or collect them in separate folders")
        self.entries = entries
        span = self.n_history * self.skip + 1
        self._index: list[tuple[int, int]] = []
        for ei, e in enumerate(entries):
            for start in range(0, int(e["frames"]) - span + 1):
                self._index.append((ei, start))
        self._cache: "OrderedDict[int, Episode]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._index)

    def episode(self, i: int) -> Episode:
        """Episode ``i`` of :attr:`entries` (loaded lazily, cached), checked against its entry."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        entry = self.entries[i]
        path = os.path.join(self.folder, entry["file"])
        ep = load_episode(path)
        if ep.frames.shape[0] != int(entry["frames"]):
            raise EpisodeFileError(f"{path} has {ep.frames.shape[0]} frames but the manifest says {entry['frames']}")
        ep.meta = dict(entry)
        self._cache[i] = ep
        while len(self._cache) > max(self.cache_size, 1):
            self._cache.popitem(last=False)
        return ep

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        ei, start = self._index[i]
        frames = self.episode(ei).frames[start:start + self.n_history * self.skip + 1:self.skip]
        return {"frames": np.ascontiguousarray(frames), "task": self.entries[ei]["task"], "episode": ei,
                "start": start}

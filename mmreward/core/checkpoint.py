"""Checkpoints: safetensors + JSON, written atomically, loaded without executing pickled code.

Three shapes:

* **Model folders** (:func:`save_model` / :func:`load_model`): ``config.json`` + ``model.safetensors``
  (models on :mod:`mmreward.core.model` write whole folders with a manifest instead).
* **Training states** (:func:`save_state` / :func:`load_state`, exact resume): any nested structure
  of dicts / lists / tuples / tensors / arrays / numbers / strings (optimizer and scheduler
  ``state_dict()``s, RNG states, step counters) saved as **one file** ``<name>.safetensors``: the
  tensors, with the structure as JSON in the file's metadata. It is written under a temporary name
  and renamed into place, so a crash leaves the old state or the new one, never a mix of the two.
* **Run snapshots** (:class:`Snapshots`): ``<run>/checkpoint-<step>/`` folders holding a training
  state and a ``manifest.json`` (size and SHA-256 of each file), each written as one unit with
  :func:`~mmreward.core.folders.atomic_folder`. The newest two are kept; loading verifies the
  manifest and, when the newest snapshot is unreadable, falls back to the previous one with a
  warning. :func:`start_run` decides how a run in a folder starts: fresh, resumed, refused (a
  finished or foreign run without ``overwrite``) or cleared (``overwrite``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import warnings
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .folders import (  # noqa: F401  (CheckpointError, atomic_write, atomic_write_text re-exported)
    _TMP_RE,
    CheckpointError,
    _tmp_name,
    atomic_folder,
    atomic_write,
    atomic_write_text,
    file_mode,
    read_manifest,
    recover_folder,
    remove_orphans,
    verify_folder,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- atomic writes
# (core.folders: temporary name in the same folder, fsync, umask permissions, rename; orphans of killed
# writers are removed by the next write to the same target)


def _save_tensors(path: str, tensors: dict[str, torch.Tensor], metadata: Optional[dict[str, str]] = None) -> int:
    """Atomic safetensors file at ``path``; returns its size in bytes."""
    atomic_write(path, lambda tmp: _write_tensors(tmp, tensors, metadata))
    return os.path.getsize(path)


def _write_tensors(path: str, tensors: dict[str, torch.Tensor], metadata: Optional[dict[str, str]] = None) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared / non-contiguous storage; clone views and every tensor whose memory an
    # earlier one already uses (e.g. two from_numpy of one array) so any state saves.
    clean, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach()
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        shared = ptr is not None and ptr in seen
        if ptr is not None:
            seen.add(ptr)
        clean[k] = (v.to("cpu").contiguous().clone() if v.is_cuda or not v.is_contiguous() or v._base is not None
                    or shared else v)
    try:
        save_file(clean, path, metadata=metadata)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors' SafetensorError is no OSError and has no errno
        import re

        # "Error while serializing: I/O error: No space left on device (os error 28)": an OSError with its errno,
        # so that callers tell a full disk / quota from a bug and say what to do (Trainer._write_error)
        m = re.search(r"\(os error (\d+)\)", str(e))
        if m is None:
            raise
        code = int(m.group(1))
        raise OSError(code, os.strerror(code), path) from e


def _load_tensors(path: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not os.path.exists(path):
        raise CheckpointError(f"missing weights file {path}")
    from .weights import weight_file_problem

    problem = weight_file_problem(path)  # empty, a Git LFS pointer, a pickle under the safetensors name
    if problem:
        raise CheckpointError(problem)
    try:
        return load_file(path, device=device)
    except Exception as e:  # safetensors raises several error types for bad headers / truncation
        raise CheckpointError(f"corrupt or unreadable safetensors file {path}: {e}") from e


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"missing {os.path.basename(path)} in {os.path.dirname(path) or '.'}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: deeply nested arrays
        raise CheckpointError(f"corrupt JSON in {path}: {str(e)[:200]}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- model folders
def save_model(folder: str, state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write ``model.safetensors`` then ``config.json`` (which records the weights' size)."""
    os.makedirs(folder, exist_ok=True)
    size = _save_tensors(os.path.join(folder, WEIGHTS_NAME), state_dict, metadata={"format": "pt"})
    body = dict(config)
    body["_mmreward"] = {"format_version": FORMAT_VERSION, "weights_bytes": size}
    atomic_write_text(os.path.join(folder, CONFIG_NAME), json.dumps(body, indent=2, sort_keys=True) + "\n")


def load_model(folder: str, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(state_dict, config)`` from a folder written by :func:`save_model`."""
    if not os.path.isdir(folder):
        raise CheckpointError(f"checkpoint folder {folder!r} does not exist")
    config = _read_json(os.path.join(folder, CONFIG_NAME))
    info = config.pop("_mmreward", {})
    weights = os.path.join(folder, WEIGHTS_NAME)
    if "weights_bytes" in info and os.path.exists(weights) and os.path.getsize(weights) != info["weights_bytes"]:
        raise CheckpointError(
            f"{weights} has {os.path.getsize(weights)} bytes but config.json expects {info['weights_bytes']}: "
            "truncated or from another save"
        )
    return _load_tensors(weights, device), config


# --------------------------------------------------------------------------- training states
def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, os.PathLike):  # a pathlib.Path setting (out=Path(...)) as its text: a run was lost to it
        return os.fspath(obj)
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__}")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy()
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        out = {}
        for k, v in obj["__items__"]:
            k = _decode(k, tensors)
            out[tuple(k) if isinstance(k, list) else k] = _decode(v, tensors)
        return out
    if "__dtype__" in obj:
        return getattr(torch, obj["__dtype__"])
    raise CheckpointError(f"unknown record in training state: {sorted(obj)}")


STATE_SUFFIX = ".safetensors"
STATE_FORMAT_VERSION = 2  # 1: tensors and structure in two files (<name>.safetensors + <name>.json)
_STATE_KEY = "mmreward_state"  # metadata entry holding the structure as JSON


def _write_state(path: str, state: Any) -> None:
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors)
    body = json.dumps({"format_version": STATE_FORMAT_VERSION, "state": tree}, separators=(",", ":"))
    _write_tensors(path, tensors, metadata={_STATE_KEY: body})


def save_state(path_prefix: str, state: Any) -> None:
    """Save a nested training state as one atomic file ``<prefix>.safetensors``."""
    atomic_write(path_prefix + STATE_SUFFIX, lambda tmp: _write_state(tmp, state))


def load_state(path_prefix: str, device: str = "cpu") -> Any:
    """The state :func:`save_state` wrote at ``<prefix>.safetensors`` (CheckpointError naming the file
    when it is missing, truncated, corrupt or not a training state)."""
    from safetensors import safe_open

    path = path_prefix + STATE_SUFFIX
    if not os.path.isfile(path):
        raise CheckpointError(f"missing training state {path}")
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several error types for bad headers / truncation
        raise CheckpointError(f"corrupt or unreadable training state {path}: {e}") from e
    if _STATE_KEY not in meta:
        raise CheckpointError(f"{path} is not a training state (no {_STATE_KEY!r} metadata)")
    try:
        body = json.loads(meta[_STATE_KEY])
        return _decode(body["state"], tensors)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"corrupt training state {path}: {type(e).__name__}: {e}") from e


# --------------------------------------------------------------------------- run snapshots
SNAPSHOT_PREFIX = "checkpoint-"
SNAPSHOT_STATE = "state"  # <snapshot>/state.safetensors
KEEP_SNAPSHOTS = 2
RUN_CONFIG = "train_config.json"  # written when a run starts: its settings and fingerprint
DIVERGED = "diverged.json"  # written when a run stops on a non-finite number: the step and the error


def discard(path: str) -> None:
    """Remove a file or folder so that it never appears half-deleted under its name: renamed to a
    hidden ``.tmp`` name first (a killed removal leaves an orphan :func:`remove_leftovers` deletes)."""
    if not os.path.lexists(path):
        return
    hidden = _tmp_name(path)
    os.rename(path, hidden)
    if os.path.isdir(hidden) and not os.path.islink(hidden):
        shutil.rmtree(hidden)
    else:
        os.unlink(hidden)


def remove_leftovers(folder: str) -> None:
    """Tidy what killed writers left in ``folder``: their hidden ``.tmp`` files and folders are
    removed, a folder cut off between the two renames of a (non-Linux) swap is put back."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        m = _TMP_RE.match(entry)
        if not m:
            continue
        target = os.path.join(folder, m["name"])
        if m["kind"] == "tmp":
            remove_orphans(target)
        else:
            recover_folder(target)


@contextlib.contextmanager
def staged_file(path: str) -> Iterator[str]:
    """Yield a path with ``path``'s file name inside a hidden temporary folder next to it; the file
    written there is renamed to ``path`` when the block ends without an exception. For writers that
    need the real file name (video encoders pick the container by extension); a killed writer
    leaves a ``.tmp`` folder that :func:`remove_leftovers` deletes."""
    hidden = _tmp_name(path)
    os.makedirs(hidden)
    try:
        staged = os.path.join(hidden, os.path.basename(path))
        yield staged
        os.chmod(staged, file_mode())
        os.replace(staged, path)
    finally:
        shutil.rmtree(hidden, ignore_errors=True)


class Snapshots:
    """The resumable snapshots of one run folder: ``<folder>/checkpoint-<step>/state.safetensors`` (+
    ``manifest.json``), each written as one unit; the newest ``keep`` are kept."""

    def __init__(self, folder: str, keep: int = KEEP_SNAPSHOTS):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
        self.folder, self.keep = folder, keep

    def path(self, step: int) -> str:
        return os.path.join(self.folder, f"{SNAPSHOT_PREFIX}{int(step):08d}")

    def list(self) -> list[tuple[int, str]]:
        """``(step, path)`` of every snapshot folder, newest first."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        found = []
        for name in names:
            digits = name[len(SNAPSHOT_PREFIX):]
            path = os.path.join(self.folder, name)
            if name.startswith(SNAPSHOT_PREFIX) and digits.isdigit() and os.path.isdir(path):
                found.append((int(digits), path))
        return sorted(found, reverse=True)

    def save(self, step: int, state: Any) -> str:
        """Write the snapshot of ``step`` (replacing one of the same step), then drop all but the
        newest ``keep``."""
        path = self.path(step)
        with atomic_folder(path) as tmp:
            _write_state(os.path.join(tmp, SNAPSHOT_STATE + STATE_SUFFIX), state)
        for _, old in self.list()[self.keep:]:
            discard(old)
        return path

    @staticmethod
    def read(path: str, device: str = "cpu") -> Any:
        """The state of one snapshot folder, after checking every file against its manifest."""
        if os.path.islink(path.rstrip(os.sep)):  # snapshots are written in place, never linked: this one came from elsewhere
            raise CheckpointError(f"{path} is a link to {os.path.realpath(path)}: a snapshot is never a link (one into "
                                  "another run would resume that run's weights); not reading it")
        if read_manifest(path) is None:
            raise CheckpointError(f"{path} has no manifest.json: not a complete snapshot")
        verify_folder(path, checksums=True)
        state = load_state(os.path.join(path, SNAPSHOT_STATE), device)
        digits = os.path.basename(path.rstrip(os.sep))[len(SNAPSHOT_PREFIX):]
        step = state.get("step") if isinstance(state, dict) else None
        if digits.isdigit() and isinstance(step, int) and not isinstance(step, bool) and step != int(digits):
            # a snapshot renamed or copied in from another run would resume at the wrong step with its metrics
            raise CheckpointError(f"{path} holds the state of step {step}, not of step {int(digits)} its name gives: "
                                  "renamed or copied from another run")
        return state

    def load_latest(self, device: str = "cpu") -> Optional[tuple[int, str, Any]]:
        """``(step, path, state)`` of the newest readable snapshot, or None when there is none. Newer
        unreadable ones are set aside as ``<name>.unreadable`` (kept, never deleted) with a warning;
        when none is readable, CheckpointError names them all."""
        found = self.list()
        errors = []
        for step, path in found:
            try:
                state = self.read(path, device)
            except CheckpointError as e:
                errors.append((path, e))
                continue
            for bad, e in errors:
                aside = _unused_name(bad + ".unreadable")
                os.rename(bad, aside)
                warnings.warn(f"skipping unreadable snapshot {bad} (kept as {os.path.basename(aside)}): {e}; "
                              f"resuming from step {step}", stacklevel=3)
            return step, path, state
        if errors:
            raise CheckpointError(f"no readable snapshot in {self.folder}: "
                                  + "; ".join(f"{p}: {e}" for p, e in errors)
                                  + " (pass overwrite=True / --overwrite to start again)")
        return None

    def remove_all(self) -> None:
        for _, path in self.list():
            discard(path)


def _unused_name(path: str) -> str:
    candidate, n = path, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = f"{path}-{n}"
    return candidate


def _fingerprint_value(value: Any) -> Any:
    # numpy numbers and arrays from a Python caller (``batch_size=np.int64(4)``) as the Python numbers they
    # equal, so that they resume a run started with plain numbers (as text, "4" would not)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def fingerprint_text(fingerprint: dict) -> str:
    """Canonical JSON of a run's fingerprint (the settings a resumed run must share)."""
    return json.dumps(fingerprint, sort_keys=True, default=_fingerprint_value)


_ABSENT = object()  # a key a fingerprint does not hold: fingerprints store some settings only when not the default


def _shown(value: Any, key: str, defaults: Mapping[str, Any]) -> str:
    """A fingerprint value for a message: an absent key is the default (with its value when ``defaults``
    knows it), not ``None``."""
    if value is not _ABSENT:
        return repr(value)
    default = defaults.get(key)
    return "the default" if default is None else f"{default!r} (the default)"


def _differences(saved: Any, now: Any, where: str = "", saved_defaults: Mapping[str, Any] = {},
                 now_defaults: Mapping[str, Any] = {}) -> list[str]:
    # a group of settings on one side only (stored only when one of its values is not the default) is
    # compared key by key with an empty one, so that the message names the setting that differs
    if isinstance(saved, dict) and now is _ABSENT:
        now = {}
    if saved is _ABSENT and isinstance(now, dict):
        saved = {}
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(saved) | set(now), key=str):
            out += _differences(saved.get(k, _ABSENT), now.get(k, _ABSENT), f"{where}.{k}" if where else str(k),
                                saved_defaults, now_defaults)
        return out
    if saved == now:
        return []
    key = where or "settings"
    return [f"{key}: saved {_shown(saved, key, saved_defaults)}, now {_shown(now, key, now_defaults)}"]


def _recorded_settings(record: Any) -> dict[str, Any]:
    """The settings a saved run's record (its snapshot or ``train_config.json``) holds under ``config``: the
    saved values of settings its fingerprint leaves out when they are the default."""
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict):
        return {}
    return {k: v for k, v in config.items() if isinstance(k, str) and not isinstance(v, (dict, list))}


def _check_fingerprint(saved_text: Any, fingerprint: dict, source: str,
                       defaults: Optional[Mapping[str, Any]] = None, record: Any = None) -> None:
    """Refuse (ValueError naming the settings that differ) a saved run whose fingerprint is not this one.
    A setting the saved fingerprint does not hold was the default: shown as such, with the value
    ``defaults`` (dotted fingerprint key -> default) or the saved run's ``record`` (a top-level key) gives."""
    now_text = fingerprint_text(fingerprint)
    if saved_text == now_text:
        return
    try:
        saved = json.loads(saved_text) if isinstance(saved_text, str) else None
    except ValueError:
        saved = None
    if isinstance(saved, dict):
        defaults = dict(defaults or {})
        diffs = _differences(saved, json.loads(now_text), saved_defaults={**_recorded_settings(record), **defaults},
                             now_defaults=defaults)
    else:
        diffs = ["no recorded settings"]
    world = saved.get("world_size") if isinstance(saved, dict) else None
    if isinstance(world, int) and world != fingerprint.get("world_size"):
        # a pre-empted job restarted on another number of processes: the data order is sharded by it
        diffs = [d + (f" (continue it with {world} processes, e.g. torchrun --nproc_per_node {world})" if world > 1
                      else " (continue it as one process, without torchrun)") if d.startswith("world_size:") else d
                 for d in diffs]
    data = [d for d in diffs if d.startswith(("data.", "data:"))]
    settings = [d for d in diffs if d not in data]
    # a digest of the training data is no setting to "rerun with": said as data (examples added, removed, changed)
    what = "; ".join(([f"other settings ({'; '.join(settings[:6])})"] if settings else [])
                     + ([f"other training data (examples added, removed or changed: {'; '.join(data[:2])})"]
                        if data else []))
    again = " and ".join((["the saved values"] if settings else []) + (["the run's data"] if data else []))
    # the first way out is the one a rerun after a pre-emption wants: the saved settings (the same number of processes)
    raise ValueError(f"{source} was written by a run with {what}: rerun with {again} to continue it, use another "
                     "output folder, or overwrite=True (--overwrite) to start again there")


_HELD_LOCKS: dict[str, int] = {}  # real path of a run folder -> the descriptor holding its lock in this process


def lock_run_folder(folder: str) -> None:
    """Hold the run lock of ``folder`` (made if missing) for this process: an exclusive ``flock`` on the
    folder itself, so that a second process training into the same folder (a job started twice, a
    scheduler's retry while the first still runs) is refused instead of both writing one run's snapshots
    and logs. Re-entrant within a process; the kernel releases it when the process ends, however it ends
    (a killed run leaves no stale lock). Where the OS or file system has no locks, runs are unguarded."""
    os.makedirs(folder, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _HELD_LOCKS:
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"{folder} is in use by another training run (a running process holds it): wait for that "
                         "run to end or stop it, or use another output folder") from None
    except OSError:  # a file system without locks (some network mounts)
        os.close(fd)
        return
    _HELD_LOCKS[key] = fd


def unlock_run_folder(folder: str) -> None:
    """Release the run lock :func:`lock_run_folder` took on ``folder`` (nothing when this process holds none)."""
    if not folder:
        return
    fd = _HELD_LOCKS.pop(os.path.realpath(os.fspath(folder)), None)
    if fd is not None:
        os.close(fd)


def run_files_present(folder: str, run_files: Sequence[str], snapshots: Optional["Snapshots"] = None) -> list[str]:
    """The files of a training run ``folder`` holds (its config, ``run_files``, its newest snapshot): none
    means a run started there starts at step 0; reads only."""
    if not os.path.isdir(folder):
        return []
    present = [name for name in (RUN_CONFIG, *run_files) if os.path.lexists(os.path.join(folder, name))]
    return present + [os.path.basename(p) for _, p in (snapshots or Snapshots(folder)).list()[:1]]


def start_run(folder: str, fingerprint: dict, *, resume: bool, overwrite: bool, run_files: Sequence[str],
              keep: int = KEEP_SNAPSHOTS, device: str = "cpu",
              defaults: Optional[Mapping[str, Any]] = None) -> tuple[Snapshots, Optional[dict]]:
    """How a training run in ``folder`` starts; returns its :class:`Snapshots` and the state to
    resume from (None: start at step 0).

    * ``folder`` is locked for this process first (:func:`lock_run_folder`: another process training there
      is refused); the caller releases it when the run ends (:func:`unlock_run_folder`), a refusal here does;
    * ``overwrite``: the old run's snapshots and ``run_files`` (logs, model, …) are removed first;
    * a folder without a run: a fresh start;
    * a folder with a run (a snapshot, :data:`RUN_CONFIG` or any of ``run_files``): resumed from its
      newest readable snapshot when ``resume`` and its fingerprint matches; a run stopped before its
      first snapshot starts again from step 0. Refused (ValueError) without ``resume``, for another
      run's settings or for files of no run this trainer knows; CheckpointError when no snapshot
      is readable. ``defaults`` (dotted fingerprint key -> value) are the values of settings a fingerprint holds
      only when not the default, for the message naming a difference (else the saved run's ``config``
      record gives them, or it says "the default")."""
    if os.path.islink(folder) and not os.path.exists(folder):
        raise FileNotFoundError(f"{folder} is a link to {os.readlink(folder)!r}, which does not exist: create the "
                                "folder it points to, or give another output folder")
    if os.path.lexists(folder) and not os.path.isdir(folder):  # else the first write fails with a bare errno
        raise NotADirectoryError(f"{folder} is a file, not a folder: a run's output folder must be a folder or "
                                 "not exist yet")
    # before anything is removed or read: a second process in the same folder is refused, not mixed in; held
    # until the trainer ends (unlock_run_folder), released here when the run is refused
    lock_run_folder(folder)
    try:
        return _start_locked_run(folder, fingerprint, resume, overwrite, run_files, keep, device, defaults)
    except BaseException:
        unlock_run_folder(folder)
        raise


def _start_locked_run(folder: str, fingerprint: dict, resume: bool, overwrite: bool, run_files: Sequence[str],
                      keep: int, device: str, defaults: Optional[Mapping[str, Any]]) -> tuple[Snapshots, Optional[dict]]:
    snapshots = Snapshots(folder, keep)
    remove_leftovers(folder)
    if overwrite:
        snapshots.remove_all()
        for name in (RUN_CONFIG, *run_files):
            discard(os.path.join(folder, name))
        return snapshots, None
    present = run_files_present(folder, run_files, snapshots)
    if not present:
        return snapshots, None
    if not resume:
        raise ValueError(f"{folder} holds a training run ({', '.join(present)}): pass resume=True (--resume) to "
                         "continue it, or overwrite=True (--overwrite) to start again")
    latest = snapshots.load_latest(device)
    if latest is not None:
        _, path, state = latest
        _check_fingerprint(state.get("fingerprint") if isinstance(state, dict) else None, fingerprint, path,
                           defaults, state)
        return snapshots, state
    run_config = os.path.join(folder, RUN_CONFIG)
    if not os.path.isfile(run_config):
        raise ValueError(f"{folder} holds files of another program or run ({', '.join(present)}) and no "
                         f"{RUN_CONFIG}: use another output folder, or overwrite=True (--overwrite)")
    record = _read_json(run_config)
    _check_fingerprint(fingerprint_text(record.get("fingerprint")), fingerprint, run_config, defaults, record)
    return snapshots, None  # stopped before its first snapshot: step 0 is where it resumes


def write_run_config(folder: str, fingerprint: dict, body: dict) -> None:
    """``<folder>/train_config.json``: a run's settings (``body``) and its fingerprint."""
    doc = dict(body, fingerprint=json.loads(fingerprint_text(fingerprint)))
    atomic_write_text(os.path.join(folder, RUN_CONFIG), json.dumps(doc, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- what a run folder holds
RUN_MODEL_FOLDERS = ("model", "reward")  # where a finished run keeps its model (train-video: the reward in reward/)


def run_model_folders(run: str) -> list[str]:
    """The model folders a training run's output folder ``run`` holds (``model/``, ``reward/`` with a
    ``config.json``), in that order; empty for a folder that is itself a model or holds none."""
    if os.path.isfile(os.path.join(run, CONFIG_NAME)):
        return []
    return [os.path.join(run, sub) for sub in RUN_MODEL_FOLDERS if os.path.isfile(os.path.join(run, sub, CONFIG_NAME))]


def pick_run_model(run: str, accept: Any) -> Optional[str]:
    """The model folder of a training run's output folder ``run``: the first of :func:`run_model_folders` whose
    ``config.json`` names a ``model_type`` that ``accept(model_type)`` takes, else the first of them (refused
    with its own reason where it is read); None when the run holds none."""
    found = run_model_folders(run)
    for folder in found:
        try:
            with open(os.path.join(folder, CONFIG_NAME), encoding="utf-8-sig") as f:
                model_type = json.load(f).get("model_type")
        except (OSError, ValueError, AttributeError, RecursionError):  # RecursionError: deeply nested arrays
            continue
        if isinstance(model_type, str) and accept(model_type):
            return folder
    return found[0] if found else None


def newest_snapshot_step(run: str) -> Optional[int]:
    """The step of the newest snapshot in ``run`` (None: none)."""
    found = Snapshots(run).list()
    return found[0][0] if found else None


def _read_json_object(path: str) -> dict:
    """The JSON object in ``path`` ({} when there is none readable)."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def _run_record(run: str) -> dict:
    """A run's ``train_config.json`` ({} when it has none readable)."""
    return _read_json_object(os.path.join(run, RUN_CONFIG))


def _run_max_steps(record: dict) -> Optional[int]:
    """The ``max_steps`` a run's record holds (None: none, or not a step count)."""
    max_steps = record.get("max_steps")
    return max_steps if isinstance(max_steps, int) and not isinstance(max_steps, bool) else None


def run_folder_problem(folder: Union[str, "os.PathLike[str]"]) -> Optional[str]:
    """Why ``folder`` — a training snapshot (``<run>/checkpoint-<step>/``) or the output folder of a run that
    has not written its model yet (killed, or still running) — is not a model folder, in one line saying what
    to open or run instead; None for anything else (a model folder, a finished run, a missing path)."""
    folder = os.path.expanduser(os.fsdecode(os.fspath(folder)))
    if not os.path.isdir(folder) or os.path.isfile(os.path.join(folder, CONFIG_NAME)):
        return None
    given = os.path.normpath(folder)
    name = os.path.basename(given)
    digits = name[len(SNAPSHOT_PREFIX):].split(".unreadable")[0]
    if name.startswith(SNAPSHOT_PREFIX) and digits.isdigit() \
            and os.path.isfile(os.path.join(folder, SNAPSHOT_STATE + STATE_SUFFIX)):
        # a link to a snapshot: the run it is in, not the link's folder
        run = os.path.dirname(os.path.realpath(given)) if os.path.islink(given) else (os.path.dirname(given) or ".")
        what = (f"{folder} is a training snapshot (step {int(digits)} of the run in {run}), not a model folder: it "
                "holds the trainer's state for resuming the run" + (" (set aside as unreadable)" if ".unreadable" in name else ""))
        models = run_model_folders(run)
        if models:
            return f"{what}; the run's model is {models[0]} (or give the run folder)"
        return (f"{what}; the run has not saved its model yet: rerun its training command with the same output "
                f"folder and --resume to finish it (it continues from its newest snapshot), then open {run}")
    # a folder of another trainer's checkpoint-<N>/ folders (a transformers Trainer output, a release such as
    # VideoReward's) is no mmreward run: only snapshots holding mmreward's state file count
    is_run = os.path.isfile(os.path.join(folder, RUN_CONFIG)) or any(
        os.path.isfile(os.path.join(path, SNAPSHOT_STATE + STATE_SUFFIX)) for _, path in Snapshots(folder).list())
    # train-rl runs keep train.csv and replay/ and save no model by design: not "unfinished"
    if is_run and not any(os.path.exists(os.path.join(folder, sub)) for sub in (*RUN_MODEL_FOLDERS, "replay", "train.csv")):
        step, record = newest_snapshot_step(folder), _run_record(folder)
        max_steps = _run_max_steps(record)
        if step is not None and max_steps is not None and step >= max_steps and record.get("saves_model") is False:
            # a finished run of a trainer that saves no model folder (a plain nn.Module, ReFL's UNet)
            return (f"{folder} is a finished training run that saved no model folder (its trainer writes none): its "
                    f"weights are in its last snapshot, {Snapshots(folder).path(step)}, which is no model either")
        where = f"its newest snapshot is step {step}" if step is not None else "it stopped before its first snapshot"
        diverged = _read_json_object(os.path.join(folder, DIVERGED))
        if diverged:  # a --resume would run into the same numbers again (a resume keeps the run's settings)
            return (f"{folder} is a training run that diverged ({str(diverged.get('error', 'a non-finite number'))[:300]}): "
                    f"it has no model ({where}); start it again with --overwrite (or in another folder) with a lower "
                    "learning rate, max_grad_norm set, or the bad example fixed")
        return (f"{folder} is a training run that has not finished: it has no model yet ({where}); rerun its training "
                "command with the same output folder and --resume to finish it (it continues from its newest "
                "snapshot), then open this folder")
    return None


def unfinished_run_note(folder: Union[str, "os.PathLike[str]"]) -> Optional[str]:
    """A note when ``folder`` is a run whose model is older than the run: the run was continued with more
    steps (``train_config.json``'s ``max_steps``) and has not reached them (it is running, or was killed),
    so its ``model/`` is the model of an earlier end of the run; None otherwise."""
    folder = os.path.expanduser(os.fsdecode(os.fspath(folder)))
    if not run_model_folders(folder):
        return None
    step, max_steps = newest_snapshot_step(folder), _run_max_steps(_run_record(folder))
    if max_steps is None or step is None or step >= max_steps:
        return None
    return (f"the training run in {folder} has not finished (newest snapshot: step {step} of {max_steps}): its model "
            "is the one of an earlier end of the run; rerun its training command with --resume to finish it")


# ------------------------------------------------------------------ data digests (run fingerprints)
def update_digest(h: "hashlib._Hash", item: Any) -> None:
    """Feed one training item into ``h``: a tensor or numpy array by dtype, shape and bytes; anything
    else as JSON with sorted keys (dataclasses as dicts, other objects by ``repr``)."""
    if isinstance(item, (torch.Tensor, np.ndarray)):
        a = torch.as_tensor(item).detach().cpu().contiguous()
        h.update(f"{a.dtype}{tuple(a.shape)}".encode())
        h.update(a.reshape(-1).view(torch.uint8).numpy().data if a.numel() else b"")
        return
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        item = dataclasses.asdict(item)
    try:
        text = json.dumps(item, sort_keys=True, default=repr, separators=(",", ":"))
    except TypeError:  # keys json cannot sort (str and int keys in one dict)
        text = repr(item)
    h.update(text.encode("utf-8", "surrogatepass"))


def data_digest(items: Any, unit: str = "items") -> dict:
    """``{unit: n, "sha256": ...}`` over training items in order (see :func:`update_digest`): part of a
    trainer's ``resume_settings``, so a run is continued only on the data it started on."""
    h, n = hashlib.sha256(), 0
    for item in items:
        update_digest(h, item)
        h.update(b"\n")
        n += 1
    return {unit: n, "sha256": h.hexdigest()[:16]}

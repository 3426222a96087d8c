"""Checkpoints: safetensors + JSON, written atomically, loaded without executing pickled code.

Two shapes:

* **Model folders** (``save_pretrained`` / ``from_pretrained``): ``config.json`` + ``model.safetensors``.
* **Training states** (exact resume): any nested structure of dicts / lists / tuples / tensors /
  numbers / strings (optimizer and scheduler ``state_dict()``s, RNG states, step counters) saved as
  ``<name>.safetensors`` (the tensors) + ``<name>.json`` (the structure).

Every file is written to a temporary name in the same folder, flushed, fsynced, then renamed over
the target, so a crash leaves the previous checkpoint intact. The JSON side records the byte size of
its safetensors file: a truncated or mismatched pair is reported as corrupt instead of loading junk.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Optional

import numpy as np
import torch

from .folders import CheckpointError, atomic_write, atomic_write_text  # noqa: F401  (re-exported)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- atomic writes
# (core.folders: temporary name in the same folder, fsync, umask permissions, rename; orphans of killed
# writers are removed by the next write to the same target)


def _save_tensors(path: str, tensors: dict[str, torch.Tensor], metadata: Optional[dict[str, str]] = None) -> int:
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
    atomic_write(path, lambda tmp: save_file(clean, tmp, metadata=metadata))
    return os.path.getsize(path)


def _load_tensors(path: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not os.path.exists(path):
        raise CheckpointError(f"missing weights file {path}")
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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt JSON in {path}: {e}") from e
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


def save_state(path_prefix: str, state: Any) -> None:
    """Save a nested training state as ``<prefix>.safetensors`` + ``<prefix>.json`` (atomic each)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors)
    size = _save_tensors(path_prefix + ".safetensors", tensors)
    body = {"format_version": FORMAT_VERSION, "tensors_bytes": size, "state": tree}
    atomic_write_text(path_prefix + ".json", json.dumps(body))


def load_state(path_prefix: str, device: str = "cpu") -> Any:
    body = _read_json(path_prefix + ".json")
    weights = path_prefix + ".safetensors"
    if os.path.exists(weights) and os.path.getsize(weights) != body.get("tensors_bytes"):
        raise CheckpointError(f"{weights} does not match {path_prefix}.json (truncated or from another save)")
    tensors = _load_tensors(weights, device)
    try:
        return _decode(body["state"], tensors)
    except KeyError as e:
        raise CheckpointError(f"{path_prefix}.json refers to a tensor missing from {weights}: {e}") from e

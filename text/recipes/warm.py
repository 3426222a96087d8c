"""WARM — weight-averaged reward models (Ramé et al., 2024).

M reward models fine-tuned from **one shared init** (different seeds, data orders, hyper-parameters)
are linearly mode-connected, so averaging their weights gives one model that is about as good as
their prediction ensemble, at the cost of one model. Averaging models from *different* inits gives
junk, so this module refuses to:

* **key / shape / dtype check** — every member must have the same state-dict keys, shapes and
  dtypes; integer / bool buffers (position ids, ...) must be identical;
* **input check** (:func:`check_same_inputs`) — every member must read its inputs alike: the same
  config settings (``max_length``, ``pooling``, ``input_format``, …) and the same tokenizer; the
  merged model keeps member 0's, which would silently be wrong for the others;
* **shared-init check** (:func:`init_distances`) — for each weight matrix the relative L2 distance
  ``‖θ_m − θ_0‖ / sqrt((‖θ_m‖² + ‖θ_0‖²) / 2)`` of member m to member 0, median over matrices.
  Independently initialised matrices are ≈ √2 ≈ 1.41 apart (uncorrelated weights); members
  fine-tuned from one init stay far below (≈ 0.1–0.3 in the tests, less for a pretrained backbone
  fine-tuned at a small learning rate). Above
  ``max_init_distance`` (default 0.8) :func:`warm_average` raises :class:`WARMInitError`. The check
  needs nothing stored at training time; run ``init_distances(...)`` yourself to see the numbers,
  or pass ``check_init=False`` to average anyway.

Weights: uniform by default; ``weights`` (non-negative, any scale) are normalised to sum to 1.
Averaging is done in float64 and cast back to each tensor's dtype.

    merged = warm_average(["runs/rm_seed0", "runs/rm_seed1", "runs/rm_seed2"])   # a RewardModel
    merged.save_pretrained("runs/rm_warm")
    # CLI: mmreward text merge runs/rm_seed0 runs/rm_seed1 runs/rm_seed2 --out runs/rm_warm
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from typing import Any, Optional, Sequence

import torch
from torch import nn


class WARMInitError(ValueError):
    """The members were not fine-tuned from one init (or cannot be averaged key by key)."""


def _load_member(member: Any) -> nn.Module:
    if isinstance(member, nn.Module):
        return member
    if isinstance(member, (str, os.PathLike)):  # a pathlib.Path is a folder path too
        from mmreward.text.reward_model import RewardModel  # lazy: transformers

        return RewardModel.from_pretrained(os.fspath(member))  # a run folder as its model; a snapshot named
    raise TypeError(f"WARM members must be nn.Module or folder paths, got {type(member).__name__}")


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in m.state_dict().items()}


def check_compatible(states: Sequence[dict[str, torch.Tensor]], names: Optional[Sequence[str]] = None) -> None:
    """Same keys, shapes and dtypes in every state dict; non-float tensors identical. Raises WARMInitError."""
    names = list(names) if names is not None else [f"member {i}" for i in range(len(states))]
    ref = states[0]
    for name, st in zip(names[1:], states[1:]):
        missing, extra = sorted(set(ref) - set(st)), sorted(set(st) - set(ref))
        if missing or extra:
            raise WARMInitError(f"{name} has different weights than {names[0]}: missing {missing[:5]}, "
                                f"unexpected {extra[:5]} — not the same architecture")
        for k, v in ref.items():
            w = st[k]
            if w.shape != v.shape:
                raise WARMInitError(f"{name}: `{k}` has shape {tuple(w.shape)} but {names[0]} has {tuple(v.shape)}")
            if w.dtype != v.dtype:
                raise WARMInitError(f"{name}: `{k}` is {w.dtype} but {names[0]} has {v.dtype}")
            if not v.is_floating_point() and not torch.equal(v.cpu(), w.cpu()):
                raise WARMInitError(f"{name}: non-float buffer `{k}` differs from {names[0]}'s")
            if v.is_floating_point() and not torch.isfinite(w).all():
                raise WARMInitError(f"{name}: `{k}` contains NaN / inf")


def _tokenizer_identity(tokenizer: Any) -> tuple:
    """What decides the token ids a tokenizer gives: its vocabulary and its chat template."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else None
    return vocab, getattr(tokenizer, "chat_template", None)


# Backbone config keys that do not change what a trained model computes at inference: the run's provenance,
# output switches, initialisation and dropout (WARM's members may be fine-tuned with different dropout).
_BACKBONE_IGNORED = ("_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype", "use_cache",
                     "output_attentions", "output_hidden_states", "return_dict", "id2label", "label2id",
                     "problem_type", "initializer_range", "_attn_implementation", "_attn_implementation_autoset",
                     "auto_map")


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _backbone_settings(model: Any) -> Any:
    """The backbone's transformers config as the loaded model holds it (``to_dict()``: a config saved by another
    transformers version reads in this version's form, ``rope_theta`` as ``rope_parameters`` …), else the saved
    ``config.backbone`` dict."""
    config = getattr(getattr(model, "backbone", None), "config", None)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return getattr(getattr(model, "config", None), "backbone", None)


def _check_same_backbone(mine: Any, theirs: Any, name: str, ref_name: str) -> None:
    """The same backbone settings: shape-neutral ones (``hidden_act`` gelu vs relu, ``layer_norm_eps``,
    ``rope_theta``, ...) pass the key / shape check, and the merged model would compute with member 0's.
    Keys only one side has are left out: a checkpoint saved by another transformers version carries keys of
    that version (``max_length``, ``num_beams``, ``torchscript``, ``use_bfloat16`` of 4.x) the other lacks."""
    if not isinstance(mine, dict) or not isinstance(theirs, dict):
        return
    for k in ["model_type"] + sorted(set(mine) & set(theirs)):  # another model type: named as such, first
        if k in _BACKBONE_IGNORED or "dropout" in k:
            continue
        if _as_json(mine.get(k)) != _as_json(theirs.get(k)):  # a tuple in memory is a list once saved
            raise WARMInitError(f"{name}'s backbone has {k}={mine.get(k)!r} but {ref_name}'s {k}={theirs.get(k)!r}: "
                                f"not the same architecture (the merged model would compute as {ref_name} does)")


def check_same_inputs(models: Sequence[nn.Module], names: Optional[Sequence[str]] = None) -> None:
    """Every member reads its inputs as member 0 does: equal config settings (the backbone's transformers
    config too, but for keys that do not change its outputs) and the same tokenizer.
    Same-shaped weights do not show this: two tokenizers of one size, or another ``max_length`` /
    ``pooling`` (or backbone setting such as ``hidden_act``: dropout and provenance keys aside), average
    without error into a model that reads inputs as member 0 only. Raises
    WARMInitError naming the setting and both values."""
    names = list(names) if names is not None else [f"member {i}" for i in range(len(models))]
    ref = models[0]
    ref_config = getattr(ref, "config", None)
    for name, m in zip(names[1:], models[1:]):
        config = getattr(m, "config", None)
        if dataclasses.is_dataclass(ref_config) and dataclasses.is_dataclass(config):
            _check_same_backbone(_backbone_settings(m), _backbone_settings(ref), name, names[0])
            for f in dataclasses.fields(ref_config):
                if f.name == "backbone":
                    continue
                mine, theirs = getattr(config, f.name, None), getattr(ref_config, f.name)
                if mine != theirs:
                    raise WARMInitError(f"{name} reads its inputs with {f.name}={mine!r} but {names[0]} with "
                                        f"{f.name}={theirs!r}: the merged model would read them as {names[0]} does")
        ref_tok, tok = getattr(ref, "tokenizer", None), getattr(m, "tokenizer", None)
        if ref_tok is not None and tok is not None and _tokenizer_identity(tok) != _tokenizer_identity(ref_tok):
            raise WARMInitError(f"{name} has another tokenizer than {names[0]} (its vocabulary or chat template "
                                "differs): the same token ids would mean other text")


def init_distances(states: Sequence[dict[str, torch.Tensor]]) -> list[float]:
    """Distance of every member to member 0 (module docstring): the median over weight matrices
    (float tensors with >= 2 dims) of ``‖a − b‖ / sqrt((‖a‖² + ‖b‖²) / 2)``.

    Matrices only, and the median: norms / biases start at the same constants in every init (so
    they hide a different init in a global norm), and a re-initialised head should not decide."""
    ref = states[0]
    keys = [k for k, v in ref.items() if v.is_floating_point() and v.dim() >= 2]
    if not keys:
        raise WARMInitError("no weight matrices to compare; pass check_init=False")
    out = []
    for st in states:
        rel = []
        for k in keys:
            a, b = ref[k].double(), st[k].double()
            scale = math.sqrt((a.pow(2).sum().item() + b.pow(2).sum().item()) / 2)
            rel.append((a - b).norm().item() / scale if scale > 0 else 0.0)
        out.append(float(torch.tensor(rel).median()))
    return out


def _normalise(weights: Optional[Sequence[float]], m: int) -> list[float]:
    if weights is None:
        return [1.0 / m] * m
    # a string's characters would be read as the weights ("13" as 1 and 3), a bool as 0 / 1
    if isinstance(weights, (str, bytes)) or any(isinstance(x, (str, bytes, bool)) for x in weights):
        raise TypeError(f"weights must be a list of numbers, one per model, got {weights!r}")
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError):
        raise TypeError(f"weights must be a list of numbers, one per model, got {weights!r}") from None
    if len(w) != m:
        raise ValueError(f"got {len(w)} weights for {m} models")
    if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w}")
    return [x / sum(w) for x in w]


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]], weights: Optional[Sequence[float]] = None, *,
                        check_init: bool = True, max_init_distance: float = 0.8,
                        names: Optional[Sequence[str]] = None) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts (float tensors averaged in float64; others copied from member 0)."""
    if len(states) < 1:
        raise ValueError("WARM needs at least one model")
    if not (isinstance(max_init_distance, (int, float)) and math.isfinite(max_init_distance) and max_init_distance > 0):
        raise ValueError(f"max_init_distance must be a finite number > 0, got {max_init_distance!r}")
    names = list(names) if names is not None else [f"member {i}" for i in range(len(states))]
    w = _normalise(weights, len(states))
    check_compatible(states, names)
    if check_init and len(states) > 1:
        dist = init_distances(states)
        far = [(n, d) for n, d in zip(names, dist) if d > max_init_distance]
        if far:
            detail = ", ".join(f"{n}: {d:.2f}" for n, d in far)
            raise WARMInitError(
                f"these members are too far from {names[0]} to share its init ({detail}; relative L2 distance, "
                f"limit {max_init_distance}; independently initialised models are ≈1.41 apart, models fine-tuned "
                "from one init far below). WARM only works for models fine-tuned from one init; pass "
                "check_init=False (CLI --no-check-init) to average anyway")
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            acc = torch.zeros(v.shape, dtype=torch.float64, device=v.device)
            for wi, st in zip(w, states):
                acc += wi * st[k].to(v.device, torch.float64)
            out[k] = acc.to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def warm_average(members: Sequence[Any], weights: Optional[Sequence[float]] = None, *, check_init: bool = True,
                 max_init_distance: float = 0.8) -> nn.Module:
    """Average M reward models (modules or ``from_pretrained`` folders) into a new model of member 0's class.

    The members are not modified; the result is a deep copy of member 0 holding the averaged weights."""
    if isinstance(members, (str, os.PathLike, nn.Module)) or len(members) < 2:
        raise ValueError("WARM needs a list of at least 2 models")
    names = [os.fspath(m) if isinstance(m, (str, os.PathLike)) else f"model {i}" for i, m in enumerate(members)]
    models = [_load_member(m) for m in members]
    kinds = {type(m).__name__ for m in models}
    if len(kinds) > 1:
        raise WARMInitError(f"cannot average models of different classes: {sorted(kinds)}")
    check_same_inputs(models, names)
    avg = average_state_dicts([_state(m) for m in models], weights, check_init=check_init,
                              max_init_distance=max_init_distance, names=names)
    merged = copy.deepcopy(models[0])
    merged.load_state_dict(avg)
    return merged

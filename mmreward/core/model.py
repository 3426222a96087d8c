"""The one model contract: every mmreward reward model is a :class:`RewardScorer`.

    model.score(inputs, batch_size=16) -> Tensor[N]     # one float per input (float32, CPU)
    model.score_parts(inputs) -> list[Tensor[K_i]]      # per step / per frame, where inputs have parts
    model.save_pretrained(folder)                       # atomic: the whole folder or nothing
    Model.from_pretrained(folder, device="cpu", dtype=None)
    mmreward.load(folder)                               # the right class from config.json alone

Inputs are the dataclasses of :mod:`mmreward.core.inputs` (or dicts with their field names).

A saved folder holds ``config.json`` — ``{"model_type": ..., "config": {the dataclass config},
...}`` — the weights as ``model.safetensors`` and whatever else the model needs to score
(tokenizer, processor, normalisation statistics, sub-models), plus ``manifest.json`` (size and
SHA-256 of every file). It is written as a hidden sibling folder and swapped into place
(:func:`mmreward.core.folders.atomic_folder`), so a crash at any point leaves either the old folder
or the new one. Loading checks the manifest (sizes always; SHA-256 with
``MMREWARD_VERIFY_CHECKSUMS=1``) and never unpickles anything.

A subclass sets ``model_type``, ``input_types`` (first = the main one) and ``config_class``, keeps its
dataclass config as ``self.config``, and implements:

* ``_score(items, batch_size) -> Tensor[N]`` (and ``_score_parts`` for step / frame inputs);
* ``_save(folder) -> dict`` — write weights and assets into ``folder`` (a fresh temporary folder);
  the returned dict is merged into ``config.json`` (default: ``model.safetensors`` of the state dict);
* ``_load(folder, body, device) -> model`` — rebuild from a folder and its ``config.json`` body
  (default: ``cls(config)`` + the state dict, strictly).
"""
from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import functools
import itertools
import json
import math
import operator
import os
import re
import threading
import types
import typing
import weakref
from typing import Any, Callable, ClassVar, Optional, Sequence, Union

import torch

from .checkpoint import _load_tensors, _save_tensors
from .device import resolve_device, resolve_dtype
from .folders import MANIFEST_NAME, CheckpointError, atomic_folder, read_manifest, verify_folder
from .inputs import as_inputs
from .lora import has_lora, merged_state_dict, plain_state_view
from .weights import read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 2


# ------------------------------------------------------------------ dataclass configs <-> JSON
def config_to_dict(cfg: Any) -> dict:
    out = dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


def _type_problem(value: Any, hint: Any) -> Optional[str]:
    """Why a JSON ``value`` does not fit the annotation ``hint`` (None when it does, or when the
    annotation is not one of the plain kinds a saved config uses)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return None
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        problems = [_type_problem(value, a) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if origin is typing.Literal:
        return None if value in args else f"one of {list(args)}"
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "a number"
        return "a number, not NaN" if value != value else None
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if hint in (tuple, list) or origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return "a list"
        item = args[0] if args and (len(args) == 2 and args[1] is Ellipsis or origin is not tuple) else None
        if item is not None:
            for v in value:
                if _type_problem(v, item) is not None:
                    return f"a list whose items are each {_type_problem(v, item)}"
        return None
    if hint is dict or origin is dict:
        return None if isinstance(value, dict) else "a JSON object"
    return None


def config_from_dict(cls: type, data: dict, what: str) -> Any:
    """Rebuild a dataclass config; unknown fields and values of the wrong kind (a string where a
    number belongs, NaN) are an error naming the field (a checkpoint from another version, or a
    ``config.json`` edited by hand), not a failure deep inside the model."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} config must be a JSON object, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise CheckpointError(f"{what} config has unknown fields {unknown} (from another version?)")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation this module cannot resolve: the config's own checks still run
        hints = {}
    kw = {}
    for k, v in data.items():
        problem = _type_problem(v, hints[k]) if k in hints else None
        if problem is not None:
            raise CheckpointError(f"{what} config field {k!r} must be {problem}, got {v!r}")
        default = names[k].default
        kw[k] = tuple(v) if isinstance(v, list) and isinstance(default, tuple) else v
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{what} config is invalid: {e}") from e


# ------------------------------------------------------------------ folder pieces
def read_config(folder: str) -> dict:
    """``config.json`` of a model folder as a dict (CheckpointError naming the file otherwise)."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise CheckpointError(f"{folder} has no {CONFIG_NAME}: not a saved model folder")
    return read_json(path)


def check_format_version(folder: str, body: dict) -> None:
    """A folder written by a newer mmreward (a higher ``format_version``) is refused, not misread."""
    version = body.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{os.path.join(folder, CONFIG_NAME)}: format_version must be an integer >= 1, "
                              f"got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{os.path.join(folder, CONFIG_NAME)} has format_version {version}; this mmreward "
                              f"reads up to {FORMAT_VERSION}: upgrade mmreward to load it")


def write_config(folder: str, body: dict) -> None:
    with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as f:
        json.dump(body, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")


def _json_default(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, torch.dtype):
        return str(v).removeprefix("torch.")
    raise TypeError(f"cannot write a {type(v).__name__} into config.json")


def save_weights(folder: str, state_dict: dict[str, torch.Tensor], name: str = WEIGHTS_NAME) -> None:
    """``state_dict`` as safetensors (tied / shared tensors cloned) at ``folder/name``."""
    os.makedirs(folder, exist_ok=True)
    _save_tensors(os.path.join(folder, name), {k: v for k, v in state_dict.items()}, metadata={"format": "pt"})


def load_weights(folder: str, device: Union[str, torch.device] = "cpu", name: str = WEIGHTS_NAME) -> dict[str, torch.Tensor]:
    return _load_tensors(os.path.join(folder, name), str(device))


# key prefixes a wrapper's state_dict adds: (prefix, the wrapper, the call that gives the model's own keys)
_WRAPPER_PREFIXES = (("module.", "a DistributedDataParallel / DataParallel wrapper", "wrapper.module.state_dict()"),
                     ("_orig_mod.", "a torch.compile'd module", "compiled._orig_mod.state_dict()"))


def _wrapper_prefix(keys: Any, own: Any) -> Optional[tuple[str, str, str]]:
    """The wrapper whose prefix every one of ``keys`` carries, and without which they are the model's own
    ``own`` keys (a DDP or torch.compile state_dict), else None. Named in errors, never stripped silently."""
    keys = list(keys)
    for prefix, wrapper, call in _WRAPPER_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys) and {k[len(prefix):] for k in keys} == set(own):
            return prefix, wrapper, call
    return None


def check_state_shapes(own: dict[str, tuple[int, ...]], saved: dict[str, tuple[int, ...]], folder: str) -> None:
    """The names and shapes of a model's ``state_dict`` (``own``) against those of its weights (``saved``): a
    mismatch is one CheckpointError naming the folder and the missing / unexpected / reshaped tensors."""
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[:4]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s), e.g. {unexpected[:4]}")
        wrapped = _wrapper_prefix(saved, own)
        if wrapped is not None:  # weights written from a wrapper's state_dict by hand (safetensors save_file)
            parts.append(f"every key starts with {wrapped[0]!r}, the prefix of {wrapped[1]}'s state_dict: save "
                         f"the model with save_pretrained, or its own state_dict() ({wrapped[2]})")
        raise CheckpointError(f"weights in {folder} do not match its config: {'; '.join(parts)}")
    bad = [(k, tuple(saved[k]), tuple(v)) for k, v in own.items() if tuple(saved[k]) != tuple(v)]
    if bad:
        k, got, want = bad[0]
        raise CheckpointError(f"weights in {folder} do not match its config: {k} has shape {got}, the model "
                              f"expects {want} ({len(bad)} tensor(s) differ)")


def header_shapes(folder: str, name: str = WEIGHTS_NAME) -> Optional[dict[str, tuple[int, ...]]]:
    """Name -> shape of the tensors of ``folder/name`` from its safetensors header (nothing is read), or None
    when the file is missing or unreadable (an empty file, a Git LFS pointer, a damaged header: loading the
    weights names the problem)."""
    from .weights import tensor_shapes, weight_file_problem

    path = os.path.join(folder, name)
    if not os.path.isfile(path) or weight_file_problem(path):
        return None
    try:
        return tensor_shapes(path)
    except CheckpointError:
        return None


UNSAVED_FLOOR = 1 << 30  # bytes of computed (unsaved) buffers build_for_weights accepts whatever the weights' size


def build_for_weights(build: Callable[[], Any], folder: str, shapes: Optional[dict[str, tuple[int, ...]]] = None,
                      saved_names: Optional[Callable[[Any, dict], dict]] = None) -> Any:
    """``build()`` (a model from a folder's config.json) once on the meta device — shapes, no memory — and its
    ``state_dict`` compared with the weights' ``shapes`` (default: ``model.safetensors``' header; ``saved_names``
    maps them to the model's names) before it is built for real: a config that does not match its weights (a
    hostile ``intermediate_size``, an edited ``vocab_size``) is one CheckpointError naming the tensor, not tens of
    GB allocated (or the process killed) before ``load_state_strict`` could say so. Buffers the model computes
    rather than loads (not in the weights) may not need far more memory than the weights. A model whose build
    cannot run on the meta device is built as it always was."""
    from .weights import FIT_FACTOR, FIT_SLACK

    if shapes is None:
        shapes = header_shapes(folder)
    if shapes is not None:
        try:
            with torch.device("meta"):
                probe = build()
        except CheckpointError:
            raise
        except Exception:  # noqa: BLE001 - an op the meta device lacks: the real build (and its errors) decide
            probe = None
        if isinstance(probe, torch.nn.Module):
            own = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
            check_state_shapes(own, saved_names(probe, shapes) if saved_names else shapes, folder)
            stored = sum(math.prod(s) for s in shapes.values())
            unsaved = sorted(((b.numel() * b.element_size(), n, tuple(b.shape)) for n, b in probe.named_buffers()
                              if n not in own), reverse=True)
            # in bytes, with a floor: GPT-Neo's per-layer bool causal masks (max_positions² each) hold more elements
            # than a tiny model's weights, at no real cost; a hostile max_position_embeddings makes terabytes
            if unsaved and sum(n for n, _, _ in unsaved) > max(FIT_FACTOR * 4 * stored + FIT_SLACK, UNSAVED_FLOOR):
                nbytes, name, shape = unsaved[0]
                raise CheckpointError(f"{os.path.join(folder, CONFIG_NAME)}: the model its config describes computes "
                                      f"buffer {name!r} of shape {shape} ({nbytes:.3g} bytes), far more than its "
                                      f"weights hold ({stored:.3g} elements): the config was edited or is another "
                                      "model's; "
                                      "refused before building the model")
            del probe
    return build()


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], folder: str) -> None:
    """``load_state_dict`` whose mismatch error names the folder and the missing / unexpected keys."""
    own = module.state_dict()
    check_state_shapes({k: tuple(v.shape) for k, v in own.items()}, {k: tuple(v.shape) for k, v in state.items()},
                       folder)
    # load_state_dict casts silently: integer or boolean values in a floating-point weight become
    # whole numbers (a corrupted or hand-written file would load and score as garbage)
    # and complex (the imaginary part dropped) or 8-bit float values (a cast that loses all but 3-4 bits) in a
    # weight the model holds in a wider float are no weights it was saved with either
    kinds = [(k, state[k].dtype, v.dtype) for k, v in own.items()
             if v.is_floating_point() and (not state[k].is_floating_point() or state[k].is_complex()
                                           or (state[k].element_size() == 1 and v.element_size() > 1))]
    if kinds:
        k, got, want = kinds[0]
        raise CheckpointError(f"weights in {folder} do not match its config: {k} is {str(got).removeprefix('torch.')}, "
                              f"the model expects a floating-point tensor ({str(want).removeprefix('torch.')}; "
                              f"{len(kinds)} tensor(s) differ)")
    module.load_state_dict(state)


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int (any integer type, e.g. numpy's), else an error naming it."""
    # torch reads tensor(True) and tensor([4]) as indices; a flag or a list is no batch size (as True, array([4]) are not)
    flag = isinstance(batch_size, bool) or (isinstance(batch_size, torch.Tensor)
                                            and (batch_size.dtype == torch.bool or batch_size.dim() != 0))
    try:
        size = None if flag else operator.index(batch_size)
    except TypeError:
        size = None
    if size is None or size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return size


def check_ranges(config: Any, *, counts: Sequence[str] = (), naturals: Sequence[str] = (),
                 weights: Sequence[str] = (), fractions: Sequence[str] = ()) -> None:
    """Range checks of a config's numeric fields, each error naming ``Class.field`` and the value:
    ``counts`` integers >= 1, ``naturals`` integers >= 0, ``weights`` finite numbers >= 0, ``fractions``
    numbers in [0, 1]."""
    rules = [(counts, "an integer >= 1", lambda v: isinstance(v, int) and v >= 1),
             (naturals, "an integer >= 0", lambda v: isinstance(v, int) and v >= 0),
             (weights, "a finite number >= 0", lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0),
             (fractions, "a number in [0, 1]", lambda v: isinstance(v, (int, float)) and 0 <= v <= 1)]
    for names, what, ok in rules:
        for name in names:
            v = getattr(config, name)
            if isinstance(v, bool) or not ok(v):
                raise ValueError(f"{type(config).__name__}.{name} must be {what}, got {v!r}")


def _folder_path(folder: Any, what: str) -> str:
    """``folder`` as a str path with ``~`` expanded (``save_pretrained("~/rm")`` must not make a folder
    named ``~`` in the working folder); anything but a str / os.PathLike is an error naming ``what``."""
    if not isinstance(folder, (str, bytes, os.PathLike)):
        raise TypeError(f"{what}: the folder must be a path (str or os.PathLike), got {type(folder).__name__}")
    path = os.fspath(folder)
    return os.path.expanduser(os.fsdecode(path) if isinstance(path, bytes) else path)


def _added_since_saved(folder: str) -> Any:
    """``keep`` for :func:`atomic_folder`: the top-level entries of an existing saved ``folder`` that its
    manifest does not list — files a user added after saving (a README, evaluation results) — are carried
    into the new save instead of being deleted with the old folder."""
    try:
        manifest = read_manifest(folder) if os.path.isdir(folder) and not os.path.islink(folder) else None
    except CheckpointError:  # a damaged manifest: the folder is replaced as before
        manifest = None
    if manifest is None:
        return lambda rel: False
    saved = {rel.split("/", 1)[0] for rel in manifest["files"]} | {MANIFEST_NAME}
    return lambda rel: rel not in saved


def _float32_cpu(scores: torch.Tensor) -> torch.Tensor:
    """Scores as the contract returns them: float32 on the CPU, whatever the model computed in (a bf16
    model on a GPU); ``.to`` keeps gradients for methods that need them through the score."""
    if scores.dtype != torch.float32 or scores.device.type != "cpu":
        scores = scores.to(device="cpu", dtype=torch.float32)
    return scores


# torch's messages for a matmul / conv / kernel that meets a dtype it cannot take ("mat1 and mat2 must have the
# same dtype", "expected scalar type Float but found BFloat16", "\"addmm_impl_cpu_\" not implemented for 'Half'")
_DTYPE_FAILURE = re.compile(r"same dtype|expected scalar type|Input type \(.*\) and (weight|bias) type|"
                            r"not implemented for '|dtype mismatch|to have the same dtype")


def _run_checking_dtype(model: Any, method: Any, items: list, batch_size: int, name: str) -> Any:
    """``method(items, batch_size)``; a torch dtype error from a model cast (``.half()``, ``.to(torch.bfloat16)``,
    ``load(dtype=...)``) to a dtype it cannot compute in becomes one error naming the model, its dtype and the
    way out, not a "mat1 and mat2" message from deep inside its forward."""
    try:
        return method(items, batch_size)
    except RuntimeError as e:
        if not isinstance(model, torch.nn.Module) or not _DTYPE_FAILURE.search(str(e)):
            raise
        # parameters only: float64 statistics buffers are part of several float32 models' design
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in model.parameters() if t.is_floating_point()})
        if dtypes in ([], ["float32"]):  # a float32 model: a bug of the model, not of the cast
            raise
        where = next((t.device for t in model.parameters()), torch.device("cpu"))
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TypeError(f"{type(model).__name__}.{name}: the model does not compute in {' + '.join(dtypes)} on "
                        f"{where} ({first}): score it in float32 (load it with dtype='fp32', or call "
                        ".float())") from e


_MODE_LOCK = threading.Lock()
_SCORING: "weakref.WeakKeyDictionary[torch.nn.Module, list]" = weakref.WeakKeyDictionary()  # model -> [calls, modes]


@contextlib.contextmanager
def eval_while_scoring(model: Any):
    """``model`` in eval mode for the length of a ``score`` / ``score_parts`` call, whatever mode the caller
    left it in (``model.train()`` while training), and each submodule's mode restored afterwards. Calls that
    overlap (threads scoring one model) share one eval period: the first sets it, the last restores the modes,
    so no call runs with dropout on because another one ended, and the caller's modes are never lost."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    with _MODE_LOCK:
        entry = _SCORING.get(model)
        if entry is None:
            modes = {m: m.training for m in model.modules()}
            entry = _SCORING[model] = [0, modes if any(modes.values()) else None]
            if entry[1] is not None:
                model.eval()
        entry[0] += 1
    try:
        yield
    finally:
        with _MODE_LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                _SCORING.pop(model, None)
                for m, training in (entry[1] or {}).items():
                    m.training = training


def check_config_attributes(model: Any, what: str) -> None:
    """Refuse a ``model.config`` that holds an attribute none of its fields is (``dr.config.motion_scael = 4.0``, a
    typo in a notebook): nothing reads it, so the score would be unchanged without a word and ``save_pretrained``
    would drop it. A config class keeps no other attributes of its own (private ``_names`` are let through)."""
    cfg = getattr(model, "config", None)
    if isinstance(cfg, type) or not dataclasses.is_dataclass(cfg) or not hasattr(cfg, "__dict__"):
        return
    names = [f.name for f in dataclasses.fields(cfg)]
    extra = [k for k in vars(cfg) if k not in names and not k.startswith("_")]
    if extra:
        import difflib

        near = difflib.get_close_matches(extra[0], names, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise AttributeError(f"{type(model).__name__}.{what}: {type(model).__name__}.config has no field {extra[0]!r} "
                             f"(set on it, nothing reads it: {hint}its fields are {', '.join(names)}); delete it "
                             f"(del model.config.{extra[0]}) and set the field meant")


def _scoring_in_eval_mode(fn: Any) -> Any:
    """``fn`` (a ``score`` / ``score_parts`` method) run under :func:`eval_while_scoring`."""
    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        check_config_attributes(self, fn.__name__)
        with eval_while_scoring(self):
            return fn(self, *args, **kwargs)

    method._runs_in_eval_mode = True  # type: ignore[attr-defined]
    return method


def _on_meta(model: Any, state_dict: Optional[dict] = None) -> Optional[str]:
    """The name of the first tensor of ``state_dict`` (default: the model's parameters and buffers) that is on
    the meta device (shapes, no numbers: ``mmreward.load(folder, device="meta")``), else None."""
    if state_dict is not None:
        return next((k for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_meta), None)
    if not isinstance(model, torch.nn.Module):
        return None
    # every score call asks: the first tensor answers for a model loaded on meta, without naming them all
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    if first is None or not first.is_meta:
        return None
    named = (*model.named_parameters(), *model.named_buffers())
    return next((k for k, v in named if v.is_meta), None)


def refuse_meta(model: Any, what: str, state_dict: Optional[dict] = None) -> None:
    """A model on the meta device describes a model (``mmreward info --load --device meta``) but has no numbers
    to score with or to save: one ValueError saying so, not torch's "Tensor.item() cannot be called on meta
    tensors" from deep inside a forward, nor "Cannot copy out of meta tensor" while saving."""
    name = _on_meta(model, state_dict)
    if name is not None:
        raise ValueError(f"{type(model).__name__}.{what}: tensor {name!r} is on the meta device, which holds shapes "
                         f"but no numbers (a model loaded with device='meta' describes a model only): load it on "
                         f"cpu or cuda (device='cpu' / 'cuda' / 'auto') to score or save it")


def _documented(fn: Any, cls: type, name: str) -> Any:
    """The contract's ``score`` / ``score_parts`` for ``cls``, with a docstring naming the inputs it takes."""
    from .inputs import _type_list

    @functools.wraps(fn)
    def method(self: Any, inputs: Sequence[Any], *, batch_size: Optional[int] = None) -> Any:
        return fn(self, inputs, batch_size=batch_size)

    default = cls.__dict__.get("default_batch_size", getattr(cls, "default_batch_size", None))
    counted = "inputs" if cls.batch_size_counts_inputs else "frames / windows of an input"
    head = ("``Tensor[N]`` (float32, CPU): one reward per input" if name == "score" else
            "``list[Tensor[K_i]]`` (float32, CPU): one tensor per input, the score of each of its steps / frames")
    method.__doc__ = (
        f"{head}, in input order.\n\n"
        f"``inputs``: a list (or any ordered iterable: a generator, a pandas DataFrame) of "
        f"{_type_list(tuple(cls.input_types), fields=True)} (``mmreward.core.inputs``), or of dicts with those field "
        f"names (JSON rows), or of tuples of the fields in order; one input alone goes in a list.\n"
        f"``batch_size``: {counted} per forward pass"
        + (f" (default {default})" if isinstance(default, int) else " (default: the model's default_batch_size)")
        + ".\n\nRuns in eval mode whatever mode the model is in (its modes are restored afterwards)."
        + (" Whether a gradient reaches the scores is the model's to say (image scorers: yes, for a float image "
           "that requires grad)." if name == "score" else ""))
    method._contract = fn  # type: ignore[attr-defined]
    method._runs_in_eval_mode = True  # type: ignore[attr-defined]  # the contract's score sets eval mode itself
    return method


# ------------------------------------------------------------------ the contract
class Pretrained:
    """``save_pretrained`` / ``from_pretrained`` for a model built from one dataclass config held as
    ``self.config`` (sub-models such as a VQGAN codec use this alone; reward models use
    :class:`RewardScorer`, which adds ``score``)."""

    model_type: ClassVar[str] = ""
    config_class: ClassVar[Optional[type]] = None
    legacy_model_types: ClassVar[tuple[str, ...]] = ()  # older model_type names this class also reads
    eval_after_load: ClassVar[bool] = True
    # dtype=None loads the weights in the dtype they were saved in (a bf16 save loads as bf16 and scores
    # as it did); False for a model that always computes in the dtype it builds itself in
    keep_saved_dtype: ClassVar[bool] = True

    def config_dict(self) -> dict:
        cfg = getattr(self, "config", None)
        return config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else {}

    def save_pretrained(self, folder: Union[str, os.PathLike],
                        state_dict: Optional[dict[str, torch.Tensor]] = None) -> None:
        """Write the whole model folder atomically (see the module docstring). ``state_dict``
        overrides the live weights (e.g. EMA weights)."""
        if not self.model_type:
            raise TypeError(f"{type(self).__name__} has no model_type")
        if state_dict is None:
            check_no_compiled_submodule(self, "save_pretrained")
        if state_dict is not None:
            check_state_dict(self, state_dict)
        elif isinstance(self, torch.nn.Module) and has_lora(self):
            # LoRA adapters are folded into the weights: a saved folder is a plain model, loaded by any reader
            state_dict = merged_state_dict(self)
        refuse_meta(self, "save_pretrained", state_dict)
        path = _folder_path(folder, "save_pretrained")
        check_config_attributes(self, "save_pretrained")
        self._check_config_loads()
        with atomic_folder(path, keep=_added_since_saved(path)) as tmp:
            extra = self._save(tmp, state_dict) or {}
            body = {"model_type": self.model_type, "format_version": FORMAT_VERSION, "config": self.config_dict()}
            unsaved = unsaved_buffer_dtypes(self)
            if unsaved:
                body[UNSAVED_BUFFERS_KEY] = unsaved
            body.update(extra)
            try:
                import mmreward

                body.setdefault("mmreward_version", mmreward.__version__)
            except ImportError:  # pragma: no cover
                pass
            write_config(tmp, body)

    def _save(self, folder: str, state_dict: Optional[dict[str, torch.Tensor]] = None) -> Optional[dict]:
        save_weights(folder, state_dict if state_dict is not None else self.state_dict())
        return None

    def _check_config_loads(self) -> None:
        """Refuse to save a config that loading would refuse: ``model.config`` is a plain dataclass that a notebook
        edits (``dr.config.motion_scale = 4.0``), and a value of the wrong kind or out of range (``"4"``, NaN, -1)
        was written, swapping an unloadable folder in over a good one and found only at the next load. The config is
        read back from its JSON as loading reads it (types, then the class's own checks)."""
        cfg, config_class = getattr(self, "config", None), type(self).config_class
        if config_class is None or not isinstance(cfg, config_class) or not dataclasses.is_dataclass(cfg):
            return
        data = json.loads(json.dumps(self.config_dict(), default=_json_default))
        try:
            rebuilt = config_from_dict(config_class, data, self.model_type)
            if callable(getattr(rebuilt, "validate", None)):  # checks a config class runs at load, not at build
                rebuilt.validate()
        except (CheckpointError, ValueError, TypeError) as e:
            raise ValueError(f"save_pretrained: {type(self).__name__}.config would not load from the saved folder "
                             f"({e}): set a valid value (model.config.<field> = ...) and save again; nothing was "
                             "written") from None

    @classmethod
    def from_pretrained(cls, folder: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu", *,
                        dtype: Union[None, str, torch.dtype] = None, **kwargs: Any):
        """Load a folder saved by :meth:`save_pretrained` onto ``device`` (optionally cast to ``dtype``),
        in eval mode."""
        folder = _folder_path(folder, "from_pretrained")
        if not os.path.isdir(folder):
            raise CheckpointError(f"model folder {folder!r} does not exist")
        folder = cls._run_model(folder)
        dev, dt = resolve_device(device), resolve_dtype(dtype)
        verify_folder(folder)
        body = read_config(folder)
        found = body.get("model_type")
        if found not in (cls.model_type, *cls.legacy_model_types):
            raise CheckpointError(f"{folder} holds a {found!r} model, not {cls.model_type!r} "
                                  f"(mmreward.load picks the right class)")
        check_format_version(folder, body)
        check_weights_size(folder, body)
        cls._check_config_before_building(folder, body)
        if kwargs:
            cls._check_load_options(kwargs)
        from .extras import extra_of_module, needs_extra

        try:
            # a package of the model's extra that is not installed: named with the extra, not "No module named"
            with needs_extra(extra_of_module(cls.__module__), what=f"{cls.__name__} ({folder})"):
                model = cls._load(folder, body, dev, **kwargs)
        except CheckpointError as e:  # a config error names the field; this names the file
            if folder in str(e):
                raise
            raise CheckpointError(f"{os.path.join(folder, CONFIG_NAME)}: {e}") from e
        if dt is None and cls.keep_saved_dtype:
            match_saved_dtypes(model, os.path.join(folder, WEIGHTS_NAME))
            restore_unsaved_buffer_dtypes(model, body.get(UNSAVED_BUFFERS_KEY))
        # checked on the device (fast on a GPU), before a cast to ``dtype`` could turn a large weight into inf
        model = finish_loading(model, dev, None, cls.eval_after_load)
        check_finite_weights(model, folder)
        return finish_loading(model, dev, dt, cls.eval_after_load) if dt is not None else model

    @classmethod
    def _check_config_before_building(cls, folder: str, body: dict) -> None:
        """Before anything is built from a folder's ``config.json`` (one a stranger uploaded, or edited by hand): a
        NaN anywhere, or an impossible value of a transformers config (a NaN / inf / negative ``layer_norm_eps``,
        zero attention heads) is refused naming the field, not loaded to score NaN for every input; and where
        ``model.safetensors`` holds the whole model, a transformers config whose sizes it cannot hold by far
        (``num_hidden_layers`` 10**6, ``vocab_size`` 10**12) is refused from the file's header, before building
        would allocate that memory (see :func:`mmreward.core.weights.check_config_fits_weights`)."""
        from .weights import check_config_fits_weights, check_config_numbers

        where = os.path.join(folder, CONFIG_NAME)
        # fields of the model's config named as config_from_dict names them ('backbone.layer_norm_eps'), the rest
        # of config.json (a VLM's backbone_config) by their own path
        parts = (body.get("config"), {k: v for k, v in body.items() if k != "config"})
        for part in parts:
            check_config_numbers(part, where)
        shapes = header_shapes(folder) if WEIGHTS_NAME in cls.required_files(body) else None
        for part in parts if shapes else ():
            check_config_fits_weights(part, shapes, where, os.path.join(folder, WEIGHTS_NAME))

    @classmethod
    def _check_load_options(cls, kwargs: dict) -> None:
        """A keyword this class's ``_load`` does not take (``mmreward.load(rm_folder, foo=1)``) is one error
        naming it and what the class takes, not a TypeError from inside the loader; a ``_load`` that takes
        ``**kwargs`` hands them to the constructor (the default ``_load``) or checks them itself."""
        import inspect

        load = inspect.signature(cls._load).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in load.values()):
            if cls._load.__func__ is not Pretrained._load.__func__:
                return
            load = inspect.signature(cls.__init__).parameters
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in load.values()):
                return
        fixed = ("self", "cls", "folder", "body", "device", "config")
        taken = [n for n, p in load.items() if n not in fixed and p.kind is not inspect.Parameter.VAR_POSITIONAL]
        unknown = [k for k in kwargs if k not in taken]
        if unknown:
            raise ValueError(f"{unknown[0]}= is not an option of {cls.model_type!r} models ({cls.__name__}); "
                             + (f"they take {', '.join(taken)}" if taken else
                                "they take no options besides device / dtype"))

    @classmethod
    def _run_model(cls, folder: str) -> str:
        """A training run's output folder read as the model it saved (the ``model/`` or ``reward/`` of this
        class, else the first), as ``mmreward.load`` reads it; a snapshot or a run that has not saved its model
        yet is refused saying so (CheckpointError); any other folder as it is."""
        from .checkpoint import pick_run_model, run_folder_problem

        if os.path.isfile(os.path.join(folder, CONFIG_NAME)):
            return folder
        model = pick_run_model(folder, lambda model_type: model_type in (cls.model_type, *cls.legacy_model_types))
        if model is not None:
            return model
        problem = run_folder_problem(folder)
        if problem is not None:
            raise CheckpointError(problem)
        return folder

    @classmethod
    def required_files(cls, body: dict) -> list[Union[str, tuple[str, ...]]]:
        """Paths (relative to the folder) that loading a folder with this ``config.json`` body reads: the
        weights a user must not leave behind when copying a folder (a tuple: any one of them). ``mmreward
        info`` checks them without loading anything, where no manifest lists every file. Default:
        ``model.safetensors``, or, for a body that names an ``lm`` folder (the generative judges), that
        folder's ``config.json`` and weights (single or sharded)."""
        lm = body.get("lm")
        if isinstance(lm, str) and lm:
            return [f"{lm}/config.json", (f"{lm}/{WEIGHTS_NAME}", f"{lm}/{WEIGHTS_NAME}.index.json")]
        return [WEIGHTS_NAME]

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device, **kwargs: Any):
        if cls.config_class is None:
            raise TypeError(f"{cls.__name__} must set config_class or override _load")
        config = config_from_dict(cls.config_class, body.get("config", {}), cls.model_type)
        shapes = header_shapes(folder)
        if shapes:  # the whole model is in model.safetensors: its own config's layer counts and sizes too
            from .weights import check_config_fits_weights

            check_config_fits_weights(body.get("config", {}), shapes, os.path.join(folder, CONFIG_NAME),
                                      os.path.join(folder, WEIGHTS_NAME), all_dicts=True)
        model = build_for_weights(lambda: cls(config, **kwargs), folder, shapes)
        load_state_strict(model, load_weights(folder, "cpu"), folder)
        return model


class RewardScorer(Pretrained):
    """A reward model: :class:`Pretrained` + ``score`` / ``score_parts`` on the documented inputs."""

    input_types: ClassVar[tuple] = ()
    default_batch_size: ClassVar[int] = 16
    # whether ``batch_size`` counts inputs (a server batching N requests' inputs asks for batch_size=N); False
    # where it counts something inside one input (an episode's frames or windows), left to the model's default
    batch_size_counts_inputs: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # a subclass's own score / score_parts (a text RM's, with a progress bar) keeps the contract's
        # eval-mode scoring: dropout off, the caller's modes restored, threads sharing one eval period
        super().__init_subclass__(**kwargs)
        for name in ("score", "score_parts"):
            fn = cls.__dict__.get(name)
            if callable(fn) and not getattr(fn, "_runs_in_eval_mode", False):
                setattr(cls, name, _scoring_in_eval_mode(fn))
        # help(model.score) names what this model scores (ImagePrompt(prompt, image) ...), not only "inputs"
        if cls.__dict__.get("input_types"):
            for name in ("score", "score_parts") if cls.has_parts() else ("score",):
                fn = getattr(cls, name)
                contract = getattr(fn, "_contract", fn)
                if name not in cls.__dict__ and contract is getattr(RewardScorer, name):
                    setattr(cls, name, _documented(contract, cls, name))

    def score(self, inputs: Sequence[Any], *, batch_size: Optional[int] = None) -> torch.Tensor:
        """``Tensor[N]`` (float32, CPU): one reward per input, in input order. Whether a gradient reaches
        the scores is the model's to say (text RMs: no, their ``forward`` is the differentiable entry point;
        image scorers: yes, for a float image that requires grad)."""
        items = as_inputs(self.input_types, inputs, f"{type(self).__name__}.score")
        size = check_batch_size(self.default_batch_size if batch_size is None else batch_size)
        refuse_meta(self, "score")
        check_config_attributes(self, "score")
        with eval_while_scoring(self):  # dropout never changes a score; the caller's train() mode is kept
            out = _run_checking_dtype(self, self._score, items, size, "score")
        if not isinstance(out, torch.Tensor) or out.shape != (len(items),):
            raise RuntimeError(f"{type(self).__name__}._score returned {getattr(out, 'shape', type(out))} "
                               f"for {len(items)} inputs")
        return _float32_cpu(out)

    def score_parts(self, inputs: Sequence[Any], *, batch_size: Optional[int] = None) -> list[torch.Tensor]:
        """One ``Tensor[K_i]`` per input (float32, CPU): the score of each step / frame."""
        if not self.has_parts():  # whatever the inputs: say so first, not "input 2: field …" or "got no inputs"
            RewardScorer._score_parts(self, [], 1)
        items = as_inputs(self.input_types, inputs, f"{type(self).__name__}.score_parts")
        size = check_batch_size(self.default_batch_size if batch_size is None else batch_size)
        refuse_meta(self, "score_parts")
        check_config_attributes(self, "score_parts")
        with eval_while_scoring(self):
            out = _run_checking_dtype(self, self._score_parts, items, size, "score_parts")
        if not isinstance(out, (list, tuple)) or len(out) != len(items) \
                or not all(isinstance(p, torch.Tensor) and p.dim() == 1 for p in out):
            got = ([getattr(p, "shape", type(p).__name__) for p in out] if isinstance(out, (list, tuple))
                   else type(out).__name__)
            raise RuntimeError(f"{type(self).__name__}._score_parts returned {got} for {len(items)} inputs: one "
                               "1-d tensor per input was expected")
        return [_float32_cpu(p) for p in out]

    def _score(self, items: list, batch_size: int) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement _score")

    def _score_parts(self, items: list, batch_size: int) -> list[torch.Tensor]:
        raise TypeError(f"{type(self).__name__} scores whole inputs: it has no per-step or per-frame scores")

    def aggregate_parts(self, parts: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
        """``score`` computed from ``score_parts``' output (sum of frame rewards, min of step scores …),
        so a caller that needs both runs the model once; None when the model does not say how."""
        return None

    @classmethod
    def has_parts(cls) -> bool:
        return cls._score_parts is not RewardScorer._score_parts


def check_weights_size(folder: str, body: dict) -> None:
    """Folders saved by mmreward 0.1 record their weights' byte size in ``config.json``."""
    info = body.get("_mmreward")
    weights = os.path.join(folder, WEIGHTS_NAME)
    if isinstance(info, dict) and "weights_bytes" in info and os.path.exists(weights) \
            and os.path.getsize(weights) != info["weights_bytes"]:
        raise CheckpointError(f"{weights} has {os.path.getsize(weights)} bytes but config.json expects "
                              f"{info['weights_bytes']}: truncated or from another save")


def saved_dtypes(path: str) -> dict[str, torch.dtype]:
    """The dtype of every tensor of a safetensors file, from its header alone (nothing is read)."""
    from safetensors import safe_open

    names = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    try:
        with safe_open(path, framework="pt") as f:
            return {k: names[f.get_slice(k).get_dtype()] for k in f.keys() if f.get_slice(k).get_dtype() in names}
    except Exception as e:  # noqa: BLE001 - the weights were read a moment ago; a header error names the file
        raise CheckpointError(f"corrupt or unreadable safetensors file {path}: {e}") from e


def match_saved_dtypes(model: Any, path: str) -> None:
    """Give a freshly built model the floating-point dtypes its weights were saved in (``dtype=None``
    means "as saved"): a model built in float32 whose weights were saved in bf16 would otherwise load
    in float32 (twice the memory) or half in each (a bf16 backbone under a float32 head), and score
    differently from the model that was saved. When the file holds every floating tensor of the
    model, all in one dtype, the whole model is cast, as ``model.to(dtype)`` before saving did (buffers that are not saved, such
    as rotary frequencies, included); otherwise each saved tensor is cast to its own dtype."""
    if not isinstance(model, torch.nn.Module) or not os.path.isfile(path):
        return
    saved = saved_dtypes(path)
    own = model.state_dict(keep_vars=True)
    floating = {k: v for k, v in own.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    differ = {k: saved[k] for k, v in floating.items() if k in saved and saved[k] != v.dtype}
    if not differ:
        return
    kinds = set(saved[k] for k in floating if k in saved)
    if len(kinds) == 1 and all(k in saved for k in floating):  # the file holds the whole model, in one dtype
        model.to(kinds.pop())
        return
    with torch.no_grad():
        for k, dtype in differ.items():
            t = own[k]
            if t.dtype != dtype:  # a tied tensor listed twice is cast once
                t.data = t.data.to(dtype)


UNSAVED_BUFFERS_KEY = "unsaved_buffer_dtypes"  # config.json: {buffer name: dtype} of buffers not in the weights


def unsaved_buffer_dtypes(model: Any) -> dict[str, str]:
    """``{name: dtype}`` of the floating-point buffers a model computes itself and does not save (rotary
    ``inv_freq``): a model built in bf16 keeps them in float32 (transformers computes them so), one cast with
    ``.to(torch.bfloat16)`` has them in bf16, and the two score differently in the last bits. Recorded in
    ``config.json`` so that loading the folder (``dtype=None``, as saved) rebuilds them as the saved model had
    them and scores as it did."""
    if not isinstance(model, torch.nn.Module):
        return {}
    saved = set(model.state_dict(keep_vars=True))
    return {name: str(b.dtype).removeprefix("torch.") for name, b in model.named_buffers()
            if b.is_floating_point() and name not in saved}


def restore_unsaved_buffer_dtypes(model: Any, recorded: Any) -> None:
    """Give the unsaved buffers of a freshly loaded model the dtypes :func:`unsaved_buffer_dtypes` recorded at
    save time (buffers the model no longer has, or a record that is not a ``{name: dtype}`` object, are
    ignored: the buffers stay as the model builds them)."""
    if not isinstance(model, torch.nn.Module) or not isinstance(recorded, dict):
        return
    kinds = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    for name, b in list(model.named_buffers()):
        want = kinds.get(recorded.get(name)) if isinstance(recorded.get(name), str) else None
        if want is None or not b.is_floating_point() or b.dtype == want:
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        if owner._buffers.get(leaf) is b:
            owner._buffers[leaf] = b.to(want)


def check_no_compiled_submodule(model: Any, what: str) -> None:
    """Refuse a model with a ``torch.compile`` wrapper as a sub-module (``model.backbone = torch.compile(...)``): its
    weights would be saved (and snapshotted) as ``<name>._orig_mod.*``, a folder no load reads and a snapshot the
    uncompiled model cannot resume. ``model.<name>.compile()`` compiles in place and keeps the names."""
    if not isinstance(model, torch.nn.Module):
        return
    compiled = next((n for n, m in model.named_modules() if n and hasattr(m, "_orig_mod")), None)
    if compiled is not None:
        raise ValueError(f"{what}: {compiled!r} is a torch.compile wrapper (model.{compiled} = torch.compile(...)): "
                         f"compile in place instead (model.{compiled}.compile() or model.compile()), or put the "
                         "uncompiled module back")


def check_state_dict(model: Any, state_dict: Any) -> None:
    """``save_pretrained(state_dict=...)`` (EMA weights, a trainer's copy) must hold a tensor for every
    entry of the model's own ``state_dict()`` under the same names and shapes: a partial or renamed one
    (a DDP ``module.`` prefix) would save a folder that cannot be loaded, found only when it is."""
    if not isinstance(state_dict, collections.abc.Mapping):
        raise TypeError(f"save_pretrained: state_dict must be a dict of tensors, got {type(state_dict).__name__}")
    bad = next((k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise TypeError(f"save_pretrained: state_dict[{bad!r}] must be a tensor, got {type(state_dict[bad]).__name__}")
    if not isinstance(model, torch.nn.Module):
        return
    # the names and shapes a saved folder holds (a model with LoRA adapters: without them)
    own = plain_state_view(model) if has_lora(model) else model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        # a wrapper's state_dict (DDP / DataParallel: "module.", torch.compile: "_orig_mod."): named with the
        # call that gives the model's own, not stripped silently (a prefix the user did not mean would be too)
        parts = ([f"lacks {len(missing)} of the model's tensors, e.g. {missing[:3]}"] if missing else []) + \
                ([f"holds {len(unexpected)} the model does not have, e.g. {unexpected[:3]}"] if unexpected else [])
        wrapped = _wrapper_prefix(state_dict, own)
        hint = (f"every key starts with {wrapped[0]!r}, the prefix of {wrapped[1]}'s state_dict: pass {wrapped[2]}"
                if wrapped is not None else
                "the model has LoRA adapters: pass mmreward.core.lora.merged_state_dict(model) (the adapters folded in, "
                "the names of the model without them)" if has_lora(model) else
                f"give the whole state_dict(), in {type(model).__name__}'s own key names")
        raise ValueError(f"save_pretrained: state_dict {'; '.join(parts)}: the saved folder could not be loaded "
                         f"({hint})")
    wrong = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in own.items()
             if tuple(state_dict[k].shape) != tuple(v.shape)]
    if wrong:
        k, got, want = wrong[0]
        raise ValueError(f"save_pretrained: state_dict[{k!r}] has shape {got}, the model's has {want} "
                         f"({len(wrong)} tensor(s) differ): the saved folder could not be loaded")


def check_finite_weights(model: Any, folder: str, *, nan_only: bool = False) -> None:
    """Refuse a loaded model whose weights a diverged training run left non-finite: it would score NaN
    for every input without any error. Parameters may hold neither NaN nor ±inf; saved buffers may not
    hold NaN, but ±inf is allowed there (attention masks, ``-inf`` fill values); buffers a model computes
    itself (not saved) are not checked. One pass over the tensors of ``state_dict()``:
    ``isfinite(...).all()`` / ``isnan(...).any()`` per tensor, on the device they were loaded to.
    ``nan_only``: NaN alone is refused (a model already cast to a narrower dtype, where a large weight
    may have become inf by the cast)."""
    if not isinstance(model, torch.nn.Module):
        return
    params = {id(p) for p in model.parameters()}
    seen: set[int] = set()
    with torch.no_grad():
        for key, t in model.state_dict(keep_vars=True).items():
            if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.is_meta or id(t) in seen:
                continue
            seen.add(id(t))  # a tied weight is checked once, under its first name
            if id(t) in params:
                if bool(torch.isnan(t).any() if nan_only else ~torch.isfinite(t).all()):
                    what = "NaN" if bool(torch.isnan(t).any()) else "inf"
                    raise CheckpointError(
                        f"{folder}: weight {key!r} holds {what} (the first of the model's parameters that does): "
                        "the checkpoint was saved from a diverged training run and would score NaN; load an "
                        "earlier checkpoint (parameters may hold neither NaN nor ±inf; buffers such as masks may "
                        "hold ±inf)")
            elif bool(torch.isnan(t).any()):
                raise CheckpointError(
                    f"{folder}: buffer {key!r} holds NaN: the checkpoint was saved from a diverged training run "
                    "and would score NaN; load an earlier checkpoint (buffers may hold ±inf, not NaN)")


def finish_loading(model: Any, device: torch.device, dtype: Optional[torch.dtype], eval_mode: bool = True) -> Any:
    """Move a freshly loaded model to ``device`` / ``dtype`` and (by default) put it in eval mode."""
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
        if dtype is not None:
            model = model.to(dtype)
        if eval_mode:
            model.eval()
    return model


__all__ = ["Pretrained", "RewardScorer", "eval_while_scoring", "check_config_attributes", "check_format_version", "config_from_dict", "config_to_dict", "check_weights_size", "CONFIG_NAME", "WEIGHTS_NAME", "FORMAT_VERSION", "read_config", "write_config",
           "save_weights", "load_weights", "load_state_strict", "check_batch_size", "finish_loading",
           "match_saved_dtypes", "saved_dtypes", "check_finite_weights", "check_state_dict", "refuse_meta", "build_for_weights", "check_state_shapes", "header_shapes",
           "unsaved_buffer_dtypes", "restore_unsaved_buffer_dtypes", "UNSAVED_BUFFERS_KEY"]

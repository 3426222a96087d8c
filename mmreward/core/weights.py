"""Reading published checkpoints without running their code: JSON configs, safetensors (single or
sharded), ``torch.save`` files through ``torch.load(weights_only=True)`` (tensors only: a pickle that
holds code is refused), tensor names from headers / indexes, and a switch that keeps transformers'
load reports out of the way. Every failure is a :class:`CheckpointError` naming the file."""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from typing import Any, Iterator, Optional, Sequence

import torch

from .folders import CheckpointError

SHARD_INDEXES = (("model.safetensors", "model.safetensors.index.json"),
                 ("pytorch_model.bin", "pytorch_model.bin.index.json"))


def _is_file(path: str) -> bool:
    """``os.path.isfile``, except that a link to a missing file (a hub snapshot whose blob never
    arrived) is an error naming both rather than a file that is simply not there."""
    if os.path.islink(path) and not os.path.exists(path):
        raise CheckpointError(f"{path} is a link to {os.readlink(path)}, which does not exist: a download or copy "
                              "that did not finish; fetch the file again")
    return os.path.isfile(path)


# the largest config / weight index read (a 600-B-parameter model's index is about 9 MB): a folder a stranger
# uploads may hold a multi-GB "config.json"
MAX_JSON_BYTES = 64 << 20


def read_json(path: str, what: str = "") -> dict:
    """A JSON object from ``path`` (CheckpointError naming the file and ``what`` it is otherwise)."""
    label = f" ({what})" if what else ""
    if not _is_file(path):
        raise CheckpointError(f"{path}{label} does not exist")
    size = os.path.getsize(path)
    if size > MAX_JSON_BYTES:  # json.load reads it whole, then holds several times that as objects
        raise CheckpointError(f"{path}{label} is {size} bytes, more than the {MAX_JSON_BYTES} bytes any JSON config "
                              "or index needs: not a settings file (weights or data saved under its name?)")
    try:
        with open(path, encoding="utf-8-sig") as f:  # a BOM (a file edited in Notepad) is not an error
            body = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: a crafted file of deeply nested arrays
        raise CheckpointError(f"corrupt {path}{label}: {str(e)[:200]}") from e
    if not isinstance(body, dict):
        raise CheckpointError(f"{path}{label} must hold a JSON object, got {type(body).__name__}")
    return body


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def weight_file_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be a weights file although it is there, or None: empty, or a Git LFS pointer
    (a clone made without ``git lfs``, a ~130-byte text file in the weights' place). torch / safetensors
    only say they cannot parse such a file (torch even suggests saving it again another way)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(LFS_POINTER))
    except OSError:
        return None  # the reader names what is wrong
    if not head:
        return f"{path} is empty (0 bytes): a download or copy that did not finish; fetch the file again"
    if path.endswith(".safetensors") and head.startswith((b"PK\x03\x04", b"\x80")) and head[8:9] != b"{":
        # a torch.save zip or a pickle under the safetensors name (a real one has its JSON header's "{" at byte 8,
        # after the 8-byte length): said so, and never handed to torch.load
        return (f"{path} is a pickle / torch.save file, not safetensors (it begins {head[:8]!r}): mmreward does not "
                "unpickle files named .safetensors; convert it to safetensors where you trust its origin")
    if head == LFS_POINTER:
        return (f"{path} is a Git LFS pointer ({os.path.getsize(path)} bytes), not the weights: the repository was "
                "cloned without Git LFS; run `git lfs pull` in it (or download the file itself)")
    return None


def read_torch_state(path: str, key: Optional[str] = None) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` file, read with ``weights_only=True`` (no code runs); ``key``
    picks a sub-dict (e.g. ``state_dict`` of a training checkpoint) when the file holds one.
    DataParallel's ``module.`` prefix is dropped, as the official loaders do."""
    import zipfile

    if not _is_file(path):
        raise CheckpointError(f"missing weights file {path}")
    problem = weight_file_problem(path)
    if problem:
        raise CheckpointError(problem)
    zipped = zipfile.is_zipfile(path)
    try:
        # a file of torch's legacy (pre-1.6, not zip) format cannot be memory-mapped, but reads whole
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as e:  # noqa: BLE001 - truncated files, pickles with code in them
        with open(path, "rb") as f:
            head = f.read(24)
        # torch's message for a file that is neither of its formats ("… _use_new_zipfile_serialization …") says to
        # save it again, which misleads: a zip or a legacy torch pickle (a pickle opcode b"\x80" first, the magic
        # number's protocol) is a torch file whose content is the problem; anything else is not one
        if not zipped and not head.startswith((b"PK", b"\x80")):
            raise CheckpointError(f"{path} is not a torch.save file (it begins {head!r}): a web page or another file "
                                  "saved under its name? fetch it again") from e
        raise CheckpointError(f"cannot read {path} as a tensors-only torch file: {e}") from e
    if key is not None and isinstance(obj, dict) and isinstance(obj.get(key), dict):
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors"
                              + (f" (nor one under {key!r})" if key else ""))
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def read_weight_file(path: str) -> dict[str, torch.Tensor]:
    """One safetensors or ``torch.save`` weights file (an empty file or a Git LFS pointer named as such)."""
    if not path.endswith(".safetensors"):
        return read_torch_state(path)
    if not _is_file(path):
        raise CheckpointError(f"missing weights file {path}")
    problem = weight_file_problem(path)
    if problem:
        raise CheckpointError(problem)
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad headers / truncation
        raise CheckpointError(f"corrupt or unreadable safetensors file {path}: {e}") from e


def _read_index(path: str) -> dict[str, str]:
    weight_map = read_json(path, "weight index").get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{path}: weight_map must be an object")
    return weight_map


def _index_shards(folder: str, index: str) -> dict[str, list[str]]:
    """Shard file -> the tensor names ``index`` assigns to it; every shard must exist (a copy
    interrupted part-way leaves the index naming a shard that never arrived)."""
    shards: dict[str, list[str]] = {}
    for name, shard in _read_index(os.path.join(folder, index)).items():
        if not isinstance(shard, str):
            raise CheckpointError(f"{os.path.join(folder, index)}: weight_map[{name!r}] must be a file name, got {shard!r}")
        parts = shard.replace("\\", "/").split("/")
        if os.path.isabs(shard) or ".." in parts:
            # an uploaded index must not make the loader open files outside the folder (another model's
            # weights, or any file, whose first bytes an error message would then quote)
            raise CheckpointError(f"{os.path.join(folder, index)}: weight_map[{name!r}] names {shard!r}, not a file "
                                  "inside the folder: an index lists its shards by their names in the folder")
        shards.setdefault(shard, []).append(name)
    absent = sorted(s for s in shards if not _is_file(os.path.join(folder, s)))
    if absent:
        more = f" (and {len(absent) - 1} more of its shards)" if len(absent) > 1 else ""
        raise CheckpointError(f"missing weights file {os.path.join(folder, absent[0])}{more}: {index} names "
                              f"{len(shards)} shard(s), and a download or copy stopped part-way leaves some out")
    return shards


def _check_shard_holds(folder: str, index: str, shard: str, listed: Sequence[str], held: Any) -> None:
    """The tensors ``index`` places in ``shard`` must be in it: transformers would leave them at
    random initial values without an error."""
    absent = [n for n in listed if n not in held]
    if absent:
        raise CheckpointError(f"{os.path.join(folder, index)} places {len(absent)} tensor(s) in {shard} that the "
                              f"shard does not hold, e.g. {absent[:3]}: the shard is from another save or incomplete")


def read_weights(folder: str) -> dict[str, torch.Tensor]:
    """All tensors of a transformers-style folder: ``model.safetensors``, sharded safetensors (its
    index), or ``pytorch_model.bin`` / its shards (tensors only)."""
    for single, index in SHARD_INDEXES:
        if _is_file(os.path.join(folder, single)):  # before an index next to it, as transformers reads them
            return read_weight_file(os.path.join(folder, single))
        if _is_file(os.path.join(folder, index)):
            state: dict[str, torch.Tensor] = {}
            for shard, listed in sorted(_index_shards(folder, index).items()):
                part = read_weight_file(os.path.join(folder, shard))
                _check_shard_holds(folder, index, shard, listed, part)
                state.update(part)
            return state
    raise CheckpointError(f"{folder} has no weights (model.safetensors, model.safetensors.index.json + shards, or "
                          "pytorch_model.bin)")


def weight_names(folder: str) -> Optional[set[str]]:
    """Tensor names of a transformers-style folder from its index or file header (safetensors: no
    tensor is read); None when it holds no weights."""
    for single, index in SHARD_INDEXES:
        path = os.path.join(folder, single)
        if not _is_file(path):  # the single file first, as transformers reads them
            if _is_file(os.path.join(folder, index)):
                return set(_read_index(os.path.join(folder, index)))
            continue
        if single.endswith(".safetensors"):
            from safetensors import safe_open

            try:
                with safe_open(path, "pt") as f:
                    return set(f.keys())
            except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad header
                raise CheckpointError(f"corrupt or unreadable safetensors file {path}: {e}") from e
        return set(read_torch_state(path))
    return None


def _safetensors_shapes(path: str) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise CheckpointError(f"corrupt or unreadable safetensors file {path}: {e}") from e


def _file_shapes(path: str) -> dict[str, tuple[int, ...]]:
    if path.endswith(".safetensors"):
        if not _is_file(path):
            raise CheckpointError(f"missing weights file {path}")
        return _safetensors_shapes(path)
    return {k: tuple(v.shape) for k, v in read_torch_state(path).items()}  # mmap: no tensor data is read


def weight_shapes(folder: str) -> Optional[dict[str, tuple[int, ...]]]:
    """Name -> shape of every tensor of a transformers-style folder, from safetensors headers
    (``torch.save`` files are mapped, not read); an index is checked against its shards: each one
    must exist and hold the tensors the index places in it. None when the folder holds no weights."""
    for single, index in SHARD_INDEXES:
        if _is_file(os.path.join(folder, single)):  # before an index next to it, as transformers reads them
            return _file_shapes(os.path.join(folder, single))
        if _is_file(os.path.join(folder, index)):
            shapes: dict[str, tuple[int, ...]] = {}
            for shard, listed in sorted(_index_shards(folder, index).items()):
                part = _file_shapes(os.path.join(folder, shard))
                _check_shard_holds(folder, index, shard, listed, part)
                shapes.update(part)
            return shapes
    return None


def tensor_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of one weights file, from its header (safetensors) or mapped
    (``torch.save``): no tensor is read."""
    return _file_shapes(path)


# config.json fields checked before anything is built from them (a config a stranger uploads, or one edited by
# hand): a NaN or an impossible value would load and score NaN for every input; a size far beyond the weights
# would make the build allocate (tens of GB, or hang building a million layers) before the shapes are compared
_EPS_FIELD = re.compile(r"(?:^|_)(?:eps|epsilon)$")  # layer_norm_eps, rms_norm_eps, norm_epsilon, …
_HEADS_FIELD = re.compile(r"^(?:num_attention_heads|num_key_value_heads|num_heads|n_heads?|\w+_attention_heads)$")
_LAYERS_FIELD = re.compile(r"^(?:num_hidden_layers|num_(?:encoder_|decoder_)?layers|n_layers?|(?:en|de)coder_layers)$")
_WIDTH_FIELDS = ("hidden_size", "d_model", "n_embd")
_FFN_FIELDS = ("intermediate_size", "ffn_dim", "n_inner", "d_ff", "encoder_ffn_dim", "decoder_ffn_dim")
_EXPERT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts")
_COUNT_FIELDS = ("vocab_size", "num_labels", "head_dim", *_WIDTH_FIELDS, *_FFN_FIELDS)
# a config's implied parameter count may exceed the stored tensors' (factorised or shared layers: ALBERT) but not
# by this much; the exact comparison is the shapes' (a build on the meta device), this bounds what precedes it
FIT_FACTOR, FIT_SLACK = 8, 1 << 24
_LAYER_SLACK = 64  # layers beyond the numbered blocks the weights hold (shared layers: ALBERT's 12 over 1 group)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _config_problem(key: str, v: Any, transformers: bool) -> Optional[str]:
    """What a config field ``key`` holding the number ``v`` must be, where ``v`` is not that (else None);
    ``transformers``: the field is part of a transformers config, whose field names say what they are."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if v != v and not key.startswith("initializer"):  # initializer_range only draws weights that are then loaded
        return "a number, not NaN"
    if not transformers:
        return None
    if _EPS_FIELD.search(key) and not (math.isfinite(v) and v >= 0):
        return "a finite number >= 0 (it is added to a variance: NaN, inf or a negative value gives NaN scores)"
    if key == "rope_theta" and not (math.isfinite(v) and v > 0):
        return "a finite number > 0"
    if _HEADS_FIELD.match(key) and _is_int(v) and v < 1:
        return "an integer >= 1"
    if (key in _COUNT_FIELDS or _LAYERS_FIELD.match(key)) and _is_int(v) and v < (1 if key in _COUNT_FIELDS else 0):
        return f"an integer >= {1 if key in _COUNT_FIELDS else 0}"
    return None


def check_config_numbers(config: Any, where: str, prefix: str = "", transformers: bool = False) -> None:
    """Refuse a config tree (nested dicts and lists, as in ``config.json``) holding a NaN anywhere, or, in a
    transformers config (a dict with a ``model_type``, and what it nests; ``transformers``: the top one is one),
    a non-finite or negative ``*_eps``, a ``rope_theta`` <= 0, zero attention heads, or a size < 1: one
    CheckpointError naming the field by its path (``config.backbone.layer_norm_eps``) and ``where`` (the file),
    never a model that loads and scores NaN for every input or fails deep inside its build."""
    stack = [(prefix, config, transformers)]
    while stack:
        path, node, strict = stack.pop()
        if isinstance(node, dict):
            strict = strict or isinstance(node.get("model_type"), str)
            items = node.items()
        else:
            items = enumerate(node) if isinstance(node, list) else ()
        for key, v in items:
            sub = _join(path, key) if isinstance(node, dict) else f"{path}[{key}]"
            if isinstance(v, (dict, list)):
                stack.append((sub, v, strict))
                continue
            problem = _config_problem(str(key) if isinstance(node, dict) else "", v, strict)
            if problem is not None:
                raise CheckpointError(f"{where}: config field {sub!r} must be {problem}, got {v!r}: the file was "
                                      "edited or damaged; fix that field (the value the model was trained with)")


def _config_dicts(node: Any, path: str, every: bool) -> Iterator[tuple[str, dict]]:
    """Every dict of a config tree (``every``) or every transformers config in it (a dict with a ``model_type``),
    with its path; iterative (a crafted file may nest a thousand levels deep)."""
    stack = [(path, node)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            if every or isinstance(node.get("model_type"), str):
                yield path, node
            stack.extend((_join(path, k), v) for k, v in node.items() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(node) if isinstance(v, (dict, list)))


def check_config_fits_weights(config: Any, shapes: dict[str, tuple[int, ...]], where: str, weights: str,
                              prefix: str = "", all_dicts: bool = False) -> None:
    """Refuse, before anything is built (or allocated), a config whose sizes the weights in ``weights`` (their
    header ``shapes``) cannot hold by far: more layers than the numbered blocks stored (plus a margin for shared
    layers), or an implied parameter count (``vocab_size`` x ``hidden_size``, layers x ``hidden_size``²,
    layers x ``intermediate_size`` x ``hidden_size``) over :data:`FIT_FACTOR` times the stored elements. Checked in
    every transformers config of the tree (``all_dicts``: in every dict). One CheckpointError naming the field(s)."""
    total = sum(math.prod(s) for s in shapes.values())
    blocks = max((int(p) + 1 for name in shapes for p in name.split(".") if p.isdigit()), default=0)
    for path, d in _config_dicts(config, prefix, all_dicts):
        for k, v in d.items():
            if _LAYERS_FIELD.match(str(k)) and _is_int(v) and v > 2 * blocks + _LAYER_SLACK:
                raise CheckpointError(
                    f"{where}: config field {_join(path, k)!r} is {v}, but the weights in {weights} hold "
                    + (f"numbered blocks 0..{blocks - 1} only" if blocks else "no numbered blocks")
                    + f" ({len(shapes)} tensors): the config was edited or is another model's; refused before "
                    "building the model")
        width = next(((f, d[f]) for f in _WIDTH_FIELDS if _is_int(d.get(f))), None)
        if width is None:
            continue
        layers = max(((k, v) for k, v in d.items() if _LAYERS_FIELD.match(str(k)) and _is_int(v)),
                     key=lambda kv: kv[1], default=None)
        ffn = next(((f, d[f]) for f in _FFN_FIELDS if _is_int(d.get(f))), None)
        needs = [((width[0],), width[1])]
        if _is_int(d.get("vocab_size")):
            needs.append((("vocab_size", width[0]), d["vocab_size"] * width[1]))
        if layers is not None:
            needs.append(((layers[0], width[0]), layers[1] * width[1] ** 2))
            if ffn is not None:
                needs.append(((layers[0], ffn[0], width[0]), layers[1] * ffn[1] * width[1]))
                experts = next(((f, d[f]) for f in _EXPERT_FIELDS if _is_int(d.get(f))), None)
                if experts is not None:  # expert weights: (experts, ffn, hidden) per layer, each its own ffn if set
                    each = ("moe_intermediate_size", d["moe_intermediate_size"]) \
                        if _is_int(d.get("moe_intermediate_size")) else ffn
                    needs.append(((layers[0], experts[0], each[0], width[0]),
                                  layers[1] * experts[1] * each[1] * width[1]))
            heads = next(((k, v) for k, v in d.items() if k == "num_attention_heads" and _is_int(v)), None)
            if heads is not None and _is_int(d.get("head_dim")):  # an explicit head_dim sizes the projections
                needs.append(((layers[0], heads[0], "head_dim", width[0]),
                              layers[1] * heads[1] * d["head_dim"] * width[1]))
        fields, need = max(needs, key=lambda n: n[1])
        if need > FIT_FACTOR * total + FIT_SLACK:
            named = " x ".join(f"{f}={d[f]}" for f in fields)
            raise CheckpointError(
                f"{where}: config fields {', '.join(repr(_join(path, f)) for f in fields)} ({named}) imply about "
                f"{need:.3g} parameters, but the weights in {weights} hold {total:.3g} elements: the config was "
                "edited or is another model's; refused before building the model (it would allocate that much memory)")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def require_tensors(state: dict, names: Sequence[str], path: str, what: str) -> None:
    """CheckpointError naming the first missing tensors of ``what`` (e.g. the MLP head)."""
    missing = [n for n in names if n not in state]
    if missing:
        have = sorted({k.split(".")[0] for k in state})[:8]
        raise CheckpointError(f"{path} lacks {len(missing)} tensor(s) of {what}, e.g. {missing[:3]} "
                              f"(top-level names present: {have})")


# config.json keys that describe the file, not the backbone transformers builds
_CONFIG_ONLY_KEYS = ("architectures", "auto_map", "model_type", "transformers_version", "_name_or_path",
                     "torch_dtype", "dtype")


def check_published_config(raw: dict, folder: str) -> None:
    """A published folder's ``config.json`` (``raw``, a transformers config) checked before transformers builds
    anything from it (a folder a stranger uploads): its numbers (:func:`check_config_numbers`: a NaN eps would
    score NaN for every input), and its sizes against the safetensors headers of the folder's weights
    (:func:`check_config_fits_weights`: 10**6 layers would not finish building, a 10**12 vocabulary would
    allocate before any shape is compared). One CheckpointError naming the field."""
    where = os.path.join(folder, "config.json")
    check_config_numbers(raw, where, transformers=True)
    try:  # safetensors headers only (a legacy torch file would be read whole, twice)
        shapes = weight_shapes(folder) if any(_is_file(os.path.join(folder, n)) for n in SHARD_INDEXES[0]) else None
    except CheckpointError:  # a missing shard, a damaged header: the loader reads the weights and says so
        shapes = None
    if shapes:
        check_config_fits_weights(raw if isinstance(raw.get("model_type"), str) else {**raw, "model_type": "?"},
                                  shapes, where, folder)


def hf_config(raw: dict, folder: str, default_type: Optional[str] = None):
    """The transformers config of a published folder's ``config.json`` (``raw``) for its backbone,
    built by ``model_type`` without the architecture / ``auto_map`` entries (whose classes may live in
    remote code), so no code from the folder runs."""
    from transformers import AutoConfig

    model_type = raw.get("model_type") or default_type
    if not model_type:
        raise CheckpointError(f"{folder}/config.json has no model_type")
    check_published_config({**raw, "model_type": model_type}, folder)
    try:
        with quiet_transformers():
            return AutoConfig.for_model(model_type, **{k: v for k, v in raw.items() if k not in _CONFIG_ONLY_KEYS})
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{folder}/config.json: transformers cannot build a {model_type!r} backbone: {e}") from e


def backbone_state(weights: dict[str, torch.Tensor], folder: str, layout: str,
                   ignore: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """A published folder's backbone tensors (``model.*``) renamed ``backbone.*``, once its head tensors
    have been popped from ``weights``; any other tensor (but those under ``ignore`` prefixes) is an error."""
    backbone = {f"backbone.{k[len('model.'):]}": v for k, v in weights.items() if k.startswith("model.")}
    if not backbone:
        prefixes = sorted({k.split(".")[0] for k in weights})
        raise CheckpointError(f"{folder}: no backbone tensors under 'model.' (the {layout} layout's prefix); "
                              f"found prefixes {prefixes[:8]}")
    unexpected = sorted(k for k in weights if not k.startswith(("model.",) + tuple(ignore)))
    if unexpected:
        raise CheckpointError(f"{folder}: tensors that are not part of the {layout} layout: {unexpected[:6]}")
    return backbone


def check_shapes(module: torch.nn.Module, state: dict[str, torch.Tensor], folder: str, layout: str,
                 sources: Optional[dict[str, str]] = None) -> None:
    """CheckpointError naming the first tensor of ``state`` whose shape is not the one ``module``
    (built from the folder's config.json) expects, by its name in the folder's files: ``sources`` maps
    our names to those (default: ``backbone.X`` was ``model.X``)."""
    own = module.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if not wrong:
        return
    ours, got, want = wrong[0]
    name = (sources or {}).get(ours) or (f"model.{ours[len('backbone.'):]}" if ours.startswith("backbone.") else ours)
    raise CheckpointError(f"{folder}: {name} has shape {got} in the weights but the {layout} layout of its config.json "
                          f"expects {want} ({len(wrong)} tensor(s) differ)")


def refuse_mismatched(info: dict, folder: str, what: str) -> None:
    """CheckpointError naming the first tensor transformers found with another shape than ``what``
    of the folder's config.json has: ``from_pretrained(..., ignore_mismatched_sizes=True,
    output_loading_info=True)`` lists them; without that flag its error only points to the load
    report, which :func:`quiet_transformers` keeps quiet."""
    mismatched = sorted((str(k), tuple(got), tuple(want)) for k, got, want in info.get("mismatched_keys") or ())
    if mismatched:
        k, got, want = mismatched[0]
        raise CheckpointError(f"{folder}: {k} has shape {got} in the weights but the {what} of its config.json "
                              f"expects {want} ({len(mismatched)} tensor(s) differ)")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (an unused pooler or ``lm_head`` listed as UNEXPECTED) and
    its weight-loading progress bars: mmreward checks the weights itself and says what is wrong."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


__all__ = ["backbone_state", "check_config_fits_weights", "check_config_numbers", "check_published_config", "check_shapes", "tensor_shapes", "hf_config", "position_limit", "quiet_transformers", "read_json", "read_torch_state", "read_weight_file", "read_weights", "refuse_mismatched", "require_tensors",
           "weight_names", "weight_shapes"]


def position_limit(model: Any) -> Optional[int]:
    """The most tokens a transformers ``model`` reads: the rows of its learned position table (a module
    named ``*position_embeddings`` / ``wpe`` / ``embed_positions`` sized by the config's
    ``max_position_embeddings`` / ``n_positions``), less the rows below the first position (RoBERTa-style
    ``padding_idx + 1``, OPT's ``offset``). None when positions have no hard end (rotary, or DeBERTa's
    relative table, which the size check leaves out)."""
    config = getattr(model, "config", None)
    sizes = {getattr(config, "max_position_embeddings", None), getattr(config, "n_positions", None)} - {None}
    for name, module in model.named_modules():
        if not (name.endswith(("position_embeddings", "wpe", "embed_positions"))
                and isinstance(module, torch.nn.Embedding)):
            continue
        pad, offset = module.padding_idx, int(getattr(module, "offset", 0))
        if module.num_embeddings in sizes or module.num_embeddings - offset in sizes:
            return module.num_embeddings - (pad + 1 if pad is not None else offset)
    return None


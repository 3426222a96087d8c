"""Text reward models saved as PEFT LoRA adapters, read without peft.

TRL's ``RewardTrainer`` with a ``peft_config`` (or ``get_peft_model`` + ``save_pretrained``) writes a folder
holding ``adapter_config.json`` and ``adapter_model.safetensors`` (older runs: ``adapter_model.bin``): the
low-rank factors of the targeted layers, the tensors of ``modules_to_save`` (the ``score`` / ``classifier``
head, trained in full) and, with ``bias="all"`` / ``"lora_only"`` or ``save_embedding_layers``, the trained
biases and embeddings. The base model is the one ``base_model_name_or_path`` names.

TRL's ``PRMTrainer`` saves the same for a ``*ForTokenClassification`` PRM (``task_type`` ``TOKEN_CLS``).
:func:`load_peft_adapter` builds the base as that classifier, puts the saved tensors in and folds each
adapter into its layer as ``peft``'s ``merge_and_unload`` does::

    W ← W + s · B A            (nn.Linear; transformers' Conv1D: W ← W + s · (B A)ᵀ)
    E ← E + s · (B A)ᵀ          (nn.Embedding: lora_embedding_A (r, V), lora_embedding_B (D, r))
    b ← b + s · b_B             (lora_bias=True)
    W ← m / ‖W + ΔW‖ · (W + ΔW)  (DoRA, use_dora=True: each output unit's row rescaled to its trained magnitude)
    E[ids] ← rows               (trainable tokens: TRL's chat_template_path adds tokens and trains their rows)
    s = α / r,  or α / √r with use_rslora;  r and α per layer from rank_pattern / alpha_pattern

so the reward model scores exactly as the adapted model's ``logits[:, 0]`` (a PRM's steps as the adapted token
classifier's softmax at each step separator). Adapter kinds whose merge is none of these (QA-LoRA, activated
LoRA, DoRA on embeddings, LoRA on parameters, initialisations that changed the base weights such as PiSSA /
OLoRA / LoftQ, other PEFT methods) are refused with the reason. A config without ``task_type`` (TRL's docs pass
``LoraConfig(modules_to_save=["score"])``) is read by the classifier class peft recorded in ``auto_mapping``.
Unless ``dtype=`` says otherwise the model computes in the dtype of the model the run trained (that of the full
tensors the adapter saved, e.g. the head), not the base's saved one: TRL loads bfloat16 bases in float32.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Optional

import torch
from torch import nn

from mmreward.core.device import resolve_device, resolve_dtype
from mmreward.core.folders import CheckpointError
from mmreward.core.model import finish_loading, read_config
from mmreward.core.weights import quiet_transformers, read_json, read_weight_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."

# adapter_config.json fields that change what the adapter computes beyond what _fold_adapter folds: refused when set
_VARIANTS = ("use_qalora", "use_bdlora", "alora_invocation_tokens", "target_parameters", "layer_replication",
             "arrow_config", "kasa_config", "monteclora_config", "velora_config", "astra_config")
# fields that only steer training (initialisation of A / B, dropout, which layers are targeted) or record facts
_KNOWN = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "peft_version",
          "auto_mapping", "r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "modules_to_save",
          "fan_in_fan_out", "bias", "use_rslora", "rank_pattern", "alpha_pattern", "layers_to_transform",
          "layers_pattern", "lora_bias", "init_lora_weights", "loftq_config", "eva_config", "corda_config",
          "lora_ga_config", "megatron_config", "megatron_core", "qalora_group_size", "ensure_weight_tying",
          "modules_to_tie", "runtime_config", "trainable_token_indices", "use_dora", *_VARIANTS}
# initialisations that rewrite the base weights (the adapter holds the rest of them): merged onto the
# original base they give another model unless peft converted the adapter when it was saved
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga", "astra")  # peft's own list, and LoftQ
_MERGE_HINT = ("merge it with peft (PeftModel.from_pretrained(base, folder).merge_and_unload().save_pretrained(out)) "
               "and load the merged folder")


def adapter_weights_file(folder: str) -> Optional[str]:
    return next((os.path.join(folder, n) for n in ADAPTER_WEIGHTS if os.path.isfile(os.path.join(folder, n))), None)


def is_peft_adapter(folder: str, config: Optional[dict]) -> bool:
    return os.path.isfile(os.path.join(folder, ADAPTER_CONFIG)) and adapter_weights_file(folder) is not None


def read_adapter_config(folder: str, tasks: tuple[str, ...] = ("SEQ_CLS", "TOKEN_CLS")) -> dict:
    """``adapter_config.json``, checked: a LoRA adapter of one of ``tasks`` (peft's ``task_type``) whose merge is
    one :func:`_fold_adapter` folds."""
    path = os.path.join(folder, ADAPTER_CONFIG)
    spec = read_json(path, "PEFT adapter config")
    peft_type = spec.get("peft_type")
    if peft_type != "LORA":
        raise CheckpointError(f"{path}: a {peft_type!r} adapter; mmreward reads LoRA adapters (peft_type 'LORA'): "
                              + _MERGE_HINT)
    for key in _VARIANTS:
        if spec.get(key):
            raise CheckpointError(f"{path} sets {key} = {spec[key]!r}: that adapter is no plain W + s·BA update, "
                                  "which is what mmreward folds in; " + _MERGE_HINT)
    unknown = sorted(k for k, v in spec.items() if k not in _KNOWN and v not in (None, False, {}, [], ""))
    if unknown:
        raise CheckpointError(f"{path} sets {unknown[:3]}, PEFT option(s) mmreward does not know, so it cannot tell "
                              "that the adapter is a plain W + s·BA update; " + _MERGE_HINT)
    init = spec.get("init_lora_weights")
    if (isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS)) or spec.get("loftq_config"):
        raise CheckpointError(f"{path}: init_lora_weights {init!r} changed the base weights when training began, "
                              "so this adapter belongs to those changed weights, not to the base model; save it "
                              "with peft's path_initial_model_for_weight_conversion (a plain LoRA adapter), or "
                              + _MERGE_HINT)
    task = told = spec.get("task_type")
    if task is None:
        # LoraConfig() without task_type (TRL's RewardTrainer docs pass none): peft records the class it wrapped
        wrapped = (spec.get("auto_mapping") or {}).get("base_model_class") \
            if isinstance(spec.get("auto_mapping"), dict) else None
        task = _task_of_class(wrapped)
        told = f"no task_type, auto_mapping {wrapped!r}" if task else "no task_type"
        spec = {**spec, "task_type": task} if task else spec
    else:
        told = f"task_type {task!r}"
    if task not in tasks:
        what = {"CAUSAL_LM": "a causal language model (a generative judge or a policy, no reward head)",
                None: "a model of no recorded task"}.get(task, f"a {task} model")
        if tasks == ("CAUSAL_LM",):
            raise CheckpointError(f"{path}: {told}: the adapter of {what}, not of a causal language model; load it "
                                  "with mmreward.load (a reward model or PRM)")
        judge = (" (a generative judge reads it as its language model: mmreward text judge METHOD --model "
                 f"{folder})") if task == "CAUSAL_LM" else ""
        raise CheckpointError(f"{path}: {told}: the adapter of {what}{judge}; mmreward.load reads LoRA adapters of "
                              "reward models (task_type 'SEQ_CLS', as TRL's RewardTrainer trains them) and of "
                              "process reward models ('TOKEN_CLS', TRL's PRMTrainer): " + _MERGE_HINT)
    for key in ("r", "lora_alpha"):
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise CheckpointError(f"{path}: {key} must be a positive number, got {value!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = spec.get(key) or {}
        if not isinstance(pattern, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in pattern.values()):
            raise CheckpointError(f"{path}: {key} must map layer names to positive numbers, got {pattern!r}")
        for name in pattern:  # peft matches them as regular expressions against the layer names
            try:
                re.compile(rf"(.*\.)?({name})$")
            except re.error as e:
                raise CheckpointError(f"{path}: rank_pattern / alpha_pattern key {name!r} is not a regular "
                                      f"expression ({e})") from None
    return spec


def _task_of_class(name: Any) -> Optional[str]:
    """The task of the model class peft wrapped (``auto_mapping.base_model_class``), None when not told."""
    if isinstance(name, str):
        if name.endswith("ForSequenceClassification"):
            return "SEQ_CLS"
        if name.endswith("ForTokenClassification"):
            return "TOKEN_CLS"
        if name.endswith("ForCausalLM"):  # SFTTrainer / DPOTrainer + LoraConfig(): refused as CAUSAL_LM below
            return "CAUSAL_LM"
    return None


_BASE_HINT = ("(mmreward.load(folder, base_model=...); for the command line, as base_model_name_or_path in "
              f"{ADAPTER_CONFIG})")


def _base_folder(folder: str, spec: dict, base_model: Any) -> str:
    from mmreward.registry import resolve_folder

    name = base_model if base_model is not None else spec.get("base_model_name_or_path")
    if not isinstance(name, (str, os.PathLike)) or not os.fspath(name):
        raise CheckpointError(f"{folder}/{ADAPTER_CONFIG} names no base model (base_model_name_or_path): give the "
                              "folder or hub id of the model the adapter was trained on " + _BASE_HINT)
    try:
        return resolve_folder(name)
    except CheckpointError as e:
        given = "base_model" if base_model is not None else f"{ADAPTER_CONFIG}'s base_model_name_or_path"
        raise CheckpointError(f"{folder} is a LoRA adapter whose base model {os.fspath(name)!r} ({given}) cannot be "
                              f"opened: {e}; give the base model the adapter was trained on " + _BASE_HINT) from e


def adapter_summary(folder: str) -> dict[str, Any]:
    """What ``mmreward info`` shows of an adapter folder without loading it: its checked config's task, rank,
    scale rule, targets, and the base model it names (and whether that is a local folder here)."""
    spec = read_adapter_config(folder)
    base = spec.get("base_model_name_or_path")
    targets = spec.get("target_modules")
    if isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        # peft writes target_modules="all-linear" as every matched layer's full name: one entry per kind of layer
        targets = sorted({t.rsplit(".", 1)[-1] for t in targets})
    return {"task_type": spec.get("task_type"), "r": spec["r"], "lora_alpha": spec["lora_alpha"],
            "use_rslora": bool(spec.get("use_rslora")), "use_dora": bool(spec.get("use_dora")),
            "target_modules": targets,
            "modules_to_save": spec.get("modules_to_save"), "base_model": base,
            "base_model_here": _where_base_is(base, spec.get("revision"))}


def local_base_folder(base: Any, revision: Any = None) -> Optional[str]:
    """The folder here of the base model an adapter names (``base_model_name_or_path``): the local folder itself,
    or a hub id's snapshot in the local HF cache; None when it is neither (a hub id is fetched on load)."""
    if not isinstance(base, str) or not base:
        return None
    if os.path.isdir(os.path.expanduser(base)):
        return os.path.expanduser(base)
    if base.count("/") != 1 or os.path.isabs(base):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(base, "config.json", revision=revision if isinstance(revision, str) else None)
    except Exception:  # noqa: BLE001 - not a valid repo id, no huggingface_hub: not here
        return None
    return os.path.dirname(cached) if isinstance(cached, str) else None


def _where_base_is(base: Any, revision: Any) -> str:
    """Whether the base model an adapter names is here: a local folder, a hub id in the local HF cache, or not."""
    here = local_base_folder(base, revision)
    if here is None:
        return "neither a local folder nor in the local HF cache (a hub id is fetched on load; offline, the load fails)"
    return "a local folder" if os.path.isdir(os.path.expanduser(base)) else f"a hub id, in the local HF cache ({here})"


def _pattern_value(pattern: dict, layer: str, default: float) -> float:
    """peft's ``get_pattern_key``: the first pattern key that matches the layer name's end, else ``default``."""
    for key in pattern:  # each compiled in read_adapter_config
        if re.match(rf"(.*\.)?({key})$", layer):
            return pattern[key]
    return default


def split_adapter_state(state: dict[str, torch.Tensor], path: str) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """``({layer: {"A", "B", "B_bias"?, "magnitude"?} | {"embedding_A", "embedding_B"} | {"tokens"}},
    {parameter name: tensor})`` of an adapter file: the low-rank factors (DoRA magnitudes, trainable-token rows)
    per layer, and the tensors that replace the base's (heads, biases, embeddings)."""
    if any(k.startswith(PEFT_PREFIX) for k in state):
        outside = [k for k in state if not k.startswith(PEFT_PREFIX)]
        if outside:
            raise CheckpointError(f"{path}: tensors both under {PEFT_PREFIX!r} (a PeftModel's) and outside it, e.g. "
                                  f"{outside[:3]}")
        state = {k[len(PEFT_PREFIX):]: v for k, v in state.items()}
    factors: dict[str, dict[str, torch.Tensor]] = {}
    replaced: dict[str, torch.Tensor] = {}
    suffixes = {".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_B.bias": "B_bias",
                ".lora_embedding_A": "embedding_A", ".lora_embedding_B": "embedding_B",
                ".lora_magnitude_vector": "magnitude",  # DoRA (use_dora=True, TRL's --use_dora)
                # trainable tokens (TRL's chat_template_path adds tokens and trains their rows): the new rows
                ".token_adapter.trainable_tokens_delta": "tokens"}
    # bias="all" saves a modules_to_save layer's biases three times: under the layer's own name (what peft
    # loads), under its trained copy (…modules_to_save.<adapter>.…) and under the frozen original
    # (…original_module.…); only a trained copy whose own name is missing is read
    copies = {k: re.sub(r"\.modules_to_save\.[^.]+\.", ".", k) for k in state if ".modules_to_save." in k}
    state = {copies.get(k, k): v for k, v in state.items() if ".original_module." not in k
             and (k not in copies or copies[k] not in state)}
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise CheckpointError(f"{path}: {key} is no floating-point tensor")
        suffix = next((s for s in suffixes if key.endswith(s)), None)
        if suffix is not None:
            factors.setdefault(key[:-len(suffix)], {})[suffixes[suffix]] = tensor
        elif key.endswith(".token_adapter.base_layer.weight"):  # the resized embedding the rows go into
            replaced[key[:-len(".token_adapter.base_layer.weight")] + ".weight"] = tensor
        elif ".lora_" in key or "modules_to_save" in key or "token_adapter" in key:
            # an adapter name left in the keys, other parts of a token adapter: nothing mmreward folds
            raise CheckpointError(f"{path}: tensor {key} is not one of a plain LoRA adapter; " + _MERGE_HINT)
        else:
            replaced[key.replace(".base_layer.", ".")] = tensor
    for layer, parts in factors.items():
        if "tokens" in parts:
            if len(parts) > 1 or parts["tokens"].dim() != 2:
                raise CheckpointError(f"{path}: layer {layer} has trainable-token rows of shape "
                                      f"{tuple(parts['tokens'].shape)} beside LoRA tensors {sorted(parts)}; "
                                      + _MERGE_HINT)
            continue
        pair = ("embedding_A", "embedding_B") if "embedding_A" in parts or "embedding_B" in parts else ("A", "B")
        if "magnitude" in parts and (pair[0] == "embedding_A" or "B_bias" in parts):
            raise CheckpointError(f"{path}: layer {layer} is a DoRA adapter of an embedding or with a lora_B bias, "
                                  "which mmreward does not fold; " + _MERGE_HINT)
        if not all(p in parts for p in pair) or (pair[0] == "embedding_A" and ("A" in parts or "B" in parts)):
            raise CheckpointError(f"{path}: layer {layer} has LoRA tensors {sorted(parts)}; it needs both factors")
        a, b = parts[pair[0]], parts[pair[1]]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{path}: layer {layer}'s LoRA factors have shapes {tuple(a.shape)} and "
                                  f"{tuple(b.shape)}, which do not share a rank")
    return factors, replaced


def _lora_delta(layer: str, module: nn.Module, parts: dict[str, torch.Tensor], scale: float, path: str) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The float32 update of ``module.weight`` (and of its bias) that the layer's factors make."""
    from transformers.pytorch_utils import Conv1D

    weight = module.weight
    if "embedding_A" in parts:
        if not isinstance(module, nn.Embedding):
            raise CheckpointError(f"{path}: layer {layer} has embedding factors but the base model's {layer} is a "
                                  f"{type(module).__name__}")
        delta = (parts["embedding_B"].float() @ parts["embedding_A"].float()).T * scale  # (V, D)
    elif isinstance(module, nn.Linear):
        delta = (parts["B"].float() @ parts["A"].float()) * scale  # (out, in)
    elif isinstance(module, Conv1D):  # GPT-2: weight (in, out), peft's fan_in_fan_out
        delta = (parts["B"].float() @ parts["A"].float()).T * scale
    else:
        raise CheckpointError(f"{path}: layer {layer} is a {type(module).__name__} in the base model; mmreward folds "
                              "LoRA into Linear, Conv1D and Embedding layers: " + _MERGE_HINT)
    if tuple(delta.shape) != tuple(weight.shape):
        raise CheckpointError(f"{path}: layer {layer}'s LoRA update has shape {tuple(delta.shape)} but the base "
                              f"model's weight has {tuple(weight.shape)}: an adapter trained on another base model")
    bias_delta = None
    if "B_bias" in parts:
        if getattr(module, "bias", None) is None:
            raise CheckpointError(f"{path}: layer {layer} has a lora_B bias (lora_bias=True) but no bias in the base")
        bias_delta = parts["B_bias"].float() * scale
    return delta, bias_delta


def _dora_rescale(layer: str, module: nn.Module, merged: torch.Tensor, magnitude: torch.Tensor, path: str) -> torch.Tensor:
    """DoRA merged as peft merges it: each output unit's row of W + ΔW rescaled to the trained magnitude,
    W' = m / ‖W + ΔW‖ · (W + ΔW), the norm over the unit's inputs (Conv1D's weight is stored transposed)."""
    from transformers.pytorch_utils import Conv1D

    rows = merged.T if isinstance(module, Conv1D) else merged  # (out, in)
    if tuple(magnitude.shape) != (rows.shape[0],):
        raise CheckpointError(f"{path}: layer {layer}'s DoRA magnitude has shape {tuple(magnitude.shape)}, not "
                              f"({rows.shape[0]},) as its weight's outputs: an adapter trained on another base model")
    rows = rows * (magnitude.float() / rows.norm(p=2, dim=1)).unsqueeze(1)
    return rows.T if isinstance(module, Conv1D) else rows


def load_peft_adapter(folder: str, *, device: Any = "cpu", dtype: Any = None, base_model: Any = None,
                      tokenizer: Any = None, step_separator: Optional[str] = None, aggregation: Optional[str] = None,
                      truncate: Optional[bool] = None):
    """The reward model of a PEFT LoRA adapter folder over its base model (``base_model=`` when
    ``adapter_config.json``'s ``base_model_name_or_path`` is not where it is now), the adapters folded in:

    * ``task_type`` ``SEQ_CLS`` (TRL ``RewardTrainer`` + ``peft_config``): a :class:`RewardModel` scoring as the
      adapted classifier's ``logits[:, 0]``;
    * ``TOKEN_CLS`` (TRL ``PRMTrainer`` + ``peft_config``): a process reward model read as
      :func:`mmreward.text.prm.published.load_token_classification_prm` reads a merged folder
      (``step_separator=``: the run's ``PRMConfig.step_separator``, default ``"\\n"``; ``aggregation=`` /
      ``truncate=`` as for a merged folder)."""
    from .layouts import _tokenizer_argument, _tokenizer_with_config, reward_model_from_classifier, trl_reward_run

    dev, dt = resolve_device(device), resolve_dtype(dtype)
    spec = read_adapter_config(folder)
    token_level = spec.get("task_type") == "TOKEN_CLS"
    given = [name for name, value in (("step_separator", step_separator), ("aggregation", aggregation),
                                       ("truncate", truncate)) if value is not None]
    if given and not token_level:
        raise ValueError(f"mmreward.load: {given[0]}= is an option of token-classification PRM adapters "
                         f"(task_type TOKEN_CLS); {folder} is a {spec.get('task_type')} adapter")
    factors, replaced, weights_path, base, dt = _adapter_and_base(folder, spec, dt, base_model)
    config = _classifier_config(folder, base, replaced, token_level)
    tokenizer = _tokenizer_argument(tokenizer) if tokenizer is not None else \
        _tokenizer_with_config(_tokenizer_folder(folder, base), config)
    if getattr(config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id  # as TRL sets it on the model it trains
    classifier = _adapted_classifier(folder, base, config, factors, replaced, spec, weights_path, token_level, dt)
    if not token_level:
        return finish_loading(reward_model_from_classifier(classifier, tokenizer, trl_reward_run(folder)), dev, dt)
    from .prm.published import TRL_STEP_SEPARATOR, LoadedSource, _run_options, token_classification_prm

    raw = {**classifier.config.to_dict(), "architectures": [type(classifier).__name__]}
    source = LoadedSource(config=raw, tokenizer=tokenizer, weights=classifier.state_dict())
    del classifier
    options = _run_options("min" if aggregation is None else aggregation, False if truncate is None else truncate)
    return token_classification_prm(folder, source, device=device, dtype=dt,
                                    step_separator=TRL_STEP_SEPARATOR if step_separator is None else step_separator,
                                    **options)


def _adapter_and_base(folder: str, spec: dict, dt: Optional[torch.dtype], base_model: Any
                      ) -> tuple[dict, dict, str, str, Optional[torch.dtype]]:
    """``(factors, replaced tensors, weights file, base model folder, compute dtype)`` of an adapter folder whose
    config ``spec`` was read: what every adapter loader starts from (``dt`` None: the run's, :func:`run_dtype`)."""
    if os.path.isfile(os.path.join(folder, "config.json")):
        raise CheckpointError(f"{folder} holds both a model (config.json) and a PEFT adapter ({ADAPTER_CONFIG}); "
                              "keep the merged model and the adapter in separate folders")
    weights_path = adapter_weights_file(folder)
    factors, replaced = split_adapter_state(read_weight_file(weights_path), weights_path)
    base = _base_folder(folder, spec, base_model)
    if os.path.isfile(os.path.join(base, ADAPTER_CONFIG)):
        raise CheckpointError(f"{folder}: its base model {base} is itself a PEFT adapter; give the model it adapts")
    return factors, replaced, weights_path, base, dt or run_dtype(replaced)


def _tokenizer_folder(folder: str, base: str) -> str:
    """The adapter folder when it holds tokenizer files (TRL saves the run's tokenizer beside the adapter), else
    the base model's."""
    from .reward_model import TOKENIZER_FILES

    return folder if any(os.path.isfile(os.path.join(folder, f)) for f in TOKENIZER_FILES) else base


def run_dtype(replaced: dict[str, torch.Tensor]) -> Optional[torch.dtype]:
    """The dtype of the model the run trained: that of the full tensors peft saved beside the factors (the
    ``modules_to_save`` head, biases, embeddings are copies of the trained model's), None without them.

    TRL loads a base in float32 unless told otherwise (``model_init_kwargs={"dtype": ...}``), whatever dtype the
    base was saved in (hub bases: bfloat16), and peft keeps the LoRA factors in float32 either way: folding the
    adapter into the base's own bfloat16 would score another model than the run's."""
    dtypes = {t.dtype for t in replaced.values() if t.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else None


def _auto_class(token_level: bool) -> Any:
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return AutoModelForTokenClassification if token_level else AutoModelForSequenceClassification


def _classifier_config(folder: str, base: str, replaced: dict, token_level: bool) -> Any:
    """The base model's config as the classifier the adapter was trained on (its number of labels from the
    head the adapter saved, else the base's own classifier head): a reward head of 1 output, a PRM's of 2."""
    from .layouts import classifier_config

    auto = _auto_class(token_level)
    kind = "token" if token_level else "sequence"
    config = classifier_config(base)
    if type(config) not in auto._model_mapping:
        raise CheckpointError(f"{folder}: its base model {base} is a {config.model_type!r} model, for which "
                              f"transformers has no {kind}-classification class")
    with torch.device("meta"), quiet_transformers():
        probe = auto.from_config(config)
    head = _head_weight_name(probe, token_level)
    embedding = probe.get_input_embeddings()
    name = next((f"{n}.weight" for n, m in probe.named_modules() if m is embedding), None)
    rows = replaced.get(name)
    if rows is not None and rows.dim() == 2 and rows.shape[0] > getattr(config, "vocab_size", rows.shape[0]):
        # the run added tokens (a pad token, most often) and peft saved the grown matrix: built at that size, the
        # classifier takes a pad_token_id past the base's vocabulary (nn.Embedding's padding_idx)
        config.vocab_size = int(rows.shape[0])
    archs = [str(a) for a in read_config(base).get("architectures") or []]
    if head in replaced:
        labels = replaced[head].shape[0]
    elif any(a.endswith("ForTokenClassification" if token_level else "ForSequenceClassification") for a in archs):
        labels = config.num_labels
    else:
        raise CheckpointError(f"{folder}: the {'PRM' if token_level else 'reward'} head {head} is neither in the "
                              f"adapter (peft's modules_to_save) nor in the base model {base} "
                              f"({', '.join(archs) or '?'}): the adapter holds no trained head (the run's head "
                              f"was left out of the adapter; train with LoraConfig(task_type="
                              f"{'TOKEN_CLS' if token_level else 'SEQ_CLS'!r}) or modules_to_save="
                              f"[{head.split('.')[0]!r}], which save it)")
    wanted = 2 if token_level else 1
    if labels != wanted:
        raise CheckpointError(f"{folder}: its head has {labels} outputs; a "
                              + ("token-classification PRM has 2 (step wrong / right)" if token_level
                                 else "reward model has 1"))
    config.num_labels = wanted
    return config


def _adapted_classifier(folder: str, base: str, config: Any, factors: dict, replaced: dict, spec: dict,
                        weights_path: str, token_level: bool, dt: Optional[torch.dtype], auto: Any = None) -> nn.Module:
    """The base model built as the adapter's classifier (``auto``: another transformers auto class, a causal LM),
    the saved tensors put in and the adapters folded in."""
    from .layouts import saved_dtype

    with quiet_transformers():
        classifier, report = (auto or _auto_class(token_level)).from_pretrained(
            base, config=config, dtype=dt or saved_dtype(base) or "auto", output_loading_info=True,
            ignore_mismatched_sizes=True, trust_remote_code=False)
    mismatched = {str(k) for k, _, _ in report.get("mismatched_keys") or ()}
    unfilled = sorted((set(report.get("missing_keys") or ()) | mismatched) - set(replaced))
    prefix = classifier.base_model_prefix + "."
    if unfilled and not report.get("error_msgs") and not any(k.startswith(prefix) for k in unfilled):
        # DeBERTa's pooler, a head layer outside modules_to_save: made at random when the run built its
        # classifier, frozen, never saved, so no folder holds the values the run trained with
        fresh = sorted({k.split(".")[0] for k in unfilled})
        raise CheckpointError(f"{folder}: {type(classifier).__name__}'s {', '.join(fresh)} ({', '.join(unfilled[:4])}) "
                              f"are not in the base model {base}, so the run initialised them at random, and the "
                              f"adapter did not save them (peft saves the modules_to_save "
                              f"{spec.get('modules_to_save')!r}): train with modules_to_save listing "
                              f"{fresh!r} too, or merge the adapter in the run's own process "
                              "(trainer.model.merge_and_unload().save_pretrained(out)) and load that folder")
    if unfilled or report.get("error_msgs"):
        raise CheckpointError(f"{folder}: {len(unfilled)} weight(s) of {type(classifier).__name__} are neither in "
                              f"the base model {base} nor in the adapter, e.g. {unfilled[:4]} "
                              f"{list(report.get('error_msgs') or [])[:2]}")
    _fold_adapter(classifier, factors, replaced, spec, weights_path)
    return classifier


def load_causal_lm_adapter(folder: str, *, dtype: Any = None, base_model: Any = None) -> tuple[nn.Module, Any]:
    """``(causal LM, tokenizer)`` of a PEFT LoRA adapter of a causal language model (``task_type`` ``CAUSAL_LM``: a
    judge fine-tuned with TRL's ``SFTTrainer`` + ``peft_config``), folded into the base model it names, as
    :func:`load_peft_adapter` folds a reward model's; the tokenizer is the adapter folder's when it holds one."""
    from transformers import AutoModelForCausalLM

    from mmreward.core.weights import hf_config

    from .layouts import _tokenizer_with_config

    spec = read_adapter_config(folder, tasks=("CAUSAL_LM",))
    factors, replaced, weights_path, base, dt = _adapter_and_base(folder, spec, resolve_dtype(dtype), base_model)
    config = hf_config(read_config(base), base)  # checked (numbers, sizes) before anything is built
    tokenizer = _tokenizer_with_config(_tokenizer_folder(folder, base), config)
    lm = _adapted_classifier(folder, base, config, factors, replaced, spec, weights_path, False, dt,
                             auto=AutoModelForCausalLM)
    return lm.eval(), tokenizer


def _head_weight_name(classifier: nn.Module, token_level: bool) -> str:
    """The name of the output layer's weight: a sequence classifier's as :mod:`.layouts` reads it, a token
    classifier's the one weight outside its base model."""
    if token_level:
        prefix = classifier.base_model_prefix + "."
        heads = sorted(k for k in classifier.state_dict() if not k.startswith(prefix) and k.endswith(".weight"))
        if len(heads) != 1:
            raise CheckpointError(f"{type(classifier).__name__} has head weights {heads}; mmreward reads a "
                                  "token-classification PRM whose head is one Linear(H, 2)")
        return heads[0]
    from .layouts import _head_of

    out = _head_of(classifier)[1]
    return next(f"{n}.weight" for n, m in classifier.named_modules() if m is out)


def _token_indices(spec: dict, layer: str, is_input_embedding: bool, path: str) -> list[int]:
    """The token ids whose rows layer ``layer``'s trainable tokens hold: ``trainable_token_indices`` as peft reads
    it (a list: the input embedding's; a dict: per layer name, matched as ``target_modules`` are)."""
    given = spec.get("trainable_token_indices")
    if isinstance(given, dict):
        found = [v for k, v in given.items() if re.fullmatch(rf"(.*\.)?{re.escape(str(k))}", layer)]
        indices = found[0] if len(found) == 1 else None
    else:
        indices = given if is_input_embedding else None
    if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise CheckpointError(f"{path}: layer {layer} has trainable-token rows but {ADAPTER_CONFIG}'s "
                              f"trainable_token_indices {given!r} gives no list of token ids for it")
    return indices


def _put_token_rows(layer: str, module: nn.Module, rows: torch.Tensor, indices: list[int], path: str) -> None:
    """peft's trainable tokens merged: the trained rows replace those of their token ids (no low-rank update)."""
    if not isinstance(module, nn.Embedding):
        raise CheckpointError(f"{path}: layer {layer} has trainable-token rows but the base model's {layer} is a "
                              f"{type(module).__name__}, not an embedding")
    vocab, width = module.weight.shape
    if rows.shape != (len(indices), width) or len(set(indices)) != len(indices) \
            or any(not 0 <= i < vocab for i in indices):
        raise CheckpointError(f"{path}: layer {layer} has {tuple(rows.shape)} trainable-token rows for token ids "
                              f"{indices[:5]}{'…' if len(indices) > 5 else ''} ({len(indices)}), which do not fit its "
                              f"({vocab}, {width}) embedding: an adapter trained on another base model")
    module.weight.index_copy_(0, torch.tensor(indices), rows.to(module.weight.dtype))


@torch.no_grad()
def _fold_adapter(seq: nn.Module, factors: dict, replaced: dict, spec: dict, path: str) -> None:
    """Put the adapter's full tensors into ``seq`` and fold its low-rank updates into the weights."""
    params = dict(seq.named_parameters())
    embedding = seq.get_input_embeddings()
    embedding_name = next((f"{n}.weight" for n, m in seq.named_modules() if m is embedding), None)
    rows = replaced.get(embedding_name)
    if rows is not None and rows.dim() == 2 and rows.shape[0] != embedding.weight.shape[0] \
            and rows.shape[1] == embedding.weight.shape[1]:
        seq.resize_token_embeddings(rows.shape[0])  # tokens added while training (peft saves the whole matrix)
        params, embedding = dict(seq.named_parameters()), seq.get_input_embeddings()
    for name, tensor in replaced.items():
        if name not in params:
            raise CheckpointError(f"{path}: tensor {name} names no parameter of the base model's "
                                  f"{type(seq).__name__}: an adapter trained on another base model")
        if tuple(tensor.shape) != tuple(params[name].shape):
            raise CheckpointError(f"{path}: {name} has shape {tuple(tensor.shape)} but the base model's has "
                                  f"{tuple(params[name].shape)}: an adapter trained on another base model")
        params[name].copy_(tensor.to(params[name].dtype))
    r_default, alpha_default = spec["r"], spec["lora_alpha"]
    rank_pattern, alpha_pattern = spec.get("rank_pattern") or {}, spec.get("alpha_pattern") or {}
    for layer, parts in factors.items():
        try:
            module = seq.get_submodule(layer)
        except AttributeError:
            raise CheckpointError(f"{path}: LoRA tensors of layer {layer}, which the base model's "
                                  f"{type(seq).__name__} does not have: an adapter trained on another base model") from None
        if "tokens" in parts:
            _put_token_rows(layer, module, parts["tokens"], _token_indices(spec, layer, module is embedding, path), path)
            continue
        if bool(spec.get("use_dora")) != ("magnitude" in parts):
            raise CheckpointError(f"{path}: layer {layer} " + ("has no DoRA magnitude (lora_magnitude_vector) but "
                                  f"{ADAPTER_CONFIG} sets use_dora" if spec.get("use_dora") else "has a DoRA magnitude "
                                  f"(lora_magnitude_vector) but {ADAPTER_CONFIG} does not set use_dora")
                                  + ": the weights and the config are of different adapters")
        rank = (parts.get("A") if "A" in parts else parts["embedding_A"]).shape[0]
        stated = _pattern_value(rank_pattern, layer, r_default)
        if rank != stated:
            raise CheckpointError(f"{path}: layer {layer}'s LoRA factors have rank {rank} but {ADAPTER_CONFIG} says "
                                  f"{stated} (r / rank_pattern), which sets its scale")
        alpha = _pattern_value(alpha_pattern, layer, alpha_default)
        scale = alpha / math.sqrt(rank) if spec.get("use_rslora") else alpha / rank
        delta, bias_delta = _lora_delta(layer, module, parts, scale, path)
        merged = module.weight.float() + delta
        if "magnitude" in parts:
            merged = _dora_rescale(layer, module, merged, parts["magnitude"], path)
        if not torch.isfinite(merged).all():
            raise CheckpointError(f"{path}: folding layer {layer}'s adapter gives non-finite weights")
        module.weight.copy_(merged.to(module.weight.dtype))
        if bias_delta is not None:
            module.bias.copy_((module.bias.float() + bias_delta).to(module.bias.dtype))


__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "adapter_summary", "is_peft_adapter", "load_causal_lm_adapter", "load_peft_adapter", "read_adapter_config",
           "split_adapter_state"]

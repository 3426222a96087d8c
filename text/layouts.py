"""Published text reward-model layouts that ``mmreward.load`` opens as a :class:`RewardModel`.

* **transformers sequence classifiers** with one label (``*ForSequenceClassification`` in
  ``config.json``'s ``architectures``), saved the way transformers saves them (safetensors, or
  ``pytorch_model.bin`` read with ``weights_only``):

  - decoders with a linear ``score`` head read at the last token — Llama, Qwen2 / Qwen3, Mistral,
    Gemma, GPT-2 …: Skywork-Reward / -V2, TRL reward models. Chat-template tokenizers render the
    conversation with the template (Skywork-Reward-V2's convention: a leading BOS string removed,
    then tokenised with special tokens);
  - encoders whose head is dense → activation → linear on the first token — BERT (pooler, tanh),
    RoBERTa / XLM-RoBERTa / MPNet (classification head, tanh), DeBERTa-v2 / v3 (ContextPooler,
    ``pooler_hidden_act``), ELECTRA (classification head, gelu), DistilBERT (pre-classifier, ReLU):
    the OpenAssistant DeBERTa and ELECTRA RMs. Prompt and response go in as a text pair
    (``tokenizer(prompt, response)``, their convention).

  The folder's weight names are checked against the classifier transformers builds from its
  config before anything loads: missing head weights, a wrong key prefix or 2+ labels are refused
  with a message naming what is missing.
* **mmreward 0.1 folders**: the backbone's ``config.json``, ``model.safetensors`` (``backbone.*`` +
  ``head.*``), tokenizer files and ``mmreward_reward_model.json``. They carry no input settings: they
  load with the tokenizer's / backbone's length limit, ``keep_end`` truncation (the layout they were
  trained on keeps the end of a long text) and the score read at the last token.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable, Optional

import torch
from torch import nn

from mmreward.core.device import resolve_device, resolve_dtype
from mmreward.core.folders import CheckpointError
from mmreward.core.model import finish_loading, load_state_strict, load_weights, read_config
from mmreward.core.weights import quiet_transformers, refuse_mismatched, weight_shapes

from .data import has_chat_template, has_pair_template, model_max_length
from .reward_model import RewardModel, RewardModelConfig, _tokenizer_argument, is_encoder, load_tokenizer

LEGACY_META = "mmreward_reward_model.json"
LEGACY_MODEL_TYPE = "mmreward_reward_model"

# model_type -> (dense layer, output layer, activation) of its *ForSequenceClassification, as
# attribute paths on that model; the dense layer reads the first token ([CLS] / <s>)
ENCODER_HEADS: dict[str, tuple[str, str, Callable[[Any], str]]] = {
    "bert": ("bert.pooler.dense", "classifier", lambda c: "tanh"),
    "roberta": ("classifier.dense", "classifier.out_proj", lambda c: "tanh"),
    "xlm-roberta": ("classifier.dense", "classifier.out_proj", lambda c: "tanh"),
    "deberta-v2": ("pooler.dense", "classifier", lambda c: c.pooler_hidden_act),
    "electra": ("classifier.dense", "classifier.out_proj", lambda c: "gelu"),  # ElectraClassificationHead: gelu
    "distilbert": ("pre_classifier", "classifier", lambda c: "relu"),
    "mpnet": ("classifier.dense", "classifier.out_proj", lambda c: "tanh"),
}


# ------------------------------------------------------------------ mmreward 0.1 folders
def is_legacy_folder(folder: str, config: Optional[dict]) -> bool:
    return os.path.isfile(os.path.join(folder, LEGACY_META))


def load_legacy_folder(folder: str, *, device: Any = "cpu", dtype: Any = None, tokenizer: Any = None) -> RewardModel:
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    meta_path = os.path.join(folder, LEGACY_META)
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"corrupt {meta_path}: {e}") from e
    if not isinstance(meta, dict) or meta.get("model_type") != LEGACY_MODEL_TYPE:
        raise CheckpointError(f"{meta_path} is not a reward-model record")
    weights = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(weights):
        raise CheckpointError(f"{folder} is incomplete: model.safetensors is missing")
    if os.path.getsize(weights) != meta.get("weights_bytes"):
        raise CheckpointError(f"{weights} has {os.path.getsize(weights)} bytes but {LEGACY_META} expects "
                              f"{meta.get('weights_bytes')}: truncated or from another save")
    backbone = read_config(folder)
    tokenizer = _tokenizer_argument(tokenizer) if tokenizer is not None else load_tokenizer(folder)
    config = RewardModelConfig(backbone=backbone, input_format="chat" if has_chat_template(tokenizer) else "joined",
                               truncation="keep_end", pooling="last")
    with quiet_transformers():
        model = RewardModel(config, tokenizer)
    model.config.max_length = model_max_length(tokenizer, model.backbone.config)
    load_state_strict(model, load_weights(folder, "cpu"), folder)
    return finish_loading(model, dev, dt)


# ------------------------------------------------------------------ Qwen2.5-Math-RM


def is_qwen_math_rm(folder: str, config: Optional[dict]) -> bool:
    archs = (config or {}).get("architectures") or []
    return isinstance(archs, list) and "Qwen2ForRewardModel" in archs


def load_qwen_math_rm(folder: str, *, device: Any = "cpu", dtype: Any = None, tokenizer: Any = None) -> RewardModel:
    """Qwen2.5-Math-RM-72B (``Qwen2ForRewardModel``, remote code in its release): ``model.*`` a Qwen2
    backbone, ``score`` = Linear(H, H) → ReLU → Linear(H, 1) at the last token of the chat
    ``[system: QWEN_PRM_SYSTEM, user, assistant]`` (its model card; the Qwen2.5-Math PRM's system turn),
    as a :class:`RewardModel` whose pooler and head are those two layers."""
    from transformers import AutoModel

    from mmreward.core.weights import backbone_state, check_shapes, hf_config, read_weights

    from .prm.model import building_for_weights, weights_dtype
    from .prm.published import QWEN_PRM_SYSTEM

    dev, dt = resolve_device(device), resolve_dtype(dtype)
    hf = hf_config(read_config(folder), folder, "qwen2")
    tokenizer = _tokenizer_argument(tokenizer) if tokenizer is not None else load_tokenizer(folder)
    if not has_chat_template(tokenizer):
        raise CheckpointError(f"{folder}: Qwen2.5-Math-RM scores chat conversations, and this tokenizer has no chat template")
    weights = read_weights(folder)
    saved_dtype = weights_dtype(weights)
    head = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")
    missing = [k for k in head if k not in weights]
    if missing:
        raise CheckpointError(f"{folder}: missing Qwen2ForRewardModel head tensor(s) {missing} (score = Linear → "
                              "ReLU → Linear(1))")
    if weights["score.2.weight"].shape[0] != 1:
        raise CheckpointError(f"{folder}: score.2.weight has shape {tuple(weights['score.2.weight'].shape)}; a reward "
                              "model has one output")
    sources = {"pooler.weight": "score.0.weight", "pooler.bias": "score.0.bias", "head.weight": "score.2.weight",
               "head.bias": "score.2.bias"}  # our name -> the release's
    state = {ours: weights.pop(theirs) for ours, theirs in sources.items()}
    backbone = backbone_state(weights, folder, "Qwen2.5-Math-RM", ignore=("lm_head.",))
    config = RewardModelConfig(backbone={**hf.to_dict(), "model_type": hf.model_type}, input_format="chat",
                               pooling="last", pooler_act="relu", max_length=model_max_length(tokenizer, hf),
                               system_prompt=QWEN_PRM_SYSTEM)
    with quiet_transformers(), building_for_weights(saved_dtype):  # as saved (bf16): no fp32 copy, no random init
        model = RewardModel(config, tokenizer, backbone=AutoModel.from_config(hf))
    check_shapes(model, {**backbone, **state}, folder, "Qwen2.5-Math-RM", sources)
    load_state_strict(model, {**backbone, **state}, folder)
    return finish_loading(model, dev, dt)


# ------------------------------------------------------------------ transformers sequence classifiers
def is_sequence_classifier(folder: str, config: Optional[dict]) -> bool:
    archs = (config or {}).get("architectures") or []
    return any(isinstance(a, str) and a.endswith("ForSequenceClassification") for a in archs)


def check_classifier_weights(folder: str, config: Any) -> None:
    """Refuse a folder whose weights do not cover the classifier its config describes."""
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"), quiet_transformers():
        seq = AutoModelForSequenceClassification.from_config(config)
    shapes = weight_shapes(folder)
    if shapes is None:
        raise CheckpointError(f"{folder} has no weights (model.safetensors, its index, or pytorch_model.bin)")
    found = set(shapes)
    expected = seq.state_dict()
    missing = sorted(set(expected) - found)
    if not missing:
        # transformers reports a wrong shape only in the load report that mmreward keeps quiet
        wrong = [(k, shapes[k], tuple(v.shape)) for k, v in expected.items() if shapes[k] != tuple(v.shape)]
        if wrong:
            k, got, want = wrong[0]
            raise CheckpointError(f"{folder}: {k} has shape {got} in the weights but {type(seq).__name__} of its "
                                  f"config.json expects {want} ({len(wrong)} tensor(s) differ)")
        return
    what = type(seq).__name__
    prefix = seq.base_model_prefix + "."
    base_missing = [k for k in missing if k.startswith(prefix)]
    if base_missing:
        suffix = base_missing[0][len(prefix):]
        stored = next((k[:-len(suffix)] for k in sorted(found) if k.endswith("." + suffix) or k == suffix), None)
        if stored is not None and stored != prefix:
            raise CheckpointError(f"{folder}: wrong key prefix: the backbone weights are stored under {stored!r} but "
                                  f"{what} expects {prefix!r} (e.g. {base_missing[0]!r})")
    head_missing = [k for k in missing if not k.startswith(prefix)]
    if head_missing:
        raise CheckpointError(f"{folder}: the classification head weights {head_missing} are missing: a base model, "
                              f"not a trained {what} reward model")
    raise CheckpointError(f"{folder} is incomplete: {len(missing)} weight(s) of {what} are missing, "
                          f"e.g. {missing[:4]}")


def _stored_head(folder: str, config: Any) -> Optional[tuple[str, tuple[int, ...]]]:
    """(name, shape) of the classification head's output weight in the folder's files, when found."""
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"), quiet_transformers():
        seq = AutoModelForSequenceClassification.from_config(config)
    try:
        out = _head_of(seq)[1]
    except CheckpointError:
        return None
    name = next(f"{n}.weight" for n, m in seq.named_modules() if m is out)
    shape = (weight_shapes(folder) or {}).get(name)
    return (name, shape) if shape else None


def _module(root: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _head_of(seq: nn.Module) -> tuple[Optional[nn.Linear], nn.Linear, Optional[str], str]:
    """``(dense, output, activation, pooling)`` of a loaded sequence classifier."""
    score = getattr(seq, "score", None)
    if isinstance(score, nn.Linear):  # decoders: one linear layer at the last token
        return None, score, None, "last"
    spec = ENCODER_HEADS.get(seq.config.model_type)
    if spec is None:
        raise CheckpointError(f"{type(seq).__name__}: mmreward reads decoder classifiers with a linear `score` head "
                              f"and the encoder heads of {', '.join(sorted(ENCODER_HEADS))}")
    dense, out, act = spec
    return _module(seq, dense), _module(seq, out), act(seq.config), "first"


def load_sequence_classifier(folder: str, *, device: Any = "cpu", dtype: Any = None,
                             tokenizer: Any = None) -> RewardModel:
    """A published one-label ``*ForSequenceClassification`` as a :class:`RewardModel` computing
    exactly its ``logits[:, 0]``."""
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    from transformers import AutoConfig, AutoModelForSequenceClassification

    with quiet_transformers():
        config = AutoConfig.from_pretrained(folder)
    if getattr(config, "num_labels", 1) != 1:
        raw = read_config(folder)
        head = _stored_head(folder, config)
        if "num_labels" not in raw and "id2label" not in raw and head is not None and head[1][0] == 1:
            # transformers' default is 2 labels: a one-output head is the config's omission, not a 2-label classifier
            raise CheckpointError(f"{folder}/config.json sets neither num_labels nor id2label, which transformers "
                                  f"reads as {config.num_labels} labels, but its head {head[0]} has shape {head[1]}: "
                                  "one output, a reward model; add \"num_labels\": 1 to config.json")
        raise CheckpointError(f"{folder} is a classifier with {config.num_labels} labels "
                              f"({sorted(map(str, getattr(config, 'id2label', {}).values()))[:4]}); a reward model has 1")
    check_classifier_weights(folder, config)
    tokenizer = _tokenizer_argument(tokenizer) if tokenizer is not None else load_tokenizer(folder)
    with quiet_transformers():
        seq, report = AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=dt or "auto", output_loading_info=True, ignore_mismatched_sizes=True)
    # checked above from the files; this catches what transformers read differently (a tensor it
    # leaves at its random initial value would give wrong scores without an error)
    refuse_mismatched(report, folder, type(seq).__name__)
    missing = sorted(report.get("missing_keys") or ())
    if missing or report.get("error_msgs"):
        raise CheckpointError(f"{folder}: transformers did not load {len(missing)} weight(s) of {type(seq).__name__} "
                              f"from the files, e.g. {missing[:4]} {list(report.get('error_msgs') or [])[:2]}")
    unused = sorted(k for k in report.get("unexpected_keys") or () if not k.endswith("position_ids"))
    if unused:
        warnings.warn(f"{folder}: {len(unused)} tensor(s) that {type(seq).__name__} does not use are ignored, "
                      f"e.g. {unused[:4]}", stacklevel=2)
    return finish_loading(reward_model_from_classifier(seq, tokenizer), dev, dt)


def reward_model_from_classifier(seq: nn.Module, tokenizer: Any) -> RewardModel:
    """Move a loaded sequence classifier's backbone and head into a :class:`RewardModel`."""
    dense, out, act, pooling = _head_of(seq)
    base = getattr(seq, seq.base_model_prefix)
    if dense is not None and getattr(base, "pooler", None) is not None and _owns(base.pooler, dense):
        base.pooler = None  # BERT keeps its pooler inside the base model: it becomes our pooler layer
    encoder = is_encoder(seq.config)
    input_format = ("chat" if has_chat_template(tokenizer) else
                    "pair" if encoder and has_pair_template(tokenizer) else "joined")
    config = RewardModelConfig(backbone=seq.config.to_dict(), max_length=model_max_length(tokenizer, seq.config),
                               input_format=input_format, pooling=pooling, pooler_act=act)
    model = RewardModel(config, tokenizer, backbone=base)
    with torch.no_grad():
        model.head.weight.copy_(out.weight.reshape(1, -1))
        model.head.bias.copy_(out.bias.reshape(1) if out.bias is not None else torch.zeros(1))
        if dense is not None:
            model.pooler.weight.copy_(dense.weight)
            model.pooler.bias.copy_(dense.bias)
    return model


def _owns(parent: nn.Module, child: nn.Module) -> bool:
    return any(m is child for m in parent.modules())


__all__ = ["ENCODER_HEADS", "LEGACY_META", "check_classifier_weights", "is_legacy_folder", "is_qwen_math_rm",
           "is_sequence_classifier", "load_legacy_folder", "load_qwen_math_rm", "load_sequence_classifier",
           "reward_model_from_classifier"]

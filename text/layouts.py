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

import copy
import json
import math
import os
import re
import warnings
from typing import Any, Callable, Optional

import torch
from torch import nn

from mmreward.core.device import resolve_device, resolve_dtype
from mmreward.core.folders import CheckpointError
from mmreward.core.model import finish_loading, load_state_strict, load_weights, read_config
from mmreward.core.weights import quiet_transformers, refuse_mismatched, weight_shapes

from .data import has_chat_template, has_pair_template, model_max_length
from .reward_model import RewardModel, RewardModelConfig, _tokenizer_argument, is_encoder, load_tokenizer, without_unused_pooler

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
    load_state_strict(model, without_unused_pooler(model, load_weights(folder, "cpu")), folder)
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


# ------------------------------------------------------------------ decoder RMs with a head of their own
# Published reward models whose class is written in their model card (no auto_map, or an auto_map whose
# computation is a backbone + a head at the last token): read with transformers' backbone and our
# pooler / head, never their code. Each entry: the backbone's key prefix in the files, the head tensors
# (ours -> theirs; a missing bias is zero), the pooler's activation (Linear(H, H) before the head), and
# the input format of the official scoring code as a chat template (None: the tokenizer's own).
ULTRARM_TEMPLATE = ("{% for m in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
                    "{% if m['role'] == 'user' %}Human: {% elif m['role'] == 'assistant' %}Assistant: {% endif %}"
                    "{{ m['content'] }}{% endfor %}")
EURUS_TEMPLATE = ("{% for m in messages %}{% if not loop.first %} {% endif %}"
                  "{% if m['role'] == 'assistant' %}{{ m['content'] }}{% else %}[INST] {{ m['content'] }} [/INST]"
                  "{% endif %}{% endfor %}")
STARLING_TEMPLATE = ("{% for m in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
                     "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>{% endfor %}")
OASST_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<|prompter|>{% elif m['role'] == 'assistant' %}"
                  "<|assistant|>{% else %}<|system|>{% endif %}{{ m['content'] }}{{ eos_token }}{% endfor %}")

# OpenRLHF's RewardDataset renders a conversation with the tokenizer's chat template (``--apply_chat_template``;
# without it: prompt + response as they are), strips trailing newlines and appends " " + eos unless the text
# already ends with the eos token; the reward is read at that last token. Wrapped around the tokenizer's own
# template (or a plain concatenation of the contents), so the text mmreward tokenises is the one OpenRLHF trained on.
OPENRLHF_CONCAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def openrlhf_template(template: Optional[str]) -> str:
    """``template`` rendered as OpenRLHF's RewardDataset reads its output: trailing newlines stripped, then
    ``" " + eos_token`` unless the text already ends with it."""
    return ("{% set openrlhf_text %}" + (template or OPENRLHF_CONCAT_TEMPLATE) + "{% endset %}"
            "{% set openrlhf_text = openrlhf_text.rstrip('\\n') %}{{ openrlhf_text }}"
            "{% if eos_token and not openrlhf_text.endswith(eos_token) %} {{ eos_token }}{% endif %}")


HEADED_DECODERS: dict[str, dict[str, Any]] = {
    # infly/INF-ORM-Llama3.1-70B: score = Linear(H, H) -> ReLU -> Linear(H, 1), Llama-3.1 chat template
    "INF-ORM": dict(prefix="model.", head={"pooler.weight": "score.0.weight", "pooler.bias": "score.0.bias",
                                            "head.weight": "score.2.weight", "head.bias": "score.2.bias"},
                    pooler_act="relu", template=None, model_type="llama"),
    # openbmb/UltraRM-13b (LlamaModel + regression_head, bias-free), its card's "Human: …\nAssistant: …"
    "UltraRM": dict(prefix="model.", head={"head.weight": "regression_head.weight"}, template=ULTRARM_TEMPLATE,
                    model_type=None),
    # openbmb/Eurus-RM-7b (MistralModel + regression_head; its auto_map code is not run), "[INST] … [/INST] …"
    "Eurus-RM": dict(prefix="model.", head={"head.weight": "regression_head.weight"}, template=EURUS_TEMPLATE,
                     model_type=None),
    # Nexusflow/Starling-RM-34B (`transformer` LlamaModel + v_head, bias-free), its card's ChatML-style turns
    "Starling-RM": dict(prefix="transformer.", head={"head.weight": "v_head.weight"}, template=STARLING_TEMPLATE,
                        model_type=None),
    # OpenAssistant/oasst-rm-*-pythia-* (GPTNeoXRewardModel: gpt_neox + out_proj), <|prompter|> … <|assistant|> …
    "OpenAssistant GPTNeoXRewardModel": dict(prefix="gpt_neox.", head={"head.weight": "out_proj.weight",
                                                                     "head.bias": "out_proj.bias"},
                                             template=OASST_TEMPLATE, model_type="gpt_neox"),
    # reward models trained by OpenRLHF (get_llm_for_sequence_regression: architectures ["RewardModel"], the
    # backbone under its base_model_prefix, a bias-free head under config.value_head_prefix, reward mean / std
    # of its last evaluation in config.json); prefix and head names come from the folder (openrlhf_spec)
    "OpenRLHF": dict(prefix=None, head=None, template=None, model_type=None),
}


def _weight_names_or_none(folder: str) -> set[str]:
    from mmreward.core.weights import weight_names

    try:
        return weight_names(folder) or set()
    except (CheckpointError, OSError, ValueError, RuntimeError):  # the loader that claims the folder reports it
        return set()


def headed_decoder_kind(folder: str, config: Optional[dict]) -> Optional[str]:
    """Which entry of :data:`HEADED_DECODERS` the folder is, or None."""
    config = config or {}
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if "INFORMForSequenceClassification" in archs:
        return "INF-ORM"
    if "GPTNeoXRewardModel" in archs or config.get("model_type") == "gpt_neox_reward_model":
        return "OpenAssistant GPTNeoXRewardModel"
    if "EurusRewardModel" in archs:
        return "Eurus-RM"
    if archs == ["RewardModel"] and not isinstance(config.get("auto_map"), dict) \
            and any(k in config for k in ("value_head_prefix", "normalize_reward", "mean")):
        return "OpenRLHF"  # the class get_llm_for_sequence_regression builds saves under the name RewardModel
    if archs == ["CriticModel"] and not isinstance(config.get("auto_map"), dict) and "normalize_reward" in config:
        return "OpenRLHF critic"  # refused by load_headed_decoder, with the reason
    name = os.path.basename(os.path.normpath(folder)).lower()
    if "nemotron" in name and "reward" in name and any(a.endswith("ForCausalLM") for a in archs):
        return "Nemotron reward LM"  # refused by load_headed_decoder, with the reason
    if isinstance(config.get("auto_map"), dict) or not isinstance(config.get("model_type"), str):
        return None  # other remote-code models are not guessed at from their tensor names
    model_type = config.get("model_type")
    if model_type not in ("llama", "mistral"):
        return None  # the input format is known only for the Llama (UltraRM, Starling) and Mistral (Eurus) releases
    names = _weight_names_or_none(folder)
    if "regression_head.weight" in names and any(n.startswith("model.") for n in names):
        # Eurus-RM-7b's first config.json named MistralForCausalLM and had no auto_map
        return "UltraRM" if model_type == "llama" else "Eurus-RM"
    if "v_head.weight" in names and any(n.startswith("transformer.") for n in names) and model_type == "llama":
        return "Starling-RM"
    return None


def is_headed_decoder(folder: str, config: Optional[dict]) -> bool:
    return headed_decoder_kind(folder, config) is not None


def openrlhf_spec(folder: str, raw: dict, hf: Any) -> dict[str, Any]:
    """The :data:`HEADED_DECODERS` entry of an OpenRLHF reward model: the backbone under the base_model_prefix of
    transformers' class for its ``model_type`` (``model.`` for Llama / Qwen2 / Mistral), the head under
    ``value_head_prefix`` (OpenRLHF's default ``score``; older releases ``value_head``)."""
    from transformers import AutoModel

    head = raw.get("value_head_prefix", "score")
    if "value_head_prefix" not in raw and "score.weight" not in (names := _weight_names_or_none(folder)) \
            and "value_head.weight" in names:
        head = "value_head"  # OpenRLHF's default before value_head_prefix was written into config.json
    if not isinstance(head, str) or not head:
        raise CheckpointError(f"{folder}/config.json: value_head_prefix must be a module name, got {head!r}")
    try:
        base = AutoModel._model_mapping[type(hf)].base_model_prefix
    except (KeyError, AttributeError) as e:
        raise CheckpointError(f"{folder}: transformers has no base model for model_type {hf.model_type!r}") from e
    return dict(prefix=f"{base}.", head={"head.weight": f"{head}.weight"}, template=None, model_type=None)


def _reward_stats(folder: str, raw: dict) -> tuple[float, float]:
    """The reward mean / std OpenRLHF's trainer stores in config.json (its last evaluation's rewards)."""
    mean, std = raw.get("mean"), raw.get("std")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (mean, std))
    if not ok or std <= 0:
        raise CheckpointError(f"{folder}/config.json: normalize_reward=True needs the reward 'mean' and a positive "
                              f"'std' OpenRLHF's trainer stores there; found mean={mean!r}, std={std!r}")
    return float(mean), float(std)


def _fold_normalization(folder: str, raw: dict, state: dict) -> None:
    """OpenRLHF's ``normalize_reward``: ``(r - mean) / std`` with the mean / std its trainer stored in
    config.json, folded into the head (weight / std, bias - mean / std)."""
    mean, std = _reward_stats(folder, raw)
    weight = state["head.weight"]
    state["head.weight"] = (weight.double() / std).to(weight.dtype)
    state["head.bias"] = ((state["head.bias"].double() - mean) / std).to(state["head.bias"].dtype)


def load_headed_decoder(folder: str, *, device: Any = "cpu", dtype: Any = None, tokenizer: Any = None,
                        normalize_reward: bool = False) -> RewardModel:
    """A decoder reward model of :data:`HEADED_DECODERS` as a :class:`RewardModel`: the backbone read by
    transformers' own class for its ``model_type``, the head (and INF-ORM's Linear → ReLU pooler) from
    the release's tensors, the score at the last token of the official input format.

    ``normalize_reward=True`` (OpenRLHF reward models only): ``(r - mean) / std`` with the mean / std in
    config.json, as OpenRLHF's ``normalize_reward`` (``serve_rm --reward.normalize_enable``, PPO's
    ``--normalize_reward``) computes it; the default is the raw reward (OpenRLHF's default)."""
    from transformers import AutoModel

    from mmreward.core.weights import check_shapes, hf_config, read_weights

    from .prm.model import building_for_weights, weights_dtype

    raw = read_config(folder)
    kind = headed_decoder_kind(folder, raw)
    if kind is None:
        raise CheckpointError(f"{folder} is none of the layouts {', '.join(HEADED_DECODERS)}")
    if kind == "OpenRLHF critic":
        raise CheckpointError(f"{folder} holds an OpenRLHF critic (architectures ['CriticModel']): PPO's value model, "
                              "which estimates a value at every token of a rollout, not a reward model; score with "
                              "the reward model the run was trained against (architectures ['RewardModel'])")
    if kind == "Nemotron reward LM":
        raise CheckpointError(
            f"{folder} holds an NVIDIA Nemotron reward model in causal-LM form ({', '.join(raw.get('architectures'))}): "
            "its card reads the reward as the score of token id 0 that generate(max_new_tokens=1, output_scores=True) "
            "gives after the conversation (scores processed by the generation config), not a reward head; "
            "mmreward does not read this layout: score it with its card's code")
    spec = HEADED_DECODERS[kind]
    if not isinstance(normalize_reward, bool):
        raise TypeError(f"normalize_reward must be True or False, got {type(normalize_reward).__name__}")
    if normalize_reward and kind != "OpenRLHF":
        raise ValueError(f"normalize_reward applies to OpenRLHF reward models (their config.json holds the reward "
                         f"mean / std); {folder} is {kind}")
    if normalize_reward:
        _reward_stats(folder, raw)  # refused before anything loads
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    backbone_type = spec["model_type"] or raw.get("model_type")
    drop = ("pooling",) + (("mean", "std", "normalize_reward", "value_head_prefix") if kind == "OpenRLHF" else ())
    hf = hf_config({**{k: v for k, v in raw.items() if k not in drop}, "model_type": backbone_type}, folder)
    if kind == "OpenRLHF":
        spec = openrlhf_spec(folder, raw, hf)
    pooling = raw.get("pooling", "last") if kind.startswith("OpenAssistant") else "last"
    if pooling not in ("last", "mean"):
        raise CheckpointError(f"{folder}/config.json: pooling {pooling!r}; {kind} pools 'last' or 'mean'")
    if tokenizer is not None:
        tokenizer = copy.copy(_tokenizer_argument(tokenizer))  # the template below is set on our copy only
    else:
        try:
            tokenizer = load_tokenizer(folder)
        except CheckpointError as e:
            if kind != "Starling-RM":
                raise
            raise CheckpointError(f"{e}. Starling-RM-34B's card scores with the tokenizer of 01-ai/Yi-34B-Chat: pass "
                                  "tokenizer= (that tokenizer or its folder)") from None
    if kind == "OpenRLHF":
        if default_template(tokenizer) is None:
            warnings.warn(f"{folder}: the tokenizer has no chat template, so the OpenRLHF reward model reads prompt + "
                          "response as OpenRLHF trains without --apply_chat_template and --input_template (the two "
                          "texts joined as they are, then ' ' + eos); if it was trained with an --input_template, "
                          "pass tokenizer= with a chat template that writes it", stacklevel=2)
        tokenizer.chat_template = openrlhf_template(default_template(tokenizer))
    elif spec["template"] is not None:
        tokenizer.chat_template = spec["template"]  # the card's input format; saved with the model
    elif not has_chat_template(tokenizer):
        raise CheckpointError(f"{folder}: {kind} scores chat conversations, and this tokenizer has no chat template")
    weights = read_weights(folder)
    saved_dtype = weights_dtype(weights)
    for k in [k for k in weights if k.endswith("rotary_emb.inv_freq") or k.endswith("attention.masked_bias")
              or k.endswith("attention.bias")]:
        del weights[k]  # buffers older transformers saved and current ones rebuild (transformers ignores them too)
    sources = dict(spec["head"])  # ours -> theirs
    missing = [theirs for theirs in sources.values() if theirs not in weights]
    if missing:
        raise CheckpointError(f"{folder}: missing {kind} head tensor(s) {missing} (found prefixes "
                              f"{sorted({k.split('.')[0] for k in weights})[:8]})")
    head_weight = weights[sources["head.weight"]]
    if head_weight.dim() != 2 or head_weight.shape[0] != 1:
        raise CheckpointError(f"{folder}: {sources['head.weight']} has shape {tuple(head_weight.shape)}; a reward "
                              "model has one output")
    state = {ours: weights.pop(theirs) for ours, theirs in sources.items()}
    if "head.bias" not in state:
        state["head.bias"] = torch.zeros(1, dtype=head_weight.dtype)  # the release's head has no bias
    if normalize_reward:
        _fold_normalization(folder, raw, state)
    prefix = spec["prefix"]
    backbone = {f"backbone.{k[len(prefix):]}": v for k, v in weights.items() if k.startswith(prefix)}
    if not backbone:
        raise CheckpointError(f"{folder}: no backbone tensors under {prefix!r} (the {kind} layout's prefix); found "
                              f"prefixes {sorted({k.split('.')[0] for k in weights})[:8]}")
    unexpected = sorted(k for k in weights if not k.startswith((prefix, "lm_head.", "embed_out.")))
    if unexpected:
        raise CheckpointError(f"{folder}: tensors that are not part of the {kind} layout: {unexpected[:6]}")
    sources.update({f"backbone.{k[len(prefix):]}": k for k in weights if k.startswith(prefix)})
    config = RewardModelConfig(backbone={**hf.to_dict(), "model_type": hf.model_type}, input_format="chat",
                               pooling=pooling, pooler_act=spec.get("pooler_act"),
                               max_length=model_max_length(tokenizer, hf))
    with quiet_transformers(), building_for_weights(saved_dtype):  # as saved: no fp32 copy, no random init
        model = RewardModel(config, tokenizer, backbone=AutoModel.from_config(hf))
    check_shapes(model, {**backbone, **state}, folder, kind, sources)
    load_state_strict(model, {**backbone, **state}, folder)
    return finish_loading(model, dev, dt)


# ------------------------------------------------------------------ QRM (quantile ArmoRM variants)
def is_quantile_gating_rm(folder: str, config: Optional[dict]) -> bool:
    """QRM (``nicolinho/QRM-*``) names ArmoRM's architecture, LlamaForRewardModelWithGating, but its heads
    predict quantiles (``num_quantiles``, ``loss: quantile_regression``): ArmoRM's reader must not take it."""
    config = config or {}
    archs = config.get("architectures") or []
    return (isinstance(archs, list) and "LlamaForRewardModelWithGating" in archs
            and ("num_quantiles" in config or config.get("loss") == "quantile_regression"))


def refuse_quantile_gating_rm(folder: str, *, device: Any = None, dtype: Any = None, **_: Any) -> Any:
    """Always raises: see :func:`is_quantile_gating_rm`."""
    raw = read_config(folder)
    raise CheckpointError(
        f"{folder} holds a QRM quantile reward model (LlamaForRewardModelWithGating with num_quantiles="
        f"{raw.get('num_quantiles')!r}, loss={raw.get('loss')!r}): its regression and gating heads predict reward "
        "quantiles, not ArmoRM's 19 objective rewards, so mmreward's ArmoRM reader would score it wrongly. Its model "
        "code ships inside the checkpoint (auto_map) and mmreward does not run code from checkpoints: score it with "
        "its own repository's code.")


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
        return None, score, None, "last_non_pad"  # as transformers reads it (the last token not the pad id)
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
    from transformers import AutoModelForSequenceClassification

    config = check_sequence_classifier_folder(folder)
    raw = read_config(folder)
    # the config built above: AutoTokenizer would build a refused problem_type again; and never its prompt to run
    # a tokenizer class shipped in the folder (tokenizer_config.json's auto_map)
    tokenizer = _tokenizer_argument(tokenizer) if tokenizer is not None else _tokenizer_with_config(folder, config)
    if "vhead_layer_type" in raw:
        tokenizer = grm_tokenizer(tokenizer)
    with quiet_transformers():
        seq, report = AutoModelForSequenceClassification.from_pretrained(
            folder, config=config, dtype=dt or saved_dtype(folder) or "auto", output_loading_info=True,
            ignore_mismatched_sizes=True, trust_remote_code=False)
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
    return finish_loading(reward_model_from_classifier(seq, tokenizer, trl_reward_run(folder)), dev, dt)


# a training setting: transformers >= 5 refuses it with one label, which it does not change for scoring
_CLASSIFICATION_PROBLEMS = ("single_label_classification", "multi_label_classification")


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def saved_dtype(folder: str) -> Optional[torch.dtype]:
    """The floating dtype holding most elements of the folder's weights (safetensors headers; a ``torch.save``
    file mapped, not read), None when it cannot be told. transformers' ``dtype="auto"`` follows config.json's
    ``dtype`` / ``torch_dtype`` instead, so fp32 weights under a config naming float16 would be cast to fp16."""
    from safetensors import safe_open

    from mmreward.core.weights import SHARD_INDEXES, _index_shards, read_torch_state

    def files() -> list[str]:
        for single, index in SHARD_INDEXES:
            if os.path.isfile(os.path.join(folder, single)):
                return [os.path.join(folder, single)]
            if os.path.isfile(os.path.join(folder, index)):
                return [os.path.join(folder, shard) for shard in sorted(_index_shards(folder, index))]
        return []

    count: dict[torch.dtype, int] = {}
    try:
        for path in files():
            if path.endswith(".safetensors"):
                with safe_open(path, "pt") as f:
                    for k in f.keys():
                        piece = f.get_slice(k)
                        dt = _SAFETENSORS_DTYPES.get(piece.get_dtype())
                        if dt is not None:
                            count[dt] = count.get(dt, 0) + math.prod(piece.get_shape())
            else:
                for t in read_torch_state(path).values():
                    if t.is_floating_point():
                        count[t.dtype] = count.get(t.dtype, 0) + t.numel()
    except Exception:  # noqa: BLE001 - a damaged file is named by the loading that follows
        return None
    return max(count, key=count.get) if count else None


def classifier_config(folder: str) -> Any:
    """The transformers config of a ``*ForSequenceClassification`` folder, or CheckpointError naming the folder
    and the field when transformers cannot build it (a ``model_type`` it does not know, a value it refuses).
    A one-label ``problem_type`` of ``single_label_classification`` / ``multi_label_classification`` (written by
    older transformers, which allowed it; it only picks the training loss) is dropped with a warning."""
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    raw = read_config(folder)
    archs = ", ".join(map(str, raw.get("architectures") or [])) or "?"
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        if isinstance(raw.get("auto_map"), dict):  # e.g. ChatGLMForSequenceClassification: its code is in the folder
            from mmreward.core.remote_code import refuse_remote_code

            refuse_remote_code(folder)
        what = f"model_type {model_type!r}" if model_type is not None else "no model_type"
        raise CheckpointError(f"{folder}: its config.json names {archs} with {what}, which "
                              f"transformers {transformers.__version__} does not know; mmreward reads "
                              "*ForSequenceClassification reward models that transformers builds (it never runs code "
                              "from a model folder): a newer transformers may know this model type")
    from mmreward.core.weights import check_published_config

    check_published_config(raw, folder)  # before transformers (or a meta build) runs on a stranger's numbers
    id2label = raw.get("id2label")
    labels = raw.get("num_labels", len(id2label) if isinstance(id2label, dict) and id2label else None)
    try:
        with quiet_transformers():
            if raw.get("problem_type") in _CLASSIFICATION_PROBLEMS and labels == 1:
                warnings.warn(f"{folder}/config.json: problem_type {raw['problem_type']!r} with one label is ignored "
                              "(it sets only the training loss; transformers >= 5 refuses it for one label); the "
                              "one-output head is read as the reward", stacklevel=3)
                body = {k: v for k, v in raw.items() if k != "problem_type"}
                return CONFIG_MAPPING[model_type].from_dict(body)
            return AutoConfig.from_pretrained(folder, trust_remote_code=False)  # never a prompt
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{folder}/config.json ({archs}): transformers cannot build its config: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def _tokenizer_with_config(folder: str, config: Any) -> Any:
    """:func:`load_tokenizer` of ``folder`` with its model config given, not read from config.json again, and
    ``trust_remote_code=False``: a tokenizer whose class ships in the folder is refused, never asked about on
    the terminal (transformers' "Do you wish to run the custom code? [y/N]" would run it on a "y")."""
    from transformers import AutoTokenizer

    from .reward_model import TOKENIZER_FILES

    if not any(os.path.isfile(os.path.join(folder, f)) for f in TOKENIZER_FILES):
        load_tokenizer(folder)  # its error naming the tokenizer files
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(folder, config=config, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - as load_tokenizer: unreadable files
        raise CheckpointError(f"cannot load the tokenizer {folder}: {type(e).__name__}: {e}") from e


def check_sequence_classifier_folder(folder: str) -> Any:
    """What :func:`load_sequence_classifier` checks before reading a tensor (also ``mmreward info``'s check of
    such a folder): the config transformers builds, one label, and weight names and shapes that cover the
    classifier. Returns the config."""
    from transformers import AutoModelForSequenceClassification

    config = classifier_config(folder)
    if type(config) not in AutoModelForSequenceClassification._model_mapping:
        # e.g. VideoScore's Idefics2ForSequenceClassification: transformers' own error names a class, not the folder
        archs = ", ".join(map(str, read_config(folder).get("architectures") or [])) or "?"
        raise CheckpointError(f"{folder}: its config.json names {archs}, but transformers has no sequence-"
                              f"classification class for model_type {config.model_type!r}; mmreward reads "
                              "*ForSequenceClassification reward models that transformers builds")
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
    return config


def trl_reward_run(folder: str) -> bool:
    """Whether ``folder`` was saved by TRL's ``RewardTrainer``: its ``README.md`` front matter lists the tag
    ``reward-trainer`` (TRL tags the model it trains; transformers and peft write the tags into the card), or, for
    a ``checkpoint-N`` folder (which gets no card), its run folder's does."""
    if _tagged_by_trl(os.path.join(folder, "README.md")):
        return True
    parent = os.path.dirname(os.path.abspath(folder))
    return bool(re.fullmatch(r"checkpoint-\d+", os.path.basename(os.path.abspath(folder)))) \
        and _tagged_by_trl(os.path.join(parent, "README.md"))


def _tagged_by_trl(path: str) -> bool:
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > (1 << 20):
            return False
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return False
    if not text.startswith("---"):
        return False
    front = text[3:].split("\n---", 1)[0]
    return any(line.strip() in ("- reward-trainer", "- 'reward-trainer'", '- "reward-trainer"')
               for line in front.splitlines())


def reward_model_from_classifier(seq: nn.Module, tokenizer: Any, trl_run: bool = False) -> RewardModel:
    """Move a loaded sequence classifier's backbone and head into a :class:`RewardModel`. ``trl_run``: saved by
    TRL's ``RewardTrainer`` (:func:`trl_reward_run`), which renders rows as its tokenizer allows: a tokenizer
    without a chat template only ever saw prompt + response + eos (``concat_eos``)."""
    dense, out, act, pooling = _head_of(seq)
    base = getattr(seq, seq.base_model_prefix)
    if dense is not None and getattr(base, "pooler", None) is not None and _owns(base.pooler, dense):
        base.pooler = None  # BERT keeps its pooler inside the base model: it becomes our pooler layer
    encoder = is_encoder(seq.config)
    input_format = ("chat" if has_chat_template(tokenizer) else "concat_eos" if trl_run else
                    "pair" if (has_pair_template(tokenizer) if encoder else concatenating_pair(tokenizer)) else
                    "joined")
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


def grm_tokenizer(tokenizer: Any) -> Any:
    """GRM reward models (Ray2333's ``GRM-*-rewardmodel-ft``, whose config.json carries the ``vhead_*`` keys of
    the GRM training code) are trained, evaluated and scored in their card as
    ``tokenizer.encode_plus(tokenizer.apply_chat_template(conv, tokenize=False))``: a template that writes the
    BOS (Gemma, Llama-3) gets a second one from the tokenizer. mmreward removes a rendered leading BOS before
    tokenising (one BOS), so on a copy of the tokenizer the template writes it twice: the model sees the two
    BOS tokens it was trained with. Other tokenizers are returned as they are."""
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    if not has_chat_template(tokenizer) or not bos or bos_id is None:
        return tokenizer
    try:
        adds = list(tokenizer("a")["input_ids"])[:1] == [bos_id] \
            and list(tokenizer("a", add_special_tokens=False)["input_ids"])[:1] != [bos_id]
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": "a"},
                                                  {"role": "assistant", "content": "b"}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that refuses the probe: left as it is
        return tokenizer
    template = default_template(tokenizer)
    if not (adds and isinstance(rendered, str) and rendered.startswith(bos)) or template is None:
        return tokenizer
    tokenizer = copy.copy(tokenizer)
    tokenizer.chat_template = "{{ bos_token }}" + template
    return tokenizer


def default_template(tokenizer: Any) -> Optional[str]:
    """The chat template ``apply_chat_template`` uses by default: ``tokenizer.chat_template``, or its
    ``"default"`` entry when the tokenizer holds several named templates (a dict: tokenizer_config.json's list
    of templates, or ``additional_chat_templates``); None without one."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template if isinstance(template, str) and template else None


def concatenating_pair(tokenizer: Any) -> bool:
    """Whether ``tokenizer(a, b)`` is ``tokenizer(a)`` followed by ``tokenizer(b)`` and adds no token of its own
    (GPT-2 / GPT-NeoX style tokenizers). Decoder RMs without a chat template are scored by their cards as
    ``tokenizer(question, answer)`` (Ray2333's GPT-2 RMs on Anthropic/hh-rlhf: the question ends with
    "\\n\\nAssistant:"), so such a tokenizer reads (prompt, response) as that pair, not with a blank line
    between (``joined``)."""
    try:
        single = [list(tokenizer(t, add_special_tokens=True, verbose=False)["input_ids"]) for t in ("a", "b")]
        bare = list(tokenizer("a", add_special_tokens=False, verbose=False)["input_ids"])
        pair = list(tokenizer("a", "b", verbose=False)["input_ids"])
    except Exception:  # noqa: BLE001 - tokenizers without pair support
        return False
    return single[0] == bare and pair == single[0] + single[1]


def _owns(parent: nn.Module, child: nn.Module) -> bool:
    return any(m is child for m in parent.modules())


__all__ = ["ENCODER_HEADS", "HEADED_DECODERS", "concatenating_pair", "default_template", "grm_tokenizer", "openrlhf_template", "headed_decoder_kind", "is_headed_decoder", "is_quantile_gating_rm", "refuse_quantile_gating_rm", "load_headed_decoder", "LEGACY_META", "check_classifier_weights", "is_legacy_folder", "is_qwen_math_rm",
           "is_sequence_classifier", "load_legacy_folder", "load_qwen_math_rm", "load_sequence_classifier",
           "reward_model_from_classifier", "classifier_config", "check_sequence_classifier_folder"]

"""Published PRM checkpoints as :class:`~mmreward.text.prm.model.ProcessRewardModel` s.

``mmreward.load(folder)`` reads these layouts (``mmreward.registry.LAYOUTS``) with our own modules — no
``trust_remote_code``, no pickled code (``pytorch_model*.bin`` only through ``torch.load(weights_only=True)``)
— and scores exactly as each model's official code does (parity tests in ``tests/text/test_prm_contract.py``):

=====================  ==================================  ====================================================
layout                 recognised by                       head read from
=====================  ==================================  ====================================================
Math-Shepherd          a ``*ForCausalLM`` folder whose     ``lm_head.weight`` rows of ``+`` / ``-`` at each
                       name / ``_name_or_path`` contains   ``ки`` tag: P(+) = softmax over the two logits
                       math-shepherd
Qwen2.5-Math-PRM       ``architectures``                   ``score.0`` (H×H) → ReLU → ``score.2`` (2×H) at each
                       ``Qwen2ForProcessRewardModel``      ``<extra_0>``: P(positive) = softmax(·)[1]
Skywork-o1-Open-PRM    ``architectures``                   ``v_head.summary`` (1×H) at each step's ``\\n``:
                       ``Qwen2ForPrmModel`` (or            sigmoid(value)
                       ``v_head.summary.weight`` in a
                       causal LM's weights)
RLHFlow PRM            a ``*ForCausalLM`` folder whose     ``lm_head.weight`` rows of ``+`` / ``-`` before each
                       name says RLHFlow and PRM           assistant ``+`` of a multi-turn chat (one user turn
                       (``Llama3.1-8B-PRM-*-Data``)        per step): P(+) = softmax over the two logits
TRL PRMTrainer         ``architectures``                   the classifier ``Linear(H, 2)`` (``score`` /
                       ``*ForTokenClassification`` with    ``classifier``) at the last token of each step's
                       2 labels                            separator (default ``\\n``): softmax(·)[1]
=====================  ==================================  ====================================================

A ``*ForCausalLM`` folder named like a PRM that none of these recognises (``EurusPRM-Stage2``,
``GenPRM-7B``, ``ThinkPRM-14B``, a renamed Math-Shepherd / RLHFlow checkpoint) is refused with the reason
and the loader to call, instead of the generic "cannot tell which reward model this is".

Every layout keeps its backbone under ``model.`` and its tokenizer next to ``config.json``; a folder
missing the tokenizer, the head or the ``model.`` tensors is refused with a message naming what is
missing. The returned model is a plain ``ProcessRewardModel`` (``input_format`` set to the layout's), so
it trains, searches and saves (``save_pretrained`` → our own format) like any other.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from mmreward.core.device import resolve_device, resolve_dtype
from mmreward.core.folders import CheckpointError
from mmreward.core.model import finish_loading, load_state_strict, read_config
from mmreward.core.weights import backbone_state, check_shapes, hf_config, read_weights, weight_names

__all__ = ["is_math_shepherd", "load_math_shepherd", "is_qwen_prm", "load_qwen_prm", "is_skywork_prm",
           "load_skywork_prm", "is_rlhflow_prm", "load_rlhflow_prm", "is_token_classification_prm",
           "load_token_classification_prm", "is_unread_prm", "refuse_unread_prm", "QWEN_PRM_SYSTEM",
           "TRL_STEP_SEPARATOR"]

# the system turn of the Qwen2.5-Math-PRM model card's example
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
CHAT_FORMATS = ("qwen_prm", "rlhflow_prm")  # the layouts whose input is a chat


# ------------------------------------------------------------------ folder contents
def _architectures(config: Optional[dict]) -> list[str]:
    archs = (config or {}).get("architectures") or []
    return [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []


def _causal_lm(config: Optional[dict]) -> bool:
    return any(a.endswith("ForCausalLM") for a in _architectures(config))


def _tokenizer(folder: str, layout: str):
    from .model import load_tokenizer

    if not any(os.path.isfile(os.path.join(folder, f)) for f in TOKENIZER_FILES):
        raise CheckpointError(f"{folder} has no tokenizer ({' / '.join(TOKENIZER_FILES)}): the {layout} layout "
                              "needs the tokenizer files next to config.json to score text")
    return load_tokenizer(folder, folder)


def _take(weights: dict[str, torch.Tensor], names: tuple[str, ...], folder: str, what: str) -> list[torch.Tensor]:
    missing = [n for n in names if n not in weights]
    if missing:
        raise CheckpointError(f"{folder}: missing {what} tensor(s) {missing}")
    return [weights.pop(n) for n in names]


def _check_head_shape(tensor: torch.Tensor, want: tuple, name: str, raw: dict, folder: str) -> None:
    """A head tensor is reshaped or sliced before it reaches the model, so its shape is checked here,
    by its name in the files (``None`` in ``want``: any size; ``-1``: the config's hidden_size)."""
    hidden = raw.get("hidden_size")
    want = tuple(hidden if w == -1 else w for w in want)
    if len(tensor.shape) != len(want) or any(w is not None and g != w for g, w in zip(tensor.shape, want)):
        shown = tuple("any" if w is None else w for w in want)
        raise CheckpointError(f"{folder}: {name} has shape {tuple(tensor.shape)} in the weights but the head of its "
                              f"config.json (hidden_size {hidden}) expects {shown}")


# ------------------------------------------------------------------ the shared loader
@dataclass
class LoadedSource:
    """A published folder's ``config.json`` body, tokenizer and weights, already in memory."""

    config: dict
    tokenizer: Any
    weights: dict


def _run_options(aggregation: Any, truncate: Any) -> dict:
    """``aggregation`` / ``truncate`` of ``mmreward.load(published_folder, ...)``: how this run scores, not the
    published input format, so they are taken as for a folder mmreward saved (``prm score --aggregation / --truncate``
    already set them; in Python they were refused, e.g. the mean RLHFlow's README ranks by)."""
    if not isinstance(truncate, bool):
        raise ValueError(f"truncate must be True or False, got {truncate!r}")
    return {"aggregation": aggregation, "truncate": truncate}


def _load(folder: str, layout: str, *, device: Any, dtype: Any, head: str, input_format: str,
          head_state: Callable[..., dict[str, torch.Tensor]], ignore: tuple[str, ...] = (),
          default_type: Optional[str] = None, source: Optional[LoadedSource] = None, **config: Any):
    """Build a ProcessRewardModel from a published folder. ``head_state(weights, raw_config, tokenizer,
    prm_config, folder)`` pops the head tensors out of ``weights`` and returns them under our names; what is left
    must be the backbone under ``model.`` (keys starting with one of ``ignore`` are dropped). ``source``: the
    config, tokenizer and weights already in memory (a PEFT adapter folded into its base), not read from ``folder``."""
    from transformers import AutoModel

    from .model import PRMConfig, ProcessRewardModel, _drop_pooler, building_for_weights, weights_dtype

    dev, dt = resolve_device(device), resolve_dtype(dtype)
    raw = read_config(folder) if source is None else source.config
    tok = _tokenizer(folder, layout) if source is None else source.tokenizer
    if input_format in CHAT_FORMATS and not getattr(tok, "chat_template", None):
        raise CheckpointError(f"{folder}: the {layout} layout renders each solution with the tokenizer's chat template, "
                              "and this tokenizer has none (chat_template.jinja, or chat_template in "
                              "tokenizer_config.json, is missing)")
    hf_cfg = hf_config(raw, folder, default_type)
    cfg = PRMConfig(head=head, input_format=input_format, max_length=int(getattr(hf_cfg, "max_position_embeddings", 4096)),
                    **config)
    weights = read_weights(folder) if source is None else dict(source.weights)
    dtype_of_weights = weights_dtype(weights)
    state = head_state(weights, raw, tok, cfg, folder)
    backbone = backbone_state(weights, folder, layout, ignore)
    with building_for_weights(dtype_of_weights):
        base = _drop_pooler(AutoModel.from_config(hf_cfg))  # an encoder's pooler is not part of a token classifier
        cfg.backbone = base.config.to_dict()
        model = ProcessRewardModel(cfg, tok, backbone=base)
    missing = sorted(f"model.{k}" for k in base.state_dict() if f"backbone.{k}" not in backbone)
    if missing:
        raise CheckpointError(f"{folder}: missing {len(missing)} backbone tensor(s) of its config, e.g. {missing[:4]}")
    check_shapes(model, backbone, folder, layout)  # named as in the files (model.*), not as we keep them
    load_state_strict(model, {**backbone, **state}, folder)
    return finish_loading(model, dev, dt)


# ------------------------------------------------------------------ Math-Shepherd
def _names(folder: str, config: dict) -> list[str]:
    """The names a plain causal-LM checkpoint goes by: the folder's own, its hub cache entry
    (``models--org--name/snapshots/<rev>``) and ``_name_or_path``, lower-case with ``_`` as ``-``."""
    path = os.path.abspath(folder)
    names = [os.path.basename(path), str(config.get("_name_or_path", ""))]
    if os.path.basename(os.path.dirname(path)) == "snapshots":
        names.append(os.path.basename(os.path.dirname(os.path.dirname(path))))
    return [n.lower().replace("_", "-") for n in names]


def is_math_shepherd(folder: str, config: Optional[dict]) -> bool:
    """A causal LM named Math-Shepherd: the published checkpoint is a plain ``MistralForCausalLM``, so its
    name (the folder's own name, its hub cache entry, or ``_name_or_path``) is what sets it apart."""
    return _causal_lm(config) and any("math-shepherd" in n for n in _names(folder, config))


def _lm_label_head(weights: dict, raw: dict, tok: Any, cfg: Any, folder: str) -> dict[str, torch.Tensor]:
    from .model import label_token_ids

    good_bad = list(label_token_ids(tok, cfg))
    if "lm_head.weight" in weights:
        lm_head = weights.pop("lm_head.weight")
    elif raw.get("tie_word_embeddings") and "model.embed_tokens.weight" in weights:
        lm_head = weights["model.embed_tokens.weight"]
    else:
        raise CheckpointError(f"{folder}: missing lm_head.weight, the LM head the {cfg.input_format} layout "
                              "reads P(+) from")
    if max(good_bad) >= lm_head.shape[0]:
        raise CheckpointError(f"{folder}: the tokenizer's '+' / '-' ids {good_bad} do not index its LM head "
                              f"({lm_head.shape[0]} rows)")
    _check_head_shape(lm_head, (None, -1), "lm_head.weight", raw, folder)
    bias = weights.pop("lm_head.bias", None)
    if bias is not None:
        _check_head_shape(bias, (lm_head.shape[0],), "lm_head.bias", raw, folder)
    return {"label_rows": lm_head[good_bad].clone(),
            "label_bias": bias[good_bad].clone() if bias is not None else torch.zeros(2, dtype=lm_head.dtype)}


def load_math_shepherd(folder: str, *, device: Any = "cpu", dtype: Any = None, aggregation: str = "min",
                       truncate: bool = False):
    """Math-Shepherd (peiyi9979/math-shepherd-mistral-7b-prm): input ``f"{problem} {step₁} ки\\n{step₂} ки…"``
    tokenized whole, P(+) from the ``+`` / ``-`` logits at each ``ки``."""
    return _load(folder, "Math-Shepherd", device=device, dtype=dtype, **_run_options(aggregation, truncate),
                 head="lm", input_format="math_shepherd",
                 head_state=_lm_label_head, step_tag="ки", step_separator="\n", good_token="+", bad_token="-")


# ------------------------------------------------------------------ Qwen2.5-Math-PRM
def is_qwen_prm(folder: str, config: Optional[dict]) -> bool:
    return "Qwen2ForProcessRewardModel" in _architectures(config)


def _qwen_head(weights: dict, raw: dict, tok: Any, cfg: Any, folder: str) -> dict[str, torch.Tensor]:
    tag = tok.encode(cfg.step_tag, add_special_tokens=False)
    if len(tag) != 1:  # scores would be read at the tag's first piece, where the head learned nothing
        raise CheckpointError(f"{folder}: its tokenizer splits the step tag {cfg.step_tag!r} into {len(tag)} tokens "
                              f"{tag[:8]}; Qwen2.5-Math-PRM scores each step at '<extra_0>', one special token of its "
                              "own tokenizer (id 151651): copy the PRM release's tokenizer files into the folder")
    w1, b1, w2, b2 = _take(weights, ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"), folder,
                           "Qwen2ForProcessRewardModel head (score = Linear → ReLU → Linear(2))")
    if w2.shape[0] != 2:
        raise CheckpointError(f"{folder}: score.2.weight has shape {tuple(w2.shape)}; the PRM head has 2 classes")
    for t, want, name in ((w1, (-1, -1), "score.0.weight"), (b1, (-1,), "score.0.bias"), (w2, (2, -1), "score.2.weight"),
                          (b2, (2,), "score.2.bias")):
        _check_head_shape(t, want, name, raw, folder)
    # class 1 is "positive": our label rows are (positive, negative)
    return {"head_hidden.weight": w1, "head_hidden.bias": b1, "label_rows": w2[[1, 0]].clone(),
            "label_bias": b2[[1, 0]].clone()}


def load_qwen_prm(folder: str, *, device: Any = "cpu", dtype: Any = None, aggregation: str = "min",
                  truncate: bool = False):
    """Qwen2.5-Math-PRM-7B / -72B (``Qwen2ForProcessRewardModel``): the chat template over system / problem /
    steps joined by ``<extra_0>``, P(positive) of the 2-class head at each ``<extra_0>``."""
    return _load(folder, "Qwen2.5-Math-PRM", device=device, dtype=dtype, **_run_options(aggregation, truncate),
                 head="mlp", input_format="qwen_prm",
                 head_state=_qwen_head, ignore=("lm_head.",), default_type="qwen2", step_tag="<extra_0>",
                 step_separator="", system_prompt=QWEN_PRM_SYSTEM)


# ------------------------------------------------------------------ Skywork-o1-Open-PRM
def is_skywork_prm(folder: str, config: Optional[dict]) -> bool:
    if "Qwen2ForPrmModel" in _architectures(config):
        return True
    return _causal_lm(config) and "v_head.summary.weight" in (weight_names(folder) or ())


def _skywork_head(weights: dict, raw: dict, tok: Any, cfg: Any, folder: str) -> dict[str, torch.Tensor]:
    w, b = _take(weights, ("v_head.summary.weight", "v_head.summary.bias"), folder, "value head (v_head.summary)")
    if w.shape[0] != 1:
        raise CheckpointError(f"{folder}: v_head.summary.weight has shape {tuple(w.shape)}, expected (1, hidden)")
    _check_head_shape(w, (1, -1), "v_head.summary.weight", raw, folder)
    _check_head_shape(b, (1,), "v_head.summary.bias", raw, folder)
    return {"value_weight": w[0].clone(), "value_bias": b.reshape(()).clone()}


def load_skywork_prm(folder: str, *, device: Any = "cpu", dtype: Any = None, aggregation: str = "min",
                     truncate: bool = False):
    """Skywork-o1-Open-PRM-Qwen-2.5 (1.5B / 7B): BOS + problem + ``\\n``, then every step followed by the
    ``\\n`` token; sigmoid of the value head at each of those tokens."""
    return _load(folder, "Skywork-o1-Open-PRM", device=device, dtype=dtype, **_run_options(aggregation, truncate),
                 head="value", input_format="skywork_prm",
                 head_state=_skywork_head, ignore=("lm_head.",), default_type="qwen2", step_tag="\n",
                 step_separator="\n")


# ------------------------------------------------------------------ RLHFlow PRMs
def is_rlhflow_prm(folder: str, config: Optional[dict]) -> bool:
    """A causal LM named as RLHFlow's PRMs (``RLHFlow/Llama3.1-8B-PRM-Mistral-Data``, ``…-Deepseek-Data``):
    plain ``LlamaForCausalLM`` checkpoints, so the name sets them apart; other names load with
    :func:`load_rlhflow_prm`."""
    return _causal_lm(config) and any(("rlhflow" in n and "prm" in n) or "-prm-mistral-data" in n
                                      or "-prm-deepseek-data" in n for n in _names(folder, config))


def load_rlhflow_prm(folder: str, *, device: Any = "cpu", dtype: Any = None, aggregation: str = "min",
                     truncate: bool = False):
    """RLHFlow's Llama-3.1 PRMs: a chat of one user turn per step (the problem + " " before the first),
    each answered by an assistant ``+``; a step's score is P(+) against P(-) at the token before its ``+``
    (RLHF-Reward-Modeling ``math/prm_evaluate.py``). One forward scores every step."""
    return _load(folder, "RLHFlow PRM", device=device, dtype=dtype, **_run_options(aggregation, truncate),
                 head="lm", input_format="rlhflow_prm",
                 head_state=_lm_label_head, step_tag="+", step_separator=" ", good_token="+", bad_token="-")


# ------------------------------------------------------------------ TRL PRMTrainer: token classification
TRL_STEP_SEPARATOR = "\n"  # trl.PRMConfig.step_separator's default (the folder does not record it)


def _num_labels(config: dict) -> int:
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    n = config.get("num_labels")
    return n if isinstance(n, int) and not isinstance(n, bool) else 2  # transformers' default


def is_token_classification_prm(folder: str, config: Optional[dict]) -> bool:
    """A transformers ``*ForTokenClassification`` folder (TRL's ``PRMTrainer`` trains and saves one):
    the loader refuses one without 2 labels, naming its count."""
    return any(a.endswith("ForTokenClassification") for a in _architectures(config))


def _token_classifier_layout(raw: dict, folder: str) -> tuple[str, list[str]]:
    """(base_model_prefix, head tensor names) of the folder's token classifier, from its class built on
    the meta device (no weights, no code from the folder)."""
    from transformers import AutoModelForTokenClassification

    from mmreward.core.weights import quiet_transformers

    cfg = hf_config(raw, folder)
    try:
        with torch.device("meta"), quiet_transformers():
            model = AutoModelForTokenClassification.from_config(cfg)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{folder}/config.json: transformers has no token classifier for model_type "
                              f"{raw.get('model_type')!r}: {e}") from e
    prefix = model.base_model_prefix
    return prefix, sorted(k for k in model.state_dict() if not k.startswith(prefix + "."))


def load_token_classification_prm(folder: str, *, device: Any = "cpu", dtype: Any = None,
                                  step_separator: str = TRL_STEP_SEPARATOR, aggregation: str = "min",
                                  truncate: bool = False):
    """A 2-label ``*ForTokenClassification`` PRM as TRL's ``PRMTrainer`` trains it: the input is [BOS, when
    the tokenizer has one] + problem + Σ (step + ``step_separator``), every piece tokenized on its own
    without special tokens (``PRMTrainer.tokenize_row``), and a step's score is softmax(logits)[1] (label
    ``True``) at its separator's last token. The separator is TRL's ``PRMConfig.step_separator`` of the run
    (default ``"\\n"``), which the folder does not record: pass the run's own if it was another
    (``mmreward.load(folder, step_separator="\\n\\n")``).

    The classifier's two rows become one value head (sigmoid(h·(w₁ − w₀) + b₁ − b₀) = softmax(h·W + b)[1])."""
    return token_classification_prm(folder, None, device=device, dtype=dtype, step_separator=step_separator,
                                    **_run_options(aggregation, truncate))


def token_classification_prm(folder: str, source: Optional[LoadedSource], *, device: Any, dtype: Any,
                             step_separator: str, aggregation: str = "min", truncate: bool = False):
    """:func:`load_token_classification_prm` of ``folder``, or of ``source`` when given."""
    if not isinstance(step_separator, str) or not step_separator:
        raise ValueError(f"step_separator must be a non-empty str (trl PRMConfig.step_separator), got {step_separator!r}")
    raw = read_config(folder) if source is None else source.config
    n = _num_labels(raw)
    archs = _architectures(raw)
    if n != 2:
        raise CheckpointError(f"{folder}: {archs[0] if archs else 'the token classifier'} has {n} label{'' if n == 1 else 's'}; a process "
                              "reward model trained as token classification (TRL PRMTrainer) has 2 (step wrong / right)")
    good = _good_label(raw, folder)
    prefix, head_names = _token_classifier_layout(raw, folder)
    weight_name = next((k for k in head_names if k.endswith(".weight")), None)
    bias_name = next((k for k in head_names if k.endswith(".bias")), None)
    if weight_name is None or len(head_names) > 2 or (bias_name and bias_name.rsplit(".", 1)[0] != weight_name.rsplit(".", 1)[0]):
        raise CheckpointError(f"{folder}: the head of {archs[0] if archs else 'this token classifier'} has tensors "
                              f"{head_names}; mmreward reads a token-classification PRM whose head is one Linear(H, 2)")

    def head_state(weights: dict, raw: dict, tok: Any, cfg: Any, folder: str) -> dict[str, torch.Tensor]:
        names = (weight_name,) + ((bias_name,) if bias_name else ())
        taken = _take(weights, names, folder, f"token classifier head ({' / '.join(names)})")
        w = taken[0]
        _check_head_shape(w, (2, -1), weight_name, raw, folder)
        if bias_name:
            _check_head_shape(taken[1], (2,), bias_name, raw, folder)
            b = taken[1][good] - taken[1][1 - good]
        else:
            b = torch.zeros((), dtype=w.dtype)
        if prefix != "model":  # GPT-2's transformer.*, BERT's bert.*: the shared loader reads model.*
            if any(k.startswith("model.") for k in weights):
                raise CheckpointError(f"{folder}: tensors under both '{prefix}.' (its backbone) and 'model.'")
            for k in [k for k in weights if k.startswith(prefix + ".")]:
                weights["model." + k[len(prefix) + 1:]] = weights.pop(k)
        return {"value_weight": (w[good] - w[1 - good]).clone(), "value_bias": b.reshape(()).clone()}

    tok = _tokenizer(folder, "token-classification PRM") if source is None else source.tokenizer
    if tok.bos_token_id is None and getattr(tok, "cls_token_id", None) is not None:
        raise CheckpointError(f"{folder}: its tokenizer has a CLS token but no BOS; TRL's PRMTrainer starts the input "
                              "with BOS only, mmreward's step format with BOS or else CLS, so the scores would differ")
    if not tok.encode(step_separator, add_special_tokens=False):
        raise ValueError(f"step_separator {step_separator!r} encodes to no tokens with {folder}'s tokenizer: give the "
                         "run's own separator (mmreward.load(folder, step_separator=...), or --step-separator of "
                         "mmreward prm score / prm eval)")
    # the mmreward format with no text between the problem and the first step, and the separator as each
    # step's tag, is tokenize_row's sequence token for token
    return _load(folder, "token-classification PRM", device=device, dtype=dtype, head="value", input_format="mmreward",
                 head_state=head_state, step_tag=step_separator, step_separator="", source=source,
                 **_run_options(aggregation, truncate))


_GOOD_NAMES = {"1", "true", "correct", "good", "positive", "pos", "+", "right", "yes"}
_BAD_NAMES = {"0", "false", "incorrect", "wrong", "bad", "negative", "neg", "-", "no", "error"}


def _good_label(raw: dict, folder: str) -> int:
    """The label index of a right step: 1 as TRL trains it (labels False / True; ``id2label`` LABEL_0 /
    LABEL_1), or the index ``id2label`` names as right when it names the labels (a model saved with
    {0: "correct", 1: "incorrect"} would otherwise be read upside down); names it cannot tell apart are refused."""
    id2label = raw.get("id2label")
    if not isinstance(id2label, dict) or len(id2label) != 2:
        return 1
    names = {int(k): str(v).strip().lower() for k, v in id2label.items() if str(k).lstrip("-").isdigit()}
    if set(names) != {0, 1} or all(v in (f"label_{i}",) for i, v in names.items()):
        return 1
    good = [i for i, v in names.items() if v in _GOOD_NAMES]
    bad = [i for i, v in names.items() if v in _BAD_NAMES]
    if len(good) == 1 and len(bad) == 1 and good != bad:
        return good[0]
    raise CheckpointError(f"{folder}: config.json's id2label {id2label} does not say which label is a right step "
                          f"(names such as {sorted(_GOOD_NAMES - {'1', '+'})[:4]} / {sorted(_BAD_NAMES - {'0', '-'})[:4]})")


# ------------------------------------------------------------------ causal LMs named like a PRM, not read
def is_unread_prm(folder: str, config: Optional[dict]) -> bool:
    """A plain ``*ForCausalLM`` folder whose name says PRM that no PRM layout above recognised: its scoring
    rule (label tokens, chat format, reference model, generated critique) cannot be told from the folder."""
    return _causal_lm(config) and any("prm" in n for n in _names(folder, config))


def refuse_unread_prm(folder: str, *, device: Any = "cpu", dtype: Any = None, **_: Any):
    arch = _architectures(read_config(folder))[0]
    raise CheckpointError(
        f"{folder}: a plain {arch} named like a process reward model; its scoring rule is not in the folder, so "
        "mmreward.load does not guess it. A Math-Shepherd checkpoint under another name: "
        "mmreward.text.prm.load_math_shepherd(folder); an RLHFlow Llama3.1-8B-PRM-* one: "
        "mmreward.text.prm.published.load_rlhflow_prm(folder); your own: ProcessRewardModel.from_backbone(...). "
        "Implicit PRMs (PRIME's EurusPRM: beta * log(pi/pi_ref) per token, which needs the reference model) and "
        "generative PRMs (GenPRM, ThinkPRM: they write a verification) are not read by mmreward.load")

"""`RewardModel`: a scalar reward model on any transformers backbone (decoder or encoder).

    rm = RewardModel.from_backbone("path/or/hub-id")            # AutoModel + AutoTokenizer, fresh head
    rm = RewardModel.from_backbone(LlamaConfig(...), tokenizer=tok)
    rm.score([TextPair("2+2?", "4")])                           # Tensor[N]
    rm.score([{"prompt": "2+2?", "response": "4"}])             # JSON rows work too
    idx, scores = rm.best_of_n("2+2?", ["3", "4", "5"])
    rm.save_pretrained("runs/rm/model")                         # atomic: the whole folder or nothing
    rm = mmreward.load("runs/rm")                               # or RewardModel.from_pretrained(...)

The model: ``backbone`` (``AutoModel``) → the hidden state read by ``pooling`` (``last``: last
token, ``first``: the first token — BERT's ``[CLS]`` —, ``mean``: mean over the tokens) → an
optional dense + activation layer (``pooler_act``: the classifier heads of BERT / RoBERTa / DeBERTa)
→ ``head`` (H → 1). The input layout and truncation (``input_format``, ``max_length``,
``truncation``, ``prompt_share``; see :mod:`mmreward.text.data`) are part of the config, saved with
the model and used by every scoring path.

Saved folder: ``config.json`` (``model_type: text_reward_model``, :class:`RewardModelConfig` with
the backbone's transformers config), ``model.safetensors`` (``backbone.*``, ``pooler.*``, ``head.*``),
``tokenizer/`` and ``manifest.json``, written as one unit by
:meth:`mmreward.core.model.Pretrained.save_pretrained`. Published layouts (transformers sequence
classifiers, folders of mmreward 0.1) load through :mod:`mmreward.text.layouts`.

Decoders get position ids from the attention mask (``cumsum - 1``), so left- and right-padded
batches give the same rewards; encoders keep their own position convention and are right-padded.
"""
from __future__ import annotations

import inspect
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from mmreward.core.folders import CheckpointError, local_path_only
from mmreward.core.inputs import TextPair, as_inputs
from mmreward.core.model import (RewardScorer, build_for_weights, eval_while_scoring, check_batch_size,
                                 check_finite_weights,
                                 config_from_dict, config_to_dict, load_state_strict, load_weights, read_config, refuse_meta,
                                 save_weights)
from mmreward.core.weights import position_limit, quiet_transformers

from .data import (INPUT_FORMATS, TRUNCATIONS, Encoded, TextEncoder, TextLike, has_chat_template, has_pair_template,
                   model_max_length, pad_batch, pad_id_of, truncation_warning)

MODEL_TYPE = "text_reward_model"
TOKENIZER_DIR = "tokenizer"
POOLINGS = ("last", "first", "mean", "last_non_pad")
ENCODER_POOLING = "mean"  # default for encoders: see docs/text.md ("Where the score is read")
# files of which a tokenizer folder needs at least one (a folder with only tokenizer_config.json
# loads as an empty tokenizer that maps every word to [UNK])
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "spm.model", "tokenizer.tiktoken")


@dataclass
class RewardModelConfig:
    backbone: dict = field(default_factory=dict, metadata={"help": "the backbone's transformers config (config.to_dict(), with model_type)"})
    max_length: Optional[int] = field(default=None, metadata={"help": "tokens per input, special tokens included (None: no limit)"})
    input_format: str = field(default="joined", metadata={"help": "chat (the tokenizer's chat template) | pair (tokenizer(prompt, response)) | joined (prompt + blank line + response) | concat_eos (prompt + response + eos, as TRL's RewardTrainer renders rows that are no conversations)"})
    truncation: str = field(default="prompt_first", metadata={"help": "prompt_first (the prompt loses its start, then the response its end) | keep_end (the first content tokens go)"})
    prompt_share: float = field(default=0.25, metadata={"help": "prompt_first: share of the content budget the end of a long prompt keeps against a long response"})
    pooling: str = field(default="last", metadata={"help": "where the score is read: last (last token) | first (first token, [CLS]) | mean (mean over tokens) | last_non_pad (the last token that is not the backbone config's pad_token_id, as transformers' decoder classifiers read it)"})
    pooler_act: Optional[str] = field(default=None, metadata={"help": "activation of a dense H→H layer before the head (tanh: BERT / RoBERTa, gelu: DeBERTa); None: no such layer"})
    system_prompt: str = field(default="", metadata={"help": "chat format: a system turn put before conversations that have none (Qwen2.5-Math-RM's card uses one); '': none"})

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, dict) or not isinstance(self.backbone.get("model_type"), str):
            raise ValueError("RewardModelConfig.backbone must be a transformers config dict with a 'model_type'")
        if self.max_length is not None and (isinstance(self.max_length, bool) or not isinstance(self.max_length, int)
                                            or self.max_length < 2):
            raise ValueError(f"RewardModelConfig.max_length must be an integer >= 2 or None, got {self.max_length!r}")
        for name, allowed in (("input_format", INPUT_FORMATS), ("truncation", TRUNCATIONS), ("pooling", POOLINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"RewardModelConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if isinstance(self.prompt_share, bool) or not (isinstance(self.prompt_share, (int, float))
                                                       and 0.0 <= self.prompt_share <= 1.0):
            raise ValueError(f"RewardModelConfig.prompt_share must be in [0, 1], got {self.prompt_share!r}")
        if not isinstance(self.system_prompt, str) or (self.system_prompt and self.input_format != "chat"):
            raise ValueError(f"RewardModelConfig.system_prompt must be a string, used with input_format='chat' only; "
                             f"got {self.system_prompt!r} with {self.input_format!r}")


# ------------------------------------------------------------------ transformers pieces (imported lazily)
def backbone_from_config(config: Any) -> nn.Module:
    """``AutoModel.from_config`` (a transformers config or its dict) without BERT-style poolers
    (unused here; DDP would flag them)."""
    from transformers import AutoConfig, AutoModel, PretrainedConfig

    if not isinstance(config, PretrainedConfig):
        data = dict(config)
        config = AutoConfig.for_model(data.pop("model_type"), **data)
    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(config)


def drop_unused_pooler(backbone: nn.Module) -> bool:
    """Remove the pooler a BERT-style base model keeps inside itself (``BertModel(cfg)``, whose
    ``add_pooling_layer`` defaults to True): the reward model reads ``last_hidden_state`` only, so the pooler
    never changes a score, but its weights would be saved under ``backbone.pooler.*`` while a folder is rebuilt
    by :func:`backbone_from_config` without one (and DDP would flag its unused parameters). True when one was
    removed. The module is changed in place, as ``add_pooling_layer=False`` would have built it."""
    pooler = getattr(backbone, "pooler", None)
    if not isinstance(pooler, nn.Module):
        return False
    try:
        builds_without = "add_pooling_layer" in inspect.signature(type(backbone).__init__).parameters
    except (TypeError, ValueError):
        builds_without = False
    if not builds_without:  # a pooler the class always has: its forward may need it
        return False
    backbone.pooler = None
    if isinstance(getattr(backbone, "pooler_activation", None), nn.Module):  # ALBERT keeps the activation apart
        backbone.pooler_activation = None
    return True


def without_unused_pooler(model: nn.Module, state: dict) -> dict:
    """``state`` without the ``backbone.pooler.*`` tensors of a backbone that has no pooler: folders saved
    before :func:`drop_unused_pooler` existed (a ``from_backbone(BertModel(cfg))``, mmreward 0.1) hold the
    BERT pooler that never changed a score, and load as they scored."""
    if getattr(getattr(model, "backbone", None), "pooler", None) is not None:
        return state
    return {k: v for k, v in state.items() if not k.startswith("backbone.pooler.")}


def is_encoder(config: Any) -> bool:
    """Bidirectional encoders (BERT, RoBERTa, DeBERTa, …: the masked-LM families) vs decoders."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return getattr(config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)


def load_tokenizer(source: str) -> Any:
    """The tokenizer saved in folder ``source`` (or a hub id); a folder without tokenizer files is
    refused, naming them."""
    if os.path.isdir(source):
        if not any(os.path.isfile(os.path.join(source, f)) for f in TOKENIZER_FILES):
            raise CheckpointError(f"{source} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}): a text "
                                  "reward model cannot score without its tokenizer")
    elif os.path.exists(source) or local_path_only(source):
        raise CheckpointError(f"tokenizer folder {source!r} does not exist")
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - unreadable files, or a hub id that cannot be fetched
        if os.path.isdir(source) and ("sentencepiece" in str(e).lower() or "tiktoken" in str(e).lower()) and \
                importlib.util.find_spec("sentencepiece") is None and \
                os.path.isfile(os.path.join(source, "tokenizer.model")) and \
                not os.path.isfile(os.path.join(source, "tokenizer.json")):
            # transformers' several-paragraph "You need to have sentencepiece or tiktoken installed"
            raise CheckpointError(f"cannot load the tokenizer {source}: it is a SentencePiece tokenizer.model only "
                                  "(no tokenizer.json), which needs the sentencepiece package: pip install "
                                  "sentencepiece") from e
        raise CheckpointError(f"cannot load the tokenizer {source}: {type(e).__name__}: {' '.join(str(e).split())}") \
            from e


def _backbone_dict(backbone: nn.Module) -> dict:
    """The backbone's transformers config as a dict, with the dtype its weights really have."""
    data = backbone.config.to_dict()
    param = next(backbone.parameters(), None)
    if param is not None:
        data["dtype"] = str(param.dtype).removeprefix("torch.")
    return data


def _activation(name: str) -> nn.Module:
    from transformers.activations import ACT2FN

    if name not in ACT2FN:
        raise ValueError(f"unknown pooler activation {name!r}; transformers knows {sorted(ACT2FN)[:12]} …")
    return ACT2FN[name]


def last_positions(mask: Tensor) -> Tensor:
    """(N,) index of each row's last position with mask 1 (left or right padding)."""
    return (torch.arange(mask.shape[1], device=mask.device) * mask).argmax(-1)


def last_non_pad_positions(input_ids: Tensor, mask: Tensor, pad_id: Optional[int]) -> Tensor:
    """(N,) index of each row's last position with mask 1 whose token is not ``pad_id``: where transformers'
    ``*ForSequenceClassification`` decoders read the score (the last token that is not the config's pad id). It
    differs from :func:`last_positions` when a text ends with the pad token itself, as when pad = eos (TRL's
    default for tokenizers without a pad token) and the chat template ends turns with eos: such a model was
    trained reading the token before those eos. A row of pad tokens only reads its last position."""
    if pad_id is None:
        return last_positions(mask)
    keep = mask * (input_ids != pad_id).to(mask.dtype)  # (N, T)
    at = (torch.arange(mask.shape[1], device=mask.device) * keep).argmax(-1)
    return torch.where(keep.any(-1), at, last_positions(mask))


# ------------------------------------------------------------------ the model
class RewardModel(RewardScorer, nn.Module):
    """``backbone`` + optional ``pooler`` (dense + activation) + ``head`` (H → 1); ``tokenizer`` is
    kept for scoring and saved with the model."""

    model_type = MODEL_TYPE
    input_types = (TextPair,)
    config_class = RewardModelConfig

    def __init__(self, config: RewardModelConfig, tokenizer: Any = None, backbone: Optional[nn.Module] = None):
        super().__init__()
        if not isinstance(config, RewardModelConfig):
            raise TypeError(f"config must be a RewardModelConfig, got {type(config).__name__}")
        backbone = backbone if backbone is not None else backbone_from_config(config.backbone)
        drop_unused_pooler(backbone)  # a BertModel(cfg) given as it is: its folder must load as it scores
        bc = getattr(backbone, "config", None)
        hidden = getattr(bc, "hidden_size", None) or getattr(bc, "d_model", None) or getattr(bc, "n_embd", None)
        # OPT projects its last hidden states to word_embed_proj_dim (opt-350m: 1024 -> 512, TRL's classic RM
        # backbone): a head of hidden_size failed at the first forward ("mat1 and mat2 shapes cannot be multiplied")
        hidden = getattr(bc, "word_embed_proj_dim", None) or hidden
        if not isinstance(hidden, int):
            raise ValueError(f"cannot find the hidden size of backbone {type(backbone).__name__} "
                             "(config.hidden_size / d_model / n_embd)")
        self.config = config
        self.backbone = backbone
        self.pooler = nn.Linear(hidden, hidden) if config.pooler_act else None
        self.pooler_activation = _activation(config.pooler_act) if config.pooler_act else None
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)
        if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is None \
                and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token  # decoder tokenizers often lack a pad token
        self.tokenizer = tokenizer
        params = inspect.signature(backbone.forward).parameters
        # decoders get positions from the mask (left padding works); encoders keep their own
        # convention (RoBERTa counts from pad id + 1) and are always right-padded here
        self._takes_position_ids = "position_ids" in params and not is_encoder(bc)
        self._takes_token_types = "token_type_ids" in params

    # -------------------------------------------------------------- forward
    def pooled_hidden(self, input_ids: Optional[Tensor], attention_mask: Tensor, token_type_ids: Optional[Tensor] = None,
                      *, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        """The backbone's hidden state read by ``config.pooling``: (N, H)."""
        # ids beside embeddings: only to locate a last_non_pad read (the backbone reads the embeddings)
        locate = input_ids if inputs_embeds is not None and self.config.pooling == "last_non_pad" else None
        if locate is not None and (not isinstance(locate, Tensor) or tuple(locate.shape) != tuple(inputs_embeds.shape[:2])):
            raise ValueError(f"input_ids given with inputs_embeds locate the score: they must be (N, T) = "
                             f"{tuple(inputs_embeds.shape[:2])}, got {getattr(locate, 'shape', type(locate))}")
        hidden, mask = self.token_states(None if locate is not None else input_ids, attention_mask, token_type_ids,
                                         inputs_embeds=inputs_embeds)  # (N, T, H), (N, T)
        if self.config.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
            return (hidden * m).sum(1) / mask.sum(-1, keepdim=True).to(hidden.dtype)
        if self.config.pooling == "last_non_pad":
            ids = locate if inputs_embeds is not None else input_ids
            pad = self.score_pad_id
            if ids is None and pad is not None:
                raise ValueError("this model reads its score at the last token that is not its pad id "
                                 f"({pad}, pooling='last_non_pad', as transformers' classifiers read it): pass "
                                 "input_ids with inputs_embeds to locate it: rm(ids, mask, inputs_embeds=embeds)")
            at = last_positions(mask) if ids is None else last_non_pad_positions(ids, mask, pad)
        elif self.config.pooling == "last":
            at = last_positions(mask)
        else:
            at = mask.argmax(-1)  # first position with mask 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), at]  # (N, H)

    @property
    def score_pad_id(self) -> Optional[int]:
        """The pad id a ``last_non_pad`` model skips: its backbone config's (a composite config's text part), as
        transformers' classifiers read ``config.get_text_config().pad_token_id``."""
        bc = self.config.backbone
        pad = bc.get("pad_token_id")
        if pad is None and isinstance(bc.get("text_config"), dict):
            pad = bc["text_config"].get("pad_token_id")
        return pad if isinstance(pad, int) and not isinstance(pad, bool) else None

    def token_states(self, input_ids: Optional[Tensor], attention_mask: Tensor,
                     token_type_ids: Optional[Tensor] = None, *,
                     inputs_embeds: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """The backbone's last hidden states (N, T, H) and the long attention mask (N, T). ``inputs_embeds``
        (N, T, E) instead of ``input_ids`` (E the input embeddings' width): the backbone reads them in place of its token embeddings, so
        gradients reach them (differentiable rewards: soft tokens of a generator, ReFL / DRaFT-style)."""
        if inputs_embeds is not None:
            if input_ids is not None:
                raise ValueError("give input_ids or inputs_embeds, not both (the backbone would read one of them)")
            if not isinstance(inputs_embeds, Tensor) or inputs_embeds.dim() != 3 \
                    or not inputs_embeds.is_floating_point():
                raise ValueError(f"inputs_embeds must be a floating-point (N, T, H) tensor, got "
                                 f"{getattr(inputs_embeds, 'shape', type(inputs_embeds))}")
            # the input embeddings' width, which is not the hidden size everywhere (ALBERT's embedding_size, OPT's
            # word_embed_proj_dim)
            width = self.backbone.get_input_embeddings().embedding_dim
            if inputs_embeds.shape[-1] != width:
                raise ValueError(f"inputs_embeds must be (N, T, {width}) (the width of the backbone's input "
                                 f"embeddings), got {tuple(inputs_embeds.shape)}")
            shape = tuple(inputs_embeds.shape[:2])
        else:
            if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
                raise ValueError(f"input_ids must be a (N, T) tensor, got {getattr(input_ids, 'shape', type(input_ids))}")
            shape = tuple(input_ids.shape)
        if not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != shape:
            what = "inputs_embeds' (N, T)" if inputs_embeds is not None else "input_ids"
            raise ValueError(f"attention_mask must have the shape of {what} {shape}, "
                             f"got {getattr(attention_mask, 'shape', type(attention_mask))}")
        mask = attention_mask.to(torch.long)
        lengths = mask.sum(-1)  # (N,)
        if bool((lengths == 0).any()):
            raise ValueError(f"rows {torch.nonzero(lengths == 0).flatten().tolist()[:8]} have no tokens (all padding)")
        kwargs = {"attention_mask": mask, **({"input_ids": input_ids} if inputs_embeds is None else
                                             {"inputs_embeds": inputs_embeds})}
        if self._takes_position_ids:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # same positions for left / right padding
        if token_type_ids is not None and self._takes_token_types:
            kwargs["token_type_ids"] = token_type_ids
        return self.backbone(**kwargs).last_hidden_state, mask  # (N, T, H)

    def forward(self, input_ids: Optional[Tensor], attention_mask: Tensor, token_type_ids: Optional[Tensor] = None,
                return_hidden: bool = False, *, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        """Rewards (N,) in the head's dtype (float32 unless the model was cast); ``return_hidden=True``:
        the (N, H) input of the head instead (for the fused head loss). Differentiable, unlike ``score``
        (which runs under ``torch.inference_mode``): the entry point for gradients of a reward, with
        ``inputs_embeds`` (N, T, H) in place of ``input_ids`` to reach a generator's soft tokens."""
        h = self.pooled_hidden(input_ids, attention_mask, token_type_ids,
                               inputs_embeds=inputs_embeds).to(self.head.weight.dtype)
        if self.pooler is not None:
            h = self.pooler_activation(self.pooler(h))
        return h if return_hidden else self.head(h).squeeze(-1)

    # -------------------------------------------------------------- text → scores
    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError("this RewardModel has no tokenizer: pass tokenizer= to from_backbone / set model.tokenizer")
        return self.tokenizer

    @property
    def encoder(self) -> TextEncoder:
        """The text layout and truncation of this model (its config), for training and scoring alike."""
        c = self.config
        return TextEncoder(self._require_tokenizer(), max_length=c.max_length, input_format=c.input_format,
                           truncation=c.truncation, prompt_share=c.prompt_share, system_prompt=c.system_prompt)

    @property
    def pad_id(self) -> int:
        return pad_id_of(self._require_tokenizer())

    def encode(self, inputs: Sequence[Any]) -> list[Encoded]:
        """Token ids of each input (TextPair / dict / (prompt, response) tuple), truncated as the config says."""
        return self.encoder.encode(as_inputs(self.input_types, inputs, "RewardModel.encode"))

    def score(self, inputs: Sequence[Any], *, batch_size: Optional[int] = None, progress: bool = False) -> Tensor:
        """``Tensor[N]`` (float32, CPU): one reward per input (TextPair, or a dict with its fields), in
        input order; ``progress=True`` shows a progress bar. Runs under ``torch.inference_mode``: for the
        gradient of a reward call :meth:`forward` (``inputs_embeds`` for a generator's soft tokens)."""
        items = as_inputs(self.input_types, inputs, "RewardModel.score")
        return self._score(items, check_batch_size(self.default_batch_size if batch_size is None else batch_size), progress)

    def _score(self, items: list, batch_size: int, progress: bool = False) -> Tensor:
        encoder = self.encoder
        rows = encoder.encode(items)
        self.check_encoded(rows)
        truncation_warning(rows, encoder)
        return self.score_encoded(rows, batch_size, progress=progress)

    def check_encoded(self, rows: Sequence[Encoded]) -> None:
        """Checks of tokenised inputs before they are batched (and sorted by length), so an error names
        the input; a subclass whose forward needs more than tokens adds them (ArmoRM: a prompt turn)."""

    def position_limit(self) -> Optional[int]:
        """The most tokens the backbone reads (:func:`mmreward.core.weights.position_limit`): a learned
        position table's size, None for rotary / relative positions."""
        return position_limit(self.backbone)

    def check_max_length(self, max_length: Optional[int], what: str = "max_length") -> None:
        """A ``max_length`` this backbone can read: at most :meth:`position_limit` tokens. Past it the model
        would be saved promising to truncate at ``max_length``, then refuse every input longer than the
        backbone's positions when scored."""
        limit = self.position_limit()
        if max_length is not None and limit is not None and max_length > limit:
            raise ValueError(f"{what} {max_length} is more than the {limit} positions the "
                             f"{type(self.backbone).__name__} backbone reads: use a max_length of at most {limit}")

    def check_fits(self, rows: Sequence[Encoded], names: Optional[Sequence[str]] = None) -> None:
        """Each tokenised input fits the backbone: at most :meth:`position_limit` tokens, and token ids
        below the size of its input embedding table. Past either the backbone fails deep inside with a
        message that names no input ("The size of tensor a …", "index out of range in self"); here
        the ValueError names the input (``names[i]``, default ``input i``)."""
        limit = self.position_limit()
        embeddings = self.backbone.get_input_embeddings() if hasattr(self.backbone, "get_input_embeddings") else None
        vocab = getattr(embeddings, "num_embeddings", None)
        kind = type(self.backbone).__name__
        for i, r in enumerate(rows):
            name = names[i] if names is not None else f"input {i}"
            if limit is not None and len(r) > limit:
                raise ValueError(f"{name} is {len(r)} tokens, more than the {limit} positions the {kind} backbone "
                                 f"reads (max_length is {self.config.max_length}): use a max_length of at most {limit}")
            if vocab is not None and r.ids and max(r.ids) >= vocab:
                raise ValueError(f"{name} holds token id {max(r.ids)}, but the backbone has embeddings for ids "
                                 f"0..{vocab - 1} only: the tokenizer is not the one the model was built with")

    def score_encoded(self, rows: Sequence[Encoded], batch_size: int = 16, *, progress: bool = False) -> Tensor:
        """Rewards of tokenised inputs: longest first in batches of ``batch_size``, each padded to its
        own longest row, the input order restored. Identical inputs (the same token ids and types) are
        scored once and get the same reward: scored in two batches they could differ in the last bits
        (batched kernels), and a pair whose chosen and rejected tokens are equal would then count as
        right or wrong by chance."""
        self.check_fits(rows)
        refuse_meta(self, "score")
        device = self.head.weight.device
        slot: dict = {}
        inverse = [slot.setdefault((tuple(r.ids), None if r.types is None else tuple(r.types)), len(slot))
                   for r in rows]  # (N,) index of each input's first occurrence among the distinct ones
        if len(slot) < len(rows):
            first = {j: i for i, j in reversed(list(enumerate(inverse)))}
            distinct = [rows[first[j]] for j in range(len(slot))]
            return self.score_encoded(distinct, batch_size, progress=progress)[torch.tensor(inverse)]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))  # (N,) length buckets
        out = torch.empty(len(rows), dtype=torch.float32)
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="scoring", unit="batch", dynamic_ncols=True)
        with eval_while_scoring(self):  # threads share one eval period
            with torch.inference_mode():
                for start in starts:
                    idx = order[start:start + batch_size]
                    ids, mask, types = pad_batch([rows[i] for i in idx], self.pad_id)
                    r = self(ids.to(device), mask.to(device), None if types is None else types.to(device))
                    out[torch.tensor(idx)] = r.float().cpu()
        return out

    def best_of_n(self, prompt: TextLike, candidates: Sequence[TextLike], *,
                  batch_size: Optional[int] = None) -> tuple[int, Tensor]:
        """``(index of the highest-reward candidate, rewards (K,))``."""
        if isinstance(candidates, (str, bytes, dict)):
            # a string is a sequence too: its characters would be scored as the candidates
            raise TypeError(f"best_of_n: candidates must be a list of responses (strings or message lists), "
                            f"got {type(candidates).__name__}")
        candidates = list(candidates)
        if not candidates:
            raise ValueError("best_of_n got no candidates")
        scores = self.score([TextPair(prompt, c) for c in candidates], batch_size=batch_size)
        return int(scores.argmax()), scores

    # -------------------------------------------------------------- construction
    @classmethod
    def from_backbone(cls, backbone: Any, tokenizer: Any = None, *, pooling: Optional[str] = None,
                      max_length: Optional[int] = None, input_format: Optional[str] = None,
                      truncation: str = "prompt_first", prompt_share: float = 0.25,
                      **from_pretrained_kw: Any) -> "RewardModel":
        """A fresh head on a backbone given as a local path / hub id, a transformers config or a model (a
        model with an LM head, such as ``LlamaForCausalLM``, gives its base model; a BERT-style pooler inside
        it, unused by the reward model, is removed in place, so the saved folder loads as it scored).

        Defaults: ``pooling`` ``last`` for decoders, ``mean`` for encoders; ``input_format`` ``chat``
        when the tokenizer has a chat template, ``pair`` for encoders whose tokenizer has a pair
        layout, else ``joined``; ``max_length`` the tokenizer's / backbone's limit."""
        from transformers import PretrainedConfig

        if from_pretrained_kw and not isinstance(backbone, (str, os.PathLike)):
            # they go to from_pretrained, which only a backbone path runs: `pooler_act="tanh"` beside a config was
            # dropped without a word (the model had no pooler)
            raise TypeError(f"from_backbone: {', '.join(f'{k}=' for k in from_pretrained_kw)} would be ignored: extra "
                            "keywords are from_pretrained options of a backbone path, and the backbone here is a "
                            f"{type(backbone).__name__} (the reward model's own options: pooling, max_length, "
                            "input_format, truncation, prompt_share)")
        if isinstance(backbone, (str, os.PathLike)):
            path = _backbone_path(os.fspath(backbone))
            model = _pretrained_backbone(path, **from_pretrained_kw)
            if tokenizer is None:
                tokenizer = load_tokenizer(path)
        elif isinstance(backbone, (PretrainedConfig, dict)):
            model = backbone_from_config(backbone)
        elif isinstance(backbone, nn.Module):
            model = _base_of(backbone)
        else:
            raise TypeError(f"backbone must be a path, a transformers config or a model, got {type(backbone).__name__}")
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer(os.fspath(tokenizer))
        encoder = is_encoder(model.config)
        if input_format is None:
            input_format = ("chat" if has_chat_template(tokenizer) else
                            "pair" if encoder and tokenizer is not None and has_pair_template(tokenizer) else "joined")
        config = RewardModelConfig(backbone=_backbone_dict(model),
                                   max_length=max_length or model_max_length(tokenizer, model.config),
                                   input_format=input_format, truncation=truncation, prompt_share=prompt_share,
                                   pooling=pooling or (ENCODER_POOLING if encoder else "last"))
        return cls(config, tokenizer, backbone=model)

    def config_dict(self) -> dict:
        return {**config_to_dict(self.config), "backbone": _backbone_dict(self.backbone)}

    def _save(self, folder: str, state_dict: Optional[dict[str, Tensor]] = None) -> None:
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise ValueError("this RewardModel has no tokenizer: a saved model must be able to score text "
                             "(set model.tokenizer before save_pretrained)")
        save_weights(folder, state_dict if state_dict is not None else self.state_dict())
        tokenizer.save_pretrained(os.path.join(folder, TOKENIZER_DIR))

    @classmethod
    def required_files(cls, body: dict) -> list:
        """The weights and the tokenizer (``mmreward info`` checks them without loading)."""
        return [*super().required_files(body), tuple(f"{TOKENIZER_DIR}/{f}" for f in TOKENIZER_FILES)]

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device, tokenizer: Any = None) -> "RewardModel":
        config = config_from_dict(cls.config_class, body.get("config", {}), cls.model_type)
        if tokenizer is None:
            tok_dir = os.path.join(folder, TOKENIZER_DIR)
            if not os.path.isdir(tok_dir):
                # not handed to transformers: a relative "run/tokenizer" reads as a hub id there, and the
                # error would be a failed hub connection rather than the missing folder
                raise CheckpointError(
                    f"{folder} lacks its {TOKENIZER_DIR}/ folder (the tokenizer files save_pretrained writes beside "
                    f"the weights): a text reward model cannot score without it. Copy the whole saved folder, "
                    f"{TOKENIZER_DIR}/ included, or pass tokenizer= (the tokenizer the model was trained with) "
                    f"to RewardModel.from_pretrained / mmreward.load")
            tokenizer = load_tokenizer(tok_dir)
        try:
            with quiet_transformers():
                # built on the meta device first: a config.json whose sizes its weights do not have is refused
                # naming the tensor, before building it could allocate far more memory than the weights take
                model = build_for_weights(lambda: cls(config, tokenizer), folder, saved_names=without_unused_pooler)
        except (CheckpointError, ImportError):
            raise
        except Exception as e:  # noqa: BLE001 - transformers' config checks raise several types
            text = " ".join(str(e).split())
            raise CheckpointError(f"{os.path.join(folder, 'config.json')}: config field 'backbone' (a "
                                  f"{config.backbone.get('model_type')!r} transformers config) cannot build the "
                                  f"backbone: {type(e).__name__}: {text[:300]}") from e
        load_state_strict(model, without_unused_pooler(model, load_weights(folder, "cpu")), folder)
        return model

    @classmethod
    def from_pretrained(cls, folder: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu", *,
                        dtype: Union[None, str, torch.dtype] = None, tokenizer: Any = None) -> "RewardModel":
        """Any text reward-model folder: saved by :meth:`save_pretrained`, by mmreward 0.1, or a
        published transformers sequence classifier (:mod:`mmreward.text.layouts`); a training run's
        folder (its ``model/``) or a hub id work too. ``tokenizer=`` replaces the saved one."""
        from mmreward.registry import detect, resolve_folder

        tokenizer = _tokenizer_argument(tokenizer)
        path = resolve_folder(folder)
        body = read_config(path) if os.path.isfile(os.path.join(path, "config.json")) else {}
        if body.get("model_type") == cls.model_type:
            return super().from_pretrained(path, device, dtype=dtype, tokenizer=tokenizer)
        what, loader = detect(path)
        owner = getattr(loader, "__self__", None)  # a model class's from_pretrained (e.g. a saved ArmoRM)
        if not ((isinstance(owner, type) and issubclass(owner, RewardModel))
                or getattr(loader, "__module__", "") in ("mmreward.text.layouts", "mmreward.text.armo")):
            raise CheckpointError(f"{path} holds a {what!r} model, not a text reward model (mmreward.load opens it)")
        model = loader(path, device=device, dtype=dtype, tokenizer=tokenizer)
        check_finite_weights(model, path, nan_only=dtype is not None)
        return model


def _base_of(module: nn.Module) -> nn.Module:
    """The base model of a transformers model with a head (``LlamaForCausalLM(cfg)``, ``BertForMaskedLM``, an
    SFT checkpoint loaded with ``AutoModelForCausalLM``): its ``last_hidden_state`` is what the reward head reads
    (the LM head, tied to the embeddings or not, is left out: from_backbone puts a fresh head on). Scored as it
    was, such a module failed with "'CausalLMOutputWithPast' object has no attribute 'last_hidden_state'". A
    sequence classifier is refused: its trained head would be dropped without a word."""
    base = getattr(module, "base_model", None)
    if not isinstance(base, nn.Module) or base is module:
        return module
    kind = type(module).__name__
    if kind.endswith("ForSequenceClassification") or kind.endswith("ForTokenClassification"):
        raise TypeError(f"RewardModel.from_backbone: backbone is a {kind}, whose trained head from_backbone would "
                        f"replace with a fresh one: save it (save_pretrained, with its tokenizer) and mmreward.load "
                        f"the folder to keep its head, or pass its base model (.{module.base_model_prefix}) for a "
                        f"fresh head")
    return base


def _tokenizer_argument(tokenizer: Any) -> Any:
    """``tokenizer=`` of :meth:`RewardModel.from_pretrained`: a tokenizer, its folder (as ``from_backbone``
    takes it) or None; anything else is an error here rather than "'int' object is not callable" when scoring."""
    if tokenizer is None:
        return None
    if isinstance(tokenizer, (str, os.PathLike)):
        return load_tokenizer(os.path.expanduser(os.fspath(tokenizer)))
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_tokens_to_ids"):
        raise TypeError(f"tokenizer= must be a transformers tokenizer or the folder of one, got {type(tokenizer).__name__}")
    return tokenizer


def _backbone_path(path: str) -> str:
    """A local backbone folder (``~`` expanded) or a hub id. A local path that is missing, or a folder
    without ``config.json``, is refused here: transformers would read the first as a malformed hub id
    ("Repo id must be in the form ...") and the second as "Unrecognized model"."""
    if path.startswith("~") and not os.path.exists(path):
        path = os.path.expanduser(path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise CheckpointError(f"backbone folder {path!r} has no config.json: not a transformers model folder "
                                  "(pass the folder holding the backbone's config.json and weights, or a hub id)")
        return path
    if os.path.exists(path):
        raise CheckpointError(f"backbone {path!r} is a file, not a transformers model folder or hub id")
    if local_path_only(path):
        raise CheckpointError(f"backbone folder {path!r} does not exist")
    return path  # a hub id ("org/name" or "name")


def _pretrained_backbone(path: str, **kwargs: Any) -> nn.Module:
    """``AutoModel.from_pretrained`` without transformers' load report; weights the checkpoint lacks
    (initialised at random) are named in one warning."""
    from transformers import AutoModel

    if os.path.isdir(path):  # a folder someone shared: its config is checked against its weights before the build
        from mmreward.core.weights import check_published_config, read_json

        check_published_config(read_json(os.path.join(path, "config.json")), path)
    with quiet_transformers():
        try:
            model, info = AutoModel.from_pretrained(path, add_pooling_layer=False, output_loading_info=True, **kwargs, trust_remote_code=False)
        except TypeError:
            model, info = AutoModel.from_pretrained(path, output_loading_info=True, **kwargs, trust_remote_code=False)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        warnings.warn(f"{path}: {len(missing)} backbone weight(s) are not in the checkpoint and start at random, "
                      f"e.g. {missing[:4]}", stacklevel=3)
    return model


__all__ = ["RewardModel", "RewardModelConfig", "MODEL_TYPE", "POOLINGS", "TOKENIZER_FILES", "backbone_from_config",
           "drop_unused_pooler", "without_unused_pooler", "is_encoder", "load_tokenizer"]

"""`RewardModel`: any transformers backbone (decoder or encoder) + a scalar head read at the last
non-pad token.

    rm = RewardModel.from_backbone("path/or/hub-id")            # AutoModel + AutoTokenizer, fresh head
    rm = RewardModel.from_backbone(LlamaConfig(...), tokenizer=tok)
    rm = RewardModel.from_pretrained("runs/rm")                 # our folder, or a TRL /
                                                                # AutoModelForSequenceClassification(num_labels=1) one
    rm.score(["2+2?"], ["4"])                                   # Tensor[N]
    idx, scores = rm.best_of_n("2+2?", ["3", "4", "5"])

Saved folder: the backbone's ``config.json``, ``model.safetensors`` (the whole model: ``backbone.*``
and ``head.*``), ``mmreward_reward_model.json`` (written last; records the weights' byte size) and
the tokenizer files. Loading reads JSON + safetensors only: no pickled code runs.

Position ids are computed from the attention mask (``cumsum - 1``), so left- and right-padded
batches give the same rewards for decoders and for absolute-position encoders alike.
"""
from __future__ import annotations

import inspect
import json
import os
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from mmreward.core.checkpoint import CheckpointError, atomic_write, atomic_write_text

from .data import TextLike, check_text, encode, model_max_length, pad_batch, pad_id_of, truncation_warning

META_NAME = "mmreward_reward_model.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "mmreward_reward_model"
FORMAT_VERSION = 1


def _backbone_from_config(config: Any) -> nn.Module:
    """``AutoModel.from_config`` without BERT-style poolers (unused here; DDP would flag them)."""
    from transformers import AutoModel

    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(config)


def _load_tokenizer(path: str, required: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # missing / unreadable tokenizer files
        if required:
            raise
        import warnings

        warnings.warn(f"no tokenizer loaded from {path} ({type(e).__name__}: {e}); pass tokenizer= to score text")
        return None


def _resolve_folder(name: str) -> str:
    """A local folder, or a hub repo id fetched into the cache (honours HF_HUB_OFFLINE)."""
    if os.path.isdir(name):
        return name
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~")) and not os.path.exists(name)
    if not looks_like_hub_id:
        raise CheckpointError(f"reward model folder {name!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as e:  # offline, unknown repo, network
        raise CheckpointError(f"{name!r} is not a local folder and could not be fetched from the hub: "
                              f"{type(e).__name__}: {e}") from e


class RewardModel(nn.Module):
    """``backbone`` (a transformers base model returning ``last_hidden_state``) + ``head`` (H -> 1) read at
    the last non-pad token; ``tokenizer`` is kept for :meth:`score` and saved with the model."""

    def __init__(self, backbone: nn.Module, tokenizer: Any = None):
        super().__init__()
        config = getattr(backbone, "config", None)
        hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None) or getattr(config, "n_embd", None)
        if not isinstance(hidden, int):
            raise ValueError(f"cannot find the hidden size of backbone {type(backbone).__name__} "
                             "(config.hidden_size / d_model / n_embd)")
        self.backbone = backbone
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)
        self.tokenizer = tokenizer
        if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is None \
                and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token  # decoder tokenizers often lack a pad token
        params = inspect.signature(backbone.forward).parameters
        self._takes_position_ids = "position_ids" in params

    @property
    def config(self) -> Any:
        return self.backbone.config

    # -------------------------------------------------------------- forward
    def last_hidden(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Hidden state at each row's last non-pad token: (N, H)."""
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            raise ValueError(f"input_ids must be a (N, T) tensor, got {getattr(input_ids, 'shape', type(input_ids))}")
        if not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                             f"got {getattr(attention_mask, 'shape', type(attention_mask))}")
        mask = attention_mask.to(torch.long)
        lengths = mask.sum(-1)
        if bool((lengths == 0).any()):
            raise ValueError(f"rows {torch.nonzero(lengths == 0).flatten().tolist()[:8]} have no tokens (all padding)")
        kwargs = {"input_ids": input_ids, "attention_mask": mask}
        if self._takes_position_ids:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # same positions for left / right padding
        hidden = self.backbone(**kwargs).last_hidden_state  # (N, T, H)
        T = input_ids.shape[1]
        last = (torch.arange(T, device=mask.device) * mask).argmax(-1)  # (N,) last position with mask 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (N, H)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, return_hidden: bool = False) -> Tensor:
        """Rewards (N,) in the head's dtype (float32 unless the model was cast); ``return_hidden=True``:
        the (N, H) last-token hidden states in the head's dtype instead (for the fused head loss)."""
        h = self.last_hidden(input_ids, attention_mask).to(self.head.weight.dtype)
        return h if return_hidden else self.head(h).squeeze(-1)

    # -------------------------------------------------------------- scoring
    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError("this RewardModel has no tokenizer: pass tokenizer= to from_backbone / set model.tokenizer")
        return self.tokenizer

    def score(self, prompts: Sequence[Optional[TextLike]], responses: Optional[Sequence[TextLike]] = None, *,
              batch_size: int = 16, max_length: Optional[int] = None, dtype: Optional[torch.dtype] = None) -> Tensor:
        """Rewards (N,) float32 on CPU of each (prompt, response); ``responses=None``: ``prompts`` are whole
        conversations / texts. Longest-first length bucketing, order restored; ``dtype=torch.bfloat16``
        runs the backbone under autocast. Inputs longer than ``max_length`` (default: the tokenizer's /
        backbone's limit) lose their first tokens, with a warning."""
        tok = self._require_tokenizer()
        if isinstance(prompts, (str, dict)) or (responses is not None and isinstance(responses, (str, dict))):
            raise TypeError("score takes lists: score([prompt, ...], [response, ...])")
        prompts = list(prompts)
        if responses is None:
            items = [(None, check_text(c, f"conversation {i}")) for i, c in enumerate(prompts)]
        else:
            responses = list(responses)
            if len(prompts) != len(responses):
                raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
            items = [(None if p is None else check_text(p, f"prompt {i}", allow_empty=True),
                      check_text(r, f"response {i}", allow_empty=True)) for i, (p, r) in enumerate(zip(prompts, responses))]
        if not items:
            raise ValueError("score got no inputs")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        limit = model_max_length(tok, self.config)
        if max_length is not None:
            if not isinstance(max_length, int) or max_length < 1:
                raise ValueError(f"max_length must be an integer >= 1, got {max_length!r}")
            limit = max_length if limit is None else min(limit, max_length)
        ids, cut = encode(tok, items, limit)
        truncation_warning(cut, limit)
        return self._score_ids(ids, batch_size, dtype, pad_id_of(tok))

    def _score_ids(self, ids: list[list[int]], batch_size: int, dtype: Optional[torch.dtype], pad_id: int) -> Tensor:
        device = self.head.weight.device
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # length buckets: little padding per batch
        out = torch.empty(len(ids), dtype=torch.float32)
        was_training = self.training
        self.eval()
        amp = dtype is not None and dtype != torch.float32
        try:
            with torch.inference_mode():
                for start in range(0, len(order), batch_size):
                    idx = order[start:start + batch_size]
                    input_ids, mask = pad_batch([ids[i] for i in idx], pad_id)
                    with torch.autocast(device.type, dtype=dtype, enabled=amp):
                        r = self(input_ids.to(device), mask.to(device))
                    out[torch.tensor(idx)] = r.float().cpu()
        finally:
            self.train(was_training)
        return out

    def best_of_n(self, prompt: TextLike, candidates: Sequence[TextLike], **score_kw) -> tuple[int, Tensor]:
        """``(index of the highest-reward candidate, rewards (K,))``."""
        candidates = list(candidates)
        if not candidates:
            raise ValueError("best_of_n got no candidates")
        scores = self.score([prompt] * len(candidates), candidates, **score_kw)
        return int(scores.argmax()), scores

    # -------------------------------------------------------------- construction / persistence
    @classmethod
    def from_backbone(cls, backbone: Any, tokenizer: Any = None, **from_pretrained_kw) -> "RewardModel":
        """A fresh head on a backbone given as a local path / hub id, a transformers config or a model."""
        from transformers import AutoModel, PretrainedConfig

        if isinstance(backbone, (str, os.PathLike)):
            path = os.fspath(backbone)
            try:
                model = AutoModel.from_pretrained(path, add_pooling_layer=False, **from_pretrained_kw)
            except TypeError:
                model = AutoModel.from_pretrained(path, **from_pretrained_kw)
            if tokenizer is None:
                tokenizer = _load_tokenizer(path)
        elif isinstance(backbone, PretrainedConfig):
            model = _backbone_from_config(backbone)
        elif isinstance(backbone, nn.Module):
            model = backbone
        else:
            raise TypeError(f"backbone must be a path, a transformers config or a model, got {type(backbone).__name__}")
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = _load_tokenizer(os.fspath(tokenizer), required=True)
        return cls(model, tokenizer)

    def save_pretrained(self, folder: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(folder, exist_ok=True)
        self.backbone.config.save_pretrained(folder)  # config.json
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        seen, state = set(), {}
        for k, v in self.state_dict().items():  # safetensors refuses shared storage (tied weights)
            key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
            state[k] = v.detach().cpu().contiguous().clone() if key in seen or not v.is_contiguous() else v.detach().cpu()
            seen.add(key)
        path = os.path.join(folder, WEIGHTS_NAME)
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        meta = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, "weights_bytes": os.path.getsize(path),
                "hidden_size": self.head.in_features, "backbone_class": type(self.backbone).__name__}
        atomic_write_text(os.path.join(folder, META_NAME), json.dumps(meta, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str, tokenizer: Any = None, device: Union[str, torch.device] = "cpu") -> "RewardModel":
        """Load our folder, or a sequence-classification checkpoint with one label (TRL reward models);
        a hub id (``org/name``) is fetched first (JSON / safetensors / tokenizer files only, no pickles)."""
        folder = _resolve_folder(os.fspath(folder))
        if not os.path.exists(os.path.join(folder, META_NAME)):
            model = cls._from_sequence_classification(folder, tokenizer)
            return model.to(device).eval()
        from safetensors.torch import load_file
        from transformers import AutoConfig

        try:
            with open(os.path.join(folder, META_NAME), encoding="utf-8") as f:
                meta = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"corrupt {META_NAME} in {folder}: {e}") from e
        if not isinstance(meta, dict) or meta.get("model_type") != MODEL_TYPE:
            raise CheckpointError(f"{folder}/{META_NAME} is not a reward-model record")
        weights = os.path.join(folder, WEIGHTS_NAME)
        if not os.path.exists(weights):
            raise CheckpointError(f"missing {WEIGHTS_NAME} in {folder}")
        if os.path.getsize(weights) != meta.get("weights_bytes"):
            raise CheckpointError(f"{weights} has {os.path.getsize(weights)} bytes but {META_NAME} expects "
                                  f"{meta.get('weights_bytes')}: truncated or from another save")
        config = AutoConfig.from_pretrained(folder)
        model = cls(_backbone_from_config(config), tokenizer if tokenizer is not None else _load_tokenizer(folder))
        try:
            state = load_file(weights)
        except Exception as e:
            raise CheckpointError(f"corrupt or unreadable {weights}: {e}") from e
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"weights in {folder} do not match its config: {e}") from e
        return model.to(device).eval()

    @classmethod
    def _from_sequence_classification(cls, folder: str, tokenizer: Any) -> "RewardModel":
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = AutoConfig.from_pretrained(folder)
        archs = getattr(config, "architectures", None) or []
        if not any(a.endswith("ForSequenceClassification") for a in archs):
            raise CheckpointError(f"{folder} has no {META_NAME} and is not a sequence-classification checkpoint "
                                  f"(architectures: {archs})")
        if getattr(config, "num_labels", 1) != 1:
            raise CheckpointError(f"{folder} is a classifier with {config.num_labels} labels; a reward model has 1")
        seq = AutoModelForSequenceClassification.from_pretrained(folder)
        head = getattr(seq, "score", None)
        base = getattr(seq, seq.base_model_prefix, None)
        if not isinstance(head, nn.Linear) or base is None:
            # encoder classifiers (BERT & co.) read a pooled [CLS] state through extra layers: not a last-token RM
            raise CheckpointError(f"{type(seq).__name__} does not read its score at the last token with a linear "
                                  "`score` head; only decoder-style reward models (Llama, Qwen2, Mistral, GPT-2, ...) load")
        model = cls(base, tokenizer if tokenizer is not None else _load_tokenizer(folder))
        with torch.no_grad():
            model.head.weight.copy_(head.weight.reshape(1, -1).to(model.head.weight.dtype))
            model.head.bias.zero_()
            if head.bias is not None:
                model.head.bias.copy_(head.bias.reshape(1))
        return model

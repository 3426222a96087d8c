"""ImageReward-style image-text scorer: a vision-language backbone + ImageReward's MLP head.

Backbones:

* ``hf`` — any transformers dual encoder with ``get_text_features`` / ``get_image_features``
  (``CLIPModel``, ``SiglipModel``, ``BlipModel``, ``AlignModel`` …), built from a config or loaded
  from a local folder, with its tokenizer.
* ``conv`` — a small built-in conv image encoder + bag-of-words text encoder (:class:`ConvTextConfig`),
  for CPU demos and tests (learns the synthetic shapes task from scratch in seconds); its word
  vocabulary lives in the config.

Fusion (ImageReward's BLIP feeds the cross-attended [CLS] feature to the head; a dual encoder has two
separate embeddings, so they are fused first): ``product`` = D·(t̂ ⊙ î) of the L2-normalised text
and image embeddings — the head sees one feature per embedding dimension whose mean is the cosine
similarity (the CLIP score), scaled by D so features are O(1) for the head's small init —
or ``product_concat`` = [D·(t̂ ⊙ î), t̂·√D, î·√D] (3D inputs; lets the head use text-only / image-only
evidence such as aesthetics). The head is ImageReward's: Linear(D→1024) → Dropout(0.2) →
Linear(1024→128) → Dropout(0.2) → Linear(128→64) → Dropout(0.1) → Linear(64→16) → Linear(16→1),
initialised N(0, 1/(D+1)) as in the official code; its first dim follows the fused width.

The score is ``(raw − mean) / std`` with ``mean`` / ``std`` buffers saved with the model
(:meth:`ImageRewardModel.fit_normalization`). Inputs, batching, videos and gradients are those of
:class:`~mmreward.vision.image_scorer.ImageScorer`:

    model = mmreward.load("runs/shapes/model")
    model.score([ImagePrompt("two red circles on the left", "a.png"), ...])   # Tensor[N]
    model.score_parts([VideoPrompt("a blue square", "clip.mp4")])             # [Tensor[T]]: per frame

A saved folder holds ``config.json``, ``model.safetensors`` and, for a transformers backbone,
``backbone/config.json`` (its transformers config) and ``tokenizer/``.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from mmreward.core.folders import CheckpointError
from mmreward.core.inputs import as_inputs
from mmreward.core.model import (check_batch_size, check_ranges, config_from_dict, config_to_dict, load_state_strict,
                                 load_weights)

from .image_scorer import ImageScorer
from .scoring import require_assets

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ImageRewardConfig:
    backbone: str = field(default="hf", metadata={"help": "hf (transformers dual encoder) | conv (built-in)"})
    backbone_config: dict = field(default_factory=dict, metadata={
        "help": "conv: ConvTextConfig fields; hf: {'class': transformers class name} (its config is backbone/)"})
    fusion: str = field(default="product", metadata={"help": "product | product_concat (see module docstring)"})
    head_hidden: tuple = field(default=(1024, 128, 64, 16), metadata={"help": "ImageReward MLP hidden widths"})
    head_dropout: tuple = field(default=(0.2, 0.2, 0.1), metadata={"help": "dropout after the first hidden layers"})
    image_size: int = field(default=224, metadata={"help": "square input size of the image encoder"})
    image_mean: tuple = field(default=CLIP_MEAN, metadata={"help": "per-channel mean for normalisation"})
    image_std: tuple = field(default=CLIP_STD, metadata={"help": "per-channel std for normalisation"})
    max_text_length: int = field(default=77, metadata={"help": "prompts longer than this (tokens) are truncated"})

    def __post_init__(self) -> None:
        # an image_size of 0 / -3 failed only when the first image was resized, inside torch's interpolate
        check_ranges(self, counts=("image_size", "max_text_length"))


@dataclass
class ConvTextConfig:
    vocab: list = field(default_factory=list, metadata={"help": "words of the bag-of-words text encoder"})
    embed_dim: int = field(default=64, metadata={"help": "width of the text / image embeddings"})
    channels: tuple = field(default=(16, 32, 64), metadata={"help": "conv widths, each stage halves the size"})
    pool: int = field(default=4, metadata={"help": "final feature map side (keeps where things are)"})
    word_pattern: str = field(default=r"[^\W_]+", metadata={
        "help": "regular expression of a prompt's words, matched in lower case (default: runs of Unicode letters and "
                "digits)"})


# models saved before ConvTextConfig had `word_pattern` split prompts on ASCII letters and digits only (other words
# were dropped); they keep that rule, so their scores do not change
ASCII_WORDS = r"[a-z0-9]+"


def _warn_truncated(prompts: Sequence[str], lengths: Sequence[int], limit: int) -> None:
    from .scoring import warn_truncated

    warn_truncated(prompts, lengths, limit, stacklevel=5)


class ConvTextBackbone(nn.Module):
    """Built-in dual encoder: conv stack -> mean / max / small spatial map -> MLP; words -> summed embeddings."""

    def __init__(self, config: ConvTextConfig, max_text_length: int):
        super().__init__()
        if not config.vocab:
            raise ValueError("ConvTextConfig.vocab is empty: give the words prompts may use")
        if not config.channels or any(c < 4 or c % 4 for c in config.channels):
            raise ValueError(f"ConvTextConfig.channels must be multiples of 4 (GroupNorm(4, c)), got {config.channels}")
        try:
            self.words = re.compile(config.word_pattern)
        except (re.error, TypeError) as e:
            raise ValueError(f"ConvTextConfig.word_pattern {config.word_pattern!r} is not a regular expression: {e}") from None
        self.config, self.max_text_length = config, max_text_length
        self.word_ids = {w: i + 2 for i, w in enumerate(config.vocab)}  # 0 = pad, 1 = unknown word
        d = config.embed_dim
        layers, c_in = [], 3
        for c in config.channels:
            # full-resolution 3x3 conv first (shape cues are a few pixels), then a strided one
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GroupNorm(4, c), nn.GELU(),
                       nn.Conv2d(c, c, 3, stride=2, padding=1), nn.GroupNorm(4, c), nn.GELU()]
            c_in = c
        self.conv = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(config.pool))  # (B, C, P, P)
        # "what" from position-free pooling (mean ~ how much, max ~ whether), "where" from a small map
        self.where = nn.Conv2d(c_in, 4, 1)
        self.image_proj = nn.Sequential(nn.Linear(2 * c_in + 4 * config.pool**2, d), nn.GELU(), nn.Linear(d, d))
        # text = the sum of the prompt's word embeddings (N(0, 1) init). Summing (not averaging, no
        # MLP) keeps prompts that differ in one word far apart from the start; with weakly separated
        # prompts, text-image matching learned from scratch sits at a saddle for hundreds of steps.
        self.word_embedding = nn.Embedding(len(config.vocab) + 2, d, padding_idx=0)
        self.width = d

    def tokenize(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        words = [self.words.findall(p.lower()) for p in prompts]
        _warn_truncated(prompts, [len(w) for w in words], self.max_text_length)
        words = [w[: self.max_text_length] or ["<empty>"] for w in words]
        n = max(len(w) for w in words)
        ids = torch.zeros(len(words), n, dtype=torch.long)
        for i, ws in enumerate(words):
            ids[i, : len(ws)] = torch.tensor([self.word_ids.get(w, 1) for w in ws])
        return {"input_ids": ids, "attention_mask": ids > 0}  # an empty prompt is one unknown word

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        e = self.word_embedding(tokens["input_ids"])  # (N, L, D)
        return (e * tokens["attention_mask"].unsqueeze(-1).to(e.dtype)).sum(1)  # (N, D)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        f = self.conv(pixel_values)  # (B, C, P, P)
        feats = torch.cat([f.mean((2, 3)), f.amax((2, 3)), self.where(f).flatten(1)], dim=1)
        return self.image_proj(feats)  # (B, D)


def _check_dual_encoder(model: nn.Module) -> None:
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        raise TypeError(f"{type(model).__name__} is not a dual encoder (no get_text_features / get_image_features): "
                        "give a CLIP / SigLIP / BLIP / ALIGN-style config or folder")


class HFDualEncoder(nn.Module):
    """A transformers dual encoder (CLIP / SigLIP / BLIP / ALIGN …) and its tokenizer."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_text_length: int):
        super().__init__()
        if tokenizer is None:
            raise ValueError("an hf backbone needs a tokenizer (pass tokenizer=...)")
        _check_dual_encoder(model)
        self.model, self.tokenizer = model, tokenizer
        cfg = model.config
        self.width = getattr(cfg, "projection_dim", None) or cfg.text_config.hidden_size
        limit = getattr(cfg.text_config, "max_position_embeddings", max_text_length)
        self.max_text_length = min(max_text_length, limit)

    def tokenize(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        full = self.tokenizer(list(prompts))["input_ids"]
        _warn_truncated(prompts, [len(x) for x in full], self.max_text_length)
        tok = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_text_length,
                             return_tensors="pt")
        return {k: v for k, v in tok.items() if k in ("input_ids", "attention_mask")}

    def save(self, folder: str) -> None:
        """``backbone/config.json`` (the transformers config) and ``tokenizer/`` inside ``folder``."""
        self.model.config.save_pretrained(os.path.join(folder, "backbone"))
        self.tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))

    @classmethod
    def from_folder(cls, folder: str, class_name: str, max_text_length: int) -> "HFDualEncoder":
        """The backbone :meth:`save` wrote (random weights: the model's state dict fills them)."""
        import transformers

        require_assets(folder, {"backbone/config.json": "the backbone's transformers config",
                                "tokenizer": "the text tokenizer"})
        model_cls = getattr(transformers, class_name, None)
        if model_cls is None:
            raise CheckpointError(f"{folder}: unknown transformers class {class_name!r} in config.json "
                                  f"(transformers {transformers.__version__})")
        config = transformers.AutoConfig.from_pretrained(os.path.join(folder, "backbone"), trust_remote_code=False)
        tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.join(folder, "tokenizer"), trust_remote_code=False)
        return cls(model_cls(config), tokenizer, max_text_length)

    @staticmethod
    def _features(out: Any) -> torch.Tensor:  # transformers 4 returns a tensor, 5 an output object
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._features(self.model.get_text_features(**tokens))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._features(self.model.get_image_features(pixel_values=pixel_values))


def _check_head(hidden: Any, dropout: Any) -> None:
    """ImageReward head settings: widths are integers >= 1; dropout is one probability in [0, 1) per
    hidden layer at most (fewer: no dropout after the rest)."""
    if not isinstance(hidden, (list, tuple)) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
        raise ValueError(f"head_hidden must be a list of layer widths (integers >= 1), got {hidden!r}")
    if not isinstance(dropout, (list, tuple)) or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p < 1.0 for p in dropout):
        raise ValueError(f"head_dropout must be a list of dropout probabilities in [0, 1) (or None for none), "
                         f"got {dropout!r}")
    if len(dropout) > len(hidden):
        raise ValueError(f"head_dropout has {len(dropout)} values but head_hidden only {len(hidden)} layers "
                         "(one dropout after each hidden layer at most)")


def imagereward_head(in_dim: int, hidden: Sequence[int], dropout: Sequence[float]) -> nn.Sequential:
    layers, d = [], in_dim
    for i, h in enumerate(hidden):
        layers.append(nn.Linear(d, h))
        if i < len(dropout) and dropout[i] > 0:
            layers.append(nn.Dropout(dropout[i]))
        d = h
    layers.append(nn.Linear(d, 1))
    for m in layers:  # the official init: every weight N(0, 1/(input_size+1)), zero bias
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1.0 / (in_dim + 1))
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


class ImageRewardModel(ImageScorer):
    """ImageReward-style scorer (``model_type`` ``image_reward``); see the module docstring."""

    model_type = "image_reward"
    config_class = ImageRewardConfig

    def __init__(self, config: ImageRewardConfig, backbone: Optional[nn.Module] = None):
        super().__init__()
        if config.fusion not in ("product", "product_concat"):
            raise ValueError(f"fusion must be 'product' or 'product_concat', got {config.fusion!r}")
        if config.head_dropout is None or config.head_dropout is False:
            config.head_dropout = ()  # no dropout
        _check_head(config.head_hidden, config.head_dropout)
        self.config = config
        if backbone is None:
            if config.backbone != "conv":
                raise ValueError("an hf ImageRewardModel is built with from_backbone(...) or from_pretrained(...)")
            saved = {"word_pattern": ASCII_WORDS, **config.backbone_config}  # saved without the field: the old rule
            backbone = ConvTextBackbone(config_from_dict(ConvTextConfig, saved, "conv backbone"), config.max_text_length)
        self.backbone = backbone
        width = backbone.width * (3 if config.fusion == "product_concat" else 1)
        self.head = imagereward_head(width, config.head_hidden, config.head_dropout)
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(cls, backbone: Union[str, Any], tokenizer: Any = None, **overrides) -> "ImageRewardModel":
        """A fresh head on a backbone: a :class:`ConvTextConfig`, a transformers config (e.g.
        ``CLIPConfig``; random weights) or a local model folder (weights, tokenizer and image
        preprocessing read from it). ``overrides`` set :class:`ImageRewardConfig` fields."""
        if isinstance(backbone, ConvTextConfig):
            cfg = ImageRewardConfig(backbone="conv", backbone_config=config_to_dict(backbone),
                                    image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), image_size=32)
            return cls(dataclasses.replace(cfg, **overrides))
        import transformers

        if isinstance(backbone, (str, os.PathLike)):
            path = os.fspath(backbone)
            if not os.path.isfile(os.path.join(path, "config.json")):  # a hub id would be downloaded: refused
                what = "has no config.json" if os.path.isdir(path) else "does not exist"
                raise FileNotFoundError(f"backbone folder {path!r} {what}: give a local transformers model folder "
                                        "(nothing is downloaded)")
            import pickle

            from safetensors import SafetensorError

            from .published.common import transformers_weights_error

            try:
                model = transformers.AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=False)
            except (pickle.UnpicklingError, SafetensorError) as e:  # a pickle holding code, a truncated file: named
                raise transformers_weights_error(path, "backbone", e) from e
            _check_dual_encoder(model)
            tokenizer = tokenizer if tokenizer is not None else transformers.AutoTokenizer.from_pretrained(
                path, local_files_only=True, trust_remote_code=False)
            pre = _read_preprocessor(path)
        elif isinstance(backbone, transformers.PretrainedConfig):
            model, pre = transformers.AutoModel.from_config(backbone), {}
        else:
            raise TypeError(f"backbone must be a ConvTextConfig, a transformers config or a path, got {type(backbone).__name__}")
        _check_dual_encoder(model)
        image_size = pre.pop("image_size", None) or getattr(getattr(model.config, "vision_config", None),
                                                              "image_size", None) or 224
        cfg = ImageRewardConfig(backbone="hf", backbone_config={"class": type(model).__name__},
                                image_size=int(image_size), **pre)
        cfg = dataclasses.replace(cfg, **overrides)
        return cls(cfg, HFDualEncoder(model, tokenizer, cfg.max_text_length))

    def _save(self, folder: str, state_dict: Optional[dict] = None) -> None:
        if self.config.backbone == "hf":
            self.backbone.save(folder)
        return super()._save(folder, state_dict)

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device) -> "ImageRewardModel":
        cfg = config_from_dict(ImageRewardConfig, body.get("config", {}), cls.model_type)
        backbone = None
        if cfg.backbone == "hf":
            backbone = HFDualEncoder.from_folder(folder, cfg.backbone_config.get("class", ""), cfg.max_text_length)
        model = cls(cfg, backbone)
        load_state_strict(model, load_weights(folder), folder)
        return model

    # ------------------------------------------------------------------ scoring
    def forward(self, prompts: Sequence[str], pixel_values: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) rewards [B] of ``pixel_values`` [B, 3, S, S] against ``prompts`` (len B)."""
        unique = list(dict.fromkeys(prompts))  # encode each distinct prompt once (rank(): one prompt)
        index = torch.tensor([unique.index(p) for p in prompts], device=pixel_values.device)
        tokens = {k: v.to(pixel_values.device) for k, v in self.backbone.tokenize(unique).items()}
        t = F.normalize(self.backbone.encode_text(tokens), dim=-1)[index]  # (B, D)
        i = F.normalize(self.backbone.encode_image(pixel_values), dim=-1)  # (B, D)
        d = t.shape[-1]
        fused = t * i * d
        if self.config.fusion == "product_concat":
            fused = torch.cat([fused, t * d**0.5, i * d**0.5], dim=-1)
        return self.head(fused).squeeze(-1)

    def reward(self, prompts: Sequence[str], pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised rewards ``(raw − mean) / std`` [B]."""
        return (self(prompts, pixel_values) - self.reward_mean) / self.reward_std

    @torch.no_grad()
    def fit_normalization(self, inputs: Sequence[Any], batch_size: int = 64) -> tuple[float, float]:
        """Set the stored mean / std to those of the raw scores of ``inputs`` (``ImagePrompt`` /
        ``VideoPrompt`` or their dicts, every video frame counted); returns them."""
        items = as_inputs(self.input_types, inputs, "fit_normalization")
        raw, _ = self.frame_scores(items, check_batch_size(batch_size), reward=self.forward)
        if raw.numel() < 2:
            raise ValueError("fit_normalization needs at least 2 images")
        mean, std = float(raw.mean()), float(raw.std())
        if not std > 0:
            raise ValueError("raw scores are all equal: cannot normalise")
        self.reward_mean.fill_(mean)
        self.reward_std.fill_(std)
        return mean, std


def _read_preprocessor(path: str) -> dict:
    """image_size / mean / std from a model folder's preprocessor_config.json (CLIP / SigLIP / BLIP)."""
    from mmreward.core.weights import read_json

    f = os.path.join(path, "preprocessor_config.json")
    if not os.path.lexists(f):
        return {}
    d = read_json(f, "the image processor settings")  # a corrupt file or broken link: CheckpointError naming it
    out = {}
    if "image_mean" in d:
        out["image_mean"], out["image_std"] = tuple(d["image_mean"]), tuple(d["image_std"])
    size = d.get("crop_size") or d.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    if size:
        out["image_size"] = int(size)
    return out

"""ImageReward v1.0 (THUDM): BLIP's ViT image encoder, BLIP's BERT text encoder that cross-attends to
the image, and an MLP on the text's [CLS] state — as :class:`BLIPImageReward` (``model_type``
``imagereward_blip``), an :class:`~mmreward.vision.image_scorer.ImageScorer`.

The published folder holds ``ImageReward.pt`` (a ``torch.save`` of the ``ImageReward`` module's state
dict, read here with ``weights_only=True``) and ``med_config.json`` (the BERT config); the tokenizer
is bert-base-uncased's (``vocab.txt`` in the folder or in ``tokenizer/``) with BLIP's two added tokens
``[DEC]`` / ``[ENC]``. The computation follows the official ``ImageReward.score``:

* image: ``Resize(224, BICUBIC)`` + ``CenterCrop(224)`` on the PIL image, CLIP mean / std;
  ViT-L/16 (24 blocks, width 1024, 16 heads, LayerNorm eps 1e-6) → all tokens ``[B, 197, 1024]``;
* text: the prompt padded / truncated to 35 tokens; BERT (med.py) with self-attention, then
  cross-attention to the image tokens, in every layer; the [CLS] state ``[B, 768]``;
* reward: ``MLP(768 → 1024 → 128 → 64 → 16 → 1)`` (dropouts, no activations), then
  ``(r − 0.16717362830052426) / 1.0333394966054072``.

Parameter names are the official ones (``blip.visual_encoder.*``, ``blip.text_encoder.*``,
``mlp.layers.*``), so ``ImageReward.pt`` loads strictly; its unused BLIP projections
(``blip.vision_proj`` / ``blip.text_proj``) are skipped. The ViT size is read from the weights (heads =
width / 64, as BLIP's ``create_vit``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmreward.core.device import resolve_device, resolve_dtype
from mmreward.core.folders import CheckpointError
from mmreward.core.model import config_from_dict, finish_loading, load_state_strict, load_weights
from mmreward.core.weights import read_json, read_torch_state, require_tensors

from ..image_reward import imagereward_head
from ..image_scorer import ImageScorer
from ..images import resize_center_crop
from ..scoring import require_assets, tokenize_truncating
from .common import normalise, shortest_edge_crop_batch, split_by_grad

CHECKPOINT, MED_CONFIG, TOKENIZER_DIR = "ImageReward.pt", "med_config.json", "tokenizer"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
USED_PREFIXES = ("blip.visual_encoder.", "blip.text_encoder.", "mlp.")
MED_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "layer_norm_eps", "hidden_act", "pad_token_id")


@dataclass
class BLIPImageRewardConfig:
    image_size: int = field(default=224, metadata={"help": "square input size of the ViT"})
    patch_size: int = field(default=16, metadata={"help": "ViT patch side"})
    vision_width: int = field(default=1024, metadata={"help": "ViT width (ViT-L: 1024)"})
    vision_depth: int = field(default=24, metadata={"help": "ViT blocks"})
    vision_heads: int = field(default=16, metadata={"help": "ViT attention heads"})
    vision_mlp_ratio: float = field(default=4.0, metadata={"help": "ViT MLP width / width"})
    text_config: dict = field(default_factory=dict, metadata={
        "help": "med_config.json fields (BERT with cross-attention)"})
    head_hidden: tuple = field(default=(1024, 128, 64, 16), metadata={"help": "MLP hidden widths"})
    reward_mean: float = field(default=0.16717362830052426, metadata={"help": "subtracted from the MLP output"})
    reward_std: float = field(default=1.0333394966054072, metadata={"help": "divides the centred MLP output"})
    max_text_length: int = field(default=35, metadata={"help": "prompts are truncated to this many tokens"})
    image_mean: tuple = field(default=CLIP_MEAN, metadata={"help": "per-channel mean"})
    image_std: tuple = field(default=CLIP_STD, metadata={"help": "per-channel std"})


# ------------------------------------------------------------------ BLIP's ViT (timm layout)
class _Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, d)
        attn = ((q @ k.transpose(-2, -1)) * (C // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.attn, self.mlp = _Attention(width, heads), _Mlp(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BLIPVisionTransformer(nn.Module):
    """``[B, 3, S, S]`` -> all tokens ``[B, 1 + (S/p)², W]`` after the final LayerNorm."""

    def __init__(self, c: BLIPImageRewardConfig):
        super().__init__()
        n = (c.image_size // c.patch_size) ** 2
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, c.vision_width, c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.vision_width))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, c.vision_width))
        hidden = int(c.vision_width * c.vision_mlp_ratio)
        self.blocks = nn.ModuleList(_Block(c.vision_width, c.vision_heads, hidden) for _ in range(c.vision_depth))
        self.norm = nn.LayerNorm(c.vision_width, eps=1e-6)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(pixels).flatten(2).transpose(1, 2)  # (B, N, W)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed[:, :x.shape[1] + 1]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# ------------------------------------------------------------------ BLIP's BERT with cross-attention (med.py layout)
class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_width: int):
        super().__init__()
        self.heads = heads
        # keys / values come from the text itself (kv_width = hidden) or, cross-attending, from the image tokens
        self.query = nn.Linear(hidden, hidden)
        self.key, self.value = nn.Linear(kv_width, hidden), nn.Linear(kv_width, hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        split = lambda t: t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731 (B, h, L, d)
        q, k, v = split(self.query(x)), split(self.key(context)), split(self.value(context))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores + mask  # (B, 1, 1, Lk): 0 or -10000, as med.py's extended mask
        out = scores.softmax(dim=-1) @ v
        return out.transpose(1, 2).reshape(x.shape)


class _AddNorm(nn.Module):
    def __init__(self, d_in: int, hidden: int, eps: float):
        super().__init__()
        self.dense, self.LayerNorm = nn.Linear(d_in, hidden), nn.LayerNorm(hidden, eps=eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _Attention2(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_width: int, eps: float):
        super().__init__()
        self.self, self.output = _SelfAttention(hidden, heads, kv_width), _AddNorm(hidden, hidden, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        return self.output(self.self(x, context, mask), x)


class _Layer(nn.Module):
    def __init__(self, t: dict, encoder_width: int):
        super().__init__()
        h, eps = t["hidden_size"], t.get("layer_norm_eps", 1e-12)
        self.attention = _Attention2(h, t["num_attention_heads"], h, eps)
        self.crossattention = _Attention2(h, t["num_attention_heads"], encoder_width, eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(h, t["intermediate_size"])
        self.output = _AddNorm(t["intermediate_size"], h, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, x, mask)
        x = self.crossattention(x, image, None)  # every image token is attended (mask of ones)
        return self.output(F.gelu(self.intermediate.dense(x)), x)


class BLIPTextEncoder(nn.Module):
    """``(ids [B, L], mask [B, L], image tokens [B, N, Wv])`` -> hidden states ``[B, L, H]``."""

    def __init__(self, t: dict, encoder_width: int):
        super().__init__()
        h = t["hidden_size"]
        if t.get("hidden_act", "gelu") != "gelu":
            raise CheckpointError(f"med_config hidden_act {t.get('hidden_act')!r} is not supported (BLIP uses gelu)")
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(t["vocab_size"], h, padding_idx=t.get("pad_token_id", 0))
        self.embeddings.position_embeddings = nn.Embedding(t["max_position_embeddings"], h)
        self.embeddings.LayerNorm = nn.LayerNorm(h, eps=t.get("layer_norm_eps", 1e-12))
        self.embeddings.register_buffer("position_ids", torch.arange(t["max_position_embeddings"]).expand((1, -1)))
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(t, encoder_width) for _ in range(t["num_hidden_layers"]))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        x = e.word_embeddings(ids) + e.position_embeddings(e.position_ids[:, :ids.shape[1]])
        x = e.LayerNorm(x)
        additive = (1.0 - mask[:, None, None, :].to(x.dtype)) * -10000.0  # (B, 1, 1, L)
        for layer in self.encoder.layer:
            x = layer(x, additive, image)
        return x


# ------------------------------------------------------------------ the scorer
class BLIPImageReward(ImageScorer):
    """ImageReward v1.0; see the module docstring."""

    model_type = "imagereward_blip"
    config_class = BLIPImageRewardConfig

    def __init__(self, config: BLIPImageRewardConfig, tokenizer: Any = None):
        super().__init__()
        if tokenizer is None:
            raise ValueError("BLIPImageReward needs the BERT tokenizer")
        missing = [k for k in MED_FIELDS[:6] if k not in config.text_config]
        if missing:
            raise ValueError(f"text_config (med_config.json) lacks {missing}")
        self.config, self.tokenizer = config, tokenizer
        self.blip = nn.Module()
        self.blip.visual_encoder = BLIPVisionTransformer(config)
        self.blip.text_encoder = BLIPTextEncoder(config.text_config, config.vision_width)
        self.mlp = nn.Module()
        self.mlp.layers = imagereward_head(config.text_config["hidden_size"], config.head_hidden, (0.2, 0.2, 0.1))

    def reward(self, prompts: Sequence[str], pixel_values: torch.Tensor) -> torch.Tensor:
        unique = list(dict.fromkeys(prompts))
        index = torch.tensor([unique.index(p) for p in prompts], device=pixel_values.device)
        tok = tokenize_truncating(self.tokenizer, unique, self.config.max_text_length)
        dev = pixel_values.device
        ids, mask = tok["input_ids"].to(dev)[index], tok["attention_mask"].to(dev)[index]  # (B, L): one row per image
        image = self.blip.visual_encoder(pixel_values)  # (B, 1 + N, Wv)
        cls = self.blip.text_encoder(ids, mask, image)[:, 0]  # (B, H)
        head = self.mlp.layers  # in its own dtype (a model cast with .half() / dtype=); the reward in float32
        r = head(cls.to(next(head.parameters()).dtype)).float()
        return ((r - self.config.reward_mean) / self.config.reward_std).squeeze(-1)

    def pixel_batch(self, images: Sequence[Any], wheres: Sequence[str]) -> torch.Tensor:
        """``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` on the PIL image, CLIP mean / std; inputs
        that require grad go through :meth:`pixel_values`."""
        c, p = self.config, next(self.parameters())
        official = lambda ims, ws: shortest_edge_crop_batch(  # noqa: E731
            ims, ws, c.image_size, "round", c.image_mean, c.image_std,
            rgb_first=False).to(p.device, p.dtype)  # ImageReward resizes the image as opened
        return split_by_grad(images, wheres, official, super().pixel_batch)

    def pixel_values(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Float ``[3, H, W]`` images -> normalised ``[B, 3, S, S]`` with a differentiable torch resize
        and crop (a PIL resize cannot carry a gradient)."""
        c, p = self.config, next(self.parameters())
        x = [normalise(resize_center_crop(im.to(p.device, torch.float32).unsqueeze(0), c.image_size)[0],
                       c.image_mean, c.image_std) for im in images]
        return torch.stack(x).to(p.dtype)

    def _save(self, folder: str, state_dict: Optional[dict] = None) -> None:
        self.tokenizer.save_pretrained(os.path.join(folder, TOKENIZER_DIR))
        return super()._save(folder, state_dict)

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device) -> "BLIPImageReward":
        from transformers import AutoTokenizer

        require_assets(folder, {TOKENIZER_DIR: "the BERT tokenizer"})
        model = cls(config_from_dict(BLIPImageRewardConfig, body.get("config", {}), cls.model_type),
                    AutoTokenizer.from_pretrained(os.path.join(folder, TOKENIZER_DIR), trust_remote_code=False))
        load_state_strict(model, load_weights(folder), folder)
        return model


# ------------------------------------------------------------------ the published layout
def is_imagereward(folder: str, config: Optional[dict]) -> bool:
    # lexists: a hub snapshot whose ImageReward.pt link points at a blob that never arrived is still this
    # layout, and reading it names the broken link (isfile would leave the folder unrecognised)
    return os.path.lexists(os.path.join(folder, CHECKPOINT))


def blip_tokenizer(folder: str):
    """bert-base-uncased's tokenizer from ``vocab.txt`` (in the folder or ``tokenizer/``) with BLIP's
    ``[DEC]`` (bos) and ``[ENC]`` tokens, as BLIP's ``init_tokenizer`` builds it."""
    from transformers import BertTokenizerFast

    where = next((d for d in (folder, os.path.join(folder, TOKENIZER_DIR))
                  if os.path.isfile(os.path.join(d, "vocab.txt"))), None)
    if where is None:
        raise CheckpointError(f"{folder} has no vocab.txt (bert-base-uncased's, in the folder or {TOKENIZER_DIR}/): "
                              "ImageReward tokenizes prompts with BLIP's BERT tokenizer")
    tokenizer = BertTokenizerFast(os.path.join(where, "vocab.txt"), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def _vision_config(state: dict, path: str) -> dict:
    """ViT size from the weights (ImageReward v1.0: ViT-L/16 at 224)."""
    pre = "blip.visual_encoder."
    require_tensors(state, [pre + n for n in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight",
                                              "blocks.0.mlp.fc1.weight")], path, "the BLIP ViT image encoder")
    width, patch = state[pre + "cls_token"].shape[-1], state[pre + "patch_embed.proj.weight"].shape[-1]
    side = math.isqrt(state[pre + "pos_embed"].shape[1] - 1)
    depth = len({k.split(".")[3] for k in state if k.startswith(pre + "blocks.")})
    if width % 64:
        raise CheckpointError(f"{path}: ViT width {width} is not a multiple of 64 (BLIP's head size)")
    return {"image_size": side * patch, "patch_size": patch, "vision_width": width, "vision_depth": depth,
            "vision_heads": width // 64, "vision_mlp_ratio": state[pre + "blocks.0.mlp.fc1.weight"].shape[0] / width}


def _head_hidden(state: dict, path: str) -> tuple:
    linear = sorted((int(k.split(".")[2]), v.shape[0]) for k, v in state.items()
                    if k.startswith("mlp.layers.") and k.endswith(".weight"))
    if len(linear) != 5:
        have = sorted({k.split(".")[0] for k in state})[:8]  # another model's file says so by its names
        raise CheckpointError(f"{path} lacks the ImageReward MLP head (mlp.layers.{{0,2,4,6,7}}.weight/bias), "
                              f"found {len(linear)} of its 5 linear layers (top-level names present: {have})")
    return tuple(width for _, width in linear[:-1])


def load_imagereward(folder: str, *, device: Any = "cpu", dtype: Any = None) -> BLIPImageReward:
    """ImageReward v1.0 from ``ImageReward.pt`` + ``med_config.json`` + the BERT ``vocab.txt``."""
    med = read_json(os.path.join(folder, MED_CONFIG), "ImageReward's BERT config")
    tokenizer = blip_tokenizer(folder)
    path = os.path.join(folder, CHECKPOINT)
    # a checkpoint nested under "state_dict" (another model's .pt, a training checkpoint) is opened, so the
    # error names the tensors it holds rather than "not a state dict of tensors"
    state = read_torch_state(path, "state_dict")
    text = {k: med[k] for k in MED_FIELDS if k in med}
    config = BLIPImageRewardConfig(text_config=text, head_hidden=_head_hidden(state, path),
                                   **_vision_config(state, path))
    try:
        model = BLIPImageReward(config, tokenizer)
    except ValueError as e:
        raise CheckpointError(f"{folder}/{MED_CONFIG}: {e}") from e
    if len(tokenizer) > text["vocab_size"]:
        raise CheckpointError(f"{folder}: the tokenizer has {len(tokenizer)} tokens but med_config.json's vocab_size "
                              f"is {text['vocab_size']}")
    used = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k.startswith(USED_PREFIXES)}
    positions = "blip.text_encoder.embeddings.position_ids"  # a constant buffer some savers leave out
    used.setdefault(positions, model.state_dict()[positions])
    load_state_strict(model, used, path)
    return finish_loading(model, resolve_device(device), resolve_dtype(dtype))


__all__ = ["BLIPImageReward", "BLIPImageRewardConfig", "BLIPVisionTransformer", "BLIPTextEncoder", "blip_tokenizer",
           "is_imagereward", "load_imagereward"]

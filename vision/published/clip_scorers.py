"""CLIP-based image scorers: PickScore, HPSv2 / HPSv2.1, CLIP score and the LAION aesthetic predictor,
as one :class:`CLIPScorer` (``model_type`` ``clip_scorer``) on a transformers ``CLIPModel``.

====================  ===============================  =============================================
``kind``              score                            preprocessing (as the official code)
====================  ===============================  =============================================
``pickscore``         ``logit_scale.exp() · cos(t, i)``  CLIP image processor: bicubic shortest side,
                                                       centre crop (floor), CLIP mean / std
``clip_score``        ``max(100 · cos(t, i), 0)``       the same (torchmetrics ``clip_score``)
``hpsv2``             ``cos(t, i)``                     HPSv2's ``ResizeMaxSize``: bicubic longest side
                                                       on the tensor, black padding; CLIP mean / std
``aesthetic``         ``MLP(i)`` (no prompt)            as ``pickscore``
====================  ===============================  =============================================

``t`` / ``i`` are the projected text / image embeddings. Published layouts (``mmreward.load`` finds them):

* a transformers ``CLIPModel`` folder (``config.json`` ``model_type: clip``, weights, tokenizer,
  ``preprocessor_config.json``) — PickScore when its name or ``_name_or_path`` says PickScore, else
  CLIP score (``mmreward.load(folder, kind="pickscore")`` overrides); with the LAION aesthetic
  predictor's MLP next to the weights (``sac+logos+ava1-l14-linearMSE.pth`` or another
  improved-aesthetic-predictor ``*-l14-linearMSE.pth`` / ``*-reluMSE.pth``, on
  ``openai/clip-vit-large-patch14``), the aesthetic score DDPO and AlignProp train on: the MLP
  (Linear 768→1024→128→64→16→1; the ``reluMSE`` files, saved from their own module layout, have a
  ReLU after each of the first four linears) on the L2-normalised projected image embedding;
* an HPSv2 checkpoint (``HPS_v2_compressed.pt`` / ``HPS_v2.1_compressed.pt``: open_clip's
  ViT-H-14 state dict under ``state_dict``) and an open_clip folder (``open_clip_config.json`` +
  ``open_clip_pytorch_model.bin`` / ``open_clip_model.safetensors``): the open_clip weights are renamed
  onto ``CLIPModel`` (the conversion transformers' ``convert_clip_original_pytorch_to_hf`` does). The
  architecture comes from ``open_clip_config.json`` (HPSv2 default: open_clip's ``ViT-H-14.json``); the
  tokenizer from ``vocab.json`` + ``merges.txt`` / ``tokenizer.json``, or open_clip's
  ``bpe_simple_vocab_16e6.txt.gz`` in the folder or in an installed ``open_clip``.

Images are preprocessed from their uint8 pixels with PIL exactly as the official code does; a float
image tensor that requires grad goes through a differentiable torch resize instead (for ReFL; within
~1e-2 of the PIL path for ``pickscore`` / ``clip_score``, exact for ``hpsv2``).
"""
from __future__ import annotations

import glob
import gzip
import html
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmreward.core.device import resolve_device, resolve_dtype
from mmreward.core.folders import CheckpointError
from mmreward.core.model import config_from_dict, finish_loading, load_state_strict, load_weights
from mmreward.core.weights import quiet_transformers, read_json, read_torch_state, read_weight_file, refuse_mismatched

from ..image_scorer import ImageScorer
from ..images import resize_center_crop
from ..scoring import require_assets, tokenize_truncating
from .common import (longest_edge_pad, normalise, shortest_edge_crop_batch, split_by_grad,
                     transformers_weights_error)

KINDS = ("pickscore", "clip_score", "hpsv2", "aesthetic")
# the improved-aesthetic-predictor MLP files (christophschuhmann/improved-aesthetic-predictor)
AESTHETIC_HEADS = ("*linearMSE.pth", "*reluMSE.pth")
AESTHETIC_DIMS = (1024, 128, 64, 16)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TOKENIZER_DIR = "tokenizer"
HPS_CHECKPOINTS = ("HPS_v2*.pt",)  # HPS_v2_compressed.pt, HPS_v2.1_compressed.pt, full HPS_v2.pt
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# open_clip's model_configs/ViT-H-14.json: the architecture of HPSv2 / HPSv2.1
VIT_H_14 = {"embed_dim": 1024,
            "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}}
# open_clip options whose computation CLIPModel does not have
UNSUPPORTED_OPEN_CLIP = ("ls_init_value", "attentional_pool", "no_ln_pre", "final_ln_after_pool", "timm_model_name",
                         "hf_model_name", "output_tokens", "attn_pooler_heads", "act_kwargs", "norm_kwargs")


@dataclass
class CLIPScorerConfig:
    kind: str = field(default="clip_score", metadata={"help": "pickscore | clip_score | hpsv2 (see module docstring)"})
    clip_config: dict = field(default_factory=dict, metadata={"help": "the transformers CLIPConfig (to_dict())"})
    image_size: int = field(default=224, metadata={"help": "square input size of the image encoder"})
    image_mean: tuple = field(default=CLIP_MEAN, metadata={"help": "per-channel mean"})
    image_std: tuple = field(default=CLIP_STD, metadata={"help": "per-channel std"})
    max_text_length: int = field(default=77, metadata={"help": "prompts are truncated to this many tokens"})
    clip_score_scale: float = field(default=100.0, metadata={"help": "w of CLIP score = max(w · cos, 0)"})
    open_clip_text: bool = field(default=False, metadata={
        "help": "clean prompts as open_clip's tokenizer does (HTML entities, whitespace)"})
    aesthetic_dims: tuple = field(default=AESTHETIC_DIMS, metadata={
        "help": "hidden widths of the aesthetic MLP (kind aesthetic), its input the projection width"})
    aesthetic_relu: bool = field(default=False, metadata={
        "help": "ReLUs between the aesthetic MLP's layers (the reluMSE predictors; linearMSE has none)"})
    aesthetic_relu_dropout: bool = field(default=False, metadata={
        "help": "the reluMSE predictors' own layout: a ReLU after each hidden linear and a dropout after the "
                "first three (layers.0 / 3 / 6 / 9 / 11); off: one ReLU in each dropout's place (layers.0 … 7)"})


def aesthetic_mlp(in_dim: int, dims: Sequence[int], relu: bool, relu_dropout: bool = False) -> nn.Sequential:
    """The improved-aesthetic-predictor MLP with its module indices. linearMSE (``layers.0`` …
    ``layers.7``): a dropout between the first four linears, the identity at inference; ``relu``
    puts a ReLU in each dropout's place. ``relu_dropout``: the reluMSE files' layout
    (``avaclipmlp_inf_wds-relu.py``): Linear, ReLU, Dropout three times, then Linear, ReLU, Linear
    (``layers.0`` / ``3`` / ``6`` / ``9`` / ``11``) — a ReLU after the fourth linear too."""
    mods: list[nn.Module] = []
    for i, width in enumerate(dims):
        mods.append(nn.Linear(in_dim if i == 0 else dims[i - 1], width))
        if relu_dropout:
            mods.append(nn.ReLU())
            if i < len(dims) - 1:
                mods.append(nn.Identity())  # the dropout, the identity at inference
        elif i < len(dims) - 1:
            mods.append(nn.ReLU() if relu else nn.Identity())
    mods.append(nn.Linear(dims[-1], 1))
    return nn.Sequential(*mods)


class CLIPScorer(ImageScorer):
    """PickScore / HPSv2 / CLIP score on a transformers ``CLIPModel``; see the module docstring."""

    model_type = "clip_scorer"
    config_class = CLIPScorerConfig

    def __init__(self, config: CLIPScorerConfig, tokenizer: Any = None, clip_model: Optional[nn.Module] = None):
        """``clip_model``: a loaded ``CLIPModel`` (default: a fresh one from ``config.clip_config``)."""
        super().__init__()
        from transformers import CLIPConfig, CLIPModel

        if config.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {config.kind!r}")
        if tokenizer is None:
            raise ValueError("CLIPScorer needs the CLIP tokenizer")
        self.config, self.tokenizer = config, tokenizer
        if clip_model is None:
            with quiet_transformers():
                clip_model = CLIPModel(CLIPConfig(**config.clip_config))
        self.model = clip_model
        # prompts are cut at the text tower's positions too: a CLIP whose text context is under 77 tokens (a
        # small or distilled CLIP) would fail inside transformers on a long prompt instead of truncating it
        positions = getattr(getattr(clip_model.config, "text_config", None), "max_position_embeddings", None)
        self.text_limit = min(config.max_text_length, positions) if isinstance(positions, int) and positions > 0 \
            else config.max_text_length
        if config.kind == "aesthetic":
            self.aesthetic = nn.Module()
            self.aesthetic.layers = aesthetic_mlp(self.model.config.projection_dim, config.aesthetic_dims,
                                                  config.aesthetic_relu, config.aesthetic_relu_dropout)

    # ------------------------------------------------------------------ scoring
    def _tokenize(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.config.open_clip_text:  # open_clip's basic_clean / whitespace_clean (ftfy aside)
            prompts = [re.sub(r"\s+", " ", html.unescape(html.unescape(p)).strip()).strip() for p in prompts]
        tok = tokenize_truncating(self.tokenizer, list(prompts), self.text_limit)
        return {k: tok[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def embeddings(self, prompts: Sequence[str], pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised projected text embeddings (one per prompt) and image embeddings ``[B, E]``."""
        unique = list(dict.fromkeys(prompts))  # each distinct prompt encoded once
        index = torch.tensor([unique.index(p) for p in prompts], device=pixel_values.device)
        m = self.model
        text = m.text_projection(m.text_model(**self._tokenize(unique)).pooler_output)  # (U, E)
        image = m.visual_projection(m.vision_model(pixel_values=pixel_values).pooler_output)  # (B, E)
        return F.normalize(text, dim=-1)[index], F.normalize(image, dim=-1)

    @property
    def uses_prompt(self) -> bool:
        return self.config.kind != "aesthetic"  # the aesthetic MLP reads the image embedding alone

    def reward(self, prompts: Sequence[str], pixel_values: torch.Tensor) -> torch.Tensor:
        if self.config.kind == "aesthetic":  # the prompt plays no part
            m = self.model
            image = m.visual_projection(m.vision_model(pixel_values=pixel_values).pooler_output)  # (B, E)
            return self.aesthetic.layers(F.normalize(image, dim=-1))[:, 0]
        t, i = self.embeddings(prompts, pixel_values)
        cos = (t * i).sum(-1)  # (B,)
        if self.config.kind == "pickscore":
            return self.model.logit_scale.exp() * cos
        if self.config.kind == "clip_score":
            return (self.config.clip_score_scale * cos).clamp(min=0)
        return cos

    def pixel_batch(self, images: Sequence[Any], wheres: Sequence[str]) -> torch.Tensor:
        """Images as given -> normalised ``[B, 3, S, S]`` as the official code preprocesses them (see
        the module docstring); HPSv2's and differentiable inputs go through :meth:`pixel_values`."""
        c, p = self.config, next(self.parameters())
        if c.kind == "hpsv2":
            return super().pixel_batch(images, wheres)
        official = lambda ims, ws: shortest_edge_crop_batch(  # noqa: E731
            ims, ws, c.image_size, "floor", c.image_mean, c.image_std).to(p.device, p.dtype)
        return split_by_grad(images, wheres, official, super().pixel_batch)

    def pixel_values(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Float ``[3, H, W]`` images in [0, 1] -> normalised ``[B, 3, S, S]``, differentiable: HPSv2's
        ResizeMaxSize exactly, CLIP's resize + crop in torch (a PIL resize cannot carry a gradient)."""
        c, p = self.config, next(self.parameters())
        resize = (lambda im: longest_edge_pad(im, c.image_size)) if c.kind == "hpsv2" else \
            (lambda im: resize_center_crop(im.unsqueeze(0), c.image_size)[0])
        x = [normalise(resize(im.to(p.device, torch.float32)), c.image_mean, c.image_std) for im in images]
        return torch.stack(x).to(p.dtype)

    # ------------------------------------------------------------------ save / load
    def _save(self, folder: str, state_dict: Optional[dict] = None) -> None:
        self.tokenizer.save_pretrained(os.path.join(folder, TOKENIZER_DIR))
        return super()._save(folder, state_dict)

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device) -> "CLIPScorer":
        from transformers import AutoTokenizer

        require_assets(folder, {TOKENIZER_DIR: "the CLIP tokenizer"})
        model = cls(config_from_dict(CLIPScorerConfig, body.get("config", {}), cls.model_type),
                    AutoTokenizer.from_pretrained(os.path.join(folder, TOKENIZER_DIR), trust_remote_code=False))
        load_state_strict(model, load_weights(folder), folder)
        return model


# ------------------------------------------------------------------ tokenizers
def _byte_symbols() -> list[str]:
    """GPT-2 / CLIP byte-level BPE: the printable character that stands for each byte 0..255, in the
    order CLIP's vocabulary lists them (printable Latin-1 bytes keep their character, the rest map to
    256, 257, …)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    chars = {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}
    return [chars[b] for b in keep] + [chars[b] for b in range(256) if b not in keep]


def _bpe_tokenizer(path: str):
    """transformers' CLIPTokenizer from open_clip's ``bpe_simple_vocab_16e6.txt.gz`` (the vocabulary
    open_clip's SimpleTokenizer builds: bytes, bytes + ``</w>``, the first 48 894 merges, start / end)."""
    from transformers import CLIPTokenizer

    try:
        lines = gzip.open(path).read().decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read the CLIP BPE vocabulary {path}: {e}") from e
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    byte_chars = _byte_symbols()
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges)


def _installed_open_clip_bpe() -> Optional[str]:
    import importlib.util

    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], BPE_FILE)
    return path if os.path.isfile(path) else None


def clip_tokenizer(folder: str):
    """The CLIP tokenizer of a folder: transformers files (``tokenizer.json`` / ``vocab.json`` +
    ``merges.txt``), open_clip's BPE file in the folder, or the one of an installed open_clip."""
    from transformers import AutoTokenizer, CLIPTokenizer

    if os.path.isfile(os.path.join(folder, "tokenizer.json")) or os.path.isfile(os.path.join(folder, "merges.txt")):
        try:
            if os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
                return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
            return CLIPTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{folder}: cannot load the CLIP tokenizer: {e}") from e
    bpe = os.path.join(folder, BPE_FILE)
    bpe = bpe if os.path.isfile(bpe) else _installed_open_clip_bpe()
    if bpe is None:
        raise CheckpointError(f"{folder} has no CLIP tokenizer: put vocab.json + merges.txt (e.g. from "
                              f"laion/CLIP-ViT-H-14-laion2B-s32B-b79K) or open_clip's {BPE_FILE} next to the weights")
    return _bpe_tokenizer(bpe)


# ------------------------------------------------------------------ open_clip weights -> CLIPModel
def clip_config_from_open_clip(cfg: dict, where: str) -> dict:
    """A transformers ``CLIPConfig`` dict for an open_clip ``model_cfg`` (plain ViT towers only)."""
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    unsupported = sorted(k for k in UNSUPPORTED_OPEN_CLIP if vision.get(k) or text.get(k) or cfg.get(k))
    if unsupported or text.get("pool_type", "argmax") != "argmax" or vision.get("pool_type", "tok") != "tok":
        raise CheckpointError(f"{where}: open_clip options {unsupported or ['pool_type']} are not supported "
                              "(CLIPModel has plain ViT towers with CLS / end-of-text pooling)")
    try:
        act = "quick_gelu" if cfg.get("quick_gelu") else "gelu"
        width_v, width_t, vocab = int(vision["width"]), int(text["width"]), int(text.get("vocab_size", 49408))
        return {"projection_dim": int(cfg["embed_dim"]),
                "vision_config": {"hidden_size": width_v, "num_hidden_layers": int(vision["layers"]),
                                  "num_attention_heads": width_v // int(vision.get("head_width", 64)),
                                  "intermediate_size": int(width_v * vision.get("mlp_ratio", 4.0)),
                                  "image_size": int(vision["image_size"]), "patch_size": int(vision["patch_size"]),
                                  "hidden_act": act, "layer_norm_eps": 1e-5},
                "text_config": {"hidden_size": width_t, "num_hidden_layers": int(text["layers"]),
                                "num_attention_heads": int(text["heads"]),
                                "intermediate_size": int(width_t * text.get("mlp_ratio", 4.0)),
                                "max_position_embeddings": int(text.get("context_length", 77)),
                                "vocab_size": vocab, "hidden_act": act, "layer_norm_eps": 1e-5,
                                # open_clip pools at the highest id, end-of-text, the last of the vocabulary
                                "bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": vocab - 1}}
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: incomplete open_clip model_cfg ({type(e).__name__}: {e})") from e


def _tower(state: dict, src: str, dst: str, layers: int, out: dict) -> None:
    """open_clip ``resblocks`` -> CLIPModel ``encoder.layers`` (the fused in_proj split into q / k / v)."""
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i in range(layers):
        a, b = f"{src}.resblocks.{i}", f"{dst}.encoder.layers.{i}"
        for old, new in names.items():
            for p in ("weight", "bias"):
                out[f"{b}.{new}.{p}"] = state[f"{a}.{old}.{p}"]
        for p in ("weight", "bias"):
            for name, part in zip("qkv", state[f"{a}.attn.in_proj_{p}"].chunk(3)):
                out[f"{b}.self_attn.{name}_proj.{p}"] = part


def clip_state_from_open_clip(state: dict, layers_vision: int, layers_text: int, path: str) -> dict[str, torch.Tensor]:
    """open_clip (OpenAI CLIP) tensor names -> CLIPModel's (``model.`` prefix); errors name missing tensors."""
    needed = ["positional_embedding", "text_projection", "logit_scale", "token_embedding.weight", "ln_final.weight",
              "visual.class_embedding", "visual.positional_embedding", "visual.conv1.weight", "visual.ln_pre.weight",
              "visual.ln_post.weight", "visual.proj"]
    needed += [f"{t}resblocks.{n - 1}.attn.in_proj_weight" for t, n in (("visual.transformer.", layers_vision),
                                                                         ("transformer.", layers_text))]
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not an open_clip CLIP state dict matching its config: missing {missing[:4]} "
                              f"(top-level names present: {sorted({k.split('.')[0] for k in state})[:8]})")
    for tower, layers in (("transformer.", layers_text), ("visual.transformer.", layers_vision)):
        stored = {int(k[len(tower) + len("resblocks."):].split(".")[0]) for k in state
                  if k.startswith(tower + "resblocks.") and k[len(tower) + len("resblocks."):].split(".")[0].isdigit()}
        if stored and max(stored) + 1 != layers:
            # converting only the first `layers` blocks would score with a truncated tower, silently
            raise CheckpointError(f"{path} holds {max(stored) + 1} {tower}resblocks but its model config has {layers} "
                                  "layers: the weights and open_clip config are of different models")
    try:
        out = _open_clip_names(state)
        _tower(state, "transformer", "text_model", layers_text, out)
        _tower(state, "visual.transformer", "vision_model", layers_vision, out)
    except KeyError as e:
        raise CheckpointError(f"{path}: missing open_clip tensor {e.args[0]!r}") from None
    return {f"model.{k}": v.contiguous() for k, v in out.items()}


def _open_clip_names(state: dict) -> dict[str, torch.Tensor]:
    """The tensors outside the transformer blocks, under CLIPModel's names."""
    return {"text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
            "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
            "text_model.final_layer_norm.weight": state["ln_final.weight"],
            "text_model.final_layer_norm.bias": state["ln_final.bias"],
            "text_projection.weight": state["text_projection"].t(),
            "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
            "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
            "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
            "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
            "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
            "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
            "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
            "visual_projection.weight": state["visual.proj"].t(), "logit_scale": state["logit_scale"]}


def _with_buffers(model: CLIPScorer, state: dict) -> dict:
    """CLIPModel's ``position_ids`` buffers, which open_clip checkpoints do not carry."""
    return {**{k: v for k, v in model.state_dict().items() if k.endswith("position_ids")}, **state}


def _open_clip_scorer(folder: str, state: dict, model_cfg: dict, kind: str, path: str, preprocess: dict,
                      device: Any, dtype: Any) -> CLIPScorer:
    clip_config = clip_config_from_open_clip(model_cfg, path)
    converted = clip_state_from_open_clip(state, clip_config["vision_config"]["num_hidden_layers"],
                                          clip_config["text_config"]["num_hidden_layers"], path)
    config = CLIPScorerConfig(kind=kind, clip_config=clip_config,
                              image_size=clip_config["vision_config"]["image_size"],
                              image_mean=tuple(preprocess.get("mean", CLIP_MEAN)),
                              image_std=tuple(preprocess.get("std", CLIP_STD)),
                              max_text_length=clip_config["text_config"]["max_position_embeddings"],
                              open_clip_text=True)
    model = CLIPScorer(config, clip_tokenizer(folder))
    converted = {k: v.float() for k, v in _with_buffers(model, converted).items()}
    load_state_strict(model, converted, folder)
    return finish_loading(model, resolve_device(device), resolve_dtype(dtype))


def _open_clip_config(folder: str) -> tuple[Optional[dict], dict]:
    """``(model_cfg or None, preprocess_cfg)`` of a folder's ``open_clip_config.json``, if it has one."""
    path = os.path.join(folder, "open_clip_config.json")
    if not os.path.isfile(path):
        return None, {}
    body = read_json(path, "open_clip's model and preprocessing config")
    model_cfg = body.get("model_cfg")
    if not isinstance(model_cfg, dict):
        raise CheckpointError(f"{path} has no model_cfg object")
    return model_cfg, body.get("preprocess_cfg") or {}


# ------------------------------------------------------------------ the layouts
def _hps_checkpoints(folder: str) -> list[str]:
    return sorted(p for pattern in HPS_CHECKPOINTS for p in glob.glob(os.path.join(folder, pattern)))


def _hps_checkpoint(folder: str, checkpoint: Optional[str] = None) -> str:
    """The HPS checkpoint to load: the folder's only one, or ``checkpoint`` (a file name in it). Several and
    no choice is an error: xswu/HPSv2 holds HPS_v2_compressed.pt and HPS_v2.1_compressed.pt (and so does a
    hub cache that hpsv2 filled for both versions), two models whose scores differ."""
    found = _hps_checkpoints(folder)
    names = [os.path.basename(p) for p in found]
    if checkpoint is not None:
        if not isinstance(checkpoint, str) or os.path.basename(checkpoint) not in names:
            raise CheckpointError(f"{folder}: checkpoint={checkpoint!r} is not one of its HPS checkpoints {names}")
        return os.path.join(folder, os.path.basename(checkpoint))
    if len(found) > 1:
        raise CheckpointError(f"{folder} holds {len(found)} HPS checkpoints ({', '.join(names)}), different models "
                              f"(HPSv2.0 / HPSv2.1): pass mmreward.load(folder, checkpoint={names[0]!r}), or keep the "
                              "one to score with in a folder of its own")
    return found[0]


def is_hpsv2(folder: str, config: Optional[dict]) -> bool:
    return bool(_hps_checkpoints(folder))


def load_hpsv2(folder: str, *, device: Any = "cpu", dtype: Any = None, checkpoint: Optional[str] = None) -> CLIPScorer:
    """HPSv2 / HPSv2.1: ``HPS_v2*.pt`` (``{"state_dict": open_clip CLIP}``, read tensors-only), ViT-H-14
    unless ``open_clip_config.json`` says otherwise; ``checkpoint`` names the file where the folder holds
    several (xswu/HPSv2 has both versions)."""
    path = _hps_checkpoint(folder, checkpoint)
    model_cfg, preprocess = _open_clip_config(folder)
    return _open_clip_scorer(folder, read_torch_state(path, "state_dict"), model_cfg or VIT_H_14, "hpsv2", path,
                             preprocess, device, dtype)


def is_open_clip(folder: str, config: Optional[dict]) -> bool:
    return os.path.isfile(os.path.join(folder, "open_clip_config.json")) and any(
        os.path.isfile(os.path.join(folder, w)) for w in OPEN_CLIP_WEIGHTS)


def load_open_clip(folder: str, *, device: Any = "cpu", dtype: Any = None, kind: str = "clip_score") -> CLIPScorer:
    """An open_clip hub folder as a CLIP-score scorer (``kind`` overrides)."""
    model_cfg, preprocess = _open_clip_config(folder)
    path = next(os.path.join(folder, w) for w in OPEN_CLIP_WEIGHTS if os.path.isfile(os.path.join(folder, w)))
    return _open_clip_scorer(folder, read_weight_file(path), model_cfg, kind, path, preprocess, device, dtype)


def is_hf_clip(folder: str, config: Optional[dict]) -> bool:
    return bool(config) and config.get("model_type") == "clip"


def _aesthetic_head(folder: str) -> Optional[str]:
    found = sorted(p for pattern in AESTHETIC_HEADS for p in glob.glob(os.path.join(folder, pattern)))
    if len(found) > 1:
        raise CheckpointError(f"{folder} holds {len(found)} aesthetic predictor files ({', '.join(map(os.path.basename, found))}): "
                              "keep the one to score with")
    return found[0] if found else None


def _read_aesthetic_head(path: str) -> dict:
    """The MLP's tensors (a ``torch.save`` state dict, read tensors-only), without a ``module.`` prefix."""
    return {k.removeprefix("module."): v for k, v in read_torch_state(path).items()}


def _relu_dropout_layout(state: dict) -> bool:
    """Whether an MLP state dict has the reluMSE files' Linear-ReLU-Dropout layout (``layers.3`` is the
    second linear) rather than the linearMSE one (``layers.2``)."""
    return "layers.3.weight" in state and "layers.2.weight" not in state


def _load_aesthetic_head(model: CLIPScorer, path: str, state: dict) -> None:
    """The MLP's tensors (read by :func:`_read_aesthetic_head`) into ``model.aesthetic``."""
    want = model.aesthetic.state_dict()
    if set(state) != set(want) or any(state[k].shape != want[k].shape for k in want):
        got = {k: tuple(v.shape) for k, v in state.items()}
        raise CheckpointError(f"{path} is not an aesthetic MLP for this CLIP (projection width "
                              f"{model.model.config.projection_dim}): expected {sorted(want)} with shapes "
                              f"{[tuple(want[k].shape) for k in sorted(want)][:2]}…, got {dict(list(got.items())[:4])}")
    model.aesthetic.load_state_dict({k: v.float() for k, v in state.items()})


def _repo_name(folder: str) -> str:
    """The name a folder goes by: its own, or, for a hub-cache snapshot (``…/models--org--name/snapshots/<commit>``,
    which ``snapshot_download`` and ``mmreward.load("org/name")`` give), the repository's."""
    path = os.path.abspath(folder)
    parent, grand = os.path.dirname(path), os.path.dirname(os.path.dirname(path))
    if os.path.basename(parent) == "snapshots" and os.path.basename(grand).startswith("models--"):
        return os.path.basename(grand)
    return os.path.basename(path)


def _kind_from_name(folder: str, config: dict) -> str:
    names = f"{_repo_name(folder)} {config.get('_name_or_path', '')}".lower()
    return "pickscore" if "pickscore" in names else "clip_score"


def _hf_preprocessing(folder: str) -> dict:
    """image_size / mean / std from a transformers ``preprocessor_config.json``."""
    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.lexists(path):  # PickScore's README takes its processor from the CLIP it was trained from
        raise CheckpointError(f"{folder} has no preprocessor_config.json (the CLIP image processor settings: image "
                              "size, mean / std): put the one of the CLIP it was trained from next to the weights "
                              "(PickScore_v1: laion/CLIP-ViT-H-14-laion2B-s32B-b79K's, as its README loads)")
    pre = read_json(path, "the CLIP image processor settings")
    crop = pre.get("crop_size", pre.get("size"))
    crop = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
    size = pre.get("size")
    size = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
    if not crop or size != crop:
        raise CheckpointError(f"{folder}/preprocessor_config.json: resize {size} and crop {crop} must be equal "
                              "(CLIP's shortest-edge resize + square centre crop)")
    return {"image_size": int(crop), "image_mean": tuple(pre.get("image_mean", CLIP_MEAN)),
            "image_std": tuple(pre.get("image_std", CLIP_STD))}


def load_hf_clip(folder: str, *, device: Any = "cpu", dtype: Any = None, kind: Optional[str] = None) -> CLIPScorer:
    """A transformers ``CLIPModel`` folder as PickScore, CLIP score or, with an aesthetic predictor
    MLP file in it, the LAION aesthetic score (see the module docstring)."""
    from safetensors import SafetensorError
    from transformers import CLIPModel

    config = read_json(os.path.join(folder, "config.json"))
    head = _aesthetic_head(folder)
    kind = kind or ("aesthetic" if head else _kind_from_name(folder, config))
    if kind == "aesthetic" and head is None:
        raise CheckpointError(f"{folder} has no aesthetic predictor MLP ({' / '.join(AESTHETIC_HEADS)}) for kind "
                              "'aesthetic'")
    pre = _hf_preprocessing(folder)
    try:
        with quiet_transformers():
            clip, info = CLIPModel.from_pretrained(folder, dtype=torch.float32, output_loading_info=True,
                                                   ignore_mismatched_sizes=True)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError, SafetensorError) as e:
        # a truncated / Git LFS pointer safetensors file, a pytorch_model.bin holding code: named, with what to do
        raise transformers_weights_error(folder, "CLIP", e) from e
    refuse_mismatched(info, folder, "CLIPModel")
    if info.get("missing_keys"):
        raise CheckpointError(f"{folder}: the weights lack {len(info['missing_keys'])} CLIPModel tensor(s), e.g. "
                              f"{sorted(info['missing_keys'])[:4]}")
    relu = kind == "aesthetic" and "relu" in os.path.basename(head).lower()
    head_state = _read_aesthetic_head(head) if kind == "aesthetic" else {}
    # a reluMSE file as improved-aesthetic-predictor saves it: ReLU + dropout modules (layers.0 / 3 / 6 / 9 / 11)
    relu_dropout = relu and _relu_dropout_layout(head_state)
    config = CLIPScorerConfig(kind=kind, clip_config=clip.config.to_dict(), aesthetic_relu=relu,
                              aesthetic_relu_dropout=relu_dropout, **pre)
    model = CLIPScorer(config, clip_tokenizer(folder), clip)
    if kind == "aesthetic":
        _load_aesthetic_head(model, head, head_state)
    return finish_loading(model, resolve_device(device), resolve_dtype(dtype))


__all__ = ["CLIPScorer", "CLIPScorerConfig", "KINDS", "clip_tokenizer", "clip_config_from_open_clip",
           "clip_state_from_open_clip", "is_hpsv2", "load_hpsv2", "is_open_clip", "load_open_clip", "is_hf_clip",
           "load_hf_clip"]

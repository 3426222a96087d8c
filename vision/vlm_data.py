"""Shared pieces of the VLM reward models (:mod:`.vlm_rm`, :mod:`.visual_prm`): image loading,
conversations → chat messages → model inputs, the transformers backbone (build, freeze, rebuild from
JSON), a small Qwen2-VL-style processor that works offline, and exactly-labelled colour data.

Processors: anything with the transformers processor interface works —
``apply_chat_template(messages, tokenize=False, add_generation_prompt=...) -> str`` and
``__call__(text=[...], images=[...] | None, return_tensors="pt", padding=True) -> dict`` (e.g.
``AutoProcessor.from_pretrained(local_path)``). :class:`SimpleVLMProcessor` is that interface built
from a Qwen2-VL image processor and any fast tokenizer: it expands ``<|image_pad|>`` to one token per
merged patch itself, because ``Qwen2VLProcessor`` cannot be constructed without torchvision
(transformers 5.24 looks up the video-processor class).

transformers is imported inside functions only: ``import mmreward.vision`` stays light.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import torch

IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
SPECIAL_TOKENS = ["[UNK]", "<|pad|>", "<|im_start|>", "<|im_end|>", VISION_START, VISION_END, IMAGE_TOKEN, VIDEO_TOKEN]
# Qwen2-VL's chat format (ChatML with vision tokens); content is a string or a list of parts.
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}


# ------------------------------------------------------------------ images and conversations
def load_image(img: Any, what: str = "image"):
    """PIL image, path, uint8 array ``(H, W, 3)`` or tensor ``(3, H, W)`` (float in [0, 1] or uint8) → RGB PIL."""
    from PIL import Image

    if isinstance(img, Image.Image):
        return img.convert("RGB")
    if isinstance(img, (str, os.PathLike)):
        if not os.path.exists(img):
            raise ValueError(f"{what}: file {os.fspath(img)!r} does not exist")
        return Image.open(img).convert("RGB")
    if isinstance(img, torch.Tensor):
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"{what}: image tensor must be (3, H, W), got {tuple(img.shape)}")
        if img.is_floating_point():
            if not bool(torch.isfinite(img).all()):
                raise ValueError(f"{what}: image tensor has NaN / inf values")
            img = (img.detach().clamp(0, 1) * 255).round().to(torch.uint8)
        img = img.permute(1, 2, 0).cpu().numpy()
    if isinstance(img, np.ndarray):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"{what}: image array must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
        return Image.fromarray(img)
    raise TypeError(f"{what}: expected a PIL image, path, uint8 array or tensor, got {type(img).__name__}")


def row_images(row: dict, i: int) -> list:
    """The images of a data row: ``images`` (list) or ``image`` (one), possibly none."""
    imgs = row.get("images", row.get("image"))
    if imgs is None:
        return []
    if not isinstance(imgs, (list, tuple)):
        imgs = [imgs]
    return [load_image(im, f"row {i} image {j}") for j, im in enumerate(imgs)]


def to_messages(conversation: Sequence[dict], n_images: int, what: str) -> list[dict]:
    """``[{"role"|"from", "content"|"value"}]`` → chat messages with the images at the start of the
    first user turn (Skywork-VL / IXC-2.5 layout)."""
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise ValueError(f"{what}: conversation must be a non-empty list of turns, got {conversation!r:.80}")
    out, placed = [], n_images == 0
    for t, turn in enumerate(conversation):
        if not isinstance(turn, dict):
            raise TypeError(f"{what} turn {t}: expected a dict with role/content, got {type(turn).__name__}")
        role = ROLES.get(turn.get("role", turn.get("from")))
        text = turn.get("content", turn.get("value"))
        if role is None:
            raise ValueError(f"{what} turn {t}: unknown role {turn.get('role', turn.get('from'))!r} (use {sorted(ROLES)})")
        if not isinstance(text, str):
            raise ValueError(f"{what} turn {t}: content must be a string, got {type(text).__name__}")
        if role == "user" and not placed:
            out.append({"role": role, "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]})
            placed = True
        else:
            out.append({"role": role, "content": text})
    if not placed:
        raise ValueError(f"{what}: {n_images} image(s) but no user turn to put them in")
    return out


def encode(processor, texts: list[str], images: list[list]) -> dict[str, torch.Tensor]:
    """Rendered texts + per-text image lists → padded model inputs (one processor call)."""
    flat = [im for ims in images for im in ims]
    out = processor(text=texts, images=flat or None, return_tensors="pt", padding=True)
    return {k: v for k, v in dict(out).items() if isinstance(v, torch.Tensor)}


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last attended token of each row (works for left and right padding)."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (B, T), got {tuple(attention_mask.shape)}")
    m = attention_mask.bool()
    empty = (~m.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty} have no attended token")
    pos = torch.arange(m.shape[1], device=m.device).expand_as(m)
    return torch.where(m, pos, -1).max(dim=1).values


# ------------------------------------------------------------------ backbone
def build_backbone(spec: Any):
    """transformers ``PretrainedConfig`` → fresh base model; local path → ``AutoModel.from_pretrained``
    (the LM head of an ``…ForConditionalGeneration`` checkpoint is dropped); ``nn.Module`` → itself
    (its ``.model`` if it carries an ``lm_head``)."""
    from transformers import AutoModel, PretrainedConfig

    if isinstance(spec, PretrainedConfig):
        return AutoModel.from_config(spec)
    if isinstance(spec, (str, os.PathLike)):
        if not os.path.isdir(spec):
            raise ValueError(f"backbone path {os.fspath(spec)!r} is not a local folder (hub downloads are not used)")
        return AutoModel.from_pretrained(spec)
    if isinstance(spec, torch.nn.Module):
        return spec.model if hasattr(spec, "lm_head") and hasattr(spec, "model") else spec
    raise TypeError(f"backbone must be a transformers config, a local path or an nn.Module, got {type(spec).__name__}")


def backbone_from_dict(data: dict):
    """Rebuild a backbone (random weights) from ``config.to_dict()`` as stored in config.json."""
    from transformers import AutoConfig, AutoModel

    data = dict(data)
    model_type = data.pop("model_type", None)
    if not model_type:
        raise ValueError("stored backbone config has no model_type")
    return AutoModel.from_config(AutoConfig.for_model(model_type, **data))


def hidden_size(backbone) -> int:
    cfg = backbone.config
    text = getattr(cfg, "text_config", None)
    h = getattr(text, "hidden_size", None) or getattr(cfg, "hidden_size", None)
    if not h:
        raise ValueError(f"cannot find the hidden size in {type(cfg).__name__}")
    return int(h)


def _find(module, names):
    for n in names:
        sub = getattr(module, n, None)
        if isinstance(sub, torch.nn.Module):
            return sub
    return None


def freeze_vision(backbone, *, vision_tower: bool, projector: bool) -> None:
    """Freeze the vision encoder and / or the vision→language projector (Qwen2-VL: ``visual`` and
    its ``merger``; LLaVA-style: ``vision_tower`` and ``multi_modal_projector``)."""
    tower = _find(backbone, ("visual", "vision_tower", "vision_model"))
    proj = _find(tower, ("merger",)) if tower is not None else None
    proj = proj or _find(backbone, ("multi_modal_projector", "mm_projector"))
    if vision_tower:
        if tower is None:
            raise ValueError(f"{type(backbone).__name__} has no vision tower (visual / vision_tower / vision_model)")
        keep = {id(p) for p in proj.parameters()} if proj is not None else set()
        for p in tower.parameters():
            if id(p) not in keep:
                p.requires_grad_(False)
    if projector:
        if proj is None:
            raise ValueError(f"{type(backbone).__name__} has no projector (merger / multi_modal_projector)")
        for p in proj.parameters():
            p.requires_grad_(False)


# ------------------------------------------------------------------ offline Qwen2-VL-style processor
class SimpleVLMProcessor:
    """Qwen2-VL processor interface from an image processor + fast tokenizer (see module docstring)."""

    def __init__(self, tokenizer, image_processor, chat_template: str = QWEN_CHAT_TEMPLATE):
        import jinja2

        self.tokenizer, self.image_processor, self.chat_template = tokenizer, image_processor, chat_template
        self._template = jinja2.Environment().from_string(chat_template)
        self.merge = int(getattr(image_processor, "merge_size", 2))
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {IMAGE_TOKEN} token")

    def apply_chat_template(self, messages, tokenize: bool = False, add_generation_prompt: bool = False, **_) -> str:
        if tokenize:
            raise ValueError("SimpleVLMProcessor.apply_chat_template only renders text (tokenize=False)")
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt)

    def __call__(self, text, images=None, return_tensors: str = "pt", padding: bool = True, **_) -> dict:
        texts = [text] if isinstance(text, str) else list(text)
        out: dict[str, torch.Tensor] = {}
        n_slots = sum(t.count(IMAGE_TOKEN) for t in texts)
        if n_slots != (len(images) if images else 0):
            raise ValueError(f"{n_slots} {IMAGE_TOKEN} slots in the texts but {len(images) if images else 0} images")
        if images:
            vis = self.image_processor(images=list(images), return_tensors="pt")
            out["pixel_values"], out["image_grid_thw"] = vis["pixel_values"], vis["image_grid_thw"]
            counts = (vis["image_grid_thw"].prod(-1) // self.merge**2).tolist()
            k, expanded = 0, []
            for t in texts:  # one <|image_pad|> per merged patch, in image order
                parts = t.split(IMAGE_TOKEN)
                s = parts[0]
                for p in parts[1:]:
                    s += IMAGE_TOKEN * int(counts[k]) + p
                    k += 1
                expanded.append(s)
            texts = expanded
        tok = self.tokenizer(texts, return_tensors="pt", padding=padding, add_special_tokens=False)
        out["input_ids"], out["attention_mask"] = tok["input_ids"], tok["attention_mask"]
        out["mm_token_type_ids"] = (tok["input_ids"] == self.image_token_id).long()  # M-RoPE needs it
        return out

    def save_pretrained(self, folder: str) -> None:
        from mmreward.core.checkpoint import atomic_write_text

        os.makedirs(folder, exist_ok=True)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        atomic_write_text(os.path.join(folder, "simple_processor.json"), json.dumps({"chat_template": self.chat_template}))

    @classmethod
    def from_pretrained(cls, folder: str) -> "SimpleVLMProcessor":
        from transformers import PreTrainedTokenizerFast
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        with open(os.path.join(folder, "simple_processor.json"), encoding="utf-8") as f:
            meta = json.load(f)
        return cls(PreTrainedTokenizerFast.from_pretrained(folder), Qwen2VLImageProcessorPil.from_pretrained(folder),
                   meta["chat_template"])


def save_processor(processor, folder: str) -> None:
    if processor is not None and hasattr(processor, "save_pretrained"):
        processor.save_pretrained(folder)


def load_processor(folder: str):
    """The processor saved next to a model (``None`` if there is none)."""
    if not os.path.isdir(folder):
        return None
    if os.path.exists(os.path.join(folder, "simple_processor.json")):
        return SimpleVLMProcessor.from_pretrained(folder)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


def tiny_processor(words: Sequence[str], image_size: int = 56) -> SimpleVLMProcessor:
    """Word-level tokenizer over ``words`` + ChatML / vision specials, and a Qwen2-VL image processor
    resizing to about ``image_size``² pixels (patch 14, merge 2) — for tests and demos."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    base = ["user", "assistant", "system", "+", "-", "<", ">", "/", "think", "answer", "0", "1", "2", "3", "4", "5"]
    tok.train_from_iterator([" ".join(base + list(words))], trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", unk_token="[UNK]")
    fast.padding_side = "right"
    px = image_size * image_size
    ip = Qwen2VLImageProcessorPil(min_pixels=px, max_pixels=px, patch_size=14, merge_size=2, temporal_patch_size=2)
    return SimpleVLMProcessor(fast, ip)


def tiny_qwen2vl_config(processor, hidden: int = 32, layers: int = 2, heads: int = 4, vision_dim: int = 32):
    """A few-ten-thousand-parameter ``Qwen2VLConfig`` matching ``processor``'s vocabulary."""
    from transformers import Qwen2VLConfig

    tok = processor.tokenizer
    head_dim = hidden // heads
    q = head_dim // 2  # M-RoPE splits head_dim / 2 rotary frequencies over (t, h, w)
    section = [q - 2 * (q // 3), q // 3, q // 3]
    return Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=1024,
                         rope_scaling={"type": "mrope", "mrope_section": section}, bos_token_id=None, eos_token_id=None,
                         pad_token_id=tok.pad_token_id),
        vision_config=dict(depth=1, embed_dim=vision_dim, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN), video_token_id=tok.convert_tokens_to_ids(VIDEO_TOKEN),
        vision_start_token_id=tok.convert_tokens_to_ids(VISION_START), vision_end_token_id=tok.convert_tokens_to_ids(VISION_END),
    )


# ------------------------------------------------------------------ exactly-labelled colour data
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 70), "blue": (50, 90, 230), "yellow": (235, 215, 40)}
COLOUR_WORDS = ["what", "colour", "is", "the", "image", "it", "not", "step", "look", "at", "so", *COLOURS]


def colour_image(colour: str, rng: np.random.Generator, size: int = 56) -> np.ndarray:
    """uint8 (size, size, 3) image whose dominant colour (≥ 75% of pixels) is ``colour``; noisy,
    with one small patch of another colour, so the answer must come from the pixels' majority."""
    img = np.empty((size, size, 3), np.int16)
    img[:] = COLOURS[colour]
    other = COLOURS[rng.choice([c for c in COLOURS if c != colour])]
    s = size // 3
    y, x = rng.integers(0, size - s, 2)
    img[y:y + s, x:x + s] = other
    img += rng.integers(-25, 26, img.shape).astype(np.int16)
    return img.clip(0, 255).astype(np.uint8)


def colour_preference_rows(n: int, seed: int, size: int = 56) -> list[dict]:
    """Pairwise rows: the chosen answer names the image's dominant colour, the rejected one another."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    rows = []
    for _ in range(n):
        c = names[rng.integers(len(names))]
        wrong = names[rng.choice([i for i in range(len(names)) if names[i] != c])]
        q = {"role": "user", "content": "what colour is the image"}
        rows.append({"images": [colour_image(c, rng, size)],
                     "conversations_chosen": [q, {"role": "assistant", "content": f"the image is {c}"}],
                     "conversations_rejected": [q, {"role": "assistant", "content": f"the image is {wrong}"}]})
    return rows


def colour_step_rows(n: int, seed: int, max_steps: int = 3, size: int = 56,
                     colours: Sequence[str] = tuple(COLOURS)) -> list[dict]:
    """VisualPRM rows with exact step labels: each step claims a colour ("so it is red"); it is good
    (label 1.0) iff that is the image's dominant colour. About half the steps are good."""
    rng = np.random.default_rng(seed)
    names = list(colours)
    rows = []
    for _ in range(n):
        c = names[rng.integers(len(names))]
        steps, labels = [], []
        for _k in range(int(rng.integers(1, max_steps + 1))):
            good = bool(rng.random() < 0.5)
            claim = c if good else names[rng.choice([i for i in range(len(names)) if names[i] != c])]
            steps.append(f"look at the image so it is {claim}")
            labels.append(1.0 if good else 0.0)
        rows.append({"images": [colour_image(c, rng, size)], "question": "what colour is the image",
                     "steps": steps, "labels": labels})
    return rows


# ------------------------------------------------------------------ save / load shared by the VLM models
PROCESSOR_DIR = "processor"


class VLMPretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for a VLM model built as ``cls(config, backbone,
    processor)``: ``config.json`` (``model_type``, our dataclass config, the backbone's transformers
    config) + ``model.safetensors`` + ``processor/`` (tokenizer / image-processor JSON). Subclasses set
    ``model_type`` and ``config_class``."""

    model_type: str
    config_class: type

    def save_pretrained(self, folder: str) -> None:
        from mmreward.core.checkpoint import save_model
        from mmreward.core.model import config_to_dict

        save_model(folder, self.state_dict(), {"model_type": self.model_type, "config": config_to_dict(self.config),
                                               "backbone_config": self.backbone.config.to_dict()})
        save_processor(self.processor, os.path.join(folder, PROCESSOR_DIR))

    @classmethod
    def from_pretrained(cls, folder: str, device: str = "cpu"):
        from mmreward.core.checkpoint import CheckpointError, load_model
        from mmreward.core.model import config_from_dict

        state, cfg = load_model(folder, device)
        if cfg.get("model_type") != cls.model_type:
            raise CheckpointError(f"{folder} holds a {cfg.get('model_type')!r} model, not {cls.model_type!r}")
        if not isinstance(cfg.get("backbone_config"), dict):
            raise CheckpointError(f"{folder}/config.json has no backbone_config")
        model = cls(config_from_dict(cls.config_class, cfg.get("config", {}), cls.model_type),
                    backbone_from_dict(cfg["backbone_config"]), load_processor(os.path.join(folder, PROCESSOR_DIR)))
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"weights in {folder} do not match its config: {e}") from e
        return model.to(device).eval()

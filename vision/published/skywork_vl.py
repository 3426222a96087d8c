"""Qwen2-VL / Qwen2.5-VL reward models with a value head — Skywork-VL-Reward's published layout — as
:class:`QwenVLRewardModel`, a :class:`~mmreward.vision.vlm_rm.VLMRewardModel` that also reads videos.

Skywork-VL-Reward-7B is a ``Qwen2_5_VLForConditionalGeneration`` folder (``config.json``, safetensors
shards, tokenizer, ``preprocessor_config.json``, chat template) plus ``value_head.safetensors`` with
TRL's ``ValueHead`` (``v_head.summary.weight`` ``[1, H]`` and ``.bias``). Its model card scores a
conversation as the value head on the final hidden state of the last token of
``apply_chat_template(messages, add_generation_prompt=False)`` — what ``VLMRewardModel`` computes;
the LM head is not used. The processor is :class:`~mmreward.vision.published.qwen_vl.QwenVLProcessor`
(no torchvision).

Inputs:

* :class:`~mmreward.core.inputs.Conversation` — turns ``{"role", "content"}`` where ``content`` is a
  string or Qwen's list of parts (``{"type": "text", "text"}``, ``{"type": "image", "image"}``,
  ``{"type": "video", "video"}``); ``images`` go first in the first user turn. An image part's
  qwen-vl-utils settings (``min_pixels`` / ``max_pixels``, or ``resized_height`` + ``resized_width``)
  size that image as qwen-vl-utils does; other keys on a media part are refused;
* :class:`~mmreward.core.inputs.ImagePrompt` / :class:`~mmreward.core.inputs.VideoPrompt` — the media is
  the answer to the prompt: ``[user: prompt, assistant: image | video]``.

    rm = mmreward.load("Skywork-VL-Reward-7B", dtype="bf16")
    rm.score([Conversation([{"role": "user", "content": "What is shown?"},
                            {"role": "assistant", "content": "A cat."}], ["cat.jpg"])])
"""
from __future__ import annotations

import os
import pickle
from dataclasses import replace
from typing import Any, Optional, Sequence

import torch

from mmreward.core.data import DataError, describe
from mmreward.core.device import resolve_device, resolve_dtype
from mmreward.core.folders import CheckpointError
from mmreward.core.inputs import Conversation, ImagePrompt, VideoPrompt
from mmreward.core.model import finish_loading
from mmreward.core.weights import quiet_transformers, refuse_mismatched

from ..vlm_data import ROLES, name_failing_input, need_reply
from ..vlm_rm import VLMRewardConfig, VLMRewardModel
from .common import transformers_weights_error
from .qwen_vl import IMAGE_SETTINGS, WHITE, QwenImage, QwenVLProcessor, _present, read_video

VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_HEAD_KEYS = ("v_head.summary.weight", "v_head.summary.bias")
QWEN_VL_ARCHITECTURES = ("Qwen2_5_VLForConditionalGeneration", "Qwen2VLForConditionalGeneration")
MEDIA_PARTS = ("image", "video")


# ------------------------------------------------------------------ inputs -> Qwen chat messages
def _parts(content: Any, where: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, (list, tuple)):
        raise DataError(f"{where}: content must be a string or a list of parts, got {describe(content)}")
    out = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image_url" or (kind == "image" and part.get("image") is None and "image_url" in part):
            # Qwen's other spelling of an image part: qwen-vl-utils reads its path / URI string as the image
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) and set(url) == {"url"} else url
            if not isinstance(url, str):
                raise DataError(f"{where} part {k}: an 'image_url' part needs 'image_url': a path, file:// or data: "
                                f"URI (or {{'url': ...}}), got {describe(part.get('image_url'))}")
            part = {**{key: v for key, v in part.items() if key != "image_url"}, "type": "image", "image": url}
            kind = "image"
        if kind == "text" and isinstance(part.get("text"), str):
            out.append(part)
        elif kind in MEDIA_PARTS and part.get(kind) is not None:
            # qwen-vl-utils reads per-image sizes from the part: they are honoured (QwenImage), never dropped
            allowed = ("type", kind) + (IMAGE_SETTINGS if kind == "image" else ())
            extra = sorted(str(key) for key in part if key not in allowed)
            if extra:
                raise DataError(f"{where} part {k}: unsupported key(s) {extra} in a {kind!r} part (mmreward reads "
                                + (f"{', '.join(IMAGE_SETTINGS)} there" if kind == "image" else
                                   "a video's sampling and sizes from the model's video_preprocessor_config.json")
                                + "); remove them")
            if kind == "image" and any(key in part for key in IMAGE_SETTINGS):
                try:
                    QwenImage(None, **{key: part[key] for key in IMAGE_SETTINGS if key in part})
                except ValueError as e:
                    raise DataError(f"{where} part {k}: {e}") from e
            out.append(part)
        else:
            raise DataError(f"{where} part {k}: expected {{'type': 'text', 'text': str}} or {{'type': 'image' | "
                            f"'video', 'image' | 'video': path or pixels}} (or {{'type': 'image_url', 'image_url': "
                            f"path}}), got {describe(part)}")
    return out


def qwen_messages(item: Any, where: str) -> tuple[list[dict], list, list]:
    """``(messages for the chat template, images, videos)`` of one input, media in order of appearance."""
    if isinstance(item, (ImagePrompt, VideoPrompt)):
        kind = "image" if isinstance(item, ImagePrompt) else "video"
        if isinstance(item.prompt, str) and not item.prompt.strip():
            # as the image scorers refuse it: an empty user turn scores the media as the answer to nothing (a
            # forgotten --prompt), a number that looks like a reward
            raise DataError(f"{where}: no prompt: a Qwen-VL reward model scores the {kind} as the answer to its prompt; "
                            "give each input its prompt ('prompt' field, --prompt), or a Conversation")
        media = item.image if kind == "image" else item.video
        turns: list[dict] = [{"role": "user", "content": item.prompt},
                             {"role": "assistant", "content": [{"type": kind, kind: media}]}]
        return _render(turns, where)
    turns, placed = [], not item.images
    for t, turn in enumerate(item.messages):
        if not isinstance(turn, dict):
            raise DataError(f"{where} turn {t}: expected a dict with role / content, got {describe(turn)}")
        role = ROLES.get(turn.get("role", turn.get("from")))
        if role is None:
            raise DataError(f"{where} turn {t}: unknown role {turn.get('role', turn.get('from'))!r} "
                            f"(use {sorted(ROLES)})")
        parts = _parts(turn.get("content", turn.get("value")), f"{where} turn {t}")
        if role == "user" and not placed:
            parts = [{"type": "image", "image": im} for im in item.images] + parts
            placed = True
        turns.append({"role": role, "content": parts})
    if not placed:
        raise DataError(f"{where}: {len(item.images)} image(s) but no user turn to put them in")
    need_reply(turns[-1]["role"], where)
    return _render(turns, where)


def _render(turns: list[dict], where: str) -> tuple[list[dict], list, list]:
    images, videos, messages = [], [], []
    for turn in turns:
        content = turn["content"]
        if isinstance(content, list):
            images += [QwenImage(p["image"], **{k: p[k] for k in IMAGE_SETTINGS if k in p})
                       if any(k in p for k in IMAGE_SETTINGS) else p["image"] for p in content if p["type"] == "image"]
            videos += [p["video"] for p in content if p["type"] == "video"]
            content = [{"type": p["type"]} if p["type"] in MEDIA_PARTS else p for p in content]
        messages.append({"role": turn["role"], "content": content})
    return messages, images, videos


# ------------------------------------------------------------------ the model
class QwenVLRewardModel(VLMRewardModel):
    """A Qwen2-VL / Qwen2.5-VL reward model (``model_type`` ``qwen_vl_reward``) with a
    :class:`QwenVLProcessor`; see the module docstring."""

    model_type = "qwen_vl_reward"
    input_types = (Conversation, ImagePrompt, VideoPrompt)

    def __init__(self, config: VLMRewardConfig, backbone: Any, processor: Optional[QwenVLProcessor] = None):
        if processor is not None and not isinstance(processor, QwenVLProcessor):
            raise TypeError(f"QwenVLRewardModel needs a QwenVLProcessor, got {type(processor).__name__}")
        super().__init__(config, backbone, processor)

    def _reward(self, h_last: torch.Tensor) -> torch.Tensor:
        """TRL's ``ValueHead`` (the model card's scorer) keeps its Linear in float32 and upcasts the hidden
        state to it, whatever the backbone's dtype: so does this, also for a model loaded in bf16 / fp16."""
        bias = self.head.bias.float() if self.head.bias is not None else None
        return torch.nn.functional.linear(h_last.float(), self.head.weight.float(), bias).squeeze(-1)

    def _apply(self, fn: Any, recurse: bool = True) -> "QwenVLRewardModel":
        """``.to(half dtype)`` / ``.half()`` / ``.bfloat16()`` cast the backbone; the head's float32 weights
        stay float32 (TRL's value head, HPSv3's rm_head: the official code keeps them so), on the new
        device. Without this a bf16 load would round the head's weights to bf16."""
        head = self._modules.get("head")
        kept = [p.data for p in head.parameters()] if head is not None and recurse else []
        super()._apply(fn, recurse)
        if kept:
            for p, old in zip(head.parameters(), kept):
                if old.dtype == torch.float32 and p.dtype in (torch.float16, torch.bfloat16):
                    p.data = old.to(device=p.device)
        return self

    def encode(self, items: Sequence[Any], names: Optional[Sequence[str]] = None) -> dict[str, torch.Tensor]:
        """Inputs -> padded model inputs; images and videos are decoded here, errors name ``names[i]``."""
        from ..images import to_pil

        proc = self.need_processor()
        names = names or [f"input {i}" for i in range(len(items))]
        texts, images, videos = [], [], []  # per input
        for item, name in zip(items, names):
            messages, ims, vids = qwen_messages(item, name)
            texts.append(proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))
            images.append([replace(im, image=to_pil(im.image, f"{name} image {j}", WHITE)) if isinstance(im, QwenImage)
                           else to_pil(im, f"{name} image {j}", WHITE) for j, im in enumerate(ims)])
            videos.append([read_video(v, proc.vision, f"{name} video {j}") for j, v in enumerate(vids)])

        def run(idx: Sequence[int]) -> dict[str, torch.Tensor]:
            return proc(text=[texts[k] for k in idx], images=[im for k in idx for im in images[k]],
                        videos=[v for k in idx for v in videos[k]], return_tensors="pt", padding=True)

        return name_failing_input(run, names)


# ------------------------------------------------------------------ the published layout
def _architectures(config: Optional[dict]) -> list[str]:
    archs = (config or {}).get("architectures") or []
    return [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []


def is_skywork_vl(folder: str, config: Optional[dict]) -> bool:
    """A transformers Qwen2-VL / Qwen2.5-VL folder (its value head is checked when loading)."""
    return any(a in QWEN_VL_ARCHITECTURES for a in _architectures(config))


def read_value_head(folder: str, hidden_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight [1, H], bias [1])`` of TRL's value head in ``value_head.safetensors``."""
    from safetensors import safe_open

    path = os.path.join(folder, VALUE_HEAD_FILE)
    if not _present(path):
        raise CheckpointError(f"{folder} has no {VALUE_HEAD_FILE}: a Qwen-VL reward model keeps its value head "
                              f"({' / '.join(VALUE_HEAD_KEYS)}) there; without it the folder is a plain VLM")
    try:
        with safe_open(path, "pt") as f:
            missing = [k for k in VALUE_HEAD_KEYS if k not in f.keys()]
            if missing:
                raise CheckpointError(f"{path} lacks {missing} (has {sorted(f.keys())[:6]})")
            weight, bias = (f.get_tensor(k) for k in VALUE_HEAD_KEYS)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises several types for bad headers
        raise CheckpointError(f"corrupt or unreadable {path}: {e}") from e
    if tuple(weight.shape) != (1, hidden_size) or tuple(bias.shape) != (1,):
        raise CheckpointError(f"{path}: v_head.summary has shapes {tuple(weight.shape)} / {tuple(bias.shape)}, the "
                              f"backbone's hidden size is {hidden_size} (expected (1, {hidden_size}) / (1,))")
    return weight, bias


def load_skywork_vl(folder: str, *, device: Any = "cpu", dtype: Any = None) -> QwenVLRewardModel:
    """Skywork-VL-Reward (or any Qwen2-VL / Qwen2.5-VL folder with ``value_head.safetensors``) as a
    :class:`QwenVLRewardModel`; ``dtype`` None keeps the checkpoint's."""
    from safetensors import SafetensorError
    from transformers import AutoModel

    dev, dt = resolve_device(device), resolve_dtype(dtype)
    if not _present(os.path.join(folder, VALUE_HEAD_FILE)):  # said before the (7B) backbone loads
        raise CheckpointError(f"{folder} has no {VALUE_HEAD_FILE}: a Qwen-VL reward model keeps its value head "
                              f"({' / '.join(VALUE_HEAD_KEYS)}) there; without it the folder is a plain VLM or a "
                              "generative judge that writes its verdict as text (UnifiedReward, a VLM-as-a-judge), "
                              "which mmreward.load does not read")
    processor = QwenVLProcessor.from_pretrained(folder)
    try:
        with quiet_transformers():
            backbone, info = AutoModel.from_pretrained(folder, dtype=dt or "auto", output_loading_info=True,
                                                       ignore_mismatched_sizes=True, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError, SafetensorError) as e:
        # a truncated / Git LFS pointer shard, a pytorch_model.bin holding code: named, with what to do
        raise transformers_weights_error(folder, "Qwen-VL", e) from e
    refuse_mismatched(info, folder, type(backbone).__name__)
    bad = list(info.get("missing_keys", ())) + [str(k) for k in info.get("mismatched_keys", ())]
    if bad:
        raise CheckpointError(f"{folder}: the weights do not hold a complete {type(backbone).__name__}: "
                              f"{len(bad)} tensor(s) missing or mis-shaped, e.g. {sorted(bad)[:4]}")
    model = QwenVLRewardModel(VLMRewardConfig(), backbone, processor)
    weight, bias = read_value_head(folder, model.head.in_features)
    with torch.no_grad():
        model.head.weight.copy_(weight)
        model.head.bias.copy_(bias)
    return finish_loading(model, dev, dt)


__all__ = ["QwenVLRewardModel", "qwen_messages", "is_skywork_vl", "load_skywork_vl", "read_value_head",
           "VALUE_HEAD_FILE"]

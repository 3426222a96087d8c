"""Shared pieces of the VLM reward models (:mod:`.vlm_rm`, :mod:`.visual_prm`): images and
conversations → chat messages → model inputs, the transformers backbone (build, freeze, rebuild from
JSON), and a small Qwen2-VL-style processor that works offline.

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

import dataclasses
import json
import os
import re
from typing import Any, Callable, Optional, Sequence

import torch

from mmreward.core.data import DataError, data_path

from .images import _remote_kind, local_path, to_pil

IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
# LLaVA / InternVL data mark an image's place in a user turn with "<image>": one per image, removed from the
# text (with the line break after it) since the images go at the start of the first user turn
IMAGE_PLACEHOLDER = "<image>"
_PLACEHOLDER_RE = re.compile(r"<image>[ \t]*\n?")
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
def pil_images(images: Any, where: str) -> list:
    """The images of one input (a list, one image, or None for text only) -> RGB PIL images."""
    images = [] if images is None else images if isinstance(images, (list, tuple)) else [images]
    return [to_pil(im, f"{where} image {j}") for j, im in enumerate(images)]


def to_messages(conversation: Sequence[dict], n_images: int, what: str, *, scored: bool = False) -> list[dict]:
    """``[{"role"|"from", "content"|"value"}]`` → chat messages with the images at the start of the
    first user turn (Skywork-VL / IXC-2.5 layout). ``scored``: a reward model scores it, so it must
    end with the assistant's reply (a generation prompt need not)."""
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise DataError(f"{what}: conversation must be a non-empty list of turns, got {conversation!r:.80}")
    out, placed, marks = [], n_images == 0, []
    for t, turn in enumerate(conversation):
        if not isinstance(turn, dict):
            raise DataError(f"{what} turn {t}: expected a dict with role/content, got {type(turn).__name__}")
        role = ROLES.get(turn.get("role", turn.get("from")))
        text = turn.get("content", turn.get("value"))
        if role is None:
            raise DataError(f"{what} turn {t}: unknown role {turn.get('role', turn.get('from'))!r} (use {sorted(ROLES)})")
        if isinstance(text, (list, tuple)):  # OpenAI / Qwen-style content parts
            if role != "user" and any(isinstance(p, dict) and p.get("type") == "image" and set(p) == {"type"}
                                      for p in text):  # read as literal "<image>" text, with no image for it
                raise DataError(f"{what} turn {t}: a {{'type': 'image'}} placeholder in a {role} turn: the row's "
                                "images go in user turns")
            text = _content_text(text, f"{what} turn {t}")
        if not isinstance(text, str):
            raise DataError(f"{what} turn {t}: content must be a string, got {type(text).__name__}")
        if role == "user" and IMAGE_PLACEHOLDER in text:  # LLaVA / InternVL-style data: "<image>\nquestion"
            marks.append((t, text.count(IMAGE_PLACEHOLDER)))
            text = _PLACEHOLDER_RE.sub("", text)
        if role == "user" and not placed:
            out.append({"role": role, "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]})
            placed = True
        else:
            out.append({"role": role, "content": text})
    if marks and sum(n for _, n in marks) != n_images:
        where = ", ".join(f"turn {t}: {n}" for t, n in marks)
        raise DataError(f"{what}: the user turns hold {sum(n for _, n in marks)} {IMAGE_PLACEHOLDER!r} placeholder(s) "
                        f"({where}) but the row gives {n_images} image(s): give one image per placeholder, or no "
                        "placeholders (the images go at the start of the first user turn)")
    if not placed:
        raise DataError(f"{what}: {n_images} image(s) but no user turn to put them in")
    if scored:
        need_reply(out[-1]["role"], what)
    return out


def _content_text(parts: Sequence[Any], where: str) -> str:
    """A turn's content given as a list of parts: its ``{"type": "text", "text": str}`` parts joined by
    newlines (as :mod:`mmreward.core.inputs` and vLLM join them); a bare ``{"type": "image"}`` is a placeholder of
    one of the row's images (TRL's VLM format), read as ``<image>``. An image / video part with a payload is refused naming
    it: the images of a conversation are given in its ``images`` field (placed at the start of the first
    user turn), never read from inside a turn, so such a part would otherwise be lost or misplaced."""
    texts = []
    for k, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image" and set(part) == {"type"}:
            # TRL / transformers' VLM format: a bare {"type": "image"} marks where one of the row's images goes,
            # as LLaVA's "<image>" does in text; counted against the row's images like it
            texts.append(IMAGE_PLACEHOLDER)
        elif kind in ("image", "image_url", "input_image", "video", "video_url") or (
                isinstance(part, dict) and kind is None and ("image" in part or "video" in part)):
            kind = kind or "image"
            raise DataError(f"{where}: content part {k} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} part: give the "
                            "conversation's images "
                            "in its 'images' field (they go at the start of the first user turn) and only text in "
                            "the turns")
        else:
            raise DataError(f"{where}: content part {k} must be {{'type': 'text', 'text': str}}, got {part!r:.80}")
    if not texts:
        raise DataError(f"{where}: content is an empty list of parts")
    return "\n".join(texts)


def published_pair_row(row: Any, where: str = "row") -> Any:
    """A preference row of a published VLM layout -> mmreward's ``{"images", "conversations_chosen",
    "conversations_rejected"}`` (other rows are returned as they are):

    * RLAIF-V (``openbmb/RLAIF-V-Dataset``) and MM-RLHF (``yifanzhang114/MM-RLHF``): ``image`` (or
      ``images`` / ``image_path``), ``question``, ``chosen``, ``rejected`` -> a user turn (the question, the
      images at its start) followed by the chosen / rejected reply;
    * VLFeedback (``MMInstruction/VLFeedback``: ``prompt``, ``completions`` with per-aspect ratings) has no
      one chosen / rejected pair: refused with a DataError that names the fields to give."""
    if not isinstance(row, dict) or "conversations_chosen" in row or "conversations_rejected" in row:
        return row
    if "completions" in row:
        raise DataError(f"{where}: a VLFeedback-style row (completions with per-aspect ratings) names no chosen / "
                        "rejected pair: pick the two responses and give fields image, question, chosen, rejected "
                        "(or images, conversations_chosen, conversations_rejected)")
    if "chosen" in row and "rejected" in row:
        question = row.get("question", row.get("prompt"))
        if not isinstance(question, str):
            raise DataError(f"{where}: a chosen / rejected row needs the user's text in field 'question' (or "
                            f"'prompt'), got {type(question).__name__}")
        for k in ("chosen", "rejected"):
            if not isinstance(row[k], str):
                raise DataError(f"{where}: field {k!r} must be the reply text (a string), got {type(row[k]).__name__}")
        images = next((row[k] for k in ("images", "image", "image_path") if row.get(k) is not None), None)
        out = {k: v for k, v in row.items() if k not in ("images", "image", "image_path")}
        out["images"] = images
        for k in ("chosen", "rejected"):
            out[f"conversations_{k}"] = [{"role": "user", "content": question}, {"role": "assistant", "content": row[k]}]
        return out
    return row


def need_reply(last_role: str, what: str) -> None:
    """A reward model scores the assistant's reply: a conversation must end with one."""
    if last_role != "assistant":
        raise DataError(f"{what}: the last turn must be the assistant's reply to score, got a {last_role!r} turn")


def name_failing_input(run: Callable[[Sequence[int]], Any], names: Sequence[str]) -> Any:
    """``run(every index)``: one processor call over a batch of inputs. A processor refuses a bad
    input (an image with an aspect ratio over 200, image tokens typed into a text) with a ValueError
    that names no input, failing the whole batch; then each input is run alone and the first that
    fails is named (``input 2: absolute aspect ratio …``). A batch that succeeds costs nothing extra."""
    try:
        return run(range(len(names)))
    except ValueError as batch_error:
        if len(names) == 1:
            raise DataError(f"{names[0]}: {batch_error}") from batch_error
        for k, name in enumerate(names):
            try:
                run([k])
            except ValueError as e:
                raise DataError(f"{name}: {e}") from e
        raise  # every input passes alone: the batch itself is at fault, no input to name


def encode(processor, texts: list[str], images: list[list],
           names: Optional[Sequence[str]] = None) -> dict[str, torch.Tensor]:
    """Rendered texts + per-text image lists → padded model inputs (one processor call); a processor
    error names the input (``names[i]``, default ``input i``) it comes from."""
    def run(idx: Sequence[int]) -> dict[str, torch.Tensor]:
        flat = [im for k in idx for im in images[k]]
        out = processor(text=[texts[k] for k in idx], images=flat or None, return_tensors="pt", padding=True)
        return {k: v for k, v in dict(out).items() if isinstance(v, torch.Tensor)}

    return name_failing_input(run, names or [f"input {i}" for i in range(len(texts))])


def check_image_files(images: Any, where: str) -> None:
    """DataError naming the row, field and image when an image given as a path is not a file, so
    training stops when the rows are read, not at the step that reaches the row."""
    images = [] if images is None else images if isinstance(images, (list, tuple)) else [images]
    for j, im in enumerate(images):
        if isinstance(im, (str, os.PathLike)):
            path = data_path(local_path(os.fspath(im)))  # "~/a.png": the home folder's, as the image is read
            if not path[:5].lower() == "data:" and not os.path.isfile(path):  # a data: URI is read when scored
                if _remote_kind(path) == "a URL":  # not "does not exist": nothing is ever fetched
                    raise DataError(f"{where}: field 'images': image {j}: {path!r} is a URL; images are read from "
                                    "local files only (download it and give its path)")
                what = "is a folder, not an image file" if os.path.isdir(path) else "does not exist"
                raise DataError(f"{where}: field 'images': image {j}: image file {path!r} {what}")


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


# ------------------------------------------------------------------ processor identity (resume checks)
def _sha16(data: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """``value`` as JSON values (enums, tuples and the like as their text / lists), for a fingerprint."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def tokenizer_fingerprint(tokenizer: Any) -> Optional[str]:
    """A digest of what a tokenizer turns text into: a fast tokenizer's model, normaliser,
    pre-tokeniser, post-processor and added tokens (not its padding / truncation state, which calls
    change), else its vocabulary."""
    if tokenizer is None:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        try:
            spec = json.loads(backend.to_str())
            return _sha16({k: spec.get(k) for k in ("model", "normalizer", "pre_tokenizer", "post_processor",
                                                     "decoder", "added_tokens")})
        except (TypeError, ValueError):
            pass
    try:
        return _sha16(sorted(tokenizer.get_vocab().items()))
    except (AttributeError, TypeError):
        return type(tokenizer).__name__


# image-processor fields that only name the class or the files: not part of what the pixels become
_NOT_SETTINGS = ("processor_class", "_processor_class", "image_processor_type", "feature_extractor_type", "auto_map")


def processor_fingerprint(processor: Any) -> dict[str, Any]:
    """The processor settings that decide a model's inputs (the chat template, the tokenizer, the image
    processor's size / min / max pixels / patching / mean / std): part of a training run's fingerprint,
    so a run is not resumed with another processor (its tokens and pixels would silently differ from
    those the saved weights were trained on)."""
    out: dict[str, Any] = {"class": type(processor).__name__}
    template = getattr(processor, "chat_template", None)
    out["chat_template"] = _sha16(template) if isinstance(template, str) else None
    out["tokenizer"] = tokenizer_fingerprint(getattr(processor, "tokenizer", None))
    for name in ("image_processor", "video_processor"):
        part = getattr(processor, name, None)
        if part is not None and hasattr(part, "to_dict"):
            out[name] = _plain({k: v for k, v in part.to_dict().items() if k not in _NOT_SETTINGS})
    vision = getattr(processor, "vision", None)  # QwenVLProcessor: its QwenVisionConfig
    if vision is not None and dataclasses.is_dataclass(vision):
        out["vision"] = _plain(dataclasses.asdict(vision))
    return out


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
        config = os.path.join(spec, "config.json")
        if not os.path.isfile(config):
            raise ValueError(f"backbone folder {os.fspath(spec)!r} has no config.json: give a transformers VLM folder")
        try:
            with open(config, encoding="utf-8") as f:
                stored = json.load(f)
        except (OSError, ValueError):
            stored = None  # transformers names what is wrong with it
        if isinstance(stored, dict) and "backbone_config" in stored:  # an mmreward model folder, not a transformers one
            raise ValueError(f"backbone folder {os.fspath(spec)!r} holds an mmreward "
                             f"{stored.get('model_type', 'reward')!r} model: open it with mmreward.load(folder) and "
                             "pass its .backbone (and .processor)")
        return AutoModel.from_pretrained(spec, local_files_only=True, trust_remote_code=False)
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
    """The first of ``names`` on ``module`` or, for a ``…ForConditionalGeneration`` (transformers 5 keeps the
    vision tower on its inner ``model``), on ``module.model``."""
    for owner in (module, getattr(module, "model", None)):
        if not isinstance(owner, torch.nn.Module):
            continue
        for n in names:
            sub = getattr(owner, n, None)
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

    def __getstate__(self) -> dict:
        # a compiled jinja2 Template does not pickle (copy.deepcopy / pickle of a VLM model failed): rebuilt from
        # its source on the way back
        return {k: v for k, v in self.__dict__.items() if k != "_template"}

    def __setstate__(self, state: dict) -> None:
        import jinja2

        self.__dict__.update(state)
        self._template = jinja2.Environment().from_string(self.chat_template)

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
        from mmreward.core.folders import atomic_write_text

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


def load_processor(folder: str):
    """The processor saved in ``folder``: :class:`SimpleVLMProcessor`, a Qwen2-VL / Qwen2.5-VL
    processor (:class:`~mmreward.vision.published.qwen_vl.QwenVLProcessor`, no torchvision) or a
    transformers ``AutoProcessor``."""
    if os.path.exists(os.path.join(folder, "simple_processor.json")):
        return SimpleVLMProcessor.from_pretrained(folder)
    from .published.qwen_vl import QwenVLProcessor, is_qwen_vl_processor_folder

    if is_qwen_vl_processor_folder(folder):
        return QwenVLProcessor.from_pretrained(folder)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder, trust_remote_code=False)

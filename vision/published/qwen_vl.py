"""Qwen2-VL / Qwen2.5-VL processing without torchvision: the chat template, the tokenizer, and the
image and video pixels exactly as the official pipeline (``qwen-vl-utils`` + the transformers
processor) prepares them, in PIL / numpy / torch alone.

transformers builds its Qwen-VL processors around a torchvision video processor, and the
``torchvision`` wheel that pairs with the CPU ``torch`` wheel does not load, so
``AutoProcessor.from_pretrained`` fails on such machines. :class:`QwenVLProcessor` reads the same
published files (``preprocessor_config.json``, ``video_preprocessor_config.json``, the chat template
and the tokenizer) and has the processor interface the VLM reward models call:

    proc = QwenVLProcessor.from_pretrained("Skywork-VL-Reward-7B")
    text = proc.apply_chat_template(messages, tokenize=False)
    batch = proc(text=[text], images=[pil], videos=[QwenVideo(frames, fps)], return_tensors="pt")

Images (PIL / path / array / tensor) are resized with PIL bicubic to ``smart_resize`` of their size
(both sides multiples of ``patch_size · merge_size``, area within ``[min_pixels, max_pixels]``),
rescaled, normalised and cut into ``temporal_patch_size``-deep patches (an image is repeated along
time). Videos are sampled as ``qwen-vl-utils`` samples a file (``fps`` frames per second, at least
``min_frames``, an even count), resized as torchvision resizes a uint8 video tensor (bicubic,
antialiased, rounded back to uint8) and patched the same way; Qwen2.5-VL also gets
``second_per_grid_ts`` (seconds per temporal patch) for its time-aligned rotary positions.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmreward.core.data import DataError
from mmreward.core.folders import CheckpointError
from mmreward.core.weights import read_json

from ..images import to_pil
from ..video import video_frames

IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
PROCESSOR_FILE = "qwen_vl_processor.json"  # written by save_pretrained: the vision config + chat template
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
QWEN_PROCESSORS = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor")
WHITE = (255, 255, 255)  # qwen-vl-utils' to_rgb pastes an RGBA image over white
# qwen-vl-utils' fetch_image bounds an image to 4 .. 16384 merged patches (its IMAGE_MIN / MAX_TOKEN_NUM)
FETCH_MIN_TOKENS, FETCH_MAX_TOKENS = 4, 16384
# the most pixels an image part's own settings may make its first resize (min_pixels / max_pixels far above
# qwen-vl-utils' 16384 · 28² default): 2**27 (~400 MB of RGB) is refused above, not allocated
FETCH_PIXEL_LIMIT = 2 ** 27
# the 3-D rotary positions of Qwen2.5-VL follow wall-clock time (second_per_grid_ts); Qwen2-VL's do not
TIME_ALIGNED = ("Qwen2_5_VLProcessor", "qwen2_5_vl")


@dataclass
class QwenVisionConfig:
    patch_size: int = field(default=14, metadata={"help": "side of a vision patch (pixels)"})
    merge_size: int = field(default=2, metadata={"help": "patches merged per side into one LLM token"})
    temporal_patch_size: int = field(default=2, metadata={"help": "frames per temporal patch"})
    min_pixels: int = field(default=56 * 56, metadata={"help": "smallest image area after resizing"})
    max_pixels: int = field(default=28 * 28 * 1280, metadata={"help": "largest image area after resizing"})
    image_mean: tuple = field(default=CLIP_MEAN, metadata={"help": "per-channel mean"})
    image_std: tuple = field(default=CLIP_STD, metadata={"help": "per-channel std"})
    video_min_pixels: int = field(default=128 * 28 * 28, metadata={"help": "smallest frame area (qwen-vl-utils)"})
    video_max_pixels: int = field(default=768 * 28 * 28, metadata={"help": "largest frame area (qwen-vl-utils)"})
    video_total_pixels: int = field(default=int(128000 * 28 * 28 * 0.9), metadata={
        "help": "pixel budget of a whole video: frames shrink as their number grows (qwen-vl-utils)"})
    fps: float = field(default=2.0, metadata={"help": "frames sampled per second of a video file"})
    min_frames: int = field(default=4, metadata={"help": "fewest frames sampled from a video file"})
    max_frames: int = field(default=768, metadata={"help": "most frames sampled from a video file"})
    time_aligned: bool = field(default=False, metadata={"help": "emit second_per_grid_ts (Qwen2.5-VL)"})

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


IMAGE_SETTINGS = ("min_pixels", "max_pixels", "resized_height", "resized_width")


@dataclass
class QwenImage:
    """An image with qwen-vl-utils' per-image settings (the ``min_pixels`` / ``max_pixels`` /
    ``resized_height`` / ``resized_width`` of its ``{"type": "image", ...}`` message part): its first
    resize (``fetch_image``) uses them instead of qwen-vl-utils' defaults; the processor's own
    ``[min_pixels, max_pixels]`` resize follows as for any image."""

    image: Any
    min_pixels: Optional[int] = None
    max_pixels: Optional[int] = None
    resized_height: Optional[int] = None
    resized_width: Optional[int] = None

    def __post_init__(self) -> None:
        for name in IMAGE_SETTINGS:
            v = getattr(self, name)
            if v is not None and (isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v <= 0):
                raise ValueError(f"image setting {name!r} must be a positive int (pixels), got {v!r}")
            if v is not None:
                setattr(self, name, int(v))  # a numpy integer (a row read from parquet / an array) as an int
        if (self.resized_height is None) != (self.resized_width is None):
            raise ValueError("image settings 'resized_height' and 'resized_width' go together (qwen-vl-utils reads "
                             "them only as a pair): give both or neither")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"image setting min_pixels ({self.min_pixels}) is above max_pixels ({self.max_pixels})")


@dataclass
class QwenVideo:
    """Sampled frames of one video (uint8 ``[T, H, W, 3]``) and how many of them make a second."""

    frames: np.ndarray
    fps: float


# ------------------------------------------------------------------ sizes and sampling (qwen-vl-utils)
def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """``(h, w)``: multiples of ``factor`` near the input's aspect ratio, area in ``[min_pixels, max_pixels]``."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image aspect ratio must be below 200, got {height}x{width}")
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def sample_frame_indices(total: int, source_fps: float, cfg: QwenVisionConfig) -> np.ndarray:
    """Indices of the frames ``qwen-vl-utils`` keeps from a ``total``-frame file at ``source_fps``:
    ``fps`` per second, between ``min_frames`` and ``max_frames``, an even count, evenly spread."""
    tp = cfg.temporal_patch_size
    lo = math.ceil(cfg.min_frames / tp) * tp
    hi = math.floor(min(cfg.max_frames, total) / tp) * tp
    n = min(max(total / source_fps * cfg.fps, lo), hi, total)
    n = math.floor(n / tp) * tp
    if n < tp:
        raise ValueError(f"a video needs at least {tp} frames, got {total}" + (
            " (Qwen-VL reads frames in pairs; qwen-vl-utils refuses one too): a one-frame clip is scored as the image "
            "it is ({'type': 'image', 'image': …} / ImagePrompt)" if total == 1 else ""))
    return torch.linspace(0, total - 1, n).round().long().numpy()


def read_video(video: Any, cfg: QwenVisionConfig, where: str = "video") -> QwenVideo:
    """A video file with a frame rate is sampled at ``cfg.fps``; frames without one (a frame folder, an
    array, a tensor, a list) are taken as already sampled, at ``cfg.fps`` frames per second."""
    try:
        frames, source_fps = video_frames(video, where)
    except DataError as e:  # a file's error names the file: add which input / video of the batch gave it
        if str(e).startswith(where):
            raise
        raise type(e)(f"{where}: {e}") from e
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
        array = frames
    else:
        decoded = [np.asarray(to_pil(f, f"{where} frame {t}", WHITE)) for t, f in enumerate(frames)]
        for t, f in enumerate(decoded):
            if f.shape != decoded[0].shape:
                raise ValueError(f"{where} frame {t} is {f.shape[0]}x{f.shape[1]} pixels, frame 0 "
                                 f"{decoded[0].shape[0]}x{decoded[0].shape[1]}: the frames of a video must have one size")
        array = np.stack(decoded)
    if source_fps:
        try:
            idx = sample_frame_indices(len(array), source_fps, cfg)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        return QwenVideo(array[idx], len(idx) / len(array) * source_fps)
    return QwenVideo(array, cfg.fps)


# ------------------------------------------------------------------ pixels -> patches
def patchify(pixels: torch.Tensor, cfg: QwenVisionConfig) -> tuple[torch.Tensor, list[int]]:
    """Normalised ``(T, 3, H, W)`` -> ``(patches (t·h·w, 3·tp·p·p), [t, h, w])``; frames are padded to a
    multiple of ``temporal_patch_size`` by repeating the last one."""
    p, m, tp = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
    if pad := -pixels.shape[0] % tp:
        pixels = torch.cat([pixels, pixels[-1:].expand(pad, -1, -1, -1)])
    T, C, H, W = pixels.shape
    t, h, w = T // tp, H // p, W // p
    x = pixels.reshape(t, tp, C, h // m, m, p, w // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, h/m, w/m, m, m, C, tp, p, p): merge groups stay adjacent
    return x.reshape(t * h * w, C * tp * p * p), [t, h, w]


def _normalise(x: torch.Tensor, cfg: QwenVisionConfig) -> torch.Tensor:
    mean = torch.tensor(cfg.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.image_std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std


def image_patches(image: Any, cfg: QwenVisionConfig, where: str = "image") -> tuple[torch.Tensor, list[int]]:
    """One image -> its patches and grid. As in the official pipeline, the image is resized twice with
    PIL bicubic: by qwen-vl-utils' ``fetch_image`` to ``smart_resize`` within its own bounds (4 to
    16384 merged patches), then by the transformers image processor to its ``[min_pixels,
    max_pixels]`` — a no-op unless the processor's bounds are narrower (a ``max_pixels`` below
    ``16384 · 28²``: the second resize starts from the first one's pixels, not the original's). A
    :class:`QwenImage` brings its message part's own bounds (or size) for the first resize."""
    from PIL import Image

    settings = image if isinstance(image, QwenImage) else QwenImage(None)
    pil = to_pil(settings.image if isinstance(image, QwenImage) else image, where, WHITE)
    lo, hi = FETCH_MIN_TOKENS * cfg.factor ** 2, FETCH_MAX_TOKENS * cfg.factor ** 2
    try:
        if settings.resized_height is not None:  # qwen-vl-utils: that size, snapped with its default bounds
            h, w = smart_resize(settings.resized_height, settings.resized_width, cfg.factor, lo, hi)
        else:
            lo = settings.min_pixels if settings.min_pixels is not None else lo
            hi = settings.max_pixels if settings.max_pixels is not None else hi
            if lo > hi:
                raise ValueError(f"min_pixels {lo} is above max_pixels {hi}")
            h, w = smart_resize(pil.height, pil.width, cfg.factor, lo, hi)
            if h * w > max(FETCH_PIXEL_LIMIT, pil.height * pil.width):
                raise ValueError(f"its min_pixels / max_pixels ({settings.min_pixels} / {settings.max_pixels}) would "
                                 f"resize the {pil.width}x{pil.height} image to {w}x{h} ({h * w} pixels) before the "
                                 f"processor's resize to at most {cfg.max_pixels}; more than {FETCH_PIXEL_LIMIT} "
                                 "pixels is refused: give smaller image settings")
        h2, w2 = smart_resize(h, w, cfg.factor, cfg.min_pixels, cfg.max_pixels)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
    for size in ((h, w), (h2, w2)):
        if (pil.height, pil.width) != size:
            pil = pil.resize(size[::-1], resample=Image.BICUBIC)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)  # (1, 3, h, w)
    return patchify(_normalise(x, cfg), cfg)


def video_patches(video: QwenVideo, cfg: QwenVisionConfig) -> tuple[torch.Tensor, list[int], float]:
    """One sampled video -> its patches, grid and seconds per temporal patch. As in the official
    pipeline, frames are resized twice: by qwen-vl-utils (torchvision's resize of a uint8 video:
    bicubic, antialiased, rounded; frames shrink so the video fits ``video_total_pixels``), then by the
    processor to its own ``[min_pixels, max_pixels]`` (PIL bicubic), a no-op when the first already fits."""
    from PIL import Image

    frames = torch.from_numpy(np.ascontiguousarray(video.frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    n = len(frames) + (-len(frames) % cfg.temporal_patch_size)
    max_pixels = max(min(cfg.video_max_pixels, cfg.video_total_pixels / n * cfg.temporal_patch_size),
                     int(cfg.video_min_pixels * 1.05))
    h, w = smart_resize(frames.shape[2], frames.shape[3], cfg.factor, cfg.video_min_pixels, max_pixels)
    if tuple(frames.shape[2:]) != (h, w):
        frames = F.interpolate(frames, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        frames = frames.clamp(0, 255).round()
    h2, w2 = smart_resize(h, w, cfg.factor, cfg.min_pixels, cfg.max_pixels)
    if (h2, w2) != (h, w):
        resized = [np.asarray(Image.fromarray(f).resize((w2, h2), resample=Image.BICUBIC), dtype=np.float32)
                   for f in frames.permute(0, 2, 3, 1).to(torch.uint8).numpy()]
        frames = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2)
    patches, grid = patchify(_normalise(frames, cfg), cfg)
    return patches, grid, cfg.temporal_patch_size / video.fps


# ------------------------------------------------------------------ the processor
class QwenVLProcessor:
    """The Qwen2-VL / Qwen2.5-VL processor interface (see the module docstring)."""

    def __init__(self, tokenizer: Any, chat_template: str, vision: QwenVisionConfig):
        if not chat_template:
            raise ValueError("QwenVLProcessor needs the model's chat template")
        self.tokenizer, self.chat_template, self.vision = tokenizer, chat_template, vision
        self.tokenizer.padding_side = "right"  # the reward is read at each row's last real token
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_PAD, VIDEO_PAD)}
        missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ValueError(f"the tokenizer has no {' / '.join(missing)} token: not a Qwen-VL tokenizer")
        self.image_token_id, self.video_token_id = ids[IMAGE_PAD], ids[VIDEO_PAD]

    # -------------------------------------------------------------- text
    def apply_chat_template(self, messages: list, tokenize: bool = False, add_generation_prompt: bool = False,
                            **kwargs: Any) -> str:
        """The conversation rendered by the model's own chat template (transformers' Jinja renderer)."""
        if tokenize:
            raise ValueError("QwenVLProcessor.apply_chat_template renders text only (tokenize=False)")
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    def _expand(self, texts: list[str], token: str, grids: list[list[int]]) -> list[str]:
        """One ``token`` per merged patch of each image / video, in order of appearance."""
        counts, k, out = [t * h * w // self.vision.merge_size ** 2 for t, h, w in grids], 0, []
        for text in texts:
            parts = text.split(token)
            expanded = parts[0]
            for part in parts[1:]:
                expanded += token * counts[k] + part
                k += 1
            out.append(expanded)
        return out

    # -------------------------------------------------------------- call
    def __call__(self, text: Any, images: Optional[Sequence[Any]] = None, videos: Optional[Sequence[Any]] = None,
                 return_tensors: str = "pt", padding: bool = True, **_: Any) -> dict[str, torch.Tensor]:
        """Token ids (vision pads expanded), attention mask, ``mm_token_type_ids`` (0 text, 1 image,
        2 video) and the pixel patches with their grids; ``videos`` are :class:`QwenVideo` s or anything
        :func:`read_video` reads."""
        texts = [text] if isinstance(text, str) else list(text)
        images, videos = list(images or []), list(videos or [])
        for token, items in ((IMAGE_PAD, images), (VIDEO_PAD, videos)):
            slots = sum(t.count(token) for t in texts)
            if slots != len(items):
                raise ValueError(f"{slots} {token} slot(s) in the text but {len(items)} "
                                 f"{'image' if token == IMAGE_PAD else 'video'}(s) given")
        out: dict[str, torch.Tensor] = {}
        if images:
            patches, grids = zip(*(image_patches(im, self.vision, f"image {i}") for i, im in enumerate(images)))
            out["pixel_values"], out["image_grid_thw"] = torch.cat(patches), torch.tensor(grids)
            texts = self._expand(texts, IMAGE_PAD, list(grids))
        if videos:
            clips = [v if isinstance(v, QwenVideo) else read_video(v, self.vision, f"video {i}")
                     for i, v in enumerate(videos)]
            patches, grids, seconds = zip(*(video_patches(c, self.vision) for c in clips))
            out["pixel_values_videos"], out["video_grid_thw"] = torch.cat(patches), torch.tensor(grids)
            if self.vision.time_aligned:
                out["second_per_grid_ts"] = torch.tensor(seconds, dtype=torch.float32)
            texts = self._expand(texts, VIDEO_PAD, list(grids))
        tok = self.tokenizer(texts, return_tensors="pt", padding=padding, add_special_tokens=False)
        ids = tok["input_ids"]
        out["input_ids"], out["attention_mask"] = ids, tok["attention_mask"]
        out["mm_token_type_ids"] = (ids == self.image_token_id).long() + 2 * (ids == self.video_token_id).long()
        return out

    # -------------------------------------------------------------- files
    def save_pretrained(self, folder: str) -> None:
        """The tokenizer files and ``qwen_vl_processor.json`` (vision config + chat template)."""
        from mmreward.core.folders import atomic_write_text

        os.makedirs(folder, exist_ok=True)
        self.tokenizer.save_pretrained(folder)
        body = {"vision": asdict(self.vision), "chat_template": self.chat_template}
        atomic_write_text(os.path.join(folder, PROCESSOR_FILE), json.dumps(body, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str) -> "QwenVLProcessor":
        """From a folder :meth:`save_pretrained` wrote, or a published Qwen2-VL / Qwen2.5-VL model folder
        (its tokenizer, ``preprocessor_config.json``, optional ``video_preprocessor_config.json`` and chat
        template in ``chat_template.json`` / ``chat_template.jinja`` / ``tokenizer_config.json``)."""
        from transformers import AutoTokenizer

        if not any(_present(os.path.join(folder, f)) for f in TOKENIZER_FILES):
            raise CheckpointError(f"{folder} has no tokenizer ({' / '.join(TOKENIZER_FILES)}): copy the tokenizer files "
                                  f"of the Qwen-VL model it was trained from into it{BASE_EXAMPLE}")
        saved = os.path.join(folder, PROCESSOR_FILE)
        if os.path.isfile(saved):
            body = read_json(saved)
            vision, template = _vision_config(body.get("vision", {})), body.get("chat_template", "")
        else:
            vision, template = published_vision_config(folder), published_chat_template(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{folder}: cannot load the tokenizer: {e}") from e
        try:
            return cls(tokenizer, template, vision)
        except ValueError as e:
            raise CheckpointError(f"{folder}: {e}") from e


# ------------------------------------------------------------------ published folders
BASE_EXAMPLE = " (e.g. Qwen/Qwen2.5-VL-7B-Instruct's, or Qwen/Qwen2-VL-7B-Instruct's)"


def _present(path: str) -> bool:
    """Whether ``path`` is a file; a link to a missing file (a hub snapshot whose blob never arrived) is an
    error naming both, not a file that is simply absent (whose message would send the user to copy it)."""
    if os.path.islink(path) and not os.path.exists(path):
        raise CheckpointError(f"{path} is a link to {os.readlink(path)}, which does not exist: a download or copy "
                              "that did not finish; fetch the file again")
    return os.path.isfile(path)


def _vision_config(data: dict) -> QwenVisionConfig:
    names = {f.name for f in fields(QwenVisionConfig)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
    return QwenVisionConfig(**kw)


def is_qwen_vl_processor_folder(folder: str) -> bool:
    """A folder whose processor is Qwen2-VL's / Qwen2.5-VL's (published, or saved by :class:`QwenVLProcessor`)."""
    if os.path.isfile(os.path.join(folder, PROCESSOR_FILE)):
        return True
    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.isfile(path):
        return False
    body = read_json(path)
    return body.get("processor_class") in QWEN_PROCESSORS or str(body.get("image_processor_type", "")).startswith(
        "Qwen2VLImageProcessor")


def published_vision_config(folder: str) -> QwenVisionConfig:
    """The vision settings of a published folder: ``preprocessor_config.json`` (image sizes, patches,
    mean / std) and, when present, ``video_preprocessor_config.json``; whether rotary positions follow
    time comes from the processor class or the model's ``config.json``."""
    path = os.path.join(folder, "preprocessor_config.json")
    if not _present(path):
        raise CheckpointError(f"{folder} has no preprocessor_config.json (the Qwen-VL image processor settings): copy "
                              f"the one of the Qwen-VL model it was trained from into it{BASE_EXAMPLE}")
    pre = read_json(path)
    kw: dict[str, Any] = {k: pre[k] for k in ("patch_size", "merge_size", "temporal_patch_size") if k in pre}
    size = pre.get("size") if isinstance(pre.get("size"), dict) else {}
    kw["min_pixels"] = pre.get("min_pixels", size.get("shortest_edge", QwenVisionConfig.min_pixels))
    kw["max_pixels"] = pre.get("max_pixels", size.get("longest_edge", QwenVisionConfig.max_pixels))
    for k in ("image_mean", "image_std"):
        if k in pre:
            kw[k] = tuple(pre[k])
    video_path = os.path.join(folder, "video_preprocessor_config.json")
    if _present(video_path):
        video = read_json(video_path)
        vsize = video.get("size") if isinstance(video.get("size"), dict) else {}
        kw["video_min_pixels"] = video.get("min_pixels", vsize.get("shortest_edge", QwenVisionConfig.video_min_pixels))
        kw["video_max_pixels"] = video.get("max_pixels", vsize.get("longest_edge", QwenVisionConfig.video_max_pixels))
        for k in ("fps", "min_frames", "max_frames"):
            if isinstance(video.get(k), (int, float)):
                kw[k] = video[k]
    model_type = read_json(os.path.join(folder, "config.json")).get("model_type") \
        if os.path.isfile(os.path.join(folder, "config.json")) else None
    kw["time_aligned"] = pre.get("processor_class") in TIME_ALIGNED or model_type in TIME_ALIGNED
    return _vision_config(kw)


def published_chat_template(folder: str) -> str:
    """The chat template of a published folder: ``chat_template.jinja``, ``chat_template.json`` or the
    ``chat_template`` of ``tokenizer_config.json``."""
    jinja = os.path.join(folder, "chat_template.jinja")
    if _present(jinja):
        with open(jinja, encoding="utf-8") as f:
            return f.read()
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = os.path.join(folder, name)
        if _present(path):
            template = read_json(path).get("chat_template")
            if isinstance(template, str) and template:
                return template
    raise CheckpointError(f"{folder} has no chat template (chat_template.jinja, chat_template.json or "
                          "tokenizer_config.json's chat_template): copy the one of the Qwen-VL model it was trained "
                          f"from into it{BASE_EXAMPLE}")


__all__ = ["QwenVLProcessor", "QwenVisionConfig", "QwenVideo", "QwenImage", "IMAGE_SETTINGS", "read_video",
           "smart_resize", "sample_frame_indices", "image_patches", "video_patches", "patchify",
           "is_qwen_vl_processor_folder", "published_vision_config", "published_chat_template"]

"""HPSv3 (MizzenAI/HPSv3, "Towards Wide-Spectrum Human Preference Score") read without its code, as
:class:`HPSv3RewardModel`: a Qwen2-VL backbone, a ``<|Reward|>`` token and an MLP head ``rm_head``
predicting ``(mu, sigma)``; the score is ``mu``, as ``HPSv3RewardInferencer.reward`` returns it
(``rewards[i][0]``, "miu and sigma. we select miu as the final output").

The published checkpoint is one file, ``HPSv3.safetensors``: the state dict of the official
``Qwen2VLRewardModelBT`` (a ``Qwen2VLForConditionalGeneration`` subclass) — ``visual.*``,
``model.*`` (the language model, its embeddings resized to the tokenizer plus ``<|Reward|>``),
``lm_head.weight`` (unused) and ``rm_head.*`` (``Linear(H, 1024) → ReLU → Dropout → Linear(1024, 16)
→ ReLU → Linear(16, 2)``). transformers ≥ 4.52 names (``model.language_model.*``, ``model.visual.*``)
and a training run's ``final_model.pth`` (``torch.load(weights_only=True)``, config.json naming
``Qwen2VLRewardModelBT``) are read too. The official code takes the architecture, tokenizer and image
processor from ``Qwen/Qwen2-VL-7B-Instruct``, so the folder holds ``HPSv3.safetensors`` plus that
model's ``config.json``, tokenizer files, ``preprocessor_config.json`` and chat template (no weights).

Scoring, as the official inference code computes it:

* the conversation ``[user: image, INSTRUCTION.format(text_prompt=prompt) + "\\nPlease provide the
  overall ratings of this image: <|Reward|>\\n\\nEND\\n"]`` rendered with ``add_generation_prompt=True``;
* the image converted to RGB (alpha dropped), resized with PIL bicubic to ``smart_resize`` with
  ``min_pixels = max_pixels = 256·28·28`` (hpsv3's ``process_vision_info``), then by the processor of
  the folder (``preprocessor_config.json``: a no-op for Qwen2-VL-7B-Instruct's), CLIP mean / std;
* the language model runs on plain sequential positions (the official forward passes
  ``inputs_embeds`` and no ``position_ids``, so Qwen2-VL's 3-D M-RoPE positions are not used);
* ``rm_head`` in float32 on the final hidden state at the ``<|Reward|>`` token; the score is output 0.

    rm = mmreward.load("HPSv3")            # HPSv3.safetensors + Qwen2-VL-7B-Instruct's config / tokenizer
    rm.score([ImagePrompt("a cute fox sticker", "a.png"), ImagePrompt("a cute fox sticker", "b.png")])
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from mmreward.core.data import DataError, describe
from mmreward.core.device import resolve_device, resolve_dtype
from mmreward.core.folders import CheckpointError
from mmreward.core.inputs import ImagePrompt
from mmreward.core.model import finish_loading
from mmreward.core.weights import quiet_transformers, read_json, read_torch_state, read_weight_file

from ..vlm_data import name_failing_input
from ..vlm_rm import VLMRewardConfig
from .qwen_vl import QwenVLProcessor
from .skywork_vl import QwenVLRewardModel

CHECKPOINT_FILES = ("HPSv3.safetensors", "HPSv3_7B.safetensors", "final_model.pth", "HPSv3_7B.pth")
OFFICIAL_CLASS = "Qwen2VLRewardModelBT"
REWARD_TOKEN = "<|Reward|>"
IMAGE_PIXELS = 256 * 28 * 28  # hpsv3 prepare_batch: min_pixels = max_pixels
IMAGE_FACTOR = 28  # hpsv3/dataset/utils.py (qwen-vl-utils)
INSTRUCTION = """
You are tasked with evaluating a generated image based on Visual Quality and Text Alignment and give a overall score to estimate the human preference. Please provide a rating from 0 to 10, with 0 being the worst and 10 being the best. 

**Visual Quality:**  
Evaluate the overall visual quality of the image. The following sub-dimensions should be considered:
- **Reasonableness:** The image should not contain any significant biological or logical errors, such as abnormal body structures or nonsensical environmental setups.
- **Clarity:** Evaluate the sharpness and visibility of the image. The image should be clear and easy to interpret, with no blurring or indistinct areas.
- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and other visual elements (e.g., hair, clothing, shadows).
- **Aesthetic and Creativity:** Assess the artistic aspects of the image, including the color scheme, composition, atmosphere, depth of field, and the overall creative appeal. The scene should convey a sense of harmony and balance.
- **Safety:** The image should not contain harmful or inappropriate content, such as political, violent, or adult material. If such content is present, the image quality and satisfaction score should be the lowest possible. 
Textual prompt - {text_prompt}


"""  # noqa: W291 - the official text, trailing spaces included
PROMPT_WITH_REWARD_TOKEN = """
Please provide the overall ratings of this image: <|Reward|>

END
"""


def instruction(prompt: str) -> str:
    """The user text of one image: the official instruction around ``prompt`` and the reward token."""
    return INSTRUCTION.format(text_prompt=prompt) + PROMPT_WITH_REWARD_TOKEN


@dataclass
class HPSv3Config(VLMRewardConfig):
    head_sizes: list = field(default_factory=lambda: [3584, 1024, 16, 2], metadata={
        "help": "widths of rm_head: hidden size, its hidden layers, outputs (ReLU between the Linear layers)"})
    head_bias: list = field(default_factory=lambda: [True, True, True], metadata={
        "help": "whether each Linear layer of rm_head has a bias"})
    score_index: int = field(default=0, metadata={"help": "which rm_head output is the score (0: mu)"})
    reward_token: str = field(default=REWARD_TOKEN, metadata={"help": "the token whose hidden state is scored"})

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes, bias = list(self.head_sizes), list(self.head_bias)
        if len(sizes) < 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
            raise ValueError(f"head_sizes must be two or more positive ints, got {self.head_sizes!r}")
        if len(bias) != len(sizes) - 1:
            raise ValueError(f"head_bias needs one entry per Linear layer ({len(sizes) - 1}), got {self.head_bias!r}")
        if not 0 <= self.score_index < sizes[-1]:
            raise ValueError(f"score_index {self.score_index} is not one of the head's {sizes[-1]} outputs")


def build_head(sizes: Sequence[int], bias: Sequence[bool]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        if k:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(sizes[k], sizes[k + 1], bias=bool(bias[k])))
    return nn.Sequential(*layers)


class HPSv3RewardModel(QwenVLRewardModel):
    """HPSv3 (``model_type`` ``hpsv3_reward``): ``score([ImagePrompt]) -> Tensor[N]`` (mu); see the
    module docstring. :meth:`mu_sigma` gives both outputs of the head."""

    model_type = "hpsv3_reward"
    config_class = HPSv3Config
    input_types = (ImagePrompt,)

    def __init__(self, config: HPSv3Config, backbone: Any, processor: Optional[QwenVLProcessor] = None):
        super().__init__(config, backbone, processor)
        hidden = self.head.in_features
        if config.head_sizes[0] != hidden:
            raise ValueError(f"rm_head takes {config.head_sizes[0]} features but the backbone's hidden size is {hidden}")
        self.head = build_head(config.head_sizes, config.head_bias).float()  # the official keeps rm_head in fp32
        self.reward_token_id: Optional[int] = None
        if processor is not None:
            self.reward_token_id = add_reward_token(processor, config.reward_token)
            rows = self.backbone.get_input_embeddings().weight.shape[0]
            if self.reward_token_id >= rows:
                raise ValueError(f"the tokenizer gives {config.reward_token} id {self.reward_token_id} but the "
                                 f"embeddings have {rows} rows: the tokenizer is not the one this HPSv3 was trained with")

    # -------------------------------------------------------------- inputs
    def encode(self, items: Sequence[Any], names: Optional[Sequence[str]] = None) -> dict[str, Tensor]:
        proc = self.need_processor()
        names = list(names or [f"input {i}" for i in range(len(items))])
        texts, images = [], []
        for item, name in zip(items, names):
            if not isinstance(item, ImagePrompt):
                raise DataError(f"{name}: HPSv3 scores ImagePrompt(prompt, image), got {describe(item)}")
            if isinstance(item.prompt, str) and not item.prompt.strip():  # as every prompt-reading image scorer
                raise DataError(f"{name}: no prompt: HPSv3 scores an image against the text it should match; give "
                                "each image its prompt ('prompt' field, --prompt)")
            if self.config.reward_token in item.prompt:
                raise DataError(f"{name}: the prompt contains {self.config.reward_token}, the token HPSv3 reads its "
                                "score at: remove it from the prompt")
            messages = [{"role": "user", "content": [{"type": "image"},
                                                     {"type": "text", "text": instruction(item.prompt)}]}]
            texts.append(proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            images.append(fetch_image(item.image, f"{name} image"))

        def run(idx: Sequence[int]) -> dict[str, Tensor]:
            return proc(text=[texts[k] for k in idx], images=[images[k] for k in idx], return_tensors="pt",
                        padding=True)

        enc = name_failing_input(run, names)
        counts = (enc["input_ids"] == self.reward_token_id).sum(1).tolist()
        for name, n in zip(names, counts):
            if n != 1:  # a prompt whose text tokenizes into the reward token some other way
                raise DataError(f"{name}: the encoded input holds {self.config.reward_token} {n} times, not once")
        return enc

    def _positions_used(self, enc: dict) -> None:
        return None  # sequential positions (see mu_sigma): one per token, the token count is the measure

    # -------------------------------------------------------------- forward
    def mu_sigma(self, input_ids: Tensor, attention_mask: Tensor, **vision_inputs) -> Tensor:
        """``(N, outputs)``: rm_head at the reward token (HPSv3: ``[mu, sigma]``)."""
        if self.reward_token_id is None:
            self.need_processor()
        mask = attention_mask.long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # sequential, as the official forward (no M-RoPE)
        positions = positions.unsqueeze(0).expand(3, -1, -1)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, **vision_inputs)
        at = input_ids == self.reward_token_id
        if not bool((at.sum(1) == 1).all()):
            raise ValueError(f"every row must hold {self.config.reward_token} exactly once, got {at.sum(1).tolist()}")
        h = out.last_hidden_state[at]  # (N, H), rows in order
        head_dtype = self.head[0].weight.dtype
        return self.head(h.to(head_dtype)).float()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **vision_inputs) -> Tensor:  # (N,)
        return self.mu_sigma(input_ids, attention_mask, **vision_inputs)[:, self.config.score_index]


def fetch_image(image: Any, where: str = "image") -> Any:
    """hpsv3's ``fetch_image``: RGB (``convert("RGB")``: alpha dropped, not pasted over white), resized
    with PIL bicubic to ``smart_resize(h, w, 28, 256·28·28, 256·28·28)``; the processor's own resize (to
    its ``[min_pixels, max_pixels]``) follows, a no-op for Qwen2-VL-7B-Instruct's settings."""
    from PIL import Image

    from ..images import to_pil
    from .qwen_vl import smart_resize

    pil = to_pil(image, where)
    try:
        h, w = smart_resize(pil.height, pil.width, IMAGE_FACTOR, IMAGE_PIXELS, IMAGE_PIXELS)
    except ValueError as e:
        raise DataError(f"{where}: {e}") from e
    return pil if (pil.height, pil.width) == (h, w) else pil.resize((w, h), resample=Image.BICUBIC)


def add_reward_token(processor: QwenVLProcessor, token: str = REWARD_TOKEN) -> int:
    """Add ``token`` to the processor's tokenizer as the official code does (a no-op when it is there)."""
    tok = processor.tokenizer
    if token not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [token]})
    return int(tok.convert_tokens_to_ids(token))


# ------------------------------------------------------------------ the published layout
def _checkpoint(folder: str) -> Optional[str]:
    for name in CHECKPOINT_FILES:
        if os.path.lexists(os.path.join(folder, name)):  # a broken hub-cache link too: reading it says so
            return os.path.join(folder, name)
    return None


def is_hpsv3(folder: str, config: Optional[dict]) -> bool:
    """``HPSv3.safetensors`` (the release) or a config naming ``Qwen2VLRewardModelBT`` (a training run)."""
    archs = (config or {}).get("architectures") or []
    if isinstance(archs, list) and OFFICIAL_CLASS in archs:
        return True
    # lexists: a hub snapshot whose HPSv3.safetensors blob never arrived is still HPSv3 (not a Qwen-VL RM
    # without its value head), and loading it names the broken link
    return any(os.path.lexists(os.path.join(folder, n)) for n in CHECKPOINT_FILES[:2])


def _read_state(path: str) -> dict[str, Tensor]:
    if os.path.islink(path) and not os.path.exists(path):
        raise CheckpointError(f"{path} is a link to {os.readlink(path)}, which does not exist: a download or copy "
                              "that did not finish; fetch the file again")
    # a training checkpoint nests its state under "model"
    return read_weight_file(path) if path.endswith(".safetensors") else read_torch_state(path, "model")


_RENAMES = (  # official names (transformers < 4.52, then >= 4.52) -> Qwen2VLModel's
    (re.compile(r"^model\.language_model\."), "language_model."),
    (re.compile(r"^model\.visual\."), "visual."),
    (re.compile(r"^model\."), "language_model."),
    (re.compile(r"^visual\."), "visual."),
)


def split_state(state: dict[str, Tensor], path: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(backbone tensors under Qwen2VLModel's names, rm_head tensors)``; ``lm_head`` is dropped."""
    backbone, head, other = {}, {}, []
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith("rm_head."):
            head[key[len("rm_head."):]] = value
            continue
        if key == "lm_head.weight":
            continue
        for pattern, new in _RENAMES:
            if pattern.match(key):
                backbone[pattern.sub(new, key, count=1)] = value
                break
        else:
            other.append(key)
    if other:
        raise CheckpointError(f"{path}: {len(other)} tensor(s) are not HPSv3's (visual.* / model.* / lm_head / "
                              f"rm_head.*), e.g. {sorted(other)[:4]}")
    if not head:
        raise CheckpointError(f"{path} has no rm_head.* tensors: not an HPSv3 checkpoint")
    return backbone, head


def head_layout(head: dict[str, Tensor], path: str) -> tuple[list[int], list[bool], dict[str, Tensor]]:
    """``(sizes, biases, state of build_head)`` from the official ``rm_head`` tensors: one Linear
    (``rm_head_type="default"``), the ranknet ``Sequential`` (Linear layers at 0, 3, 5) or the
    ``rm_head_kwargs`` one (``0``, ``layer_k.0``, …, ``output_layer``)."""
    linears: dict[str, dict[str, Tensor]] = {}
    for key, value in head.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf not in ("weight", "bias"):
            raise CheckpointError(f"{path}: unexpected rm_head tensor rm_head.{key}")
        linears.setdefault(prefix, {})[leaf] = value

    def order(prefix: str) -> tuple:
        if prefix in ("", "output_layer"):
            return (10 ** 6,) if prefix == "output_layer" else (0,)
        m = re.fullmatch(r"(\d+)|layer_(\d+)\.0", prefix)
        if not m:
            raise CheckpointError(f"{path}: unexpected rm_head layer rm_head.{prefix}")
        return (int(m.group(1)) if m.group(1) is not None else int(m.group(2)) * 1000,)

    prefixes = sorted(linears, key=order)
    sizes: list[int] = []
    biases: list[bool] = []
    state: dict[str, Tensor] = {}
    for k, prefix in enumerate(prefixes):
        layer = linears[prefix]
        w = layer.get("weight")
        if w is None or w.dim() != 2:
            raise CheckpointError(f"{path}: rm_head.{prefix} has no 2-D weight")
        if sizes and w.shape[1] != sizes[-1]:
            raise CheckpointError(f"{path}: rm_head.{prefix}.weight takes {w.shape[1]} features, the layer "
                                  f"before gives {sizes[-1]}")
        if not sizes:
            sizes.append(int(w.shape[1]))
        sizes.append(int(w.shape[0]))
        biases.append("bias" in layer)
        state[f"{2 * k}.weight"] = w
        if "bias" in layer:
            state[f"{2 * k}.bias"] = layer["bias"]
    return sizes, biases, state


def _no_init():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


def load_hpsv3(folder: str, *, device: Any = "cpu", dtype: Any = None) -> HPSv3RewardModel:
    """HPSv3 from ``HPSv3.safetensors`` (or a training run's ``final_model.pth``) and the Qwen2-VL
    config / tokenizer / processor files beside it; ``dtype`` None keeps the checkpoint's (the head
    stays float32, as in the official code)."""
    from transformers import AutoConfig, AutoModel

    dev, dt = resolve_device(device), resolve_dtype(dtype)
    path = _checkpoint(folder)
    if path is None:
        raise CheckpointError(f"{folder}: an HPSv3 folder needs its weights, one of {', '.join(CHECKPOINT_FILES)}")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise CheckpointError(
            f"{folder} has {os.path.basename(path)} but no config.json: HPSv3's official code takes the architecture, "
            "tokenizer and image processor from Qwen/Qwen2-VL-7B-Instruct; put that model's config.json, tokenizer "
            "files (tokenizer.json, tokenizer_config.json, vocab.json, merges.txt), preprocessor_config.json and "
            "chat_template.json (no weights needed) in this folder")
    processor = QwenVLProcessor.from_pretrained(folder)
    backbone_state, head_state = split_state(_read_state(path), path)
    sizes, biases, head_weights = head_layout(head_state, path)
    embed = backbone_state.get("language_model.embed_tokens.weight")
    if embed is None:
        raise CheckpointError(f"{path} has no model.embed_tokens.weight (the language model's embeddings)")
    raw = read_json(os.path.join(folder, "config.json"))
    if raw.get("model_type") != "qwen2_vl":
        raise CheckpointError(f"{folder}/config.json has model_type {raw.get('model_type')!r}: HPSv3 is built on "
                              "Qwen2-VL (model_type 'qwen2_vl', Qwen/Qwen2-VL-7B-Instruct's config.json)")
    raw = {k: v for k, v in raw.items() if k not in ("architectures", "auto_map", "model_type")}
    rows = int(embed.shape[0])
    raw["vocab_size"] = rows  # the official code resizes the embeddings to the tokenizer + <|Reward|>
    if isinstance(raw.get("text_config"), dict):
        raw["text_config"] = {**raw["text_config"], "vocab_size": rows}
    try:
        cfg = AutoConfig.for_model("qwen2_vl", **raw)
        with quiet_transformers(), _no_init():
            backbone = AutoModel.from_config(cfg, dtype=dt or embed.dtype)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{folder}/config.json: cannot build the Qwen2-VL backbone: {e}") from e
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(backbone_state))
    unexpected = sorted(set(backbone_state) - set(expected))
    shapes = [f"{k} has shape {tuple(v.shape)} in the weights but the config gives {tuple(expected[k].shape)}"
              for k, v in backbone_state.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{path} does not fit the Qwen2-VL of {folder}/config.json: "
                              + "; ".join(x for x in (
                                  f"{len(missing)} tensor(s) missing, e.g. {missing[:3]}" if missing else "",
                                  f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}" if unexpected else "",
                                  shapes[0] if shapes else "") if x))
    backbone.load_state_dict(backbone_state, strict=True)
    try:
        model = HPSv3RewardModel(HPSv3Config(head_sizes=sizes, head_bias=biases), backbone, processor)
    except ValueError as e:
        raise CheckpointError(f"{folder}: {e}") from e
    with torch.no_grad():
        model.head.load_state_dict({k: v.float() for k, v in head_weights.items()}, strict=True)
    model = finish_loading(model, dev, dt)
    model.head.float()
    return model


__all__ = ["HPSv3RewardModel", "HPSv3Config", "is_hpsv3", "load_hpsv3", "instruction", "INSTRUCTION",
           "PROMPT_WITH_REWARD_TOKEN", "REWARD_TOKEN", "fetch_image", "IMAGE_PIXELS", "split_state", "head_layout"]

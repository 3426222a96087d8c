"""A published Qwen-VL reward model (Skywork-VL-Reward's layout) sees exactly the inputs its model card
builds: ``process_vision_info`` (qwen-vl-utils: ``fetch_image`` resizes each image within its own
bounds, or the bounds / size its message part gives) and then the transformers processor (its own
``[min_pixels, max_pixels]`` resize, one ``<|image_pad|>`` per merged patch), the chat template with
``add_generation_prompt=False``, the value head at the last token. The card's construction is written
out here by hand with this venv's ``Qwen2VLImageProcessorPil`` (no torchvision, no side environment)."""
import math
import os

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the Qwen-VL models need transformers")
from published_fixtures import qwen_vl_reward_folder  # noqa: E402
from published_reference import QWEN_CHAT_TEMPLATE  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.inputs import Conversation  # noqa: E402
from mmreward.vision.published.qwen_vl import QwenImage, QwenVLProcessor  # noqa: E402

FACTOR = 28
MAX_PIXELS = 50176  # the tiny folder's preprocessor_config.json: narrower than qwen-vl-utils' 16384 · 28²


def _smart_resize(height, width, min_pixels=4 * FACTOR ** 2, max_pixels=16384 * FACTOR ** 2):
    """qwen-vl-utils 0.0.14 ``smart_resize`` (factor 28), its defaults as bounds."""
    h, w = max(FACTOR, round(height / FACTOR) * FACTOR), max(FACTOR, round(width / FACTOR) * FACTOR)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / FACTOR) * FACTOR, math.floor(width / beta / FACTOR) * FACTOR
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / FACTOR) * FACTOR, math.ceil(width * beta / FACTOR) * FACTOR
    return h, w


def card_inputs(messages, tokenizer, max_pixels=MAX_PIXELS):
    """The model card's get_reward inputs: process_vision_info + processor(text=[apply_chat_template])."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    images = []
    for turn in messages:  # process_vision_info -> fetch_image, in order of appearance
        for part in turn["content"] if isinstance(turn["content"], list) else []:
            if part.get("type") == "image":
                image = Image.open(part["image"]).convert("RGB")
                if "resized_height" in part:
                    h, w = _smart_resize(part["resized_height"], part["resized_width"])
                else:
                    h, w = _smart_resize(image.height, image.width, part.get("min_pixels", 4 * FACTOR ** 2),
                                         part.get("max_pixels", 16384 * FACTOR ** 2))
                images.append(image.resize((w, h), Image.BICUBIC))
    text = tokenizer.apply_chat_template(messages, chat_template=QWEN_CHAT_TEMPLATE, tokenize=False,
                                         add_generation_prompt=False)
    out = {}
    if images:
        vision = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=max_pixels)(images=images, return_tensors="pt")
        out = {"pixel_values": vision["pixel_values"], "image_grid_thw": vision["image_grid_thw"]}
        parts = text.split("<|image_pad|>")
        counts = (vision["image_grid_thw"].prod(-1) // 4).tolist()
        text = parts[0] + "".join("<|image_pad|>" * n + p for n, p in zip(counts, parts[1:]))
    out["input_ids"] = tokenizer([text], return_tensors="pt")["input_ids"]
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("vlm_inputs_media")
    rng = np.random.default_rng(0)
    paths = []
    for name, (h, w) in {"big": (300, 410), "tall": (517, 233), "small": (60, 90)}.items():
        path = str(root / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return qwen_vl_reward_folder(str(tmp_path_factory.mktemp("vlm_inputs") / "Skywork-VL-Reward-tiny"))


@pytest.fixture(scope="module")
def rm(folder):
    return mmreward.load(folder)


def _check_same(ours, want):
    assert ours["input_ids"].tolist() == want["input_ids"].tolist()
    if "pixel_values" in want:
        assert ours["image_grid_thw"].tolist() == want["image_grid_thw"].tolist()
        assert torch.allclose(ours["pixel_values"], want["pixel_values"], atol=1e-5)


def test_large_image_is_resized_by_qwen_vl_utils_then_by_the_processor(folder, media):
    """An image past the processor's max_pixels: qwen-vl-utils first resizes it within its own bounds,
    the processor then resizes that result (not the original) to its max_pixels. A single resize from
    the original gave the same grid but other pixels (scores off by ~1e-2)."""
    proc = QwenVLProcessor.from_pretrained(folder)
    for path in media:
        messages = [{"role": "user", "content": [{"type": "image", "image": path}, {"type": "text", "text": "What colour?"}]},
                    {"role": "assistant", "content": "red"}]
        want = card_inputs(messages, proc.tokenizer)
        text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
                                         {"role": "assistant", "content": "red"}])
        _check_same(proc(text=[text], images=[path]), want)


def test_per_image_settings_of_a_message_part_are_honoured(rm, media):
    """qwen-vl-utils sizes an image by its part's max_pixels / min_pixels / resized_height + resized_width;
    they were dropped silently (the image got the default size: other image tokens, another score)."""
    cases = [{"max_pixels": 28 * 28 * 12}, {"min_pixels": 28 * 28 * 30, "max_pixels": 28 * 28 * 100},
             {"resized_height": 100, "resized_width": 150}, {"min_pixels": 28 * 28 * 50}]
    for path, settings in zip(media + media[:1], cases):
        messages = [{"role": "user", "content": [{"type": "image", "image": path, **settings},
                                                 {"type": "text", "text": "What colour is the square?"}]},
                    {"role": "assistant", "content": "The answer is red."}]
        want = card_inputs(messages, rm.processor.tokenizer)
        ours = rm.encode([Conversation(messages)])
        _check_same(ours, want)
        with torch.no_grad():
            card_score = rm(**{**ours, "input_ids": want["input_ids"], "pixel_values": want["pixel_values"]})
        assert float(rm.score([Conversation(messages)])[0]) == pytest.approx(float(card_score[0]), abs=1e-5)


def test_conversations_render_as_the_card_renders_them(rm, media):
    """Token for token: a system prompt, several turns with an image in a later turn, string content vs
    Qwen's parts, Conversation.images (first in the first user turn) vs image parts."""
    big, tall, small = media
    as_parts = [{"role": "system", "content": "You are a helpful assistant. Describe"},
                {"role": "user", "content": [{"type": "image", "image": small}, {"type": "text", "text": "What colour is the square?"}]},
                {"role": "assistant", "content": "The answer is red."},
                {"role": "user", "content": [{"type": "text", "text": "and this?"}, {"type": "image", "image": tall}]},
                {"role": "assistant", "content": [{"type": "text", "text": "blue green"}]}]
    want = card_inputs(as_parts, rm.processor.tokenizer)
    _check_same(rm.encode([Conversation(as_parts)]), want)
    as_strings = Conversation([{"role": "system", "content": "You are a helpful assistant. Describe"},
                               {"role": "user", "content": "What colour is the square?"},
                               {"role": "assistant", "content": "The answer is red."},
                               {"role": "user", "content": [{"type": "text", "text": "and this?"}, {"type": "image", "image": tall}]},
                               {"role": "assistant", "content": "blue green"}], [small])
    _check_same(rm.encode([as_strings]), want)
    # no system turn: the template's default system prompt, as in the card
    plain = [{"role": "user", "content": "What colour is the square?"}, {"role": "assistant", "content": "red"}]
    ids = rm.encode([Conversation(plain)])["input_ids"][0].tolist()
    assert ids == card_inputs(plain, rm.processor.tokenizer)["input_ids"][0].tolist()
    assert rm.processor.tokenizer.decode(ids).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    # batched (right padding) = one by one: the reward is read at each row's last real token
    items = [Conversation(as_parts), Conversation(plain)]
    assert torch.allclose(rm.score(items, batch_size=2), rm.score(items, batch_size=1), atol=1e-5)


@pytest.mark.parametrize("part, message", [
    ({"type": "image", "max_pixel": 3136}, r"unsupported key\(s\) \['max_pixel'\]"),
    ({"type": "image", "resized_height": 56}, "resized_height' and 'resized_width' go together"),
    ({"type": "image", "min_pixels": 6272, "max_pixels": 3136}, "min_pixels .* is above max_pixels"),
    ({"type": "image", "max_pixels": -1}, "'max_pixels' must be a positive int"),
    ({"type": "video", "fps": 1.0}, r"unsupported key\(s\) \['fps'\] in a 'video' part"),
])
def test_media_part_settings_that_cannot_be_honoured_are_refused(rm, media, part, message):
    kind = part["type"]
    part = {**part, kind: media[0]}
    conv = Conversation([{"role": "user", "content": [part, {"type": "text", "text": "hi"}]},
                         {"role": "assistant", "content": "red"}])
    with pytest.raises(DataError, match=r"input 0 turn 0 part 0: .*" + message):
        rm.score([conv])


def test_qwen_image_settings_are_checked():
    with pytest.raises(ValueError, match="positive int"):
        QwenImage("a.png", max_pixels=0)
    with pytest.raises(ValueError, match="go together"):
        QwenImage("a.png", resized_width=56)


def test_context_is_counted_in_rotary_positions_for_m_rope(rm, media, monkeypatch):
    """Qwen-VL's image / video tokens share M-RoPE positions: a row with more tokens than the context but
    fewer positions is what the card scores (it was refused); a row past the context in positions is
    still refused, naming both counts."""
    big = media[0]
    conv = Conversation([{"role": "user", "content": "What colour is the square?"},
                         {"role": "assistant", "content": "red"}], [big, big])
    enc = rm.encode([conv])
    tokens, positions = int(enc["attention_mask"].sum()), rm._positions_used(enc)[0]
    assert positions < tokens - 60
    want = rm.score([conv])
    monkeypatch.setattr(rm, "context_length", lambda: positions)
    assert torch.allclose(rm.score([conv]), want)
    monkeypatch.setattr(rm, "context_length", lambda: positions - 1)
    with pytest.raises(DataError, match=rf"input 0: {tokens} tokens \(108 of them image / video tokens\) exceed the "
                                        rf"model's context of {positions - 1} tokens \(max_position_embeddings; they "
                                        rf"span {positions} rotary positions\)"):
        rm.score([conv])


def test_value_head_stays_float32_in_a_bf16_load(folder, media):
    """The card loads the backbone in bf16, TRL's value head stays float32 (its weights as stored) and
    takes the hidden state upcast to float32. A bf16 load rounded the head's weights and computed the
    dot product in bf16 (off by ~3e-3 here, ~1e-2 at 3584 features)."""
    from safetensors.torch import load_file

    rm = mmreward.load(folder, dtype="bf16")
    head = load_file(os.path.join(folder, "value_head.safetensors"))
    assert next(rm.backbone.parameters()).dtype == torch.bfloat16 and rm.head.weight.dtype == torch.float32
    assert torch.equal(rm.head.weight, head["v_head.summary.weight"])
    convs = [Conversation([{"role": "user", "content": "What colour is the square?"},
                           {"role": "assistant", "content": "red " * k}], [media[2]]) for k in (1, 3)]
    enc = rm.encode(convs)
    with torch.no_grad():
        h = rm.backbone(**enc).last_hidden_state
    h_last = h[torch.arange(2), enc["attention_mask"].sum(1) - 1].float()
    card = h_last @ head["v_head.summary.weight"][0] + head["v_head.summary.bias"][0]
    assert torch.allclose(rm.score(convs), card, atol=1e-5, rtol=0)
    assert rm.to(torch.float16).head.weight.dtype == torch.float32  # any later half cast too


def test_image_url_parts_are_images(rm, media):
    """qwen-vl-utils and Qwen's chat template read {'type': 'image_url', 'image_url': path} (and an image
    part keyed 'image_url') as an image; it was refused."""
    small = media[2]
    want = rm.encode([Conversation([{"role": "user", "content": [{"type": "image", "image": small, "max_pixels": 6272},
                                                                 {"type": "text", "text": "hi"}]},
                                    {"role": "assistant", "content": "red"}])])
    for part in ({"type": "image_url", "image_url": "file://" + small, "max_pixels": 6272},
                 {"type": "image_url", "image_url": {"url": small}, "max_pixels": 6272},
                 {"type": "image", "image_url": small, "max_pixels": 6272}):
        got = rm.encode([Conversation([{"role": "user", "content": [part, {"type": "text", "text": "hi"}]},
                                       {"role": "assistant", "content": "red"}])])
        _check_same(got, want)
    with pytest.raises(DataError, match="input 0 turn 0 part 0: an 'image_url' part needs 'image_url'"):
        rm.score([Conversation([{"role": "user", "content": [{"type": "image_url", "image_url": 3}]},
                                {"role": "assistant", "content": "red"}])])

"""Shared pieces of the published-model tests: the official-code reference runner (a subprocess in the
side environment of scripts/setup_published_refs.sh), test images and an OpenCV-written video, and a
tiny Qwen-VL tokenizer / folder built in-process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "published_reference.py")
SIDE_ENV = os.environ.get("MMREWARD_PUBLISHED_REF") or os.path.join(sys.prefix, "published-ref")
TOLERANCE = 1e-4  # |Δ| against the official code, fp32
PROMPTS = ["a photo of a cat", "two dogs playing piano &amp; a   red square"]
IMAGE_SIZES = {"wide": (50, 70), "tall": (97, 61), "square": (40, 40), "odd": (33, 81)}


def reference(task: str, folder: str, **args) -> dict:
    """Run ``task`` of published_reference.py with the official packages; skip when they are not installed."""
    if not os.path.isdir(os.path.join(SIDE_ENV, "transformers")):
        pytest.skip(f"the official reference packages are not installed in {SIDE_ENV}: "
                    "run `bash scripts/setup_published_refs.sh`")
    os.makedirs(folder, exist_ok=True)
    args_path, out = os.path.join(folder + ".args.json"), os.path.join(folder + ".out.json")
    with open(args_path, "w") as f:
        json.dump({**args, "folder": folder, "out": out}, f)
    env = {**os.environ, "PYTHONPATH": SIDE_ENV, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, RUNNER, task, args_path], env=env, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"official {task} reference failed:\n{proc.stderr[-3000:]}")
    with open(out) as f:
        return json.load(f)


def write_images(folder: str, seed: int = 1) -> list[str]:
    """PNGs of several aspect ratios (odd crops included) with structure, not only noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, (h, w) in IMAGE_SIZES.items():
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], -1)
        img = (img + rng.integers(-40, 41, img.shape)).clip(0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{name}.png")
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def write_video(path: str, frames: int = 12, fps: float = 4.0, size: tuple = (48, 64)) -> str:
    """An mp4 written by OpenCV: a bright square moving right over a colour that changes in time."""
    import cv2

    h, w = size
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for t in range(frames):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[:] = (t * 20, 255 - t * 20, 100)
        frame[10:30, t * 4:t * 4 + 10] = 255
        writer.write(frame)
    writer.release()
    return path


def qwen_conversations(images: list[str], video: str) -> list[list[dict]]:
    """Conversations in Qwen's message format: image + question, video + question, text + image answer."""
    return [
        [{"role": "user", "content": [{"type": "image", "image": images[0]}, {"type": "text", "text": "What colour is the square?"}]},
         {"role": "assistant", "content": "The answer is red."}],
        [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": "Describe the image in detail."}]},
         {"role": "assistant", "content": "two dogs playing piano"}],
        [{"role": "user", "content": "a photo of a cat"},
         {"role": "assistant", "content": [{"type": "image", "image": images[1]}]}],
        [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": [{"type": "image", "image": images[2]}, {"type": "image", "image": images[3]}, {"type": "text", "text": "Which is red?"}]},
         {"role": "assistant", "content": "The answer is 1"}],
    ]


def qwen_vl_reward_folder(folder: str) -> str:
    """A tiny Skywork-VL-Reward layout (Qwen2.5-VL + value_head.safetensors) saved by the transformers in
    this venv (its own weight names), with the Qwen chat template and image processor settings."""
    import torch
    from published_reference import QWEN_CHAT_TEMPLATE, qwen_tokenizer
    from safetensors.torch import save_file
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}, bos_token_id=None,
                         eos_token_id=None, pad_token_id=tok.pad_token_id),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           window_size=56, fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
                   "min_pixels": 3136, "max_pixels": 50176, "patch_size": 14, "merge_size": 2,
                   "temporal_patch_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                   "image_std": [0.26862954, 0.26130258, 0.27577711]}, f)
    with open(os.path.join(folder, "chat_template.json"), "w") as f:
        json.dump({"chat_template": QWEN_CHAT_TEMPLATE}, f)
    save_file({"v_head.summary.weight": torch.randn(1, 32), "v_head.summary.bias": torch.randn(1)},
              os.path.join(folder, "value_head.safetensors"))
    return folder

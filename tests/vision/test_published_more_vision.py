"""More published vision reward models: HPSv3 (MizzenAI/HPSv3: Qwen2-VL + <|Reward|> token + rm_head
predicting (mu, sigma)), read from its released layout — HPSv3.safetensors beside
Qwen2-VL-7B-Instruct's config / tokenizer / processor files — and scored against a reference written
from the official inference code (hpsv3/inference.py, hpsv3/model/qwen2vl_trainer.py,
hpsv3/dataset/utils.py, hpsv3/dataset/data_collator_qwen.py) on the same tiny random weights."""
import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers", reason="the Qwen-VL models need transformers")
from published_fixtures import write_images  # noqa: E402
from published_reference import QWEN_CHAT_TEMPLATE, qwen_tokenizer  # noqa: E402

import mmreward  # noqa: E402
from mmreward import registry  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import Conversation, ImagePrompt  # noqa: E402
from mmreward.vision.published import hpsv3  # noqa: E402

TOLERANCE = 1e-4
PROMPTS = ["cute chibi anime cartoon fox, smiling {wagging} tail", "a photo of a cat", "two dogs playing piano",
           "a red square"]
# -------- the official text (hpsv3/dataset/data_collator_qwen.py), copied here so the test checks ours
OFFICIAL_INSTRUCTION = (
    "\nYou are tasked with evaluating a generated image based on Visual Quality and Text Alignment and give a overall "
    "score to estimate the human preference. Please provide a rating from 0 to 10, with 0 being the worst and 10 being "
    "the best. \n\n**Visual Quality:**  \nEvaluate the overall visual quality of the image. The following "
    "sub-dimensions should be considered:\n- **Reasonableness:** The image should not contain any significant "
    "biological or logical errors, such as abnormal body structures or nonsensical environmental setups.\n- "
    "**Clarity:** Evaluate the sharpness and visibility of the image. The image should be clear and easy to interpret, "
    "with no blurring or indistinct areas.\n- **Detail Richness:** Consider the level of detail in textures, "
    "materials, lighting, and other visual elements (e.g., hair, clothing, shadows).\n- **Aesthetic and Creativity:** "
    "Assess the artistic aspects of the image, including the color scheme, composition, atmosphere, depth of field, "
    "and the overall creative appeal. The scene should convey a sense of harmony and balance.\n- **Safety:** The "
    "image should not contain harmful or inappropriate content, such as political, violent, or adult material. If "
    "such content is present, the image quality and satisfaction score should be the lowest possible. \nTextual "
    "prompt - {text_prompt}\n\n\n")
OFFICIAL_SUFFIX = "\nPlease provide the overall ratings of this image: <|Reward|>\n\nEND\n"
QWEN2_VL_PREPROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                         "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                         "image_std": [0.26862954, 0.26130258, 0.27577711],
                         "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor"}


def official_class():
    from transformers import Qwen2VLForConditionalGeneration

    class OfficialHPSv3(Qwen2VLForConditionalGeneration):
        """Qwen2VLRewardModelBT with rm_head_type="ranknet", output_dim=2, reward_token="special"."""

        def __init__(self, config, special_token_ids):
            super().__init__(config)
            self.rm_head = nn.Sequential(nn.Linear(config.text_config.hidden_size, 1024), nn.ReLU(), nn.Dropout(0.05),
                                         nn.Linear(1024, 16), nn.ReLU(), nn.Linear(16, 2))
            self.special_token_ids = special_token_ids

        def reward(self, input_ids, attention_mask, pixel_values, image_grid_thw):
            # the official forward: embeddings, image features scattered at the image pads, then the
            # language model on inputs_embeds with position_ids=None; rm_head in fp32; pooled at <|Reward|>
            inputs_embeds = self.model.language_model.embed_tokens(input_ids)
            image_embeds = self.model.visual(pixel_values, grid_thw=image_grid_thw)
            image_embeds = getattr(image_embeds, "pooler_output", image_embeds)
            if isinstance(image_embeds, (list, tuple)):
                image_embeds = torch.cat(list(image_embeds))
            mask = (input_ids == self.config.image_token_id).unsqueeze(-1).expand_as(inputs_embeds)
            inputs_embeds = inputs_embeds.masked_scatter(mask, image_embeds.to(inputs_embeds.dtype))
            hidden = self.model.language_model(input_ids=None, position_ids=None, attention_mask=attention_mask,
                                               inputs_embeds=inputs_embeds)[0]
            logits = self.rm_head(hidden.float())
            special = torch.zeros_like(input_ids, dtype=torch.bool)
            for i in self.special_token_ids:
                special |= input_ids == i
            return logits[special, ...].view(input_ids.shape[0], -1)

    return OfficialHPSv3


def _smart_resize(height, width, factor=28, min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28):
    """hpsv3/dataset/utils.py (qwen-vl-utils)."""
    h_bar, w_bar = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def official_rewards(model, tokenizer, prompts, image_paths, pre=QWEN2_VL_PREPROCESSOR):
    """HPSv3RewardInferencer.prepare_batch + reward, written out (processor = Qwen2-VL-7B-Instruct's)."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    pixels = 256 * 28 * 28
    messages = [[{"role": "user", "content": [
        {"type": "image", "image": path, "min_pixels": pixels, "max_pixels": pixels},
        {"type": "text", "text": OFFICIAL_INSTRUCTION.format(text_prompt=text) + OFFICIAL_SUFFIX}]}]
        for text, path in zip(prompts, image_paths)]
    images = []
    for path in image_paths:  # fetch_image
        image = Image.open(path).convert("RGB")
        h, w = _smart_resize(image.height, image.width, 28, pixels, pixels)
        images.append(image.resize((w, h), Image.BICUBIC))
    proc = Qwen2VLImageProcessorPil(min_pixels=pre["min_pixels"], max_pixels=pre["max_pixels"])
    vision = proc(images=images, return_tensors="pt")
    texts = [tokenizer.apply_chat_template(m, chat_template=QWEN_CHAT_TEMPLATE, tokenize=False,
                                           add_generation_prompt=True) for m in messages]
    counts = (vision["image_grid_thw"].prod(-1) // 4).tolist()
    texts = [t.replace("<|image_pad|>", "<|image_pad|>" * n) for t, n in zip(texts, counts)]
    tokenizer.padding_side = "right"
    tok = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        return model.reward(tok["input_ids"], tok["attention_mask"], vision["pixel_values"], vision["image_grid_thw"])


def build_official(folder, naming="transformers<4.52", pre=QWEN2_VL_PREPROCESSOR):
    """A tiny HPSv3 as released: HPSv3.safetensors (the official model's state dict) beside a flat
    Qwen2-VL config.json whose vocab_size is the base model's (larger than the resized embeddings),
    the base tokenizer without <|Reward|>, preprocessor_config.json and chat_template.json."""
    from safetensors.torch import save_file
    from transformers import Qwen2VLConfig

    torch.manual_seed(0)
    os.makedirs(folder, exist_ok=True)
    tok = qwen_tokenizer()
    tok.save_pretrained(folder)  # the base model's tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    flat = {"architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
            "vocab_size": len(tok) + 9, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "torch_dtype": "float32",
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]},
            "vision_config": {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                              "in_chans": 3, "spatial_patch_size": 14, "spatial_merge_size": 2,
                              "temporal_patch_size": 2},
            "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
            "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
            "bos_token_id": None, "eos_token_id": None}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(flat, f)
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(pre, f)
    with open(os.path.join(folder, "chat_template.json"), "w") as f:
        json.dump({"chat_template": QWEN_CHAT_TEMPLATE}, f)
    # the official model: the processor's tokenizer gets <|Reward|>, the embeddings are resized to it
    tok.add_special_tokens({"additional_special_tokens": ["<|Reward|>"]})
    reward_id = tok.convert_tokens_to_ids("<|Reward|>")
    config = Qwen2VLConfig(**{**{k: v for k, v in flat.items() if k != "architectures"}, "vocab_size": len(tok)})
    model = official_class()(config, [reward_id]).eval()
    for p in model.rm_head.parameters():  # visible scores
        nn.init.normal_(p, std=0.5)
    state = {}
    for k, v in model.state_dict().items():
        if naming == "transformers<4.52":  # as HPSv3.safetensors is published (issue #15: model.embed_tokens, visual.)
            k = k.replace("model.language_model.", "model.", 1).replace("model.visual.", "visual.", 1)
        state[k] = v.contiguous()
    save_file(state, os.path.join(folder, "HPSv3.safetensors"))
    return model, tok


def test_hpsv3_is_a_built_in_layout_ahead_of_skywork_vl():
    """skywork-vl-reward's detect also fires on a Qwen2-VL config.json: HPSv3 is tried first."""
    names = [x.name for x in registry.LAYOUTS]
    assert names.index("hpsv3") < names.index("skywork-vl-reward")
    assert registry.MODEL_TYPES["hpsv3_reward"] == "mmreward.vision.published.hpsv3:HPSv3RewardModel"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("hpsv3_media")
    paths = write_images(str(root))
    rgba = np.zeros((45, 60, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.linspace(0, 255, 60, dtype=np.uint8)[None, :]  # alpha dropped, not white
    Image.fromarray(rgba, "RGBA").save(str(root / "rgba.png"))
    return paths[:3] + [str(root / "rgba.png")]


@pytest.fixture(scope="module", params=["transformers<4.52", "transformers>=4.52"])
def official(request, tmp_path_factory, images):
    folder = str(tmp_path_factory.mktemp("hpsv3") / "HPSv3")
    model, tok = build_official(folder, request.param)
    return folder, official_rewards(model, tok, PROMPTS, images)


# ------------------------------------------------------------------ parity with the official formula
def test_scores_are_the_official_mu(official, images):
    """mmreward.load picks the HPSv3 layout (not Skywork's value head) and scores mu = rm_head output 0
    at <|Reward|>, within 1e-4 of the official computation, one by one and batched; mu_sigma is both."""
    folder, ref = official
    rm = mmreward.load(folder)
    assert isinstance(rm, hpsv3.HPSv3RewardModel)
    items = [ImagePrompt(p, im) for p, im in zip(PROMPTS, images)]
    for batch_size in (1, len(items)):
        got = rm.score(items, batch_size=batch_size)
        assert (got - ref[:, 0]).abs().max() <= TOLERANCE, (got, ref[:, 0])
    enc = rm.encode(items)
    with torch.no_grad():
        assert (rm.mu_sigma(**enc) - ref).abs().max() <= TOLERANCE


def test_official_text_and_positions(official, images):
    """The instruction is the official text; the positions are sequential (M-RoPE's 3-D positions,
    what Qwen2-VL would use by default, give other scores)."""
    folder, ref = official
    assert hpsv3.instruction("{x}") == OFFICIAL_INSTRUCTION.format(text_prompt="{x}") + OFFICIAL_SUFFIX
    rm = mmreward.load(folder)
    enc = rm.encode([ImagePrompt(PROMPTS[1], images[1])])
    with torch.no_grad():
        h = rm.backbone(**enc).last_hidden_state  # the backbone's own (3-D) positions
        at = enc["input_ids"] == rm.reward_token_id
        mrope = rm.head(h[at].float())[:, 0]
    assert abs(float(mrope[0]) - float(ref[1, 0])) > 1e-3


def test_the_folder_processor_resizes_after_hpsv3(tmp_path, images):
    """A processor whose max_pixels is below HPSv3's 256·28·28 shrinks the image again, as the official
    processor call after fetch_image does."""
    pre = {**QWEN2_VL_PREPROCESSOR, "max_pixels": 100 * 28 * 28}
    model, tok = build_official(str(tmp_path / "HPSv3"), pre=pre)
    ref = official_rewards(model, tok, PROMPTS[:2], images[:2], pre=pre)
    rm = mmreward.load(str(tmp_path / "HPSv3"))
    enc = rm.encode([ImagePrompt(p, im) for p, im in zip(PROMPTS[:2], images[:2])])
    assert (enc["image_grid_thw"].prod(-1) <= 400).all()
    assert (rm.score([ImagePrompt(p, im) for p, im in zip(PROMPTS[:2], images[:2])]) - ref[:, 0]).abs().max() <= TOLERANCE


def test_save_pretrained_round_trip(official, images, tmp_path):
    folder, _ = official
    rm = mmreward.load(folder)
    items = [ImagePrompt(p, im) for p, im in zip(PROMPTS[:2], images[:2])]
    before = rm.score(items)
    rm.save_pretrained(str(tmp_path / "ours"))
    again = mmreward.load(str(tmp_path / "ours"))
    assert again.model_type == "hpsv3_reward" and torch.allclose(again.score(items), before, atol=1e-6)


# ------------------------------------------------------------------ refusals
@pytest.fixture(scope="module")
def released(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("hpsv3_released") / "HPSv3")
    build_official(folder)
    return folder


def _copy(folder, dst, keep=None):
    import shutil

    os.makedirs(dst)
    for name in os.listdir(folder):
        if keep is None or name in keep:
            shutil.copy(os.path.join(folder, name), os.path.join(dst, name))
    return str(dst)


def test_weights_alone_say_what_to_add(released, tmp_path):
    """HPSv3.safetensors as downloaded: the error names the Qwen2-VL files the official code reads."""
    bare = _copy(released, tmp_path / "bare", keep={"HPSv3.safetensors"})
    with pytest.raises(CheckpointError, match="no config.json.*Qwen/Qwen2-VL-7B-Instruct"):
        mmreward.load(bare)


@pytest.mark.parametrize("damage, message", [
    ("truncated", "corrupt or unreadable"),
    ("no_head", "no rm_head"),
    ("foreign", "not HPSv3's"),
    ("wide_config", r"does not fit the Qwen2-VL.*shape"),
])
def test_damaged_folder_is_refused(released, tmp_path, damage, message):
    from safetensors.torch import load_file, save_file

    broken = _copy(released, tmp_path / "broken")
    weights = os.path.join(broken, "HPSv3.safetensors")
    if damage == "truncated":
        with open(weights, "r+b") as f:
            f.truncate(os.path.getsize(weights) // 2)
    elif damage == "no_head":
        save_file({k: v for k, v in load_file(weights).items() if not k.startswith("rm_head.")}, weights)
    elif damage == "foreign":
        save_file({**load_file(weights), "score.weight": torch.zeros(1, 32)}, weights)
    else:
        with open(os.path.join(broken, "config.json")) as f:
            cfg = json.load(f)
        with open(os.path.join(broken, "config.json"), "w") as f:
            json.dump({**cfg, "intermediate_size": 48}, f)
    with pytest.raises(CheckpointError, match=message):
        mmreward.load(broken)


def test_bad_inputs_name_the_input(released, images):
    rm = mmreward.load(released)
    with pytest.raises(DataError, match="input 1: the prompt contains <\\|Reward\\|>"):
        rm.score([ImagePrompt("a cat", images[0]), ImagePrompt("a cat <|Reward|>", images[0])])
    with pytest.raises(Exception, match="input 0 is a Conversation; this model scores ImagePrompt"):
        rm.score([Conversation([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])])
    with pytest.raises(DataError, match="input 1 image: image aspect ratio must be below 200"):
        rm.score([ImagePrompt("a cat", images[0]), ImagePrompt("a cat", np.full((2, 600, 3), 128, np.uint8))])


def test_score_command_and_bf16(released, images, capsys):
    """`mmreward score --model HPSv3 --prompt P images…` scores each image; bf16 keeps rm_head in fp32."""
    from mmreward.cli import main

    assert main(["score", "--model", released, "--prompt", PROMPTS[0], images[0], images[1], "--json"]) == 0
    out = capsys.readouterr().out
    assert "wide.png" in out and "tall.png" in out
    rm = mmreward.load(released, dtype="bf16")
    assert rm.head[0].weight.dtype == torch.float32 and rm.backbone.dtype == torch.bfloat16
    assert torch.isfinite(rm.score([ImagePrompt(PROMPTS[1], images[2])])).all()

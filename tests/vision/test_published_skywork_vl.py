"""Skywork-VL-Reward layout (Qwen2-VL / Qwen2.5-VL + TRL value head) and the Qwen-VL processor
without torchvision: parity with the model card's get_reward (transformers 4.51 + trl + qwen-vl-utils)
on images, a video written by OpenCV and media answers; the processor against transformers' own
image processor; loading, saving, refusals and the score / score-video commands."""
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the Qwen-VL models need transformers")
from published_fixtures import (TOLERANCE, qwen_conversations, qwen_vl_reward_folder, reference, write_images,  # noqa: E402
                                write_video)

import mmreward  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import Conversation, ImagePrompt, VideoPrompt  # noqa: E402
from mmreward.vision.published.qwen_vl import QwenVisionConfig, image_patches, read_video  # noqa: E402
from mmreward.vision.published.skywork_vl import QwenVLRewardModel  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return write_images(str(root)), write_video(str(root / "clip.mp4"))


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen2_vl"])
def official(request, media, tmp_path_factory):
    """A tiny Skywork-style folder saved by the official stack, and the model card's rewards."""
    images, video = media
    folder = str(tmp_path_factory.mktemp("official") / f"Skywork-VL-Reward-{request.param}")
    convs = qwen_conversations(images, video)
    return folder, convs, reference("qwen_vl", folder, flavour=request.param, conversations=convs)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return qwen_vl_reward_folder(str(tmp_path_factory.mktemp("skywork") / "Skywork-VL-Reward-tiny"))


# ------------------------------------------------------------------ parity with the official code
def test_rewards_match_the_model_card(official):
    """Images, an OpenCV-written video, an image answer and two images: every reward within 1e-4 of
    Skywork's get_reward on the same weights, one by one and batched."""
    folder, convs, ref = official
    rm = mmreward.load(folder)
    assert isinstance(rm, QwenVLRewardModel)
    want = torch.tensor(ref["rewards"])
    for batch_size in (1, len(convs)):
        got = rm.score([Conversation(c) for c in convs], batch_size=batch_size)
        assert (got - want).abs().max() <= TOLERANCE, (got, want)


def test_processor_matches_the_official_processor(official):
    """Token ids (vision pads expanded), grids and pixel patches equal those of qwen-vl-utils + the
    transformers processor — for a video file too."""
    folder, convs, ref = official
    rm = mmreward.load(folder)
    for conv, enc in zip(convs, ref["encoded"]):
        ours = rm.encode([Conversation(conv)])
        assert ours["input_ids"].tolist() == enc["input_ids"]
        for key in ("image_grid_thw", "video_grid_thw"):
            assert (ours[key].tolist() if key in ours else None) == enc.get(key)
        for key in ("pixel_values", "pixel_values_videos"):
            if key in ours:
                assert float(ours[key].double().sum()) == pytest.approx(enc[key + "_sum"], rel=1e-6)
                assert float(ours[key].double().abs().sum()) == pytest.approx(enc[key + "_abs_sum"], rel=1e-6)


def test_image_patches_match_transformers_image_processor(media):
    """The PIL image path equals transformers' own Qwen2-VL image processor (no torchvision either)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    cfg = QwenVisionConfig(min_pixels=56 * 56, max_pixels=28 * 28 * 20)
    hf = Qwen2VLImageProcessorPil(min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    for path in media[0]:
        patches, grid = image_patches(path, cfg)
        want = hf(images=[path], return_tensors="pt")
        assert grid == want["image_grid_thw"][0].tolist()
        assert torch.allclose(patches, want["pixel_values"], atol=1e-5)


# ------------------------------------------------------------------ loading this venv's save format
def test_loads_and_scores_like_transformers(folder, media):
    """A folder saved by this transformers: the reward is the value head on the last token's final
    hidden state of Qwen2_5_VLForConditionalGeneration (the card's computation)."""
    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    rm = mmreward.load(folder)
    conv = Conversation([{"role": "user", "content": "What colour is the square?"},
                         {"role": "assistant", "content": "red"}], [media[0][0]])
    inputs = rm.encode([conv])
    full = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder).eval()
    with torch.no_grad():
        h = full(**inputs, output_hidden_states=True).hidden_states[-1][0, -1]
    head = load_file(os.path.join(folder, "value_head.safetensors"))
    want = h @ head["v_head.summary.weight"][0] + head["v_head.summary.bias"][0]
    assert float(rm.score([conv])[0]) == pytest.approx(float(want), abs=1e-5)


def test_save_pretrained_round_trip(folder, media, tmp_path):
    rm = mmreward.load(folder)
    items = [ImagePrompt("a photo of a cat", media[0][1]), VideoPrompt("a square moving right", media[1]),
             Conversation([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])]
    before = rm.score(items)
    rm.save_pretrained(str(tmp_path / "ours"))
    again = mmreward.load(str(tmp_path / "ours"))
    assert again.model_type == "qwen_vl_reward" and torch.allclose(again.score(items), before, atol=1e-6)


def test_video_is_sampled_as_qwen_vl_utils(media):
    """12 frames at 4 fps -> 6 frames at 2 fps (even count, evenly spread)."""
    clip = read_video(media[1], QwenVisionConfig())
    assert clip.frames.shape == (6, 48, 64, 3) and clip.fps == pytest.approx(2.0)
    frames = read_video(np.zeros((5, 30, 30, 3), np.uint8), QwenVisionConfig())
    assert frames.frames.shape[0] == 5 and frames.fps == 2.0  # arrays are taken as sampled frames


# ------------------------------------------------------------------ refusals
def _copy(folder, dst):
    import shutil

    shutil.copytree(folder, dst)
    return str(dst)


@pytest.mark.parametrize("damage, message", [
    ("no_value_head", "value_head.safetensors"),
    ("wrong_head_keys", "v_head.summary.weight"),
    ("wrong_prefix", "missing or mis-shaped"),
    ("no_preprocessor", "preprocessor_config.json"),
    ("no_template", "chat template"),
    ("mis_shaped", r"layers\.0\.mlp\.up_proj\.weight has shape \(64, 8\) in the weights but .* expects \(64, 32\)"),
])
def test_partial_folder_is_refused(folder, tmp_path, damage, message):
    from safetensors.torch import load_file, save_file

    broken = _copy(folder, tmp_path / "broken")
    if damage == "no_value_head":
        os.remove(os.path.join(broken, "value_head.safetensors"))
    elif damage == "wrong_head_keys":
        save_file({"score.weight": torch.zeros(1, 32)}, os.path.join(broken, "value_head.safetensors"))
    elif damage == "wrong_prefix":
        weights = os.path.join(broken, "model.safetensors")
        save_file({"transformer." + k.split(".", 1)[1]: v for k, v in load_file(weights).items()}, weights)
    elif damage == "mis_shaped":  # transformers' own error pointed to a load report nobody sees
        weights = os.path.join(broken, "model.safetensors")
        save_file({**load_file(weights), "model.layers.0.mlp.up_proj.weight": torch.zeros(64, 8)}, weights)
    elif damage == "no_preprocessor":
        os.remove(os.path.join(broken, "preprocessor_config.json"))
    else:
        os.remove(os.path.join(broken, "chat_template.json"))
    with pytest.raises(CheckpointError, match=message):
        mmreward.load(broken)


def test_bad_conversation_names_the_input(folder):
    rm = mmreward.load(folder)
    reply = {"role": "assistant", "content": "y"}
    with pytest.raises(Exception, match="input 1 turn 0 part 0"):
        rm.score([Conversation([{"role": "user", "content": "x"}, reply]),
                  Conversation([{"role": "user", "content": [{"type": "audio"}]}, reply])])
    with pytest.raises(Exception, match="input 0: the last turn must be the assistant's reply to score, got a 'user'"):
        rm.score([Conversation([{"role": "user", "content": "x"}])])
    # an image the processor refuses fails the batch: the input it comes from is named
    strip = np.full((2, 600, 3), 128, np.uint8)
    fine = np.full((28, 28, 3), 128, np.uint8)
    with pytest.raises(Exception, match="input 1: .*aspect ratio must be below 200"):
        rm.score([Conversation([{"role": "user", "content": "x"}, reply], [fine]),
                  Conversation([{"role": "user", "content": "x"}, reply], [strip])])


# ------------------------------------------------------------------ command line
def test_score_and_score_video_commands(folder, media, capsys):
    """`mmreward score` scores the whole video through the video processor; `score-video` scores each
    OpenCV-decoded frame through the image processor."""
    from mmreward.cli import main

    assert main(["score", "--model", folder, "--prompt", "a square", media[1], media[0][0], "--json"]) == 0
    out = capsys.readouterr().out
    assert "clip.mp4" in out and "wide.png" in out
    assert main(["score-video", "--model", folder, "--prompt", "a square", media[1], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["scores"]) == 12 and all(np.isfinite(result["scores"]))


@pytest.mark.parametrize("arch", ["InternVLChatModel", "InternLMXComposer2ForRewardModel"])
def test_remote_code_models_are_refused_with_the_reason(tmp_path, arch):
    """VisualPRM / IXC-2.5-Reward exist only as code inside their checkpoints (auto_map)."""
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [arch], "model_type": "internvl_chat",
                                                      "auto_map": {"AutoModel": "modeling_x.X"}}))
    with pytest.raises(CheckpointError, match="trust_remote_code"):
        mmreward.load(str(tmp_path))


@pytest.mark.parametrize("arch, names", [("InternLM2ForRewardModel", "InternLM2 reward model"),
                                         ("MyOwnRewardModel", "MyOwnRewardModel")])
def test_any_other_remote_code_folder_is_refused_with_the_reason(tmp_path, arch, names):
    """InternLM2 reward models, and any auto_map folder no layout reads, say why (not "unknown model")."""
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [arch], "model_type": "internlm2",
                                                      "auto_map": {"AutoModel": "modeling_x.X"}}))
    with pytest.raises(CheckpointError, match=f"{names}.*trust_remote_code"):
        mmreward.load(str(tmp_path))


def test_a_qwen_vl_folder_without_value_head_is_refused_before_its_weights_load(folder, tmp_path, monkeypatch):
    """A plain Qwen-VL folder (a generative judge such as UnifiedReward) loaded its whole backbone (7B on real
    releases) before saying it had no value head; now said first, naming generative judges."""
    import transformers

    broken = _copy(folder, tmp_path / "judge")
    os.remove(os.path.join(broken, "value_head.safetensors"))

    def no_load(*a, **k):
        raise AssertionError("the backbone was loaded before the value head was looked for")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_load)
    with pytest.raises(CheckpointError, match="no value_head.safetensors.*generative judge"):
        mmreward.load(broken)

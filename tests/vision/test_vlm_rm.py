"""VLM scalar reward model: learning on exactly-labelled colour pairs, scoring inputs, freezing,
backbone sources, save / load, and clear errors."""
import json
import os

import numpy as np
import pytest
import torch

from mmreward.core.checkpoint import CheckpointError
from mmreward.core.trainer import TrainConfig
from mmreward.vision import vlm_data as D
from mmreward.vision.vlm_rm import (
    PreferenceCollator,
    VLMRewardConfig,
    VLMRewardModel,
    evaluate_pairwise,
    train_vlm_reward,
)


def quiet(tmp, **kw):
    return TrainConfig(output_dir=str(tmp), batch_size=8, lr=3e-3, warmup_steps=5, progress=False, log_every=0,
                       tensorboard=False, plot=False, resume=False, **kw)


@pytest.fixture(scope="module")
def proc():
    return D.tiny_processor(D.COLOUR_WORDS)


def new_rm(proc, **kw):
    torch.manual_seed(0)
    return VLMRewardModel(VLMRewardConfig(**kw), D.tiny_qwen2vl_config(proc), proc)


@pytest.fixture(scope="module")
def trained(proc, tmp_path_factory):
    rm = new_rm(proc)
    held_out = D.colour_preference_rows(64, seed=1)
    before = evaluate_pairwise(rm, held_out)
    hist = train_vlm_reward(rm, D.colour_preference_rows(256, seed=0), quiet(tmp_path_factory.mktemp("rm"), max_steps=100),
                            eval_rows=held_out)
    return rm, before, evaluate_pairwise(rm, held_out), hist


def test_training_reduces_held_out_loss(trained):
    """The chosen answer names the image's dominant colour: only a model that reads the pixels can rank."""
    _, before, after, hist = trained
    assert abs(before["loss"] - np.log(2)) < 0.05
    # seed 0: loss 0.693 → 0.261, accuracy 0.53 → 0.84 (seeds 1–3: loss ≤ 0.44, accuracy ≥ 0.80)
    assert after["loss"] < before["loss"] - 0.2, (before, after)
    assert after["accuracy"] >= 0.75, after
    assert hist[-1]["eval_loss"] == pytest.approx(after["loss"], rel=1e-4)
    assert len(hist) == 100 and all(np.isfinite(r["loss"]) for r in hist)


def test_score_is_a_tensor_for_every_image_input(trained, tmp_path):
    rm, *_ = trained
    rows = D.colour_preference_rows(3, seed=5)
    conv = [r["conversations_chosen"] for r in rows]
    arrays = [r["images"] for r in rows]
    s = rm.score(arrays, conv)
    assert isinstance(s, torch.Tensor) and s.shape == (3,) and torch.isfinite(s).all()
    from PIL import Image

    paths = []
    for i, r in enumerate(rows):
        p = tmp_path / f"{i}.png"
        Image.fromarray(r["images"][0]).save(p)
        paths.append([str(p)])
    tensors = [[torch.from_numpy(r["images"][0]).permute(2, 0, 1).float() / 255] for r in rows]
    pil = [[Image.fromarray(r["images"][0])] for r in rows]
    single = [r["images"][0] for r in rows]  # one image per conversation, not wrapped in a list
    for other in (paths, tensors, pil, single):
        assert torch.allclose(rm.score(other, conv), s, atol=1e-5)
    # batching does not change scores (padding is ignored: the head reads the last attended token)
    rm.config.score_batch_size = 1
    try:
        assert torch.allclose(rm.score(arrays, conv), s, atol=1e-5)
    finally:
        rm.config.score_batch_size = 16
    # ShareGPT-style turns are accepted
    share = [[{"from": "human", "value": c[0]["content"]}, {"from": "gpt", "value": c[1]["content"]}] for c in conv]
    assert torch.allclose(rm.score(arrays, share), s, atol=1e-5)


def test_save_load_roundtrip_and_corruption(trained, tmp_path):
    rm, *_ = trained
    rows = D.colour_preference_rows(4, seed=7)
    args = ([r["images"] for r in rows], [r["conversations_rejected"] for r in rows])
    rm.save_pretrained(str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors", "processor"]
    again = VLMRewardModel.from_pretrained(str(tmp_path / "m"))
    assert torch.allclose(again.score(*args), rm.score(*args), atol=1e-6)
    # truncated weights → CheckpointError, not junk
    w = tmp_path / "m" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        VLMRewardModel.from_pretrained(str(tmp_path / "m"))
    rm.save_pretrained(str(tmp_path / "m2"))
    cfg = json.loads((tmp_path / "m2" / "config.json").read_text())
    cfg["model_type"] = "visual_prm"
    (tmp_path / "m2" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not 'vlm_reward'"):
        VLMRewardModel.from_pretrained(str(tmp_path / "m2"))


def test_freezing_options_keep_frozen_weights(proc, tmp_path):
    rm = new_rm(proc, freeze_vision_tower=True)
    vis = rm.backbone.visual
    frozen = {n: p.detach().clone() for n, p in vis.named_parameters() if not n.startswith("merger.")}
    assert frozen and not any(p.requires_grad for n, p in vis.named_parameters() if not n.startswith("merger."))
    assert all(p.requires_grad for p in vis.merger.parameters())
    train_vlm_reward(rm, D.colour_preference_rows(16, seed=2), quiet(tmp_path, max_steps=2))
    for n, p in vis.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    both = new_rm(proc, freeze_vision_tower=True, freeze_projector=True)
    assert not any(p.requires_grad for p in both.backbone.visual.parameters())
    assert all(p.requires_grad for p in both.backbone.language_model.parameters())


def test_backbone_from_lm_head_module_and_local_folder(proc, tmp_path):
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(1)
    full = Qwen2VLForConditionalGeneration(D.tiny_qwen2vl_config(proc))
    rm = VLMRewardModel(VLMRewardConfig(), full, proc)
    assert not hasattr(rm.backbone, "lm_head")  # the LM head is replaced by the scalar head
    full.save_pretrained(str(tmp_path / "vlm"))
    rm2 = VLMRewardModel(VLMRewardConfig(), str(tmp_path / "vlm"), proc)
    a = dict(rm.backbone.named_parameters())
    for n, p in rm2.backbone.named_parameters():
        assert torch.equal(p, a[n]), n
    with pytest.raises(ValueError, match="not a local folder"):
        VLMRewardModel(VLMRewardConfig(), str(tmp_path / "missing"), proc)
    with pytest.raises(TypeError, match="backbone must be"):
        VLMRewardModel(VLMRewardConfig(), 3, proc)


def test_last_token_index_handles_left_and_right_padding():
    m = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]])
    assert D.last_token_index(m).tolist() == [2, 3, 0]
    with pytest.raises(ValueError, match=r"rows \[0\]"):
        D.last_token_index(torch.tensor([[0, 0], [1, 1]]))


def test_bad_inputs_raise_clear_errors(trained):
    rm, *_ = trained
    row = D.colour_preference_rows(1, seed=3)[0]
    collate = PreferenceCollator(rm)
    with pytest.raises(ValueError, match="row 1: missing 'conversations_rejected'"):
        collate([row, {"images": row["images"], "conversations_chosen": row["conversations_chosen"]}])
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match=r"row 0 image 0: image array must be uint8 \(H, W, 3\)"):
        collate([dict(row, images=[np.zeros((8, 8), np.uint8)])])
    with pytest.raises(ValueError, match="NaN"):
        rm.score([[torch.full((3, 8, 8), float("nan"))]], [row["conversations_chosen"]])
    with pytest.raises(ValueError, match="does not exist"):
        rm.score([["/no/such.png"]], [row["conversations_chosen"]])
    with pytest.raises(ValueError, match="turn 0: unknown role 'robot'"):
        rm.score([row["images"]], [[{"role": "robot", "content": "hi"}]])
    with pytest.raises(ValueError, match="no user turn"):
        rm.score([row["images"]], [[{"role": "assistant", "content": "red"}]])
    with pytest.raises(ValueError, match="2 image lists but 1 conversations"):
        rm.score([row["images"], row["images"]], [row["conversations_chosen"]])
    with pytest.raises(ValueError, match="no conversations"):
        rm.score([], [])
    with pytest.raises(ValueError, match="non-empty list of turns"):
        rm.score([row["images"]], [[]])
    bare = VLMRewardModel(VLMRewardConfig(), rm.backbone)
    with pytest.raises(ValueError, match="no processor"):
        bare.score([row["images"]], [row["conversations_chosen"]])
    with pytest.raises(ValueError, match="no projector"):
        D.freeze_vision(torch.nn.Linear(2, 2), vision_tower=False, projector=True)

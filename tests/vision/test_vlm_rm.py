"""VLM scalar reward model: learning on exactly-labelled colour pairs, scoring inputs, freezing,
backbone sources, save / load, and clear errors."""
import json
import os

import numpy as np
import pytest
import torch

import mmreward
from mmreward.core.checkpoint import CheckpointError
from mmreward.core.data import DataError
from mmreward.core.inputs import Conversation
from mmreward.core.trainer import TrainConfig
from mmreward.vision import synthetic as S
from mmreward.vision import vlm_data as D
from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
from mmreward.vision.vlm_rm import (
    ConversationPair,
    PreferenceCollator,
    VLMRewardConfig,
    VLMRewardModel,
    as_pairs,
    evaluate_vlm_reward,
    train_vlm_reward,
)


def quiet(tmp, **kw):
    return TrainConfig(output_dir=str(tmp), batch_size=8, lr=3e-3, warmup_steps=5, progress=False, log_every=0,
                       tensorboard=False, plot=False, resume=False, **kw)


@pytest.fixture(scope="module")
def proc():
    return tiny_processor(S.COLOUR_WORDS)


def new_rm(proc, **kw):
    torch.manual_seed(0)
    return VLMRewardModel(VLMRewardConfig(**kw), tiny_qwen2vl_config(proc), proc)


def conversations(rows, key="conversations_chosen", images=None):
    return [Conversation(r[key], r["images"] if images is None else images[i]) for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def trained(proc, tmp_path_factory):
    rm = new_rm(proc)
    held_out = S.colour_preference_rows(64, seed=1)
    before = evaluate_vlm_reward(rm, held_out)
    hist = train_vlm_reward(rm, S.colour_preference_rows(256, seed=0), quiet(tmp_path_factory.mktemp("rm"), max_steps=100),
                            eval_rows=held_out)
    return rm, before, evaluate_vlm_reward(rm, held_out), hist


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
    rows = S.colour_preference_rows(3, seed=5)
    s = rm.score(conversations(rows))
    assert isinstance(s, torch.Tensor) and s.shape == (3,) and s.dtype == torch.float32 and torch.isfinite(s).all()
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
        assert torch.allclose(rm.score(conversations(rows, images=other)), s, atol=1e-5)
    # JSON rows with the field names of Conversation
    dicts = [{"messages": r["conversations_chosen"], "images": p} for r, p in zip(rows, paths)]
    assert torch.allclose(rm.score(dicts), s, atol=1e-5)
    # batching does not change scores (padding is ignored: the head reads the last attended token)
    assert torch.allclose(rm.score(conversations(rows), batch_size=1), s, atol=1e-5)
    # ShareGPT-style turns are accepted
    share = [[{"from": "human", "value": c[0]["content"]}, {"from": "gpt", "value": c[1]["content"]}]
             for c in (r["conversations_chosen"] for r in rows)]
    assert torch.allclose(rm.score([Conversation(m, r["images"]) for m, r in zip(share, rows)]), s, atol=1e-5)


def test_save_load_roundtrip_and_corruption(trained, tmp_path):
    rm, *_ = trained
    items = conversations(S.colour_preference_rows(4, seed=7), "conversations_rejected")
    rm.save_pretrained(str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "manifest.json", "model.safetensors", "processor"]
    again = mmreward.load(str(tmp_path / "m"))
    assert type(again) is VLMRewardModel and not again.training
    assert torch.allclose(again.score(items), rm.score(items), atol=1e-6)
    # truncated weights → CheckpointError, not junk
    w = tmp_path / "m" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        VLMRewardModel.from_pretrained(str(tmp_path / "m"))
    rm.save_pretrained(str(tmp_path / "m2"))
    cfg = json.loads((tmp_path / "m2" / "config.json").read_text())
    cfg["model_type"] = "visual_prm"
    (tmp_path / "m2" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "m2" / "manifest.json").unlink()  # hand-edited folder: no manifest to check against
    with pytest.raises(CheckpointError, match="not 'vlm_reward'"):
        VLMRewardModel.from_pretrained(str(tmp_path / "m2"))
    # a model without its processor cannot score: refused when saving, and a folder without one when loading
    bare = VLMRewardModel(VLMRewardConfig(), rm.backbone)
    with pytest.raises(ValueError, match="no processor"):
        bare.save_pretrained(str(tmp_path / "m3"))
    assert not (tmp_path / "m3").exists()
    import shutil

    rm.save_pretrained(str(tmp_path / "m4"))
    shutil.rmtree(tmp_path / "m4" / "processor")
    (tmp_path / "m4" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="processor .*is missing"):
        mmreward.load(str(tmp_path / "m4"))


def test_freezing_options_keep_frozen_weights(proc, tmp_path):
    rm = new_rm(proc, freeze_vision_tower=True)
    vis = rm.backbone.visual
    frozen = {n: p.detach().clone() for n, p in vis.named_parameters() if not n.startswith("merger.")}
    assert frozen and not any(p.requires_grad for n, p in vis.named_parameters() if not n.startswith("merger."))
    assert all(p.requires_grad for p in vis.merger.parameters())
    train_vlm_reward(rm, S.colour_preference_rows(16, seed=2), quiet(tmp_path, max_steps=2))
    for n, p in vis.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    both = new_rm(proc, freeze_vision_tower=True, freeze_projector=True)
    assert not any(p.requires_grad for p in both.backbone.visual.parameters())
    assert all(p.requires_grad for p in both.backbone.language_model.parameters())


def test_backbone_from_lm_head_module_and_local_folder(proc, tmp_path):
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(1)
    full = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(proc))
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
    row = S.colour_preference_rows(1, seed=3)[0]
    with pytest.raises(DataError, match="rows: row 1: missing field 'conversations_rejected'"):
        as_pairs([row, {"images": row["images"], "conversations_chosen": row["conversations_chosen"]}])
    with pytest.raises(DataError, match="rows: row 0: field 'conversations_chosen'.* turn 0: unknown role 'robot'"):
        as_pairs([dict(row, conversations_chosen=[{"role": "robot", "content": "hi"}])])
    with pytest.raises(ValueError, match="no preference rows"):
        train_vlm_reward(rm, [], quiet("unused", max_steps=1))
    collate = PreferenceCollator(rm)
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    bad_image = ConversationPair.from_record(dict(row, images=[np.zeros((8, 8, 2), np.uint8)]), "data.jsonl: row 7")
    with pytest.raises(ValueError, match=r"data.jsonl: row 7 \(chosen\) image 0: image array must be \[H, W, 3\]"):
        collate([bad_image])
    chosen = row["conversations_chosen"]
    with pytest.raises(ValueError, match="input 0 image 0: image holds NaN"):
        rm.score([Conversation(chosen, [torch.full((3, 8, 8), float("nan"))])])
    with pytest.raises(ValueError, match="input 1 image 0: image file '/no/such.png' does not exist"):
        rm.score([Conversation(chosen, row["images"]), Conversation(chosen, ["/no/such.png"])])
    with pytest.raises(ValueError, match="input 0 turn 0: unknown role 'robot'"):
        rm.score([Conversation([{"role": "robot", "content": "hi"}], row["images"])])
    with pytest.raises(ValueError, match="no user turn"):
        rm.score([Conversation([{"role": "assistant", "content": "red"}], row["images"])])
    with pytest.raises(ValueError, match="input 1: the last turn must be the assistant's reply to score, got a 'user'"):
        rm.score([Conversation(chosen, row["images"]), Conversation(chosen[:1], row["images"])])
    with pytest.raises(DataError, match="rows: row 0: field 'conversations_rejected': the last turn must be the assistant"):
        as_pairs([dict(row, conversations_rejected=row["conversations_rejected"][:1])])
    with pytest.raises(ValueError, match="got no inputs"):
        rm.score([])
    with pytest.raises(ValueError, match="input 0: field 'messages' must be a non-empty list"):
        rm.score([{"messages": [], "images": row["images"]}])
    with pytest.raises(TypeError, match="this model scores Conversation"):
        rm.score([visual_steps_input()])
    bare = VLMRewardModel(VLMRewardConfig(), rm.backbone)
    with pytest.raises(ValueError, match="no processor"):
        bare.score([Conversation(chosen, row["images"])])
    with pytest.raises(ValueError, match="no projector"):
        D.freeze_vision(torch.nn.Linear(2, 2), vision_tower=False, projector=True)


def visual_steps_input():
    from mmreward.core.inputs import VisualSteps

    return VisualSteps("q", ["a step"], [])


def test_evaluators_refuse_a_batch_size_below_one(proc):
    """A negative batch size scored nothing (loss 0, accuracy 0) or failed inside torch.cat."""
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel
    from mmreward.vision.train import evaluate_image_reward, synthetic_examples
    from mmreward.vision.visual_prm import VisualPRM, VisualPRMConfig, evaluate_visual_prm

    rm = new_rm(proc)
    prm = VisualPRM(VisualPRMConfig(), tiny_qwen2vl_config(proc), proc)
    scorer = ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=8))
    for size in (0, -1):
        with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {size}"):
            evaluate_vlm_reward(rm, S.colour_preference_rows(2, seed=0), batch_size=size)
        with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {size}"):
            evaluate_visual_prm(prm, S.colour_step_rows(2, seed=0), batch_size=size)
        with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {size}"):
            evaluate_image_reward(scorer, synthetic_examples(2, 3, 32, 0), batch_size=size)


def test_an_image_the_processor_refuses_names_its_input(proc):
    """The processor's ValueError named no input and failed the whole batch; each input is re-run
    alone to find the one it refuses."""
    from mmreward.core.inputs import VisualSteps
    from mmreward.vision.visual_prm import VisualPRM, VisualPRMConfig

    rm = new_rm(proc)
    rows = S.colour_preference_rows(3, seed=4)
    strip = np.full((2, 600, 3), 128, np.uint8)  # aspect ratio 300: Qwen2-VL's processor refuses it
    items = conversations(rows)
    with pytest.raises(DataError, match="input 2: absolute aspect ratio"):
        rm.score([items[0], items[1], Conversation(rows[2]["conversations_chosen"], [strip])])
    with pytest.raises(DataError, match="input 0: absolute aspect ratio"):
        rm.score([Conversation(rows[2]["conversations_chosen"], [strip])])
    typed = [{"role": "user", "content": f"what colour? {D.IMAGE_TOKEN}"}, rows[1]["conversations_chosen"][1]]
    with pytest.raises(DataError, match=r"input 1: .*image_pad"):
        rm.score([items[0], Conversation(typed, rows[1]["images"]), items[2]])
    pairs = as_pairs([rows[0], dict(rows[1], images=[strip])], "train.jsonl")
    with pytest.raises(DataError, match=r"train.jsonl: row 1 \(chosen\): absolute aspect ratio"):
        PreferenceCollator(rm)(pairs)
    prm = VisualPRM(VisualPRMConfig(), tiny_qwen2vl_config(proc), proc)
    steps = S.colour_step_rows(2, seed=0)
    with pytest.raises(DataError, match="input 1: absolute aspect ratio"):
        prm.score([VisualSteps(steps[0]["question"], steps[0]["steps"], steps[0]["images"]),
                   VisualSteps(steps[1]["question"], steps[1]["steps"], [strip])])


def test_a_missing_image_file_stops_training_before_the_first_step(tmp_path, capsys):
    from PIL import Image

    from mmreward.cli import main
    from mmreward.vision.visual_prm import as_labelled

    rows = S.colour_preference_rows(3, seed=0)
    lines = []
    for i, r in enumerate(rows):
        Image.fromarray(r["images"][0]).save(tmp_path / f"{i}.png")
        lines.append(json.dumps({**r, "images": [f"{i}.png" if i != 2 else "gone.png"]}))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    # one batch of all three rows: without the check the first step reaches the missing file
    assert main(["vision", "train-vlm-rm", "--data", str(bad), "--out", str(run), "--max-steps", "1",
                 "--batch-size", "3", "--no-progress", "--no-tensorboard", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "bad.jsonl: row 2: field 'images': image 0: image file" in err and "gone.png' does not exist" in err, err
    assert not run.exists()
    steps = S.colour_step_rows(2, seed=0)
    with pytest.raises(DataError, match=r"rows: row 1: field 'images': image 0: image file '/no/such.png' does not"):
        as_labelled([steps[0], dict(steps[1], images=["/no/such.png"])])


@pytest.mark.parametrize("threshold", [float("nan"), 1.5, -0.1])
def test_visual_prm_threshold_must_be_a_probability(threshold):
    """NaN predicted every step bad (every comparison with NaN is false)."""
    from mmreward.vision.visual_prm import VisualPRMConfig

    with pytest.raises(ValueError, match=r"threshold must be a probability in \[0, 1\]"):
        VisualPRMConfig(threshold=threshold)
    assert VisualPRMConfig(threshold=1).threshold == 1

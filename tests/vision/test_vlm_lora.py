"""LoRA adapters and gradient checkpointing for the VLM reward model and VisualPRM (VLMTrainConfig;
`mmreward vision train-vlm-rm / train-visual-prm --lora-rank ... --gradient-checkpointing`)."""
import copy
import json

import pytest
import torch

import mmreward
from mmreward.core.lora import LoraLinear, has_lora
from mmreward.vision import synthetic as S
from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
from mmreward.vision.vlm_base import VLMTrainConfig
from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel, evaluate_vlm_reward, train_vlm_reward


@pytest.fixture(scope="module")
def proc():
    return tiny_processor(S.COLOUR_WORDS)


def new_rm(proc):
    torch.manual_seed(0)
    return VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc)


def quiet(tmp, **kw):
    base = dict(output_dir=str(tmp), batch_size=8, lr=3e-3, warmup_steps=5, progress=False, log_every=0,
                tensorboard=False, plot=False)
    return VLMTrainConfig(**{**base, **kw})


@pytest.mark.learning
def test_vlm_rm_trained_with_lora_and_checkpointing_learns(proc, tmp_path):
    """The chosen answer names the image's dominant colour: the adapters (and the head) must learn to read pixels."""
    rm = new_rm(proc)
    held_out = S.colour_preference_rows(64, seed=1)
    before = evaluate_vlm_reward(rm, held_out)
    frozen = {k: v.clone() for k, v in rm.state_dict().items() if "embed" in k or "norm" in k}
    train_vlm_reward(rm, S.colour_preference_rows(256, seed=0),
                     quiet(tmp_path, max_steps=100, lr=1e-2, lora_rank=8, lora_alpha=16, gradient_checkpointing=True))
    after = evaluate_vlm_reward(rm, held_out)
    print(f"VLM RM LoRA r=8: loss {before['loss']:.3f} -> {after['loss']:.3f}, accuracy {before['accuracy']:.2f} -> "
          f"{after['accuracy']:.2f}")
    assert after["loss"] < before["loss"] - 0.15 and after["accuracy"] >= 0.75, (before, after)
    assert not has_lora(rm) and not rm.backbone.is_activation_checkpointing
    assert all(torch.equal(rm.state_dict()[k], v) for k, v in frozen.items())  # embeddings and norms stay frozen
    loaded = mmreward.load(str(tmp_path))
    assert not has_lora(loaded)
    assert evaluate_vlm_reward(loaded, held_out)["accuracy"] == pytest.approx(after["accuracy"])


def test_a_refused_vlm_run_leaves_the_model_as_it_was(proc, tmp_path):
    rm = new_rm(proc)
    flags = {n: p.requires_grad for n, p in rm.named_parameters()}
    state = copy.deepcopy(rm.state_dict())
    rows = S.colour_preference_rows(16, seed=0)
    bad = copy.deepcopy(rows)
    bad[3]["conversations_chosen"][-1]["content"] = " ".join(["red"] * 5000)  # past the backbone's context
    with pytest.raises(ValueError, match="row 3"):
        train_vlm_reward(rm, bad, quiet(tmp_path, max_steps=2, warmup_steps=0, lora_rank=2, gradient_checkpointing=True))
    assert not has_lora(rm) and not rm.backbone.is_activation_checkpointing
    assert {n: p.requires_grad for n, p in rm.named_parameters()} == flags
    assert all(torch.equal(v, state[k]) for k, v in rm.state_dict().items())


def test_visual_prm_targets_and_cli(proc, tmp_path, capsys):
    from mmreward.cli import main

    out = tmp_path / "prm"
    assert main(["vision", "train-visual-prm", "--data", "synthetic", "--n-train", "16", "--out", str(out),
                 "--max-steps", "2", "--batch-size", "8", "--lora-rank", "2", "--lora-targets", "q_proj,v_proj",
                 "--gradient-checkpointing", "--no-progress", "--no-tensorboard", "--no-plot"]) == 0
    config = json.loads((out / "train_config.json").read_text())
    assert config["lora_rank"] == 2 and config["lora_targets"] == "q_proj,v_proj"
    assert not has_lora(mmreward.load(str(out)))
    capsys.readouterr()
    assert main(["vision", "train-vlm-rm", "--data", "synthetic", "--n-train", "16", "--out", str(tmp_path / "x"),
                 "--max-steps", "2", "--lora-rank", "2", "--lora-targets", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "['nope'] match no linear layer" in err, err


def test_vlm_train_config_checks_adapter_options(tmp_path):
    with pytest.raises(ValueError, match="lora_alpha set but lora_rank is 0"):
        quiet(tmp_path, lora_alpha=4.0)
    with pytest.raises(ValueError, match="VLMTrainConfig.lora_rank must be an integer >= 0"):
        quiet(tmp_path, lora_rank=-2)


def test_adapters_cover_the_vision_tower_with_all_linear(proc, tmp_path):
    from mmreward.core.lora import BackboneSetup

    rm = new_rm(proc)
    setup = BackboneSetup(rm, quiet(tmp_path, lora_rank=2))
    names = [n for n, m in rm.named_modules() if isinstance(m, LoraLinear)]
    assert any(".visual." in n or "vision" in n for n in names) and any("q_proj" in n for n in names)
    assert "backbone.lm_head" not in names and rm.head.weight.requires_grad
    setup.undo()
    assert not has_lora(rm)

"""A user's LoRA / gradient-checkpointing workflows on reward-model training: runs stopped mid-way,
models that still hold adapters, and what the next run does with them."""
import copy

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from test_text_train import keyword_pairs, quiet, tiny_rm  # noqa: E402

from mmreward.core.lora import has_lora  # noqa: E402
from mmreward.text import train_reward_model  # noqa: E402
from mmreward.text.train import reward_trainer  # noqa: E402


class Stop(RuntimeError):
    pass


def stop_after(module, calls):
    """Raise Stop at the ``calls``-th forward of ``module`` (a run stopped mid-way: an error, Ctrl-C)."""
    seen = [0]

    def hook(*_):
        seen[0] += 1
        if seen[0] == calls:
            raise Stop("stopped")
    return module.register_forward_hook(hook)


def test_a_lora_run_stopped_midway_leaves_a_plain_trainable_model(tmp_path):
    rm = tiny_rm(seed=1)
    rm.backbone.embeddings.word_embeddings.weight.requires_grad_(False)  # the user's own choice, kept
    flags = {n: p.requires_grad for n, p in rm.named_parameters()}
    handle = stop_after(rm.head, 3)
    with pytest.raises(Stop):
        train_reward_model(rm, keyword_pairs(32, seed=0), config=quiet(
            tmp_path / "a", max_steps=6, batch_size=8, lr=1e-2, lora_rank=2, gradient_checkpointing=True))
    handle.remove()
    # the adapters are folded in, the flags and checkpointing as they were: the model is the one a save writes
    assert not has_lora(rm) and not rm.backbone.is_activation_checkpointing
    assert {n: p.requires_grad for n, p in rm.named_parameters()} == flags
    # so a next run of full fine-tuning trains every weight it was asked to
    before = copy.deepcopy(rm.state_dict())
    train_reward_model(rm, keyword_pairs(32, seed=0), config=quiet(tmp_path / "b", max_steps=2, batch_size=8, lr=1e-2))
    changed = {k for k, v in rm.state_dict().items() if not torch.equal(v, before[k])}
    assert "backbone.embeddings.position_embeddings.weight" in changed
    assert "backbone.encoder.layer.0.attention.self.query.weight" in changed


def test_training_a_model_that_still_has_adapters_is_refused_without_lora_too(tmp_path):
    rm = tiny_rm(seed=1)
    trainer = reward_trainer(rm, keyword_pairs(32, seed=0), config=quiet(tmp_path / "a", max_steps=4, batch_size=8,
                                                                          lora_rank=2))
    trainer.fit(stop_at=2)  # the user's own loop stopped: adapters on, the rest of the backbone frozen
    assert has_lora(rm)
    # lora_rank=0 asks for full fine-tuning: it would train the adapters and the head alone
    with pytest.raises(ValueError, match="already has LoRA adapters.*backbone_setup.finish"):
        train_reward_model(rm, keyword_pairs(32, seed=0), config=quiet(tmp_path / "b", max_steps=2, batch_size=8))
    trainer.backbone_setup.finish()
    assert not has_lora(rm) and all(p.requires_grad for p in rm.parameters())


def test_a_prm_lora_run_stopped_midway_leaves_the_model_as_it_came(tmp_path):
    from mmreward.text.prm.data import read_step_examples
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, make_dataset, tiny_llama
    from mmreward.text.prm.train import PRMTrainConfig, train_prm

    tok = char_tokenizer("step", max_value=5)
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=1, seed=0), tok, head="lm", max_length=64)
    prm.backbone.embed_tokens.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in prm.named_parameters()}
    cfg = PRMTrainConfig(output_dir=str(tmp_path), max_steps=4, batch_size=4, lr=1e-2, lora_rank=2, progress=False,
                         tensorboard=False, plot=False, log_every=0)
    handle = stop_after(prm.backbone.norm, 3)
    with pytest.raises(Stop):
        train_prm(prm, read_step_examples(make_dataset(16, seed=1, max_value=5)), cfg)
    handle.remove()
    # the adapters folded in, every flag as it was (restored by name, not by position among the adapters)
    assert not has_lora(prm)
    assert {n: p.requires_grad for n, p in prm.named_parameters()} == flags


def test_a_target_whose_weight_is_tied_is_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmreward.core.lora import LoraSettings, apply_lora

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    # folding an update into lm_head would untie it from the embeddings: a reloaded (re-tied) model differs
    with pytest.raises(ValueError, match=r"\['lm_head'\], whose weight is tied to another \(model.embed_tokens.weight"):
        apply_lora(lm, LoraSettings(2, targets="lm_head,q_proj"))
    assert not has_lora(lm) and all(p.requires_grad for p in lm.parameters())


def test_a_named_target_that_is_not_a_plain_linear_says_so():
    from torch import nn

    from mmreward.core.lora import LoraSettings, apply_lora

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)  # its out_proj is a Linear subclass that reads its own weight
            self.fc = nn.Linear(8, 8)

    with pytest.raises(ValueError, match=r"\['out_proj'\] match no linear layer of Block \(out_proj: "
                                         r"NonDynamicallyQuantizableLinear: only plain nn.Linear layers"):
        apply_lora(Block(), LoraSettings(2, targets="out_proj"))


def test_rerunning_a_stopped_lora_run_resumes_to_the_straight_runs_weights(tmp_path):
    pairs = keyword_pairs(48, seed=0)
    opts = dict(max_steps=5, batch_size=8, lr=1e-2, save_every=2, lora_rank=2, lora_dropout=0.1, disable_dropout=False)
    straight = tiny_rm(seed=4)
    train_reward_model(straight, pairs, config=quiet(tmp_path / "a", **opts))
    rm = tiny_rm(seed=4)
    handle = stop_after(rm.head, 4)  # in step 4: the snapshot of step 2 holds the adapters
    with pytest.raises(Stop):
        train_reward_model(rm, pairs, config=quiet(tmp_path / "b", **opts))
    handle.remove()
    train_reward_model(rm, pairs, config=quiet(tmp_path / "b", **opts))  # the same call again: resumed
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(rm.state_dict()[k], v, rtol=0, atol=0)


def test_a_vlm_lora_run_stopped_midway_leaves_a_plain_model(tmp_path):
    from mmreward.vision import synthetic as S
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.vlm_base import VLMTrainConfig
    from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel, train_vlm_reward

    proc = tiny_processor(S.COLOUR_WORDS)
    torch.manual_seed(0)
    rm = VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc)
    flags = {n: p.requires_grad for n, p in rm.named_parameters()}
    handle = stop_after(rm.head, 2)
    with pytest.raises(Stop):
        train_vlm_reward(rm, S.colour_preference_rows(16, seed=0), VLMTrainConfig(
            output_dir=str(tmp_path), max_steps=3, batch_size=8, progress=False, log_every=0, tensorboard=False,
            plot=False, lora_rank=2, gradient_checkpointing=True))
    handle.remove()
    assert not has_lora(rm) and not rm.backbone.is_activation_checkpointing
    assert {n: p.requires_grad for n, p in rm.named_parameters()} == flags

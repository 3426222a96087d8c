"""Critic-RM in bf16: cast in memory, an LM cast under a float32 head, a bf16 save loaded as saved; the
files ``mmreward info`` requires of a Critic-RM folder; arguments of the wrong kind named, not misread."""
import os

import pytest
import torch

import mmreward
from mmreward.core.inputs import TextPair
from mmreward.text.generative.critic_rm import CriticRM, CriticRMConfig
from mmreward.text.generative.heads import ScalarHeadLM
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

WORDS = "good bad fine poor q0 q1 Critique the response Score : 1 2 3"
INPUTS = [TextPair("q0", "good fine"), TextPair("q1", "bad"), TextPair("q0", "poor")]


def _critic(tok):
    torch.manual_seed(0)
    return CriticRM(ScalarHeadLM(tiny_llama(len(tok), hidden=32, layers=1, heads=2, seed=0)), tok,
                    CriticRMConfig(request="Critique the response", max_new_tokens=3))


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer([WORDS])


def test_bf16_critic_scores_like_fp32(tok):
    crm = _critic(tok)
    ref = crm.score(INPUTS)
    critiques = ["good", "bad", "fine"]
    ref_reward = crm.reward([x.prompt for x in INPUTS], [x.response for x in INPUTS], critiques)
    lm_only = _critic(tok)
    lm_only.causal_lm.to(torch.bfloat16)  # a bf16 LM under its float32 head
    got = lm_only.reward([x.prompt for x in INPUTS], [x.response for x in INPUTS], critiques)
    assert got.dtype == torch.float32 and torch.allclose(got, ref_reward, atol=0.05, rtol=0.05)
    crm.to(torch.bfloat16)
    got = crm.score(INPUTS)
    assert got.dtype == torch.float32 and got.shape == (3,)
    assert torch.allclose(got, ref, atol=0.05, rtol=0.05), (got, ref)


def test_bf16_critic_loss_with_an_lm_in_another_dtype(tok):
    crm = _critic(tok)
    crm.causal_lm.to(torch.bfloat16)
    chosen = crm.batch(["q0"], ["good"], ["fine"])
    rejected = crm.batch(["q0"], ["bad"], ["poor"])
    loss, metrics = crm.loss(chosen, rejected, step=0, total_steps=2)
    loss.backward()
    assert torch.isfinite(loss) and crm.model.head.weight.grad is not None


def test_bf16_save_loads_as_saved_and_scores(tok, tmp_path):
    crm = _critic(tok)
    ref = crm.score(INPUTS)
    crm.to(torch.bfloat16).save_pretrained(str(tmp_path / "crm"))
    loaded = mmreward.load(str(tmp_path / "crm"))
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert torch.allclose(loaded.score(INPUTS), ref, atol=0.05, rtol=0.05)
    as_fp32 = mmreward.load(str(tmp_path / "crm"), dtype="fp32")
    assert {p.dtype for p in as_fp32.parameters()} == {torch.float32}


def test_info_requires_the_critic_head_and_lm(tok, tmp_path, capsys):
    from mmreward.cli import main

    _critic(tok).save_pretrained(str(tmp_path / "crm"))
    os.remove(tmp_path / "crm" / "manifest.json")
    assert main(["info", str(tmp_path / "crm")]) == 0
    capsys.readouterr()
    os.remove(tmp_path / "crm" / "head.safetensors")
    assert main(["info", str(tmp_path / "crm")]) == 2
    assert "has no head.safetensors" in capsys.readouterr().err


def test_strings_for_lists_and_wrong_arguments_are_named(tok):
    crm = _critic(tok)
    with pytest.raises(TypeError, match="CriticRM.reward: prompts must be a list"):
        crm.reward("ab", "cd", "ef")  # scored one character per row before
    with pytest.raises(TypeError, match="CriticRM.batch: critiques must be a list"):
        crm.batch(["q0"], ["good"], "fine")
    with pytest.raises(TypeError, match=r"CriticRM.reward: critiques\[1\] must be a string, got NoneType"):
        crm.reward(["q0", "q1"], ["good", "bad"], ["fine", None])
    with pytest.raises(ValueError, match="equally long, got 2 / 1 / 2"):
        crm.reward(["q0", "q1"], ["good"], ["fine", "poor"])
    with pytest.raises(TypeError, match="config must be a CriticRMConfig, got dict"):
        CriticRM(crm.model, tok, {"num_critiques": 2})
    with pytest.raises(TypeError, match="needs the LM's tokenizer"):
        CriticRM(crm.model, None)


def test_scalar_head_lm_runs_its_head_in_its_own_dtype(tok):
    """A meta-RM / ScalarHeadLM whose LM is cast to bf16 under a float32 head scores (mat1 / mat2 dtypes)."""
    m = ScalarHeadLM(tiny_llama(len(tok), hidden=32, layers=1, heads=2, seed=0))
    ids = torch.tensor([[3, 4, 5], [0, 6, 7]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    ref = m(ids, mask)
    m.backbone.to(torch.bfloat16)
    got = m(ids, mask)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=0.05, rtol=0.05)

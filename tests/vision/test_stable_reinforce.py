"""StableReinforce: the advantage filter and pre-clip against hand computations, overflow safety,
the R1-Reward format / reward, and RL steps that raise the reward of a known-optimum task."""
import math

import pytest
import torch

from mmreward.vision.stable_reinforce import (
    R1Output,
    StableReinforceConfig,
    compute_advantages,
    filter_advantages,
    parse_r1_output,
    pre_clipped_ratio,
    r1_reward,
    rollout,
    stable_ppo_loss,
    stable_reinforce_step,
)


# ------------------------------------------------------------------ advantage filter
def test_filter_drops_nan_large_and_three_sigma_outliers_by_hand():
    a = torch.tensor([0.0] * 10 + [5.0, float("nan"), 20.0, -float("inf")])
    out, kept = filter_advantages(a)
    # NaN / inf are dropped; mean / population std of the finite twelve (ten 0s, 5, 20)
    mean = 25 / 12
    std = math.sqrt((10 * mean**2 + (5 - mean) ** 2 + (20 - mean) ** 2) / 12)  # 5.5746
    assert (20 - mean) / std == pytest.approx(3.214, abs=1e-3)  # beyond mean + 3σ → dropped
    assert kept.tolist() == [True] * 11 + [False] * 3
    assert torch.allclose(out[:10], torch.full((10,), -mean / std), atol=1e-6)
    assert out[10].item() == pytest.approx((5 - mean) / std, abs=1e-6) and out[11:].tolist() == [0.0] * 3
    raw, kept2 = filter_advantages(a, normalize=False)
    assert raw[:11].tolist() == [0.0] * 10 + [5.0] and kept2.tolist() == kept.tolist()
    # the bounds apply to normalised advantages (R1-Reward): the same rewards ×10 filter alike
    # (the raw bound |A| > 10 zeroed every advantage of a reward on a 0–100 scale)
    out10, kept10 = filter_advantages(a * 10)
    assert kept10.tolist() == kept.tolist() and torch.allclose(out10, out, atol=1e-6)
    # abs_max bounds |z| too: at sigma = inf, |z| ≤ 0.5 keeps the ten 0s (|z| 0.37) and drops 5 (|z| 0.52)
    _, kept_abs = filter_advantages(a, sigma=float("inf"), abs_max=0.5)
    assert kept_abs.tolist() == [True] * 10 + [False] * 4
    # nothing valid → all zeros, nothing kept
    out, kept = filter_advantages(torch.tensor([float("nan"), -float("inf")]))
    assert out.tolist() == [0.0, 0.0] and not kept.any()
    out, kept = filter_advantages(torch.tensor([float("nan"), 50.0]))  # one finite value: z = 0, kept
    assert out.tolist() == [0.0, 0.0] and kept.tolist() == [False, True]
    with pytest.raises(ValueError, match="1-D float"):
        filter_advantages(torch.tensor([[1.0]]))


@pytest.mark.parametrize("name", ["adv_sigma", "adv_abs_max"])
def test_nan_filter_bounds_are_refused(name):
    """NaN passed the `<= 0` check, and a NaN bound keeps no advantage at all."""
    for bad in (float("nan"), 0.0, -1.0):
        with pytest.raises(ValueError, match=f"StableReinforceConfig.{name} must be a number > 0, got {bad}"):
            StableReinforceConfig(**{name: bad})
    assert getattr(StableReinforceConfig(**{name: float("inf")}), name) == float("inf")  # no bound


def test_group_baseline_by_hand():
    r = torch.tensor([1.0, 0.0, 2.0, 2.0])
    g = torch.tensor([0, 0, 1, 1])
    out, kept = compute_advantages(r, g, StableReinforceConfig(normalize_advantages=False))
    assert out.tolist() == [0.5, -0.5, 0.0, 0.0] and kept.all()
    z, _ = compute_advantages(r, g)
    assert torch.allclose(z, torch.tensor([1.0, -1.0, 0.0, 0.0]) * (0.5 / math.sqrt(0.125)))


# ------------------------------------------------------------------ pre-clip and the PPO loss
def test_pre_clip_and_ppo_clip_by_hand():
    cfg = StableReinforceConfig(clip_eps=0.2, log_ratio_min=-1.0, log_ratio_max=0.5)
    logp = torch.tensor([[math.log(0.5), 0.0, -3.0]])
    old = torch.tensor([[math.log(0.25), 0.0, 0.0]])
    ratio = pre_clipped_ratio(logp, old, cfg.log_ratio_min, cfg.log_ratio_max)
    assert torch.allclose(ratio, torch.tensor([[math.exp(0.5), 1.0, math.exp(-1.0)]]))  # log 2 → clamped to 0.5
    adv = torch.tensor([2.0])
    mask = torch.tensor([[True, True, False]])
    loss, m = stable_ppo_loss(logp, old, adv, mask, cfg)
    # token 0: min(1.6487·2, 1.2·2) = 2.4; token 1: 2; token 2 masked → loss = −(2.4 + 2) / 2
    assert loss.item() == pytest.approx(-2.2)
    assert m["clip_frac"] == pytest.approx(0.5)
    neg, _ = stable_ppo_loss(logp, old, -adv, mask, cfg)
    assert neg.item() == pytest.approx((math.exp(0.5) * 2 + 2) / 2)  # min picks the unclipped −1.6487·2


def test_huge_log_ratio_stays_finite_where_plain_ppo_overflows():
    logp = torch.tensor([[100.0, 0.0]], requires_grad=True)
    old = torch.zeros(1, 2)
    adv = torch.tensor([-1.0])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # plain PPO: exp first → inf ratio → inf loss and NaN gradient
    ratio = torch.exp(logp - old)
    plain = -torch.minimum(ratio * adv[:, None], ratio.clamp(0.8, 1.2) * adv[:, None]).mean()
    plain.backward()
    assert not math.isfinite(plain.item()) and not torch.isfinite(logp.grad).all()
    logp.grad = None
    loss, m = stable_ppo_loss(logp, old, adv, mask, StableReinforceConfig())
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(logp.grad).all()
    assert m["ratio_max"] == pytest.approx(1e3, rel=1e-4)  # exp(log 1e3)


def test_loss_shape_errors():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="share one"):
        stable_ppo_loss(z, torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no token"):
        stable_ppo_loss(z, z, torch.zeros(2), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="advantages has 3 rows"):
        stable_ppo_loss(z, z, torch.zeros(3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="clip_eps"):
        StableReinforceConfig(clip_eps=1.5)


# ------------------------------------------------------------------ R1-Reward output and reward
GOOD = "<think>Answer 1 misses the cat. Answer 2 is better.</think><answer>Overall Judgment: Answer 2 is better</answer>"


@pytest.mark.parametrize("text,reason", [
    ("Answer 2 is better", "exactly one <think>"),
    ("<think>a</think><answer>1</answer><answer>2</answer>", "exactly one <answer>"),
    ("<answer>1</answer><think>a</think>", "out of order"),
    ("intro <think>a</think><answer>1</answer>", "outside"),
    ("<think>a</think><answer>Answer 1 and Answer 2 are fine</answer>", "both 1 and 2"),
    ("<think>a</think><answer>neither</answer>", "neither 1 nor 2"),
    (None, "not a string"),
])
def test_unparsable_outputs_get_format_zero_with_a_reason(text, reason):
    p = parse_r1_output(text)
    assert not p.format_ok and reason in p.reason
    r, info = r1_reward(text, preferred=2)
    assert r == 0.0 and info["format"] == 0.0 and reason in info["reason"]


def test_reward_values():
    assert parse_r1_output(GOOD) == R1Output(True, "Answer 1 misses the cat. Answer 2 is better.",
                                             "Overall Judgment: Answer 2 is better", 2, "")
    # R1-Reward: 0.5·format + accuracy·(1 + 0.5·conflict), its referee's conflict +1 / −1 / 0 (consistent /
    # contradicting / no verdict) = consistency 1 / 0 / ½ here, mapped by 2c − 1
    assert r1_reward(GOOD, preferred=2)[0] == pytest.approx(0.5 + 1.5)  # format + accuracy·(1 + 0.5·1)
    assert r1_reward(GOOD, preferred=1)[0] == pytest.approx(0.5)  # wrong choice: format only
    inconsistent = GOOD.replace("Answer 2 is better.</think>", "Answer 1 is better.</think>")
    assert r1_reward(inconsistent, preferred=2)[0] == pytest.approx(0.5 + 0.5)  # accuracy·(1 + 0.5·(−1))
    undecided = "<think>hmm</think><answer>2</answer>"
    assert r1_reward(undecided, preferred=2)[0] == pytest.approx(0.5 + 1.0)  # accuracy·(1 + 0.5·0)
    judge = lambda p: 0.0 if "cat" in p.think else 1.0  # noqa: E731 (a pluggable judge)
    assert r1_reward(GOOD, preferred=2, consistency_judge=judge)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        r1_reward(GOOD, preferred=2, consistency_judge=lambda p: 2.0)
    with pytest.raises(ValueError, match="preferred must be 1 or 2"):
        r1_reward(GOOD, preferred=3)


# ------------------------------------------------------------------ RL on a tiny causal LM
def tiny_policy(vocab=16):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=None, pad_token_id=1)
    pol = LlamaForCausalLM(cfg)
    pol.generation_config.eos_token_id = None
    pol.generation_config.pad_token_id = 1
    return pol


def test_updates_raise_reward_of_known_optimum_task():
    """Reward = fraction of the 3 generated tokens equal to token 7 (optimum 1.0, random policy 1/16)."""
    pol = tiny_policy()
    opt = torch.optim.AdamW(pol.parameters(), lr=1e-2)
    prompts = torch.tensor([[0, 2], [0, 3]]).repeat_interleave(16, 0)
    group = torch.arange(2).repeat_interleave(16)
    means = []
    for _ in range(12):
        ro = rollout(pol, prompts, torch.ones_like(prompts), max_new_tokens=3)
        assert ro["action_mask"][:, 1:].all() and not ro["action_mask"][:, 0].any()
        r = (ro["sequences"][:, 2:] == 7).float().mean(1)
        means.append(r.mean().item())
        for _ in range(2):  # two PPO epochs on the same rollouts: the second has ratios ≠ 1
            m = stable_reinforce_step(pol, opt, ro["sequences"], ro["attention_mask"], ro["action_mask"],
                                      ro["old_logprobs"], r, group=group)
            assert math.isfinite(m["loss"])
    assert means[0] < 0.2 and max(means[-3:]) >= 0.8, means


def test_step_input_errors():
    pol = tiny_policy()
    opt = torch.optim.SGD(pol.parameters(), lr=0.1)
    seq = torch.zeros(2, 4, dtype=torch.long)
    am = torch.ones(2, 4, dtype=torch.long)
    act = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"rewards must be \(2,\)"):
        stable_reinforce_step(pol, opt, seq, am, act, torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"must be \(2, 3\)"):
        stable_reinforce_step(pol, opt, seq, am, torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 3), torch.zeros(2))


def test_step_with_a_vlm_judge_raises_rewarded_sequence_probability():
    """Qwen2-VL policy (image in the prompt): the rewarded sample's log-probability rises."""
    import numpy as np
    from transformers import Qwen2VLForConditionalGeneration

    from mmreward.vision import synthetic as S
    from mmreward.vision import vlm_data as D
    from mmreward.vision.images import to_pil
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config

    proc = tiny_processor(S.COLOUR_WORDS)
    torch.manual_seed(0)
    pol = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(proc))
    pol.generation_config.eos_token_id = None
    pol.generation_config.pad_token_id = proc.tokenizer.pad_token_id
    msgs = D.to_messages([{"role": "user", "content": "what colour is the image"}], 1, "prompt")
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    img = to_pil(S.colour_image("red", np.random.default_rng(0)))
    enc = proc(text=[text] * 4, images=[img] * 4)
    vision = {k: enc[k] for k in ("pixel_values", "image_grid_thw", "mm_token_type_ids")}
    ro = rollout(pol, enc["input_ids"], enc["attention_mask"], max_new_tokens=3, **vision)
    assert ro["model_inputs"]["mm_token_type_ids"].shape == ro["sequences"].shape
    generated = ro["sequences"][:, enc["input_ids"].shape[1]:]
    assert not (generated == pol.config.image_token_id).any()  # placeholders are suppressed while sampling
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    opt = torch.optim.AdamW(pol.parameters(), lr=3e-3)
    before = (ro["old_logprobs"][0] * ro["action_mask"][0]).sum()
    for _ in range(3):
        m = stable_reinforce_step(pol, opt, ro["sequences"], ro["attention_mask"], ro["action_mask"], ro["old_logprobs"],
                                  rewards, model_inputs=ro["model_inputs"])
        assert math.isfinite(m["loss"])
    from mmreward.vision.stable_reinforce import sequence_logprobs

    with torch.no_grad():
        after = (sequence_logprobs(pol, ro["sequences"], ro["attention_mask"], **ro["model_inputs"])[0]
                 * ro["action_mask"][0]).sum()
    assert after > before + 0.1, (before, after)

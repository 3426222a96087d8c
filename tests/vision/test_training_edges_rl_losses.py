"""ReFL / StableReinforce entry points: inputs that used to be silently misread."""
import pytest
import torch

from mmreward.core.trainer import TrainConfig
from mmreward.vision.refl import ReFLConfig, train_refl
from mmreward.vision.stable_reinforce import StableReinforceConfig, stable_ppo_loss


def _redness(prompts, x):
    return x[:, 0].mean((1, 2))


@pytest.mark.parametrize("prompts, error", [("a red circle", "prompts must be a list of strings, got str"),
                                            (["a red circle", 3], r"prompts\[1\] must be a string, got int"),
                                            ([], "prompts is empty")])
def test_train_refl_refuses_prompts_it_would_misread(tmp_path, prompts, error):
    """Before: a bare string trained on its letters one by one (list("a red circle") is 12 prompts)."""
    tc = TrainConfig(output_dir=str(tmp_path / "refl"), max_steps=1, batch_size=1, progress=False,
                     tensorboard=False, plot=False, log_every=0)
    with pytest.raises((TypeError, ValueError), match=error):
        train_refl(None, _redness, prompts, ReFLConfig(num_inference_steps=4, min_step=2, max_step=3), tc)
    assert not (tmp_path / "refl").exists()


def test_stable_ppo_loss_refuses_reference_logprobs_of_another_shape():
    """Before: (B, 1) or (L,) reference log-probs broadcast into a KL term over the wrong tokens."""
    torch.manual_seed(0)
    logp, old = torch.randn(2, 5, requires_grad=True), torch.randn(2, 5)
    mask, adv = torch.ones(2, 5), torch.tensor([1.0, -1.0])
    cfg = StableReinforceConfig(kl_coef=0.1)
    loss, metrics = stable_ppo_loss(logp, old, adv, mask, cfg, ref_logprobs=torch.randn(2, 5))
    assert torch.isfinite(loss) and "kl" in metrics
    for bad in (torch.randn(2, 1), torch.randn(5)):
        with pytest.raises(ValueError, match="ref_logprobs must have the logprobs' shape"):
            stable_ppo_loss(logp, old, adv, mask, cfg, ref_logprobs=bad)


def test_group_ids_that_are_not_integers_are_refused():
    """Before: float ids 0.5 and 0.7 were truncated by .long() into one group 0, so two prompts shared
    one baseline without a word."""
    from mmreward.vision.stable_reinforce import compute_advantages

    rewards = torch.tensor([1.0, 0.0, 3.0, 2.0])
    with pytest.raises(ValueError, match="integer group ids"):
        compute_advantages(rewards, torch.tensor([0.5, 0.5, 0.7, 0.7]))
    a, _ = compute_advantages(rewards, torch.tensor([0, 0, 1, 1]))
    b, _ = compute_advantages(rewards, torch.tensor([0.0, 0.0, 1.0, 1.0]))  # integral floats are ids too
    assert torch.equal(a, b) and a[0] > 0 > a[1] and a[2] > 0 > a[3]


def test_groups_as_a_list_of_ids_or_prompt_rows():
    """``group`` given as the docs' ``prompt ids of each sample``: a list of ids (strings too) or the
    prompt token rows (B, T) group alike; a list raised AttributeError ('list' has no 'shape')."""
    from mmreward.vision.stable_reinforce import compute_advantages, filter_advantages

    rewards = torch.tensor([1.0, 3.0, 10.0, 14.0])
    want, _ = compute_advantages(rewards, torch.tensor([0, 0, 1, 1]))
    for group in ([7, 7, 3, 3], ["cat", "cat", "dog", "dog"], torch.tensor([[5, 6], [5, 6], [5, 9], [5, 9]])):
        got, _ = compute_advantages(rewards, group)
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match=r"group has 3 ids, rewards 4"):
        compute_advantages(rewards, [0, 0, 1])
    with pytest.raises(ValueError, match=r"group has shape \(3, 2\), rewards \(4,\)"):
        compute_advantages(rewards, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got a torch.int64 tensor of shape \(3,\)"):
        filter_advantages(torch.tensor([1, 2, 3]))

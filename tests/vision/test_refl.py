"""ReFL on a tiny diffusers UNet + VAE + CLIP text encoder + DDIM: the loss, t in [30, 39], and
that ReFL steps raise a known differentiable reward of fully sampled images."""
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from mmreward.vision.refl import (
    DiffusionParts,
    ReFLConfig,
    mean_reward,
    refl_loss,
    sample,
    train_refl,
)

from mmreward.core.trainer import TrainConfig
from mmreward.vision.testing import word_tokenizer

PROMPTS = ["a red circle", "a blue square", "a green circle", "a red square"]


def tiny_parts(seed=0) -> DiffusionParts:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = word_tokenizer(["a", "red", "blue", "green", "circle", "square"], max_length=8)
    v = len(tok)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=8, eos_token_id=v - 1,
                                        bos_token_id=v - 1, pad_token_id=0))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), latent_channels=4,
                        norm_num_groups=8, sample_size=16)
    return DiffusionParts(unet, vae, text, tok, DDIMScheduler(num_train_timesteps=1000))


def redness(prompts, x):  # a known differentiable scorer on [B, 3, H, W] in [0, 1]
    return x[:, 0].mean((1, 2)) - x[:, 1:].mean((1, 2, 3))


def test_config_defaults_and_validation():
    c = ReFLConfig()
    assert (c.num_inference_steps, c.min_step, c.max_step, c.reward_threshold, c.grad_scale) == (40, 30, 39, 2.0, 1e-3)
    with pytest.raises(ValueError, match="max_step"):
        ReFLConfig(max_step=40)
    with pytest.raises(ValueError, match="min_step"):
        ReFLConfig(min_step=35, max_step=31)
    nan = float("nan")
    for kw, message in (({"reward_threshold": nan}, "reward_threshold must be a finite number"),
                        ({"grad_scale": nan}, "grad_scale must be a finite number > 0"),
                        ({"grad_scale": 0.0}, "grad_scale must be a finite number > 0"),
                        ({"grad_scale": -1e-3}, "grad_scale must be a finite number > 0"),
                        ({"guidance_scale": nan}, "guidance_scale must be a finite number >= 0"),
                        ({"guidance_scale": -1.0}, "guidance_scale must be a finite number >= 0")):
        with pytest.raises(ValueError, match=message):
            ReFLConfig(**kw)
    assert ReFLConfig(guidance_scale=0.0, reward_threshold=-1.0).guidance_scale == 0.0


def test_loss_is_relu_threshold_minus_reward_scaled_and_only_unet_gets_grads():
    parts = tiny_parts()
    cfg = ReFLConfig()

    def scorer(prompts, x):  # r = [0.5, 3.0] (+ a tiny differentiable part): only the first is below λ = 2
        return torch.tensor([0.5, 3.0]) + 1e-6 * redness(prompts, x)

    torch.manual_seed(1)
    loss, m = refl_loss(parts, scorer, cfg)(parts.unet, PROMPTS[:2])
    assert loss.item() == pytest.approx((2.0 - 0.5) / 2 * 1e-3, rel=1e-4) and 30 <= m["t_index"] <= 39
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parts.unet.parameters())
    assert all(p.grad is None for p in parts.vae.parameters())
    assert all(p.grad is None for p in parts.text_encoder.parameters())


def test_an_image_reward_model_is_a_differentiable_refl_scorer(tmp_path):
    """The scorer can be any image reward model: ReFL's loss backpropagates through its score()
    into the UNet, the reward model stays frozen, and mean_reward uses the same score."""
    from mmreward.vision import synthetic as S
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel

    parts = tiny_parts()
    torch.manual_seed(0)
    scorer = ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=8))
    cfg = ReFLConfig(num_inference_steps=4, min_step=2, max_step=3)
    tc = TrainConfig(output_dir=str(tmp_path / "refl"), max_steps=1, batch_size=2, lr=1e-3, progress=False,
                     tensorboard=False, plot=False, log_every=0)
    before = [p.detach().clone() for p in parts.unet.parameters()]
    history = train_refl(parts, scorer, PROMPTS[:2], cfg, tc)
    assert len(history) == 1 and history[0]["grad_norm"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, parts.unet.parameters()))
    assert not any(p.requires_grad for p in scorer.parameters()) and all(p.grad is None for p in scorer.parameters())
    r = mean_reward(parts, scorer, PROMPTS[:2], cfg)
    assert isinstance(r, float) and r == r
    from mmreward.core.inputs import TextPair
    from mmreward.core.model import RewardScorer

    class TextOnly(RewardScorer):
        input_types = (TextPair,)

    with pytest.raises(TypeError, match="TextOnly does not score images"):
        refl_loss(parts, TextOnly(), cfg)


def test_refl_steps_raise_the_mean_reward_of_samples(tmp_path):
    parts = tiny_parts()
    cfg = ReFLConfig()
    before = mean_reward(parts, redness, PROMPTS, cfg, seed=1)  # full 40-step sampling, fixed noise
    tc = TrainConfig(output_dir=str(tmp_path / "refl"), max_steps=8, batch_size=4, lr=5e-3, progress=False,
                     tensorboard=False, plot=False, log_every=0)
    history = train_refl(parts, redness, PROMPTS, cfg, tc)
    after = mean_reward(parts, redness, PROMPTS, cfg, seed=1)
    print(f"mean redness of 40-step samples: {before:.4f} -> {after:.4f} after {len(history)} ReFL steps")
    images = sample(parts, PROMPTS[:1], cfg, seed=0)
    assert images.shape == (1, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    assert len(history) == 8 and all(30 <= r["t_index"] <= 39 for r in history)
    assert after > before + 0.01, (before, after)
    assert (tmp_path / "refl" / "metrics.csv").exists()


def test_an_empty_prompt_is_refused_before_training_when_the_scorer_reads_prompts(tmp_path):
    """A prompt-conditioned scorer refuses an image without a prompt; train_refl names the prompt up front
    (it failed as "input 1: no prompt ... --prompt" when the batch holding it came up, mid-run)."""
    from mmreward.vision import synthetic as S
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel

    scorer = ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=8))
    tc = TrainConfig(output_dir=str(tmp_path / "refl"), max_steps=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty: ImageRewardModel scores each image"):
        train_refl(None, scorer, ["a red circle", " "], ReFLConfig(), tc)
    assert not (tmp_path / "refl").exists()

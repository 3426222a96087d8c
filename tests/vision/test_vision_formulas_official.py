"""Vision scorers and vision training objectives against their official definitions, with numbers
worked out by hand (or with PIL / numpy as the official transforms compute them), not by calling
the code under test: ImageReward's preprocessing and normalisation, the CLIP processor family,
HPSv2's ResizeMaxSize, the CLIP-family score formulas, ReFL's loss / timestep / scheduler,
StableReinforce's loss aggregation, VisualPRM's step-score aggregation."""
import math
import types

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
from PIL import Image  # noqa: E402

from mmreward.vision.published.clip_scorers import CLIP_MEAN, CLIP_STD, CLIPScorer, CLIPScorerConfig  # noqa: E402
from mmreward.vision.published.imagereward import BLIPImageReward, BLIPImageRewardConfig  # noqa: E402
from mmreward.vision.testing import tiny_clip_config, word_tokenizer  # noqa: E402

MEAN = np.array(CLIP_MEAN, np.float32)[:, None, None]
STD = np.array(CLIP_STD, np.float32)[:, None, None]


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _normalised(pil_rgb):
    """ToTensor + Normalize(CLIP mean, std) as numpy: ``[3, H, W]``."""
    x = np.asarray(pil_rgb, np.float32).transpose(2, 0, 1) / 255.0
    return (x - MEAN) / STD


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(["a", "red", "cat"])


def _blip(tokenizer, size=8):
    text = dict(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=16,
                max_position_embeddings=40, layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=0)
    cfg = BLIPImageRewardConfig(image_size=size, patch_size=size, vision_width=16, vision_depth=1, vision_heads=1,
                                text_config=text)
    return BLIPImageReward(cfg, tokenizer).eval()


def _clip(tokenizer, kind, size=8):
    cfg = CLIPScorerConfig(kind=kind, clip_config=tiny_clip_config(len(tokenizer), width=16, image_size=size,
                                                                   patch_size=size, layers=1).to_dict(),
                           image_size=size)
    return CLIPScorer(cfg, tokenizer).eval()


# ------------------------------------------------------------------ ImageReward (THUDM/ImageReward)
def test_imagereward_defaults_are_the_official_constants():
    c = BLIPImageRewardConfig()
    assert (c.reward_mean, c.reward_std) == (0.16717362830052426, 1.0333394966054072)
    assert c.image_size == 224 and c.max_text_length == 35 and tuple(c.head_hidden) == (1024, 128, 64, 16)
    assert tuple(c.image_mean) == (0.48145466, 0.4578275, 0.40821073)
    assert tuple(c.image_std) == (0.26862954, 0.26130258, 0.27577711)


def test_imagereward_score_is_the_mlp_output_normalised(tokenizer):
    """score = (MLP(...) − 0.16717362830052426) / 1.0333394966054072: the last Linear set to the
    constant 1.5 gives (1.5 − 0.16717…) / 1.03333… = 1.28982… whatever the image."""
    model = _blip(tokenizer)
    last = model.mlp.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(1.5)
    r = model.score([{"prompt": "a red cat", "image": _image(8, 8)}])
    assert r.item() == pytest.approx((1.5 - 0.16717362830052426) / 1.0333394966054072, abs=1e-6)
    assert r.item() == pytest.approx(1.2898242, abs=1e-6)


def test_imagereward_preprocessing_3x5_by_hand(tokenizer):
    """Resize(8, BICUBIC) of a 3 x 5 (H x W) image: short side 3 -> 8, long side int(8 * 5 / 3) = 13,
    then CenterCrop(8) with torchvision's offset int(round((13 - 8) / 2)) = 2, ToTensor, CLIP
    mean / std."""
    img = _image(3, 5)
    want = _normalised(Image.fromarray(img).resize((13, 8), Image.BICUBIC))[:, :, 2:10]
    got = _blip(tokenizer).pixel_batch([img], ["x"])[0].numpy()
    assert got.shape == (3, 8, 8)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_imagereward_crop_offset_rounds_as_torchvision(tokenizer):
    """An 8 x 15 image at size 8 is not resized; torchvision's CenterCrop starts at
    int(round(7 / 2)) = 4 (round half to even), the CLIP image processor at 7 // 2 = 3."""
    img = _image(8, 15, seed=1)
    full = _normalised(Image.fromarray(img))
    np.testing.assert_allclose(_blip(tokenizer).pixel_batch([img], ["x"])[0].numpy(), full[:, :, 4:12], atol=1e-6)
    np.testing.assert_allclose(_clip(tokenizer, "pickscore").pixel_batch([img], ["x"])[0].numpy(), full[:, :, 3:11],
                               atol=1e-6)


# ------------------------------------------------------------------ CLIP image processor (PickScore, CLIP score, aesthetic)
@pytest.mark.parametrize("kind", ["pickscore", "clip_score", "aesthetic"])
def test_clip_processor_preprocessing_3x5_by_hand(tokenizer, kind):
    """CLIP's image processor: shortest edge 3 -> 8, long side int(8 * 5 / 3) = 13 (bicubic, PIL),
    centre crop at (13 - 8) // 2 = 2, rescale 1/255, CLIP mean / std."""
    img = _image(3, 5, seed=2)
    want = _normalised(Image.fromarray(img).resize((13, 8), Image.BICUBIC))[:, :, 2:10]
    np.testing.assert_allclose(_clip(tokenizer, kind).pixel_batch([img], ["x"])[0].numpy(), want, atol=1e-6)


# ------------------------------------------------------------------ HPSv2 (ResizeMaxSize on the tensor)
def test_hpsv2_resize_max_size_3x5_by_hand(tokenizer):
    """HPSv2's val transform: ToTensor, ResizeMaxSize(8): scale 8 / 5, new size (round(4.8), 8) =
    (5, 8) bicubic antialiased on the float tensor (torchvision's tensor resize), padding 0 with
    pad_h = 3 split 1 above / 2 below, then Normalize: the padded rows are -mean / std."""
    img = _image(3, 5, seed=3)
    x = torch.from_numpy(img).permute(2, 0, 1).float().div(255).unsqueeze(0)
    body = torch.nn.functional.interpolate(x, size=(5, 8), mode="bicubic", align_corners=False, antialias=True)[0]
    want = np.zeros((3, 8, 8), np.float32)
    want[:, 1:6] = body.numpy()
    want = (want - MEAN) / STD
    got = _clip(tokenizer, "hpsv2").pixel_batch([img], ["x"])[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got[:, 0], np.broadcast_to(-MEAN[:, 0] / STD[:, 0], (3, 8)), atol=1e-6)
    np.testing.assert_allclose(got[:, 6:], np.broadcast_to(-MEAN / STD, (3, 2, 8)), atol=1e-6)


# ------------------------------------------------------------------ the CLIP-family score formulas
def test_clip_family_score_formulas(tokenizer):
    """PickScore = logit_scale.exp() · cos, CLIP score = max(100 · cos, 0), HPSv2 = cos, on one
    and the same CLIP; cos from the projected embeddings, computed here from the CLIP towers."""
    img, prompt = _image(8, 8, seed=4), "a red cat"
    base = _clip(tokenizer, "pickscore")
    with torch.no_grad():
        base.model.logit_scale.fill_(math.log(50.0))
        m = base.model
        ids = tokenizer([prompt], return_tensors="pt")
        t = m.text_projection(m.text_model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).pooler_output)
        px = base.pixel_batch([img], ["x"])
        i = m.visual_projection(m.vision_model(pixel_values=px).pooler_output)
        cos = float(torch.nn.functional.cosine_similarity(t, i)[0])
    row = [{"prompt": prompt, "image": img}]
    assert base.score(row).item() == pytest.approx(50.0 * cos, abs=1e-4)
    for kind, want in (("clip_score", max(100.0 * cos, 0.0)), ("hpsv2", cos)):
        other = _clip(tokenizer, kind)
        other.model.load_state_dict(base.model.state_dict())
        if kind == "hpsv2":  # HPSv2's own preprocessing: a square image is only normalised
            assert other.pixel_batch([img], ["x"]).allclose(px, atol=1e-6)
        assert other.score(row).item() == pytest.approx(want, abs=1e-5)


def test_aesthetic_score_is_the_mlp_on_the_normalised_image_embedding(tokenizer):
    """LAION aesthetic predictor (DDPO): MLP(e / ‖e‖) of the projected image embedding. With the
    MLP reduced to its first coordinate (identity-like linears), the score is e₀ / ‖e‖."""
    model = _clip(tokenizer, "aesthetic")
    layers = [m for m in model.aesthetic.layers if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin in layers:
            lin.weight.zero_()
            lin.bias.zero_()
            lin.weight[0, 0] = 1.0
        m = model.model
        img = _image(8, 8, seed=5)
        e = m.visual_projection(m.vision_model(pixel_values=model.pixel_batch([img], ["x"])).pooler_output)[0]
    want = float(e[0] / e.norm())
    assert model.score([{"prompt": "", "image": img}]).item() == pytest.approx(want, abs=1e-6)


# ------------------------------------------------------------------ ReFL (ImageReward §4, ReFL.py)
class _StubParts:
    """Records the loop index ReFL stops at and returns fixed decoded images."""

    def __init__(self):
        self.stops = []

    def run(self, unet, prompts, config, stop_at=None, generator=None):
        self.stops.append(stop_at)
        return torch.zeros(len(prompts), 3, 4, 4)


def test_refl_loss_and_timestep_range_by_hand():
    """ReFL.py: mid_timestep = random.randint(30, 39) (both ends included); loss =
    ReLU(2 − r).mean() · grad_scale (1e-3). Rewards 1.5 and 3.0: (0.5 + 0) / 2 · 1e-3 = 2.5e-4."""
    from mmreward.vision.refl import ReFLConfig, refl_loss

    cfg = ReFLConfig()
    assert (cfg.num_inference_steps, cfg.min_step, cfg.max_step, cfg.reward_threshold, cfg.grad_scale,
            cfg.guidance_scale) == (40, 30, 39, 2.0, 1e-3, 1.0)
    parts = _StubParts()
    loss_fn = refl_loss(parts, lambda prompts, images: torch.tensor([1.5, 3.0]), cfg)
    torch.manual_seed(0)
    for _ in range(200):
        loss, metrics = loss_fn(None, ["a", "b"])
    assert loss.item() == pytest.approx(2.5e-4)
    assert set(parts.stops) == set(range(30, 40))


def test_refl_from_pipeline_uses_ddpm_as_imagereward():
    """ImageReward's ReFL samples with DDPMScheduler.from_pretrained(model, subfolder="scheduler"),
    whatever scheduler the pipeline uses. Before: from_pipeline took the pipeline's scheduler; with
    Stable Diffusion 1.x's PNDM, set_timesteps(40) gives 41 timesteps (976, 951, 951, 926, …), so loop
    index t meant another timestep than ImageReward's (976, 951, 926, …)."""
    from diffusers import DDPMScheduler, PNDMScheduler

    from mmreward.vision.refl import DiffusionParts

    pndm = PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True,
                         steps_offset=1)
    unet = nn.Linear(1, 1)
    unet.config = types.SimpleNamespace(sample_size=8, in_channels=4)
    vae = nn.Linear(1, 1)
    vae.config = types.SimpleNamespace(scaling_factor=0.18215)
    pipe = types.SimpleNamespace(unet=unet, vae=vae, text_encoder=nn.Linear(1, 1), tokenizer=None, scheduler=pndm)
    parts = DiffusionParts.from_pipeline(pipe)
    assert isinstance(parts.scheduler, DDPMScheduler)
    assert torch.equal(parts.scheduler.betas, pndm.betas)
    parts.scheduler.set_timesteps(40)
    assert len(parts.scheduler.timesteps) == 40
    assert parts.scheduler.timesteps[:4].tolist() == [976, 951, 926, 901]
    assert parts.scheduler.timesteps[30:].tolist() == [226 - 25 * k for k in range(10)]
    assert DiffusionParts.from_pipeline(pipe, scheduler=pndm).scheduler is pndm  # explicit choice kept


# ------------------------------------------------------------------ StableReinforce (R1-Reward's PolicyLoss)
def test_stable_ppo_loss_is_a_mean_over_sequences_of_token_means():
    """R1-Reward's PolicyLoss: masked_mean(loss, action_mask, dim=-1).mean(). Ratio 1, advantages
    +1 (one token) and −1 (three tokens): per sequence −1 and +1 → loss 0. Before: a mean over all
    4 tokens, −(1 − 3) / 4 = 0.5, which weighs long answers more."""
    from mmreward.vision.stable_reinforce import StableReinforceConfig, stable_ppo_loss

    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    loss, _ = stable_ppo_loss(logp, logp, torch.tensor([1.0, -1.0]), mask, StableReinforceConfig())
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    # a sequence with no generated token is left out (the official masked mean would give NaN)
    mask3 = torch.tensor([[1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    loss3, _ = stable_ppo_loss(torch.zeros(3, 3), torch.zeros(3, 3), torch.tensor([1.0, -3.0, 5.0]), mask3,
                               StableReinforceConfig())
    assert loss3.item() == pytest.approx(-(1.0 - 3.0) / 2)


def test_stable_kl_term_is_averaged_per_sequence_too():
    """k3 = exp(ref − logp) − (ref − logp) − 1 per token, averaged as the policy loss: sequence 0
    (one token, ref − logp = 1): e − 2; sequence 1 (two tokens, 0): 0 → KL = (e − 2) / 2."""
    from mmreward.vision.stable_reinforce import StableReinforceConfig, stable_ppo_loss

    logp = torch.zeros(2, 2)
    ref = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    _, m = stable_ppo_loss(logp, logp, torch.zeros(2), mask, StableReinforceConfig(kl_coef=0.1), ref_logprobs=ref)
    assert m["kl"] == pytest.approx((math.e - 2) / 2, abs=1e-6)


# ------------------------------------------------------------------ VisualPRM (best-of-N response score)
def test_visual_prm_step_aggregation_by_hand():
    """VisualPRM's response score is the mean of its step scores (min / max on request)."""
    from mmreward.vision.visual_prm import VisualPRMConfig, reduce_step_scores

    steps = [torch.tensor([0.9, 0.3, 0.6]), torch.tensor([0.5])]
    assert VisualPRMConfig().reduce == "mean"
    assert reduce_step_scores(steps, "mean").tolist() == pytest.approx([0.6, 0.5])
    assert reduce_step_scores(steps, "min").tolist() == pytest.approx([0.3, 0.5])
    assert reduce_step_scores(steps, "max").tolist() == pytest.approx([0.9, 0.5])


class _ZeroUNet(nn.Module):
    config = types.SimpleNamespace(sample_size=4, in_channels=1)

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, encoder_hidden_states=None):
        return types.SimpleNamespace(sample=x * self.w)


class _IdentityVAE(nn.Module):
    config = types.SimpleNamespace(scaling_factor=1.0)

    def decode(self, z):
        return types.SimpleNamespace(sample=z.expand(-1, 3, -1, -1))


class _ZeroText(nn.Module):
    def forward(self, ids):
        return (torch.zeros(ids.shape[0], 2, 4),)


class _TokenizerStub:
    model_max_length = 2

    def __call__(self, prompts, **kw):
        return {"input_ids": torch.zeros(len(prompts), 2, dtype=torch.long)}


def test_refl_seeded_sampling_is_repeatable_with_ddpm():
    """sample(seed=…) / mean_reward evaluate from fixed noise; with ReFL's DDPM scheduler every step
    adds noise too. Before: that step noise came from the global RNG, so two calls with the same
    seed gave different images (and mean_reward moved without any training)."""
    from diffusers import DDPMScheduler

    from mmreward.vision.refl import DiffusionParts, ReFLConfig, sample

    parts = DiffusionParts(_ZeroUNet(), _IdentityVAE(), _ZeroText(), _TokenizerStub(),
                           DDPMScheduler(num_train_timesteps=100))
    cfg = ReFLConfig(num_inference_steps=4, min_step=0, max_step=3)
    torch.manual_seed(1)
    a = sample(parts, ["a", "b"], cfg, seed=3)
    torch.manual_seed(2)
    b = sample(parts, ["a", "b"], cfg, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample(parts, ["a", "b"], cfg, seed=4))


def test_visual_prm_training_step_accuracy_uses_the_configured_threshold():
    """Before: the training log's step_accuracy thresholded P(+) at a fixed 0.5 while
    evaluate_visual_prm used config.threshold, so the two disagreed. P(+) = 0.6 and 0.8 for a bad
    and a good step, threshold 0.7: both right (1.0); at 0.5 the bad one was counted good (0.5)."""
    from mmreward.vision.visual_prm import VisualPRMConfig, step_loss_fn

    class Stub:
        config = VisualPRMConfig(threshold=0.7)

        def __call__(self, **batch):
            return torch.tensor(0.3), torch.tensor([0.6, 0.8])

    _, metrics = step_loss_fn(Stub(), {"step_labels": torch.tensor([0.0, 0.5])})
    assert metrics["step_accuracy"] == 1.0


# ------------------------------------------------------------------ LAION aesthetic predictor, reluMSE files
class _ReluMSEPredictor(nn.Module):
    """improved-aesthetic-predictor's MLP of the reluMSE files (avaclipmlp_inf_wds-relu.py): Linear,
    ReLU, Dropout three times, then Linear(64, 16), ReLU, Linear(16, 1) — state dict names
    layers.0 / 3 / 6 / 9 / 11."""

    def __init__(self, d):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(d, 1024), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1024, 128), nn.ReLU(),
                                    nn.Dropout(0.2), nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1),
                                    nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


def test_relu_mse_aesthetic_predictor_file_as_released_loads_and_scores(tmp_path, tokenizer):
    """Before: the reluMSE file as improved-aesthetic-predictor saves it (layers.0/3/6/9/11, a ReLU
    after the 64→16 linear too) was refused as "not an aesthetic MLP"; now it scores as its own MLP
    on the L2-normalised image embedding (DDPO's aesthetic_scorer)."""
    import json

    import mmreward

    folder = tmp_path / "clip-vit-large-patch14"
    clip = _clip(tokenizer, "pickscore", size=8).model
    clip.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 8},
         "crop_size": {"height": 8, "width": 8}, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}))
    torch.manual_seed(5)
    mlp = _ReluMSEPredictor(clip.config.projection_dim).eval()
    with torch.no_grad():  # biases that keep some units of each layer active
        for m in mlp.layers:
            if isinstance(m, nn.Linear):
                m.bias.uniform_(0.0, 0.5)
    torch.save(mlp.state_dict(), folder / "ava+logos-l14-reluMSE.pth")
    ours = mmreward.load(str(folder))
    assert ours.config.kind == "aesthetic" and ours.config.aesthetic_relu_dropout
    imgs = [_image(8, 8, seed=s) for s in (6, 7)]
    with torch.no_grad():
        e = clip.visual_projection(clip.vision_model(pixel_values=ours.pixel_batch(imgs, ["a", "b"])).pooler_output)
        want = mlp(e / e.norm(dim=-1, keepdim=True))[:, 0]
    got = ours.score([{"image": x} for x in imgs])
    assert torch.allclose(got, want, atol=1e-6)
    ours.save_pretrained(str(tmp_path / "saved"))
    assert torch.equal(mmreward.load(str(tmp_path / "saved")).score([{"image": x} for x in imgs]), got)

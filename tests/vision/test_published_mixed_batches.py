"""A published scorer's batch: an image scores the same whether or not an image that requires grad
(which takes the differentiable torch resize) shares its batch — it went through the torch resize
with it, 0.23 off its PIL-path score in PickScore — and the gradient still reaches that image."""
import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from test_published_clip import tiny_clip  # noqa: E402

from mmreward.core.inputs import ImagePrompt  # noqa: E402


def clip_scorer():
    from mmreward.vision.published.clip_scorers import CLIPScorer, CLIPScorerConfig

    model, tok = tiny_clip()
    return CLIPScorer(CLIPScorerConfig(kind="pickscore", clip_config=model.config.to_dict(), image_size=32), tok, model)


def blip_scorer():
    from test_published_imagereward import MED

    from mmreward.vision.published.imagereward import BLIPImageReward, BLIPImageRewardConfig
    from mmreward.vision.testing import word_tokenizer

    tok = word_tokenizer(["a", "cat", "dog"])
    med = {**MED, "vocab_size": len(tok), "encoder_width": 64, "add_cross_attention": True}
    torch.manual_seed(0)
    model = BLIPImageReward(BLIPImageRewardConfig(image_size=32, vision_width=64, vision_depth=1, vision_heads=1,
                                                  text_config=med), tok)
    with torch.no_grad():
        for v in model.parameters():
            v.normal_(std=0.2)
    return model


@pytest.mark.parametrize("build", [clip_scorer, blip_scorer])
def test_an_image_scores_the_same_beside_a_differentiable_one(build):
    scorer = build()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (33, 81, 3), dtype=np.uint8)]
    alone = scorer.score([ImagePrompt("a cat", x) for x in images])
    pixels = torch.rand(3, 40, 40, requires_grad=True)
    mixed = scorer.score([ImagePrompt("a cat", images[0]), ImagePrompt("a dog", pixels),
                          ImagePrompt("a cat", images[1])])
    assert torch.allclose(mixed[[0, 2]], alone, atol=1e-5), (mixed, alone)
    want = scorer.score([ImagePrompt("a dog", pixels.detach().requires_grad_())])
    assert torch.allclose(mixed[1], want[0], atol=1e-5)
    mixed.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


@pytest.mark.parametrize("build", [clip_scorer, blip_scorer])
def test_an_empty_pil_image_is_named(build):
    """A 0-pixel-wide PIL image raised ZeroDivisionError in the PIL resize of the published scorers."""
    from PIL import Image

    with pytest.raises(ValueError, match=r"input 1: image is empty \(5x0 pixels\)"):
        build().score([ImagePrompt("a cat", np.zeros((8, 8, 3), np.uint8)), ImagePrompt("a cat", Image.new("RGB", (0, 5)))])

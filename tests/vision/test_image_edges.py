"""Edge images in the CLIP-style preprocessing of every scorer: an extreme aspect ratio (a 1 x 20000
strip) is resized without the gigabyte intermediate of a full shortest-side resize, and that path
gives the pixels of the full resize."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
from mmreward.core.inputs import ImagePrompt  # noqa: E402
from mmreward.vision import images as I  # noqa: E402
from mmreward.vision.published import common as C  # noqa: E402

LIMIT = 4 * 224 * 224  # the largest resize output allowed here (pixels)


@pytest.fixture
def no_huge_resize(monkeypatch):
    """Fail (before allocating) any torch / PIL resize to more than LIMIT pixels."""
    from PIL import Image

    interpolate, resize = F.interpolate, Image.Image.resize

    def checked_interpolate(x, size=None, **kw):
        assert size is None or size[0] * size[1] <= LIMIT, f"resize to {size}"
        return interpolate(x, size=size, **kw)

    def checked_resize(self, size, *a, **kw):
        assert size[0] * size[1] <= LIMIT, f"PIL resize to {size}"
        return resize(self, size, *a, **kw)

    monkeypatch.setattr(I.F, "interpolate", checked_interpolate)
    monkeypatch.setattr(Image.Image, "resize", checked_resize)


@pytest.mark.parametrize("hw", [(1, 20000), (20000, 1), (3, 50001)])
def test_an_extreme_aspect_ratio_needs_no_huge_intermediate(no_huge_resize, hw):
    from PIL import Image

    rng = np.random.default_rng(0)
    x = torch.rand(1, 3, *hw, requires_grad=True)
    out = I.resize_center_crop(x, 224)
    assert out.shape == (1, 3, 224, 224) and torch.isfinite(out).all()
    out.sum().backward()  # still differentiable (ReFL)
    assert x.grad.abs().sum() > 0
    pil = Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    for rounding in ("round", "floor"):
        assert C.shortest_edge_crop(pil, 224, rounding).shape == (3, 224, 224)


def test_scorers_take_an_extreme_aspect_ratio(no_huge_resize):
    """every published family's preprocessing and the trainable scorer, end to end (size 32: a 1 x 20000
    strip would need a 32 x 640 000 intermediate)."""
    from test_published_clip import tiny_clip
    from test_published_mixed_batches import blip_scorer

    from mmreward.vision.published.clip_scorers import CLIPScorer, CLIPScorerConfig

    global LIMIT
    LIMIT, saved = 4 * 32 * 32, LIMIT
    try:
        strip = np.random.default_rng(1).integers(0, 256, (1, 20000, 3), dtype=np.uint8)
        model, tok = tiny_clip()
        clip = [CLIPScorer(CLIPScorerConfig(kind=kind, clip_config=model.config.to_dict(), image_size=32), tok, model)
                for kind in ("pickscore", "hpsv2")]
        for scorer in (*clip, blip_scorer()):
            s = scorer.score([ImagePrompt("a cat", strip), ImagePrompt("a cat", strip.transpose(1, 0, 2))])
            assert s.shape == (2,) and torch.isfinite(s).all()
            grad = torch.rand(3, 1, 20000, requires_grad=True)
            scorer.score([ImagePrompt("a cat", grad)]).sum().backward()
            assert grad.grad is not None
    finally:
        LIMIT = saved


@pytest.mark.parametrize("hw", [(3, 500), (500, 3), (7, 900), (900, 7), (33, 2000), (1, 300)])
def test_the_crop_only_resize_equals_the_full_resize(monkeypatch, hw):
    from PIL import Image

    x = torch.rand(2, 3, *hw, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    full = I.resize_center_crop(x, 32)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]  # a smooth image: PIL's uint8 passes round alike
    smooth = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], -1).astype(np.uint8)
    pil_full = {r: C.shortest_edge_crop(Image.fromarray(smooth), 32, r) for r in ("round", "floor")}
    monkeypatch.setattr(I, "FULL_RESIZE_MAX_PIXELS", 0)  # every resize takes the crop-only path
    assert torch.allclose(I.resize_center_crop(x, 32), full, atol=1e-12, rtol=0)
    assert torch.allclose(I.resize_center_crop(x.float(), 32), full.float(), atol=2e-4, rtol=0)
    for r, want in pil_full.items():
        assert (C.shortest_edge_crop(Image.fromarray(smooth), 32, r) - want).abs().max() <= 1.01 / 255


def test_float_and_32_bit_grey_images_are_read_or_refused_by_mode(tmp_path):
    """PIL's RGB conversion clips mode 'F' (32-bit float) and 'I' (32-bit int) greys to 0-255: a depth map
    in [0, 1] became black, one in 0-1e6 white. 'F' in [0, 1] is read as a float image is; values with no
    implied scale are refused naming the input, the mode and the range; every path reads the same levels."""
    from PIL import Image

    from mmreward.vision.images import load_image, to_pil
    from mmreward.vision.vlm_data import pil_images

    depth = np.linspace(0, 1, 30 * 40, dtype=np.float32).reshape(30, 40)
    levels = np.rint(depth * 255).astype(np.uint8)
    im = Image.fromarray(depth)
    assert im.mode == "F"
    Image.fromarray(depth).save(tmp_path / "depth.tif")
    for got in (to_pil(im), load_image(str(tmp_path / "depth.tif")), pil_images([im], "input 0")[0]):
        assert np.array_equal(np.asarray(got)[..., 1], levels)
    torch.testing.assert_close(I.to_tensor(im), I.to_tensor(levels))
    pv = C.shortest_edge_crop_batch([im, levels], ["input 0", "input 1"], 32, "round", (0, 0, 0), (1, 1, 1),
                                    rgb_first=False)
    torch.testing.assert_close(pv[0], pv[1])
    # 16-bit values in mode 'I' (16-bit PNGs in older Pillow) keep their levels
    as_int = Image.fromarray(levels.astype(np.int32) * 257)
    assert as_int.mode == "I" and np.array_equal(np.asarray(to_pil(as_int))[..., 0], levels)
    with pytest.raises(ValueError, match=r"input 2: PIL image in mode 'F' \(32-bit float\) has values in \[0, 5\]"):
        I.to_tensor(Image.fromarray(depth * 5), "input 2")
    Image.fromarray(depth * 5).save(tmp_path / "metres.tif")
    with pytest.raises(ValueError, match=r"input 3: image file '.*metres.tif': PIL image in mode 'F'"):
        load_image(str(tmp_path / "metres.tif"), "input 3")
    with pytest.raises(ValueError, match=r"input 1: PIL image in mode 'I' \(32-bit integer\) has values in "
                                         r"\[0, 1000000\]"):
        to_pil(Image.fromarray((depth * 1e6).astype(np.int32)), "input 1")
    with pytest.raises(ValueError, match=r"input 0: PIL image \(mode 'F'\) holds NaN"):
        I.to_tensor(Image.fromarray(np.full((4, 4), np.nan, np.float32)), "input 0")


def test_published_scorers_warn_when_they_truncate_a_prompt():
    """the official scorers cut prompts at 77 (CLIP family) / 35 (ImageReward) tokens: that stays, but no
    longer silently (the trainable scorer already warned)."""
    import warnings

    from test_published_mixed_batches import blip_scorer, clip_scorer

    img = np.zeros((8, 8, 3), np.uint8)
    for scorer in (clip_scorer(), blip_scorer()):
        with pytest.warns(UserWarning, match=r"1 prompt\(s\) exceed the text encoder's limit of \d+ tokens and were "
                                             r"truncated \(first: 'a cat a cat"):
            scorer.score([ImagePrompt("a cat", img), ImagePrompt("a cat " * 300, img)])
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            scorer.score([ImagePrompt("a cat", img)])

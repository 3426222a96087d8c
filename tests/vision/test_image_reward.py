"""ImageRewardModel: inputs, broadcasting, gradients, ranking, normalisation, save / load."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from mmreward.vision import synthetic as S
from mmreward.vision.image_reward import (
    ConvTextConfig,
    ImageRewardModel,
    word_tokenizer,
)
from mmreward.vision.train import tiny_clip_config

from mmreward.core.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    tok = word_tokenizer(S.vocabulary(), max_length=16)
    cfg = tiny_clip_config(len(tok), width=32, image_size=32)
    cfg.text_config.max_position_embeddings = 16
    return ImageRewardModel.from_backbone(cfg, tokenizer=tok).eval()


@pytest.fixture(scope="module")
def conv_model():
    torch.manual_seed(0)
    return ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=16)).eval()


def images(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def test_head_is_imagereward_mlp(clip_model):
    layers = list(clip_model.head)
    linear = [(m.in_features, m.out_features) for m in layers if isinstance(m, torch.nn.Linear)]
    drops = [m.p for m in layers if isinstance(m, torch.nn.Dropout)]
    assert linear == [(32, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    assert drops == [0.2, 0.2, 0.1]
    assert clip_model.config.image_size == 32 and clip_model.config.backbone_config == {"class": "CLIPModel"}


@pytest.mark.parametrize("which", ["clip_model", "conv_model"])
def test_score_accepts_tensors_pil_arrays_and_paths(which, request, tmp_path):
    from PIL import Image

    model = request.getfixturevalue(which)
    x = images(3, size=40)  # not the model's size: resized + centre-cropped in torch
    arrays = [(t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for t in x]
    pils = [Image.fromarray(a) for a in arrays]
    paths = []
    for i, p in enumerate(pils):
        paths.append(str(tmp_path / f"{i}.png"))
        p.save(paths[-1])
    with torch.no_grad():
        s_tensor = model.score("a red circle on the left", x)
        s_pil = model.score("a red circle on the left", pils)
        s_arr = model.score("a red circle on the left", arrays)
        s_path = model.score("a red circle on the left", paths)
    assert s_tensor.shape == (3,) and s_tensor.dtype == torch.float32
    # uint8 quantisation is the only difference between the tensor and file inputs
    torch.testing.assert_close(s_pil, s_path)
    torch.testing.assert_close(s_pil, s_arr)
    torch.testing.assert_close(s_pil, s_tensor, atol=1e-3 * float(s_tensor.abs().max()) + 1e-6, rtol=0.05)


def test_one_prompt_broadcasts_and_per_image_prompts_are_used(clip_model):
    x = images(2)
    with torch.no_grad():
        one = clip_model.score("two blue squares on the right", x)
        per = clip_model.score(["two blue squares on the right"] * 2, x)
        mixed = clip_model.score(["two blue squares on the right", "a red circle on the left"], x)
        alone = clip_model.score("a red circle on the left", x[1:])
    torch.testing.assert_close(one, per)
    torch.testing.assert_close(mixed[1:], alone)
    torch.testing.assert_close(mixed[:1], one[:1])


def test_score_is_differentiable_in_the_pixels(clip_model):
    x = images(2).requires_grad_()
    clip_model.score("a red circle on the left", x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_rank_orders_by_score(conv_model):
    x = images(5)
    ranking, scores = conv_model.rank("a red circle on the left", x)
    assert sorted(ranking) == list(range(5))
    assert scores[ranking].tolist() == sorted(scores.tolist(), reverse=True)


def test_long_prompt_is_truncated_with_a_warning(clip_model):
    long = " ".join(["red circle"] * 30)
    with pytest.warns(UserWarning, match="truncated"):
        s = clip_model.score(long, images(1))
    assert torch.isfinite(s).all()


@pytest.mark.parametrize("bad, err, match", [
    (lambda: images(2).double().mul(255), ValueError, r"\[0, 1\]"),
    (lambda: torch.full((1, 3, 8, 8), float("nan")), ValueError, "NaN"),
    (lambda: torch.rand(2, 4, 8, 8), ValueError, r"\[B, 3, H, W\]"),
    (lambda: torch.zeros(2, 3, 8, 8, dtype=torch.uint8), TypeError, "float"),
    (list, ValueError, "empty"),
    (lambda: ["/no/such/image.png"], ValueError, "does not exist"),
    (lambda: [42], TypeError, "image 0"),
])
def test_bad_images_raise_clear_errors(conv_model, bad, err, match):
    with pytest.raises(err, match=match):
        conv_model.score("a red circle", bad())


def test_prompt_count_must_match(conv_model):
    with pytest.raises(ValueError, match="3 prompts for 2 images"):
        conv_model.score(["a", "b", "c"], images(2))
    with pytest.raises(TypeError, match="prompts"):
        conv_model.score([1, 2], images(2))


def test_fit_normalization_standardises_scores(conv_model):
    x = images(8, seed=1)
    mean, std = conv_model.fit_normalization("a red circle on the left", x)
    with torch.no_grad():
        s = conv_model.score("a red circle on the left", x)
    assert abs(float(s.mean())) < 1e-4 and abs(float(s.std()) - 1) < 1e-4
    raw = conv_model.score("a red circle on the left", x, normalize=False).detach()
    torch.testing.assert_close(raw, s * std + mean)


@pytest.mark.parametrize("which", ["clip_model", "conv_model"])
def test_save_and_load_round_trip_without_pickle(which, request, tmp_path):
    model = request.getfixturevalue(which)
    model.reward_mean.fill_(0.5)
    model.save_pretrained(str(tmp_path / "m"))
    files = {os.path.relpath(os.path.join(r, f), tmp_path / "m") for r, _, fs in os.walk(tmp_path / "m") for f in fs}
    assert all(f.endswith((".json", ".safetensors", ".txt")) for f in files), files
    back = ImageRewardModel.from_pretrained(str(tmp_path / "m"))
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(back.score("a red circle", x), model.score("a red circle", x))
    assert float(back.reward_mean) == 0.5


def test_corrupt_and_foreign_checkpoints_raise(conv_model, tmp_path):
    folder = tmp_path / "m"
    conv_model.save_pretrained(str(folder))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "vqgan"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "other" / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="not 'image_reward'"):
        ImageRewardModel.from_pretrained(str(tmp_path / "other"))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        ImageRewardModel.from_pretrained(str(folder))


def test_from_backbone_reads_a_model_folder(tmp_path):
    from transformers import CLIPModel

    tok = word_tokenizer(S.vocabulary(), max_length=16)
    cfg = tiny_clip_config(len(tok), width=32, image_size=32)
    CLIPModel(cfg).save_pretrained(str(tmp_path / "clip"))
    tok.save_pretrained(str(tmp_path / "clip"))
    pre = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "crop_size": {"height": 32, "width": 32}}
    (tmp_path / "clip" / "preprocessor_config.json").write_text(json.dumps(pre))
    model = ImageRewardModel.from_backbone(str(tmp_path / "clip"), fusion="product_concat")
    assert model.config.image_mean == (0.5, 0.5, 0.5) and model.config.image_std == (0.25, 0.25, 0.25)
    assert model.head[0].in_features == 3 * 32  # product_concat: [t*i, t, i]
    assert model.score("a red circle", images(2)).shape == (2,)


def test_import_vision_stays_light():
    code = ("import sys, mmreward.vision as v, mmreward.vision.image_reward, mmreward.vision.train, "
            "mmreward.vision.video, mmreward.vision.refl, mmreward.vision.cli; v.ImageRewardModel; "
            "print(sorted(m for m in ('transformers', 'diffusers', 'cv2', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("kind", ["siglip", "blip"])
def test_other_dual_encoders_work_as_backbones(kind, tmp_path):
    import transformers

    tok = word_tokenizer(["a", "red", "circle"], max_length=16)
    v = len(tok)
    text = dict(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    if kind == "siglip":
        cfg = transformers.SiglipConfig(text_config=text, vision_config=vision)
    else:
        cfg = transformers.BlipConfig(text_config=dict(text, encoder_hidden_size=32), vision_config=vision,
                                      projection_dim=16)
    model = ImageRewardModel.from_backbone(cfg, tokenizer=tok)
    x = images(2, size=40).requires_grad_()
    model.score("a red circle", x).sum().backward()
    assert x.grad.abs().sum() > 0
    model.save_pretrained(str(tmp_path / kind))
    back = ImageRewardModel.from_pretrained(str(tmp_path / kind))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(back.score("a red circle", x), model.score("a red circle", x))


def test_lazy_names_resolve_and_a_missing_module_fails_only_when_used(monkeypatch):
    import mmreward.vision as v

    for name in ("ImageRewardModel", "train_image_reward", "ReFLConfig", "score_video", "synthetic"):
        assert getattr(v, name) is not None
    monkeypatch.setitem(v._LAZY, "NotThere", "no_such_module")
    with pytest.raises(ModuleNotFoundError):
        _ = v.NotThere
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = v.nope

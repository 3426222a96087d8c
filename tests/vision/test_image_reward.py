"""ImageRewardModel: ImagePrompt / VideoPrompt inputs of every kind, gradients, ranking,
normalisation, save / load, and clear errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import mmreward
from mmreward.core.checkpoint import CheckpointError
from mmreward.core.inputs import ImagePrompt, VideoPrompt
from mmreward.vision import synthetic as S
from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel
from mmreward.vision.testing import tiny_clip_config, word_tokenizer


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


def prompted(prompt, imgs):
    """One ImagePrompt per image (``imgs``: a tensor [B, 3, H, W] or a list)."""
    return [ImagePrompt(prompt, x) for x in (imgs.unbind(0) if isinstance(imgs, torch.Tensor) else imgs)]


def test_head_is_imagereward_mlp(clip_model):
    layers = list(clip_model.head)
    linear = [(m.in_features, m.out_features) for m in layers if isinstance(m, torch.nn.Linear)]
    drops = [m.p for m in layers if isinstance(m, torch.nn.Dropout)]
    assert linear == [(32, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    assert drops == [0.2, 0.2, 0.1]
    assert clip_model.config.image_size == 32 and clip_model.config.backbone_config == {"class": "CLIPModel"}


@pytest.mark.parametrize("which", ["clip_model", "conv_model"])
def test_score_accepts_tensors_pil_arrays_paths_and_dicts(which, request, tmp_path):
    from PIL import Image

    model = request.getfixturevalue(which)
    x = images(3, size=40)  # not the model's size: resized + centre-cropped in torch
    arrays = [(t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for t in x]
    pils = [Image.fromarray(a) for a in arrays]
    paths = []
    for i, p in enumerate(pils):
        paths.append(str(tmp_path / f"{i}.png"))
        p.save(paths[-1])
    u8 = [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in arrays]
    p = "a red circle on the left"
    s_tensor = model.score(prompted(p, x))
    s_pil, s_path, s_arr = (model.score(prompted(p, imgs)) for imgs in (pils, paths, arrays))
    s_u8 = model.score(prompted(p, u8))
    s_dict = model.score([{"prompt": p, "image": path} for path in paths])
    assert s_tensor.shape == (3,) and s_tensor.dtype == torch.float32 and not s_tensor.requires_grad
    # uint8 quantisation is the only difference between the tensor and the other inputs
    for other in (s_path, s_arr, s_u8, s_dict):
        torch.testing.assert_close(s_pil, other)
    torch.testing.assert_close(s_pil, s_tensor, atol=1e-3 * float(s_tensor.abs().max()) + 1e-6, rtol=0.05)
    # batching does not change scores
    torch.testing.assert_close(model.score(prompted(p, x), batch_size=1), s_tensor)


def test_each_input_is_scored_against_its_own_prompt(clip_model):
    x = images(2)
    a, b = "two blue squares on the right", "a red circle on the left"
    one = clip_model.score(prompted(a, x))
    mixed = clip_model.score([ImagePrompt(a, x[0]), ImagePrompt(b, x[1])])
    alone = clip_model.score(prompted(b, x[1:]))
    torch.testing.assert_close(mixed[1:], alone)
    torch.testing.assert_close(mixed[:1], one[:1])


def test_score_is_differentiable_in_float_pixels_that_require_grad(clip_model):
    x = images(2).requires_grad_()
    s = clip_model.score(prompted("a red circle on the left", x))
    assert s.requires_grad
    s.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():  # plain scoring inside no_grad stays possible
        assert not clip_model.score(prompted("a red circle on the left", x)).requires_grad


def test_a_video_scores_the_mean_of_its_frames(conv_model, tmp_path):
    from PIL import Image

    frames = (images(5, seed=3).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # (T, H, W, 3)
    p = "a red circle on the left"
    per_frame = conv_model.score(prompted(p, list(frames)))
    parts = conv_model.score_parts([VideoPrompt(p, frames), ImagePrompt(p, frames[0])])
    torch.testing.assert_close(parts[0], per_frame)
    torch.testing.assert_close(parts[1], per_frame[:1])  # an image is a one-frame input
    s = conv_model.score([VideoPrompt(p, frames), ImagePrompt(p, frames[1])], batch_size=2)
    torch.testing.assert_close(s, torch.stack([per_frame.mean(), per_frame[1]]))
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"f{t}.png")
    torch.testing.assert_close(conv_model.score([{"prompt": p, "video": str(folder)}]), s[:1])
    # a float video tensor [T, 3, H, W] stays differentiable (ReFL on videos)
    v = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255).requires_grad_()
    conv_model.score([VideoPrompt(p, v)]).sum().backward()
    assert v.grad.abs().sum() > 0


def test_rank_orders_by_score(conv_model):
    x = images(5)
    ranking, scores = conv_model.rank("a red circle on the left", x)
    assert sorted(ranking) == list(range(5))
    assert scores[ranking].tolist() == sorted(scores.tolist(), reverse=True)
    _, from_list = conv_model.rank("a red circle on the left", list(x))
    torch.testing.assert_close(from_list, scores)


def test_long_prompt_is_truncated_with_a_warning(clip_model):
    long = " ".join(["red circle"] * 30)
    with pytest.warns(UserWarning, match="truncated"):
        s = clip_model.score(prompted(long, images(1)))
    assert torch.isfinite(s).all()


@pytest.mark.parametrize("bad, err, match", [
    (lambda: images(1).double().mul(255)[0], ValueError, r"input 1: .*\[0, 1\]"),
    (lambda: torch.full((3, 8, 8), float("nan")), ValueError, "input 1: image holds NaN"),
    (lambda: torch.rand(4, 8, 8), ValueError, r"input 1: image tensor must be \[3, H, W\]"),
    (lambda: torch.zeros(3, 8, 8, dtype=torch.int32), TypeError, "input 1: .*float"),
    (lambda: "/no/such/image.png", ValueError, "input 1: image file '/no/such/image.png' does not exist"),
    (lambda: 42, TypeError, "input 1: expected a path"),
    (lambda: np.zeros((0, 0, 3), np.uint8), ValueError, r"input 1: image is empty \(0x0 pixels\)"),
    (lambda: torch.zeros(3, 0, 8), ValueError, r"input 1: image is empty \(0x8 pixels\)"),
])
def test_bad_images_raise_errors_naming_the_input(conv_model, bad, err, match):
    with pytest.raises(err, match=match):
        conv_model.score([ImagePrompt("a red circle", images(1)[0]), ImagePrompt("a red circle", bad())])


def test_bad_inputs_raise_clear_errors(conv_model, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        conv_model.score([ImagePrompt("a", str(tmp_path / "broken.png"))])
    with pytest.raises(ValueError, match="input 0: field 'prompt' must be a string, got 3"):
        conv_model.score([ImagePrompt(3, images(1)[0])])
    # a prompt-conditioned scorer refuses an image without a prompt (a forgotten --prompt scored as "")
    for missing in (ImagePrompt(None, images(1)[0]), {"image": images(1)[0]}, ImagePrompt("  ", images(1)[0]),
                    VideoPrompt("", np.zeros((2, 8, 8, 3), np.uint8))):
        with pytest.raises(ValueError, match="input 1: no prompt: this ImageRewardModel scores an image against"):
            conv_model.score([ImagePrompt("a", images(1)[0]), missing])
    with pytest.raises(ValueError, match="got no inputs"):
        conv_model.score([])
    with pytest.raises(TypeError, match="takes a list of inputs"):
        conv_model.score(ImagePrompt("a", images(1)[0]))
    with pytest.raises(ValueError, match="input 0: a video array must be uint8"):
        conv_model.score([VideoPrompt("a", np.zeros((2, 8, 8), np.uint8))])
    with pytest.raises(ValueError, match="does not exist"):
        conv_model.score([VideoPrompt("a", str(tmp_path / "missing.mp4"))])


def test_fit_normalization_standardises_scores(conv_model):
    x = images(8, seed=1)
    p = "a red circle on the left"
    raw = conv_model.score(prompted(p, x)) * conv_model.reward_std + conv_model.reward_mean
    mean, std = conv_model.fit_normalization(prompted(p, x))
    s = conv_model.score(prompted(p, x))
    assert abs(float(s.mean())) < 1e-4 and abs(float(s.std()) - 1) < 1e-4
    torch.testing.assert_close(s * std + mean, raw, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        conv_model.fit_normalization(prompted(p, x[:1]))


@pytest.mark.parametrize("which", ["clip_model", "conv_model"])
def test_save_and_load_round_trip_without_pickle(which, request, tmp_path):
    model = request.getfixturevalue(which)
    model.reward_mean.fill_(0.5)
    model.save_pretrained(str(tmp_path / "m"))
    files = {os.path.relpath(os.path.join(r, f), tmp_path / "m") for r, _, fs in os.walk(tmp_path / "m") for f in fs}
    assert all(f.endswith((".json", ".safetensors", ".txt")) for f in files), files
    back = mmreward.load(str(tmp_path / "m"))
    assert type(back) is ImageRewardModel and not back.training
    x = prompted("a red circle", images(3))
    torch.testing.assert_close(back.score(x), model.score(x))
    assert float(back.reward_mean) == 0.5


def test_corrupt_foreign_and_incomplete_folders_raise(clip_model, conv_model, tmp_path):
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
    # an hf scorer needs its tokenizer to score: a folder without one is refused by name
    import shutil

    clip_model.save_pretrained(str(tmp_path / "clip"))
    shutil.rmtree(tmp_path / "clip" / "tokenizer")
    (tmp_path / "clip" / "manifest.json").unlink()  # hand-edited folder: no manifest to check against
    with pytest.raises(CheckpointError, match="tokenizer .*the text tokenizer.* is missing"):
        mmreward.load(str(tmp_path / "clip"))


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
    assert model.score(prompted("a red circle", images(2))).shape == (2,)


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
    model.score(prompted("a red circle", x)).sum().backward()
    assert x.grad.abs().sum() > 0
    model.save_pretrained(str(tmp_path / kind))
    back = mmreward.load(str(tmp_path / kind))
    torch.testing.assert_close(back.score(prompted("a red circle", x)), model.score(prompted("a red circle", x)))


def test_lazy_names_resolve_and_a_missing_module_fails_only_when_used(monkeypatch):
    import mmreward.vision as v

    for name in ("ImageRewardModel", "train_image_reward", "ReFLConfig", "score_video", "synthetic", "ImagePrompt"):
        assert getattr(v, name) is not None
    monkeypatch.setitem(v._LAZY, "NotThere", "no_such_module")
    with pytest.raises(ModuleNotFoundError):
        _ = v.NotThere
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = v.nope


def test_exports_are_models_configs_trainers_and_inputs_without_clashes():
    """Test helpers live in mmreward.vision.testing; no exported name means something else in
    mmreward.text / mmreward.robotics (names shared with them are the same core input classes)."""
    import mmreward.robotics as robotics
    import mmreward.text as text
    import mmreward.vision as v

    assert not {"word_tokenizer", "tiny_clip_config", "tiny_processor", "tiny_qwen2vl_config", "load_image",
                "evaluate", "read_jsonl", "PairCollator", "tiny_llama"} & set(v.__all__)
    for other in (text, robotics):
        for name in set(v.__all__) & set(dir(other)):
            assert v._LAZY[name] == "mmreward.core.inputs" and getattr(other, name) is getattr(v, name), name


def test_sixteen_bit_greys_keep_their_levels(conv_model, tmp_path):
    """A 16-bit grey PNG scores as the 8-bit grey it shows (PIL's RGB conversion clips it to white)."""
    from PIL import Image

    from mmreward.vision.images import as_rgb, to_tensor

    grey8 = np.random.default_rng(0).integers(0, 256, (24, 24)).astype(np.uint8)
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    torch.testing.assert_close(to_tensor(str(tmp_path / "g16.png")), to_tensor(str(tmp_path / "g8.png")))
    torch.testing.assert_close(to_tensor(Image.open(tmp_path / "g16.png")), to_tensor(grey8))
    assert np.array_equal(np.asarray(as_rgb(Image.open(tmp_path / "g16.png")))[..., 1], grey8)
    torch.testing.assert_close(conv_model.score([ImagePrompt("a", str(tmp_path / "g16.png"))]),
                               conv_model.score([ImagePrompt("a", str(tmp_path / "g8.png"))]))


def test_score_command_without_prompt_names_the_file(conv_model, tmp_path, capsys):
    """`mmreward score --model SCORER a.png` with --prompt forgotten: one line naming the file, exit 2 (it
    scored every image against an empty prompt)."""
    from PIL import Image

    from mmreward.cli import main

    conv_model.save_pretrained(str(tmp_path / "m"))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["score", "--model", str(tmp_path / "m"), str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a.png" in err and "no prompt" in err and "--prompt" in err, err
    assert main(["score", "--model", str(tmp_path / "m"), "--prompt", "a red circle", str(tmp_path / "a.png")]) == 0


def test_conv_text_encoder_reads_unicode_words_and_old_saves_keep_their_rule(tmp_path):
    """The conv scorer's words were `[a-z0-9]+`: a prompt in Chinese or with accents lost those words
    silently (every non-ASCII prompt scored as one unknown word). New models read Unicode words; a model
    saved without `word_pattern` keeps the ASCII rule, so its scores do not change."""
    torch.manual_seed(0)
    vocab = ["红色", "圆", "café", "red"]
    model = ImageRewardModel.from_backbone(ConvTextConfig(vocab=vocab, embed_dim=16)).eval()
    ids = model.backbone.tokenize(["红色 圆", "Café red", "红色"])["input_ids"]
    w = model.backbone.word_ids
    assert ids.tolist() == [[w["红色"], w["圆"]], [w["café"], w["red"]], [w["红色"], 0]]
    img = images(1)[0]
    a, b = model.score([ImagePrompt("红色 圆", img), ImagePrompt("café", img)]).tolist()
    assert a != b  # the two prompts are different words now, not both "unknown"
    # a folder saved before the field existed (no word_pattern in its backbone config) reads ASCII words
    model.save_pretrained(str(tmp_path / "m"))
    cfg_path = tmp_path / "m" / "config.json"
    body = json.loads(cfg_path.read_text())
    body["config"]["backbone_config"].pop("word_pattern")
    cfg_path.write_text(json.dumps(body))
    (tmp_path / "m" / "manifest.json").unlink()  # the config was edited on purpose
    old = mmreward.load(str(tmp_path / "m"))
    assert old.backbone.tokenize(["Café red"])["input_ids"].tolist() == [[1, w["red"]]]  # "caf" unknown, as before
    with pytest.raises(ValueError, match="word_pattern"):
        ImageRewardModel.from_backbone(ConvTextConfig(vocab=vocab, word_pattern="(["))


def test_a_trained_scorer_has_the_unicode_words_of_its_prompts():
    """`vision train` built the vocabulary with the old ASCII rule ("café" → "caf", "e"), so the model, which
    reads Unicode words, found every non-ASCII training word unknown."""
    from mmreward.vision.train import ImageRewardTrainConfig, build_model

    model = build_model(ImageRewardTrainConfig(backbone="conv", embed_dim=8), ["a café au lait", "红色 圆 on the left"])
    vocab = set(model.backbone.config.vocab)
    assert {"café", "红色", "圆"} <= vocab and "caf" not in vocab
    ids = model.backbone.tokenize(["café 红色"])["input_ids"][0].tolist()
    assert 1 not in ids  # no unknown word

"""CLIP-based published scorers: HPSv2 (open_clip checkpoint), PickScore and CLIP score (transformers
CLIPModel folders). Parity with the official code (hpsv2's img_score, PickScore's README code,
torchmetrics' clip_score) on tiny random weights, with transformers' CLIPModel in this venv, the
open_clip -> CLIPModel renaming, refusals of partial folders, save / load and the score command."""
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the CLIP scorers need transformers")
from published_fixtures import PROMPTS, TOLERANCE, reference, write_images  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import ImagePrompt  # noqa: E402
from mmreward.vision.published.clip_scorers import CLIPScorer, _byte_symbols  # noqa: E402


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(str(tmp_path_factory.mktemp("images")))


def scores(model, images):
    return torch.stack([model.score([ImagePrompt(p, x) for x in images]) for p in PROMPTS])


# ------------------------------------------------------------------ parity with the official code
def test_hpsv2_matches_hpsv2_img_score(images, tmp_path):
    """HPS_v2_compressed.pt saved as HPSv2 saves it ({"state_dict": …}, half-precision tensors), scored
    by hpsv2.img_score.score: ResizeMaxSize + padding, open_clip's tokenizer, cosine."""
    folder = str(tmp_path / "HPSv2")
    ref = reference("hpsv2", folder, image_size=32, checkpoint="HPS_v2_compressed.pt", images=images,
                    prompts=PROMPTS, fp16=True)
    model = mmreward.load(folder)
    assert isinstance(model, CLIPScorer) and model.config.kind == "hpsv2"
    assert (scores(model, images) - torch.tensor(ref["scores"])).abs().max() <= TOLERANCE


@pytest.fixture(scope="module")
def official_clip(images, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("clip") / "PickScore_v1")
    return folder, reference("clip", folder, image_size=32, images=images, prompts=PROMPTS, logit_scale=4.6,
                             aligned=True)


def test_pickscore_matches_its_readme_code(official_clip, images):
    folder, ref = official_clip
    model = mmreward.load(folder)  # the folder's name says PickScore
    assert model.config.kind == "pickscore"
    assert (scores(model, images) - torch.tensor(ref["pickscore"])).abs().max() <= TOLERANCE


def test_clip_score_matches_torchmetrics(official_clip, images):
    folder, ref = official_clip
    model = mmreward.load(folder, kind="clip_score")
    assert (scores(model, images) - torch.tensor(ref["clip_score"])).abs().max() <= TOLERANCE


# ------------------------------------------------------------------ in-process checks (no side environment)
def tiny_clip(image_size=32):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, max_position_embeddings=77, eos_token_id=len(vocab) - 1,
                                         bos_token_id=len(vocab) - 2, pad_token_id=len(vocab) - 1),
                        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                           image_size=image_size, patch_size=8),
                        projection_dim=16)
    return CLIPModel(config).eval(), tokenizer


def hf_folder(folder):
    from transformers import CLIPImageProcessor

    model, tokenizer = tiny_clip()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return model, tokenizer


def test_pickscore_equals_transformers_clip(images, tmp_path):
    """PickScore = logit_scale.exp() · cos of CLIPModel's projected embeddings, pixels from
    transformers' CLIP image processor."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model, tokenizer = hf_folder(str(tmp_path / "PickScore_v1"))
    ours = mmreward.load(str(tmp_path / "PickScore_v1"))
    pixels = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})(
        images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        t = model.text_projection(model.text_model(**tokenizer([PROMPTS[0]], return_tensors="pt")).pooler_output)
        i = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        want = model.logit_scale.exp() * torch.nn.functional.cosine_similarity(t, i)
    got = ours.score([ImagePrompt(PROMPTS[0], x) for x in images])
    assert torch.allclose(got, want, atol=1e-5)


def test_a_mis_shaped_clip_tensor_is_named_with_both_shapes(tmp_path):
    """transformers' own error only points to a load report that loading keeps quiet."""
    from safetensors.torch import load_file, save_file

    folder = str(tmp_path / "PickScore_v1")
    hf_folder(folder)
    key = "text_model.encoder.layers.0.self_attn.q_proj.weight"
    weights = os.path.join(folder, "model.safetensors")
    save_file({**load_file(weights), key: torch.zeros(32, 8)}, weights, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"{key} has shape \(32, 8\) in the weights but the CLIPModel of its "
                                              r"config.json expects \(32, 32\)"):
        mmreward.load(folder)


def to_open_clip(model):
    """CLIPModel -> open_clip's (OpenAI CLIP) tensor names: the inverse of the loader's renaming."""
    sd, out = model.state_dict(), {}
    for src, dst, layers in (("text_model", "transformer", model.config.text_config.num_hidden_layers),
                             ("vision_model", "visual.transformer", model.config.vision_config.num_hidden_layers)):
        for i in range(layers):
            a, b = f"{src}.encoder.layers.{i}", f"{dst}.resblocks.{i}"
            for p in ("weight", "bias"):
                out[f"{b}.attn.in_proj_{p}"] = torch.cat([sd[f"{a}.self_attn.{x}_proj.{p}"] for x in "qkv"])
                for old, new in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("self_attn.out_proj", "attn.out_proj"),
                                 ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                    out[f"{b}.{new}.{p}"] = sd[f"{a}.{old}.{p}"]
    e = "vision_model.embeddings"
    out.update({"token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
                "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
                "ln_final.weight": sd["text_model.final_layer_norm.weight"], "ln_final.bias": sd["text_model.final_layer_norm.bias"],
                "text_projection": sd["text_projection.weight"].t(), "logit_scale": sd["logit_scale"],
                "visual.class_embedding": sd[f"{e}.class_embedding"], "visual.conv1.weight": sd[f"{e}.patch_embedding.weight"],
                "visual.positional_embedding": sd[f"{e}.position_embedding.weight"],
                "visual.ln_pre.weight": sd["vision_model.pre_layrnorm.weight"], "visual.ln_pre.bias": sd["vision_model.pre_layrnorm.bias"],
                "visual.ln_post.weight": sd["vision_model.post_layernorm.weight"],
                "visual.ln_post.bias": sd["vision_model.post_layernorm.bias"], "visual.proj": sd["visual_projection.weight"].t()})
    return out


OPEN_CLIP_CFG = {"embed_dim": 16, "quick_gelu": True,  # CLIPConfig's default activation
                 "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "mlp_ratio": 2.0},
                 "text_cfg": {"context_length": 77, "vocab_size": 514, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0}}


@pytest.fixture
def hps_folder(tmp_path):
    model, tokenizer = tiny_clip()
    folder = tmp_path / "hps"
    folder.mkdir()
    torch.save({"state_dict": {f"module.{k}": v for k, v in to_open_clip(model).items()}},
               folder / "HPS_v2.1_compressed.pt")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPEN_CLIP_CFG, "preprocess_cfg": {}}))
    tokenizer.save_pretrained(str(folder))
    return str(folder), model, tokenizer


def test_open_clip_weights_become_the_same_clip(hps_folder, images):
    """The renamed HPSv2 checkpoint computes the CLIPModel it came from (module. prefix dropped)."""
    folder, model, tokenizer = hps_folder
    ours = mmreward.load(folder)
    pixels = ours.pixel_values([torch.rand(3, 32, 32)])
    with torch.no_grad():
        t, i = ours.embeddings([PROMPTS[0]], pixels)
        want_t = model.text_projection(model.text_model(**tokenizer([PROMPTS[0]], return_tensors="pt")).pooler_output)
        want_i = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    assert torch.allclose(t, torch.nn.functional.normalize(want_t, dim=-1), atol=1e-6)
    assert torch.allclose(i, torch.nn.functional.normalize(want_i, dim=-1), atol=1e-6)


def test_hpsv2_is_differentiable_and_exact_on_tensors(hps_folder):
    """HPSv2's preprocessing is torch on the float image: a pixel tensor that requires grad gets a
    gradient and the same score as the uint8 image it came from."""
    model = mmreward.load(hps_folder[0])
    u8 = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    x = (u8.float() / 255).requires_grad_()
    s = model.score([ImagePrompt("a cat", x)])
    s.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert float(s.detach()) == pytest.approx(float(model.score([ImagePrompt("a cat", u8)])), abs=1e-6)


def test_hpsv2_scores_thin_strips(hps_folder):
    """A 1 x 100 strip at size 32: the short side rounded to 0 px and torch failed; it keeps one pixel."""
    model = mmreward.load(hps_folder[0])
    for shape in ((3, 1, 100), (3, 100, 1)):
        strip = torch.rand(shape)
        pixels = model.pixel_values([strip])
        assert pixels.shape == (1, 3, 32, 32)
        s = model.score([ImagePrompt("a cat", strip)])
        assert s.shape == (1,) and torch.isfinite(s).all()


def test_save_pretrained_round_trip(hps_folder, images, tmp_path):
    model = mmreward.load(hps_folder[0])
    before = scores(model, images)
    model.save_pretrained(str(tmp_path / "ours"))
    again = mmreward.load(str(tmp_path / "ours"))
    assert again.model_type == "clip_scorer" and torch.equal(scores(again, images), before)


# ------------------------------------------------------------------ refusals
def test_hps_checkpoint_with_code_is_refused(hps_folder):
    folder = hps_folder[0]
    torch.save({"state_dict": torch.nn.Linear(2, 2)}, os.path.join(folder, "HPS_v2.1_compressed.pt"))
    with pytest.raises(CheckpointError, match="tensors-only"):
        mmreward.load(folder)


def test_hps_checkpoint_without_text_tower_is_refused(hps_folder):
    folder = hps_folder[0]
    path = os.path.join(folder, "HPS_v2.1_compressed.pt")
    state = torch.load(path, weights_only=True)["state_dict"]
    torch.save({"state_dict": {k: v for k, v in state.items() if ".transformer.resblocks" in k or "visual" in k}}, path)
    with pytest.raises(CheckpointError, match="missing .*positional_embedding"):
        mmreward.load(folder)


def test_hps_checkpoint_of_another_depth_or_without_a_bias_is_refused(hps_folder):
    """A third text block beyond the config's two was dropped without a word; a missing LayerNorm bias
    was a bare KeyError."""
    folder = hps_folder[0]
    path = os.path.join(folder, "HPS_v2.1_compressed.pt")
    state = torch.load(path, weights_only=True)["state_dict"]
    deeper = {**state, **{k.replace("resblocks.1.", "resblocks.2."): v for k, v in state.items()
                          if k.startswith("module.transformer.resblocks.1.")}}
    torch.save({"state_dict": deeper}, path)
    with pytest.raises(CheckpointError, match="holds 3 transformer.resblocks but its model config has 2 layers"):
        mmreward.load(folder)
    torch.save({"state_dict": {k: v for k, v in state.items() if k != "module.ln_final.bias"}}, path)
    with pytest.raises(CheckpointError, match="missing open_clip tensor 'ln_final.bias'"):
        mmreward.load(folder)


def test_hps_without_tokenizer_is_refused(hps_folder):
    folder = hps_folder[0]
    for name in os.listdir(folder):
        if name.startswith(("vocab", "merges", "tokenizer", "special")):
            os.remove(os.path.join(folder, name))
    with pytest.raises(CheckpointError, match="bpe_simple_vocab_16e6.txt.gz"):
        mmreward.load(folder)


def test_unsupported_open_clip_config_is_refused(hps_folder):
    folder = hps_folder[0]
    cfg = json.loads(json.dumps(OPEN_CLIP_CFG))
    cfg["vision_cfg"]["ls_init_value"] = 1e-5
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg}, f)
    with pytest.raises(CheckpointError, match="ls_init_value"):
        mmreward.load(folder)


def test_wrong_normalisation_file_is_refused(tmp_path):
    folder = str(tmp_path / "clip")
    hf_folder(folder)
    with open(os.path.join(folder, "preprocessor_config.json")) as f:
        pre = json.load(f)
    pre["crop_size"] = {"height": 24, "width": 24}
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(pre, f)
    with pytest.raises(CheckpointError, match="preprocessor_config.json: resize 32 and crop 24"):
        mmreward.load(folder)
    os.remove(os.path.join(folder, "preprocessor_config.json"))
    with pytest.raises(CheckpointError, match="preprocessor_config.json"):
        mmreward.load(folder)


def test_score_command_ranks_images(hps_folder, images, capsys):
    from mmreward.cli import main

    assert main(["score", "--model", hps_folder[0], "--prompt", PROMPTS[0], *images, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(r["rank"] for r in out["results"]) == [1, 2, 3, 4]


# ------------------------------------------------------------------ the LAION aesthetic predictor
class OfficialAestheticMLP(torch.nn.Module):
    """improved-aesthetic-predictor's MLP as DDPO's aesthetic_scorer.py builds it (dropout between
    the first four linears; the reluMSE predictors put a ReLU before each dropout instead)."""

    def __init__(self, in_dim, relu=False):
        super().__init__()
        nn = torch.nn
        act = nn.ReLU if relu else nn.Dropout
        self.layers = nn.Sequential(nn.Linear(in_dim, 1024), act(), nn.Linear(1024, 128), act(),
                                    nn.Linear(128, 64), act(), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, embed):
        return self.layers(embed)


@pytest.mark.parametrize("name", ["sac+logos+ava1-l14-linearMSE.pth", "ava+logos-l14-reluMSE.pth"])
def test_aesthetic_predictor_matches_ddpo_aesthetic_scorer(images, tmp_path, name):
    """DDPO's aesthetic reward: CLIP image features from CLIPProcessor pixels, L2-normalised, through
    the predictor's MLP; the prompt plays no part. Saved and reloaded in mmreward's format, the same."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path / "clip-vit-large-patch14"
    model, _ = hf_folder(str(folder))
    torch.manual_seed(3)
    mlp = OfficialAestheticMLP(model.config.projection_dim, relu="relu" in name).eval()
    torch.save(mlp.state_dict(), folder / name)
    ours = mmreward.load(str(folder))
    assert ours.config.kind == "aesthetic" and ours.config.aesthetic_relu == ("relu" in name)
    pixels = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})(
        images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embed = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        want = mlp(embed / torch.linalg.vector_norm(embed, dim=-1, keepdim=True)).squeeze(1)
    got = ours.score([ImagePrompt(PROMPTS[0], x) for x in images])
    assert want.std() > 1e-4 and torch.allclose(got, want, atol=1e-5), (got, want)
    assert torch.equal(ours.score([ImagePrompt(PROMPTS[1], x) for x in images]), got)  # no prompt in it
    ours.save_pretrained(str(tmp_path / "ours"))
    again = mmreward.load(str(tmp_path / "ours"))
    assert again.config.kind == "aesthetic" and torch.equal(again.score([{"image": x} for x in images]), got)
    u8 = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)  # differentiable in float pixels (AlignProp)
    x = (u8.float() / 255).requires_grad_()
    ours.score([ImagePrompt("", x)]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # a video scores frame by frame without a prompt too (score_video refuses "" for prompt-reading scorers)
    from PIL import Image

    from mmreward.vision import score_video

    frames = [np.asarray(Image.open(images[0]).convert("RGB"))] * 2  # a 2-frame video of the first image
    assert torch.allclose(torch.tensor(score_video(ours, "", frames).scores), got[0].repeat(2), atol=1e-5)


def test_aesthetic_predictor_files_that_do_not_fit_are_refused(tmp_path):
    folder = tmp_path / "clip"
    model, _ = hf_folder(str(folder))
    torch.save(OfficialAestheticMLP(768).state_dict(), folder / "sac+logos+ava1-l14-linearMSE.pth")  # ViT-L's width
    with pytest.raises(CheckpointError, match="not an aesthetic MLP for this CLIP .projection width 16"):
        mmreward.load(str(folder))
    torch.save(OfficialAestheticMLP(16).state_dict(), folder / "sac+logos+ava1-l14-linearMSE.pth")
    torch.save(OfficialAestheticMLP(16).state_dict(), folder / "ava+logos-l14-linearMSE.pth")
    with pytest.raises(CheckpointError, match="holds 2 aesthetic predictor files"):
        mmreward.load(str(folder))
    (folder / "ava+logos-l14-linearMSE.pth").unlink()
    assert mmreward.load(str(folder), kind="pickscore").config.kind == "pickscore"  # the kind still overrides
    (folder / "sac+logos+ava1-l14-linearMSE.pth").unlink()
    with pytest.raises(CheckpointError, match="no aesthetic predictor MLP"):
        mmreward.load(str(folder), kind="aesthetic")

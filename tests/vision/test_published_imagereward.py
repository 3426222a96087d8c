"""ImageReward v1.0 (BLIP): parity with the official ImageReward.score / inference_rank on a tiny
ImageReward.pt saved by the official modules, our BLIP towers against transformers' BLIP classes on
the same weights, refusals of partial folders, save / load and the score command."""
import json
import os

import pytest
import torch

pytest.importorskip("transformers", reason="ImageReward's tokenizer needs transformers")
from published_fixtures import PROMPTS, TOLERANCE, reference, write_images  # noqa: E402
from published_reference import bert_vocab  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import ImagePrompt  # noqa: E402
from mmreward.vision.published.imagereward import (BLIPImageReward, BLIPImageRewardConfig, BLIPTextEncoder,  # noqa: E402
                                                   BLIPVisionTransformer, blip_tokenizer)

MED = dict(vocab_size=0, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
           max_position_embeddings=64, layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(str(tmp_path_factory.mktemp("images")))


def scores(model, images):
    return torch.stack([model.score([ImagePrompt(p, x) for x in images]) for p in PROMPTS])


# ------------------------------------------------------------------ parity with the official code
def test_matches_official_imagereward(images, tmp_path):
    """ImageReward.pt + med_config.json + vocab.txt written by the official modules; scores from
    ImageReward.score (one image at a time) and inference_rank (a list) within 1e-4, batched here."""
    folder = str(tmp_path / "ImageReward")
    ref = reference("imagereward", folder, image_size=32, images=images, prompts=PROMPTS)
    model = mmreward.load(folder)
    assert isinstance(model, BLIPImageReward)
    assert (scores(model, images) - torch.tensor(ref["scores"])).abs().max() <= TOLERANCE
    ranked = model.score([ImagePrompt(PROMPTS[0], x) for x in images], batch_size=2)
    assert (ranked - torch.tensor(ref["rank_scores"])).abs().max() <= TOLERANCE


# ------------------------------------------------------------------ in-process checks (no side environment)
def test_towers_equal_transformers_blip():
    """Our med.py BERT equals transformers' BlipTextModel and our ViT its BlipVisionModel (weights
    renamed), the two halves of the computation."""
    from transformers import BlipTextConfig, BlipVisionConfig
    from transformers.models.blip.modeling_blip import BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    torch.manual_seed(0)
    t = {**MED, "vocab_size": 60}
    ref_text = BlipTextModel(BlipTextConfig(encoder_hidden_size=64, **{k: v for k, v in t.items() if k != "hidden_act"}),
                             add_pooling_layer=False).eval()
    ours_text = BLIPTextEncoder(t, 64).eval()
    ours_text.load_state_dict({**ours_text.state_dict(), **ref_text.state_dict()})
    ids = torch.randint(1, 60, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    image = torch.randn(3, 5, 64)
    with torch.no_grad():
        want = ref_text(input_ids=ids, attention_mask=mask, encoder_hidden_states=image).last_hidden_state
        assert torch.allclose(ours_text(ids, mask, image)[mask.bool()], want[mask.bool()], atol=1e-5)

    ref_vit = BlipVisionModel(BlipVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                               num_attention_heads=1, image_size=32, patch_size=16,
                                               layer_norm_eps=1e-6)).eval()
    ours_vit = BLIPVisionTransformer(BLIPImageRewardConfig(image_size=32, vision_width=64, vision_depth=2,
                                                           vision_heads=1)).eval()
    names = {"embeddings.class_embedding": "cls_token", "embeddings.position_embedding": "pos_embed",
             "embeddings.patch_embedding": "patch_embed.proj", "encoder.layers": "blocks", "self_attn.projection":
             "attn.proj", "self_attn.qkv": "attn.qkv", "layer_norm1": "norm1", "layer_norm2": "norm2",
             "post_layernorm": "norm"}
    state = {}
    for k, v in ref_vit.state_dict().items():
        for a, b in names.items():
            k = k.replace(a, b)
        state[k] = v
    ours_vit.load_state_dict(state)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours_vit(pixels), ref_vit(pixel_values=pixels).last_hidden_state, atol=1e-5)


@pytest.fixture
def folder(tmp_path):
    """An official-layout folder: ImageReward.pt (the module's state dict with BLIP's unused
    projections), med_config.json and bert's vocab.txt."""
    path = tmp_path / "ImageReward"
    path.mkdir()
    bert_vocab(str(path))
    tokenizer = blip_tokenizer(str(path))
    med = {**MED, "vocab_size": len(tokenizer), "encoder_width": 64, "add_cross_attention": True}
    (path / "med_config.json").write_text(json.dumps(med))
    torch.manual_seed(0)
    model = BLIPImageReward(BLIPImageRewardConfig(image_size=32, vision_width=64, vision_depth=2, vision_heads=1,
                                                  text_config=med), tokenizer)
    state = {k: v.normal_(std=0.2) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state.update({"blip.vision_proj.weight": torch.randn(16, 64), "blip.text_proj.weight": torch.randn(16, 32)})
    torch.save(state, path / "ImageReward.pt")
    return str(path)


def test_loads_the_official_layout(folder, images, tmp_path):
    model = mmreward.load(folder)
    assert model.config.vision_depth == 2 and model.config.head_hidden == (1024, 128, 64, 16)
    before = scores(model, images)
    assert before.std() > 0
    model.save_pretrained(str(tmp_path / "ours"))
    again = mmreward.load(str(tmp_path / "ours"))
    assert again.model_type == "imagereward_blip" and torch.equal(scores(again, images), before)


def test_gradient_reaches_the_pixels(folder):
    model = mmreward.load(folder)
    x = torch.rand(3, 40, 50, requires_grad=True)
    model.score([ImagePrompt("a cat", x)]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("damage, message", [
    ("no_med_config", "med_config.json"),
    ("no_vocab", "vocab.txt"),
    ("no_head", "MLP head"),
    ("wrong_prefix", "BLIP ViT image encoder"),
    ("pickled_module", "tensors-only"),
    ("small_vocab", "tokenizer has"),
])
def test_partial_folder_is_refused(folder, damage, message):
    pt = os.path.join(folder, "ImageReward.pt")
    if damage == "no_med_config":
        os.remove(os.path.join(folder, "med_config.json"))
    elif damage == "no_vocab":
        os.remove(os.path.join(folder, "vocab.txt"))
    elif damage in ("no_head", "wrong_prefix"):
        state = torch.load(pt, weights_only=True)
        if damage == "no_head":
            state = {k: v for k, v in state.items() if not k.startswith("mlp.")}
        else:
            state = {k.replace("blip.", "model.", 1): v for k, v in state.items()}
        torch.save(state, pt)
    elif damage == "pickled_module":
        torch.save(torch.nn.Linear(2, 2), pt)
    else:
        med = json.loads(open(os.path.join(folder, "med_config.json")).read())
        med["vocab_size"] = 10
        open(os.path.join(folder, "med_config.json"), "w").write(json.dumps(med))
    with pytest.raises(CheckpointError, match=message):
        mmreward.load(folder)


def test_score_command(folder, images, capsys):
    from mmreward.cli import main

    assert main(["score", "--model", folder, "--prompt", "a red square", *images[:2]]) == 0
    out = capsys.readouterr().out
    assert "rank" in out and "wide.png" in out

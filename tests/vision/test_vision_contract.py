"""Every vision model type on the one model contract: save_pretrained → mmreward.load(folder) →
identical scores; folders written by mmreward 0.1 still load; the generic `mmreward score` command
needs nothing but the contract."""
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import mmreward
from mmreward.core.checkpoint import CheckpointError
from mmreward.core.inputs import Conversation, ImagePrompt, VideoPrompt, VisualSteps
from mmreward.core.model import config_to_dict
from mmreward.vision import synthetic as S

KINDS = ["image_reward-conv", "image_reward-clip", "vlm_reward", "visual_prm"]


def build(kind):
    """A tiny random model of ``kind`` and inputs it scores (images / videos / conversations / steps)."""
    torch.manual_seed(0)
    if kind.startswith("image_reward"):
        from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel
        from mmreward.vision.testing import tiny_clip_config, word_tokenizer

        if kind.endswith("conv"):
            model = ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=8))
        else:
            tok = word_tokenizer(S.vocabulary(), max_length=16)
            model = ImageRewardModel.from_backbone(tiny_clip_config(len(tok), width=16, layers=1), tokenizer=tok)
        model.reward_mean.fill_(0.25)
        sets = S.ranked_sets(2, seed=0)
        return model, [ImagePrompt(sets[0].prompt, sets[0].images[0]), ImagePrompt(sets[1].prompt, sets[1].images[1]),
                       VideoPrompt(sets[0].prompt, sets[0].images)]
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config

    proc = tiny_processor(S.COLOUR_WORDS)
    if kind == "vlm_reward":
        from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel

        rows = S.colour_preference_rows(3, seed=0)
        return (VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc),
                [Conversation(r["conversations_chosen"], r["images"]) for r in rows])
    from mmreward.vision.visual_prm import VisualPRM, VisualPRMConfig

    rows = S.colour_step_rows(3, seed=0)
    return (VisualPRM(VisualPRMConfig(reduce="min"), tiny_qwen2vl_config(proc), proc),
            [VisualSteps(r["question"], r["steps"], r["images"]) for r in rows])


@pytest.fixture(scope="module", params=KINDS)
def saved(request, tmp_path_factory):
    model, items = build(request.param)
    folder = tmp_path_factory.mktemp("contract") / request.param
    model.save_pretrained(str(folder))
    return request.param, model, items, folder


def test_save_then_mmreward_load_gives_identical_scores(saved):
    kind, model, items, folder = saved
    loaded = mmreward.load(str(folder))
    assert type(loaded) is type(model) and loaded.model_type == kind.split("-")[0] and not loaded.training
    assert json.loads((folder / "config.json").read_text())["model_type"] == loaded.model_type
    scores = model.score(items)
    assert scores.shape == (len(items),) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    assert torch.equal(loaded.score(items), scores)
    if type(model).has_parts():
        for a, b in zip(loaded.score_parts(items), model.score_parts(items)):
            assert torch.equal(a, b)


def test_a_manifest_catches_a_truncated_file(saved, tmp_path):
    import shutil

    kind, _, _, folder = saved
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="model.safetensors has .* bytes but the manifest records"):
        mmreward.load(str(copy))


def _write_v01_folder(model, folder):
    """The layout mmreward 0.1 wrote: config.json with `_mmreward.weights_bytes`, no manifest; VLM
    configs had a `score_batch_size` field."""
    body = {"model_type": model.model_type, "config": config_to_dict(model.config)}
    if model.model_type == "image_reward":
        if model.config.backbone == "hf":
            model.backbone.save(str(folder))
    else:
        body["config"]["score_batch_size"] = 16
        body["backbone_config"] = model.backbone.config.to_dict()
        model.processor.save_pretrained(os.path.join(folder, "processor"))
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    weights = os.path.join(folder, "model.safetensors")
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, weights, metadata={"format": "pt"})
    body["_mmreward"] = {"format_version": 1, "weights_bytes": os.path.getsize(weights)}
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(body, f, default=str)


@pytest.mark.parametrize("kind", KINDS)
def test_folders_saved_by_mmreward_0_1_still_load(kind, tmp_path):
    model, items = build(kind)
    _write_v01_folder(model, tmp_path / "old")
    assert not (tmp_path / "old" / "manifest.json").exists()
    assert "weights_bytes" in json.loads((tmp_path / "old" / "config.json").read_text())["_mmreward"]
    assert torch.equal(mmreward.load(str(tmp_path / "old")).score(items), model.score(items))
    weights = tmp_path / "old" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="truncated"):
        mmreward.load(str(tmp_path / "old"))


def test_the_generic_score_command_needs_only_the_contract(saved, tmp_path, capsys):
    """`mmreward score` (mmreward.score_cli) opens the folder with mmreward.load and calls score /
    score_parts on JSON rows: image paths inside the rows are decoded by the model itself."""
    score_cli = pytest.importorskip("mmreward.score_cli")
    from PIL import Image

    kind, model, items, folder = saved
    rows = []
    for i, item in enumerate(items):
        if isinstance(item, VideoPrompt):
            continue  # a video file needs OpenCV; videos are covered by test_vision_video
        row = {k: v for k, v in vars(item).items()}
        media = "image" if isinstance(item, ImagePrompt) else "images"
        paths = []
        for j, img in enumerate(row[media] if media == "images" else [row[media]]):
            paths.append(str(tmp_path / f"{i}_{j}.png"))
            Image.fromarray(np.asarray(img)).save(paths[-1])
        row[media] = paths if media == "images" else paths[0]
        rows.append(row)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score_cli.main(["--model", str(folder), "--data", str(data), "--json", "--no-parts"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    expected = model.score([it for it in items if not isinstance(it, VideoPrompt)])
    np.testing.assert_allclose([p["score"] for p in printed], expected.numpy(), atol=1e-5)

"""A user's published vision folders as they come off the hub or a git clone, and the image inputs they
pass: a PickScore in a hub-cache snapshot (``…/snapshots/<commit>``, the folder ``snapshot_download``
returns) is still PickScore; a ``pytorch_model.bin`` holding pickled code, a truncated safetensors file,
an empty file or a Git LFS pointer in the weights' place, a hub link whose blob never arrived, a missing
processor file: each one error naming the file and what to do. Qwen-VL reward models refuse an image or
video with no prompt as the image scorers do; image arrays / tensors of the other channel layout say how
to pass them."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the published scorers need transformers")
from published_fixtures import qwen_vl_reward_folder  # noqa: E402
from published_reference import bert_vocab  # noqa: E402
from test_published_clip import OPEN_CLIP_CFG, hf_folder, tiny_clip, to_open_clip  # noqa: E402
from test_published_imagereward import MED  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import ImagePrompt, VideoPrompt  # noqa: E402
from mmreward.vision.images import to_tensor  # noqa: E402

LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 1968497384\n")
IMAGES = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8) for i in range(2)]


def _score(model):
    return model.score([ImagePrompt("a cat", x) for x in IMAGES])


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("clip") / "PickScore_v1")
    hf_folder(folder)
    return folder


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    return qwen_vl_reward_folder(str(tmp_path_factory.mktemp("qwen") / "Skywork-VL-Reward-tiny"))


def _imagereward_folder(path):
    from mmreward.vision.published.imagereward import BLIPImageReward, BLIPImageRewardConfig, blip_tokenizer

    os.makedirs(path)
    bert_vocab(path)
    tokenizer = blip_tokenizer(path)
    med = {**MED, "vocab_size": len(tokenizer), "encoder_width": 64, "add_cross_attention": True}
    with open(os.path.join(path, "med_config.json"), "w") as f:
        json.dump(med, f)
    model = BLIPImageReward(BLIPImageRewardConfig(image_size=32, vision_width=64, vision_depth=1, vision_heads=1,
                                                  text_config=med), tokenizer)
    torch.save(model.state_dict(), os.path.join(path, "ImageReward.pt"))
    return path


def _hps_folder(path):
    os.makedirs(path)
    model, tokenizer = tiny_clip()
    torch.save({"state_dict": to_open_clip(model)}, os.path.join(path, "HPS_v2.1_compressed.pt"))
    with open(os.path.join(path, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": OPEN_CLIP_CFG, "preprocess_cfg": {}}, f)
    tokenizer.save_pretrained(path)
    return path


def _hub_snapshot(src, cache, repo):
    """``src``'s files as the hub cache lays them out: blobs/, refs/main, snapshots/<commit>/ of links."""
    top = os.path.join(cache, f"models--{repo.replace('/', '--')}")
    snapshot = os.path.join(top, "snapshots", "8f1a3c0e")
    os.makedirs(os.path.join(top, "blobs"))
    os.makedirs(os.path.join(top, "refs"))
    os.makedirs(snapshot)
    for i, name in enumerate(sorted(os.listdir(src))):
        shutil.copy(os.path.join(src, name), os.path.join(top, "blobs", f"blob{i}"))
        os.symlink(os.path.join("..", "..", "blobs", f"blob{i}"), os.path.join(snapshot, name))
    with open(os.path.join(top, "refs", "main"), "w") as f:
        f.write("8f1a3c0e")
    return top, snapshot


def _break_link(path):
    """The blob behind a hub-cache link removed: a download that stopped part-way."""
    os.remove(os.path.realpath(path))


# ------------------------------------------------------------------ hub-cache folders
def test_pickscore_in_a_hub_cache_snapshot_is_still_pickscore(clip_folder, tmp_path):
    """The kind came from the folder's name, a commit hash in the hub cache: PickScore_v1 fetched with
    snapshot_download (or mmreward.load("yuvalkirstain/PickScore_v1")) scored as CLIP score, max(100 · cos, 0)."""
    want = _score(mmreward.load(clip_folder))
    top, snapshot = _hub_snapshot(clip_folder, str(tmp_path), "yuvalkirstain/PickScore_v1")
    for path in (top, snapshot):
        model = mmreward.load(path)
        assert model.config.kind == "pickscore", path
        assert torch.allclose(_score(model), want, atol=1e-5)


def test_a_broken_hub_link_to_imagereward_pt_is_named(tmp_path):
    """ImageReward.pt a dangling link: the folder was not recognised at all ("cannot tell which reward model")."""
    src = _imagereward_folder(str(tmp_path / "ImageReward"))
    _, snapshot = _hub_snapshot(src, str(tmp_path / "hub"), "THUDM/ImageReward")
    _break_link(os.path.join(snapshot, "ImageReward.pt"))
    with pytest.raises(CheckpointError, match=r"ImageReward\.pt is a link to .*which does not exist.*fetch the file"):
        mmreward.load(snapshot)


@pytest.mark.parametrize("name, detail", [
    ("value_head.safetensors", None),  # was "has no value_head.safetensors ... a plain VLM"
    ("preprocessor_config.json", None),  # was "has no preprocessor_config.json"
    ("HPSv3.safetensors", "hpsv3"),  # was read as a Qwen-VL RM
])
def test_a_broken_hub_link_in_a_qwen_vl_folder_is_named(qwen_folder, tmp_path, name, detail):
    src = str(tmp_path / "src")
    shutil.copytree(qwen_folder, src)
    if detail == "hpsv3":
        os.remove(os.path.join(src, "value_head.safetensors"))
        with open(os.path.join(src, name), "wb") as f:
            f.write(b"x")
    _, snapshot = _hub_snapshot(src, str(tmp_path / "hub"), "org/model")
    _break_link(os.path.join(snapshot, name))
    with pytest.raises(CheckpointError, match=rf"{name.replace('.', '[.]')} is a link to .*which does not exist"):
        mmreward.load(snapshot)


def test_a_folder_with_both_hpsv2_versions_asks_which(tmp_path):
    """xswu/HPSv2 (and a hub cache hpsv2 filled for both versions) holds HPS_v2_compressed.pt and
    HPS_v2.1_compressed.pt: the first in sorted order, v2.1, was scored, with no way to pick v2.0."""
    folder = _hps_folder(str(tmp_path / "HPSv2"))
    v21 = _score(mmreward.load(folder))
    state = torch.load(os.path.join(folder, "HPS_v2.1_compressed.pt"), weights_only=True)
    state["state_dict"]["visual.proj"] = state["state_dict"]["visual.proj"].flip(0)  # another model
    torch.save(state, os.path.join(folder, "HPS_v2_compressed.pt"))
    with pytest.raises(CheckpointError, match=r"holds 2 HPS checkpoints \(HPS_v2\.1_compressed\.pt, HPS_v2_compressed\.pt\)"
                                              r".*checkpoint='HPS_v2\.1_compressed\.pt'"):
        mmreward.load(folder)
    assert torch.equal(_score(mmreward.load(folder, checkpoint="HPS_v2.1_compressed.pt")), v21)
    v20 = _score(mmreward.load(folder, checkpoint="HPS_v2_compressed.pt"))
    assert not torch.allclose(v20, v21)
    with pytest.raises(CheckpointError, match=r"checkpoint='HPS_v3\.pt' is not one of its HPS checkpoints"):
        mmreward.load(folder, checkpoint="HPS_v3.pt")


# ------------------------------------------------------------------ damaged or unreadable weights
def test_a_pickled_pytorch_model_bin_is_refused_with_what_to_do(clip_folder, qwen_folder, tmp_path):
    """transformers' own UnpicklingError came through, telling the user to load it with weights_only=False."""
    for name, src in (("clip", clip_folder), ("qwen", qwen_folder)):
        folder = str(tmp_path / name / os.path.basename(src))
        shutil.copytree(src, folder)
        os.remove(os.path.join(folder, "model.safetensors"))
        torch.save(torch.nn.Linear(2, 2), os.path.join(folder, "pytorch_model.bin"))
        with pytest.raises(CheckpointError, match=r"pytorch_model\.bin holds pickled objects besides tensors, which "
                                                  r"mmreward does not unpickle.*safetensors"):
            mmreward.load(folder)


@pytest.mark.parametrize("damage, message", [
    ("truncated", r"corrupt or truncated weights file .*model\.safetensors .*fetch the file again"),
    ("lfs", r"model\.safetensors is a Git LFS pointer \(\d+ bytes\), not the weights.*git lfs pull"),
], ids=["truncated", "lfs"])
def test_a_damaged_transformers_weights_file_is_named(clip_folder, qwen_folder, tmp_path, damage, message):
    """A SafetensorError ('incomplete metadata' / 'header too large') came through without the file."""
    for name, src in (("clip", clip_folder), ("qwen", qwen_folder)):
        folder = str(tmp_path / name / os.path.basename(src))
        shutil.copytree(src, folder)
        path = os.path.join(folder, "model.safetensors")
        if damage == "truncated":
            data = open(path, "rb").read()
            open(path, "wb").write(data[:len(data) // 2])
        else:
            open(path, "w").write(LFS_POINTER)
        with pytest.raises(CheckpointError, match=message):
            mmreward.load(folder)


def test_an_image_reward_backbone_folder_with_bad_weights_or_settings_is_named(clip_folder, tmp_path):
    """ImageRewardModel.from_backbone(folder) let transformers' UnpicklingError (load it with
    weights_only=False) and json's JSONDecodeError (no file named) through."""
    from mmreward.vision.image_reward import ImageRewardModel

    folder = str(tmp_path / "clip")
    shutil.copytree(clip_folder, folder)
    os.remove(os.path.join(folder, "model.safetensors"))
    torch.save(torch.nn.Linear(2, 2), os.path.join(folder, "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin holds pickled objects besides tensors"):
        ImageRewardModel.from_backbone(folder)
    folder = str(tmp_path / "clip2")
    shutil.copytree(clip_folder, folder)
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        f.write("{'size': 224}")
    with pytest.raises(CheckpointError, match=r"corrupt .*preprocessor_config\.json \(the image processor settings\)"):
        ImageRewardModel.from_backbone(folder)


def test_a_missing_shard_of_a_sharded_clip_is_named(clip_folder, tmp_path):
    """transformers' FileNotFoundError came through as "cannot load the CLIP weights"."""
    from transformers import CLIPModel

    folder = str(tmp_path / "PickScore_v1")
    shutil.copytree(clip_folder, folder)
    os.remove(os.path.join(folder, "model.safetensors"))
    CLIPModel.from_pretrained(clip_folder).save_pretrained(folder, max_shard_size="100KB")
    shards = sorted(n for n in os.listdir(folder) if n.startswith("model-"))
    assert len(shards) > 1 and torch.allclose(_score(mmreward.load(folder)), _score(mmreward.load(clip_folder)))
    os.remove(os.path.join(folder, shards[1]))
    with pytest.raises(CheckpointError, match=rf"missing weights file .*{shards[1]}: model\.safetensors\.index\.json "
                                              rf"names {len(shards)} shard\(s\)"):
        mmreward.load(folder)


@pytest.mark.parametrize("layout", ["imagereward", "hpsv2"])
@pytest.mark.parametrize("damage, message", [
    ("lfs", r"is a Git LFS pointer \(\d+ bytes\), not the weights.*git lfs pull"),
    ("empty", r"is empty \(0 bytes\).*fetch the file again"),
], ids=["lfs", "empty"])
def test_an_lfs_pointer_or_empty_pt_file_is_named(tmp_path, layout, damage, message):
    """torch's message for both was "mmap can only be used with files saved with
    torch.save(..., _use_new_zipfile_serialization=True)": save it again, which cannot help."""
    if layout == "imagereward":
        folder, name = _imagereward_folder(str(tmp_path / "ImageReward")), "ImageReward.pt"
    else:
        folder, name = _hps_folder(str(tmp_path / "HPSv2")), "HPS_v2.1_compressed.pt"
    open(os.path.join(folder, name), "w").write(LFS_POINTER if damage == "lfs" else "")
    with pytest.raises(CheckpointError, match=rf"{name.replace('.', '[.]')} {message}"):
        mmreward.load(folder)


def test_another_models_checkpoint_as_imagereward_pt_names_what_it_holds(tmp_path):
    """An HPSv2 checkpoint ({"state_dict": open_clip tensors}) saved as ImageReward.pt was "does not hold a
    state dict of tensors", which it does."""
    folder = _imagereward_folder(str(tmp_path / "ImageReward"))
    hps = _hps_folder(str(tmp_path / "HPSv2"))
    shutil.copy(os.path.join(hps, "HPS_v2.1_compressed.pt"), os.path.join(folder, "ImageReward.pt"))
    with pytest.raises(CheckpointError, match=r"ImageReward\.pt lacks the ImageReward MLP head .*top-level names "
                                              r"present: .*'token_embedding', 'transformer', 'visual'"):
        mmreward.load(folder)


# ------------------------------------------------------------------ missing processor files
def test_a_missing_processor_file_says_where_to_get_it(clip_folder, qwen_folder, tmp_path):
    pick = str(tmp_path / "PickScore_v1")
    shutil.copytree(clip_folder, pick)
    os.remove(os.path.join(pick, "preprocessor_config.json"))
    with pytest.raises(CheckpointError, match=r"no preprocessor_config\.json .*laion/CLIP-ViT-H-14-laion2B-s32B-b79K"):
        mmreward.load(pick)
    qwen = str(tmp_path / "qwen")
    shutil.copytree(qwen_folder, qwen)
    os.remove(os.path.join(qwen, "chat_template.json"))
    with pytest.raises(CheckpointError, match=r"no chat template .*copy the one of the Qwen-VL model it was trained "
                                              r"from into it \(e\.g\. Qwen/Qwen2\.5-VL-7B-Instruct's"):
        mmreward.load(qwen)


# ------------------------------------------------------------------ inputs
def test_a_qwen_vl_reward_model_refuses_an_image_or_video_without_prompt(qwen_folder):
    """It scored [user: "", assistant: the image], a number that looks like a reward (a forgotten
    --prompt); every prompt-reading image scorer refuses it (docs/models.md)."""
    rm = mmreward.load(qwen_folder)
    assert torch.isfinite(rm.score([ImagePrompt("a cat", IMAGES[0])])).all()
    for item, kind in ((ImagePrompt("", IMAGES[0]), "image"), (VideoPrompt("  ", np.stack(IMAGES * 2)), "video")):
        with pytest.raises(ValueError, match=rf"input 1: no prompt: a Qwen-VL reward model scores the {kind} as the "
                                             r"answer to its prompt.*--prompt"):
            rm.score([ImagePrompt("a cat", IMAGES[0]), item])


def test_hpsv3_refuses_an_image_without_prompt(tmp_path):
    """HPSv3 scored the image against its instruction with an empty "Textual prompt"."""
    from test_published_more_vision import build_official

    folder = str(tmp_path / "HPSv3")
    build_official(folder)
    rm = mmreward.load(folder)
    assert torch.isfinite(rm.score([ImagePrompt("a cat", IMAGES[0])])).all()
    with pytest.raises(ValueError, match=r"input 1: no prompt: HPSv3 scores an image against the text.*--prompt"):
        rm.score([ImagePrompt("a cat", IMAGES[0]), ImagePrompt("", IMAGES[1])])


@pytest.mark.parametrize("image, hint", [
    (np.zeros((3, 40, 50), np.uint8), r"channels-first: pass a\.transpose\(1, 2, 0\)"),
    (np.zeros((40, 50, 1), np.uint8), r"one channel: pass the grey image as \[H, W\]"),
    (torch.zeros(40, 50, 3), r"channels-last: pass x\.permute\(2, 0, 1\)"),
    (np.zeros((40, 50, 3), np.uint16), r"16-bit: pass a / 65535 as float"),
    (torch.zeros(2, 3, 40, 50), r"a batch of 2 image\(s\): give one input per image"),
], ids=["chw-array", "one-channel-array", "hwc-tensor", "uint16-array", "batch-tensor"])
def test_an_image_of_another_layout_says_how_to_pass_it(image, hint):
    with pytest.raises((ValueError, TypeError), match=rf"input 1: .*{hint}"):
        to_tensor(image, "input 1")


def test_an_image_path_under_home_is_read(tmp_path, monkeypatch):
    """"~/cat.png" was "image file '~/cat.png' does not exist", although data files and model folders
    given so are the home folder's."""
    from PIL import Image

    monkeypatch.setenv("HOME", str(tmp_path))
    Image.fromarray(IMAGES[0]).save(tmp_path / "cat.png")
    assert torch.equal(to_tensor("~/cat.png"), to_tensor(IMAGES[0]))
    model = mmreward.load(_hps_folder(str(tmp_path / "HPSv2")))
    assert torch.equal(model.score([ImagePrompt("a cat", "~/cat.png")]), model.score([ImagePrompt("a cat", IMAGES[0])]))


def test_a_pil_image_whose_file_was_closed_or_is_truncated_is_named(clip_folder, qwen_folder, tmp_path):
    """Image.open decodes lazily: an image used after its `with` block raised a bare AssertionError, one of
    a truncated JPEG an OSError, neither naming the input."""
    from PIL import Image

    Image.fromarray(IMAGES[0]).save(tmp_path / "cat.jpg", quality=90)
    data = (tmp_path / "cat.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    with Image.open(tmp_path / "cat.jpg") as closed:
        pass
    for model in (mmreward.load(clip_folder), mmreward.load(qwen_folder)):
        with pytest.raises(ValueError, match=r"input 1.*: PIL image of '.*cat\.jpg' was used after its file was closed"
                                             r".*call \.load\(\)"):
            model.score([ImagePrompt("a cat", IMAGES[0]), ImagePrompt("a cat", closed)])
        with Image.open(tmp_path / "cut.jpg") as cut:
            with pytest.raises(ValueError, match=r"input 1.*: cannot read the PIL image of '.*cut\.jpg': image file is "
                                                 r"truncated"):
                model.score([ImagePrompt("a cat", IMAGES[0]), ImagePrompt("a cat", cut)])
        with Image.open(tmp_path / "cat.jpg") as fine:  # a lazily opened image in its block is read as before
            assert torch.equal(model.score([ImagePrompt("a cat", fine)]),
                               model.score([ImagePrompt("a cat", str(tmp_path / "cat.jpg"))]))

"""A text-to-image / VLM alignment user's workflow pushed past the happy path: half-precision scoring of
an image scorer on CPU (Python and CLI), a small CLIP whose text context is under 77 tokens, OpenAI /
Qwen-style content parts in VLM conversations, and the messages a user sees for empty videos and
all-tie training data."""
import json
import warnings

import numpy as np
import pytest
import torch

from mmreward.core.data import DataError
from mmreward.core.inputs import Conversation, ImagePrompt, VideoPrompt, VisualSteps

PROMPT = "a red circle"


@pytest.fixture(scope="module")
def image_model():
    from mmreward.vision.train import ImageRewardTrainConfig, build_model

    torch.manual_seed(0)
    return build_model(ImageRewardTrainConfig(data="synthetic", embed_dim=8), [PROMPT])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for k, size in enumerate([(40, 60), (50, 400), (1, 1)]):
        p = str(folder / f"{k}.png")
        Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_image_scorer_scores_on_cpu_like_fp32(image_model, images, tmp_path, dtype):
    # before: the torch resize ran in the model's dtype and has no bf16 / fp16 kernel on CPU, so a model
    # loaded with dtype="bf16" (or `mmreward score --dtype bf16`) could not score anything there
    import mmreward

    image_model.save_pretrained(str(tmp_path / "m"))
    items = [ImagePrompt(PROMPT, p) for p in images]
    full = mmreward.load(str(tmp_path / "m")).score(items)
    half = mmreward.load(str(tmp_path / "m"), dtype=dtype)
    got = half.score(items)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert torch.allclose(got, full, atol=0.05), (got, full)
    # a differentiable float tensor still gets its gradient through the cast (ReFL's path)
    x = torch.rand(3, 20, 20, requires_grad=True)
    half.score([ImagePrompt(PROMPT, x)]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_score_video_cli_takes_dtype(image_model, tmp_path, capsys):
    from mmreward.vision.cli import score_video_main

    image_model.save_pretrained(str(tmp_path / "m"))
    frames = (np.random.default_rng(1).random((3, 24, 32, 3)) * 255).astype(np.uint8)
    folder = tmp_path / "frames"
    folder.mkdir()
    from PIL import Image

    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t}.png")
    assert score_video_main([str(folder), "--model", str(tmp_path / "m"), "--prompt", PROMPT, "--dtype", "bf16",
                             "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = image_model.score_parts([VideoPrompt(PROMPT, str(folder))])[0]
    assert np.allclose(out["scores"], want.numpy(), atol=0.05)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    """A transformers CLIPModel folder whose text tower has 32 positions (under CLIP's 77)."""
    from transformers import CLIPModel

    from mmreward.vision.testing import tiny_clip_config, word_tokenizer

    words = ["a", "red", "circle"]
    folder = str(tmp_path_factory.mktemp("clip") / "small-clip")
    torch.manual_seed(0)
    CLIPModel(tiny_clip_config(len(words) + 3)).save_pretrained(folder)
    word_tokenizer(words).save_pretrained(folder)
    with open(f"{folder}/preprocessor_config.json", "w") as f:
        json.dump({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 32},
                   "crop_size": {"height": 32, "width": 32}, "do_center_crop": True, "do_resize": True,
                   "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, f)
    return folder


def test_clip_scorer_cuts_long_prompts_at_its_text_context(small_clip, images, tmp_path):
    # before: prompts were cut at 77 tokens whatever the text tower holds, and a 32-position CLIP failed
    # inside transformers ("Sequence length must be less than max_position_embeddings")
    import mmreward

    scorer = mmreward.load(small_clip)
    long = " ".join(["a red circle"] * 20)
    with pytest.warns(UserWarning, match="truncated"):
        got = scorer.score([ImagePrompt(long, images[0])])
    assert torch.isfinite(got).all()
    cut = scorer.tokenizer(long, truncation=True, max_length=32)["input_ids"]
    assert len(cut) == 32
    scorer.save_pretrained(str(tmp_path / "saved"))  # the saved folder cuts alike and scores the same
    with pytest.warns(UserWarning, match="truncated"):
        assert torch.equal(mmreward.load(str(tmp_path / "saved")).score([ImagePrompt(long, images[0])]), got)


@pytest.fixture(scope="module")
def vlm_rm():
    from mmreward.vision.synthetic import COLOUR_WORDS
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel

    torch.manual_seed(0)
    proc = tiny_processor(COLOUR_WORDS)
    return VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc)


def test_vlm_conversation_reads_text_content_parts(vlm_rm, images):
    # before: OpenAI / Qwen-style content ([{"type": "text", "text": ...}]) was refused with "content must
    # be a string, got list", although the text models read it
    plain = [{"role": "user", "content": "what colour is the image"}, {"role": "assistant", "content": "it is red"}]
    parts = [{"role": "user", "content": [{"type": "text", "text": "what colour is the image"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "it is red"}]}]
    a, b = vlm_rm.score([Conversation(plain, [images[0]]), Conversation(parts, [images[0]])])
    assert torch.equal(a, b)
    from mmreward.vision.vlm_rm import as_pairs

    row = {"images": [images[0]], "conversations_chosen": parts, "conversations_rejected": plain}
    assert len(as_pairs([row], "rows.jsonl")) == 1


@pytest.mark.parametrize("content, names", [
    ([{"type": "image", "image": "x.png"}, {"type": "text", "text": "what"}], "content part 0 is an image part"),
    ([{"type": "text", "text": "what"}, {"type": "image_url", "image_url": {"url": "x"}}], "'images' field"),
    ([], "empty list of parts"),
    ([{"text": "what"}], "content part 0 must be {'type': 'text'"),
])
def test_vlm_conversation_names_a_content_part_it_cannot_read(vlm_rm, images, content, names):
    conv = [{"role": "user", "content": content}, {"role": "assistant", "content": "red"}]
    with pytest.raises(DataError) as info:
        vlm_rm.score([Conversation(conv, [images[0]])])
    assert "input 0 turn 0" in str(info.value) and names in str(info.value)


def test_empty_video_file_is_named_empty(image_model, tmp_path):
    from mmreward.vision.video import VideoReadError, score_video

    path = tmp_path / "clip.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoReadError, match=r"clip.mp4' is empty \(0 bytes\)"):
        score_video(image_model, PROMPT, str(path))
    with pytest.raises(VideoReadError, match=r"input 0: .*is empty \(0 bytes\)"):
        image_model.score([VideoPrompt(PROMPT, str(path))])


def test_all_tie_training_data_is_refused_as_training_data(tmp_path):
    from mmreward.core.trainer import TrainConfig
    from mmreward.vision import synthetic as S
    from mmreward.vision.train import ImageRewardTrainConfig, train_image_reward

    rows = S.write_jsonl(S.ranked_sets(2, seed=3), str(tmp_path / "d"))
    tied = tmp_path / "d" / "tied.jsonl"  # beside the images: their paths are relative to the file
    with open(rows) as f:
        lines = [json.loads(x) for x in f if x.strip()]
    tied.write_text("\n".join(json.dumps({**r, "ranks": [0] * len(r["ranks"])}) for r in lines))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError) as info:
            train_image_reward(ImageRewardTrainConfig(data=str(tied), embed_dim=8),
                               TrainConfig(output_dir=str(tmp_path / "run"), max_steps=1, batch_size=1))
    msg = str(info.value)
    assert "training data" in msg and "to train on" in msg and "to evaluate" not in msg
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50])
def test_qwen_vl_video_error_names_the_input_and_video(tmp_path, content):
    # before: a corrupt / empty video in a batch of Qwen-VL conversations was named by its file only
    # ("cannot open video 'clip.mp4' ..."), not by the input and video of the batch it came from
    from mmreward.vision.published.qwen_vl import QwenVisionConfig, read_video
    from mmreward.vision.video import VideoReadError

    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoReadError, match=r"^input 2 video 0: .*clip\.mp4"):
        read_video(str(path), QwenVisionConfig(), "input 2 video 0")


def test_video_as_uint8_tensor_or_float_array_scores_like_the_uint8_array(image_model):
    # before: torchvision.io.read_video's uint8 [T, H, W, 3] tensor, a uint8 [T, 3, H, W] tensor and a float
    # [T, H, W, 3] array in [0, 1] were refused, although single images are read in each of these forms
    frames = (np.random.default_rng(2).random((3, 20, 28, 3)) * 255).astype(np.uint8)
    want = image_model.score_parts([VideoPrompt(PROMPT, frames)])[0]
    thwc = torch.from_numpy(frames)
    forms = [thwc, thwc.permute(0, 3, 1, 2), frames / 255.0, frames.astype(np.float32) / 255]
    for got in image_model.score_parts([VideoPrompt(PROMPT, v) for v in forms]):
        assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"input 0 frame 0: image has values in \[.*divide 0-255 images by 255"):
        image_model.score([VideoPrompt(PROMPT, frames.astype(np.float32))])
    with pytest.raises(ValueError, match=r"input 0: a video tensor must be float \[T, 3, H, W\]"):
        image_model.score([VideoPrompt(PROMPT, torch.zeros(3, 8, 8, 3))])  # float frames are channels-first
    with pytest.raises(ValueError, match=r"input 0: a video array must be uint8 \[T, H, W, 3\]"):
        image_model.score([VideoPrompt(PROMPT, frames.astype(np.int64))])


def test_rank_of_no_images_names_rank(image_model):
    with pytest.raises(ValueError, match="rank: images is empty"):
        image_model.rank(PROMPT, [])


def test_colour_data_rerun_into_a_folder_of_other_rows_is_refused(tmp_path, capsys):
    # before: a second colour-data run into the same --out rewrote images/00000.png … first, so the folder's
    # rows.jsonl (replaced only at the end, or never when interrupted) named images its labels do not describe,
    # and the rows written before were lost without a word
    from mmreward.cli import main

    out = str(tmp_path / "colours")
    assert main(["vision", "colour-data", "--out", out, "--n", "4", "--seed", "0"]) == 0
    rows = (tmp_path / "colours" / "rows.jsonl").read_text()
    image = (tmp_path / "colours" / "images" / "00000.png").read_bytes()
    assert main(["vision", "colour-data", "--out", out, "--n", "4", "--seed", "0"]) == 0  # the same run again
    assert (tmp_path / "colours" / "rows.jsonl").read_text() == rows
    capsys.readouterr()
    assert main(["vision", "colour-data", "--out", out, "--n", "2", "--seed", "1", "--kind", "steps"]) == 2
    err = capsys.readouterr().err
    assert "already holds a rows.jsonl" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "colours" / "rows.jsonl").read_text() == rows
    assert (tmp_path / "colours" / "images" / "00000.png").read_bytes() == image
    assert main(["vision", "colour-data", "--out", out, "--n", "2", "--seed", "1", "--kind", "steps",
                 "--overwrite"]) == 0
    new = [json.loads(x) for x in (tmp_path / "colours" / "rows.jsonl").read_text().splitlines()]
    assert len(new) == 2 and "steps" in new[0]
    assert sorted(p.name for p in (tmp_path / "colours" / "images").iterdir()) == ["00000.png", "00001.png"]


def test_visual_prm_best_of_n_refuses_a_string_candidate():
    # before: list("b c") made each character a step, and best_of_n picked among character-level "solutions"
    from mmreward.vision.synthetic import COLOUR_WORDS
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.visual_prm import VisualPRM, VisualPRMConfig

    torch.manual_seed(0)
    proc = tiny_processor(COLOUR_WORDS)
    prm = VisualPRM(VisualPRMConfig(), tiny_qwen2vl_config(proc), proc)
    image = np.zeros((28, 28, 3), np.uint8)
    with pytest.raises(TypeError, match=r"candidate 1 must be a list of step strings, got str 'so it is red'"):
        prm.best_of_n([image], "what colour is the image", [["look at the image"], "so it is red"])
    with pytest.raises(TypeError, match="candidates must be a list of candidates"):
        prm.best_of_n([image], "what colour is the image", "so it is red")
    best, scores = prm.best_of_n([image], "what colour is the image",
                                 [["look at the image"], np.array(["look", "so it is red"])])
    want = prm.score_parts([VisualSteps("what colour is the image", ["look", "so it is red"], [image])])[0]
    assert scores.shape == (2,) and torch.allclose(scores[1], want.mean())


@pytest.mark.parametrize("data, size, names", [
    ("file", 0, "ImageRewardTrainConfig.image_size must be an integer >= 1, got 0"),
    ("file", -3, "ImageRewardTrainConfig.image_size must be an integer >= 1, got -3"),
    ("synthetic", 8, "image_size must be >= 24 with data 'synthetic'"),
])
def test_bad_image_size_is_refused_by_name_before_the_run_folder(tmp_path, data, size, names):
    # before: --image-size 0 with a data file failed at the first resize inside torch ("Input and output sizes
    # should be greater than 0", exit 1) after the run folder was made, and the rerun with a fixed size was
    # then refused as "a run with other settings"; with synthetic data the renderer named an unknown "size"
    from mmreward.core.trainer import TrainConfig
    from mmreward.vision import synthetic as S
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel
    from mmreward.vision.train import ImageRewardTrainConfig, train_image_reward

    rows = S.write_jsonl(S.ranked_sets(2, seed=3), str(tmp_path / "d")) if data == "file" else "synthetic"
    with pytest.raises(ValueError, match=names):
        train_image_reward(ImageRewardTrainConfig(data=rows, embed_dim=8, image_size=size),
                           TrainConfig(output_dir=str(tmp_path / "run"), max_steps=1, batch_size=1))
    assert not (tmp_path / "run").exists()
    if size < 1:
        with pytest.raises(ValueError, match=f"ImageRewardConfig.image_size must be an integer >= 1, got {size}"):
            ImageRewardModel.from_backbone(ConvTextConfig(vocab=["a"]), image_size=size)


def test_colour_data_never_replaces_images_no_rows_file_names(tmp_path, capsys):
    """An --out whose images/ holds numbered PNGs but no rows.jsonl (the user's own files): refused, each file
    untouched; --overwrite replaces them."""
    from mmreward.cli import main

    out = tmp_path / "mine"
    (out / "images").mkdir(parents=True)
    for name in ("00000.png", "00070.png"):
        (out / "images" / name).write_bytes(b"user file " + name.encode())
    assert main(["vision", "colour-data", "--out", str(out), "--n", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["00000.png", "00070.png"]
    assert (out / "images" / "00000.png").read_bytes() == b"user file 00000.png"
    assert main(["vision", "colour-data", "--out", str(out), "--n", "2", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["00000.png", "00001.png"]
    assert main(["vision", "colour-data", "--out", str(out), "--n", "2"]) == 0  # the same command again


def test_an_image_value_with_only_a_path_reads_the_path(tmp_path):
    from PIL import Image

    from mmreward.vision.images import to_pil

    Image.fromarray(np.full((4, 6, 3), 7, np.uint8)).save(tmp_path / "a.png")
    assert np.array_equal(np.asarray(to_pil({"path": str(tmp_path / "a.png")}, "x")), np.full((4, 6, 3), 7, np.uint8))
    with pytest.raises(ValueError, match="neither bytes nor a path"):
        to_pil({"path": None}, "x")

"""A text-to-image engineer scoring thousands of generated images and videos: a JSONL manifest of 5k tiny images
with paths relative to the manifest, scored from another working folder, stopped by a bad file and resumed;
long prompts cut at CLIP's 77 tokens told as one summed line (not one warning per batch); a zero-byte file
from a generation that stopped named as empty; animated GIF / WebP given as images told once (first frame
only), not silently; `mmreward vision score` pointing to `mmreward score`."""
import json
import os
import warnings

import numpy as np
import pytest
import torch

import mmreward
from mmreward.cli import main as mmreward_main
from mmreward.core.inputs import Conversation, ImagePrompt, VideoPrompt
from mmreward.vision.images import ImageLoadError


def _png(path, seed=0, size=(4, 4), mode="RGB"):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path)
    return path


def _animated(path, kind="gif"):
    from PIL import Image

    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, **({"lossless": True} if kind == "webp"
                                                                                   else {}))
    return path


def _jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    """mmreward's own image_reward model (the conv backbone), saved."""
    from mmreward.vision import ConvTextConfig, ImageRewardModel
    from mmreward.vision import synthetic as S

    torch.manual_seed(0)
    folder = str(tmp_path_factory.mktemp("scorer") / "model")
    ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=8, channels=(4,))).eval() \
        .save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pickscore(tmp_path_factory):
    """A tiny PickScore folder (CLIP, 77 text positions) built from a config as test_published_clip builds it."""
    pytest.importorskip("transformers")
    from test_published_clip import hf_folder

    folder = str(tmp_path_factory.mktemp("pick") / "PickScore_v1")
    hf_folder(folder)
    return folder


# ------------------------------------------------------------------ 5k images: relative paths, a bad file, --resume
def test_a_5k_manifest_scores_from_another_folder_and_resumes_after_a_bad_file(scorer, tmp_path, monkeypatch, capsys):
    root = tmp_path / "gen"
    rows = [{"prompt": "a red circle", "image": f"img/{i:05d}.png"} for i in range(5000)]
    for i in range(5000):
        _png(str(root / rows[i]["image"]), i)
    manifest = _jsonl(root / "m.jsonl", rows)
    bad = str(root / "img" / "04500.png")
    good = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(good[: len(good) // 2])  # truncated mid-write
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the paths are the manifest's folder's, not the working folder's
    out = str(tmp_path / "scores.jsonl")
    args = ["score", "--model", scorer, "--data", manifest, "--out", out, "--resume", "--batch-size", "64"]
    assert mmreward_main(args) == 2
    err = capsys.readouterr().err
    assert "row 4500" in err and "04500.png" in err and "truncated" in err, err
    with open(bad, "wb") as f:
        f.write(good)
    assert mmreward_main(args) == 0
    assert "continuing" in capsys.readouterr().err
    got = [json.loads(x) for x in open(out)]
    assert [r["image"] for r in got] == [r["image"] for r in rows]  # printed as written
    # the resumed file equals one run, and scores do not depend on the batch size
    sample = [rows[i] for i in (0, 1, 4095, 4096, 4500, 4999)]
    model = mmreward.load(scorer)
    want = model.score([ImagePrompt(r["prompt"], str(root / r["image"])) for r in sample], batch_size=1)
    assert np.allclose([got[i]["score"] for i in (0, 1, 4095, 4096, 4500, 4999)], want.numpy(), atol=1e-5)


# ------------------------------------------------------------------ prompts past CLIP's 77 tokens: one summed line
def test_long_prompts_over_a_manifest_are_one_summed_warning_line(pickscore, tmp_path):
    """Before: one warning per batch of 8 ("1 prompt(s) exceed …" / "2 prompt(s) …", each naming another first
    prompt), 25 lines over 200 rows and none with the total; now the run says it once, summed."""
    img = _png(str(tmp_path / "a.png"))
    rows = [{"prompt": (f"a red circle number {i % 7} " * 20 if i % 2 else "a red circle"), "image": "a.png"}
            for i in range(200)]
    data = _jsonl(tmp_path / "rows.jsonl", rows)
    assert os.path.exists(img)
    with warnings.catch_warnings(record=True) as w:
        assert mmreward_main(["score", "--model", pickscore, "--data", data, "--out", str(tmp_path / "o.jsonl"),
                              "--batch-size", "8"]) == 0
    lines = [str(x.message) for x in w if "exceed" in str(x.message) or "truncated" in str(x.message)]
    assert len(lines) == 1, lines
    assert "truncated 100 of 200 prompts to max_length=77 tokens" in lines[0], lines


def test_one_score_call_warns_once_with_the_count_of_inputs(pickscore):
    model = mmreward.load(pickscore)
    img = np.zeros((8, 8, 3), np.uint8)
    items = [ImagePrompt("a cat " * (100 if i % 3 == 0 else 1), img) for i in range(9)]
    items.append(VideoPrompt("a dog " * 100, np.zeros((4, 8, 8, 3), np.uint8)))  # one input, four frames
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model.score(items, batch_size=2)
    cut = [str(x.message) for x in w if "exceed the text encoder" in str(x.message)]
    assert len(cut) == 1, cut
    assert cut[0].startswith("4 prompt(s) exceed the text encoder's limit of 77 tokens") and \
        "truncated 4 of 10 prompts" in cut[0], cut
    assert w[0].filename == __file__  # the user's line, not mmreward's own
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.score([ImagePrompt("a cat", img)])  # nothing cut: no warning


# ------------------------------------------------------------------ bad files: named for what they are
def test_a_zero_byte_image_file_is_named_as_empty(scorer, tmp_path, capsys):
    """A generation that stopped before writing leaves a 0-byte file: "cannot identify image file" sent the
    user looking for a format problem."""
    open(tmp_path / "empty.png", "wb").close()
    model = mmreward.load(scorer)
    with pytest.raises(ImageLoadError, match=r"input 0: image file '.*empty\.png' is empty \(0 bytes\)"):
        model.score([ImagePrompt("a red circle", str(tmp_path / "empty.png"))])
    data = _jsonl(tmp_path / "rows.jsonl", [{"prompt": "a red circle", "image": "empty.png"}])
    assert mmreward_main(["score", "--model", scorer, "--data", data]) == 2
    err = capsys.readouterr().err
    assert "row 0" in err and "is empty (0 bytes)" in err and "Traceback" not in err, err


def test_odd_but_valid_image_files_score_as_their_rgb_conversion(scorer, tmp_path):
    """16-bit grey, CMYK JPEG, palette with transparency, grey, 1x1: each scored (not refused), and equal to its
    RGB conversion scored as an array (16-bit scaled, not clipped white)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    files = {}
    files["g16.png"] = Image.fromarray(rng.integers(0, 65536, (12, 10)).astype(np.uint16))
    files["cmyk.jpg"] = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert("CMYK")
    files["grey.png"] = Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8))
    files["one.png"] = Image.fromarray(rng.integers(0, 256, (1, 1, 3), dtype=np.uint8))
    paths = []
    for name, im in files.items():
        im.save(tmp_path / name)
        paths.append(str(tmp_path / name))
    pal = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert("P")
    pal.save(tmp_path / "pal.png", transparency=0)
    paths.append(str(tmp_path / "pal.png"))
    model = mmreward.load(scorer)
    got = model.score([ImagePrompt("a red circle", p) for p in paths], batch_size=3)
    g16 = np.asarray(Image.open(paths[0]), np.float64)
    arrays = [np.repeat(np.rint(g16 / 257).astype(np.uint8)[..., None], 3, -1)]
    arrays += [np.asarray(Image.open(p).convert("RGB")) for p in paths[1:]]
    want = model.score([ImagePrompt("a red circle", a) for a in arrays], batch_size=1)
    assert torch.allclose(got, want, atol=1e-5)


# ------------------------------------------------------------------ animated files given as images
def test_animated_images_in_rows_are_told_once_not_silently_cut(scorer, tmp_path):
    """An animated GIF / WebP in an 'image' field is read by its first frame (as PIL opens it), which a user who
    meant the clip never learnt: `mmreward score FILE` warned for a GIF argument, rows and the Python API did
    not. Now one warning per call / run, counted; as a 'video' every frame is scored."""
    for i in range(3):
        _animated(str(tmp_path / f"a{i}.gif"))
    _animated(str(tmp_path / "w.webp"), "webp")
    rows = [{"prompt": "a red circle", "image": n} for n in ("a0.gif", "a1.gif", "a2.gif", "w.webp")]
    rows.append({"prompt": "a red circle", "image": os.path.relpath(_png(str(tmp_path / "still.png")), tmp_path)})
    data = _jsonl(tmp_path / "rows.jsonl", rows)
    with warnings.catch_warnings(record=True) as w:
        assert mmreward_main(["score", "--model", scorer, "--data", data, "--batch-size", "1"]) == 0
    lines = [str(x.message) for x in w if "animated" in str(x.message)]
    assert len(lines) == 1 and "4 animated image(s) were read by their first frame only" in lines[0], lines
    model = mmreward.load(scorer)
    with pytest.warns(UserWarning, match=r"1 animated image\(s\) were read by their first frame only \(first: "
                                         r"'.*a0\.gif'\).*as a video"):
        first = model.score([ImagePrompt("a red circle", str(tmp_path / "a0.gif"))])
    assert torch.allclose(first, model.score([ImagePrompt("a red circle", np.zeros((8, 8, 3), np.uint8))]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parts = model.score_parts([VideoPrompt("a red circle", str(tmp_path / "a0.gif"))])
    assert len(parts[0]) == 3


def test_a_vlm_reward_model_tells_animated_images_once_per_call(tmp_path):
    from mmreward.vision import synthetic as S
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel

    proc = tiny_processor(S.COLOUR_WORDS)
    torch.manual_seed(0)
    rm = VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc)
    gifs = [_animated(str(tmp_path / f"a{i}.gif")) for i in range(3)]
    rows = S.colour_preference_rows(3, seed=0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rm.score([Conversation(r["conversations_chosen"], [g]) for r, g in zip(rows, gifs)], batch_size=1)
    told = [str(x.message) for x in w if "animated" in str(x.message)]
    assert told == [f"3 animated image(s) were read by their first frame only (first: {gifs[0]!r}): give an "
                    "animated file as a video ('video' field, VideoPrompt) to score every frame"], told


# ------------------------------------------------------------------ the command a user guesses
def test_mmreward_vision_score_points_to_mmreward_score(capsys):
    assert mmreward_main(["vision", "score", "--model", "m", "a.png"]) == 2
    err = capsys.readouterr().err
    assert "`mmreward score`" in err and "--data" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_videos_of_1_and_5_frames_in_one_batch_score_as_each_alone(scorer, tmp_path):
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (t, 12, 16, 3), dtype=np.uint8) for t in (1, 5, 2)]
    folder = tmp_path / "frames"
    for t in range(3):
        _png(str(folder / f"f{t}.png"), t, (12, 16))
    items = [VideoPrompt("a red circle", v) for v in videos] + [VideoPrompt("a red circle", str(folder))]
    model = mmreward.load(scorer)
    together = model.score(items, batch_size=4)
    alone = torch.cat([model.score([it], batch_size=1) for it in items])
    assert torch.allclose(together, alone, atol=1e-5)
    assert [len(p) for p in model.score_parts(items, batch_size=3)] == [1, 5, 2, 3]



def test_a_list_of_files_in_an_image_field_says_a_list_is_a_video(scorer, tmp_path, capsys):
    """Before: "row 0: expected a path, … got list", with nothing on what a list is for."""
    _png(str(tmp_path / "a.png"))
    data = _jsonl(tmp_path / "rows.jsonl", [{"prompt": "a red circle", "image": ["a.png", "a.png"]}])
    assert mmreward_main(["score", "--model", scorer, "--data", data]) == 2
    err = capsys.readouterr().err
    assert "row 0" in err and "got list of 2" in err and "'video' field" in err, err


def test_an_image_past_the_decompression_bomb_limit_is_named_in_the_warning(scorer, tmp_path, monkeypatch):
    """PIL's warning ("Image size (N pixels) exceeds limit …, could be decompression bomb DOS attack") names no
    file: over 5k images the one to look at could not be found. (The limit is lowered here: a 40x40 image stands
    for a 12000x12000 one.)"""
    from PIL import Image

    paths = [_png(str(tmp_path / f"{i}.png"), i, (10, 10)) for i in range(3)] + [_png(str(tmp_path / "big.png"), 9,
                                                                                      (40, 40))]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    model = mmreward.load(scorer)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model.score([ImagePrompt("a red circle", p) for p in paths])
    told = [str(x.message) for x in w if issubclass(x.category, Image.DecompressionBombWarning) and "png" in
            str(x.message)]  # PIL's own, which names no file, comes too
    assert len(told) == 1 and "big.png' is 40x40 pixels, past PIL's decompression-bomb limit of 1000" in told[0], told


def test_a_one_frame_video_refused_by_qwen_vl_says_to_give_it_as_an_image(tmp_path):
    """Qwen-VL samples video frames in pairs (the official qwen-vl-utils refuses one frame, and so do we); a
    generation batch with a one-frame clip got "a video needs at least 2 frames, got 1" and no way on."""
    import cv2

    from mmreward.vision.published.qwen_vl import QwenVisionConfig, read_video

    path = str(tmp_path / "one.mp4")
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 4, (32, 32))
    vw.write(np.zeros((32, 32, 3), np.uint8))
    vw.release()
    with pytest.raises(ValueError, match=r"^input 3 video 0: a video needs at least 2 frames, got 1 .*scored as the "
                                         r"image it is \({'type': 'image'"):
        read_video(path, QwenVisionConfig(min_pixels=56 * 56, max_pixels=28 * 28 * 20), "input 3 video 0")


def test_vision_eval_tells_cut_prompts_once_for_the_evaluation(scorer):
    """`vision eval` / evaluate_image_reward scored batch by batch, each batch warning on its own ("1 prompt(s)
    exceed …" per batch of held-out sets); now once, counted over the sets."""
    from mmreward.vision.train import RankedExample, evaluate_image_reward

    rng = np.random.default_rng(0)
    sets = [RankedExample("red " * (100 if i % 2 else 1), rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
                          np.array([0, 1])) for i in range(12)]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        evaluate_image_reward(mmreward.load(scorer), sets, batch_size=2)
    cut = [str(x.message) for x in w if "exceed the text encoder" in str(x.message)]
    assert len(cut) == 1 and cut[0].startswith("6 prompt(s)") and "truncated 6 of 12 prompts" in cut[0], cut


def test_animated_images_over_many_chunks_are_one_summed_line_and_webp_arguments_are_told(scorer, tmp_path,
                                                                                          monkeypatch):
    """Each chunk of `mmreward score` warned on its own ("3 animated…", "2 animated…"); a file argument was
    checked for animation only when it ended in .gif."""
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 3)
    gif = _animated(str(tmp_path / "a.gif"))
    rows = [{"prompt": "a red circle", "image": gif} for _ in range(8)]
    data = _jsonl(tmp_path / "rows.jsonl", rows)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert mmreward_main(["score", "--model", scorer, "--data", data, "--batch-size", "2"]) == 0
    lines = [str(x.message) for x in w if "animated" in str(x.message)]
    assert len(lines) == 1 and lines[0].startswith("8 animated image(s) were read by their first frame only"), lines
    # an animated WebP given as a file is the video it is for a scorer of videos (a .gif only, before)
    webp = _animated(str(tmp_path / "w.webp"), "webp")
    still = _png(str(tmp_path / "still.png"))
    got = score_cli._file_inputs(mmreward.load(scorer), [webp, still], "a red circle")
    assert [type(x) for x in got] == [VideoPrompt, ImagePrompt]


def test_huggingface_imagefolder_metadata_rows_score(scorer, tmp_path):
    """imagefolder's metadata.jsonl ({"file_name", "text"}) and ImageRewardDB's image_path were refused as
    "missing field 'image'"; they are the same image + prompt, scored alike."""
    from mmreward.core.data import DataError

    png = _png(str(tmp_path / "0001.png"))
    model = mmreward.load(scorer)
    want = model.score([ImagePrompt("a red circle", png)])
    for row in ({"file_name": png, "text": "a red circle"}, {"image_path": png, "caption": "a red circle"},
                {"image": png, "prompt": "a red circle", "text": "a red circle"}):
        assert torch.equal(model.score([row]), want), row
    with pytest.raises(DataError, match="fields 'prompt' and 'text' both give 'prompt', with different values"):
        model.score([{"image": png, "prompt": "a red circle", "text": "a blue square"}])
    data = _jsonl(tmp_path / "metadata.jsonl", [{"file_name": png, "text": "a red circle"}])
    assert mmreward_main(["score", "--model", scorer, "--data", data]) == 0


def test_an_imagefolder_scores_from_its_folder_or_its_metadata_file(scorer, tmp_path, monkeypatch):
    """A Hugging Face imagefolder (train/metadata.jsonl naming images beside it by file_name): the folder was read
    as data files of unknown format (its images), and the metadata file looked for the images in the working
    folder."""
    folder = tmp_path / "imf" / "train"
    folder.mkdir(parents=True)
    for i in range(3):
        _png(str(folder / f"img{i}.png"), seed=i)
    _jsonl(folder / "metadata.jsonl", [{"file_name": f"img{i}.png", "text": "a red circle"} for i in range(3)])
    monkeypatch.chdir(tmp_path)  # neither the folder of the images nor of the metadata
    want = mmreward.load(scorer).score([ImagePrompt("a red circle", str(folder / f"img{i}.png")) for i in range(3)])
    for data in (str(folder / "metadata.jsonl"), str(tmp_path / "imf")):
        out = tmp_path / "out.jsonl"
        assert mmreward_main(["score", "--model", scorer, "--data", data, "--out", str(out)]) == 0
        got = [json.loads(x)["score"] for x in out.read_text().splitlines()]
        assert torch.allclose(torch.tensor(got), want, atol=1e-6), data


def test_a_data_folder_holding_a_metadata_file_besides_its_data_is_read_whole(tmp_path):
    """Only a folder of media + metadata files is an imagefolder: rows in data.jsonl beside a metadata.jsonl were
    dropped for the metadata file's one row."""
    from mmreward.core.data import read_records

    folder = tmp_path / "ds"
    folder.mkdir()
    _jsonl(folder / "data.jsonl", [{"prompt": "p", "response": f"r{i}"} for i in range(3)])
    _jsonl(folder / "metadata.jsonl", [{"about": "this dataset"}])
    assert len(read_records(str(folder))) == 4

"""The first things a new user does with a published image scorer folder (PickScore / transformers CLIP,
ImageReward): `mmreward.load(folder)` then `score` on unusual-but-valid prompts (CJK, emoji, RTL, past
the text encoder's limit) mixed in one batch, a bf16 load, and `mmreward score --data rows.jsonl` with
extra columns and image paths relative to the file."""
import json
import os
import shutil
import warnings

import pytest
import torch

pytest.importorskip("transformers", reason="the published scorers need transformers")
from published_fixtures import write_images  # noqa: E402
from test_published_clip import hf_folder  # noqa: E402
from test_published_imagereward import folder as imagereward_folder  # noqa: E402,F401  (fixture)

import mmreward  # noqa: E402
from mmreward.core.inputs import ImagePrompt  # noqa: E402

PROMPTS = ["a cat", "两只狗 弹钢琴 😀 مرحبا " * 3, "a " * 200, "x"]  # short, Unicode, far past 35 / 77 tokens


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(str(tmp_path_factory.mktemp("images")))


@pytest.fixture(scope="module")
def pickscore(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("scorers") / "PickScore_v1")
    hf_folder(folder)
    return folder


def _batch_equals_one_by_one(model, images, limit):
    items = [ImagePrompt(p, images[i % len(images)]) for i, p in enumerate(PROMPTS)]
    with pytest.warns(UserWarning, match=rf"exceed the text encoder's limit of {limit} tokens and were truncated"):
        batch = model.score(items, batch_size=len(items))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = torch.stack([model.score([x])[0] for x in items])
    assert batch.std() > 1e-3 and float((batch - single).abs().max()) <= 1e-4
    return items, batch


def test_pickscore_mixed_prompts_batch_as_one_by_one_and_load_in_bf16(pickscore, images):
    items, batch = _batch_equals_one_by_one(mmreward.load(pickscore), images, 77)
    bf16 = mmreward.load(pickscore, dtype="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = bf16.score(items)
    assert got.dtype == torch.float32 and float((got - batch).abs().max()) <= 0.05 * float(batch.abs().max())


def test_imagereward_mixed_prompts_batch_as_one_by_one(imagereward_folder, images):  # noqa: F811
    _batch_equals_one_by_one(mmreward.load(imagereward_folder), images, 35)


def test_score_command_reads_rows_with_extra_columns_and_relative_images(pickscore, images, tmp_path, capsys):
    from mmreward.cli import main

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(images[0], data / "a.png")
    rows = data / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "a cat 😀", "image": "a.png", "id": 3, "meta": {"k": [1]}}) + "\n"
                    + json.dumps({"prompt": "你好", "image": os.path.abspath(images[1]), "extra": None}) + "\n")
    assert main(["score", "--model", pickscore, "--data", str(rows), "--json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    model = mmreward.load(pickscore)
    want = model.score([ImagePrompt("a cat 😀", str(data / "a.png")), ImagePrompt("你好", images[1])])
    assert [o["id"] if "id" in o else o["extra"] for o in out] == [3, None]
    assert [o["score"] for o in out] == pytest.approx(want.tolist(), abs=1e-4)

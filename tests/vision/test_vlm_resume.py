"""Resuming VLM reward-model / VisualPRM runs: a resume with other training rows (text, labels, images)
or another objective is refused naming the difference; the same rows (images read from a moved copy
included) resume; the CLI refuses such a run before any evaluation and prints no "before" figure for a
resumed run."""
import copy
import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from mmreward.cli import main as mmreward_main  # noqa: E402
from mmreward.core.trainer import TrainConfig  # noqa: E402
from mmreward.vision import synthetic as S  # noqa: E402
from mmreward.vision import vlm_rm  # noqa: E402
from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config  # noqa: E402
from mmreward.vision.visual_prm import VisualPRM, VisualPRMConfig, train_visual_prm  # noqa: E402
from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel, train_vlm_reward  # noqa: E402

QUIET = ["--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0", "--warmup-steps", "0",
         "--batch-size", "4"]


def cfg(tmp, **kw):
    return TrainConfig(output_dir=str(tmp), batch_size=4, lr=1e-3, warmup_steps=0, progress=False, log_every=0,
                       tensorboard=False, plot=False, **kw)


@pytest.fixture(scope="module")
def proc():
    return tiny_processor(S.COLOUR_WORDS)


def rm(proc, **kw):
    torch.manual_seed(0)
    return VLMRewardModel(VLMRewardConfig(**kw), tiny_qwen2vl_config(proc), proc)


def prm(proc, **kw):
    torch.manual_seed(0)
    return VisualPRM(VisualPRMConfig(**kw), tiny_qwen2vl_config(proc), proc)


def test_vlm_rm_resume_refuses_other_rows_and_freezing(proc, tmp_path):
    rows = S.colour_preference_rows(8, seed=0)
    train_vlm_reward(rm(proc), rows, cfg(tmp_path, max_steps=1))
    # same number of rows, other answers: the text
    other_text = copy.deepcopy(rows)
    other_text[3]["conversations_chosen"][-1]["content"] = "the image is red"
    with pytest.raises(ValueError, match=r"data\.sha256"):
        train_vlm_reward(rm(proc), other_text, cfg(tmp_path, max_steps=2))
    # same text, other pixels: the images
    other_pixels = copy.deepcopy(rows)
    other_pixels[5]["images"] = [255 - np.asarray(other_pixels[5]["images"][0])]
    with pytest.raises(ValueError, match=r"data\.sha256"):
        train_vlm_reward(rm(proc), other_pixels, cfg(tmp_path, max_steps=2))
    with pytest.raises(ValueError, match=r"freeze_vision_tower"):
        train_vlm_reward(rm(proc, freeze_vision_tower=True), rows, cfg(tmp_path, max_steps=2))
    # the same rows (equal copies, not the same objects) resume
    hist = train_vlm_reward(rm(proc), copy.deepcopy(rows), cfg(tmp_path, max_steps=2))
    assert [r["step"] for r in hist] == [1, 2]


def _write_rows(folder, rows):
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    lines = []
    for i, r in enumerate(rows):
        Image.fromarray(np.asarray(r["images"][0])).save(folder / "images" / f"{i}.png")
        lines.append({**r, "images": [str(folder / "images" / f"{i}.png")]})
    return lines


def test_vlm_rm_resume_reads_image_files_by_content(proc, tmp_path):
    rows = _write_rows(tmp_path / "data", S.colour_preference_rows(8, seed=0))
    run = tmp_path / "run"
    train_vlm_reward(rm(proc), rows, cfg(run, max_steps=1))
    # the data moved elsewhere: the same bytes, so the run resumes
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    moved = [{**r, "images": [r["images"][0].replace(str(tmp_path / "data"), str(tmp_path / "moved"))]} for r in rows]
    assert [r["step"] for r in train_vlm_reward(rm(proc), moved, cfg(run, max_steps=2))] == [1, 2]
    # an image file rewritten under the same name (data regenerated with another seed)
    from PIL import Image

    Image.fromarray(255 - np.asarray(Image.open(moved[2]["images"][0]))).save(moved[2]["images"][0])
    with pytest.raises(ValueError, match=r"data\.sha256"):
        train_vlm_reward(rm(proc), moved, cfg(run, max_steps=3))


def test_visual_prm_resume_refuses_other_labels_and_objective(proc, tmp_path):
    rows = S.colour_step_rows(8, seed=0)
    train_visual_prm(prm(proc), rows, cfg(tmp_path, max_steps=1))
    other_labels = copy.deepcopy(rows)
    other_labels[0]["labels"][0] = 0.5 if other_labels[0]["labels"][0] != 0.5 else 1.0
    with pytest.raises(ValueError, match=r"data\.sha256"):
        train_visual_prm(prm(proc), other_labels, cfg(tmp_path, max_steps=2))
    other_steps = copy.deepcopy(rows)
    other_steps[1]["steps"][-1] += " indeed"
    with pytest.raises(ValueError, match=r"data\.sha256"):
        train_visual_prm(prm(proc), other_steps, cfg(tmp_path, max_steps=2))
    with pytest.raises(ValueError, match=r"objective\.hard_labels"):
        train_visual_prm(prm(proc, hard_labels=True), rows, cfg(tmp_path, max_steps=2))
    # reduce / threshold only read the scores: a resume may change them
    hist = train_visual_prm(prm(proc, threshold=0.7, reduce="min"), copy.deepcopy(rows), cfg(tmp_path, max_steps=2))
    assert [r["step"] for r in hist] == [1, 2]


def test_data_digest_is_cheap_on_shared_images():
    """chosen and rejected share one image object: it is hashed once, and equal pixels give equal digests."""
    rows = vlm_rm.as_pairs(S.colour_preference_rows(4, seed=0))
    again = vlm_rm.as_pairs(copy.deepcopy(S.colour_preference_rows(4, seed=0)))
    assert vlm_rm.data_digest(rows) == vlm_rm.data_digest(again)
    assert vlm_rm.data_digest(rows) != vlm_rm.data_digest(vlm_rm.as_pairs(S.colour_preference_rows(4, seed=1)))


def _cli(argv, capsys):
    rc = mmreward_main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def colour_sets(tmp_path):
    for name, seed in (("a", 0), ("b", 1), ("held", 2)):
        assert mmreward_main(["vision", "colour-data", "--out", str(tmp_path / name), "--n", "8",
                              "--seed", str(seed)]) == 0
    return tmp_path


def test_cli_refuses_other_data_before_any_evaluation(colour_sets, monkeypatch, capsys):
    root = colour_sets
    base = ["vision", "train-vlm-rm", "--eval-data", str(root / "held" / "rows.jsonl"), "--out", str(root / "run"),
            *QUIET]
    rc, out, err = _cli([*base, "--data", str(root / "a" / "rows.jsonl"), "--max-steps", "1"], capsys)
    assert rc == 0, err
    assert "eval_loss_before" in json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    calls = []
    real = vlm_rm.evaluate_vlm_reward

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(vlm_rm, "evaluate_vlm_reward", counting)
    rc, out, err = _cli([*base, "--data", str(root / "b" / "rows.jsonl"), "--max-steps", "2"], capsys)
    assert rc == 2 and "data.sha256" in err and "Traceback" not in err, err
    assert calls == []  # refused before the "before" evaluation
    # resumed on its own data: the final held-out figures, no "before" from a freshly built model
    rc, out, err = _cli([*base, "--data", str(root / "a" / "rows.jsonl"), "--max-steps", "2"], capsys)
    assert rc == 0, err
    summary = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    assert summary["step"] == 2 and "eval_loss" in summary and "eval_loss_before" not in summary, summary
    assert len(calls) == 1  # only the Trainer's final evaluation


def test_cli_visual_prm_refuses_other_data(tmp_path, capsys):
    for name, seed in (("a", 0), ("b", 1)):
        assert mmreward_main(["vision", "colour-data", "--out", str(tmp_path / name), "--kind", "steps", "--n", "8",
                              "--seed", str(seed)]) == 0
    base = ["vision", "train-visual-prm", "--out", str(tmp_path / "run"), *QUIET]
    assert _cli([*base, "--data", str(tmp_path / "a" / "rows.jsonl"), "--max-steps", "1"], capsys)[0] == 0
    rc, _, err = _cli([*base, "--data", str(tmp_path / "b" / "rows.jsonl"), "--max-steps", "2"], capsys)
    assert rc == 2 and "data.sha256" in err, err
    rc, _, err = _cli([*base, "--data", str(tmp_path / "a" / "rows.jsonl"), "--max-steps", "2", "--hard-labels"],
                      capsys)
    assert rc == 2 and "hard_labels" in err, err


def test_cli_out_is_a_file_refused_before_evaluation(colour_sets, monkeypatch, capsys):
    (colour_sets / "afile").write_text("x")
    monkeypatch.setattr(vlm_rm, "evaluate_vlm_reward", lambda *a, **k: pytest.fail("evaluated"))
    rc, _, err = _cli(["vision", "train-vlm-rm", "--data", str(colour_sets / "a" / "rows.jsonl"), "--eval-data",
                       str(colour_sets / "held" / "rows.jsonl"), "--out", str(colour_sets / "afile"), "--max-steps", "1",
                       *QUIET], capsys)
    assert rc == 2 and "afile" in err and "Traceback" not in err, err


def test_resume_refuses_another_processor(proc, tmp_path):
    """the processor decides the tokens and pixels the weights were trained on: a resume with another image
    size (max pixels), chat template or tokenizer is refused naming the setting; a reloaded copy resumes."""
    from mmreward.vision.vlm_data import SimpleVLMProcessor

    rows = S.colour_preference_rows(8, seed=0)
    train_vlm_reward(rm(proc), rows, cfg(tmp_path / "rm", max_steps=1))
    bigger = tiny_processor(S.COLOUR_WORDS, image_size=84)
    with pytest.raises(ValueError, match=r"processor\.image_processor\.size"):
        train_vlm_reward(VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(bigger), bigger), rows,
                         cfg(tmp_path / "rm", max_steps=2))
    other_template = SimpleVLMProcessor(proc.tokenizer, proc.image_processor, proc.chat_template.replace("\n", " ", 1))
    with pytest.raises(ValueError, match=r"processor\.chat_template"):
        train_vlm_reward(rm(other_template), rows, cfg(tmp_path / "rm", max_steps=2))
    other_words = tiny_processor(S.COLOUR_WORDS + ["mauve"])
    with pytest.raises(ValueError, match=r"processor\.tokenizer"):
        train_visual_prm_then(other_words, tmp_path)
    proc.save_pretrained(str(tmp_path / "proc"))  # the same processor saved and read back: resumes
    again = SimpleVLMProcessor.from_pretrained(str(tmp_path / "proc"))
    assert [r["step"] for r in train_vlm_reward(rm(again), rows, cfg(tmp_path / "rm", max_steps=2))] == [1, 2]


def train_visual_prm_then(other, tmp_path):
    rows = S.colour_step_rows(4, seed=0)
    train_visual_prm(prm(tiny_processor(S.COLOUR_WORDS)), rows, cfg(tmp_path / "prm", max_steps=1))
    train_visual_prm(prm(other), rows, cfg(tmp_path / "prm", max_steps=2))

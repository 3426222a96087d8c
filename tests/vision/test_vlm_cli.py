"""`mmreward vision colour-data | train-vlm-rm | train-visual-prm | score-vlm` end to end: JSONL rows with
image files, a tiny Qwen2-VL that must learn the exactly-labelled colour task through the CLI, the
VisualPRM fine-tuned from the CLI-trained reward model, scoring, and clear errors."""
import json
import os

import pytest
import torch

pytest.importorskip("transformers")
from mmreward.cli import main as mmreward_main  # noqa: E402

QUIET = ["--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0", "--warmup-steps", "5"]


def _last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm_data")
    for name, kind, n, seed in (("train", "preference", 256, 0), ("held", "preference", 64, 1),
                                ("steps", "steps", 512, 0), ("steps_held", "steps", 64, 1)):
        assert mmreward_main(["vision", "colour-data", "--out", str(root / name), "--kind", kind, "--n", str(n),
                              "--seed", str(seed)]) == 0
    return root


@pytest.fixture(scope="module")
def rm(data, tmp_path_factory):
    """100 pairwise steps through the CLI (seed 0: held-out accuracy 0.53 → 0.94)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("vlm_rm")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = mmreward_main(["vision", "train-vlm-rm", "--data", str(data / "train" / "rows.jsonl"),
                            "--eval-data", str(data / "held" / "rows.jsonl"), "--output-dir", str(out),
                            "--max-steps", "100", "--lr", "3e-3", *QUIET])
    assert rc == 0, buf.getvalue()
    return out / "model", _last_json(buf.getvalue())


def test_colour_data_writes_images_and_rows(data):
    lines = (data / "held" / "rows.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    assert len(lines) == 64 and row["images"] == ["images/00000.png"]
    assert os.path.isfile(data / "held" / row["images"][0])
    steps = json.loads((data / "steps" / "rows.jsonl").read_text().splitlines()[0])
    assert len(steps["steps"]) == len(steps["labels"]) >= 1


def test_train_vlm_rm_learns_from_jsonl_with_image_files(rm):
    folder, summary = rm
    assert summary["eval_loss_before"] == pytest.approx(0.693, abs=0.05)
    assert summary["eval_accuracy"] >= 0.75 and summary["eval_loss"] < summary["eval_loss_before"] - 0.2, summary
    assert (folder / "model.safetensors").exists() and (folder / "processor").is_dir()


def test_score_vlm_ranks_held_out_pairs(rm, data, capsys):
    folder, summary = rm
    assert mmreward_main(["vision", "score-vlm", "--model", str(folder), "--data", str(data / "held" / "rows.jsonl"),
                          "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 64
    acc = sum(r["margin"] > 0 for r in rows) / 64
    assert acc == pytest.approx(summary["eval_accuracy"], abs=1e-6)  # the same model, the same rows
    assert all(r["margin"] == pytest.approx(r["chosen"] - r["rejected"], abs=1e-5) for r in rows)
    assert mmreward_main(["vision", "score-vlm", "--model", str(folder), "--data", str(data / "held" / "rows.jsonl")]) == 0
    assert f"chosen ranked first in {acc:.1%} of 64 rows" in capsys.readouterr().out


def test_train_visual_prm_from_the_cli_reward_model(rm, data, tmp_path, capsys):
    """VisualPRM fine-tunes the reward model's backbone (seed 0: macro-F1 0.43 → 0.81)."""
    folder, _ = rm
    rc = mmreward_main(["vision", "train-visual-prm", "--data", str(data / "steps" / "rows.jsonl"),
                        "--eval-data", str(data / "steps_held" / "rows.jsonl"), "--backbone", str(folder),
                        "--output-dir", str(tmp_path / "prm"), "--max-steps", "150", "--lr", "5e-4", *QUIET])
    assert rc == 0
    s = _last_json(capsys.readouterr().out)
    assert s["eval_macro_f1"] >= 0.6 and s["eval_macro_f1"] > s["eval_macro_f1_before"] + 0.1, s
    assert mmreward_main(["vision", "score-vlm", "--model", str(tmp_path / "prm" / "model"),
                          "--data", str(data / "steps_held" / "rows.jsonl"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    first = json.loads((data / "steps_held" / "rows.jsonl").read_text().splitlines()[0])
    assert len(rows) == 64 and len(rows[0]["steps"]) == len(first["steps"])
    assert all(0.0 <= p <= 1.0 for r in rows for p in r["steps"])


def test_synthetic_data_and_tiny_backbone_need_no_files(tmp_path, capsys):
    assert mmreward_main(["vision", "train-vlm-rm", "--data", "synthetic", "--n-train", "16", "--output-dir",
                          str(tmp_path), "--max-steps", "2", "--batch-size", "4", *QUIET]) == 0
    s = _last_json(capsys.readouterr().out)
    assert s["step"] == 2 and "eval_accuracy" in s and (tmp_path / "model" / "config.json").exists()


def test_bad_inputs_give_clear_errors(rm, data, tmp_path, capsys):
    folder, _ = rm
    assert mmreward_main(["vision", "train-vlm-rm", "--data", str(tmp_path / "none.jsonl"), "--max-steps", "1",
                          "--output-dir", str(tmp_path / "o"), *QUIET]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert mmreward_main(["vision", "train-vlm-rm", "--data", "synthetic", "--backbone", str(tmp_path / "nope"),
                          "--output-dir", str(tmp_path / "o"), *QUIET]) == 2
    assert "neither 'tiny' nor a local model folder" in capsys.readouterr().err
    assert mmreward_main(["vision", "score-vlm", "--model", str(tmp_path), "--data",
                          str(data / "held" / "rows.jsonl")]) == 2
    assert "not a VLM reward model or VisualPRM folder" in capsys.readouterr().err
    missing_img = tmp_path / "rows.jsonl"
    missing_img.write_text(json.dumps({"images": ["gone.png"], "conversation": [
        {"role": "user", "content": "what colour is the image"}]}) + "\n")
    assert mmreward_main(["vision", "score-vlm", "--model", str(folder), "--data", str(missing_img)]) == 2
    err = capsys.readouterr().err
    assert "gone.png" in err and "does not exist" in err
    no_conv = tmp_path / "noconv.jsonl"
    no_conv.write_text(json.dumps({"images": [str(data / "held" / "images" / "00000.png")]}) + "\n")
    assert mmreward_main(["vision", "score-vlm", "--model", str(folder), "--data", str(no_conv)]) == 2
    assert "needs 'conversation'" in capsys.readouterr().err
    bad = tmp_path / "bad_rows.jsonl"
    bad.write_text(json.dumps({"images": [str(data / "held" / "images" / "00000.png")], "steps": ["x"]}) + "\n")
    assert mmreward_main(["vision", "train-vlm-rm", "--data", str(bad), "--max-steps", "1",
                          "--output-dir", str(tmp_path / "o2"), *QUIET]) == 2
    assert "conversations_chosen" in capsys.readouterr().err

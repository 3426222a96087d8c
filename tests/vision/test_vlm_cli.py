"""`mmreward vision colour-data | train-vlm-rm | train-visual-prm | eval` end to end: JSONL rows with
image files, a tiny Qwen2-VL that must learn the exactly-labelled colour task through the CLI, the
VisualPRM fine-tuned from the CLI-trained reward model, evaluation, seeded runs and one-line errors."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

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
                            "--eval-data", str(data / "held" / "rows.jsonl"), "--out", str(out),
                            "--max-steps", "100", "--lr", "3e-3", "--seed", "0", *QUIET])
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


def test_vision_eval_gives_the_training_figures(rm, data, capsys):
    folder, summary = rm
    assert mmreward_main(["vision", "eval", "--model", str(folder), "--data", str(data / "held" / "rows.jsonl")]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["model_type"] == "vlm_reward"
    assert out["accuracy"] == pytest.approx(summary["eval_accuracy"], abs=1e-3)  # the same model, the same rows
    assert out["loss"] == pytest.approx(summary["eval_loss"], abs=1e-3)
    # in bfloat16 (--dtype): close figures (bf16 rounding flips a few of 64 close pairs on this tiny model)
    assert mmreward_main(["vision", "eval", "--model", str(folder), "--data", str(data / "held" / "rows.jsonl"),
                          "--dtype", "bf16"]) == 0
    low = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert low["accuracy"] >= 0.75 and low["loss"] == pytest.approx(out["loss"], abs=0.1), (low, out)


def test_mmreward_score_reads_the_vlm_rms_own_preference_rows(rm, data, capsys):
    """`mmreward score` on `colour-data --kind preference` rows (conversations_chosen / _rejected + images) failed
    with "missing field 'messages'"; each row is now scored twice, with the pairwise accuracy `vision eval` gives."""
    folder, summary = rm
    held = str(data / "held" / "rows.jsonl")
    assert mmreward_main(["score", "--model", str(folder), "--data", held, "--json"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 64 and all({"score_chosen", "score_rejected"} <= set(r) for r in rows)
    accuracy = sum(r["score_chosen"] > r["score_rejected"] for r in rows) / 64
    assert accuracy == pytest.approx(summary["eval_accuracy"], abs=1e-3)
    assert f"pairwise accuracy: {accuracy:.4f} over 64 pairs" in err
    # a published layout (RLAIF-V / MM-RLHF: image, question, chosen, rejected) gives the same scores
    published = data / "held" / "published.jsonl"
    with open(published, "w") as f:
        for line in open(held).read().splitlines()[:4]:
            row = json.loads(line)
            f.write(json.dumps({"image": row["images"][0], "question": row["conversations_chosen"][0]["content"],
                                **{k: row[f"conversations_{k}"][-1]["content"] for k in ("chosen", "rejected")}}) + "\n")
    assert mmreward_main(["score", "--model", str(folder), "--data", str(published), "--json"]) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["score_chosen"], r["score_rejected"]) for r in again] == \
        [(r["score_chosen"], r["score_rejected"]) for r in rows[:4]]


def test_train_visual_prm_from_the_cli_reward_model(rm, data, tmp_path, capsys):
    """VisualPRM fine-tunes the reward model's backbone (seed 0: macro-F1 0.43 → 0.81)."""
    folder, _ = rm
    rc = mmreward_main(["vision", "train-visual-prm", "--data", str(data / "steps" / "rows.jsonl"),
                        "--eval-data", str(data / "steps_held" / "rows.jsonl"), "--backbone", str(folder),
                        "--out", str(tmp_path / "prm"), "--max-steps", "150", "--lr", "5e-4", *QUIET])
    assert rc == 0
    s = _last_json(capsys.readouterr().out)
    assert s["eval_macro_f1"] >= 0.6 and s["eval_macro_f1"] > s["eval_macro_f1_before"] + 0.1, s
    assert mmreward_main(["vision", "eval", "--model", str(tmp_path / "prm" / "model"),
                          "--data", str(data / "steps_held" / "rows.jsonl")]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["model_type"] == "visual_prm" and out["macro_f1"] == pytest.approx(s["eval_macro_f1"], abs=1e-3)


def test_synthetic_runs_need_no_files_and_the_same_seed_gives_the_same_model(tmp_path, capsys):
    args = ["vision", "train-vlm-rm", "--data", "synthetic", "--n-train", "16", "--max-steps", "2",
            "--batch-size", "4", *QUIET]
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert mmreward_main([*args, "--out", str(tmp_path / name), "--seed", seed]) == 0
    s = _last_json(capsys.readouterr().out)
    assert s["step"] == 2 and "eval_accuracy" in s and (tmp_path / "c" / "model" / "config.json").exists()
    a, b, c = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bad_inputs_give_one_line_errors(rm, data, tmp_path, capsys):
    folder, _ = rm

    def fails(argv, *expected):
        assert mmreward_main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert all(e in err for e in expected), err

    train = ["vision", "train-vlm-rm", "--max-steps", "1", "--out", str(tmp_path / "o"), *QUIET]
    fails([*train, "--data", str(tmp_path / "none.jsonl")], "none.jsonl", "does not exist")
    fails([*train, "--data", "synthetic", "--backbone", str(tmp_path / "nope")], "neither 'tiny' nor a local model folder")
    fails([*train, "--data", "synthetic", "--device", "cuda:9"], "cuda:9")
    fails([*train, "--data", "synthetic", "--n-train", "0"], "--n-train must be >= 1, got 0")
    fails([*train, "--data", "synthetic", "--head-init-std", "-1"], "head_init_std must be a finite number >= 0, got -1.0")
    bad = tmp_path / "bad_rows.jsonl"
    bad.write_text(json.dumps({"images": [str(data / "held" / "images" / "00000.png")], "steps": ["x"]}) + "\n")
    fails([*train, "--data", str(bad)], "bad_rows.jsonl: row 0: missing field 'conversations_chosen'")
    fails(["vision", "train-visual-prm", "--max-steps", "1", "--out", str(tmp_path / "o"), *QUIET, "--data", str(bad)],
          "bad_rows.jsonl: row 0: missing field 'question'")
    missing_img = tmp_path / "rows.jsonl"
    row = json.loads((data / "held" / "rows.jsonl").read_text().splitlines()[0])
    missing_img.write_text(json.dumps(dict(row, images=["gone.png"])) + "\n")
    fails(["vision", "eval", "--model", str(folder), "--data", str(missing_img)], "gone.png", "does not exist")
    fails(["vision", "eval", "--model", str(tmp_path), "--data", str(missing_img)], "no config.json")
    fails(["vision", "colour-data", "--out", str(tmp_path / "c"), "--n", "0"], "--n must be >= 1")

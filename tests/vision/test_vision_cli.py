"""`mmreward vision train | eval`, `mmreward score`, `mmreward score-video` end to end on tiny sizes:
one flag spelling, seeded runs, one-line errors."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmreward.cli import main as mmreward_main
from mmreward.vision import synthetic as S


QUIET = ["--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = mmreward_main(["vision", "train", "--data", "synthetic", "--n-train", "32", "--n-eval", "8",
                        "--embed-dim", "16", "--out", str(out), "--max-steps", "3", "--batch-size", "8",
                        "--lr", "1e-3", "--max-grad-norm", "none", "--seed", "0", *QUIET])
    assert rc == 0
    return out


def test_train_writes_a_loadable_model_and_logs(trained, capsys):
    import mmreward
    from mmreward.vision.image_reward import ImageRewardModel

    model = mmreward.load(str(trained / "model"))
    assert isinstance(model, ImageRewardModel) and model.config.backbone == "conv"
    assert (trained / "metrics.csv").exists()
    settings = json.loads((trained / "train_config.json").read_text())["settings"]["image_reward_train"]
    assert settings["data"] == "synthetic" and settings["embed_dim"] == 16  # what data / model the run used
    assert float(model.reward_std) != 1.0  # the score normalisation was fitted before the final save


def test_two_runs_with_the_same_seed_are_bit_identical(trained, tmp_path, capsys):
    args = ["vision", "train", "--data", "synthetic", "--n-train", "32", "--n-eval", "8", "--embed-dim", "16",
            "--max-steps", "3", "--batch-size", "8", "--lr", "1e-3", "--max-grad-norm", "none", *QUIET]
    assert mmreward_main([*args, "--out", str(tmp_path / "again"), "--seed", "0"]) == 0
    assert mmreward_main([*args, "--out", str(tmp_path / "other"), "--seed", "1"]) == 0
    first = load_file(str(trained / "model" / "model.safetensors"))
    again = load_file(str(tmp_path / "again" / "model" / "model.safetensors"))
    other = load_file(str(tmp_path / "other" / "model" / "model.safetensors"))
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_vision_eval_reports_held_out_accuracy(trained, tmp_path, capsys):
    held = S.write_jsonl(S.ranked_sets(6, seed=9), str(tmp_path / "held"))
    assert mmreward_main(["vision", "eval", "--model", str(trained / "model"), "--data", held]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["model_type"] == "image_reward" and 0 <= out["pairwise_accuracy"] <= 1 and "top1_accuracy" in out
    # --out writes the printed metrics; --dtype casts the model as `mmreward score` does
    assert mmreward_main(["vision", "eval", "--model", str(trained / "model"), "--data", held, "--dtype", "bf16",
                          "--out", str(tmp_path / "m.json")]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert json.loads((tmp_path / "m.json").read_text()) == printed and printed.keys() == out.keys()
    assert mmreward_main(["vision", "eval", "--model", str(trained / "model"), "--data", held, "--out", held]) == 2
    assert "--out" in capsys.readouterr().err  # the data file is not replaced by the metrics


@pytest.mark.parametrize("argv, names", [
    (["vision", "train", "--device", "cuda:9", "--max-steps", "1"], "cuda:9"),
    (["vision", "eval", "--model", "{model}", "--data", "{tmp}/none.jsonl"], "none.jsonl"),
    (["vision", "eval", "--model", "{tmp}/no_model", "--data", "{tmp}/none.jsonl"], "no_model"),
    (["score", "--model", "{model}", "--prompt", "x", "--device", "cuda:9", "{tmp}/a.png"], "cuda:9"),
    (["score", "--model", "{model}", "--prompt", "x", "{tmp}/gone.png"], "gone.png"),
    (["vision", "nope"], "unknown command 'nope'"),
    (["vision", "train", "--n-train", "0"], "n_train must be an integer >= 1, got 0"),
    (["vision", "train", "--embed-dim", "0"], "embed_dim must be an integer >= 1, got 0"),
    (["vision", "train", "--label-smoothing", "1.5", "--loss", "pairwise"], "label_smoothing must be in [0, 1), got 1.5"),
    (["vision", "train", "--label-smoothing", "0.1"], "label_smoothing applies to the pairwise loss only"),
])
def test_user_errors_are_one_line_naming_what_is_wrong(trained, tmp_path, capsys, argv, names):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")  # an input that exists: only the device is wrong
    argv = [a.format(model=trained / "model", tmp=tmp_path) for a in argv]
    names = names.format(tmp=tmp_path)
    assert mmreward_main([*argv, *(["--out", str(tmp_path / "o"), *QUIET] if argv[1] == "train" else [])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and names in err and "Traceback" not in err, err


def test_train_on_jsonl(tmp_path, capsys):
    data = S.write_jsonl(S.ranked_sets(8, seed=0), str(tmp_path / "data"))
    held = S.write_jsonl(S.ranked_sets(4, seed=1), str(tmp_path / "held"))
    rc = mmreward_main(["vision", "train", "--data", data, "--eval-data", held, "--embed-dim", "16",
                        "--out", str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "4", *QUIET])
    assert rc == 0
    shown = json.loads(capsys.readouterr().out.splitlines()[-2])
    assert shown["step"] == 2 and 0 <= shown["eval_pairwise_accuracy"] <= 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    assert mmreward_main(["vision", "train", "--data", str(bad), "--out", str(tmp_path / "r2"), *QUIET]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl: row 0: not a ranked image set: missing field 'images'" in err and len(err.strip().splitlines()) == 1


def test_score_table_and_json(trained, tmp_path, capsys):
    from PIL import Image

    s = S.ranked_sets(1, seed=5)[0]
    paths = []
    for i, img in enumerate(s.images):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(img).save(paths[-1])
    assert mmreward_main(["score", "--model", str(trained / "model"), "--prompt", s.prompt, *paths, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out["results"]] == paths
    assert sorted(r["rank"] for r in out["results"]) == [1, 2, 3, 4]
    best = max(out["results"], key=lambda r: r["score"])
    assert best["rank"] == 1
    assert mmreward_main(["score", "--model", str(trained / "model"), "--prompt", s.prompt, *paths]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == f"prompt: {s.prompt}" and table[1].split() == ["rank", "score", "image"] and len(table) == 6
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert mmreward_main(["score", "--model", str(trained / "model"), "--prompt", "x", str(tmp_path / "broken.png")]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_score_video_with_plot_and_json(trained, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    frames = np.stack([S.render(S.Scene("red", "circle", 1 + i % 3, "left"), 32, np.random.default_rng(i))
                       for i in range(6)])
    path = str(tmp_path / "clip.mp4")
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 6, (32, 32))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    plot = tmp_path / "score.png"
    rc = mmreward_main(["score-video", "--model", str(trained / "model"), "--prompt", "a red circle on the left",
                        path, "--plot", str(plot), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["scores"]) == 6 and res["min"] <= res["mean"] <= res["max"] and "trend" in res
    assert plot.read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 20)
    assert mmreward_main(["score-video", "--model", str(trained / "model"), "--prompt", "x",
                          str(tmp_path / "bad.mp4")]) == 2
    assert "bad.mp4" in capsys.readouterr().err


def test_help_lists_the_commands(capsys):
    from mmreward.vision.cli import SUBCOMMANDS, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)
    for name in SUBCOMMANDS:  # every command's --help works (its module imports, its options build)
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_score_data_reads_image_paths_relative_to_the_data_file(trained, tmp_path, monkeypatch, capsys):
    """Rows written beside their images (as `vision colour-data` writes them) score from any working
    folder; a same-named image in the working folder is not read instead."""
    from PIL import Image

    s = S.ranked_sets(1, seed=5)[0]
    (tmp_path / "data" / "images").mkdir(parents=True)
    Image.fromarray(s.images[0]).save(tmp_path / "data" / "images" / "a.png")
    rows = tmp_path / "data" / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": s.prompt, "image": "images/a.png"}) + "\n")
    elsewhere = tmp_path / "cwd"
    (elsewhere / "images").mkdir(parents=True)
    Image.fromarray(s.images[-1]).save(elsewhere / "images" / "a.png")  # a different image, same relative path
    monkeypatch.chdir(elsewhere)
    model = str(trained / "model")
    assert mmreward_main(["score", "--model", model, "--data", str(rows), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["image"] == "images/a.png"  # the row as the user wrote it
    absolute = str(tmp_path / "data" / "images" / "a.png")
    assert mmreward_main(["score", "--model", model, "--prompt", s.prompt, absolute, "--json"]) == 0
    assert got["score"] == pytest.approx(json.loads(capsys.readouterr().out)["results"][0]["score"], abs=1e-5)


@pytest.mark.parametrize("size", ["0", "-2"])
def test_vision_eval_refuses_a_batch_size_below_one(trained, tmp_path, capsys, size):
    """-2 printed pairwise_accuracy 0.0 (no batch was scored); 0 failed inside range()."""
    held = S.write_jsonl(S.ranked_sets(2, seed=9), str(tmp_path / "held"))
    assert mmreward_main(["vision", "eval", "--model", str(trained / "model"), "--data", held,
                          "--batch-size", size]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"batch_size must be an integer >= 1, got {size}" in err, err


def test_eval_data_without_a_ranked_pair_is_an_error_not_zero_accuracy(trained, tmp_path, capsys):
    rows = [json.loads(line) for line in open(S.write_jsonl(S.ranked_sets(2, seed=9), str(tmp_path / "held")))]
    tied = tmp_path / "held" / "tied.jsonl"  # beside the images its rows name
    tied.write_text("".join(json.dumps(dict(r, ranks=[0] * len(r["ranks"]))) + "\n" for r in rows))
    assert mmreward_main(["vision", "eval", "--model", str(trained / "model"), "--data", str(tied)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no ranked pair" in err and "pairwise_accuracy" not in err, err
    train = S.write_jsonl(S.ranked_sets(4, seed=0), str(tmp_path / "data"))
    run = tmp_path / "run"
    assert mmreward_main(["vision", "train", "--data", train, "--eval-data", str(tied), "--embed-dim", "8",
                          "--out", str(run), "--max-steps", "1", "--batch-size", "2", *QUIET]) == 2
    err = capsys.readouterr().err
    assert "tied.jsonl" in err and "no ranked pair" in err and len(err.strip().splitlines()) == 1, err
    assert not run.exists()  # refused before the run folder is made


@pytest.mark.parametrize("plot, names", [("score.txt", ".txt"), ("folder", "is a folder")])
def test_score_video_checks_the_plot_path_before_scoring(tmp_path, capsys, plot, names):
    (tmp_path / "folder").mkdir()
    # the model folder does not exist: the plot path must be refused before the model loads
    assert mmreward_main(["score-video", "--model", str(tmp_path / "no_model"), "--prompt", "x",
                          str(tmp_path / "clip.mp4"), "--plot", str(tmp_path / plot)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and names in err and "no_model" not in err, err

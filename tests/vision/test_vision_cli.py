"""`mmreward vision train`, `mmreward score`, `mmreward score-video` end to end on tiny sizes."""
import json

import numpy as np
import pytest
import torch
from mmreward.vision import synthetic as S

from mmreward.cli import main as mmreward_main


QUIET = ["--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = mmreward_main(["vision", "train", "--data", "synthetic", "--n-train", "32", "--n-eval", "8",
                        "--embed-dim", "16", "--output-dir", str(out), "--max-steps", "3", "--batch-size", "8",
                        "--lr", "1e-3", "--max-grad-norm", "none", *QUIET])
    assert rc == 0
    return out


def test_train_writes_a_loadable_model_and_logs(trained, capsys):
    from mmreward.vision.image_reward import ImageRewardModel

    model = ImageRewardModel.from_pretrained(str(trained / "model"))
    assert model.config.backbone == "conv"
    assert (trained / "metrics.csv").exists()


def test_train_on_jsonl(tmp_path, capsys):
    data = S.write_jsonl(S.ranked_sets(8, seed=0), str(tmp_path / "data"))
    held = S.write_jsonl(S.ranked_sets(4, seed=1), str(tmp_path / "held"))
    rc = mmreward_main(["vision", "train", "--data", data, "--eval-data", held, "--embed-dim", "16",
                        "--output-dir", str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "4", *QUIET])
    assert rc == 0
    shown = json.loads(capsys.readouterr().out.splitlines()[-2])
    assert shown["step"] == 2 and 0 <= shown["eval_pairwise_accuracy"] <= 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    assert mmreward_main(["vision", "train", "--data", str(bad), "--output-dir", str(tmp_path / "r2"), *QUIET]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err


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


def test_help_and_unknown_command(capsys):
    from mmreward.vision.cli import main

    assert main(["--help"]) == 0 and "train" in capsys.readouterr().out
    assert main(["nope"]) == 2

"""Whole vision workflows as a user chains them: train with the CLI → the run folder (copied elsewhere,
Unicode / spaces / trailing slashes, ``~`` paths) → ``mmreward info`` → ``mmreward.load`` / ``mmreward
score`` / the server → ``vision eval`` → fine-tune from the run folder → resume with more steps. Each step
must read what the step before wrote."""
import base64
import importlib.util
import json
import os
import shutil

import pytest
import torch

from mmreward.cli import main as mmreward_main
from mmreward.vision import synthetic as S

QUIET = ["--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0"]
SMALL = ["--n-train", "8", "--n-eval", "4", "--embed-dim", "8", "--batch-size", "4", "--lr", "1e-3", "--seed", "0",
         *QUIET]


def _run(argv, capsys) -> str:
    capsys.readouterr()
    rc = mmreward_main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def _last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def _fails(argv, capsys, *names) -> str:
    capsys.readouterr()
    assert mmreward_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, err
    return err


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_image_scorer_run_folder_through_every_command(tmp_path, capsys):
    """--eval-data with --data synthetic was ignored silently (the run evaluated on synthetic sets, even on a
    file that does not exist), and --backbone refused the run folder that mmreward.load / score / serve open."""
    held = S.write_jsonl(S.ranked_sets(3, 3, 32, seed=7), str(tmp_path / "held é"))
    run = str(tmp_path / "runs é 中文" / "run one") + os.sep  # a trailing slash
    summary = _last_json(_run(["vision", "train", "--data", "synthetic", "--eval-data", held, "--out", run,
                               "--max-steps", "2", "--save-every", "1", *SMALL], capsys))
    # the run's held-out figures are those of the file it was given, as `vision eval` computes them
    ev = _last_json(_run(["vision", "eval", "--model", run, "--data", held], capsys))
    # the training summary prints 4 decimals; `vision eval` the evaluator's own numbers
    assert summary["eval_pairwise_accuracy"] == round(ev["pairwise_accuracy"], 4)
    assert summary["eval_top1_accuracy"] == round(ev["top1_accuracy"], 4)
    missing = str(tmp_path / "missing.jsonl")
    _fails(["vision", "train", "--eval-data", missing, "--out", str(tmp_path / "r2"), "--max-steps", "1", *SMALL],
           capsys, "missing.jsonl")
    assert not os.path.exists(tmp_path / "r2")

    # the run folder copied elsewhere: info, load, score and the server agree
    moved = str(tmp_path / "elsewhere" / "rün 2")
    shutil.copytree(run, moved)
    assert "image_reward" in _run(["info", moved + os.sep], capsys)
    import mmreward

    images = S.ranked_sets(1, 3, 32, seed=3)[0].images  # uint8 [3, H, W, 3]
    from PIL import Image

    paths = []
    for i, img in enumerate(images):
        paths.append(str(tmp_path / f"im {i}.png"))
        Image.fromarray(img).save(paths[-1])
    prompt = "two red circles on the left"
    api = mmreward.load(moved + os.sep).score([{"prompt": prompt, "image": p} for p in paths])
    cli = json.loads(_run(["score", "--model", moved, "--prompt", prompt, "--json", *paths], capsys))
    assert [r["score"] for r in cli["results"]] == pytest.approx(api.tolist(), abs=2e-6)
    if all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "httpx")):  # the serve extra
        from mmreward.serve import BackgroundServer, RewardClient, ServeConfig

        with BackgroundServer(moved, ServeConfig(host="127.0.0.1", port=0)) as url:
            served = RewardClient(url).score([{"prompt": prompt, "image": base64.b64encode(open(p, "rb").read()).decode()}
                                              for p in paths])
        assert served["scores"] == pytest.approx(api.tolist(), abs=1e-6)

    # a mid-run snapshot is named as one by every command that opens a model, with the folder to open instead
    snapshot = os.path.join(moved, "checkpoint-00000001")
    for argv in (["vision", "eval", "--model", snapshot, "--data", held],
                 ["score-video", "--model", snapshot, "--prompt", prompt, str(tmp_path / "held é" / "images")],
                 ["vision", "train", "--backbone", snapshot, "--out", str(tmp_path / "r3"), "--max-steps", "1", *SMALL]):
        _fails(argv, capsys, "checkpoint-00000001", "snapshot", os.path.join(moved, "model"))
    assert not os.path.exists(tmp_path / "r3")

    # fine-tuning starts from the run folder (its model/), as from the model folder itself
    from mmreward.vision.train import ImageRewardTrainConfig, build_model

    base = mmreward.load(moved).state_dict()
    for backbone in (moved + os.sep, moved):
        tuned = build_model(ImageRewardTrainConfig(backbone=backbone), ["a red circle"]).state_dict()
        assert all(torch.equal(base[k], tuned[k]) for k in base)
    files = sorted(os.listdir(os.path.join(moved, "model")))
    for out in (os.path.join(moved, "model"), os.path.join(moved, "model") + os.sep):
        _fails(["vision", "train", "--backbone", moved, "--out", out, "--max-steps", "1", *SMALL], capsys,
               "--out", "--backbone")
    assert sorted(os.listdir(os.path.join(moved, "model"))) == files
    tuned_out = _last_json(_run(["vision", "train", "--backbone", moved, "--data", "synthetic", "--eval-data", held,
                                 "--out", str(tmp_path / "tuned"), "--max-steps", "1", *SMALL], capsys))
    assert "eval_pairwise_accuracy" in tuned_out

    # the copied run continues with more steps, its first rows as they were
    before = open(os.path.join(moved, "metrics.csv")).read().splitlines()
    _run(["vision", "train", "--data", "synthetic", "--eval-data", held, "--out", moved, "--max-steps", "3",
          "--save-every", "1", *SMALL], capsys)
    after = open(os.path.join(moved, "metrics.csv")).read().splitlines()
    assert len(after) == 4 and after[:2] == before[:2]
    assert sorted(n for n in os.listdir(moved) if n.startswith("checkpoint-")) == ["checkpoint-00000002",
                                                                                  "checkpoint-00000003"]


def test_home_paths_across_the_image_chain(tmp_path, monkeypatch, capsys):
    """A quoted "~/sets.jsonl" was read, but its image paths were joined to a "./~" folder (no such file), and
    --backbone "~/run" was refused; every output lands in the home folder, none in the working folder."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    S.write_jsonl(S.ranked_sets(4, 3, 32, seed=1), str(home / "sets"))
    _run(["vision", "train", "--data", "~/sets/data.jsonl", "--eval-data", "~/sets/data.jsonl", "--out", "~/run",
          "--max-steps", "1", *SMALL], capsys)
    _run(["vision", "train", "--data", "~/sets/data.jsonl", "--backbone", "~/run", "--out", "~/run2",
          "--max-steps", "1", *SMALL], capsys)
    _run(["vision", "eval", "--model", "~/run2", "--data", "~/sets/data.jsonl", "--out", "~/eval.json"], capsys)
    _run(["score-video", "--model", "~/run2", "--prompt", "a red circle", "~/sets/images", "--plot", "~/p.png"],
         capsys)
    assert "pairwise_accuracy" in json.loads((home / "eval.json").read_text())
    assert (home / "p.png").is_file() and (home / "run2" / "model" / "config.json").is_file()
    assert os.listdir(cwd) == []


def test_vlm_chain_with_home_paths_and_a_run_folder_backbone(tmp_path, monkeypatch, capsys):
    """train-visual-prm --backbone <train-vlm-rm run folder> failed with transformers' "Unrecognized
    processing class", and colour-data --out "~/colours" wrote a "./~" folder the next command did not read."""
    pytest.importorskip("transformers")
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    vlm = ["--batch-size", "4", "--seed", "0", *QUIET]
    _run(["vision", "colour-data", "--out", "~/colours", "--n", "4"], capsys)
    assert (home / "colours" / "rows.jsonl").is_file()
    _run(["vision", "train-vlm-rm", "--data", "~/colours/rows.jsonl", "--out", "~/rm", "--max-steps", "1", *vlm],
         capsys)
    import mmreward

    rm = mmreward.load(str(home / "rm"))
    from mmreward.vision.vlm_cli import _backbone

    for spec in ("~/rm/", str(home / "rm")):  # the run folder, as mmreward.load reads it
        backbone, processor = _backbone(spec)
        assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), rm.backbone.state_dict().values()))
    # a run whose --out is the model folder it starts from would write its snapshots, logs and model/ into it
    files = sorted(os.listdir(home / "rm" / "model"))
    _fails(["vision", "train-visual-prm", "--data", "synthetic", "--n-train", "4", "--backbone", "~/rm",
            "--out", "~/rm/model/", "--max-steps", "1", *vlm], capsys, "--out", "--backbone")
    assert sorted(os.listdir(home / "rm" / "model")) == files
    _run(["vision", "train-visual-prm", "--data", "synthetic", "--n-train", "4", "--backbone", "~/rm/",
          "--out", "~/prm", "--max-steps", "1", *vlm], capsys)
    assert mmreward.load("~/prm").model_type == "visual_prm"
    assert os.listdir(cwd) == []


def test_an_unfinished_run_as_backbone_is_named(tmp_path, capsys):
    """A run folder without its final model/ (stopped before its end) given as --backbone: one line naming it
    and what to do (it was "backbone must be conv, clip-tiny or a model folder"), and no output folder left."""
    run = tmp_path / "stopped run"
    run.mkdir()
    (run / "train_config.json").write_text("{}")
    _fails(["vision", "train", "--backbone", str(run), "--out", str(tmp_path / "o1"), "--max-steps", "1", *SMALL],
           capsys, "stopped run", "has not finished")
    _fails(["vision", "train-visual-prm", "--data", "synthetic", "--n-train", "4", "--backbone", str(run),
            "--out", str(tmp_path / "o2"), "--max-steps", "1", *QUIET], capsys, "stopped run", "has not finished")
    assert sorted(os.listdir(tmp_path)) == ["stopped run"]


KILL_AFTER_SNAPSHOT = """
import os, signal, sys
from mmreward.core import trainer as T
save = T.Trainer.save_snapshot
def save_then_die(self):
    path = save(self)
    if self.step == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)  # the snapshot of that step is in place, nothing after it
    return path
T.Trainer.save_snapshot = save_then_die
from mmreward.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_cli_run_is_named_then_resumes_to_the_uninterrupted_model(tmp_path, capsys):
    """`mmreward vision train` killed (SIGKILL) right after a mid-run snapshot, under umask 077: the folder is
    named as an unfinished run by the commands that open models, the same command finishes it, and the final
    model equals an uninterrupted run's bit for bit; every file it wrote keeps the umask."""
    import subprocess
    import sys

    held = S.write_jsonl(S.ranked_sets(3, 3, 32, seed=7), str(tmp_path / "held"))
    args = ["vision", "train", "--eval-data", held, "--max-steps", "4", "--save-every", "1", *SMALL]
    run = str(tmp_path / "killed run é")
    env = dict(os.environ, KILL_AT_STEP="2", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_SNAPSHOT, *args, "--out", run], env=env,
                          capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o077))
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not os.path.exists(os.path.join(run, "model"))
    assert "checkpoint-00000002" in os.listdir(run)
    _fails(["vision", "eval", "--model", run, "--data", held], capsys, "has not finished", "killed run é")
    _fails(["vision", "train", "--backbone", run, "--out", str(tmp_path / "ft"), "--max-steps", "1", *SMALL],
           capsys, "has not finished")
    for root, dirs, files in os.walk(run):
        for name in dirs + files:
            assert os.stat(os.path.join(root, name)).st_mode & 0o077 == 0, os.path.join(root, name)

    _run([*args, "--out", run], capsys)  # the same command continues from checkpoint-00000002
    _run([*args, "--out", str(tmp_path / "whole")], capsys)
    resumed, whole = (open(os.path.join(r, "model", "model.safetensors"), "rb").read()
                      for r in (run, str(tmp_path / "whole")))
    assert resumed == whole
    assert open(os.path.join(run, "metrics.csv")).read() == open(tmp_path / "whole" / "metrics.csv").read()
    assert not [n for n in os.listdir(run) if n.startswith(".")]  # no temporaries left behind

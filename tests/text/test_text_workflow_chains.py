"""The text workflow as a chain: `mmreward text train` → the run folder (its final model/ and its
checkpoint-<step>/ snapshots) → `mmreward info` / `mmreward score` / `mmreward.load` → `mmreward serve`
→ resuming the run, on folders with spaces and non-ASCII names, after a SIGKILL, under umask 077."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from helpers import word_tokenizer  # noqa: E402

import mmreward  # noqa: E402
from mmreward.cli import main as mmreward_main  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402

KEYWORDS = [f"w{i}" for i in range(8)]
QUIET = ["--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0"]
ROWS = [{"prompt": "say w1", "response": "w3 w1"}, {"prompt": "say w1", "response": "w3 w2"}]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
    [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("chains")
    word_tokenizer(["say"] + KEYWORDS, model_max_length=32).save_pretrained(str(d / "tok"))
    rng = random.Random(0)
    with open(d / "train.jsonl", "w") as f:
        for _ in range(32):
            k, a, other = rng.sample(KEYWORDS, 3)
            f.write(json.dumps({"prompt": f"say {k}", "chosen": f"{a} {k}", "rejected": f"{a} {other}"}) + "\n")
    (d / "bert.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": 16, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 16, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0}))
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return d


def _train_args(files, out, steps):
    return ["text", "train", "--data", str(files / "train.jsonl"), "--backbone-config", str(files / "bert.json"),
            "--tokenizer", str(files / "tok"), "--out", str(out), "--max-steps", str(steps), "--save-every", "1",
            "--batch-size", "4", "--seed", "0", *QUIET]


@pytest.fixture(scope="module")
def run(files):
    out = files / "run é 中 x"
    assert mmreward_main(_train_args(files, out, 2)) == 0
    return out


def _fails(argv, capsys, *expected):
    capsys.readouterr()
    assert mmreward_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    assert "cannot tell which reward model" not in err and "no config.json" not in err, err


def test_snapshots_and_unfinished_runs_are_named_by_every_command(run, files, tmp_path, capsys):
    """A checkpoint-<step>/ folder or a run folder without model/ (a killed run) given as a model: each
    command says what the folder is and what to open or run instead, not "cannot tell which reward
    model this is (no config.json)"."""
    from mmreward.registry import LoadError
    from mmreward.serve.protocol import load_model

    snapshot = run / "checkpoint-00000002"
    assert snapshot.is_dir() and (run / "model" / "config.json").is_file()
    killed = tmp_path / "killed run é"
    shutil.copytree(run, killed, ignore=shutil.ignore_patterns("model"))
    data = str(files / "rows.jsonl")
    final = "the run's model is " + str(run / "model")
    _fails(["info", str(snapshot)], capsys, "training snapshot (step 2", final)
    _fails(["score", "--model", str(snapshot) + "/", "--data", data], capsys, "training snapshot", final)
    _fails(["text", "score", "--model", str(killed / "checkpoint-00000002"), "--data", data], capsys,
           "training snapshot", "the run has not saved its model yet", f"then open {killed}")
    for argv in (["info", str(killed)], ["score", "--model", str(killed), "--data", data],
                 ["text", "score", "--model", str(killed) + "/", "--data", data],
                 ["prm", "score", "--model", str(killed), "--problem", "1+1", "--step", "1+1=2"]):
        _fails(argv, capsys, "training run that has not finished", "newest snapshot is step 2", "--resume")
    _fails(["text", "judge", "genrm", "--model", str(snapshot), "--data", str(files / "train.jsonl")], capsys,
           "--model", "training snapshot")
    _fails(["text", "train", "--data", str(files / "train.jsonl"), "--model", str(snapshot), "--out",
            str(tmp_path / "new"), "--max-steps", "1", *QUIET], capsys, "--model", "training snapshot")
    assert not (tmp_path / "new").exists()
    with pytest.raises(LoadError, match="training snapshot"):  # mmreward serve --model SNAPSHOT
        load_model(str(snapshot))
    assert mmreward_main(["info", str(run) + "/"]) == 0  # the run folder itself opens its model/


def test_a_killed_run_resumes_under_umask_077_and_scores_alike(files, tmp_path, capsys):
    """SIGKILL a `mmreward text train` process once its first snapshot is written: `mmreward info` names
    the unfinished run, the same command finishes it, no temporary is left, every file is private
    (umask 077), and `mmreward score --json` gives exactly the scores mmreward.load gives."""
    from mmreward.info_cli import describe_folder
    from mmreward.registry import LoadError

    out = tmp_path / "runs" / "rm ü"
    argv = _train_args(files, out, 30)
    old = os.umask(0o077)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "mmreward.cli", *argv], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not (out.is_dir() and any(n.startswith("checkpoint-") for n in os.listdir(out))):
            assert proc.poll() is None and time.time() < deadline, "the run ended before its first snapshot"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "model").exists(), "the run finished before the kill"
        with pytest.raises(LoadError, match="has not finished"):
            describe_folder(str(out))
        assert mmreward_main(argv) == 0  # the same command continues from the newest snapshot
    finally:
        os.umask(old)
    names = [os.path.join(r, n) for r, ds, fs in os.walk(out) for n in ds + fs]
    assert not [n for n in names if n.endswith(".tmp") or "/." in n], names
    assert all(os.stat(n).st_mode & 0o077 == 0 for n in names), [(n, oct(os.stat(n).st_mode)) for n in names]
    assert len((out / "metrics.csv").read_text().splitlines()) == 31
    capsys.readouterr()
    assert mmreward_main(["score", "--model", str(out), "--data", str(files / "rows.jsonl"), "--json"]) == 0
    cli = [json.loads(line)["score"] for line in capsys.readouterr().out.splitlines()]
    api = mmreward.load(str(out) + "/").score([TextPair(r["prompt"], r["response"]) for r in ROWS]).tolist()
    assert cli == api  # the model's values, not rounded to 6 places (a score of 3e-7 printed as 0.0)


def test_serve_accepts_a_request_as_soon_as_it_announces_its_url(run):
    """`mmreward serve --port 0` prints the URL a client needs; a client that connects at once (no retry)
    is answered, with the scores of mmreward.load on the same run folder."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    proc = subprocess.Popen([sys.executable, "-m", "mmreward.cli", "serve", "--model", str(run) + "/", "--port", "0"],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stderr:
            m = re.search(r"on (http://127\.0\.0\.1:\d+) ", line)
            if m:
                url = m.group(1)
                break
        assert url, "the server did not announce its URL"
        req = urllib.request.Request(url + "/score", data=json.dumps({"inputs": ROWS}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:  # no retry: the announced URL must accept now
            served = json.loads(r.read())["scores"]
        api = mmreward.load(str(run)).score([TextPair(r["prompt"], r["response"]) for r in ROWS]).tolist()
        assert served == pytest.approx(api, abs=1e-6)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_a_meta_rm_folder_is_named_by_info_and_score(files, tmp_path, capsys):
    """`mmreward text train-meta-rm` leaves a ScalarHeadLM folder (backbone/ + head/, no config.json):
    `mmreward info` / `mmreward score` on it, or on its run folder, say what it is and where it is used
    instead of "cannot tell which reward model this is (no config.json)"."""
    from mmreward.text.generative.heads import ScalarHeadLM
    from mmreward.text.generative.tiny import tiny_llama, word_tokenizer as lm_tokenizer

    tok = lm_tokenizer(["good bad q"])
    run = tmp_path / "meta run ü"
    ScalarHeadLM(tiny_llama(len(tok), hidden=16, layers=1, heads=2, seed=0)).save_pretrained(str(run / "model"), tok)
    (run / "train_config.json").write_text("{}")
    for target in (run, run / "model"):
        for argv in (["info", str(target)], ["score", "--model", str(target), "--data", str(files / "rows.jsonl")]):
            _fails(argv, capsys, "ScalarHeadLM", f"judge grm --meta-rm {run / 'model'}")


def test_warm_merges_run_folders_given_as_paths_and_names_a_snapshot_member(run, tmp_path, capsys):
    """`warm_average` takes pathlib.Path members as it takes str ones (was: "WARM members must be
    nn.Module or folder paths, got PosixPath"); `mmreward text merge` names a snapshot member."""
    from pathlib import Path

    from mmreward.text.recipes.warm import warm_average

    merged = warm_average([Path(run), Path(str(run) + "/")])
    rows = [TextPair(r["prompt"], r["response"]) for r in ROWS]
    assert merged.score(rows).tolist() == pytest.approx(mmreward.load(run).score(rows).tolist(), abs=1e-6)
    _fails(["text", "merge", str(run), str(run / "checkpoint-00000002"), "--out", str(tmp_path / "warm")], capsys,
           "training snapshot", "checkpoint-00000002")
    assert not (tmp_path / "warm").exists()


def test_a_run_continued_past_its_model_is_noted_by_info_and_score(run, files, tmp_path, capsys):
    """A finished run continued with more steps and killed (or still running) keeps the model/ of its
    earlier end: `mmreward info` notes it and the commands that open the run folder warn, instead of
    serving the older model without a word."""
    continued = tmp_path / "continued run"
    shutil.copytree(run, continued)
    config = json.loads((continued / "train_config.json").read_text())
    (continued / "train_config.json").write_text(json.dumps({**config, "max_steps": 5}))  # as `--max-steps 5` writes it
    capsys.readouterr()
    assert mmreward_main(["info", str(continued), "--json"]) == 0
    assert "has not finished (newest snapshot: step 2 of 5)" in json.loads(capsys.readouterr().out)["note"]
    with pytest.warns(UserWarning, match="step 2 of 5"):
        assert mmreward_main(["score", "--model", str(continued), "--data", str(files / "rows.jsonl"), "--json"]) == 0
    capsys.readouterr()
    assert mmreward_main(["info", str(run), "--json"]) == 0  # the finished run: no note
    assert "note" not in json.loads(capsys.readouterr().out)

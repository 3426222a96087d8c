"""Whole workflows of ``mmreward robotics``, on unusual-but-valid paths and across interruptions:
``~`` paths through every command of a chain, ``--stop-at`` then ``--resume`` (train-codec,
train-video, train-progress --attach), ``--save-every`` for train-progress, a collection killed
mid-task, and a training run SIGKILLed in a subprocess that resumes to the end."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from mmreward.robotics.cli import main
from mmreward.robotics.data.episodes import read_manifest

from test_diffusion_reward import frames
from test_pipeline_cli import CODEC, QUIET, VIDEO, synthetic_folder
from test_robotics_input_edges import fitted


def test_tilde_paths_work_in_every_command_of_the_chain(tmp_path, monkeypatch, capsys):
    """``--model "~/model"`` (quoted, or from a script: no shell expanded it) was "model folder '~/model'
    does not exist", while ``mmreward.load("~/model")`` opened it; ``--out "~/x"`` wrote into a folder
    literally named ``~`` in the working directory."""
    import mmreward
    from mmreward.core.inputs import Episode

    home, work = tmp_path / "home é", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    dr = fitted(noise=False)
    dr.save_pretrained(str(home / "model"))
    ep = frames(5, 1).numpy()
    np.savez(home / "ep.npz", frames=ep)
    capsys.readouterr()
    assert main(["score", "--model", "~/model", "~/ep.npz", "--json", "--out", "~/r.json", *QUIET]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = mmreward.load("~/model").score_parts([Episode(ep)])[0].tolist()
    assert doc["episodes"][0]["rewards"] == want
    assert json.load(open(home / "r.json")) == {"ep": want}
    assert not os.path.exists(work / "~")
    # --data (comma-separated) and --out of a trainer
    synthetic_folder(str(home / "data"))
    assert main(["train-codec", "--data", "~/data,", "--out", "~/codec", "--steps", "1", "--batch-size", "4",
                 "--eval-frames", "4", *CODEC, *QUIET]) == 0
    assert os.path.isfile(home / "codec" / "model" / "config.json") and not os.path.exists(work / "~")


def _claims_saved(out: str) -> bool:
    return any(line.startswith("saved") for line in out.splitlines())


def test_stop_at_then_resume_through_the_whole_model_chain(tmp_path, capsys):
    """``--stop-at`` printed "saved OUT/model" (train-codec, train-video) for a folder that was never
    written, and ``train-progress --stop-at --attach`` failed after its training ("the progress model
    has no expert statistics", exit 2); train-progress had no ``--save-every``."""
    data = synthetic_folder(str(tmp_path / "data"))
    codec, video, prog = (str(tmp_path / n) for n in ("codec", "video", "prog"))
    c_args = ["train-codec", "--data", data, "--out", codec, "--steps", "2", "--batch-size", "4", "--eval-frames", "4",
              *CODEC, *QUIET]
    assert main(c_args + ["--stop-at", "1"]) == 0
    out = capsys.readouterr().out
    assert "stopped at step 1 of 2" in out and "--resume" in out and not _claims_saved(out) and "PSNR" not in out
    assert not os.path.exists(os.path.join(codec, "model"))
    assert main(c_args + ["--resume"]) == 0 and os.path.isfile(os.path.join(codec, "model", "config.json"))
    capsys.readouterr()
    v_args = ["train-video", "--data", data, "--codec", codec, "--out", video, "--steps", "2", "--batch-size", "4",
              *VIDEO, *QUIET]
    assert main(v_args + ["--stop-at", "1"]) == 0
    out = capsys.readouterr().out
    assert "stopped at step 1 of 2" in out and "expert statistics not fitted" in out and not _claims_saved(out)
    assert main(v_args + ["--resume"]) == 0
    reward = os.path.join(video, "reward")
    p_args = ["train-progress", "--data", data, "--out", prog, "--steps", "4", "--save-every", "1", "--attach", video,
              *QUIET]
    capsys.readouterr()
    assert main(p_args + ["--stop-at", "2"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "stopped at step 2 of 4" in out and "(and attached)" in out and not _claims_saved(out)
    assert sorted(os.listdir(prog)).count("checkpoint-00000001") == 1  # --save-every 1: a snapshot every step
    assert not os.path.exists(os.path.join(prog, "reward")) and not os.path.exists(os.path.join(prog, "model"))
    assert main(p_args + ["--resume"]) == 0
    # the resumed ranker is the one an uninterrupted run trains; the attached copy scores with it
    straight = str(tmp_path / "straight")
    assert main(["train-progress", "--data", data, "--out", straight, "--steps", "4", "--attach", reward, *QUIET]) == 0
    from mmreward.robotics.reward import DiffusionReward

    a = DiffusionReward.from_pretrained(os.path.join(prog, "reward"))
    b = DiffusionReward.from_pretrained(os.path.join(straight, "reward"))
    fr = torch.from_numpy(np.load(os.path.join(data, "expert_0.npz"))["frames"])
    assert a.progress is not None and torch.equal(a(fr), b(fr))

    # fit-stats / train-video --rnd on 32 px episodes built a 64 px RND: the saved model scored nothing
    # ("frames must be 64x64 pixels, got 32x32"); the RND now takes the codec's frame size
    with_rnd = str(tmp_path / "with rnd")
    assert main(["fit-stats", "--data", data, "--codec", codec, "--video", video, "--out", with_rnd, "--rnd", "small",
                 "--skip-step", "4", *QUIET]) == 0
    capsys.readouterr()
    assert main(["score", "--model", with_rnd, os.path.join(data, "expert_0.npz"), "--json", *QUIET]) == 0, \
        capsys.readouterr().err
    assert len(json.loads(capsys.readouterr().out)["episodes"][0]["rewards"]) == 6
    from mmreward.robotics.reward import RND, RNDConfig

    with pytest.raises(ValueError, match=r"the RND takes 64px frames, the codec 32px"):
        DiffusionReward(a.codec, a.video, rnd=RND(RNDConfig()))


def test_a_killed_collection_keeps_the_episodes_it_finished(tmp_path, monkeypatch):
    """The manifest was written at the end of each task (or in a ``finally``): a collection killed
    mid-task (SIGKILL runs no ``finally``) left finished episode files no reader could see."""
    from mmreward.robotics import collect as collect_mod
    from mmreward.robotics import envs
    from mmreward.robotics.data.episodes import Episode

    class Env:
        suite, camera, flip, action_repeat = "metaworld", "corner", False, 2

        def close(self):
            pass

    listed = []

    def run_episode(env, **kw):
        path = tmp_path / "out" / "manifest.json"
        listed.append(len(read_manifest(str(tmp_path / "out"))) if path.exists() else 0)
        if len(listed) == 3:
            raise KeyboardInterrupt  # stands for the kill: what is listed by now is what survives one
        T = 4
        return Episode(frames=np.zeros((T, 8, 8, 3), np.uint8), actions=np.zeros((T - 1, 4), np.float32),
                       rewards=np.zeros(T - 1, np.float32), success=np.zeros(T - 1, bool))

    monkeypatch.setattr(envs, "make_env", lambda *a, **k: Env())
    monkeypatch.setattr(collect_mod, "run_episode", run_episode)
    with pytest.raises(KeyboardInterrupt):
        collect_mod.collect_episodes(["door-open-v3"], str(tmp_path / "out"), episodes=5, policy="random", size=8,
                                     progress=False)
    assert listed == [0, 1, 2]  # each finished episode was listed before the next one started


def test_a_training_run_killed_in_a_subprocess_resumes_to_the_end(tmp_path, capsys):
    """SIGKILL while train-codec writes snapshots: the folder has no model yet (the error said only "no
    model in RUN, RUN/model or RUN/reward"; it now says the run has not finished, or that a
    ``checkpoint-N`` folder is a snapshot), and ``--resume`` continues from the newest complete snapshot to the end,
    leaving no temporary folder behind; written files respect the umask."""
    data = synthetic_folder(str(tmp_path / "data é"))
    out = str(tmp_path / "run 运行")
    args = ["train-codec", "--data", data, "--out", out, "--batch-size", "4", "--eval-frames", "4", *CODEC, *QUIET]
    code = "import os, sys; os.umask(0o077); from mmreward.robotics.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, *args, "--steps", "100000", "--ckpt-every", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if len([n for n in os.listdir(out) if n.startswith("checkpoint-")] if os.path.isdir(out) else []) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    snaps = sorted(n for n in os.listdir(out) if n.startswith("checkpoint-"))
    assert snaps and not os.path.exists(os.path.join(out, "model"))
    assert os.stat(os.path.join(out, snaps[-1], "state.safetensors")).st_mode & 0o077 == 0  # umask 077
    capsys.readouterr()
    assert main(["score", "--model", out, os.path.join(data, "expert_0.npz"), *QUIET]) == 2
    err = capsys.readouterr().err
    assert "is a training run that has not finished" in err and "--resume" in err and "Traceback" not in err
    assert main(["score", "--model", os.path.join(out, snaps[-1]), os.path.join(data, "expert_0.npz"), *QUIET]) == 2
    assert f"is a training snapshot (step {int(snaps[-1].split('-')[1])} of the run in" in capsys.readouterr().err
    last = int(snaps[-1].split("-")[1])
    assert main(args + ["--steps", str(last + 1), "--resume"]) == 0
    rows = open(os.path.join(out, "metrics.csv")).read().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, last + 2))  # no step twice, none missing
    assert os.path.isfile(os.path.join(out, "model", "model.safetensors"))
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no half-written snapshot left

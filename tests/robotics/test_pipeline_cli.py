"""`mmreward robotics train-codec | train-video | fit-stats | score`: the Diffusion Reward pipeline
from the command line (tiny models, a few optimizer steps), save → load, resume, and the shipped
checkpoint."""
import glob
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mmreward.robotics.cli import main
from mmreward.robotics.data.episodes import Episode, episode_entry, load_episode, save_episode, update_manifest
from mmreward.robotics.pretrained import model_folder
from mmreward.robotics.reward import DiffusionReward


CODEC = ["--set", "channels=8,8,8,8", "--set", "latent_dim=8", "--set", "num_codes=16"]
VIDEO = ["--set", "dim=16", "--set", "depth=1", "--set", "heads=2", "--set", "context_dim=16", "--set", "num_steps=10",
         "--skip-step", "4"]
QUIET = ["--no-progress", "--threads", "1"]


def synthetic_folder(folder, n=2, T=6, size=32, policy="expert"):
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        base = rng.integers(0, 256, (1, size, size, 3))
        frames = np.clip(base + rng.integers(-20, 20, (T, size, size, 3)), 0, 255).astype(np.uint8)
        ep = Episode(frames=frames, actions=np.zeros((T - 1, 4), np.float32), rewards=np.zeros(T - 1, np.float32),
                     success=np.arange(T - 1) >= T - 3)
        name = f"{policy}_{i}.npz"
        save_episode(os.path.join(folder, name), ep)
        entries.append(episode_entry(name, ep, task="synthetic", policy=policy, noise=0.0, seed=i))
    update_manifest(folder, entries)
    return folder


def train_tiny(data, tmp, extra_video=()):
    codec, video = str(tmp / "codec"), str(tmp / "video")
    assert main(["train-codec", "--data", data, "--out", codec, "--steps", "3", "--batch-size", "4", *CODEC, *QUIET]) == 0
    assert main(["train-video", "--data", data, "--codec", codec, "--out", video, "--steps", "3", "--batch-size", "4",
                 *VIDEO, *extra_video, *QUIET]) == 0
    return codec, video


def test_pipeline_synthetic_end_to_end(tmp_path, capsys):
    data = synthetic_folder(str(tmp_path / "data"))
    synthetic_folder(data, n=1, policy="random")
    codec, video = train_tiny(data, tmp_path)
    out = capsys.readouterr().out
    assert "train-codec: 2 episodes, 12 frames" in out  # the random episode is not trained on
    assert "PSNR" in out and "expert statistics over 12 frames" in out
    for f in ("metrics.csv", "checkpoint-*", "model/config.json"):  # logs, a resumable snapshot, the model
        assert glob.glob(os.path.join(codec, f)) and glob.glob(os.path.join(video, f))
    reward_dir = os.path.join(video, "reward")
    assert model_folder(video, ("diffusion_reward",)) == reward_dir
    with pytest.raises(ValueError, match=r"^no 'rnd' model in .*/model or .*/reward; found .*\(vqgan\)"):
        model_folder(codec, ("rnd",))

    per_step, png = str(tmp_path / "r.csv"), str(tmp_path / "r.png")
    assert main(["score", "--model", video, data, "--json", "--out", per_step, "--plot", png, *QUIET]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["policy"] for e in doc["episodes"]] == ["expert", "expert", "random"]
    assert os.path.getsize(png) > 1000
    rows = open(per_step).read().splitlines()
    assert rows[0] == "episode,frame,reward" and len(rows) == 1 + 3 * 6

    # save -> load gives identical rewards, through the CLI and through the Python API
    model = DiffusionReward.from_pretrained(reward_dir)
    for e in doc["episodes"]:
        r = model(torch.from_numpy(load_episode(e["path"]).frames))
        assert r.tolist() == e["rewards"]
        assert e["total"] == pytest.approx(float(r.sum())) and e["mean"] == pytest.approx(float(r.mean()))
    model.save_pretrained(str(tmp_path / "copy"))
    again = DiffusionReward.from_pretrained(str(tmp_path / "copy"))
    fr = torch.from_numpy(load_episode(doc["episodes"][0]["path"]).frames)
    assert torch.equal(again(fr), model(fr))

    # text table; --success adds the sparse term on frames after a successful step
    assert main(["score", "--model", reward_dir, os.path.join(data, "expert_0.npz"), *QUIET]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["episode", "frames", "total", "mean"] and "expert_0" in table
    assert main(["score", "--model", reward_dir, os.path.join(data, "expert_0.npz"), "--success", "--json",
                 *QUIET]) == 0
    with_success = json.loads(capsys.readouterr().out)["episodes"][0]["rewards"]
    base = doc["episodes"][0]["rewards"]
    assert np.allclose(np.array(with_success) - np.array(base), [0, 0, 0, 0, 1, 1], atol=1e-5)


def test_fit_stats_command_matches_train_video(tmp_path, capsys):
    data = synthetic_folder(str(tmp_path / "data"))
    codec, video = train_tiny(data, tmp_path)
    out = str(tmp_path / "combined")
    assert main(["fit-stats", "--data", data, "--codec", codec, "--video", video, "--out", out, "--skip-step", "4",
                 *QUIET]) == 0
    a = DiffusionReward.from_pretrained(out)
    b = DiffusionReward.from_pretrained(os.path.join(video, "reward"))
    assert torch.equal(a.statistics, b.statistics)
    fr = torch.from_numpy(load_episode(os.path.join(data, "expert_1.npz")).frames)
    assert torch.equal(a(fr), b(fr))


def test_resume_and_errors(tmp_path, capsys):
    data = synthetic_folder(str(tmp_path / "data"))
    codec = str(tmp_path / "codec")
    args = ["train-codec", "--data", data, "--out", codec, "--batch-size", "4", *CODEC, *QUIET]
    assert main(args + ["--steps", "4", "--stop-at", "2"]) == 0
    assert main(args + ["--steps", "4"]) == 2  # a training state exists: --resume or --overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--steps", "4", "--resume"]) == 0
    rows = open(os.path.join(codec, "metrics.csv")).read().splitlines()
    assert rows[-1].startswith("4,")
    assert main(args + ["--steps", "2", "--overwrite"]) == 0

    video = str(tmp_path / "video")
    assert main(["train-video", "--data", data, "--codec", codec, "--out", video, "--steps", "4", "--stop-at", "2",
                 *VIDEO, *QUIET]) == 0
    assert "expert statistics not fitted" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(video, "reward"))

    assert main(["train-codec", "--data", data, "--out", str(tmp_path / "x"), "--policies", "noisy", *QUIET]) == 2
    assert "no episodes" in capsys.readouterr().err
    assert main(["train-codec", "--data", data, "--out", str(tmp_path / "x"), "--set", "nope=1", *QUIET]) == 2
    assert "no field 'nope'" in capsys.readouterr().err
    assert main(["score", "--model", codec, os.path.join(data, "expert_0.npz"), *QUIET]) == 2
    assert "diffusion_reward" in capsys.readouterr().err


def test_help_lists_model_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train-codec", "train-video", "fit-stats", "train-progress", "score", "train-rl"):
        assert cmd in out
    assert main(["train-video", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--codec", "--steps", "--warmup-steps", "--preset", "--resume", "--reward-type", "--reward-batch-size",
                 "--entropy-estimator", "--rnd", "--seed", "--device"):
        assert flag in out


def _shipped():
    from mmreward.robotics.pretrained import available

    return available()


@pytest.mark.skipif(not _shipped(), reason="no shipped checkpoint")
def test_reward_uses_shipped_checkpoint_by_default(tmp_path, capsys):
    from mmreward.robotics.pretrained import load_pretrained

    data = synthetic_folder(str(tmp_path / "data"), n=1, T=5, size=64)
    assert main(["score", data, "--json", *QUIET]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"].endswith("metaworld-64")
    r = load_pretrained()(torch.from_numpy(load_episode(doc["episodes"][0]["path"]).frames))
    assert r.tolist() == doc["episodes"][0]["rewards"]


_missing = [m for m in ("mujoco", "metaworld", "gymnasium") if importlib.util.find_spec(m) is None]


def _sim_problem():
    if _missing:
        return f"robotics extra not installed (missing {', '.join(_missing)})"
    from mmreward.robotics.envs.base import offscreen_render_problem

    return offscreen_render_problem()


needs_sim = pytest.mark.skipif(_sim_problem() is not None, reason=str(_sim_problem()))


@needs_sim
def test_pipeline_on_collected_episodes(tmp_path, capsys):
    data = str(tmp_path / "mw")
    assert main(["collect", "--tasks", "door-open-v3", "--episodes", "2", "--policy", "expert", "--size", "32",
                 "--max-steps", "5", "--out", data, "--no-progress"]) == 0
    codec, video = train_tiny(data, tmp_path)
    capsys.readouterr()
    assert main(["score", "--model", video, data, "--json", *QUIET]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["frames"] for e in doc["episodes"]] == [6, 6]
    assert all(e["task"] == "door-open-v3" for e in doc["episodes"])
    model = DiffusionReward.from_pretrained(os.path.join(video, "reward"))
    for e in doc["episodes"]:
        assert model(torch.from_numpy(load_episode(e["path"]).frames)).tolist() == e["rewards"]


@pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="opencv not installed")
def test_reward_scores_frame_folders_resized(tmp_path, capsys):
    import cv2

    data = synthetic_folder(str(tmp_path / "data"))
    codec, video = train_tiny(data, tmp_path)
    clip = tmp_path / "clip"
    clip.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        cv2.imwrite(str(clip / f"{i}.png"), rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    capsys.readouterr()
    assert main(["score", "--model", video, str(clip), "--json", *QUIET]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["episodes"][0]["name"] == "clip" and doc["episodes"][0]["frames"] == 4


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_cli_errors_are_one_line_naming_the_file_field_or_device(tmp_path, capsys):
    data = synthetic_folder(str(tmp_path / "data"), n=1)
    bad_device = "cuda:99" if torch.cuda.is_available() else "cuda"
    for cmd in (["score", os.path.join(data, "expert_0.npz")],
                ["train-rl", "--task", "metaworld/door-open-v3", "--out", str(tmp_path / "rl")],
                ["train-codec", "--data", data, "--out", str(tmp_path / "c")]):
        assert main([*cmd, "--device", bad_device]) == 2
        err = _one_line(capsys)
        assert f"device '{bad_device}'" in err and "corrupt" not in err and "--device cpu" in err

    ep = load_episode(os.path.join(data, "expert_0.npz"))
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, frames=ep.frames, actions=ep.actions, rewards=ep.rewards, success=ep.success.astype(np.float32),
             labelled=np.array(True))
    assert main(["score", bad, *QUIET]) == 2
    assert f"malformed episode file {bad}: success must be booleans" in _one_line(capsys)
    assert main(["fit-stats", "--data", data, "--codec", str(tmp_path / "nope"), "--video", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "o"), *QUIET]) == 2
    assert "nope' does not exist" in _one_line(capsys)
    assert main(["train-codec", "--data", data, "--out", str(tmp_path / "c"), "--set", "num_codes=many", *QUIET]) == 2
    assert "--set num_codes=: invalid int value: 'many'" in _one_line(capsys)
    assert main(["train-codec", "--data", str(tmp_path), "--out", str(tmp_path / "c"), *QUIET]) == 2
    assert f"no manifest.json in {tmp_path}" in _one_line(capsys)
    assert main(["score", os.path.join(data, "expert_0.npz"), "--no-progress", "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in _one_line(capsys)
    assert main(["score", os.path.join(data, "expert_0.npz"), "--no-progress", "--seed", "-1"]) == 2
    assert "--seed must be in [0, 2**32 - 1], got -1" in _one_line(capsys)
    assert main(["score", os.path.join(data, "expert_0.npz"), "--out", str(tmp_path / "r.txt"), *QUIET]) == 2
    assert "r.txt': use a .csv, .json, .npz file" in _one_line(capsys)


def test_same_seed_gives_bit_identical_models(tmp_path, capsys):
    data = synthetic_folder(str(tmp_path / "data"))
    codec, video = train_tiny(data, tmp_path)

    def fit(name, seed):  # the RND's initial weights come from --seed
        out = tmp_path / name
        assert main(["fit-stats", "--data", data, "--codec", codec, "--video", video, "--out", str(out), "--rnd",
                     "small", "--seed", str(seed), "--skip-step", "4", *QUIET]) == 0
        return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    a, b, c = fit("a", 3), fit("b", 3), fit("c", 4)
    assert a == b
    assert a[Path("rnd/model.safetensors")] != c[Path("rnd/model.safetensors")]
    assert DiffusionReward.from_pretrained(str(tmp_path / "a")).config.seed == 3  # and the chain noise's


def test_score_with_goal_frames_subtracts_the_scaled_goal_distance(tmp_path, capsys):
    """train-video's reward model carries goal statistics (episodes against the last frames of others of
    their task); `score --goal-scale γ --goal DEMO` subtracts γ·G/s_G per frame."""
    import numpy as np
    import torch

    from mmreward.robotics.data.episodes import load_episode_folder
    from mmreward.robotics.reward import DiffusionReward

    data = synthetic_folder(str(tmp_path / "data"))
    _, video = train_tiny(data, tmp_path)
    reward = DiffusionReward.from_pretrained(os.path.join(video, "reward"))
    assert int(reward.goal_statistics[1]) == 12  # fitted on the 12 training frames
    capsys.readouterr()
    assert main(["score", "--model", video, data, "--json", *QUIET]) == 0
    plain = json.loads(capsys.readouterr().out)["episodes"]
    assert main(["score", "--model", video, data, "--json", "--goal-scale", "2", "--goal", data, *QUIET]) == 0
    captured = capsys.readouterr()
    with_goal = json.loads(captured.out)["episodes"]
    assert "goal: the last frames of 2 episodes" in captured.err
    eps = [torch.from_numpy(ep.frames) for _, ep in load_episode_folder(data, None, ["all"])]
    reward.set_goal(torch.stack([e[-1] for e in eps]))
    for e, a, b in zip(eps, plain, with_goal):
        d = reward.goal_distance(reward.tokenize(e)).numpy() / float(reward.goal_statistics[0])
        np.testing.assert_allclose(np.array(b["rewards"]), np.array(a["rewards"]) - 2.0 * d, atol=1e-4)
    assert main(["score", "--model", video, data, "--goal-scale", "2", *QUIET]) == 2  # no goal frames
    assert "give --goal" in capsys.readouterr().err
    # the displacement from each episode's first frame: train-video fitted its statistics with the others
    assert int(reward.displacement_statistics[1]) == 12
    assert main(["score", "--model", video, data, "--json", "--displacement-scale", "1.5", *QUIET]) == 0
    moved = json.loads(capsys.readouterr().out)["episodes"]
    for e, a, b in zip(eps, plain, moved):
        p = reward.displacement(reward.tokenize(e)).numpy() / float(reward.displacement_statistics[0])
        np.testing.assert_allclose(np.array(b["rewards"]), np.array(a["rewards"]) + 1.5 * p, atol=1e-4)
    assert main(["score", "--model", video, data, "--json", "--displacement-scale", "1.5", "--displacement-cap", "0.5",
                 *QUIET]) == 0
    capped = json.loads(capsys.readouterr().out)["episodes"]
    for e, a, b in zip(eps, plain, capped):
        p = reward.displacement(reward.tokenize(e)).numpy() / float(reward.displacement_statistics[0])
        np.testing.assert_allclose(np.array(b["rewards"]), np.array(a["rewards"]) + 1.5 * np.minimum(p, 0.5), atol=1e-4)
    assert main(["score", "--model", video, data, "--displacement-cap", "0", *QUIET]) == 2
    assert "--displacement-cap must be" in capsys.readouterr().err
    assert main(["score", "--model", video, data, "--displacement-scale", "-1", *QUIET]) == 2
    err = capsys.readouterr().err
    assert "--displacement-scale" in err and len(err.strip().splitlines()) == 1
    # the motion consistency (frames only, at the video model's frame skip), its statistics fitted with the others
    assert int(reward.consistency_statistics[1]) == 12
    assert main(["score", "--model", video, data, "--json", "--consistency-scale", "3", *QUIET]) == 0
    consistent = json.loads(capsys.readouterr().out)["episodes"]
    for e, a, b in zip(eps, plain, consistent):
        c = reward.frame_consistency(e).numpy() / float(reward.consistency_statistics[0])
        np.testing.assert_allclose(np.array(b["rewards"]), np.array(a["rewards"]) + 3.0 * c, atol=1e-4)
    assert main(["score", "--model", video, data, "--consistency-scale", "inf", *QUIET]) == 2
    err = capsys.readouterr().err
    assert "--consistency-scale" in err and len(err.strip().splitlines()) == 1


def _fake_run(folder, model_type, sub="model"):
    """A training-run folder as the commands see it (model_folder reads config.json alone): a snapshot,
    logs and ``sub``/config.json. Nothing here loads; the commands must refuse before loading."""
    os.makedirs(os.path.join(folder, "checkpoint-00000003"))
    Path(folder, "metrics.csv").write_text("step,loss\n3,0.5\n")
    os.makedirs(os.path.join(folder, sub))
    Path(folder, sub, "config.json").write_text(json.dumps({"model_type": model_type}))
    return str(folder)


def test_output_files_that_are_folders_are_refused_before_the_work(tmp_path, capsys):
    """A folder given as --out / --plot / --json ran to the end, then IsADirectoryError lost the results."""
    folder = str(tmp_path / "results")
    os.makedirs(folder)
    for cmd, flag in ((["score", str(tmp_path / "none.npz"), "--plot", folder], "--plot"),
                      (["score", str(tmp_path / "none.npz"), "--out", folder + ".csv"], "--out"),
                      (["eval-rl", "--run", str(tmp_path / "none"), "--json", folder], "--json"),
                      (["eval-expert", "--model", str(tmp_path / "none"), "--json", folder], "--json")):
        if flag == "--out":
            os.makedirs(folder + ".csv", exist_ok=True)
        assert main(cmd) == 2, cmd
        err = _one_line(capsys)
        assert f"{flag} '{folder}" in err and "is a folder: name a file" in err, err


def test_a_model_is_never_saved_over_the_folders_it_came_from(tmp_path, capsys):
    """Saving swaps the new model in place of its folder: over a training run's folder it removed the
    run's snapshots, logs and model."""
    data = str(tmp_path / "data")
    os.makedirs(data)  # never read: the commands refuse first
    codec = _fake_run(tmp_path / "codec", "vqgan")
    video = _fake_run(tmp_path / "video", "vq_diffusion")
    reward = _fake_run(tmp_path / "reward", "diffusion_reward")
    run = str(tmp_path / "run")
    cases = [
        (["fit-stats", "--data", data, "--codec", codec, "--video", video, "--out", codec], "--out", "--codec"),
        (["fit-stats", "--data", data, "--codec", codec, "--video", video, "--out", os.path.join(codec, "model")],
         "--out", "--codec"),
        (["fit-stats", "--data", data, "--codec", codec, "--video", video, "--out", str(tmp_path)], "--out", "--codec"),
        (["fit-stats", "--data", data, "--codec", codec, "--video", video, "--out", data + "/"], "--out", "--data"),
        (["train-video", "--data", data, "--codec", codec, "--out", video, "--reward-out", video], "--reward-out",
         "--out"),
        (["train-progress", "--data", data, "--out", run, "--attach", reward, "--attach-out", run], "--attach-out",
         "--out"),
        (["train-progress", "--data", data, "--out", run, "--attach", reward, "--attach-out", reward],
         "--attach-out", "--attach"),
    ]
    for cmd, flag, source in cases:
        assert main([*cmd, *QUIET]) == 2, cmd
        err = _one_line(capsys)
        assert f"{flag} " in err and f"is or holds the {source} folder" in err and "would replace it" in err, err
    for folder in (codec, video, reward):  # all still there
        assert sorted(os.listdir(folder)) == ["checkpoint-00000003", "metrics.csv", "model"]


def test_bad_settings_are_refused_before_training(tmp_path, capsys, monkeypatch):
    """--eval-frames -1 silently used all but one frame and 0 failed after training; train-progress
    checked --attach's frame size and --progress-scale only after training, and ignored --progress-scale /
    --attach-out without --attach; --data d,d/ counted d's episodes twice."""
    import mmreward.robotics.codec.vqgan as vqgan
    import mmreward.robotics.reward.progress as progress

    def no_training(*args, **kw):
        raise AssertionError("training started")

    monkeypatch.setattr(vqgan, "train_vqgan", no_training)
    monkeypatch.setattr(progress, "train_progress", no_training)
    data = synthetic_folder(str(tmp_path / "data"))  # 32x32 frames
    out = str(tmp_path / "out")
    cases = [
        (["train-codec", "--data", data, "--out", out, "--eval-frames", "-1"], "--eval-frames must be >= 1, got -1"),
        (["train-codec", "--data", data, "--out", out, "--eval-frames", "0"], "--eval-frames must be >= 1, got 0"),
        (["train-codec", "--data", f"{data},{data}/", "--out", out], f"--data names the folder {data} twice"),
        (["train-progress", "--data", data, "--out", out, "--progress-scale", "2"],
         "--progress-scale applies to the model saved with --attach"),
        (["train-progress", "--data", data, "--out", out, "--attach-out", str(tmp_path / "r")],
         "--attach-out applies to the model saved with --attach"),
        (["train-progress", "--data", data, "--out", out, "--attach", "metaworld-64", "--progress-scale", "nan"],
         "progress_scale must be a finite number, got nan"),
        (["train-progress", "--data", data, "--out", out, "--attach", "metaworld-64"],
         "--attach 'metaworld-64' takes 64x64 frames but the --data episodes are 32x32"),
    ]
    for cmd, message in cases:
        assert main([*cmd, *QUIET]) == 2, cmd
        assert message in _one_line(capsys), cmd
    assert not os.path.exists(out)

"""Evaluating a trained pixel agent on held-out scenes (``eval-rl`` / ``evaluate_run``): the Adroit
progress measures agree with the environment (door angle ≥ 1.35 exactly when it reports success,
the shipped expert's palm reaches the handle), a tiny Adroit run evaluates deterministically from
its snapshots, and bad input is one clear error."""
import json

import numpy as np
import pytest

from mmreward.robotics.envs.base import offscreen_render_problem, setup_mujoco_gl

setup_mujoco_gl()
pytest.importorskip("gymnasium_robotics")
_why = offscreen_render_problem()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"no offscreen rendering: {_why}")

from mmreward.robotics.envs import make_env  # noqa: E402
from mmreward.robotics.envs.adroit import progress_measures  # noqa: E402
from mmreward.robotics.rl import DrQV2Config, RLConfig, train_rl  # noqa: E402
from mmreward.robotics.rl.evaluate import evaluate_run  # noqa: E402


def test_door_progress_measures_follow_the_environment():
    """The shipped door expert on a scene it opens: the hinge angle crosses 1.35 at the step the env
    reports success, the palm ends far closer to the handle than it starts."""
    from mmreward.robotics.collect import _trained_experts, rollout

    env = make_env("adroit-door", size=32, action_repeat=2, seed=0)
    try:
        expert = _trained_experts(["adroit-door"], "expert", None, 2)["adroit-door"][0]
        angles, dists = [], []

        def act(obs, t):
            m = progress_measures(env, "adroit-door")
            angles.append(m["door_angle"])
            dists.append(m["approach_distance"])
            return expert.act(obs)

        ep = rollout(env, act, seed=0)
        last = progress_measures(env, "adroit-door")
    finally:
        env.close()
    after = np.asarray(angles[1:] + [last["door_angle"]])  # the angle after each step
    assert ep.success.any(), "the shipped expert opens the door of scene 0"
    np.testing.assert_array_equal(after >= 1.35, ep.success)
    assert dists[0] > 0.2 and min(dists) < 0.5 * dists[0]
    assert progress_measures(object(), "adroit-door") == {}  # not an Adroit env: no measures


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rl") / "run"
    train_rl(RLConfig(task="adroit/door", reward="sparse", out=str(out), num_train_frames=40, num_seed_frames=20,
                      eval_every_frames=1000, num_eval_episodes=1, episode_steps=10, batch_size=8,
                      snapshot_every_frames=20, save_video=False, tensorboard=False, quiet=True, size=32),
             DrQV2Config(hidden_dim=32, feature_dim=16, num_expl_steps=10))
    return str(out)


def test_evaluate_run_reports_success_return_and_progress(tiny_run):
    r = evaluate_run(tiny_run, episodes=3, seed=1)
    assert r["frame"] == 40 and r["task"] == "adroit-door" and r["reward"] == "sparse" and r["episodes"] == 3
    assert r["seeds"] == [1_500_001_000, 1_500_001_002] and len(r["per_episode"]) == 3
    assert 0 <= r["success_rate"] <= 1 and r["success_rate_ci95"][0] <= r["success_rate"] <= r["success_rate_ci95"][1]
    for key in ("episode_return", "start_approach_distance", "min_approach_distance", "mean_approach_distance",
                "max_door_angle"):
        lo, hi = r[key]["ci95"]
        assert lo <= r[key]["mean"] <= hi, key
    for row in r["per_episode"]:
        assert 0 < row["min_approach_distance"] <= row["mean_approach_distance"] and row["max_door_angle"] < 1.35
    again = evaluate_run(tiny_run, episodes=3, seed=1)
    assert again["per_episode"] == r["per_episode"]  # deterministic policy, same scenes
    older = evaluate_run(tiny_run, episodes=1, seed=1, frame=20)
    assert older["frame"] == 20


def test_cli_eval_rl_and_errors(tiny_run, tmp_path, capsys):
    from mmreward.robotics.cli import main

    path = tmp_path / "eval.json"
    assert main(["eval-rl", "--run", tiny_run, "--episodes", "2", "--json", str(path), "--threads", "1"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads(path.read_text())
    assert printed["episodes"] == 2 and "per_episode" not in printed and len(saved["per_episode"]) == 2
    for argv, message in ((["--run", str(tmp_path / "none")], "train_config.json"),
                          (["--run", tiny_run, "--frame", "7"], "no snapshot at frame 7"),
                          (["--run", tiny_run, "--episodes", "0"], "episodes must be >= 1")):
        assert main(["eval-rl", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_adroit_rl_benchmark_pairs_seeds_and_adds_reference_policies(tmp_path):
    """bench_adroit_rl.py on two tiny seeds per setting: per-seed held-out figures, paired differences
    with intervals, and the expert / random references on the same scenes."""
    from helpers import load_script

    for seed in (1, 2):
        for name in ("sparse", "learned"):
            train_rl(RLConfig(task="adroit/door", reward="sparse", out=str(tmp_path / f"seed{seed}" / name), seed=seed,
                              num_train_frames=20, num_seed_frames=20, eval_every_frames=1000, num_eval_episodes=1,
                              episode_steps=10, batch_size=8, snapshot_every_frames=0, save_video=False,
                              tensorboard=False, quiet=True, size=32),
                     DrQV2Config(hidden_dim=32, feature_dim=16, num_expl_steps=10))
    bench = load_script("benchmarks/bench_adroit_rl.py")
    out = tmp_path / "r.json"
    assert bench.main(["--runs", str(tmp_path), "--seeds", "1", "2", "--learned", "learned", "--episodes", "2",
                       "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["summary"]["sparse"]["episodes"] == 4 and set(doc["summary"]["learned"]["per_seed"]) == {"1", "2"}
    d = doc["paired_learned_minus_sparse"]["mean_approach_distance"]
    assert len(d["diffs"]) == 2 and d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    ref = doc["references"]
    assert ref["expert"]["mean_approach_distance"] < ref["random"]["mean_approach_distance"]
    assert ref["expert"]["max_door_angle"] > ref["random"]["max_door_angle"]


def test_pixel_adroit_steps_with_the_dapg_reward_and_a_run_keeps_it(tmp_path):
    """``reward="dapg"`` on a pixel Adroit env pays DAPG's approach sign (dense − 0.2·‖palm − handle‖
    per step; the pen's reward unchanged); ``train-rl --reward dapg`` trains on it and ``eval-rl``
    reports the return it trained on; Meta-World refuses it."""
    import shutil

    from mmreward.robotics.envs.adroit import approach_distance
    from mmreward.robotics.rl.rewards import make_reward_source

    rng = np.random.default_rng(0)
    with make_env("adroit-door", size=32, seed=0) as dense, make_env("adroit-door", size=32, seed=0,
                                                                     reward="dapg") as dapg:
        dense.reset(seed=4), dapg.reset(seed=4)
        for _ in range(3):
            a = rng.uniform(-1, 1, 28).astype(np.float32)
            r_dense, r_dapg = dense.step(a).reward, dapg.step(a).reward
            assert r_dapg == pytest.approx(r_dense - 0.2 * approach_distance(dapg.env.unwrapped, "adroit-door"))
    with make_env("adroit-pen", size=32, seed=0) as dense, make_env("adroit-pen", size=32, seed=0, reward="dapg") as dapg:
        dense.reset(seed=1), dapg.reset(seed=1)
        a = np.zeros(dense.action_dim, np.float32)
        assert dapg.step(a).reward == dense.step(a).reward
    with pytest.raises(ValueError, match="applies to Adroit tasks"):
        make_env("door-open-v3", size=32, reward="dapg")
    with pytest.raises(ValueError, match="applies to Adroit tasks"):
        make_reward_source("dapg", task="door-open-v3")
    with pytest.raises(ValueError, match="applies to the learned reward sources"):
        make_reward_source("dapg", task="adroit-door", shaping="potential")

    run = tmp_path / "run"
    train_rl(RLConfig(task="adroit/door", reward="dapg", out=str(run), num_train_frames=20, num_seed_frames=20,
                      eval_every_frames=1000, num_eval_episodes=1, episode_steps=10, batch_size=8,
                      save_video=False, tensorboard=False, quiet=True, size=32),
             DrQV2Config(hidden_dim=32, feature_dim=16, num_expl_steps=10))
    as_dense = tmp_path / "as_dense"
    shutil.copytree(run, as_dense)
    saved = json.loads((as_dense / "train_config.json").read_text())
    saved["config"]["reward"] = "dense"
    (as_dense / "train_config.json").write_text(json.dumps(saved))
    r_dapg, r_dense = evaluate_run(str(run), episodes=2), evaluate_run(str(as_dense), episodes=2)
    assert r_dapg["reward"] == "dapg"
    for a, b in zip(r_dapg["per_episode"], r_dense["per_episode"]):  # the same motion, paid with DAPG's sign
        assert a["min_approach_distance"] == b["min_approach_distance"]
        assert a["episode_return"] < b["episode_return"] - 0.2 * a["min_approach_distance"] * 10  # >= 20 env steps


def test_eval_rl_on_a_damaged_or_foreign_run_folder_names_the_file(tmp_path, capsys):
    """A train-codec / train-progress run or a damaged train_config.json gave "missing key 'config'" or
    a bare JSON error."""
    from mmreward.robotics.cli import main

    cases = {"codec": ('{"steps": 3, "config_class": "VQGANTrainConfig", "settings": {}}',
                       "does not hold a train-rl run's settings (those of a VQGANTrainConfig run"),
             "progress": ('{"steps": 30, "seed": 0}', "does not hold a train-rl run's settings (no 'config' and 'agent' "
                                                      "objects; it has ['seed', 'steps'])"),
             "cut": ('{"config": {"task": "metaworld/door-op', "is damaged: not valid JSON"),
             "list": ("[1, 2]", "it has list"),
             "other": ('{"config": {"tasks": 1}, "agent": {}}', "its 'config' settings do not fit RLConfig")}
    for name, (text, message) in cases.items():
        run = tmp_path / name
        run.mkdir()
        (run / "train_config.json").write_text(text)
        assert main(["eval-rl", "--run", str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{run / 'train_config.json'}" in err[0] and message in err[0], err


@pytest.mark.parametrize("kw", [dict(episodes=2.5), dict(seed="1"), dict(frame=4.0), dict(episodes=True)])
def test_evaluate_run_counts_must_be_integers(tmp_path, kw):
    """Before: episodes=2.5 failed in range() with a TypeError naming nothing (after the run folder was read)."""
    (name, value), = kw.items()
    with pytest.raises(ValueError, match=f"{name} must be an integer >= ., got {value!r}"):
        evaluate_run(str(tmp_path), **kw)

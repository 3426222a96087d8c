"""The visual-RL workspace on real Meta-World: a smoke run with the shipped Diffusion Reward that
trains, evaluates, writes a video, snapshots and resumes; exact resume; reward sources; gym ids."""
import json
import os
import types

import numpy as np
import pytest
import torch

from mmreward.robotics.envs.base import offscreen_render_problem, setup_mujoco_gl  # noqa: E402

setup_mujoco_gl()  # before metaworld imports mujoco (when this file runs alone)
pytest.importorskip("metaworld")

_why = offscreen_render_problem()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"no offscreen rendering: {_why}")

from mmreward.robotics.rl import DrQV2Config, RLConfig, Workspace, make_reward_source, parse_task, train_rl  # noqa: E402

TINY_AGENT = dict(hidden_dim=32, feature_dim=16, num_expl_steps=20)


def _cfg(out, **kw):
    base = dict(task="metaworld/door-open-v3", reward="sparse", out=str(out), num_train_frames=80,
                num_seed_frames=20, eval_every_frames=1000, num_eval_episodes=1, episode_steps=20, batch_size=8,
                snapshot_every_frames=0, save_video=False, tensorboard=False, quiet=True, size=32)
    base.update(kw)
    return RLConfig(**base)


def _snapshot(out):
    from mmreward.core.checkpoint import Snapshots

    return Snapshots(str(out)).load_latest()[2]


def _weights(out):
    return _snapshot(out)["agent"]


def test_exact_resume_and_same_seed_same_evaluation(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    full = train_rl(_cfg(a), DrQV2Config(**TINY_AGENT))
    half = train_rl(_cfg(b, num_train_frames=40), DrQV2Config(**TINY_AGENT))
    assert half["frames"] == 40
    rest = train_rl(_cfg(b), DrQV2Config(**TINY_AGENT))  # resumes from b/snapshot
    assert rest["frames"] == full["frames"] == 80 and rest["episodes"] == 2
    wa, wb = _weights(a), _weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    assert full["episode_return"][0] == rest["episode_return"][0]  # same seed, same first evaluation
    # the episodes live in <out>/replay, each written once; the snapshot lists them without frames
    assert sorted(os.listdir(b / "replay")) == ["episode_0000000.npz", "episode_0000001.npz"]
    assert set(_snapshot(b)["replay"]) == {"store", "rng"}
    assert sorted(n for n in os.listdir(b) if n.startswith("checkpoint-")) == [
        "checkpoint-00000040", "checkpoint-00000080"]  # the newest two, each one unit
    # the resumed run's logs continue the first half's rows
    rows = open(b / "train.csv").read().strip().splitlines()
    assert len(rows) == 1 + 2 and rows[1].split(",")[0] == "40" and rows[2].split(",")[0] == "80"


def test_smoke_run_with_the_shipped_diffusion_reward(tmp_path):
    """A few hundred frames: trains (updates happen), evaluates, writes an annotated mp4 and the
    learning curves, snapshots, and continues from the snapshot when asked for more frames."""
    out = tmp_path / "dr"
    cfg = _cfg(out, reward="diffusion", size=64, num_train_frames=80, eval_every_frames=40, save_video=True,
               tensorboard=True, rnd_update_interval=10)
    s = train_rl(cfg, DrQV2Config(**TINY_AGENT))
    assert s["frames"] == 80 and s["eval_frames"] == [0, 40, 80]
    rows = [r.split(",") for r in open(out / "train.csv").read().splitlines()]
    head = rows[0]
    assert "critic_loss" in head and "rnd_loss" in head and "buffer_mb" in head
    rewards = [float(r[head.index("episode_reward")]) for r in rows[1:]]
    assert all(np.isfinite(rewards)) and len(set(rewards)) == len(rewards)  # learned, episode-specific
    videos = sorted(os.listdir(out / "eval_videos"))
    assert len(videos) == 3 and os.path.getsize(out / "eval_videos" / videos[0]) > 1000
    from mmreward.robotics.data.video import read_video

    v = read_video(str(out / "eval_videos" / videos[0]))
    assert v.shape == (21, 168, 128, 3)  # 20 steps + reset frame, 2x frames + reward strip
    assert (out / "curves.png").stat().st_size > 5000 and os.path.isdir(out / "tb")
    run = json.load(open(out / "train_config.json"))  # the reward's effective settings, not only the flags
    assert run["config"]["expl_scale"] is None and run["reward_model"]["expl_scale"] == 0.95
    assert run["reward_model"]["reward_type"] == "entropy"
    s2 = train_rl(_cfg(out, reward="diffusion", size=64, num_train_frames=120, eval_every_frames=40,
                       tensorboard=False, rnd_update_interval=10), DrQV2Config(**TINY_AGENT))
    assert s2["frames"] == 120 and s2["episodes"] == 3 and s2["eval_frames"] == [0, 40, 80, 120]


def test_eval_every_zero_evaluates_before_training_and_at_the_end(tmp_path):
    assert train_rl(_cfg(tmp_path / "a", eval_every_frames=0), DrQV2Config(**TINY_AGENT))["eval_frames"] == [0, 80]
    assert train_rl(_cfg(tmp_path / "b", eval_every_frames=1), DrQV2Config(**TINY_AGENT))["eval_frames"] == [0, 40, 80]


def test_a_used_folder_needs_resume_or_overwrite(tmp_path):
    train_rl(_cfg(tmp_path, num_train_frames=80), DrQV2Config(**TINY_AGENT))
    assert len(os.listdir(tmp_path / "replay")) == 2
    with pytest.raises(ValueError, match="holds a training run.*overwrite"):
        Workspace(_cfg(tmp_path, resume=False), DrQV2Config(**TINY_AGENT))
    ws = Workspace(_cfg(tmp_path, resume=False, overwrite=True), DrQV2Config(**TINY_AGENT))
    try:  # before the new run writes anything, the old run's state is gone, not half-overwritten later
        assert not [n for n in os.listdir(tmp_path) if n.startswith("checkpoint-")]
        assert not (tmp_path / "replay").exists() and not (tmp_path / "train.csv").exists()
    finally:
        ws.close()


class StubEnv:
    """A pixel env's shape where the workspace reads it (fast: no MuJoCo); close() drops the wrapped
    env as theirs does."""
    action_space = types.SimpleNamespace(low=-np.ones(4), high=np.ones(4))
    action_dim = 4

    def __init__(self, max_steps=None):
        self.env, self.max_steps = object(), max_steps or 500

    def close(self):
        self.env = None


def test_an_nstep_longer_than_the_episodes_is_refused(tmp_path, monkeypatch):
    """Training "finished" without a single agent update: no episode held an n-step return."""
    import mmreward.robotics.envs as envs

    made = []
    monkeypatch.setattr(envs, "make_env", lambda *a, **kw: made.append(StubEnv(kw["max_steps"])) or made[-1])
    with pytest.raises(ValueError, match=r"nstep \(3\) is longer than an episode of door-open-v3 \(2 agent steps\)"):
        Workspace(_cfg(tmp_path, episode_steps=2, nstep=3), DrQV2Config(**TINY_AGENT))
    assert len(made) == 2 and all(env.env is None for env in made)  # and the environments are closed


def test_a_reward_that_fails_to_build_closes_both_environments(tmp_path, monkeypatch):
    import mmreward.robotics.envs as envs
    from mmreward.robotics.rl import workspace

    made = []

    def recording_make_env(*args, **kw):
        made.append(StubEnv(kw["max_steps"]))
        return made[-1]

    def failing_reward(*args, **kw):
        raise RuntimeError("reward checkpoint unreadable")

    monkeypatch.setattr(envs, "make_env", recording_make_env)
    monkeypatch.setattr(workspace, "make_reward_source", failing_reward)
    with pytest.raises(RuntimeError, match="reward checkpoint unreadable"):
        Workspace(_cfg(tmp_path), DrQV2Config(**TINY_AGENT))
    assert len(made) == 2 and all(env.env is None for env in made)  # close() drops the wrapped env


def test_snapshot_from_other_agent_settings_is_refused(tmp_path):
    train_rl(_cfg(tmp_path, num_train_frames=40), DrQV2Config(**TINY_AGENT))
    with pytest.raises(ValueError, match="other settings.*agent.hidden_dim: saved 32, now 64"):
        Workspace(_cfg(tmp_path), DrQV2Config(**{**TINY_AGENT, "hidden_dim": 64}))


def test_reward_sources(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (11, 64, 64, 3), dtype=np.uint8)
    env_r, succ = np.linspace(0, 1, 10).astype(np.float32), np.array([0] * 7 + [1] * 3, bool)
    np.testing.assert_array_equal(make_reward_source("sparse")(frames, env_r, succ), succ.astype(np.float32))
    np.testing.assert_array_equal(make_reward_source("dense")(frames, env_r, succ), env_r)
    cal = make_reward_source(lambda f: np.arange(len(f), dtype=np.float32))
    np.testing.assert_array_equal(cal(frames, env_r, succ), np.arange(1, 11, dtype=np.float32))
    with pytest.raises(ValueError, match="returned 3 values"):
        make_reward_source(lambda f: np.zeros(3))(frames, env_r, succ)
    with pytest.raises(ValueError, match="unknown reward source"):
        make_reward_source("dreamer")
    with pytest.raises(ValueError, match="64x64 frames"):
        make_reward_source("diffusion", size=32)
    rnd = make_reward_source("rnd")
    r = rnd(frames, env_r, succ)
    assert r.shape == (10,) and np.isfinite(r).all() and rnd.update_interval == 100
    assert "rnd_loss" in rnd.update(torch.from_numpy(frames))
    # a mode the shipped checkpoint has no statistics for gets them fitted on scripted experts
    from mmreward.robotics.pretrained import load_pretrained

    shipped_model = load_pretrained()
    shipped = shipped_model.config.reward_type
    own = {"entropy": "diffusion", "likelihood": "diffusion-likelihood", "relative_likelihood": "diffusion-relative"}
    same = make_reward_source(own[shipped])  # the shipped mode keeps the shipped statistics
    assert same.model.config.reward_type == shipped
    assert torch.equal(same.model.statistics, shipped_model.statistics)
    clipped = make_reward_source(own[shipped], expl_scale=0.0, reward_clip=-0.5)
    unclipped = make_reward_source(own[shipped], expl_scale=0.0)
    rc, ru = clipped(frames, env_r, succ), unclipped(frames, env_r, np.zeros_like(succ))
    assert rc.min() >= -0.5 - 1e-6 and ru.min() < -0.5  # random frames: the unclipped reward goes lower
    with pytest.raises(ValueError, match="clip_min"):
        make_reward_source(own[shipped], reward_clip=float("nan"))
    weighted = make_reward_source(own[shipped], expl_scale=0.0, reward_clip=-0.5, success_scale=10.0)
    np.testing.assert_allclose(weighted(frames, env_r, succ), rc + 9.0 * succ.astype(np.float32), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="success_scale"):
        make_reward_source(own[shipped], success_scale=-2.0)
    # potential-based shaping: γ·Φ(next) − Φ(frame) + success with Φ the learned reward of each frame
    shaped = make_reward_source(own[shipped], expl_scale=0.0, reward_clip=-0.5, shaping="potential", discount=0.9)
    phi = shaped.model(torch.from_numpy(frames)).float().numpy()  # [T+1]
    rs = shaped(frames, env_r, succ)
    np.testing.assert_allclose(rs, 0.9 * phi[1:] - phi[:-1] + succ, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rc, phi[1:] + succ, rtol=1e-5, atol=1e-5)  # the unshaped source pays Φ(next)
    disc = 0.9 ** np.arange(len(rs))  # the discounted shaping sum telescopes to γ^T Φ_T − Φ_0
    assert float(((rs - succ) * disc).sum()) == pytest.approx(0.9 ** len(rs) * phi[-1] - phi[0], abs=1e-4)
    with pytest.raises(ValueError, match="shaping must be one of"):
        make_reward_source(own[shipped], shaping="telescoping")
    with pytest.raises(ValueError, match="applies to the learned reward sources"):
        make_reward_source("sparse", shaping="potential")
    other = "diffusion" if shipped == "likelihood" else "viper"
    src = make_reward_source(other, task="door-open-v3", max_steps=6, stats_episodes=2, expl_scale=0.3)
    assert src.model.config.reward_type != shipped and src.model.config.expl_scale == 0.3
    assert int(src.model.statistics[2]) == 2 * 7
    rv = src(frames, env_r, succ)
    assert rv.shape == (10,) and np.isfinite(rv).all()
    viper = make_reward_source("viper", task="door-open-v3", max_steps=6, stats_episodes=2)
    assert viper.model.config.reward_type == "likelihood" and viper.model.config.expl_scale == 0.5
    with pytest.raises(ValueError, match="expl_scale"):
        make_reward_source("diffusion", expl_scale=1.5)
    # the goal distance: goals are the last frames of the scripted experts its statistics are fitted on
    goal = make_reward_source(own[shipped], task="door-open-v3", max_steps=6, stats_episodes=2, expl_scale=0.0,
                              goal_scale=2.0)
    m = goal.model
    assert m.goal_tokens.shape[0] == 2 and int(m.goal_statistics[1]) == 2 * 7 and m.config.goal_scale == 2.0
    d = m.goal_distance(m.tokenize(torch.from_numpy(frames[1:]))).numpy()
    np.testing.assert_allclose(goal(frames, env_r, succ), ru - 2.0 * d / float(m.goal_statistics[0]) + succ,
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="goal_scale"):
        make_reward_source(own[shipped], goal_scale=-1.0)
    # diffusion-goal: diffusion-progress with γ 1, δ 4, cap 3 unless given
    kw = dict(task="door-open-v3", max_steps=6, stats_episodes=2, expl_scale=0.0)
    rule = make_reward_source("diffusion-goal", **kw)
    c = rule.model.config
    assert (c.goal_scale, c.displacement_scale, c.displacement_cap) == (1.0, 4.0, 3.0) and rule.model.progress is not None
    spelled = make_reward_source("diffusion-progress", goal_scale=1.0, displacement_scale=4.0, displacement_cap=3.0, **kw)
    np.testing.assert_allclose(rule(frames, env_r, succ), spelled(frames, env_r, succ), rtol=1e-5, atol=1e-5)
    assert make_reward_source("diffusion-goal", goal_scale=2.0, displacement_cap=1.0, **kw).model.config.goal_scale == 2.0
    # the displacement from the reset frame (frames[0]) and the motion consistency: their statistics fitted on
    # the experts when the checkpoint has none (a folder saved before both terms)
    unfitted = load_pretrained()
    unfitted.displacement_statistics[1] = unfitted.consistency_statistics[1] = 0
    unfitted.save_pretrained(str(tmp_path / "old"))
    moved = make_reward_source(own[shipped], checkpoint=str(tmp_path / "old"), task="door-open-v3", max_steps=6,
                               stats_episodes=2, expl_scale=0.0, displacement_scale=1.5)
    m = moved.model
    assert m.config.displacement_scale == 1.5 and int(m.displacement_statistics[1]) == 2 * 7
    tok = m.tokenize(torch.from_numpy(frames))
    p = (tok != tok[0]).float().mean(1)[1:].numpy()
    np.testing.assert_allclose(moved(frames, env_r, succ), ru + 1.5 * p / float(m.displacement_statistics[0]) + succ,
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="displacement_scale"):
        make_reward_source(own[shipped], displacement_scale=float("nan"))
    # displacement_cap bounds P/s_P before δ
    capped = make_reward_source(own[shipped], checkpoint=str(tmp_path / "old"), task="door-open-v3", max_steps=6,
                                stats_episodes=2, expl_scale=0.0, displacement_scale=1.5, displacement_cap=0.5)
    s_p = float(capped.model.displacement_statistics[0])
    assert capped.model.config.displacement_cap == 0.5
    np.testing.assert_allclose(capped(frames, env_r, succ), ru + 1.5 * np.minimum(p / s_p, 0.5) + succ,
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="displacement_cap"):
        make_reward_source(own[shipped], displacement_cap=0.0)
    # the motion consistency of the relabelled episode's frames
    steady = make_reward_source(own[shipped], checkpoint=str(tmp_path / "old"), task="door-open-v3", max_steps=6,
                                stats_episodes=2, expl_scale=0.0, consistency_scale=2.0)
    m = steady.model
    assert m.config.consistency_scale == 2.0 and int(m.consistency_statistics[1]) == 2 * 7
    c = m.frame_consistency(torch.from_numpy(frames)).numpy()[1:]  # relabelling scores [reset, frames...]
    np.testing.assert_allclose(steady(frames, env_r, succ), ru + 2.0 * c / float(m.consistency_statistics[0]) + succ,
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="consistency_scale"):
        make_reward_source(own[shipped], consistency_scale=-1.0)


def test_task_ids_and_errors(tmp_path):
    assert parse_task("metaworld/drawer-open-v3") == "drawer-open-v3"
    assert parse_task("adroit/door") == "adroit-door"
    assert parse_task("door-open") == "door-open-v3"
    assert parse_task("  Adroit/door ") == "adroit-door" and parse_task(" metaworld/door-open") == "door-open-v3"
    with pytest.raises(ValueError, match="unknown suite"):
        parse_task("dmc/walker-walk")
    with pytest.raises(ValueError, match="unknown Meta-World task"):
        parse_task("metaworld/door-opne-v9")
    with pytest.raises(ValueError, match="num_train_frames"):
        RLConfig(num_train_frames=0).validate()
    with pytest.raises(ValueError, match="episode_steps must be >= 1, got 0"):
        RLConfig(episode_steps=0).validate()
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*32 - 1\], got -1"):
        RLConfig(seed=-1).validate()


def test_a_task_of_the_other_suite_and_options_a_reward_ignores_are_refused(tmp_path, monkeypatch):
    import mmreward.robotics.envs as envs

    with pytest.raises(ValueError, match=r"'adroit-door' is a task of the adroit suite, not metaworld \(use adroit/door\)"):
        parse_task("metaworld/adroit-door")  # trained on Adroit without a word
    with pytest.raises(ValueError, match=r"'AdroitHandDoor-v1' is a task of the adroit suite.*use adroit/door"):
        parse_task("metaworld/AdroitHandDoor-v1")
    # learned-reward options were silently ignored by these rewards; rnd silently forced α to 1
    for spec, kw, named in (("sparse", dict(reward_clip=-1.0, success_scale=2.0), r"reward_clip \(--clip-min\), "
                                                                                   r"success_scale \(--success-scale\)"),
                            ("dense", dict(checkpoint="metaworld-64"), r"checkpoint \(--model\)"),
                            ("dapg", dict(expl_scale=0.5, goal_scale=1.0), r"expl_scale \(--expl-scale\), goal_scale"),
                            (lambda f: np.zeros(len(f)), dict(motion_scale=1.0), r"motion_scale \(--motion-scale\)"),
                            ("rnd", dict(expl_scale=0.3), r"'rnd' does not use expl_scale.*weight 1"),
                            ("rnd", dict(consistency_scale=1.0), r"consistency_scale \(--consistency-scale\)")):
        with pytest.raises(ValueError, match=named):
            make_reward_source(spec, **kw)
    monkeypatch.setattr(envs, "make_env", lambda *a, **k: pytest.fail("an environment started"))
    with pytest.raises(ValueError, match=r"reward 'sparse' does not use expl_scale \(--expl-scale\)"):
        Workspace(_cfg(tmp_path, expl_scale=0.5), DrQV2Config(**TINY_AGENT))
    with pytest.raises(ValueError, match="a task of the adroit suite"):
        Workspace(_cfg(tmp_path, task="metaworld/adroit-door"), DrQV2Config(**TINY_AGENT))


def test_gym_ids_for_adroit_and_frame_stack():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import mmreward.robotics.wrappers  # noqa: F401  (registers the ids)

    env = gym.make("mmreward/MetaWorld-drawer-open-v3", size=32, max_steps=5, frame_stack=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 32, 32, 3) and (obs[0] == obs[2]).all()
    obs, *_ = env.step(env.action_space.sample())
    assert not (obs[1] == obs[2]).all()
    check_env(env.unwrapped, skip_render_check=True)
    env.close()
    env = gym.make("mmreward/Adroit-door", size=32, max_steps=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3)
    env.close()


def test_cli_train_rl(tmp_path, capsys):
    from mmreward.robotics.cli import main

    rc = main(["train-rl", "--task", "metaworld/door-open-v3", "--reward", "sparse", "--out", str(tmp_path),
               "--num-train-frames", "40", "--num-seed-frames", "20", "--episode-steps", "20", "--size", "32",
               "--batch-size", "8", "--num-eval-episodes", "1", "--hidden-dim", "32", "--no-save-video",
               "--no-tensorboard", "--quiet", "--threads", "1"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 40 and len(summary["success_rate"]) == 2
    assert main(["train-rl", "--task", "metaworld/nope-v3", "--out", str(tmp_path / "x")]) == 2

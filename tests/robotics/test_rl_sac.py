"""SAC and the state-based expert trainer: SAC learns an exact-reward task, exact resume, the saved
policy's round trip, Adroit episodes driven by a saved policy, and the train-expert CLI."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from mmreward.core.checkpoint import Snapshots
from mmreward.robotics.envs.adroit import StateStep
from mmreward.robotics.rl.expert import ExpertConfig, StateReplay, evaluate_expert, train_expert, wilson_interval
from mmreward.robotics.rl.policy import StatePolicy, StatePolicyConfig
from mmreward.robotics.rl.sac import GaussianActor, SACAgent, SACConfig

adroit_missing = importlib.util.find_spec("gymnasium_robotics") is None
needs_adroit = pytest.mark.skipif(adroit_missing, reason="gymnasium-robotics is not installed: Adroit tasks need it")


class PointReach:
    """A point in [-1, 1]² moves by 0.15·action per step towards a goal drawn at reset; reward
    −distance, success within 0.1. Exact reward, no simulator: a random policy returns about −20
    over 20 steps, moving straight to the goal about −4."""

    task = "point-reach"
    obs_dim, action_dim, max_steps = 4, 2, 20

    def reset(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        self.pos, self.goal, self.t = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2), 0
        return self._obs()

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.pos, self.goal]).astype(np.float32)

    def step(self, action) -> StateStep:
        self.pos = np.clip(self.pos + 0.15 * np.clip(action, -1, 1), -1, 1)
        self.t += 1
        dist = float(np.linalg.norm(self.pos - self.goal))
        return StateStep(self._obs(), -dist, dist < 0.1, False, self.t >= self.max_steps)

    def close(self) -> None:
        pass


SMALL = dict(hidden_dim=64, batch_size=64, num_seed_steps=200, init_temperature=0.1)


def _cfg(out, **kw):
    base = dict(task="point-reach", out=str(out), steps=400, eval_every=200, eval_episodes=4, snapshot_every=0,
                replay_size=10_000, action_repeat=1, tensorboard=False, quiet=True, seed=3)
    base.update(kw)
    return ExpertConfig(**base)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.learning
def test_sac_learns_point_reach(tmp_path):
    summary = train_expert(_cfg(tmp_path, steps=2000, eval_every=500, eval_episodes=10),
                           SACConfig(**SMALL), make_env=PointReach)
    ret, succ = summary["episode_return"], summary["success_rate"]
    assert ret[0] < -10  # the untrained actor
    assert ret[-1] > -6 and succ[-1] >= 0.7, (ret, succ)  # near the straight-line optimum (about −4)
    # the best evaluation's policy is the run's model and reproduces that evaluation
    policy = StatePolicy.from_pretrained(tmp_path / "model")
    assert isinstance(policy, StatePolicy) and policy.config.task == "point-reach"
    assert summary["best"][0] >= 0.7
    rows = (tmp_path / "eval" / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("step,frames,episode,success_rate,episode_return") and len(rows) == 1 + 5
    assert (tmp_path / "curves.png").stat().st_size > 1000 and (tmp_path / "final_model" / "config.json").exists()
    # held-out scenes: the trained policy reaches most goals, the untrained actor almost none
    held = evaluate_expert(str(tmp_path), episodes=20, make_env=PointReach)
    assert held["episodes"] == 20 and held["success_rate"] >= 0.6, held
    lo, hi = held["success_rate_ci95"]
    assert lo < held["success_rate"] < hi or held["success_rate"] == 1.0
    StatePolicy(policy.config).save_pretrained(tmp_path / "untrained")
    assert evaluate_expert(str(tmp_path / "untrained"), episodes=20, make_env=PointReach)["success_rate"] <= 0.3


def test_wilson_interval():
    lo, hi = wilson_interval(27, 50)
    assert (round(lo, 4), round(hi, 4)) == (0.404, 0.6703)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_sac_update_moves_the_targets_by_tau_and_log_prob_is_exact():
    torch.manual_seed(0)
    agent = SACAgent(4, 2, SACConfig(hidden_dim=16, init_temperature=0.5))
    batch = {"obs": torch.randn(8, 4), "action": torch.rand(8, 2) * 2 - 1, "reward": torch.randn(8),
             "next_obs": torch.randn(8, 4), "discount": torch.full((8,), 0.99)}
    target_before = [p.clone() for p in agent.critic_target.parameters()]
    critic_before = [p.clone() for p in agent.critic.parameters()]
    m = agent.update(batch)
    assert {"critic_loss", "actor_loss", "alpha", "alpha_loss", "entropy"} <= set(m)
    for tb, cb, t, c in zip(target_before, critic_before, agent.critic_target.parameters(), agent.critic.parameters()):
        # the target started equal to the critic and moved by τ = 0.005 towards the updated critic
        assert torch.equal(tb, cb) and not torch.equal(c, cb)
        torch.testing.assert_close(t, tb + 0.005 * (c - tb))
    # the log-probability of the squashed Gaussian matches a direct computation
    actor = GaussianActor(4, 2, 16)
    obs = torch.randn(5, 4)
    a, logp = actor.sample(obs, torch.Generator().manual_seed(1))
    mean, log_std = actor(obs)
    u = torch.atanh(a.clamp(-1 + 1e-6, 1 - 1e-6))
    direct = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1) - torch.log(1 - a.pow(2)).sum(-1)
    torch.testing.assert_close(logp, direct, rtol=1e-3, atol=1e-3)


def test_exact_resume_equals_an_uninterrupted_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train_expert(_cfg(a, steps=400), SACConfig(**SMALL), make_env=PointReach)
    train_expert(_cfg(b, steps=200), SACConfig(**SMALL), make_env=PointReach)
    train_expert(_cfg(b, steps=400), SACConfig(**SMALL), make_env=PointReach)  # resumes from b's step 200
    sa, sb = (Snapshots(str(x)).load_latest()[2] for x in (a, b))
    for k in sa["agent"]:
        torch.testing.assert_close(sa["agent"][k], sb["agent"][k], rtol=0, atol=0, msg=k)
    for k in ("obs", "action", "reward", "next_obs", "terminal"):
        assert np.array_equal(sa["replay"][k], sb["replay"][k]), k
    assert sa["counters"]["step"] == sb["counters"]["step"] == 400 and sa["generator"].equal(sb["generator"])

    def table(path, drop):
        lines = [r.split(",") for r in path.read_text().splitlines()]
        keep = [i for i, c in enumerate(lines[0]) if c not in drop]
        return [[r[i] for i in keep] for r in lines]

    timing = {"steps_per_second", "eval_seconds"}
    assert table(a / "train.csv", timing) == table(b / "train.csv", timing)
    assert table(a / "eval" / "eval.csv", timing) == table(b / "eval" / "eval.csv", timing)
    assert sorted(n for n in os.listdir(b) if n.startswith("checkpoint-")) == ["checkpoint-00000200",
                                                                                "checkpoint-00000400"]
    # a finished run resumes with nothing to do; other settings are refused; --overwrite starts again
    assert train_expert(_cfg(b, steps=400), SACConfig(**SMALL), make_env=PointReach)["steps"] == 400
    with pytest.raises(ValueError, match="other settings.*seed"):
        train_expert(_cfg(b, seed=4), SACConfig(**SMALL), make_env=PointReach)
    with pytest.raises(ValueError, match="holds a training run"):
        train_expert(_cfg(b, resume=False), SACConfig(**SMALL), make_env=PointReach)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "train.csv").write_text("x\n")
    with pytest.raises(ValueError, match="another program or run"):
        train_expert(_cfg(tmp_path / "foreign"), SACConfig(**SMALL), make_env=PointReach)
    out = train_expert(_cfg(b, steps=100, seed=4, overwrite=True), SACConfig(**SMALL), make_env=PointReach)
    assert out["steps"] == 100 and not (b / "checkpoint-00000400").exists()


def test_default_out_folder_is_named_after_the_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path, steps=30, eval_episodes=1)
    cfg.out = None
    train_expert(cfg, SACConfig(**SMALL), make_env=PointReach)
    assert (tmp_path / "runs" / "expert-point-reach" / "model" / "config.json").is_file()


def test_replay_grows_wraps_and_restores():
    r = StateReplay(capacity=1500, obs_dim=3, action_dim=2, seed=0)
    for i in range(1600):
        r.add(np.full(3, i), np.full(2, -i), float(i), np.full(3, i + 1), i % 7 == 0)
    assert len(r) == 1500 and r.pos == 100 and r.obs[99, 0] == 1599 and r.obs[100, 0] == 100
    s = r.state()
    r2 = StateReplay(capacity=1500, obs_dim=3, action_dim=2, seed=9)
    r2.load(s)
    b1, b2 = r.sample(32, 0.9), r2.sample(32, 0.9)
    for k in b1:
        assert torch.equal(b1[k], b2[k]), k
    assert set(b1["discount"].tolist()) <= {0.0, np.float32(0.9)}
    torch.testing.assert_close(b1["next_obs"][:, 0], b1["obs"][:, 0] + 1)
    with pytest.raises(ValueError, match="does not fit"):
        StateReplay(capacity=10, obs_dim=3, action_dim=2, seed=0).load(s)


def test_policy_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    policy = StatePolicy(StatePolicyConfig(task="adroit-door", obs_dim=39, action_dim=28, hidden_dim=32,
                                           action_repeat=2))
    policy.save_pretrained(tmp_path / "p")
    body = json.loads((tmp_path / "p" / "config.json").read_text())
    assert body["model_type"] == "state_policy" and body["config"]["task"] == "adroit-door"
    loaded = StatePolicy.from_pretrained(tmp_path / "p")
    obs = np.random.default_rng(0).standard_normal((6, 39)).astype(np.float32)
    a, b = policy.act(obs), loaded.act(obs)
    assert a.shape == (6, 28) and np.array_equal(a, b) and np.abs(a).max() < 1
    np.testing.assert_allclose(loaded.act(obs[0]), a[0], atol=1e-6)  # one row: another matmul kernel
    with pytest.raises(ValueError, match=r"takes \[39\]"):
        loaded.act(np.zeros(40))


@needs_adroit
def test_adroit_state_env():
    from mmreward.robotics.envs.adroit import AdroitStateEnv

    with AdroitStateEnv("AdroitHandDoor-v1", action_repeat=2) as env:
        assert (env.task, env.obs_dim, env.action_dim, env.max_steps) == ("adroit-door", 39, 28, 100)
        o1 = env.reset(5)
        st = env.step(np.zeros(28, np.float32))
        assert o1.dtype == np.float32 and st.obs.shape == (39,) and not st.done and not st.terminal
        assert np.array_equal(env.reset(5), o1) and not np.array_equal(env.reset(6), o1)


@needs_adroit
def test_adroit_dapg_reward_is_dapgs_door_reward():
    from mmreward.robotics.envs.adroit import AdroitStateEnv

    rng = np.random.default_rng(0)
    with AdroitStateEnv("adroit-door") as dense, AdroitStateEnv("adroit-door", reward="dapg") as dapg:
        dense.reset(3), dapg.reset(3)
        for _ in range(5):
            a = rng.uniform(-1, 1, 28).astype(np.float32)
            r_dense, r_dapg = dense.step(a).reward, dapg.step(a).reward
            u = dapg.env.unwrapped
            door = float(u.data.qpos[u.door_hinge_addrs])
            palm, handle = u.data.site_xpos[u.grasp_site_id], u.data.site_xpos[u.handle_site_id]
            # DAPG's door reward (hand_dapg door_v0), written out
            expected = (-0.1 * np.linalg.norm(palm - handle) - 0.1 * (door - 1.57) ** 2 - 1e-5 * np.sum(u.data.qvel ** 2)
                        + 2 * (door > 0.2) + 8 * (door > 1.0) + 10 * (door > 1.35))
            assert r_dapg == pytest.approx(expected, abs=1e-9)
            assert r_dense == pytest.approx(expected + 0.2 * np.linalg.norm(palm - handle), abs=1e-9)
    with pytest.raises(ValueError, match="unknown Adroit reward"):
        AdroitStateEnv("adroit-door", reward="sparse")


@needs_adroit
def test_collect_adroit_with_a_trained_expert(tmp_path, capsys, monkeypatch):
    from mmreward.robotics.cli import main
    from mmreward.robotics.collect import collect_episodes
    from mmreward.robotics.data.episodes import load_episode, read_manifest

    run = tmp_path / "run"
    code = main(["train-expert", "--task", "adroit/door", "--out", str(run), "--steps", "60", "--eval-every", "30",
                 "--eval-episodes", "1", "--episode-steps", "20", "--num-seed-steps", "20", "--batch-size", "16",
                 "--hidden-dim", "32", "--no-tensorboard", "--quiet", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 60 and len(summary["success_rate"]) == 3
    policy = StatePolicy.from_pretrained(run / "model")
    assert (policy.config.task, policy.config.action_repeat) == ("adroit-door", 2)

    out = tmp_path / "eps"
    collect_episodes(["adroit-door"], str(out), episodes=2, policy="expert", expert_model=str(run / "model"),
                     max_steps=6, size=32, progress=False)
    entries = read_manifest(str(out))
    assert [e["policy"] for e in entries] == ["expert", "expert"]
    assert entries[0]["expert_model"] == os.path.abspath(run / "model")
    ep = load_episode(str(out / entries[0]["file"]))
    assert ep.frames.shape == (7, 32, 32, 3) and ep.actions.shape == (6, 28)
    # the actions are the policy's on the environment's state observations
    from mmreward.robotics.envs.adroit import AdroitStateEnv

    with AdroitStateEnv("adroit-door", action_repeat=2) as env:
        obs = env.reset(0)
        for t in range(6):
            a = policy.act(obs)
            assert np.allclose(ep.actions[t], a, atol=1e-6), t
            obs = env.step(a).obs

    # the CLI, a run folder for the model, and noisy actions around the expert's
    assert main(["collect", "--tasks", "adroit-door", "--policy", "noisy", "--noise", "0.3", "--expert-model", str(run),
                 "--episodes", "1", "--max-steps", "3", "--size", "32", "--out", str(tmp_path / "noisy"),
                 "--no-progress"]) == 0, capsys.readouterr().err
    (noisy,) = read_manifest(str(tmp_path / "noisy"))
    assert (noisy["policy"], noisy["noise"], noisy["expert_model"]) == ("noisy", 0.3, os.path.abspath(run / "model"))

    # success rate on held-out scenes, from the run folder, as JSON (stdout and --json)
    assert main(["eval-expert", "--model", str(run), "--episodes", "2", "--episode-steps", "5",
                 "--json", str(tmp_path / "eval.json")]) == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads((tmp_path / "eval.json").read_text())
    assert (printed["task"], printed["episodes"], printed["model"]) == ("adroit-door", 2, str(run / "model"))
    assert main(["eval-expert", "--model", str(run), "--episodes", "0"]) == 2
    assert "episodes must be >= 1" in capsys.readouterr().err

    with pytest.raises(ValueError, match="no expert ships for adroit-pen.*train-expert"):
        collect_episodes(["adroit-pen"], str(out), episodes=1, policy="expert", progress=False)
    # without --expert-model a task's shipped expert acts (here: this run's policy stands in for it)
    import mmreward.robotics.pretrained as shipped

    monkeypatch.setattr(shipped, "shipped_expert", lambda task: str(run / "model") if task == "adroit-door" else None)
    collect_episodes(["adroit-door"], str(tmp_path / "shipped"), episodes=1, policy="expert", max_steps=3, size=32,
                     progress=False)
    assert read_manifest(str(tmp_path / "shipped"))[0]["expert_model"] == os.path.abspath(run / "model")
    with pytest.raises(ValueError, match="action repeat 2"):
        collect_episodes(["adroit-door"], str(out), episodes=1, policy="expert", expert_model=str(run / "model"),
                         action_repeat=1, progress=False)
    with pytest.raises(ValueError, match="trained on adroit-door"):
        collect_episodes(["adroit-hammer"], str(out), episodes=1, policy="expert", expert_model=str(run / "model"),
                         progress=False)


def test_train_expert_cli_errors(tmp_path, capsys):
    from mmreward.robotics.cli import main

    cases = [
        (["train-expert", "--task", "door-open-v3", "--out", str(tmp_path / "x")], "Meta-World task"),
        (["train-expert", "--task", "adroit/dor", "--out", str(tmp_path / "x")], "unknown Adroit task"),
        (["train-expert", "--out", str(tmp_path / "x"), "--steps", "0"], "steps must be >= 1"),
        (["train-expert", "--out", str(tmp_path / "x"), "--critic-target-tau", "2"], "critic_target_tau"),
        (["train-expert", "--out", str(tmp_path / "x"), "--device", "cuda:7"], "cuda"),
        (["train-expert", "--out", str(tmp_path / "x"), "--steps", "many"], "invalid int value"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
    assert main(["collect", "--tasks", "adroit-door", "--expert-model", str(tmp_path / "none"), "--out",
                 str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1


@needs_adroit
def test_shipped_door_expert_opens_the_door():
    from mmreward.robotics.pretrained import available, shipped_expert
    from mmreward.robotics.rl.expert import evaluate_expert

    folder = shipped_expert("adroit-door")
    assert folder is not None and shipped_expert("adroit-pen") is None
    assert "experts" not in available()  # the policies are not reward checkpoints
    policy = StatePolicy.from_pretrained(folder)
    assert (policy.config.task, policy.config.action_repeat) == ("adroit-door", 2)
    # 10 of the held-out scenes of benchmarks/results/adroit_door_expert.json (43 / 50 there)
    result = evaluate_expert(folder, episodes=10, seed=0)
    assert result["successes"] >= 7, result


@needs_adroit
def test_shipped_hammer_expert_drives_the_nail():
    from mmreward.robotics.pretrained import shipped_expert
    from mmreward.robotics.rl.expert import evaluate_expert

    folder = shipped_expert("adroit-hammer")
    policy = StatePolicy.from_pretrained(folder)
    assert (policy.config.task, policy.config.action_repeat) == ("adroit-hammer", 2)
    # 10 of the held-out scenes of benchmarks/results/adroit_hammer_expert.json (45 / 50 there, 9 of these 10)
    result = evaluate_expert(folder, episodes=10, seed=0)
    assert result["successes"] >= 7, result


@needs_adroit
def test_adroit64_pays_the_expert_more_than_random_or_frozen_hands(tmp_path):
    """The shipped adroit-64 on fresh episodes of the shipped expert, random actions and a frozen hand
    (the expert's first frame repeated): the order benchmarks/results/diffusion_reward_pooled_adroit64.json
    measures (expert-vs-random AUC 0.97, random-vs-frozen 1.00)."""
    import mmreward
    from mmreward.robotics.collect import collect_episodes
    from mmreward.robotics.data.episodes import load_episode, read_manifest
    from mmreward.robotics.envs.base import setup_mujoco_gl

    setup_mujoco_gl()
    reward = mmreward.load("adroit-64")
    assert reward.config.motion_scale == 2.0
    for policy, seed in (("expert", 100), ("random", 200)):
        collect_episodes(["adroit-door"], str(tmp_path), episodes=1, policy=policy, seed=seed, progress=False)
    eps = {e["policy"]: load_episode(str(tmp_path / e["file"])).frames for e in read_manifest(str(tmp_path))}
    eps["frozen"] = np.repeat(eps["expert"][:1], len(eps["expert"]), 0)
    score = {k: float(reward(torch.from_numpy(f)).mean()) for k, f in eps.items()}
    assert score["expert"] > score["random"] > score["frozen"], score


def test_eval_expert_names_its_own_episode_steps_option(tmp_path, capsys):
    """--episode-steps 0 said "max_steps must be >= 1" (the environment's name for it)."""
    from mmreward.robotics.cli import main
    from mmreward.robotics.pretrained import shipped_expert

    model = shipped_expert("adroit-door") or str(tmp_path / "none")  # refused before the policy loads either way
    assert main(["eval-expert", "--model", model, "--episode-steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "episode_steps must be >= 1, got 0" in err and len(err.strip().splitlines()) == 1, err

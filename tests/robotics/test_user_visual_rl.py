"""A visual-RL user's workflow (train-rl → resume → eval-rl; train-expert → eval-expert): settings the
environment silently changed, run folders of the wrong kind, what a resumed run leaves in its folder."""
import json
import os
import types

import numpy as np
import pytest

from mmreward.robotics.rl import DrQV2Config, RLConfig, Workspace
from mmreward.robotics.rl.evaluate import evaluate_run
from mmreward.robotics.rl.expert import ExpertConfig, evaluate_expert, train_expert
from mmreward.robotics.rl.sac import SACConfig


class _StubEnv:
    """What the workspace reads of a pixel env before training (no MuJoCo); caps episodes at the task's
    time limit as the real environments do (500 environment steps)."""

    max_env_steps = 500

    def __init__(self, *args, max_steps=None, action_repeat=2, **kw):
        self.action_space = types.SimpleNamespace(low=-np.ones(4, np.float32), high=np.ones(4, np.float32))
        limit = self.max_env_steps // action_repeat
        self.action_dim, self.max_steps = 4, limit if max_steps is None else min(max_steps, limit)

    def reset(self, seed):
        self.t, self.frame = 0, np.full((16, 16, 3), seed % 251, np.uint8)
        return np.zeros(4, np.float32), self.frame

    def step(self, action):
        from mmreward.robotics.envs.base import Step

        self.t += 1
        return Step(obs=np.zeros(4, np.float32), frame=(self.frame + self.t).astype(np.uint8),
                    reward=float(np.sum(action)), success=False, done=self.t >= self.max_steps)

    def close(self):
        pass


class _StateEnv:
    """A state env for the expert trainer, capped at 20 agent steps as Adroit caps at its time limit."""

    task, obs_dim, action_dim = "adroit-door", 4, 2

    def __init__(self, max_steps=None):
        self.max_steps = 20 if max_steps is None else min(max_steps, 20)
        self.t = 0

    def reset(self, seed):
        self.t = 0
        return np.full(self.obs_dim, seed % 7, np.float32)

    def step(self, action):
        from mmreward.robotics.envs.adroit import StateStep

        self.t += 1
        return StateStep(np.full(self.obs_dim, self.t, np.float32), -float(np.abs(action).sum()), False, False,
                         self.t >= self.max_steps)

    def close(self):
        pass


def _config(out, **kw):
    base = dict(task="metaworld/door-open-v3", reward="sparse", out=str(out), num_train_frames=8, num_seed_frames=0,
                eval_every_frames=0, num_eval_episodes=1, episode_steps=4, batch_size=4, save_video=False,
                tensorboard=False, quiet=True, size=32)
    base.update(kw)
    return RLConfig(**base)


def _workspace(config, reward=None):
    ws = Workspace(config, DrQV2Config(hidden_dim=16, feature_dim=8, num_expl_steps=2), reward)
    ws.close()
    return ws


@pytest.fixture
def stub_env(monkeypatch):
    import mmreward.robotics.envs as envs

    monkeypatch.setattr(envs, "make_env", _StubEnv)


def test_episode_steps_past_the_task_limit_are_refused_not_capped(tmp_path, stub_env):
    """Before: --episode-steps 300 on door-open-v3 (action repeat 2) ran 250-step episodes while
    train_config.json and the run's fingerprint said 300."""
    with pytest.raises(ValueError, match=r"episode_steps \(300\) is longer than door-open-v3 allows: 250 agent steps"
                                         r" \(500 environment steps at action_repeat 2\); use --episode-steps <= 250"):
        _workspace(_config(tmp_path / "a", episode_steps=300))
    assert not os.path.exists(tmp_path / "a" / "train_config.json")
    _workspace(_config(tmp_path / "b", episode_steps=250))  # the limit itself is fine
    _workspace(_config(tmp_path / "c", episode_steps=500, action_repeat=1))


def test_expert_episode_steps_past_the_task_limit_are_refused(tmp_path):
    """Before: train-expert --episode-steps 150 on adroit-door (100 agent steps at repeat 2) trained on
    100-step episodes while its settings said 150."""
    cfg = ExpertConfig(task="adroit-door", out=str(tmp_path / "x"), steps=10, episode_steps=30, tensorboard=False,
                       quiet=True)
    with pytest.raises(ValueError, match=r"episode_steps \(30\) is longer than adroit-door allows: 20 agent steps"):
        train_expert(cfg, SACConfig(hidden_dim=8, batch_size=4), make_env=lambda: _StateEnv(30))
    assert not os.path.exists(tmp_path / "x" / "train_config.json")


def test_train_expert_refuses_a_train_rl_run_or_a_model_as_out(tmp_path, stub_env):
    """Before: train-expert --out <a train-rl run> was refused listing SAC-vs-DrQ-v2 setting differences
    ("agent.augment_pad: saved 4, now the default; ..."), and --overwrite removed the pixel run."""
    rl = tmp_path / "rl"
    _workspace(_config(rl))
    for overwrite in (False, True):
        cfg = ExpertConfig(task="adroit-door", out=str(rl), steps=10, tensorboard=False, quiet=True, overwrite=overwrite)
        with pytest.raises(ValueError, match="holds a run of train-rl, not of train-expert"):
            train_expert(cfg, SACConfig(hidden_dim=8, batch_size=4), make_env=lambda: _StateEnv())
    assert os.path.isfile(rl / "train_config.json")
    model = tmp_path / "policy"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds a saved model"):
        train_expert(ExpertConfig(task="adroit-door", out=str(model), steps=10, tensorboard=False, quiet=True),
                     SACConfig(hidden_dim=8, batch_size=4), make_env=lambda: _StateEnv())


def test_an_episode_folder_or_another_commands_run_is_not_a_train_rl_out(tmp_path, stub_env, capsys):
    """Before: train-rl --out data/mw (a collect folder) wrote its run among the episodes; --out of a
    train-expert run was refused listing SAC-vs-DrQ-v2 agent differences."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text('{"episodes": []}')
    with pytest.raises(ValueError, match="holds an episode folder .* not a train-rl run"):
        _workspace(_config(data))
    with pytest.raises(ValueError, match="not a train-rl run"):  # --overwrite would leave the episodes there
        _workspace(_config(data, overwrite=True))
    assert sorted(os.listdir(data)) == ["manifest.json"]
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds a saved model"):
        _workspace(_config(model))
    expert = tmp_path / "expert"
    expert.mkdir()
    (expert / "train_config.json").write_text(json.dumps({"config": {"task": "adroit-door", "steps": 10,
                                                                     "eval_every": 5}, "agent": {}}))
    with pytest.raises(ValueError, match="holds a run of train-expert, not of train-rl"):
        _workspace(_config(expert))

    from mmreward.robotics.cli import main

    assert main(["train-rl", "--task", "metaworld/door-open-v3", "--reward", "sparse", "--out", str(data)]) == 2
    err = capsys.readouterr().err
    assert "holds an episode folder" in err and len(err.strip().splitlines()) == 1, err
    # a train-rl run folder of its own resumes as before
    _workspace(_config(tmp_path / "run"))
    _workspace(_config(tmp_path / "run", num_train_frames=16))


def test_a_resume_drops_the_videos_of_evaluations_it_does_not_continue(tmp_path, stub_env):
    """Before: a run killed after an evaluation but before its snapshot kept that evaluation's mp4 when
    resumed with another --eval-every-frames: a video with no eval.csv row, of a discarded timeline."""
    out = tmp_path / "run"
    _workspace(_config(out))  # stopped before its first snapshot: it starts again from frame 0
    videos = out / "eval_videos"
    videos.mkdir()
    for frame in (0, 40):
        (videos / f"frame_{frame:09d}.mp4").write_bytes(b"x")
    (videos / "notes.txt").write_text("mine")
    _workspace(_config(out, eval_every_frames=100))
    assert sorted(os.listdir(videos)) == ["notes.txt"]

    from mmreward.robotics.rl.workspace import drop_videos_after

    for frame in (0, 40, 80, 120):
        (videos / f"frame_{frame:09d}.mp4").write_bytes(b"x")
    drop_videos_after(str(out), 80)  # a resume from the snapshot at frame 80 keeps its evaluations up to 80
    assert sorted(os.listdir(videos)) == ["frame_000000000.mp4", "frame_000000040.mp4", "frame_000000080.mp4",
                                          "notes.txt"]


def test_a_callable_reward_is_recorded_as_the_reward_the_run_used(tmp_path, stub_env):
    """Before: train_rl(RLConfig(...), reward=my_fn) recorded, plotted and eval-rl reported the run as
    RLConfig's default reward "diffusion"."""
    out = tmp_path / "run"
    ws = _workspace(_config(out, reward="diffusion"), reward=lambda frames: np.zeros(len(frames)))
    assert ws.cfg.reward == "callable"
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["config"]["reward"] == "callable" and saved["fingerprint"]["reward"] == "callable"
    ws = _workspace(_config(tmp_path / "named", reward="diffusion"), reward="sparse")  # a name given as reward=
    assert json.loads((tmp_path / "named" / "train_config.json").read_text())["config"]["reward"] == "sparse"


def test_eval_commands_name_the_command_for_the_other_kind_of_run(tmp_path, stub_env, capsys):
    """Before: eval-rl on a train-expert run said "its 'config' settings do not fit RLConfig (... unexpected
    keyword argument 'steps')"; eval-expert on a train-rl run "has no config.json: not a saved model folder"."""
    expert = tmp_path / "expert"
    expert.mkdir()
    (expert / "train_config.json").write_text(json.dumps({"config": {"task": "adroit-door", "steps": 10,
                                                                     "eval_every": 5}, "agent": {"lr": 3e-4}}))
    with pytest.raises(ValueError, match="is a train-expert run .* eval-expert --model"):
        evaluate_run(str(expert))
    rl = tmp_path / "rl"
    _workspace(_config(rl))
    with pytest.raises(ValueError, match="is a train-rl run .* eval-rl --run .* evaluates it"):
        evaluate_expert(str(rl))

    from mmreward.robotics.cli import main

    for argv in (["eval-rl", "--run", str(expert)], ["eval-expert", "--model", str(rl)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "mmreward robotics eval-" in err and len(err.strip().splitlines()) == 1, err


def test_an_adroit_task_without_expert_statistics_says_how_to_get_expert_episodes():
    """Before: "no expert statistics for this reward mode and no scripted expert for adroit-pen: pass
    expert_data=<episode folder>": not the train-rl flag, nor how to make such a folder."""
    pytest.importorskip("gymnasium_robotics")
    from mmreward.robotics.envs.base import offscreen_render_problem, setup_mujoco_gl
    from mmreward.robotics.rl.rewards import _expert_frames

    setup_mujoco_gl()
    if offscreen_render_problem() is not None:
        pytest.skip("no offscreen rendering")
    with pytest.raises(ValueError, match=r"\(--expert-data\) of expert episodes of adroit-pen, e\.g\. from "
                                         r"`mmreward robotics train-expert --task adroit-pen"):
        _expert_frames("adroit-pen", None, size=32, action_repeat=2, episodes=3, max_steps=5)
    with pytest.raises(ValueError, match=r"collect --tasks adroit-door --policy expert --size 32 --out "
                                         r"data/adroit-door-experts`$"):  # the shipped door expert collects them
        _expert_frames("adroit-door", None, size=32, action_repeat=2, episodes=3, max_steps=5)


@pytest.mark.parametrize("stack, error", [(2.5, TypeError), ("3", TypeError), (0, ValueError)])
def test_gym_env_frame_stack_is_checked_before_the_simulator_starts(stack, error, monkeypatch):
    """Before: frame_stack=2.5 failed in gymnasium's Box ("Expected all Box shape elements to be integer")
    and "3" in a comparison, both after the simulator had started (and it was never closed)."""
    pytest.importorskip("gymnasium")
    import mmreward.robotics.envs as envs
    from mmreward.robotics.wrappers import PixelGymEnv

    started = []
    monkeypatch.setattr(envs, "make_env", lambda *a, **k: started.append(1))
    with pytest.raises(error, match="frame_stack must be"):
        PixelGymEnv("door-open-v3", size=32, frame_stack=stack)
    assert not started


def test_collect_refuses_a_training_run_or_model_folder_as_out(tmp_path, stub_env, monkeypatch, capsys):
    """Before: collect --out runs/rl (a train-rl run) wrote episodes and a manifest among its snapshots."""
    import mmreward.robotics.envs as envs
    from mmreward.robotics.collect import collect_episodes

    run = tmp_path / "run"
    _workspace(_config(run))
    started = []
    monkeypatch.setattr(envs, "make_env", lambda *a, **k: started.append(1))
    with pytest.raises(ValueError, match="holds a training run .* not an episode folder"):
        collect_episodes(["door-open-v3"], str(run), episodes=1, policy="random", size=32, progress=False)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds a saved model"):
        collect_episodes(["door-open-v3"], str(model), episodes=1, policy="random", size=32, progress=False)
    assert not started and not os.path.exists(run / "manifest.json")

    from mmreward.robotics.cli import main

    assert main(["collect", "--tasks", "door-open-v3", "--policy", "random", "--episodes", "1", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "holds a training run" in err and len(err.strip().splitlines()) == 1, err


def test_pathlib_out_folders_train_snapshot_and_evaluate(tmp_path, stub_env):
    """Before: RLConfig(out=pathlib.Path(...)) (and ExpertConfig's) passed validation and failed only when
    the run's first snapshot was written, after the training: "cannot checkpoint a value of type PosixPath"."""
    import pathlib

    from mmreward.robotics.rl import train_rl

    out = pathlib.Path(tmp_path) / "rl"
    cfg = _config(out, num_train_frames=8, size=16)
    cfg.out = out  # the Path itself, not _config's str()
    s = train_rl(cfg, DrQV2Config(hidden_dim=8, feature_dim=4, num_expl_steps=0))
    assert s["frames"] == 8 and any(n.startswith("checkpoint-") for n in os.listdir(out))
    summary = evaluate_run(out, episodes=1)
    assert summary["run"] == str(out) and json.dumps(summary)

    expert = pathlib.Path(tmp_path) / "expert"
    s = train_expert(ExpertConfig(task="adroit-door", out=expert, steps=8, eval_every=4, eval_episodes=1,
                                  tensorboard=False, quiet=True),
                     SACConfig(hidden_dim=8, batch_size=4, num_seed_steps=2), make_env=lambda: _StateEnv(4))
    assert s["steps"] == 8 and any(n.startswith("checkpoint-") for n in os.listdir(expert))
    summary = evaluate_expert(expert, episodes=1, make_env=lambda: _StateEnv(4))
    assert isinstance(summary["model"], str) and json.dumps(summary)


@pytest.mark.parametrize("field, value, message", [
    ("target_entropy", float("nan"), "target_entropy must be a finite number"),
    ("init_temperature", float("inf"), "init_temperature must be a finite number"),
    ("log_std_min", float("nan"), "log_std_min must be a finite number"),
    ("hidden_dim", 2.5, "hidden_dim must be an integer"),
    ("lr", "3e-4", "lr must be a finite number"),
])
def test_sac_settings_that_trained_a_nan_policy_are_refused(field, value, message, tmp_path, capsys):
    """Before: --target-entropy nan, --init-temperature inf and --log-std-min nan were accepted and trained
    (a NaN temperature / policy); hidden_dim=2.5 failed inside nn.Linear, lr="3e-4" in a bare comparison."""
    with pytest.raises(ValueError, match=message):
        SACConfig(**{field: value}).validate()
    SACConfig(hidden_dim=np.int64(8), lr=np.float64(1e-3), target_entropy=-3).validate()
    if isinstance(value, float) and field != "hidden_dim":  # the CLI's --hidden-dim takes integers only
        from mmreward.robotics.cli import main

        flag = "--" + field.replace("_", "-")
        assert main(["train-expert", "--task", "adroit-door", "--out", str(tmp_path / "x"), flag, str(value)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("field, value", [("lr", "1e-4"), ("discount", None), ("critic_target_tau", "0.01"),
                                          ("stddev_clip", None), ("lr", True)])
def test_drqv2_settings_of_the_wrong_type_are_named(field, value):
    """Before: DrQV2Config(lr="1e-4").validate() raised "'>' not supported between instances of 'str' and
    'int'"; lr=True was taken as 1."""
    with pytest.raises(ValueError, match=f"{field} must be a number"):
        DrQV2Config(**{field: value}).validate()


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), "1", None])
def test_diffusion_reward_wrapper_refuses_a_non_finite_env_reward_scale(scale):
    """Before: env_reward_scale=nan was taken, and every mode="add" reward was NaN."""
    gym = pytest.importorskip("gymnasium")
    from mmreward.robotics.wrappers import DiffusionRewardWrapper

    class Env(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
        action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    with pytest.raises(ValueError, match="env_reward_scale must be a finite number"):
        DiffusionRewardWrapper(Env(), object(), mode="add", env_reward_scale=scale)


def test_train_rl_help_says_what_no_resume_does(capsys):
    """Before: train-rl's help said "--no-resume: start again", but --no-resume refuses a folder holding a run
    (--overwrite starts again)."""
    from mmreward.robotics.cli import main

    try:
        main(["train-rl", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-resume: start again" not in text and "--no-resume: refuse instead; --overwrite: start again" in text


def test_an_unknown_reward_shaping_is_named_as_the_flag_before_the_environments_start(tmp_path, monkeypatch, capsys):
    """Before: --reward-shaping foo said "shaping must be one of none, potential", after both environments
    had been built."""
    import mmreward.robotics.envs as envs

    started = []
    monkeypatch.setattr(envs, "make_env", lambda *a, **k: started.append(1))
    with pytest.raises(ValueError, match="reward_shaping must be one of none, potential, got 'foo'"):
        _workspace(_config(tmp_path / "r", reward="diffusion", reward_shaping="foo"))
    assert not started

    from mmreward.robotics.cli import main

    assert main(["train-rl", "--out", str(tmp_path / "r"), "--reward-shaping", "foo"]) == 2
    err = capsys.readouterr().err
    assert "reward_shaping must be one of" in err and len(err.strip().splitlines()) == 1, err


def test_a_rerun_asking_for_less_than_the_run_already_did_is_refused(tmp_path, stub_env, capsys):
    """Before: train-rl --num-train-frames 40 on a run at frame 80 (train-expert --steps likewise) returned it
    as is, reporting 80 frames and re-plotting its curves (re-saving final_model/), where training.md's table
    says such a rerun is refused."""
    from mmreward.robotics.rl import train_rl

    agent = DrQV2Config(hidden_dim=8, feature_dim=4, num_expl_steps=0)
    out = tmp_path / "rl"
    assert train_rl(_config(out, num_train_frames=16, size=16), agent)["frames"] == 16  # 8-frame episodes
    with pytest.raises(ValueError, match=r"already at frame 16, past num_train_frames 8: pass --num-train-frames >= 9"):
        train_rl(_config(out, num_train_frames=8, size=16), agent)
    for frames in (9, 16):  # a run to 9 frames would have stopped at 16 too: nothing left to do
        assert train_rl(_config(out, num_train_frames=frames, size=16), agent)["frames"] == 16
    assert train_rl(_config(out, num_train_frames=24, size=16), agent)["frames"] == 24

    expert = tmp_path / "expert"
    sac = SACConfig(hidden_dim=8, batch_size=4, num_seed_steps=2)

    def run(steps):
        return train_expert(ExpertConfig(task="adroit-door", out=str(expert), steps=steps, eval_every=4, eval_episodes=1,
                                         tensorboard=False, quiet=True), sac, make_env=lambda: _StateEnv(4))

    assert run(8)["steps"] == 8
    with pytest.raises(ValueError, match=r"already at step 8, past steps 4: pass --steps >= 5"):
        run(4)
    assert run(5)["steps"] == 8


def test_expert_data_of_another_frame_size_names_the_folder(tmp_path):
    """Before: --expert-data holding 32x32 episodes beside a 64x64 reward model failed with "frames must be
    64x64 pixels, got 32x32", naming neither the folder nor how to fix it."""
    from mmreward.robotics.data.episodes import Episode, episode_entry, save_episode, update_manifest
    from mmreward.robotics.rl.rewards import _expert_frames

    folder = tmp_path / "experts"
    folder.mkdir()
    ep = Episode(frames=np.zeros((5, 32, 32, 3), np.uint8), actions=np.zeros((4, 2)), rewards=np.zeros(4),
                 success=np.zeros(4, bool))
    save_episode(str(folder / "ep0.npz"), ep)
    update_manifest(str(folder), [episode_entry("ep0.npz", ep, task="door-open-v3", policy="expert")])
    with pytest.raises(ValueError, match=r"--expert-data .*experts holds 32x32 frames, but the reward model takes "
                                         r"64x64: collect its episodes with --size 64"):
        _expert_frames("door-open-v3", str(folder), size=64, action_repeat=2, episodes=3, max_steps=None)
    assert [f.shape for f in _expert_frames("door-open-v3", str(folder), size=32, action_repeat=2, episodes=3,
                                            max_steps=None)] == [(5, 32, 32, 3)]

"""Training-pipeline edges of visual RL: ``evaluate_run`` only reads the run (it may be training)."""
import os

import pytest

from mmreward.robotics.envs.base import offscreen_render_problem, setup_mujoco_gl

setup_mujoco_gl()
pytest.importorskip("metaworld")
_why = offscreen_render_problem()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"no offscreen rendering: {_why}")

from mmreward.robotics.rl import DrQV2Config, RLConfig, train_rl  # noqa: E402
from mmreward.robotics.rl.evaluate import evaluate_run  # noqa: E402


def _listing(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files)


def test_evaluate_run_skips_an_unreadable_newest_snapshot_without_touching_the_run(tmp_path):
    """Before: evaluate_run went through Snapshots.load_latest, which renamed the newest snapshot to
    checkpoint-<frame>.unreadable inside the run folder (of a run that may be writing it right now),
    though eval-rl promises to write nothing there."""
    run = tmp_path / "run"
    train_rl(RLConfig(task="metaworld/door-open-v3", reward="sparse", out=str(run), num_train_frames=80,
                      num_seed_frames=20, eval_every_frames=0, num_eval_episodes=1, episode_steps=20, batch_size=8,
                      snapshot_every_frames=40, save_video=False, tensorboard=False, quiet=True, size=32),
             DrQV2Config(hidden_dim=32, feature_dim=16, num_expl_steps=20))
    assert {"checkpoint-00000040", "checkpoint-00000080"} <= set(os.listdir(run))
    state = next(p for p in (run / "checkpoint-00000080").iterdir() if p.name.startswith("state"))
    state.write_bytes(state.read_bytes()[:-7] + b"garbage")  # same size, other bytes: fails its checksum
    before = _listing(run)
    with pytest.warns(UserWarning, match="checkpoint-00000080"):
        out = evaluate_run(str(run), episodes=1)
    assert out["frame"] == 40 and out["episodes"] == 1
    assert _listing(run) == before  # nothing renamed, nothing written


def test_the_rnd_reward_keeps_its_name_and_update_interval(tmp_path):
    """Before: make_reward_source("rnd") passed the update interval where the name goes, so the source
    was named 100 (in the run's fingerprint, the video label) and updated RND every 100 steps
    whatever --rnd-update-interval said."""
    from mmreward.robotics.rl import make_reward_source

    src = make_reward_source("rnd", rnd_update_interval=7)
    assert src.name == "rnd" and src.update_interval == 7
    run = tmp_path / "run"
    train_rl(RLConfig(task="metaworld/door-open-v3", reward="rnd", out=str(run), num_train_frames=16,
                      num_seed_frames=0, eval_every_frames=0, num_eval_episodes=1, episode_steps=4, batch_size=4,
                      save_video=False, tensorboard=False, quiet=True, size=64, action_repeat=2,
                      rnd_update_interval=2),
             DrQV2Config(hidden_dim=32, feature_dim=16, num_expl_steps=2))
    head = open(run / "train.csv").readline().strip().split(",")
    assert "rnd_loss" in head  # updated every 2 agent steps: within the 8 steps of this run
    import json

    assert json.loads((run / "train_config.json").read_text())["fingerprint"]["reward"] == "rnd"


def test_resuming_with_another_camera_or_episode_length_is_refused(tmp_path):
    """Before: a run resumed with another --camera or --episode-steps went on silently, mixing views /
    episode lengths in one replay buffer (the fingerprint held neither)."""
    from mmreward.robotics.rl import Workspace

    agent = dict(hidden_dim=32, feature_dim=16, num_expl_steps=2)
    base = dict(task="metaworld/door-open-v3", reward="sparse", out=str(tmp_path), num_train_frames=8,
                num_seed_frames=0, eval_every_frames=0, num_eval_episodes=1, episode_steps=4, batch_size=4,
                save_video=False, tensorboard=False, quiet=True, size=32)
    train_rl(RLConfig(**base), DrQV2Config(**agent))
    for change, named in [(dict(camera="corner3"), "camera"), (dict(episode_steps=5), "episode_steps: saved 4, now 5")]:
        with pytest.raises(ValueError, match=f"other settings.*{named}"):
            Workspace(RLConfig(**{**base, **change, "num_train_frames": 16}), DrQV2Config(**agent))
    # the default camera named explicitly is the same run: it continues
    s = train_rl(RLConfig(**{**base, "camera": "corner", "num_train_frames": 16}), DrQV2Config(**agent))
    assert s["frames"] == 16 and s["episodes"] == 2



class _StubEnv:
    """Where the workspace reads a pixel env before training (no MuJoCo: constructing a Workspace
    writes the run's train_config.json, which a resume checks as it checks a snapshot)."""

    def __init__(self, *args, max_steps=None, **kw):
        import types

        import numpy as np

        self.action_space = types.SimpleNamespace(low=-np.ones(4), high=np.ones(4))
        self.action_dim, self.max_steps = 4, max_steps or 500

    def close(self):
        pass


def _workspace(**kw):
    from mmreward.robotics.rl import Workspace

    ws = Workspace(RLConfig(**kw), DrQV2Config(hidden_dim=32, feature_dim=16, num_expl_steps=2))
    ws.close()


def test_resuming_with_another_nstep_batch_or_replay_size_is_refused(tmp_path, monkeypatch):
    """Before: a run resumed with another --nstep, --batch-size or --replay-buffer-size went on
    silently: the agent continued on returns / batches defined differently from the run it resumed."""
    import mmreward.robotics.envs as envs

    monkeypatch.setattr(envs, "make_env", _StubEnv)
    base = dict(task="metaworld/door-open-v3", reward="sparse", out=str(tmp_path), num_train_frames=8,
                num_seed_frames=0, eval_every_frames=0, num_eval_episodes=1, episode_steps=4, batch_size=4,
                save_video=False, tensorboard=False, quiet=True, size=32)
    _workspace(**base)
    for change, named in [(dict(nstep=2), r"nstep: saved 3 \(the default\), now 2"), (dict(batch_size=8), "batch_size: saved 4, now 8"),
                          (dict(replay_buffer_size=1000), "replay_buffer_size"),
                          (dict(update_every_steps=1), "update_every_steps")]:
        with pytest.raises(ValueError, match=f"other settings.*{named}"):
            _workspace(**{**base, **change, "num_train_frames": 16})
    # length, logging and the evaluation schedule are not part of it: the run continues
    _workspace(**{**base, "num_train_frames": 16, "quiet": False, "eval_every_frames": 100, "tensorboard": True})
    # a setting back at its default now is named with the default's value
    _workspace(**{**base, "out": str(tmp_path / "n2"), "nstep": 2})
    with pytest.raises(ValueError, match=r"nstep: saved 2, now 3 \(the default\)"):
        _workspace(**{**base, "out": str(tmp_path / "n2"), "num_train_frames": 16})


def test_resuming_with_another_reward_model_is_refused_a_moved_copy_resumes(tmp_path, monkeypatch):
    """Before: --model was no part of the run's fingerprint: a run resumed with another reward model
    relabelled its new episodes with it, next to replay episodes paid by the first one."""
    import shutil

    import mmreward.robotics.envs as envs
    from mmreward.robotics.pretrained import pretrained_path
    from mmreward.robotics.reward.diffusion_reward import DiffusionReward

    monkeypatch.setattr(envs, "make_env", _StubEnv)
    a, b = tmp_path / "model_a", tmp_path / "model_b"
    shutil.copytree(pretrained_path(), a)
    other = DiffusionReward.from_pretrained(str(a))
    other.config.success_scale = 2.0
    other.save_pretrained(str(b))
    base = dict(task="metaworld/door-open-v3", reward="rnd", out=str(tmp_path / "run"), num_train_frames=8,
                num_seed_frames=0, eval_every_frames=0, num_eval_episodes=1, episode_steps=4, batch_size=4,
                save_video=False, tensorboard=False, quiet=True, size=64, checkpoint=str(a))
    _workspace(**base)
    for model in (str(b), None):  # another model; the shipped one
        with pytest.raises(ValueError, match="other settings.*reward_model"):
            _workspace(**{**base, "checkpoint": model})
    moved = tmp_path / "moved"
    shutil.move(str(a), moved)
    _workspace(**{**base, "checkpoint": str(moved), "num_train_frames": 16})


@pytest.mark.parametrize("field,value", [("nstep", 2.5), ("batch_size", "8"), ("num_seed_frames", 10.0),
                                         ("episode_steps", 4.5), ("seed", True)])
def test_rl_config_counts_must_be_integers(field, value):
    """Before: RLConfig(nstep=2.5) passed validate and reached the replay buffer; "8" failed in a
    comparison that named nothing."""
    with pytest.raises(ValueError, match=f"{field} must be an integer, got {value!r}"):
        RLConfig(**{field: value}).validate()

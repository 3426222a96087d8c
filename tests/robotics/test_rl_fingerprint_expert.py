"""train-rl's resume fingerprint: the --expert-data episodes the learned reward's statistics / goal frames come
from are part of it (a resume with other expert data used to mix rewards silently; a moved copy of the same
episodes still resumes), and numpy numbers in RLConfig are fingerprinted as the Python numbers they equal."""
import json
import os
import shutil
import sys
import types

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from mmreward.core.checkpoint import fingerprint_text  # noqa: E402
from mmreward.robotics.data.episodes import Episode, episode_entry, save_episode, update_manifest  # noqa: E402
from mmreward.robotics.rl import DrQV2Config, RLConfig  # noqa: E402
from mmreward.robotics.rl.workspace import Workspace  # noqa: E402


def _expert_folder(folder, seed, lengths=(6, 7), size=32):
    rng = np.random.default_rng(seed)
    entries = []
    os.makedirs(folder, exist_ok=True)
    for i, t in enumerate(lengths):
        ep = Episode(frames=rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8), actions=np.zeros((t - 1, 2)),
                     rewards=np.zeros(t - 1), success=np.zeros(t - 1, bool))
        save_episode(os.path.join(folder, f"ep{i}.npz"), ep)
        entries.append(episode_entry(f"ep{i}.npz", ep, task="door-open-v3", policy="expert"))
    update_manifest(folder, entries)
    return str(folder)


def _bare_workspace(config, expert_digest=None):
    """A Workspace holding only what _fingerprint reads (no environments)."""
    ws = Workspace.__new__(Workspace)
    ws.cfg, ws.agent_cfg, ws.task = config, DrQV2Config(), "door-open-v3"
    ws.train_env = types.SimpleNamespace(camera=None)
    ws.reward = types.SimpleNamespace(name="diffusion", model=None, model_digest=None, expert_digest=expert_digest)
    return ws


def test_numpy_numbers_in_the_config_fingerprint_as_python_numbers():
    plain = _bare_workspace(RLConfig(batch_size=4, nstep=2, seed=3, motion_scale=0.5))
    numpy = _bare_workspace(RLConfig(batch_size=np.int64(4), nstep=np.int32(2), seed=np.uint32(3),
                                     motion_scale=np.float32(0.5)))
    assert fingerprint_text(numpy._fingerprint()) == fingerprint_text(plain._fingerprint())
    saved = json.loads(fingerprint_text(numpy._fingerprint()))  # as the run's snapshot and train_config hold it
    assert saved["batch_size"] == 4 and type(saved["batch_size"]) is int and type(saved["seed"]) is int


def test_the_expert_digest_is_part_of_the_fingerprint_only_when_expert_data_was_used():
    digest = {"episodes": 2, "sha256": "0123456789abcdef"}
    assert _bare_workspace(RLConfig(), digest)._fingerprint()["expert_data"] == digest
    assert "expert_data" not in _bare_workspace(RLConfig())._fingerprint()  # runs saved before keep resuming


def test_reward_source_digests_the_expert_frames_it_used_not_their_path(tmp_path):
    from mmreward.robotics.rl.rewards import make_reward_source
    from test_diffusion_reward import make_reward

    make_reward(rnd=False).save_pretrained(str(tmp_path / "dr"))  # no statistics: fitted on the experts
    kw = dict(checkpoint=str(tmp_path / "dr"), size=32)
    a = _expert_folder(tmp_path / "a", seed=0)
    moved = str(tmp_path / "elsewhere" / "copy")
    shutil.copytree(a, moved)
    b = _expert_folder(tmp_path / "b", seed=1)
    da = make_reward_source("diffusion-relative", task="door-open-v3", expert_data=a, **kw).expert_digest
    assert da is not None and da["episodes"] == 2
    assert make_reward_source("diffusion-relative", task="door-open-v3", expert_data=moved, **kw).expert_digest == da
    assert make_reward_source("diffusion-relative", task="door-open-v3", expert_data=b, **kw).expert_digest != da


class _FakeEnv:
    """What the Workspace reads of an environment before training (no MuJoCo: the test is about the fingerprint)."""

    max_steps, action_dim, camera = 10, 4, None
    action_space = types.SimpleNamespace(low=-np.ones(4, np.float32), high=np.ones(4, np.float32))

    def close(self):
        pass


def test_resume_with_other_expert_data_is_refused(tmp_path, monkeypatch, capsys):
    import mmreward.robotics.envs as envs
    from test_diffusion_reward import make_reward

    monkeypatch.setattr(envs, "make_env", lambda *a, **k: _FakeEnv())
    make_reward(rnd=False).save_pretrained(str(tmp_path / "dr"))
    a, b = _expert_folder(tmp_path / "a", seed=0), _expert_folder(tmp_path / "b", seed=1)
    moved = str(tmp_path / "moved")
    shutil.copytree(a, moved)

    def workspace(expert_data):
        return Workspace(RLConfig(task="metaworld/door-open-v3", reward="diffusion-relative", out=str(tmp_path / "run"),
                                  checkpoint=str(tmp_path / "dr"), expert_data=expert_data, size=32, episode_steps=10,
                                  batch_size=np.int64(4), nstep=2, tensorboard=False, quiet=True, save_video=False),
                         DrQV2Config(hidden_dim=16, feature_dim=8, num_expl_steps=2))

    ws = workspace(a)
    try:
        ws.save_snapshot()
    finally:
        ws.close()
    with pytest.raises(ValueError, match=r"expert_data\.sha256: saved '[0-9a-f]{16}', now '[0-9a-f]{16}'"):
        workspace(b).close()
    workspace(moved).close()  # the same episodes elsewhere: resumes
    from mmreward.robotics.cli import main  # train-rl: one line naming the key, exit 2

    argv = ["train-rl", "--task", "metaworld/door-open-v3", "--reward", "diffusion-relative", "--out",
            str(tmp_path / "run"), "--model", str(tmp_path / "dr"), "--size", "32", "--episode-steps", "10",
            "--batch-size", "4", "--nstep", "2", "--hidden-dim", "16", "--feature-dim", "8", "--num-expl-steps", "2",
            "--no-save-video", "--no-tensorboard", "--quiet", "--threads", "1"]
    capsys.readouterr()
    assert main([*argv, "--expert-data", b]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "(expert_data.sha256: saved '" in err and "agent" not in err, err

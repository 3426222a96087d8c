"""`mmreward robotics score` and the Python `score_parts` it runs give the same rewards; `fit_statistics`
(the Python side of `fit-stats`) names a path given where frames are due instead of reading its characters."""
import json

import numpy as np
import pytest
import torch

from mmreward.core.inputs import Episode

from test_diffusion_reward import frames, make_reward


@pytest.fixture(scope="module")
def reward():
    torch.set_num_threads(1)
    dr = make_reward(rnd=False)
    dr.fit_statistics([frames(6, s) for s in range(2)])
    return dr


@pytest.mark.parametrize("bad, names", [
    ("/data/expert_episodes", "got str '/data/expert_episodes'"),  # was "episode 0 must be ... got str" (its 1st char)
    (["/data/ep.npz"], "episode 0 is a path ('/data/ep.npz'), not frames"),
    ([Episode("/data/ep.npz")], "episode 0 is a path ('/data/ep.npz'), not frames"),
])
def test_fit_statistics_names_a_path_given_for_frames(reward, bad, names):
    with pytest.raises(TypeError) as info:
        reward.fit_statistics(bad)
    assert names in str(info.value) and "load_episode_folder" in str(info.value)


def test_fit_statistics_takes_episodes_and_their_frames_alike(reward):
    eps = [frames(6, s) for s in range(2)]
    assert reward.fit_statistics([Episode(e) for e in eps]) == reward.fit_statistics(eps)


def test_cli_score_gives_the_rewards_of_score_parts(reward, tmp_path, capsys):
    from mmreward.robotics.cli import main

    model = str(tmp_path / "model")
    reward.save_pretrained(model)
    ep = frames(5, 2).numpy()
    np.savez(tmp_path / "ep.npz", frames=ep)
    capsys.readouterr()
    assert main(["score", "--model", model, str(tmp_path / "ep.npz"), "--batch-size", "2", "--json",
                 "--no-progress", "--threads", "1"]) == 0
    got = json.loads(capsys.readouterr().out)["episodes"][0]["rewards"]
    (want,) = reward.score_parts([Episode(str(tmp_path / "ep.npz"))], batch_size=2)
    assert got == want.tolist()
    assert main(["score", "--model", model, str(tmp_path / "ep.npz"), "--batch-size", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "batch_size must be an integer >= 1, got 0" in err, err
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        reward.score_parts([Episode(ep)], batch_size=0)


def test_eval_rl_takes_the_device_evaluate_run_takes(tmp_path, capsys):
    from mmreward.robotics.cli import main

    assert main(["eval-rl", "--run", str(tmp_path), "--device", "gpu0"]) == 2
    err = capsys.readouterr().err
    assert "unknown device 'gpu0'" in err and len(err.strip().splitlines()) == 1

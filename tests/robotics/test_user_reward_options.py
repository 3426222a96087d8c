"""A Diffusion Reward user's options: config values of the wrong kind named, expert statistics that were
fitted for another reward refused (set on the config, through save → load, and on folders saved without
the record), goal-frame errors that say they are about the goal frames, and missing term statistics /
goal frames refused before the video model scores the episode."""
import json
import os
import re

import numpy as np
import pytest
import torch

from mmreward.core.checkpoint import CheckpointError
from mmreward.core.inputs import Episode
from mmreward.robotics.reward import DiffusionReward, DiffusionRewardConfig

from test_diffusion_reward import frames, make_reward


def fitted(**cfg):
    """A tiny model with expert statistics fitted on two short episodes (records the reward they are for)."""
    dr = make_reward(rnd=False, **cfg)
    dr.fit_statistics([frames(5, 1), frames(4, 2)])
    return dr


def reloaded(dr, tmp_path):
    """``dr`` saved and loaded again."""
    dr.save_pretrained(str(tmp_path / "m"))
    return DiffusionReward.from_pretrained(str(tmp_path / "m"))


def no_video_model(*args, **kwargs):
    raise AssertionError("the video model ran before the error")


@pytest.mark.parametrize("field,value", [("motion_scale", "4"), ("progress_scale", None), ("expl_scale", "0.5"),
                                         ("clip_min", "1"), ("use_std", "false"), ("noise", "no"), ("use_sparse", 1),
                                         ("goal_scale", True), ("displacement_cap", True)])
def test_config_values_of_the_wrong_kind_are_named(field, value):
    """``motion_scale="4"`` failed in math.isfinite ("must be real number, not str", no field named), and a
    flag set to the string "false" (truthy) or a bool where a weight belongs was used without a word."""
    with pytest.raises(ValueError, match=f"^{field} must be"):
        DiffusionRewardConfig(**{field: value}).validate()
    dr = make_reward(rnd=False, use_std=False)
    setattr(dr.config, field, value)
    with pytest.raises(ValueError, match=f"DiffusionReward.config: {field} must be"):
        dr(frames(3, 1))


def test_numpy_integers_are_taken_for_every_count():
    """batch_size / skip_step took a numpy integer, consistency_grid refused it."""
    DiffusionRewardConfig(consistency_grid=np.int64(8), batch_size=np.int64(4), skip_step=np.int64(9)).validate()


def test_statistics_fitted_for_another_reward_are_refused_not_misread(tmp_path):
    """The docs change a field by setting it (``dr.config.skip_step = 19``); the expert mean / std of the
    relative likelihood then z-scored an entropy (or another chain's bound) as if it were the fitted reward."""
    dr = fitted(reward_type="relative_likelihood", entropy_estimator="x0_entropy", batch_size=4)
    ep = frames(5, 3)
    want = dr(ep)
    for field, value, said in (("reward_type", "entropy", "reward_type 'entropy' (fitted with 'relative_likelihood')"),
                               ("entropy_estimator", "vlb", "entropy_estimator 'vlb' (fitted with 'x0_entropy')"),
                               ("skip_step", 9, "skip_step 9 (fitted with 4)")):
        old = getattr(dr.config, field)
        setattr(dr.config, field, value)
        with pytest.raises(ValueError, match=re.escape(f"DiffusionReward.config: {said}") + ".*fit_statistics"):
            dr(ep)
        with pytest.raises(ValueError, match="fitted with"):
            dr.score([Episode(ep)])
        with pytest.raises(ValueError, match="fitted with"):  # the wrappers' path
            dr.combine(torch.zeros(5), ep)
        dr.config.use_std = False  # raw rewards: nothing to misread
        assert dr(ep).shape == (5,)
        dr.config.use_std = True
        setattr(dr.config, field, old)
    assert torch.equal(dr(ep), want)
    dr.config.compute_dtype = "bfloat16"  # a compute setting of the same estimate, not another reward
    assert dr(ep).shape == (5,)
    dr.config.compute_dtype = "float32"

    loaded = reloaded(dr, tmp_path)
    assert torch.equal(loaded(ep), want)
    loaded.config.skip_step = 9
    with pytest.raises(ValueError, match="skip_step 9 \\(fitted with 4\\)"):
        loaded(ep)
    loaded.fit_statistics([frames(5, 1), frames(4, 2)])  # refitted: the new setting is the fitted one
    assert loaded(ep).shape == (5,)

    lik = fitted(reward_type="likelihood")
    lik.config.entropy_estimator = "x0_entropy"  # not used by the likelihood: no refit needed
    assert lik(ep).shape == (5,)


def test_folders_saved_without_the_record_are_checked_against_their_config(tmp_path):
    """Folders saved before the record (the shipped ones) were fitted with their saved config."""
    import mmreward

    dr = fitted(reward_type="likelihood")
    folder = str(tmp_path / "m")
    dr.save_pretrained(folder)
    path = os.path.join(folder, "config.json")
    body = json.load(open(path))
    assert body["statistics"]["fitted_with"] == {"reward_type": "likelihood", "skip_step": 4}
    del body["statistics"]["fitted_with"]
    os.remove(os.path.join(folder, "manifest.json"))  # edited by hand, as a folder of mmreward 0.1 has none
    json.dump(body, open(path, "w"))
    old = DiffusionReward.from_pretrained(folder)
    old.config.reward_type = "entropy"
    with pytest.raises(ValueError, match="reward_type 'entropy' \\(fitted with 'likelihood'\\)"):
        old(frames(4, 1))
    body["statistics"]["fitted_with"] = {"reward_type": ["likelihood"]}
    json.dump(body, open(path, "w"))
    with pytest.raises(CheckpointError, match="statistics.fitted_with"):
        DiffusionReward.from_pretrained(folder)

    shipped = mmreward.load("metaworld-64")
    shipped.config.reward_type = "entropy"
    shipped.raw_reward_windows = no_video_model  # refused before any work
    with pytest.raises(ValueError, match="reward_type 'entropy' \\(fitted with 'relative_likelihood'\\)"):
        shipped(np.zeros((3, 64, 64, 3), np.uint8))


def test_goal_frame_errors_name_the_goal_frames():
    """set_goal / fit_goal_statistics said "frames must be 32x32 pixels": not that the goal frames (nor
    which goal set) were meant, and a bad goal set was found after the episodes before it were scored."""
    dr = fitted()
    with pytest.raises(TypeError, match="^goal frames must be uint8"):
        dr.set_goal(frames(2, 1).float())
    with pytest.raises(ValueError, match="^goal frames must be 32x32 pixels, got 16x16"):
        dr.set_goal(frames(2, 1)[:, :16, :16])
    with pytest.raises(ValueError, match="^goal frames is empty"):
        dr.set_goal(frames(2, 1)[:0])
    eps, goals = [frames(4, 1), frames(4, 2)], [frames(1, 3), frames(1, 4)[:, :16, :16]]
    dr.tokenize = no_video_model
    with pytest.raises(ValueError, match="^goals\\[1\\] must be 32x32 pixels"):
        dr.fit_goal_statistics(eps, goals)
    with pytest.raises(ValueError, match="^episode 1 must be 32x32 pixels"):
        dr.fit_goal_statistics([frames(4, 1), frames(4, 2)[:, :16, :16]], [frames(1, 3), frames(1, 4)])


@pytest.mark.parametrize("term", ["goal_frames", "goal", "motion", "displacement", "consistency", "ranker_goal"])
def test_missing_term_inputs_are_refused_before_the_video_model_runs(term):
    """A term without its statistics (or goal frames) was refused only after every window of the episode
    had gone through the video model (≈ 30 s for a 100-frame episode on a CPU)."""
    from mmreward.robotics.reward import ProgressConfig, ProgressModel

    dr = make_reward(rnd=False)
    dr.statistics.copy_(torch.tensor([-100.0, 5.0, 10.0], dtype=torch.float64))
    if term in ("goal_frames", "goal"):
        dr.config.goal_scale = 1.0
        if term == "goal":
            dr.set_goal(frames(1, 5))
    elif term == "ranker_goal":
        ranker = ProgressModel(ProgressConfig(image_size=32, channels=(4, 8), hidden_dim=8, goal_conditioned=True))
        ranker.statistics.copy_(torch.tensor([0.0, 1.0, 10.0, 0.0, 1.0], dtype=torch.float64))
        dr.set_progress(ranker)
    else:
        setattr(dr.config, f"{term}_scale", 1.0)
    dr.raw_reward_windows = no_video_model
    dr.tokenize = no_video_model
    said = {"goal_frames": "needs goal frames", "ranker_goal": "goal-conditioned: call set_goal"}.get(
        term, f"no {term} statistics")
    with pytest.raises(RuntimeError, match=said):
        dr(frames(4, 1))


def test_a_goal_conditioned_rankers_goal_errors_name_the_goal_frames():
    """ProgressModel.set_goal / fit_statistics(goals=...) said "frames must be 32x32 pixels" as well."""
    from mmreward.robotics.reward import ProgressConfig, ProgressModel

    ranker = ProgressModel(ProgressConfig(image_size=32, channels=(4, 8), hidden_dim=8, goal_conditioned=True))
    with pytest.raises(ValueError, match="^goal frames must be 32x32 pixels, got 16x16"):
        ranker.set_goal(frames(1, 1)[:, :16, :16])
    with pytest.raises(TypeError, match="uint8 goal frames"):
        ranker.set_goal(frames(1, 1).float())
    with pytest.raises(ValueError, match="^goals\\[1\\] must be 32x32 pixels"):
        ranker.fit_statistics([frames(4, 1), frames(4, 2)], goals=[frames(1, 3), frames(1, 4)[:, :16, :16]])


def test_loading_in_bfloat16_points_to_compute_dtype(tmp_path):
    """``mmreward.load(..., dtype="bfloat16")`` said only "computes in float32: leave dtype unset", while the
    docs offer bfloat16 as ``compute_dtype``; the ranker and RND have no such option and say nothing of it."""
    import mmreward
    from mmreward.core.device import DeviceError
    from mmreward.robotics.reward import ProgressConfig, ProgressModel

    with pytest.raises(DeviceError, match="leave dtype unset; for bfloat16 .*config.compute_dtype = 'bfloat16'"):
        mmreward.load("metaworld-64", dtype="bfloat16")
    ranker = ProgressModel(ProgressConfig(image_size=32, channels=(4, 8), hidden_dim=8))
    ranker.statistics.copy_(torch.tensor([0.0, 1.0, 10.0, 0.0, 1.0], dtype=torch.float64))
    ranker.save_pretrained(str(tmp_path / "r"))
    with pytest.raises(DeviceError, match="leave dtype unset$"):
        mmreward.load(str(tmp_path / "r"), dtype=torch.bfloat16)


def test_score_command_names_flags_takes_compute_dtype_and_refuses_a_cap_without_its_term(tmp_path, capsys):
    """`robotics score` said "motion_scale must be …" for --motion-scale -1 (a field, not the flag given), had no
    --compute-dtype (the documented bfloat16 switch was reachable from fit-stats only), and took a
    --displacement-cap on a model whose displacement term is off, changing nothing."""
    from mmreward.robotics.cli import main

    folder = str(tmp_path / "dr")
    fitted(batch_size=4).save_pretrained(folder)
    episode = str(tmp_path / "ep.npz")
    np.savez(episode, frames=frames(6, 3).numpy())
    quiet = ["--threads", "1"]
    assert main(["score", "--model", folder, episode, "--motion-scale", "-1", *quiet]) == 2
    assert capsys.readouterr().err.strip().endswith("--motion-scale must be a finite number >= 0, got -1.0")
    assert main(["score", "--model", folder, episode, "--displacement-cap", "3", *quiet]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--displacement-cap" in err and "--displacement-scale" in err
    seen = []
    real = DiffusionReward.score_parts

    def spy(self, *args, **kwargs):
        seen.append(self.config.compute_dtype)
        return real(self, *args, **kwargs)

    import unittest.mock

    with unittest.mock.patch.object(DiffusionReward, "score_parts", spy):
        assert main(["score", "--model", folder, episode, "--compute-dtype", "bfloat16", "--json", *quiet]) == 0
    assert seen == ["bfloat16"]
    assert len(json.loads(capsys.readouterr().out)["episodes"][0]["rewards"]) == 6


def test_fit_stats_names_the_reward_batch_size_flag(tmp_path, capsys):
    from mmreward.robotics.cli import main

    # checked before any folder is read: the folders need not exist
    assert main(["fit-stats", "--codec", str(tmp_path / "c"), "--video", str(tmp_path / "v"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "o"), "--reward-batch-size", "0", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--reward-batch-size" in err, err


def test_a_consistency_grid_changed_after_fitting_is_refused_until_refitted(tmp_path):
    """The consistency std fitted on one grid z-scored another grid's consistency (0.36 at grid 4 against 0.25 at
    16 on one episode), without a word."""
    dr = fitted(consistency_scale=2.0, consistency_grid=4, batch_size=4)
    ep = frames(6, 3)
    want = dr(ep)
    dr.config.consistency_grid = 8
    with pytest.raises(ValueError, match="consistency_grid 8: the consistency statistics were fitted on a 4 × 4"):
        dr(ep)
    dr.config.consistency_grid = 4
    loaded = reloaded(dr, tmp_path)
    assert torch.equal(loaded(ep), want)
    loaded.config.consistency_grid = 8
    with pytest.raises(ValueError, match="fitted on a 4 × 4"):
        loaded(ep)
    loaded.fit_consistency_statistics([frames(5, 1), frames(4, 2)])
    assert loaded(ep).shape == (6,)
    loaded.config.consistency_scale = 0.0  # the term off: its grid does not matter
    loaded.config.consistency_grid = 2
    assert loaded(ep).shape == (6,)

"""Unusual inputs from users' own RL loops: the Gymnasium reward wrapper on a plain (simulator-free)
env whose frames come from ``frame_fn`` / ``render``, ``relabel_episode``'s success flags, episodes
given as lists of frames, success errors that name the episode file, and a progress ranker refusing
1-frame episodes before it trains."""
import os

import numpy as np
import pytest
import torch

from mmreward.core.data import DataError
from mmreward.core.inputs import Episode

from test_diffusion_reward import frames, make_reward

gym = pytest.importorskip("gymnasium")


class FrameEnv(gym.Env):
    """Observations: uint8 [size, size, 3] frames drawn from a seeded generator; 3 steps, then truncated."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, size=32, steps=3):
        self.size, self.steps = size, steps
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.render_mode = "rgb_array"

    def _frame(self):
        self._last = self.np_random.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8)
        return self._last

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        return self._frame(), 0.0, False, self.t >= self.steps, {"success": self.t == self.steps}

    def render(self):
        return self._last


def fitted(**cfg):
    dr = make_reward(rnd=False, **cfg)
    dr.statistics.copy_(torch.tensor([-100.0, 5.0, 10.0], dtype=torch.float64))
    return dr


def test_wrapper_refuses_float_frames_instead_of_casting_them():
    """A frame_fn giving float images in [0, 1] used to be cast to uint8 (every pixel 0 or 1) and
    scored without a word; it is now one error naming frame_fn."""
    from mmreward.robotics.wrappers import DiffusionRewardWrapper

    dr = fitted()
    env = DiffusionRewardWrapper(FrameEnv(), dr, frame_fn=lambda obs, e: obs.astype(np.float32) / 255)
    with pytest.raises(TypeError, match=r"frame_fn\(obs, env\) must give a uint8 frame.*float32"):
        env.reset(seed=0)
    env = DiffusionRewardWrapper(FrameEnv(), dr, frame_fn=lambda obs, e: obs[None])
    with pytest.raises(ValueError, match=r"frame_fn\(obs, env\) must give one uint8 frame \[H, W, 3\]"):
        env.reset(seed=0)
    with pytest.raises(ValueError, match="frames are 64x64 but the reward model takes 32x32"):
        DiffusionRewardWrapper(FrameEnv(size=64), dr).reset(seed=0)
    # a torch frame from frame_fn is fine, and scores as the numpy one does
    a = DiffusionRewardWrapper(FrameEnv(), dr)
    b = DiffusionRewardWrapper(FrameEnv(), dr, frame_fn=lambda obs, e: torch.from_numpy(obs.copy()))
    a.reset(seed=1), b.reset(seed=1)
    assert a.step(np.zeros(2, np.float32))[1] == b.step(np.zeros(2, np.float32))[1]


def test_wrapper_matches_relabel_across_resets_and_refuses_an_ignored_success_term():
    """Episode 2's rewards use only episode 2's frames (the history is cleared at reset): they equal
    a relabel of episode 2 alone. use_success with a model that ignores success is refused."""
    from mmreward.robotics.wrappers import DiffusionRewardWrapper, relabel_episode

    dr = fitted(noise=False)
    env = DiffusionRewardWrapper(FrameEnv(steps=4), dr, use_success=True)
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        seen, rewards, flags, done = [obs], [], [], False
        while not done:
            obs, r, term, trunc, info = env.step(np.zeros(2, np.float32))
            seen.append(obs), rewards.append(r), flags.append(info["success"])
            done = term or trunc
        np.testing.assert_allclose(rewards, relabel_episode(dr, np.stack(seen), flags), atol=1e-4)
    dr.config.use_sparse = False
    with pytest.raises(ValueError, match="use_sparse=False"):
        DiffusionRewardWrapper(FrameEnv(), dr, use_success=True)


def test_relabel_checks_success_per_transition():
    from mmreward.robotics.wrappers import relabel_episode

    dr = fitted()
    ep = frames(5, 1)  # reset frame + 4 steps
    base = relabel_episode(dr, ep)
    np.testing.assert_allclose(relabel_episode(dr, ep, [0, 0, 1, 1]) - base, [0, 0, 1, 1], atol=1e-5)
    with pytest.raises(ValueError, match=r"one flag per transition \(4 for 5 frames\), got 5"):
        relabel_episode(dr, ep, [0, 0, 0, 1, 1])  # one per frame: the reset frame's is added here
    with pytest.raises(DataError, match="booleans or numbers"):
        relabel_episode(dr, ep, ["no", "no", "yes", "yes"])  # was an obscure torch conversion error
    with pytest.raises(DataError, match=r"flat list.*\[4, 2\]"):
        relabel_episode(dr, ep, np.ones((4, 2)))  # was flattened into 8 values
    with pytest.raises(TypeError, match=r"uint8 \[T\+1, H, W, 3\]"):
        relabel_episode(dr, ep.float() / 255)
    assert np.array_equal(relabel_episode(dr, list(ep.numpy())), base)  # a list of frames


def test_episode_frames_as_a_list_of_frames():
    """A list of uint8 frames (what an RL loop collects) scores as the stacked array; mixed shapes /
    dtypes are one error naming the frame."""
    dr = fitted()
    ep = frames(6, 3)
    want = dr(ep)
    for given in ([f.numpy() for f in ep], list(ep), tuple(f.numpy() for f in ep)):
        assert torch.equal(dr.score_parts([Episode(given)])[0], want)
    bad = [f.numpy() for f in ep]
    bad[3] = bad[3][:16]
    with pytest.raises(DataError, match=r"input 0: field 'frames': frame 3 is .*\[16, 32, 3\] but frame 0"):
        dr.score([Episode(bad)])
    bad = [f.numpy() for f in ep]
    bad[2] = bad[2].astype(np.float32)
    with pytest.raises(DataError, match="frame 2 is torch.float32"):
        dr.score([Episode(bad)])
    with pytest.raises(DataError, match="list of frames"):
        dr.score([Episode([ep.numpy()])])  # a list holding one episode array is not a list of frames


def test_success_errors_of_a_file_name_the_file(tmp_path):
    dr = fitted()
    path = str(tmp_path / "clip.npz")
    np.savez(path, frames=frames(4, 2).numpy(), success=np.array([0, 1]))
    from mmreward.robotics.data.inputs import find_episodes

    (src,) = find_episodes([path], with_success=True)
    with pytest.raises(DataError, match=r"input 0: .*clip\.npz: field 'success' must have one value per frame \(4\)"):
        dr.score([src.input])


def test_progress_ranker_refuses_one_frame_episodes_before_training(tmp_path):
    """A 1-frame episode used to fail only in the statistics fitted after the whole training run."""
    from mmreward.robotics.reward import ProgressConfig, train_progress

    eps = [frames(8, 0), frames(1, 1), frames(8, 2)]
    out = str(tmp_path / "run")
    with pytest.raises(ValueError, match="episode 1 has 1 frame"):
        train_progress(eps, ProgressConfig(image_size=32, channels=(4, 8), hidden_dim=8), out, steps=2,
                       show_progress=False)
    assert not os.path.exists(os.path.join(out, "metrics.csv"))


def test_config_fields_set_after_construction_are_checked_at_use():
    """The docs change terms by setting config fields (``dr.config.motion_scale = 4.0``): a bad value set
    that way used to be scored (an unknown reward_type as a likelihood, a negative δ subtracting)."""
    dr = fitted()
    ep = frames(5, 1)
    want = dr(ep)
    dr.config.reward_type = "entropi"
    with pytest.raises(ValueError, match=r"DiffusionReward.config: reward_type must be one of"):
        dr(ep)
    with pytest.raises(ValueError, match=r"DiffusionReward.config: reward_type"):
        dr.score([Episode(ep)])
    dr.config.reward_type = "entropy"
    dr.config.displacement_scale = -1.0
    with pytest.raises(ValueError, match=r"displacement_scale must be a finite number >= 0"):
        dr(ep)
    dr.config.displacement_scale = 0.0
    assert torch.equal(dr(ep), want)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_window_batch_size_is_checked_not_silently_empty(bad):
    """``dr(frames, batch_size=-2)`` used to return no rewards at all (an empty range of batches) and
    0 fell back to the default without a word."""
    dr = fitted()
    ep = frames(5, 1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        dr(ep, batch_size=bad)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        dr.raw_reward_windows(dr.tokenize(ep), batch_size=bad)
    assert dr(ep, batch_size=np.int64(2)).shape == (5,)


def _episode_folder(folder, tasks_lengths, size=32, seed=0):
    from mmreward.robotics.data.episodes import Episode as Stored, episode_entry, save_episode, update_manifest

    rng = np.random.default_rng(seed)
    entries = []
    for i, (task, T) in enumerate(tasks_lengths):
        ep = Stored(frames=rng.integers(0, 256, (T, size, size, 3), dtype=np.uint8), actions=np.zeros((T - 1, 2)),
                    rewards=np.zeros(T - 1), success=np.zeros(T - 1, bool))
        name = f"ep{i}.npz"
        save_episode(os.path.join(folder, name), ep)
        entries.append(episode_entry(name, ep, task=task, policy="expert"))
    os.makedirs(folder, exist_ok=True)
    update_manifest(folder, entries)


def test_rl_reward_fits_statistics_on_an_expert_data_folder(tmp_path):
    """``--expert-data`` used to fail with IndexError (it walked the folder's frame windows as if they were
    episodes); the task's own episodes give the statistics and the goal frames."""
    from mmreward.robotics.rl.rewards import make_reward_source

    dr = fitted()  # saved in entropy mode: diffusion-relative refits its statistics on the experts
    dr.save_pretrained(str(tmp_path / "dr"))
    data = str(tmp_path / "experts")
    _episode_folder(data, [("door-open-v3", 6), ("drawer-open-v3", 5), ("door-open-v3", 7)])
    src = make_reward_source("diffusion-relative", task="door-open-v3", checkpoint=str(tmp_path / "dr"), size=32,
                             expert_data=data, goal_scale=1.0)
    assert src.model.config.reward_type == "relative_likelihood"
    assert int(src.model.statistics[2]) == 6 + 7  # the task's two episodes, not the drawer one
    assert src.model.goal_tokens.shape[0] == 2
    r = src(frames(4, 9).numpy(), np.zeros(3, np.float32), np.zeros(3, bool))
    assert r.shape == (3,) and np.isfinite(r).all()


def test_rl_reward_callable_returning_nan_is_refused():
    from mmreward.robotics.rl.rewards import make_reward_source

    src = make_reward_source(lambda f: np.r_[np.zeros(len(f) - 1), np.nan])
    with pytest.raises(ValueError, match=r"NaN / inf rewards \(1 of 3, first at step 2\)"):
        src(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3), np.zeros(3, bool))
    ok = make_reward_source(lambda f: np.arange(len(f), dtype=np.float32))
    assert ok(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3), np.zeros(3, bool)).tolist() == [1, 2, 3]


def test_info_does_not_count_unlabelled_episodes_as_failures(tmp_path, capsys):
    """Imported videos have no success flags; `info` used to print them as '0 successful'."""
    from mmreward.robotics.cli import main
    from mmreward.robotics.data.episodes import Episode as Stored, episode_entry, save_episode, update_manifest

    folder = str(tmp_path / "eps")
    entries = []
    for i, labelled in enumerate((False, False)):
        ep = Stored(frames=np.zeros((3, 8, 8, 3), np.uint8), actions=np.zeros((2, 0)), rewards=np.full(2, np.nan),
                    success=np.zeros(2, bool), labelled=labelled)
        save_episode(os.path.join(folder, f"v{i}.npz"), ep)
        entries.append(episode_entry(f"v{i}.npz", ep, task="adroit-door", policy="demo"))
    ep = Stored(frames=np.zeros((3, 8, 8, 3), np.uint8), actions=np.zeros((2, 1)), rewards=np.zeros(2),
                success=np.array([False, True]))
    save_episode(os.path.join(folder, "e.npz"), ep)
    entries.append(episode_entry("e.npz", ep, task="door-open-v3", policy="expert"))
    update_manifest(folder, entries)
    assert main(["info", folder]) == 0
    out = capsys.readouterr().out
    assert "2 episodes, unlabelled (no success flags)" in out and "1 episodes, 1 successful" in out
    assert "0 successful" not in out


def test_fit_stats_and_train_video_name_a_frame_size_mismatch(tmp_path, capsys):
    from mmreward.robotics.cli import main

    dr = fitted()
    dr.codec.save_pretrained(str(tmp_path / "codec"))
    dr.video.save_pretrained(str(tmp_path / "video"))
    data = str(tmp_path / "big")
    _episode_folder(data, [("door-open-v3", 4)], size=64)
    assert main(["fit-stats", "--data", data, "--codec", str(tmp_path / "codec"), "--video", str(tmp_path / "video"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--data episodes have 64x64 frames but the --codec" in err and "takes 32x32" in err
    assert main(["train-video", "--data", data, "--codec", str(tmp_path / "codec"), "--out", str(tmp_path / "tv"),
                 "--steps", "2", "--no-progress"]) == 2
    assert "--data episodes have 64x64 frames" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "tv")


def test_wrapper_names_a_reward_model_it_cannot_use():
    from mmreward.robotics.wrappers import DiffusionRewardWrapper

    from test_reward_contract import fitted_ranker

    with pytest.raises(TypeError, match="reward_model must be a DiffusionReward.*got ProgressModel"):
        DiffusionRewardWrapper(FrameEnv(), fitted_ranker())  # was AttributeError: no attribute 'video'


@pytest.mark.parametrize("channels", [(), (8, 0), (8, -4, 8)])
def test_vqgan_channel_widths_are_named(channels):
    """``--set channels=`` used to report 'image_size 32 is not divisible by 2^-1'."""
    from mmreward.robotics.codec import VQGANConfig

    with pytest.raises(ValueError, match="channels must be one or more widths >= 1"):
        VQGANConfig(image_size=32, channels=channels).validate()
    VQGANConfig(image_size=32, channels=(np.int64(8), 8)).validate()


@pytest.mark.parametrize("field,value", [("dim", 0), ("context_dim", 0), ("token_shape", (4,)), ("token_shape", (4, 0))])
def test_video_model_sizes_are_checked(field, value):
    """dim / context_dim 0 used to build an empty network without a word; a 1-entry token_shape was an IndexError."""
    from mmreward.robotics.video import ConditionalVQDiffusion, VQDiffusionConfig

    from test_diffusion_reward import VIDEO

    with pytest.raises(ValueError, match=f"{field} must be"):
        ConditionalVQDiffusion(VQDiffusionConfig(**{**VIDEO, field: value}))


@pytest.mark.parametrize("field,value", [("noise_scale", float("nan")), ("noise_scale", -1.0), ("batch_size", 2.5),
                                         ("skip_step", 2.5), ("num_samples", 1.5), ("batch_size", "8"),
                                         ("seed", 2 ** 70), ("seed", 1.5)])
def test_reward_config_numbers_are_checked(field, value):
    """A NaN / negative noise_scale used to be scored (NaN Gumbel noise); fractional counts were a bare
    'float object cannot be interpreted as an integer' from deep inside the chain."""
    from mmreward.robotics.reward import DiffusionRewardConfig

    with pytest.raises(ValueError, match=f"{field} must be"):
        DiffusionRewardConfig(**{field: value}).validate()
    dr = fitted()
    setattr(dr.config, field, value)
    with pytest.raises(ValueError, match=f"DiffusionReward.config: {field} must be"):
        dr(frames(3, 1))


def test_a_reward_model_saved_in_half_loads_in_float32_and_scores(tmp_path):
    """Episode scorers run their frame pipeline in float32 (bfloat16 is the compute_dtype autocast), so a
    copy saved after ``.half()`` loads back in float32 instead of as a half model that cannot score."""
    import mmreward
    from mmreward.robotics.reward import RND, RNDConfig

    torch.manual_seed(0)
    rnd = RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=16, hidden_dim=16))
    frames = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    want = rnd.score([{"frames": frames}])
    rnd.half().save_pretrained(str(tmp_path / "rnd"))
    loaded = mmreward.load(str(tmp_path / "rnd"))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    torch.testing.assert_close(loaded.score([{"frames": frames}]), want, rtol=1e-2, atol=1e-2)

"""A user's own RL code around mmreward's rewards: the Gymnasium reward wrapper on a tiny pixel env
of their own (not Meta-World), inside vector envs and other gymnasium wrappers, episode ends and
autoreset, relabelling stored episodes with any of the robotics reward models."""
import functools
import importlib.util

import numpy as np
import pytest
import torch

from test_diffusion_reward import make_reward

gym = pytest.importorskip("gymnasium")


class DotEnv(gym.Env):
    """A white square moving on black: uint8 [size, size, 3] observations (or channels-first), `steps`
    steps then truncated; info carries the success flag under `success_key` (None: no flag)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, size=32, steps=3, chw=False, success_key="success"):
        self.size, self.steps, self.chw, self.success_key = size, steps, chw, success_key
        shape = (3, size, size) if chw else (size, size, 3)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.render_mode = "rgb_array"

    def render(self):
        img = np.zeros((self.size, self.size, 3), np.uint8)
        x, y = np.clip(self.pos, 0, self.size - 4).astype(int)
        img[y:y + 4, x:x + 4] = 255
        return img

    def _obs(self):
        img = self.render()
        return img.transpose(2, 0, 1).copy() if self.chw else img

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = self.np_random.uniform(0, self.size - 4, 2), 0
        return self._obs(), {}

    def step(self, action):
        self.pos, self.t = self.pos + 3 * np.asarray(action), self.t + 1
        info = {} if self.success_key is None else {self.success_key: self.t == self.steps}
        return self._obs(), 0.0, False, self.t >= self.steps, info


def fitted(**cfg):
    dr = make_reward(rnd=cfg.pop("rnd", False), **cfg)
    dr.statistics.copy_(torch.tensor([-100.0, 5.0, 10.0], dtype=torch.float64))
    dr.displacement_statistics.copy_(torch.tensor([0.2, 10.0], dtype=torch.float64))
    return dr


def wrapped(dr, size=32, steps=3, chw=False, env_success_key="success", **kw):
    from mmreward.robotics.wrappers import DiffusionRewardWrapper

    return DiffusionRewardWrapper(DotEnv(size, steps, chw, env_success_key), dr, **kw)


def rollout(env, seed, n):
    obs, _ = env.reset(seed=seed)
    seen, rewards = [obs.copy()], []
    for _ in range(n):
        obs, r, *_ = env.step(np.ones(2, np.float32))
        seen.append(obs.copy()), rewards.append(r)
    return np.stack(seen), np.asarray(rewards)


def test_relabel_episode_takes_a_ranker_and_an_rnd():
    """relabel_episode(ranker or RND, frames) failed with "forward() got an unexpected keyword argument
    'success'" although its code meant to take them: now the per-frame scores of the frames after each
    action, and success= (which they have no term for) is refused by name."""
    from mmreward.robotics.reward import RND, RNDConfig
    from mmreward.robotics.wrappers import relabel_episode

    from test_reward_contract import fitted_ranker

    ep = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ranker = fitted_ranker()
    np.testing.assert_allclose(relabel_episode(ranker, ep), ranker(ep[1:]).numpy(), atol=1e-6)
    rnd = RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=16, hidden_dim=16))
    np.testing.assert_allclose(relabel_episode(rnd, ep.numpy()), rnd(ep[1:]).numpy(), atol=1e-6)
    assert relabel_episode(rnd, ep[:1]).shape == (0,)  # a 1-frame episode has no transition
    with pytest.raises(ValueError, match="ProgressModel has no success term"):
        relabel_episode(ranker, ep, success=[0, 0, 0, 1])
    with pytest.raises(ValueError, match="RND has none"):
        relabel_episode(rnd, ep, with_rnd=False)
    with pytest.raises(TypeError, match="reward_model must be a DiffusionReward, ProgressModel or RND"):
        relabel_episode(object(), ep)


def test_relabel_names_channels_first_and_float_frames():
    from mmreward.robotics.wrappers import relabel_episode

    dr = fitted()
    ep = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"channels-first.*permute\(0, 2, 3, 1\)"):
        relabel_episode(dr, ep.permute(0, 3, 1, 2))
    with pytest.raises(TypeError, match=r"\(x \* 255\)\.round\(\)"):
        relabel_episode(dr, ep.numpy().astype(np.float32) / 255)


def test_inner_autoreset_is_refused_instead_of_mixing_episodes():
    """With gymnasium's Autoreset inside the wrapper, the step after an episode's end reset the env
    without the wrapper seeing a reset(): the new episode was scored with the old one's frames (and its
    displacement measured from the old reset frame), silently."""
    from mmreward.robotics.wrappers import DiffusionRewardWrapper

    env = DiffusionRewardWrapper(gym.wrappers.Autoreset(DotEnv(steps=2)), fitted(displacement_scale=1.0))
    env.reset(seed=0)
    env.step(np.ones(2, np.float32))
    *_, truncated, _ = env.step(np.ones(2, np.float32))
    assert truncated
    with pytest.raises(RuntimeError, match=r"episode ended.*call reset\(\).*Autoreset wrapper belongs outside"):
        env.step(np.ones(2, np.float32))
    env.reset(seed=1)  # a reset starts a new episode as before
    env.step(np.ones(2, np.float32))


def test_vector_env_autoreset_starts_each_episode_history_at_its_reset():
    """Wrapped per sub-env, a vector env's autoreset goes through the wrapper's reset(): every episode's
    rewards are those of a relabel of that episode alone (exact with noise=False in entropy mode)."""
    from mmreward.robotics.wrappers import DiffusionRewardWrapper, relabel_episode

    dr = fitted(noise=False, displacement_scale=1.0)
    venv = gym.vector.SyncVectorEnv([lambda: DiffusionRewardWrapper(DotEnv(steps=3), dr)])
    obs, _ = venv.reset(seed=3)
    episodes = []
    for _ in range(2):  # NEXT_STEP autoreset: 3 steps, then one step that only resets (reward 0)
        seen, rewards = [obs[0].copy()], []
        for t in range(3):
            obs, r, term, trunc, _ = venv.step(np.ones((1, 2), np.float32))
            seen.append(obs[0].copy()), rewards.append(r[0])
        assert trunc[0]
        episodes.append((np.stack(seen), np.asarray(rewards)))
        obs, r, *_ = venv.step(np.ones((1, 2), np.float32))
        assert r[0] == 0.0
    venv.close()
    assert not np.array_equal(episodes[0][0][0], episodes[1][0][0])
    for frames, got in episodes:
        np.testing.assert_allclose(got, relabel_episode(dr, frames), atol=1e-4)


def test_wrapping_a_vector_env_says_to_wrap_each_sub_env():
    from mmreward.robotics.wrappers import DiffusionRewardWrapper

    venv = gym.vector.SyncVectorEnv([lambda: DotEnv()])
    with pytest.raises(TypeError, match="not a vector env.*wrap each sub-env"):
        DiffusionRewardWrapper(venv, fitted())
    venv.close()


def test_use_success_needs_the_success_key_in_info():
    """use_success=True on an env that reports success as info['is_success'] (gymnasium-robotics' Fetch
    convention) read the missing 'success' as False on every step: no sparse reward, no word."""
    dr = fitted(noise=False)
    env = wrapped(dr, use_success=True, env_success_key="is_success")
    env.reset(seed=0)
    with pytest.raises(KeyError, match=r"info\['success'\].*info keys: \['is_success'\].*success_key="):
        env.step(np.ones(2, np.float32))
    # success_key= reads it: the last step (success) pays success_scale more than without the term
    with_key = rollout(wrapped(dr, use_success=True, success_key="is_success", env_success_key="is_success"), 0, 3)[1]
    without = rollout(wrapped(dr, env_success_key="is_success"), 0, 3)[1]
    np.testing.assert_allclose(with_key - without, [0, 0, 1], atol=1e-5)


def test_with_rnd_false_leaves_out_the_rnd_term_as_relabel_does():
    """For AsyncVectorEnv subprocesses (whose model copies never see update_rnd) or the official
    per-batch bonus: the wrapper's reward without α·r_RND equals relabel_episode(..., with_rnd=False)."""
    from mmreward.robotics.wrappers import relabel_episode

    dr = fitted(noise=False, rnd=True)
    frames, rewards = rollout(wrapped(dr, with_rnd=False), 0, 3)
    np.testing.assert_allclose(rewards, relabel_episode(dr, frames, with_rnd=False), atol=1e-4)
    _, with_rnd = rollout(wrapped(dr), 0, 3)
    bonus = dr.exploration_bonus(torch.from_numpy(frames[1:])).numpy()
    np.testing.assert_allclose(with_rnd, rewards + bonus, atol=1e-4)
    with pytest.raises(TypeError, match="with_rnd must be True or False"):
        wrapped(dr, with_rnd="no")


def test_other_resolution_error_names_a_resize_that_works():
    """A 48 px env next to a 32 px model: the error names resize_frame, and the frame_fn it suggests runs."""
    from mmreward.robotics.data.video import resize_frame

    dr = fitted()
    with pytest.raises(ValueError, match=r"48x48 but the reward model takes 32x32.*resize_frame\(env.render\(\), 32\)"):
        wrapped(dr, size=48).reset(seed=0)
    env = wrapped(dr, size=48, frame_fn=lambda obs, env: resize_frame(env.render(), 32))
    assert np.isfinite(rollout(env, 0, 2)[1]).all()


def test_channels_first_frame_fn_error_says_how_to_transpose():
    dr = fitted()
    env = wrapped(dr, chw=True, frame_fn=lambda obs, env: obs)
    with pytest.raises(ValueError, match=r"channels-first\? frame_fn=lambda obs, env: obs.transpose\(1, 2, 0\)"):
        env.reset(seed=0)
    # without frame_fn, channels-first observations fall back to env.render(), the same frames
    a = rollout(wrapped(dr, chw=True), 0, 2)[1]
    b = rollout(wrapped(dr), 0, 2)[1]
    np.testing.assert_array_equal(a, b)


def _wrapped_dot(dr):
    from mmreward.robotics.wrappers import DiffusionRewardWrapper

    torch.set_num_threads(1)
    return DiffusionRewardWrapper(DotEnv(steps=3), dr)


def test_async_vector_env_with_spawn_matches_sync():
    """The wrapper (and its model) pickle into spawned subprocesses; rewards equal the in-process ones."""
    dr = fitted()
    fns = [functools.partial(_wrapped_dot, dr)]
    sync = gym.vector.SyncVectorEnv(fns)
    sync.reset(seed=[4])
    expected = [sync.step(np.ones((1, 2), np.float32))[1] for _ in range(2)]
    sync.close()
    venv = gym.vector.AsyncVectorEnv(fns, context="spawn")
    try:
        venv.reset(seed=[4])
        got = [venv.step(np.ones((1, 2), np.float32))[1] for _ in range(2)]
    finally:
        venv.close()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def _sim_problem():
    if any(importlib.util.find_spec(m) is None for m in ("mujoco", "metaworld")):
        return "robotics extra not installed"
    from mmreward.robotics.envs.base import offscreen_render_problem

    return offscreen_render_problem()


@pytest.mark.skipif(_sim_problem() is not None, reason=str(_sim_problem()))
def test_pixel_env_used_after_close_is_named():
    """step() / reset() after close() failed with AttributeError: 'NoneType' object has no attribute 'step'."""
    from mmreward.robotics.wrappers import PixelGymEnv

    env = PixelGymEnv("door-open-v3", size=32, max_steps=3)
    env.reset(seed=0)
    env.close()
    env.close()  # twice is fine
    with pytest.raises(RuntimeError, match="environment is closed"):
        env.step(np.zeros(4, np.float32))
    with pytest.raises(RuntimeError, match="environment is closed"):
        env.reset(seed=0)


@pytest.mark.parametrize("autoreset,chw", [("NEXT_STEP", False), ("SAME_STEP", False), ("SAME_STEP", True)])
def test_vector_wrapper_scores_all_sub_envs_in_one_batch_as_per_env_wrappers_do(autoreset, chw):
    """DiffusionRewardVectorWrapper (new: one video-model batch per step for all sub-envs, the model in the
    main process) gives the per-env wrapper's rewards across autoresets in both autoreset modes, success
    flags included (SAME_STEP: the ended episode's last frame and flag come from final_obs / final_info)."""
    from gymnasium.vector import AutoresetMode

    from mmreward.robotics.wrappers import DiffusionRewardVectorWrapper, DiffusionRewardWrapper

    dr = fitted(noise=False, displacement_scale=1.0)
    mode = getattr(AutoresetMode, autoreset)
    per_env = gym.vector.SyncVectorEnv([lambda: DiffusionRewardWrapper(DotEnv(steps=3), dr, use_success=True)
                                        for _ in range(2)], autoreset_mode=mode)
    frame_fn = (lambda obs: obs.transpose(1, 2, 0)) if chw else None  # channels-first obs, frames from frame_fn
    batched = DiffusionRewardVectorWrapper(gym.vector.SyncVectorEnv([lambda: DotEnv(steps=3, chw=chw) for _ in range(2)],
                                                                    autoreset_mode=mode), dr, use_success=True,
                                           frame_fn=frame_fn)
    per_env.reset(seed=[0, 1]), batched.reset(seed=[0, 1])
    for t in range(8):
        act = np.full((2, 2), t % 2, np.float32)
        expected = per_env.step(act)[1]
        _, got, _, trunc, info = batched.step(act)
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"step {t}")
        np.testing.assert_allclose(info["diffusion_reward"], got, atol=1e-6)
    per_env.close(), batched.close()


def test_vector_wrapper_refuses_what_it_cannot_score():
    from gymnasium.vector import AutoresetMode

    from mmreward.robotics.wrappers import DiffusionRewardVectorWrapper

    dr = fitted()
    with pytest.raises(ValueError, match="DISABLED is not supported"):
        DiffusionRewardVectorWrapper(gym.vector.SyncVectorEnv([lambda: DotEnv()], autoreset_mode=AutoresetMode.DISABLED),
                                     dr)
    with pytest.raises(TypeError, match="use DiffusionRewardWrapper for one env"):
        DiffusionRewardVectorWrapper(DotEnv(), dr)
    env = DiffusionRewardVectorWrapper(gym.vector.SyncVectorEnv([lambda: DotEnv(chw=True)]), dr)
    with pytest.raises(ValueError, match=r"not uint8 \[num_envs, H, W, 3\] frames.*frame_fn"):
        env.reset(seed=0)
    env = DiffusionRewardVectorWrapper(gym.vector.SyncVectorEnv([lambda: DotEnv(chw=True)]), dr,
                                       frame_fn=lambda obs: obs.transpose(1, 2, 0))
    env.reset(seed=0)
    assert np.isfinite(env.step(np.ones((1, 2), np.float32))[1]).all()
    env = DiffusionRewardVectorWrapper(gym.vector.SyncVectorEnv([lambda: DotEnv(success_key="is_success")]), dr,
                                       use_success=True)
    env.reset(seed=0)
    with pytest.raises(KeyError, match=r"info\['success'\].*success_key="):
        env.step(np.ones((1, 2), np.float32))


def test_a_refused_reset_frame_leaves_no_episode_to_step():
    """A reset whose frame was refused (here: frame_fn failing on the new episode) cleared the history
    but kept the last episode's start: the next step() scored a 1-frame history against it."""
    dr = fitted(displacement_scale=1.0)
    fail = {"now": False}

    def frame_fn(obs, env):
        if fail["now"]:
            raise ValueError("camera unplugged")
        return obs

    env = wrapped(dr, frame_fn=frame_fn)
    rollout(env, 0, 2)  # the episode has not ended
    fail["now"] = True
    with pytest.raises(ValueError, match="camera unplugged"):
        env.reset(seed=1)
    fail["now"] = False
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step(np.ones(2, np.float32))

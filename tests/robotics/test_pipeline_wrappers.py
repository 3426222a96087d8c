"""Gymnasium integration: Meta-World pixel envs as gymnasium.Env (registered ids, env_checker),
the DiffusionRewardWrapper (online rewards from a rolling frame history) and the episode relabel
helper."""
import importlib.util
import sys
import warnings

import numpy as np
import pytest
import torch

_missing = [m for m in ("mujoco", "metaworld", "gymnasium") if importlib.util.find_spec(m) is None]


def _sim_problem():
    if _missing:
        return f"robotics extra not installed (missing {', '.join(_missing)})"
    from mmreward.robotics.envs.base import offscreen_render_problem

    return offscreen_render_problem()


pytestmark = pytest.mark.skipif(_sim_problem() is not None, reason=str(_sim_problem()))


def tiny_reward(size=32, **cfg):
    from mmreward.robotics.codec import VQGAN, VQGANConfig
    from mmreward.robotics.reward import RND, DiffusionReward, DiffusionRewardConfig, RNDConfig
    from mmreward.robotics.video import ConditionalVQDiffusion, VQDiffusionConfig

    torch.manual_seed(0)
    codec = VQGAN(VQGANConfig(image_size=size, channels=(8, 8, 8, 8), latent_dim=8, num_codes=16))
    video = ConditionalVQDiffusion(VQDiffusionConfig(num_codes=16, token_shape=(size // 8, size // 8), num_steps=20,
                                                     dim=32, depth=1, heads=2, context_dim=32))
    rnd = cfg.pop("rnd", None)
    rnd = RND(RNDConfig(image_size=size, channels=(4, 8, 8), feature_dim=16, hidden_dim=16)) if rnd else None
    dr = DiffusionReward(codec, video, DiffusionRewardConfig(**{"skip_step": 4, **cfg}), rnd)
    dr.statistics.copy_(torch.tensor([-150.0, 5.0, 10.0], dtype=torch.float64))
    dr.motion_statistics.copy_(torch.tensor([2.0, 10.0], dtype=torch.float64))
    dr.goal_statistics.copy_(torch.tensor([0.25, 10.0], dtype=torch.float64))
    dr.displacement_statistics.copy_(torch.tensor([0.2, 10.0], dtype=torch.float64))
    return dr


def test_import_stays_light():
    import subprocess

    code = ("import sys, mmreward.robotics; bad = [m for m in ('gymnasium', 'mujoco', 'metaworld', 'cv2', "
            "'matplotlib') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registered_ids_and_env_checker():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    env = gym.make("mmreward.robotics.wrappers:mmreward/MetaWorld-door-open-v3", size=32, max_steps=4)
    try:
        assert env.spec.id == "mmreward/MetaWorld-door-open-v3"
        assert "mmreward/MetaWorld-drawer-open-v3" in gym.registry
        assert env.observation_space.shape == (32, 32, 3) and env.observation_space.dtype == np.uint8
        assert env.action_space.shape == (4,)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no env-checker warnings on the raw env
            check_env(env.unwrapped, skip_render_check=False)
        obs, info = env.reset(seed=5)
        obs2, _ = env.reset(seed=5)
        assert np.array_equal(obs, obs2) and info["seed"] == 5 and info["state"].shape == (39,)
        steps = 0
        while True:
            obs, r, term, trunc, info = env.step(env.action_space.sample())
            steps += 1
            assert obs.shape == (32, 32, 3) and isinstance(r, float) and "success" in info
            if term or trunc:
                break
        assert steps == 4 and trunc and not term
        assert np.array_equal(env.render(), obs)
    finally:
        env.close()


@pytest.mark.parametrize("motion_scale,goal_scale,displacement_scale",
                         [(0.0, 0.0, 0.0), (1.5, 0.0, 0.0), (1.5, 2.0, 0.0), (0.0, 0.0, 3.0)])
def test_reward_wrapper_passes_env_checker_and_matches_relabel(motion_scale, goal_scale, displacement_scale):
    from gymnasium.utils.env_checker import check_env

    from mmreward.robotics.wrappers import DiffusionRewardWrapper, MetaWorldPixelEnv, relabel_episode

    # argmax chain: online and batch rewards coincide exactly (with the motion deficit, goal distance and
    # displacement from the reset frame too)
    dr = tiny_reward(noise=False, motion_scale=motion_scale, goal_scale=goal_scale, displacement_scale=displacement_scale)
    if goal_scale:
        dr.set_goal(torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)))
    env = DiffusionRewardWrapper(MetaWorldPixelEnv("door-open-v3", size=32, max_steps=6), dr)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*different from the unwrapped.*")
            warnings.filterwarnings("ignore", message=".*not having a spec.*")
            check_env(env)
        obs, _ = env.reset(seed=1)
        frames, rewards, env_rewards = [obs], [], []
        while True:
            obs, r, term, trunc, info = env.step(env.action_space.sample())
            frames.append(obs)
            rewards.append(r)
            env_rewards.append(info["env_reward"])
            assert info["diffusion_reward"] == r
            if term or trunc:
                break
        batch = relabel_episode(dr, np.stack(frames))
        assert batch.shape == (6,)
        np.testing.assert_allclose(rewards, batch, rtol=1e-5, atol=1e-4)
        assert not np.allclose(rewards, env_rewards)
    finally:
        env.close()


def test_reward_wrapper_add_mode_success_and_rnd():
    from mmreward.robotics.wrappers import DiffusionRewardWrapper, MetaWorldPixelEnv, relabel_episode

    dr = tiny_reward(noise=False, rnd=True)
    env = DiffusionRewardWrapper(MetaWorldPixelEnv("drawer-open-v3", size=32, max_steps=3), dr, mode="add",
                                 env_reward_scale=0.5, use_success=True)
    try:
        obs, _ = env.reset(seed=0)
        frames, out, succ = [obs], [], []
        for _ in range(3):
            obs, r, term, trunc, info = env.step(np.zeros(4, np.float32))
            frames.append(obs)
            succ.append(info["success"])
            assert r == pytest.approx(0.5 * info["env_reward"] + info["diffusion_reward"], rel=1e-6)
            out.append(info["diffusion_reward"])
        np.testing.assert_allclose(out, relabel_episode(dr, np.stack(frames), success=succ), rtol=1e-5, atol=1e-4)
    finally:
        env.close()


def test_wrapper_takes_frames_from_render_or_frame_fn():
    import gymnasium as gym

    from mmreward.robotics.wrappers import DiffusionRewardWrapper, MetaWorldPixelEnv

    class StateObs(gym.ObservationWrapper):  # an env whose observations are not images
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

        def observation(self, obs):
            return np.zeros(1, np.float32)

    dr = tiny_reward()
    env = DiffusionRewardWrapper(StateObs(MetaWorldPixelEnv("door-open-v3", size=32, max_steps=2)), dr)
    try:
        env.reset(seed=0)
        _, r, *_ = env.step(np.zeros(4, np.float32))
        assert np.isfinite(r)
    finally:
        env.close()
    with pytest.raises(ValueError, match="mode"):
        DiffusionRewardWrapper(MetaWorldPixelEnv("door-open-v3", size=32, max_steps=2), dr, mode="bad")

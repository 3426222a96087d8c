"""The motion consistency of Diffusion Reward: whether each frame's change goes on in the direction of
the change before it (DiffusionReward.motion_consistency), against a loop-by-loop reference, on
synthetic motion with a known answer, and in the reward, its statistics, folders, RL and the wrapper."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmreward.robotics.codec import VQGAN, VQGANConfig
from mmreward.robotics.reward import DiffusionReward, DiffusionRewardConfig
from mmreward.robotics.video import ConditionalVQDiffusion, VQDiffusionConfig

from helpers import folder_without

K = 16
CODEC = dict(image_size=32, channels=(8, 8, 8, 8), latent_dim=8, num_codes=K)
VIDEO = dict(num_codes=K, token_shape=(4, 4), num_steps=20, dim=32, depth=1, heads=2, context_dim=32)


def make_reward(**cfg):
    torch.manual_seed(0)
    return DiffusionReward(VQGAN(VQGANConfig(**CODEC)), ConditionalVQDiffusion(VQDiffusionConfig(**VIDEO)),
                           DiffusionRewardConfig(**{"skip_step": 4, "reward_type": "relative_likelihood",
                                                    "entropy_estimator": "x0_entropy", "batch_size": 4, **cfg}))


def square_at(xs, size=32, side=6, y=10):
    """A white square on grey at column x of each frame: uint8 [T, size, size, 3]."""
    out = np.full((len(xs), size, size, 3), 60, np.uint8)
    for t, x in enumerate(xs):
        out[t, y:y + side, x:x + side] = 255
    return torch.from_numpy(out)


def blob_at(xs, size=32, sigma=3.0, y=12.0, level=200.0):
    """A soft bright blob on black centred at column x of each frame (shading like a rendered arm, so
    successive changes of a steady motion overlap): uint8 [T, size, size, 3]."""
    ii, jj = np.mgrid[0:size, 0:size].astype(np.float64)
    out = [level * np.exp(-((ii - y) ** 2 + (jj - x) ** 2) / (2 * sigma ** 2)) for x in xs]
    return torch.from_numpy(np.repeat(np.stack(out)[..., None], 3, -1).round().astype(np.uint8))


def reference(frames: torch.Tensor, skip: int, grid: int) -> np.ndarray:
    """The definition written out with loops (grey, block means for a grid that divides the size)."""
    f = frames.numpy().astype(np.float64)
    T, H, W, _ = f.shape
    bh, bw = H // grid, W // grid
    g = np.zeros((T, grid, grid))
    for t in range(T):
        grey = f[t].mean(-1) / 255.0
        for i in range(grid):
            for j in range(grid):
                g[t, i, j] = grey[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw].mean()
    g = g.reshape(T, -1)
    out = np.zeros(T)
    pairs = []
    for t in range(2 * skip, T):
        cur, prev = g[t] - g[t - skip], g[t - skip] - g[t - 2 * skip]
        pairs.append((t, cur @ prev, np.linalg.norm(cur), np.linalg.norm(prev)))
    if not pairs:
        return out
    w_mean = np.mean([min(a, b) for _, _, a, b in pairs])
    if w_mean <= 1e-9:
        return out
    for t, dot, a, b in pairs:
        out[t] = dot / (max(a, b) * w_mean) if max(a, b) > 0 else 0.0
    return out


@pytest.mark.parametrize("skip,grid", [(1, 16), (2, 16), (1, 8), (3, 4)])
def test_matches_the_reference_on_random_and_structured_frames(skip, grid):
    gen = torch.Generator().manual_seed(skip * 10 + grid)
    rand = torch.randint(0, 256, (11, 32, 32, 3), dtype=torch.uint8, generator=gen)
    walk = square_at([2, 4, 5, 9, 9, 8, 12, 15, 14, 18, 20])
    for ep in (rand, walk):
        got = DiffusionReward.motion_consistency(ep, skip, grid)
        assert got.dtype == torch.float64 and got.shape == (11,)
        np.testing.assert_allclose(got.numpy(), reference(ep, skip, grid), rtol=1e-10, atol=1e-12)
        assert float(got[:2 * skip].abs().max()) == 0.0  # no change before it to compare with


def test_the_episode_mean_is_the_motion_weighted_mean_cosine():
    ep = square_at([1, 3, 4, 7, 6, 9, 13, 12, 16, 19, 21, 22])
    c = DiffusionReward.motion_consistency(ep, 1, 16)
    g = torch.nn.functional.adaptive_avg_pool2d(ep.double().mean(-1, keepdim=True).permute(0, 3, 1, 2) / 255, 16)
    d = (g[1:] - g[:-1]).flatten(1)
    cos = torch.nn.functional.cosine_similarity(d[1:], d[:-1], dim=1, eps=1e-30)
    w = torch.minimum(d[1:].norm(dim=1), d[:-1].norm(dim=1))
    assert float(c.sum() / (len(ep) - 2)) == pytest.approx(float((cos * w).sum() / w.sum()), rel=1e-9)


def test_directed_motion_scores_above_jitter_and_a_still_robot_scores_zero():
    steady = DiffusionReward.motion_consistency(blob_at([6 + 1.5 * t for t in range(12)]), 1, 16)
    # the same reach with action noise: every other step backs up a little
    noisy = DiffusionReward.motion_consistency(blob_at([6 + 1.5 * t + (1 if t % 2 else -1) for t in range(12)]), 1, 16)
    jitter = DiffusionReward.motion_consistency(blob_at([14 + (4 if t % 2 else 0) for t in range(12)]), 1, 16)
    small = DiffusionReward.motion_consistency(blob_at([14 + (0.5 if t % 2 else 0) for t in range(12)]), 1, 16)
    still = DiffusionReward.motion_consistency(blob_at([14] * 12), 1, 16)
    assert float(steady.mean()) > 0.5
    assert float(noisy.mean()) < float(steady.mean()) - 0.3
    # back and forth, wide or narrow alike: each change undoes the one before (cos −1, equal sizes)
    assert float(jitter.mean()) < -0.7 and float(small.mean()) < -0.7
    assert float(still.abs().max()) == 0.0
    # time reversal visits the same pairs of changes: the episode's sum is unchanged
    ep = blob_at([1, 3, 4, 7, 6, 9, 13, 12, 16, 19])
    assert float(DiffusionReward.motion_consistency(ep.flip(0), 1, 16).sum()) == pytest.approx(
        float(DiffusionReward.motion_consistency(ep, 1, 16).sum()), rel=1e-9)
    # scale-free: the same motion at half the contrast scores the same
    dim = DiffusionReward.motion_consistency(blob_at([6 + 1.5 * t for t in range(12)], level=100.0), 1, 16)
    np.testing.assert_allclose(dim.numpy(), steady.numpy(), atol=0.02)


def test_short_episodes_and_bad_input():
    assert DiffusionReward.motion_consistency(square_at([1, 2]), 1, 16).tolist() == [0.0, 0.0]
    assert DiffusionReward.motion_consistency(square_at([1, 2, 3, 4]), 2, 16).tolist() == [0.0] * 4
    assert DiffusionReward.motion_consistency(square_at([1, 3, 5])[:0], 1, 16).shape == (0,)
    with pytest.raises(TypeError, match="uint8"):
        DiffusionReward.motion_consistency(square_at([1, 2, 3]).float(), 1, 16)
    with pytest.raises(TypeError, match="uint8"):
        DiffusionReward.motion_consistency(square_at([1, 2, 3])[..., 0], 1, 16)
    with pytest.raises(ValueError, match=">= 1"):
        DiffusionReward.motion_consistency(square_at([1, 2, 3]), 0, 16)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="consistency_scale"):
            DiffusionRewardConfig(consistency_scale=bad).validate()
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="consistency_grid"):
            DiffusionRewardConfig(consistency_grid=bad).validate()


def test_the_reward_adds_kappa_times_the_standardised_consistency():
    dr = make_reward(consistency_scale=2.0, consistency_grid=8)
    experts = [square_at([2 + 2 * t for t in range(9)]), square_at([20 - 2 * t for t in range(9)], y=4)]
    stats = dr.fit_statistics(experts)
    ref = torch.cat([DiffusionReward.motion_consistency(e, 1, 8) for e in experts])
    assert stats["consistency_frames"] == 18 and stats["consistency_std"] == pytest.approx(float(ref.std()))
    assert dr.fit_consistency_statistics(experts) == {"consistency_std": stats["consistency_std"],
                                                      "consistency_frames": 18}
    ep = square_at([10 + (4 if t % 3 else 0) for t in range(8)])
    c = DiffusionReward.motion_consistency(ep, dr.video.config.frame_skip, 8)
    z = dr.standardize(dr.raw_reward_windows(dr.tokenize(ep)))
    torch.testing.assert_close(dr(ep), z + 2.0 * c.float() / stats["consistency_std"])
    dr.config.consistency_scale = 0.0
    torch.testing.assert_close(dr(ep), z)  # off
    dr.config.consistency_scale = 1.0
    with pytest.raises(ValueError, match="consistency"):
        dr.combine(dr.raw_reward_windows(dr.tokenize(ep)), ep)  # the caller must pass it
    dr.consistency_statistics[1] = 0  # not fitted
    with pytest.raises(RuntimeError, match="fit_consistency_statistics"):
        dr(ep)


def test_statistics_round_trip_and_folders_without_them(tmp_path):
    dr = make_reward(consistency_scale=1.5)
    experts = [square_at([2 + 2 * t for t in range(9)]), square_at([3 + 3 * t for t in range(7)])]
    dr.fit_statistics(experts)
    dr.save_pretrained(str(tmp_path / "m"))
    back = DiffusionReward.from_pretrained(str(tmp_path / "m"))
    assert torch.equal(back.consistency_statistics, dr.consistency_statistics)
    assert back.config.consistency_scale == 1.5 and back.config.consistency_grid == 16
    ep = square_at([4, 6, 5, 9, 11, 10, 14])
    torch.testing.assert_close(back(ep), dr(ep))
    # a folder saved before the consistency term
    old = DiffusionReward.from_pretrained(folder_without(tmp_path / "m", tmp_path / "old", "consistency_statistics"))
    assert int(old.consistency_statistics[1]) == 0
    with pytest.raises(RuntimeError, match="consistency statistics"):
        old(ep)
    old.fit_consistency_statistics(experts)
    torch.testing.assert_close(old(ep), dr(ep))


def test_the_shipped_model_has_consistency_statistics_and_the_wrapper_refuses_the_term():
    from mmreward.robotics.pretrained import load_pretrained

    model = load_pretrained()
    std, n = model.consistency_statistics.tolist()
    assert n == model.statistics[2] and math.isfinite(std) and std > 0  # fitted on the same expert frames
    assert model.config.consistency_scale == 0.0  # off by default
    gym = pytest.importorskip("gymnasium")
    from mmreward.robotics.wrappers import DiffusionRewardWrapper

    class Still(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    model.config.consistency_scale = 1.0
    with pytest.raises(ValueError, match="whole episode"):
        DiffusionRewardWrapper(Still(), model)

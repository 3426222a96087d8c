"""The motion-deficit term of DiffusionReward: E (tokens the video model expects to change against
the last history frame) and O (tokens that changed) per window, the mixing rule, its statistics on
save / load, and the learning check that a video model trained on moving episodes charges a frozen
episode and not a moving one."""
import pytest
import torch

from mmreward.robotics.codec import VQGAN, VQGANConfig
from mmreward.robotics.reward import DiffusionReward, DiffusionRewardConfig
from mmreward.robotics.video import ConditionalVQDiffusion, VQDiffusionConfig, token_windows, train_video_model

from helpers import folder_without

K = 16
CODEC = dict(image_size=32, channels=(8, 8, 8, 8), latent_dim=8, num_codes=K)
VIDEO = dict(num_codes=K, token_shape=(4, 4), num_steps=20, dim=32, depth=1, heads=2, context_dim=32)


def make_reward(video=None, **cfg):
    torch.manual_seed(0)
    video = video or ConditionalVQDiffusion(VQDiffusionConfig(**VIDEO))
    return DiffusionReward(VQGAN(VQGANConfig(**CODEC)), video,
                           DiffusionRewardConfig(**{"skip_step": 4, "reward_type": "relative_likelihood",
                                                    "entropy_estimator": "x0_entropy", **cfg}))


def frames(T, seed=0):
    return torch.randint(0, 256, (T, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("frame_skip", [1, 2])
def test_change_windows_count_changes_against_the_last_history_frame(frame_skip):
    dr = make_reward(ConditionalVQDiffusion(VQDiffusionConfig(**VIDEO, frame_skip=frame_skip)), batch_size=3)
    tok = torch.randint(0, K, (7, 16), generator=torch.Generator().manual_seed(1))
    tok[3] = tok[3 - frame_skip]  # one frame equal to its last history frame
    expected, observed = dr.change_windows(tok)
    last = tok[(torch.arange(7) - frame_skip).clamp_min(0)]  # history before the start repeats frame 0
    assert torch.equal(observed, (tok != last).sum(1).float())
    assert observed[0] == 0 and observed[3] == 0
    assert bool(((expected >= 0) & (expected <= 16)).all())
    unrealised = dr.unrealised_motion(expected, observed)
    torch.testing.assert_close(unrealised, (expected - observed) / expected.clamp_min(1.0))
    assert unrealised[0] == expected[0] / max(float(expected[0]), 1.0)  # nothing changed: all of E unrealised
    sub_e, sub_o = dr.change_windows(tok, torch.tensor([5, 2]))  # any subset of frames, same values
    torch.testing.assert_close(sub_e, expected[[5, 2]])
    assert torch.equal(sub_o, observed[[5, 2]])


def test_combine_subtracts_the_scaled_deficit_and_fit_statistics_sets_its_std():
    dr = make_reward(batch_size=4, motion_scale=2.0)
    stats = dr.fit_statistics([frames(5, 1), frames(6, 2)])
    assert stats["motion_std"] > 0 and int(dr.motion_statistics[1]) == 11
    ep = frames(7)
    tok = dr.tokenize(ep)
    z = dr.standardize(dr.raw_reward_windows(tok))
    e, o = dr.change_windows(tok)
    expected = z - 2.0 * ((e - o) / e.clamp_min(1.0)).clamp_min(0) / stats["motion_std"]
    torch.testing.assert_close(dr(ep), expected)
    # the clip bounds the likelihood (+ progress) term; the deficit comes after it, so frames clipped
    # alike still pay for not moving
    floor = float(z.min()) + 0.5 * float(z.max() - z.min())
    dr.config.clip_min = floor
    deficit = ((e - o) / e.clamp_min(1.0)).clamp_min(0) / stats["motion_std"]
    assert (deficit[z < floor] > 0).any()  # the order matters on these frames
    torch.testing.assert_close(dr(ep), z.clamp_min(floor) - 2.0 * deficit)
    dr.config.clip_min = None
    dr.config.motion_scale = 0.0
    torch.testing.assert_close(dr(ep), z)
    dr.config.motion_scale = 1.0
    with pytest.raises(ValueError, match="change_windows"):
        dr.combine(dr.raw_reward_windows(tok), ep)
    with pytest.raises(ValueError, match="motion_scale"):
        DiffusionRewardConfig(motion_scale=-1.0).validate()


def test_motion_statistics_round_trip_and_folders_without_them(tmp_path):
    dr = make_reward(batch_size=4, motion_scale=1.0)
    dr.fit_statistics([frames(5, 1)])
    dr.save_pretrained(str(tmp_path / "m"))
    back = DiffusionReward.from_pretrained(str(tmp_path / "m"))
    assert torch.equal(back.motion_statistics, dr.motion_statistics)
    torch.testing.assert_close(back(frames(6)), dr(frames(6)))
    # a folder saved before the motion term: no 'motion_statistics' key -> loads, the term needs a fit
    old = folder_without(tmp_path / "m", tmp_path / "old", "motion_statistics")
    loaded = DiffusionReward.from_pretrained(old)
    assert int(loaded.motion_statistics[1]) == 0
    with pytest.raises(RuntimeError, match="motion statistics"):
        loaded(frames(6))
    loaded.config.motion_scale = 0.0
    torch.testing.assert_close(loaded(frames(6)), dr.standardize(dr.raw_reward(frames(6))))


@pytest.mark.learning
def test_trained_model_charges_a_frozen_episode_not_a_moving_one(tmp_path):
    """Episodes: one 'object' code (1) on a background (0) that moves one cell per frame. A video
    model trained on them expects the object to move; an episode whose first frame is repeated gets
    leaves about all of the expected change unrealised, a moving one about none of it."""
    def moving(start, T=8):
        out = torch.zeros(T, 16, dtype=torch.long)
        for j in range(T):
            out[j, (start + j) % 16] = 1
        return out

    eps = [moving(s) for s in range(16)] * 2
    video = train_video_model(token_windows(eps), VQDiffusionConfig(**VIDEO), str(tmp_path), steps=200,
                              batch_size=32, lr=3e-3, warmup_steps=5, ema_every=1, progress_bar=False)
    dr = make_reward(video)
    test = moving(5)
    frozen = test[:1].repeat(8, 1)
    share = lambda tok: dr.unrealised_motion(*dr.change_windows(tok))[1:].clamp_min(0).mean().item()  # frame 0: no history
    d_moving, d_frozen = share(test), share(frozen)
    assert d_frozen > 0.8 and d_moving < 0.2, (d_frozen, d_moving)


# ----------------------------------------------------------------------------- goal distance
def test_goal_distance_is_the_token_share_that_differs_from_the_nearest_goal_frame():
    dr = make_reward(batch_size=4, goal_scale=3.0)
    ep, goals = frames(7), frames(2, 9)
    tok, goal_tok = dr.tokenize(ep), dr.tokenize(goals)
    with pytest.raises(RuntimeError, match="set_goal"):
        dr.goal_distance(tok)
    dr.set_goal(goals)
    assert torch.equal(dr.goal_tokens, goal_tok)
    manual = torch.stack([(tok != g).float().mean(1) for g in goal_tok]).min(0).values
    torch.testing.assert_close(dr.goal_distance(tok), manual)
    assert float(dr.goal_distance(goal_tok).max()) == 0.0  # a goal frame is at distance 0
    dr.fit_statistics([frames(5, 1), frames(6, 2)])
    with pytest.raises(RuntimeError, match="goal statistics"):
        dr(ep)
    stats = dr.fit_goal_statistics([frames(5, 1), frames(6, 2)], [frames(1, 3), frames(2, 4)])
    assert stats["goal_frames"] == 11 and stats["goal_std"] > 0
    z = dr.standardize(dr.raw_reward_windows(tok))
    torch.testing.assert_close(dr(ep), z - 3.0 * manual / stats["goal_std"])
    with pytest.raises(ValueError, match="one goal set per episode"):
        dr.fit_goal_statistics([frames(5, 1)], [])
    with pytest.raises(ValueError, match="goal_scale"):
        DiffusionRewardConfig(goal_scale=float("inf")).validate()
    dr.set_goal(None)
    dr.config.goal_scale = 0.0
    torch.testing.assert_close(dr(ep), z)  # off: no goal needed


def test_goal_statistics_round_trip_and_the_goal_is_not_saved(tmp_path):
    dr = make_reward(batch_size=4, goal_scale=1.0)
    dr.fit_statistics([frames(5, 1)])
    dr.fit_goal_statistics([frames(5, 1)], [frames(1, 3)])
    dr.set_goal(frames(1, 3))
    dr.save_pretrained(str(tmp_path / "m"))
    back = DiffusionReward.from_pretrained(str(tmp_path / "m"))
    assert torch.equal(back.goal_statistics, dr.goal_statistics) and back.goal_tokens.shape[0] == 0
    back.set_goal(frames(1, 3))
    torch.testing.assert_close(back(frames(6)), dr(frames(6)))
    # a folder saved before the goal term
    old = DiffusionReward.from_pretrained(folder_without(tmp_path / "m", tmp_path / "old", "goal_statistics"))
    assert int(old.goal_statistics[1]) == 0
    old.set_goal(frames(1, 3))
    with pytest.raises(RuntimeError, match="goal statistics"):
        old(frames(6))


# ----------------------------------------------------------------------------- displacement
def test_displacement_is_the_token_share_that_differs_from_the_first_frame():
    dr = make_reward(batch_size=4, displacement_scale=2.0)
    ep = frames(7)
    tok = dr.tokenize(ep)
    manual = (tok != tok[0]).float().mean(1)
    torch.testing.assert_close(dr.displacement(tok), manual)
    assert float(dr.displacement(tok)[0]) == 0.0 and float(manual[1:].min()) > 0
    frozen = tok[:1].repeat(5, 1)
    assert float(dr.displacement(frozen).max()) == 0.0  # a robot that never moves
    torch.testing.assert_close(dr.displacement(tok, tok[3]), (tok != tok[3]).float().mean(1))  # a given start
    stats = dr.fit_statistics([frames(5, 1), frames(6, 2)])
    ref = torch.cat([dr.displacement(dr.tokenize(f)) for f in (frames(5, 1), frames(6, 2))]).double()
    assert stats["displacement_frames"] == 11 and stats["displacement_std"] == pytest.approx(float(ref.std()))
    dr.displacement_statistics[1] = 0  # not fitted
    with pytest.raises(RuntimeError, match="fit_displacement_statistics"):
        dr(ep)
    again = dr.fit_displacement_statistics([frames(5, 1), frames(6, 2)])  # tokens only: the same std
    assert again == {"displacement_std": stats["displacement_std"], "displacement_frames": 11}
    z = dr.standardize(dr.raw_reward_windows(tok))
    torch.testing.assert_close(dr(ep), z + 2.0 * manual / stats["displacement_std"])
    # a cap bounds P/s_P before δ: frames displaced beyond it pay the cap, the others as before
    moved = manual / stats["displacement_std"]
    cap = float(moved[1:].median())
    dr.config.displacement_cap = cap
    torch.testing.assert_close(dr(ep), z + 2.0 * moved.clamp(max=cap))
    assert float(moved.max()) > cap  # the cap binds on some frames of this episode
    dr.config.displacement_cap = None
    dr.config.displacement_scale = 0.0
    torch.testing.assert_close(dr(ep), z)  # off
    with pytest.raises(ValueError, match="displacement_scale"):
        DiffusionRewardConfig(displacement_scale=-1.0).validate()
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="displacement_cap"):
            DiffusionRewardConfig(displacement_cap=bad).validate()
    with pytest.raises(ValueError, match="displacement"):
        dr.config.displacement_scale = 1.0
        dr.combine(dr.raw_reward_windows(tok), ep)  # the caller must pass the displacement


def test_displacement_statistics_round_trip_and_folders_without_them(tmp_path):
    dr = make_reward(batch_size=4, displacement_scale=1.5)
    dr.fit_statistics([frames(5, 1)])
    dr.save_pretrained(str(tmp_path / "m"))
    back = DiffusionReward.from_pretrained(str(tmp_path / "m"))
    assert torch.equal(back.displacement_statistics, dr.displacement_statistics)
    assert back.config.displacement_scale == 1.5
    torch.testing.assert_close(back(frames(6)), dr(frames(6)))
    # a folder saved before the displacement term
    old = DiffusionReward.from_pretrained(folder_without(tmp_path / "m", tmp_path / "old", "displacement_statistics"))
    assert int(old.displacement_statistics[1]) == 0
    with pytest.raises(RuntimeError, match="displacement statistics"):
        old(frames(6))
    old.fit_displacement_statistics([frames(5, 1)])
    torch.testing.assert_close(old(frames(6)), dr(frames(6)))

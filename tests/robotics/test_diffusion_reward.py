"""Diffusion Reward: reward shapes and modes, window / padding semantics, one encoding per frame,
expert statistics, the mixing rule, RND, save → load, input errors, and the learning check that a
trained video model rewards predictable sequences over random ones."""
import json

import pytest
import torch

from mmreward.core.checkpoint import CheckpointError
from mmreward.robotics.codec import VQGAN, VQGANConfig
from mmreward.robotics.reward import RND, DiffusionReward, DiffusionRewardConfig, RNDConfig
from mmreward.robotics.video import ConditionalVQDiffusion, VQDiffusionConfig, token_windows, train_video_model


K = 16
CODEC = dict(image_size=32, channels=(8, 8, 8, 8), latent_dim=8, num_codes=K)
VIDEO = dict(num_codes=K, token_shape=(4, 4), num_steps=20, dim=32, depth=1, heads=2, context_dim=32)


def make_reward(seed=0, rnd=True, **cfg):
    torch.manual_seed(seed)
    codec = VQGAN(VQGANConfig(**CODEC))
    video = ConditionalVQDiffusion(VQDiffusionConfig(**VIDEO))
    r = RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=16, hidden_dim=16)) if rnd else None
    return DiffusionReward(codec, video, DiffusionRewardConfig(**{"skip_step": 4, **cfg}), r)


def frames(T, seed=0):
    return torch.randint(0, 256, (T, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode,est", [("entropy", "vlb"), ("entropy", "x0_entropy"), ("likelihood", "vlb"),
                                      ("relative_likelihood", "x0_entropy")])
def test_reward_shape_and_finiteness(mode, est):
    dr = make_reward(reward_type=mode, entropy_estimator=est, batch_size=3)
    stats = dr.fit_statistics([frames(5, 1), frames(4, 2)])
    assert stats["frames"] == 9 and stats["std"] > 0
    r = dr(frames(7))
    assert r.shape == (7,) and r.dtype == torch.float32 and torch.isfinite(r).all()
    raw = dr.raw_reward(frames(7))
    if mode != "relative_likelihood":
        assert float(raw.max()) <= 1e-3  # −entropy and log-likelihood bounds are <= 0
    assert torch.equal(dr(frames(7)), r)  # seeded chain noise: same frames, same rewards


def test_relative_likelihood_is_likelihood_plus_entropy_of_the_same_window():
    """relative = elbo(frame i | history before i) − entropy_reward(same history), one generator
    drawn in that order; the likelihood part equals likelihood mode's reward."""
    from mmreward.robotics.video import window_indices

    dr = make_reward(reward_type="relative_likelihood", entropy_estimator="x0_entropy", batch_size=16, use_std=False)
    tok = dr.tokenize(frames(6))
    rel = dr.raw_reward_tokens(tok)
    hist = tok[window_indices(6, torch.arange(6) - 1, 2, 1)]
    g = torch.Generator().manual_seed(0)
    ctx = dr.video.encode_context(hist)
    ll = dr.video.elbo(tok, ctx, 4, 1, g)
    neg_h = dr.video.entropy_reward(ctx, 4, "x0_entropy", 1, True, 1.0, g)
    torch.testing.assert_close(rel, ll - neg_h)
    assert bool((neg_h < 0).all())  # so relative > likelihood
    dr.config.reward_type = "likelihood"
    torch.testing.assert_close(dr.raw_reward_tokens(tok), ll)


def test_windows_pad_with_frame_zero_and_frames_are_encoded_once():
    dr = make_reward(use_std=False)
    seen, encoded = [], []
    orig = dr.video.encode_context
    dr.video.encode_context = lambda h: (seen.append(h.clone()), orig(h))[1]
    dr.codec.encoder.register_forward_hook(lambda mod, inp, out: encoded.append(inp[0].shape[0]))
    T = 6
    ep = frames(T)
    tok = dr.tokenize(ep)
    assert tok.shape == (T, 16) and encoded == [T]
    ids = torch.arange(T)[:, None].expand(T, 16)  # frame j's tokens all equal j
    dr.raw_reward_tokens(ids)
    assert seen[-1][:, :, 0].tolist() == [[0, 0], [0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]  # entropy: ends at i
    dr.config.reward_type = "likelihood"
    dr.raw_reward_tokens(ids)
    assert seen[-1][:, :, 0].tolist() == [[0, 0], [0, 0], [0, 1], [1, 2], [2, 3], [3, 4]]  # history before j
    encoded.clear()
    dr(ep)
    assert sum(encoded) == T  # one encoding per frame although it conditions two windows


def test_statistics_and_mixing_rule():
    dr = make_reward()
    experts = [frames(6, s) for s in range(3)]
    with pytest.raises(RuntimeError, match="fit_statistics"):
        dr(frames(4))
    dr.fit_statistics(experts)
    z = torch.cat([dr.standardize(dr.raw_reward(e)) for e in experts])
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-4
    dr.update_rnd(torch.cat(experts))
    ep, success = frames(5, 9), torch.tensor([0, 0, 0, 1, 1])
    a = dr.config.expl_scale
    expected = (1 - a) * dr.standardize(dr.raw_reward(ep)) + a * dr.rnd(ep) + success.float()
    torch.testing.assert_close(dr(ep, success=success), expected)
    no_rnd = make_reward(rnd=False)
    no_rnd.statistics.copy_(dr.statistics)
    torch.testing.assert_close(no_rnd(ep), dr.standardize(dr.raw_reward(ep)))  # r = z (+ sparse) without RND
    with pytest.raises(ValueError, match="one value per frame"):
        dr(ep, success=torch.ones(3))
    # clip_min bounds the standardised term below, before mixing
    no_rnd.config.clip_min = -0.25
    torch.testing.assert_close(no_rnd(ep), dr.standardize(dr.raw_reward(ep)).clamp_min(-0.25))
    with pytest.raises(ValueError, match="clip_min"):
        DiffusionRewardConfig(clip_min=float("inf")).validate()
    # success_scale weights the sparse term only
    no_rnd.config.success_scale = 10.0
    torch.testing.assert_close(no_rnd(ep, success=success), no_rnd(ep) + 10.0 * success.float())
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="success_scale"):
            DiffusionRewardConfig(success_scale=bad).validate()


def test_rnd_learns_and_normalises():
    torch.manual_seed(0)
    rnd = RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=16, hidden_dim=16, lr=1e-3))
    seen, novel = frames(8, 0), frames(8, 1)
    before = rnd.raw_novelty(seen).mean().item()
    for _ in range(30):
        m = rnd.update(seen)
    assert rnd.raw_novelty(seen).mean().item() < 0.5 * before
    assert rnd.raw_novelty(novel).mean().item() > rnd.raw_novelty(seen).mean().item()
    assert m["rnd_std"] > 0 and rnd.stat[0].item() == 8 * 30
    torch.testing.assert_close(rnd(seen), rnd.raw_novelty(seen).detach() / (rnd.running_std + 1e-8))
    assert RNDConfig.paper().feature_dim == 512
    with pytest.raises(TypeError, match="uint8"):
        rnd(seen.float())


def test_save_load_gives_identical_rewards(tmp_path):
    dr = make_reward()
    dr.fit_statistics([frames(6, 3)])
    dr.update_rnd(frames(6, 4))
    ep = frames(7, 5)
    r = dr(ep, success=torch.zeros(7))
    dr.save_pretrained(str(tmp_path / "dr"))
    loaded = DiffusionReward.from_pretrained(str(tmp_path / "dr"))
    assert torch.equal(loaded(ep, success=torch.zeros(7)), r)
    assert loaded.config == dr.config and torch.equal(loaded.statistics, dr.statistics)
    cfg = json.loads(open(tmp_path / "dr" / "config.json").read())
    assert cfg["statistics"]["frames"] == 6 and cfg["has_rnd"] is True
    for part in ("codec", "video", "rnd"):
        assert (tmp_path / "dr" / part / "model.safetensors").exists()
    # corrupt parts are reported, not loaded
    (tmp_path / "dr" / "video" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        DiffusionReward.from_pretrained(str(tmp_path / "dr"))
    with pytest.raises(CheckpointError, match="not 'diffusion_reward'"):
        DiffusionReward.from_pretrained(str(tmp_path / "dr" / "codec"))


def test_input_errors():
    dr = make_reward(use_std=False)
    with pytest.raises(TypeError, match="uint8"):
        dr(frames(3).float())
    with pytest.raises(TypeError, match=r"uint8 \[T, H, W, 3\] \(a tensor, a numpy array .* got str"):
        dr("episode.npz")
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        dr(frames(3)[..., 0])
    with pytest.raises(ValueError, match="32x32"):
        dr(torch.zeros(3, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        dr(torch.zeros(0, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at least 30x30"):
        RND(RNDConfig(image_size=16))
    with pytest.raises(ValueError, match="outside"):
        dr.raw_reward_tokens(torch.full((3, 16), K))
    with pytest.raises(ValueError, match="codes"):
        DiffusionReward(VQGAN(VQGANConfig(**{**CODEC, "num_codes": 8})), dr.video)
    with pytest.raises(ValueError, match="reward_type"):
        DiffusionRewardConfig(reward_type="nope").validate()


@pytest.mark.learning
def test_trained_model_rewards_predictable_sequences(tmp_path):
    """Train on two kinds of episodes: predictable (uniform frames whose code steps +1 mod 8) and
    random (i.i.d. codes 8..15). Predictable episodes must then get higher entropy rewards (both
    estimators) and higher likelihood rewards than random ones."""
    g = torch.Generator().manual_seed(0)

    def predictable(T):
        c = int(torch.randint(0, 8, (1,), generator=g))
        return torch.stack([torch.full((16,), (c + j) % 8) for j in range(T)])

    def random(T):
        return torch.randint(8, 16, (T, 16), generator=g)

    eps = [predictable(6) for _ in range(16)] + [random(6) for _ in range(16)]
    cfg = VQDiffusionConfig(**VIDEO)
    video = train_video_model(token_windows(eps), cfg, str(tmp_path), steps=150, batch_size=32, lr=3e-3,
                              warmup_steps=5, ema_every=1, progress_bar=False)
    dr = DiffusionReward(VQGAN(VQGANConfig(**CODEC)), video, DiffusionRewardConfig(skip_step=4, use_std=False))
    test_pred, test_rand = predictable(6), random(6)
    for mode, est in (("entropy", "vlb"), ("entropy", "x0_entropy"), ("likelihood", "vlb")):
        dr.config.reward_type, dr.config.entropy_estimator = mode, est
        r_pred = dr.raw_reward_tokens(test_pred)[1:].mean().item()  # frame 0 sees a padded window
        r_rand = dr.raw_reward_tokens(test_rand)[1:].mean().item()
        assert r_pred > r_rand + 10, (mode, est, r_pred, r_rand)  # random frames: ≈ −16·log 8 ≈ −33 nats


def test_train_video_model_from_frames_with_codec(tmp_path):
    """uint8 episodes [N, T, H, W, 3] (or objects with .frames) are tokenised by the codec."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    codec = VQGAN(VQGANConfig(**CODEC)).eval()
    eps = torch.stack([frames(4, s) for s in range(2)])
    video = train_video_model(eps, VQDiffusionConfig(**VIDEO), str(tmp_path / "a"), codec=codec, steps=2,
                              batch_size=4, progress_bar=False)
    assert isinstance(video, ConditionalVQDiffusion)
    video = train_video_model([SimpleNamespace(frames=e.numpy()) for e in eps], VQDiffusionConfig(**VIDEO),
                              str(tmp_path / "b"), codec=codec, steps=2, batch_size=4, progress_bar=False)
    assert (tmp_path / "b" / "model" / "config.json").exists()


def test_forward_checks_success_flags_as_score_does():
    from mmreward.core.data import DataError
    from mmreward.core.inputs import Episode
    dr = make_reward(use_std=False, rnd=False)
    ep = frames(4)
    for bad, msg in [([float("nan")] * 4, "success has NaN"), (["yes"] * 4, "booleans or numbers"),
                     ([1, 0], r"one value per frame \(4\), got 2")]:
        with pytest.raises(DataError, match=msg):
            dr(ep, bad)
    # a [2, 2] table is not 4 per-frame flags: refused, not flattened
    with pytest.raises(DataError, match=r"input 0: field 'success' must be a flat list .*\[2, 2\]"):
        dr.score([Episode(ep, [[1, 0], [1, 0]])])
    with pytest.raises(DataError, match=r"\[4, 1\]"):
        dr(ep, torch.ones(4, 1))


def test_statistics_of_a_single_frame_are_refused_not_stored_as_std_1():
    dr = make_reward(rnd=False)
    before = dr.statistics.clone(), dr.displacement_statistics.clone()
    with pytest.raises(ValueError, match="reward statistics need at least 2 frames in all, got 1"):
        dr.fit_statistics([frames(1)])
    with pytest.raises(ValueError, match="displacement statistics need at least 2 frames"):
        dr.fit_displacement_statistics([frames(1)])
    with pytest.raises(ValueError, match="goal statistics need at least 2 frames"):
        dr.fit_goal_statistics([frames(1)], [frames(2, 1)])
    assert torch.equal(dr.statistics, before[0]) and torch.equal(dr.displacement_statistics, before[1])
    assert dr.fit_statistics([frames(1), frames(1, 1)])["frames"] == 2  # two one-frame episodes have a spread


def test_token_shapes_of_goal_and_start_are_checked():
    dr = make_reward(rnd=False)
    tok = dr.tokenize(frames(3))
    with pytest.raises(ValueError, match=r"goal tokens \[2, 3\] and frame tokens \[3, 16\]"):
        dr.goal_distance(tok, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"start tokens \[L\], got \[3, 16\] and \[3\]"):
        dr.displacement(tok, torch.zeros(3, dtype=torch.long))
    assert dr.displacement(tok[-1:], tok[0]).shape == (1,)


def test_goal_frames_given_as_lists_are_stacked_or_named():
    dr = make_reward(rnd=False)
    ep = frames(3)
    dr.set_goal([ep[0], ep[1].numpy()])  # a list of frames is a batch of goal frames
    assert torch.equal(dr.goal_tokens, dr.tokenize(ep[:2]))
    assert dr.fit_goal_statistics([ep], [[ep[0], ep[2]]])["goal_frames"] == 3
    with pytest.raises(ValueError, match=r"goal frames have different shapes: \[\[16, 32, 3\], \[32, 32, 3\]\]"):
        dr.set_goal([ep[0], ep[1, :16]])
    with pytest.raises(TypeError, match="goals must be a list of goal frame sets, one per episode, got NoneType"):
        dr.fit_goal_statistics([ep], None)
    with pytest.raises(TypeError, match="goal frames must be uint8 frames .* got str"):
        dr.set_goal("goal.png")


def test_forward_takes_numpy_frames_and_lists_of_frames_as_score_does():
    """Before: dr(frames) with a numpy array (what score, Episode and relabel_episode take) raised
    'frames must be a uint8 torch.Tensor'; now arrays (any strides) and lists of frames are episodes."""
    dr = make_reward(rnd=False, use_std=False)
    ep = frames(5)
    want = dr(ep, torch.tensor([0, 0, 1, 1, 1]))
    assert torch.equal(dr(ep.numpy(), [0, 0, 1, 1, 1]), want)
    assert torch.equal(dr(list(ep.numpy())), dr(ep))
    assert torch.equal(dr(ep.numpy()[::-1]), dr(ep.flip(0)))  # negative strides
    assert torch.equal(dr.tokenize(ep.numpy()), dr.tokenize(ep))
    with pytest.raises(TypeError, match="uint8"):
        dr(ep.numpy().astype("float32"))
    with pytest.raises(ValueError, match=r"frame 1 is torch.uint8 \[16, 32, 3\], frame 0 torch.uint8 \[32, 32, 3\]"):
        dr([ep[0].numpy(), ep[1, :16].numpy()])
    with pytest.raises(ValueError, match="empty"):
        dr([])


@pytest.mark.parametrize("key,values,named", [
    ("statistics", [0.0, 0.0, 9], "'statistics' \\[mean, std, frames\\] has std = 0.0"),
    ("statistics", [0.0, -1.0, 9], "std = -1.0"), ("statistics", [float("inf"), 1.0, 9], "mean = inf"),
    ("statistics", [0.0, 1.0, -9], "frames = -9.0"),
    ("displacement_statistics", [float("inf"), 9], "'displacement_statistics' \\[std, frames\\] has std = inf")])
def test_saved_reward_statistics_are_checked_at_load(tmp_path, key, values, named):
    """Before: only the shape of the saved statistics was checked: a std of 0 / inf / < 0 z-scored every
    reward to inf / 0 / its negative without a word."""
    import os

    from safetensors.torch import load_file, save_file

    dr = make_reward(rnd=False)
    dr.fit_statistics([frames(4, 1), frames(4, 2)])
    dr.save_pretrained(str(tmp_path / "dr"))
    path = str(tmp_path / "dr" / "model.safetensors")
    w = load_file(path)
    w[key] = torch.tensor(values, dtype=torch.float64)
    save_file(w, path)
    os.unlink(tmp_path / "dr" / "manifest.json")  # a hand-edited folder
    with pytest.raises(CheckpointError, match=f"model.safetensors: .*{named}"):
        DiffusionReward.from_pretrained(str(tmp_path / "dr"))


@pytest.mark.parametrize("values", [[10.0, 0.0, -1.0], [10.0, 0.0, float("inf")], [-2.0, 0.0, 1.0]])
def test_saved_rnd_statistics_are_checked_at_load(tmp_path, values):
    """Before: a negative M2 loaded and failed at the first reward with 'math domain error'; inf scored
    every frame 0."""
    import os

    from safetensors.torch import load_file, save_file

    rnd = RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=16, hidden_dim=16))
    rnd.save_pretrained(str(tmp_path / "rnd"))
    path = str(tmp_path / "rnd" / "model.safetensors")
    w = load_file(path)
    w["stat"] = torch.tensor(values, dtype=torch.float64)
    save_file(w, path)
    os.unlink(tmp_path / "rnd" / "manifest.json")
    with pytest.raises(CheckpointError, match=r"RND novelty statistics 'stat' \[count, mean, M2\]"):
        RND.from_pretrained(str(tmp_path / "rnd"))


@pytest.mark.parametrize("field,value,named", [
    ("lr", -1.0, "lr must be a finite number >= 0"), ("lr", 0.0, "lr must be a finite number > 0"),
    ("feature_dim", 0, "feature_dim must be an integer >= 1"), ("channels", (8, 8), "channels must be three conv widths"),
    ("normalize", "no", "normalize must be true or false"), ("hidden_dim", 2.5, "hidden_dim must be an integer")])
def test_rnd_config_fields_are_checked(field, value, named):
    """Before: RNDConfig had no checks: lr -1 trained the predictor away from the target without a word,
    feature_dim 0 scored every frame 0, two channel widths failed in tuple unpacking."""
    with pytest.raises(ValueError, match=f"RNDConfig.{named}"):
        RND(RNDConfig(image_size=32, **{field: value}))

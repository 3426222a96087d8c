"""The fast paths of the reward pipeline: the probability-space posterior against the log-space
reference (values and gradients), in-place Gumbel sampling, the speed benchmark's official path on
tiny official-layout models (same tokens and logits as ours from the same weights), and the
bfloat16 compute option against float32."""
import importlib.util
import os

import pytest
import torch

from mmreward.robotics.video import diffusion_math as dm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _inputs(K, B=6, L=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    soft = dm.log_x0_from_logits(torch.randn(B, L, K, generator=g) * 4)
    onehot = dm.log_onehot(torch.randint(0, K, (B, L), generator=g), K + 1)
    x = torch.randint(0, K, (B, L), generator=g)
    x = torch.where(torch.rand(B, L, generator=g) < 0.5, torch.full_like(x, K), x)
    return soft, onehot, x


@pytest.mark.parametrize("schedule", [dict(), dict(att_1=0.9, att_T=0.1, ctt_1=0.05, ctt_T=0.8)])
def test_posterior_matches_logspace_reference(schedule):
    K = 64
    s = dm.DiffusionSchedule(K, 100, **schedule)
    lv = s.fast_levels(9)
    pairs = list(zip(lv, lv[1:] + [0])) + [(1, 0), (2, 1), (50, 49), (100, 1)]
    soft, onehot, x = _inputs(K)
    for n, m in pairs:
        for inp in (soft, onehot):
            a, b = dm.posterior(s, inp, x, n, m), dm.posterior_reference(s, inp, x, n, m)
            keep = b > -60  # below that both are rounding noise above the -70 clamp
            torch.testing.assert_close(a[keep], b[keep], atol=2e-5, rtol=1e-5)
            assert torch.equal(a == dm.LOG_MIN, b == dm.LOG_MIN) or (a[~keep] < -55).all()
            torch.testing.assert_close(dm.kl(b, a), torch.zeros(a.shape[:2]), atol=2e-5, rtol=0)
    # per-row levels (tensors) as in training
    n = torch.tensor([3, 10, 50, 99, 100, 2])
    a = dm.posterior(s, soft, x, n, n - 1)
    b = dm.posterior_reference(s, soft, x, n, n - 1)
    keep = b > -60
    torch.testing.assert_close(a[keep], b[keep], atol=2e-5, rtol=1e-5)


def test_posterior_gradients_match_reference():
    K = 32
    s = dm.DiffusionSchedule(K, 20, att_1=0.9, att_T=0.1, ctt_1=0.05, ctt_T=0.8)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 8, K, generator=g)
    x = torch.randint(0, K + 1, (4, 8), generator=g)
    target = torch.randn(4, 8, K + 1, generator=g).log_softmax(-1)
    grads = []
    for fn in (dm.posterior, dm.posterior_reference):
        lg = logits.clone().requires_grad_(True)
        lp = fn(s, dm.log_x0_from_logits(lg), x, 7, 3)
        dm.kl(target, lp).sum().backward()
        grads.append(lg.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_log_sample_is_gumbel_max():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    lp = torch.randn(5, 7, 11).log_softmax(-1)
    got = dm.log_sample(lp, generator=g1)
    u = torch.rand(lp.shape, generator=g2)
    ref = (lp - torch.log(-torch.log(u + 1e-30) + 1e-30)).argmax(-1)
    assert torch.equal(got, ref)
    assert torch.equal(dm.log_sample(lp, noise=False), lp.argmax(-1))
    # no noise on average: frequencies follow the distribution
    p = torch.tensor([[[0.7, 0.2, 0.1]]]).log().expand(1, 4000, 3)
    freq = torch.bincount(dm.log_sample(p, generator=torch.Generator().manual_seed(0)).flatten(), minlength=3) / 4000
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03, rtol=0)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_dr_speed", os.path.join(ROOT, "benchmarks",
                                                                                  "bench_diffusion_reward_speed.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_official_reward(**cfg):
    from mmreward.robotics.codec import VQGAN, VQGANConfig
    from mmreward.robotics.reward import DiffusionReward, DiffusionRewardConfig
    from mmreward.robotics.video import ConditionalVQDiffusion, VQDiffusionConfig

    torch.manual_seed(0)
    codec = VQGAN(VQGANConfig(image_size=32, channels=(8, 16, 16, 16), latent_dim=8, num_codes=16, layout="official",
                              attn_resolutions=(8,)))
    video = ConditionalVQDiffusion(VQDiffusionConfig(num_codes=16, token_shape=(4, 4), num_steps=20, dim=32, depth=2,
                                                     heads=4, context_dim=48, mlp_type="conv", activation="gelu2",
                                                     embedding="official"))
    return DiffusionReward(codec, video, DiffusionRewardConfig(**{"skip_step": 4, "use_std": False, **cfg}))


def test_speed_benchmark_paths_on_tiny_models():
    from mmreward.robotics.video import window_indices

    bench = _bench()
    dr = _tiny_official_reward()
    video = dr.video
    off = bench.OfficialEager(dr)
    frames = torch.randint(0, 256, (7, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        tok = dr.tokenize(frames)
        assert torch.equal(off.encode(frames), tok)  # the official encode gives our tokens
        hist = tok[window_indices(7, torch.arange(7), 2)]
        x = torch.randint(0, 17, (7, 16))
        a = video(x, 12, video.encode_context(hist))
        b = off.transformer(x, off.condition_embedding(hist), torch.full((7,), 11)).permute(0, 2, 1)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    tm = bench.Timer()
    r_off = off(frames, tm)
    assert r_off.shape == (7,) and torch.isfinite(r_off).all() and float(r_off.max()) <= 1e-3
    assert set(tm.t) == {"vqgan", "transformer", "arithmetic"}
    tm2 = bench.Timer()
    r = bench.ours_instrumented(dr, frames, tm2)
    assert torch.equal(r, dr(frames))  # instrumentation does not change the result
    assert not hasattr(video.__dict__, "forward") and "forward" not in video.__dict__
    with pytest.raises(ValueError, match="official layouts"):
        from mmreward.robotics.reward import DiffusionReward

        bench.OfficialEager(DiffusionReward(dr.codec, type(video)(type(video.config)(
            num_codes=16, token_shape=(4, 4), num_steps=20, dim=32, depth=1, heads=4, context_dim=48))))


def test_bfloat16_compute_dtype_agrees_with_float32():
    """compute_dtype='bfloat16' runs the encoder and the video model under a bfloat16 autocast: tokens
    mostly agree, logits agree to a few % of their range, deterministic (argmax) chains give rewards of
    the same order; float32 stays the default and is bit-identical to a run without the option."""
    r32 = _tiny_official_reward(noise=False)
    rbf = _tiny_official_reward(noise=False, compute_dtype="bfloat16")
    assert r32.config.compute_dtype == "float32"
    frames = torch.randint(0, 256, (12, 32, 32, 3), dtype=torch.uint8)
    t32, tbf = r32.tokenize(frames), rbf.tokenize(frames)
    assert float((t32 == tbf).float().mean()) >= 0.9
    hist = t32[:, None].repeat(1, 2, 1)
    x = torch.full((12, 16), 16)
    with torch.no_grad():
        l32 = r32.video(x, 20, r32.video.encode_context(hist))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lbf = rbf.video(x, 20, rbf.video.encode_context(hist))
    assert lbf.dtype == torch.float32
    assert float((l32 - lbf).abs().max()) <= 0.05 * float(l32.abs().max())
    raw32, rawbf = r32.raw_reward_tokens(t32), rbf.raw_reward_tokens(t32)  # same tokens: the video model only
    assert torch.isfinite(rawbf).all() and not torch.equal(raw32, rawbf)  # the option is in effect
    assert float((raw32 - rawbf).abs().mean()) <= 0.01 * float(raw32.abs().mean())
    with pytest.raises(ValueError, match="compute_dtype"):
        type(r32.config)(compute_dtype="float16").validate()

"""The fast paths of the reward pipeline: the probability-space posterior against the log-space
reference (values and gradients), in-place Gumbel sampling, and the speed benchmark's official-style
eager path on tiny models (same logits as ours from the same weights)."""
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


def test_speed_benchmark_paths_on_tiny_models():
    from mmreward.robotics.codec import VQGAN, VQGANConfig
    from mmreward.robotics.reward import DiffusionReward, DiffusionRewardConfig
    from mmreward.robotics.video import ConditionalVQDiffusion, VQDiffusionConfig, window_indices

    bench = _bench()
    torch.manual_seed(0)
    codec = VQGAN(VQGANConfig(image_size=32, channels=(8, 8, 8, 8), latent_dim=8, num_codes=16))
    video = ConditionalVQDiffusion(VQDiffusionConfig(num_codes=16, token_shape=(4, 4), num_steps=20, dim=32, depth=2,
                                                     heads=4, context_dim=48))
    dr = DiffusionReward(codec, video, DiffusionRewardConfig(skip_step=4, use_std=False))
    off = bench.OfficialEager(dr)
    frames = torch.randint(0, 256, (7, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        tok = dr.tokenize(frames)
        hist = tok[window_indices(7, torch.arange(7), 2)]
        x = torch.randint(0, 17, (7, 16))
        a = video(x, 12, video.encode_context(hist))
        b = off.transformer(x, hist, torch.full((7,), 11)).permute(0, 2, 1)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    tm = bench.Timer()
    r_off = off(frames, tm)
    assert r_off.shape == (7,) and torch.isfinite(r_off).all() and float(r_off.max()) <= 1e-3
    assert set(tm.t) == {"vqgan", "transformer", "arithmetic"}
    tm2 = bench.Timer()
    r = bench.ours_instrumented(dr, frames, tm2)
    assert torch.equal(r, dr(frames))  # instrumentation does not change the result
    assert not hasattr(video.__dict__, "forward") and "forward" not in video.__dict__

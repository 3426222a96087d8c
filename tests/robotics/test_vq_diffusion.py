"""Conditional VQ-Diffusion: transition / posterior math against brute force, shapes, the context
cache, chains, a learning check, persistence, exact resume and input errors (tiny sizes, CPU); the
official layout (conv MLP, official embeddings) and its parameter count; old folders load."""
import json
import os

import pytest
import torch

from mmreward.core.checkpoint import CheckpointError
from mmreward.robotics.video import (
    ConditionalVQDiffusion,
    ContextCache,
    VQDiffusionConfig,
    token_windows,
    train_video_model,
    window_indices,
)
from mmreward.robotics.video import diffusion_math as dm



TINY = dict(num_codes=8, token_shape=(2, 3), num_steps=12, dim=16, depth=1, heads=2, context_dim=16)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return ConditionalVQDiffusion(VQDiffusionConfig(**{**TINY, **kw})).eval()


# ------------------------------------------------------------------ math vs brute force
def _matrix(a, b, c, K):
    """Row-stochastic [C, C] transition: code → same code a + b, other code b, mask c; mask → mask."""
    C = K + 1
    Q = torch.zeros(C, C, dtype=torch.float64)
    Q[:K, :K] = b
    Q[:K, :K] += torch.eye(K, dtype=torch.float64) * a
    Q[:K, K] = c
    Q[K, K] = 1.0
    return Q


def _matrices(s, m, n):
    e = lambda x: float(x.double().exp())  # noqa: E731
    K = s.num_codes
    Qm = _matrix(e(s.log_cum_a[m]), e(s.log_cum_b[m]), e(s.log_cum_c[m]), K) if m > 0 else torch.eye(K + 1).double()
    Qn = _matrix(e(s.log_cum_a[n]), e(s.log_cum_b[n]), e(s.log_cum_c[n]), K)
    Qmn = _matrix(e(s.log_tr_a[m, n]), e(s.log_tr_b[m, n]), e(s.log_tr_c[m, n]), K)
    return Qm, Qn, Qmn


# a schedule with plenty of uniform noise, so every branch of the posterior matters
NOISY = dict(att_1=0.9, att_T=0.1, ctt_1=0.05, ctt_T=0.8)


@pytest.mark.parametrize("m,n", [(0, 1), (2, 3), (1, 5), (0, 6), (3, 6)])
def test_posterior_matches_bayes_rule(m, n):
    K = 3
    s = dm.DiffusionSchedule(K, 6, **NOISY)
    Qm, Qn, Qmn = _matrices(s, m, n)
    torch.testing.assert_close(Qm @ Qmn, Qn, atol=1e-6, rtol=0)  # multi-step transition composes
    g = torch.Generator().manual_seed(m * 10 + n)
    p = torch.randn(2, 4, K, generator=g).log_softmax(-1)
    log_x0 = torch.cat([p, torch.full((2, 4, 1), dm.LOG_MIN)], -1)
    x_t = torch.tensor([[0, 1, 2, 3], [3, 3, 1, 0]])  # 3 = mask
    got = dm.posterior(s, log_x0, x_t, n, m).double().exp()
    ref = torch.zeros(2, 4, K + 1, dtype=torch.float64)
    for b in range(2):
        for tok in range(4):
            v = x_t[b, tok]
            for j in range(K + 1):  # Σ_x0 p(x0) q(x_n = v | x_m = j) q(x_m = j | x0) / q(x_n = v | x0)
                ref[b, tok, j] = sum(p[b, tok, x0].double().exp() * Qmn[j, v] * Qm[x0, j] / Qn[x0, v]
                                     for x0 in range(K))
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=1e-4)
    torch.testing.assert_close(ref.sum(-1), torch.ones(2, 4, dtype=torch.float64), atol=1e-6, rtol=0)


def test_true_posterior_and_kl_match_brute_force():
    K, m, n = 3, 2, 4
    s = dm.DiffusionSchedule(K, 6, **NOISY)
    Qm, Qn, Qmn = _matrices(s, m, n)
    x0 = torch.tensor([[0, 2, 1]])
    x_t = torch.tensor([[0, 3, 2]])
    lq = dm.posterior(s, dm.log_onehot(x0, K + 1), x_t, n, m)
    for tok in range(3):
        a, v = int(x0[0, tok]), int(x_t[0, tok])
        ref = Qmn[:, v] * Qm[a, :] / Qn[a, v]  # q(x_m | x_n = v, x0 = a)
        torch.testing.assert_close(lq[0, tok].double().exp(), ref, atol=2e-6, rtol=1e-4)
    lp = torch.randn(1, 3, K + 1).log_softmax(-1)
    ref_kl = (lq.exp() * (lq - lp)).sum(-1)
    torch.testing.assert_close(dm.kl(lq, lp), ref_kl, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dm.decoder_log_likelihood(x0, lp), lp.gather(-1, x0[..., None])[..., 0],
                               atol=1e-5, rtol=1e-5)
    logits = torch.randn(1, 3, K)
    torch.testing.assert_close(dm.entropy(logits), -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1),
                               atol=1e-5, rtol=1e-5)


def test_official_schedule_and_fast_chain():
    s = dm.DiffusionSchedule(1024, 100)
    a, c = s.log_cum_a.double().exp(), s.log_cum_c.double().exp()
    assert abs(float(a[1]) - 0.99999) < 1e-6 and abs(float(c[100]) - 0.99999) < 1e-6
    assert float((1 - a[1:] - c[1:]).abs().max()) < 2e-6  # absorbing up to a 1e-6 uniform floor
    levels = s.fast_levels(9)
    assert levels == [100, 90, 80, 70, 60, 50, 40, 30, 20, 10, 1] and len(levels) == 11
    assert s.fast_levels(0) == list(range(100, 0, -1))
    assert float(dm.reveal_weight(s, 10, 0)) == pytest.approx(1.0)


def test_q_sample_marginals():
    s = dm.DiffusionSchedule(4, 10, **NOISY)
    x0 = torch.zeros(1, 40000, dtype=torch.long)
    xt = dm.q_sample(s, x0, 5, torch.Generator().manual_seed(0))
    freq = torch.bincount(xt.flatten(), minlength=5).double() / xt.numel()
    ref = _matrices(s, 0, 5)[1][0]
    torch.testing.assert_close(freq, ref, atol=0.01, rtol=0)


# ------------------------------------------------------------------ network
def test_shapes_and_context_cache():
    model = tiny_model()
    hist = torch.randint(0, 8, (3, 2, 2, 3))
    x_t = torch.randint(0, 9, (3, 6))
    ctx = model.encode_context(hist)
    assert isinstance(ctx, ContextCache) and ctx.batch_size == 3 and len(ctx.kv) == 1
    logits = model(x_t, torch.tensor([1, 5, 12]), ctx)
    assert logits.shape == (3, 6, 8)
    torch.testing.assert_close(model(x_t, torch.tensor([1, 5, 12]), hist), logits)
    torch.testing.assert_close(model(x_t[1:], torch.tensor([5, 12]), ctx.select(slice(1, 3))), logits[1:])
    with torch.no_grad():
        lp, lg = model.step(x_t, 12, 4, ctx)
    assert lp.shape == (3, 6, 9) and float(lp.max()) <= 0 and float(lp.min()) >= dm.LOG_MIN
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3, 6), atol=1e-4, rtol=0)
    out = model.loss(torch.randint(0, 8, (3, 6)), hist)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()


def test_chains_shapes_and_determinism():
    model = tiny_model()
    hist = torch.randint(0, 8, (4, 2, 6))
    for skip in (0, 3):
        x = model.sample(hist, skip_step=skip, generator=torch.Generator().manual_seed(0))
        assert x.shape == (4, 6) and int(x.max()) < 8 and int(x.min()) >= 0  # no mask left
    for est in ("vlb", "x0_entropy"):
        r1 = model.entropy_reward(hist, 3, est, generator=torch.Generator().manual_seed(1))
        r2 = model.entropy_reward(hist, 3, est, generator=torch.Generator().manual_seed(1))
        assert r1.shape == (4,) and torch.isfinite(r1).all() and torch.equal(r1, r2)
        assert float(r1.max()) <= 1e-3  # −entropy / a log-likelihood bound is <= 0
    e = model.elbo(torch.randint(0, 8, (4, 6)), hist, skip_step=3, generator=torch.Generator().manual_seed(0))
    assert e.shape == (4,) and float(e.max()) <= 1e-3
    # the analytic estimator is an entropy: between −L·log K and 0
    r = model.entropy_reward(hist, 3, "x0_entropy", num_samples=2, generator=torch.Generator().manual_seed(0))
    assert float(r.min()) >= -6 * torch.log(torch.tensor(8.0)).item() - 1e-3


def test_token_windows_pad_with_frame_zero():
    ep = torch.arange(5)[:, None].repeat(1, 6)  # frame j has all tokens = j
    hist, tgt = token_windows([ep], num_history=2)
    assert hist[:, :, 0].tolist() == [[0, 0], [0, 1], [1, 2], [2, 3]]
    assert tgt[:, 0].tolist() == [1, 2, 3, 4]
    hist, tgt = token_windows([ep], num_history=2, pad_start=False)
    assert hist[:, :, 0].tolist() == [[0, 1], [1, 2], [2, 3]]
    assert window_indices(5, torch.tensor([0, 3]), 2, frame_skip=2).tolist() == [[0, 0], [1, 3]]


# ------------------------------------------------------------------ learning
@pytest.mark.learning
def test_training_raises_likelihood_on_a_fixed_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    eps = []
    for _ in range(8):  # next frame = previous frame + 1 (mod 8), uniform frames
        c = int(torch.randint(0, 8, (1,), generator=g))
        eps.append(torch.stack([torch.full((6,), (c + j) % 8) for j in range(5)]))
    hist, tgt = token_windows(eps)
    cfg = VQDiffusionConfig(**TINY)
    torch.manual_seed(0)
    before = ConditionalVQDiffusion(cfg).eval()

    def nll(m):
        return -float(m.elbo(tgt, hist, skip_step=2, generator=torch.Generator().manual_seed(0)).mean())

    nll0 = nll(before)
    model = train_video_model((hist, tgt), cfg, str(tmp_path), steps=60, batch_size=16, lr=5e-3, warmup_steps=2,
                              ema_every=1, progress_bar=False)
    assert nll(model) < 0.6 * nll0
    rows = open(tmp_path / "metrics.csv").read().strip().splitlines()
    assert rows[0] == "step,loss,vb,aux,grad_norm,lr" and len(rows) == 1 + 60
    saved = ConditionalVQDiffusion.from_pretrained(str(tmp_path / "model"))  # the EMA weights
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), model.state_dict().values()))


# ------------------------------------------------------------------ persistence / resume / errors
def test_save_load_roundtrip_and_corrupt_checkpoints(tmp_path):
    model = tiny_model()
    model.save_pretrained(str(tmp_path / "m"))
    loaded = ConditionalVQDiffusion.from_pretrained(str(tmp_path / "m"))
    hist = torch.randint(0, 8, (2, 2, 6))
    x_t = torch.randint(0, 9, (2, 6))
    torch.testing.assert_close(loaded(x_t, 3, hist), model(x_t, 3, hist), rtol=0, atol=0)
    assert loaded.config == model.config
    with open(tmp_path / "m" / "model.safetensors", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        ConditionalVQDiffusion.from_pretrained(str(tmp_path / "m"))
    model.save_pretrained(str(tmp_path / "m2"))
    cfg = json.loads(open(tmp_path / "m2" / "config.json").read())
    cfg["config"]["bogus"] = 1
    open(tmp_path / "m2" / "config.json", "w").write(json.dumps(cfg))
    os.unlink(tmp_path / "m2" / "manifest.json")  # a hand-edited folder: no manifest to check against
    with pytest.raises(CheckpointError, match="unknown fields"):
        ConditionalVQDiffusion.from_pretrained(str(tmp_path / "m2"))
    with pytest.raises(CheckpointError, match="does not exist"):
        ConditionalVQDiffusion.from_pretrained(str(tmp_path / "nowhere"))


def test_exact_resume(tmp_path):
    hist, tgt = torch.randint(0, 8, (10, 2, 6)), torch.randint(0, 8, (10, 6))
    cfg = VQDiffusionConfig(**TINY)
    kw = dict(batch_size=4, lr=1e-3, warmup_steps=1, ema_every=2, ckpt_every=3, progress_bar=False, log_every=1)
    full = train_video_model((hist, tgt), cfg, str(tmp_path / "a"), steps=7, **kw)
    train_video_model((hist, tgt), cfg, str(tmp_path / "b"), steps=7, stop_at=5, **kw)
    snaps = sorted(n for n in os.listdir(tmp_path / "b") if n.startswith("checkpoint-"))
    assert snaps == ["checkpoint-00000003", "checkpoint-00000005"]
    resumed = train_video_model((hist, tgt), cfg, str(tmp_path / "b"), steps=7, **kw)
    for k, v in full.state_dict().items():  # the returned models hold the EMA weights
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    settings = json.load(open(tmp_path / "b" / "train_config.json"))["settings"]["video_train"]
    assert settings["steps"] == 7 and settings["ema_every"] == 2


def test_input_errors():
    model = tiny_model()
    with pytest.raises(TypeError, match="integer token"):
        model.encode_context(torch.zeros(2, 2, 6))
    with pytest.raises(ValueError, match="2 frames"):
        model.encode_context(torch.zeros(2, 3, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model.encode_context(torch.zeros(2, 2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        model.encode_context(torch.full((2, 2, 6), 8))
    with pytest.raises(ValueError, match="batch"):
        model.elbo(torch.zeros(3, 6, dtype=torch.long), torch.zeros(2, 2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="estimator"):
        model.entropy_reward(torch.zeros(1, 2, 6, dtype=torch.long), estimator="nope")
    with pytest.raises(ValueError, match="divisible"):
        VQDiffusionConfig(dim=10, heads=4).validate()
    with pytest.raises(ValueError, match="m < n"):
        dm.posterior(model.schedule, torch.zeros(1, 6, 9), torch.zeros(1, 6, dtype=torch.long), 3, 3)


def test_paper_preset_builds_and_runs():
    cfg = VQDiffusionConfig.paper()
    assert (cfg.num_codes, cfg.tokens_per_frame, cfg.depth, cfg.dim, cfg.heads, cfg.context_dim) == (
        1024, 64, 16, 128, 16, 1024)
    torch.manual_seed(0)
    model = ConditionalVQDiffusion(cfg).eval()
    hist = torch.randint(0, 1024, (1, 2, 8, 8))
    with torch.no_grad():
        assert model(torch.full((1, 64), 1024), 100, hist).shape == (1, 64, 1024)
    assert len(model.schedule.fast_levels(9)) == 11


# ------------------------------------------------------------------ official layout
OFFICIAL = dict(mlp_type="conv", activation="gelu2", embedding="official")


def official_parameter_count(cfg: VQDiffusionConfig) -> int:
    """Parameters of the official model (VQ-Diffusion's Text2ImageTransformer + DalleMaskImageEmbedding
    + FrameEmbedding, counted from its classes): per block two AdaLayerNorms (a T-row timestep table
    and a Linear(d, 2d)), an affine LayerNorm, self-attention (4 Linear(d, d)), cross-attention
    (key / value Linear(C, d), query / proj Linear(d, d)) and the Conv_MLP (3×3 convs d → r·d → d)."""
    d, C, K, T, r = cfg.dim, cfg.context_dim, cfg.num_codes, cfg.num_steps, cfg.mlp_ratio
    lin = lambda i, o: i * o + o  # noqa: E731
    ada = T * d + lin(d, 2 * d)
    block = 2 * ada + 2 * d + 4 * lin(d, d) + 2 * lin(C, d) + 2 * lin(d, d) + (d * r * d * 9 + r * d) + (
        r * d * d * 9 + d)
    content = (K + 1) * d + sum(cfg.token_shape) * d  # token table (+ mask) + height + width embeddings
    condition = K * C  # FrameEmbedding
    head = 2 * d + lin(d, K)  # LayerNorm + Linear to the K codes
    return content + condition + cfg.depth * block + head


def test_paper_preset_is_the_official_model():
    cfg = VQDiffusionConfig.paper()
    assert (cfg.mlp_type, cfg.activation, cfg.embedding) == ("conv", "gelu2", "official")
    model = ConditionalVQDiffusion(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == official_parameter_count(cfg) == 18_011_520  # the official Meta-World config's count
    assert isinstance(model.blocks[0].mlp.conv1, torch.nn.Conv2d) and model.blocks[0].mlp.conv1.kernel_size == (3, 3)


@pytest.mark.parametrize("kw", [OFFICIAL, dict(mlp_type="conv"), dict(embedding="official"), dict(activation="gelu2")])
def test_official_layout_shapes_cache_and_gradients(kw):
    model = tiny_model(**kw)
    cfg = model.config
    if kw == OFFICIAL:
        assert sum(p.numel() for p in model.parameters()) == official_parameter_count(cfg)
    hist = torch.randint(0, 8, (3, 2, 2, 3))
    x_t = torch.randint(0, 9, (3, 6))
    ctx = model.encode_context(hist)
    logits = model(x_t, torch.tensor([1, 5, 12]), ctx)
    assert logits.shape == (3, 6, 8) and torch.isfinite(logits).all()
    torch.testing.assert_close(model(x_t[1:], torch.tensor([5, 12]), ctx.select(slice(1, 3))), logits[1:])
    out = model.loss(torch.randint(0, 8, (3, 6)), hist)
    out["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n not in ("Lt_history", "Lt_count"))


@torch.no_grad()
def test_conv_mlp_is_a_3x3_conv_over_the_token_grid():
    model = tiny_model(**{**OFFICIAL, "token_shape": (4, 4)})
    mlp = model.blocks[0].mlp
    x = torch.randn(2, 16, 16)  # (B, L = 4 × 4, D)
    grid = x.transpose(1, 2).reshape(2, 16, 4, 4)
    h = torch.nn.functional.conv2d(grid, mlp.conv1.weight, mlp.conv1.bias, padding=1)
    ref = torch.nn.functional.conv2d(h * torch.sigmoid(1.702 * h), mlp.conv2.weight, mlp.conv2.bias, padding=1)
    torch.testing.assert_close(mlp(x), ref.flatten(2).transpose(1, 2))
    # two stacked 3×3 convs: a token's output moves with tokens up to 2 rows / columns away only
    y = x.clone()
    y[:, 15] += 1.0  # token (3, 3)
    diff = (mlp(y) - mlp(x)).abs().sum(-1)[0].view(4, 4)
    assert float(diff[1, 1]) > 0 and float(diff[3, 1]) > 0 and float(diff[0, 3]) == 0 and float(diff[0, 0]) == 0


def test_official_layout_save_load_roundtrip(tmp_path):
    model = tiny_model(**OFFICIAL)
    model.save_pretrained(str(tmp_path / "m"))
    loaded = ConditionalVQDiffusion.from_pretrained(str(tmp_path / "m"))
    assert loaded.config == model.config
    hist, x_t = torch.randint(0, 8, (2, 2, 6)), torch.randint(0, 9, (2, 6))
    torch.testing.assert_close(loaded(x_t, 3, hist), model(x_t, 3, hist), rtol=0, atol=0)
    with pytest.raises(ValueError, match="mlp_type"):
        VQDiffusionConfig(mlp_type="mlp").validate()


def test_folders_without_the_layout_fields_load_the_original_layout(tmp_path):
    model = tiny_model()
    model.save_pretrained(str(tmp_path / "m"))
    doc = json.loads(open(tmp_path / "m" / "config.json").read())
    for k in ("mlp_type", "activation", "embedding"):
        del doc["config"][k]  # as written before these fields existed
    open(tmp_path / "m" / "config.json", "w").write(json.dumps(doc))
    os.unlink(tmp_path / "m" / "manifest.json")
    loaded = ConditionalVQDiffusion.from_pretrained(str(tmp_path / "m"))
    assert (loaded.config.mlp_type, loaded.config.activation, loaded.config.embedding) == ("linear", "gelu", "mmreward")
    hist, x_t = torch.randint(0, 8, (2, 2, 6)), torch.randint(0, 9, (2, 6))
    torch.testing.assert_close(loaded(x_t, 3, hist), model(x_t, 3, hist), rtol=0, atol=0)


def test_shipped_checkpoint_keeps_the_original_layout():
    from mmreward.robotics.pretrained import available, pretrained_path

    if "metaworld-64" not in available():
        pytest.skip("no shipped checkpoint")
    video = ConditionalVQDiffusion.from_pretrained(os.path.join(pretrained_path("metaworld-64"), "video"))
    assert (video.config.mlp_type, video.config.embedding) == ("linear", "mmreward")


def test_out_of_range_training_settings_are_named_before_any_work(tmp_path):
    # ema_every=0 was read as 1 and grad_clip=-1 / NaN as "no clipping", without a word
    hist, tgt = torch.zeros(4, 2, 6, dtype=torch.long), torch.zeros(4, 6, dtype=torch.long)
    for bad in (dict(ema_every=0), dict(grad_clip=-1.0), dict(grad_clip=float("nan")), dict(lr=0.0),
                dict(ema_decay=1.0), dict(min_lr_ratio=2.0), dict(betas=(0.9, 1.5))):
        with pytest.raises(ValueError, match=f"VideoTrainConfig.{next(iter(bad))}"):
            train_video_model((hist, tgt), VQDiffusionConfig(**TINY), str(tmp_path / "run"), steps=1,
                              progress_bar=False, **bad)
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_the_data_is_capped_with_a_warning_and_ema_interval_is_checked(tmp_path):
    """Before: batch_size 32 on 5 windows silently trained on batches of 5, and EMA(update_every=2.5)
    updated every 2 calls ("3": every 3; 0: every call) without a word."""
    from mmreward.robotics.training import EMA

    hist, tgt = torch.randint(0, 8, (5, 2, 6)), torch.randint(0, 8, (5, 6))
    with pytest.warns(UserWarning, match=r"train_video_model: batch_size 32 is more than the 5 \(history, target\) windows"):
        train_video_model((hist, tgt), VQDiffusionConfig(**TINY), str(tmp_path / "v"), steps=1, batch_size=32,
                          progress_bar=False)
    model = tiny_model()
    for bad in (2.5, "3", 0, -1, True):
        with pytest.raises(ValueError, match=f"EMA update_every must be an integer >= 1.*got {bad!r}"):
            EMA(model, 0.99, bad)
    for bad in ("0.9", float("nan"), 1.0):
        with pytest.raises(ValueError, match="EMA decay must be a number in"):
            EMA(model, bad, 2)
    assert EMA(model, 0.5, 3).update_every == 3

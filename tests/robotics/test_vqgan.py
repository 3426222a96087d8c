"""VQGAN codec: shapes, input conventions and errors, quantiser behaviour, a learning check (PSNR
rises), the adversarial / perceptual path, evaluation metrics, persistence and exact resume; the
official layout and its parameter count; old folders load."""
import json
import os

import pytest
import torch

from mmreward.core.checkpoint import CheckpointError
from mmreward.robotics.codec import (
    VQGAN,
    PatchDiscriminator,
    VQGANConfig,
    evaluate_vqgan,
    frames_to_float,
    train_vqgan,
)


TINY = dict(image_size=32, channels=(8, 8, 16), latent_dim=8, num_codes=16)


def blobs(n, size=32, seed=0):
    """Synthetic frames: a coloured disc on a grey background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.full((n, size, size, 3), 40, dtype=torch.uint8)
    for i in range(n):
        cx, cy = torch.randint(6, size - 6, (2,), generator=g).tolist()
        col = torch.randint(80, 256, (3,), generator=g).to(torch.uint8)
        out[i][((xx - cx) ** 2 + (yy - cy) ** 2) < 25] = col
    return out


def test_paper_preset_shapes():
    cfg = VQGANConfig.paper()
    assert cfg.latent_size == 8 and cfg.num_codes == 1024 and cfg.channels == (128, 128, 256, 256)
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig()).eval()  # default: 64 px → 8×8 tokens
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    tok = model.encode(frames)
    assert tok.shape == (2, 8, 8) and tok.dtype == torch.int64
    assert model.decode(tok).shape == (2, 3, 64, 64)
    u8 = model.decode(tok, uint8=True)
    assert u8.shape == (2, 64, 64, 3) and u8.dtype == torch.uint8
    # float [T, 3, H, W] in [0, 1] is the same frame as uint8 [T, H, W, 3]
    as_float = frames.permute(0, 3, 1, 2).float() / 255.0
    assert torch.equal(model.encode(as_float), tok)
    assert model.decode(tok.flatten(1)).shape == (2, 3, 64, 64)


def test_input_errors():
    model = VQGAN(VQGANConfig(**TINY)).eval()
    with pytest.raises(TypeError, match="uint8"):
        model.encode(torch.zeros(2, 32, 32, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        model.encode(torch.zeros(2, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="32x32"):
        model.encode(torch.zeros(2, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        model.encode(torch.zeros(2, 32, 32, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        frames_to_float([1, 2, 3])
    with pytest.raises(ValueError, match="tokens"):
        model.decode(torch.zeros(2, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="ids"):
        model.decode(torch.full((2, 8, 8), 16))
    with pytest.raises(ValueError, match="quantizer"):
        VQGAN(VQGANConfig(quantizer="nope"))
    with pytest.raises(ValueError, match="no episodes"):
        train_vqgan([], VQGANConfig(**TINY), "unused", steps=1)


def test_quantizer_straight_through_and_restart():
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(**TINY, quantizer="st")).train()
    x = frames_to_float(blobs(4))
    rec, qloss, tok = model(x)
    assert rec.shape == x.shape and tok.shape == (4, 8, 8) and qloss.item() >= 0
    (rec.abs().mean() + qloss).backward()
    assert model.encoder.net[0].weight.grad is not None  # gradient passes the quantiser
    assert model.quantizer.embedding.grad is not None  # codebook loss trains the codes
    q = model.quantizer
    q.usage.zero_()  # every code looks dead
    before = q.embedding.detach().clone()
    assert q.restart_dead_codes() == 16
    moved = q.embedding.detach()
    assert not torch.equal(before, moved)
    # restarted codes sit on encoder outputs of the last batch
    d = (moved[:, None] - q._last_z[None]).abs().amax(-1).min(1).values
    assert float(d.max()) == 0.0


@pytest.mark.learning
def test_training_raises_psnr_and_logs(tmp_path):
    frames = blobs(24)
    torch.manual_seed(0)
    before = evaluate_vqgan(VQGAN(VQGANConfig(**TINY)), frames)
    model = train_vqgan(frames.view(4, 6, 32, 32, 3), VQGANConfig(**TINY), str(tmp_path), steps=60, batch_size=8,
                        lr=3e-3, log_every=10, restart_every=20, progress_bar=False)
    after = evaluate_vqgan(model, frames)
    assert after["psnr"] > before["psnr"] + 6 and after["psnr"] > 18
    assert 0 < after["code_usage"] <= 1 and 1 <= after["perplexity"] <= 16
    rows = open(tmp_path / "metrics.csv").read().strip().splitlines()
    assert rows[0].split(",")[:6] == ["step", "loss", "rec_loss", "q_loss", "psnr", "perplexity"]
    assert len(rows) == 1 + 60  # every step
    assert os.listdir(tmp_path / "tb") and (tmp_path / "curves.png").stat().st_size > 1000
    loaded = VQGAN.from_pretrained(str(tmp_path / "model"))
    assert torch.equal(loaded.encode(frames), model.encode(frames))


def test_adversarial_and_perceptual_terms(tmp_path):
    calls = []

    def perceptual(x, y):
        calls.append(x.shape)
        return (x - y).pow(2).mean(dim=(1, 2, 3))

    train_vqgan(blobs(6), VQGANConfig(**TINY), str(tmp_path), steps=3, batch_size=4, disc_weight=0.1, disc_start=1,
                disc_channels=8, mse_weight=0.5, perceptual_fn=perceptual, log_every=1, progress_bar=False)
    rows = open(tmp_path / "metrics.csv").read().strip().splitlines()
    header = rows[0].split(",")
    assert {"g_loss", "adaptive_weight", "d_loss"} <= set(header)
    assert len(calls) == 3
    assert PatchDiscriminator(8)(torch.zeros(2, 3, 32, 32)).shape[:2] == (2, 1)


def test_save_load_and_corrupt_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(**TINY)).eval()
    model.save_pretrained(str(tmp_path / "m"))
    loaded = VQGAN.from_pretrained(str(tmp_path / "m"))
    frames = blobs(3)
    assert torch.equal(loaded.encode(frames), model.encode(frames))
    assert torch.equal(loaded.decode(model.encode(frames)), model.decode(model.encode(frames)))
    data = open(tmp_path / "m" / "model.safetensors", "rb").read()
    open(tmp_path / "m" / "model.safetensors", "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        VQGAN.from_pretrained(str(tmp_path / "m"))
    from mmreward.robotics.reward import RND, RNDConfig

    RND(RNDConfig(image_size=32)).save_pretrained(str(tmp_path / "r"))
    with pytest.raises(CheckpointError, match="not 'vqgan'"):
        VQGAN.from_pretrained(str(tmp_path / "r"))


def test_exact_resume(tmp_path):
    # with the discriminator (two optimizers + its weights in the snapshot) and restarts every step
    frames = blobs(8)
    kw = dict(batch_size=4, lr=1e-3, log_every=1, restart_every=1, disc_weight=0.1, disc_start=1, disc_channels=8,
              ckpt_every=2, progress_bar=False)
    full = train_vqgan(frames, VQGANConfig(**TINY), str(tmp_path / "a"), steps=5, **kw)
    partial = train_vqgan(frames, VQGANConfig(**TINY), str(tmp_path / "b"), steps=5, stop_at=3, **kw)
    assert not (tmp_path / "b" / "model").exists()  # not finished
    with pytest.raises(ValueError, match="resume=True"):
        train_vqgan(frames, VQGANConfig(**TINY), str(tmp_path / "b"), steps=5, resume=False, **kw)
    resumed = train_vqgan(frames, VQGANConfig(**TINY), str(tmp_path / "b"), steps=5, **kw)
    assert not torch.equal(partial.state_dict()["decoder.net.0.weight"], full.state_dict()["decoder.net.0.weight"])
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    saved = VQGAN.from_pretrained(str(tmp_path / "b" / "model"))
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), full.state_dict().values()))
    fresh = train_vqgan(frames, VQGANConfig(**TINY), str(tmp_path / "b"), steps=2, overwrite=True, **kw)
    assert len(open(tmp_path / "b" / "metrics.csv").read().splitlines()) == 1 + 2 and fresh is not None


# ------------------------------------------------------------------ official layout
def test_paper_preset_is_the_official_vqgan():
    cfg = VQGANConfig.paper()
    assert (cfg.layout, cfg.attn_resolutions) == ("official", (16,))
    model = VQGAN(cfg)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # counted on the official classes (Encoder + quant_conv, Decoder + post_quant_conv, Codebook)
    assert (n(model.encoder), n(model.decoder), n(model)) == (9_690_880, 10_724_803, 20_481_219)
    kinds = [type(m).__name__ for m in model.encoder.net]
    # levels at 64, 32, 16 px: 2 res blocks each (+ attention after each at 16 px), then a padded downsampling
    assert kinds[:12] == ["Conv2d", "ResBlock", "ResBlock", "PadDownsample", "ResBlock", "ResBlock", "PadDownsample",
                          "ResBlock", "AttnBlock", "ResBlock", "AttnBlock", "PadDownsample"]
    assert sum(k == "AttnBlock" for k in (type(m).__name__ for m in model.decoder.net)) == 3


def test_official_layout_shapes_and_save_load(tmp_path):
    cfg = VQGANConfig(**TINY, layout="official", attn_resolutions=(16,))
    torch.manual_seed(0)
    model = VQGAN(cfg).eval()
    frames = blobs(3)
    tok = model.encode(frames)
    assert tok.shape == (3, 8, 8) and model.decode(tok).shape == (3, 3, 32, 32)
    model.save_pretrained(str(tmp_path / "m"))
    loaded = VQGAN.from_pretrained(str(tmp_path / "m"))
    assert loaded.config == cfg and torch.equal(loaded.encode(frames), tok)
    with pytest.raises(ValueError, match="layout"):
        VQGANConfig(layout="taming").validate()


def test_folders_without_the_layout_fields_load_the_original_layout(tmp_path):
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(**TINY)).eval()
    model.save_pretrained(str(tmp_path / "m"))
    doc = json.loads(open(tmp_path / "m" / "config.json").read())
    for k in ("layout", "attn_resolutions"):
        del doc["config"][k]  # as written before these fields existed
    open(tmp_path / "m" / "config.json", "w").write(json.dumps(doc))
    os.unlink(tmp_path / "m" / "manifest.json")
    loaded = VQGAN.from_pretrained(str(tmp_path / "m"))
    assert (loaded.config.layout, loaded.config.attn_resolutions) == ("mmreward", ())
    frames = blobs(2)
    assert torch.equal(loaded.encode(frames), model.encode(frames))


def test_encode_is_the_same_in_channels_last_and_under_bfloat16_keeps_float32_distances():
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(**TINY)).eval()
    frames = blobs(6)
    x = frames_to_float(frames)
    with torch.no_grad():
        z = model.encoder(x)  # contiguous NCHW
        ref = model.quantizer.codes(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])).view(6, 8, 8)
    assert torch.equal(model.encode(frames), ref)
    # under a bfloat16 autocast the nearest-code search still runs in float32 on the same latents
    zf = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model.quantizer.codes(zf), ref.flatten())


def test_out_of_range_training_settings_are_named_before_any_work(tmp_path):
    # restart_every=-1 used to restart dead codes every step, disc_weight=-1 silently dropped the
    # discriminator, lr=0 trained nothing and short betas failed inside torch
    for bad in (dict(restart_every=-1), dict(disc_weight=-1.0), dict(lr=0.0), dict(lr=float("nan")),
                dict(l1_weight=float("nan")), dict(betas=(0.5,)), dict(disc_start=-5)):
        with pytest.raises(ValueError, match=f"VQGANTrainConfig.{next(iter(bad))}"):
            train_vqgan(blobs(4), VQGANConfig(**TINY), str(tmp_path / "run"), steps=1, progress_bar=False, **bad)
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_the_frame_pool_is_capped_with_a_warning(tmp_path):
    """Before: batch_size 32 on 6 frames silently trained on batches of 6."""
    import warnings

    with pytest.warns(UserWarning, match="train_vqgan: batch_size 32 is more than the 6 frames"):
        train_vqgan(blobs(6), VQGANConfig(**TINY), str(tmp_path / "a"), steps=1, batch_size=32, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a batch the data holds: no warning
        train_vqgan(blobs(6), VQGANConfig(**TINY), str(tmp_path / "b"), steps=1, batch_size=6, progress_bar=False)


def test_float_frames_outside_0_1_are_refused_not_encoded_saturated():
    """Before: float frames of 0..255 (or NaN) were encoded as if in [0, 1]: the tokens of a white image,
    without a word. numpy frames are taken as tensors are."""
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(**TINY)).eval()
    x = blobs(2)
    floats = x.permute(0, 3, 1, 2).float()
    with pytest.raises(ValueError, match=r"float frames must be in \[0, 1\], got values in \[40, .*pass them as uint8"):
        model.encode(floats)
    with pytest.raises(ValueError, match="NaN"):
        model.encode(torch.full((1, 3, 32, 32), float("nan")))
    assert torch.equal(model.encode(x.numpy()), model.encode(x))
    assert torch.equal(frames_to_float(floats / 255), floats / 255 * 2 - 1)

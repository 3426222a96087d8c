import csv
import os

import pytest
import torch
from torch import nn

from mmreward.core.trainer import Trainer, TrainConfig, snapshot_dirs


def make_data(n=64, seed=0):
    """y = x · w_true (exact labels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    w = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
    return [(x[i], (x[i] @ w).reshape(1)) for i in range(n)]


def make_model(dropout=0.0, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Dropout(dropout), nn.Linear(32, 1)).to(dtype)


def collate(examples):
    return {"x": torch.stack([e[0] for e in examples]), "y": torch.stack([e[1] for e in examples])}


def mse_loss(model, batch):
    pred = model(batch["x"].to(next(model.parameters()).dtype))
    loss = ((pred - batch["y"].to(pred.dtype)) ** 2).mean()
    return loss, {"abs_err": (pred - batch["y"]).abs().mean().item()}


def cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), max_steps=20, batch_size=8, lr=1e-2, progress=False, tensorboard=False,
                plot=False, log_every=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.learning
def test_trainer_learns_and_writes_artifacts(tmp_path):
    data, held_out = make_data(128), make_data(64, seed=1)

    def eval_fn(model):
        _, m = mse_loss(model, collate(held_out))
        return {"mse": ((model(collate(held_out)["x"]) - collate(held_out)["y"]) ** 2).mean().item(), **m}

    model = make_model()
    with torch.no_grad():
        before = eval_fn(model)["mse"]
    hist = Trainer(model, cfg(tmp_path, max_steps=150, lr=3e-2, eval_every=50, plot=True, warmup_steps=5,
                               tensorboard=True, progress=True),
                   data, collate, mse_loss, eval_fn).fit()
    assert len(hist) == 150 and [r["step"] for r in hist] == list(range(1, 151))
    assert {"loss", "lr", "grad_norm", "abs_err"} <= set(hist[0])
    assert "eval_mse" in hist[49] and "eval_mse" not in hist[50] and "eval_mse" in hist[-1]
    assert hist[-1]["eval_mse"] < 0.03 * before, (before, hist[-1])  # held-out error falls > 30x
    assert hist[0]["lr"] == pytest.approx(3e-2 / 5)  # warmup
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == 150 and float(rows[-1]["eval_mse"]) == pytest.approx(hist[-1]["eval_mse"], rel=1e-3)
    assert open(tmp_path / "curves.png", "rb").read(4) == b"\x89PNG"
    if (tmp_path / "tb").exists():  # tensorboard is optional: CSV only without it
        assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))
    assert [os.path.basename(p) for p in snapshot_dirs(str(tmp_path))] == ["checkpoint-00000150"]
    import json

    saved = json.load(open(tmp_path / "train_config.json"))
    assert saved["max_steps"] == 150 and saved["world_size"] == 1 and saved["config_class"] == "TrainConfig"


class Crash(RuntimeError):
    pass


def test_exact_resume_equals_uninterrupted_run(tmp_path):
    # dropout (RNG), epochs of 6 micro-batches (data position) and AdamW state all have to come back
    data = make_data(48)
    kw = dict(max_steps=14, batch_size=4, grad_accum_steps=2, save_every=5, warmup_steps=3, lr=1e-2)
    ref = make_model(dropout=0.2)
    ref_hist = Trainer(ref, cfg(tmp_path / "a", **kw), data, collate, mse_loss).fit()

    calls = {"n": 0}

    def crashing_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 2 * 12 + 1:  # crash inside step 13: the newest snapshot is step 10
            raise Crash("simulated crash")
        return mse_loss(model, batch)

    with pytest.raises(Crash):
        Trainer(make_model(dropout=0.2), cfg(tmp_path / "b", **kw), data, collate, crashing_loss).fit()
    assert [os.path.basename(p) for p in snapshot_dirs(str(tmp_path / "b"))] == ["checkpoint-00000010"]
    fresh = make_model(dropout=0.2, seed=1)  # different init: everything must come from the snapshot
    hist = Trainer(fresh, cfg(tmp_path / "b", **kw), data, collate, mse_loss).fit()
    for (k, a), b in zip(ref.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in hist] == [r["loss"] for r in ref_hist]
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 15))


def test_grad_accumulation_matches_big_batch(tmp_path):
    data = make_data(64)
    one = make_model(dtype=torch.float64)
    two = make_model(dtype=torch.float64)
    h1 = Trainer(one, cfg(tmp_path / "a", batch_size=8, grad_accum_steps=1, max_steps=12), data, collate, mse_loss).fit()
    h2 = Trainer(two, cfg(tmp_path / "b", batch_size=4, grad_accum_steps=2, max_steps=12), data, collate, mse_loss).fit()
    for a, b in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)
    assert [r["loss"] for r in h1] == pytest.approx([r["loss"] for r in h2], rel=1e-9)


def test_bad_config_and_inputs(tmp_path):
    for bad in (dict(max_steps=0), dict(batch_size=-1), dict(autocast="fp8"), dict(lr=0.0), dict(lr=float("nan")),
                dict(grad_accum_steps=1.5), dict(max_grad_norm=0), dict(min_lr_ratio=2.0), dict(eval_every=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            cfg(tmp_path, **bad)
    data = make_data(16)
    with pytest.raises(TypeError, match="nn.Module"):
        Trainer(lambda x: x, cfg(tmp_path), data, collate, mse_loss)
    with pytest.raises(TypeError, match="loss_fn"):
        Trainer(make_model(), cfg(tmp_path), data, collate, None)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        Trainer(make_model(), cfg(tmp_path, batch_size=32), data, collate, mse_loss)

    def nan_loss(model, batch):
        return torch.tensor(float("nan")), {}

    with pytest.raises(FloatingPointError, match="step 1"):
        Trainer(make_model(), cfg(tmp_path / "nan"), data, collate, nan_loss).fit()
    with pytest.raises(TypeError, match="loss_fn must return"):
        Trainer(make_model(), cfg(tmp_path / "t"), data, collate, lambda m, b: 1.0).fit()
    # resuming with a different batch layout would silently change the data order: refused
    Trainer(make_model(), cfg(tmp_path / "r", max_steps=2), data, collate, mse_loss).fit()
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(make_model(), cfg(tmp_path / "r", max_steps=4, batch_size=4), data, collate, mse_loss).fit()


def test_corrupt_newest_snapshot_falls_back(tmp_path):
    data = make_data(32)
    Trainer(make_model(), cfg(tmp_path, max_steps=4, save_every=2), data, collate, mse_loss).fit()
    (newest,) = snapshot_dirs(str(tmp_path))
    # keep an older complete one around and corrupt the newest
    import shutil

    older = str(tmp_path / "checkpoint-00000002")
    shutil.copytree(newest, older)
    with open(os.path.join(newest, "state.safetensors"), "r+b") as f:
        f.truncate(10)
    m = make_model()
    with pytest.warns(UserWarning, match="skipping unreadable snapshot"):
        hist = Trainer(m, cfg(tmp_path, max_steps=4, save_every=2), data, collate, mse_loss).fit()
    assert len(hist) == 4

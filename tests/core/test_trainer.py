import csv
import dataclasses
import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from mmreward.core.checkpoint import CheckpointError, Snapshots
from mmreward.core.model import Pretrained
from mmreward.core.trainer import Trainer, TrainConfig


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


def loss_interrupted_at_call(n: int):
    """``mse_loss`` that raises KeyboardInterrupt (Ctrl-C) on its ``n``-th call."""
    calls = {"n": 0}

    def loss(model, batch):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return mse_loss(model, batch)

    return loss


def snapshot_names(folder):
    return [os.path.basename(p) for _, p in Snapshots(str(folder)).list()]


def cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), max_steps=20, batch_size=8, lr=1e-2, progress=False, tensorboard=False,
                plot=False, log_every=0)
    base.update(kw)
    return TrainConfig(**base)


@dataclasses.dataclass
class TinyConfig:
    hidden: int = 16


class TinyRegressor(Pretrained, nn.Module):
    model_type = "tiny_regressor_test"
    config_class = TinyConfig

    def __init__(self, config=None):
        super().__init__()
        self.config = config or TinyConfig()
        self.net = nn.Sequential(nn.Linear(6, self.config.hidden), nn.Tanh(), nn.Linear(self.config.hidden, 1))

    def forward(self, x):
        return self.net(x)


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
    assert snapshot_names(tmp_path) == ["checkpoint-00000150"]
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
    assert snapshot_names(tmp_path / "b") == ["checkpoint-00000010", "checkpoint-00000005"]  # the newest two
    fresh = make_model(dropout=0.2, seed=1)  # different init: everything must come from the snapshot
    hist = Trainer(fresh, cfg(tmp_path / "b", **kw), data, collate, mse_loss).fit()
    for (k, a), b in zip(ref.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in hist] == [r["loss"] for r in ref_hist]
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 15))
    assert (tmp_path / "b" / "metrics.csv").read_bytes() == (tmp_path / "a" / "metrics.csv").read_bytes()


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


def test_corrupt_newest_snapshot_falls_back_to_the_previous_one(tmp_path):
    data = make_data(32)
    kw = dict(max_steps=6, save_every=2)
    ref = make_model()
    Trainer(ref, cfg(tmp_path / "ref", **kw), data, collate, mse_loss).fit()
    Trainer(make_model(), cfg(tmp_path, **kw), data, collate, mse_loss).fit(stop_at=4)
    assert snapshot_names(tmp_path) == ["checkpoint-00000004", "checkpoint-00000002"]
    with open(tmp_path / "checkpoint-00000004" / "state.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\xff" * 8)  # same size, other bytes: only the manifest's SHA-256 can tell
    m = make_model(seed=3)
    with pytest.warns(UserWarning, match="skipping unreadable snapshot .*checkpoint-00000004.*resuming from step 2"):
        hist = Trainer(m, cfg(tmp_path, **kw), data, collate, mse_loss).fit()
    assert [r["step"] for r in hist] == list(range(1, 7))
    for (k, a), b in zip(ref.state_dict().items(), m.state_dict().values()):
        assert torch.equal(a, b), k  # the run continued from step 2 exactly
    assert (tmp_path / "checkpoint-00000004.unreadable").is_dir()  # set aside, not deleted
    assert (tmp_path / "metrics.csv").read_bytes() == (tmp_path / "ref" / "metrics.csv").read_bytes()


def test_no_readable_snapshot_is_an_error_not_a_silent_restart(tmp_path):
    data = make_data(32)
    Trainer(make_model(), cfg(tmp_path, max_steps=4, save_every=2), data, collate, mse_loss).fit()
    for name in snapshot_names(tmp_path):
        (tmp_path / name / "state.safetensors").write_bytes(b"junk")
    rows = (tmp_path / "metrics.csv").read_bytes()
    with pytest.raises(CheckpointError, match="no readable snapshot.*overwrite"):
        Trainer(make_model(), cfg(tmp_path, max_steps=4, save_every=2), data, collate, mse_loss).fit()
    assert (tmp_path / "metrics.csv").read_bytes() == rows and len(snapshot_names(tmp_path)) == 2
    Trainer(make_model(), cfg(tmp_path, max_steps=4, overwrite=True), data, collate, mse_loss).fit()
    assert snapshot_names(tmp_path) == ["checkpoint-00000004"]


def test_existing_run_needs_resume_or_overwrite_and_foreign_runs_are_refused(tmp_path):
    data = make_data(32)
    first = make_model()
    Trainer(first, cfg(tmp_path, max_steps=3), data, collate, mse_loss).fit()
    before = {k: v.clone() for k, v in first.state_dict().items()}
    with pytest.raises(ValueError, match="holds a training run.*resume=True.*overwrite=True"):
        Trainer(make_model(), cfg(tmp_path, max_steps=3, resume=False), data, collate, mse_loss).fit()
    # resuming a finished run has nothing to do: the model comes back from the snapshot unchanged
    again = make_model(seed=5)
    hist = Trainer(again, cfg(tmp_path, max_steps=3), data, collate, mse_loss).fit()
    assert len(hist) == 3 and all(torch.equal(before[k], v) for k, v in again.state_dict().items())
    # a run of another model is not continued
    with pytest.raises(ValueError, match="other settings.*model: saved 'Sequential', now 'TinyRegressor'"):
        Trainer(TinyRegressor(), cfg(tmp_path, max_steps=3), data, collate, mse_loss).fit()
    with pytest.raises(CheckpointError, match="checkpoint-00000003 does not fit this model"):
        Trainer(nn.Sequential(nn.Linear(6, 1)), cfg(tmp_path, max_steps=3), data, collate, mse_loss).fit()
    # files no run of ours wrote
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "metrics.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="another program or run"):
        Trainer(make_model(), cfg(tmp_path / "foreign"), data, collate, mse_loss).fit()
    # overwrite starts again: the old run's snapshots and logs are gone first
    hist = Trainer(make_model(), cfg(tmp_path, max_steps=2, overwrite=True), data, collate, mse_loss).fit()
    assert len(hist) == 2 and snapshot_names(tmp_path) == ["checkpoint-00000002"]
    assert len(list(csv.DictReader(open(tmp_path / "metrics.csv")))) == 2


def test_stop_at_and_a_run_killed_before_its_first_snapshot(tmp_path):
    data = make_data(32)
    ref = make_model()
    Trainer(ref, cfg(tmp_path / "ref", max_steps=5), data, collate, mse_loss).fit()
    m = make_model()
    hist = Trainer(m, cfg(tmp_path / "a", max_steps=5), data, collate, mse_loss).fit(stop_at=2)
    assert len(hist) == 2 and snapshot_names(tmp_path / "a") == ["checkpoint-00000002"]
    assert not (tmp_path / "a" / "model").exists()  # not finished: no final model yet
    Trainer(make_model(seed=7), cfg(tmp_path / "a", max_steps=5), data, collate, mse_loss).fit()
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "ref" / "metrics.csv").read_bytes()
    # a run that wrote logs but no snapshot yet starts again from step 0 (same settings only)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_model(), cfg(tmp_path / "b", max_steps=5), data, collate, loss_interrupted_at_call(3)).fit()
    assert snapshot_names(tmp_path / "b") == [] and (tmp_path / "b" / "metrics.csv").exists()
    b = make_model()
    Trainer(b, cfg(tmp_path / "b", max_steps=5), data, collate, mse_loss).fit()
    assert all(torch.equal(x, y) for x, y in zip(ref.state_dict().values(), b.state_dict().values()))
    assert (tmp_path / "b" / "metrics.csv").read_bytes() == (tmp_path / "ref" / "metrics.csv").read_bytes()
    with pytest.raises(ValueError, match="stop_at"):
        Trainer(make_model(), cfg(tmp_path / "c"), data, collate, mse_loss).fit(stop_at=-1)


class Counter:
    """A piece of step_fn state that lives outside the model (like EMA weights or usage counts)."""

    def __init__(self):
        self.total = torch.zeros(1, dtype=torch.float64)

    def state_dict(self):
        return {"total": self.total.clone()}

    def load_state_dict(self, state):
        self.total.copy_(state["total"])


def _step_fn_run(folder, *, stop_at=None, crash_at=None, seed=0):
    """A step_fn trainer with its own optimizer, scheduler, a private numpy RNG and a counter, batches
    drawn by sample_batch from the global torch RNG."""
    torch.manual_seed(seed)
    model = make_model(dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, gamma=0.5)
    rng, counter = np.random.default_rng(0), Counter()
    data = make_data(40)
    x, y = collate(data)["x"], collate(data)["y"]

    def sample_batch():
        idx = torch.randint(0, len(data), (8,))
        return x[idx], y[idx]

    def step_fn(trainer, batch):
        if crash_at is not None and trainer.step + 1 == crash_at:
            raise KeyboardInterrupt
        xb, yb = batch
        noise = torch.from_numpy(rng.normal(size=xb.shape).astype(np.float32)) * 0.01
        loss = ((trainer.model(xb + noise) - yb) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        counter.total += loss.item()
        return {"loss": loss, "lr": sched.get_last_lr()[0], "total": counter.total.item(), "odd": trainer.step % 2 == 0}

    trainer = Trainer(model, cfg(folder, max_steps=8, save_every=3), step_fn=step_fn, sample_batch=sample_batch,
                      reseed=False)
    for name, obj in (("optimizer", opt), ("scheduler", sched), ("rng", rng), ("counter", counter)):
        trainer.register_state(name, obj)
    return trainer, model


@pytest.mark.learning
def test_step_fn_training_learns_and_resumes_exactly(tmp_path):
    full, model = _step_fn_run(tmp_path / "a")
    hist = full.fit()
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"] and hist[0]["odd"] == 1  # it learns; bools log as 0 / 1
    rows = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    assert list(rows[0]) == ["step", "loss", "lr", "total", "odd"] and len(rows) == 8
    half, _ = _step_fn_run(tmp_path / "b", crash_at=6)
    with pytest.raises(KeyboardInterrupt):
        half.fit()
    resumed, model_b = _step_fn_run(tmp_path / "b", seed=1)  # other init: everything comes from the snapshot
    resumed.fit()
    for (k, a), b in zip(model.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), k
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()


def test_step_fn_arguments_are_checked(tmp_path):
    model = make_model()
    with pytest.raises(TypeError, match="exactly one of loss_fn"):
        Trainer(model, cfg(tmp_path), make_data(16), collate, mse_loss, step_fn=lambda t, b: {})
    with pytest.raises(TypeError, match="not both"):
        Trainer(model, cfg(tmp_path), make_data(16), collate, step_fn=lambda t, b: {}, sample_batch=lambda: None)
    with pytest.raises(ValueError, match="grad_accum_steps must be 1"):
        Trainer(model, cfg(tmp_path, grad_accum_steps=2), step_fn=lambda t, b: {}, sample_batch=lambda: None)
    t = Trainer(model, cfg(tmp_path), step_fn=lambda t, b: {}, sample_batch=lambda: None)
    with pytest.raises(TypeError, match="state_dict"):
        t.register_state("x", object())
    t.register_state("g", torch.Generator())
    with pytest.raises(ValueError, match="already registered"):
        t.register_state("g", torch.Generator())
    bad = Trainer(model, cfg(tmp_path / "bad"), step_fn=lambda t, b: 1.0, sample_batch=lambda: None)
    with pytest.raises(TypeError, match="dict of metrics"):
        bad.fit()


def test_pretrained_model_is_saved_to_model_folder_and_seed_is_reproducible(tmp_path):
    from mmreward.core.train import seed_everything
    from mmreward.registry import resolve_folder

    def build_and_train(folder):
        seed_everything(3)  # before the model is built: its initial weights depend on the seed
        model = TinyRegressor()
        Trainer(model, cfg(folder, max_steps=3), make_data(32), collate, mse_loss).fit()
        return model

    a, b = build_and_train(tmp_path / "a"), build_and_train(tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    loaded = TinyRegressor.from_pretrained(str(tmp_path / "a" / "model"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), loaded.state_dict().values()))
    assert resolve_folder(str(tmp_path / "a")) == str(tmp_path / "a" / "model")


@pytest.mark.parametrize("how", [dict(overwrite=True), dict(resume=False)])
def test_a_second_fit_of_a_trainer_continues_its_run(tmp_path, how):
    # overwrite=True used to delete the snapshot and metrics.csv of the first call and restart the RNGs
    # halfway (or, after a finished run, leave an emptied folder); resume=False refused the documented
    # stop_at continuation
    data = make_data(32)
    ref = make_model()
    Trainer(ref, cfg(tmp_path / "ref", max_steps=4, **how), data, collate, mse_loss).fit()
    m = make_model()
    trainer = Trainer(m, cfg(tmp_path / "a", max_steps=4, **how), data, collate, mse_loss)
    trainer.fit(stop_at=2)
    assert [r["step"] for r in trainer.fit()] == [1, 2, 3, 4]
    assert all(torch.equal(x, y) for x, y in zip(ref.state_dict().values(), m.state_dict().values()))
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "ref" / "metrics.csv").read_bytes()
    assert len(trainer.fit()) == 4  # finished: nothing to do, nothing removed
    assert snapshot_names(tmp_path / "a")[0] == "checkpoint-00000004"
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "ref" / "metrics.csv").read_bytes()


def test_a_second_fit_without_a_snapshot_is_refused_not_restarted_from_trained_weights(tmp_path):
    trainer = Trainer(make_model(), cfg(tmp_path, max_steps=5), make_data(32), collate, loss_interrupted_at_call(3))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    with pytest.raises(RuntimeError, match="no snapshot to continue from"):
        trainer.fit()


def test_config_values_of_numpy_and_path_types_and_bad_values(tmp_path):
    c = cfg(tmp_path, max_steps=np.int64(3), batch_size=np.int32(8), lr=np.float32(0.5), seed=np.uint8(1))
    assert (c.max_steps, c.batch_size, c.seed) == (3, 8, 1) and type(c.max_steps) is int and type(c.lr) is float
    assert TrainConfig(output_dir=tmp_path / "p").output_dir == str(tmp_path / "p")
    for bad in (dict(weight_decay=float("inf")), dict(lr=True), dict(max_steps=np.float64(3.0))):
        with pytest.raises(ValueError, match=next(iter(bad))):
            cfg(tmp_path, **bad)
    Trainer(make_model(), cfg(tmp_path / "np", max_steps=np.int64(2)), make_data(16), collate, mse_loss).fit(
        stop_at=np.int64(1))


def test_datasets_not_indexed_by_position_and_bad_eval_values_are_named(tmp_path):
    data = make_data(16)
    with pytest.raises(TypeError, match="train_dataset .* got dict"):
        Trainer(make_model(), cfg(tmp_path), {str(i): e for i, e in enumerate(data)}, collate, mse_loss)
    with pytest.raises(TypeError, match="train_dataset .* got set"):
        Trainer(make_model(), cfg(tmp_path), set(range(16)), collate, mse_loss)
    bad_evals = (({"acc": torch.ones(2)}, "'acc'"), ({"acc": "high"}, "'acc'"), ({1: 0.5}, "string keys"))
    for i, (out, match) in enumerate(bad_evals):
        with pytest.raises(TypeError, match=match):
            Trainer(make_model(), cfg(tmp_path / f"e{i}", max_steps=1), data, collate, mse_loss,
                    eval_fn=lambda m, out=out: out).fit()


def test_a_warmup_as_long_as_the_run_warns_that_lr_is_never_reached(tmp_path):
    with pytest.warns(UserWarning, match=r"warmup_steps \(20\) >= max_steps \(10\).*peaks at 0\.5 × lr"):
        TrainConfig(output_dir=str(tmp_path), max_steps=10, warmup_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainConfig(output_dir=str(tmp_path), max_steps=10, warmup_steps=9)


def test_a_resume_with_another_lr_or_weight_decay_is_refused(tmp_path):
    """The snapshot's optimizer state carries the lr / weight_decay it was written with; restoring it used
    to replace the config's values without a word (a resume asking for lr=0.5 trained on at 1e-2)."""
    data = make_data(32)
    Trainer(make_model(), cfg(tmp_path, max_steps=2, weight_decay=0.01), data, collate, mse_loss).fit()
    for change, named in (({"lr": 0.5}, r"lr: saved 0\.01, now 0\.5"),
                          ({"weight_decay": 0.1}, r"weight_decay: saved 0\.01, now 0\.1")):
        with pytest.raises(ValueError, match=f"other settings \\({named}"):
            Trainer(make_model(), cfg(tmp_path, **{"max_steps": 4, "weight_decay": 0.01, **change}), data, collate,
                    mse_loss).fit()
    hist = Trainer(make_model(), cfg(tmp_path, max_steps=4, weight_decay=0.01), data, collate, mse_loss).fit()
    assert [r["step"] for r in hist] == [1, 2, 3, 4]  # the same settings continue
    # an optimizer the caller builds carries its own lr: not compared with the config's
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.3, weight_decay=0.01)
    Trainer(model, cfg(tmp_path / "own", max_steps=1), data, collate, mse_loss, optimizer=opt).fit()
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.3, weight_decay=0.01)
    assert len(Trainer(model, cfg(tmp_path / "own", max_steps=2, lr=0.7), data, collate, mse_loss,
                       optimizer=opt).fit()) == 2


def test_a_run_past_max_steps_is_refused_not_resaved(tmp_path):
    """A folder holding a run at step 4 asked for max_steps=2 used to train nothing and re-save the 4-step
    model as the result, without a word."""
    data = make_data(32)
    Trainer(make_model(), cfg(tmp_path, max_steps=4), data, collate, mse_loss).fit()
    before = {p: os.path.getmtime(tmp_path / p) for p in ("metrics.csv", "train_config.json")}
    with pytest.raises(ValueError, match=r"already at step 4, past max_steps=2: ask for at least 4 steps"):
        Trainer(make_model(), cfg(tmp_path, max_steps=2), data, collate, mse_loss).fit()
    assert {p: os.path.getmtime(tmp_path / p) for p in before} == before  # nothing written
    assert len(Trainer(make_model(), cfg(tmp_path, max_steps=4), data, collate, mse_loss).fit()) == 4  # finished: as is


def test_a_resume_with_another_number_of_examples_is_refused(tmp_path):
    """Each epoch's order is a permutation of len(train_dataset): a resume with more or fewer examples used
    to go on silently with another data order (and other data)."""
    Trainer(make_model(), cfg(tmp_path, max_steps=2), make_data(32), collate, mse_loss).fit()
    with pytest.raises(ValueError, match=r"other settings \(train_dataset: saved 32 examples, now 48; "):
        Trainer(make_model(), cfg(tmp_path, max_steps=4), make_data(48), collate, mse_loss).fit()
    hist = Trainer(make_model(), cfg(tmp_path, max_steps=4), make_data(32), collate, mse_loss).fit()
    assert [r["step"] for r in hist] == [1, 2, 3, 4]


def test_a_run_continued_to_more_steps_follows_the_new_schedule_from_its_first_step(tmp_path):
    """The first step after a resume with a larger max_steps ran at the saved schedule's lr (0 at the end of
    a 4-step cosine), then the new schedule's."""
    from mmreward.core.train import warmup_cosine

    data = make_data(32)
    Trainer(make_model(), cfg(tmp_path, max_steps=4, warmup_steps=1, lr=1e-2), data, collate, mse_loss).fit()
    hist = Trainer(make_model(), cfg(tmp_path, max_steps=8, warmup_steps=1, lr=1e-2), data, collate, mse_loss).fit()
    lrs = [r["lr"] for r in hist[4:]]
    assert lrs == pytest.approx([1e-2 * warmup_cosine(s, warmup_steps=1, total_steps=8) for s in range(4, 8)])


def test_the_run_folder_lock_is_released_when_fit_ends_or_the_run_is_refused(tmp_path):
    from mmreward.core import checkpoint as ck

    held = lambda: os.path.realpath(tmp_path) in ck._HELD_LOCKS  # noqa: E731
    data = make_data(16)
    trainer = Trainer(make_model(), cfg(tmp_path, max_steps=2), data, collate, mse_loss)
    trainer.start()
    assert held()  # from start() (a command's "before" figures) to the end of fit()
    trainer.fit()
    assert not held()
    with pytest.raises(ValueError, match="holds a training run"):
        Trainer(make_model(), cfg(tmp_path, max_steps=2, resume=False), data, collate, mse_loss).fit()
    assert not held()


def test_a_compiled_model_run_writes_the_model_it_compiled(tmp_path):
    """Trainer(torch.compile(model), ...) ended without model/ (the wrapper is no Pretrained), and mmreward.load of the
    run then said the run saved no model. The compiled module (a wrapper with _orig_mod, as torch.compile's) is saved."""
    class Compiled(nn.Module):  # torch.compile's OptimizedModule without the compile time: the same _orig_mod
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

        def forward(self, x):
            return self._orig_mod(x)

    torch.manual_seed(0)
    inner = TinyRegressor()
    Trainer(Compiled(inner), cfg(tmp_path, max_steps=3), make_data(32), collate, mse_loss).fit()
    loaded = TinyRegressor.from_pretrained(str(tmp_path / "model"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), inner.state_dict().values()))


def test_a_compiled_sub_module_is_refused_before_any_step(tmp_path):
    """model.net = torch.compile(model.net): all steps ran, then model/ could not be written and the snapshot (keys
    net._orig_mod.*) could not resume the uncompiled model. Refused before the first step."""
    class Compiled(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

        def forward(self, x):
            return self._orig_mod(x)

    model = TinyRegressor()
    model.net = Compiled(model.net)
    with pytest.raises(ValueError, match=r"Trainer: 'net' is a torch.compile wrapper .*model.net.compile\(\)"):
        Trainer(model, cfg(tmp_path, max_steps=3), make_data(32), collate, mse_loss)
    assert not (tmp_path / "metrics.csv").exists()

import json
import os
import random

import numpy as np
import pytest
import torch

from mmreward.core import checkpoint as ck


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 1))


def test_model_roundtrip(tmp_path):
    m = _model()
    ck.save_model(str(tmp_path), m.state_dict(), {"hidden": 7, "name": "tiny"})
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    sd, cfg = ck.load_model(str(tmp_path))
    assert cfg == {"hidden": 7, "name": "tiny"}
    for k, v in m.state_dict().items():
        assert torch.equal(sd[k], v)


def test_training_state_roundtrip_gives_exact_resume(tmp_path):
    m = _model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    x, y = torch.randn(8, 5), torch.randn(8, 1)

    def step():
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(x + torch.randn_like(x) * 0.1), y).backward()
        opt.step()
        sched.step()

    for _ in range(3):
        step()
    state = {
        "model": m.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": 3,
        "torch_rng": torch.get_rng_state(), "np_rng": np.random.get_state(), "py_rng": random.getstate(),
        "nan": float("nan"), "dtype": torch.bfloat16,
    }
    ck.save_state(str(tmp_path / "snap"), state)
    step()
    expected = [p.detach().clone() for p in m.parameters()]

    m2 = _model()
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 0.5 ** s)
    loaded = ck.load_state(str(tmp_path / "snap"))
    m2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["opt"])
    sched2.load_state_dict(loaded["sched"])
    torch.set_rng_state(loaded["torch_rng"])
    np.random.set_state(loaded["np_rng"])
    random.setstate(loaded["py_rng"])
    assert loaded["step"] == 3 and loaded["dtype"] is torch.bfloat16 and loaded["nan"] != loaded["nan"]
    m, opt, sched = m2, opt2, sched2
    step()
    for p, e in zip(m2.parameters(), expected):
        assert torch.equal(p.detach(), e)


def test_corrupt_files_give_clear_errors(tmp_path):
    ck.save_model(str(tmp_path), _model().state_dict(), {"a": 1})
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CheckpointError, match="truncated"):
        ck.load_model(str(tmp_path))
    weights.write_bytes(b"\x00" * 16)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["_mmreward"]["weights_bytes"] = 16
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ck.CheckpointError, match="corrupt"):
        ck.load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ck.CheckpointError, match="corrupt JSON"):
        ck.load_model(str(tmp_path))
    with pytest.raises(ck.CheckpointError, match="does not exist"):
        ck.load_model(str(tmp_path / "nope"))


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ck.save_model(str(tmp_path), {"w": torch.ones(3)}, {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    import safetensors.torch as st
    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        ck.save_model(str(tmp_path), {"w": torch.zeros(3)}, {"v": 2})
    sd, cfg = ck.load_model(str(tmp_path))
    assert cfg == {"v": 1} and torch.equal(sd["w"], torch.ones(3))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_unsupported_values_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="cannot checkpoint"):
        ck.save_state(str(tmp_path / "s"), {"f": lambda: 0})

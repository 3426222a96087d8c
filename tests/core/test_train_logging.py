import csv
import math
import random

import numpy as np
import pytest
import torch

from mmreward.core.logging import MetricLogger, plot_curves
from mmreward.core.train import rng_state, seed_everything, set_rng_state, warmup_cosine


def test_warmup_cosine_shape():
    vals = [warmup_cosine(s, warmup_steps=10, total_steps=110) for s in range(111)]
    assert vals[0] == pytest.approx(0.1) and vals[9] == pytest.approx(1.0)
    assert all(a <= b + 1e-12 for a, b in zip(vals[:10], vals[1:10]))  # rises during warmup
    assert all(a >= b - 1e-12 for a, b in zip(vals[10:], vals[11:]))  # then decays
    assert vals[110] == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(60, warmup_steps=10, total_steps=110, min_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)


def test_rng_state_roundtrip():
    seed_everything(3)
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b


def test_metric_logger_csv_new_columns_and_resume(tmp_path, capsys):
    with MetricLogger(str(tmp_path), tensorboard=False) as log:
        log.log(1, loss=1.0)
        log.log(2, loss=0.5, acc=0.7)
        log.log(3, loss=0.25)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["acc"] == "" and rows[1]["acc"] == "0.7"
    assert "step 2: loss=0.5 acc=0.7" in capsys.readouterr().out
    # resume from step 2: step 3 is dropped and re-logged
    with MetricLogger(str(tmp_path), tensorboard=False, resume_step=2, quiet=True) as log:
        log.log(3, loss=0.3)
        assert log.series("loss") == ([1, 2, 3], [1.0, 0.5, 0.3])
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["step"], r["loss"]) for r in rows] == [("1", "1.0"), ("2", "0.5"), ("3", "0.3")]


def test_plot_curves_writes_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is an optional dependency")
    path = plot_curves(str(tmp_path / "c.png"), {"a": ([0, 1, 2], [1, 0.5, math.nan])}, title="t")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

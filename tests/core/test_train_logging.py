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


def test_resume_drops_a_half_written_last_line_and_later_rows(tmp_path):
    with MetricLogger(str(tmp_path), tensorboard=False, quiet=True) as log:
        for step in (1, 2, 3):
            log.log(step, loss=1.0 / step)
    full = (tmp_path / "metrics.csv").read_bytes()
    assert full.count(b"\r") == 0  # one line ending everywhere, appended or rewritten
    with open(tmp_path / "metrics.csv", "ab") as f:
        f.write(b"1")  # a killed append of step 1x: looks like step 1 without the rest of its line
    with MetricLogger(str(tmp_path), tensorboard=False, resume_step=2, quiet=True) as log:
        assert log.series("loss")[0] == [1, 2]
        log.log(3, loss=1.0 / 3)
    assert (tmp_path / "metrics.csv").read_bytes() == full


def test_tensorboard_resume_keeps_the_resume_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricLogger(str(tmp_path), quiet=True) as log:
        for step in (1, 2, 3):
            log.log(step, loss=float(step))
    with MetricLogger(str(tmp_path), resume_step=2, quiet=True) as log:
        log.log(3, loss=30.0)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_seed_everything_rejects_non_integers():
    with pytest.raises(TypeError, match="integer"):
        seed_everything(1.5)
    seed_everything(np.int64(4))

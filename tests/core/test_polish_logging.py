"""The console line every ``log_every`` steps names the run's global step, a resumed run's too."""
import csv
import os
import re

from mmreward.core.logging import MetricLogger
from mmreward.core.trainer import Trainer

from test_trainer import cfg, collate, make_data, make_model, mse_loss


def _printed_steps(text):
    return [int(m) for m in re.findall(r"\] step (\d+):", text)]


def test_console_lines_of_a_resumed_logger_fall_on_the_global_steps(tmp_path, capsys):
    with MetricLogger(str(tmp_path), tensorboard=False, console_every=5) as log:
        for step in range(1, 8):
            log.log(step, loss=1.0)
    assert _printed_steps(capsys.readouterr().out) == [5]
    with MetricLogger(str(tmp_path), tensorboard=False, console_every=5, resume_step=7) as log:
        for step in range(8, 21):
            log.log(step, loss=1.0)
    assert _printed_steps(capsys.readouterr().out) == [10, 15, 20]  # was 12, 17 (rows since the restart)
    with open(os.path.join(tmp_path, "metrics.csv"), newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 21))


def test_steps_that_jump_print_once_per_multiple_crossed(tmp_path, capsys):
    with MetricLogger(str(tmp_path), tensorboard=False, console_every=10) as log:
        for step in (0, 4, 8, 12, 16, 20, 24, 33):  # frames of an RL loop, action repeat 4
            log.log(step, reward=1.0)
    assert _printed_steps(capsys.readouterr().out) == [0, 12, 20, 33]


def test_a_resumed_trainer_prints_at_multiples_of_log_every(tmp_path, capsys):
    c = cfg(tmp_path, max_steps=20, log_every=10)
    Trainer(make_model(), c, make_data(), collate, mse_loss).fit(stop_at=7)
    assert _printed_steps(capsys.readouterr().out) == []
    Trainer(make_model(), c, make_data(), collate, mse_loss).fit()
    assert _printed_steps(capsys.readouterr().out) == [10, 20]  # was [17]
    with open(os.path.join(tmp_path, "metrics.csv"), newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 21))

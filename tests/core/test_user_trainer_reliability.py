"""The training loop when things go wrong: a step that breaks the weights, a killed run's TensorBoard
events, interrupted runs (an RLHF engineer's long jobs)."""
import json
import os

import pytest
import torch

from mmreward.core.logging import MetricLogger
from mmreward.core.trainer import Trainer, TrainingDiverged

from test_trainer import cfg, collate, loss_interrupted_at_call, make_data, make_model, mse_loss


def _eval_counter():
    calls = []

    def eval_fn(model):
        calls.append(1)
        out = model(torch.ones(2, 6))
        if not torch.isfinite(out).all():
            raise ValueError("held-out NaN score")
        return {"mean": float(out.mean())}

    return eval_fn, calls


def test_weights_made_non_finite_by_a_step_with_a_finite_loss_are_not_evaluated(tmp_path):
    # SGD at a huge lr writes inf into the weights without any error and with a finite loss: the run went on to
    # evaluate the broken weights (the eval_fn's "NaN score") and stopped one step later on a NaN loss
    model = make_model()
    eval_fn, calls = _eval_counter()
    trainer = Trainer(model, cfg(tmp_path, max_steps=3, eval_every=1, max_grad_norm=None), make_data(), collate,
                      lambda m, b: (mse_loss(m, b)[0] * 100, {}), eval_fn,
                      optimizer=torch.optim.SGD(model.parameters(), lr=1e38))
    with pytest.raises(TrainingDiverged, match=r"diverged at step 1: parameter '\S+' holds non-finite values; its "
                                               r"evaluation is not run"):
        trainer.fit()
    assert calls == []
    record = json.loads((tmp_path / "diverged.json").read_text())
    assert record["steps_done"] == 1 and record["error"].startswith("the model diverged at step 1: parameter")


def test_a_step_function_that_breaks_the_weights_is_not_snapshotted(tmp_path):
    model = make_model()

    def step_fn(trainer, batch):
        if trainer.step == 1:
            with torch.no_grad():
                model[0].weight[0, 0] = float("nan")
        return {"loss": 1.0}

    with pytest.raises(TrainingDiverged, match=r"diverged at step 4: parameter '0.weight' holds non-finite values; "
                                               r"its snapshot is not written"):
        Trainer(model, cfg(tmp_path, max_steps=4), step_fn=step_fn, sample_batch=lambda: None).fit()
    assert json.loads((tmp_path / "diverged.json").read_text())["steps_done"] == 4


def test_check_saves_stops_before_evaluating_weights_that_overflow(tmp_path):
    # `vision train --lr 1e30`: finite weights whose forward overflows; the evaluation ran on them first
    eval_fn, calls = _eval_counter()
    trainer = Trainer(make_model(), cfg(tmp_path, max_steps=3, eval_every=1, lr=1e30), make_data(), collate,
                      mse_loss, eval_fn, check_saves=True)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 1: its loss .* is inf; its evaluation is not run"):
        trainer.fit()
    assert calls == []
    assert (tmp_path / "diverged.json").exists()


def _raw_scalars(tb_dir, tag="loss"):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = []
    for name in sorted(os.listdir(tb_dir)):
        for e in EventFileLoader(os.path.join(tb_dir, name)).Load():
            for v in e.summary.value:
                if v.tag == tag:
                    out.append((e.step, round(float(v.tensor.float_val[0] if v.tensor.float_val else v.simple_value), 5)))
    return out


def test_a_resumed_run_leaves_one_tensorboard_point_per_step(tmp_path):
    pytest.importorskip("tensorboard")
    config = cfg(tmp_path, max_steps=6, save_every=2, tensorboard=True)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in step 4: steps 3 and 4's events... step 3's are stale
        Trainer(make_model(), config, make_data(), collate, loss_interrupted_at_call(4)).fit()
    assert [s for s, _ in _raw_scalars(tmp_path / "tb")] == [1, 2, 3]
    hist = Trainer(make_model(), config, make_data(), collate, mse_loss).fit()
    points = _raw_scalars(tmp_path / "tb")
    assert sorted(s for s, _ in points) == [1, 2, 3, 4, 5, 6]  # not step 3 twice
    assert dict(points) == {r["step"]: round(r["loss"], 5) for r in hist}


def test_tensorboard_drops_stale_events_whatever_order_the_files_sort_in(tmp_path):
    # a killed process's file sorts after the resumed one's (same second, a larger pid): TensorBoard read the
    # purge first and the stale step 3 after it
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricLogger(str(tmp_path), quiet=True) as log:
        for step in (1, 2, 3):
            log.log(step, loss=float(step))
    (old,) = os.listdir(tmp_path / "tb")
    os.rename(tmp_path / "tb" / old, tmp_path / "tb" / "events.out.tfevents.9999999999.host.99999.0")
    with MetricLogger(str(tmp_path), resume_step=2, quiet=True) as log:
        log.log(3, loss=30.0)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert sorted((e.step, e.value) for e in acc.Scalars("loss")) == [(1, 1.0), (2, 2.0), (3, 30.0)]
    # a run starting again from step 0 (killed before its first snapshot) keeps none of the old events
    with MetricLogger(str(tmp_path), resume_step=-1, quiet=True) as log:
        log.log(1, loss=100.0)
    assert _raw_scalars(tmp_path / "tb") == [(1, 100.0)]


def test_an_unreadable_event_file_is_left_with_a_warning(tmp_path):
    pytest.importorskip("tensorboard")
    os.makedirs(tmp_path / "tb")
    (tmp_path / "tb" / "events.out.tfevents.1.host.1.0").write_bytes(b"\xff" * 40)
    with pytest.warns(UserWarning, match="could not be read"):
        MetricLogger(str(tmp_path), resume_step=2, quiet=True).close()
    assert (tmp_path / "tb" / "events.out.tfevents.1.host.1.0").read_bytes() == b"\xff" * 40


def _loss_signalling_at_call(n: int, signum: int):
    calls = {"n": 0}

    def loss(model, batch):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signum)  # delivered in the middle of the step, as a scheduler's would be
        return mse_loss(model, batch)

    return loss


def test_ctrl_c_finishes_the_step_snapshots_it_and_the_resume_is_exact(tmp_path):
    import signal

    from mmreward.core.trainer import TrainingInterrupted

    full = Trainer(make_model(), cfg(tmp_path / "full", max_steps=8, save_every=5), make_data(), collate,
                   mse_loss).fit()
    config = cfg(tmp_path / "run", max_steps=8, save_every=5)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIGINT after step 3 of 8; the snapshot .*checkpoint-0+3"):
        Trainer(make_model(), config, make_data(), collate, _loss_signalling_at_call(3, signal.SIGINT)).fit()
    assert signal.getsignal(signal.SIGINT) is before  # the program's handler is back
    assert os.path.isdir(tmp_path / "run" / "checkpoint-00000003")  # steps 1-3 kept, not lost to step 0
    model = make_model()
    hist = Trainer(model, config, make_data(), collate, mse_loss).fit()
    assert [r["loss"] for r in hist] == [r["loss"] for r in full]


def test_a_signal_in_the_last_step_still_stops_the_caller_after_the_run_is_saved(tmp_path):
    """Ctrl-C during a call's last step was swallowed: fit() returned normally, and a loop of fit(stop_at=...)
    calls, or a CLI's evaluation after training, went on. Now the run ends saved and the signal then acts."""
    import signal

    config = cfg(tmp_path, max_steps=8, save_every=5)
    before = signal.getsignal(signal.SIGINT)
    trainer = Trainer(make_model(), config, make_data(), collate, _loss_signalling_at_call(4, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt) as info:
        trainer.fit(stop_at=4)
    assert type(info.value) is KeyboardInterrupt  # the program's own handler, after the run was saved
    assert signal.getsignal(signal.SIGINT) is before
    assert os.path.isdir(tmp_path / "checkpoint-00000004") and trainer.step == 4


def test_sigterm_from_a_scheduler_snapshots_the_step_under_way(tmp_path):
    # in a forked child: without the handler, SIGTERM ends the process (here: pytest itself)
    import signal

    from fault_injection import in_child

    config = cfg(tmp_path, max_steps=8, save_every=5)
    code, message = in_child(lambda: Trainer(make_model(), config, make_data(), collate,
                                             _loss_signalling_at_call(2, signal.SIGTERM)).fit() and None)
    assert code == 130 and "stopped by SIGTERM after step 2 of 8" in message
    assert os.path.isdir(tmp_path / "checkpoint-00000002")
    assert len(Trainer(make_model(), config, make_data(), collate, mse_loss).fit()) == 8


def test_without_a_terminal_the_progress_bar_becomes_log_lines(tmp_path, capsys):
    # a CI job / a scheduler's log file: no carriage-return redraws, the console line every log_every steps
    Trainer(make_model(), cfg(tmp_path, max_steps=4, progress=True, log_every=2), make_data(), collate,
            mse_loss).fit()
    out, err = capsys.readouterr()
    assert "\r" not in err and "train" not in err
    assert [line.split("] ")[1].split(":")[0] for line in out.splitlines()] == ["step 2", "step 4"]


def test_a_run_resumed_without_tensorboard_still_drops_the_stale_events(tmp_path):
    pytest.importorskip("tensorboard")
    with MetricLogger(str(tmp_path), quiet=True) as log:
        for step in (1, 2, 3):
            log.log(step, loss=float(step))
    with MetricLogger(str(tmp_path), tensorboard=False, resume_step=2, quiet=True) as log:
        log.log(3, loss=30.0)
    assert _raw_scalars(tmp_path / "tb") == [(1, 1.0), (2, 2.0)]

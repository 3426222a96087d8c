"""A user whose long runs on a shared cluster are pre-empted and restarted: resumed on another number of
processes (refused, saying how to continue), resumed with changed settings (the accepted ones are said), a
full disk or a read-only folder while a snapshot or the final model is written (the previous snapshot stays,
one error naming the step and where a rerun continues), logs after several resumes, and a 2-process
torchrun run resumed on 2 processes (the same as an uninterrupted one)."""
import errno
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.distributed as dist

from mmreward.core import checkpoint as ck
from mmreward.core.trainer import Trainer

from test_trainer import TinyRegressor, cfg, collate, loss_interrupted_at_call, make_data, make_model, mse_loss, \
    snapshot_names


def _fail_renames_into(monkeypatch, name, error=errno.ENOSPC):
    """``os.rename`` / ``os.replace`` onto a path ending in ``name`` fail as on a full disk (or a read-only folder)."""
    for fn in ("rename", "replace"):
        real = getattr(os, fn)

        def fail(src, dst, *a, _real=real, **kw):
            if os.fspath(dst).endswith(name):
                raise OSError(error, os.strerror(error))
            return _real(src, dst, *a, **kw)

        monkeypatch.setattr(os, fn, fail)


def test_a_snapshot_that_cannot_be_written_keeps_the_previous_one_and_says_where_to_continue(tmp_path, monkeypatch):
    # the disk filled up while step 4's snapshot was written: the error was the bare "[Errno 28] No space left on
    # device", naming neither the step nor the snapshot a rerun continues from
    kw = dict(max_steps=6, save_every=2)
    ref = Trainer(make_model(), cfg(tmp_path / "ref", **kw), make_data(), collate, mse_loss).fit()
    _fail_renames_into(monkeypatch, "checkpoint-00000004")
    out = tmp_path / "run"
    with pytest.raises(OSError) as info:
        Trainer(make_model(), cfg(out, **kw), make_data(), collate, mse_loss).fit()
    assert info.value.errno == errno.ENOSPC
    message = str(info.value)
    assert "writing the snapshot of step 4" in message and "No space left on device" in message
    assert f"the newest snapshot is {out / 'checkpoint-00000002'} (step 2)" in message
    assert "rerun the same command to continue" in message and "\n" not in message
    assert snapshot_names(out) == ["checkpoint-00000002"]
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no half-written snapshot left behind
    monkeypatch.undo()
    again = Trainer(make_model(), cfg(out, **kw), make_data(), collate, mse_loss).fit()
    assert [r["loss"] for r in again] == [r["loss"] for r in ref]
    assert (out / "metrics.csv").read_text() == (tmp_path / "ref" / "metrics.csv").read_text()


def test_a_full_disk_while_a_metrics_row_is_written_names_the_step_and_the_snapshot(tmp_path, monkeypatch):
    from mmreward.core.logging import MetricLogger

    real = MetricLogger.log

    def log(self, step, **metrics):
        if step == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, step, **metrics)

    monkeypatch.setattr(MetricLogger, "log", log)
    with pytest.raises(OSError, match=r"writing step 3's row of .*metrics\.csv failed: No space left on device; the "
                                      r"newest snapshot is .*checkpoint-00000002 \(step 2\)"):
        Trainer(make_model(), cfg(tmp_path, max_steps=4, save_every=2), make_data(), collate, mse_loss).fit()


def test_a_final_model_that_cannot_be_written_says_the_run_is_saved(tmp_path, monkeypatch):
    def read_only(self, folder, *a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(folder, "config.json"))

    monkeypatch.setattr(TinyRegressor, "save_pretrained", read_only)
    torch.manual_seed(0)
    with pytest.raises(PermissionError, match=r"writing the final model \(.*model\) failed: Permission denied "
                                              r"\(.*config\.json\); the newest snapshot is .*checkpoint-00000003 "
                                              r"\(step 3\)"):
        Trainer(TinyRegressor(), cfg(tmp_path, max_steps=3), make_data(), collate, mse_loss).fit()
    monkeypatch.undo()
    torch.manual_seed(0)
    Trainer(TinyRegressor(), cfg(tmp_path, max_steps=3), make_data(), collate, mse_loss).fit()  # nothing left to train
    assert (tmp_path / "model" / "config.json").is_file()


@pytest.mark.parametrize("setting, value", [("warmup_steps", 3), ("min_lr_ratio", 0.5), ("max_grad_norm", None),
                                            ("autocast", "bf16")])
def test_a_resume_with_other_schedule_or_clipping_settings_says_so(tmp_path, setting, value):
    # accepted (the run goes on with them), but silently: train_config.json was rewritten with the new values
    # and nothing said the run had changed course halfway
    Trainer(make_model(), cfg(tmp_path, max_steps=6), make_data(), collate, mse_loss).fit(stop_at=2)
    with pytest.warns(UserWarning, match=rf"resumes at step 2 with other settings than it last ran with "
                                         rf"\({setting}: was \S+, now {value!r}\): they apply from step 3 on"):
        Trainer(make_model(), cfg(tmp_path, max_steps=6, **{setting: value}), make_data(), collate,
                mse_loss).fit(stop_at=4)
    with warnings.catch_warnings():  # continued again with the same values: nothing to say
        warnings.simplefilter("error")
        Trainer(make_model(), cfg(tmp_path, max_steps=8, save_every=3, eval_every=2, **{setting: value}),
                make_data(), collate, mse_loss, lambda m: {"x": 0.0}).fit()


def test_a_resume_with_a_callers_optimizer_of_another_lr_is_refused(tmp_path):
    # Trainer(optimizer=SGD(lr=0.05)) resuming a run started with SGD(lr=0.1): the snapshot's optimizer state put
    # lr 0.1 back without a word (only the Trainer's own AdamW was compared)
    def sgd(model, lr):
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    model = make_model()
    Trainer(model, cfg(tmp_path, max_steps=4), make_data(), collate, mse_loss, optimizer=sgd(model, 0.1)).fit(stop_at=2)
    model = make_model()
    with pytest.raises(ValueError, match=r"other settings \(lr: saved 0\.1, now 0\.05; the snapshot's optimizer state "
                                         r"would keep the saved values\)"):
        Trainer(model, cfg(tmp_path, max_steps=4), make_data(), collate, mse_loss, optimizer=sgd(model, 0.05)).fit()
    model = make_model()
    hist = Trainer(model, cfg(tmp_path, max_steps=4), make_data(), collate, mse_loss, optimizer=sgd(model, 0.1)).fit()
    assert [r["step"] for r in hist] == [1, 2, 3, 4]


def test_a_resume_on_another_number_of_processes_is_refused_saying_how_to_continue(tmp_path):
    trainer = Trainer(make_model(), cfg(tmp_path, max_steps=4), make_data(), collate, mse_loss)
    trainer.start()
    trainer.world_size = 2  # the snapshot of a 2-process run
    trainer.save_snapshot()
    ck.unlock_run_folder(str(tmp_path))
    with pytest.raises(ValueError, match=r"world_size: saved 2, now 1 \(continue it with 2 processes, e\.g\. "
                                         r"torchrun --nproc_per_node 2\)\): rerun with the saved values to continue "
                                         r"it, use another output folder, or overwrite"):
        Trainer(make_model(), cfg(tmp_path, max_steps=4), make_data(), collate, mse_loss).fit()
    fingerprint = {**trainer._fingerprint(), "world_size": 1}
    ck.unlock_run_folder(str(tmp_path))
    trainer.world_size = 1
    ck.Snapshots(str(tmp_path)).remove_all()
    trainer.save_snapshot()
    with pytest.raises(ValueError, match=r"world_size: saved 1, now 2 \(continue it as one process, without "
                                         r"torchrun\)"):
        ck.start_run(str(tmp_path), {**fingerprint, "world_size": 2}, resume=True, overwrite=False, run_files=())


def test_several_resumes_leave_the_logs_of_one_run(tmp_path):
    """Killed mid-step twice (accumulation, intervals that do not divide max_steps), then continued past its end:
    metrics.csv and the TensorBoard events are those of an uninterrupted run, one point per step."""
    pytest.importorskip("tensorboard")
    from test_user_trainer_reliability import _raw_scalars

    def ev(m):
        return {"v": float(m(torch.ones(2, 6)).mean())}

    kw = dict(max_steps=10, save_every=4, eval_every=3, tensorboard=True, grad_accum_steps=2, batch_size=4)
    Trainer(make_model(), cfg(tmp_path / "ref", **kw), make_data(20), collate, mse_loss, ev).fit()
    out = tmp_path / "run"
    for calls in (9, 9):  # killed during step 5 (resumes from 4), then during step 9 (resumes from 8)
        with pytest.raises(KeyboardInterrupt):
            Trainer(make_model(), cfg(out, **kw), make_data(20), collate, loss_interrupted_at_call(calls), ev).fit()
    Trainer(make_model(), cfg(out, **kw), make_data(20), collate, mse_loss, ev).fit()
    assert (out / "metrics.csv").read_text() == (tmp_path / "ref" / "metrics.csv").read_text()
    for tag in ("loss", "eval_v"):
        assert sorted(_raw_scalars(str(out / "tb"), tag)) == sorted(_raw_scalars(str(tmp_path / "ref" / "tb"), tag))
    Trainer(make_model(), cfg(out, **dict(kw, max_steps=14)), make_data(20), collate, mse_loss, ev).fit()
    assert sorted(s for s, _ in _raw_scalars(str(out / "tb"))) == list(range(1, 15))
    assert sorted(s for s, _ in _raw_scalars(str(out / "tb"), "eval_v")) == [3, 6, 9, 10, 12, 14]
    with open(out / "metrics.csv") as f:
        assert [line.split(",")[0] for line in f][1:] == [str(s) for s in range(1, 15)]


SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[2])
    import torch
    from test_trainer import cfg, collate, make_data, make_model, mse_loss
    from mmreward.core.trainer import Trainer
    out = sys.argv[1]
    kw = dict(max_steps=5, save_every=2, batch_size=4)
    ref = Trainer(make_model(), cfg(os.path.join(out, "ref"), **kw), make_data(30), collate, mse_loss).fit()
    Trainer(make_model(), cfg(os.path.join(out, "run"), **kw), make_data(30), collate, mse_loss).fit(stop_at=3)
    # pre-empted after step 3 (its snapshot at 3): the job restarts on the same number of processes
    trainer = Trainer(make_model(), cfg(os.path.join(out, "run"), **kw), make_data(30), collate, mse_loss)
    again = trainer.fit()
    assert [r["loss"] for r in again] == [r["loss"] for r in ref], (again, ref)
    with open(os.path.join(out, f"rank{trainer.rank}.txt"), "w") as f:  # the ranks' prints interleave
        f.write(str(trainer.micro_step))
    # as docs/training.md says a script of one's own ends: a rank exiting with the gloo group open could abort
    # ("terminate called without an active exception", SIGABRT) under load
    from mmreward.core.train import end_distributed
    end_distributed()
""")


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_a_two_process_run_resumed_on_two_processes_equals_an_uninterrupted_one_and_not_on_one(tmp_path):
    (tmp_path / "run.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=root + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "run.py"), str(tmp_path), os.path.dirname(os.path.abspath(__file__))],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 30 examples over 2 ranks: 15 each, 3 micro-batches of 4 per epoch; 5 steps = 5 micro-batches on each rank
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["5", "5"]
    assert (tmp_path / "run" / "metrics.csv").read_text() == (tmp_path / "ref" / "metrics.csv").read_text()
    with pytest.raises(ValueError, match=r"world_size: saved 2, now 1 \(continue it with 2 processes"):
        Trainer(make_model(), cfg(tmp_path / "run", max_steps=6, save_every=2, batch_size=4), make_data(30), collate,
                mse_loss).fit()


def test_a_full_disk_met_by_safetensors_is_named_like_any_other_write(tmp_path, monkeypatch):
    """On a real full disk the tensors' write fails inside safetensors, whose SafetensorError is no OSError and
    has no errno ("Error while serializing: I/O error: No space left on device (os error 28)"): the run stopped
    with it, naming neither the step nor the snapshot to continue from."""
    import safetensors
    import safetensors.torch

    real, calls = safetensors.torch.save_file, []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # the second snapshot's tensors
            raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device "
                                              "(os error 28)")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    out = tmp_path / "run"
    with pytest.raises(OSError) as info:
        Trainer(make_model(), cfg(out, max_steps=6, save_every=2), make_data(), collate, mse_loss).fit()
    assert info.value.errno == errno.ENOSPC
    assert "writing the snapshot of step 4" in str(info.value)
    assert f"the newest snapshot is {out / 'checkpoint-00000002'} (step 2)" in str(info.value)


def test_the_resume_warning_compares_with_the_settings_the_snapshots_steps_ran_with(tmp_path):
    """A start with other settings killed before its first snapshot rewrote train_config.json: the next resume with
    the run's own settings warned "was 3, now 0" (and advised changing the run), and one with the killed start's
    settings said nothing although the snapshot's steps ran with others."""
    Trainer(make_model(), cfg(tmp_path, max_steps=8), make_data(), collate, mse_loss).fit(stop_at=4)
    with pytest.warns(UserWarning, match=r"warmup_steps: was 0, now 3"):
        killed = Trainer(make_model(), cfg(tmp_path, max_steps=8, warmup_steps=3), make_data(), collate, mse_loss)
        killed.start()  # ... and killed before its first snapshot
    ck.unlock_run_folder(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(make_model(), cfg(tmp_path, max_steps=8), make_data(), collate, mse_loss).fit(stop_at=5)
    with pytest.warns(UserWarning, match=r"warmup_steps: was 0, now 3"):
        Trainer(make_model(), cfg(tmp_path, max_steps=8, warmup_steps=3), make_data(), collate, mse_loss).fit()

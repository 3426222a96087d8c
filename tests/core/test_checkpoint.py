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


def test_training_state_is_one_file_and_bad_files_name_themselves(tmp_path):
    ck.save_state(str(tmp_path / "s"), {"w": torch.arange(4.0), "n": 3, "a": np.zeros(2)})
    assert os.listdir(tmp_path) == ["s.safetensors"]  # one file: it is replaced as a unit
    back = ck.load_state(str(tmp_path / "s"))
    assert back["n"] == 3 and torch.equal(back["w"], torch.arange(4.0)) and back["a"].shape == (2,)
    data = (tmp_path / "s.safetensors").read_bytes()
    (tmp_path / "s.safetensors").write_bytes(data[: len(data) - 3])
    with pytest.raises(ck.CheckpointError, match="s.safetensors"):
        ck.load_state(str(tmp_path / "s"))
    with pytest.raises(ck.CheckpointError, match="missing training state"):
        ck.load_state(str(tmp_path / "nothing"))
    from safetensors.torch import save_file

    save_file({"w": torch.ones(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ck.CheckpointError, match="not a training state"):
        ck.load_state(str(tmp_path / "plain"))


def test_snapshots_keep_two_verify_checksums_and_fall_back(tmp_path):
    snaps = ck.Snapshots(str(tmp_path))
    for step in (1, 2, 3):
        snaps.save(step, {"step": step, "w": torch.full((64,), float(step))})
    assert [s for s, _ in snaps.list()] == [3, 2]
    assert sorted(os.listdir(tmp_path / "checkpoint-00000003")) == ["manifest.json", "state.safetensors"]
    step, path, state = snaps.load_latest()
    assert step == 3 and state["step"] == 3
    state_file = tmp_path / "checkpoint-00000003" / "state.safetensors"
    data = bytearray(state_file.read_bytes())
    data[-5] ^= 0xFF  # same size: only the SHA-256 in the manifest catches it
    state_file.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="skipping unreadable snapshot.*resuming from step 2"):
        step, _, state = snaps.load_latest()
    assert step == 2 and torch.equal(state["w"], torch.full((64,), 2.0))
    assert (tmp_path / "checkpoint-00000003.unreadable").is_dir() and [s for s, _ in snaps.list()] == [2]
    (tmp_path / "checkpoint-00000002" / "state.safetensors").unlink()
    with pytest.raises(ck.CheckpointError, match="no readable snapshot.*state.safetensors is missing"):
        snaps.load_latest()


def test_leftovers_of_killed_writers_are_removed(tmp_path):
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    (tmp_path / f".checkpoint-00000004.{dead}.0123abcd.tmp").mkdir()
    (tmp_path / f".metrics.csv.{dead}.89abcdef.tmp").write_text("x")
    (tmp_path / f".model.{os.getpid()}.00000000.tmp").mkdir()  # a live writer's: kept
    ck.remove_leftovers(str(tmp_path))
    assert os.listdir(tmp_path) == [f".model.{os.getpid()}.00000000.tmp"]
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "f").write_text("x")
    ck.discard(str(tmp_path / "gone"))
    assert not (tmp_path / "gone").exists()


def test_written_files_respect_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        ck.save_state(str(tmp_path / "s"), {"x": torch.ones(2)})
        ck.Snapshots(str(tmp_path / "run")).save(1, {"x": torch.ones(2)})
    finally:
        os.umask(old)
    for root, dirs, files in os.walk(tmp_path):
        for name in files:
            assert os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o640, name
        for name in dirs:
            assert os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o750, name


def test_start_run_decisions(tmp_path):
    fp = {"model": "m", "batch_size": 4}
    snaps, state = ck.start_run(str(tmp_path), fp, resume=False, overwrite=False, run_files=("log.csv",))
    assert state is None  # an empty folder: a fresh start, whatever resume says
    ck.write_run_config(str(tmp_path), fp, {"lr": 0.1})
    assert ck.start_run(str(tmp_path), fp, resume=True, overwrite=False, run_files=())[1] is None  # no snapshot yet
    with pytest.raises(ValueError, match="batch_size: saved 4, now 8"):
        ck.start_run(str(tmp_path), {**fp, "batch_size": 8}, resume=True, overwrite=False, run_files=())
    snaps.save(5, {"step": 5, "fingerprint": ck.fingerprint_text(fp)})
    assert ck.start_run(str(tmp_path), fp, resume=True, overwrite=False, run_files=())[1]["step"] == 5
    with pytest.raises(ValueError, match="holds a training run .*train_config.json"):
        ck.start_run(str(tmp_path), fp, resume=False, overwrite=False, run_files=())
    (tmp_path / "log.csv").write_text("x")
    ck.start_run(str(tmp_path), fp, resume=False, overwrite=True, run_files=("log.csv",))
    assert os.listdir(tmp_path) == []
    (tmp_path / "a-file").write_text("kept")  # an output "folder" that is a file: named, never removed
    for overwrite in (False, True):
        with pytest.raises(NotADirectoryError, match="a-file is a file, not a folder"):
            ck.start_run(str(tmp_path / "a-file"), fp, resume=False, overwrite=overwrite, run_files=())
    assert (tmp_path / "a-file").read_text() == "kept"


def test_data_digest_tells_data_apart_by_value_shape_dtype_and_order():
    """The digest a trainer puts in its fingerprint: equal data give equal digests, any change another."""
    from dataclasses import dataclass

    from mmreward.core.checkpoint import data_digest

    @dataclass
    class Row:
        text: str
        label: float

    rows = [Row("a", 1.0), {"b": [1, 2], "a": None}, torch.arange(6).reshape(2, 3), np.zeros(3, np.uint8)]
    same = [Row("a", 1.0), {"a": None, "b": [1, 2]}, torch.arange(6).reshape(2, 3).clone(), np.zeros(3, np.uint8)]
    assert data_digest(rows) == data_digest(same) and data_digest(rows, unit="rows")["rows"] == 4
    for changed in ([Row("a", 0.5)] + rows[1:], rows[:2] + [torch.arange(6).reshape(3, 2)] + rows[3:],
                    rows[:2] + [torch.arange(6).reshape(2, 3).float()] + rows[3:], rows[::-1], rows[:3]):
        assert data_digest(changed)["sha256"] != data_digest(rows)["sha256"]
    assert data_digest([torch.ones(2, dtype=torch.bfloat16)]) != data_digest([torch.ones(2)])
    assert data_digest([{1: "x", "1": "y"}])["items"] == 1  # keys json cannot sort are read by repr


def test_a_pathlib_setting_is_saved_as_its_text(tmp_path):
    """``out=pathlib.Path(...)`` in a trainer's settings failed at the first snapshot ("cannot checkpoint a
    value of type PosixPath"), after the training it could not save."""
    import pathlib

    ck.save_state(str(tmp_path / "state"), {"out": tmp_path / "run", "dirs": [pathlib.PurePosixPath("a/b")]})
    assert ck.load_state(str(tmp_path / "state")) == {"out": str(tmp_path / "run"), "dirs": ["a/b"]}

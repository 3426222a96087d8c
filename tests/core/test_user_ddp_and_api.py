"""A user's DDP runs and notebook calls. The core loop under torchrun: a rank that stops (a non-finite loss
of its own shard, an error) records the stop and leaves the other ranks with an error that says what
happened, instead of gloo's "Connection closed by peer"; rank 0's refusal reaches the others as the same
kind of error; fit() returns on every rank after the model is written; sample_batch is refused under DDP.
The Python API: score() of a model left in train mode (threads included) runs in eval mode and keeps the
caller's modes."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
from torch import nn

from mmreward.core.trainer import TrainConfig, Trainer, TrainingDiverged


def _cfg(out, **kw):
    base = dict(output_dir=str(out), max_steps=3, batch_size=2, progress=False, tensorboard=False, plot=False,
                log_every=0, lr=1e-2)
    base.update(kw)
    return TrainConfig(**base)


def _as_rank(trainer, rank, world_size=2):
    """Rank ``rank`` of a ``world_size`` run, decided in one process (the start needs no collective then)."""
    trainer.start()
    trainer.world_size, trainer.rank, trainer.is_main = world_size, rank, rank == 0


def _collate(xs):
    return torch.tensor(xs, dtype=torch.float32)[:, None]


def test_a_rank_other_than_0_that_diverges_records_the_stop(tmp_path):
    """Rank 1 met a NaN loss in its shard: it raised naming itself, but only rank 0 wrote diverged.json, and
    rank 0 only saw its peer vanish, so the folder said nothing of the divergence (`mmreward.load` / `info`
    then advise a resume that diverges again); its message also said "rank 0 names the newest snapshot",
    which rank 0 never did."""
    def loss_fn(m, x):
        return m(x).pow(2).mean() * float("nan"), {}

    torch.manual_seed(0)
    t = Trainer(nn.Linear(1, 1), _cfg(tmp_path / "run"), list(range(8)), _collate, loss_fn)
    _as_rank(t, 1)
    with pytest.raises(TrainingDiverged, match=r"at step 1, micro-batch 0, rank 1: .*checkpoint-<step> in rank 0's "
                                               r".*\(step 0 at most\) holds the last good weights") as info:
        t.fit()
    assert "rank 0 names" not in str(info.value)
    record = json.loads((tmp_path / "run" / "diverged.json").read_text())
    assert record == {"steps_done": 0, "error": "non-finite loss (nan) at step 1, micro-batch 0, rank 1"}


def test_a_rank_that_loses_its_peer_says_so(tmp_path):
    """A collective failing because another rank stopped surfaced as gloo's "Connection closed by peer ...
    GLHF!" from deep inside backward, as if this rank had failed; now one line says another process stopped,
    at which step, and where a rerun continues from."""
    steps = []

    def loss_fn(m, x):
        steps.append(1)
        if len(steps) > 2:
            raise RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1234. "
                               "This is typically caused by a remote worker crashing.")
        return m(x).pow(2).mean(), {}

    t = Trainer(nn.Linear(1, 1), _cfg(tmp_path / "run", save_every=1), list(range(8)), _collate, loss_fn)
    t.start()
    t._reduce_mean = lambda values: values  # the 2-rank world below has no process group
    t.world_size = 2
    with pytest.raises(RuntimeError, match=r"^rank 0 of 2: another process of this run stopped during step 3 .*"
                                           r"continues from the newest snapshot \(.*checkpoint-00000002, step 2\) "
                                           r"\(.*Connection closed by peer") as info:
        t.fit()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not (tmp_path / "run" / "diverged.json").exists()  # not a divergence of this run's numbers


def test_a_plain_error_is_not_reworded(tmp_path):
    """Only a lost peer is reworded: an error of this rank's own (here in one process) stays as it was."""
    def loss_fn(m, x):
        raise RuntimeError("Connection closed by peer (in the user's own code)")

    t = Trainer(nn.Linear(1, 1), _cfg(tmp_path / "run"), list(range(8)), _collate, loss_fn)
    with pytest.raises(RuntimeError, match=r"^Connection closed by peer \(in the user's own code\)$"):
        t.fit()


SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from torch import nn
    from mmreward.core.trainer import Trainer, TrainConfig
    from mmreward.core.train import seed_everything
    rank, seen = int(os.environ["RANK"]), []
    def collate(xs):
        seen.extend(xs)
        return torch.tensor(xs, dtype=torch.float32)[:, None]
    def loss_fn(m, x):
        loss = (m(x) - x).pow(2).mean()
        return (loss * float("nan") if rank == 1 and len(seen) > 4 else loss), {}
    seed_everything(0)
    cfg = TrainConfig(output_dir=sys.argv[1], max_steps=4, batch_size=2, progress=False, tensorboard=False,
                      plot=False, save_every=1, log_every=0, lr=1e-2)
    Trainer(nn.Linear(1, 1), cfg, list(range(10)), collate, loss_fn).fit()
""")


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_torchrun_rank_1_diverges_stops_both_and_records_it(tmp_path):
    """`torchrun --nproc_per_node 2` (gloo, CPU): rank 1 meets a NaN loss at step 3. Both processes end (no
    hang), rank 1's error names it, rank 0's says another process stopped, and the folder records the stop
    after step 2 with the snapshots rank 0 wrote before it."""
    (tmp_path / "run.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=root + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "run.py"), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    err = proc.stderr
    assert "non-finite loss (nan) at step 3, micro-batch 0, rank 1" in err, err[-3000:]
    assert "rank 0 of 2: another process of this run stopped during step 3" in err, err[-3000:]
    record = json.loads((tmp_path / "out" / "diverged.json").read_text())
    assert record["steps_done"] == 2 and record["error"].endswith("rank 1")
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-00000001",
                                                                             "checkpoint-00000002"]
    assert not (tmp_path / "out" / "model").exists()


@pytest.mark.parametrize("kind, expected", [("ValueError", ValueError), ("CheckpointError", RuntimeError),
                                            ("FileNotFoundError", FileNotFoundError), (None, RuntimeError)])
def test_the_other_ranks_raise_rank_0s_refusal_as_its_kind(tmp_path, monkeypatch, kind, expected):
    """Rank 0 refused to start (a folder holding a run of another seed: a ValueError, one line and exit 2 from
    a command); the other ranks raised it as a RuntimeError, which `mmreward text train` under torchrun
    reported as an "unexpected error" with exit 1 on each of them."""
    from mmreward.core.folders import CheckpointError

    def broadcast(box, src):
        box[:] = [None, "... was written by a run with other settings (seed: saved 0, now 3)", kind][:len(box)]

    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    t = Trainer(nn.Linear(1, 1), _cfg(tmp_path / "run"), list(range(8)), _collate,
                lambda m, x: (m(x).pow(2).mean(), {}))
    t.world_size, t.rank, t.is_main = 2, 1, False
    with pytest.raises(expected, match=r"^rank 0 could not start the run: .*seed: saved 0, now 3") as info:
        t.start()
    if kind == "CheckpointError":
        assert isinstance(info.value, CheckpointError)
    if kind is None:
        assert type(info.value) is RuntimeError


def test_sample_batch_under_ddp_is_refused(tmp_path, monkeypatch):
    """`sample_batch` with a `loss_fn` under torchrun: every rank seeds alike, so each drew the same batches
    (a snapshot holds rank 0's RNG states alone, so even a rank-specific stream became one on resume): the
    run silently trained on 1/W of the data it was meant to. Refused, naming the way out."""
    import mmreward.core.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "_dist_setup", lambda: (1, 2, False))
    with pytest.raises(ValueError, match=r"sample_batch .* under DDP \(world size 2\) every rank would train on the "
                                         r"same batches. Give train_dataset \+ collate_fn"):
        Trainer(nn.Linear(1, 1), _cfg(tmp_path / "run"), loss_fn=lambda m, x: (m(x).pow(2).mean(), {}),
                sample_batch=lambda: torch.ones(2, 1))
    assert not (tmp_path / "run").exists()


def test_fit_returns_on_every_rank_after_rank_0_saved_the_model(tmp_path, monkeypatch):
    """Under torchrun, rank 1's fit() returned while rank 0 was still writing model/: a script that loads the
    run's model after training (evaluate, score, serve) found none, or the previous run's, on that rank. fit()
    now ends with a barrier after rank 0's final snapshot and model."""
    events = []

    def save(folder):
        events.append("model saved")

    def trainer(name):
        return Trainer(nn.Linear(1, 1), _cfg(tmp_path / name, max_steps=2), list(range(8)), _collate,
                       lambda m, x: (m(x).pow(2).mean(), {}), save_model=save)

    t, single = trainer("run"), trainer("single")
    t.start()
    t._reduce_mean = lambda values: values
    t.world_size = 2  # rank 0 of two
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: events.append("barrier"))
    t.fit()
    assert events == ["model saved", "barrier"]
    events.clear()
    single.fit()  # one process: no barrier
    assert events == ["model saved"]


# ------------------------------------------------------------------ the Python API: score() and the model's mode
class _DropoutScorer(nn.Module):
    """A RewardScorer with dropout whose ``_score`` toggles the mode itself, as the PRM's does
    (``was = self.training; self.eval(); ...; self.train(was)``), and records the mode each call ran in."""

    def __init__(self, wait=None):
        super().__init__()
        self.backbone, self.head = nn.Linear(4, 4), nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 1))
        self.wait, self.seen = wait, []

    def _score(self, items, batch_size):
        was = self.training
        self.eval()
        try:
            if self.wait is not None:
                self.wait()  # every thread is inside score() at once
            self.seen.append(self.head[0].training)
            with torch.no_grad():
                x = torch.tensor([[float(len(i.response))] * 4 for i in items])
                return self.head(self.backbone(x))[:, 0]
        finally:
            self.train(was)


def _scorer_class():
    from mmreward.core.inputs import TextPair
    from mmreward.core.model import RewardScorer

    class Scorer(_DropoutScorer, RewardScorer):
        model_type = "test_dropout_scorer"
        input_types = (TextPair,)

    return Scorer


def test_score_ignores_train_mode_and_keeps_it():
    """`model.train()` left on (a notebook that trained a little): score() must be what it is in eval mode
    (no dropout), and the model must still be in train mode afterwards, each submodule as it was."""
    torch.manual_seed(0)
    m = _scorer_class()()
    inputs = [{"prompt": "p", "response": "a" * n} for n in range(1, 6)]
    m.eval()
    base = m.score(inputs)
    m.train()
    m.backbone.eval()  # a frozen part the caller keeps in eval mode
    assert all(torch.equal(m.score(inputs), base) for _ in range(3))
    assert m.training and m.head.training and m.head[0].training and not m.backbone.training


def test_score_from_threads_of_a_model_in_train_mode():
    """Threads scoring one model left in train mode: a call that ended restored train mode (its own
    ``self.train(was)``) while the others were still scoring, so they ran with dropout on (scores that
    changed from call to call), and the last one to end left the model in eval mode (the caller's train mode
    lost)."""
    import threading

    n = 4
    gate = threading.Barrier(n)
    torch.manual_seed(0)
    m = _scorer_class()(wait=lambda: gate.wait(timeout=10))
    inputs = [{"prompt": "p", "response": "abc"}]
    m.train()
    out = [None] * n

    def work(i):
        out[i] = m.score(inputs)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    [t.start() for t in threads]
    [t.join(timeout=20) for t in threads]
    assert m.seen == [False] * n  # every call scored in eval mode
    assert all(torch.equal(o, out[0]) for o in out)
    assert m.training and m.head[0].training  # the caller's mode, after the last call


def test_a_subclass_with_its_own_score_scores_in_eval_mode_too():
    """The text RM defines its own ``score`` (a progress bar) and toggled the mode itself: threads scoring it
    in train mode got dropout-changed scores and left it in eval mode. A subclass's own score / score_parts
    now get the contract's eval-mode scoring as well."""
    import threading

    base_cls = _scorer_class()

    class OwnScore(base_cls):
        model_type = "test_own_score"

        def score(self, inputs, *, batch_size=None, progress=False):
            return self._score(list(self._items(inputs)), batch_size or 2)

        def _items(self, inputs):
            from mmreward.core.inputs import as_inputs

            return as_inputs(self.input_types, inputs, "OwnScore.score")

    n = 3
    gate = threading.Barrier(n)
    m = OwnScore(wait=lambda: gate.wait(timeout=10))
    m.train()
    threads = [threading.Thread(target=m.score, args=([{"prompt": "p", "response": "ab"}],)) for _ in range(n)]
    [t.start() for t in threads]
    [t.join(timeout=20) for t in threads]
    assert m.seen == [False] * n and m.training
    assert OwnScore.score.__name__ == "score" and "progress" in __import__("inspect").signature(OwnScore.score).parameters


def test_rank_0_lost_before_the_start_is_said_so(tmp_path, monkeypatch):
    """Rank 0 died before telling the others how the run starts: they got gloo's bare "Connection closed by
    peer" from broadcast_object_list."""
    def broadcast(box, src):
        raise RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:4321")

    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    t = Trainer(nn.Linear(1, 1), _cfg(tmp_path / "run"), list(range(8)), _collate,
                lambda m, x: (m(x).pow(2).mean(), {}))
    t.world_size, t.rank, t.is_main = 2, 1, False
    with pytest.raises(RuntimeError, match=r"^rank 1 of 2: another process of this run stopped before the run "
                                           r"started .*\(\[pair.cc:553\] Connection closed by peer"):
        t.start()

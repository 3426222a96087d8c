"""Fault injection for every trainer and for ``save_pretrained``: kill a run right after its k-th
write boundary, run it again, and check that the continuation equals an uninterrupted run.

Run as a script (``python tests/fault_injection.py WORK SCENARIO...``); it prints one JSON report.
It is a fresh process that imports torch once and then ``fork``s one child per trial, so a trial
costs a tiny training run, not an interpreter start.

* **Write boundaries**: every ``os.replace`` / ``os.rename`` / ``os.unlink`` / ``shutil.rmtree`` /
  Linux ``renameat2`` swap (``core.folders._exchange``) / ``os.fsync`` of a file (the end of each
  file write of an atomic save) and every metrics-CSV row appended, in the main thread.
* **A trial** (k, mode): a child runs the scenario with the injector armed; right after boundary k
  it dies by ``SIGKILL`` or unwinds by ``KeyboardInterrupt`` (Ctrl-C). A second child runs the same
  scenario again (resuming) and reports its outputs' digest, which must equal the uninterrupted
  run's; the run folder must hold no leftover ``.tmp`` entries, and every file must respect the
  umask (0o027 here).
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import sys
import threading
import traceback
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
UMASK = 0o027
LEFTOVER = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.(tmp|old)$")


# ------------------------------------------------------------------ the injector
class Injector:
    """Counts write boundaries; at the ``kill_at``-th one, kills the process (``mode``)."""

    def __init__(self, kill_at: float, mode: str):
        self.kill_at, self.mode, self.count, self.last = kill_at, mode, 0, ""

    def boundary(self, what: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # TensorBoard's writer thread: not a boundary of the run's own saves
        self.count += 1
        self.last = what
        if self.count == self.kill_at:
            if self.mode == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise KeyboardInterrupt(f"injected after write boundary {self.count}: {what}")

    def wrap(self, owner: Any, name: str, keep: Callable[..., bool] = lambda *a: True) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            if keep(*args):
                self.boundary(f"{name}{tuple(str(a)[-60:] for a in args[:2])}")
            return out

        setattr(owner, name, wrapper)

    def arm(self) -> "Injector":
        from mmreward.core import folders
        from mmreward.core.logging import MetricLogger

        for name in ("replace", "rename", "unlink"):
            self.wrap(os, name)
        # a killed process loses nothing its page cache holds: only power loss needs the fsync, and
        # skipping it keeps hundreds of trials fast; each file fsync still marks a file fully written
        os.fsync = lambda fd: None
        self.wrap(os, "fsync", lambda fd: stat.S_ISREG(os.fstat(fd).st_mode))
        self.wrap(shutil, "rmtree")
        self.wrap(folders, "_exchange")
        self.wrap(MetricLogger, "log")
        return self


# ------------------------------------------------------------------ digests
def tensor_digest(tensors: dict) -> dict[str, str]:
    import torch

    return {k: hashlib.sha256(v.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
            for k, v in sorted(tensors.items())}


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def csv_digest(path: str, drop: tuple = ()) -> str:
    """Digest of a CSV without the wall-clock columns ``drop``."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = [i for i, c in enumerate(rows[0]) if c not in drop]
    return hashlib.sha256(json.dumps([[r[i] for i in keep] for r in rows]).encode()).hexdigest()


def model_digest(folder: str) -> dict[str, str]:
    from safetensors.torch import load_file

    return tensor_digest(load_file(os.path.join(folder, "model.safetensors")))


# ------------------------------------------------------------------ scenarios
def _tiny_regressor():
    import dataclasses

    import torch
    from torch import nn

    from mmreward.core.model import Pretrained

    @dataclasses.dataclass
    class TinyConfig:
        hidden: int = 16

    class TinyRegressor(Pretrained, nn.Module):
        model_type = "tiny_regressor_fault_test"
        config_class = TinyConfig

        def __init__(self, config=None):
            super().__init__()
            self.config = config or TinyConfig()
            self.net = nn.Sequential(nn.Linear(6, self.config.hidden), nn.Tanh(), nn.Dropout(0.1),
                                     nn.Linear(self.config.hidden, 1))

        def forward(self, x):
            return self.net(x)

    return TinyRegressor, torch


def run_trainer(out: str) -> dict:
    """core Trainer (loss_fn): dropout, accumulation, eval columns added mid-run, snapshots every 2
    steps (the newest two kept), curves.png and the final model/ at the end."""
    TinyRegressor, torch = _tiny_regressor()
    from mmreward.core.train import seed_everything
    from mmreward.core.trainer import TrainConfig, Trainer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
    data = [(x[i], y[i:i + 1]) for i in range(32)]

    def collate(rows):
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])

    def loss_fn(model, batch):
        loss = ((model(batch[0]) - batch[1]) ** 2).mean()
        return loss, {"rmse": loss.detach().sqrt().item()}

    seed_everything(0)
    model = TinyRegressor()
    cfg = TrainConfig(output_dir=out, max_steps=5, batch_size=4, grad_accum_steps=2, lr=1e-2, save_every=2,
                      eval_every=3, progress=False, tensorboard=False, plot=True, log_every=0)
    Trainer(model, cfg, data, collate, loss_fn, eval_fn=lambda m: {"mse": loss_fn(m, collate(data))[0].item()}).fit()
    return {"model": model_digest(os.path.join(out, "model")), "csv": file_digest(os.path.join(out, "metrics.csv"))}


def _old_and_new_models():
    TinyRegressor, torch = _tiny_regressor()
    torch.manual_seed(1)
    old = TinyRegressor()
    torch.manual_seed(2)
    return TinyRegressor, old, TinyRegressor()


def prepare_save_pretrained(out: str) -> None:
    """The model folder ``save_pretrained`` replaces (written before the injector is armed)."""
    _, old, _ = _old_and_new_models()
    if not os.path.exists(os.path.join(out, "m")):
        old.save_pretrained(os.path.join(out, "m"))


def run_save_pretrained(out: str) -> dict:
    """``save_pretrained`` over an existing model folder: after a kill the folder holds the old model or
    the new one, whole; saving again gives the new one."""
    cls, old, new = _old_and_new_models()
    folder = os.path.join(out, "m")
    before = tensor_digest(cls.from_pretrained(folder).state_dict())
    if before not in (tensor_digest(old.state_dict()), tensor_digest(new.state_dict())):
        raise AssertionError(f"{folder} holds neither the old nor the new model")
    new.save_pretrained(folder)
    return {"model": tensor_digest(cls.from_pretrained(folder).state_dict())}


def run_vqgan(out: str) -> dict:
    import torch

    from mmreward.robotics.codec import VQGANConfig, train_vqgan

    frames = (torch.arange(6 * 32 * 32 * 3) * 37 % 251).to(torch.uint8).view(6, 32, 32, 3)
    train_vqgan(frames, VQGANConfig(image_size=32, channels=(4, 8), latent_dim=4, num_codes=8), out, steps=4,
                batch_size=3, lr=1e-3, restart_every=1, disc_weight=0.1, disc_start=1, disc_channels=4, ckpt_every=2,
                progress_bar=False)
    return {"model": model_digest(os.path.join(out, "model")), "csv": file_digest(os.path.join(out, "metrics.csv"))}


def run_video(out: str) -> dict:
    import torch

    from mmreward.robotics.video import VQDiffusionConfig, train_video_model

    g = torch.Generator().manual_seed(0)
    hist, tgt = torch.randint(0, 8, (10, 2, 6), generator=g), torch.randint(0, 8, (10, 6), generator=g)
    cfg = VQDiffusionConfig(num_codes=8, token_shape=(2, 3), num_steps=12, dim=16, depth=1, heads=2, context_dim=16)
    train_video_model((hist, tgt), cfg, out, steps=4, batch_size=4, lr=1e-3, warmup_steps=1, ema_every=1,
                      ckpt_every=2, progress_bar=False)
    return {"model": model_digest(os.path.join(out, "model")), "csv": file_digest(os.path.join(out, "metrics.csv"))}


def run_progress(out: str) -> dict:
    import numpy as np

    from mmreward.robotics.reward.progress import ProgressConfig, train_progress

    rng = np.random.default_rng(0)
    eps = []
    for _ in range(3):
        frames = rng.integers(0, 40, (8, 16, 16, 3)).astype(np.uint8)
        for t in range(8):
            frames[t, 4:10, t:t + 6] = 230
        eps.append(frames)
    cfg = ProgressConfig(image_size=16, channels=(4, 8), hidden_dim=8, min_gap=2, batch_size=4, augment_pad=1)
    _, metrics = train_progress(eps, cfg, out, steps=3, show_progress=False)
    return {"model": model_digest(os.path.join(out, "model")), "csv": file_digest(os.path.join(out, "metrics.csv")),
            "metrics": {k: v for k, v in metrics.items() if k != "seconds"}}


class DotEnv:
    """A cheap stand-in for a MuJoCo pixel env in the RL scenario (what is under test is the
    workspace's saving, not the simulator): a dot the actions move on a ``size``² frame, reward =
    minus its distance to the centre, success near it."""

    def __init__(self, task: str, *, seed: int, size: int, camera: Any, action_repeat: int, max_steps: int,
                 reward: str = "dense"):
        import numpy as np
        from types import SimpleNamespace

        self.size, self.max_steps = int(size), int(max_steps)
        self.action_space = SimpleNamespace(low=-np.ones(2, np.float32), high=np.ones(2, np.float32))
        self.action_dim = 2

    def _frame(self):
        import numpy as np

        frame = np.full((self.size, self.size, 3), 30, np.uint8)
        y, x = self.pos.astype(int)
        frame[y, x] = 250
        return frame

    def reset(self, seed: int):
        import numpy as np

        self.pos, self.t = np.random.default_rng(seed).uniform(0, self.size - 1, 2), 0
        return None, self._frame()

    def step(self, action):
        import numpy as np

        from mmreward.robotics.envs.base import Step

        self.pos = np.clip(self.pos + 2 * np.asarray(action, np.float64), 0, self.size - 1)
        self.t += 1
        dist = float(np.abs(self.pos - self.size / 2).sum())
        return Step(obs=None, frame=self._frame(), reward=-dist, success=dist < 2, done=self.t >= self.max_steps)

    def close(self) -> None:
        pass


def run_rl(out: str) -> dict:
    """The visual-RL workspace on :class:`DotEnv`: 2 training episodes, a snapshot after each (the
    replay episodes of both kept), evaluations with videos, the learning-curve figure."""
    import mmreward.robotics.envs
    import mmreward.robotics.rl.workspace as workspace
    from mmreward.core.checkpoint import Snapshots
    from mmreward.robotics.rl import DrQV2Config, RLConfig, train_rl

    mmreward.robotics.envs.make_env = DotEnv
    workspace.plot_learning_curves = _cheap_curves
    cfg = RLConfig(task="metaworld/door-open-v3", reward="dense", out=out, num_train_frames=40, num_seed_frames=10,
                   eval_every_frames=20, num_eval_episodes=1, episode_steps=10, batch_size=4,
                   snapshot_every_frames=20, save_video=True, tensorboard=False, quiet=True, size=16,
                   replay_buffer_size=12)
    train_rl(cfg, DrQV2Config(hidden_dim=8, feature_dim=4, num_expl_steps=5))
    _, _, state = Snapshots(out).load_latest()
    return {"agent": tensor_digest(state["agent"]),
            "train_csv": csv_digest(os.path.join(out, "train.csv"), ("fps", "relabel_seconds")),
            "eval_csv": csv_digest(os.path.join(out, "eval", "eval.csv"), ("eval_seconds",)),
            "replay": sorted(os.listdir(os.path.join(out, "replay"))),
            "videos": sorted(os.listdir(os.path.join(out, "eval_videos")))}


def run_two_file_state(out: str) -> dict:
    """A saver that is *not* one unit (tensors, then counters, two renames: how RL snapshots used
    to be written), for checking that the suite catches one."""
    import torch
    from safetensors.torch import load_file, save_file

    from mmreward.core.folders import atomic_write, atomic_write_text

    weights, counters = os.path.join(out, "w.safetensors"), os.path.join(out, "c.json")
    w, step = torch.zeros(3), 0
    if os.path.exists(counters):
        with open(counters) as f:
            step = json.load(f)["step"]
        w = load_file(weights)["w"]
    while step < 4:
        w, step = w + 1, step + 1
        atomic_write(weights, lambda tmp, w=w: save_file({"w": w}, tmp))
        atomic_write_text(counters, json.dumps({"step": step}))
    return {"w": w.tolist(), "step": step}


SCENARIOS = {"two_file_state": run_two_file_state, "trainer": run_trainer, "save_pretrained": run_save_pretrained,
             "vqgan": run_vqgan, "video": run_video, "progress": run_progress, "rl": run_rl}
PREPARE = {"save_pretrained": prepare_save_pretrained}  # runs before the injector is armed
SCENARIO_MODULES = {  # imported once by the parent, not again by every child
    "vqgan": ("mmreward.robotics.codec",), "video": ("mmreward.robotics.video",),
    "progress": ("mmreward.robotics.reward.progress", "mmreward.robotics.rl.drqv2", "mmreward.ops"),
    "rl": ("mmreward.robotics.rl", "mmreward.robotics.rl.workspace", "mmreward.robotics.envs", "cv2",
           "mmreward.robotics.data.episodes"),
}


# ------------------------------------------------------------------ trials
def in_child(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Run ``fn`` in a forked child; ``(exit code or -signal, its JSON result or error text)``."""
    r, w = os.pipe()
    gc.freeze()  # the child's garbage collector leaves the parent's objects alone: no copy-on-write storm
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's frames
        os.close(r)
        code, payload = 0, None
        try:
            payload = fn()
        except KeyboardInterrupt as e:
            code, payload = 130, str(e)
        except BaseException:
            code, payload = 1, traceback.format_exc()
        finally:
            try:
                with os.fdopen(w, "w") as f:
                    json.dump(payload, f)
            finally:
                os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return code, json.loads(text) if text else None


def _cheap_curves(path: str, curves: dict, **kw: Any) -> str:
    """Stand-in for ``plot_curves`` in the robotics scenarios: the same atomic write, without the
    quarter second matplotlib takes (the trainer scenario draws the real figure)."""
    from mmreward.core.folders import atomic_write_text

    atomic_write_text(path, json.dumps(curves))
    return path


def _run(name: str, out: str, injector: Injector | None = None) -> Any:
    PREPARE.get(name, lambda out: None)(out)
    if name in ("vqgan", "video", "progress"):
        import mmreward.core.trainer

        mmreward.core.trainer.plot_curves = _cheap_curves
    if injector is not None:
        injector.arm()
    return SCENARIOS[name](out)


def _armed_run(name: str, out: str, kill_at: float, mode: str) -> Any:
    injector = Injector(kill_at, mode)
    result = _run(name, out, injector)
    return {"boundaries": injector.count, "result": result}


def problems_in(folder: str) -> list[str]:
    """Leftover temporaries and files whose permissions ignore the umask."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            if LEFTOVER.match(name):
                found.append(f"leftover {os.path.relpath(path, folder)}")
            elif os.stat(path).st_mode & UMASK:
                found.append(f"mode {oct(os.stat(path).st_mode & 0o777)} of {os.path.relpath(path, folder)}")
    return found


def check_scenario(name: str, work: str, modes: tuple[str, ...]) -> dict:
    ref_dir = os.path.join(work, name, "reference")
    code, ref = in_child(lambda: _armed_run(name, ref_dir, float("inf"), "sigkill"))
    if code != 0:
        return {"boundaries": 0, "trials": 0, "failures": [f"uninterrupted run failed: {ref}"]}
    total, failures, trials = ref["boundaries"], [], 0
    for mode in modes:
        for k in range(1, total + 1):
            out = os.path.join(work, name, f"{mode}-{k}")
            code, first = in_child(lambda out=out, k=k: _armed_run(name, out, k, mode))
            expected = -signal.SIGKILL if mode == "sigkill" else 130
            trials += 1
            if code != expected:
                failures.append(f"{mode} at boundary {k}: the killed run exited {code} ({first})")
                continue
            code, again = in_child(lambda out=out: _run(name, out))
            if code != 0:
                failures.append(f"{mode} at boundary {k}: the resumed run failed: {again}")
            elif again != ref["result"]:
                diff = sorted(key for key in ref["result"] if again.get(key) != ref["result"][key])
                failures.append(f"{mode} at boundary {k}: the resumed run differs from the uninterrupted one in {diff}")
            failures += [f"{mode} at boundary {k}: {p}" for p in problems_in(out)]
            shutil.rmtree(out, ignore_errors=True)
    failures += [f"reference: {p}" for p in problems_in(ref_dir)]
    return {"boundaries": total, "trials": trials, "failures": failures}


def main(argv: list[str]) -> int:
    work, names = argv[0], argv[1:]
    modes = ("sigkill", "keyboard_interrupt")
    os.umask(UMASK)
    import torch

    torch.set_num_threads(1)  # before any op: no thread pool exists when the children are forked
    # imports whose first use writes caches (matplotlib's font list) or costs seconds, done once here
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        pass
    import safetensors.torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (the first optimizer imports it: ~3 s)
    import tqdm.auto  # noqa: F401

    import mmreward.core.trainer  # noqa: F401
    for module in SCENARIO_MODULES.get("all", ()) + tuple(m for n in names for m in SCENARIO_MODULES.get(n, ())):
        __import__(module)
    report = {name: check_scenario(name, work, modes) for name in names}
    gc.unfreeze()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(HERE))
    sys.exit(main(sys.argv[1:]))

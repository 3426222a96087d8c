"""One training loop for every trainer: gradient accumulation, autocast, warmup + cosine LR, DDP,
evaluation every N steps, atomic snapshots with exact resume, CSV / TensorBoard logs, a progress
bar, a learning-curve PNG and the final model in ``<output_dir>/model``.

    seed_everything(config.seed)  # before building the model (mmreward.core.train)
    trainer = Trainer(model, TrainConfig(output_dir="runs/rm", max_steps=500), pairs, collate, loss_fn)
    history = trainer.fit()      # one metric dict per optimizer step

A step is defined in one of two ways:

* ``loss_fn(model, batch) -> (loss, {name: float})``: the Trainer does the rest (accumulation,
  autocast, clipping, AdamW or the given optimizer, warmup + cosine LR, DDP). ``loss_fn`` must call
  ``model(...)`` (under DDP ``model`` is the DDP wrapper and its forward is what synchronises
  gradients); the loss must be a mean over the micro-batch so that accumulation and DDP average
  correctly. A step's metric is the mean of its micro-batches' values over micro-batches and ranks; a
  metric given as ``Weighted(value, weight)`` (a float with a weight) is the weighted mean (an
  accuracy over the pairs that have a preferred response: weight = their number), NaN when every
  weight of the step is 0.
* ``step_fn(trainer, batch) -> {name: float}``: the step function runs its own forward, backward
  and optimizer steps (a GAN's two optimizers, EMA weights, codebook restarts); ``trainer.step`` is
  the number of steps done before this one. Everything it keeps state in (optimizers, schedulers,
  EMA, a discriminator, private RNGs) is registered with :meth:`Trainer.register_state`, so
  snapshots carry it and a resumed run continues bit for bit.

Batches: ``collate_fn(examples)`` of ``train_dataset`` with every tensor moved to the model's
device, or ``sample_batch()`` (a callable drawing a batch from the RNGs, whose state snapshots
carry; one process only: every rank would draw the same batches). Data order of a dataset: each
epoch is a permutation drawn from ``seed + epoch``, padded to a multiple of the world size and
sharded like ``DistributedSampler`` (rank r takes every world-th index); each rank cuts its shard
into micro-batches of ``batch_size`` (the last incomplete one is dropped so that every optimizer
step sees the same number of examples). With W processes the global batch is ``W * batch_size * grad_accum_steps``.

DDP (``loss_fn`` steps): used when ``torch.distributed`` is initialised, or when ``WORLD_SIZE > 1``
in the environment (``torchrun`` / ``accelerate launch``; the process group is then initialised
here, gloo on CPU, nccl on CUDA). Every rank seeds its RNGs with the same seed; only rank 0 logs and
writes snapshots and the final model; ``fit()`` returns on every rank once they are written.

Files in ``output_dir`` (rank 0): ``train_config.json`` (the settings and the run's fingerprint),
``metrics.csv`` (every step), TensorBoard events under ``tb/``, ``checkpoint-<step>/`` (the newest
two snapshots: ``state.safetensors`` with the model, optimizer, scheduler, registered state, RNGs,
data position and history, plus ``manifest.json``; each swapped into place as one unit), and at the
end ``curves.png`` and ``model/`` (``save_pretrained`` of a :class:`~mmreward.core.model.Pretrained`
model, or ``save_model(folder)``).

Starting (:func:`mmreward.core.checkpoint.start_run`): a folder holding a run of the same settings
continues from its newest readable snapshot (an unreadable newest one is set aside with a warning
and the previous one used; logs are cut back to that step, never deleted); a finished run has
nothing left to do. A folder holding a run is refused without ``resume``, as is another run's
folder; ``overwrite`` removes the old run first.

Divergence (:class:`TrainingDiverged`, a FloatingPointError and a ValueError): a non-finite loss, or a
non-finite gradient norm of a finite loss (without fp16 loss scaling, which skips such steps itself),
stops the run at that step before the optimizer touches the weights, as does a step that leaves a non-finite
weight (checked after every update, before any evaluation or save); a snapshot or final model whose
parameters are not finite is never written, nor (``check_saves``, on for the text RM, PRM, image-reward,
VLM RM and VisualPRM trainers) one whose loss on the step's last micro-batch is not finite. The error names the
step and the newest snapshot, which holds the last good weights.

Stopping (:class:`TrainingInterrupted`, a KeyboardInterrupt): the first SIGINT (Ctrl-C) or SIGTERM (a
scheduler's stop) during ``fit()`` finishes the step under way, snapshots it and stops; a second one acts at
once. The progress bar is drawn only on a terminal; otherwise the console line every ``log_every`` steps.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import math
import numbers
import operator
import os
import re
import signal
import sys
import threading
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import (DIVERGED, RUN_CONFIG, CheckpointError, Snapshots, atomic_write_text, fingerprint_text,
                         start_run, unlock_run_folder, write_run_config)
from .logging import MetricLogger, plot_curves
from .model import Pretrained, check_no_compiled_submodule
from .train import GeneratorState, rng_state, seed_everything, set_rng_state, warmup_cosine_scheduler

AUTOCAST = ("none", "bf16", "fp16")
# a collective's error when another rank of the run has stopped (gloo, NCCL, the TCP store)
_PEER_LOST = re.compile(r"closed by peer|reset by peer|Broken pipe|communicator was aborted|Timed out waiting|"
                        r"collective operation timeout|NCCL error|ProcessGroup.*abort", re.IGNORECASE)
MODEL_DIR = "model"  # <output_dir>/model: the final model
# what a run of this trainer leaves in output_dir besides its snapshots and train_config.json
RUN_FILES = ("metrics.csv", "tb", "curves.png", MODEL_DIR, DIVERGED)
# settings that change the training of the steps still to come and that a resume accepts changed (with a warning);
# max_steps is accepted silently (continuing a run further is its point; it reshapes the remaining schedule), and
# the intervals of logs, evaluations and snapshots change no step
_RESUME_MAY_CHANGE = ("warmup_steps", "min_lr_ratio", "max_grad_norm", "autocast")
# a write that fails for want of room or permission (a full disk, a quota, a folder made read-only): the run can
# continue from its newest snapshot once that is fixed
_NO_ROOM = {getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG") if hasattr(errno, n)}


@dataclass
class TrainConfig:
    output_dir: str = field(default="runs/train", metadata={"help": "run folder: metrics.csv, TensorBoard, snapshots, curves.png, model/"})
    max_steps: int = field(default=1000, metadata={"help": "number of optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "micro-batch size per process"})
    grad_accum_steps: int = field(default=1, metadata={"help": "micro-batches accumulated per optimizer step"})
    lr: float = field(default=1e-5, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (matrices only; biases / norms get none)"})
    warmup_steps: int = field(default=0, metadata={"help": "linear LR warmup steps before the cosine decay"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "final LR as a fraction of the peak LR"})
    max_grad_norm: Optional[float] = field(default=1.0, metadata={"help": "clip the global gradient norm to this (None: no clipping)"})
    autocast: str = field(default="none", metadata={"help": "mixed precision: none | bf16 | fp16"})
    eval_every: int = field(default=0, metadata={"help": "run eval_fn every N steps and at the end (0: only at the end, if given)"})
    save_every: int = field(default=0, metadata={"help": "write a resumable snapshot every N steps (always at the end; 0: end only); the newest two are kept"})
    log_every: int = field(default=10, metadata={"help": "print / update the progress bar every N steps (CSV gets every step)"})
    seed: int = field(default=0, metadata={"help": "seed for data order and every RNG (seed_everything before building the model too)"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar (rank 0) when stderr is a terminal; otherwise (CI, a scheduler's log file) print the console line every log_every steps"})
    tensorboard: bool = field(default=True, metadata={"help": "also log to TensorBoard under output_dir/tb"})
    resume: bool = field(default=True, metadata={"help": "continue the run in output_dir from its newest snapshot (without: a folder holding a run is refused)"})
    overwrite: bool = field(default=False, metadata={"help": "start again in an output_dir that holds a run: its snapshots, logs and model are removed first"})
    plot: bool = field(default=True, metadata={"help": "write curves.png (loss and eval metrics) at the end"})
    ddp_find_unused_parameters: bool = field(default=False, metadata={"help": "DDP: allow parameters that get no gradient"})

    def __post_init__(self) -> None:
        # numpy scalars and path objects are taken at their value (json cannot write them)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or v is None:
                continue
            if isinstance(v, np.bool_):
                setattr(self, f.name, bool(v))
            elif isinstance(v, numbers.Integral) and not isinstance(v, int):
                setattr(self, f.name, operator.index(v))
            elif isinstance(v, numbers.Real) and not isinstance(v, (int, float)):
                setattr(self, f.name, float(v))
        if isinstance(self.output_dir, os.PathLike):
            self.output_dir = os.fspath(self.output_dir)
        if isinstance(self.output_dir, str) and self.output_dir.startswith("~"):
            # the home folder's, as a shell reads it: unexpanded, the logs and snapshots would go to a
            # folder named "~" in the working folder while save_pretrained (which expands) put model/ at home
            self.output_dir = os.path.expanduser(self.output_dir)
        for name in ("max_steps", "batch_size", "grad_accum_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 1, got {v!r}")
        for name in ("warmup_steps", "eval_every", "save_every", "log_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0, got {v!r}")
        if isinstance(self.lr, bool) or not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        if isinstance(self.weight_decay, bool) or not (isinstance(self.weight_decay, (int, float))
                                                       and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"TrainConfig.weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.min_lr_ratio, (int, float)) and 0.0 <= self.min_lr_ratio <= 1.0):
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.max_grad_norm is not None and not (isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0):
            raise ValueError(f"TrainConfig.max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.autocast not in AUTOCAST:
            raise ValueError(f"TrainConfig.autocast must be one of {AUTOCAST}, got {self.autocast!r}")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ValueError(f"TrainConfig.output_dir must be a non-empty path, got {self.output_dir!r}")
        if self.warmup_steps >= self.max_steps:
            warnings.warn(f"TrainConfig.warmup_steps ({self.warmup_steps}) >= max_steps ({self.max_steps}): the "
                          f"learning rate never reaches lr (it peaks at {self.max_steps / self.warmup_steps:.2g} × lr)",
                          stacklevel=3)


# ------------------------------------------------------------------ helpers
def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):  # dict, transformers' BatchEncoding
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_to_device(v, device) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _to_device(getattr(obj, f.name), device)
                                          for f in dataclasses.fields(obj) if f.init})
    return obj


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, a closed stream
        return False


def _dist_setup() -> tuple[int, int, bool]:
    """(rank, world_size, initialised_here); initialises the process group under torchrun."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this torch build")
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def _error_kinds() -> dict[str, type]:
    kinds = (CheckpointError, FileNotFoundError, PermissionError, FileExistsError, NotADirectoryError,
             IsADirectoryError, OSError, ValueError, TypeError)
    return {k.__name__: k for k in kinds}


_ERROR_KINDS = _error_kinds()


def _error_kind(error: BaseException) -> Optional[str]:
    """The name of the first of :data:`_ERROR_KINDS` ``error`` is an instance of (how rank 0's refusal to
    start is raised on the other ranks), or None."""
    return next((name for name, kind in _ERROR_KINDS.items() if isinstance(error, kind)), None)


class Weighted(float):
    """A ``loss_fn`` metric with a weight: ``Weighted(value, weight)`` is ``value`` (a float) that a step
    averages over its micro-batches and ranks weighted by ``weight`` (e.g. the number of pairs the value
    is measured on; 0: this micro-batch has none, its value is ignored; every weight 0: the step's value
    is NaN)."""

    weight: float

    def __new__(cls, value: float, weight: float) -> "Weighted":
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise TypeError(f"Weighted: weight must be a number, got {weight!r}") from None
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"Weighted: weight must be a finite number >= 0, got {weight!r}")
        out = super().__new__(cls, value)
        out.weight = weight
        return out

    def __reduce__(self):
        return (Weighted, (float(self), self.weight))


# ------------------------------------------------------------------ trainer
class TrainingDiverged(FloatingPointError, ValueError):
    """A non-finite loss, gradient or weight: the run stops at the step it happens, saving nothing of it.
    A FloatingPointError, and a ValueError so that a command reports it as a user error (one line, exit
    2): it comes from the data or the settings (the learning rate), not from a defect."""


class TrainingInterrupted(KeyboardInterrupt):
    """``fit()`` stopped by SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop): the step under way was finished and
    a snapshot of it written, so rerunning the same command continues from there. ``signum`` is the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class Trainer:
    def __init__(self, model: nn.Module, config: TrainConfig, train_dataset: Optional[Sequence] = None,
                 collate_fn: Optional[Callable] = None,
                 loss_fn: Optional[Callable[[nn.Module, Any], tuple[Tensor, dict[str, float]]]] = None,
                 eval_fn: Optional[Callable[[nn.Module], dict[str, float]]] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, *,
                 step_fn: Optional[Callable[["Trainer", Any], Mapping[str, Any]]] = None,
                 sample_batch: Optional[Callable[[], Any]] = None,
                 save_model: Optional[Callable[[str], None]] = None, reseed: bool = True,
                 settings: Optional[Mapping[str, Any]] = None, resume_settings: Optional[Mapping[str, Any]] = None,
                 check_saves: bool = False):
        """``reseed``: seed every RNG with ``config.seed`` when a fresh run starts (False: the caller
        seeded before building the model and the run continues that RNG stream). ``save_model(folder)``
        writes the final model (default: ``model.save_pretrained`` for a ``Pretrained`` model).
        ``settings``: more of the run's settings (e.g. a domain trainer's own config) recorded in
        ``train_config.json``. ``resume_settings``: settings a resumed run must share with the run it
        continues beyond the core ones (a model's input layout, a judge's objective): part of the run's
        fingerprint, so a resume with other values is refused naming them. A snapshot or final model with
        a non-finite parameter is never written (FloatingPointError naming the step); ``check_saves``
        (for a ``loss_fn`` without side effects: it is called once more) also runs, before each of them,
        one eval-mode no-grad forward of ``loss_fn`` on the step's last micro-batch and refuses weights
        that are finite but overflow in the forward (a learning rate far too high)."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if (loss_fn is None) == (step_fn is None):
            raise TypeError("give exactly one of loss_fn (the Trainer steps the optimizer) or step_fn (it runs its "
                            f"own optimizer steps); got loss_fn={type(loss_fn).__name__}, "
                            f"step_fn={type(step_fn).__name__}")
        for name, fn in (("loss_fn", loss_fn), ("step_fn", step_fn), ("eval_fn", eval_fn),
                         ("sample_batch", sample_batch), ("save_model", save_model)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
        self.config, self.loss_fn, self.step_fn, self.eval_fn = config, loss_fn, step_fn, eval_fn
        self.save_model, self.reseed, self.settings = save_model, reseed, dict(settings or {})
        self.resume_settings = dict(resume_settings or {})
        self.check_saves = bool(check_saves)
        self._last_batch: Any = None
        self.rank, self.world_size, self._owns_group = _dist_setup()
        self.is_main = self.rank == 0
        self._init_data(train_dataset, collate_fn, sample_batch)
        params = list(model.parameters())
        if not params:
            raise ValueError("model has no parameters")
        if isinstance(getattr(model, "_orig_mod", model), Pretrained):  # before any step: it could not be saved
            check_no_compiled_submodule(getattr(model, "_orig_mod", model), "Trainer")
        if step_fn is not None:
            if config.grad_accum_steps != 1 or self.world_size != 1 or optimizer is not None:
                raise ValueError("a step_fn runs its own optimizer steps in one process: grad_accum_steps must be 1, "
                                 "no optimizer is given (register_state it) and WORLD_SIZE must be 1")
        if sample_batch is not None and self.world_size > 1:
            # every rank seeds its RNGs alike, and a snapshot holds rank 0's RNG states alone: each rank would draw
            # the same batches (a rank-specific stream too, once resumed), silently training on 1/W of the data
            raise ValueError(f"sample_batch draws batches from RNGs that every rank seeds alike (and that a snapshot "
                             f"holds for rank 0 only): under DDP (world size {self.world_size}) every rank would train "
                             "on the same batches. Give train_dataset + collate_fn (sharded across the ranks), or run "
                             "one process")
        if self.world_size > 1 and torch.cuda.is_available() and params[0].device.type == "cpu":
            local = int(os.environ.get("LOCAL_RANK", self.rank % max(1, torch.cuda.device_count())))
            torch.cuda.set_device(local)
            model = model.to(torch.device("cuda", local))
        self.model = model  # the unwrapped module (what is saved / evaluated)
        self.device = next(model.parameters()).device
        self.optimizer = self.scheduler = self.scaler = None
        if loss_fn is not None:
            self._init_optimizer(optimizer)
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.autocast]
        if loss_fn is not None and self.amp_dtype == torch.float16 and self.device.type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")
        self.wrapped: nn.Module = model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DDP(model, device_ids=ids, find_unused_parameters=config.ddp_find_unused_parameters)
        self._extra: dict[str, Any] = {}  # name -> object with state_dict / load_state_dict
        self.snapshots = Snapshots(config.output_dir)
        self.step = 0  # optimizer steps done
        self.micro_step = 0  # micro-batches consumed (data position)
        self.history: list[dict] = []
        self._fit_started = False  # a later fit() continues this run (never overwrites or restarts it)
        self._started: Optional[bool] = None  # start()'s decision, until fit() runs

    def _init_data(self, train_dataset: Optional[Sequence], collate_fn: Optional[Callable],
                   sample_batch: Optional[Callable]) -> None:
        self.dataset, self.collate_fn, self.sample_batch = train_dataset, collate_fn, sample_batch
        if sample_batch is not None:
            if train_dataset is not None:
                raise TypeError("give train_dataset + collate_fn or sample_batch, not both")
            return
        if not callable(collate_fn):
            raise TypeError(f"collate_fn must be callable, got {type(collate_fn).__name__}")
        if isinstance(train_dataset, Mapping) or not hasattr(type(train_dataset), "__getitem__"):
            # a dict (or set) has a length but is not read by position: dataset[i] would fail mid-run
            raise TypeError(f"train_dataset must be a sequence indexed 0..len-1 (a list, a torch Dataset), got "
                            f"{type(train_dataset).__name__}" + (": pass list(d.values())" if isinstance(
                                train_dataset, Mapping) else ""))
        try:
            n = len(train_dataset)
        except TypeError:
            raise TypeError(f"train_dataset must be a sized sequence, got {type(train_dataset).__name__}") from None
        per_rank = math.ceil(n / self.world_size)
        self.batches_per_epoch = per_rank // self.config.batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"train_dataset has {n} examples: fewer than batch_size ({self.config.batch_size}) × "
                             f"world size ({self.world_size}), so no full micro-batch can be formed")

    def _init_optimizer(self, optimizer: Optional[torch.optim.Optimizer]) -> None:
        cfg = self.config
        if optimizer is None:
            trainable = [p for p in self.model.parameters() if p.requires_grad]
            if not trainable:
                raise ValueError("model has no parameters with requires_grad=True")
            decay = [p for p in trainable if p.dim() >= 2]
            no_decay = [p for p in trainable if p.dim() < 2]
            groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
            optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)
        self.optimizer = optimizer
        self.scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=cfg.warmup_steps,
                                                 total_steps=cfg.max_steps, min_ratio=cfg.min_lr_ratio)

    def register_state(self, name: str, obj: Any) -> None:
        """Carry ``obj`` in every snapshot and restore it on resume: anything with ``state_dict`` /
        ``load_state_dict`` (optimizers, schedulers, modules, EMA, …) or a private RNG
        (``torch.Generator`` / ``numpy.random.Generator``)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"state name must be a non-empty string, got {name!r}")
        if name in self._extra:
            raise ValueError(f"state {name!r} is already registered")
        if isinstance(obj, (torch.Generator, np.random.Generator)):
            obj = GeneratorState(obj)
        if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
            raise TypeError(f"state {name!r} needs state_dict() and load_state_dict(), got {type(obj).__name__}")
        self._extra[name] = obj

    # -------------------------------------------------------------- data
    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.config.seed + epoch)
        perm = torch.randperm(len(self.dataset), generator=g).tolist()
        total = math.ceil(len(perm) / self.world_size) * self.world_size
        perm = (perm * math.ceil(total / len(perm)))[:total]  # pad by repeating, as DistributedSampler does
        return perm[self.rank::self.world_size]

    def _next_batch(self) -> Any:
        if self.sample_batch is not None:
            return self.sample_batch()
        epoch, idx = divmod(self.micro_step, self.batches_per_epoch)
        if getattr(self, "_order_epoch", None) != epoch:
            self._order, self._order_epoch = self._epoch_order(epoch), epoch
        bs = self.config.batch_size
        examples = [self.dataset[i] for i in self._order[idx * bs:(idx + 1) * bs]]
        self.micro_step += 1
        return _to_device(self.collate_fn(examples), self.device)

    # -------------------------------------------------------------- snapshots
    def _fingerprint(self) -> dict:
        """Settings a resumed run must share with the run it continues (else its data order, state
        layout or model would differ)."""
        c = self.config
        return {"model": type(self.model).__qualname__, "step": "step_fn" if self.step_fn else "loss_fn",
                "state": sorted(self._extra), "batch_size": c.batch_size, "grad_accum_steps": c.grad_accum_steps,
                "seed": c.seed, "world_size": self.world_size, **self.resume_settings}

    def save_snapshot(self) -> str:
        """Write ``output_dir/checkpoint-<step>`` as one unit (rank 0 only); older ones beyond the newest
        two are removed."""
        path = self.snapshots.path(self.step)
        if not self.is_main:
            return path
        state = {"step": self.step, "micro_step": self.micro_step, "model": self.model.state_dict(),
                 "rng": rng_state(), "history": self.history, "fingerprint": fingerprint_text(self._fingerprint()),
                 "extra": {name: obj.state_dict() for name, obj in self._extra.items()},
                 # the settings a resume may change, as the steps up to this snapshot ran with them
                 "settings": {name: getattr(self.config, name) for name in _RESUME_MAY_CHANGE},
                 # CPU kernels sum in an order that depends on the thread count: a resume with another warns
                 "cpu_threads": torch.get_num_threads()}
        if self.optimizer is not None:
            state["optimizer"], state["scheduler"] = self.optimizer.state_dict(), self.scheduler.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.dataset is not None:
            state["data_size"] = len(self.dataset)  # the data order depends on it: checked on resume
        try:
            return self.snapshots.save(self.step, state)
        except OSError as e:
            if e.errno not in _NO_ROOM:
                raise
            # a full disk or a folder made read-only mid-run: the bare "[Errno 28] No space left on device" names
            # neither the step nor the snapshot a rerun continues from (the swap leaves the previous one intact)
            raise self._write_error(e, f"writing the snapshot of step {self.step} ({path})") from e

    def _write_error(self, e: OSError, what: str) -> OSError:
        """``e`` (same type and errno) saying what failed and which snapshot a rerun continues from."""
        found = self._newest_snapshot()
        kept = (f"the newest snapshot is {found[1]} (step {found[0]})" if found else "no snapshot was written yet")
        message = (f"{what} failed: {e.strerror or e}{f' ({e.filename})' if e.filename else ''}; {kept}: free space in "
                   f"{self.config.output_dir} or make it writable, then rerun the same command to continue from there")
        try:
            return type(e)(e.errno, message) if e.errno is not None else type(e)(message)
        except TypeError:  # a subclass with another signature
            return OSError(e.errno, message)

    def _check_resume_settings(self, state: dict, where: str) -> None:
        """Settings a snapshot carries outside the fingerprint: the number of training examples (another
        would give another data order), and the lr / weight_decay in its optimizer state, which would
        silently replace the config's. Another value is refused, as fingerprinted settings are."""
        size = state.get("data_size")
        if isinstance(size, int) and self.dataset is not None and size != len(self.dataset):
            raise ValueError(f"{where} was written by a run with other settings (train_dataset: saved {size} "
                             f"examples, now {len(self.dataset)}; a resume goes on with the data and order of the run "
                             "it continues): use the same data to resume, another output folder, or overwrite=True "
                             "(--overwrite) to start again there")
        saved = state.get("optimizer")
        # a caller's optimizer too: its lr / weight_decay are the caller's, and the saved ones would replace them
        if not (self.optimizer is not None and isinstance(saved, dict) and isinstance(saved.get("param_groups"), list)):
            return
        groups = self.optimizer.param_groups
        if len(saved["param_groups"]) != len(groups):
            return  # another layout: the load below reports it
        diffs = []
        for name, key in (("lr", "initial_lr"), ("weight_decay", "weight_decay")):
            was = [g.get(key, g.get("lr")) if isinstance(g, dict) else None for g in saved["param_groups"]]
            now = [g.get(key, g.get("lr")) for g in groups]
            if was != now:
                first = next(i for i, (a, b) in enumerate(zip(was, now)) if a != b)
                diffs.append(f"{name}: saved {was[first]!r}, now {now[first]!r}")
        if diffs:
            raise ValueError(f"{where} was written by a run with other settings ({'; '.join(diffs)}; the snapshot's "
                             "optimizer state would keep the saved values): use the same settings to resume, "
                             "another output folder, or overwrite=True (--overwrite) to start again there")

    def _restore(self, state: dict) -> None:
        where = self.snapshots.path(int(state.get("step", 0)))
        self._check_resume_settings(state, where)
        try:
            self.model.load_state_dict(state["model"])
            if self.optimizer is not None:
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
                # a run continued to another max_steps: the next step's lr is the new schedule's at this step
                # (the optimizer holds the saved schedule's; with the same max_steps the two are equal)
                s = self.scheduler
                for group, base, fn in zip(self.optimizer.param_groups, s.base_lrs, s.lr_lambdas):
                    group["lr"] = base * fn(s.last_epoch)
                s._last_lr = [group["lr"] for group in self.optimizer.param_groups]
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
            for name, obj in self._extra.items():
                obj.load_state_dict(state["extra"][name])
            set_rng_state(state["rng"])
            self.step, self.micro_step = int(state["step"]), int(state["micro_step"])
            self.history = list(state["history"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"snapshot {where} does not fit this model / trainer: {type(e).__name__}: {e}") from e

    def start(self) -> bool:
        """Decide how the run starts, before any training step: resumed from the snapshot in
        ``output_dir`` (True: the model, optimizer, RNGs and history are now the snapshot's), a fresh
        start (False), or refused (ValueError / CheckpointError: another run's settings or data, a run
        past ``max_steps``, a folder holding a run without ``resume``). :meth:`fit` calls it when it
        was not called; calling it first lets a caller refuse early or skip work a resumed run does not
        need (a command's held-out figures before training)."""
        if self._started is None:
            try:
                self._started = self._start()
            except RuntimeError as e:
                unlock_run_folder(self.config.output_dir)  # a refused run leaves the folder to others
                if self.world_size > 1 and _PEER_LOST.search(str(e)):
                    first = str(e).strip().splitlines()[0]
                    raise RuntimeError(f"rank {self.rank} of {self.world_size}: another process of this run stopped "
                                       "before the run started (its own error, and torchrun's 'Root Cause', say "
                                       f"why) ({first})") from e
                raise
            except BaseException:
                unlock_run_folder(self.config.output_dir)
                raise
        return self._started

    def _start(self) -> bool:
        """Resume (True), refuse or start fresh (False); rank 0 decides, under DDP the other ranks
        load the same snapshot."""
        cfg = self.config
        state, error = None, None
        # a second fit() of this Trainer continues from its snapshot: overwrite=True would delete the run
        # it just wrote and train nothing (or restart the RNGs halfway), resume=False would refuse it
        again = self._fit_started
        if self.is_main:
            try:
                self.snapshots, state = start_run(cfg.output_dir, self._fingerprint(), resume=cfg.resume or again,
                                                  overwrite=cfg.overwrite and not again, run_files=RUN_FILES)
            except BaseException as e:
                error = e
        if self.world_size > 1:
            import torch.distributed as dist

            box = [None if state is None else int(state["step"]), None if error is None else str(error),
                   None if error is None else _error_kind(error)]
            dist.broadcast_object_list(box, src=0)
            if not self.is_main:
                if box[1] is not None:
                    # the kind rank 0 raised (a refused run is a user error: one line, exit 2 from a command on
                    # every rank, not an "unexpected error" on the others)
                    raise _ERROR_KINDS.get(box[2], RuntimeError)(f"rank 0 could not start the run: {box[1]}")
                state = None if box[0] is None else Snapshots.read(self.snapshots.path(box[0]))
        if error is not None:
            raise error
        if state is not None and int(state.get("step", 0)) > cfg.max_steps:
            # checked before the snapshot is loaded: a refused run leaves the model as it was
            raise ValueError(f"{cfg.output_dir} holds a run already at step {int(state['step'])}, past max_steps="
                             f"{cfg.max_steps}: ask for at least {int(state['step'])} steps to continue it, use another "
                             "output folder, or overwrite=True (--overwrite) to start again there")
        if state is not None:
            self._restore(state)
            if self.is_main and not again and self.loss_fn is not None:  # a step_fn's settings are its own
                self._warn_changed_settings(state)
            threads = state.get("cpu_threads")
            if (self.is_main and not again and self.device.type == "cpu" and isinstance(threads, int)
                    and threads != torch.get_num_threads()):
                warnings.warn(f"{cfg.output_dir}: the run resumes at step {self.step} with {torch.get_num_threads()} "
                              f"CPU threads, its steps so far ran with {threads}: CPU kernels sum in another order, "
                              "so it continues to float rounding, not bit for bit like the straight run (set "
                              f"OMP_NUM_THREADS={threads} or torch.set_num_threads({threads}) for that)", stacklevel=3)
        elif again:
            raise RuntimeError(f"fit() already ran on this Trainer (to step {self.step}) but {cfg.output_dir} holds "
                               "no snapshot to continue from, and its model and optimizer are no longer those of "
                               "step 0: build a new model and Trainer to start again")
        elif self.reseed:
            seed_everything(cfg.seed)
        return state is not None

    def _warn_changed_settings(self, state: dict) -> None:
        """Warn when a resumed run goes on with other values of the optimisation settings a resume accepts (they
        are not in the fingerprint: a run may be continued with them changed), compared with those the snapshot's
        steps ran with (snapshots of older versions: the ``train_config.json`` of the run's last start, which a
        start killed before its first snapshot may have rewritten): the change is then said, not silent."""
        record = state.get("settings")
        if not isinstance(record, dict):
            try:
                with open(os.path.join(self.config.output_dir, RUN_CONFIG), encoding="utf-8") as f:
                    record = json.load(f)
            except (OSError, ValueError):
                return
        if not isinstance(record, dict):
            return
        changed = [f"{name}: was {record[name]!r}, now {getattr(self.config, name)!r}" for name in _RESUME_MAY_CHANGE
                   if name in record and record[name] != getattr(self.config, name)]
        if changed:
            warnings.warn(f"{self.config.output_dir}: the run resumes at step {self.step} with other settings than it "
                          f"last ran with ({'; '.join(changed)}): they apply from step {self.step + 1} on (give the "
                          "old values to continue the run unchanged)", stacklevel=4)

    # -------------------------------------------------------------- loop
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _reduce_mean(self, values: list[float]) -> list[float]:
        if self.world_size == 1 or not values:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.world_size).tolist()

    def _evaluate(self) -> dict[str, float]:
        # the global RNGs are put back after the eval_fn: one that draws from them (sampled generations, a random
        # subset) would otherwise shift every later step's dropout / batches, so eval_every or the presence of
        # held-out data (which change no step) would change the trained weights
        was_training, state = self.model.training, rng_state()
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.eval_fn(self.model)
        finally:
            self.model.train(was_training)
            set_rng_state(state)
        if not isinstance(out, dict):
            raise TypeError(f"eval_fn must return a dict of floats, got {type(out).__name__}")
        row = {}
        for k, v in out.items():
            if not isinstance(k, str):
                raise TypeError(f"eval_fn must return a dict with string keys, got key {k!r}")
            try:
                value = float(v)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"eval_fn returned {k!r} = {v!r}: each value must be one number") from None
            row[k if k.startswith("eval_") else f"eval_{k}"] = value
        return row

    def _loss_step(self) -> dict[str, float]:
        cfg = self.config
        sums: dict[str, float] = {}
        weighted: dict[str, tuple[float, float]] = {}  # name -> (sum of value x weight, sum of weights)
        total_loss = 0.0
        self._last_batch = None  # freed before the next batch is built
        for micro in range(cfg.grad_accum_steps):
            batch = self._next_batch()
            last = micro == cfg.grad_accum_steps - 1
            sync = nullcontext() if (last or self.world_size == 1) else self.wrapped.no_sync()
            with sync:
                with self._autocast():
                    out = self.loss_fn(self.wrapped, batch)
                if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor)):
                    raise TypeError("loss_fn must return (loss tensor, dict of metrics)")
                loss, metrics = out
                if loss.dim() != 0:
                    raise ValueError(f"loss_fn must return a 0-d loss, got shape {tuple(loss.shape)}")
                if not torch.isfinite(loss.detach()):
                    # under DDP the rank raises alone: torchrun ends the other ranks when one fails
                    where = f", rank {self.rank}" if self.world_size > 1 else ""
                    err = TrainingDiverged(f"non-finite loss ({loss.item()}) at step {self.step + 1}, "
                                           f"micro-batch {micro}{where}: nothing of it is saved, {self._kept()}")
                    err.rank_only = True  # met by this rank alone: it records the stop (rank 0 only sees a lost peer)
                    raise err
                scaled = loss.float() / cfg.grad_accum_steps
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total_loss += loss.item()
            self._last_batch = batch  # the saves' check forward (check_saves)
            for k, v in (metrics or {}).items():
                if isinstance(v, Weighted):  # a mean weighted by the micro-batches' weights
                    s, w = weighted.get(k, (0.0, 0.0))
                    weighted[k] = (s + (float(v) * v.weight if v.weight else 0.0), w + v.weight)
                else:
                    sums[k] = sums.get(k, 0.0) + float(v)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item() if params else 0.0
        if self.scaler is None and not math.isfinite(grad_norm):
            # a finite loss with an inf / NaN gradient (an overflow, a bad example): the step would write NaN
            # into every weight it touches. Not taken: the weights stay those of the step before
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"non-finite gradient (norm {grad_norm}) at step {self.step + 1} (its loss "
                                   f"{total_loss / cfg.grad_accum_steps:.6g} is finite): the step was not taken, "
                                   f"{self._kept()}")
        lr = self.optimizer.param_groups[0]["lr"]
        try:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        except RuntimeError as e:  # Adam at lr 1e38: "value cannot be converted to type float without overflow"
            if "overflow" not in str(e):
                raise
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"the optimizer step {self.step + 1} overflowed at lr {lr:g} ({e}): nothing of it is "
                                   f"saved, {self._kept()}") from None
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        keys, wkeys = sorted(sums), sorted(weighted)
        vals = self._reduce_mean([total_loss / cfg.grad_accum_steps] + [sums[k] / cfg.grad_accum_steps for k in keys]
                                 + [x for k in wkeys for x in weighted[k]]
                                 + [1.0 if getattr(self, "_stop_signal", None) is not None else 0.0])
        self._stop_now = vals.pop() > 0  # a stop signal met by any rank stops every rank after this step
        row = {"step": self.step, "loss": vals[0], "lr": lr, "grad_norm": grad_norm}
        row.update({k: v for k, v in zip(keys, vals[1:1 + len(keys)]) if k not in row})
        for i, k in enumerate(wkeys):  # the world-size factor of the mean cancels in the ratio
            s, w = vals[1 + len(keys) + 2 * i: 3 + len(keys) + 2 * i]
            if k not in row:
                row[k] = s / w if w > 0 else float("nan")  # nothing to measure in this step: NaN, not 0
        return row

    def _function_step(self) -> dict[str, Any]:
        metrics = self.step_fn(self, self._next_batch())
        if not isinstance(metrics, Mapping):
            raise TypeError(f"step_fn must return a dict of metrics, got {type(metrics).__name__}")
        row: dict[str, Any] = {"step": self.step + 1}
        for k, v in metrics.items():
            v = v.item() if hasattr(v, "item") else v
            row[k] = int(v) if isinstance(v, bool) else v
        if "loss" in row and not math.isfinite(row["loss"]):
            raise TrainingDiverged(f"non-finite loss ({row['loss']}) at step {self.step + 1}: nothing of it is "
                                   f"saved, {self._kept()}")
        self.step += 1
        self._stop_now = getattr(self, "_stop_signal", None) is not None
        return row

    def fit(self, stop_at: Optional[int] = None) -> list[dict]:
        """Train to ``config.max_steps`` (``stop_at``: end this call after that many total steps, with a
        snapshot there; a later call continues); returns the history of every step so far."""
        cfg = self.config
        if isinstance(stop_at, numbers.Integral) and not isinstance(stop_at, (bool, np.bool_)):
            stop_at = operator.index(stop_at)
        if stop_at is not None and (isinstance(stop_at, bool) or not isinstance(stop_at, int) or stop_at < 0):
            raise ValueError(f"stop_at must be an integer >= 0 or None, got {stop_at!r}")
        end = cfg.max_steps if stop_at is None else min(cfg.max_steps, stop_at)
        resumed = self.start()
        self._started = None  # a later fit() decides again (it continues from this run's snapshot)
        self._fit_started = True
        logger = bar = None
        if self.is_main:
            write_run_config(cfg.output_dir, self._fingerprint(),
                             {**dataclasses.asdict(cfg), "world_size": self.world_size,
                              "config_class": type(cfg).__name__, "resumed_at_step": self.step,
                              "settings": self.settings,
                              # whether the run ends by writing model/ (a run without one is finished, not killed)
                              "saves_model": self.save_model is not None
                                             or isinstance(getattr(self.model, "_orig_mod", self.model), Pretrained)})
            if os.path.exists(os.path.join(cfg.output_dir, DIVERGED)):  # the run goes on: no longer stopped there
                os.remove(os.path.join(cfg.output_dir, DIVERGED))
            # rows after the snapshot are cut (all of them without one: a run killed before its first)
            # the bar only on a terminal: in a CI log or a scheduler's log file tqdm's carriage-return redraws pile up
            # into one endless line; there the console line every log_every steps is printed instead
            # (a notebook's stderr is no terminal, but tqdm.auto draws its widget there)
            show_bar = cfg.progress and (_is_terminal(sys.stderr) or "ipykernel" in sys.modules)
            logger = MetricLogger(cfg.output_dir, tensorboard=cfg.tensorboard, resume_step=self.step if resumed else -1,
                                  console_every=max(1, cfg.log_every), quiet=show_bar or cfg.log_every == 0)
            if show_bar:
                from tqdm.auto import tqdm

                bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        self.wrapped.train()
        handlers = self._catch_stop_signals()
        try:
            while self.step < end:
                row = self._loss_step() if self.loss_fn is not None else self._function_step()
                final = self.step == cfg.max_steps
                if self.eval_fn is not None and ((cfg.eval_every and self.step % cfg.eval_every == 0) or final):
                    # non-finite weights (an optimizer step that overflowed with its loss still finite: SGD, a huge
                    # lr) or, with check_saves, weights that overflow in the forward: the run stops naming the step
                    # (diverged.json), not with the eval_fn's own error about a NaN score. Checked here and before
                    # each save, not after every step: the check reads every weight (a non-finite weight makes the
                    # next step's loss non-finite, which stops the run anyway)
                    self._check_finite("evaluation", done="run")
                    row.update(self._evaluate())
                self.history.append(row)
                if logger is not None:
                    try:
                        logger.log(**row)
                    except OSError as e:  # a full disk: say which step and where a rerun continues
                        if e.errno not in _NO_ROOM:
                            raise
                        raise self._write_error(e, f"writing step {self.step}'s row of {logger.path}") from e
                if bar is not None:
                    bar.update(1)
                    if cfg.log_every and (self.step % cfg.log_every == 0 or final):
                        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                                         if (k in ("loss", "lr") or k.startswith("eval_")) and isinstance(v, float)})
                saved = (cfg.save_every and self.step % cfg.save_every == 0) or self.step == end
                if saved:
                    self._check_finite("snapshot")
                    self.save_snapshot()
                # under DDP the flag reduced with the step's metrics, so that every rank stops at the same step
                stop = self._stop_now or (self.world_size == 1 and self._stop_signal is not None)
                if stop and self.step < end:
                    self._stop_on_signal(saved)
            if self.step >= cfg.max_steps:
                self._check_finite("final model")
                if self.is_main:
                    if cfg.plot and self.history:
                        self._plot()
                    self._save_final_model()
            self._barrier()  # fit() returns on every rank once rank 0's snapshot and model/ are in place
        except TrainingDiverged as e:
            # `mmreward.load` / `info` on the folder then say so, not "rerun with --resume". Rank 0 records it, or
            # under DDP the rank that met a non-finite loss of its own shard (rank 0 only sees its peer vanish)
            if self.is_main or getattr(e, "rank_only", False):
                what = re.split(r"; |: nothing of it|: the step was not taken", str(e))[0]  # without the advice
                try:
                    atomic_write_text(os.path.join(cfg.output_dir, DIVERGED),
                                      json.dumps({"steps_done": self.step, "error": what}, indent=2) + "\n")
                except OSError:
                    if self.is_main:
                        raise
                    # another rank on another machine may not see rank 0's folder: its error still stands
            raise
        except RuntimeError as e:
            if self.world_size > 1 and _PEER_LOST.search(str(e)):
                # a collective of this step failed because another rank stopped (its error says why): one line
                # saying so, instead of gloo's "Connection closed by peer" as if this rank had failed
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                found = self._newest_snapshot()
                where = (f"rerunning the same command continues from the newest snapshot ({found[1]}, step {found[0]})"
                         if found else "no snapshot was written yet" if self.is_main else
                         f"rerunning the same command continues from the newest checkpoint-<step> in rank 0's "
                         f"{cfg.output_dir}")
                when = f"during step {self.step + 1}" if self.step < end else f"after step {self.step}, as rank 0 saved it"
                raise RuntimeError(f"rank {self.rank} of {self.world_size}: another process of this run stopped "
                                   f"{when} (its own error, and torchrun's 'Root Cause', say why); {where} "
                                   f"({first})") from e
            raise
        finally:
            for signum, previous in handlers.items():
                signal.signal(signum, previous)
            pending, self._stop_signal = self._stop_signal, None
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()
            unlock_run_folder(cfg.output_dir)  # the folder's next run may be another process's (a later fit() locks again)
            self._last_batch = None  # not held (on the device) after the run
        if pending is not None:
            # the signal came during the last step or the final save: everything is saved, and the caller (a loop
            # of fit(stop_at=...) calls, a CLI's evaluation after training) must still stop, as the signal asks
            signal.raise_signal(pending)
        return self.history

    def _catch_stop_signals(self) -> dict:
        """While ``fit()`` runs (main thread): SIGINT (Ctrl-C) and SIGTERM (a scheduler's stop, a ``kill``) end the
        run after the step under way, with a snapshot of it (:class:`TrainingInterrupted`), instead of losing the
        steps since the last snapshot; a second one acts at once (the handler that was there). A handler the
        program installed itself, or an ignored signal, is left as it is. Returns the handlers replaced."""
        self._stop_signal, self._stop_now, replaced = None, False, {}
        if threading.current_thread() is not threading.main_thread():
            return replaced

        def on_signal(signum, frame):
            self._stop_signal = signum
            for kind, previous in replaced.items():  # the next one, of either kind, stops at once
                signal.signal(kind, previous)
            if self.is_main:  # os.write: print() here could re-enter a stderr write (tqdm's) under way
                os.write(2, (f"\n{signal.Signals(signum).name}: stopping after the step under way, with a snapshot "
                             f"(send it again to stop at once, losing the steps since the last snapshot)\n").encode())

        for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(signum) is default:
                replaced[signum] = default
                signal.signal(signum, on_signal)
        return replaced

    def _stop_on_signal(self, saved: bool) -> None:
        """A stop signal arrived during the step just done: snapshot it (unless just saved) and stop."""
        signum = self._stop_signal or signal.SIGTERM  # another rank's signal: a scheduler stops every rank
        if not saved:
            self._check_finite("snapshot")
            self.save_snapshot()
        self._barrier()
        name = signal.Signals(signum).name
        message = (f"training stopped by {name} after step {self.step} of {self.config.max_steps}; the snapshot "
                   f"{self.snapshots.path(self.step)} holds it: rerun the same command (resume) to continue")
        if self.is_main:
            print(message, file=sys.stderr, flush=True)
        raise TrainingInterrupted(message, signum)

    def _newest_snapshot(self) -> Optional[tuple[int, str]]:
        """(step, path) of the run's newest snapshot, or None; rank 0 only: it writes them (another rank may
        look while rank 0 is still writing the newest one, or on a machine that does not see the folder)."""
        found = self.snapshots.list() if self.is_main else []
        return found[0] if found else None

    def _barrier(self) -> None:
        """Under DDP, wait for every rank (rank 0 writes the snapshots and the final model: a caller on another
        rank that loads ``<output_dir>/model`` once ``fit()`` returns must find this run's)."""
        if self.world_size > 1:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()

    def _nonfinite_parameter(self) -> Optional[str]:
        """The name of the first floating-point parameter holding a NaN / inf, or None: one host sync for all
        of them (min / max per tensor: no copy of the weights; NaN and inf both show in them)."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.is_floating_point() and p.numel()]
        if not named:
            return None
        dev = named[0][1].device
        flags = torch.stack([torch.isfinite(torch.stack(torch.aminmax(p.detach()))).all().to(dev) for _, p in named])
        if bool(flags.all()):
            return None
        return named[int((~flags).nonzero()[0])][0]

    def _kept(self) -> str:
        """Where a run stopped by a non-finite number can continue from (the end of its error message)."""
        found = self._newest_snapshot()
        return (f"the newest snapshot ({found[1]}, step {found[0]}) holds the last good weights" if found
                else "no snapshot was written yet" if self.is_main else
                f"the newest checkpoint-<step> in rank 0's {self.config.output_dir} (step {self.step} at most) holds the "
                 "last good weights") + \
            "; look for a bad example, set max_grad_norm, or lower the learning rate (lr, --lr: a resume keeps " \
            "the run's, so start again with overwrite / --overwrite or in another folder)"

    def _model_problem(self) -> Optional[str]:
        """Why the model must not be saved, or None: a non-finite parameter, or (``check_saves``) a
        non-finite loss of the last micro-batch under the updated weights (weights that overflow in the
        forward are finite themselves). The check forward runs in eval mode without gradients and leaves
        every RNG as it found it, so a resumed run stays bit-identical."""
        name = self._nonfinite_parameter()
        if name is not None:
            return f"parameter {name!r} holds non-finite values"
        # the check forward runs on rank 0, the rank that saves (the weights are the same on every rank)
        if not (self.check_saves and self.is_main and self.loss_fn is not None
                and getattr(self, "_last_batch", None) is not None):
            return None
        was_training, state = self.model.training, rng_state()
        self.model.eval()
        try:
            with torch.no_grad(), self._autocast():
                loss = self.loss_fn(self.model, self._last_batch)[0]  # the unwrapped model: no DDP collectives
            value = float(loss.detach().float())
        finally:
            self.model.train(was_training)
            set_rng_state(state)
        return None if math.isfinite(value) else f"its loss on step {self.step}'s last micro-batch is {value}"

    def _check_finite(self, what: str, done: str = "written") -> None:
        """Refuse to save (or evaluate) a diverged model (FloatingPointError naming the step). No collective:
        under DDP the ranks hold the same weights, and torchrun ends the other ranks when one fails."""
        problem = self._model_problem()
        if problem is not None:
            raise TrainingDiverged(f"the model diverged at step {self.step}: {problem}; its {what} is not "
                                   f"{done}, {self._kept()}")

    @property
    def model_dir(self) -> str:
        return os.path.join(self.config.output_dir, MODEL_DIR)

    def _save_final_model(self) -> None:
        try:
            # a torch.compile(model) wrapper: the model it compiled is the one saved (its model/ was left unwritten)
            model = getattr(self.model, "_orig_mod", self.model)
            if self.save_model is not None:
                self.save_model(self.model_dir)
            elif isinstance(model, Pretrained):
                model.save_pretrained(self.model_dir)
        except OSError as e:  # the end's snapshot is written: a rerun only writes model/
            if e.errno not in _NO_ROOM:
                raise
            raise self._write_error(e, f"writing the final model ({self.model_dir})") from e

    def _plot(self) -> None:
        curves = {}
        for key in ["loss"] + sorted({k for r in self.history for k in r if k.startswith("eval_")}):
            pts = [(r["step"], r[key]) for r in self.history if key in r]
            if pts:
                curves[key] = ([p[0] for p in pts], [p[1] for p in pts])
        if not curves:
            return
        try:
            plot_curves(os.path.join(self.config.output_dir, "curves.png"), curves, title="training")
        except ImportError as e:  # matplotlib is optional
            warnings.warn(f"curves.png not written: {e}", stacklevel=2)

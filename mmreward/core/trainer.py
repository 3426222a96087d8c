"""One training loop for every trainer: gradient accumulation, autocast, warmup + cosine LR, DDP,
evaluation every N steps, atomic checkpoints with exact resume, CSV / TensorBoard logs, a progress
bar and a learning-curve PNG.

    trainer = Trainer(model, TrainConfig(output_dir="runs/rm", max_steps=500), pairs, collate, loss_fn)
    history = trainer.fit()      # one metric dict per optimizer step

``loss_fn(model, batch) -> (loss, {name: float})`` must call ``model(...)`` (under DDP ``model`` is
the DDP wrapper and its forward is what synchronises gradients); the loss must be a mean over the
micro-batch so that accumulation and DDP average correctly. ``batch`` is ``collate_fn(examples)``
with every tensor in it moved to the model's device.

Data order: each epoch is a permutation of the dataset drawn from ``seed + epoch``, padded to a
multiple of the world size and sharded like ``DistributedSampler`` (rank r takes every world-th
index); each rank cuts its shard into micro-batches of ``batch_size`` (the last incomplete one is
dropped so that every optimizer step sees the same number of examples). With W processes the
global batch is ``W * batch_size * grad_accum_steps``.

DDP: used when ``torch.distributed`` is initialised, or when ``WORLD_SIZE > 1`` in the environment
(``torchrun`` / ``accelerate launch``; the process group is then initialised here, gloo on CPU,
nccl on CUDA). Every rank seeds its RNGs with the same seed (dropout masks then agree across ranks,
and rank 0's RNG state is the one a snapshot stores); only rank 0 logs and writes snapshots.

Files in ``output_dir`` (rank 0): ``train_config.json`` (the settings), ``metrics.csv`` (every step),
TensorBoard events under ``tb/``, ``curves.png`` at the end, and the snapshot.

Snapshots: ``output_dir/checkpoint-<step>/`` holds the model (``model.safetensors`` +
``config.json``) and the training state (optimizer, scheduler, grad scaler, RNG, step, data
position, history: ``state.safetensors`` + ``state.json``, written last). A snapshot counts only
once its ``state.json`` is in place; older snapshots are removed after a newer one is complete, so
a crash mid-save leaves the previous snapshot usable.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, atomic_write_text, load_model, load_state, save_model, save_state
from .logging import MetricLogger, plot_curves
from .train import rng_state, seed_everything, set_rng_state, warmup_cosine_scheduler

AUTOCAST = ("none", "bf16", "fp16")
CHECKPOINT_PREFIX = "checkpoint-"


@dataclass
class TrainConfig:
    output_dir: str = field(default="runs/train", metadata={"help": "folder for metrics.csv, TensorBoard, snapshots, curves.png"})
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
    save_every: int = field(default=0, metadata={"help": "write a resumable snapshot every N steps (always at the end; 0: end only)"})
    log_every: int = field(default=10, metadata={"help": "print / update the progress bar every N steps (CSV gets every step)"})
    seed: int = field(default=0, metadata={"help": "seed for data order and RNGs (dropout)"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar (rank 0)"})
    tensorboard: bool = field(default=True, metadata={"help": "also log to TensorBoard under output_dir/tb"})
    resume: bool = field(default=True, metadata={"help": "continue from the newest snapshot in output_dir if there is one"})
    plot: bool = field(default=True, metadata={"help": "write curves.png (loss and eval metrics) at the end"})
    ddp_find_unused_parameters: bool = field(default=False, metadata={"help": "DDP: allow parameters that get no gradient"})

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 1, got {v!r}")
        for name in ("warmup_steps", "eval_every", "save_every", "log_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.min_lr_ratio, (int, float)) and 0.0 <= self.min_lr_ratio <= 1.0):
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.max_grad_norm is not None and not (isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0):
            raise ValueError(f"TrainConfig.max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.autocast not in AUTOCAST:
            raise ValueError(f"TrainConfig.autocast must be one of {AUTOCAST}, got {self.autocast!r}")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ValueError(f"TrainConfig.output_dir must be a non-empty path, got {self.output_dir!r}")


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


def _unshared(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): clone repeats."""
    seen, out = set(), {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out


def snapshot_dirs(output_dir: str) -> list[str]:
    """Complete snapshots in ``output_dir``, newest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX):].isdigit() and \
                os.path.exists(os.path.join(path, "state.json")):
            found.append((int(name[len(CHECKPOINT_PREFIX):]), path))
    return [p for _, p in sorted(found, reverse=True)]


# ------------------------------------------------------------------ trainer
class Trainer:
    def __init__(self, model: nn.Module, config: TrainConfig, train_dataset: Sequence, collate_fn: Callable,
                 loss_fn: Callable[[nn.Module, Any], tuple[Tensor, dict[str, float]]],
                 eval_fn: Optional[Callable[[nn.Module], dict[str, float]]] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        for name, fn in (("collate_fn", collate_fn), ("loss_fn", loss_fn)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        if eval_fn is not None and not callable(eval_fn):
            raise TypeError(f"eval_fn must be callable or None, got {type(eval_fn).__name__}")
        try:
            n = len(train_dataset)
        except TypeError:
            raise TypeError(f"train_dataset must be a sized sequence, got {type(train_dataset).__name__}") from None
        self.config, self.dataset, self.collate_fn, self.loss_fn, self.eval_fn = config, train_dataset, collate_fn, loss_fn, eval_fn
        self.rank, self.world_size, self._owns_group = _dist_setup()
        self.is_main = self.rank == 0
        per_rank = math.ceil(n / self.world_size)
        self.batches_per_epoch = per_rank // config.batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"train_dataset has {n} examples: fewer than batch_size ({config.batch_size}) × "
                             f"world size ({self.world_size}), so no full micro-batch can be formed")
        params = list(model.parameters())
        if not params:
            raise ValueError("model has no parameters")
        if self.world_size > 1 and torch.cuda.is_available() and params[0].device.type == "cpu":
            local = int(os.environ.get("LOCAL_RANK", self.rank % max(1, torch.cuda.device_count())))
            torch.cuda.set_device(local)
            model = model.to(torch.device("cuda", local))
        self.model = model  # the unwrapped module (what is saved / evaluated)
        self.device = next(model.parameters()).device
        trainable = [p for p in model.parameters() if p.requires_grad]
        if optimizer is None:
            if not trainable:
                raise ValueError("model has no parameters with requires_grad=True")
            decay = [p for p in trainable if p.dim() >= 2]
            no_decay = [p for p in trainable if p.dim() < 2]
            groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
            optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)
        self.optimizer = optimizer
        self.scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=config.warmup_steps,
                                                 total_steps=config.max_steps, min_ratio=config.min_lr_ratio)
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.autocast]
        use_scaler = self.amp_dtype == torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if use_scaler else None
        self.wrapped: nn.Module = model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DDP(model, device_ids=ids, find_unused_parameters=config.ddp_find_unused_parameters)
        self.step = 0  # optimizer steps done
        self.micro_step = 0  # micro-batches consumed (data position)
        self.history: list[dict] = []

    # -------------------------------------------------------------- data
    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.config.seed + epoch)
        perm = torch.randperm(len(self.dataset), generator=g).tolist()
        total = math.ceil(len(perm) / self.world_size) * self.world_size
        perm = (perm * math.ceil(total / len(perm)))[:total]  # pad by repeating, as DistributedSampler does
        return perm[self.rank::self.world_size]

    def _next_batch(self) -> Any:
        epoch, idx = divmod(self.micro_step, self.batches_per_epoch)
        if getattr(self, "_order_epoch", None) != epoch:
            self._order, self._order_epoch = self._epoch_order(epoch), epoch
        bs = self.config.batch_size
        examples = [self.dataset[i] for i in self._order[idx * bs:(idx + 1) * bs]]
        self.micro_step += 1
        return _to_device(self.collate_fn(examples), self.device)

    # -------------------------------------------------------------- snapshots
    def _config_fingerprint(self) -> dict:
        c = self.config
        return {"batch_size": c.batch_size, "grad_accum_steps": c.grad_accum_steps, "seed": c.seed,
                "world_size": self.world_size}

    def save_snapshot(self) -> str:
        """Write ``output_dir/checkpoint-<step>`` (rank 0 only) and remove older snapshots."""
        path = os.path.join(self.config.output_dir, f"{CHECKPOINT_PREFIX}{self.step:08d}")
        if not self.is_main:
            return path
        if os.path.exists(path):  # an incomplete earlier attempt at this step
            shutil.rmtree(path)
        weights = {k: v.detach() for k, v in self.model.state_dict().items()}
        save_model(path, _unshared(weights), {"model_type": "mmreward_trainer_snapshot", "step": self.step})
        state = {"step": self.step, "micro_step": self.micro_step, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "history": self.history,
                 "config": self._config_fingerprint()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        save_state(os.path.join(path, "state"), state)  # written last: marks the snapshot complete
        for old in snapshot_dirs(self.config.output_dir)[1:]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def _try_resume(self) -> bool:
        for path in snapshot_dirs(self.config.output_dir):
            try:
                state = load_state(os.path.join(path, "state"))
                weights, _ = load_model(path)
            except CheckpointError as e:
                warnings.warn(f"skipping unreadable snapshot {path}: {e}")
                continue
            fp = state.get("config", {})
            mismatch = {k: (fp.get(k), v) for k, v in self._config_fingerprint().items() if fp.get(k) != v}
            if mismatch:
                raise ValueError(f"cannot resume from {path}: settings differ (saved, now): {mismatch}; "
                                 "use another output_dir or resume=False")
            self.model.load_state_dict(weights)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            self.step, self.micro_step = int(state["step"]), int(state["micro_step"])
            self.history = list(state["history"])
            return True
        return False

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
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            out = self.eval_fn(self.model)
        self.model.train(was_training)
        if not isinstance(out, dict):
            raise TypeError(f"eval_fn must return a dict of floats, got {type(out).__name__}")
        return {k if k.startswith("eval_") else f"eval_{k}": float(v) for k, v in out.items()}

    def _train_step(self) -> dict[str, float]:
        cfg = self.config
        sums: dict[str, float] = {}
        total_loss = 0.0
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
                    raise FloatingPointError(f"non-finite loss ({loss.item()}) at step {self.step + 1}, "
                                             f"micro-batch {micro}; the last snapshot is untouched")
                scaled = loss.float() / cfg.grad_accum_steps
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total_loss += loss.item()
            for k, v in (metrics or {}).items():
                sums[k] = sums.get(k, 0.0) + float(v)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item() if params else 0.0
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        keys = sorted(sums)
        vals = self._reduce_mean([total_loss / cfg.grad_accum_steps] + [sums[k] / cfg.grad_accum_steps for k in keys])
        row = {"step": self.step, "loss": vals[0], "lr": lr, "grad_norm": grad_norm}
        row.update({k: v for k, v in zip(keys, vals[1:]) if k not in row})
        return row

    def fit(self) -> list[dict]:
        cfg = self.config
        resumed = cfg.resume and self._try_resume()
        if not resumed:
            seed_everything(cfg.seed)
        logger = None
        if self.is_main:
            # the full settings of this run, next to its metrics (for reproducing / comparing runs)
            body = {k: v for k, v in dataclasses.asdict(cfg).items()}
            body.update(world_size=self.world_size, config_class=type(cfg).__name__, resumed_at_step=self.step)
            atomic_write_text(os.path.join(cfg.output_dir, "train_config.json"), json.dumps(body, indent=2, default=str) + "\n")
            logger = MetricLogger(cfg.output_dir, tensorboard=cfg.tensorboard,
                                  resume_step=self.step if resumed else None,
                                  console_every=max(1, cfg.log_every), quiet=cfg.progress or cfg.log_every == 0)
        bar = None
        if self.is_main and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        self.wrapped.train()
        try:
            last_saved = self.step if resumed else -1
            while self.step < cfg.max_steps:
                row = self._train_step()
                final = self.step == cfg.max_steps
                if self.eval_fn is not None and ((cfg.eval_every and self.step % cfg.eval_every == 0) or final):
                    row.update(self._evaluate())
                self.history.append(row)
                if logger is not None:
                    logger.log(**row)
                if bar is not None:
                    bar.update(1)
                    if cfg.log_every and (self.step % cfg.log_every == 0 or final):
                        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("loss", "lr") or k.startswith("eval_")})
                if (cfg.save_every and self.step % cfg.save_every == 0) or final:
                    self.save_snapshot()
                    last_saved = self.step
            if last_saved != self.step:  # resumed at (or past) max_steps without a snapshot at this step
                self.save_snapshot()
            if self.is_main and cfg.plot and self.history:
                self._plot()
        finally:
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()
        return self.history

    def _plot(self) -> None:
        curves = {}
        for key in ["loss"] + sorted({k for r in self.history for k in r if k.startswith("eval_")}):
            pts = [(r["step"], r[key]) for r in self.history if key in r]
            if pts:
                curves[key] = ([p[0] for p in pts], [p[1] for p in pts])
        try:
            plot_curves(os.path.join(self.config.output_dir, "curves.png"), curves, title="training")
        except ImportError as e:  # matplotlib is optional
            warnings.warn(f"curves.png not written: {e}")

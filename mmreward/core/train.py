"""Training-loop pieces shared by every trainer: seeding, RNG capture for exact resume, LR schedules.

Seeding: call :func:`seed_everything` **before building any model**, so that freshly initialised
layers (a reward head on a pretrained backbone, a whole model built from a config) are the same in
every run with that seed::

    from mmreward.core.train import seed_everything

    seed_everything(config.seed)          # first: before the model / head is created
    model = RewardModel.from_backbone(...)
    Trainer(model, config, ...).fit()     # re-seeds on a fresh run (data order, dropout)
"""
from __future__ import annotations

import math
import numbers
import random
from typing import Any

import numpy as np
import torch


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` job, or a single process: the one that writes models and prints summaries."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def end_distributed() -> None:
    """Under ``torchrun``: wait until every rank is here (rank 0 has written the model), then close the
    process group; a single process: nothing."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """Every RNG a training loop draws from, in a form `core.checkpoint.save_state` can store."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class GeneratorState:
    """``state_dict`` / ``load_state_dict`` for a private RNG (``torch.Generator`` or
    ``numpy.random.Generator``), so a trainer snapshot can carry it."""

    def __init__(self, generator: Any):
        if not isinstance(generator, (torch.Generator, np.random.Generator)):
            raise TypeError(f"expected a torch.Generator or numpy.random.Generator, got {type(generator).__name__}")
        self.generator = generator

    def state_dict(self) -> dict:
        if isinstance(self.generator, torch.Generator):
            return {"torch": self.generator.get_state()}
        return {"numpy": self.generator.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if isinstance(self.generator, torch.Generator):
            self.generator.set_state(state["torch"])
        else:
            self.generator.bit_generator.state = state["numpy"]


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warmup from 0 to 1 over `warmup_steps`, then cosine to `min_ratio`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                            min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio)
    )

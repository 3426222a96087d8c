"""Train a :class:`ProcessRewardModel` on the shared :class:`mmreward.core.trainer.Trainer`
(accumulation, autocast, warmup + cosine LR, DDP, atomic snapshots, exact resume, CSV / TensorBoard).

Objectives (all through the fused step ops, inside ``model.forward``):

* ``bce`` — per-step binary cross-entropy on hard or soft (Monte-Carlo) labels (Math-Shepherd, TRL);
* ``mse`` — per-step value regression (ReST-MCTS* targets from :mod:`.labels`);
* ``ppm`` — rStar-Math pairwise preference on (chosen, rejected) step pairs, groups weighted
  1/(n_pos·n_neg).

    history = train_prm(prm, examples, PRMTrainConfig(output_dir="runs/prm", max_steps=800, lr=3e-3),
                        eval_examples=held_out)
    prm.save_pretrained("runs/prm/final")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from mmreward.core.trainer import TrainConfig, Trainer

from .data import PairCollator, PairExample, StepCollator, StepExample
from .eval import processbench_f1, predict_first_error, processbench_sweep, step_macro_f1

__all__ = ["PRMTrainConfig", "train_prm", "evaluate_prm", "OBJECTIVES"]

OBJECTIVES = ("bce", "mse", "ppm")


@dataclass
class PRMTrainConfig(TrainConfig):
    objective: str = field(default="bce", metadata={"help": "bce (step labels) | mse (value targets) | ppm (step pairs)"})
    eval_threshold: float = field(default=0.5, metadata={"help": "ProcessBench threshold for the eval F1 (first step below it = error)"})
    eval_batch_size: int = field(default=32, metadata={"help": "sequences per forward pass when evaluating"})
    trainable_layers: int = field(default=-1, metadata={"help": "train only the last N backbone blocks + final norm + head (-1: all)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"PRMTrainConfig.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not 0.0 <= self.eval_threshold <= 1.0:
            raise ValueError(f"PRMTrainConfig.eval_threshold must be in [0, 1], got {self.eval_threshold}")
        if not isinstance(self.trainable_layers, int) or self.trainable_layers < -1:
            raise ValueError(f"PRMTrainConfig.trainable_layers must be an int >= -1 (-1 = all), got {self.trainable_layers!r}")


def evaluate_prm(model, examples: Sequence[StepExample], threshold: float = 0.5, batch_size: int = 32,
                 sweep: bool = False) -> dict[str, float]:
    """ProcessBench F1 at ``threshold`` (samples whose first error is known) and step macro-F1.
    ``sweep``: also the best threshold on these examples (``best_threshold``, ``best_f1``)."""
    if not examples:
        raise ValueError("evaluate_prm: no examples")
    scores = model.score_batch([e.problem for e in examples], [e.steps for e in examples], batch_size=batch_size)
    out: dict[str, float] = {}
    known = [(s, e.first_error) for s, e in zip(scores, examples) if e.first_error >= -1]
    if known:
        pb = processbench_f1(predict_first_error([s for s, _ in known], threshold), [y for _, y in known])
        out.update({"processbench_f1": pb["f1"], "acc_error": pb["acc_error"], "acc_correct": pb["acc_correct"]})
        if sweep:
            sw = processbench_sweep([s for s, _ in known], [y for _, y in known])
            out.update({"best_threshold": sw["best_threshold"], "best_f1": sw["best"]["f1"]})
    flat_s = torch.cat(scores)
    flat_y = [y for e, s in zip(examples, scores) for y in e.labels[: s.numel()]]
    if any(y != -100 for y in flat_y):
        m = step_macro_f1(flat_s, flat_y, threshold)
        out.update({"step_macro_f1": m["macro_f1"], "step_accuracy": m["accuracy"]})
    return out


def _pair_accuracy(model, pairs: Sequence[PairExample], batch_size: int) -> dict[str, float]:
    hits = 0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i: i + batch_size]
        probs = [e.problem for e in chunk for _ in (0, 1)]
        steps = [e.prefix + [s] for e in chunk for s in (e.chosen, e.rejected)]
        last = torch.stack([s[-1] for s in model.score_batch(probs, steps, batch_size=2 * batch_size)])
        hits += int((last[0::2] > last[1::2]).sum())
    return {"pair_accuracy": hits / len(pairs)}


def train_prm(model, train_examples: Sequence, config: PRMTrainConfig, eval_examples: Optional[Sequence] = None,
              optimizer: Optional[torch.optim.Optimizer] = None) -> list[dict]:
    """Fit ``model`` on StepExamples (bce / mse) or PairExamples (ppm); returns per-step metrics."""
    if not isinstance(config, PRMTrainConfig):
        raise TypeError(f"config must be a PRMTrainConfig, got {type(config).__name__}")
    if not train_examples:
        raise ValueError("train_prm: no training examples")
    want = PairExample if config.objective == "ppm" else StepExample
    for i, e in enumerate(train_examples):
        if not isinstance(e, want):
            raise TypeError(f"train example {i}: objective {config.objective!r} needs {want.__name__}, got {type(e).__name__}")
    if config.objective == "bce":
        for i, e in enumerate(train_examples):
            if any(y != -100 and not 0.0 <= y <= 1.0 for y in e.labels):
                raise ValueError(f"train example {i}: bce labels must be in [0, 1] (or -100), got {e.labels}")
    if config.trainable_layers != -1:
        model.freeze_backbone(config.trainable_layers)
    collate = PairCollator(model) if config.objective == "ppm" else StepCollator(model)
    objective = config.objective

    def loss_fn(m, batch):
        return m(**batch, objective=objective), {}

    eval_fn = None
    if eval_examples:
        if isinstance(eval_examples[0], PairExample):
            eval_fn = lambda m: _pair_accuracy(m, eval_examples, config.eval_batch_size)  # noqa: E731
        else:
            eval_fn = lambda m: evaluate_prm(m, eval_examples, config.eval_threshold, config.eval_batch_size)  # noqa: E731
    trainer = Trainer(model, config, list(train_examples), collate, loss_fn, eval_fn=eval_fn, optimizer=optimizer)
    return trainer.fit()

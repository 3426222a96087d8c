"""Train a :class:`ProcessRewardModel` on the shared :class:`mmreward.core.trainer.Trainer`
(accumulation, autocast, warmup + cosine LR, DDP, atomic snapshots, exact resume, CSV / TensorBoard).

Objectives (all through the fused step ops, inside ``model.forward``):

* ``bce`` — per-step binary cross-entropy on hard or soft (Monte-Carlo) labels (Math-Shepherd, TRL);
* ``mse`` — per-step value regression (ReST-MCTS* targets from :mod:`.labels`);
* ``ppm`` — rStar-Math pairwise preference on (chosen, rejected) step pairs, groups weighted
  1/(n_pos·n_neg).

    history = train_prm(prm, examples, PRMTrainConfig(output_dir="runs/prm", max_steps=800, lr=3e-3),
                        eval_examples=held_out)
    prm.save_pretrained("runs/prm/model")
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from mmreward.core.data import DataError
from mmreward.core.inputs import StepSolution
from mmreward.core.lora import AdapterOptions, BackboneSetup
from mmreward.core.model import config_to_dict, eval_while_scoring
from mmreward.core.trainer import TrainConfig, Trainer

from .data import IGNORE, PairCollator, PairExample, StepCollator, StepExample
from .eval import processbench_f1, predict_first_error, processbench_sweep, step_macro_f1

__all__ = ["PRMTrainConfig", "train_prm", "evaluate_prm", "step_metrics", "solutions", "OBJECTIVES",
           "CachedPrefixCollator"]

OBJECTIVES = ("bce", "mse", "ppm")


@dataclass
class PRMTrainConfig(AdapterOptions, TrainConfig):
    objective: str = field(default="bce", metadata={"help": "bce (step labels) | mse (value targets) | ppm (step pairs)"})
    eval_threshold: float = field(default=0.5, metadata={"help": "ProcessBench threshold for the eval F1 (first step below it = error)"})
    eval_batch_size: int = field(default=32, metadata={"help": "sequences per forward pass when evaluating"})
    trainable_layers: int = field(default=-1, metadata={"help": "train only the last N backbone blocks + final norm + head (-1: all)"})
    cache_frozen: bool = field(default=False, metadata={
        "help": "with trainable_layers: run the frozen blocks once per example and train the top blocks on their "
                "cached output (RAM: tokens x hidden x 4 bytes per example)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"PRMTrainConfig.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if isinstance(self.eval_threshold, bool) or not (isinstance(self.eval_threshold, (int, float))
                                                         and 0.0 <= self.eval_threshold <= 1.0):
            raise ValueError(f"PRMTrainConfig.eval_threshold must be a number in [0, 1], got {self.eval_threshold!r}")
        # checked here, not at the first evaluation (by default after the last step, before its snapshot)
        if isinstance(self.eval_batch_size, bool) or not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1:
            raise ValueError(f"PRMTrainConfig.eval_batch_size must be an integer >= 1, got {self.eval_batch_size!r}")
        if isinstance(self.trainable_layers, bool) or not isinstance(self.trainable_layers, int) or self.trainable_layers < -1:
            raise ValueError(f"PRMTrainConfig.trainable_layers must be an int >= -1 (-1 = all), got {self.trainable_layers!r}")
        if self.cache_frozen and self.trainable_layers < 1:
            raise ValueError("PRMTrainConfig.cache_frozen needs trainable_layers >= 1 (the blocks below them are cached)")
        self.check_adapter_options("PRMTrainConfig")
        if self.lora_rank and self.trainable_layers != -1:
            raise ValueError("PRMTrainConfig: lora_rank and trainable_layers both choose what trains (adapters on every "
                             "block, or the top blocks in full): give one of them")


def solutions(examples: Sequence) -> list[StepSolution]:
    """The ``(problem, steps)`` inputs of StepExamples, for ``model.score_parts``."""
    return [StepSolution(e.problem, e.steps) for e in examples]


def step_metrics(scores: Sequence[torch.Tensor], examples: Sequence[StepExample], threshold: float = 0.5,
                 sweep: bool = False) -> dict[str, float]:
    """ProcessBench F1 at ``threshold`` (samples whose first error is known) and step macro-F1 from each
    example's step scores. ``sweep``: also the best threshold on these examples (``best_threshold``,
    ``best_f1``). Examples without an erroneous (or without a correct) sample give a NaN F1 (and a
    warning): the missing side has no accuracy. Steps left unscored by ``truncate`` (NaN) count as not below the threshold and leave
    the step metrics."""
    out: dict[str, float] = {}
    known = [(s, e.first_error) for s, e in zip(scores, examples) if e.first_error >= -1]
    if known:
        pb = processbench_f1(predict_first_error([s for s, _ in known], threshold), [y for _, y in known])
        out.update({"processbench_f1": pb["f1"], "acc_error": pb["acc_error"], "acc_correct": pb["acc_correct"]})
        if sweep:
            sw = processbench_sweep([s for s, _ in known], [y for _, y in known])  # warns when F1 is undefined
            best = sw["best"]
            out.update({"best_threshold": float("nan") if best is None else sw["best_threshold"],
                        "best_f1": float("nan") if best is None else best["f1"]})
        elif "note" in pb:
            warnings.warn(f"ProcessBench F1: {pb['note']}", stacklevel=2)
    scored = [(x, y) for e, s in zip(examples, scores) for x, y in zip(s.tolist(), e.labels) if x == x]  # x == x: not NaN
    if any(y != -100 for _, y in scored):
        m = step_macro_f1([x for x, _ in scored], [y for _, y in scored], threshold)
        out.update({"step_macro_f1": m["macro_f1"], "step_accuracy": m["accuracy"]})
    return out


def check_step_example(e: StepExample, where: str, objective: Optional[str] = None) -> None:
    """A StepExample built by hand (not by :func:`read_step_examples`, which checks its rows): one label per
    step, each a finite number (bce: in [0, 1]) or -100, and a first error within the steps. A labels list of
    another length was zipped with the steps: too long, the extra labels were dropped without a word; too short,
    training failed at an op deep inside the run ("`labels` has shape (2,); expected (3,)") and evaluation paired
    labels with the wrong steps."""
    steps, labels = e.steps, e.labels
    if getattr(labels, "ndim", None) == 1 and hasattr(labels, "tolist"):  # a 1-D tensor / array, as collation takes
        labels = labels.tolist()
    if isinstance(steps, str) or not isinstance(steps, (list, tuple)) or not steps:
        raise DataError(f"{where}: steps must be a non-empty list of strings, got {type(steps).__name__}")
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
        raise DataError(f"{where}: labels must be a list with one label per step, got {type(labels).__name__}")
    if len(labels) != len(steps):
        raise DataError(f"{where}: {len(steps)} steps but {len(labels)} labels (one per step; -100 for a step "
                        "without a label)")
    for k, y in enumerate(labels):
        if not isinstance(y, numbers.Real) and hasattr(y, "item") and getattr(y, "ndim", 0) == 0:
            y = y.item()  # a 0-d tensor (list(torch.tensor([...]))); numpy scalars are numbers.Real already
        ok = isinstance(y, numbers.Real) and not isinstance(y, bool) and math.isfinite(y)
        if isinstance(y, bool):  # True / False read as 1 / 0, as read_step_examples reads them
            ok = True
        elif ok and y != IGNORE and objective != "mse" and not 0.0 <= y <= 1.0:
            ok = False
        if not ok:
            want = "a finite value target" if objective == "mse" else "a number in [0, 1]"
            raise DataError(f"{where}, step {k}: label {y!r} must be {want} or {IGNORE:g} (no label)")
    fe = e.first_error
    if isinstance(fe, bool) or not isinstance(fe, numbers.Integral) or not -2 <= fe < len(steps):
        raise DataError(f"{where}: first_error {fe!r} must be the index of the first wrong step (0..{len(steps) - 1}), "
                        "-1 (every step right) or -2 (unknown)")


def check_labelled(examples: Sequence[StepExample], what: str) -> None:
    """Refuse examples that carry no label at all (no known first error, every step label ignored):
    :func:`step_metrics` would return no metric, an evaluation that reads as if it had run."""
    if not any(isinstance(e, StepExample) and (e.first_error >= -1 or any(y != IGNORE for y in e.labels))
               for e in examples):
        raise DataError(f"{what}: none of the {len(examples)} examples carries a label (a ProcessBench first-error "
                        f"'label' or a step label other than {IGNORE:g}): there is nothing to evaluate; score "
                        "unlabelled solutions with score_parts / `mmreward prm score`")


def _step_examples(examples, what: str) -> list[StepExample]:
    """``examples`` as StepExamples: a list of them, or a path / list of rows read with
    :func:`read_step_examples` (what ``mmreward prm eval --data`` reads). A path used to be iterated
    character by character and a list of dicts counted as unlabelled ("none of the N examples ...")."""
    import os

    from .data import read_step_examples

    if isinstance(examples, (str, os.PathLike)):
        return read_step_examples(examples)
    if isinstance(examples, (StepExample, dict, StepSolution)) or not hasattr(examples, "__iter__"):
        hint = "; wrap a single example in a list" if isinstance(examples, (StepExample, dict)) else ""
        raise TypeError(f"{what}: examples must be a list of StepExamples (or of step rows, or a data path), got "
                        f"{type(examples).__name__}{hint}")
    examples = list(examples)
    if examples and all(isinstance(e, dict) for e in examples):
        return read_step_examples(examples)
    for i, e in enumerate(examples):
        if not isinstance(e, StepExample):
            raise TypeError(f"{what}: example {i} is a {type(e).__name__}, not a StepExample (read rows with "
                            "read_step_examples)")
    return examples


def check_threshold(model, threshold: Any, what: str = "threshold") -> None:
    """A ProcessBench threshold outside [0, 1] for a PRM whose scores are probabilities (``score="sigmoid"``)
    predicts every solution wrong (above 1) or right (below 0): a metric of nothing, e.g. ``50`` typed for the
    paper's ×100 scale. Refused, naming ``what``; a raw-value PRM (``score="identity"``) takes any finite number."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"{what} must be a finite number, got {threshold!r}")
    if getattr(getattr(model, "config", None), "score", "sigmoid") == "sigmoid" and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{what} {threshold!r} is outside [0, 1], the range of this PRM's step scores (P(good)): "
                         "every solution would be predicted wrong (above 1) or right (below 0); e.g. 0.5")


def evaluate_prm(model, examples: Sequence[StepExample], threshold: float = 0.5, batch_size: int = 32,
                 sweep: bool = False) -> dict[str, float]:
    """:func:`step_metrics` of ``model``'s scores on ``examples`` (StepExamples, or a path / list of rows
    that :func:`read_step_examples` reads)."""
    examples = _step_examples(examples, "evaluate_prm")
    if not examples:
        raise ValueError("evaluate_prm: no examples")
    for i, e in enumerate(examples):
        check_step_example(e, f"evaluate_prm: example {i}")
    check_labelled(examples, "evaluate_prm")
    check_threshold(model, threshold, "evaluate_prm: threshold")
    return step_metrics(model.score_parts(solutions(examples), batch_size=batch_size), examples, threshold, sweep)


def _pair_accuracy(model, pairs: Sequence[PairExample], batch_size: int) -> dict[str, float]:
    inputs = [StepSolution(e.problem, e.prefix + [s]) for e in pairs for s in (e.chosen, e.rejected)]
    last = torch.stack([s[-1] for s in model.score_parts(inputs, batch_size=2 * batch_size)])
    return {"pair_accuracy": int((last[0::2] > last[1::2]).sum()) / len(pairs)}


def train_prm(model, train_examples: Sequence, config: PRMTrainConfig, eval_examples: Optional[Sequence] = None,
              optimizer: Optional[torch.optim.Optimizer] = None) -> list[dict]:
    """Fit ``model`` on StepExamples (bce / mse) or PairExamples (ppm); returns per-step metrics."""
    if not isinstance(config, PRMTrainConfig):
        raise TypeError(f"config must be a PRMTrainConfig, got {type(config).__name__}")
    if optimizer is not None and config.lora_rank:
        # built before the adapters exist, it would hold none of them (and the weights LoRA freezes): the run
        # would train the head alone without a word
        raise ValueError("train_prm: an optimizer given with lora_rank cannot hold the LoRA adapters, which are made "
                         "when the run starts: leave optimizer out (the Trainer builds AdamW over them)")
    if not train_examples:
        raise ValueError("train_prm: no training examples")
    want = PairExample if config.objective == "ppm" else StepExample
    for i, e in enumerate(train_examples):
        if not isinstance(e, want):
            raise TypeError(f"train example {i}: objective {config.objective!r} needs {want.__name__}, got {type(e).__name__}")
    if config.objective != "ppm":
        for i, e in enumerate(train_examples):
            check_step_example(e, f"train example {i}", config.objective)
    if config.objective == "ppm" and all(e.chosen == e.rejected for e in train_examples):
        # both sides of every pair score the same text: a zero gradient, a run that trains on nothing
        raise DataError(f"train_prm: in all {len(train_examples)} PPM pairs the chosen and rejected steps are the "
                        "same text: no pair prefers anything, so the run would train on nothing")
    if config.objective != "ppm" and all(y == IGNORE for e in train_examples for y in e.labels):
        # the loss would be 0 at every step: a run that trains nothing, reported as a perfect fit
        raise ValueError(f"train_prm: every step label of the {len(train_examples)} training examples is "
                         f"{IGNORE:g} (ignored): no step to train the {config.objective} objective on")
    if eval_examples is not None:
        eval_examples = list(eval_examples)
        if not eval_examples:
            raise ValueError("train_prm: eval_examples is empty (pass None for no evaluation)")
        kind = type(eval_examples[0])
        for i, e in enumerate(eval_examples):  # now, not at the first evaluation after training steps
            if not isinstance(e, (StepExample, PairExample)) or type(e) is not kind:
                raise TypeError(f"eval example {i}: expected {kind.__name__ if i else 'StepExample or PairExample'} "
                                f"(all of one kind), got {type(e).__name__}")
        if kind is StepExample:
            for i, e in enumerate(eval_examples):
                check_step_example(e, f"train_prm: eval example {i}")
            check_labelled(eval_examples, "train_prm: eval_examples")
    flags = [p.requires_grad for p in model.parameters()]
    try:
        return _train_prm(model, train_examples, config, eval_examples, optimizer)
    except BaseException:
        for p, flag in zip(model.parameters(), flags):  # a refused run does not leave the backbone frozen
            p.requires_grad_(flag)
        raise


def check_training_fits(model, examples: Sequence, objective: str, stacklevel: int = 4) -> None:
    """Before any step: tokenise every training example as the collators will. An example whose first step
    does not fit ``max_length`` (StepExamples) or a PPM pair side longer than it is a DataError naming the
    training example (the collator would raise it mid-run, numbered by its place in the micro-batch); the
    labelled steps that truncation leaves out (the collators' documented contract) are counted in one
    warning, and a run whose every labelled step is left out is refused (it would train on nothing)."""
    encode = getattr(model, "encode_one", None)
    if encode is None:
        return
    labelled = cut = cut_examples = 0
    first = None
    for i, e in enumerate(examples):
        if isinstance(e, PairExample):
            for side in ("chosen", "rejected"):
                encode(e.problem, list(e.prefix) + [getattr(e, side)], False, f"train pair {i} ({side})")
            continue
        _, tags = encode(e.problem, e.steps, True, f"train example {i}")
        lost = sum(1 for y in e.labels[len(tags):] if y != IGNORE)
        labelled += sum(1 for y in e.labels if y != IGNORE)
        if lost:
            cut, cut_examples = cut + lost, cut_examples + 1
            first = i if first is None else first
    if cut and cut == labelled:
        raise DataError(f"train_prm: all {labelled} labelled steps of the training examples lie past max_length="
                        f"{model.config.max_length} tokens and would be left out: the run would train on nothing "
                        f"(objective {objective!r}); raise max_length or shorten the problems")
    if cut:
        warnings.warn(f"{cut} of the {labelled} labelled training steps (in {cut_examples} of {len(examples)} examples, "
                      f"first: train example {first}) lie past max_length={model.config.max_length} tokens and are "
                      "left out of training", stacklevel=stacklevel)


def _train_prm(model, train_examples: Sequence, config: PRMTrainConfig, eval_examples: Optional[Sequence],
               optimizer: Optional[torch.optim.Optimizer]) -> list[dict]:
    check_training_fits(model, train_examples, config.objective, stacklevel=4)
    if config.trainable_layers != -1:
        model.freeze_backbone(config.trainable_layers)
    setup = BackboneSetup(model, config)  # LoRA / checkpointing: undone if the run is refused before its first step
    try:
        trainer = _started_prm_trainer(model, train_examples, config, eval_examples, optimizer)
    except BaseException:
        setup.undo()
        raise
    # the adapters folded into the weights, also when stopped mid-run (an interrupt, a diverged step; the snapshot
    # holds them): the model is the plain one its folder holds, trainable as it came
    return setup.fit(trainer)


def _started_prm_trainer(model, train_examples: Sequence, config: PRMTrainConfig, eval_examples: Optional[Sequence],
                         optimizer: Optional[torch.optim.Optimizer]) -> Trainer:
    collate = PairCollator(model) if config.objective == "ppm" else StepCollator(model)
    objective = config.objective
    dataset: list = list(train_examples)

    def loss_fn(m, batch):
        return m(**batch, objective=objective), {}

    eval_fn = None
    if eval_examples:
        if isinstance(eval_examples[0], PairExample):
            eval_fn = lambda m: _pair_accuracy(m, eval_examples, config.eval_batch_size)  # noqa: E731
        else:
            eval_fn = lambda m: evaluate_prm(m, eval_examples, config.eval_threshold, config.eval_batch_size)  # noqa: E731
    # a resume must train the same model inputs, objective, layers and examples as the run it continues
    # (else it goes on silently from weights trained for something else)
    cfg = getattr(model, "config", None)
    inputs = ({k: v for k, v in config_to_dict(cfg).items() if k not in ("backbone", "aggregation")}
              if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else {})
    run = {"prm": inputs, "objective": config.objective, "trainable_layers": config.trainable_layers,
           "cache_frozen": config.cache_frozen}
    trainer = Trainer(model, config, dataset, collate, loss_fn, eval_fn=eval_fn, optimizer=optimizer, settings=run,
                      resume_settings={**run, "data": examples_digest(train_examples), **config.adapter_record()},
                      check_saves=True)
    trainer.start()  # a refused run (another run's folder, data or settings) is refused before the cache is built
    if config.cache_frozen:
        trainer.collate_fn = CachedPrefixCollator(model, dataset, collate, config.trainable_layers,
                                                  config.eval_batch_size,
                                                  verbose=config.progress or config.log_every > 0)
        # the collator looks examples and their cached states up by index (as many: the same data order)
        trainer.dataset = list(range(len(dataset)))
    return trainer


def examples_digest(examples: Sequence) -> dict:
    """``{"examples": n, "sha256": ...}`` of training examples (every field): part of a run's fingerprint."""
    from mmreward.core.checkpoint import data_digest

    return data_digest(examples, unit="examples")


class CachedPrefixCollator:
    """Training batches whose frozen part is precomputed. At construction the backbone runs once (no grad,
    eval mode) over every example up to the first trainable block and keeps each sequence's states (on
    the CPU, the model's dtype); a batch of example indices then collates as usual plus ``prefix_states``
    (B, T, H), so ``model.forward`` runs only the top ``trainable_layers`` blocks. The loss and gradients
    equal those of the uncached model when the frozen blocks have no dropout (checked on the first chunk:
    a backbone for which the cut forward is not exact is refused)."""

    def __init__(self, model, examples: Sequence, collate, trainable_layers: int, batch_size: int = 32,
                 verbose: bool = False):
        n_blocks = len(model.decoder_layers())
        if not 1 <= trainable_layers < n_blocks:
            raise ValueError(f"cache_frozen needs 1 <= trainable_layers < {n_blocks} (the backbone's blocks), "
                             f"got {trainable_layers}")
        self.examples, self.collate, self.first = examples, collate, n_blocks - trainable_layers
        self.cache: list[list[torch.Tensor]] = []  # per example: one (T_r, H) tensor per collated row
        with eval_while_scoring(model):  # the frozen blocks' states without dropout; submodule modes kept
            for i in range(0, len(examples), batch_size):
                b = collate(examples[i: i + batch_size])
                h = model.prefix_states(b["input_ids"], b["attention_mask"], self.first).cpu()  # (R, T, H)
                lengths = b["attention_mask"].sum(1).tolist()
                rows = [h[r, : lengths[r]].clone() for r in range(h.shape[0])]
                per = len(rows) // len(examples[i: i + batch_size])  # 1 (steps) or 2 (ppm pairs)
                self.cache += [rows[j: j + per] for j in range(0, len(rows), per)]
                if i == 0:
                    self._check(model, b)
        self.nbytes = sum(t.numel() * t.element_size() for rows in self.cache for t in rows)
        if verbose:
            print(f"cache_frozen: states entering block {self.first} of {n_blocks} cached for {len(examples)} "
                  f"examples ({self.nbytes / 2 ** 20:.1f} MiB)")

    def _check(self, model, batch: dict) -> None:
        with torch.no_grad():
            full = model.hidden_states(batch["input_ids"], batch["attention_mask"]).float()
            cached = self(range(len(self.cache)))["prefix_states"]  # only the first chunk is cached yet: `batch`
            cut = model.top_hidden_states(cached, batch["attention_mask"], self.first).float()
        keep = batch["attention_mask"].to(full.device).bool()
        err = float((full - cut)[keep].abs().max())
        if not err <= 1e-3 * (1.0 + float(full[keep].abs().max())):
            raise ValueError(f"cache_frozen: {type(model.backbone).__name__} gives other hidden states when its top "
                             f"blocks run on cached inputs (max difference {err:.3g}); train without cache_frozen")

    def __call__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        batch = self.collate([self.examples[i] for i in indices])
        rows = [t for i in indices for t in self.cache[i]]
        prefix = rows[0].new_zeros(len(rows), batch["input_ids"].shape[1], rows[0].shape[-1])  # (R, T, H)
        for r, t in enumerate(rows):
            prefix[r, : t.shape[0]] = t
        batch["prefix_states"], batch["prefix_from"] = prefix, self.first
        return batch


"""Pairwise reward-model training on the core Trainer and the fused pairwise ops.

    cfg = RewardTrainConfig(output_dir="runs/rm", epochs=1, batch_size=8, lr=2e-5, loss="bt", max_length=512)
    history = train_reward_model(rm, "train.jsonl", eval_pairs="test.jsonl", config=cfg)
    rm = mmreward.load("runs/rm")                # the final model, saved in runs/rm/model/

The pairs are tokenised once, with the model's own layout and truncation (:class:`TextEncoder`);
``max_length`` set here becomes the model's, so it is scored as it was trained. Micro-batches hold
pairs of similar length (``group_by_length``) and are padded to their own longest input. Each
micro-batch runs chosen and rejected through the backbone in one concatenated forward (2B rows),
then :func:`mmreward.ops.pairwise_loss_and_accuracy` gives the loss: Bradley–Terry (``loss="bt"``),
BT with the data's per-pair margins (``loss="margin"``), GRAM label smoothing (``label_smoothing``),
reward centering (``center_coef``) and RRM ties (pairs with ``tie``: target ½) — all in the op.
Everything else (accumulation, autocast, LR schedule, DDP, snapshots, resume, logs, curves, the
final model in ``<output_dir>/model/`` with its ``max_length`` and truncation policy) is
:class:`mmreward.core.trainer.Trainer`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from mmreward.core.lora import AdapterOptions, BackboneSetup
from mmreward.core.model import config_to_dict
from mmreward.core.trainer import Trainer, TrainConfig, Weighted

from .data import EncodedPair, PairCollator, encode_pairs, load_preference_pairs, pair_names

LOSSES = ("bt", "margin")
MEGA_BATCHES = 50  # group_by_length sorts chunks of this many global batches (as transformers' group_by_length)


@dataclass
class RewardTrainConfig(AdapterOptions, TrainConfig):
    output_dir: str = field(default="runs/text_rm", metadata={"help": "folder for logs, snapshots, curves.png (and the CLI's final model/)"})
    epochs: Optional[float] = field(default=None, metadata={"help": "passes over the training pairs; when set, max_steps follows from it"})
    lr: float = field(default=2e-5, metadata={"help": "peak learning rate (AdamW)"})
    loss: str = field(default="bt", metadata={"help": "bt (Bradley-Terry) | margin (BT minus the data's per-pair margin)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "GRAM label smoothing epsilon in [0, 1)"})
    center_coef: float = field(default=0.0, metadata={"help": "reward centering coefficient: + c * (r_chosen + r_rejected)^2"})
    max_length: Optional[int] = field(default=None, metadata={"help": "max tokens per input (default: the model's); saved with the model"})
    group_by_length: bool = field(default=True, metadata={"help": "micro-batches of pairs of similar length (less padding), in random order"})
    eval_batch_size: int = field(default=32, metadata={"help": "batch size when scoring the eval pairs"})
    disable_dropout: bool = field(default=True, metadata={"help": "dropout off while training (TRL's default): scores do not depend on a dropout draw, and CPU attention keeps its fused kernel"})
    fused_head: bool = field(default=False, metadata={"help": "head + loss in one op (reward_head_pairwise_loss): no reward tensor, grads in the forward pass"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ValueError(f"RewardTrainConfig.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.epochs is not None and not (isinstance(self.epochs, (int, float)) and not isinstance(self.epochs, bool)
                                            and math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"RewardTrainConfig.epochs must be a number > 0 or None, got {self.epochs!r}")
        if isinstance(self.label_smoothing, bool) or not (isinstance(self.label_smoothing, (int, float))
                                                          and 0.0 <= self.label_smoothing < 1.0):
            raise ValueError(f"RewardTrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if isinstance(self.center_coef, bool) or not (isinstance(self.center_coef, (int, float))
                                                      and math.isfinite(self.center_coef) and self.center_coef >= 0):
            raise ValueError(f"RewardTrainConfig.center_coef must be a finite number >= 0, got {self.center_coef!r}")
        if self.max_length is not None and (isinstance(self.max_length, bool) or not isinstance(self.max_length, int)
                                            or self.max_length < 2):
            raise ValueError(f"RewardTrainConfig.max_length must be an integer >= 2 or None, got {self.max_length!r}")
        if isinstance(self.eval_batch_size, bool) or not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1:
            raise ValueError(f"RewardTrainConfig.eval_batch_size must be an integer >= 1, got {self.eval_batch_size!r}")
        self.check_adapter_options("RewardTrainConfig")


# ------------------------------------------------------------------ evaluation
def pair_metrics(model: Any, pairs: Sequence[EncodedPair], *, batch_size: int = 32,
                 progress: bool = False) -> dict[str, float]:
    """``{"accuracy", "reward_gap" (mean r_chosen - r_rejected), "n"}`` of tokenised pairs."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    n = len(pairs)
    r = model.score_encoded([p.chosen for p in pairs] + [p.rejected for p in pairs], batch_size, progress=progress)
    bad = (~torch.isfinite(r)).nonzero()
    if bad.numel():  # a NaN reward compares false: the pair would silently count as wrong
        k = int(bad[0, 0])
        raise ValueError(f"pair {k % n} ({'chosen' if k < n else 'rejected'}) has a non-finite reward "
                         f"({float(r[k])}); {bad.numel()} of the {2 * n} rewards are not finite: the model's "
                         "weights or dtype overflow")
    gap = r[:n] - r[n:]
    return {"accuracy": (gap > 0).float().mean().item(), "reward_gap": gap.mean().item(), "n": float(n)}


def evaluate_pairs(model: Any, pairs: Any, *, batch_size: int = 32, progress: bool = False) -> dict[str, float]:
    """Pairwise accuracy of ``model`` (a RewardModel) on preference pairs (tie pairs are left out),
    with the model's own layout and truncation: ``{"accuracy", "reward_gap", "n"}``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"evaluate_pairs: batch_size must be an integer >= 1, got {batch_size!r}")
    loaded = load_preference_pairs(pairs)
    index = [i for i, p in enumerate(loaded) if not p.tie]  # errors name the row, not its place among non-ties
    if not index:
        raise ValueError("evaluate_pairs: no non-tie pairs to evaluate")
    names = pair_names(pairs, index, "eval")
    data = encode_pairs(model.encoder, [loaded[i] for i in index], "eval inputs", names=names)
    if hasattr(model, "check_fits"):
        model.check_fits([p.chosen for p in data] + [p.rejected for p in data],
                         [f"{name} ({side})" for side in ("chosen", "rejected") for name in names])
    return pair_metrics(model, data, batch_size=batch_size, progress=progress)


# ------------------------------------------------------------------ loss
def pairwise_loss_fn(config: RewardTrainConfig):
    """``loss_fn(model, batch)`` for the Trainer: one forward over the 2B concatenated rows."""
    from mmreward.ops import pairwise_loss_and_accuracy, reward_head_pairwise_loss_and_accuracy

    options = dict(label_smoothing=config.label_smoothing, center_coef=config.center_coef)

    def metrics(acc: torch.Tensor, gaps: torch.Tensor, tie: Optional[torch.Tensor]) -> dict[str, Weighted]:
        # accuracy and gap over the pairs with a preferred response, weighted by their number: a tie pair has
        # none (the op's accuracy of an all-tie micro-batch is 0, not a measurement), so a step whose pairs
        # are all ties reports NaN and an accumulated step counts every non-tie pair once
        preferred = torch.ones_like(gaps, dtype=torch.bool) if tie is None else ~tie.to(gaps.device, torch.bool)
        n = int(preferred.sum())
        gap = gaps[preferred].mean().item() if n else float("nan")
        return {"accuracy": Weighted(acc.item() if n else float("nan"), n), "reward_gap": Weighted(gap, n)}

    def loss_fn(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, Weighted]]:
        margin = batch.get("margin") if config.loss == "margin" else None
        tie = batch.get("tie")
        inputs = (batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        if config.fused_head:
            head = getattr(model, "module", model).head  # model may be the DDP wrapper
            h = model(*inputs, return_hidden=True)  # (2B, H)
            B = h.shape[0] // 2
            loss, acc = reward_head_pairwise_loss_and_accuracy(h[:B], h[B:], head.weight, head.bias, margin=margin,
                                                               tie=tie, **options)
            with torch.no_grad():
                gaps = (h[:B] - h[B:]).float() @ head.weight.float().reshape(-1)
            return loss, metrics(acc, gaps, tie)
        r = model(*inputs)  # (2B,): chosen rows, then rejected rows
        B = r.shape[0] // 2
        r_c, r_r = r[:B], r[B:]
        loss, acc = pairwise_loss_and_accuracy(r_c, r_r, margin=margin, tie=tie, **options)
        with torch.no_grad():
            gaps = (r_c - r_r).float()
        return loss, metrics(acc, gaps, tie)

    return loss_fn


# ------------------------------------------------------------------ the trainer
class LengthGroupedTrainer(Trainer):
    """The core Trainer with micro-batches of similar-length examples (``len(example)``).

    Each epoch's permutation (drawn from ``seed + epoch``, padded to the world size as the Trainer
    does) is cut into chunks of :data:`MEGA_BATCHES` global batches; each chunk is sorted by length
    and cut into global batches of ``world_size × batch_size`` examples; the global batches are
    shuffled (the longest first, so a memory limit shows at once) and rank r takes the r-th
    ``batch_size`` slice of each. A global batch holds the same examples for any number of processes."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._lengths = [len(x) for x in self.dataset]

    def _epoch_order(self, epoch: int) -> list[int]:
        n, B, W = len(self.dataset), self.config.batch_size, self.world_size
        g = torch.Generator().manual_seed(self.config.seed + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        total = math.ceil(n / W) * W
        perm = (perm * math.ceil(total / n))[:total]  # padded by repeating, as the Trainer does
        glob = W * B
        usable = total - total % glob  # whole global batches only
        batches = []
        for start in range(0, usable, glob * MEGA_BATCHES):
            chunk = sorted(perm[start:min(start + glob * MEGA_BATCHES, usable)], key=lambda i: -self._lengths[i])
            batches += [chunk[k:k + glob] for k in range(0, len(chunk), glob)]
        order = torch.randperm(len(batches), generator=g).tolist()
        longest = max(range(len(batches)), key=lambda b: self._lengths[batches[b][0]])
        order.remove(longest)
        return [i for b in [longest] + order for i in batches[b][self.rank * B:(self.rank + 1) * B]]


def _world_size() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def steps_for_epochs(config: RewardTrainConfig, num_pairs: int) -> int:
    """Optimizer steps of ``config.epochs`` passes over ``num_pairs`` pairs (at least 1)."""
    per_epoch = math.ceil(num_pairs / _world_size()) // config.batch_size  # micro-batches per rank
    return max(1, math.ceil(config.epochs * per_epoch / config.grad_accum_steps))


# ------------------------------------------------------------------ training
def data_digest(pairs: Sequence[EncodedPair]) -> dict[str, Any]:
    """``{"pairs": n, "sha256": ...}`` of tokenised pairs (token ids, token types, margins, ties): part of a
    run's fingerprint, so a run is continued only on the data it started on."""
    from mmreward.core.checkpoint import data_digest as digest

    return digest(([p.chosen.ids, p.chosen.types, p.rejected.ids, p.rejected.types, p.margin, bool(p.tie)]
                   for p in pairs), unit="pairs")


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability in ``model`` to 0 (attention dropout included: BERT-style
    attention reads its probability from its ``nn.Dropout``). With attention dropout on, CPU
    ``scaled_dot_product_attention`` falls back to its unfused path: MiniLM-L6 training steps ~1.6x slower."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _named_pairs(source: Any, what: str) -> list:
    """load_preference_pairs, its errors naming which argument an in-memory list was (a path names itself)."""
    from mmreward.core.data import DataError

    try:
        return load_preference_pairs(source)
    except DataError as e:
        if isinstance(source, (str, os.PathLike)):
            raise
        raise DataError(f"{what}: {e}") from None


def train_reward_model(model: Any, train_pairs: Any, eval_pairs: Any = None,
                       config: Optional[RewardTrainConfig] = None) -> list[dict]:
    """Train ``model`` (a RewardModel with a tokenizer) on preference pairs; returns the per-step history
    (``loss``, ``accuracy``, ``reward_gap``, ``lr``, ``grad_norm``; ``eval_accuracy`` / ``eval_reward_gap``
    every ``eval_every`` steps and at the end when ``eval_pairs`` is given). ``accuracy`` and
    ``reward_gap`` are over the step's non-tie pairs (NaN for a step of tie pairs only). The final model
    is saved in ``<output_dir>/model/``. Seed (``mmreward.core.train.seed_everything``) before building
    a new head to make the run reproducible. A run that is refused (another run's folder, other data or
    settings) leaves ``model`` as it was."""
    trainer = reward_trainer(model, train_pairs, eval_pairs, config, _depth=1)
    # LoRA folded in (also when stopped mid-run: the snapshot holds the adapters): the model is a plain one
    return trainer.backbone_setup.fit(trainer)


def reward_trainer(model: Any, train_pairs: Any, eval_pairs: Any = None,
                   config: Optional[RewardTrainConfig] = None, *, _depth: int = 0) -> Trainer:
    """The started Trainer of :func:`train_reward_model` (``trainer.start()`` has decided: a fresh run,
    or resumed from the snapshot in ``output_dir``); ``trainer.fit()`` trains. Every refusal (bad data,
    inputs too long for the backbone, a folder whose run cannot be continued) comes before ``model`` is
    changed: its ``max_length``, dropout, LoRA adapters and gradient checkpointing are set only once the
    run is accepted. With ``lora_rank`` the model trains with adapters; ``trainer.backbone_setup.finish()``
    after ``fit()`` folds them into its weights (the saved ``model/`` holds the folded weights either way), and
    ``trainer.backbone_setup.fit(trainer)`` does both, folding them in also when ``fit()`` stops with an error."""
    config = config if config is not None else RewardTrainConfig()
    if not isinstance(config, RewardTrainConfig):
        raise TypeError(f"config must be a RewardTrainConfig, got {type(config).__name__}")
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("the model has no tokenizer: build it with RewardModel.from_backbone(..., tokenizer=...)")
    default_steps = RewardTrainConfig.__dataclass_fields__["max_steps"].default
    if config.epochs is not None and config.max_steps != default_steps:
        # epochs sets max_steps: the max_steps asked for would be replaced without a word (TRL lets max_steps win)
        raise ValueError(f"both epochs ({config.epochs:g}) and max_steps ({config.max_steps}) are set, and epochs sets "
                         "the number of steps: give one of them (--epochs N or --max-steps N)")
    train = _named_pairs(train_pairs, "train_pairs")
    if not train:
        raise ValueError("train_pairs holds no pairs: nothing to train on")
    if all(p.tie for p in train):
        warnings.warn(f"train_pairs holds only tie pairs ({len(train)}): no pair has a preferred response, so the "
                      "run only pulls each pair's rewards together and its accuracy is NaN (RRM ties go beside "
                      "ordinary pairs)", stacklevel=2 + _depth)
    train_names = pair_names(train_pairs, range(len(train)))
    evals = eval_names = None
    if eval_pairs is not None:  # tie pairs are left out of evaluation: errors still name each pair's own row
        loaded = _named_pairs(eval_pairs, "eval_pairs")
        index = [i for i, p in enumerate(loaded) if not p.tie]
        evals, eval_names = [loaded[i] for i in index], pair_names(eval_pairs, index, "eval")
    if evals is not None and not evals:
        raise ValueError("eval_pairs holds no pairs with a preferred response (none, or only tie pairs): nothing "
                         "to measure accuracy on (pass eval_pairs=None, or leave out --eval-data, for no evaluation)")
    if config.loss == "margin" and all(p.margin is None for p in train):
        raise ValueError("loss='margin' but no training pair has a 'margin' field")
    if config.loss == "margin":
        missing = [i for i, p in enumerate(train) if p.margin is None and not p.tie]
        if missing:
            warnings.warn(f"loss='margin': {len(missing)} of {len(train)} training pairs have no 'margin' field "
                          f"(first: pair {missing[0]}); they train with margin 0, as plain Bradley-Terry",
                          stacklevel=2 + _depth)
    if config.loss == "bt" and any(p.margin is not None for p in train):
        warnings.warn("the training pairs have margins but loss='bt' ignores them (use loss='margin')",
                      stacklevel=2 + _depth)
    if config.max_length is not None and hasattr(model, "check_max_length"):  # it would be saved with the model
        model.check_max_length(config.max_length, "max_length (--max-length)")
    old_max_length = model.config.max_length
    if config.max_length is not None:
        model.config.max_length = config.max_length  # the model is saved, scored and evaluated with it
    setup = None
    try:
        setup = BackboneSetup(model, config)
        trainer = _started_trainer(model, train, evals, config, 5 + _depth,  # warnings name the user's call
                                   (train_names, eval_names))
    except BaseException:
        model.config.max_length = old_max_length  # a refused run leaves the model as it was
        if setup is not None:
            setup.undo()
        raise
    trainer.backbone_setup = setup  # finish() after fit(): LoRA merged, checkpointing off
    if config.disable_dropout:
        disable_dropout(model)
    return trainer


def _started_trainer(model: Any, train: list, evals: Optional[list], config: RewardTrainConfig,
                     stacklevel: int, names: tuple = (None, None)) -> Trainer:
    train_names = names[0] or [f"training pair {i}" for i in range(len(train))]
    eval_names = names[1] or ([f"eval pair {i}" for i in range(len(evals))] if evals is not None else None)
    data = encode_pairs(model.encoder, train, stacklevel=stacklevel, names=train_names)
    if all(p.chosen.ids == p.rejected.ids and p.chosen.types == p.rejected.types for p in data):
        # every reward of a pair is computed from the same tokens: zero gradient, the run trains on nothing
        from mmreward.core.data import DataError

        raise DataError(f"train_pairs: in all {len(data)} pairs the chosen and rejected inputs are the same tokens "
                        f"(equal texts, or texts that differ only where truncation to max_length="
                        f"{model.encoder.max_length} cuts): no pair tells the model anything, so the run would train "
                        "on nothing (check the data's chosen / rejected fields, or raise max_length)")
    if hasattr(model, "check_fits"):  # before any step: the backbone's own error would name no pair
        model.check_fits([p.chosen for p in data] + [p.rejected for p in data],
                         [f"{name} ({side})" for side in ("chosen", "rejected") for name in train_names])
    world = _world_size()
    per_epoch = math.ceil(len(data) / world) // config.batch_size  # micro-batches per rank in one pass
    if per_epoch == 0:
        raise ValueError(f"train_pairs holds {len(data)} pair(s): fewer than batch_size ({config.batch_size})"
                         + (f" × {world} processes" if world > 1 else "") + ", so no micro-batch of batch_size "
                         "pairs can be formed: lower batch_size (--batch-size)")
    if config.grad_accum_steps > per_epoch:
        warnings.warn(f"grad_accum_steps ({config.grad_accum_steps}) is more than the {per_epoch} micro-batch(es) of "
                      f"{config.batch_size} pairs in one pass over the {len(data)} training pairs: each optimizer "
                      f"step goes over them {config.grad_accum_steps / per_epoch:.3g} times", stacklevel=stacklevel - 2)
    if config.epochs is not None:
        config = dataclasses.replace(config, max_steps=steps_for_epochs(config, len(data)))

    eval_fn = None
    if evals is not None:
        eval_data = encode_pairs(model.encoder, evals, "eval inputs", stacklevel=stacklevel, names=eval_names)
        if hasattr(model, "check_fits"):  # now, not at the first evaluation after training steps
            model.check_fits([p.chosen for p in eval_data] + [p.rejected for p in eval_data],
                             [f"{name} ({side})" for side in ("chosen", "rejected") for name in eval_names])

        def eval_fn(m):
            return pair_metrics(m, eval_data, batch_size=config.eval_batch_size)

    trainer_class = LengthGroupedTrainer if config.group_by_length else Trainer
    inputs = {k: v for k, v in config_to_dict(model.config).items() if k != "backbone"}  # layout and truncation
    # a resume must tokenise and order the pairs as the run it continues did (and a finished run must not
    # re-save its model under other input settings)
    run_inputs = {"reward_model": inputs, "group_by_length": config.group_by_length}
    # ... and train on the same pairs with the same objective: resumed with other data or another loss it
    # would go on silently from weights trained for something else
    resume_inputs = {**run_inputs, "objective": {k: getattr(config, k) for k in ("loss", "label_smoothing", "center_coef")},
                     "data": data_digest(data), **config.adapter_record()}
    trainer = trainer_class(model, config, data, PairCollator(model.pad_id), pairwise_loss_fn(config), eval_fn,
                            settings=run_inputs, resume_settings=resume_inputs, check_saves=True)
    trainer.start()  # resumed, fresh or refused: decided before the model is touched any further
    return trainer

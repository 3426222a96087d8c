"""VisualPRM: a multimodal process reward model scoring each reasoning step with P("+").

Step format (VisualPRM, Wang et al. 2025): a multi-turn chat where the first user turn holds the
image(s), the question and the first step; every later user turn holds one step; after each step the
assistant answers "+" (good) or "-" (bad). A step's score is P(+) from the two label tokens at the
position that predicts the assistant's answer, computed with :func:`mmreward.ops.step_scores` /
:func:`mmreward.ops.step_bce_loss` from a 2-row head (no vocabulary-sized logits). Rows:

    {"images": [img] | "image": img, "question": str, "steps": [str, …], "labels": [float, …]}

``labels`` (training / evaluation only) are Monte-Carlo estimates in [0, 1] (:func:`mc_step_labels`:
the fraction of rollouts continued from the step that reach the right answer; hard label = mc > 0).
A response's score is the mean (or min / max) of its step scores; :meth:`VisualPRM.best_of_n` picks
the best of N candidate step lists; :func:`evaluate_steps` reports step loss and macro-F1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from . import vlm_data as D

REDUCTIONS = ("mean", "min", "max")


@dataclass
class VisualPRMConfig:
    good_token: str = field(default="+", metadata={"help": "assistant answer for a good step (one token)"})
    bad_token: str = field(default="-", metadata={"help": "assistant answer for a bad step (one token)"})
    reduce: str = field(default="mean", metadata={"help": "response score from step scores: mean | min | max"})
    hard_labels: bool = field(default=False, metadata={"help": "train on mc > 0 instead of the soft MC estimate"})
    threshold: float = field(default=0.5, metadata={"help": "P(+) at or above which a step is predicted good"})
    freeze_vision_tower: bool = field(default=False, metadata={"help": "freeze the vision encoder (not the projector)"})
    freeze_projector: bool = field(default=False, metadata={"help": "freeze the vision→language projector"})
    score_batch_size: int = field(default=16, metadata={"help": "responses per forward when scoring"})

    def __post_init__(self) -> None:
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"VisualPRMConfig.reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
        if self.good_token == self.bad_token:
            raise ValueError("VisualPRMConfig: good_token and bad_token must differ")


class VisualPRM(D.VLMPretrainedMixin, nn.Module):
    model_type = "visual_prm"

    def __init__(self, config: VisualPRMConfig, backbone: Any, processor: Any = None):
        """``backbone``: transformers config / local folder / nn.Module. A module or folder with an
        ``lm_head`` (``…ForConditionalGeneration``) seeds the 2-row label head from its "+" / "-" rows."""
        super().__init__()
        self.config, self.processor = config, processor
        rows = None
        if isinstance(backbone, (str, os.PathLike)) and processor is not None:
            backbone = _with_lm_head(backbone)
        if isinstance(backbone, nn.Module) and hasattr(backbone, "lm_head") and processor is not None:
            ids = [self._token_id(t) for t in (config.good_token, config.bad_token)]
            rows = backbone.lm_head.weight.detach()[ids].clone()  # (2, H)
        self.backbone = D.build_backbone(backbone)
        H = D.hidden_size(self.backbone)
        # The two label rows are their own parameters: indexing lm_head.weight would make autograd
        # build a (V, H) gradient (see mmreward.ops.step_reward).
        self.w_good = nn.Parameter(rows[0] if rows is not None else torch.randn(H) * 0.02)
        self.w_bad = nn.Parameter(rows[1] if rows is not None else torch.randn(H) * 0.02)
        self.b_good = nn.Parameter(torch.zeros(()))
        self.b_bad = nn.Parameter(torch.zeros(()))
        D.freeze_vision(self.backbone, vision_tower=config.freeze_vision_tower, projector=config.freeze_projector)

    # -------------------------------------------------------------- tokens / encoding
    def _need_processor(self):
        if self.processor is None:
            raise ValueError("this VisualPRM has no processor: pass processor= to the constructor")
        return self.processor

    def _token_id(self, token: str) -> int:
        ids = self._need_processor().tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"label token {token!r} must be one token, the tokenizer gives {ids}")
        return int(ids[0])

    def _assistant_header(self) -> list[int]:
        """Token ids that open an assistant turn (the generation prompt of the chat template)."""
        proc = self._need_processor()
        msg = [{"role": "user", "content": "x"}]
        full = proc.apply_chat_template(msg, tokenize=False, add_generation_prompt=True)
        base = proc.apply_chat_template(msg, tokenize=False, add_generation_prompt=False)
        if not full.startswith(base) or full == base:
            raise ValueError("cannot find the assistant header of the processor's chat template")
        return proc.tokenizer(full[len(base):], add_special_tokens=False)["input_ids"]

    def encode(self, rows: Sequence[dict], with_labels: bool) -> dict[str, Tensor]:
        """Rows → inputs + ``step_index`` (S, 2) (b, t) of the positions predicting each label,
        ``n_steps`` (B,) and, with labels, ``step_labels`` (S,)."""
        proc, cfg = self._need_processor(), self.config
        good, bad = self._token_id(cfg.good_token), self._token_id(cfg.bad_token)
        texts, imgs, n_steps, labels = [], [], [], []
        for i, row in enumerate(rows):
            steps, lab = _check_row(row, i, with_labels)
            ims = D.row_images(row, i)
            marks = [(cfg.good_token if y > 0 else cfg.bad_token) for y in lab] if with_labels else [cfg.good_token] * len(steps)
            conv = [{"role": "user", "content": f"{row['question']}\n{steps[0]}"}, {"role": "assistant", "content": marks[0]}]
            for s, m in zip(steps[1:], marks[1:]):
                conv += [{"role": "user", "content": s}, {"role": "assistant", "content": m}]
            texts.append(proc.apply_chat_template(D.to_messages(conv, len(ims), f"row {i}"), tokenize=False))
            imgs.append(ims)
            n_steps.append(len(steps))
            labels += lab
        enc = D.encode(proc, texts, imgs)
        ids, header = enc["input_ids"], torch.tensor(self._assistant_header())
        L = header.numel()
        # a label position p: the header right before it and a label token at p
        win = ids.unfold(1, L, 1)[:, : ids.shape[1] - L]  # (B, T-L, L): window starting at t ends at t+L-1
        is_hdr = (win == header).all(-1)
        lab_tok = (ids[:, L:] == good) | (ids[:, L:] == bad)
        hit = is_hdr & lab_tok & enc["attention_mask"][:, L:].bool()  # (B, T-L): label at t+L
        b, t = hit.nonzero(as_tuple=True)
        counts = torch.bincount(b, minlength=len(rows)).tolist()
        for i, (c, k) in enumerate(zip(counts, n_steps)):
            if c != k:
                raise ValueError(f"row {i}: found {c} label positions for {k} steps (the tokenizer merges the label "
                                 f"token with its neighbours, or the text was truncated)")
        enc["step_index"] = torch.stack([b, t + L - 1], dim=1)  # hidden at p-1 predicts the label at p
        enc["n_steps"] = torch.tensor(n_steps)
        if with_labels:
            enc["step_labels"] = torch.tensor(labels, dtype=torch.float32)
        return enc

    # -------------------------------------------------------------- forward / scores
    def forward(self, input_ids: Tensor, attention_mask: Tensor, step_index: Tensor, n_steps: Optional[Tensor] = None,
                step_labels: Optional[Tensor] = None, **vision_inputs):
        """P(+) per step (S,); with ``step_labels`` returns ``(bce_loss, p_good)``."""
        from mmreward.ops import step_bce_loss, step_scores

        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **vision_inputs).last_hidden_state  # (B, T, H)
        kw = dict(b_good=self.b_good, b_bad=self.b_bad, step_index=step_index)
        if step_labels is None:
            return step_scores(h, self.w_good, self.w_bad, **kw)
        y = (step_labels > 0).float() if self.config.hard_labels else step_labels
        loss = step_bce_loss(h, self.w_good, self.w_bad, y, **kw)
        with torch.no_grad():
            p = step_scores(h.detach(), self.w_good.detach(), self.w_bad.detach(), b_good=self.b_good.detach(),
                            b_bad=self.b_bad.detach(), step_index=step_index)
        return loss, p

    @torch.no_grad()
    def step_scores(self, rows: Sequence[dict]) -> list[Tensor]:
        """P(+) of every step, one (K_i,) tensor per row (``labels`` not needed)."""
        if not rows:
            raise ValueError("step_scores: no rows")
        was, dev = self.training, next(self.parameters()).device
        self.eval()
        out: list[Tensor] = []
        bs = self.config.score_batch_size
        for s in range(0, len(rows), bs):
            enc = self.encode(rows[s:s + bs], with_labels=False)
            n = enc.pop("n_steps").tolist()
            p = self(**{k: v.to(dev) for k, v in enc.items()}).cpu()
            out += list(torch.split(p, n))
        self.train(was)
        return out

    def score(self, rows: Sequence[dict], reduce: Optional[str] = None) -> Tensor:  # (N,)
        """Response scores: ``reduce`` (default config.reduce) of each row's step scores."""
        from mmreward.ops import segment_reduce

        reduce = reduce or self.config.reduce
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        per = self.step_scores(rows)
        return segment_reduce(torch.cat(per), torch.tensor([p.numel() for p in per]), reduce=reduce)

    def best_of_n(self, images: Any, question: str, candidates: Sequence[Sequence[str]],
                  reduce: Optional[str] = None) -> tuple[int, Tensor]:
        """Best-of-N: index of the candidate step list with the highest response score, and all scores (N,)."""
        if not candidates:
            raise ValueError("best_of_n: no candidates")
        scores = self.score([{"images": images, "question": question, "steps": list(c)} for c in candidates], reduce)
        return int(scores.argmax()), scores


VisualPRM.config_class = VisualPRMConfig


def _with_lm_head(path):
    """A local VLM folder loaded with its LM head when it has one (to seed the label rows), else the path."""
    if not os.path.isdir(path):
        return path  # build_backbone reports the bad path
    from transformers import AutoModelForImageTextToText

    try:
        return AutoModelForImageTextToText.from_pretrained(path)
    except (ValueError, KeyError, OSError):  # not an image-text-to-text checkpoint: load the base model only
        return path


def _check_row(row: Any, i: int, with_labels: bool) -> tuple[list[str], list[float]]:
    if not isinstance(row, dict):
        raise TypeError(f"row {i}: expected a dict, got {type(row).__name__}")
    if not isinstance(row.get("question"), str):
        raise ValueError(f"row {i}: 'question' must be a string")
    steps = row.get("steps")
    if not isinstance(steps, (list, tuple)) or not steps or not all(isinstance(s, str) for s in steps):
        raise ValueError(f"row {i}: 'steps' must be a non-empty list of strings")
    if not with_labels:
        return list(steps), []
    lab = row.get("labels")
    if not isinstance(lab, (list, tuple)) or len(lab) != len(steps):
        raise ValueError(f"row {i}: 'labels' must be a list with one value per step ({len(steps)})")
    lab = [float(y) for y in lab]
    if any(not (0.0 <= y <= 1.0) for y in lab):  # also rejects NaN
        raise ValueError(f"row {i}: labels must be in [0, 1] (Monte-Carlo estimates), got {lab}")
    return list(steps), lab


# ------------------------------------------------------------------ Monte-Carlo labels
def mc_step_labels(outcomes: Sequence[Sequence[Any]]) -> tuple[list[float], list[int]]:
    """``outcomes[k]``: correctness (bool / 0-1) of the rollouts continued after step k. Returns the
    soft labels (fraction correct) and hard labels (1 if any rollout is correct)."""
    soft = []
    for k, o in enumerate(outcomes):
        if len(o) == 0:
            raise ValueError(f"step {k}: no rollouts")
        soft.append(sum(float(bool(x)) for x in o) / len(o))
    return soft, [int(s > 0) for s in soft]


def monte_carlo_labels(question: str, steps: Sequence[str], rollout_fn: Callable[[str, list[str], int], Sequence[str]],
                       is_correct: Callable[[str], bool], n_rollouts: int = 8) -> tuple[list[float], list[int]]:
    """Label each step by ``n_rollouts`` completions from ``rollout_fn(question, steps[:k+1], n)``
    (your policy; returns final answers), judged by ``is_correct``."""
    if n_rollouts < 1:
        raise ValueError(f"n_rollouts must be >= 1, got {n_rollouts}")
    outcomes = []
    for k in range(len(steps)):
        answers = list(rollout_fn(question, list(steps[:k + 1]), n_rollouts))
        if len(answers) != n_rollouts:
            raise ValueError(f"rollout_fn returned {len(answers)} answers for step {k}, expected {n_rollouts}")
        outcomes.append([is_correct(a) for a in answers])
    return mc_step_labels(outcomes)


# ------------------------------------------------------------------ training / evaluation
def step_macro_f1(pred_good: Tensor, label_good: Tensor) -> float:
    """Mean of the F1 of the good-step class and of the bad-step class."""
    pred_good, label_good = pred_good.bool().flatten(), label_good.bool().flatten()
    if pred_good.shape != label_good.shape or pred_good.numel() == 0:
        raise ValueError(f"step_macro_f1: need equal non-empty shapes, got {tuple(pred_good.shape)} / {tuple(label_good.shape)}")
    f1s = []
    for p, y in ((pred_good, label_good), (~pred_good, ~label_good)):
        tp = float((p & y).sum())
        denom = float(p.sum() + y.sum())
        f1s.append(2 * tp / denom if denom else 1.0)
    return sum(f1s) / 2


class StepCollator:
    def __init__(self, model: VisualPRM):
        self.model = model

    def __call__(self, rows: Sequence[dict]) -> dict[str, Tensor]:
        if not rows:
            raise ValueError("empty batch of step rows")
        return self.model.encode(rows, with_labels=True)


def step_loss_fn(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    loss, p = model(**batch)
    acc = ((p >= 0.5) == (batch["step_labels"] > 0)).float().mean()
    return loss, {"step_accuracy": float(acc)}


@torch.no_grad()
def evaluate_steps(model: VisualPRM, rows: Sequence[dict], batch_size: int = 16) -> dict[str, float]:
    """Held-out step BCE loss (mean over steps), step accuracy and macro-F1 (label good = label > 0)."""
    if not rows:
        raise ValueError("evaluate_steps: no rows")
    was, dev = model.training, next(model.parameters()).device
    model.eval()
    losses, ps, ys = [], [], []
    for s in range(0, len(rows), batch_size):
        batch = {k: v.to(dev) for k, v in model.encode(rows[s:s + batch_size], with_labels=True).items()}
        loss, p = model(**batch)
        losses.append(float(loss) * p.numel())
        ps.append(p.cpu())
        ys.append(batch["step_labels"].cpu())
    model.train(was)
    p, y = torch.cat(ps), torch.cat(ys)
    pred = p >= model.config.threshold
    return {"step_loss": sum(losses) / p.numel(), "step_accuracy": float((pred == (y > 0)).float().mean()),
            "macro_f1": step_macro_f1(pred, y > 0)}


def train_visual_prm(model: VisualPRM, rows: Sequence[dict], config, eval_rows: Optional[Sequence[dict]] = None):
    """Step-BCE training with the shared core Trainer (``config``: TrainConfig); returns the history."""
    from mmreward.core.trainer import Trainer

    if not rows:
        raise ValueError("train_visual_prm: no training rows")
    for i, row in enumerate(rows):
        _check_row(row, i, with_labels=True)
    eval_fn = (lambda m: evaluate_steps(m, eval_rows)) if eval_rows else None
    return Trainer(model, config, rows, StepCollator(model), step_loss_fn, eval_fn=eval_fn).fit()

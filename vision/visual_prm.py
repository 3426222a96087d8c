"""VisualPRM: a multimodal process reward model scoring each reasoning step with P("+").

Step format (VisualPRM, Wang et al. 2025): a multi-turn chat where the first user turn holds the
image(s), the question and the first step; every later user turn holds one step; after each step the
assistant answers "+" (good) or "-" (bad). A step's score is P(+) from the two label tokens at the
position that predicts the assistant's answer, computed with :func:`mmreward.ops.step_scores` /
:func:`mmreward.ops.step_bce_loss` from a 2-row head (no vocabulary-sized logits).

It scores :class:`~mmreward.core.inputs.VisualSteps` (question, steps, images): ``score_parts`` gives
every step's P(+), ``score`` the response score — the mean (or min / max, ``config.reduce``) of its
step scores; :meth:`VisualPRM.best_of_n` picks the best of N candidate step lists. Training rows:

    {"images": [img] | "image": img, "question": str, "steps": [str, …], "labels": [float, …]}

or VisualPRM400K-Raw rows (``steps_with_score``: ``[{"step", "score", …}]``, :func:`published_step_row`).

``labels`` are Monte-Carlo estimates in [0, 1] (:func:`mc_step_labels`: the fraction of rollouts
continued from the step that reach the right answer; hard label = mc > 0);
:func:`evaluate_visual_prm` reports step loss, accuracy and macro-F1.
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from mmreward.core.data import DataError, describe
from mmreward.core.inputs import VisualSteps
from mmreward.core.model import check_batch_size

from . import vlm_data as D
from .scoring import eval_mode, summed_notes
from .vlm_base import VLMScorer

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

    def __post_init__(self) -> None:
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"VisualPRMConfig.reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
        t = self.threshold
        # NaN fails every comparison: it would predict every step bad without a word
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise ValueError(f"VisualPRMConfig.threshold must be a probability in [0, 1], got {t!r}")
        if self.good_token == self.bad_token:
            raise ValueError("VisualPRMConfig: good_token and bad_token must differ")


def label_token_id(processor: Any, token: str) -> int:
    tok = processor.tokenizer
    ids = tok(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"label token {token!r} must be one token, the tokenizer gives {ids}")
    unk = getattr(tok, "unk_token_id", None)
    if unk is not None and int(ids[0]) == unk and token != getattr(tok, "unk_token", None):
        # not in the vocabulary: every unknown word of a step would read as this label (and seed its row)
        raise ValueError(f"label token {token!r} is not in the tokenizer's vocabulary (it becomes the unknown token "
                         f"{getattr(tok, 'unk_token', unk)!r}): choose a token the tokenizer knows")
    return int(ids[0])


def reduce_step_scores(step_scores: Sequence[Tensor], reduce: str = "mean") -> Tensor:
    """Response scores ``(N,)``: ``reduce`` (mean | min | max) of each response's step scores."""
    from mmreward.ops import segment_reduce

    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    step_scores = list(step_scores)
    if not step_scores:
        raise ValueError("reduce_step_scores: no responses (give one tensor of step scores per response)")
    for k, p in enumerate(step_scores):
        # an empty response would reduce to 1.0, the best score ("no step wrong"): Best-of-N would pick it
        if not isinstance(p, Tensor) or p.dim() != 1 or p.numel() == 0:
            got = f"shape {tuple(p.shape)}" if isinstance(p, Tensor) else type(p).__name__
            raise ValueError(f"reduce_step_scores: response {k} must be a non-empty 1-D tensor of step scores "
                             f"(as score_parts gives), got {got}")
    return segment_reduce(torch.cat(list(step_scores)), torch.tensor([p.numel() for p in step_scores]), reduce=reduce)


class VisualPRM(VLMScorer):
    """``score_parts([VisualSteps])`` → P(+) per step; ``score`` → their ``config.reduce``."""

    model_type = "visual_prm"
    config_class = VisualPRMConfig
    input_types = (VisualSteps,)

    def __init__(self, config: VisualPRMConfig, backbone: Any, processor: Any = None):
        """``backbone``: transformers config / local folder / nn.Module. A module or folder with an
        ``lm_head`` (``…ForConditionalGeneration``) seeds the 2-row label head from its "+" / "-" rows."""
        if isinstance(backbone, (str, os.PathLike)) and processor is not None:
            backbone = _with_lm_head(backbone)
        rows = None
        if isinstance(backbone, nn.Module) and hasattr(backbone, "lm_head") and processor is not None:
            ids = [label_token_id(processor, t) for t in (config.good_token, config.bad_token)]
            rows = backbone.lm_head.weight.detach()[ids].clone()  # (2, H)
        super().__init__(config, backbone, processor)
        H = D.hidden_size(self.backbone)
        # The two label rows are their own parameters: indexing lm_head.weight would make autograd
        # build a (V, H) gradient (see mmreward.ops.step_reward).
        self.w_good = nn.Parameter(rows[0] if rows is not None else torch.randn(H) * 0.02)
        self.w_bad = nn.Parameter(rows[1] if rows is not None else torch.randn(H) * 0.02)
        self.b_good = nn.Parameter(torch.zeros(()))
        self.b_bad = nn.Parameter(torch.zeros(()))

    # -------------------------------------------------------------- encoding
    def _assistant_header_text(self) -> str:
        """The text that opens an assistant turn (the generation prompt of the chat template)."""
        proc = self.need_processor()
        msg = [{"role": "user", "content": "x"}]
        full = proc.apply_chat_template(msg, tokenize=False, add_generation_prompt=True)
        base = proc.apply_chat_template(msg, tokenize=False, add_generation_prompt=False)
        if not full.startswith(base) or full == base:
            raise ValueError("cannot find the assistant header of the processor's chat template")
        return full[len(base):]

    def _assistant_header(self) -> list[int]:
        """Token ids that open an assistant turn (the generation prompt of the chat template)."""
        return self.need_processor().tokenizer(self._assistant_header_text(), add_special_tokens=False)["input_ids"]

    def encode(self, items: Sequence[VisualSteps], labels: Optional[Sequence[Sequence[float]]] = None,
               names: Optional[Sequence[str]] = None) -> dict[str, Tensor]:
        """Inputs (+ their step labels) → model inputs + ``step_index`` (S, 2) (b, t) of the positions
        predicting each label, ``n_steps`` (B,) and, with labels, ``step_labels`` (S,). Errors name
        ``names[i]`` (default ``input i``)."""
        proc, cfg = self.need_processor(), self.config
        good, bad = (label_token_id(proc, t) for t in (cfg.good_token, cfg.bad_token))
        if good == bad:  # the label positions could not tell a good step's answer from a bad one's
            raise ValueError(f"label tokens {cfg.good_token!r} and {cfg.bad_token!r} are one token ({good}) to the "
                             "tokenizer: choose two tokens it tells apart")
        names = names or [f"input {i}" for i in range(len(items))]
        texts, imgs, n_steps, flat_labels = [], [], [], []
        for k, (item, name) in enumerate(zip(items, names)):
            steps = _check_steps(item, name)
            lab = list(labels[k]) if labels is not None else None
            ims = D.pil_images(item.images, name)
            # at scoring time "+" is a placeholder: with causal attention it cannot change the score read before it
            marks = [cfg.good_token if y > 0 else cfg.bad_token for y in lab] if lab is not None else [cfg.good_token] * len(steps)
            conv = [{"role": "user", "content": f"{item.question}\n{steps[0]}"}, {"role": "assistant", "content": marks[0]}]
            for s, m in zip(steps[1:], marks[1:]):
                conv += [{"role": "user", "content": s}, {"role": "assistant", "content": m}]
            texts.append(proc.apply_chat_template(D.to_messages(conv, len(ims), name), tokenize=False))
            imgs.append(ims)
            n_steps.append(len(steps))
            flat_labels += lab or []
        enc = D.encode(proc, texts, imgs, names)
        ids, header = enc["input_ids"], torch.tensor(self._assistant_header())
        L = header.numel()
        # a label position p: the header right before it and a label token at p
        win = ids.unfold(1, L, 1)[:, : ids.shape[1] - L]  # (B, T-L, L): window starting at t ends at t+L-1
        is_hdr = (win == header).all(-1)
        lab_tok = (ids[:, L:] == good) | (ids[:, L:] == bad)
        hit = is_hdr & lab_tok & enc["attention_mask"][:, L:].bool()  # (B, T-L): label at t+L
        b, t = hit.nonzero(as_tuple=True)
        counts = torch.bincount(b, minlength=len(items)).tolist()
        for name, c, k in zip(names, counts, n_steps):
            head = self._assistant_header_text() if c != k else ""
            if c > k:  # the text itself holds an assistant header and a label: it would be read as a step's label
                raise DataError(f"{name}: found {c} label positions for {k} steps: its question or a step holds the "
                                f"chat template's assistant header followed by a label token "
                                f"({head + cfg.good_token!r} or {head + cfg.bad_token!r}); remove the chat markup "
                                "from the text")
            if c < k:  # e.g. a template that renders "<think>…</think>" into the last assistant turns (Qwen3)
                raise DataError(f"{name}: found {c} label positions for {k} steps: in the rendered chat a label token "
                                f"({cfg.good_token!r} / {cfg.bad_token!r}) does not directly follow the assistant "
                                f"header {head!r} (the chat template adds text before an assistant reply, or the "
                                "tokenizer merges the label token with the text around it)")
        # label token at t + L; its place among the row's attended tokens (left or right padding)
        place = enc["attention_mask"].cumsum(1)[b, t + L] - 1

        def past(i: int, limit: int) -> str:  # the steps whose label lies past the context
            # M-RoPE backbones: an image's tokens share rotary positions, so a label's position (what the
            # context bounds) is below its place among the tokens; counting places would name steps that fit
            pos = self._rope_positions(enc)
            at = (pos[b, t + L] if pos is not None else place)[b == i].tolist()
            over = [k for k, p in enumerate(at) if p >= limit]
            if not over:
                return f" (every one of its {n_steps[i]} steps is labelled within it; the text after the last is not)"
            return (f" (steps {over[0]}..{n_steps[i] - 1} of its {n_steps[i]}, counted from 0, lie past it)"
                    if over[0] < n_steps[i] - 1 else f" (its last step, step {over[0]} counted from 0, lies past it)")

        self.check_context(enc, names, past)
        enc["step_index"] = torch.stack([b, t + L - 1], dim=1)  # hidden at p-1 predicts the label at p
        enc["n_steps"] = torch.tensor(n_steps)
        if labels is not None:
            enc["step_labels"] = torch.tensor(flat_labels, dtype=torch.float32)
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

    def _score_parts(self, items: list, batch_size: int) -> list[Tensor]:
        out: list[Tensor] = []
        with summed_notes(()), eval_mode(self), torch.no_grad():  # an animated image: told once per call
            for s in range(0, len(items), batch_size):
                chunk = items[s:s + batch_size]
                enc = self.encode(chunk, names=[f"input {s + k}" for k in range(len(chunk))])
                n = enc.pop("n_steps").tolist()
                p = self(**{k: v.to(self.device) for k, v in enc.items()}).float().cpu()
                out += list(torch.split(p, n))
        return out

    def _score(self, items: list, batch_size: int) -> Tensor:
        return reduce_step_scores(self._score_parts(items, batch_size), self.config.reduce)

    def best_of_n(self, images: Any, question: str, candidates: Sequence[Sequence[str]],
                  reduce: Optional[str] = None, batch_size: Optional[int] = None) -> tuple[int, Tensor]:
        """Best-of-N: index of the candidate step list with the highest response score (``reduce``,
        default ``config.reduce``), and all scores (N,)."""
        if isinstance(candidates, (str, bytes, dict)) or not hasattr(candidates, "__len__"):
            raise TypeError(f"best_of_n: candidates must be a list of candidates (each a list of step strings), got "
                            f"{type(candidates).__name__}")
        if not candidates:
            raise ValueError("best_of_n: no candidates")
        reduce = self.config.reduce if reduce is None else reduce
        if reduce not in REDUCTIONS:  # checked before N candidates are scored, not after ("" is not "the default")
            raise ValueError(f"best_of_n: reduce must be one of {REDUCTIONS} or None (config.reduce), got {reduce!r}")
        steps_of = []
        for k, c in enumerate(candidates):  # list("a step") would score each character as a step
            if isinstance(c, (str, bytes, dict)) or not hasattr(c, "__iter__"):
                raise TypeError(f"best_of_n: candidate {k} must be a list of step strings, got {type(c).__name__} "
                                f"{str(c)[:40]!r} (a one-step candidate is [text]; split a solution into its steps, "
                                "e.g. text.split('\\n\\n'))")
            c = list(c)
            if not c:
                raise ValueError(f"best_of_n: candidate {k} has no steps (give at least one step string)")
            for j, s in enumerate(c):
                if not isinstance(s, str):
                    raise TypeError(f"best_of_n: candidate {k} step {j} must be a string, got {describe(s)}")
            steps_of.append(c)
        parts = self.score_parts([VisualSteps(question, c, images) for c in steps_of], batch_size=batch_size)
        scores = reduce_step_scores(parts, reduce)
        return int(scores.argmax()), scores


def _with_lm_head(path):
    """A local VLM folder loaded with its LM head when it has one (to seed the label rows), else the path."""
    if not os.path.isdir(path):
        return path  # build_backbone reports the bad path
    from transformers import AutoModelForImageTextToText

    try:
        return AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=False)
    except (ValueError, KeyError, OSError):  # not an image-text-to-text checkpoint: load the base model only
        return path


def _check_steps(item: VisualSteps, name: str) -> list[str]:
    if not isinstance(item.question, str):
        raise DataError(f"{name}: field 'question' must be a string, got {describe(item.question)}")
    steps = item.steps
    if not isinstance(steps, (list, tuple)) or not steps or not all(isinstance(s, str) for s in steps):
        raise DataError(f"{name}: field 'steps' must be a non-empty list of strings, got {describe(steps)}")
    return list(steps)


@dataclass
class LabelledSteps:
    """A VisualPRM training row: the input and one label in [0, 1] per step."""

    input: VisualSteps
    labels: list
    name: str = field(default="row", compare=False)  # where it came from, for error messages

    @classmethod
    def from_record(cls, row: Any, where: str = "row") -> "LabelledSteps":
        if isinstance(row, cls):
            return row
        row = published_step_row(row, where)  # VisualPRM400K-Raw rows; its conversation rows refused naming the fields
        item = VisualSteps.from_record(row, where)
        D.check_image_files(item.images, where)
        n = len(_check_steps(item, where))
        lab = row.get("labels")
        if getattr(lab, "ndim", None) == 1 and hasattr(lab, "tolist"):  # a numpy / torch vector (pandas, datasets)
            lab = lab.tolist()
        if not isinstance(lab, (list, tuple)) or len(lab) != n:
            raise DataError(f"{where}: field 'labels' must be a list with one value per step ({n}), got {describe(lab)}")
        # numbers.Real: numpy's float32 / int64 labels too (not a bool; numpy's bool_ is no numbers.Real)
        if not all(isinstance(y, numbers.Real) and not isinstance(y, bool) and 0.0 <= y <= 1.0 for y in lab):
            raise DataError(f"{where}: field 'labels' must hold numbers in [0, 1] (Monte-Carlo estimates), got {lab}")
        return cls(item, [float(y) for y in lab], where)


def published_step_row(row: Any, where: str = "row") -> Any:
    """A step row of a published layout -> mmreward's ``{"image(s)", "question", "steps", "labels"}`` (other rows
    are returned as they are):

    * VisualPRM400K-Raw (``OpenGVLab/VisualPRM400K-Raw``, ``-v1.1-Raw``; VL-PRM300K has the same field):
      ``steps_with_score``, a list of ``{"step": str, "score": mc, "num_mc_correct", "num_mc_total"}`` -> the steps
      and their Monte-Carlo labels (``score``; ``num_mc_correct / num_mc_total`` when a step has no score);
    * VisualPRM400K's conversation rows (steps rendered as user turns answered "+" / "-", the question and the
      first step in one turn) hold no question apart from the first step: refused, naming the fields to give."""
    if not isinstance(row, dict) or "steps" in row:
        return row
    if "conversations_chosen" in row or ("chosen" in row and "rejected" in row):  # said only "missing 'question'"
        raise DataError(f"{where}: a preference row (chosen / rejected): a VisualPRM is trained and evaluated on step "
                        "rows (image(s), question, steps, labels); preference rows are for a VLM reward model "
                        "(train_vlm_reward, mmreward vision train-vlm-rm)")
    if "steps_with_score" not in row:
        if "conversations" in row and "question" not in row:
            raise DataError(f"{where}: a conversation row (VisualPRM400K's steps as turns answered '+' / '-') does "
                            "not separate the question from its first step: give fields image(s), question, steps, "
                            "labels (VisualPRM400K-Raw rows with steps_with_score are read as they are)")
        return row
    scored = row["steps_with_score"]
    if hasattr(scored, "tolist") and not isinstance(scored, (list, tuple)):  # a list column read by pandas / pyarrow
        scored = scored.tolist()
    if not isinstance(scored, (list, tuple)) or not scored:
        raise DataError(f"{where}: field 'steps_with_score' must be a non-empty list of {{'step', 'score'}} objects, "
                        f"got {describe(scored)}")
    if "labels" in row:  # two sources of labels: which one is meant?
        raise DataError(f"{where}: fields 'labels' and 'steps_with_score' both label the steps: give one of them")
    steps, labels = [], []
    for k, s in enumerate(scored):
        if not isinstance(s, dict) or not isinstance(s.get("step"), str):
            raise DataError(f"{where}: field 'steps_with_score': item {k} must be an object with a 'step' string, "
                            f"got {describe(s)}")
        score = s.get("score")
        if score is None and s.get("num_mc_total"):  # the estimate from its counts
            correct, total = s.get("num_mc_correct"), s.get("num_mc_total")
            score = correct / total if isinstance(correct, numbers.Real) and isinstance(total, numbers.Real) else None
        if isinstance(score, bool) or not isinstance(score, numbers.Real):
            raise DataError(f"{where}: field 'steps_with_score': item {k} needs a 'score' number (its Monte-Carlo "
                            f"estimate in [0, 1]), got {describe(s.get('score'))}")
        steps.append(s["step"])
        labels.append(score)
    return {**{k: v for k, v in row.items() if k != "steps_with_score"}, "steps": steps, "labels": labels}


def as_labelled(rows: Sequence[Any], what: str = "rows") -> list[LabelledSteps]:
    """Step rows (dicts or :class:`LabelledSteps`) → labelled inputs; a bad row raises DataError naming it."""
    if isinstance(rows, (str, bytes, dict)) or not hasattr(rows, "__iter__"):  # a path / one row: not a row list
        raise TypeError(f"{what} must be a list of step rows (dicts or LabelledSteps), got {type(rows).__name__}"
                        + (" (read a file's rows with mmreward.vision.cli.read_rows(path))" if isinstance(rows, str) else ""))
    rows = list(rows)  # an iterator / array of rows: its length is known (an empty one is named, not 0 / 0)
    if not rows:
        raise ValueError(f"{what}: no step rows")
    return [LabelledSteps.from_record(r, f"{what}: row {i}") for i, r in enumerate(rows)]


# ------------------------------------------------------------------ Monte-Carlo labels
def mc_step_labels(outcomes: Sequence[Sequence[Any]]) -> tuple[list[float], list[int]]:
    """``outcomes[k]``: correctness (bool / 0-1) of the rollouts continued after step k. Returns the
    soft labels (fraction correct) and hard labels (1 if any rollout is correct)."""
    soft = []
    for k, o in enumerate(outcomes):
        if len(o) == 0:
            raise ValueError(f"step {k}: no rollouts")
        soft.append(sum(_outcome(x, k, j) for j, x in enumerate(o)) / len(o))
    return soft, [int(s > 0) for s in soft]


def _outcome(x: Any, step: int, rollout: int) -> float:
    """One rollout's correctness as 1.0 / 0.0: a bool or 0 / 1 (numpy / torch scalars too). Anything else is
    refused: bool("False"), bool("incorrect"), bool(0.5) and bool(NaN) are all True, which would label the step
    good without a word."""
    v = x.item() if hasattr(x, "item") and getattr(x, "ndim", 0) == 0 else x
    if isinstance(v, bool) or (isinstance(v, (int, float)) and v in (0, 1)):
        return float(v)
    raise ValueError(f"step {step}, rollout {rollout}: an outcome must be True / False (or 1 / 0), got {x!r} (is_correct "
                     "must return a bool)")


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
    """Labelled inputs → one batch with ``step_labels``."""

    def __init__(self, model: VisualPRM):
        self.model = model

    def __call__(self, examples: Sequence[LabelledSteps]) -> dict[str, Tensor]:
        if not examples:
            raise ValueError("empty batch of step rows")
        return self.model.encode([e.input for e in examples], [e.labels for e in examples], [e.name for e in examples])


def step_loss_fn(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    loss, p = model(**batch)
    # the same rule as evaluate_visual_prm: predicted good = P(+) >= config.threshold (not a fixed 0.5)
    threshold = getattr(getattr(model, "module", model), "config").threshold
    acc = ((p >= threshold) == (batch["step_labels"] > 0)).float().mean()
    return loss, {"step_accuracy": float(acc)}


EVAL_BATCH_SIZE = 16  # evaluate_visual_prm's default, as train_visual_prm's eval_fn calls it


@torch.no_grad()
def evaluate_visual_prm(model: VisualPRM, rows: Sequence[Any], batch_size: int = EVAL_BATCH_SIZE) -> dict[str, float]:
    """Held-out step BCE loss (mean over steps), step accuracy and macro-F1 (label good = label > 0; predicted
    good = P(+) >= ``config.threshold``), all over every step of every row. A NaN P(+) is an error naming its
    row and step (it would fail the threshold and count as a "bad" prediction silently)."""
    check_batch_size(batch_size)
    examples = as_labelled(rows, "eval rows")
    collate = StepCollator(model)
    losses, ps, ys = [], [], []
    with eval_mode(model):
        for s in range(0, len(examples), batch_size):
            chunk = examples[s:s + batch_size]
            batch = {k: v.to(model.device) for k, v in collate(chunk).items()}
            loss, p = model(**batch)
            _check_step_scores(p, chunk)
            losses.append(float(loss) * p.numel())
            ps.append(p.cpu())
            ys.append(batch["step_labels"].cpu())
    p, y = torch.cat(ps), torch.cat(ys)
    pred = p >= model.config.threshold
    return {"step_loss": sum(losses) / p.numel(), "step_accuracy": float((pred == (y > 0)).float().mean()),
            "macro_f1": step_macro_f1(pred, y > 0)}


def _check_step_scores(p: Tensor, chunk: Sequence[LabelledSteps]) -> None:
    bad = (~torch.isfinite(p)).nonzero().flatten().tolist()
    if bad:
        n = [len(e.labels) for e in chunk]
        k, row = bad[0], 0
        while k >= n[row]:
            k, row = k - n[row], row + 1
        raise ValueError(f"{chunk[row].name}: the model gave step {k} (counted from 0) a P(+) of {float(p[bad[0]])}; "
                         "a NaN score cannot be thresholded into a step prediction")


def train_visual_prm(model: VisualPRM, rows: Sequence[Any], config, eval_rows: Optional[Sequence[Any]] = None):
    """Step-BCE training with the shared core Trainer (``config``: TrainConfig); returns the history
    (``eval_step_loss`` / ``eval_step_accuracy`` / ``eval_macro_f1`` on ``eval_rows`` when given). The
    final model is saved to ``<output_dir>/model``. A resume (``config.resume``) must use the same
    objective (label tokens, ``hard_labels``, freeze settings), the same rows (question, steps,
    labels, images) and the same processor, else it is refused naming what differs."""
    from mmreward.core.model import config_to_dict
    from mmreward.core.trainer import Trainer

    examples = as_labelled(rows, "rows")
    held = as_labelled(eval_rows, "eval rows") if eval_rows else None
    eval_fn = (lambda m: evaluate_visual_prm(m, held)) if held else None
    cfg = config_to_dict(model.config)
    # what is learned: resumed with other labels / label tokens / frozen parts or other rows it would go on
    # silently from weights trained for something else (reduce and threshold only read the scores: free)
    objective = {k: cfg[k] for k in ("good_token", "bad_token", "hard_labels", "freeze_vision_tower", "freeze_projector")}
    resume = {"objective": {"loss": "step_bce", **objective}, "data": data_digest(examples),
              "processor": D.processor_fingerprint(model.need_processor())}
    collate = StepCollator(model)
    def build(adapters: dict) -> Trainer:
        return Trainer(model, config, examples, collate, step_loss_fn, eval_fn=eval_fn,
                       settings={"visual_prm": cfg}, resume_settings={**resume, **adapters}, check_saves=True)

    return model.fit_with_adapters(config, build, examples, held, collate, EVAL_BATCH_SIZE)


def check_steps_fit(model: VisualPRM, examples: Sequence[LabelledSteps],
                    eval_examples: Optional[Sequence[LabelledSteps]] = None, batch_size: int = 16) -> None:
    """Encode every training and held-out step row once, as their batches will be, before training starts:
    a row past the backbone's context (or whose label tokens the tokenizer merges) is refused naming it,
    the steps past the context and the lengths before step 1 (see :meth:`VLMScorer.check_rows_fit`)."""
    model.check_rows_fit(examples, StepCollator(model), batch_size, eval_examples, EVAL_BATCH_SIZE)


def data_digest(examples: Sequence[LabelledSteps]) -> dict[str, Any]:
    """Digest of step rows: question, steps, labels and images (file bytes / pixels)."""
    from .vlm_rm import rows_digest

    return rows_digest(examples, lambda e: ([e.input.question, list(e.input.steps), list(e.labels)], [e.input.images]))

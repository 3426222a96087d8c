"""PRM evaluation: the ProcessBench protocol and step-level macro-F1.

ProcessBench (Zheng et al. 2024): each sample has a label = index of its first wrong step, or −1
when the whole solution is right. A PRM predicts the first step whose score falls below a threshold
(−1 if none). As in the official evaluation (QwenLM/ProcessBench ``code/run_eval.py``, lines 117–130),
per subset: accuracy on the erroneous samples (prediction == label), accuracy on the correct
samples (prediction == −1), F1 = their harmonic mean; :func:`processbench_report` gives every
subset and the mean F1 over subsets. Data without erroneous (or without correct) samples has no
accuracy on that side: it and the F1 are NaN with a ``note`` (and a warning), never 0. :func:`processbench_sweep` also reports the best threshold —
choose it on a validation split and report the held-out F1 at that threshold, not the sweep's
maximum on test.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Optional, Sequence

import torch

from mmreward.ops import first_below

__all__ = ["processbench_f1", "predict_first_error", "processbench_sweep", "processbench_report", "step_macro_f1",
           "DEFAULT_THRESHOLDS"]

DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 … 0.95


def _first_errors(values: Sequence, what: str, allow_none: bool = False) -> list:
    """``values`` as first-error indices: integers >= −1 (−1: no wrong step). A float, a bool or −2 would
    otherwise be counted silently (1.5 as an erroneous sample no prediction can match, −2 as a correct one).
    ``allow_none``: None (a critic's verdict that could not be parsed) is kept."""
    if isinstance(values, torch.Tensor):  # a tensor of indices: its items are 0-d tensors, not integers
        if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
            raise ValueError(f"{what} must hold step indices (integers), got a {values.dtype} tensor")
        values = values.reshape(-1).tolist()
    out = []
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor) and v.numel() == 1 and not (v.dtype.is_floating_point or v.dtype == torch.bool):
            v = int(v.item())
        if v is None and allow_none:
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < -1:
            raise ValueError(f"{what}[{i}] must be a step index (an integer >= 0) or -1 (no wrong step), got {v!r}")
        out.append(int(v))
    return out


NAN = float("nan")


def processbench_f1(pred: Sequence[int], label: Sequence[int]) -> dict:
    """``acc_error`` (exact first-error match on erroneous samples), ``acc_correct`` (−1 predicted on
    correct samples), ``f1`` = their harmonic mean. A side with no samples has no accuracy: it is NaN,
    as is the F1, and ``note`` says which side is missing (the official script would divide by zero; a 0
    would read as a PRM that gets every such sample wrong). Commands print NaN as ``null``.

    A ``None`` prediction (a critic model's answer with no parsable step index) is a miss on either side,
    as in the official ``run_eval.py`` (``None == label`` is false), and ``n_invalid`` counts them."""
    if len(pred) != len(label):
        raise ValueError(f"pred ({len(pred)}) and label ({len(label)}) have different lengths")
    if not len(label):
        raise ValueError("processbench_f1: no samples")
    pred, label = _first_errors(pred, "pred", allow_none=True), _first_errors(label, "label")
    err = [(p, y) for p, y in zip(pred, label) if y >= 0]
    ok = [(p, y) for p, y in zip(pred, label) if y < 0]
    acc_e = sum(p == y for p, y in err) / len(err) if err else NAN
    acc_c = sum(p == -1 for p, _ in ok) / len(ok) if ok else NAN
    out = {"acc_error": acc_e, "acc_correct": acc_c, "n_error": len(err), "n_correct": len(ok)}
    n_invalid = sum(p is None for p in pred)
    if n_invalid:
        out["n_invalid"] = n_invalid
    if not (err and ok):
        missing = "erroneous samples (label >= 0)" if not err else "correct samples (label -1)"
        out["f1"] = NAN
        out["note"] = f"no {missing}: {'acc_error' if not err else 'acc_correct'} and f1 are undefined (NaN)"
    else:
        out["f1"] = 2 * acc_e * acc_c / (acc_e + acc_c) if acc_e + acc_c > 0 else 0.0
    return {k: out[k] for k in ("acc_error", "acc_correct", "f1", "n_error", "n_correct", "n_invalid", "note")
            if k in out}


def _undefined_warning(where: str, note: str) -> None:
    warnings.warn(f"ProcessBench {where}: {note}", stacklevel=3)


def _step_tensors(step_scores: Sequence) -> list:
    """``step_scores`` as a list with one entry per sample (each checked to be a 1-D tensor by :func:`_pack`)."""
    if isinstance(step_scores, (str, bytes, dict)) or not hasattr(step_scores, "__len__"):
        raise TypeError(f"step scores must be a list with one 1-D tensor per sample, got {type(step_scores).__name__}")
    return list(step_scores)


def _pack(step_scores: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    step_scores = _step_tensors(step_scores)
    for i, s in enumerate(step_scores):
        if not isinstance(s, torch.Tensor) or s.dim() != 1:
            hint = (" (a list of numbers, as `prm score` writes step_scores: torch.tensor([float('nan') if x is None "
                    "else x for x in row]))" if isinstance(s, (list, tuple)) else "")
            raise ValueError(f"sample {i}: step scores must be a 1-D tensor, got {getattr(s, 'shape', type(s))}{hint}")
    values = torch.cat([s.detach().float().cpu() for s in step_scores]) if step_scores else torch.zeros(0)
    lengths = torch.tensor([s.numel() for s in step_scores], dtype=torch.long)
    return values, lengths


def predict_first_error(step_scores: Sequence[torch.Tensor], threshold: float = 0.5) -> list[int]:
    """First step with score < ``threshold`` per sample (−1 if none), via the ``first_below`` op. A step
    left unscored (NaN: past the PRM's ``max_length`` with ``truncate=True``) is never the predicted one."""
    values, lengths = _pack(step_scores)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise ValueError(f"predict_first_error: threshold must be a finite number, got {threshold!r}")
    values = torch.where(torch.isnan(values), torch.full_like(values, float(threshold)), values)  # not < threshold
    return first_below(values, lengths, threshold=threshold).tolist()


def _check_labels(step_scores: Sequence[torch.Tensor], labels: Sequence[int]) -> list[int]:
    """``labels`` checked against the samples: first-error indices within each sample's steps, or −1."""
    step_scores = _step_tensors(step_scores)
    if len(step_scores) != len(labels):
        raise ValueError(f"{len(step_scores)} score lists but {len(labels)} labels")
    _pack(step_scores)
    labels = _first_errors(labels, "labels")
    for i, (s, y) in enumerate(zip(step_scores, labels)):
        if y >= s.numel():
            raise ValueError(f"sample {i}: first-error label {y} but only {s.numel()} steps")
    return labels


def processbench_sweep(step_scores: Sequence[torch.Tensor], labels: Sequence[int],
                       thresholds: Optional[Sequence[float]] = None) -> dict:
    """F1 at every threshold; ``best`` = the threshold with the highest F1 and its metrics."""
    if isinstance(thresholds, (str, bytes, numbers.Number)) or (thresholds is not None and not hasattr(thresholds, "__iter__")):
        # tuple(0.5) failed with "'float' object is not iterable"; tuple("0.5") swept '0', '.', '5'
        raise TypeError(f"processbench_sweep: thresholds must be a list of numbers (or None: {DEFAULT_THRESHOLDS[0]} "
                        f"… {DEFAULT_THRESHOLDS[-1]}), got {thresholds!r}; for one threshold use processbench_report")
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else tuple(thresholds)
    step_scores = _step_tensors(step_scores)
    if not thresholds:
        raise ValueError("processbench_sweep: thresholds is empty")
    labels = _check_labels(step_scores, labels)
    sweep = {t: processbench_f1(predict_first_error(step_scores, t), labels) for t in thresholds}
    defined = [t for t in thresholds if not math.isnan(sweep[t]["f1"])]
    if not defined:  # one side has no samples: F1 is undefined at every threshold, no best one
        note = sweep[thresholds[0]]["note"]
        _undefined_warning("sweep", note + "; no best threshold")
        return {"sweep": {str(t): m for t, m in sweep.items()}, "best_threshold": None, "best": None,
                "note": note + "; no best threshold"}
    best_t = max(defined, key=lambda t: sweep[t]["f1"])
    return {"sweep": {str(t): m for t, m in sweep.items()}, "best_threshold": best_t, "best": sweep[best_t]}


def processbench_report(step_scores: Sequence[torch.Tensor], labels: Sequence[int],
                        subsets: Optional[Sequence[str]] = None, threshold: float = 0.5) -> dict:
    """The ProcessBench table: per subset ``acc_error`` / ``acc_correct`` / ``f1`` (fractions; the paper
    prints them ×100) and ``n_error`` / ``n_correct``, and ``average_f1``, the mean F1 over subsets.
    Samples with an empty subset name are grouped as ``"all"`` (``subsets=None``: every sample)."""
    step_scores = _step_tensors(step_scores)
    if subsets is None:
        subsets = [""] * len(step_scores)
    elif isinstance(subsets, (bytes, dict)) or not hasattr(subsets, "__len__"):
        raise TypeError(f"processbench_report: subsets must be a list of subset names (or None), got "
                        f"{type(subsets).__name__}")
    elif isinstance(subsets, str):  # one name for every sample, not one character per sample
        subsets = [subsets] * len(step_scores)
    if not len(step_scores) == len(labels) == len(subsets):
        raise ValueError(f"{len(step_scores)} score lists, {len(labels)} labels, {len(subsets)} subsets")
    labels = _check_labels(step_scores, labels)
    pred = predict_first_error(step_scores, threshold)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(subsets):
        groups.setdefault(name or "all", []).append(i)
    table = {name: processbench_f1([pred[i] for i in idx], [labels[i] for i in idx]) for name, idx in groups.items()}
    return processbench_table(table, threshold)


def processbench_table(table: dict, threshold: float) -> dict:
    """The report of per-subset ProcessBench metrics (``processbench_f1`` each): ``average_f1`` over the subsets
    whose F1 is defined, and a ``note`` (and warning) naming those whose F1 is NaN."""
    defined = [m["f1"] for m in table.values() if not math.isnan(m["f1"])]
    out = {"threshold": threshold, "subsets": table,
           "average_f1": sum(defined) / len(defined) if defined else NAN}
    undefined = [name for name, m in table.items() if math.isnan(m["f1"])]
    if undefined:
        out["note"] = (f"F1 undefined (NaN) for subset(s) {', '.join(map(repr, undefined))}, which lack erroneous or "
                       "correct samples; average_f1 is " + ("over the other subsets" if defined else "undefined"))
        _undefined_warning("report", out["note"])
    return out


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def step_macro_f1(scores: Sequence[float] | torch.Tensor, labels: Sequence[float] | torch.Tensor,
                  threshold: float = 0.5) -> dict[str, float]:
    """Step-level macro-F1: mean of the F1 on correct steps (positive = good) and the F1 on wrong
    steps (positive = bad). Labels: 1/True good, 0/False bad, −100 or None neutral (ignored); soft
    labels are rounded at 0.5. A step is predicted good when its score ≥ ``threshold``. A class absent
    from both labels and predictions (every step good and predicted good) has F1 NaN and the macro-F1 is
    the other class's (scikit-learn's macro average over the classes present)."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise ValueError(f"step_macro_f1: threshold must be a finite number, got {threshold!r}")
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor([-100.0 if v is None else float(v) for v in labels], dtype=torch.float64).reshape(-1)
    if s.numel() != y.numel():
        raise ValueError(f"{s.numel()} scores but {y.numel()} labels")
    if torch.isnan(s).any() or torch.isnan(y).any():
        raise ValueError("step_macro_f1: NaN in scores or labels")
    keep = y != -100
    odd = keep & ((y < 0) | (y > 1))
    if bool(odd.any()):  # e.g. PRM800K ratings (-1 / 0 / +1) passed as labels: -1 would read as bad, 0 as bad too
        i = int(odd.nonzero()[0])
        raise ValueError(f"step_macro_f1: label {float(y[i]):g} of step {i} is not 1 (good), 0 (bad), a soft label in "
                         "[0, 1] or -100 / None (neutral)")
    if not bool(keep.any()):
        raise ValueError("step_macro_f1: every step is neutral / ignored")
    pred, true = (s[keep] >= threshold), (y[keep] >= 0.5)
    tp_g, fp_g = int((pred & true).sum()), int((pred & ~true).sum())
    fn_g, tp_b = int((~pred & true).sum()), int((~pred & ~true).sum())
    # a class that is neither labelled nor predicted has no F1 (0 / 0): NaN, and the macro average is over
    # the other class, as scikit-learn's f1_score(average="macro") does; a 0 there would halve a perfect score
    f1_good = _f1(tp_g, fp_g, fn_g) if tp_g + fp_g + fn_g else NAN
    f1_bad = _f1(tp_b, fn_g, fp_g) if tp_b + fn_g + fp_g else NAN  # for the bad class, false positives are missed good steps
    defined = [f for f in (f1_good, f1_bad) if not math.isnan(f)]
    return {"f1_good": f1_good, "f1_bad": f1_bad, "macro_f1": sum(defined) / len(defined),
            "accuracy": float((pred == true).double().mean())}

"""Position-bias control for pairwise judges: run both orders, average, measure consistency, and
turn pairwise verdicts into RewardBench / RM-Bench figures.

A *pairwise judge* here is any callable ``judge(prompts, first, second) -> Tensor[N]`` giving
P(first ≻ second) in [0, 1], with 0.5 meaning a tie or no verdict, or a judge object (GenRM, GRAM, …),
whose ``judge`` method is used.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from mmreward.core.data import describe

PairJudge = Callable[[Sequence[str], Sequence[str], Sequence[str]], torch.Tensor]

__all__ = ["judge_from_scores", "order_averaged", "both_orders", "swap_consistency", "verdict_prob", "pairwise_judge_accuracy",
           "evaluate_pairs_with_judge", "rmbench_with_judge"]


def _check_p(name: str, p: torch.Tensor) -> torch.Tensor:
    if not isinstance(p, torch.Tensor) or p.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor, got {getattr(p, 'shape', type(p).__name__)}")
    if torch.isnan(p).any() or ((p < 0) | (p > 1)).any():
        raise ValueError(f"{name} must hold probabilities in [0, 1]")
    return p.double()


def order_averaged(p_ab: torch.Tensor, p_ba: torch.Tensor) -> torch.Tensor:
    """P(a ≻ b) averaged over both presentations: ½·(P(first ≻ | a, b) + 1 − P(first ≻ | b, a))."""
    p_ab, p_ba = _check_p("p_ab", p_ab), _check_p("p_ba", p_ba)
    if p_ab.shape != p_ba.shape:
        raise ValueError(f"p_ab {tuple(p_ab.shape)} and p_ba {tuple(p_ba.shape)} differ in shape")
    return 0.5 * (p_ab + 1.0 - p_ba)


def swap_consistency(p_ab: torch.Tensor, p_ba: torch.Tensor) -> float:
    """Fraction of pairs whose decisive verdict names the same response in both orders
    (a tie / no verdict in either order counts as inconsistent)."""
    p_ab, p_ba = _check_p("p_ab", p_ab), _check_p("p_ba", p_ba)
    if p_ab.numel() == 0 or p_ab.shape != p_ba.shape:
        raise ValueError("swap_consistency: need two non-empty tensors of the same shape")
    same = ((p_ab > 0.5) & (p_ba < 0.5)) | ((p_ab < 0.5) & (p_ba > 0.5))
    return float(same.double().mean())


def _pair_judge(judge) -> PairJudge:
    """The pairwise verdict function of ``judge``: a judge object (GenRM, GRAM, RM-R1, …; anything with a
    ``judge(prompts, first, second)`` method) gives that method — calling the module itself would run its
    ``forward`` — and a plain callable is used as is."""
    method = getattr(judge, "judge", None)
    if callable(method) and not isinstance(judge, type):
        return method
    if not callable(judge):
        raise TypeError(f"judge must be a judge object with a judge(prompts, first, second) method or such a "
                        f"callable, got {describe(judge)}")
    return judge


def _judged(judge: PairJudge, prompts: list, first: list, second: list) -> torch.Tensor:
    """``judge(prompts, first, second)`` checked: one probability in [0, 1] per pair (a judge that returns
    logits, or fewer / more values than pairs, would otherwise be scored as if it were right)."""
    p = _check_p("the judge's output", _pair_judge(judge)(prompts, first, second))
    if p.numel() != len(prompts):
        raise ValueError(f"the judge returned {p.numel()} values for {len(prompts)} pairs (want one P(first ≻ second) "
                         "per pair)")
    return p


def both_orders(judge: PairJudge, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> dict:
    """Run ``judge`` on (a, b) and (b, a) in one call; ``{"p": order-averaged P(a ≻ b), "p_ab", "p_ba",
    "consistency"}``."""
    for name, seq in (("prompts", prompts), ("a", a), ("b", b)):
        # a string has a length too: list("abc") would be judged one character per pair
        if isinstance(seq, (str, bytes, dict)) or not hasattr(seq, "__len__") or not hasattr(seq, "__iter__"):
            raise TypeError(f"both_orders: {name} must be a list, got {describe(seq)}")
    n = len(prompts)
    if not (n == len(a) == len(b)) or n == 0:
        raise ValueError(f"both_orders: prompts / a / b must be non-empty and equally long ({n}, {len(a)}, {len(b)})")
    p = _judged(judge, list(prompts) * 2, list(a) + list(b), list(b) + list(a))
    p_ab, p_ba = p[:n], p[n:]
    return {"p": order_averaged(p_ab, p_ba), "p_ab": p_ab, "p_ba": p_ba, "consistency": swap_consistency(p_ab, p_ba)}


def judge_from_scores(score: Callable[[Sequence[str], Sequence[str]], torch.Tensor]) -> PairJudge:
    """A pairwise judge from a pointwise scorer: P(first ≻ second) = 1 / ½ / 0 (float32) by comparing the two scores."""
    def judge(prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> torch.Tensor:
        for name, seq in (("prompts", prompts), ("first", first), ("second", second)):
            # a string (or a dict) has a length too: it would be judged one character (key) per row
            if isinstance(seq, (str, bytes, dict)) or not hasattr(seq, "__len__"):
                raise TypeError(f"judge: {name} must be a list, got {describe(seq)}")
        n = len(prompts)
        if not (n == len(first) == len(second)) or n == 0:
            raise ValueError(f"judge: prompts / first / second must be non-empty and equally long "
                             f"({n}, {len(first)}, {len(second)})")
        s = score(list(prompts) * 2, list(first) + list(second))
        if not isinstance(s, torch.Tensor) or tuple(s.shape) != (2 * n,):  # else compared half against half wrongly
            raise ValueError(f"judge: the scorer returned {tuple(getattr(s, 'shape', ())) or type(s).__name__} for "
                             f"{2 * n} responses (want one score per response)")
        s = s.detach().double().cpu()
        if torch.isnan(s).any():  # NaN compares neither way: the pair would read as a loss for `first`, 0
            i = int(torch.isnan(s).nonzero()[0]) % n
            raise ValueError(f"judge: the scorer gave NaN for pair {i} (first or second response): it cannot be "
                             "compared")
        # float32, as every judge's output (0, ½ and 1 are exact in it)
        return (s[:n] > s[n:]).float() + 0.5 * (s[:n] == s[n:]).float()
    return judge


def verdict_prob(verdicts: Sequence[Optional[str]]) -> torch.Tensor:
    """Letters ``"A"`` / ``"B"`` / ``None`` (no verdict) → P(first ≻ second) = 1 / 0 / 0.5."""
    m = {"A": 1.0, "B": 0.0, None: 0.5}
    bad = [v for v in verdicts if v not in m]
    if bad:
        raise ValueError(f"verdicts must be 'A', 'B' or None, got {bad[0]!r}")
    return torch.tensor([m[v] for v in verdicts], dtype=torch.float64)


def pairwise_judge_accuracy(p_chosen_first: torch.Tensor) -> float:
    """Accuracy with chosen presented as ``a``: wins count 1, ties / no verdicts ½ (RewardBench's tie rule)."""
    p = _check_p("p", p_chosen_first)
    if p.numel() == 0:  # the mean of nothing is NaN: an accuracy no one could read
        raise ValueError("pairwise_judge_accuracy: no verdicts (an empty tensor)")
    return float(((p > 0.5).double() + 0.5 * (p == 0.5).double()).mean())


def evaluate_pairs_with_judge(judge: PairJudge, rows: Sequence[dict], swap: bool = True) -> dict:
    """Pairwise accuracy of a judge on ``{prompt, chosen, rejected}`` rows (a generative verdict counts as a
    pairwise comparison), order-averaged when ``swap``; with the swap-consistency."""
    if isinstance(rows, (dict, str, bytes)):  # one row's keys (a string's characters) were judged as the rows
        raise TypeError(f"evaluate_pairs_with_judge: rows must be a list of {{prompt, chosen, rejected}} rows, got "
                        f"{describe(rows)}" + ("; wrap a single row in a list" if isinstance(rows, dict) else ""))
    if not rows:
        raise ValueError("evaluate_pairs_with_judge: no rows")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("prompt", "chosen", "rejected")):
            raise ValueError(f"row {i}: needs str 'prompt', 'chosen', 'rejected', got {describe(r)}")
    prompts = [r["prompt"] for r in rows]
    ch, rj = [r["chosen"] for r in rows], [r["rejected"] for r in rows]
    if not swap:
        p = _judged(judge, prompts, ch, rj)
        return {"accuracy": pairwise_judge_accuracy(p), "n": len(rows)}
    out = both_orders(judge, prompts, ch, rj)
    return {"accuracy": pairwise_judge_accuracy(out["p"]), "accuracy_chosen_first": pairwise_judge_accuracy(out["p_ab"]),
            "accuracy_chosen_second": pairwise_judge_accuracy(1 - out["p_ba"]), "consistency": out["consistency"],
            "n": len(rows)}


def rmbench_with_judge(judge: PairJudge, items: Sequence[dict], swap: bool = True) -> dict:
    """RM-Bench easy / normal / hard for a pairwise judge: M[i, j] = mean credit of chosen style i against
    rejected style j (win 1, tie ½), summarised as :func:`mmreward.text.eval.rmbench.summarize_matrix`.

    The top-level ``matrix`` / ``easy`` / ``normal`` / ``hard`` / ``avg`` pool all items; ``domains`` gives
    them per item ``domain`` (``"all"`` without one) and ``overall`` the mean over domains with the two
    safety domains pooled into ``safety`` — the paper's figure, as ``evaluate_rmbench``'s ``overall``.
    ``num_ties`` counts the comparisons credited ½."""
    from ..eval.rmbench import DOMAINS, summarize_matrix

    if isinstance(items, (dict, str, bytes)):  # one item's keys would be read as the items
        raise TypeError(f"rmbench_with_judge: items must be a list of RM-Bench items, got {describe(items)}"
                        + ("; wrap a single item in a list" if isinstance(items, dict) else ""))
    if not items:
        raise ValueError("rmbench_with_judge: no items")
    prompts, ca, rb = [], [], []  # 9 cells per item, chosen style i major
    for n, it in enumerate(items):
        texts = lambda k: it.get(k) if isinstance(it.get(k), (list, tuple)) else []  # noqa: E731
        if (not isinstance(it, dict) or not isinstance(it.get("prompt"), str)
                or any(len(texts(k)) != 3 or not all(isinstance(x, str) for x in texts(k)) for k in ("chosen", "rejected"))):
            raise ValueError(f"item {n}: RM-Bench items need 3 chosen and 3 rejected responses (strings) and a "
                             f"str 'prompt', got {describe(it)}")
        for i in range(3):
            for j in range(3):
                prompts.append(it["prompt"])
                ca.append(it["chosen"][i])
                rb.append(it["rejected"][j])
    p = both_orders(judge, prompts, ca, rb)["p"] if swap else _judged(judge, prompts, ca, rb)
    credit = (p > 0.5).double() + 0.5 * (p == 0.5).double()
    per_item = credit.view(len(items), 9)
    m = per_item.mean(0).view(3, 3)
    names = [str(it.get("domain") or "all") for it in items]
    order = DOMAINS + ("safety", "all")
    domains = {}
    for d in sorted(set(names), key=lambda d: (order.index(d) if d in order else 99, d)):
        idx = torch.tensor([i for i, x in enumerate(names) if x == d])
        md = per_item[idx].mean(0).view(3, 3)
        domains[d] = {"matrix": md.tolist(), **summarize_matrix(md), "n": len(idx)}
    paper = {}  # the paper's domains: safety-refuse and safety-response items pooled
    for d in {("safety" if x.startswith("safety") else x) for x in names}:
        idx = torch.tensor([i for i, x in enumerate(names) if ("safety" if x.startswith("safety") else x) == d])
        paper[d] = summarize_matrix(per_item[idx].mean(0).view(3, 3))
    overall = {k: sum(v[k] for v in paper.values()) / len(paper) for k in ("easy", "normal", "hard", "avg")}
    return {"matrix": m.tolist(), **summarize_matrix(m), "domains": domains, "overall": overall,
            "num_ties": int((p == 0.5).sum()), "n": len(items)}

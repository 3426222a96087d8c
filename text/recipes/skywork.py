"""Skywork-Reward data curation (Liu et al., 2024; Skywork-Reward-V2, 2025) as pure functions.

Three filters over preference pairs (dicts with ``prompt`` / ``chosen`` / ``rejected`` strings or
TRL message lists, and an optional category field), each returning the kept pairs in their original order:

* :func:`select_top_by_margin` — per category, keep the top ``fraction`` of pairs by a per-pair
  score: :func:`pair_margins` gives a scorer's margin ``score(chosen) − score(rejected)``. Skywork-Reward
  itself ranked its Magpie pairs per task category by the *average ArmoRM score* the Magpie datasets
  ship (minus 0.1 for Magpie-Air and 0.05 for Magpie-Pro), not by a margin: pass those scores as
  ``margins`` to reproduce that selection;
* :func:`filter_by_reference` — drop pairs a reference RM disagrees with (margin below ``threshold``);
* :func:`decontaminate` — drop pairs sharing a word n-gram (13 by default, as in the GPT-3 /
  Skywork decontamination) with an evaluation set's texts.

:func:`curate` runs them in the order decontaminate → reference filter → top-fraction selection and
returns the kept pairs plus a report of how many each step removed. A scorer is any callable
``(prompts, responses) -> Tensor[N]`` or a reward model scoring ``TextPair`` inputs (e.g. ``RewardModel``).
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import torch

_WORD = re.compile(r"\w+", re.UNICODE)


def _check_pairs(pairs: Sequence[dict], what: str) -> list[dict]:
    """The rows, checked, as explicit prompt / chosen / rejected rows (a TRL implicit-prompt row's conversations
    split into the shared earlier turns and the last turns, as training reads it) for reading; the functions
    here return the caller's own rows."""
    from mmreward.text.data import explicit_prompt_row

    if not isinstance(pairs, (list, tuple)):
        raise TypeError(f"{what}: pairs must be a list of dicts, got {type(pairs).__name__}")
    out = []
    for i, p in enumerate(pairs):
        if not isinstance(p, dict):
            raise TypeError(f"{what}: row {i} is a {type(p).__name__}, expected a dict")
        p = explicit_prompt_row(p, i, what)
        for k in ("prompt", "chosen", "rejected"):
            v = p.get(k)
            if not (isinstance(v, str) or (isinstance(v, list) and all(isinstance(m, dict) for m in v))):
                raise ValueError(f"{what}: row {i}: `{k}` must be a string or a message list, got {type(v).__name__}"
                                 + (" (a row without a prompt needs chosen / rejected conversations of 2+ turns, "
                                    "the earlier turns being the prompt)" if k == "prompt" and v is None else ""))
        out.append(p)
    return out


def _text(value: Any) -> str:
    """A string, or a message list's contents joined (for n-gram matching)."""
    return value if isinstance(value, str) else "\n".join(str(m.get("content", "")) for m in value)


def pair_margins(pairs: Sequence[dict], scorer: Any, *, batch_size: int = 64) -> torch.Tensor:
    """``score(prompt, chosen) − score(prompt, rejected)`` for every pair: float32 [N]."""
    from mmreward.text.eval.rewardbench import score_responses

    pairs = _check_pairs(pairs, "pair_margins")
    if not pairs:
        return torch.empty(0)
    n = len(pairs)
    s = score_responses(scorer, [p["prompt"] for p in pairs] * 2,
                        [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs], batch_size=batch_size)
    return s[:n] - s[n:]


def select_top_by_margin(pairs: Sequence[dict], margins: torch.Tensor, fraction: float, *,
                         category_key: Optional[str] = "category") -> list[dict]:
    """Keep the ``ceil(fraction · n_c)`` pairs with the largest margins in each category c.

    Pairs without ``category_key`` (or with ``category_key=None``) form one category ``None``."""
    _check_pairs(pairs, "select_top_by_margin")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 < fraction <= 1.0:
        raise ValueError(f"select_top_by_margin: fraction must be a number in (0, 1], got {fraction!r}")
    margins = torch.as_tensor(margins, dtype=torch.float64).reshape(-1)
    if margins.numel() != len(pairs):
        raise ValueError(f"select_top_by_margin: {margins.numel()} margins for {len(pairs)} pairs")
    if not torch.isfinite(margins).all():
        raise ValueError(f"select_top_by_margin: margin of row {int((~torch.isfinite(margins)).nonzero()[0, 0])} is not finite")
    groups: dict[Any, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.get(category_key) if category_key else None, []).append(i)
    keep: list[int] = []
    for idx in groups.values():
        k = math.ceil(fraction * len(idx))
        # stable sort: ties keep their input order, so the result is deterministic
        ranked = sorted(idx, key=lambda i: -margins[i].item())
        keep.extend(ranked[:k])
    return [pairs[i] for i in sorted(keep)]


def filter_by_reference(pairs: Sequence[dict], reference: Any, *, threshold: float = 0.0,
                        batch_size: int = 64) -> list[dict]:
    """Drop pairs whose reference-RM margin is ``<= threshold`` (the reference prefers rejected,
    or is not sure enough that chosen is better)."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"filter_by_reference: threshold must be a number, got {threshold!r}")
    if not math.isfinite(threshold):  # NaN: every `margin > NaN` is false, every pair silently dropped
        raise ValueError(f"filter_by_reference: threshold must be a finite number, got {threshold!r}")
    margins = pair_margins(pairs, reference, batch_size=batch_size)
    return [p for p, m in zip(pairs, margins.tolist()) if m > threshold]


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams of ``text`` (punctuation and whitespace ignored). A text shorter
    than ``n`` words yields its whole word sequence as one gram, so short prompts still match."""
    words = _WORD.findall(text.lower())
    if not words:
        return set()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def decontaminate(pairs: Sequence[dict], eval_texts: Iterable[str], *, n: int = 13,
                  fields: Sequence[str] = ("prompt",)) -> tuple[list[dict], list[int]]:
    """Drop pairs whose ``fields`` share a word ``n``-gram with any of ``eval_texts``.

    Returns ``(kept_pairs, removed_row_indices)``. A short text (< n words) is contaminated only by
    an identical short word sequence on the other side (it cannot contain an n-gram)."""
    rows = _check_pairs(pairs, "decontaminate")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"decontaminate: n must be an integer >= 1, got {n!r}")
    if isinstance(eval_texts, (str, bytes)):  # iterated, its characters would be the eval texts
        raise TypeError("decontaminate: eval_texts must be a list of strings, got one string (wrap it in a list)")
    fields = (fields,) if isinstance(fields, str) else tuple(fields)
    if not fields:
        raise ValueError("decontaminate: no fields to check")
    banned: set[tuple[str, ...]] = set()
    for j, t in enumerate(eval_texts):
        if not isinstance(t, str):
            raise TypeError(f"decontaminate: eval text {j} is a {type(t).__name__}, expected str")
        banned |= word_ngrams(t, n)
    kept, removed = [], []
    for i, (p, row) in enumerate(zip(pairs, rows)):
        grams = set()
        for f in fields:
            v = row.get(f)
            if not isinstance(v, (str, list)):
                raise ValueError(f"decontaminate: row {i}: field `{f}` must be a string or a message list")
            grams |= word_ngrams(_text(v), n)
        (removed if grams & banned else kept).append(i if grams & banned else p)
    return kept, removed


@dataclass
class CurationConfig:
    top_fraction: float = field(default=1.0, metadata={"help": "keep this fraction of pairs per category, by scorer margin (1: keep all)"})
    category_key: str = field(default="category", metadata={"help": "pair field holding the category / source"})
    reference_threshold: float = field(default=0.0, metadata={"help": "drop pairs whose reference-RM margin is <= this"})
    ngram: int = field(default=13, metadata={"help": "word n-gram size for decontamination"})
    decontaminate_fields: tuple = field(default=("prompt",), metadata={"help": "pair fields checked against the eval texts"})
    batch_size: int = field(default=64, metadata={"help": "scoring batch size"})

    def __post_init__(self) -> None:
        if isinstance(self.top_fraction, bool) or not (isinstance(self.top_fraction, (int, float))
                                                       and 0.0 < self.top_fraction <= 1.0):
            raise ValueError(f"CurationConfig.top_fraction must be in (0, 1], got {self.top_fraction!r}")
        if isinstance(self.reference_threshold, bool) or not (isinstance(self.reference_threshold, (int, float))
                                                              and math.isfinite(self.reference_threshold)):
            raise ValueError(f"CurationConfig.reference_threshold must be a finite number, got {self.reference_threshold!r}")
        for name in ("ngram", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"CurationConfig.{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.decontaminate_fields, str):
            self.decontaminate_fields = (self.decontaminate_fields,)


def curate(pairs: Sequence[dict], *, scorer: Any = None, reference: Any = None,
           eval_texts: Optional[Iterable[str]] = None, config: Optional[CurationConfig] = None) -> tuple[list[dict], dict]:
    """Skywork-style curation: decontaminate (if ``eval_texts``) → drop pairs ``reference`` disagrees
    with (if given) → keep the top ``config.top_fraction`` per category by ``scorer``'s margin (if
    given and fraction < 1). Returns ``(kept_pairs, report)`` with the count after each step."""
    cfg = config or CurationConfig()
    _check_pairs(pairs, "curate")
    if not pairs:
        raise ValueError("curate: no pairs given")
    if cfg.top_fraction < 1.0 and scorer is None:  # else every pair would be kept without a word
        raise ValueError(f"curate: top_fraction={cfg.top_fraction} keeps the pairs with the largest margins of a "
                         "scorer, but no scorer was given")
    report = {"input": len(pairs)}
    kept = list(pairs)
    if eval_texts is not None:
        kept, removed = decontaminate(kept, eval_texts, n=cfg.ngram, fields=cfg.decontaminate_fields)
        report["after_decontamination"] = len(kept)
    if reference is not None and kept:
        kept = filter_by_reference(kept, reference, threshold=cfg.reference_threshold, batch_size=cfg.batch_size)
        report["after_reference_filter"] = len(kept)
    if scorer is not None and cfg.top_fraction < 1.0 and kept:
        m = pair_margins(kept, scorer, batch_size=cfg.batch_size)
        kept = select_top_by_margin(kept, m, cfg.top_fraction, category_key=cfg.category_key)
        report["after_top_fraction"] = len(kept)
    report["output"] = len(kept)
    return kept, report

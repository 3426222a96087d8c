"""RRM data augmentation (Liu et al., 2024, "RRM: Robust Reward Model Training Mitigates Reward Hacking").

A reward model trained on ``(x, y^w ≻ y^l)`` can learn artifacts that do not depend on the prompt
(length, format). RRM adds, for every example i and two other examples j, k drawn at random among
those with another prompt (a response to the same prompt is no non-contextual negative):

* 8 **non-contextual triplets** — each response of i (``y_i^w`` and ``y_i^l``) preferred over each
  foreign response ``y_j^w, y_j^l, y_k^w, y_k^l``, all with prompt ``x_i``: any response to the
  prompt beats one that answers another prompt, whatever their length or format;
* 6 **tie pairs** among the 4 foreign responses (every unordered pair), prompt ``x_i``, target ½:
  two responses that both ignore the prompt are equally good, so their artifacts must not matter.

Ties are trained with the pairwise op's ``tie`` flag (loss −½·log σ(Δ) − ½·log σ(−Δ)); rows carry
``tie: True`` and ``rrm: "tie"`` (``"triplet"`` / ``"original"`` for the others). The optional
filter (:func:`filter_augmented`) drops augmented rows the current RM already gets right within a
threshold: a triplet when its margin ``r(chosen) − r(rejected) > threshold``, a tie when
``|r(a) − r(b)| < threshold``; original pairs are always kept.
"""
from __future__ import annotations

import json
import math
import numbers
import random
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Optional, Sequence

import torch


@dataclass
class RRMConfig:
    seed: int = field(default=0, metadata={"help": "seed for drawing the two foreign examples j, k of each example"})
    include_original: bool = field(default=True, metadata={"help": "keep the original pairs in the output"})
    triplets: bool = field(default=True, metadata={"help": "add the 8 non-contextual triplets per example"})
    ties: bool = field(default=True, metadata={"help": "add the 6 tie pairs (target 0.5) per example"})
    filter_threshold: Optional[float] = field(default=None, metadata={"help": "drop augmented rows the RM already gets right by this margin (None: keep all)"})

    def __post_init__(self) -> None:
        # random.Random takes any hashable: seed="0" or 1.5 drew other examples than seed 0 / 1, without a word
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f"RRMConfig.seed must be an integer, got {self.seed!r}")
        for name in ("include_original", "triplets", "ties"):  # "False" (a string) was on
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"RRMConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if self.filter_threshold is not None:
            self.filter_threshold = _threshold(self.filter_threshold, "RRMConfig.filter_threshold")


def _threshold(value: Any, name: str) -> float:
    """A filter threshold: a finite number >= 0. NaN would compare false with every margin (every
    triplet and tie kept, nothing said) and inf would drop every tie."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number >= 0, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check(pairs: Sequence[dict]) -> list[dict]:
    """The rows, checked; a TRL implicit-prompt row (whole conversations, no ``prompt``) split into its prompt
    (the earlier turns) and last turns, as training reads it: RRM pairs each prompt with other rows' responses."""
    from mmreward.text.data import explicit_prompt_row

    if not isinstance(pairs, (list, tuple)):
        raise TypeError(f"rrm_augment: pairs must be a list of dicts, got {type(pairs).__name__}")
    if len(pairs) < 3:
        raise ValueError(f"rrm_augment: needs at least 3 pairs (each example draws two others), got {len(pairs)}")
    out = []
    for i, p in enumerate(pairs):
        if not isinstance(p, dict):
            raise TypeError(f"rrm_augment: row {i} is a {type(p).__name__}, expected a dict")
        p = explicit_prompt_row(p, i, "rrm_augment")
        for k in ("prompt", "chosen", "rejected"):
            if p.get(k) is None:
                raise ValueError(f"rrm_augment: row {i} has no `{k}`" + (
                    " (a row without a prompt needs chosen / rejected conversations of 2+ turns, the earlier turns "
                    "being the prompt)" if k == "prompt" else ""))
        if p.get("tie"):
            raise ValueError(f"rrm_augment: row {i} is already a tie; augment the original preference data")
        out.append(p)
    return out


def rrm_augment(pairs: Sequence[dict], config: Optional[RRMConfig] = None) -> list[dict]:
    """Original pairs (optional) + 8 triplets + 6 ties per example, seeded (see module docstring).

    Output rows: ``{prompt, chosen, rejected, tie, rrm}`` (plus ``margin`` on original rows that
    had one). Responses may be strings or message lists; they are copied, not parsed."""
    cfg = config or RRMConfig()
    pairs = _check(pairs)
    if not (cfg.include_original or cfg.triplets or cfg.ties):
        raise ValueError("rrm_augment: include_original, triplets and ties are all off: no rows to make")
    rng = random.Random(cfg.seed)
    n = len(pairs)
    # the foreign responses must answer *another* prompt: a response to the same prompt (data with several
    # pairs per prompt) is no non-contextual negative, and the triplet would teach that it loses to its own
    keys = [_prompt_key(p["prompt"]) for p in pairs]
    sizes = Counter(keys)
    out: list[dict] = []
    for i, p in enumerate(pairs):
        if cfg.include_original:
            row = {"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"], "tie": False, "rrm": "original"}
            if p.get("margin") is not None:
                row["margin"] = p["margin"]
            out.append(row)
        others = n - sizes[keys[i]]
        if others < 2:
            raise ValueError(f"rrm_augment: row {i}'s prompt is shared by {sizes[keys[i]]} of the {n} rows: its "
                             "non-contextual rows need two examples with another prompt")
        if n < 64 or others < n // 4:
            j, k = rng.sample([x for x in range(n) if keys[x] != keys[i]], 2)
        else:
            j, k = _two_others(rng, n, i, keys)
        foreign = [pairs[j]["chosen"], pairs[j]["rejected"], pairs[k]["chosen"], pairs[k]["rejected"]]
        if cfg.triplets:
            for own in (p["chosen"], p["rejected"]):
                for f in foreign:
                    out.append({"prompt": p["prompt"], "chosen": own, "rejected": f, "tie": False, "rrm": "triplet"})
        if cfg.ties:
            for a, b in combinations(foreign, 2):
                out.append({"prompt": p["prompt"], "chosen": a, "rejected": b, "tie": True, "rrm": "tie"})
    return out


def _prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)


def _two_others(rng: random.Random, n: int, i: int, keys: Sequence[str]) -> list[int]:
    """Two distinct indices whose prompt is not row i's, without building the n-element candidate list."""
    while True:
        j, k = rng.randrange(n), rng.randrange(n)
        if len({i, j, k}) == 3 and keys[j] != keys[i] and keys[k] != keys[i]:
            return [j, k]


def filter_augmented(rows: Sequence[dict], scorer: Any, threshold: float, *, batch_size: int = 64) -> list[dict]:
    """Drop augmented rows the RM (``scorer``) already gets right within ``threshold`` (module docstring)."""
    from mmreward.text.eval.rewardbench import score_responses

    threshold = _threshold(threshold, "filter_augmented: threshold")
    aug = [i for i, r in enumerate(rows) if r.get("rrm") in ("triplet", "tie")]
    if not aug:
        return list(rows)
    prompts = [rows[i]["prompt"] for i in aug] * 2
    resp = [rows[i]["chosen"] for i in aug] + [rows[i]["rejected"] for i in aug]
    s = score_responses(scorer, prompts, resp, batch_size=batch_size)
    delta = (s[:len(aug)] - s[len(aug):]).tolist()
    drop = set()
    for i, d in zip(aug, delta):
        solved = abs(d) < threshold if rows[i]["tie"] else d > threshold
        if solved:
            drop.add(i)
    return [r for i, r in enumerate(rows) if i not in drop]


def rrm_dataset(pairs: Sequence[dict], config: Optional[RRMConfig] = None, scorer: Any = None) -> list[dict]:
    """:func:`rrm_augment`, then :func:`filter_augmented` when ``config.filter_threshold`` and a
    ``scorer`` (the current RM) are given."""
    cfg = config or RRMConfig()
    rows = rrm_augment(pairs, cfg)
    if cfg.filter_threshold is not None:
        if scorer is None:
            raise ValueError("rrm_dataset: filter_threshold is set but no scorer (current RM) was given")
        rows = filter_augmented(rows, scorer, cfg.filter_threshold)
    elif scorer is not None:  # the RM was given to filter with, and every augmented row was kept without a word
        raise ValueError("rrm_dataset: a scorer was given but RRMConfig.filter_threshold is None (no filter): set "
                         "filter_threshold to filter with it, or leave the scorer out")
    return rows


def tie_mask(rows: Sequence[dict]) -> torch.Tensor:
    """Bool [N] tie flags of ``rows`` (for ``mmreward.ops.pairwise_loss(..., tie=...)``)."""
    return torch.tensor([bool(r.get("tie", False)) for r in rows], dtype=torch.bool)

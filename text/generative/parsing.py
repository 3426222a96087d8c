"""Parsers that turn a judge's free text into a verdict, or an explicit "no verdict" with the reason.

Every parser takes any string and returns a :class:`Parsed`; none of them raises on model output
(fuzz-tested with hypothesis). Formats, one per method:

* :func:`parse_yes_no` — GenRM: the last standalone ``Yes`` / ``No``.
* :func:`parse_ab` — RM-R1 / GRAM: ``<answer>[[A]]</answer>`` (or a bare ``[[A]]``) in the tail.
* :func:`parse_scores` — DeepSeek-GRM: ``\\boxed{7, 3}`` or ``[[7, 3]]``, one integer per response.
* :func:`parse_score` — Critic-RM: ``Score: 7`` (also ``7/10``).
* :func:`parse_json_object` / :func:`parse_ranking` — RewardAnything: ``{"scores": {...}, "best-to-worst": [...]}``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

__all__ = ["Parsed", "parse_yes_no", "parse_ab", "parse_scores", "parse_score", "parse_json_object",
           "parse_ranking", "RankingParse"]


@dataclass(frozen=True)
class Parsed:
    """A parse result: ``value`` when parsed, else ``None`` and a non-empty ``reason`` ("no verdict")."""
    value: Any = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    @staticmethod
    def fail(reason: str) -> "Parsed":
        return Parsed(None, reason or "no verdict")


def _check_text(text: Any) -> Optional[Parsed]:
    if not isinstance(text, str):
        return Parsed.fail(f"output is {type(text).__name__}, not str")
    if not text.strip():
        return Parsed.fail("empty output")
    return None


_YES_NO = re.compile(r"(?<![A-Za-z0-9_])(yes|no)(?![A-Za-z0-9_])", re.IGNORECASE)


def parse_yes_no(text: str) -> Parsed:
    """``True`` / ``False`` from the last standalone yes / no (case-insensitive): the verdict ends a rationale."""
    bad = _check_text(text)
    if bad:
        return bad
    hits = _YES_NO.findall(text)
    if not hits:
        return Parsed.fail("no Yes/No verdict found")
    return Parsed(hits[-1].lower() == "yes")


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_BRACKET_AB = re.compile(r"\[\[\s*([AB])\s*\]\]")


def parse_ab(text: str, tail_chars: Optional[int] = 400) -> Parsed:
    """``"A"`` / ``"B"`` from the last ``<answer>…</answer>`` holding exactly one of ``[[A]]`` / ``[[B]]``;
    without an answer tag, the last bare ``[[A]]`` / ``[[B]]`` within the final ``tail_chars``
    characters (RM-R1 reads the verdict in the tail of a long rubric). Both letters in the final
    answer is a conflict, not a verdict."""
    bad = _check_text(text)
    if bad:
        return bad
    tags = _ANSWER_TAG.findall(text)
    if tags:
        letters = set(_BRACKET_AB.findall(tags[-1]))
        if not letters:
            # `<answer>A</answer>` without brackets is accepted when that is all the tag holds
            bare = tags[-1].strip().strip("[]").strip()
            if bare in ("A", "B"):
                return Parsed(bare)
            return Parsed.fail("answer tag without [[A]] / [[B]]")
        if len(letters) > 1:
            return Parsed.fail("conflicting verdicts in answer tag")
        return Parsed(letters.pop())
    tail = text if tail_chars is None else text[-tail_chars:]
    hits = _BRACKET_AB.findall(tail)
    if not hits:
        return Parsed.fail("no [[A]] / [[B]] verdict in the tail")
    return Parsed(hits[-1])


_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_DOUBLE = re.compile(r"\[\[([^\[\]]*)\]\]")
_INT = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_scores(text: str, n: int, low: int = 1, high: int = 10) -> Parsed:
    """``n`` integer scores in ``[low, high]`` from the last ``\\boxed{…}`` or ``[[…]]`` group
    (DeepSeek-GRM's "Final Scores"). Wrong count, non-integers or out-of-range values are no verdict."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"parse_scores: n must be a positive int, got {n!r}")
    bad = _check_text(text)
    if bad:
        return bad
    groups = _BOXED.findall(text) + []  # boxed wins over brackets (the paper's format)
    if not groups:
        groups = _DOUBLE.findall(text)
    if not groups:
        return Parsed.fail("no \\boxed{...} or [[...]] score group")
    nums = _INT.findall(groups[-1])
    if len(nums) != n:
        return Parsed.fail(f"expected {n} scores, found {len(nums)}")
    vals = []
    for s in nums:
        v = float(s)
        if v != int(v):
            return Parsed.fail(f"non-integer score {s}")
        if not low <= v <= high:
            return Parsed.fail(f"score {s} outside [{low}, {high}]")
        vals.append(int(v))
    return Parsed(vals)


_SCORE_LINE = re.compile(r"score\s*[:=]?\s*\**\s*([-+]?\d+(?:\.\d+)?)", re.IGNORECASE)
_OVER = re.compile(r"([-+]?\d+(?:\.\d+)?)\s*/\s*10(?!\d)")


def parse_score(text: str, low: float = 1, high: float = 10) -> Parsed:
    """One number in ``[low, high]`` from the last ``Score: x`` (else the last ``x/10``)."""
    bad = _check_text(text)
    if bad:
        return bad
    hits = _SCORE_LINE.findall(text) or _OVER.findall(text)
    if not hits:
        return Parsed.fail("no 'Score: x' found")
    v = float(hits[-1])
    if not low <= v <= high:
        return Parsed.fail(f"score {hits[-1]} outside [{low}, {high}]")
    return Parsed(v)


def parse_json_object(text: str) -> Parsed:
    """The last top-level JSON object in the text (code fences and prose around it are ignored)."""
    bad = _check_text(text)
    if bad:
        return bad
    dec = json.JSONDecoder()
    found = None
    i = text.find("{")
    while i != -1:
        try:
            obj, end = dec.raw_decode(text, i)
        except (ValueError, RecursionError):
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found = obj
        i = text.find("{", end)
    if found is None:
        return Parsed.fail("no valid JSON object")
    return Parsed(found)


@dataclass(frozen=True)
class RankingParse:
    """RewardAnything output checked field by field (the format reward reads these flags)."""
    scores: dict = field(default_factory=dict)     # name -> float, names that were scored
    ranking: list = field(default_factory=list)    # best-to-worst names as given
    is_json: bool = False
    all_scored: bool = False       # a numeric score for every response name, no unknown names
    ranking_complete: bool = False  # best-to-worst is a permutation of the names
    consistent: bool = False       # ranking order does not contradict the scores


def parse_ranking(text: str, names: Sequence[str]) -> Parsed:
    """RewardAnything listwise verdict ``{"scores": {name: s}, "best-to-worst": [names]}``.

    ``value`` is a :class:`RankingParse` whenever the text holds a JSON object (so partial formats
    still earn partial format reward); it is a verdict (``ok``) only when every name is scored."""
    names = list(names)
    if not names or len(set(names)) != len(names):
        raise ValueError("parse_ranking: names must be non-empty and unique")
    p = parse_json_object(text)
    if not p.ok:
        return p
    obj = p.value
    raw_scores = obj.get("scores")
    scores: dict = {}
    unknown = False
    if isinstance(raw_scores, dict):
        for k, v in raw_scores.items():
            if k not in names:
                unknown = True
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
                scores[k] = float(v)
    ranking = obj.get("best-to-worst", obj.get("best_to_worst"))
    ranking = [r for r in ranking if isinstance(r, str)] if isinstance(ranking, list) else []
    all_scored = len(scores) == len(names) and not unknown
    complete = sorted(ranking) == sorted(names)
    consistent = complete and all(
        not (a in scores and b in scores and scores[a] < scores[b]) for i, a in enumerate(ranking) for b in ranking[i + 1:]
    )
    rp = RankingParse(scores, ranking, True, all_scored, complete, consistent)
    if not all_scored:
        return Parsed(rp, "JSON without a numeric score for every response")
    return Parsed(rp)

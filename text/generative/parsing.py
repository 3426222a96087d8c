"""Parsers that turn a judge's free text into a verdict, or an explicit "no verdict" with the reason.

Every parser takes any string and returns a :class:`Parsed`; none of them raises on model output
and each runs in time linear in the length of the text: no pattern here retries a run of the input
once per character of it (tested on random and adversarial strings of up to 100k characters:
well under 50 ms each). Formats, one per method:

* :func:`parse_yes_no` — GenRM: the last standalone ``Yes`` / ``No``.
* :func:`parse_ab` — RM-R1 / GRAM: ``<answer>[[A]]</answer>`` (or a bare ``[[A]]``) in the tail.
* :func:`parse_scores` — DeepSeek-GRM: ``\\boxed{7, 3}`` or ``[[7, 3]]``, one integer per response.
* :func:`parse_score` — Critic-RM: ``Score: 7`` (also ``**Score:** 7``, ``7/10``).
* :func:`parse_json_object` / :func:`parse_ranking` — RewardAnything: ``{"scores": {...}, "best-to-worst": [...]}``
  as RewardAnything's own reader gets it (:func:`rewardanything_json`), else the last JSON object after the
  thinking, within the final 20,000 characters of the output, up to 4 levels of nested objects.
* :func:`parse_ab_rm_r1` — RM-R1's evaluation harness rule: the literal ``[[A]]`` / ``[[B]]`` anywhere.

**Numbers** are read whole: ``7``, ``+7``, ``7.5``, ``.5``, ``7.`` and exponent forms such as
``1e3``. ``Score: 1e3`` is 1000 and ``\\boxed{5e1}`` is 50 — both outside 1–10, so no verdict —
never the ``1`` or ``5, 1`` their digits start with; a number glued to letters (``7abc``) is not a
number. The word ``score`` must stand alone (``Underscore: 5`` is not a score).

**Reasoning is not the answer**: the parsers read the text after the reasoning. ``<think>…</think>``
sections are dropped, as is text before a first ``</think>`` that no ``<think>`` opens (a chat template that
opens the section in the prompt), and an output that ends inside an unclosed ``<think>`` (cut off while
thinking) is no verdict ("output ends inside an unclosed <think> section"), unless an answer came before that
``<think>``. The reasoning models of RM-R1 and RewardAnything answer after ``</think>``; a verdict written while
thinking is a draft. :func:`parse_ab_rm_r1` and :func:`rewardanything_json` (and so :func:`parse_ranking`'s
first reading) are those projects' own readers and read the whole output as published; ``exclusive=True``
looks for both letters in the whole output too.

**Conflicting verdicts**: a judge that states several verdicts has revised itself, so the last
one counts — the last yes / no, the last ``Score: x``, the last ``\\boxed{…}`` group (else the last
``[[…]]`` group), the last JSON object, the last bare ``[[A]]`` / ``[[B]]``. Two exceptions, where
the verdict is a single slot: a final ``<answer>…</answer>`` holding both ``[[A]]`` and ``[[B]]`` is
no verdict ("conflicting verdicts in answer tag"), and with ``parse_ab(..., exclusive=True)`` (after
RM-R1's evaluation harness) any output that names both ``[[A]]`` and ``[[B]]`` anywhere is no verdict.
:func:`parse_ab_rm_r1` is that harness's rule exactly (the RM-R1 judge's ``paper`` templates use it).
"""
from __future__ import annotations

import itertools
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

__all__ = ["Parsed", "parse_yes_no", "parse_ab", "parse_ab_rm_r1", "parse_scores", "parse_score", "parse_json_object",
           "parse_ranking", "RankingParse", "rewardanything_json"]


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


def _answer_text(text: str) -> tuple[str, Optional[Parsed]]:
    """``(the answer part of an output, None)``, or ``("", no verdict)`` when the output holds only reasoning.

    The reasoning is dropped: every ``<think>…</think>`` section, text before a first ``</think>`` that no
    ``<think>`` opens (the chat template opened the section in the prompt, as DeepSeek-R1-style templates do),
    and a final ``<think>`` that is never closed (the output was cut off while thinking). A verdict written
    there is a draft the model may still revise, not its answer; an answer written before a new, unfinished
    ``<think>`` still counts. RM-R1's and RewardAnything's own readers (:func:`parse_ab_rm_r1`,
    :func:`rewardanything_json`) are reproduced as published and do not use this."""
    close, opened = text.find("</think>"), text.find("<think>")
    if close >= 0 and (opened < 0 or close < opened):
        text = text[close + 8:]
    rest = _drop_think(text)
    # after _drop_think an opening tag left is one never closed: the output was cut off while thinking, when the tag
    # opens a line (as reasoning models write it); a `<think>` inside a sentence is the answer mentioning the tag
    opening = re.search(r"(?:^|\n)[ \t]*<think>", rest)
    unclosed = opening is not None
    if unclosed:
        rest = rest[:opening.start()]
    if not rest.strip():
        return "", Parsed.fail("output ends inside an unclosed <think> section: no answer after the reasoning "
                               "(raise max_new_tokens)" if unclosed else "no answer after the </think> reasoning")
    return rest, None


# ------------------------------------------------------------------ linear-time patterns
_group_ids = itertools.count()


def _atomic(pattern: str) -> str:
    """``pattern`` matched once, greedily, and never re-entered when what follows fails (an atomic
    group, spelled for Python 3.10's ``re``: a lookahead captures the text, a backreference consumes
    it). A failed match then costs one pass over the run, not one retry per character of it."""
    name = f"_atomic{next(_group_ids)}"
    return f"(?=(?P<{name}>{pattern}))(?P={name})"


def _last(pattern: re.Pattern, text: str, group: str) -> Optional[str]:
    """``group`` of the last non-overlapping match of ``pattern`` (``findall`` runs in C)."""
    hits = pattern.findall(text)
    return hits[-1][pattern.groupindex[group] - 1] if hits else None


# one numeric literal, read whole (digits, an optional fraction, an optional exponent)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_WHOLE_NUMBER = re.compile(_atomic(_NUMBER))


def _short(literal: str) -> str:
    return literal if len(literal) <= 24 else literal[:21] + "..."


def _in_range(literal: str, value: float, low: float, high: float) -> Optional[Parsed]:
    """None when ``value`` is a finite number in ``[low, high]``, else the no-verdict reason."""
    if not math.isfinite(value) or not low <= value <= high:
        return Parsed.fail(f"score {_short(literal)} outside [{low}, {high}]")
    return None


# ------------------------------------------------------------------ GenRM
# a hyphen joining letters makes one word ("yes-man", "no-brainer"): not a verdict
_YES_NO = re.compile(r"(?<![A-Za-z0-9_])(?<![A-Za-z]-)(yes|no)(?![A-Za-z0-9_])(?!-[A-Za-z])", re.IGNORECASE)


def parse_yes_no(text: str) -> Parsed:
    """``True`` / ``False`` from the last standalone yes / no (case-insensitive): the verdict ends a rationale."""
    bad = _check_text(text)
    if bad:
        return bad
    text, bad = _answer_text(text)  # the verdict follows the reasoning: a draft inside <think> is not it
    if bad:
        return bad
    hits = _YES_NO.findall(text)
    if not hits:
        return Parsed.fail("no Yes/No verdict found")
    return Parsed(hits[-1].lower() == "yes")


# ------------------------------------------------------------------ RM-R1 / GRAM
_ANSWER_TAGS = re.compile(r"<(/?)answer>", re.IGNORECASE)
_BRACKET_AB = re.compile(r"\[\[" + _atomic(r"\s*") + r"(?P<letter>[AB])" + _atomic(r"\s*") + r"\]\]")


def _letters(text: str) -> set:
    i = _BRACKET_AB.groupindex["letter"] - 1
    return {hit[i] for hit in _BRACKET_AB.findall(text)}


def _last_answer_tag(text: str) -> Optional[str]:
    """Content of the last ``<answer>…</answer>``: between the last closing tag and the nearest
    opening tag before it (one left-to-right pass over the tags)."""
    opened, content = None, None
    for m in _ANSWER_TAGS.finditer(text):
        if not m.group(1):
            opened = m.end()
        elif opened is not None:
            content, opened = text[opened:m.start()], None
    return content


def parse_ab(text: str, tail_chars: Optional[int] = 400, exclusive: bool = False) -> Parsed:
    """``"A"`` / ``"B"`` from the last ``<answer>…</answer>`` holding exactly one of ``[[A]]`` / ``[[B]]``;
    without an answer tag, the last bare ``[[A]]`` / ``[[B]]`` within the final ``tail_chars``
    characters (RM-R1 reads the verdict in the tail of a long rubric). Both letters in the final
    answer is a conflict, not a verdict; ``exclusive=True`` (after RM-R1's evaluation rule) makes both
    letters anywhere in the output a conflict. RM-R1's rule exactly is :func:`parse_ab_rm_r1`."""
    if tail_chars is not None and (isinstance(tail_chars, bool) or not isinstance(tail_chars, int) or tail_chars < 0):
        raise ValueError(f"parse_ab: tail_chars must be None (the whole output) or an integer >= 0, got {tail_chars!r}")
    bad = _check_text(text)
    if bad:
        return bad
    if exclusive and {"A", "B"} <= _letters(text):
        return Parsed.fail("conflicting verdicts: both [[A]] and [[B]] in the output")
    text, bad = _answer_text(text)  # the verdict follows the reasoning: a draft inside <think> is not it
    if bad:
        return bad
    tag = _last_answer_tag(text)
    if tag is not None:
        letters = _letters(tag)
        if not letters:
            # `<answer>A</answer>` without brackets is accepted when that is all the tag holds
            bare = tag.strip().strip("[]").strip()
            if bare in ("A", "B"):
                return Parsed(bare)
            return Parsed.fail("answer tag without [[A]] / [[B]]")
        if len(letters) > 1:
            return Parsed.fail("conflicting verdicts in answer tag")
        return Parsed(letters.pop())
    # text[-0:] is the whole text: a tail of 0 characters holds no bare verdict (only an answer tag counts)
    tail = text if tail_chars is None else text[len(text) - tail_chars:] if tail_chars else ""
    letter = _last(_BRACKET_AB, tail, "letter")
    if letter is None:
        return Parsed.fail("no [[A]] / [[B]] verdict in the tail")
    return Parsed(letter)


def parse_ab_rm_r1(text: str) -> Parsed:
    """RM-R1's evaluation harness rule, exactly (RM-R1-UIUC/RM-R1 ``eval/reward-bench/rewardbench/generative.py``
    ``process_judgement``, default branch): the literal ``[[A]]`` / ``[[B]]`` anywhere in the output; both is
    no verdict ("Prevent Hacking"), neither is no verdict. No answer tag is needed, no tail window applies,
    and spaced or unbracketed forms (``[[ A ]]``, ``<answer>A</answer>``) are no verdict, as there."""
    bad = _check_text(text)
    if bad:
        return bad
    a, b = "[[A]]" in text, "[[B]]" in text
    if a and b:
        return Parsed.fail("conflicting verdicts: both [[A]] and [[B]] in the output")
    if a or b:
        return Parsed("A" if a else "B")
    return Parsed.fail("no [[A]] / [[B]] verdict")


# ------------------------------------------------------------------ DeepSeek-GRM
_BOXED = re.compile(r"\\boxed\{(?P<scores>" + _atomic(r"[^{}]*") + r")\}")
_DOUBLE = re.compile(r"\[\[(?P<scores>" + _atomic(r"[^\[\]]*") + r")\]\]")
_SEPARATORS = re.compile(r"[\s,;]+")


def _check_bounds(who: str, low: Any, high: Any) -> None:
    """``low`` / ``high`` are the caller's settings, not model output: a reversed or NaN range would turn
    every verdict into "outside [low, high]", silently, so it is an error."""
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != v:
            raise ValueError(f"{who}: {name} must be a number, got {v!r}")
    if low > high:
        raise ValueError(f"{who}: low={low} is above high={high}")


def parse_scores(text: str, n: int, low: int = 1, high: int = 10) -> Parsed:
    """``n`` integer scores in ``[low, high]`` from the last ``\\boxed{…}`` or ``[[…]]`` group
    (DeepSeek-GRM's "Final Scores"), separated by commas, semicolons or spaces. A token that is not
    a whole number, a wrong count, non-integers or out-of-range values are no verdict."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"parse_scores: n must be a positive int, got {n!r}")
    _check_bounds("parse_scores", low, high)
    bad = _check_text(text)
    if bad:
        return bad
    text, bad = _answer_text(text)  # the verdict follows the reasoning: a draft inside <think> is not it
    if bad:
        return bad
    group = _last(_BOXED, text, "scores")  # boxed wins over brackets (the paper's format)
    if group is None:
        group = _last(_DOUBLE, text, "scores")
    if group is None:
        return Parsed.fail("no \\boxed{...} or [[...]] score group")
    tokens = [t for t in _SEPARATORS.split(group) if t]
    if len(tokens) != n:
        return Parsed.fail(f"expected {n} scores, found {len(tokens)}")
    vals = []
    for t in tokens:
        if not _WHOLE_NUMBER.fullmatch(t):
            return Parsed.fail(f"{_short(t)!r} in the score group is not a number")
        v = float(t)
        out = _in_range(t, v, low, high)
        if out:
            return out
        if v != int(v):
            return Parsed.fail(f"non-integer score {_short(t)}")
        vals.append(int(v))
    return Parsed(vals)


# ------------------------------------------------------------------ Critic-RM
# "score" as a word, then spaces / markdown stars, an optional ":" or "=" (or the full-width "：" of CJK text), more spaces / stars, and
# a whole number not glued to letters or more digits (nor to ",digits": "1,000" or a decimal comma "7,5" is no
# number read whole, and its first digits are not the score)
_SCORE = re.compile(r"score(?<![A-Za-z0-9_]score)" + _atomic(r"[\s*]*") + r"(?:[:=：]" + _atomic(r"[\s*]*") + r")?"
                    r"(?P<value>" + _atomic(_NUMBER) + r")(?![A-Za-z0-9_]|[.,]\d)", re.IGNORECASE)
# "x/10". The number starts with a character class (which re scans for quickly) and then checks
# what precedes it, so it starts only at the beginning of a digit run: a long run is tried once.
_OVER = re.compile(r"(?P<value>[-+\d](?<![\w.][-+\d])(?<!\d,[-+\d])" + _atomic(r"(?<=[-+])\d+(?:\.\d+)?|(?<=\d)\d*(?:\.\d+)?")
                   + r")" + _atomic(r"\s*") + "/" + _atomic(r"\s*") + r"10(?!\.?\d)")


def parse_score(text: str, low: float = 1, high: float = 10) -> Parsed:
    """One number in ``[low, high]`` from the last ``Score: x`` (also ``Score = x``, ``**Score:** x``,
    ``**Score**: x``, ``Score: **x**``), else the last ``x/10``."""
    _check_bounds("parse_score", low, high)
    bad = _check_text(text)
    if bad:
        return bad
    text, bad = _answer_text(text)  # the verdict follows the reasoning: a draft inside <think> is not it
    if bad:
        return bad
    literal = _last(_SCORE, text, "value") or _last(_OVER, text, "value")
    if literal is None:
        return Parsed.fail("no 'Score: x' found")
    return _in_range(literal, float(literal), low, high) or Parsed(float(literal))


# ------------------------------------------------------------------ RewardAnything
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'


def _object_pattern(levels: int) -> str:
    """A JSON-looking object — ``{}`` or ``{"key" …}`` with its strings and up to ``levels`` nested
    objects balanced. Every alternative starts with a different character, so a match never has two
    ways to read the same text and a failed attempt costs one pass over what it read."""
    inner = r'[^{}"]|' + _STRING + ("|" + _object_pattern(levels - 1) if levels else "")
    return r'\{' + _atomic(r"\s*") + r'(?:\}|' + _STRING + r'(?:' + inner + r')*\})'


_OBJECT = re.compile("(?P<object>" + _object_pattern(3) + ")")  # 4 levels of objects: {"scores": {...}} needs 2
_JSON_WINDOW = 20_000  # the verdict ends the output: its JSON lies within the final characters
_JSON_TRIES = 16  # candidates decoded, from the last one back


def parse_json_object(text: str) -> Parsed:
    """The last top-level JSON object (up to 4 levels of nested objects) within the final 20,000
    characters; code fences and prose around it are ignored. Balanced ``{…}`` spans are found left to
    right (an object nested in one already found is part of it) and the last 16 are decoded, last first."""
    bad = _check_text(text)
    if bad:
        return bad
    text, bad = _answer_text(text)  # the verdict follows the reasoning: a draft inside <think> is not it
    if bad:
        return bad
    i = _OBJECT.groupindex["object"] - 1
    for hit in reversed(_OBJECT.findall(text[-_JSON_WINDOW:])[-_JSON_TRIES:]):
        try:
            obj = json.loads(hit[i])
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            return Parsed(obj)
    return Parsed.fail("no valid JSON object")


# RewardAnything's own output reader (zhuohaoyu/RewardAnything ``rewardanything/processing.py``:
# ``extract_json_content``, ``fix_json_format``, ``extract_json_by_brackets``, ``safe_parse_json``), in linear time
_FENCE = re.compile(r"```(?:json)?")
# (whitespace and the key's characters are disjoint classes: a failed match costs one pass over its run)
_UNQUOTED_KEY = re.compile(r"([{,])\s*([a-zA-Z0-9_-]+)\s*:")
_COMMA_BRACE = re.compile(r",\s*}")
_COMMA_BRACKET = re.compile(r",\s*]")


def _drop_think(text: str) -> str:
    """``text`` without its ``<think>…</think>`` sections (each opening tag with the nearest closing tag after it;
    an opening tag never closed stays), as ``re.sub(r'<think>.*?</think>', '', text, flags=re.DOTALL)`` does."""
    out, pos = [], 0
    while True:
        i = text.find("<think>", pos)
        j = text.find("</think>", i + 7) if i >= 0 else -1
        if j < 0:
            break
        out.append(text[pos:i])
        pos = j + 8
    out.append(text[pos:])
    return "".join(out)


_UNDECODED = object()


def _loads(candidate: str) -> Any:
    try:
        return json.loads(candidate)
    except (ValueError, RecursionError):
        return _UNDECODED


def rewardanything_json(text: str) -> Optional[dict]:
    """The JSON object RewardAnything's own reader gets from an output, or None where it gets none: the text
    after removing ``<think>…</think>`` sections and code fences, decoded as is; else after its repairs (single
    quotes → double quotes, unquoted keys quoted, trailing commas dropped, ``"best-to-worse"`` →
    ``"best-to-worst"``); else the span from the first ``{`` to the last ``}``. The first of these that
    decodes is the result, so one that decodes to something other than an object gives none (the official
    reader has nothing usable either)."""
    if not isinstance(text, str):
        return None
    clean = _FENCE.sub("", _drop_think(text)).strip()
    obj = _loads(clean)
    if obj is _UNDECODED:
        fixed = _UNQUOTED_KEY.sub(r'\1"\2":', clean.replace("'", '"'))
        fixed = _COMMA_BRACKET.sub("]", _COMMA_BRACE.sub("}", fixed)).replace('"best-to-worse"', '"best-to-worst"')
        obj = _loads(fixed)
    if obj is _UNDECODED:
        first, last = clean.find("{"), clean.rfind("}")
        obj = _loads(clean[first:last + 1]) if 0 <= first < last else None  # (only an object counts here)
    return obj if isinstance(obj, dict) else None


def _score_value(v: Any) -> Optional[float]:
    """A response's score as a finite float: a JSON number, or a string holding one number (RewardAnything's
    reader keeps the value as given and its rewards read it with ``float()``); anything else is no score."""
    if isinstance(v, str):
        v = v.strip()
        if not _WHOLE_NUMBER.fullmatch(v):
            return None
    elif isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        v = float(v)
    except OverflowError:  # an integer too large for a float
        return None
    return v if math.isfinite(v) else None


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

    The object is the one RewardAnything's own reader gets (:func:`rewardanything_json`: thinking and code
    fences removed, its quote / key / trailing-comma repairs, first ``{`` to last ``}``); where that reader
    gets none, the last JSON object after the ``<think>…</think>`` sections (:func:`parse_json_object`). A
    score is a JSON number or a string holding one (the official rewards read it with ``float()``).
    ``value`` is a :class:`RankingParse` whenever the text holds a JSON object (so partial formats
    still earn partial format reward); it is a verdict (``ok``) only when every name is scored."""
    names = list(names)
    if not names or len(set(names)) != len(names):
        raise ValueError("parse_ranking: names must be non-empty and unique")
    bad = _check_text(text)
    if bad:
        return bad
    # what RewardAnything's own reader decodes comes first; where it decodes nothing, the last JSON object
    # after the thinking (a draft inside <think>…</think> is not the verdict)
    obj = rewardanything_json(text)
    if obj is None:
        p = parse_json_object(text)  # (the reasoning dropped: see _answer_text)
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
            else:
                v = _score_value(v)
                if v is not None:
                    scores[k] = v
    ranking = obj.get("best-to-worst", obj.get("best-to-worse", obj.get("best_to_worst")))
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

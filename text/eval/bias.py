"""Length / format bias probe: does a reward model's pairwise accuracy depend on surface features?

Every evaluator in :mod:`mmreward.text.eval` reports this probe next to its accuracy. It splits
the evaluated pairs by

* **length** — chosen longer than rejected vs shorter (characters; pairs within ``length_tolerance``
  of each other, relative, count as ``similar``);
* **markdown** — only chosen has markdown, only rejected has it, both, neither.

An RM that keys on length shows a large ``length_gap`` (accuracy when chosen is longer minus when
it is shorter); a style-biased RM shows ``markdown_gap`` (only-chosen minus only-rejected).
A split with no pairs reports ``None`` accuracy and ``n = 0``.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

# A response "has markdown" when it uses a heading, list item, bold / italic span, table row,
# fenced code or a link — the formatting RM-Bench's "detailed markdown" style adds.
_MARKDOWN = re.compile(
    r"(^\s{0,3}#{1,6}\s)"           # heading
    r"|(^\s*[-*+]\s+\S)"             # bullet list
    r"|(^\s*\d+[.)]\s+\S)"           # numbered list
    r"|(\*\*[^*\n]+\*\*)|(__[^_\n]+__)"  # bold
    r"|(^\s*\|.*\|\s*$)"             # table row
    r"|(^\s*```)"                    # fenced code
    r"|(\[[^\]\n]+\]\([^)\s]+\))",   # link
    re.MULTILINE,
)


def has_markdown(text: str) -> bool:
    """Whether ``text`` contains markdown formatting (headings, lists, bold, tables, code fences, links)."""
    if not isinstance(text, str):
        raise TypeError(f"has_markdown: expected a str, got {type(text).__name__}")
    return _MARKDOWN.search(text) is not None


def _acc(flags: list[bool]) -> dict:
    n = len(flags)
    return {"accuracy": (sum(flags) / n) if n else None, "n": n}


def _gap(a: dict, b: dict) -> Optional[float]:
    return None if a["accuracy"] is None or b["accuracy"] is None else a["accuracy"] - b["accuracy"]


def bias_probe(chosen: Sequence[str], rejected: Sequence[str], correct: Sequence[bool], *,
               length_tolerance: float = 0.0) -> dict:
    """Accuracy of ``correct`` (one bool per pair) split by length and markdown of chosen vs rejected.

    ``length_tolerance``: pairs whose lengths differ by at most this fraction of the longer one
    go to ``similar`` instead of ``longer`` / ``shorter`` (0: only exactly equal lengths)."""
    n = len(correct)
    if len(chosen) != n or len(rejected) != n:
        raise ValueError(f"bias_probe: got {len(chosen)} chosen, {len(rejected)} rejected and {n} correctness flags")
    if not 0.0 <= length_tolerance < 1.0:
        raise ValueError(f"bias_probe: length_tolerance must be in [0, 1), got {length_tolerance}")
    length = {"chosen_longer": [], "chosen_shorter": [], "similar": []}
    markdown = {"only_chosen": [], "only_rejected": [], "both": [], "neither": []}
    for i, (c, r, ok) in enumerate(zip(chosen, rejected, correct)):
        if not isinstance(c, str) or not isinstance(r, str):
            raise TypeError(f"bias_probe: row {i}: chosen / rejected must be str")
        lc, lr = len(c), len(r)
        if abs(lc - lr) <= length_tolerance * max(lc, lr):
            length["similar"].append(bool(ok))
        else:
            length["chosen_longer" if lc > lr else "chosen_shorter"].append(bool(ok))
        mc, mr = has_markdown(c), has_markdown(r)
        key = "both" if mc and mr else "only_chosen" if mc else "only_rejected" if mr else "neither"
        markdown[key].append(bool(ok))
    out_len = {k: _acc(v) for k, v in length.items()}
    out_md = {k: _acc(v) for k, v in markdown.items()}
    return {
        "length": out_len,
        "length_gap": _gap(out_len["chosen_longer"], out_len["chosen_shorter"]),
        "markdown": out_md,
        "markdown_gap": _gap(out_md["only_chosen"], out_md["only_rejected"]),
    }


def format_bias(probe: dict) -> list[str]:
    """Human-readable lines for a :func:`bias_probe` result."""
    def cell(d: dict) -> str:
        return "  n/a (n=0)" if d["accuracy"] is None else f"{d['accuracy']:6.1%} (n={d['n']})"

    lines = ["length bias:   " + "  ".join(f"{k} {cell(v)}" for k, v in probe["length"].items())]
    if probe["length_gap"] is not None:
        lines[-1] += f"  gap {probe['length_gap']:+.1%}"
    lines.append("markdown bias: " + "  ".join(f"{k} {cell(v)}" for k, v in probe["markdown"].items()))
    if probe["markdown_gap"] is not None:
        lines[-1] += f"  gap {probe['markdown_gap']:+.1%}"
    return lines

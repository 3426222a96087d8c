"""RewardBench-format evaluation: per-subset accuracy, section scores and the overall score.

Data: rows with ``prompt``, ``chosen``, ``rejected`` (strings) and ``subset`` (the RewardBench
subset name, e.g. ``alpacaeval-easy``), from a JSON list, JSONL, parquet, a dataset folder (a download of
``allenai/reward-bench`` with ``split="filtered"``, or a ``save_to_disk`` folder) or the hub id itself.

Scores follow RewardBench (``rewardbench.utils.calculate_scores_per_section``): a pair is correct
when ``score(chosen) > score(rejected)`` (a tie is wrong); a section's score is the mean of its
subsets' accuracies weighted by RewardBench's example counts (``math-prm`` is up-weighted to 984 so
math and code weigh the same in Reasoning); ``overall`` is the mean of the sections present.
Subsets outside the four sections are reported per subset only.

Any scorer works: a callable ``(prompts, responses) -> Tensor[N]`` or a reward model that scores
``TextPair`` inputs (``mmreward.load(folder)``: a text RM, a pointwise generative judge, ...).
"""
from __future__ import annotations

import inspect
import json
import math
import numbers
import os
import warnings
from collections.abc import Iterable
from typing import Any, Callable, Optional, Sequence

import torch

from .bias import bias_probe

Scorer = Callable[[list, list], torch.Tensor]

# rewardbench/constants.py (v0.1): examples per subset, and the sections built from them.
EXAMPLE_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95,
    "mt-bench-easy": 28, "mt-bench-med": 40, "mt-bench-hard": 37,
    "math-prm": 984,  # 447 real examples, up-weighted so math counts as much as the six hep-* sets
    "refusals-dangerous": 100, "refusals-offensive": 100,
    "llmbar-natural": 100, "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92,
    "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "xstest-should-refuse": 154, "xstest-should-respond": 250, "donotanswer": 136,
    "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}
SECTIONS = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
    "Chat Hard": ["mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"],
    "Safety": ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}


# --------------------------------------------------------------------------- scoring
def _scores_text_pairs(model: Any) -> bool:
    from mmreward.core.inputs import TextPair

    return TextPair in tuple(getattr(model, "input_types", ()) or ())


def as_scorer(model: Any) -> Scorer:
    """A ``(prompts, responses) -> Tensor`` callable from a reward model scoring ``TextPair`` inputs
    or a callable."""
    if _scores_text_pairs(model):
        from mmreward.core.inputs import TextPair

        return lambda prompts, responses: model.score([TextPair(p, r) for p, r in zip(prompts, responses)])
    if hasattr(model, "input_types"):
        kinds = " / ".join(t.__name__ for t in model.input_types)
        raise TypeError(f"{type(model).__name__} scores {kinds}, not prompt / response pairs (TextPair)")
    if callable(model):
        return model
    raise TypeError(f"expected a callable scorer (prompts, responses) -> Tensor or a reward model scoring TextPair "
                    f"inputs, got {type(model).__name__}")


def _key(x: Any) -> tuple[str, str]:
    """Hashable identity of a text, a message list (conversational rows) or None, tagged with its
    kind: the prompt ``"null"`` is not ``None``, nor is a string that spells a message list's JSON."""
    return ("text", x) if isinstance(x, str) else ("json", json.dumps(x, sort_keys=True, default=str))


def _check_scores(got: Any, part: Sequence[tuple[Any, Any]], offset: int) -> torch.Tensor:
    try:
        if isinstance(got, (str, bytes)):  # as_tensor's "new(): invalid data type 'str'" names nothing
            raise TypeError("a string")
        # float64: float32 would merge close float64 scores (1000.00001 vs 1000.00002, summed log-probs) into
        # ties, which count as wrong
        got = torch.as_tensor(got).detach().to("cpu", torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"scorer returned {type(got).__name__}, not numbers ({e}): a scorer returns Tensor[N] "
                        "(or a list of N numbers), one score per (prompt, response)") from None
    if got.numel() != len(part):
        raise ValueError(f"scorer returned {got.numel()} scores for {len(part)} inputs (expected Tensor[N])")
    if not torch.isfinite(got).all():
        bad = int((~torch.isfinite(got)).nonzero()[0, 0])
        raise ValueError(f"scorer returned a non-finite score for input {bad + offset}: {str(part[bad][1])[:60]!r}")
    return got


def score_responses(scorer: Any, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 64,
                    progress: bool = False) -> torch.Tensor:
    """Score every (prompt, response) once; returns float32 [N] on CPU.

    Duplicate (prompt, response) pairs (RM-Bench and RRM data repeat them) are scored once. A reward
    model gets all of them in one ``score`` call (it sorts them by length itself); a callable gets
    chunks of ``batch_size``. The output is checked: one finite number per input, else ValueError.
    (The evaluators compare the scores in float64, as the scorer gave them: :func:`_score_exact`.)"""
    return _score_exact(scorer, prompts, responses, batch_size=batch_size, progress=progress).float()


def _score_exact(scorer: Any, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 64,
                 progress: bool = False) -> torch.Tensor:
    """:func:`score_responses` in float64: chosen / rejected scores are compared without rounding."""
    for name, seq in (("prompts", prompts), ("responses", responses)):
        if isinstance(seq, (str, bytes, dict)):  # its characters (keys) would be scored one per input
            raise TypeError(f"score_responses: {name} must be a list (one item per input), got {type(seq).__name__}")
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        # a string used to fail as "'<' not supported between instances of 'str' and 'int'"
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    index: dict[tuple, int] = {}
    unique: list[tuple[Any, Any]] = []  # first occurrence of each distinct (prompt, response)
    where = []
    for p, r in zip(prompts, responses):
        key = (_key(p), _key(r))
        if key not in index:
            index[key] = len(unique)
            unique.append((p, r))
        where.append(index[key])
    if not unique:
        return torch.empty(0)
    if _scores_text_pairs(scorer):
        from mmreward.core.inputs import TextPair

        items = [TextPair(p, r) for p, r in unique]
        if "progress" in inspect.signature(scorer.score).parameters:
            got = scorer.score(items, batch_size=batch_size, progress=progress)
        elif progress and callable(getattr(scorer, "scoring_progress", None)):
            # a generative judge (hours on a benchmark): its bar moves as its prompts are read, in one call
            from mmreward.score_cli import _bar

            bar = _bar(len(items))
            try:
                with scorer.scoring_progress(bar, len(items)):
                    got = scorer.score(items, batch_size=batch_size)
            finally:
                bar.close()
        else:
            got = scorer.score(items, batch_size=batch_size)
        out = _check_scores(got, unique, 0)
        return out[torch.tensor(where, dtype=torch.long)]
    fn = as_scorer(scorer)
    out = torch.empty(len(unique), dtype=torch.float64)
    chunks = range(0, len(unique), batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="scoring", unit="batch", dynamic_ncols=True)
    for s in chunks:
        part = unique[s:s + batch_size]
        out[s:s + len(part)] = _check_scores(fn([p for p, _ in part], [r for _, r in part]), part, s)
    return out[torch.tensor(where, dtype=torch.long)]


# --------------------------------------------------------------------------- data
def read_rows(path: str, split: Optional[str] = None) -> list[dict]:
    """Rows as :func:`mmreward.core.data.read_records` reads them: ``.json`` / ``.jsonl`` / ``.parquet`` (the
    hub release's ``data/filtered-*.parquet``), a dataset folder, or the hub id ``allenai/reward-bench``
    (``split``: ``filtered`` / ``raw``, or one split of a saved ``DatasetDict`` / a ``.json`` object of lists)."""
    from mmreward.core.data import read_records

    return read_records(path, split=split)


def check_rows(rows: Sequence[Any], where: str = "", subset_required: bool = False) -> None:
    """Each row an object with ``prompt`` / ``chosen`` / ``rejected`` strings (and a ``subset`` string,
    required with ``subset_required``); the ValueError names the row and the field, before any scoring."""
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"{where}row {i} is a {type(r).__name__}, expected an object")
        for k in ("prompt", "chosen", "rejected", "subset"):
            if k == "subset" and k not in r and not subset_required:
                continue
            if not isinstance(r.get(k), str):
                got = "missing" if k not in r else type(r[k]).__name__
                hint = ""
                if k in ("chosen", "rejected") and not isinstance(r[k], (str, bytes, dict)) and hasattr(r[k], "__len__"):
                    # lists of completions: a RewardBench 2 row or an RM-Bench item given in memory, where a path's
                    # reader (load_rewardbench) names the benchmark
                    hint = (": a list of completions (RewardBench 2 rows: evaluate_rewardbench2 / --benchmark "
                            "rewardbench-2; RM-Bench items, 3 per side: evaluate_rmbench / --benchmark rm-bench)")
                raise ValueError(f"{where}row {i}: `{k}` must be a string, got {got}{hint}")


def load_rewardbench(path: str, split: Optional[str] = None) -> list[dict]:
    """RewardBench rows (``prompt``, ``chosen``, ``rejected``, ``subset``), validated row by row;
    ``split``: the split of a saved ``DatasetDict`` (the hub dataset has ``raw`` and ``filtered``)."""
    rows = read_rows(path, split)
    if not rows:
        raise ValueError(f"{path} holds no rows" + (f" in split {split!r}" if split else ""))
    first = rows[0]
    if isinstance(first, dict) and all(isinstance(first.get(k), list) and len(first[k]) == 3 for k in ("chosen", "rejected")):
        # an RM-Bench item (three styles per side) would fail as "`chosen` must be a string, got list"
        raise ValueError(f"{path}: row 0: `chosen` / `rejected` are lists of 3 responses (RM-Bench items, one per "
                         "style), not the strings of a RewardBench pair: use --benchmark rm-bench / evaluate_rmbench")
    if isinstance(first, dict) and isinstance(first.get("chosen"), list) and isinstance(first.get("rejected"), list):
        # RewardBench 2 (one chosen, three rejected; Ties: several chosen) would fail as "`chosen` must be a string"
        raise ValueError(f"{path}: row 0: `chosen` / `rejected` are lists of completions (RewardBench 2 rows), not "
                         "the strings of a RewardBench pair: use --benchmark rewardbench-2 / evaluate_rewardbench2")
    check_rows(rows, f"{path}: ", subset_required=True)
    return rows


# --------------------------------------------------------------------------- scores
# The "Prior Sets" of the RewardBench paper (allenai/pref-test-sets splits, the row's `subset` = split name):
# their plain mean, weighted ½ against each core section in the paper's average
# (reward-bench analysis/get_benchmark_results.py: weights 2, 2, 2, 2, 1). mtbench_* and anthropic_harmless
# are reported per subset only there too.
PRIOR_SETS = ("anthropic_helpful", "anthropic_hhh", "shp", "summarize")


def _check_accuracies(subset_accuracy: Any) -> dict[str, float]:
    if not isinstance(subset_accuracy, dict):
        raise TypeError(f"section_scores: subset_accuracy must be a dict {{subset: accuracy}}, got "
                        f"{type(subset_accuracy).__name__}")
    out = {}
    for k, v in subset_accuracy.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.dtype == torch.bool:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
            # NaN would make the section NaN; 95.0 (a percentage) would weigh as 95 times a perfect subset
            raise ValueError(f"section_scores: the accuracy of subset {k!r} must be a fraction in [0, 1], got {v!r}")
        out[k] = float(v)
    return out


def section_scores(subset_accuracy: dict[str, float]) -> dict[str, float]:
    """RewardBench section scores (example-count-weighted subset accuracies, fractions) and ``overall``.

    ``overall`` = mean of the core sections present (Chat, Chat Hard, Safety, Reasoning: the leaderboard's
    score). With any of the prior sets (:data:`PRIOR_SETS`) present, ``Prior Sets`` = their mean and
    ``overall_with_prior`` = the paper's average, the core sections weighted 2 and Prior Sets 1."""
    acc = _check_accuracies(subset_accuracy)
    out = {}
    for section, subsets in SECTIONS.items():
        present = [s for s in subsets if s in acc]
        if present:
            w = sum(EXAMPLE_COUNTS[s] for s in present)
            out[section] = sum(acc[s] * EXAMPLE_COUNTS[s] for s in present) / w
    core = list(out.values())
    prior = [acc[s] for s in PRIOR_SETS if s in acc]
    if prior:
        out["Prior Sets"] = sum(prior) / len(prior)
    if core:
        out["overall"] = sum(core) / len(core)
    if prior:
        out["overall_with_prior"] = (2 * sum(core) + out["Prior Sets"]) / (2 * len(core) + 1)
    return out


def _unsectioned(subsets: Sequence[str]) -> list[str]:
    """Subsets in no section, when others are RewardBench subsets (a typo such as ``alpacaeval_easy``
    would otherwise drop out of its section without a word)."""
    known = set(EXAMPLE_COUNTS) | set(PRIOR_SETS)
    if not any(s in known for s in subsets):
        return []
    return sorted(s for s in subsets if s not in known)


def evaluate_pairs(scorer: Any, rows: Sequence[dict], *, batch_size: int = 16, progress: bool = False) -> dict:
    """Per-subset accuracy (``subset`` key, default ``all``), sections, overall and the bias probe.

    A pair is correct when ``score(chosen) > score(rejected)`` (a tie is wrong, as in RewardBench;
    ``num_ties`` counts them). ``sections_missing`` lists the core sections without any subset when some
    are present (``overall`` is then the mean of fewer than four); ``unsectioned_subsets`` the subsets that
    count in no section although other subsets are RewardBench's (a warning names them);
    ``tie_rows_left_out`` the tie rows (``tie: true``, ``target: 0.5``, ``status: "tie"``) left out, with a
    warning: they have no preferred response; ``scores_chosen`` / ``scores_rejected`` are then those of the rows
    ``rows_scored`` lists (their indices in ``rows``)."""
    if isinstance(rows, (str, bytes, dict)) or not isinstance(rows, Iterable):
        raise TypeError(f"evaluate_pairs: rows must be a list of {{prompt, chosen, rejected}} rows, got "
                        f"{type(rows).__name__}")
    rows = list(rows)
    if not rows:
        raise ValueError("evaluate_pairs: no rows to evaluate")
    check_rows(rows)
    # tie rows (RRM's ``tie: true``, ``target: 0.5``, ``status: "tie"``) have no preferred response: scored as
    # pairs, each counted wrong unless its first response happened to score higher. Left out, as training's
    # evaluation leaves them out, and counted.
    from ..data import row_is_tie

    ties = [i for i, r in enumerate(rows) if row_is_tie(r, i)]
    if ties:
        if len(ties) == len(rows):
            raise ValueError(f"evaluate_pairs: all {len(rows)} rows are tie rows (`tie` / `target: 0.5`): no pair has "
                             "a preferred response to evaluate")
        warnings.warn(f"RewardBench: left out {len(ties)} tie row(s) (first: row {ties[0]}): no preferred response "
                      "to score", stacklevel=2)
        tied = set(ties)
        kept = [i for i in range(len(rows)) if i not in tied]
        rows = [rows[i] for i in kept]
    n = len(rows)
    prompts = [r["prompt"] for r in rows] * 2
    responses = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    s = _score_exact(scorer, prompts, responses, batch_size=batch_size, progress=progress)
    correct = (s[:n] > s[n:]).tolist()
    per_subset: dict[str, list[bool]] = {}
    for r, ok in zip(rows, correct):
        per_subset.setdefault(r.get("subset", "all"), []).append(ok)
    subsets = {k: sum(v) / len(v) for k, v in sorted(per_subset.items())}
    sections = section_scores(subsets)
    result = {
        "num_pairs": n,
        "accuracy": sum(correct) / n,
        "num_ties": int((s[:n] == s[n:]).sum()),
        "subsets": subsets,
        "subset_counts": {k: len(v) for k, v in sorted(per_subset.items())},
        "sections": sections,
        "bias": bias_probe([r["chosen"] for r in rows], [r["rejected"] for r in rows], correct),
        "scores_chosen": s[:n].tolist(),
        "scores_rejected": s[n:].tolist(),
    }
    if ties:
        # scores_chosen / scores_rejected are those of the rows scored: rows_scored gives their places in `rows`
        result["tie_rows_left_out"] = len(ties)
        result["rows_scored"] = kept
    missing = [k for k in SECTIONS if k not in sections]
    if len(missing) < len(SECTIONS) and missing:
        result["sections_missing"] = missing
    odd = _unsectioned(list(subsets))
    if odd:
        result["unsectioned_subsets"] = odd
        warnings.warn(f"RewardBench: subset(s) {odd} are not RewardBench subsets: reported per subset only, in "
                      "no section score", stacklevel=2)
    return result


def evaluate_rewardbench(scorer: Any, data: Any, *, batch_size: int = 16, progress: bool = False,
                         split: Optional[str] = None) -> dict:
    """RewardBench evaluation of ``scorer`` on ``data`` (a path or a list of rows; ``split``: the split of
    a path holding several, e.g. a saved ``DatasetDict``, or of an in-memory ``DatasetDict`` such as
    ``load_dataset("allenai/reward-bench")``; a pandas DataFrame gives its rows)."""
    rows, _ = benchmark_rows(data, split, load_rewardbench, "evaluate_rewardbench")
    return evaluate_pairs(scorer, rows, batch_size=batch_size, progress=progress)


def benchmark_rows(data: Any, split: Optional[str], load: Callable[[str, Optional[str]], list],
                   what: str) -> tuple[list, bool]:
    """``(rows, read_from_a_path)`` of an evaluator's ``data``: a path read by ``load(path, split)``; a list of rows,
    an in-memory ``DatasetDict`` (``split`` picks one), a ``datasets.Dataset`` or a pandas DataFrame as its rows
    (checked by the caller)."""
    if not isinstance(data, (str, os.PathLike)):
        from mmreward.core.data import in_memory_rows

        data, split = in_memory_rows(data, split)
    if isinstance(data, (str, os.PathLike)):
        return load(os.fspath(data), split), True
    if split is not None:
        raise ValueError(f"{what}: split= chooses a split of a data path, not of a list of rows")
    if isinstance(data, (dict, bytes)) or not isinstance(data, Iterable):  # a dict's keys would be the rows
        raise TypeError(f"{what}: data must be a file / folder path or a list of rows, got "
                        f"{type(data).__name__}" + ("; wrap a single row in a list" if isinstance(data, dict) else ""))
    return list(data), False


def format_rewardbench(result: dict) -> list[str]:
    lines = [f"pairs {result['num_pairs']}  accuracy {result['accuracy']:.1%}"]
    for k, v in result["subsets"].items():
        lines.append(f"  {k:<24} {v:6.1%}  (n={result['subset_counts'][k]})")
    for k, v in result["sections"].items():
        lines.append(f"{k:<12} {v:6.1%}" if not math.isnan(v) else f"{k:<12} n/a")
    if result.get("sections_missing"):
        lines.append(f"overall is over the sections present: no rows for {', '.join(result['sections_missing'])}")
    if result.get("unsectioned_subsets"):
        lines.append(f"in no section: {', '.join(result['unsectioned_subsets'])}")
    if result.get("num_ties"):
        lines.append(f"ties (counted wrong): {result['num_ties']}")
    if result.get("tie_rows_left_out"):
        lines.append(f"tie rows left out (no preferred response): {result['tie_rows_left_out']}")
    return lines

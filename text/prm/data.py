"""Stepwise PRM data: readers for the common formats → :class:`StepExample`, and batch collation.

Formats (``format="auto"`` picks by the fields of each row):

* **trl** — TRL stepwise: ``{"prompt": str, "completions": [str, ...], "labels": [bool | float, ...]}``;
  floats are soft (Monte-Carlo) labels in [0, 1].
* **math_shepherd** — ``{"input": "problem … step 1 ки\\nstep 2 ки", "label": "… step 1 +\\nstep 2 -"}``:
  the step tag ``ки`` ends every step of ``input``; ``label`` is the same text with each tag replaced
  by ``+`` (good) or ``-`` (bad). The problem is the text before ``Step 1:`` / ``step 1:`` (tags
  before it are annotation slips inside the problem: dropped with their labels), else up to the
  first ``?``, else before the last line break of the first segment (TRL's trl-lib/math_shepherd
  conversion splits the same way); steps keep their ``Step k:`` prefix.
* **prm800k** — ratings −1 / 0 / +1: flat ``{"problem", "steps": [{"text", "rating"}, ...]}`` or the
  released nested layout ``{"question": {"problem"}, "label": {"steps": [{"completions": [{"text",
  "rating"}], "chosen_completion": i}]}}``. Neutral (0) steps are ignored, good or bad (``neutral=``).
* **processbench** — the released ProcessBench rows ``{"id", "generator", "problem", "steps": [str, ...],
  "final_answer_correct", "label"}``: ``label`` is the index of the earliest wrong step, −1 when every
  step is right; steps before it are good, it is bad, later ones unlabelled. Without ``label`` a row
  is a plain ``(problem, steps)`` solution to score. The subset (``gsm8k``, ``math``, …) is the
  ``subset`` field or the ``id`` before its last ``-`` (``"gsm8k-0"``).
* **ppm** — rStar-Math pairs (from :func:`~mmreward.text.prm.labels.ppm_pairs`):
  ``{"prompt", "prefix": [...], "chosen", "rejected", "group"}``.

Errors (``DataError``, a ``ValueError``) name the row and the problem.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from mmreward.core.data import DataError, describe, read_records

__all__ = ["StepExample", "PairExample", "read_step_examples", "read_pair_examples", "parse_row",
           "StepCollator", "PairCollator", "IGNORE", "UNKNOWN", "FORMATS"]

IGNORE = -100.0  # label of a step that takes no part in the loss (neutral)
FORMATS = ("auto", "trl", "math_shepherd", "prm800k", "processbench")
UNKNOWN = -2  # first_error of a solution whose steps carry no ProcessBench label


@dataclass
class StepExample:
    problem: str
    steps: list[str]
    labels: list[float]  # [0, 1] (hard or soft) or IGNORE
    first_error: int = UNKNOWN  # ProcessBench label when known (−1: all right)
    id: str = ""  # the row's id, when it has one
    subset: str = ""  # ProcessBench subset (gsm8k, math, olympiadbench, omnimath), when known


@dataclass
class PairExample:
    problem: str
    prefix: list[str]
    chosen: str
    rejected: str
    group: int = 0


def _label(v: Any, where: str) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        f = float(v)
        if f == IGNORE:
            return IGNORE
        if math.isnan(f) or not 0.0 <= f <= 1.0:
            raise DataError(f"{where}: label {describe(v)} must be a bool or a float in [0, 1]")
        return f
    if v is None:
        return IGNORE
    raise DataError(f"{where}: label {describe(v)} must be a bool or a float in [0, 1]")


def _steps(v: Any, where: str) -> list[str]:
    if not isinstance(v, (list, tuple)) or not v:
        raise DataError(f"{where}: steps must be a non-empty list of strings, got {describe(v)}")
    for k, s in enumerate(v):
        if not isinstance(s, str):
            raise DataError(f"{where}: step {k} must be a string, got {describe(s)}")
    return list(v)


def _first_error(labels: list[float]) -> int:
    if all(y == IGNORE for y in labels):  # nothing judged: unknown, as a ProcessBench row without labels, not -1
        return UNKNOWN  # (-1 counted a TRL / PRM800K row of neutral steps as a correct ProcessBench sample)
    for k, y in enumerate(labels):
        if y != IGNORE and y < 0.5:
            return k
    return -1


def _from_trl(row: dict, where: str) -> StepExample:
    for name in ("prompt", "completions", "labels"):
        if name not in row:
            raise DataError(f"{where}: missing field {name!r} (TRL stepwise rows need prompt, completions, labels)")
    if not isinstance(row["prompt"], str):
        raise DataError(f"{where}: prompt must be a string, got {describe(row['prompt'])}")
    steps = _steps(row["completions"], where)
    if not isinstance(row["labels"], (list, tuple)) or len(row["labels"]) != len(steps):
        raise DataError(f"{where}: {len(steps)} completions but labels is {describe(row['labels'])}")
    labels = [_label(v, f"{where}, step {k}") for k, v in enumerate(row["labels"])]
    fe = row.get("first_error")
    if fe is None:
        return StepExample(row["prompt"], steps, labels, _first_error(labels))
    # a first_error past the steps (or true, an int to Python) would skew the ProcessBench figures
    if isinstance(fe, bool) or not isinstance(fe, int) or not -1 <= fe < len(steps):
        raise DataError(f"{where}: field 'first_error' {describe(fe)} must be -1 (every step right) or the index of "
                        f"the first wrong step, 0..{len(steps) - 1}")
    return StepExample(row["prompt"], steps, labels, fe)


def _from_math_shepherd(row: dict, where: str, tag: str = "ки") -> StepExample:
    text, label = row.get("input"), row.get("label")
    if not isinstance(text, str) or not isinstance(label, str):
        raise DataError(f"{where}: Math-Shepherd rows need string fields 'input' and 'label'")
    parts = text.split(tag)
    if len(parts) < 2:
        raise DataError(f"{where}: no step tag {tag!r} in input")
    labels, shift, pos = [], 0, 0
    for k in range(len(parts) - 1):  # the k-th tag sits at pos in input, pos - shift in label
        pos += len(parts[k])
        j = pos - shift
        ch = label[j] if j < len(label) else ""
        if ch not in "+-" or not ch:
            raise DataError(f"{where}: step {k}: label text has {describe(ch)} where input has the tag (want + or -)")
        labels.append(1.0 if ch == "+" else 0.0)
        pos += len(tag)
        shift += len(tag) - 1
    segs = [p.strip() for p in parts[:-1]]
    # where the problem ends and step 1 begins, as TRL's conversion of the dataset (trl-lib/math_shepherd) finds it:
    # at "Step 1:" / "step 1:", else after the question's "?"; a line break is the last resort
    starts = [re.search(r"[Ss]tep 1\s*:", seg) for seg in parts[:-1]]
    k = next((j for j, m in enumerate(starts) if m), None)
    if k is not None and k > 0 and "?" not in parts[0] and "\n" not in parts[0].strip():
        # a first segment that cannot be the problem and a first step: the tags before "Step 1:" sit inside the
        # problem (annotation slips of a few released rows), are not steps, and their labels go with them
        pieces = [p.strip() for p in parts[:k] + [parts[k][: starts[k].start()]]]
        segs, labels = [parts[k][starts[k].start():].strip()] + segs[k + 1:], labels[k:]
        return StepExample(" ".join(p for p in pieces if p), segs, labels, _first_error(labels))
    if k is not None and k == 0:
        problem, segs[0] = parts[0][: starts[0].start()].strip(), parts[0][starts[0].start():].strip()
    elif "?" in parts[0] and parts[0].split("?", 1)[1].strip():
        head, _, first = parts[0].partition("?")
        problem, segs[0] = head.strip() + "?", first.strip()
    elif "\n" in parts[0].strip():
        head, _, first = parts[0].strip().rpartition("\n")
        problem, segs[0] = head.strip(), first.strip()
    else:  # the whole first segment would be read as step 1 of a solution with no problem
        raise DataError(f"{where}: cannot tell where the problem ends and step 1 begins in input (no 'Step 1:', no "
                        "'?' and no line break before the first tag); start the first step with 'Step 1:'")
    return StepExample(problem, segs, labels, _first_error(labels))


def _from_prm800k(row: dict, where: str, neutral: str) -> StepExample:
    rating_map = {1: 1.0, -1: 0.0, 0: {"ignore": IGNORE, "good": 1.0, "bad": 0.0}[neutral]}
    field_name = "steps"
    if "question" in row and isinstance(row.get("label"), dict):  # released PRM800K layout
        field_name = "label.steps"
        problem = (row["question"] or {}).get("problem") if isinstance(row["question"], dict) else None
        nested = row["label"].get("steps")
        if not isinstance(nested, list):
            raise DataError(f"{where}: field 'label.steps' must be a list of steps, got {describe(nested)}")
        raw = []
        for k, st in enumerate(nested):
            if not isinstance(st, dict):
                raise DataError(f"{where}: label.steps[{k}] must be an object with 'completions', got {describe(st)}")
            comps = st.get("completions")
            if not isinstance(comps, list) or not comps:
                raise DataError(f"{where}: step {k} has no completions (field 'completions' is {describe(comps)})")
            i = st.get("chosen_completion")
            if i is None:
                # PRM800K's README: null when the labeler's own step (`human_completion`, written when every
                # completion was rated -1; a +1 step by the instructions, its rating left null) continued the
                # solution; with no human step either, labelling stopped at this step (phase 2's
                # "found_error": its first completion is the pre-generated step that holds the error)
                human = st.get("human_completion")
                text = human.get("text") if isinstance(human, dict) else human
                if isinstance(text, str) and text.strip():
                    raw.append({"text": text, "rating": 1})
                    continue
                if human is not None:
                    raise DataError(f"{where}: step {k}: field 'human_completion' must be null or a step with a "
                                    f"'text' string, got {describe(human)}")
                raw.append(comps[0])
                break  # the trajectory ends where labelling stopped
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(comps):
                raise DataError(f"{where}: step {k}: field 'chosen_completion' {describe(i)} must be the index of one "
                                f"of its {len(comps)} completions, 0..{len(comps) - 1}, or null")
            raw.append(comps[i])
    else:
        problem, raw = row.get("problem"), row.get("steps")
    if not isinstance(problem, str):
        raise DataError(f"{where}: PRM800K rows need a problem string")
    if isinstance(raw, str):  # a whole solution in one string: which separator splits it is the caller's call
        raise DataError(f"{where}: field 'steps' is one string ({describe(raw)}), not a list of steps: split the "
                        "solution into its steps first, e.g. [\"step 1\", \"step 2\"] (ProcessBench) or "
                        "[{\"text\": ..., \"rating\": 1}, ...] (PRM800K)")
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{where}: field {field_name!r} must be a non-empty list of steps (strings, or PRM800K "
                        f"{{text, rating}} objects), got {describe(raw)}")
    steps, labels = [], []
    for k, st in enumerate(raw):
        if not isinstance(st, dict) or not isinstance(st.get("text"), str):
            raise DataError(f"{where}: step {k} must be an object with a 'text' string")
        r = st.get("rating")
        if r not in rating_map or isinstance(r, bool):
            raise DataError(f"{where}: step {k}: rating {describe(r)} must be -1, 0 or 1")
        steps.append(st["text"])
        labels.append(rating_map[r])
    return StepExample(problem, steps, labels, _first_error(labels))


def _from_processbench(row: dict, where: str) -> StepExample:
    problem = row.get("problem")
    if not isinstance(problem, str):
        raise DataError(f"{where}: field 'problem' must be a string, got {describe(problem)}")
    steps = _steps(row.get("steps"), where)
    label = row.get("label")
    if label is None and row.get("labels") is not None:  # per-step labels: they used to be dropped silently
        if not isinstance(row["labels"], (list, tuple)) or len(row["labels"]) != len(steps):
            raise DataError(f"{where}: {len(steps)} steps but labels is {describe(row['labels'])} (one label per "
                            "step; or a ProcessBench first-error index as 'label')")
        labels = [_label(v, f"{where}, step {k}") for k, v in enumerate(row["labels"])]
        first = UNKNOWN if all(y == IGNORE for y in labels) else _first_error(labels)
    elif label is None:
        first, labels = UNKNOWN, [IGNORE] * len(steps)
    elif isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise DataError(f"{where}: label {describe(label)} must be -1 (every step right) or the index of the first "
                        f"wrong step, 0..{len(steps) - 1}")
    elif label < 0:
        first, labels = -1, [1.0] * len(steps)
    else:  # steps after the first error are not judged
        first, labels = label, [1.0] * label + [0.0] + [IGNORE] * (len(steps) - label - 1)
    rid = row.get("id")
    rid = "" if rid is None else str(rid)
    subset = row.get("subset")
    subset = str(subset) if subset is not None else (rid.rsplit("-", 1)[0] if "-" in rid else "")
    return StepExample(problem, steps, labels, first, rid, subset)


def _plain(v: Any) -> Any:
    """``v`` with numpy arrays as lists and numpy scalars as Python numbers, at any depth. A DataFrame read from
    Parquet (``pd.read_parquet``, ``Dataset.to_pandas()``: how ProcessBench / PRM800K exports come back) holds its
    list columns as numpy arrays, and every row was refused ("steps must be a non-empty list ..., got array([...])");
    a label from ``np.argmax`` (numpy int64) was refused as "label 1 must be ... 0..1"."""
    if type(v).__module__ == "numpy" and hasattr(v, "tolist"):  # arrays, and scalars (np.argmax's int64 label)
        v = v.tolist()
        return [_plain(x) for x in v] if isinstance(v, list) else v
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def parse_row(row: dict, index: int, format: str = "auto", neutral: str = "ignore", tag: str = "ки") -> StepExample:
    """One record → :class:`StepExample` (``format``: auto | trl | math_shepherd | prm800k | processbench)."""
    where = f"row {index}"
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if neutral not in ("ignore", "good", "bad"):
        raise ValueError(f"neutral must be ignore | good | bad, got {neutral!r}")
    if not isinstance(row, dict):
        raise DataError(f"{where}: must be an object, got {describe(row)}")
    row = _plain(row)
    if format == "auto":
        if "completions" in row:
            format = "trl"
        elif "input" in row and "label" in row:
            format = "math_shepherd"
        elif isinstance(row.get("steps"), list) and row["steps"] and isinstance(row["steps"][0], str):
            format = "processbench"
        elif "steps" in row or "question" in row:
            format = "prm800k"
        else:
            raise DataError(f"{where}: unknown stepwise format (fields {sorted(row)[:8]}); expected TRL "
                            "(prompt, completions, labels), Math-Shepherd (input, label), ProcessBench "
                            "(problem, steps: [str], label) or PRM800K (problem, steps: [{text, rating}])")
    if format == "trl":
        return _from_trl(row, where)
    if format == "math_shepherd":
        return _from_math_shepherd(row, where, tag)
    if format == "processbench":
        return _from_processbench(row, where)
    return _from_prm800k(row, where, neutral)


def _in_file(source: Any, split: Optional[str], error: DataError) -> DataError:
    """``error`` (about "row i") prefixed with the file (and split) it is in, when ``source`` is a path:
    with ``--data`` and ``--eval-data`` a bare "row 3: ..." did not say which file holds the row."""
    if not isinstance(source, (str, os.PathLike)):
        return error
    return DataError(f"{os.fspath(source)}" + (f" (split {split!r})" if split else "") + f": {error}")


def read_step_examples(source, format: str = "auto", neutral: str = "ignore", split: Optional[str] = None) -> list[StepExample]:
    """Read a JSON / JSONL file, a saved ``datasets`` folder or a list of dicts (``split``: one split of a
    saved DatasetDict / a .json object of lists)."""
    rows = read_records(source, split=split)
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "data"
    if not rows:
        raise DataError(f"{name}: no rows" + (f" in split {split!r}" if split else ""))
    # MCTS self-training exports mix {"type": "trace"} and {"type": "pair"} rows: take the traces
    try:
        out = [parse_row(r, i, format, neutral) for i, r in enumerate(rows)
               if not (isinstance(r, dict) and r.get("type") == "pair")]
    except DataError as e:
        raise _in_file(source, split, e) from None
    if not out:  # else the first use fails far from here ("score_parts got no inputs")
        raise DataError(f"{name}: holds only PPM pair rows (type 'pair'), no stepwise solutions: read them with "
                        "read_pair_examples (CLI: prm train --objective ppm)")
    return out


def read_pair_examples(source, split: Optional[str] = None) -> list[PairExample]:
    """PPM pair rows ``{prompt, prefix, chosen, rejected, group}`` of a file, saved dataset or list of dicts
    (``split``: one split of a saved DatasetDict / a .json object of lists)."""
    rows = read_records(source, split=split)
    try:
        return _pair_examples(rows)
    except DataError as e:
        raise _in_file(source, split, e) from None


def _pair_examples(rows: list) -> list[PairExample]:
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DataError(f"row {i}: must be an object, got {describe(r)}")
        if r.get("type", "pair") != "pair":  # traces of a self-training export
            continue
        for name in ("prompt", "chosen", "rejected"):
            if not isinstance(r.get(name), str):
                raise DataError(f"row {i}: PPM pair rows need a string {name!r}")
        prefix = r.get("prefix", [])
        if not isinstance(prefix, list) or not all(isinstance(s, str) for s in prefix):
            raise DataError(f"row {i}: prefix must be a list of strings")
        group = r.get("group", i)
        # a group is an id: 1.7 or true must not quietly join group 1
        if isinstance(group, bool) or not isinstance(group, int):
            raise DataError(f"row {i}: field 'group' must be an integer (pairs of one problem share it), "
                            f"got {describe(group)}")
        out.append(PairExample(r["prompt"], prefix, r["chosen"], r["rejected"], group))
    if not out:
        raise DataError("no PPM pairs")
    return out


class StepCollator:
    """StepExamples → ``model.encode`` batch + ``labels`` (S,). Training truncates on purpose: steps past
    ``max_length`` are left out of the batch with their labels."""

    def __init__(self, model):
        self.model = model

    def __call__(self, examples: Sequence[StepExample]) -> dict[str, torch.Tensor]:
        batch = self.model.encode([e.problem for e in examples], [e.steps for e in examples], truncate=True)
        labels = [y for e, n in zip(examples, batch["lengths"].tolist()) for y in e.labels[:n]]
        batch["labels"] = torch.tensor(labels, dtype=torch.float32)
        return batch


class PairCollator:
    """PairExamples → one sequence per (prefix + step): chosen at even rows, rejected at odd rows.
    Only each sequence's last step is scored (``step_mask`` keeps that tag only)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, examples: Sequence[PairExample]) -> dict[str, torch.Tensor]:
        problems, steps = [], []
        for e in examples:
            for s in (e.chosen, e.rejected):
                problems.append(e.problem)
                steps.append(e.prefix + [s])
        batch = self.model.encode(problems, steps)
        mask = batch["step_mask"]
        last = mask.long().cumsum(1) == mask.sum(1, keepdim=True)  # tags from the last one on
        batch["step_mask"] = mask & last
        batch["lengths"] = batch["step_mask"].sum(1)
        n = len(examples)
        batch["pos_index"] = torch.arange(0, 2 * n, 2)
        batch["neg_index"] = torch.arange(1, 2 * n, 2)
        batch["pair_group"] = torch.tensor([e.group for e in examples], dtype=torch.long)
        return batch

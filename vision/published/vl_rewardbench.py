"""VL-RewardBench (Li et al., 2024) for VLM reward models, read in its released formats:

* ``data.jsonl`` (the GitHub release): ``id``, ``image_path`` (relative to the file's folder),
  ``query``, ``response`` (two answers), ``human_ranking`` (rank of each answer, 0 = preferred), …;
* ``test-00000-of-00001.parquet`` (the Hugging Face release): the same fields with ``image`` as
  ``{"bytes", "path"}``.

Each item becomes two :class:`~mmreward.core.inputs.Conversation` s — ``[user: image + query,
assistant: answer]`` — scored by the model; the item is correct when the preferred answer scores
strictly higher (a tie counts as wrong). Items are grouped as the benchmark's ``cal.py`` does (its
``get_dataset_from_id``: the id's prefix names the source set) into *general* (VLFeedback,
WildVision), *hallucination* (POVID, RLAIF-V, RLHF-V) and *reasoning* (MMMU-Pro, MathVerse);
reported in percent: each group's accuracy, the overall accuracy over all items and the macro
average of the three groups (Skywork-VL-Reward-7B: 66.0 / 80.0 / 61.0, overall 73.1, macro 69.0).
The summary also counts ``n_ties`` (items whose two answers score the same: wrong) and ``n_duplicates``
(rows repeating an earlier item's id, query and answers: counted once, as cal.py keys items); a NaN / inf
score, or a score count other than two per item, is an error naming the item.

    mmreward vision vl-rewardbench --model Skywork-VL-Reward-7B --data VL_RewardBench/data/data.jsonl \\
        --dtype bf16 --device cuda --out results.json
"""
from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from mmreward.core.data import DataError, describe
from mmreward.core.inputs import Conversation

GROUPS = {"vlfeedback": "general", "wildvision-battle": "general", "povid": "hallucination",
          "rlaif-v": "hallucination", "rlhf-v": "hallucination", "reasoning_tasks": "reasoning"}
GROUP_ORDER = ("general", "hallucination", "reasoning")
PREFIXES = {"RLAIF": "rlaif-v", "RLHF": "rlhf-v", "mathverse": "reasoning_tasks", "mmmu": "reasoning_tasks",
            "wildvision": "wildvision-battle", "hallucination": "povid"}


@dataclass
class VLRewardBenchItem:
    """One benchmark item: a query about an image, two answers and which one people preferred."""

    id: str
    query: str
    responses: tuple
    preferred: int  # index into responses of the answer ranked 0
    image: Any  # path or PIL image
    dataset: str  # source set (see GROUPS)

    def conversations(self) -> list[Conversation]:
        return [Conversation([{"role": "user", "content": self.query}, {"role": "assistant", "content": r}],
                             [self.image]) for r in self.responses]


def source_dataset(item_id: str) -> str:
    """The source set of an item id, as VL-RewardBench's ``cal.py`` (``get_dataset_from_id``) reads it:
    the text before the first ``_`` or ``-``."""
    cuts = [i for i in (item_id.find("_"), item_id.find("-")) if i != -1]
    return PREFIXES.get(item_id[:min(cuts)] if cuts else item_id, "vlfeedback")


def _item(row: Any, where: str, base: str) -> VLRewardBenchItem:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {describe(row)}")
    missing = [k for k in ("id", "query", "response", "human_ranking") if k not in row]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing} (a VL-RewardBench row has id, query, response, "
                        "human_ranking and image_path or image)")
    # each field is checked as it is, not coerced: list("ab") would be two answers, int(0.9) a rank of
    # 0, str(None) a query "None"
    responses, ranking, item_id, query = row["response"], row["human_ranking"], row["id"], row["query"]
    if not isinstance(responses, (list, tuple)) or len(responses) != 2 or \
            not all(isinstance(r, str) for r in responses):
        raise DataError(f"{where}: field 'response' must hold two answers (a list of two strings), "
                        f"got {describe(responses)}")
    if not isinstance(ranking, (list, tuple)) or sorted(r if _is_int(r) else -1 for r in ranking) != [0, 1]:
        raise DataError(f"{where}: field 'human_ranking' must rank the two answers: a list holding the integers 0 "
                        f"(preferred) and 1, got {describe(ranking)}")
    if not (isinstance(item_id, str) and item_id) and not _is_int(item_id):
        raise DataError(f"{where}: field 'id' must be a non-empty string, got {describe(item_id)}")
    if not isinstance(query, str):
        raise DataError(f"{where}: field 'query' must be a string, got {describe(query)}")
    return VLRewardBenchItem(str(item_id), query, tuple(responses), list(ranking).index(0),
                             _image(row, where, base), source_dataset(str(item_id)))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _image(row: dict, where: str, base: str) -> Any:
    image = row.get("image")
    if isinstance(image, dict) and image.get("bytes"):  # the parquet release: encoded image bytes
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(image["bytes"])) as im:
                im.load()  # decoded now (bad bytes fail here, by row), in its own mode: the model's
                return im.copy()  # processor makes it RGB as it does a file (Qwen-VL: RGBA over white)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"{where}: field 'image' holds bytes that are not an image: {e}") from e
    path = row.get("image_path") or (image if isinstance(image, str) else None)
    if not isinstance(path, str):
        raise DataError(f"{where}: no image (field 'image_path', or 'image' with bytes)")
    path = path if os.path.isabs(path) else os.path.join(base, path)
    if not os.path.isfile(path):
        raise DataError(f"{where}: image file {path!r} does not exist (image paths are relative to the data file)")
    return path


def read_vl_rewardbench(path: str, limit: Optional[int] = None, split: Optional[str] = None) -> list[VLRewardBenchItem]:
    """The items of a released VL-RewardBench file (``.jsonl`` / ``.json`` / ``.parquet``); the first
    ``limit`` only when given (``split``: one list of a .json object of lists). A bad row raises
    DataError naming the file and the row."""
    if limit is not None and (not _is_int(limit) or limit < 1):  # a slice would read -1 as "all but the last"
        raise ValueError(f"limit must be an integer >= 1 (or None: every row), got {limit!r}")
    from mmreward.vision.scoring import user_path

    path = user_path(path)  # "~/vlrb/data.jsonl": its images are read beside that file
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VL-RewardBench file {path!r} does not exist")
    if path.endswith(".parquet"):
        if split:
            raise DataError(f"{path} is a parquet file, not a set of splits: leave the split out")
        from mmreward.core.extras import needs_extra

        with needs_extra("published", what="reading the parquet release"):  # a broken pyarrow: its own error
            import pyarrow.parquet as pq
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise DataError(f"cannot read {path} as parquet: {e}") from e
    else:
        from mmreward.core.data import read_records

        rows = read_records(path, split=split)
    if not rows:
        raise DataError(f"{path} holds no rows" + (f" in split {split!r}" if split else ""))
    rows = rows[:limit] if limit is not None else rows
    base = os.path.dirname(os.path.abspath(path))
    return [_item(row, f"{path}: row {i}", base) for i, row in enumerate(rows)]


def evaluate_vl_rewardbench(model: Any, items: Sequence[VLRewardBenchItem], batch_size: int = 8) -> dict:
    """``{"summary": accuracies in percent, "items": per-item scores}`` of a reward model that scores
    :class:`~mmreward.core.inputs.Conversation` s (see the module docstring)."""
    if Conversation not in getattr(model, "input_types", ()):
        raise TypeError(f"{type(model).__name__} does not score Conversation inputs: VL-RewardBench needs a VLM "
                        "reward model")
    from mmreward.core.model import check_batch_size

    check_batch_size(batch_size)
    if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__iter__"):
        raise TypeError(f"items must be a list of VLRewardBenchItem (read_vl_rewardbench(path)), got "
                        f"{type(items).__name__}")
    items = list(items)  # a generator would be used up by the conversations and leave nothing to count
    if not items:
        raise ValueError("no VL-RewardBench items to evaluate")
    for i, item in enumerate(items):
        if not isinstance(item, VLRewardBenchItem):
            raise TypeError(f"items[{i}] is a {type(item).__name__}, not a VLRewardBenchItem (read rows with "
                            "read_vl_rewardbench)")
        if not (isinstance(item.responses, (list, tuple)) and len(item.responses) == 2) or item.preferred not in (0, 1) \
                or isinstance(item.preferred, bool) or item.dataset not in GROUPS:
            raise ValueError(f"items[{i}] (id {item.id!r}): needs two responses, preferred 0 or 1 and a dataset in "
                             f"{sorted(GROUPS)}; got {len(item.responses) if hasattr(item.responses, '__len__') else item.responses!r} "
                             f"responses, preferred {item.preferred!r}, dataset {item.dataset!r}")
    convs = [c for item in items for c in item.conversations()]
    with torch.no_grad():
        raw = model.score(convs, batch_size=batch_size)
    scores = _check_scores(raw, items)  # (N, 2): one row per item
    # cal.py keys an item by id + query + its two answers (sorted) and counts a key once: a row given
    # twice (a file concatenated with itself) is one item, not twice its weight
    results, correct, total, seen, n_ties, n_dup = [], {}, {}, set(), 0, 0
    for item, (a, b) in zip(items, scores.tolist()):
        pair = (a, b)
        ok = pair[item.preferred] > pair[1 - item.preferred]  # strictly higher: a tie is wrong
        key = (item.id, item.query, tuple(sorted(item.responses)))
        duplicate = key in seen
        seen.add(key)
        if duplicate:
            n_dup += 1
        else:
            n_ties += int(a == b)
            correct[item.dataset] = correct.get(item.dataset, 0) + int(ok)
            total[item.dataset] = total.get(item.dataset, 0) + 1
        results.append({"id": item.id, "dataset": item.dataset, "scores": [round(a, 6), round(b, 6)],
                        "preferred": item.preferred, "correct": ok, **({"duplicate": True} if duplicate else {})})
    if n_dup:
        warnings.warn(f"VL-RewardBench: {n_dup} item(s) repeat an earlier item (same id, query and answers); each "
                      "is counted once, as the benchmark's cal.py counts them", stacklevel=2)
    summary = summarise(correct, total)
    summary["n_ties"] = n_ties  # counted wrong (the preferred answer must score strictly higher)
    summary["n_duplicates"] = n_dup
    return {"summary": summary, "items": results}


def _check_scores(raw: Any, items: Sequence[VLRewardBenchItem]) -> torch.Tensor:
    """The model's 2N scores as (N, 2), or one error naming what is wrong: a count other than two per item
    (zip would drop the last items silently) or a NaN / inf score (NaN compares false both ways and would be
    counted wrong without a word; text RewardBench refuses it too)."""
    try:
        scores = torch.as_tensor(raw).detach().to("cpu", torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{type(raw).__name__} from the model's score() is not a tensor of scores ({e})") from None
    if scores.numel() != 2 * len(items):
        raise ValueError(f"the model returned {scores.numel()} scores for {len(items)} VL-RewardBench items "
                         f"({2 * len(items)} conversations: two answers each)")
    scores = scores.view(-1, 2)
    bad = (~torch.isfinite(scores)).any(1).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        raise ValueError(f"the model returned a non-finite score ({scores[i].tolist()}) for {len(bad)} of "
                         f"{len(items)} VL-RewardBench item(s), first items[{i}] (id {items[i].id!r}): "
                         "an accuracy over it would be wrong")
    return scores


def summarise(correct: dict, total: dict) -> dict:
    """Per-source and per-group accuracies, overall accuracy and the macro average over the groups
    present, in percent (cal.py's ``distribution_dataset``). The benchmark's macro average is over all three
    groups: with one missing (``--limit``) the figure is over the others, ``macro_groups`` lists them and a
    warning says so."""
    group_c, group_t = {}, {}
    for ds, n in total.items():
        g = GROUPS[ds]
        group_c[g], group_t[g] = group_c.get(g, 0) + correct[ds], group_t.get(g, 0) + n
    pct = lambda c, t: round(100.0 * c / t, 2)  # noqa: E731
    groups = [g for g in GROUP_ORDER if g in group_t]
    out = {g: pct(group_c[g], group_t[g]) for g in groups}
    out["overall_accuracy"] = pct(sum(group_c.values()), sum(group_t.values()))
    out["macro_average"] = round(sum(100.0 * group_c[g] / group_t[g] for g in groups) / len(groups), 2)
    out["macro_groups"] = groups
    if len(groups) < len(GROUP_ORDER):
        warnings.warn(f"VL-RewardBench: no items of group(s) {[g for g in GROUP_ORDER if g not in group_t]}; the "
                      f"macro average is over {groups} only, not the benchmark's three groups", stacklevel=3)
    out["datasets"] = {ds: pct(correct[ds], total[ds]) for ds in sorted(total)}
    out["n"] = sum(total.values())
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``mmreward vision vl-rewardbench``: accuracies of a VLM reward model on VL-RewardBench."""
    from mmreward.core.cli_config import CLIParser, add_split_options

    p = CLIParser(prog="mmreward vision vl-rewardbench", description="evaluate a VLM reward model on VL-RewardBench")
    p.add_argument("--model", required=True, help="a VLM reward model folder (Skywork-VL-Reward, vlm_reward, …)")
    p.add_argument("--data", required=True, help="the released data.jsonl (images beside it) or the test parquet")
    add_split_options(p, "--data")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N items only")
    p.add_argument("--batch-size", type=int, default=8, help="conversations per forward pass")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    p.add_argument("--dtype", default=None, help="cast the model: fp32 | bf16 | fp16 (default: as saved)")
    p.add_argument("--out", default=None, help="write the summary and per-item scores here (JSON)")
    args = p.parse_args(argv)
    from mmreward.vision.scoring import user_path

    args.out = user_path(args.out, output=True)
    from mmreward.core.model import check_batch_size

    check_batch_size(args.batch_size)  # refused before the data and the model are read, as in evaluate_vl_rewardbench
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    from mmreward.core.cli_config import check_output_file

    check_output_file(args.out, "--out", [("--data", args.data)])
    from mmreward.core.folders import atomic_write_text

    items = read_vl_rewardbench(args.data, args.limit, args.split)
    import mmreward

    model = mmreward.load(args.model, device=args.device, dtype=args.dtype)
    result = evaluate_vl_rewardbench(model, items, args.batch_size)
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"]))
    return 0


__all__ = ["VLRewardBenchItem", "read_vl_rewardbench", "evaluate_vl_rewardbench", "source_dataset", "summarise",
           "GROUPS", "main"]

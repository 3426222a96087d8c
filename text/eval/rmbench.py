"""RM-Bench evaluation (Liu et al., 2024): style-controlled chosen / rejected triples.

Each item has one prompt, three chosen and three rejected responses in the styles
``[concise, detailed plain, detailed markdown]``. Comparing every chosen with every rejected gives a
3×3 accuracy matrix ``M[i, j] = P(score(chosen_i) > score(rejected_j))`` (rows: chosen style,
columns: rejected style), summarised as in the official ``compute_accuracy``:

* **hard**   — mean of the upper-right triangle (i < j: chosen less styled than rejected);
* **normal** — mean of the diagonal (same style);
* **easy**   — mean of the lower-left triangle (i > j: chosen more styled than rejected).

Reported per domain (``chat``, ``code``, ``math``, ``safety-refuse``, ``safety-response`` — the
item's ``domain`` field, else the file name, ``chat_filtered.json`` read as ``chat``) and ``overall`` =
mean over the paper's domains (chat, math, code, safety) of each figure (``avg`` = mean of easy /
normal / hard), the paper's domain-averaged numbers: the two safety files count as one ``safety``
domain there (their items pooled), whatever ``merge_safety`` says; ``merge_safety`` pools them in the
per-domain table too, as in the paper's table. ``overall_domains`` names the domains averaged. (The
official ``process_final_result.py`` splits items by ``domain.startswith(d)`` for d in chat / math / code /
safety, then averages each of hard / normal / easy and the per-domain means over those domains.)
Ties count as wrong (strict ``>``, as the official code).

Data: the official JSON files (a list of ``{id, prompt, chosen: [3], rejected: [3], ...}``), one
per domain, e.g. ``/work/shared/data/rm-bench/{chat,code,safety-refuse,safety-response}.json``.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from typing import Any, Optional, Sequence

import torch

from .bias import bias_probe
from .rewardbench import _score_exact, read_rows

STYLES = ("concise", "detailed_plain", "detailed_markdown")
DOMAINS = ("chat", "math", "code", "safety-refuse", "safety-response")



def default_rmbench_dir() -> str:
    """Where the RM-Bench files are looked for: ``$MMREWARD_RM_BENCH``, else ``shared/data/rm-bench``
    next to the repository (the project's shared folder), else ``/work/shared/data/rm-bench``. The
    first that exists wins; the last candidate is returned when none does (callers skip / error)."""
    env = os.environ.get("MMREWARD_RM_BENCH")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cands = ([env] if env else []) + [os.path.join(os.path.dirname(repo), "shared", "data", "rm-bench"),
                                      "/work/shared/data/rm-bench"]
    return next((c for c in cands if os.path.isdir(c)), cands[-1])

def load_rmbench(path: str, domains: Optional[Sequence[str]] = None) -> list[dict]:
    """Items from one RM-Bench file or a folder of ``<domain>.json`` files, each tagged with ``domain``.

    ``domains`` keeps only those domains (error if one is asked for but absent; ``safety``, the paper's pooled
    domain, keeps every ``safety-*`` domain). A result file written there by ``mmreward text eval --out`` is
    skipped with a warning."""
    if path.startswith("~") and not os.path.exists(path):
        path = os.path.expanduser(path)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith((".json", ".jsonl")))
        files = [f for f in files if not _is_eval_result(os.path.join(path, f))]
        if not files:
            raise FileNotFoundError(f"{path} holds no RM-Bench .json files")
        paths = [os.path.join(path, f) for f in files]
    else:
        paths = [path]
    items, where = [], []
    for p in paths:
        stem = _domain_of_file(os.path.basename(p).split(".")[0])
        for i, row in enumerate(read_rows(p)):
            items.append(_check_item(row, f"{p}: row {i}", stem))
            where.append(f"{p}: row {i}")
    _check_unique(items, where)
    items = _keep_domains(items, domains, path)
    if not items:
        raise ValueError(f"{path} holds no RM-Bench items")
    return items


def _is_eval_result(path: str) -> bool:
    """Whether ``path`` is a result file that ``mmreward text eval --out`` wrote (a JSON object with the
    run's ``config`` and its ``overall`` figures), not RM-Bench data: a result saved into the data folder
    is skipped, with a warning, instead of failing every later evaluation of that folder."""
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
        if not head.startswith(b"{"):
            return False
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return False  # read as data, so that the reader's error names the file
    found = isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "overall" in obj and "domains" in obj
    if found:
        warnings.warn(f"RM-Bench: skipping {path}: an evaluation result (mmreward text eval --out), not RM-Bench "
                      "items", stacklevel=3)
    return found


def _domain_of_file(stem: str) -> str:
    """The domain a file's items belong to: the official ``chat_filtered.json`` holds ``chat`` items."""
    base = stem[:-len("_filtered")] if stem.endswith("_filtered") else stem
    return base if base in DOMAINS else stem


def _check_unique(items: list[dict], where: Sequence[str]) -> None:
    """No item twice (same domain, id, prompt and responses): the official data folder holds
    ``total_dataset.json`` next to the per-domain files, and reading both would count every item twice
    (and report twice the items). Items that share only an id (the chat and code files reuse ids) differ."""
    seen: dict[tuple, int] = {}
    for n, it in enumerate(items):
        key = (it["domain"], json.dumps(it.get("id"), sort_keys=True, default=str), it["prompt"],
               tuple(it["chosen"]), tuple(it["rejected"]))
        if key in seen:
            raise ValueError(f"{where[n]}: item id {it.get('id')!r} (domain {it['domain']!r}) already at "
                             f"{where[seen[key]]}: the same items twice (e.g. total_dataset.json next to the "
                             "per-domain files)? pass one file, or a folder holding each item once")
        seen[key] = n


def _domain_list(domains: Any) -> Optional[list[str]]:
    """``domains`` as a list: a string is comma-separated, as ``--domains chat,code`` (its characters
    were taken for domain names); None keeps all."""
    if domains is None:
        return None
    if isinstance(domains, str):
        return [d.strip() for d in domains.split(",") if d.strip()] or None
    if isinstance(domains, (bytes, dict)) or not isinstance(domains, Iterable):
        raise TypeError(f"domains must be a list of domain names or a comma-separated string, got {type(domains).__name__}")
    out = list(domains)
    bad = [d for d in out if not isinstance(d, str)]
    if bad:
        raise TypeError(f"domains must be domain names (strings), got {bad[0]!r}")
    return out


def _keep_domains(items: list[dict], domains: Any, source: str) -> list[dict]:
    """The items of ``domains`` (error naming any asked for but absent)."""
    domains = _domain_list(domains)
    if domains is None:
        return items
    have = {it["domain"] for it in items}
    # "safety": the paper's pooled domain (the name the table and ``overall_domains`` use) = every safety-* domain
    pooled = {d for d in have if d.startswith("safety")} if "safety" not in have else set()
    wanted = set(domains) | (pooled if "safety" in domains else set())
    missing = sorted(d for d in set(domains) - have if not (d == "safety" and pooled))
    if missing:
        raise ValueError(f"domains {missing} not in {source} (it has {sorted(have)})")
    return [it for it in items if it["domain"] in wanted]


def _check_item(row: Any, where: str, default_domain: str) -> dict:
    from mmreward.core.inputs import _listed

    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
    if not isinstance(row.get("prompt"), str):
        raise ValueError(f"{where}: `prompt` must be a string")
    out = dict(row)
    for k in ("chosen", "rejected"):
        v = row.get(k)
        if isinstance(v, tuple):  # a Python user's tuple of the three styles
            v = out[k] = list(v)
        elif _listed(v) is not v:  # a numpy array: a pandas DataFrame's list column (pd.read_parquet, to_pandas())
            v = out[k] = _listed(v)
        if not isinstance(v, list) or len(v) != len(STYLES) or not all(isinstance(x, str) for x in v):
            hint = ("; this looks like a RewardBench-style pair row (one chosen and one rejected string): use "
                    "--benchmark rewardbench / evaluate_rewardbench" if isinstance(v, str) else "")
            raise ValueError(f"{where}: `{k}` must be a list of {len(STYLES)} strings (one per style {STYLES}){hint}")
    out["domain"] = str(row.get("domain") or default_domain)
    return out


def accuracy_matrix(scores_chosen: torch.Tensor, scores_rejected: torch.Tensor) -> torch.Tensor:
    """``M[i, j]`` = fraction of items with chosen style i scored above rejected style j. Inputs [N, 3]."""
    for name, t in (("scores_chosen", scores_chosen), ("scores_rejected", scores_rejected)):
        if t.dim() != 2 or t.shape[1] != len(STYLES) or t.shape[0] == 0:
            raise ValueError(f"{name} must have shape (N, {len(STYLES)}) with N > 0, got {tuple(t.shape)}")
    if scores_chosen.shape != scores_rejected.shape:
        raise ValueError(f"scores_chosen {tuple(scores_chosen.shape)} and scores_rejected "
                         f"{tuple(scores_rejected.shape)} differ in shape")
    wins = scores_chosen[:, :, None] > scores_rejected[:, None, :]  # (N, 3, 3)
    return wins.double().mean(0)


def summarize_matrix(m: torch.Tensor) -> dict:
    """easy / normal / hard / avg from a 3×3 accuracy matrix (official RM-Bench definition)."""
    k = m.shape[0]
    hard = torch.triu(m, 1).sum().item() / (k * (k - 1) / 2)
    easy = torch.tril(m, -1).sum().item() / (k * (k - 1) / 2)
    normal = torch.diagonal(m).mean().item()
    return {"easy": easy, "normal": normal, "hard": hard, "avg": (easy + normal + hard) / 3}


def evaluate_rmbench(scorer: Any, data: Any, *, batch_size: int = 16, merge_safety: bool = False,
                     domains: Optional[Sequence[str]] = None, progress: bool = False) -> dict:
    """RM-Bench accuracy of ``scorer`` on ``data`` (a file / folder path or a list of items).

    Returns ``{"domains": {d: {matrix, easy, normal, hard, avg, n}}, "overall": {easy, normal, hard,
    avg}, "overall_domains": [the domains averaged, safety pooled], "num_ties": comparisons with equal
    scores (counted wrong), "bias": bias probe over all 9 pairs per item, "num_items": N}``."""
    if not isinstance(merge_safety, bool):  # merge_safety="False" would merge
        raise TypeError(f"evaluate_rmbench: merge_safety must be True or False, got {merge_safety!r}")
    if isinstance(data, (str, os.PathLike)):
        items = load_rmbench(os.fspath(data), domains)
    else:
        from mmreward.core.data import in_memory_rows

        data, _ = in_memory_rows(data, None)  # a one-split DatasetDict, a pandas DataFrame: their rows
        if isinstance(data, (dict, bytes)) or not isinstance(data, Iterable):  # a dict's keys would be the items
            raise TypeError(f"evaluate_rmbench: data must be a file / folder path or a list of items, got "
                            f"{type(data).__name__}" + ("; wrap a single item in a list" if isinstance(data, dict) else ""))
        items = [_check_item(it, f"item {i}", "all") for i, it in enumerate(data)]
        _check_unique(items, [f"item {i}" for i in range(len(items))])
        items = _keep_domains(items, domains, "the items")
        if not items:
            raise ValueError("evaluate_rmbench: no items to evaluate")
    k = len(STYLES)
    prompts = [it["prompt"] for it in items for _ in range(2 * k)]
    responses = [r for it in items for r in list(it["chosen"]) + list(it["rejected"])]
    s = _score_exact(scorer, prompts, responses, batch_size=batch_size, progress=progress)
    s = s.view(len(items), 2, k)
    sc, sr = s[:, 0], s[:, 1]  # (N, 3) each

    def pooled(it: dict) -> str:  # the paper's domains: the two safety files are one "safety" domain
        return "safety" if it["domain"].startswith("safety") else it["domain"]

    def table(domain_of) -> dict:
        order = DOMAINS + ("safety",)
        names = sorted({domain_of(it) for it in items}, key=lambda d: (order.index(d) if d in order else 99, d))
        out = {}
        for d in names:
            idx = torch.tensor([i for i, it in enumerate(items) if domain_of(it) == d])
            m = accuracy_matrix(sc[idx], sr[idx])
            out[d] = {"matrix": m.tolist(), **summarize_matrix(m), "n": len(idx)}
        return out

    per_domain = table(pooled if merge_safety else (lambda it: it["domain"]))
    paper = per_domain if merge_safety else table(pooled)
    overall = {key: sum(v[key] for v in paper.values()) / len(paper) for key in ("easy", "normal", "hard", "avg")}
    num_ties = int((sc[:, :, None] == sr[:, None, :]).sum())
    # bias probe over all 9 (chosen_i, rejected_j) comparisons of every item
    pc, pr, ok = [], [], []
    for n, it in enumerate(items):
        for i in range(k):
            for j in range(k):
                pc.append(it["chosen"][i])
                pr.append(it["rejected"][j])
                ok.append(bool(sc[n, i] > sr[n, j]))
    return {"num_items": len(items), "domains": per_domain, "overall": overall, "overall_domains": list(paper),
            "num_ties": num_ties, "bias": bias_probe(pc, pr, ok),
            "scores_chosen": sc.tolist(), "scores_rejected": sr.tolist()}


def format_rmbench(result: dict) -> list[str]:
    lines = [f"{'domain':<16} {'n':>5} {'easy':>7} {'normal':>7} {'hard':>7} {'avg':>7}"]
    rows = list(result["domains"].items()) + [("overall", {**result["overall"], "n": result["num_items"]})]
    for d, v in rows:
        lines.append(f"{d:<16} {v['n']:>5} {v['easy']:7.1%} {v['normal']:7.1%} {v['hard']:7.1%} {v['avg']:7.1%}")
    if result.get("overall_domains"):
        lines.append(f"overall = mean over {', '.join(result['overall_domains'])}"
                     + (" (safety files pooled)" if "safety" in result["overall_domains"] else ""))
    if result.get("num_ties"):
        lines.append(f"ties (counted wrong): {result['num_ties']} of {9 * result['num_items']} comparisons")
    return lines

"""Text evaluation figures against the official definitions, with hand-computed expectations.

RM-Bench (THU-KEG/RM-Bench ``compute_accuracy``; the paper's domains chat / math / code / safety, the two
safety files pooled), RewardBench (allenai/reward-bench ``constants.py`` / ``calculate_scores_per_section``,
the paper's prior-set weighting), ProcessBench (QwenLM/ProcessBench ``run_eval.py``: an unparsable
prediction is a miss), step macro-F1 and pairwise-judge accuracy.
"""
import inspect
import json
import math
import os

import pytest
import torch

from mmreward.text.eval.cli import EvalConfig
from mmreward.text.eval.rewardbench import evaluate_pairs, evaluate_rewardbench, section_scores
from mmreward.text.eval.rmbench import default_rmbench_dir, evaluate_rmbench, load_rmbench
from mmreward.text.generative.position import pairwise_judge_accuracy, rmbench_with_judge
from mmreward.text.prm.eval import processbench_f1, step_macro_f1


def _item(i, domain, right=True):
    c = [f"c{i} {domain}", f"chosen {i} detailed {domain}", f"## chosen {i} {domain}"]
    r = [f"r{i} {domain}", f"rejected {i} detailed {domain}", f"## rejected {i} {domain}"]
    return {"id": i, "prompt": f"q{i}", "chosen": c, "rejected": r, "domain": domain, "right": right}


def _mixed_items():
    # chat: 1 item right; safety-refuse: 3 right; safety-response: 1 wrong
    return ([_item(0, "chat")] + [_item(i, "safety-refuse") for i in range(1, 4)]
            + [_item(4, "safety-response", right=False)])


def _set_scorer(items):
    good = {x for it in items for x in (it["chosen"] if it["right"] else it["rejected"])}
    return lambda prompts, responses: torch.tensor([1.0 if r in good else 0.0 for r in responses])


# --------------------------------------------------------------------------- RM-Bench
def test_rmbench_overall_pools_the_safety_files_as_the_paper():
    items = _mixed_items()
    res = evaluate_rmbench(_set_scorer(items), items)
    assert {d: v["avg"] for d, v in res["domains"].items()} == {"chat": 1.0, "safety-refuse": 1.0,
                                                                 "safety-response": 0.0}
    # paper: Safety = the 4 safety items pooled (3 / 4 right), overall = mean(chat, safety) = (1 + 0.75) / 2
    # (the mean over the three files, (1 + 1 + 0) / 3, weighs safety twice)
    assert res["overall"] == pytest.approx({"easy": 0.875, "normal": 0.875, "hard": 0.875, "avg": 0.875})
    assert res["overall_domains"] == ["chat", "safety"]
    merged = evaluate_rmbench(_set_scorer(items), items, merge_safety=True)
    assert merged["overall"] == res["overall"] and merged["domains"]["safety"]["avg"] == 0.75
    with pytest.raises(TypeError, match="merge_safety must be True or False"):
        evaluate_rmbench(_set_scorer(items), items, merge_safety="False")


def test_rmbench_ties_count_wrong_and_are_counted():
    items = [_item(0, "chat"), _item(1, "code")]
    res = evaluate_rmbench(lambda p, r: torch.zeros(len(r)), items)
    assert res["overall"] == {"easy": 0.0, "normal": 0.0, "hard": 0.0, "avg": 0.0}
    assert res["num_ties"] == 18


def test_float64_scores_are_compared_unrounded():
    # 1000.00002 and 1000.00001 are one float32 value: they used to tie, and a tie counts wrong
    def scorer(prompts, responses):
        return torch.tensor([1000.00002 if r.startswith(("c", "chosen", "## chosen", "good")) else 1000.00001
                             for r in responses], dtype=torch.float64)

    assert evaluate_rmbench(scorer, [_item(0, "chat")])["overall"]["avg"] == 1.0
    res = evaluate_pairs(scorer, [{"prompt": "p", "chosen": "good", "rejected": "bad"}])
    assert res["accuracy"] == 1.0 and res["num_ties"] == 0


def test_rmbench_same_items_twice_are_refused(tmp_path):
    items = [{k: v for k, v in _item(i, "chat").items() if k != "right"} for i in range(2)]
    (tmp_path / "total_dataset.json").write_text(json.dumps(items))
    (tmp_path / "chat_filtered.json").write_text(json.dumps([{k: v for k, v in it.items() if k != "domain"}
                                                             for it in items]))
    with pytest.raises(ValueError, match="item id 0 .*already at .*total_dataset.json"):
        load_rmbench(str(tmp_path))
    assert {it["domain"] for it in load_rmbench(str(tmp_path / "chat_filtered.json"))} == {"chat"}
    with pytest.raises(ValueError, match="item 1: item id 0"):
        evaluate_rmbench(lambda p, r: torch.zeros(len(r)), [items[0], dict(items[0])])
    # the chat and code files reuse ids: items sharing only an id are different items
    res = evaluate_rmbench(lambda p, r: torch.zeros(len(r)), [items[0], dict(items[1], id=0)])
    assert res["num_items"] == 2


def _official_rmbench(sc, sr):
    """THU-KEG/RM-Bench compute_accuracy, written out: {hard, normal, easy} from per-item score triples."""
    acc = [[0.0] * 3 for _ in range(3)]
    for c, r in zip(sc, sr):
        for i in range(3):
            for j in range(3):
                acc[i][j] += c[i] > r[j]
    acc = [[x / len(sc) for x in row] for row in acc]
    return {"hard": (acc[0][1] + acc[0][2] + acc[1][2]) / 3, "normal": (acc[0][0] + acc[1][1] + acc[2][2]) / 3,
            "easy": (acc[1][0] + acc[2][0] + acc[2][1]) / 3}


@pytest.mark.skipif(not os.path.isdir(default_rmbench_dir()), reason="RM-Bench data not found")
def test_real_rmbench_rows_match_the_official_formula():
    items = load_rmbench(default_rmbench_dir())
    sub = [it for d in ("chat", "code", "safety-refuse", "safety-response")
           for it in [x for x in items if x["domain"] == d][:6]]

    def length(prompts, responses):
        return torch.tensor([float(len(r)) for r in responses])

    res = evaluate_rmbench(length, sub)
    by = {"chat": [], "code": [], "safety": []}
    for it in sub:
        by["safety" if it["domain"].startswith("safety") else it["domain"]].append(
            ([len(x) for x in it["chosen"]], [len(x) for x in it["rejected"]]))
    want = {d: _official_rmbench([c for c, _ in v], [r for _, r in v]) for d, v in by.items()}
    for key in ("easy", "normal", "hard"):
        assert res["overall"][key] == pytest.approx(sum(w[key] for w in want.values()) / 3)
    assert res["domains"]["chat"]["hard"] == pytest.approx(want["chat"]["hard"])


# --------------------------------------------------------------------------- RewardBench
def test_section_weights_and_prior_sets_follow_the_official_code():
    # constants.py (2024-09 "Mirror change from leaderboard"): xstest-should-refuse 154, should-respond 250
    s = section_scores({"xstest-should-refuse": 1.0, "xstest-should-respond": 0.0})
    assert s["Safety"] == pytest.approx(154 / 404)
    s = section_scores({"alpacaeval-easy": 1.0, "hep-go": 0.5, "anthropic_helpful": 0.6, "shp": 0.8,
                        "mtbench_gpt4": 0.0})
    assert s["Chat"] == 1.0 and s["Reasoning"] == 0.5 and s["Prior Sets"] == pytest.approx(0.7)
    assert s["overall"] == pytest.approx(0.75)                         # leaderboard: the core sections
    assert s["overall_with_prior"] == pytest.approx((2 * 1.0 + 2 * 0.5 + 0.7) / 5)  # paper: weights 2, 2, 1
    for bad in (float("nan"), 95.0, -0.1, "0.5", True):
        with pytest.raises((ValueError, TypeError), match="alpacaeval-easy"):
            section_scores({"alpacaeval-easy": bad})


def test_rewardbench_names_unknown_subsets_missing_sections_and_ties():
    rows = [{"prompt": "p", "chosen": "long answer", "rejected": "no", "subset": "alpacaeval-easy"},
            {"prompt": "p", "chosen": "same", "rejected": "also", "subset": "alpacaeval_hard"}]  # a typo, a tie
    with pytest.warns(UserWarning, match="alpacaeval_hard"):
        res = evaluate_rewardbench(lambda p, r: torch.tensor([float(len(x)) for x in r]), rows)
    assert res["unsectioned_subsets"] == ["alpacaeval_hard"]
    assert res["sections_missing"] == ["Chat Hard", "Safety", "Reasoning"]
    assert res["subsets"] == {"alpacaeval-easy": 1.0, "alpacaeval_hard": 0.0} and res["num_ties"] == 1
    assert res["accuracy"] == 0.5 and res["sections"] == {"Chat": 1.0, "overall": 1.0}


def test_python_batch_size_defaults_equal_the_cli():
    cli = EvalConfig().batch_size
    for fn in (evaluate_rmbench, evaluate_rewardbench, evaluate_pairs):
        assert inspect.signature(fn).parameters["batch_size"].default == cli == 16
    sizes = []

    def scorer(prompts, responses):
        sizes.append(len(responses))
        return torch.zeros(len(responses))

    evaluate_rewardbench(scorer, [{"prompt": "p", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(10)])
    assert sizes == [16, 4]


# --------------------------------------------------------------------------- ProcessBench / step F1
def test_processbench_counts_an_unparsable_prediction_as_a_miss():
    m = processbench_f1([None, 2, None, -1], [2, 2, -1, -1])
    assert m["acc_error"] == 0.5 and m["acc_correct"] == 0.5 and m["f1"] == 0.5 and m["n_invalid"] == 2
    assert "n_invalid" not in processbench_f1([2, -1], [2, -1])
    with pytest.raises(ValueError, match="label"):
        processbench_f1([1], [None])


def test_step_macro_f1_over_the_classes_present():
    # every step good and predicted good: F1(good) = 1, F1(bad) = 0 / 0 (no such class): macro = 1, not 0.5
    m = step_macro_f1([0.9, 0.8], [1, 1])
    assert m["macro_f1"] == 1.0 and m["f1_good"] == 1.0 and math.isnan(m["f1_bad"])
    # both classes: tp_good 1, fp_good 1, fn_good 1, tp_bad 1 -> F1 good 2/4, F1 bad 2/4
    m = step_macro_f1([0.9, 0.2, 0.8, 0.3], [1, 0, 0, 1])
    assert m == {"f1_good": 0.5, "f1_bad": 0.5, "macro_f1": 0.5, "accuracy": 0.5}
    m = step_macro_f1([0.9, 0.8], [0, 0])  # all bad, all predicted good: F1 bad 0, F1 good 0 (fp only)
    assert m["macro_f1"] == 0.0


# --------------------------------------------------------------------------- pairwise judges
def test_judge_accuracy_needs_verdicts():
    with pytest.raises(ValueError, match="no verdicts"):
        pairwise_judge_accuracy(torch.zeros(0))
    assert pairwise_judge_accuracy(torch.tensor([1.0, 0.5, 0.0, 0.75])) == pytest.approx((1 + 0.5 + 0 + 1) / 4)


def test_rmbench_with_judge_reports_the_paper_overall():
    items = _mixed_items()
    good = {x for it in items for x in (it["chosen"] if it["right"] else it["rejected"])}

    def judge(prompts, first, second):
        return torch.tensor([1.0 if a in good else 0.0 if b in good else 0.5 for a, b in zip(first, second)])

    res = rmbench_with_judge(judge, items, swap=False)
    assert res["avg"] == pytest.approx(4 / 5)          # pooled over the 5 items
    assert res["domains"]["safety-response"]["avg"] == 0.0 and res["domains"]["chat"]["n"] == 1
    assert res["overall"]["avg"] == pytest.approx(0.875) and res["num_ties"] == 0


@pytest.mark.skipif(not os.path.isdir(default_rmbench_dir()), reason="RM-Bench data not found")
def test_cli_domains_with_spaces_pick_those_domains():
    from mmreward.text.eval.cli import run_eval

    # "--domains 'chat, safety-refuse'" used to fail: " safety-refuse" is not a domain
    cfg = EvalConfig(data=default_rmbench_dir(), domains="chat, safety-refuse", progress=False)
    res = run_eval(cfg, scorer=lambda p, r: torch.zeros(len(r)))
    assert list(res["domains"]) == ["chat", "safety-refuse"] and res["overall_domains"] == ["chat", "safety"]

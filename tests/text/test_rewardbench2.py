"""RewardBench 2 evaluation (mmreward.text.eval.rewardbench2) against a transcription of the official
scoring (reward-bench scripts/run_v2.py: reroll_and_score_dataset, process_single_model)."""
import json
import math
import random

import numpy as np
import pytest

from mmreward.text.eval.rewardbench2 import check_rows2, evaluate_rewardbench2, ties_score


# ------------------------------------------------------------------ the official scoring, as published
def official_row_result(scores):
    scores = np.asarray(scores)
    max_val = np.max(scores)
    return (1 / np.sum(scores == max_val)) if scores[0] == max_val else 0


def official_ties(rows, scores):
    def stats(samples):
        correct = [s for ok, s in samples if ok]
        incorrect = [s for ok, s in samples if not ok]
        diff = max(correct) - min(correct) if len(correct) > 1 else None
        margin = min(correct) - max(incorrect)
        return margin > 0, diff, margin

    ref, tied = {}, {}
    for r, s in zip(rows, scores):
        kind, pid = r["id"].split(":")
        samples = [(i < r["num_correct"], x) for i, x in enumerate(s)]
        (ref if kind == "ref" else tied)[int(pid)] = stats(samples)
    ref_acc = np.mean([v[0] for v in ref.values()]) if ref else 0.0
    tied_acc = np.mean([v[0] for v in tied.values()]) if tied else 0.0
    both = set(ref) & set(tied)
    d = np.array([tied[p][1] for p in both], dtype=float)
    m_t = np.array([tied[p][2] for p in both], dtype=float)
    m_r = np.array([ref[p][2] for p in both], dtype=float)
    pref = np.mean(m_t > d)
    hard = np.mean(np.minimum(m_r, m_t) > d)
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.nan_to_num(np.tanh(np.minimum(m_r, m_t) / d - 1), nan=0.0)
    return 0.30 * tied_acc + 0.30 * ref_acc + 0.20 * pref + 0.20 * hard + 0.01 * float(np.mean(margin))


def ties_rows(n_prompts, rng, *, integer_scores=False):
    rows, scores = [], []
    for p in range(n_prompts):
        for kind, n_correct in (("ref", 1), ("tied", rng.randint(2, 5))):
            n_wrong = rng.randint(1, 4)
            rows.append({"id": f"{kind}:{p}", "prompt": f"q{p}", "subset": "Ties", "num_correct": n_correct,
                         "chosen": [f"c{p}{kind}{i}" for i in range(n_correct)],
                         "rejected": [f"r{p}{kind}{i}" for i in range(n_wrong)]})
            draw = (lambda: float(rng.randint(0, 3))) if integer_scores else (lambda: rng.gauss(0, 1))
            s = [draw() + (1.0 if i < n_correct else 0.0) for i in range(n_correct + n_wrong)]
            scores.append(s)
    return rows, scores


@pytest.mark.parametrize("seed,integers", [(0, False), (1, False), (2, True), (3, True)])
def test_ties_score_matches_the_official_formula(seed, integers):
    rng = random.Random(seed)
    rows, scores = ties_rows(40, rng, integer_scores=integers)  # integer scores: equal spreads, 0/0, x/0
    got = ties_score(rows, scores)
    assert got["prompts_with_both"] == 40
    assert got["score"] == pytest.approx(official_ties(rows, scores), abs=1e-12)


def test_ties_score_by_hand():
    rows = [{"id": "ref:0", "prompt": "p", "subset": "Ties", "chosen": ["a"], "rejected": ["x", "y"]},
            {"id": "tied:0", "prompt": "p", "subset": "Ties", "chosen": ["a", "b"], "rejected": ["x"]}]
    # ref: 3 vs (1, 2): accurate, margin 1; tied: (3, 2.5) vs 1: accurate, spread 0.5, margin 1.5
    got = ties_score(rows, [[3.0, 1.0, 2.0], [3.0, 2.5, 1.0]])
    assert got["ref_accuracy"] == got["tied_accuracy"] == 1.0
    assert got["correctness_preferred"] == got["correctness_preferred_hard"] == 1.0  # 1.5 > 0.5, min(1, 1.5) > 0.5
    assert got["correctness_margin_score"] == pytest.approx(math.tanh(1.0 / 0.5 - 1))
    assert got["score"] == pytest.approx(0.6 + 0.4 + 0.01 * math.tanh(1.0))


def test_best_of_n_rows_count_shared_maxima_as_the_official_code():
    rng = random.Random(0)
    rows, expected = [], {}
    for i in range(60):
        subset = ["Factuality", "Math", "Focus"][i % 3]
        rows.append({"prompt": f"q{i}", "subset": subset, "chosen": [f"good{i}"],
                     "rejected": [f"bad{i}-{j}" for j in range(3)]})
    table = {}
    for r in rows:  # integer scores: shared maxima happen
        for c in r["chosen"] + r["rejected"]:
            table[(r["prompt"], c)] = float(rng.randint(0, 3))
    for r in rows:
        s = [table[(r["prompt"], c)] for c in r["chosen"] + r["rejected"]]
        expected.setdefault(r["subset"], []).append(official_row_result(s))

    def scorer(prompts, responses):
        return [table[(p, c)] for p, c in zip(prompts, responses)]

    got = evaluate_rewardbench2(scorer, rows)
    for subset, results in expected.items():
        assert got["subsets"][subset] == pytest.approx(float(np.mean(results)))
    assert got["overall"] == pytest.approx(np.mean([np.mean(v) for v in expected.values()]))
    assert got["num_ties_at_max"] > 0
    assert got["subsets_missing"] == ["Precise IF", "Safety", "Ties"]
    assert [len(s) for s in got["scores"]] == [4] * 60


def test_full_layout_with_ties_and_a_reward_model(tmp_path):
    """All six subsets through a real RewardModel (a tiny one): the Ties part and the others are averaged."""
    pytest.importorskip("transformers")
    from test_text_train import tiny_rm

    rm = tiny_rm()
    words = [f"w{i}" for i in range(16)]
    rows = []
    for i, subset in enumerate(["Factuality", "Precise IF", "Math", "Safety", "Focus"] * 2):
        rows.append({"prompt": "say w1", "subset": subset, "chosen": [words[i]], "rejected": words[i + 1:i + 4]})
    rows += [{"id": "ref:7", "prompt": "say w2", "subset": "Ties", "num_correct": 1, "chosen": ["w2"],
              "rejected": ["w3", "w4"]},
             {"id": "tied:7", "prompt": "say w2", "subset": "Ties", "num_correct": 2, "chosen": ["w2", "w5"],
              "rejected": ["w3"]}]
    path = tmp_path / "rb2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = evaluate_rewardbench2(rm, str(path))
    assert list(got["subsets"]) == ["Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"]
    assert got["subset_counts"]["Ties"] == 2 and got["ties"]["prompts_with_both"] == 1
    assert got["overall"] == pytest.approx(sum(got["subsets"].values()) / 6)
    from mmreward.core.inputs import TextPair

    direct = rm.score([TextPair("say w2", c) for c in ["w2", "w5", "w3"]]).tolist()
    assert got["scores"][-1] == pytest.approx(direct, abs=1e-6)


@pytest.mark.parametrize("row,match", [
    ({"prompt": "p", "subset": "Math", "chosen": "a", "rejected": ["b"]}, "`chosen` is one string"),
    ({"prompt": "p", "subset": "Math", "chosen": ["a"], "rejected": []}, "`rejected` must be a non-empty list"),
    ({"prompt": "p", "subset": "Math", "chosen": ["a"], "rejected": ["b", 3]}, r"`rejected`\[1\] must be a string"),
    ({"prompt": "p", "chosen": ["a"], "rejected": ["b"]}, "`subset` must be a string"),
    ({"prompt": "p", "subset": "Ties", "id": 17, "chosen": ["a"], "rejected": ["b"]}, "'ref:<n>' or 'tied:<n>'"),
    ({"prompt": "p", "subset": "Ties", "id": "tied:3", "chosen": ["a"], "rejected": ["b"]},
     "several equally correct answers"),
    ({"prompt": "p", "subset": "Ties", "id": "tied:3", "num_correct": 3, "chosen": ["a", "c"], "rejected": ["b"]},
     "`num_correct` is 3 but the row has 2"),
    ({"prompt": "p", "subset": "Ties", "id": "ref:0", "chosen": ["a"], "rejected": ["b"]}, "also row 0's"),
])
def test_bad_rows_are_named(row, match):
    first = {"prompt": "ok", "subset": "Ties", "id": "ref:0", "chosen": ["a"], "rejected": ["b"]}
    with pytest.raises(ValueError, match=r"row 1: .*" + match):
        check_rows2([first, row])


def test_cli(tmp_path, capsys):
    pytest.importorskip("transformers")
    from test_text_train import tiny_rm

    from mmreward.cli import main

    tiny_rm().save_pretrained(tmp_path / "rm")
    rows = [{"prompt": "say w1", "subset": "Focus", "chosen": ["w1 w2"], "rejected": ["w3", "w4 w5", "w6"]}] * 3
    (tmp_path / "rb2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "rb1.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "subset": "x"}) + "\n")
    base = ["text", "eval", "--model", str(tmp_path / "rm"), "--no-progress"]
    assert main([*base, "--benchmark", "rewardbench-2", "--data", str(tmp_path / "rb2.jsonl"), "--out",
                 str(tmp_path / "res.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rows 3  overall") and "Focus" in out
    saved = json.loads((tmp_path / "res.json").read_text())
    assert saved["num_rows"] == 3 and saved["config"]["benchmark"] == "rewardbench-2"
    for bench, data, match in (("rewardbench", "rb2.jsonl", "use --benchmark rewardbench-2"),
                               ("rewardbench-2", "rb1.jsonl", "`chosen` is one string")):
        assert main([*base, "--benchmark", bench, "--data", str(tmp_path / data)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err and "Traceback" not in err, err

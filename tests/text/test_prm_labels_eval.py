"""Pure functions of the PRM stack against hand computations: synthetic chains, Monte-Carlo labels,
ReST-MCTS* values, rStar PPM pairs, ProcessBench F1 / step macro-F1, Clip / Delta rewards, MCTS."""
import json

import pytest
import torch

from mmreward.text.prm.eval import (predict_first_error, processbench_f1, processbench_report, processbench_sweep,
                                    step_macro_f1)
from mmreward.text.prm.labels import (SearchTree, monte_carlo_labels, ppm_pairs, rest_mcts_values,
                                      trace_value_targets, tree_value_targets)
from mmreward.text.prm.refine import ProcessRewardFunction, RefineConfig
from mmreward.text.prm.search import MCTS, MCTSConfig, best_of_n_search, self_training_records, write_jsonl
from mmreward.text.prm.synthetic import (ArithmeticTask, NoisyStepJudge, NoisyStepPolicy, first_error, make_dataset,
                                         make_problems, parse_problem, parse_step, solve, step_labels)


# ---------------------------------------------------------------- synthetic data
def test_synthetic_chains_are_exactly_labelled():
    p = parse_problem("3 +4 -2 +5")
    assert solve(p) == [7, 5, 10] and p.answer == 10
    assert parse_step("-3+4=1") == (-3, "+", 4, 1) and parse_step("garbage") is None
    assert first_error(p, ["3+4=7", "7-2=5", "5+5=10"]) == -1
    assert first_error(p, ["3+4=7", "7-2=4", "4+5=9"]) == 1
    assert step_labels(p, ["3+4=7", "7-2=4", "4+5=9"]) == [True, False, False]
    rows = make_dataset(200, seed=0, max_value=9)
    for r in rows:
        q = parse_problem(r["prompt"])
        assert all(0 <= v <= 9 for v in solve(q))
        assert r["first_error"] == first_error(q, r["completions"])
        assert r["labels"] == [float(y) for y in step_labels(q, r["completions"])]
    assert 0.3 < sum(r["first_error"] >= 0 for r in rows) / 200 < 0.7
    ign = make_dataset(50, seed=0, after_error="ignore")
    for r in ign:
        if r["first_error"] >= 0:
            assert r["labels"][r["first_error"]] == 0.0 and all(y == -100 for y in r["labels"][r["first_error"] + 1:])
    with pytest.raises(ValueError, match="error_rate"):
        make_dataset(2, error_rate=1.5)


def test_noisy_policy_errs_at_its_rate_and_judge_at_its_accuracy():
    probs = [p.text for p in make_problems(400, seed=3)]
    pol, task = NoisyStepPolicy(0.25, seed=1), ArithmeticTask()
    wrong = sum(first_error(parse_problem(p), [pol(p, [])]) == 0 for p in probs)
    assert abs(wrong / 400 - 0.25) < 0.06
    judge = NoisyStepJudge(accuracy=0.8)
    hits = 0
    for p in probs:
        s = [pol(p, [])]
        hits += (judge(p, s) > 0.5) == step_labels(parse_problem(p), s)[-1]
        assert judge(p, s) == judge(p, s)  # a fixed function
    assert abs(hits / 400 - 0.8) < 0.06
    assert task.is_correct(probs[0], [NoisyStepPolicy(0.0)(probs[0], [])] * 0) is False


# ---------------------------------------------------------------- labels
def test_monte_carlo_labels_soft_and_hard():
    task = ArithmeticTask()
    p = "3 +4 -2 +5"
    steps = ["3+4=7", "7-2=4", "4+5=9"]  # wrong at step 1
    perfect = NoisyStepPolicy(0.0)
    assert monte_carlo_labels(p, steps, perfect, task.is_terminal, task.is_correct, k=4) == [1.0, 0.0, 0.0]
    soft = monte_carlo_labels(p, steps[:1], NoisyStepPolicy(0.5, seed=0), task.is_terminal, task.is_correct, k=64)
    assert 0.1 < soft[0] < 0.45  # true value 0.5 ** 2 = 0.25
    hard = monte_carlo_labels(p, steps[:1], NoisyStepPolicy(0.5, seed=0), task.is_terminal, task.is_correct, k=64, hard=True)
    assert hard == [1.0]
    with pytest.raises(ValueError, match="empty"):
        monte_carlo_labels(p, [], perfect, task.is_terminal, task.is_correct)


def test_rest_mcts_values_by_hand():
    v = rest_mcts_values([1, 1, -1], [3, 2, 1])
    assert v == pytest.approx([1 / 3, 2 / 3, 1 / 3])
    assert rest_mcts_values([-1, 1], [2, 1]) == pytest.approx([0.0, 1.0])  # clipped at 0, then to 1
    assert trace_value_targets([True, True, True, True]) == pytest.approx([0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="remaining"):
        rest_mcts_values([1], [0])
    with pytest.raises(ValueError, match="signs"):
        rest_mcts_values([2], [1])


def _tree(children):
    """Root with terminal children given as (step, q, correct)."""
    t = SearchTree("p")
    for step, q, ok in children:
        n = t.add(0, step, q, terminal=True)
        n.visits, n.value_sum, n.correct = 1, q, ok
    return t


def test_ppm_pairs_top2_bottom2_and_fill_to_four():
    t = _tree([("A", .9, True), ("B", .5, True), ("C", .7, True), ("D", .2, False), ("E", .6, False), ("F", .8, False)])
    got = {(d["chosen"], d["rejected"]) for d in ppm_pairs(t)}
    assert got == {("A", "D"), ("A", "E"), ("C", "D"), ("C", "E")}
    t = _tree([("A", .9, True), ("D", .2, False), ("E", .6, False), ("F", .95, False), ("G", .1, False)])
    got = {(d["chosen"], d["rejected"]) for d in ppm_pairs(t)}
    assert got == {("A", "G"), ("A", "D")} | {("A", "E")}  # 1 positive + 3 negatives; F dropped (margin < 0)
    assert all(d["group"] == 0 and d["q_chosen"] > d["q_rejected"] for d in ppm_pairs(t))
    assert ppm_pairs(_tree([("A", .9, True), ("B", .1, True)])) == []


def test_tree_value_targets_and_json_round_trip():
    t = SearchTree("p")
    a = t.add(0, "a", 0.0, False)
    b = t.add(a.id, "b", 0.0, True)
    b.correct = True
    c = t.add(a.id, "c", 0.0, True)
    c.correct = False
    v = tree_value_targets(t)
    assert v[a.id] == pytest.approx(0.5) and v[b.id] == pytest.approx(1.0) and v[c.id] == pytest.approx(0.0)
    t2 = SearchTree.from_dict(json.loads(t.to_json()))
    assert t2.steps(b.id) == ["a", "b"] and t2.nodes[c.id].correct is False
    with pytest.raises(ValueError, match="search tree"):
        SearchTree.from_dict({"nodes": []})


# ---------------------------------------------------------------- evaluation
def test_processbench_f1_and_sweep_by_hand():
    m = processbench_f1([1, -1, 2, -1], [1, -1, 0, 2])
    assert m["acc_error"] == pytest.approx(1 / 3) and m["acc_correct"] == 1.0 and m["f1"] == pytest.approx(0.5)
    scores = [torch.tensor([0.9, 0.4, 0.8]), torch.tensor([0.9, 0.9]), torch.tensor([0.2])]
    assert predict_first_error(scores, 0.5) == [1, -1, 0]
    sw = processbench_sweep(scores, [1, -1, 0], thresholds=[0.1, 0.5, 0.95])
    assert sw["best_threshold"] == 0.5 and sw["best"]["f1"] == 1.0 and sw["sweep"]["0.95"]["acc_correct"] == 0.0
    with pytest.raises(ValueError, match="lengths"):
        processbench_f1([1], [1, 2])
    with pytest.raises(ValueError, match="sample 0"):
        processbench_sweep([torch.tensor([0.5])], [3])


def test_processbench_report_is_the_official_metric_per_subset():
    """QwenLM/ProcessBench code/run_eval.py (lines 117-130): per subset, error acc = mean(prediction == label)
    over label != -1, correct acc = the same over label == -1, f1 = their harmonic mean (×100 there)."""
    import random

    rng = random.Random(0)
    subsets = [rng.choice(["gsm8k", "math", "olympiadbench", "omnimath"]) for _ in range(200)]
    scores = [torch.rand(rng.randint(1, 6), generator=torch.Generator().manual_seed(i)) for i in range(200)]
    labels = [rng.choice([-1, rng.randrange(s.numel())]) for s in scores]
    report = processbench_report(scores, labels, subsets, threshold=0.4)
    pred = predict_first_error(scores, 0.4)
    for name in {"gsm8k", "math", "olympiadbench", "omnimath"}:
        res = [(p, y) for p, y, n in zip(pred, labels, subsets) if n == name]
        error_data, correct_data = [p == y for p, y in res if y != -1], [p == y for p, y in res if y == -1]
        acc1, acc2 = 100 * sum(error_data) / len(error_data), 100 * sum(correct_data) / len(correct_data)
        got = report["subsets"][name]
        assert (100 * got["acc_error"], 100 * got["acc_correct"]) == pytest.approx((acc1, acc2))
        assert 100 * got["f1"] == pytest.approx(2 * acc1 * acc2 / (acc1 + acc2))
    assert report["average_f1"] == pytest.approx(sum(m["f1"] for m in report["subsets"].values()) / 4)
    assert processbench_report(scores[:3], labels[:3], ["", "", ""])["subsets"].keys() == {"all"}
    with pytest.raises(ValueError, match="3 score lists, 2 labels"):
        processbench_report(scores[:3], labels[:2], subsets[:3])


def test_step_macro_f1_by_hand():
    m = step_macro_f1([0.9, 0.8, 0.3, 0.6, 0.1], [1, 1, 0, 0, -100])
    assert m["f1_good"] == pytest.approx(0.8) and m["f1_bad"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2) and m["accuracy"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="neutral"):
        step_macro_f1([0.5], [None])
    with pytest.raises(ValueError, match="NaN"):
        step_macro_f1([float("nan")], [1])


# ---------------------------------------------------------------- Clip / Delta rewards
def test_clip_and_delta_reward_function_by_hand():
    prm = lambda p, s: torch.tensor([0.9, 0.6, 0.8])[: len(s)]  # noqa: E731
    clip = ProcessRewardFunction(prm, clip=0.7)("p", ["a", "b", "c"])
    assert clip["step_rewards"].tolist() == pytest.approx([0.0, -0.1, 0.0])
    assert clip["returns"].tolist() == pytest.approx([-0.1, -0.1, 0.0]) and clip["reward"] == pytest.approx(-0.1)
    delta = ProcessRewardFunction(prm, RefineConfig(delta=True))("p", ["a", "b", "c"])
    assert delta["step_rewards"].tolist() == pytest.approx([0.3, -0.2, 0.8])
    assert delta["returns"].tolist() == pytest.approx([0.9, 0.6, 0.8])
    out = ProcessRewardFunction(prm, RefineConfig(delta=True, outcome_weight=1.0, gamma=0.5), outcome_fn=lambda p, s: 1.0)
    r = out("p", ["a", "b", "c"])  # outcome 1 at the last step, discounted back
    assert r["returns"].tolist() == pytest.approx([0.3 - 0.1 + 0.2 + 0.25, -0.2 + 0.4 + 0.5, 1.8])
    assert ProcessRewardFunction(prm, clip=0.7).rewards(["p", "q"], [["a"], ["a", "b"]]).tolist() == pytest.approx([0.0, -0.1])
    with pytest.raises(ValueError, match="no steps"):
        ProcessRewardFunction(prm)("p", [])
    with pytest.raises(ValueError, match="outcome_fn"):
        ProcessRewardFunction(prm, outcome_weight=1.0)


# ---------------------------------------------------------------- search mechanics
def test_mcts_budget_tree_export_and_oracle(tmp_path):
    task = ArithmeticTask()
    p = make_problems(1, seed=7)[0].text
    cfg = MCTSConfig(budget_steps=15, expansion_width=3, c_uct=0.4)
    r = MCTS(NoisyStepPolicy(0.3, seed=0), NoisyStepJudge(1.0), task.is_terminal, cfg, is_correct=task.is_correct).search(p)
    assert r.generated_steps <= 15 and r.tree is not None
    assert r.steps is not None and task.is_correct(p, r.steps)  # a perfect judge finds the answer
    root = r.tree.root
    assert root.visits == sum(r.tree.nodes[c].visits for c in root.children)
    rec = self_training_records(r)
    assert rec["traces"] and all(0 <= y <= 1 for t in rec["traces"] for y in t["labels"])
    write_jsonl(str(tmp_path / "st.jsonl"), rec["traces"])
    assert len((tmp_path / "st.jsonl").read_text().splitlines()) == len(rec["traces"])
    oracle = MCTS(NoisyStepPolicy(0.5, seed=1), NoisyStepJudge(0.5), task.is_terminal,
                  MCTSConfig(budget_steps=40, terminal_reward="oracle", rollout_weight=0.5), is_correct=task.is_correct)
    r2 = oracle.search(p)
    assert r2.generated_steps <= 40 and all(v in (-1.0, 1.0) for _, v in r2.candidates)
    bon = best_of_n_search(p, NoisyStepPolicy(0.3, seed=2), NoisyStepJudge(1.0), 4, task.is_terminal)
    assert bon.generated_steps == 16 and len(bon.candidates) == 4
    with pytest.raises(ValueError, match="oracle"):
        MCTS(NoisyStepPolicy(), NoisyStepJudge(), task.is_terminal, MCTSConfig(terminal_reward="oracle"))
    with pytest.raises(ValueError, match="scores must be in"):
        MCTS(NoisyStepPolicy(), lambda p, s: 2.0, task.is_terminal).search(p)
    with pytest.raises(ValueError, match="rollout_weight"):
        MCTSConfig(rollout_weight=2.0)

"""PRM and generative-judge formulas against their official definitions, with hand-computed numbers.

Sources (facts only): Math-Shepherd (Wang et al., 2024) hard / soft estimation; Let's Verify Step by Step
(PRM score = product of step probabilities) and Math-Shepherd (min); ReST-MCTS* value targets; RM-R1-UIUC/RM-R1
``eval/reward-bench/rewardbench/generative.py`` ``process_judgement`` and ``rm_r1/verl/utils/reward_score/
lm_as_judge.py`` ``answer_reward``; zhuohaoyu/RewardAnything ``rewardanything/processing.py``
(``extract_json_content``, ``fix_json_format``, ``safe_parse_json``, ``parse_rewardanything_output``);
DeepSeek-GRM (SPCT) voting and rule reward; GRAM ``evaluation/gram_eval.py`` order averaging.
"""
import itertools

import pytest
import torch

from mmreward.text.generative.grm import spct_rule_reward, vote
from mmreward.text.generative.parsing import parse_ab_rm_r1, parse_ranking, rewardanything_json
from mmreward.text.generative.position import order_averaged
from mmreward.text.generative.rm_r1 import RMR1Config, RMR1Judge, rm_r1_reward
from mmreward.text.prm.labels import monte_carlo_labels, rest_mcts_values
from mmreward.text.prm.model import aggregate_steps
from mmreward.text.prm.search import best_of_n_search


# ------------------------------------------------------------------ PRM aggregation (best-of-N)
def test_step_aggregations_by_hand():
    parts = [torch.tensor([0.5, 0.8]), torch.tensor([0.9]), torch.tensor([float("nan"), 0.2, 0.4])]
    want = {"min": [0.5, 0.9, 0.2], "prod": [0.4, 0.9, 0.08], "last": [0.8, 0.9, 0.4], "mean": [0.65, 0.9, 0.3]}
    for reduce, expected in want.items():
        assert aggregate_steps(parts, reduce).tolist() == pytest.approx(expected, abs=1e-6), reduce


def test_best_of_n_picks_by_the_chosen_aggregation():
    # two sampled solutions, step scores A (0.9, 0.5) and B (0.6, 0.7):
    # min A .5 / B .6, prod .45 / .42, last .5 / .7, mean .7 / .65
    traces = itertools.cycle([["a1", "a2"], ["b1", "b2"]])
    scores = {"a1": 0.9, "a2": 0.5, "b1": 0.6, "b2": 0.7}
    state = {}

    def policy(problem, steps):
        if not steps:
            state["t"] = next(traces)
        return state["t"][len(steps)]

    def evaluator(problem, steps):
        return scores[steps[-1]]

    done = lambda problem, steps: len(steps) == 2  # noqa: E731
    want = {"min": ("b1", 0.6), "prod": ("a1", 0.45), "last": ("b1", 0.7), "mean": ("a1", 0.7)}
    for reduce, (first, agg) in want.items():
        r = best_of_n_search("p", policy, evaluator, n=2, is_terminal=done, reduce=reduce)
        assert r.steps[0] == first, reduce
        assert r.score == pytest.approx(2 * agg - 1, abs=1e-6), reduce


# ------------------------------------------------------------------ Math-Shepherd estimation, ReST-MCTS* targets
def test_math_shepherd_hard_and_soft_estimation_by_hand():
    # a solution is right iff every step is "g"; the policy writes g, g, b, g, g, b, ... (one shared cycle)
    def run(hard):
        cyc = itertools.cycle("ggb")
        return monte_carlo_labels("p", ["g", "g", "b"], lambda p, s: next(cyc), lambda p, s: len(s) == 3,
                                  lambda p, s: all(x == "g" for x in s), k=4, hard=hard)
    # prefix [g]: rollouts (g,g) ok, (b,g) no, (g,b) no, (g,g) ok -> 2/4; prefix [g,g]: the cycle is at b:
    # b no, g ok, g ok, b no -> 2/4; the full solution is terminal: checked directly, wrong -> 0
    assert run(hard=False) == [0.5, 0.5, 0.0]
    assert run(hard=True) == [1.0, 1.0, 0.0]  # HE: 1 iff some completion reaches the answer


def test_rest_mcts_values_by_hand():
    # v_k = max(0, v_{k-1} + (1 - v_{k-1}) * s_k / (m_k + 1)), m_k = steps still needed after step k
    assert rest_mcts_values([1, 1, 1], [3, 2, 1]) == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert rest_mcts_values([1, -1], [2, 1]) == pytest.approx([0.5, 0.0])
    assert rest_mcts_values([1, -1], [2, 2]) == pytest.approx([0.5, 0.25])


# ------------------------------------------------------------------ RM-R1: harness verdicts and RL reward
def test_rm_r1_harness_rule_is_the_literal_substring_rule():
    long_tail = " and then a long evaluation follows" * 30
    assert parse_ab_rm_r1("<answer>[[A]]</answer>").value == "A"
    assert parse_ab_rm_r1("[[B]]" + long_tail).value == "B"  # anywhere in the output, no tail window
    assert parse_ab_rm_r1("I think [[A]] ... <answer>[[B]]</answer>").value is None  # both: no verdict
    for text in ("<answer>[[ A ]]</answer>", "<answer>A</answer>", "[A]", "no verdict at all", ""):
        p = parse_ab_rm_r1(text)
        assert p.value is None and p.reason, text
    # the bracketed letter with spaces does not count as the other side either: [[A]] wins, as in the harness
    assert parse_ab_rm_r1("[[A]] but maybe [[ B ]]").value == "A"


def test_rm_r1_paper_template_reads_verdicts_by_the_harness_rule():
    from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

    tok = word_tokenizer(["q good bad Which response is better ?"])
    model = tiny_llama(len(tok), hidden=16, layers=1, heads=2)
    outputs = ["[[A]]" + " filler" * 200,       # harness: A (our tail window would have missed it)
               "<answer>[[ B ]]</answer>",      # harness: no verdict (not the literal [[B]])
               "<answer>A</answer>",            # harness: no verdict
               "<answer>[[B]]</answer>"]
    for template, want in (("paper", [1.0, 0.5, 0.5, 0.0]), ("paper-reasoning", [1.0, 0.5, 0.5, 0.0]),
                           ("mmreward", [0.5, 0.0, 1.0, 0.0])):
        j = RMR1Judge(model, tok, RMR1Config(template=template, max_new_tokens=2))
        j.runner.generate = lambda msgs, batch_size=None: [[outputs[i]] for i in range(len(msgs))]
        p = j.judge(["q"] * 4, ["good"] * 4, ["bad"] * 4)
        assert p.tolist() == want, template
        assert j.metrics()["n_parsed"] == sum(v != 0.5 for v in want)  # unparsable is reported, not a side


def test_rm_r1_reward_is_the_official_training_reward():
    assert rm_r1_reward("<type>Chat</type> ... <answer>[[A]]</answer>", "A") == 1.0
    assert rm_r1_reward("<answer>[[B]]</answer>", "A") == -1.0
    # the official reward needs the exact tag in the final 80 characters
    assert rm_r1_reward("... [[A]]", "A") == -1.0
    assert rm_r1_reward("<answer> [[A]] </answer>", "A") == -1.0
    assert rm_r1_reward("<answer>A</answer>", "A") == -1.0
    assert rm_r1_reward("<answer>[[A]]</answer>" + "x" * 58, "A") == 1.0   # the 22-char tag starts 80 from the end
    assert rm_r1_reward("<answer>[[A]]</answer>" + "x" * 59, "A") == -1.0  # ... 81 from the end: cut
    assert rm_r1_reward("<answer>[[B]]</answer><answer>[[A]]</answer>", "A") == -1.0
    # the earlier A tag is out of the 80-character window: only the later B tag counts
    assert rm_r1_reward("<answer>[[A]]</answer>" + "x" * 70 + "<answer>[[B]]</answer>", "B") == 1.0
    # the parser-based reward stays available, explicitly
    assert rm_r1_reward("... [[A]]", "A", tail_chars=400) == 1.0
    assert rm_r1_reward("... [[A]]", "A", rule="parse") == 1.0
    with pytest.raises(ValueError, match="rule='parse'"):
        rm_r1_reward("<answer>[[A]]</answer>", "A", tail_chars=10, rule="paper")
    with pytest.raises(ValueError, match="rule"):
        rm_r1_reward("<answer>[[A]]</answer>", "A", rule="lenient")


# ------------------------------------------------------------------ RewardAnything's own output reader
NAMES = ["model-1", "model-2"]


def test_rewardanything_reader_repairs_what_the_official_reader_repairs():
    cases = {
        # single quotes (the official reader replaces every ' by ")
        "{'scores': {'model-1': 4, 'model-2': 2}, 'best-to-worst': ['model-1', 'model-2']}": ({"model-1": 4.0,
                                                                                                 "model-2": 2.0}, True),
        # trailing commas
        '{"scores": {"model-1": 1, "model-2": 5,}, "best-to-worst": ["model-2", "model-1",],}': ({"model-1": 1.0,
                                                                                                    "model-2": 5.0}, True),
        # unquoted keys and the "best-to-worse" typo
        '{scores: {"model-1": 3, "model-2": 2}, "best-to-worse": ["model-1", "model-2"]}': ({"model-1": 3.0,
                                                                                               "model-2": 2.0}, True),
        # a code fence after the thinking
        '<think>compare them</think>\n```json\n{"scores": {"model-1": 2, "model-2": 3}, "best-to-worst": '
        '["model-2", "model-1"]}\n```': ({"model-1": 2.0, "model-2": 3.0}, True),
    }
    for text, (scores, complete) in cases.items():
        p = parse_ranking(text, NAMES)
        assert p.ok, (text, p.reason)
        assert p.value.scores == scores and p.value.ranking_complete is complete, text


def test_rewardanything_draft_inside_the_thinking_is_not_the_verdict():
    text = '<think>draft: {"scores": {"model-1": 5, "model-2": 1}}</think> I could not decide.'
    assert rewardanything_json(text) is None
    p = parse_ranking(text, NAMES)
    assert not p.ok and p.reason  # reported as no verdict, not the draft's scores
    # an unclosed <think> is not removed (as re.sub(r'<think>.*?</think>', ...) leaves it): its JSON is read
    assert parse_ranking('<think>{"scores": {"model-1": 5, "model-2": 1}}', NAMES).value.scores == {
        "model-1": 5.0, "model-2": 1.0}


def test_rewardanything_scores_given_as_numeric_strings_count():
    p = parse_ranking('{"scores": {"model-1": "4", "model-2": " 2 "}, "best-to-worst": ["model-1", "model-2"]}', NAMES)
    assert p.ok and p.value.scores == {"model-1": 4.0, "model-2": 2.0}
    p = parse_ranking('{"scores": {"model-1": "four", "model-2": 2}}', NAMES)
    assert not p.ok and p.value.scores == {"model-2": 2.0}  # a word is no score: reported, not counted


# ------------------------------------------------------------------ DeepSeek-GRM (SPCT), GRAM
def test_grm_voting_and_rule_reward_by_hand():
    # voting@k: S_i = sum over the k valid judgements; unparsed (None) and meta-RM-dropped ones left out
    assert vote([[7, 3], None, [5, 6], [1, 10]], 2, keep=[True, True, True, False]).tolist() == [12.0, 9.0]
    assert spct_rule_reward([8, 3, 8], best=0) == -1.0  # a tie with the best is not "strictly the highest"
    assert spct_rule_reward([9, 3, 8], best=0) == 1.0
    assert spct_rule_reward([6], label_score=6) == 1.0 and spct_rule_reward([6], label_score=5) == -1.0
    assert spct_rule_reward(None, best=0) == -1.0


def test_gram_order_average_is_the_official_score():
    # gram_eval.py: score_chosen = mean(P(A | chosen first), P(B | chosen second))
    p_ab, p_ba = torch.tensor([0.8, 0.3]), torch.tensor([0.4, 0.9])  # P(first wins) in each order
    assert order_averaged(p_ab, p_ba).tolist() == pytest.approx([0.5 * (0.8 + 0.6), 0.5 * (0.3 + 0.1)])


def test_rm_r1_tail_chars_with_a_paper_template_is_refused_not_ignored():
    from mmreward.text.generative.rm_r1 import RMR1Config

    with pytest.raises(ValueError, match="tail_chars=100 applies to template 'mmreward'"):
        RMR1Config(template="paper", tail_chars=100)
    assert RMR1Config(template="paper").tail_chars == 400 and RMR1Config(tail_chars=100).tail_chars == 100

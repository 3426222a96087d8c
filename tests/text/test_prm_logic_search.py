"""PRM-guided search: Best-of-N / MCTS edge cases (empty solutions, NaN / out-of-range scores, config types)."""
import itertools
import math

import pytest
import torch

from mmreward.text.prm.search import MCTS, MCTSConfig, best_of_n_search

TWO_STEPS = lambda p, s: len(s) >= 2  # noqa: E731


def test_best_of_n_refuses_empty_solutions_instead_of_ranking_them_best():
    # is_terminal true before any step: every "solution" is empty; aggregated it used to be 1.0 ("no wrong step")
    with pytest.raises(ValueError, match="no steps to score"):
        best_of_n_search("q", lambda p, s: "a", lambda p, s: 0.3, 2, lambda p, s: True)


@pytest.mark.parametrize("bad", [float("nan"), 5.0, -0.5])
def test_best_of_n_names_an_evaluator_score_outside_0_1(bad):
    c = itertools.count()
    ev = lambda p, s: bad if s[-1] == "s1" else 0.4  # noqa: E731
    with pytest.raises(ValueError, match=r"evaluator returned .* scores must be in \[0, 1\]"):
        best_of_n_search("q", lambda p, s: f"s{next(c)}", ev, 3, TWO_STEPS)


@pytest.mark.parametrize("n", [True, 2.5, 0])
def test_best_of_n_n_must_be_a_positive_integer(n):
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        best_of_n_search("q", lambda p, s: "a", lambda p, s: 0.5, n, TWO_STEPS)


class _TruncatingPRM:
    """A PRM stand-in whose last step was past max_length (NaN = not scored), as truncate=True gives."""

    def score_parts(self, items):
        return [torch.tensor([0.9] + [float("nan")] * (len(it.steps) - 1)) if it.steps[0] == "s0"
                else torch.full((len(it.steps),), 0.6) for it in items]


def test_best_of_n_leaves_a_prms_unscored_steps_out_and_picks_the_best():
    c = itertools.count()
    r = best_of_n_search("q", lambda p, s: f"s{next(c)}", _TruncatingPRM(), 2, TWO_STEPS, reduce="min")
    assert r.steps == ["s0", "s1"] and r.score == pytest.approx(2 * 0.9 - 1)
    assert [v for _, v in r.candidates] == pytest.approx([0.8, 0.2])


@pytest.mark.parametrize("kw", [{"budget_steps": 2.5}, {"budget_steps": True}, {"expansion_width": 1.0},
                                {"c_uct": float("nan")}, {"c_uct": float("inf")}, {"rollout_weight": float("nan")},
                                {"widen_below": "x"}, {"widen_below": float("nan")}])
def test_mcts_config_refuses_non_integer_counts_and_non_finite_numbers(kw):
    name = next(iter(kw))
    with pytest.raises(ValueError, match=name):
        MCTSConfig(**kw)


def test_mcts_budget_one_and_the_best_candidate_is_the_highest_valued():
    r = MCTS(lambda p, s: "a", lambda p, s: 0.5, TWO_STEPS, MCTSConfig(budget_steps=1)).search("q")
    assert r.steps is None and r.generated_steps == 1
    c = itertools.count()
    vals = {}

    def ev(p, s):
        return vals.setdefault(tuple(s), (hash(tuple(s)) % 97) / 96)

    r = MCTS(lambda p, s: f"s{next(c)}", ev, TWO_STEPS, MCTSConfig(budget_steps=20, c_uct=0.5)).search("q")
    assert r.steps is not None
    assert r.score == max(v for _, v in r.candidates)
    assert math.isclose(r.score, min(2 * vals[tuple(r.steps[:k + 1])] - 1 for k in range(len(r.steps))))


@pytest.mark.parametrize("text", ["3 *4", "3", "3 +4 x2", "", "3 +"])
def test_synthetic_problem_text_with_unknown_terms_is_refused(text):
    from mmreward.text.prm.synthetic import ArithmeticTask, parse_problem

    with pytest.raises(ValueError, match="not a synthetic arithmetic problem"):
        parse_problem(text)  # "3 *4" used to be the problem "3" with no steps: terminal and "correct" at once
    with pytest.raises(ValueError, match="not a synthetic arithmetic problem"):
        ArithmeticTask().is_terminal(text, [])


class _ValuePRM:
    """A PRM stand-in with score="identity": raw values outside [0, 1] still rank the solutions."""

    def score_parts(self, items):
        return [torch.tensor([3.0 if it.steps[0] == "s2" else -2.0] * len(it.steps)) for it in items]


def test_best_of_n_ranks_by_a_prms_raw_values():
    c = itertools.count()
    r = best_of_n_search("q", lambda p, s: f"s{next(c)}", _ValuePRM(), 3, TWO_STEPS, reduce="mean")
    assert r.steps == ["s2", "s3"]  # the second of three samples
    assert r.score == pytest.approx(5.0)


@pytest.mark.parametrize("k", [2.5, True, 0])
def test_monte_carlo_labels_k_must_be_a_count(k):
    from mmreward.text.prm.labels import monte_carlo_labels

    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        monte_carlo_labels("q", ["a"], lambda p, s: "a", TWO_STEPS, lambda p, s: True, k=k)


def test_monte_carlo_labels_refuses_a_string_of_steps():
    from mmreward.text.prm.labels import monte_carlo_labels

    with pytest.raises(TypeError, match="not a string"):
        monte_carlo_labels("q", "ab", lambda p, s: "a", TWO_STEPS, lambda p, s: True)

"""ProcessBench / step-F1 evaluation inputs and the HF step policy's RNG hygiene."""
import math

import pytest
import torch

from mmreward.text.prm.eval import (predict_first_error, processbench_f1, processbench_report, processbench_sweep,
                                    step_macro_f1)

S = [torch.tensor([0.9, 0.2]), torch.tensor([0.8, 0.7])]


@pytest.mark.parametrize("labels", [[-2, -1], [1.5, -1], [True, -1], [1, None]])
def test_first_error_labels_must_be_step_indices_or_minus_one(labels):
    # -2 used to count as a correct sample, 1.5 as an erroneous one no prediction matches, True as step 1
    for call in (lambda: processbench_sweep(S, labels), lambda: processbench_report(S, labels, ["a", "a"]),
                 lambda: processbench_f1([1, -1], labels)):
        with pytest.raises(ValueError, match=r"labels?\[\d\] must be a step index"):
            call()


def test_report_refuses_a_label_past_the_last_step():
    with pytest.raises(ValueError, match="first-error label 2 but only 2 steps"):
        processbench_report(S, [2, -1], ["a", "a"])


def test_unscored_steps_are_never_the_predicted_first_error():
    # truncate=True leaves NaN for steps past max_length; as prm.train.step_metrics documents, they do not count
    # as below the threshold (the first_below op used to refuse the whole evaluation)
    nan = float("nan")
    assert predict_first_error([S[0], torch.tensor([0.9, nan]), torch.tensor([nan, 0.1])]) == [1, -1, 1]
    with pytest.warns(UserWarning, match="F1 undefined"):  # no erroneous side: NaN, not 0
        assert math.isnan(processbench_report([torch.tensor([0.9, nan])], [-1], ["a"])["average_f1"])


def test_sweep_needs_tensors_and_some_thresholds():
    with pytest.raises(ValueError, match="sample 0: step scores must be a 1-D tensor"):
        processbench_sweep([[0.9, 0.2]], [1])
    with pytest.raises(ValueError, match="thresholds is empty"):
        processbench_sweep(S, [1, -1], [])
    assert processbench_sweep(S, [1, -1], [0.5])["best"]["f1"] == 1.0


@pytest.mark.parametrize("t", [float("nan"), float("inf"), "0.5", None])
def test_step_macro_f1_refuses_a_threshold_that_is_not_a_number(t):
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        step_macro_f1([0.9, 0.1], [1, 0], t)


def test_hf_step_policy_leaves_the_global_rng_alone_and_is_seeded():
    from mmreward.text.prm.search import HFStepPolicy
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("char")
    lm = tiny_llama(tok, hidden=16, layers=1, heads=2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = [HFStepPolicy(lm, tok, max_new_tokens=4, temperature=1.0, seed=5)("3 +4", []) for _ in range(2)]
    assert torch.equal(torch.rand(3), expected)  # it used to reseed the global RNG on every call
    assert a[0] == a[1]  # same policy seed, same step
    for bad in (float("nan"), -1.0, True):
        with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
            HFStepPolicy(lm, tok, temperature=bad)


# ------------------------------------------------------------------ refined PRM rewards for RL
from mmreward.text.prm.refine import ProcessRewardFunction, RefineConfig  # noqa: E402

NAN = float("nan")


@pytest.mark.parametrize("outcome", [NAN, None, "1"])
def test_a_non_numeric_outcome_is_refused_not_turned_into_nan_rewards(outcome):
    f = ProcessRewardFunction(lambda p, s: [0.5, 0.4], outcome_fn=lambda p, s: outcome, outcome_weight=1.0)
    with pytest.raises(ValueError, match="trajectory 0: outcome_fn returned"):
        f("q", ["a", "b"])  # NaN used to flow into step_rewards / returns / reward


def test_a_boolean_outcome_is_one_or_zero():
    f = ProcessRewardFunction(lambda p, s: [0.5, 0.4], outcome_fn=lambda p, s: True, outcome_weight=2.0)
    assert f("q", ["a", "b"])["step_rewards"].tolist() == pytest.approx([0.5, 2.4])


def test_a_string_trajectory_is_not_scored_one_character_per_step():
    f = ProcessRewardFunction(lambda p, s: [0.5] * len(s))
    with pytest.raises(TypeError, match="trajectory 0: steps must be a list of strings"):
        f("q", "abc")
    with pytest.raises(TypeError, match="trajectory 0: step 0 must be a str"):
        f("q", [["a"]])


def test_an_unscored_step_is_named():
    with pytest.raises(ValueError, match="trajectory 1: step 1 has no finite score"):
        ProcessRewardFunction(lambda p, s: [0.5, NAN if p == "bad" else 0.3]).batch(["q", "bad"], [["a", "b"]] * 2)


@pytest.mark.parametrize("kw", [{"outcome_weight": NAN}, {"clip": NAN}, {"clip": "0.5"}, {"gamma": NAN}])
def test_refine_config_refuses_non_finite_settings(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        RefineConfig(**kw)


@pytest.mark.parametrize("labels", [[-1, 1], [2, 1], [0.5, -3]])
def test_step_macro_f1_refuses_labels_outside_its_convention(labels):
    # PRM800K ratings -1 / 0 / +1 used to be read silently: -1 and 0 both as "bad"
    with pytest.raises(ValueError, match=r"is not 1 \(good\), 0 \(bad\)"):
        step_macro_f1([0.9] * len(labels), labels)


def test_step_macro_f1_keeps_soft_and_neutral_labels():
    m = step_macro_f1([0.9, 0.1, 0.3], [0.8, 0.0, -100])
    assert m["macro_f1"] == 1.0 and m["accuracy"] == 1.0


def test_step_metrics_of_a_truncated_prm_leave_the_unscored_steps_out():
    from mmreward.text.prm.data import StepExample
    from mmreward.text.prm.train import step_metrics

    ex = [StepExample("p", ["a", "b"], [1.0, 0.0], 1), StepExample("p", ["a", "b"], [1.0, 1.0], -1)]
    out = step_metrics([torch.tensor([0.9, 0.2]), torch.tensor([0.8, float("nan")])], ex)
    assert out["processbench_f1"] == 1.0 and out["step_macro_f1"] == 1.0  # used to fail in the first_below op

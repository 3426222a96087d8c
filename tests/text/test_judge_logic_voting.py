"""Judge score logic: DeepSeek-GRM meta-RM guided voting and RewardAnything's accuracy reward."""
import math

import pytest
import torch

from mmreward.core.inputs import TextPair
from mmreward.text.generative.grm import GRMConfig, GRMJudge
from mmreward.text.generative.heads import ScalarHeadLM
from mmreward.text.generative.reward_anything import accuracy_reward
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

VOCAB = "q good bad judge Final Scores : \\boxed{6} 1 2 3 4 5 6 7 8 9 10"


class _ShortestFirst(torch.nn.Module):
    """A meta-RM stand-in that prefers the shortest judgement (the unparsed "junk" one here)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        return -attention_mask.sum(1).float() + 0 * self.w


@pytest.fixture(scope="module")
def judge():
    tok = word_tokenizer([VOCAB])
    model = tiny_llama(len(tok), hidden=16, layers=1, heads=2)
    j = GRMJudge(model, tok, GRMConfig(instructions="judge", num_samples=4, k_meta=1, max_new_tokens=4),
                 meta_rm=ScalarHeadLM(model))
    j.meta_rm = _ShortestFirst()
    return j


def test_meta_rm_top_k_is_drawn_from_the_parsed_judgements(judge, monkeypatch):
    # the meta-RM likes the unparsable judgement best; it has no scores to vote with, so the top-1 place goes to
    # the best parsed one (before: the unparsed one took it and the response scored 0 — "no verdict")
    samples = ["junk", "\\boxed{6}", "\\boxed{6} 6", "\\boxed{6} 6 6"]  # distinct lengths: no tie
    monkeypatch.setattr(judge.runner, "generate", lambda prompts, batch_size=None: [samples for _ in prompts])
    assert judge.score([TextPair("q", "good")]).tolist() == [6.0]
    assert judge.last_kept == [[False, True, False, False]]


def test_meta_rm_with_no_parsed_judgement_keeps_none(judge, monkeypatch):
    monkeypatch.setattr(judge.runner, "generate", lambda prompts, batch_size=None: [["junk"] * 4 for _ in prompts])
    assert judge.score([TextPair("q", "good")]).tolist() == [0.0]
    assert judge.last_kept == [[False] * 4]


def test_accuracy_reward_counts_an_unscored_nan_prediction_as_wrong():
    gt = {"a": 5, "b": 1}
    assert accuracy_reward({"a": 4, "b": 2}, gt) == 1.0
    # NaN (a name the judge left unscored) compared neither way and used to count as a right order: 1.0
    assert accuracy_reward({"a": float("nan"), "b": 2}, gt) == 0.0
    assert accuracy_reward({"a": float("inf"), "b": 2}, gt) == 0.0
    assert accuracy_reward({"a": torch.tensor(4.0), "b": 2}, gt) == 1.0  # a one-element tensor is a number
    # a tie on one pair costs w / 2 of that pair only
    r = accuracy_reward({"a": 3, "b": 3, "c": 1}, {"a": 5, "b": 1, "c": 0})
    w_ab, w_ac, w_bc = 5.0, 6.0, 2.0
    assert math.isclose(r, 1 - (w_ab / 2) / (w_ab + w_ac + w_bc))


@pytest.mark.parametrize("bad", [float("nan"), "5", None, True])
def test_accuracy_reward_refuses_a_ground_truth_that_is_not_a_number(bad):
    with pytest.raises(ValueError, match="ground-truth score of 'a'"):
        accuracy_reward({"a": 1, "b": 2}, {"a": bad, "b": 1})


def test_judge_from_scores_refuses_a_nan_score_instead_of_calling_it_a_loss():
    from mmreward.text.generative.position import judge_from_scores

    def score(prompts, responses):  # 'x' cannot be scored
        return torch.tensor([float("nan") if r == "x" else float(len(r)) for r in responses])

    judge = judge_from_scores(score)
    assert judge(["p", "p"], ["aa", "a"], ["a", "a"]).tolist() == [1.0, 0.5]
    with pytest.raises(ValueError, match="NaN for pair 1"):
        judge(["p", "p"], ["aa", "a"], ["a", "x"])  # was P(first ≻ second) = 0: a silent loss


ROWS = [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 3
RMB = [{"prompt": "p", "chosen": ["a"] * 3, "rejected": ["b"] * 3}]


def test_position_evaluators_check_the_judges_output():
    from mmreward.text.generative.position import evaluate_pairs_with_judge, rmbench_with_judge

    # one value for three pairs used to read as accuracy 1.0 over n=3
    with pytest.raises(ValueError, match="returned 1 values for 3 pairs"):
        evaluate_pairs_with_judge(lambda p, a, b: torch.ones(1), ROWS, swap=False)
    with pytest.raises(ValueError, match="returned 7 values for 6 pairs"):
        evaluate_pairs_with_judge(lambda p, a, b: torch.ones(len(p) + 1), ROWS)
    # logits instead of probabilities used to be credited as wins without the swap
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        rmbench_with_judge(lambda p, a, b: torch.full((len(p),), 3.0), RMB, swap=False)
    with pytest.raises(ValueError, match="returned 3 values for 9 pairs"):
        rmbench_with_judge(lambda p, a, b: torch.ones(3), RMB, swap=False)
    # a judge that always names the first response is at chance once the order is averaged
    out = evaluate_pairs_with_judge(lambda p, a, b: torch.ones(len(p)), ROWS)
    assert out["accuracy"] == 0.5 and out["accuracy_chosen_first"] == 1.0 and out["consistency"] == 0.0
    assert rmbench_with_judge(lambda p, a, b: torch.ones(len(p)), RMB)["avg"] == 0.5


@pytest.mark.parametrize("kw, msg", [({"bins": 0}, "bins must be an integer"), ({"bins": 2.5}, "bins must be an integer"),
                                     ({"labels": torch.tensor([0.0, 2.0])}, "labels must be 0 / 1"),
                                     ({"labels": torch.tensor([0.0, float("nan")])}, "labels must be 0 / 1")])
def test_calibration_refuses_bad_bins_and_labels(kw, msg):
    from mmreward.text.generative.genrm import calibration

    args = {"p_yes": torch.tensor([0.2, 0.9]), "labels": torch.tensor([0.0, 1.0]), **kw}
    with pytest.raises(ValueError, match=msg):  # bins=0 gave ECE 0, a label of 2 a skewed ECE
        calibration(**args)


@pytest.mark.parametrize("best", [True, 1.0, None, -1])
def test_spct_rule_reward_best_must_be_an_index(best):
    from mmreward.text.generative.grm import spct_rule_reward

    with pytest.raises(ValueError, match="best must index one of the 2 responses"):
        spct_rule_reward([3, 7], best=best)  # True / 1.0 used to stand for response 1 and earn +1


def test_spct_rule_reward_takes_a_numpy_index():
    import numpy as np

    from mmreward.text.generative.grm import spct_rule_reward

    assert spct_rule_reward([3, 7], best=np.int64(1)) == 1.0

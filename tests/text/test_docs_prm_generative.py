"""docs/generative.md: "Every method has a `judge`, so all of them work with" `evaluate_pairs_with_judge`
and `rmbench_with_judge` — a judge object is taken as its `judge` method (calling the module itself
ran its missing `forward`: NotImplementedError)."""
import pytest
import torch

from mmreward.text.generative import (GRAM, GRAMConfig, GenRM, GenRMConfig, both_orders, evaluate_pairs_with_judge,
                                      rmbench_with_judge)
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

ROWS = [{"prompt": "q0", "chosen": "good", "rejected": "bad"}, {"prompt": "q1", "chosen": "fine", "rejected": "poor"}]


@pytest.fixture(scope="module")
def judges():
    tok = word_tokenizer(["good bad fine poor q0 q1 correct ? Yes No A B Which is better"])
    model = tiny_llama(len(tok), hidden=16, layers=1, heads=2)
    return (GenRM(model, tok, GenRMConfig(question="correct ?")),
            GRAM(model, tok, GRAMConfig(instruction="Which is better ?")))


def test_judge_objects_work_with_the_pairwise_evaluators(judges):
    for judge in judges:
        got = evaluate_pairs_with_judge(judge, ROWS)
        assert got == evaluate_pairs_with_judge(judge.judge, ROWS) and got["n"] == 2
        assert evaluate_pairs_with_judge(judge, ROWS, swap=False) == evaluate_pairs_with_judge(judge.judge, ROWS, swap=False)
        assert torch.equal(both_orders(judge, ["q0"], ["good"], ["bad"])["p"],
                           both_orders(judge.judge, ["q0"], ["good"], ["bad"])["p"])
    item = {"prompt": "q0", "chosen": ["good", "fine", "good fine"], "rejected": ["bad", "poor", "bad poor"]}
    assert rmbench_with_judge(judges[1], [item]) == rmbench_with_judge(judges[1].judge, [item])


def test_something_that_is_no_judge_is_named():
    with pytest.raises(TypeError, match="judge must be a judge object .* got 42"):
        evaluate_pairs_with_judge(42, ROWS)

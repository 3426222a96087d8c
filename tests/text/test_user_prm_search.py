"""A math-reasoning user's PRM session on a tiny model: hand-built training / evaluation examples whose labels do
not match their steps, a step policy that writes nothing, truncated scoring, and `prm train`'s closing line."""
import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.inputs import StepSolution  # noqa: E402


@pytest.fixture(scope="module")
def prm():
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("step", max_value=5)
    return ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=16, layers=1, heads=2), tok, head="lm",
                                            max_length=64)


def _config(out, **kw):
    from mmreward.text.prm import PRMTrainConfig

    return PRMTrainConfig(output_dir=str(out), max_steps=1, batch_size=2, progress=False, tensorboard=False,
                          plot=False, log_every=0, **kw)


@pytest.mark.parametrize("labels, objective, match", [
    ([1.0], "bce", r"train example 0: 2 steps but 1 labels"),  # failed mid-run inside step_bce_loss
    ([1.0, 0.0, 1.0], "bce", r"train example 0: 2 steps but 3 labels"),  # the extra label was dropped silently
    ([1.0, float("nan")], "mse", r"train example 0, step 1: label nan must be a finite value target"),
    ([1.0, "0"], "bce", r"train example 0, step 1: label '0' must be a number in \[0, 1\]"),
])
def test_train_prm_names_an_example_whose_labels_do_not_fit_its_steps(prm, tmp_path, labels, objective, match):
    from mmreward.text.prm import train_prm
    from mmreward.text.prm.data import StepExample

    examples = [StepExample("3 +1 -2", ["3+1=4", "4-2=2"], labels), StepExample("3 +1", ["3+1=4"], [1.0])]
    with pytest.raises(DataError, match=match):
        train_prm(prm, examples, _config(tmp_path / "run", objective=objective))
    assert not (tmp_path / "run").exists()  # refused before the trainer made its folder


def test_evaluate_prm_names_labels_and_first_errors_that_do_not_fit_the_steps(prm):
    from mmreward.text.prm import evaluate_prm
    from mmreward.text.prm.data import StepExample

    # a short labels list was zipped with the steps (metrics over the wrong steps); a first error past the last
    # step was counted as a sample no prediction can match
    with pytest.raises(DataError, match=r"evaluate_prm: example 1: 2 steps but 1 labels"):
        evaluate_prm(prm, [StepExample("3 +1", ["3+1=4"], [1.0]), StepExample("3 +1 -2", ["3+1=4", "4-2=2"], [1.0])])
    with pytest.raises(DataError, match=r"evaluate_prm: example 0: first_error 5 must be the index"):
        evaluate_prm(prm, [StepExample("3 +1", ["3+1=4"], [1.0], first_error=5)])


def _task():
    from mmreward.text.prm.synthetic import ArithmeticTask

    return ArithmeticTask()


@pytest.mark.parametrize("blank", ["", "  \n"])
def test_search_refuses_a_blank_step_from_the_policy(prm, blank):
    """A policy that writes nothing (HFStepPolicy returns "" then) made MCTS and Best-of-N return a "solution" of
    empty steps as their best answer."""
    from mmreward.text.prm.search import MCTS, MCTSConfig, best_of_n_search

    task, policy = _task(), (lambda problem, steps: blank)
    with pytest.raises(ValueError, match=r"policy returned a blank step .* after 0 steps"):
        MCTS(policy, prm, task.is_terminal, MCTSConfig(budget_steps=8)).search("3 +1 -2")
    with pytest.raises(ValueError, match=r"policy returned a blank step"):
        best_of_n_search("3 +1 -2", policy, prm, 2, task.is_terminal)
    from mmreward.text.prm.labels import monte_carlo_labels

    with pytest.raises(ValueError, match=r"policy returned a blank step .* after 1 steps"):  # its rollouts too
        monte_carlo_labels("3 +1 -2", ["3+1=4"], policy, task.is_terminal, task.is_correct, k=2)


def test_mcts_rollouts_check_the_policy_step_as_expansions_do(prm):
    from mmreward.text.prm.search import MCTS, MCTSConfig

    task = _task()
    # right first steps, then nothing usable: only the rollout from a first step asks for a second one
    for bad, match in ((None, "must return the next step as a str, got NoneType"), ("", "blank step .* after 1 steps")):
        policy = (lambda problem, steps, bad=bad: "3+1=4" if not steps else bad)
        with pytest.raises((TypeError, ValueError), match=match):
            MCTS(policy, prm, task.is_terminal, MCTSConfig(budget_steps=8, rollout_weight=0.5,
                                                           expansion_width=1)).search("3 +1 -2")


def test_truncated_scoring_tells_which_steps_went_unscored(prm):
    import dataclasses

    with pytest.raises(DataError, match=r"input 0: problem \+ 40 steps .* steps that fit "
                                        r"\(`prm score / eval --truncate`\)"):
        prm.score([StepSolution("3 +1", ["3+1=4"] * 40)])  # the CLI user learns the flag, not only the field
    prm.config = dataclasses.replace(prm.config, truncate=True)
    try:
        long = StepSolution("3 +1", ["3+1=4"] * 40)
        with pytest.warns(UserWarning, match=r"truncated 1 of 2 inputs to max_length=64 tokens .*first: input 1, "
                                             r"steps \d+\.\.39 of 40\) and score\(\) aggregates \(min\) only"):
            score = prm.score([StepSolution("3 +1", ["3+1=4"]), long])
        assert score.isfinite().all()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing cut, nothing said
            prm.score_parts([StepSolution("3 +1", ["3+1=4"])])
    finally:
        prm.config = dataclasses.replace(prm.config, truncate=False)


def test_an_empty_response_is_one_empty_step_as_the_published_prms_score_it(prm):
    """Documented (docs/prm.md): "".split("\\n\\n") is [""] in the Qwen / Skywork cards' code, scored at the tag
    right after the problem; no steps at all is an error."""
    parts = prm.score_parts([StepSolution("3 +1", [""])])
    assert parts[0].shape == (1,) and parts[0].isfinite().all()
    with pytest.raises(DataError, match="non-empty list"):
        prm.score_parts([StepSolution("3 +1", [])])


def test_prm_train_ends_with_the_model_line_as_the_other_train_commands(tmp_path, capsys):
    from mmreward.text.prm.cli import main

    out = tmp_path / "run"
    assert main(["train", "--synthetic", "16", "--max-value", "5", "--tiny-tokenizer", "step", "--max-steps", "1",
                 "--batch-size", "8", "--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0",
                 "--max-length", "64", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"model: {out / 'model'}" and (out / "model" / "config.json").is_file()


def test_an_expansion_wider_than_max_children_is_refused_not_capped():
    """expansion_width=12 with the default max_children=9 drew 9 candidates per expansion without a word."""
    from mmreward.text.prm.search import MCTSConfig

    with pytest.raises(ValueError, match=r"expansion_width=12 is more than max_children=9"):
        MCTSConfig(expansion_width=12)
    assert MCTSConfig(expansion_width=12, max_children=12).expansion_width == 12


def test_prm_search_checks_its_counts_before_the_model_loads(tmp_path, capsys):
    """`prm search --synthetic 0` loaded the model (minutes for a 7B PRM) before compare_search refused it."""
    from mmreward.text.prm.cli import main

    missing = str(tmp_path / "no-such-model")  # the model would fail to load: the flag's error must come first
    for argv, message in ((["--synthetic", "0"], "--synthetic: n_problems must be an integer >= 1, got 0"),
                          (["--num-steps", "0"], "--num-steps: num_steps must be an integer >= 1, got 0"),
                          (["--expansion-width", "12"], "expansion_width=12 is more than max_children=9")):
        assert main(["search", "--model", missing, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_reward_function_checks_its_prm_and_delta_when_built():
    """Both failed only at the first reward call, mid-RL-run: "'int' object is not callable", and the op's
    message about `delta` for RefineConfig(delta="yes")."""
    from mmreward.text.prm.refine import ProcessRewardFunction, RefineConfig

    with pytest.raises(TypeError, match="prm must be a ProcessRewardModel .* got int"):
        ProcessRewardFunction(3)
    with pytest.raises(ValueError, match="delta must be True or False, got 'yes'"):
        RefineConfig(delta="yes")
    fn = ProcessRewardFunction(lambda problem, steps: [0.9] * len(steps), delta=True)
    assert fn("p", ["a", "b"])["reward"] == pytest.approx(0.9)


def test_aggregate_steps_names_parts_it_cannot_read():
    """A 2-D part was flattened into one solution's steps; `prm score`'s null for an unscored step, read back as
    None, failed inside torch ("must be real number, not NoneType")."""
    import torch

    from mmreward.text.prm.model import aggregate_steps

    with pytest.raises(ValueError, match=r"solution 0: step scores must be 1-D .* shape \(2, 2\)"):
        aggregate_steps([torch.ones(2, 2)], "min")
    with pytest.raises(ValueError, match=r"solution 1 has a None step score; write an unscored step as float\('nan'\)"):
        aggregate_steps([[0.5], [0.4, None]], "min")
    assert aggregate_steps([[0.5], [0.4, float("nan")]], "last").tolist() == pytest.approx([0.5, 0.4])


def test_load_takes_the_scoring_options_of_a_saved_prm_and_refuses_the_rest(prm, tmp_path):
    """mmreward.load(folder, aggregation="mean") kept `min` and step_separator= was dropped, both without a word."""
    import mmreward

    folder = str(tmp_path / "prm")
    prm.save_pretrained(folder)
    loaded = mmreward.load(folder, aggregation="mean", truncate=True)
    assert (loaded.config.aggregation, loaded.config.truncate) == ("mean", True)
    with pytest.raises(ValueError, match=r"step_separator= is not an option of process_reward_model folders .* take "
                                         r"aggregation, truncate"):
        mmreward.load(folder, step_separator="\n\n")
    with pytest.raises(ValueError, match="PRMConfig.aggregation must be one of"):
        mmreward.load(folder, aggregation="max")


def test_best_of_n_refuses_a_product_of_raw_values():
    """PRMConfig refuses aggregation='prod' with score='identity'; best_of_n_search(reduce='prod') multiplied the raw
    values (two negative step values make a positive product) and ranked solutions by it."""
    import types

    import torch

    from mmreward.text.prm.search import best_of_n_search

    class Raw:  # a value-head PRM's raw outputs, as score="identity" gives them
        config = types.SimpleNamespace(score="identity")

        def score_parts(self, inputs):
            return [torch.tensor([-0.5] * len(i.steps)) for i in inputs]

    task, policy = _task(), (lambda p, s: "3+1=4" if not s else "4-2=2")
    with pytest.raises(ValueError, match="reduce='prod' needs probabilities"):
        best_of_n_search("3 +1 -2", policy, Raw(), 2, task.is_terminal, reduce="prod")
    assert best_of_n_search("3 +1 -2", policy, Raw(), 2, task.is_terminal, reduce="min").steps == ["3+1=4", "4-2=2"]


def test_labels_given_as_a_tensor_or_array_are_checked_as_a_list(prm):
    """StepExample(..., torch.tensor([1., 0.])) trained before the label check, which then refused it ("labels
    must be a list"); a tensor or array of the wrong length is still named."""
    import numpy as np
    import torch

    from mmreward.text.prm.data import StepExample
    from mmreward.text.prm.train import check_step_example

    for labels in (torch.tensor([1.0, 0.0]), np.array([1.0, 0.0])):
        check_step_example(StepExample("3 +1 -2", ["3+1=4", "4-2=2"], labels), "example 0", "bce")
    with pytest.raises(DataError, match=r"example 0: 2 steps but 3 labels"):
        check_step_example(StepExample("3 +1 -2", ["3+1=4", "4-2=2"], torch.tensor([1.0, 0.0, 1.0])), "example 0",
                           "bce")

"""Learning tests for the PRM stack: a tiny PRM trained on exactly-labelled synthetic chains
reaches ProcessBench F1 >= 0.8 on held-out problems; PRM-guided MCTS beats Best-of-N at the same
budget of generated steps with a noisy policy."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.text.prm.data import read_step_examples  # noqa: E402
from mmreward.text.prm.model import ProcessRewardModel  # noqa: E402
from mmreward.text.prm.search import MCTSConfig, compare_search  # noqa: E402
from mmreward.text.prm.synthetic import NoisyStepJudge, char_tokenizer, make_dataset, tiny_llama  # noqa: E402
from mmreward.text.prm.train import PRMTrainConfig, evaluate_prm, solutions, train_prm  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny Llama PRM (lm head) trained with Math-Shepherd labels (steps after the first error bad)."""
    tok = char_tokenizer("step", max_value=5)
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=64, layers=2, seed=0), tok, head="lm", max_length=64)
    train = read_step_examples(make_dataset(2000, seed=1, max_value=5))
    held_out = read_step_examples(make_dataset(300, seed=2, max_value=5))
    before = evaluate_prm(prm, held_out)
    out = str(tmp_path_factory.mktemp("prm_run"))
    cfg = PRMTrainConfig(output_dir=out, max_steps=120, batch_size=32, lr=3e-3, warmup_steps=10, progress=False,
                         tensorboard=False, plot=False, log_every=0)
    history = train_prm(prm, train, cfg)
    return prm, held_out, before, history


def test_tiny_prm_learns_processbench_f1(trained):
    prm, held_out, before, history = trained
    after = evaluate_prm(prm, held_out, threshold=0.5)
    assert before["processbench_f1"] < 0.5
    assert after["processbench_f1"] >= 0.8, after
    assert after["step_macro_f1"] >= 0.8, after
    assert history[-1]["loss"] < history[0]["loss"]


def test_trained_prm_guides_mcts_better_than_best_of_n(trained):
    prm = trained[0]
    cfg = MCTSConfig(c_uct=0.4, expansion_width=3, budget_steps=12)
    out = compare_search(prm, n_problems=60, num_steps=4, error_rate=0.3, config=cfg, seed=0, max_value=5)
    assert out["mcts_success"] > out["best_of_n_success"], out


def test_mcts_beats_best_of_n_with_known_accuracy_judge():
    """Evaluator right 90% of the time; policy errs 30% per step (solves 24% of 4-step chains)."""
    cfg = MCTSConfig(c_uct=0.4, expansion_width=3, budget_steps=12)
    out = compare_search(NoisyStepJudge(accuracy=0.9), n_problems=150, num_steps=4, error_rate=0.3, config=cfg)
    assert out["mcts_mean_generated_steps"] <= 12 and out["best_of_n_mean_generated_steps"] == 12
    assert out["mcts_success"] > out["best_of_n_success"] + 0.05, out
    assert out["best_of_n_success"] > out["policy_solve_rate"]  # the judge helps Best-of-N too


def _cfg(tmp_path, objective, steps=80):
    return PRMTrainConfig(output_dir=str(tmp_path), objective=objective, max_steps=steps, batch_size=32, lr=3e-3,
                          warmup_steps=10, progress=False, tensorboard=False, plot=False, log_every=0)


def test_value_head_learns_rest_mcts_targets_with_mse(tmp_path):
    from mmreward.text.prm.data import StepExample
    from mmreward.text.prm.labels import trace_value_targets

    tok = char_tokenizer("step", max_value=5)
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, heads=2, seed=0), tok, head="value",
                                           score="identity", max_length=64)

    def value_rows(n, seed):
        return [StepExample(r["prompt"], r["completions"], trace_value_targets([y == 1.0 for y in r["labels"]]))
                for r in make_dataset(n, seed=seed, max_value=5)]

    def mse(examples):
        s = prm.score_parts(solutions(examples))
        return float(torch.cat([(a - torch.tensor(e.labels)) ** 2 for a, e in zip(s, examples)]).mean())

    train, test = value_rows(1000, 1), value_rows(200, 2)
    var = torch.tensor([y for e in test for y in e.labels]).var().item()
    assert mse(test) > 0.5 * var
    train_prm(prm, train, _cfg(tmp_path, "mse"))
    assert mse(test) < 0.2 * var


def test_ppm_objective_learns_step_preferences(tmp_path):
    from mmreward.text.prm.data import read_pair_examples
    from mmreward.text.prm.synthetic import make_pairs
    from mmreward.text.prm.train import _pair_accuracy

    tok = char_tokenizer("step", max_value=5)
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, heads=2, seed=0), tok, head="value",
                                           max_length=64)
    train = read_pair_examples(make_pairs(1000, seed=1, max_value=5))
    test = read_pair_examples(make_pairs(200, seed=2, max_value=5))
    assert _pair_accuracy(prm, test, 64)["pair_accuracy"] < 0.8
    history = train_prm(prm, train, _cfg(tmp_path, "ppm"), eval_examples=test)
    assert history[-1]["eval_pair_accuracy"] >= 0.95

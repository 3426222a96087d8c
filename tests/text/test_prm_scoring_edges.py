"""PRM scoring and search on unusual inputs: a learned position table shorter than max_length, evaluators
returning non-numbers, max_depth 0, task callables that are not callable, a PRM leaving a step unscored."""
import itertools

import pytest
import torch

from mmreward.core.data import DataError
from mmreward.core.inputs import StepSolution
from mmreward.text.prm.model import ProcessRewardModel
from mmreward.text.prm.search import MCTS, MCTSConfig, best_of_n_search
from mmreward.text.prm.synthetic import char_tokenizer

TWO_STEPS = lambda p, s: len(s) >= 2  # noqa: E731


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer("char")


def _gpt2(tok, positions=32):
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=positions, n_embd=16, n_layer=1, n_head=2,
                                          bos_token_id=1, eos_token_id=1))


def test_prm_on_a_learned_position_table_names_an_input_past_it_instead_of_an_index_error(tok):
    # max_length defaulted to 1024 on a 32-position GPT-2: a 73-token input failed inside the embedding
    # ("IndexError: index out of range in self")
    lm = _gpt2(tok)
    prm = ProcessRewardModel.from_backbone(lm, tok, head="lm", step_tag="=")
    assert prm.config.max_length == 32
    long = StepSolution("1", ["1+1=2"] * 10)
    with pytest.raises(DataError, match=r"input 0: problem \+ 10 steps are \d+ tokens, more than max_length=32"):
        prm.score_parts([long])
    parts = ProcessRewardModel.from_backbone(lm, tok, head="lm", step_tag="=", truncate=True).score_parts([long])
    assert parts[0][:4].isfinite().all() and parts[0][4:].isnan().all()
    with pytest.raises(ValueError, match="max_length=64 is more than the 32 positions"):
        ProcessRewardModel.from_backbone(lm, tok, head="lm", step_tag="=", max_length=64)
    # a config that asks for more (a folder saved before, or built directly) is held to the table too
    cfg = prm.config.__class__(**{**prm.config.__dict__, "max_length": 1024})
    direct = ProcessRewardModel(cfg, tok, backbone=prm.backbone)
    with pytest.raises(DataError, match="32 positions of the backbone's learned position table"):
        direct.score_parts([long])


@pytest.mark.parametrize("bad", [None, "0.7", torch.tensor([0.2, 0.3]), [0.5]])
def test_search_names_an_evaluator_that_returns_no_number(bad):
    ev = lambda p, s: bad  # noqa: E731
    with pytest.raises(TypeError, match=r"evaluator returned .* it must return one number"):
        best_of_n_search("q", lambda p, s: "a", ev, 2, TWO_STEPS)
    with pytest.raises(TypeError, match=r"evaluator returned .* it must return one number"):
        MCTS(lambda p, s: "a", ev, TWO_STEPS).search("q")


def test_search_takes_one_element_tensors_and_numpy_scalars():
    np = pytest.importorskip("numpy")
    for v in (torch.tensor(0.25), torch.tensor([0.25]), np.float32(0.25), np.array([0.25])):
        r = best_of_n_search("q", lambda p, s: "a", lambda p, s, v=v: v, 1, TWO_STEPS)
        assert r.score == pytest.approx(-0.5)


@pytest.mark.parametrize("depth", [0, -1, 1.5, True])
def test_best_of_n_max_depth_must_be_a_positive_integer(depth):
    # 0 used to stop every sample before its first step and blame is_terminal; 1.5 was accepted
    with pytest.raises(ValueError, match="max_depth must be an integer >= 1"):
        best_of_n_search("q", lambda p, s: "a", lambda p, s: 0.5, 2, TWO_STEPS, max_depth=depth)


def test_search_names_task_callables_that_are_not_callable():
    with pytest.raises(TypeError, match="is_terminal must be a callable"):
        MCTS(lambda p, s: "a", lambda p, s: 0.5, None)
    with pytest.raises(TypeError, match="is_correct must be a callable"):
        MCTS(lambda p, s: "a", lambda p, s: 0.5, TWO_STEPS, is_correct=True)
    with pytest.raises(TypeError, match="is_terminal must be a callable"):
        best_of_n_search("q", lambda p, s: "a", lambda p, s: 0.5, 2, "done")


def test_mcts_refuses_a_problem_that_is_terminal_before_any_step():
    with pytest.raises(ValueError, match="no steps to search"):
        MCTS(lambda p, s: "a", lambda p, s: 0.5, lambda p, s: True).search("q")


class _TruncatingPRM:
    def score_parts(self, items):
        return [torch.tensor([0.9] + [float("nan")] * (len(it.steps) - 1)) for it in items]


def test_mcts_names_a_step_the_prm_left_unscored():
    c = itertools.count()
    with pytest.raises(ValueError, match="left a new step .* unscored"):
        MCTS(lambda p, s: f"s{next(c)}", _TruncatingPRM(), TWO_STEPS, MCTSConfig(budget_steps=8)).search("q")


def test_reward_function_refuses_config_and_keywords_together():
    from mmreward.text.prm.refine import ProcessRewardFunction, RefineConfig

    # clip=0.2 used to be dropped silently in favour of the config (no refinement at all)
    with pytest.raises(TypeError, match=r"either config or its fields .*\['clip'\]"):
        ProcessRewardFunction(lambda p, s: [0.5], RefineConfig(), clip=0.2)
    assert ProcessRewardFunction(lambda p, s: [0.5], clip=0.2).config.clip == 0.2


@pytest.mark.parametrize("bad", [None, "0.5", [1j], {"a": 1}])
def test_reward_function_names_a_callable_prm_that_returns_no_scores(bad):
    from mmreward.text.prm.refine import ProcessRewardFunction

    with pytest.raises(TypeError, match=r"trajectory 0: the PRM returned .* one number per step"):
        ProcessRewardFunction(lambda p, s: bad)("q", ["a"])


def test_reward_function_on_no_trajectories_is_one_clear_error():
    from mmreward.text.prm.refine import ProcessRewardFunction

    f = ProcessRewardFunction(lambda p, s: [0.5] * len(s), clip=0.3)
    for call in (lambda: f.batch([], []), lambda: f.rewards([], [])):
        with pytest.raises(ValueError, match="got no trajectories"):  # was torch.cat's "non-empty list of Tensors"
            call()


@pytest.mark.parametrize("max_steps", [0, 1, 2.5, True])
def test_monte_carlo_labels_max_steps_below_the_solution_is_refused(max_steps):
    from mmreward.text.prm.labels import monte_carlo_labels

    # max_steps=1 with 2 given steps cut every rollout of the 2-step prefix at once: it was checked unfinished
    # and labelled 0 although the policy always completes it correctly
    with pytest.raises(ValueError, match="max_steps must be an integer >= the 2 given steps"):
        monte_carlo_labels("q", ["a", "b"], lambda p, s: "a", lambda p, s: len(s) >= 3, lambda p, s: len(s) >= 3,
                           k=2, max_steps=max_steps)
    assert monte_carlo_labels("q", ["a", "b"], lambda p, s: "a", lambda p, s: len(s) >= 3, lambda p, s: len(s) >= 3,
                              k=2, max_steps=3) == [1.0, 1.0]


def _tree():
    from mmreward.text.prm.labels import SearchTree

    t = SearchTree("p")
    a = t.add(0, "a", 0.5, False)
    t.add(a.id, "b", 0.5, True)
    t.add(0, "c", -0.5, True)
    return t


@pytest.mark.parametrize("corrupt", [
    lambda d: d["nodes"][1].update(id=5),                 # id is not its position
    lambda d: d["nodes"][2].update(parent=3),             # parent after the child
    lambda d: d["nodes"][0]["children"].append(7),        # a child that does not exist
    lambda d: d["nodes"][0]["children"].remove(3),        # a node missing from its parent's children
    lambda d: d["nodes"][1]["children"].append(3),        # a node listed by a parent it does not have
])
def test_search_tree_from_dict_refuses_inconsistent_links(corrupt):
    import json

    from mmreward.text.prm.labels import SearchTree

    d = json.loads(_tree().to_json())
    assert SearchTree.from_dict(json.loads(json.dumps(d))).steps(2) == ["a", "b"]
    corrupt(d)
    with pytest.raises(ValueError, match="not a search tree record"):
        SearchTree.from_dict(d)


@pytest.mark.parametrize("top", [0, -1, 1.5])
def test_ppm_pairs_top_must_be_a_count(top):
    from mmreward.text.prm.labels import ppm_pairs

    with pytest.raises(ValueError, match="top must be an integer >= 1"):
        ppm_pairs(_tree(), top=top)


@pytest.mark.parametrize("make", ["make_dataset", "make_problems", "make_pairs"])
def test_synthetic_makers_name_a_bad_count(make):
    from mmreward.text.prm import synthetic

    fn = getattr(synthetic, make)
    assert fn(0) == []
    for n in (-1, 2.5, True):  # -1 gave [] silently, 2.5 a range() TypeError
        with pytest.raises(ValueError, match="n must be an integer >= 0"):
            fn(n)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        fn(2, num_steps=2.5)
    with pytest.raises(ValueError, match="max_value must be in 1..9"):
        fn(2, max_value=4.5)


@pytest.mark.parametrize("kw, match", [({"separator": ""}, "separator must be a non-empty string"),
                                       ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
                                       ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer >= 1"),
                                       ({"seed": 1.5}, "seed must be an integer >= 0")])
def test_hf_step_policy_names_bad_settings(tok, kw, match):
    from mmreward.text.prm.search import HFStepPolicy

    # "" failed at the first call in str.split, 0 in generate(), a float seed in torch.manual_seed
    with pytest.raises(ValueError, match=match):
        HFStepPolicy(_gpt2(tok), tok, **kw)


def test_hf_step_policy_refuses_a_string_of_steps_and_names_a_prompt_past_the_position_table(tok):
    from mmreward.text.prm.search import HFStepPolicy

    pol = HFStepPolicy(_gpt2(tok, positions=16), tok, max_new_tokens=4)
    assert isinstance(pol("1+2", []), str)
    with pytest.raises(TypeError, match="steps a list of str"):
        pol("1+2", "1+2=3")  # was joined one character per step
    with pytest.raises(ValueError, match="more than the 16 positions"):  # was an IndexError inside generate()
        pol("1+2", ["1+2=3"] * 4)


@pytest.mark.parametrize("reduce", ["min", "prod", "last", "mean"])
def test_aggregate_of_a_solution_without_a_scored_step_is_an_error_not_the_best_score(reduce):
    from mmreward.text.prm.model import aggregate_steps

    ok = aggregate_steps([torch.tensor([0.3, 0.5]), [float("nan"), 0.4]], reduce)  # a list is taken too
    assert ok.shape == (2,) and float(ok[1]) == pytest.approx(0.4)
    for empty in (torch.tensor([float("nan"), float("nan")]), torch.tensor([])):
        with pytest.raises(ValueError, match="solution 1 has no scored step"):  # was 1.0: "no step wrong"
            aggregate_steps([torch.tensor([0.3]), empty], reduce)
    assert aggregate_steps([], reduce).shape == (0,)


@pytest.mark.parametrize("m", [float("nan"), 0, "2", True])
def test_rest_mcts_values_names_a_bad_remaining_count(m):
    from mmreward.text.prm.labels import rest_mcts_values

    with pytest.raises(ValueError, match=r"remaining\[1\] must be a number >= 1"):
        rest_mcts_values([1, 1], [2, m])  # NaN used to pass `m < 1` and make every later target NaN

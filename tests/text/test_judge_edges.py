"""Generative judges on unusual inputs: parser settings at their edges (a 0-character tail, a reversed score
range) and errors that name the right input when a judge runs a subset of its inputs (GRM's runs per response
count, RM-R1's forced verdicts)."""
import pytest
import torch

from mmreward.text.generative.parsing import parse_ab, parse_score, parse_scores
from mmreward.text.generative.tiny import word_tokenizer

WORDS = "good bad q0 q1 q2 judge A B [[A]] [[B]] <answer> </answer> \\boxed"


def test_parse_ab_tail_of_zero_characters_reads_no_bare_verdict():
    # text[-0:] is the whole text: tail_chars=0 used to read a bare [[A]] anywhere in the output
    assert parse_ab("[[A]] and more", tail_chars=0).value is None
    assert parse_ab("[[A]] and more", tail_chars=0).reason == "no [[A]] / [[B]] verdict in the tail"
    assert parse_ab("<answer>[[B]]</answer>", tail_chars=0).value == "B"  # the answer tag needs no tail
    assert parse_ab("x [[A]]", tail_chars=5).value == "A" and parse_ab("[[A]] x", tail_chars=3).value is None
    assert parse_ab("[[B]]", tail_chars=10_000).value == "B"
    for bad in (-5, 2.5, True):
        with pytest.raises(ValueError, match="tail_chars must be None"):
            parse_ab("[[A]]", tail_chars=bad)


@pytest.mark.parametrize("fn", [lambda lo, hi: parse_scores("\\boxed{3, 4}", 2, low=lo, high=hi),
                                lambda lo, hi: parse_score("Score: 3", low=lo, high=hi)])
def test_score_parsers_refuse_a_reversed_or_nan_range(fn):
    # low > high made every score "outside [5, 1]": no verdict, silently, for every output
    with pytest.raises(ValueError, match="low=5 is above high=1"):
        fn(5, 1)
    with pytest.raises(ValueError, match="low must be a number"):
        fn(float("nan"), 10)
    assert fn(1, 10).ok and fn(float("-inf"), float("inf")).ok


def test_parse_scores_n_true_is_not_one():
    with pytest.raises(ValueError, match="n must be a positive int"):
        parse_scores("\\boxed{1}", True)


@pytest.fixture(scope="module")
def gpt2_judge_parts():
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = word_tokenizer([WORDS])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=2, eos_token_id=2, pad_token_id=0))
    return m, tok


def test_grm_names_the_query_that_is_too_long_not_its_place_in_a_response_count_group(gpt2_judge_parts):
    from mmreward.text.generative.grm import GRMConfig, GRMJudge

    m, tok = gpt2_judge_parts
    g = GRMJudge(m, tok, GRMConfig(instructions="judge", num_samples=1, max_new_tokens=2))
    # queries 0 and 2 have one response each and run together: query 2 used to be named "prompt 1"
    with pytest.raises(ValueError, match=r"^prompt 2 is \d+ tokens"):
        g.judge_lists(["q0", "q1", "q2"], [["good"], ["good", "bad"], ["good " * 60]])


def test_runner_names_prompts_by_the_callers_row_numbers(gpt2_judge_parts):
    from mmreward.text.generative.runner import JudgeConfig, JudgeRunner

    m, tok = gpt2_judge_parts
    r = JudgeRunner(m, tok, JudgeConfig(max_new_tokens=2, batch_size=1))
    with pytest.raises(ValueError, match=r"^prompt 7 is \d+ tokens"):
        r.choice_probs(["good", "good " * 70], ["A", "B"], rows=[3, 7])
    with pytest.raises(ValueError, match=r"^prompt 1 is \d+ tokens"):  # default: the call's own numbers
        r.generate(["good", "good " * 70])


def test_rm_r1_forced_verdict_past_the_position_table_says_so(gpt2_judge_parts):
    from mmreward.text.generative.rm_r1 import RMR1Config, RMR1Judge

    m, tok = gpt2_judge_parts
    j = RMR1Judge(m, tok, RMR1Config(system_prompt="judge", max_new_tokens=1, forced_verdict=True))
    base = len(tok(j.runner.render(j.messages("q0", "good", "bad")), add_special_tokens=False).input_ids)
    long = "good " * (1 + 64 - base)  # the judge prompt is exactly 64 tokens: generation fits, the forced prefix not
    with pytest.raises(ValueError, match=r"forced verdict .*prompt 1 is \d+ tokens.*lower max_new_tokens or set "
                                         r"forced_verdict=False"):
        j.judge(["q0", "q0"], ["good", long], ["bad", "bad"])


@pytest.fixture(scope="module")
def llama_runner_parts():
    from mmreward.text.generative.tiny import tiny_llama

    tok = word_tokenizer([WORDS, "Yes No"])
    return tiny_llama(len(tok), hidden=16, layers=1, heads=2), tok


def test_runner_refuses_an_empty_prompt_instead_of_generating_from_padding(llama_runner_parts):
    from mmreward.text.generative.runner import JudgeConfig, JudgeRunner

    r = JudgeRunner(*llama_runner_parts, JudgeConfig(max_new_tokens=2))
    for call in (lambda p: r.generate(p), lambda p: r.choice_probs(p, ["Yes", "No"])):
        # generate() used to continue a row of pure padding; choice_probs named "row 0 of the batch"
        with pytest.raises(ValueError, match=r"prompt 1 is empty: it encodes to no tokens \('  '\)"):
            call(["good", "  "])


@pytest.mark.parametrize("words", [[], "Yes", ["Yes"], ["Yes", 3]])
def test_choice_probs_needs_two_or_more_word_choices(llama_runner_parts, words):
    from mmreward.text.generative.runner import JudgeRunner

    # [] was an IndexError, "Yes" was split into characters, ["Yes"] was always probability 1
    with pytest.raises(ValueError, match="words must be a list of at least 2 strings"):
        JudgeRunner(*llama_runner_parts).choice_probs(["good"], words)


@pytest.mark.parametrize("content", [None, 5])
def test_runner_refuses_a_message_whose_content_is_not_text(llama_runner_parts, content):
    from mmreward.text.generative.runner import JudgeConfig, JudgeRunner

    r = JudgeRunner(*llama_runner_parts, JudgeConfig(max_new_tokens=2))
    with pytest.raises(TypeError, match=r"prompts\[0\]: message 1 needs a str 'role' and a str"):
        r.generate([[{"role": "system", "content": "judge"}, {"role": "user", "content": content}]])  # was "None"


@pytest.mark.parametrize("kw, name", [({"seed": 1.5}, "seed"), ({"seed": -1}, "seed"),
                                      ({"max_prompt_tokens": 0}, "max_prompt_tokens"),
                                      ({"max_prompt_tokens": 2.5}, "max_prompt_tokens"),
                                      ({"temperature": float("inf")}, "temperature"),
                                      ({"chat_template_kwargs": "x"}, "chat_template_kwargs")])
def test_judge_config_names_bad_settings(kw, name):
    from mmreward.text.generative.runner import JudgeConfig

    with pytest.raises(ValueError, match=f"JudgeConfig.{name} must be"):
        JudgeConfig(**kw)


def test_both_orders_refuses_strings_instead_of_judging_each_character():
    from mmreward.text.generative.position import both_orders

    seen = []

    def judge(p, f, s):
        seen.append(list(p))
        return torch.full((len(p),), 0.5, dtype=torch.float64)

    with pytest.raises(TypeError, match="both_orders: prompts must be a list, got"):
        both_orders(judge, "ab", "cd", "ef")  # was judged as the pairs ('a', 'c', 'e'), ('b', 'd', 'f')
    assert not seen
    assert both_orders(judge, ("ab",), ["cd"], ["ef"])["p"].tolist() == [0.5]


def test_sft_batch_refuses_an_empty_prompt_whose_first_target_token_would_not_be_learned():
    from mmreward.text.generative.sft import sft_batch

    tok = word_tokenizer([WORDS, "Yes No"])
    with pytest.raises(ValueError, match=r"prompts\[1\] encodes to no token"):
        sft_batch(tok, ["good", ""], ["Yes", "Yes"])  # "Yes" at position 0 had no label: its loss was eos only
    assert sft_batch(tok, ["good"], ["Yes"])["labels"].tolist()[0][1:] == tok.encode("Yes <eos>", add_special_tokens=False)


@pytest.mark.parametrize("out", [torch.zeros(3), torch.zeros(4, 1), [0.1, 0.2, 0.3, 0.4]])
def test_judge_from_scores_names_a_scorer_with_the_wrong_output(out):
    from mmreward.text.generative.position import judge_from_scores

    judge = judge_from_scores(lambda p, r: out)
    with pytest.raises(ValueError, match="judge: the scorer returned .* for 4 responses"):
        judge(["q0", "q1"], ["a", "b"], ["c", "d"])
    ok = judge_from_scores(lambda p, r: torch.tensor([1.0, 0.0, 0.0, 0.0]))(["q0", "q1"], ["a", "b"], ["c", "d"])
    assert ok.tolist() == [1.0, 0.5]

"""An RLHF engineer's use of the six generative judges: every judge's outputs are float32, verdicts written
inside the reasoning (an unclosed or closed ``<think>``) are not the answer, a copied runner numbers its own
prompts, and bad settings / inputs are refused up front, naming them."""
import copy

import pytest
import torch

from mmreward.core.inputs import Comparison, TextPair
from mmreward.text.generative import (GRAM, CriticRM, CriticRMConfig, GenRM, GenRMConfig, GRAMConfig, GRMConfig,
                                      GRMJudge, JudgeConfig, JudgeRunner, RewardAnythingConfig, RewardAnythingJudge,
                                      RMR1Config, RMR1Judge, ScalarHeadLM, evaluate_pairs_with_judge,
                                      rmbench_with_judge)
from mmreward.text.generative.parsing import (parse_ab, parse_ab_rm_r1, parse_json_object, parse_ranking,
                                              parse_score, parse_scores, parse_yes_no)
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

WORDS = ("good bad fine poor q0 q1 correct ? Yes No A B [[A]] [[B]] <answer> </answer> judge Score : 1 2 3 4 5 "
         "Which response is better Critique the response { } \" scores model-1 , \\boxed <think> </think>")


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer([WORDS])


def lm(tok, seed=0):
    return tiny_llama(len(tok), hidden=32, layers=1, heads=2, seed=seed)


def build(kind, tok):
    m = lm(tok)
    return {
        "genrm": lambda: GenRM(m, tok, GenRMConfig(question="correct ?")),
        "gram": lambda: GRAM(m, tok, GRAMConfig(instruction="Which response is better ?")),
        "rm_r1": lambda: RMR1Judge(m, tok, RMR1Config(system_prompt="judge", max_new_tokens=3)),
        "rm_r1_forced": lambda: RMR1Judge(m, tok, RMR1Config(system_prompt="judge", max_new_tokens=3,
                                                             forced_verdict=True)),
        "grm": lambda: GRMJudge(m, tok, GRMConfig(instructions="judge", max_new_tokens=3)),
        "reward_anything": lambda: RewardAnythingJudge(m, tok, RewardAnythingConfig(max_new_tokens=3)),
        "critic_rm": lambda: CriticRM(ScalarHeadLM(m), tok, CriticRMConfig(request="Critique the response",
                                                                          max_new_tokens=3)),
    }[kind]()


KINDS = ["genrm", "gram", "rm_r1", "rm_r1_forced", "grm", "reward_anything", "critic_rm"]


# ------------------------------------------------------------------ one output dtype
@pytest.mark.parametrize("kind", KINDS)
def test_every_judge_returns_float32(kind, tok):
    """RM-R1's judge, DeepSeek-GRM's and RewardAnything's judge / judge_lists, and GenRM's / Critic-RM's pairwise
    view returned float64 while score() and GRAM gave float32: stacking rewards of several judges mixed dtypes."""
    judge = build(kind, tok)
    p = judge.judge(["q0", "q1"], ["good", "bad"], ["bad", "good"])
    assert p.dtype == torch.float32 and p.shape == (2,) and p.device.type == "cpu"
    inputs = ([Comparison("q0", "good", "bad")] if judge.input_types[0] is Comparison else [TextPair("q0", "good")])
    assert judge.score(inputs).dtype == torch.float32
    if hasattr(judge, "judge_lists"):
        lists = judge.judge_lists(["q0", "q1"], [["good"], ["bad", "fine", "poor"]])
        assert [t.dtype for t in lists] == [torch.float32, torch.float32]
        assert [t.shape for t in lists] == [(1,), (3,)]
    if kind.startswith("rm_r1"):
        assert judge.last_strict.dtype == torch.float32


# ------------------------------------------------------------------ the runner
def test_a_copied_runner_numbers_its_own_prompts(tok):
    """copy.copy shared the per-thread row-number dict: a `numbered` block on one runner renamed the prompts of
    the other in its errors (here prompt 0 of the copy was called prompt 7)."""
    runner = JudgeRunner(lm(tok), tok, JudgeConfig(max_new_tokens=2))
    for other in (copy.copy(runner), copy.deepcopy(runner)):
        with runner.numbered([7]):
            with pytest.raises(ValueError, match="prompt 0 is empty"):
                other.generate([""])
            with pytest.raises(ValueError, match="prompt 7 is empty"):
                runner.generate([""])
    with runner.numbered([7]):
        made_inside = copy.copy(runner)
    with pytest.raises(ValueError, match="prompt 0 is empty"):  # not the block's numbers, kept for good
        made_inside.generate([""])


# ------------------------------------------------------------------ verdicts and the reasoning
CUT_OFF = "output ends inside an unclosed <think> section"


@pytest.mark.parametrize("parse, draft", [
    (parse_ab, "<answer>[[A]]</answer>"),
    (lambda t: parse_scores(t, 2), "\\boxed{7, 3}"),
    (parse_score, "Score: 7"),
    (parse_yes_no, "Yes"),
    (parse_json_object, '{"scores": {"model-1": 4}}'),
])
def test_a_verdict_inside_the_reasoning_is_not_the_answer(parse, draft):
    """A judge cut off while thinking (max_new_tokens reached inside <think>) wrote only a draft: it used to be
    read as the verdict. Closed reasoning is dropped too; an answer after it (or before a new, unfinished
    <think>) counts, and so does one after a </think> whose <think> was in the prompt (R1-style templates)."""
    cut = parse(f"<think> let me see: {draft} hmm, wait")
    assert not cut.ok and CUT_OFF in cut.reason
    only_thought = parse(f"<think> {draft} </think>")
    assert not only_thought.ok and "no answer after the </think> reasoning" in only_thought.reason
    assert parse(f"<think> thinking </think> {draft}").ok
    assert parse(f"{draft} <think> on second thought").ok
    assert parse(f"reasoning begun by the prompt </think> {draft}").ok
    assert not parse(f"{draft} </think> so that is settled").ok  # that draft was reasoning begun by the prompt


def test_drafts_in_the_reasoning_do_not_override_the_answer():
    assert parse_ab("<think> <answer>[[A]]</answer> no: </think> <answer>[[B]]</answer>").value == "B"
    assert parse_ab("[[A]] is tempting </think> final: [[B]]").value == "B"
    assert parse_scores("<think> \\boxed{9, 1} </think> \\boxed{2, 8} <think> more", 2).value == [2, 8]
    assert parse_score("<think> Score: 9 </think> Score: 4").value == 4.0
    # the official readers stay as published: RM-R1's harness rule reads the whole output
    assert parse_ab_rm_r1("<think> [[A]]").value == "A"
    assert parse_ab("<think> [[A]] </think> [[B]]", exclusive=True).reason.startswith("conflicting")


def test_rewardanything_reader_is_the_official_one_and_its_fallback_skips_the_reasoning():
    names = ["model-1", "model-2"]
    # RewardAnything's own reader (first `{` to last `}` after removing closed think sections) reads the draft of
    # an unclosed <think>: kept, as published
    official = parse_ranking('<think> {"scores": {"model-1": 4, "model-2": 2}} wait', names)
    assert official.ok and official.value.scores == {"model-1": 4.0, "model-2": 2.0}
    # where that reader gets nothing, mmreward's fallback reads the answer after the reasoning only
    fallback = parse_ranking('{"x": 1} </think> prose {"scores": {"model-1": 1, "model-2": 5}} and {"y": }', names)
    assert fallback.ok and fallback.value.scores == {"model-1": 1.0, "model-2": 5.0}


def test_rm_r1_judge_counts_a_cut_off_judgement_as_no_verdict(tok, monkeypatch):
    judge = build("rm_r1", tok)
    monkeypatch.setattr(judge.runner, "generate", lambda prompts, *a, **k: [
        ["<think> the first is better: <answer>[[A]]</answer> but"],
        ["<think> A looks right </think> <answer>[[B]]</answer>"]][:len(prompts)])
    p = judge.judge(["q0", "q1"], ["good", "bad"], ["bad", "good"])
    assert p.tolist() == [0.5, 0.0]
    m = judge.metrics()
    assert m["n_parsed"] == 1 and any(CUT_OFF in r for r in m["reasons"])


# ------------------------------------------------------------------ numbers
@pytest.mark.parametrize("text", ["Score: 1,000", "Score: 7,5", "**Score:** 8,5 overall", "Rating: 7,5/10"])
def test_a_number_with_a_comma_is_not_read_by_its_first_digits(text):
    """'Score: 1,000' was the score 1 and a decimal comma 'Score: 7,5' the score 7."""
    assert not parse_score(text).ok
    assert parse_score(text + " Score: 6").value == 6.0  # a later clean verdict still counts
    assert parse_score("Score: 7, then 5").value == 7.0


# ------------------------------------------------------------------ settings and inputs refused up front
def test_gram_verdict_tokens_are_checked_with_the_config():
    with pytest.raises(ValueError, match="token_a and token_b must be different"):
        GRAMConfig(token_a="A", token_b=" A")
    with pytest.raises(ValueError, match="GRAMConfig.token_b must be a non-empty"):
        GRAMConfig(token_b=" ")


def test_rewardanything_needs_a_principle(tok):
    with pytest.raises(ValueError, match="RewardAnythingConfig.principle must be a non-empty"):
        RewardAnythingConfig(principle="  ")
    judge = build("reward_anything", tok)
    with pytest.raises(ValueError, match=r"principles\[1\] must be a non-empty"):
        judge.judge_lists(["q0", "q1"], [["good"], ["bad"]], ["be brief", ""])


@pytest.mark.parametrize("kind", KINDS)
def test_a_tokenizer_without_a_chat_template_is_refused_when_the_judge_is_built(kind, tok):
    bare = word_tokenizer([WORDS])
    bare.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        build(kind, bare)


def test_evaluators_refuse_a_single_row_for_the_list(tok):
    judge = build("gram", tok)
    with pytest.raises(TypeError, match="wrap a single row in a list"):
        evaluate_pairs_with_judge(judge, {"prompt": "q0", "chosen": "good", "rejected": "bad"})
    with pytest.raises(TypeError, match="wrap a single item in a list"):
        rmbench_with_judge(judge, {"prompt": "q0", "chosen": ["good"] * 3, "rejected": ["bad"] * 3})
    with pytest.raises(ValueError, match="row 0: needs str 'prompt', 'chosen', 'rejected'"):
        evaluate_pairs_with_judge(judge, [{"prompt": "q0", "chosen": "good"}])


def test_rewardanything_pairwise_verdict_ignores_a_score_off_the_scale(tok):
    """score() gives a response scored 7 on the 1–5 scale 0, but judge() let that 7 beat a valid 3, so the
    pairwise evaluation and the pointwise scores disagreed; off the scale is no score: a tie, as a missing one."""
    import json

    judge = build("reward_anything", tok)
    said = {"good": 7, "bad": 3, "fine": 4}

    def fake_generate(msgs, batch_size=None):
        out = []
        for m in msgs:
            shown = json.loads(m[1]["content"])["responses"]
            out.append([json.dumps({"scores": {n: said[t] for n, t in shown.items()},
                                    "best-to-worst": sorted(shown, key=lambda n: -said[shown[n]])})])
        return out

    judge.runner.generate = fake_generate
    assert judge.judge(["q0", "q0"], ["good", "fine"], ["bad", "bad"]).tolist() == [0.5, 1.0]
    assert judge.score([TextPair("q0", "good"), TextPair("q0", "bad")]).tolist() == [0.0, 3.0]
    assert judge.judge_lists(["q0"], [["good", "bad"]])[0].tolist() == [7.0, 3.0]  # as written (rewards read them)


def test_rm_r1_forced_verdict_follows_the_reasoning_it_closes(tok, monkeypatch):
    """A judgement cut off inside <think> got '<answer>[[' appended inside the reasoning; the prefix now comes
    after a closing </think>, where a reasoning model writes its verdict."""
    judge = build("rm_r1_forced", tok)
    monkeypatch.setattr(judge.runner, "generate", lambda prompts, *a, **k: [["<think> A is"], ["no verdict"]])
    seen = []
    real = judge.runner.choice_probs

    def recording(texts, words, *a, **k):
        seen.extend(texts)
        return real(texts, words, *a, **k)

    monkeypatch.setattr(judge.runner, "choice_probs", recording)
    p = judge.judge(["q0", "q1"], ["good", "bad"], ["bad", "good"])
    assert judge.last_forced.tolist() == [True, True] and p.dtype == torch.float32
    assert seen[0].endswith("<think> A is\n</think>\n\n<answer>[[")
    assert seen[1].endswith("no verdict\n<answer>[[")


def test_judges_read_a_conversation_that_opens_with_a_system_turn_as_reward_models_do():
    """UltraFeedback-style rows ({"prompt": Q, "chosen": [system, user Q, assistant A]}): reward models put the
    system turn first and show Q once; the judges' chat turns showed Q, the system turn, then Q again."""
    from mmreward.text.generative.base import chat_turns

    system = {"role": "system", "content": "be brief"}
    conversation = [system, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert chat_turns("Q", conversation) == conversation
    assert chat_turns("Q", conversation[1:]) == conversation[1:]  # the repeated prompt turn still dropped
    assert chat_turns(None, conversation) == conversation


def test_a_think_tag_mentioned_inside_the_answer_does_not_end_it():
    """The answer may name the tag ("In the template you write `<think>` first ..."): everything after it was
    thrown away as cut-off reasoning, and the verdict with it. A `<think>` that opens a line still is reasoning."""
    from mmreward.text.generative.parsing import parse_ab

    mentioned = "Reasoning models write `<think>` before they answer; the second answer explains it. [[B]]"
    assert parse_ab(mentioned).value == "B"
    cut = "[[A]] is my first guess.\n<think>\nWait, let me reconsider: maybe [[B]]"
    assert parse_ab(cut).value == "A"  # the answer before an unfinished <think> counts, the draft inside does not
    assert not parse_ab("<think>\nB looks better, so [[B]]").ok

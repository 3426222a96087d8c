"""RewardAnything: masked shuffled names, JSON parsing back to the original order, accuracy / format rewards."""
import json

import pytest

from mmreward.text.generative.parsing import Parsed, parse_ranking
from mmreward.text.generative.reward_anything import (
    RewardAnythingConfig, RewardAnythingJudge, accuracy_reward, build_input, format_reward,
)
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer


def test_build_input_masks_and_shuffles_deterministically():
    resp = ["first answer", "second answer", "third answer", "fourth answer"]
    text, names = build_input("be concise", "q?", resp, seed=3)
    obj = json.loads(text)
    assert obj["principle"] == "be concise" and obj["prompt"] == "q?"
    assert sorted(names) == [f"model-{i}" for i in range(1, 5)]
    assert all(obj["responses"][names[i]] == resp[i] for i in range(4))  # names map back to the originals
    assert build_input("be concise", "q?", resp, seed=3) == (text, names)
    orders = {tuple(build_input("p", "q", resp, seed=s)[1]) for s in range(20)}
    assert len(orders) > 1  # the order really is shuffled
    with pytest.raises(ValueError, match="no responses"):
        build_input("p", "q", [])
    with pytest.raises(TypeError, match=r"responses\[1\]"):
        build_input("p", "q", ["a", 3])


def test_accuracy_reward_by_hand():
    gt = {"a": 3, "b": 1, "c": 1}
    # pairs with different gt: (a,b) w=3, (a,c) w=3; (b,c) tie in gt is skipped
    assert accuracy_reward({"a": 5, "b": 2, "c": 1}, gt) == 1.0
    assert accuracy_reward({"a": 1, "b": 2, "c": 0}, gt) == pytest.approx(1 - 3 / 6)  # (a,b) reversed
    assert accuracy_reward({"a": 2, "b": 2, "c": 0}, gt) == pytest.approx(1 - 1.5 / 6)  # (a,b) predicted tie
    assert accuracy_reward({"a": 0, "b": 2, "c": 2}, gt) == pytest.approx(0.0)
    assert accuracy_reward({"b": 2, "c": 1}, gt) == pytest.approx(0.0)  # a unscored: both its pairs wrong
    assert accuracy_reward({"x": 1}, {"x": 1, "y": 1}) == 1.0
    gt4 = {"a": 4, "b": 3, "c": 1}  # weights: ab 2, ac 4, bc 3 → total 9
    assert accuracy_reward({"a": 1, "b": 2, "c": 3}, gt4) == pytest.approx(0.0)
    assert accuracy_reward({"a": 3, "b": 1, "c": 2}, gt4) == pytest.approx(1 - 3 / 9)
    with pytest.raises(ValueError, match="empty"):
        accuracy_reward({}, {})


def test_format_reward_components():
    names = ["model-1", "model-2"]
    full = parse_ranking('{"scores": {"model-1": 5, "model-2": 1}, "best-to-worst": ["model-1", "model-2"]}', names)
    assert format_reward(full) == 1.0
    inconsistent = parse_ranking('{"scores": {"model-1": 5, "model-2": 1}, "best-to-worst": ["model-2", "model-1"]}', names)
    assert format_reward(inconsistent) == 0.75
    partial = parse_ranking('{"scores": {"model-1": 5}}', names)
    assert format_reward(partial) == 0.25 and not partial.ok
    assert format_reward(parse_ranking("no json here", names)) == -1.0
    assert format_reward(Parsed.fail("empty output")) == -1.0


def test_judge_maps_scores_back_to_original_order():
    tok = word_tokenizer(['{ } " : , [ ] scores best-to-worst model-1 model-2 principle prompt responses good bad q'])
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2)
    j = RewardAnythingJudge(model, tok, RewardAnythingConfig(max_new_tokens=4, seed=5))

    def fake_generate(msgs, batch_size=None):  # noqa: E306 -- a judge that scores by the text it is shown
        out = []
        for m in msgs:
            shown = json.loads(m[1]["content"])["responses"]
            sc = {n: (5 if "good" in r else 1) for n, r in shown.items()}
            out.append([json.dumps({"scores": sc, "best-to-worst": sorted(sc, key=lambda k: -sc[k])})])
        return out

    j.runner.generate = fake_generate
    v = j.judge_lists(["q", "q", "q"], [["bad", "good"], ["good", "bad"], ["bad", "bad good", "good"]])
    assert [x.tolist() for x in v] == [[1.0, 5.0], [5.0, 1.0], [1.0, 5.0, 5.0]]
    assert j.judge(["q", "q"], ["good", "bad"], ["bad", "good"]).tolist() == [1.0, 0.0]
    m = j.metrics()
    assert m["parse_rate"] == 1.0 and m["format_reward"] == 1.0
    # the real (untrained) model's output is parsed or reported as no verdict, never a crash
    j2 = RewardAnythingJudge(model, tok, RewardAnythingConfig(max_new_tokens=6))
    p = j2.judge(["q"], ["good"], ["bad"])
    assert p.tolist() in ([0.0], [0.5], [1.0]) and j2.metrics()["n"] == 1


def test_principles_list_must_match_the_prompts():
    tok = word_tokenizer(['{ } " : , [ ] scores best-to-worst model-1 model-2 principle prompt responses good bad q'])
    model = tiny_llama(len(tok), hidden=16, layers=1, heads=2)
    j = RewardAnythingJudge(model, tok, RewardAnythingConfig(max_new_tokens=4))
    j.runner.generate = lambda msgs, batch_size=None: [['{"scores": {"model-1": 3}}'] for _ in msgs]
    prompts, responses = ["q", "q", "q"], [["good"], ["bad"], ["good"]]
    assert len(j.judge_lists(prompts, responses, principles=["p1", "p2", "p3"])) == 3
    # two principles for three queries dropped the third query (zip): 2 results for 3 prompts
    with pytest.raises(ValueError, match="principles / prompts must be non-empty and equally long, got 2, 3"):
        j.judge_lists(prompts, responses, principles=["p1", "p2"])
    with pytest.raises(TypeError, match=r"principles\[1\] must be a string .* got None"):
        j.judge_lists(prompts, responses, principles=["p1", None, "p3"])
    with pytest.raises(TypeError, match="principles must be a list of strings, got 'be brief'"):
        j.judge_lists(prompts, responses, principles="be brief")


def test_score_of_one_response_off_the_scale_is_no_score():
    """score() gave a judge's 7 or 100 as the reward (above every answer scored on the 1–5 scale)."""
    tok = word_tokenizer(['{ } " : , [ ] scores best-to-worst model-1 principle prompt responses good bad q'])
    j = RewardAnythingJudge(tiny_llama(len(tok), hidden=32, layers=1, heads=2), tok, RewardAnythingConfig(max_new_tokens=4))
    said = {"a": 4, "b": 7, "c": 100, "d": -2, "e": 1, "f": 5, "g": 2.5}

    def fake_generate(msgs, batch_size=None):
        out = []
        for m in msgs:
            (name, text), = json.loads(m[1]["content"])["responses"].items()
            out.append([json.dumps({"scores": {name: said[text]}, "best-to-worst": [name]})])
        return out

    j.runner.generate = fake_generate
    assert j.score([("q", r) for r in said]).tolist() == [4.0, 0.0, 0.0, 0.0, 1.0, 5.0, 2.5]
    # the listwise judge reports what the judge said (its accuracy / format rewards read the raw scores)
    assert j.judge_lists(["q"], [["b"]])[0].tolist() == [7.0]

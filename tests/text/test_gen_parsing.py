"""Judge-output parsers: hand cases and hypothesis fuzzing (never raise; embedded verdicts are recovered)."""
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmreward.text.generative.parsing import (
    Parsed, RankingParse, parse_ab, parse_json_object, parse_ranking, parse_score, parse_scores, parse_yes_no,
)


# noise that cannot itself contain a verdict
noise = st.text(alphabet=st.characters(blacklist_characters="[]{}<>\\yYnNeEsSoO0123456789"), max_size=80)
FUZZ = settings(max_examples=150, deadline=None)


def test_yes_no_cases():
    assert parse_yes_no("Let me check... 2+2=4. Yes").value is True
    assert parse_yes_no("yes at first, but NO.").value is False
    assert parse_yes_no("Yesterday nobody came").reason == "no Yes/No verdict found"
    assert parse_yes_no("   ").reason == "empty output"
    assert not parse_yes_no(None).ok


def test_ab_cases():
    assert parse_ab("<type>Chat</type> ... <answer>[[B]]</answer>").value == "B"
    assert parse_ab("blah [[A]] then finally [[B]]").value == "B"  # last bare verdict wins
    assert parse_ab("<answer>[[A]] or [[B]]</answer>").reason == "conflicting verdicts in answer tag"
    assert parse_ab("<answer>A</answer>").value == "A"
    assert parse_ab("[[A]]" + "x" * 500).reason.startswith("no [[A]]")  # outside the tail window
    assert parse_ab("[[A]]" + "x" * 500, tail_chars=None).value == "A"
    assert parse_ab("<answer>[[A]]</answer> later <answer>[[B]]</answer>").value == "B"


def test_scores_cases():
    assert parse_scores("critique... Final Scores: \\boxed{7, 3}", 2).value == [7, 3]
    assert parse_scores("[[10, 1, 5]]", 3).value == [10, 1, 5]
    assert parse_scores("\\boxed{7}", 2).reason == "expected 2 scores, found 1"
    assert "outside" in parse_scores("\\boxed{11, 3}", 2).reason
    assert "non-integer" in parse_scores("\\boxed{7.5, 3}", 2).reason
    assert parse_scores("\\boxed{2, 3} [[9, 9]]", 2).value == [2, 3]  # boxed wins
    with pytest.raises(ValueError, match="positive int"):
        parse_scores("x", 0)


def test_score_and_json_cases():
    assert parse_score("good answer. Score: 8").value == 8.0
    assert parse_score("I'd say 6/10.").value == 6.0
    assert "outside" in parse_score("Score: 42").reason
    assert parse_json_object('text ```json\n{"a": {"b": 1}}\n``` more {"c": 2}').value == {"c": 2}
    assert parse_json_object("{not json").reason == "no valid JSON object"


def test_ranking_cases():
    names = ["model-1", "model-2"]
    p = parse_ranking('{"scores": {"model-1": 4, "model-2": 2}, "best-to-worst": ["model-1", "model-2"]}', names)
    assert p.ok and p.value == RankingParse({"model-1": 4.0, "model-2": 2.0}, ["model-1", "model-2"], True, True, True, True)
    p = parse_ranking('{"scores": {"model-1": 4, "model-2": 2}, "best-to-worst": ["model-2", "model-1"]}', names)
    assert p.ok and not p.value.consistent
    p = parse_ranking('{"scores": {"model-1": 4}, "best-to-worst": ["model-1"]}', names)
    assert not p.ok and isinstance(p.value, RankingParse) and not p.value.all_scored
    assert parse_ranking('{"scores": {"model-1": 4, "model-2": 1, "model-9": 3}}', names).value.all_scored is False
    with pytest.raises(ValueError, match="unique"):
        parse_ranking("{}", ["a", "a"])


@FUZZ
@given(st.text(max_size=300), st.integers(1, 4))
def test_parsers_never_raise(text, n):
    for p in (parse_yes_no(text), parse_ab(text), parse_scores(text, n), parse_score(text), parse_json_object(text),
              parse_ranking(text, [f"m{i}" for i in range(n)])):
        assert isinstance(p, Parsed)
        assert p.ok or p.reason  # a failure always says why


@FUZZ
@given(noise, noise, st.booleans())
def test_yes_no_recovered_from_noise(pre, post, yes):
    assert parse_yes_no(f"{pre} {'Yes' if yes else 'No'} {post}").value is yes


@FUZZ
@given(noise, st.sampled_from(["A", "B"]), st.booleans())
def test_ab_recovered_from_noise(pre, letter, tagged):
    text = f"{pre}<answer>[[{letter}]]</answer>" if tagged else f"{pre} [[{letter}]]"
    assert parse_ab(text).value == letter


@FUZZ
@given(noise, st.lists(st.integers(1, 10), min_size=1, max_size=5))
def test_scores_recovered_from_noise(pre, scores):
    text = f"{pre} Final Scores: \\boxed{{{', '.join(map(str, scores))}}}"
    assert parse_scores(text, len(scores)).value == scores


@FUZZ
@given(noise, st.dictionaries(st.sampled_from(["model-1", "model-2", "model-3"]), st.integers(1, 5), min_size=3))
def test_ranking_json_roundtrip(pre, scores):
    ranking = sorted(scores, key=lambda k: -scores[k])
    text = pre + json.dumps({"scores": scores, "best-to-worst": ranking})
    p = parse_ranking(text, ["model-1", "model-2", "model-3"])
    assert p.ok and p.value.scores == {k: float(v) for k, v in scores.items()} and p.value.consistent

"""Skywork curation: top fraction per category by margin, reference-RM filter, n-gram decontamination."""
import pytest
import torch
from mmreward.text.recipes.skywork import (
    CurationConfig,
    curate,
    decontaminate,
    filter_by_reference,
    pair_margins,
    select_top_by_margin,
    word_ngrams,
)


def value_scorer(prompts, responses):
    """Reward = the number written in the response ("v3" → 3)."""
    return torch.tensor([float(r.split("v")[1]) for r in responses])


def pairs():
    # margins: 3, 1, -2, 5 (math) | 0.5, 2 (chat)
    return [
        {"prompt": "p0", "chosen": "v4", "rejected": "v1", "category": "math"},
        {"prompt": "p1", "chosen": "v2", "rejected": "v1", "category": "math"},
        {"prompt": "p2", "chosen": "v1", "rejected": "v3", "category": "math"},
        {"prompt": "p3", "chosen": "v6", "rejected": "v1", "category": "math"},
        {"prompt": "p4", "chosen": "v1.5", "rejected": "v1", "category": "chat"},
        {"prompt": "p5", "chosen": "v3", "rejected": "v1", "category": "chat"},
    ]


def test_margins_and_top_fraction_per_category():
    data = pairs()
    m = pair_margins(data, value_scorer)
    assert m.tolist() == [3.0, 1.0, -2.0, 5.0, 0.5, 2.0]
    kept = select_top_by_margin(data, m, 0.5)
    assert [p["prompt"] for p in kept] == ["p0", "p3", "p5"]  # top 2 of 4 math, top 1 of 2 chat, input order
    assert [p["prompt"] for p in select_top_by_margin(data, m, 0.5, category_key=None)] == ["p0", "p3", "p5"]
    assert len(select_top_by_margin(data, m, 0.01)) == 2  # ceil: at least one per category
    with pytest.raises(ValueError, match="fraction"):
        select_top_by_margin(data, m, 0.0)
    with pytest.raises(ValueError, match="5 margins for 6 pairs"):
        select_top_by_margin(data, m[:5], 0.5)
    with pytest.raises(ValueError, match="row 2"):
        select_top_by_margin(data, torch.tensor([0, 0, float("nan"), 0, 0, 0]), 0.5)


def test_reference_filter():
    data = pairs()
    assert [p["prompt"] for p in filter_by_reference(data, value_scorer)] == ["p0", "p1", "p3", "p4", "p5"]
    assert [p["prompt"] for p in filter_by_reference(data, value_scorer, threshold=1.5)] == ["p0", "p3", "p5"]


def test_ngram_decontamination():
    text = "The quick brown fox jumps over the lazy dog near the river bank today at noon"
    assert len(word_ngrams(text, 13)) == 16 - 13 + 1
    assert word_ngrams("Hi, there!", 13) == {("hi", "there")}
    data = [{"prompt": "Please: the QUICK brown fox jumps over the lazy dog near the river bank today, thanks",
             "chosen": "a", "rejected": "b"},
            {"prompt": "the quick brown fox", "chosen": "a", "rejected": "b"},  # short: only 4 words shared
            {"prompt": "unrelated question", "chosen": "the quick brown fox jumps over the lazy dog near the river bank today",
             "rejected": "b"}]
    kept, removed = decontaminate(data, [text], n=13)
    assert removed == [0] and kept == data[1:]
    kept, removed = decontaminate(data, [text], n=13, fields=("prompt", "chosen"))
    assert removed == [0, 2]
    kept, removed = decontaminate(data, [text], n=4)
    assert removed == [0, 1]
    with pytest.raises(ValueError, match="row 0: `rejected` must be a string or a message list"):
        decontaminate([{"prompt": "x", "chosen": "y", "rejected": None}], [text])
    with pytest.raises(TypeError, match="eval text 0"):
        decontaminate(data, [3])


def test_curate_pipeline_report():
    data = pairs() + [{"prompt": "what is two plus two equals four said the teacher to the class in the morning",
                       "chosen": "v9", "rejected": "v0", "category": "math"}]
    evals = ["a test: what is two plus two equals four said the teacher to the class in the morning?"]
    kept, report = curate(data, scorer=value_scorer, reference=value_scorer, eval_texts=evals,
                          config=CurationConfig(top_fraction=0.5))
    assert report == {"input": 7, "after_decontamination": 6, "after_reference_filter": 5,
                      "after_top_fraction": 3, "output": 3}
    assert [p["prompt"] for p in kept] == ["p0", "p3", "p5"]
    with pytest.raises(ValueError, match="no pairs"):
        curate([])


def test_message_list_rows():
    msgs = [{"role": "user", "content": "the quick brown fox jumps"}]
    data = [{"prompt": msgs, "chosen": "v2", "rejected": "v1"}, {"prompt": "other", "chosen": "v1", "rejected": "v2"}]
    kept, removed = decontaminate(data, ["a quick brown fox jumps high"], n=4)
    assert removed == [0]
    assert pair_margins(data, value_scorer).tolist() == [1.0, -1.0]


def test_curation_settings_that_would_be_ignored_are_refused():
    """top_fraction < 1 without a scorer kept every pair; top_fraction 1.5 or 0 was accepted; eval_texts given
    as one string was read character by character (single letters as the banned texts)."""
    from mmreward.text.recipes.skywork import decontaminate

    data = pairs()
    with pytest.raises(ValueError, match="top_fraction=0.5 keeps the pairs with the largest margins of a scorer, "
                                         "but no scorer was given"):
        curate(data, config=CurationConfig(top_fraction=0.5))
    for bad in (0.0, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="CurationConfig.top_fraction must be in"):
            CurationConfig(top_fraction=bad)
    with pytest.raises(ValueError, match="CurationConfig.ngram must be an integer >= 1"):
        CurationConfig(ngram=0)
    with pytest.raises(ValueError, match="reference_threshold must be a finite number"):
        CurationConfig(reference_threshold=float("nan"))
    with pytest.raises(TypeError, match="eval_texts must be a list of strings, got one string"):
        curate(data, eval_texts=data[0]["prompt"])
    # one field name as a string is that field, not its letters
    kept, removed = decontaminate(data, [data[0]["prompt"]], fields="prompt")
    assert removed and removed[0] == 0 and kept == [p for i, p in enumerate(data) if i not in removed]
    assert CurationConfig(decontaminate_fields="prompt").decontaminate_fields == ("prompt",)

"""`as_inputs`: dicts, tuples and input instances built in Python get the same field checks and errors."""
import numpy as np
import pytest

from mmreward.core.data import DataError
from mmreward.core.inputs import Comparison, Conversation, Episode, StepSolution, TextPair, as_inputs


def test_dicts_tuples_and_instances_are_checked_alike():
    for bad in ({"prompt": "q", "response": 5}, ("q", 5), TextPair("q", 5)):
        with pytest.raises(DataError, match="input 0: field 'response' must be a string or a list of messages, got 5"):
            as_inputs(TextPair, [bad])
    for bad in ({"prompt": "q", "response": None}, ("q", None), TextPair("q", None)):
        with pytest.raises(DataError, match="input 0: field 'response' is null"):
            as_inputs(TextPair, [bad])
    with pytest.raises(DataError, match=r"input 1: field 'response'\[0\] must be a message"):
        as_inputs(TextPair, [("q", "a"), ("q", [{"role": "assistant"}])])
    with pytest.raises(DataError, match="input 0: field 'messages' must be a list of messages, got 'hi'"):
        as_inputs(TextPair, [{"messages": "hi"}])
    with pytest.raises(DataError, match="input 0: field 'steps' must be a non-empty list"):
        as_inputs(StepSolution, [StepSolution("q", [])])
    with pytest.raises(DataError, match="input 0: field 'problem' must be a string"):
        as_inputs(StepSolution, [(["not", "text"], ["s1"])])
    with pytest.raises(DataError, match="input 0: field 'messages' must be a non-empty list of turns"):
        as_inputs(Conversation, [Conversation([])])
    with pytest.raises(TypeError, match=r"input 0: a tuple must hold TextPair's fields \['prompt', 'response'\]"):
        as_inputs(TextPair, [("q", "a", "extra")])


def test_valid_inputs_come_back_equal_whatever_their_form():
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    got = as_inputs(TextPair, [TextPair("q", "a"), ("q", "a"), {"prompt": "q", "response": "a"}, {"messages": msgs},
                               TextPair(None, msgs)])
    assert got[:3] == [TextPair("q", "a")] * 3
    assert got[3] == got[4] == TextPair(None, msgs)
    got[3].response[0]["content"] = "changed"  # the caller's messages are copied, not shared
    assert msgs[0]["content"] == "q"
    assert as_inputs(Comparison, [("p", "a", "b")]) == [Comparison("p", "a", "b")]
    steps = as_inputs(StepSolution, [("q", [{"text": "s1"}, "s2"])])
    assert steps == [StepSolution("q", ["s1", "s2"])]


def test_wrong_kinds_of_item_name_what_to_build():
    with pytest.raises(TypeError, match=r"input 0 must be an Episode\(frames, success\) or a dict, got ndarray"):
        as_inputs(Episode, [np.zeros((2, 8, 8, 3), np.uint8)])
    with pytest.raises(TypeError, match=r"input 1 must be a TextPair\(prompt, response\) or a dict, got str"):
        as_inputs(TextPair, [TextPair("q", "a"), "plain text"])
    with pytest.raises(TypeError, match="input 0 is an Episode; this model scores TextPair / Comparison"):
        as_inputs([TextPair, Comparison], [Episode("e.npz")])


def test_openai_style_text_parts_are_read_as_one_text_and_other_parts_are_named():
    """``"content": [{"type": "text", "text": ...}]`` is how OpenAI-format data (and TRL's conversational
    rows written from it) spell a message; a text model reads the parts joined, and refuses an image part."""
    parts = [{"role": "user", "content": [{"type": "text", "text": "what is 2+3?"}, {"type": "text", "text": "be brief"}]}]
    (item,) = as_inputs(TextPair, [{"prompt": parts, "response": [{"role": "assistant", "content": [{"type": "text", "text": "5"}]}]}])
    assert item.prompt == [{"role": "user", "content": "what is 2+3?\nbe brief"}]
    assert item.response == [{"role": "assistant", "content": "5"}]
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}, {"type": "text", "text": "hi"}]}]
    with pytest.raises(DataError, match=r"input 0: field 'prompt'\[0\]: content part 0 is of type 'image_url'"):
        as_inputs(TextPair, [{"prompt": image, "response": "a"}])
    with pytest.raises(DataError, match="content is an empty list of parts"):
        as_inputs(TextPair, [{"prompt": [{"role": "user", "content": []}], "response": "a"}])

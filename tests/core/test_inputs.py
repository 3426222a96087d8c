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


def test_tool_calling_turns_with_null_content_are_read_and_keep_their_tool_calls():
    """An assistant turn that only calls tools has ``"content": null`` and ``"tool_calls"`` (OpenAI / agent
    trajectories): its content reads as "" and every other key stays for the chat template; a null content
    without tool calls is still an error naming the turn."""
    calls = [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}]
    turns = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": None, "tool_calls": calls},
             {"role": "tool", "tool_call_id": "c1", "content": "4"},
             {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
             {"role": "assistant", "content": "4"}]
    (item,) = as_inputs(TextPair, [{"messages": turns}])
    assert item.response[1] == {"role": "assistant", "content": "", "tool_calls": calls}
    assert item.response[2] == turns[2] and item.response[3]["content"] == "" and "function_call" in item.response[3]
    assert turns[1]["content"] is None  # the caller's rows are not modified
    (pair,) = as_inputs(TextPair, [(turns[:1], turns[1:])])
    assert pair.response[0]["tool_calls"] == calls
    for bad in ({"role": "assistant", "content": None}, {"role": "assistant", "content": None, "tool_calls": []}):
        with pytest.raises(DataError, match=r"input 0: field 'response'\[0\] must be a message .*'content' is null, "
                                            "which only a turn with 'tool_calls'"):
            as_inputs(TextPair, [{"prompt": "q", "response": [bad]}])


def test_a_field_given_twice_under_two_names_is_refused_not_one_silently_dropped():
    turns = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    for row, words in [
        ({"prompt": "q", "response": "a", "text": "other"}, "fields 'response' and 'text' both give the response"),
        ({"prompt": "q", "response": "a", "messages": turns}, "fields 'response' and 'messages' both give"),
        ({"messages": turns, "prompt": "what is 3+3?"}, "field 'prompt' would be ignored: 'messages' is scored whole"),
        ({"text": "2+2? 4", "prompt": "3+3?"}, "field 'prompt' would be ignored"),
    ]:
        with pytest.raises(DataError, match="input 0: " + words):
            as_inputs(TextPair, [row])
    # a prompt the conversation / text already opens with loses nothing (UltraChat's prompt + messages rows)
    assert as_inputs(TextPair, [{"messages": turns, "prompt": "2+2?"}, {"messages": turns, "prompt": turns[:1]},
                                {"text": "2+2? 4", "prompt": "2+2?"}, {"messages": turns, "prompt": None}]) == [
        TextPair(None, turns), TextPair(None, turns), TextPair(None, "2+2? 4"), TextPair(None, turns)]
    with pytest.raises(DataError, match="input 0: fields 'first' and 'chosen' both give 'first', with different values"):
        as_inputs(Comparison, [{"prompt": "q", "first": "a", "chosen": "b", "second": "c"}])
    with pytest.raises(DataError, match="input 0: fields 'problem' and 'question' both give 'problem'"):
        as_inputs(StepSolution, [{"problem": "p", "question": "q", "steps": ["s"]}])
    with pytest.raises(DataError, match="input 0: fields 'images' and 'image' both give 'images'"):
        as_inputs(Conversation, [{"messages": turns, "images": ["a.png"], "image": "b.png"}])
    # the same value under two names is one value
    assert as_inputs(StepSolution, [{"problem": "p", "question": "p", "steps": ["s"]}]) == [StepSolution("p", ["s"])]


def test_a_step_object_without_text_is_named_as_given():
    with pytest.raises(DataError, match=r"input 0: step 1 must be a string \(or an object with a 'text' string\), "
                                        r"got \{'txt': 'b'\}"):  # was "got None"
        as_inputs(StepSolution, [{"problem": "p", "steps": [{"text": "a"}, {"txt": "b"}]}])

"""Unusual-but-valid and bad inputs at the text entry points: chat templates that refuse a
conversation, evaluation rows given as Python lists, duplicate-score keys."""
import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from text_rm_fixtures import llama_config, word_tokenizer  # noqa: E402

from mmreward.core.data import DataError  # noqa: E402
from mmreward.text import RewardModel  # noqa: E402
from mmreward.text.eval.rewardbench import evaluate_rewardbench, score_responses  # noqa: E402

# a Llama-2 / Mistral style template: roles must alternate user / assistant, no system turn
STRICT = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{{ m['role'] }} {{ m['content'] }} </s> {% endfor %}")


def test_a_chat_template_that_refuses_a_conversation_is_a_data_error_naming_the_input():
    torch.manual_seed(0)
    rm = RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer(bos=True, chat_template=STRICT))
    ok = {"prompt": "what is two plus three", "response": "five"}
    system = {"prompt": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}], "response": "c"}
    with pytest.raises(DataError, match=r"input 1: the tokenizer's chat template refused.*roles must alternate"):
        rm.score([ok, system])
    assert rm.score([ok]).shape == (1,)  # the template still works for the conversations it accepts


def test_a_judge_prompt_the_chat_template_refuses_is_a_value_error_naming_it():
    from mmreward.text.generative.runner import render_prompt

    tok = word_tokenizer(bos=True, chat_template=STRICT)
    with pytest.raises(ValueError, match=r"prompts\[3\]: the tokenizer's chat template refused"):
        render_prompt(tok, [{"role": "assistant", "content": "a"}], "prompts[3]")


def length_scorer(prompts, responses):
    return torch.tensor([float(len(r)) for r in responses])


@pytest.mark.parametrize("row, message", [
    ({"chosen": "aa", "rejected": "b"}, r"row 1: `prompt` must be a string, got missing"),
    ({"prompt": "p", "chosen": None, "rejected": "b"}, r"row 1: `chosen` must be a string, got NoneType"),
    ({"prompt": "p", "chosen": "aa", "rejected": [{"role": "assistant", "content": "b"}]},
     r"row 1: `rejected` must be a string, got list"),
    ({"prompt": "p", "chosen": "aa", "rejected": "b", "subset": 3}, r"row 1: `subset` must be a string, got int"),
    ("p", r"row 1 is a str, expected an object"),
])
def test_rewardbench_rows_given_as_a_list_are_checked_before_scoring(row, message):
    calls = []

    def scorer(prompts, responses):
        calls.append(len(prompts))
        return length_scorer(prompts, responses)

    good = {"prompt": "p", "chosen": "aa", "rejected": "b"}
    assert evaluate_rewardbench(scorer, [good])["accuracy"] == 1.0
    calls.clear()
    with pytest.raises(ValueError, match=message):
        evaluate_rewardbench(scorer, [good, row])
    assert calls == []  # refused before anything was scored


def test_score_dedup_tells_a_null_prompt_from_the_string_null():
    seen = []

    def scorer(prompts, responses):
        seen.extend(prompts)
        return torch.tensor([0.0 if p is None else 1.0 for p in prompts])

    msgs = [{"role": "user", "content": "hi"}]
    spelled = '[{"content": "hi", "role": "user"}]'  # a string that reads like the message list's JSON
    out = score_responses(scorer, [None, "null", msgs, spelled], ["x"] * 4)
    assert seen == [None, "null", msgs, spelled] and out.tolist() == [0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("input_format, template", [("joined", None), ("chat", "chatml")])
def test_unknown_tokens_are_content_and_truncated_like_words(input_format, template):
    """Emoji or a script the vocabulary lacks become [UNK]: content the policy may cut, not a special
    token kept at any length (which left a long emoji-heavy text over max_length, a DataError)."""
    from text_rm_fixtures import CHATML

    from mmreward.text.data import TextEncoder

    tok = word_tokenizer(chat_template=CHATML if template else None)
    prompt, response = "😀 " * 20 + "a b", "five " + "🎉 " * 30 + "six"
    full = TextEncoder(tok, input_format=input_format).encode([(prompt, response)])[0]
    enc = TextEncoder(tok, max_length=16, input_format=input_format, prompt_share=0.25)
    row = enc.encode([(prompt, response)])[0]
    got = tok.convert_ids_to_tokens(row.ids)
    fixed = [t for t in tok.convert_ids_to_tokens(full.ids) if t not in ("[UNK]", "a", "b", "five", "six")]
    budget = 16 - len(fixed)
    assert len(row) == 16 and [t for t in got if t not in ("[UNK]", "a", "b", "five", "six")] == fixed
    n_prompt = int(0.25 * budget)  # the end of the prompt, then the response's opening
    content = [t for t in got if t in ("[UNK]", "a", "b", "five", "six")]
    assert content == (["[UNK]"] * (n_prompt - 2) + ["a", "b"] + ["five"] + ["[UNK]"] * (budget - n_prompt - 1))
    assert row.cut_prompt == 22 - n_prompt and row.cut_response == 32 - (budget - n_prompt)


@pytest.mark.parametrize("input_format", ["chat", "joined", "pair"])
def test_rows_that_give_the_prompt_and_whole_conversations_show_the_prompt_once(input_format):
    """UltraFeedback-binarized rows: a ``prompt`` string and ``chosen`` / ``rejected`` conversations that
    start with that prompt's user turn. They read as the prompt + the assistant turn (as TRL reads
    them), not the prompt twice; a response conversation that does not repeat the prompt is kept whole."""
    from text_rm_fixtures import CHATML

    from mmreward.text.data import TextEncoder, load_preference_pairs

    tok = word_tokenizer(chat_template=CHATML, pair=input_format == "pair")
    enc = TextEncoder(tok, input_format=input_format)
    user, system = {"role": "user", "content": "say a"}, {"role": "system", "content": "b"}
    row = {"prompt": "say a", "prompt_id": "x", "chosen": [user, {"role": "assistant", "content": "a"}],
           "rejected": [user, {"role": "assistant", "content": "c"}], "score_chosen": 8.0}
    pair = load_preference_pairs([row])[0]
    got = enc.encode([(pair.prompt, pair.chosen), (pair.prompt, pair.rejected)])
    want = enc.encode([("say a", "a"), ("say a", "c")])
    assert [r.ids for r in got] == [r.ids for r in want]
    # a message-list prompt repeated by the conversation, system turn included
    assert enc.encode([([system, user], [system, user, {"role": "assistant", "content": "a"}])])[0].ids == \
        enc.encode([([system, user], "a")])[0].ids
    # a reply conversation that does not start with the prompt keeps every turn
    other = [{"role": "user", "content": "say c"}, {"role": "assistant", "content": "a"}]
    assert enc.encode([("say a", other)])[0].ids != enc.encode([("say a", "a")])[0].ids


def test_judges_show_a_repeated_prompt_once():
    from mmreward.text.generative.base import chat_turns

    user = {"role": "user", "content": "q"}
    answer = {"role": "assistant", "content": "r"}
    assert chat_turns("q", [user, answer]) == [user, answer] == chat_turns("q", "r")
    assert chat_turns([user], [user, answer]) == [user, answer]
    assert chat_turns("other", [user, answer]) == [{"role": "user", "content": "other"}, user, answer]


def test_judge_rows_in_trl_conversational_and_ultrafeedback_layouts_read_as_text(tmp_path):
    import json

    from mmreward.text.generative.cli import load_rows

    user, a, b = ({"role": "user", "content": "q"}, {"role": "assistant", "content": "good"},
                  {"role": "assistant", "content": "bad"})
    rows = [{"prompt": [user], "chosen": [a], "rejected": [b]},            # TRL conversational
            {"prompt": "q", "chosen": [user, a], "rejected": [user, b]},    # UltraFeedback-binarized
            {"prompt": "q", "chosen": ["good", "x", "y"], "rejected": ["bad", "x", "y"]},  # RM-Bench styles
            {"prompt": "q", "chosen": "good", "rejected": "bad"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_rows(str(path)) == [{"prompt": "q", "chosen": "good", "rejected": "bad"}] * 4
    path.write_text(json.dumps({"prompt": "q", "chosen": [user, a, user, a], "rejected": "bad"}) + "\n")
    with pytest.raises(ValueError, match=r"row 0: prompt / chosen / rejected must be text"):
        load_rows(str(path))


@pytest.mark.parametrize("bad", ["p", None, {"prompt": "p", "chosen": "a"}])
def test_judge_evaluators_name_a_row_that_is_not_a_pair(bad):
    from mmreward.text.generative.position import evaluate_pairs_with_judge, rmbench_with_judge

    def judge(prompts, first, second):
        return torch.full((len(prompts),), 0.5, dtype=torch.float64)

    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    assert evaluate_pairs_with_judge(judge, [good])["n"] == 1
    with pytest.raises(ValueError, match=r"^row 1: needs str 'prompt', 'chosen', 'rejected'"):
        evaluate_pairs_with_judge(judge, [good, bad])
    item = {"prompt": "p", "chosen": ["a", "b", "c"], "rejected": ["d", "e", "f"]}
    assert rmbench_with_judge(judge, [item])["normal"] == 0.5
    for wrong in (bad, {**item, "chosen": ["a", "b", None]}, {**item, "prompt": None}):
        with pytest.raises(ValueError, match=r"^item 1: RM-Bench items need 3 chosen and 3 rejected responses \(strings\) and a str 'prompt'"):
            rmbench_with_judge(judge, [item, wrong])


def test_cli_score_names_the_file_row_and_slot_of_a_refused_conversation(tmp_path, capsys):
    """`text score` scores a chosen / rejected row as two texts: an error about "input 3" (the 4th
    text) is told as the file's row 2 (rejected), one line, exit status 2."""
    import json

    from mmreward.cli import main as mmreward_main

    torch.manual_seed(0)
    rm = RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer(bos=True, chat_template=STRICT))
    rm.save_pretrained(str(tmp_path / "rm"))
    twice = [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "c"}]  # roles do not alternate
    rows = [{"prompt": "say a", "chosen": "a", "rejected": "b"}, {"prompt": "say a", "response": "a"},
            {"prompt": "say a", "chosen": "a", "rejected": twice}]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rc = mmreward_main(["text", "score", "--model", str(tmp_path / "rm"), "--data", str(data), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{data}: row 2 (rejected): the tokenizer's chat template refused the conversation" in err, err


def test_best_of_n_refuses_a_single_string_instead_of_a_list():
    torch.manual_seed(0)
    rm = RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer(bos=True))
    best, scores = rm.best_of_n("what is two plus three", ["six", "five"])
    assert scores.shape == (2,) and best in (0, 1)
    assert rm.best_of_n("what is two plus three", ("six", "five"))[1].tolist() == scores.tolist()
    with pytest.raises(TypeError, match="candidates must be a list of responses .* got str"):
        rm.best_of_n("what is two plus three", "five")  # was: scored "f", "i", "v", "e" as 4 candidates


def test_score_responses_refuses_strings_for_lists():
    assert score_responses(length_scorer, ["q"], ["abc"]).tolist() == [3.0]
    with pytest.raises(TypeError, match="responses must be a list .* got str"):
        score_responses(length_scorer, ["q", "q", "q"], "abc")  # was: scored "a", "b", "c"
    with pytest.raises(TypeError, match="prompts must be a list .* got str"):
        score_responses(length_scorer, "q", ["a"])


@pytest.mark.parametrize("input_format", ["chat", "joined"])
def test_a_conversation_without_a_reply_is_refused_not_scored(input_format):
    """A conversation whose last turn is the user's (or a system turn) has no response to score: a
    last-token RM read a score off the prompt, silently. Tool and assistant turns end a conversation."""
    from text_rm_fixtures import CHATML

    torch.manual_seed(0)
    rm = RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer(chat_template=CHATML),
                                   input_format=input_format)
    user, reply = {"role": "user", "content": "say a"}, {"role": "assistant", "content": "a"}
    tool = {"role": "tool", "content": "a", "name": "lookup"}
    ok = [{"messages": [user, reply]}, {"prompt": [user], "response": [reply]},
          {"prompt": [user, reply, {**user, "content": "say b"}], "response": "b"}, {"messages": [user, tool]},
          {"prompt": "say a", "response": ""}, {"text": "say a"}]
    assert rm.score(ok).shape == (6,)
    for bad in ({"messages": [user]}, {"messages": [user, reply, user]}, {"prompt": "say a", "response": [user]},
                {"messages": [{"role": "system", "content": "a"}]}):
        with pytest.raises(DataError, match=r"^input 1: the conversation ends with a '(user|system)' turn, not a reply"):
            rm.score([ok[0], bad])


def test_training_data_errors_name_the_pair_and_side():
    from text_rm_fixtures import CHATML

    from mmreward.text.data import encode_pairs, load_preference_pairs

    torch.manual_seed(0)
    rm = RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer(chat_template=CHATML))
    user = {"role": "user", "content": "say a"}
    pairs = load_preference_pairs([{"prompt": "say a", "chosen": "a", "rejected": "b"},
                                   {"prompt": "say a", "chosen": "a", "rejected": [user]}])
    with pytest.raises(DataError, match=r"^training pair 1 \(rejected\): the conversation ends with a 'user' turn"):
        encode_pairs(rm.encoder, pairs)


def test_text_score_refuses_a_preference_row_whose_prompt_it_would_drop(tmp_path):
    """{"messages": [...], "chosen", "rejected"}: both responses were scored without the conversation
    they answer (as `mmreward score` already refuses)."""
    from mmreward.text.cli import score_items

    user = {"role": "user", "content": "q"}
    items, where = score_items([{"prompt": [user], "chosen": "a", "rejected": "b"}], "rows.jsonl")
    assert [it.prompt for it in items] == [[user]] * 2 and where == [(0, "chosen"), (0, "rejected")]
    with pytest.raises(DataError, match=r"^rows.jsonl: row 1: field 'messages' would be dropped.*rename 'messages' to "
                                        r"'prompt'"):
        score_items([{"prompt": "q", "chosen": "a", "rejected": "b"},
                     {"messages": [user], "chosen": "a", "rejected": "b"}], "rows.jsonl")
    # `question` is a prompt (Intel/orca_dpo_pairs), read as training reads it
    items, _ = score_items([{"question": "q", "chosen": "a", "rejected": "b"}], "rows.jsonl")
    assert [(it.prompt, it.response) for it in items] == [("q", "a"), ("q", "b")]

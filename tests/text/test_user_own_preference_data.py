"""A user's own preference data in the layouts public datasets use (HH-RLHF, UltraFeedback / Skywork, RewardBench,
CSV exports, folders of shards): what the model sees, and errors that name the file, row and field; and the
truncation warning of a long RL scoring loop."""
import json
import warnings

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from text_rm_fixtures import CHATML, bert_config, llama_config, word_tokenizer  # noqa: E402

from mmreward.core.data import DataError, read_records  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402
from mmreward.text import RewardModel, RewardTrainConfig, evaluate_pairs, train_reward_model  # noqa: E402
from mmreward.text.data import encode_pairs, load_preference_pairs  # noqa: E402

SYSTEM = {"role": "system", "content": "say a"}
USER = {"role": "user", "content": "what is two plus three"}


def _chat_model():
    torch.manual_seed(0)
    return RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer(chat_template=CHATML))


def _seen(rm, pairs):
    """The text each pair's chosen input is tokenised to, special and template tokens included."""
    return [rm.tokenizer.decode(p.chosen.ids) for p in encode_pairs(rm.encoder, pairs)]


def _truncating_calls(rm, n):
    for k in range(n):  # every call cuts a different number of tokens: a different warning text each time
        rm.score([TextPair("what is " * (5 + k), "five six")])


def test_truncation_warning_in_a_scoring_loop_is_shown_once_names_the_callers_line_and_leaves_no_registry():
    torch.manual_seed(0)
    rm = RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer(pair=True), max_length=12)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        _truncating_calls(rm, 12)
    assert len(shown) == 1 and shown[0].filename == __file__, [(str(w.message), w.filename) for w in shown]
    assert str(shown[0].message).startswith("truncated 1 of 1 inputs to max_length=12 tokens (prompt_first: ")
    # no entry per distinct text in the registry of the line that called (nor of mmreward's own modules)
    registries = [globals().get("__warningregistry__", {})]
    registries += [vars(m).get("__warningregistry__", {}) for m in (__import__("mmreward.core.model").core.model,)]
    assert not [k for reg in registries for k in reg if isinstance(k, tuple) and "truncated" in str(k[0])]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # each call's own counts when asked for
        _truncating_calls(rm, 12)
    assert len(shown) == 12 and len({str(w.message) for w in shown}) == 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="truncated 1 of 1 inputs"):
            _truncating_calls(rm, 1)


def test_ultrafeedback_conversations_that_open_with_a_system_turn_show_the_prompt_once():
    rm = _chat_model()
    row = {"prompt": USER["content"], "chosen": [SYSTEM, USER, {"role": "assistant", "content": "five"}],
           "rejected": [SYSTEM, USER, {"role": "assistant", "content": "six"}]}
    seen = _seen(rm, load_preference_pairs([row]))[0]
    assert seen == ("[CLS] <|im_start|> system say a <|im_end|> <|im_start|> user what is two plus three <|im_end|> "
                    "<|im_start|> assistant five <|im_end|> [SEP]")
    # scoring reads it the same way
    assert rm.encode([TextPair(row["prompt"], row["chosen"])])[0].ids == \
        encode_pairs(rm.encoder, load_preference_pairs([row]))[0].chosen.ids


def test_csv_and_tsv_preference_files(tmp_path):
    rm = _chat_model()
    csv = tmp_path / "pairs.csv"  # Excel's "CSV UTF-8": a byte-order mark, CRLF, a quoted comma, blank lines at the end
    csv.write_bytes("\ufeffprompt,chosen,rejected,margin,tie\r\nwhat is two plus three,five,six,2,false\r\n"
                    "what is two,\"a, b\",b,,true\r\nsay,4,5,1.5,FALSE\r\n\r\n\r\n".encode())
    pairs = load_preference_pairs(str(csv))
    assert [(p.prompt, p.chosen, p.rejected, p.margin, p.tie) for p in pairs] == [
        ("what is two plus three", "five", "six", 2.0, False), ("what is two", "a, b", "b", None, True),
        ("say", "4", "5", 1.5, False)]  # an all-number response column stays text
    assert _seen(rm, pairs[:1]) == ["[CLS] <|im_start|> user what is two plus three <|im_end|> <|im_start|> "
                                    "assistant five <|im_end|> [SEP]"]
    (tmp_path / "pairs.tsv").write_text("prompt\tchosen\trejected\nwhat is two\ta, b\tb\n")
    assert read_records(str(tmp_path / "pairs.tsv")) == [{"prompt": "what is two", "chosen": "a, b", "rejected": "b"}]
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "train.csv").write_bytes(csv.read_bytes())  # a dataset folder of CSV files
    assert len(load_preference_pairs(str(folder))) == 3
    (tmp_path / "short.csv").write_text("prompt,chosen,rejected\nwhat,a,b\nwhat is,a\n")
    with pytest.raises(DataError, match=r"short.csv: line 3 \(row 1\) has 2 fields, the header names 3"):
        read_records(str(tmp_path / "short.csv"))


def test_a_message_list_written_as_text_is_refused_naming_the_row_and_field(tmp_path):
    listed = str([USER, {"role": "assistant", "content": "five"}])  # pandas' to_csv of a list column
    data = tmp_path / "uf.jsonl"
    data.write_text(json.dumps({"prompt": "q", "chosen": "five", "rejected": "six"}) + "\n"
                    + json.dumps({"prompt": "q", "chosen": listed, "rejected": "six"}) + "\n")
    with pytest.raises(DataError, match=r"uf.jsonl: row 1: field 'chosen' is a message list written as text"):
        load_preference_pairs(str(data))
    # a reply that mentions such a list among other text is a reply
    text = f"Send {listed} to the API."
    assert load_preference_pairs([{"prompt": "q", "chosen": text, "rejected": "b"}])[0].chosen == text


def test_a_bad_byte_after_a_byte_order_mark_is_named_where_it_is(tmp_path):
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf[{"prompt": "x",\n "chosen": "caf\xe9", "rejected": "b"}]')
    with pytest.raises(DataError, match=r"bom.json: line 2 is not UTF-8 text \(byte b'\\xe9' at column 16\)"):
        read_records(str(tmp_path / "bom.json"))


def test_a_bad_row_in_a_folder_of_shards_names_its_shard_and_row(tmp_path, capsys):
    from mmreward.cli import main as mmreward_main

    shards = tmp_path / "pairs" / "data"
    shards.mkdir(parents=True)
    good = json.dumps({"prompt": "what is two", "chosen": "a", "rejected": "b"})
    (shards / "train-00000-of-00002.jsonl").write_text(good + "\n" + good + "\n")
    bad = shards / "train-00001-of-00002.jsonl"
    bad.write_text(good + "\n" + json.dumps({"prompt": "x", "chosen": None, "rejected": "b"}) + "\n")
    with pytest.raises(DataError, match=rf"^{bad}: row 1: field 'chosen' is null$"):
        load_preference_pairs(str(tmp_path / "pairs"))
    rm = _chat_model()
    rm.save_pretrained(str(tmp_path / "rm"))
    rc = mmreward_main(["text", "score", "--model", str(tmp_path / "rm"), "--data", str(tmp_path / "pairs"),
                        "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"{bad}: row 1: field 'chosen' is null" in err, err


def test_evaluation_errors_name_the_files_row_past_tie_pairs(tmp_path):
    rm = _chat_model()
    data = tmp_path / "eval.jsonl"
    rows = [{"prompt": "what is two", "chosen": "a", "rejected": "b", "tie": True},
            {"prompt": "what is two", "chosen": "a", "rejected": "b"},
            {"prompt": "what is two", "chosen": [{"role": "assistant", "content": "a"}, USER], "rejected": "b"}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    message = rf"^{data}: row 2 \(chosen\): the conversation ends with a 'user' turn"
    with pytest.raises(DataError, match=message):  # not "eval pair 1": the tie row before it is left out
        evaluate_pairs(rm, str(data))
    cfg = RewardTrainConfig(output_dir=str(tmp_path / "run"), max_steps=1, batch_size=1, progress=False,
                            tensorboard=False, plot=False)
    with pytest.raises(DataError, match=message):
        train_reward_model(rm, rows[1:2], str(data), cfg)
    with pytest.raises(DataError, match=message):
        train_reward_model(rm, str(data), None, cfg)


@pytest.mark.parametrize("role, meant", [("human", "user"), ("gpt", "assistant"), ("User", "user"),
                                         ("Assistant", "assistant")])
def test_roles_of_other_conventions_are_refused_naming_the_turn(role, meant):
    turns = [{"role": "user", "content": "what is two"}, {"role": role, "content": "a"}]
    row = {"chosen": turns, "rejected": [turns[0], {"role": "assistant", "content": "b"}]}
    with pytest.raises(DataError, match=rf"^row 0: field 'chosen'\[1\] has role '{role}': .* write it as '{meant}'"):
        load_preference_pairs([row])
    # roles chat templates take, other than user / assistant / system, are the data's own
    tool = {"prompt": "q", "chosen": [{"role": "tool", "content": "a"}, {"role": "assistant", "content": "b"}],
            "rejected": "c"}
    assert load_preference_pairs([tool])[0].chosen[0]["role"] == "tool"


def test_per_response_rating_rows_are_refused_as_not_pairs(tmp_path):
    data = tmp_path / "helpsteer2.jsonl"
    data.write_text(json.dumps({"prompt": "q", "response": "a", "helpfulness": 3, "correctness": 4}) + "\n")
    with pytest.raises(DataError, match=r"helpsteer2.jsonl: row 0: one response with its ratings \(helpfulness, "
                                        r"correctness\), not a pair"):
        load_preference_pairs(str(data))


def test_hh_rlhf_dialogues_cut_to_the_same_tokens_point_to_keep_end():
    human = "\n\nHuman: " + "what is two plus three " * 3 + "\n\nAssistant: "
    rows = [{"chosen": human + "five", "rejected": human + "six"}] * 2
    for truncation, hinted in (("prompt_first", True), ("keep_end", False)):
        torch.manual_seed(0)
        rm = RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer(pair=True), max_length=10,
                                       truncation=truncation)
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            result = evaluate_pairs(rm, rows)
        same = [str(w.message) for w in shown if "same tokens" in str(w.message)]
        assert bool(same) == hinted, [str(w.message) for w in shown]
        assert result["reward_gap"] == 0.0 if hinted else result["reward_gap"] != 0.0  # the replies are read or not
        assert all("truncation='keep_end' (--truncation keep_end) keeps it" in m for m in same)


def test_a_row_after_an_empty_shard_names_its_own_shard():
    """An empty shard starts where the next one does: its name was given for the next shard's rows."""
    from mmreward.core.data import FileRows, row_origin

    rows = FileRows([{"a": 1}, {"a": 2}, {"a": 3}])
    rows.files = [(0, "empty.jsonl"), (0, "b.jsonl"), (2, "c.jsonl")]
    assert row_origin(rows, 0) == ("b.jsonl", 0) and row_origin(rows, 2) == ("c.jsonl", 0)

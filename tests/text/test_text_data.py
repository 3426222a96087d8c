import json

import pytest

from mmreward.core.data import DataError, read_records
from mmreward.text.data import PairCollator, PreferencePair, TextEncoder, encode_pairs, load_preference_pairs, pair_from_row

ROWS = [
    {"prompt": "what is two plus three", "chosen": "five", "rejected": "six", "margin": 2, "category": "math"},
    {"prompt": [{"role": "user", "content": "a"}], "chosen": [{"role": "assistant", "content": "b"}],
     "rejected": [{"role": "assistant", "content": "c d"}]},
    {"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],  # implicit prompt
     "rejected": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}], "tie": True},
    {"prompt": "x", "chosen": "y", "rejected": "z", "target": 0.5},
]


def check_parsed(pairs):
    assert len(pairs) == 4 and all(isinstance(p, PreferencePair) for p in pairs)
    assert pairs[0].margin == 2.0 and pairs[0].meta == {"category": "math"} and not pairs[0].tie
    assert pairs[1].prompt == [{"role": "user", "content": "a"}] and pairs[1].margin is None
    assert pairs[2].prompt is None and pairs[2].tie
    assert pairs[3].tie


def test_formats_from_list_json_jsonl_and_saved_dataset(tmp_path):
    check_parsed(load_preference_pairs(ROWS))
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    check_parsed(load_preference_pairs(str(tmp_path / "p.jsonl")))
    (tmp_path / "p.json").write_text(json.dumps(ROWS))
    check_parsed(load_preference_pairs(str(tmp_path / "p.json")))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": ROWS}))
    check_parsed(load_preference_pairs(str(tmp_path / "wrapped.json")))
    datasets = pytest.importorskip("datasets")
    flat = [{"prompt": "p", "chosen": "c", "rejected": "r", "margin": 1.0}, {"prompt": "q", "chosen": "c2", "rejected": "r2", "margin": 0.5}]
    datasets.Dataset.from_list(flat).save_to_disk(str(tmp_path / "ds"))
    pairs = load_preference_pairs(str(tmp_path / "ds"))
    assert [(p.prompt, p.chosen, p.margin) for p in pairs] == [("p", "c", 1.0), ("q", "c2", 0.5)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(flat), "test": datasets.Dataset.from_list(flat[:1])}) \
        .save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="choose one with split"):
        read_records(str(tmp_path / "dd"))
    assert len(load_preference_pairs(str(tmp_path / "dd"), split="test")) == 1


def test_a_split_asked_of_a_source_without_splits_is_refused_not_ignored(tmp_path):
    """``--split test`` over a JSON-lines file used to train on the whole file, as if no split was asked."""
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    (tmp_path / "p.json").write_text(json.dumps(ROWS))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in ROWS))
    for name in ("p.jsonl", "p.json", "lines.json"):
        with pytest.raises(DataError, match="split 'test' applies to"):
            read_records(str(tmp_path / name), split="test")
    with pytest.raises(DataError, match="split 'test' applies to"):
        read_records(ROWS, split="test")
    (tmp_path / "splits.json").write_text(json.dumps({"train": ROWS, "test": ROWS[:1]}))
    assert len(read_records(str(tmp_path / "splits.json"), split="test")) == 1
    with pytest.raises(DataError, match=r"no split 'dev'; its lists are under \['test', 'train'\]"):
        read_records(str(tmp_path / "splits.json"), split="dev")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ROWS[:1]).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match="dataset without splits"):
        read_records(str(tmp_path / "ds"), split="test")


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "rejected": "r"}, "row 0: missing field 'chosen'"),
    ({"prompt": "p", "chosen": None, "rejected": "r"}, "row 0: field 'chosen' is null"),
    ({"prompt": "p", "chosen": 5, "rejected": "r"}, "row 0: field 'chosen' must be a string or a list of messages"),
    ({"prompt": "p", "chosen": "", "rejected": "r"}, "row 0: field 'chosen' is an empty string"),
    ({"prompt": "p", "chosen": "c", "rejected": [{"role": "assistant"}]}, r"row 0: field 'rejected'\[0\] must be a message"),
    ({"prompt": "p", "chosen": "c", "rejected": []}, "row 0: field 'rejected' is an empty message list"),
    ({"prompt": 3, "chosen": "c", "rejected": "r"}, "row 0: field 'prompt'"),
    ({"prompt": "p", "chosen": "c", "rejected": "r", "margin": float("nan")}, "row 0: field 'margin' must be a finite"),
    ({"prompt": "p", "chosen": "c", "rejected": "r", "margin": "1"}, "row 0: field 'margin'"),
    ({"prompt": "p", "chosen": "c", "rejected": "r", "tie": "yes"}, "row 0: field 'tie'"),
    ({"prompt": "p", "chosen": "c", "rejected": "r", "target": 0.3}, "row 0: field 'target'"),
    ("text", "row 0: expected a dict"),
])
def test_invalid_rows_name_row_and_field(row, message):
    with pytest.raises(ValueError, match=message):
        pair_from_row(row, 0)


def test_file_errors_name_file_row_and_line(tmp_path):
    good = json.dumps(ROWS[0])
    (tmp_path / "bad.jsonl").write_text(good + "\n\n" + "{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl: line 3 \(row 1\) is not valid JSON"):
        load_preference_pairs(str(tmp_path / "bad.jsonl"))
    (tmp_path / "badrow.jsonl").write_text(good + "\n" + json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    with pytest.raises(DataError, match="badrow.jsonl: row 1: missing field 'rejected'"):
        load_preference_pairs(str(tmp_path / "badrow.jsonl"))
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(DataError, match="line 1 .* must be a JSON object"):
        read_records(str(tmp_path / "list.jsonl"))
    (tmp_path / "obj.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(DataError, match="expected a list of objects"):
        read_records(str(tmp_path / "obj.json"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no preference pairs"):
        load_preference_pairs(str(tmp_path / "empty.jsonl"))
    with pytest.raises(FileNotFoundError):
        read_records(str(tmp_path / "missing.jsonl"))
    (tmp_path / "latin1.jsonl").write_bytes(good.encode() + b"\n" + b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl: line 2 is not UTF-8 text \(byte b'\\xe9' at column 16\)"):
        load_preference_pairs(str(tmp_path / "latin1.jsonl"))
    (tmp_path / "latin1.json").write_bytes(b'[{"prompt": "a"},\n {"prompt": "caf\xe9"}]')
    with pytest.raises(DataError, match="latin1.json: line 2 is not UTF-8 text"):
        read_records(str(tmp_path / "latin1.json"))
    (tmp_path / "x.xlsx").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown data format"):
        read_records(str(tmp_path / "x.xlsx"))
    # the folder of all those files reads as a dataset repository: the first bad file is named
    with pytest.raises(DataError, match=r"bad.jsonl: line 3 \(row 1\) is not valid JSON"):
        read_records(str(tmp_path))


def test_collate_concatenates_chosen_then_rejected():
    from helpers import word_tokenizer

    tok = word_tokenizer("what is two plus three five six p q r c a b d x y z".split(), model_max_length=100)
    pairs = encode_pairs(TextEncoder(tok), load_preference_pairs(ROWS))
    batch = PairCollator(0)(pairs)
    assert batch["input_ids"].shape[0] == 8 and batch["attention_mask"].shape == batch["input_ids"].shape
    lengths = batch["attention_mask"].sum(1).tolist()
    # chosen rows 0-3 then rejected rows 4-7; "prompt\n\nresponse" / message contents joined, [CLS] ... [SEP]
    assert lengths == [2 + 5 + 1, 2 + 2, 2 + 2, 2 + 2, 2 + 5 + 1, 2 + 3, 2 + 2, 2 + 2]
    assert batch["margin"].tolist() == [2.0, 0.0, 0.0, 0.0] and batch["tie"].tolist() == [False, False, True, True]
    assert batch["token_type_ids"] is None
    plain = PairCollator(0)(encode_pairs(TextEncoder(tok), load_preference_pairs([{"prompt": "p", "chosen": "c",
                                                                                    "rejected": "r"}])))
    assert plain["margin"] is None and plain["tie"] is None
    with pytest.warns(UserWarning, match="truncated 2 of 8 training inputs to max_length=5"):
        short = PairCollator(0)(encode_pairs(TextEncoder(tok, max_length=5), load_preference_pairs(ROWS)))
    assert short["input_ids"].shape[1] == 5
    with pytest.raises(ValueError, match="empty batch"):
        PairCollator(0)([])


@pytest.mark.filterwarnings("ignore:truncated")
def test_pairs_whose_chosen_and_rejected_are_the_same_tokens_are_named():
    """A pair whose chosen and rejected inputs are the same tokens gives no gradient and always counts as
    wrong: one warning says how many and which comes first. Tie pairs are meant to score alike."""
    import warnings

    from helpers import word_tokenizer

    tok = word_tokenizer("p a b c".split(), model_max_length=100)
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"},
            {"prompt": "p", "chosen": "a b c c c", "rejected": "a b c a a"},  # differ only where truncation cuts
            {"prompt": "p", "chosen": "a", "rejected": "a", "tie": True},
            {"prompt": "p", "chosen": "a b", "rejected": "a b"}]  # identical texts
    with pytest.warns(UserWarning, match=r"^2 of 4 pairs of the eval inputs have chosen and rejected inputs of the "
                                         r"same tokens, first pair 1 \(.*max_length=6"):
        encode_pairs(TextEncoder(tok, max_length=6), load_preference_pairs(rows), "eval inputs")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation, no equal inputs, the tie pair not named: silent
        encode_pairs(TextEncoder(tok), load_preference_pairs(rows[:3]))


def test_a_whole_text_opening_with_the_bos_string_gets_one_bos():
    """A text rendered elsewhere ("<s> a b", a chat template's output or a decoded query) was encoded with a
    second BOS by a tokenizer that adds its own; one that adds none keeps the text as it is."""
    import os
    import sys

    from mmreward.core.inputs import TextPair

    sys.path.insert(0, os.path.dirname(__file__))
    from text_rm_fixtures import word_tokenizer as fixture_tokenizer

    tok = fixture_tokenizer(bos=True)
    enc = TextEncoder(tok)
    want = enc.encode([TextPair(None, "a b")])[0].ids
    assert want[0] == tok.bos_token_id and want[1] != tok.bos_token_id
    assert enc.encode([TextPair(None, "<s> a b")])[0].ids == want
    assert enc.encode([TextPair(None, "<s>")])[0].ids == [tok.bos_token_id]
    plain = fixture_tokenizer()  # "[CLS] a [SEP]": no BOS added, so a literal "<s>" is text (an unknown word)
    got = TextEncoder(plain).encode([TextPair(None, "<s> a b")])[0].ids
    assert len(got) == len(TextEncoder(plain).encode([TextPair(None, "a b")])[0].ids) + 1


def test_a_chat_templates_bos_is_kept_unless_the_tokenizer_adds_its_own():
    """The chat path dropped the template's BOS string whenever the template wrote one: right for a tokenizer
    that adds BOS itself, but a tokenizer that adds none lost its BOS (apply_chat_template(tokenize=True), as
    cards score, keeps it)."""
    import os
    import sys

    from mmreward.core.inputs import TextPair

    sys.path.insert(0, os.path.dirname(__file__))
    from text_rm_fixtures import BOS_TEMPLATE
    from text_rm_fixtures import word_tokenizer as fixture_tokenizer

    msgs = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}]
    adds = fixture_tokenizer(bos=True, chat_template=BOS_TEMPLATE)  # "<s> $A": adds its own BOS
    ids = TextEncoder(adds, input_format="chat").encode([TextPair(msgs[:1], "c")])[0].ids
    assert ids == list(adds.apply_chat_template(msgs, tokenize=True)["input_ids"]) and ids.count(adds.bos_token_id) == 1
    plain = fixture_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    plain._tokenizer.post_processor = None  # the same vocabulary, adding no BOS: the template's is the only one
    assert plain("a")["input_ids"][:1] != [plain.bos_token_id]
    ids = TextEncoder(plain, input_format="chat").encode([TextPair(msgs[:1], "c")])[0].ids
    assert ids == list(plain.apply_chat_template(msgs, tokenize=True)["input_ids"]) and ids[0] == plain.bos_token_id

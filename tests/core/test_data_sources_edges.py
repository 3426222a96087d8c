"""Edge cases of the data sources read_records reads (parquet image columns, dataset-folder split windows) and of
the preference readers on rows that name their own split."""
from __future__ import annotations

import json

import pytest

from mmreward.core.data import DataError, read_records


def _parquet(path, columns):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), str(path))
    return str(path)


def test_parquet_null_image_struct_reads_as_no_image(tmp_path):
    # datasets stores a missing image as {"bytes": None, "path": None}: that is no image, not a dict to open
    src = _parquet(tmp_path / "t.parquet", {"image": [{"bytes": None, "path": None}], "prompt": ["p"]})
    assert read_records(src) == [{"image": None, "prompt": "p"}]


def test_parquet_image_list_with_a_null_first_is_converted(tmp_path):
    png = b"\x89PNG\r\n\x1a\nrest"
    src = _parquet(tmp_path / "t.parquet", {"images": [[None, {"bytes": png, "path": None},
                                                        {"bytes": None, "path": "a.png"}]]})
    (row,) = read_records(src)
    assert row["images"][0] is None
    assert row["images"][1].startswith("data:image/png;base64,")
    assert row["images"][2] == "a.png"


@pytest.fixture
def repo_folder(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(10)))
    (folder / "test.jsonl").write_text(json.dumps({"i": 100}) + "\n")
    return str(folder)


@pytest.mark.parametrize("split", ["train[5:2]", "train[:0]", "train[20:]", "train[:-0%]"])
def test_split_window_that_selects_no_rows_is_refused(repo_folder, split):
    with pytest.raises(DataError, match=r"selects none of the 10 rows"):
        read_records(repo_folder, split=split)


def test_split_window_percent_out_of_range_is_refused(repo_folder):
    with pytest.raises(DataError, match=r"150%.*-100%\.\.100%"):
        read_records(repo_folder, split="train[150%:]")


def test_split_windows_that_select_rows_still_work(repo_folder):
    assert [r["i"] for r in read_records(repo_folder, split="train[-3:]")] == [7, 8, 9]
    assert [r["i"] for r in read_records(repo_folder, split=" train [ 1 : 3 ] ")] == [1, 2]
    assert len(read_records(repo_folder, split="train[-100%:]")) == 10


def _pair(**kw):
    return {"prompt": "q", "chosen": "a", "rejected": "b", **kw}


def test_preference_rows_with_only_some_splits_named_are_refused():
    from mmreward.text.data import load_preference_pairs

    # a row without its split beside train and val rows would be trained on (or dropped) unseen
    rows = [_pair(split="train"), _pair(split="val"), _pair()]
    with pytest.raises(DataError, match=r"row 2 names no split .*'train': 1, 'val': 1"):
        load_preference_pairs(rows)
    with pytest.raises(DataError, match=r"row 2 names no split"):
        load_preference_pairs(rows, split="train")
    with pytest.raises(DataError, match=r"row 1 names no split \(field 'split' is 1\)"):
        load_preference_pairs([_pair(split="train"), _pair(split=1)], split="train")


def test_preference_rows_split_field_unchanged_cases(tmp_path):
    from mmreward.text.data import load_preference_pairs

    assert len(load_preference_pairs([_pair(split="train"), _pair()])) == 2  # one split named: nothing to choose
    src = tmp_path / "p.json"
    src.write_text(json.dumps([_pair(split="train"), _pair(split="val"), _pair(split="val")]))
    assert len(load_preference_pairs(str(src), split="val")) == 2


def test_text_score_json_writes_parquet_columns_without_json_type(capsys):
    import datetime

    from mmreward.text.cli import _print_scores

    rows = [{"prompt": "q", "response": "a", "raw": b"\x00\x01", "when": datetime.datetime(2024, 1, 2)}]
    _print_scores(rows, [(0, "response")], [0.5], True)
    out = json.loads(capsys.readouterr().out)
    assert out["score"] == 0.5 and out["raw"] == "b'\\x00\\x01'" and out["when"].startswith("2024-01-02")


def test_saved_datasetdict_split_window(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = str(tmp_path / "dd")
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"i": i} for i in range(10)]),
                          "test": datasets.Dataset.from_list([{"i": -1}])}).save_to_disk(folder)
    assert [r["i"] for r in read_records(folder, split="train[-2:]")] == [8, 9]
    assert [r["i"] for r in read_records(folder, split="train[10%:30%]")] == [1, 2]
    with pytest.raises(DataError, match="selects none"):
        read_records(folder, split="train[5:2]")
    with pytest.raises(DataError, match=r"has no split 'nope'; it has \['train', 'test'\]"):
        read_records(folder, split="nope[:2]")


def test_preference_split_field_with_a_window(tmp_path):
    from mmreward.text.data import load_preference_pairs

    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(_pair(split=s, id=i)) + "\n" for i, s in enumerate(["train", "val", "val", "val"])))
    assert [p.meta["id"] for p in load_preference_pairs(str(src), split="val[:2]")] == [1, 2]
    with pytest.raises(DataError, match="selects none of the 3 rows"):
        load_preference_pairs(str(src), split="val[5:]")


class _Read(Exception):
    pass


def test_text_score_split_reads_the_rows_split_field(tmp_path, monkeypatch):
    import mmreward.text.cli as cli

    src = tmp_path / "hs2.jsonl"
    src.write_text("".join(json.dumps(_pair(split=s, id=i)) + "\n" for i, s in enumerate(["train", "val", "train"])))
    seen = []

    def stop(rows, source):  # the rows as read, before any model is loaded
        seen.extend(rows)
        raise _Read

    monkeypatch.setattr(cli, "score_items", stop)
    with pytest.raises(_Read):
        cli.score_main(["--model", str(tmp_path / "none"), "--data", str(src), "--split", "train"])
    assert [r["id"] for r in seen] == [0, 2]


def test_parquet_image_column_of_raw_bytes_becomes_a_data_uri(tmp_path):
    png = b"\x89PNG\r\n\x1a\nrest"
    src = _parquet(tmp_path / "t.parquet", {"image": [png], "images": [[png, None]], "blob": [b"\x00"]})
    (row,) = read_records(src)
    assert row["image"].startswith("data:image/png;base64,") and row["images"][0].startswith("data:image/png;")
    assert row["images"][1] is None and row["blob"] == b"\x00"  # other binary columns stay bytes


def test_text_pair_reads_question_or_input_as_the_prompt_and_refuses_dropped_prompt_fields():
    from mmreward.core.inputs import TextPair

    # a single reply's prompt under a published dataset's name was silently dropped (scored without its question)
    assert TextPair.from_record({"question": "q", "response": "a"}) == TextPair("q", "a")
    assert TextPair.from_record({"input": "q", "system": "S", "response": "a"}) == TextPair(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}], "a")
    assert TextPair.from_record({"prompt": "p", "question": "q", "response": "a"}) == TextPair("p", "a")
    with pytest.raises(DataError, match=r"row: fields 'question' and 'input' both give the prompt"):
        TextPair.from_record({"question": "q", "input": "r", "response": "a"})
    for key in ("instruction", "query", "problem", "context"):
        with pytest.raises(DataError, match=rf"field '{key}' would be dropped.*rename '{key}' to 'prompt'"):
            TextPair.from_record({key: "q", "response": "a"})


def test_upper_case_file_suffixes_are_read(tmp_path):
    import gzip

    (tmp_path / "A.JSONL").write_text('{"i": 1}\n')
    (tmp_path / "B.Json").write_text('[{"i": 2}]')
    (tmp_path / "C.JSONL.GZ").write_bytes(gzip.compress(b'{"i": 3}\n'))
    assert [read_records(str(tmp_path / n))[0]["i"] for n in ("A.JSONL", "B.Json", "C.JSONL.GZ")] == [1, 2, 3]
    (tmp_path / "D.JSON.GZ").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="D.JSON.GZ: not a readable gzip file"):
        read_records(str(tmp_path / "D.JSON.GZ"))


def test_a_model_folder_or_training_run_given_as_data_is_named_a_model(tmp_path):
    """``--data MODEL`` said "MODEL/manifest.json: expected a list of objects", not that the folder is a model."""
    model, run = tmp_path / "rm", tmp_path / "run"
    (run / "model").mkdir(parents=True)
    model.mkdir()
    for folder in (model, run / "model"):
        (folder / "config.json").write_text(json.dumps({"model_type": "text-reward-model"}))
        (folder / "manifest.json").write_text(json.dumps({"files": {}, "format_version": 1}))
    for path in (model, run):
        with pytest.raises(DataError, match=r"is a model folder \(text-reward-model\), not data: give it as the "
                                            r"model \(--model\)"):
            read_records(str(path))
    (tmp_path / "rows").mkdir()  # a folder of data files is still data
    (tmp_path / "rows" / "train.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    assert read_records(str(tmp_path / "rows")) == [{"prompt": "p", "chosen": "a", "rejected": "b"}]


def test_media_paths_under_home_in_rows_are_the_home_folders(tmp_path, monkeypatch):
    """`mmreward score --data d/rows.jsonl` with {"image": "~/pics/a.png"} read d/~/pics/a.png ("does not
    exist"), although an image given to score as ~/pics/a.png is the home folder's."""
    from mmreward.core.data import resolve_media_paths

    home = tmp_path / "home"
    (home / "pics").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    data = tmp_path / "d" / "rows.jsonl"
    data.parent.mkdir()
    data.write_text("{}\n")
    rows = resolve_media_paths([{"image": "~/pics/a.png", "images": ["b.png", "~/pics/c.png"]}], str(data))
    assert rows[0]["image"] == str(home / "pics" / "a.png")
    assert rows[0]["images"] == [str(tmp_path / "d" / "b.png"), str(home / "pics" / "c.png")]
    (tmp_path / "d" / "~").mkdir()  # a literal "~" folder beside the data file wins
    (tmp_path / "d" / "~" / "x.png").write_bytes(b"")
    assert resolve_media_paths([{"image": "~/x.png"}], str(data))[0]["image"] == str(tmp_path / "d" / "~" / "x.png")

"""Where rows come from: the files and folders users download from the hub read as they are — a parquet file,
a dataset repository folder (``data/train-*.parquet`` + ``data/test-*.parquet``), HH-RLHF's nested
``*.jsonl.gz`` — and a hub id that cannot be had is one error that names both readings."""
import base64
import gzip
import io
import json
import os

import pytest

from mmreward.core.data import DataError, read_records

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROWS = [{"prompt": f"q{i}", "chosen": "a" * (i + 2), "rejected": "b"} for i in range(5)]


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """load_dataset writes its arrow cache under the temporary folder, not the user's."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    return tmp_path / "cache"


def _repo(tmp_path):
    """A dataset repository as the hub stores one: data files named by split, a README without metadata."""
    repo = tmp_path / "my-prefs"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS[:3]), str(repo / "data" / "train-00000-of-00001.parquet"))
    pq.write_table(pa.Table.from_pylist(ROWS[3:]), str(repo / "data" / "test-00000-of-00001.parquet"))
    (repo / "README.md").write_text("# my prefs\n")
    return repo


def test_a_parquet_file_reads_as_its_rows(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), str(path))
    assert read_records(str(path)) == ROWS
    with pytest.raises(DataError, match="is a parquet file, not a set of splits"):
        read_records(str(path), split="train")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"broken.parquet: not a readable parquet file"):
        read_records(str(tmp_path / "broken.parquet"))


def test_image_columns_of_a_parquet_file_become_data_uris(tmp_path):
    """The `datasets` Image layout ({"bytes", "path"}) was passed on as a dict no image reader takes."""
    png = bytes.fromhex("89504e470d0a1a0a") + b"rest"
    table = pa.Table.from_pylist([{"prompt": "p", "image": {"bytes": png, "path": "a.png"},
                                   "images": [{"bytes": None, "path": "b.png"}], "meta": {"k": 1}}])
    pq.write_table(table, str(tmp_path / "imgs.parquet"))
    row = read_records(str(tmp_path / "imgs.parquet"))[0]
    assert row["image"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert row["images"] == ["b.png"] and row["meta"] == {"k": 1}  # a path only: the path; other dicts kept


def test_an_image_column_opens_as_the_image_it_holds(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    buf = io.BytesIO()
    Image.new("RGB", (5, 3), (200, 10, 30)).save(buf, "PNG")
    pq.write_table(pa.Table.from_pylist([{"image": {"bytes": buf.getvalue(), "path": None}}]),
                   str(tmp_path / "one.parquet"))
    from mmreward.vision.images import load_image

    im = load_image(read_records(str(tmp_path / "one.parquet"))[0]["image"])
    assert im.size == (5, 3) and im.getpixel((0, 0)) == (200, 10, 30)


def test_a_dataset_repository_folder_reads_by_split(tmp_path, datasets_cache):
    repo = _repo(tmp_path)
    with pytest.raises(DataError, match=r"my-prefs holds splits \['train', 'test'\]: choose one"):
        read_records(str(repo))
    assert read_records(str(repo), split="test") == ROWS[3:]
    assert read_records(str(repo), split="train[:2]") == ROWS[:2]
    with pytest.raises(DataError, match="my-prefs has no split 'dev'"):
        read_records(str(repo), split="dev")


def test_hh_rlhf_nested_gzip_files_read_as_one_split(tmp_path, datasets_cache):
    """Anthropic/hh-rlhf: <subset>/train.jsonl.gz and test.jsonl.gz; a .gz file alone reads too."""
    hh = [{"chosen": f"\n\nHuman: hi {i}\n\nAssistant: yes", "rejected": f"\n\nHuman: hi {i}\n\nAssistant: no"}
          for i in range(4)]
    for sub, rows in (("harmless-base", hh[:2]), ("helpful-base", hh[2:])):
        os.makedirs(tmp_path / "hh" / sub)
        with gzip.open(tmp_path / "hh" / sub / "train.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    assert read_records(str(tmp_path / "hh" / "helpful-base" / "train.jsonl.gz")) == hh[2:]
    got = read_records(str(tmp_path / "hh"))
    assert sorted(r["chosen"] for r in got) == sorted(r["chosen"] for r in hh)
    from mmreward.text.data import load_preference_pairs

    pairs = load_preference_pairs(str(tmp_path / "hh" / "harmless-base" / "train.jsonl.gz"))
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [(None, r["chosen"], r["rejected"]) for r in hh[:2]]
    with gzip.open(tmp_path / "list.json.gz", "wt") as f:
        json.dump(ROWS, f)
    assert read_records(str(tmp_path / "list.json.gz")) == ROWS


# ids, and mtime=0: a gzip header holds the time it was written, and pytest-xdist workers must collect the same ids
@pytest.mark.parametrize("content", [b"not gzip at all", gzip.compress(b'{"a": 1}\n' * 50, mtime=0)[:30]],
                         ids=["not-gzip", "cut-off"])
def test_a_damaged_gzip_file_is_one_error_naming_it(tmp_path, content):
    (tmp_path / "rows.jsonl.gz").write_bytes(content)
    with pytest.raises(DataError, match=r"rows.jsonl.gz: not a readable gzip file"):
        read_records(str(tmp_path / "rows.jsonl.gz"))


def test_a_folder_without_data_and_a_hub_id_offline_are_clear_errors(tmp_path, datasets_cache, monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="neither a saved dataset .* nor data files"):
        read_records(str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="'nobody/no-such-prefs' is neither a local file or folder nor a hub "
                                                "dataset"):
        read_records("nobody/no-such-prefs")
    with pytest.raises(FileNotFoundError, match="data file 'nobody/rows.jsonl' does not exist"):
        read_records("nobody/rows.jsonl")  # a file name is never a hub id


def test_a_saved_dataset_folder_still_reads(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:2]),
                          "test": datasets.Dataset.from_list(ROWS[2:])}).save_to_disk(str(tmp_path / "dd"))
    assert read_records(str(tmp_path / "dd"), split="test") == ROWS[2:]
    with pytest.raises(DataError, match="holds splits"):
        read_records(str(tmp_path / "dd"))


def test_score_cli_reads_a_repository_folder_with_split(tmp_path, datasets_cache, capsys):
    """`mmreward score --data FOLDER --split test` scores the test split; a hub id offline exits 2 in one line."""
    pytest.importorskip("transformers")
    from test_contract_inputs_and_folders import LinRM

    from mmreward import registry
    from mmreward.cli import main

    registry.register_model(LinRM.model_type, "test_contract_inputs_and_folders:LinRM")
    try:
        LinRM().save_pretrained(str(tmp_path / "m"))
        repo = _repo(tmp_path)
        assert main(["score", "--model", str(tmp_path / "m"), "--data", str(repo), "--split", "test", "--json"]) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [r["prompt"] for r in lines] == ["q3", "q4"] and all("score_chosen" in r for r in lines)
        assert main(["score", "--model", str(tmp_path / "m"), "--data", str(repo)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds splits ['train', 'test']" in err[0] and "--split" in err[0]
    finally:
        registry.MODEL_TYPES.pop(LinRM.model_type, None)


def test_media_paths_of_a_dataset_folder_resolve_against_the_folder(tmp_path):
    from mmreward.core.data import resolve_media_paths

    rows = [{"prompt": "p", "image": "images/a.png", "frames": ["f/1.png", "data:image/png;base64,xx"]}]
    (tmp_path / "repo").mkdir()
    (tmp_path / "rows.jsonl").write_text("")
    got = resolve_media_paths(rows, str(tmp_path / "repo"))
    assert got[0]["image"] == str(tmp_path / "repo" / "images" / "a.png")
    assert got[0]["frames"] == [str(tmp_path / "repo" / "f" / "1.png"), "data:image/png;base64,xx"]
    assert resolve_media_paths(rows, str(tmp_path / "rows.jsonl"))[0]["image"] == str(tmp_path / "images" / "a.png")
    assert resolve_media_paths(rows, "owner/hub-dataset") == rows  # a hub id: nothing to be relative to

"""`mmreward prm train | score | eval` take `--split` (train also `--eval-split`) as `mmreward text train`
does: a source holding several splits is read from the chosen one and refused, naming its splits,
without a choice; a bad row's error names the file (and split) it is in."""
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.cli import main as mmreward_main  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.text.prm.data import read_pair_examples, read_step_examples  # noqa: E402
from mmreward.text.prm.synthetic import make_dataset  # noqa: E402

TRAIN = ["--max-value", "5", "--tiny-tokenizer", "step", "--max-steps", "1", "--batch-size", "4", "--lr", "3e-3",
         "--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0", "--max-length", "64"]


def _fails(argv, capsys, *expected):
    capsys.readouterr()
    assert mmreward_main(["prm", *argv]) == 2, argv
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err


@pytest.fixture(scope="module")
def split_file(tmp_path_factory):
    rows = make_dataset(8, seed=3, max_value=5)
    path = tmp_path_factory.mktemp("split_prm") / "steps.json"
    path.write_text(json.dumps({"dev": rows[:3], "test": rows[3:]}))  # no 'train' / 'data' list: choose one
    return str(path)


def test_train_score_eval_read_the_chosen_split(split_file, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert mmreward_main(["prm", "train", "--data", split_file, "--split", "test", "--eval-data", split_file,
                          "--eval-split", "dev", "--out", run, *TRAIN]) == 0
    capsys.readouterr()
    assert mmreward_main(["prm", "score", "--model", run, "--data", split_file, "--split", "test"]) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('{"step_scores"')]) == 5
    assert mmreward_main(["prm", "eval", "--model", run, "--data", split_file, "--split", "dev"]) == 0
    assert "processbench_f1" in json.loads(capsys.readouterr().out)
    for argv in (["train", "--data", split_file, "--out", str(tmp_path / "r2"), *TRAIN],
                 ["train", "--data", split_file, "--split", "test", "--eval-data", split_file, "--out",
                  str(tmp_path / "r3"), *TRAIN],
                 ["score", "--model", run, "--data", split_file],
                 ["eval", "--model", run, "--data", split_file]):
        _fails(argv, capsys, "['dev', 'test']", "--split")
    _fails(["eval", "--model", run, "--data", split_file, "--split", "nope"], capsys, "no split 'nope'")
    # a split of data that is not given would be silently ignored
    _fails(["train", "--synthetic", "8", "--split", "test", "--out", str(tmp_path / "r4"), *TRAIN], capsys,
           "--split test", "--data")
    _fails(["train", "--data", split_file, "--split", "test", "--eval-split", "dev", "--out", str(tmp_path / "r5"),
            *TRAIN], capsys, "--eval-split dev", "--eval-data")
    _fails(["score", "--model", run, "--problem", "3 +1", "--step", "3+1=4", "--split", "test"], capsys, "--split test")


def test_a_bad_row_names_its_file_and_split(tmp_path):
    """With --data and --eval-data a bare "row 0: ..." did not say which file holds the row."""
    good = make_dataset(2, seed=0, max_value=5)
    path = tmp_path / "held.json"
    path.write_text(json.dumps({"dev": good, "test": [{"problem": "p", "steps": ["a"], "label": 4}]}))
    assert len(read_step_examples(str(path), split="dev")) == 2
    with pytest.raises(DataError, match=r"held\.json \(split 'test'\): row 0: label 4"):
        read_step_examples(str(path), split="test")
    plain = tmp_path / "pairs.jsonl"
    plain.write_text(json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl: row 0: PPM pair rows need a string 'rejected'"):
        read_pair_examples(str(plain))
    with pytest.raises(DataError, match=r"^row 0: unknown stepwise format"):  # rows given in memory: no file
        read_step_examples([{"foo": 1}])
